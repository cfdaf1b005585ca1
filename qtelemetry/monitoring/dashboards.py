"""Grafana dashboards, built with grafana-foundation-sdk from the catalogue and the monitoring config.

A dashboard is a ``Board`` of ``Row``s of ``Panel`` specs; a panel is a title, a unit, a
plain-words description and its ``Q``ueries. ``build`` turns a spec into dashboard JSON through
the SDK's builders: explicit panel ids and refIds, a grid computed here, the deployment's
selector injected into every query, and every metric name checked against the catalogue and
the generated recording rules (an unknown name is a ``GenerationError``; a query that reads a
metric promised but not yet in the catalogue is left out and reported).

``panel_queries(dashboard_json, link)`` gives each target's expression with the template
variables substituted, for tests that run them against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

# The SDK warns at import that its v1 dashboard model is deprecated in favour of v2; Grafana's
# file provisioning and /api/dashboards/db take the v1 JSON this module writes.
warnings.filterwarnings("ignore", message="Prefer using dashboardv2.Dashboard instead", category=DeprecationWarning)

from grafana_foundation_sdk.builders import common as cb  # noqa: E402
from grafana_foundation_sdk.builders import dashboard as db  # noqa: E402
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models import common as cm  # noqa: E402
from grafana_foundation_sdk.models import dashboard as dm  # noqa: E402
from grafana_foundation_sdk.models import prometheus as pm  # noqa: E402

from qtelemetry.monitoring.catalogue import BB84, BBM92, HERALDED
from qtelemetry.monitoring.config import MonitoringConfig
from qtelemetry.monitoring.promql import PROMETHEUS_SERIES, TARGET_SERIES, GenerationError, inject_selector, sample_names
from qtelemetry.monitoring.rules import (
    PENDING_METRICS,
    RuleSet,
    baseline_names,
    check_names,
    num,
    recording_names,
    slo_budget_record,
    slo_record,
)


DS = cm.DataSourceRef(type_val="prometheus", uid="${datasource}")
GREEN, ORANGE, RED, DARK_RED, BLUE = "green", "orange", "red", "dark-red", "blue"
DASHED = {"fill": "dash", "dash": [10, 10]}
DOTTED = {"fill": "dot", "dash": [0, 10]}


# -------------------------------------------------------------------------------------------
# spec
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """One panel target: a PromQL expression and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    description: str
    queries: tuple[Q, ...]
    kind: str = "timeseries"  # timeseries | stat | table
    w: int = 12
    h: int = 8
    steps: tuple[tuple[float, str], ...] = ()  # threshold steps above the green base
    lines: bool = False  # draw the thresholds as dashed lines (timeseries)
    min: float | None = None
    max: float | None = None
    log: bool = False
    styles: tuple[tuple[str, dict], ...] = ()  # (legend regexp, line style) overrides
    mappings: tuple[tuple[str, str, str], ...] = ()  # stat value mappings (value, text, color)
    table_columns: tuple[tuple[str, str], ...] = ()  # table: (field, header) in order, rest hidden
    table_link: str | None = None  # table: field whose cells link to the link dashboard
    table_units: tuple[tuple[str, str], ...] = ()  # table: (field, unit) per column


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class LinkVariable:
    """The ``link`` template variable: links of these protocols (regex), single or multi."""

    protocols: str
    multi: bool = False
    metric: str = "qlink_info"


@dataclass(frozen=True)
class Board:
    slug: str
    title: str
    description: str
    rows: tuple[Row, ...]
    link: LinkVariable | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Built:
    """A generated dashboard and what was left out for pending metrics."""

    uid: str
    json: dict
    gated: tuple[str, ...] = field(default_factory=tuple)


def ts(title: str, unit: str, description: str, *queries: Q, **kw: Any) -> Panel:
    return Panel(title, unit, description, tuple(queries), **kw)


def st(title: str, unit: str, description: str, *queries: Q, **kw: Any) -> Panel:
    return Panel(title, unit, description, tuple(queries), kind="stat", w=kw.pop("w", 4), h=kw.pop("h", 4), **kw)


# -------------------------------------------------------------------------------------------
# the dashboards
# -------------------------------------------------------------------------------------------


def uid(c: MonitoringConfig, slug: str) -> str:
    return f"{c.dashboard_uid_prefix}-{slug}"


def qber_steps(c: MonitoringConfig) -> tuple[tuple[float, str], ...]:
    t = c.thresholds
    return ((t.qber_warning, ORANGE), (t.qber_critical, RED), (t.qber_no_key, DARK_RED))


UP_MAPPINGS = (("1", "UP", GREEN), ("0", "DOWN", RED))
KEY_LINKS = f"{BB84}|{BBM92}"
ENT_LINKS = f"{BBM92}|{HERALDED}"
ALERT_NAMES = "QKD.*|QLink.*|Entanglement.*|QTelemetry.*"


def fleet(c: MonitoringConfig) -> Board:
    t = c.thresholds
    link_uid = uid(c, "link")
    return Board("fleet", "qtelemetry / Fleet overview",
                 "Every quantum link at a glance: health, key, QBER, loss, key stores, entanglement.", (
        Row("Fleet", (
            st("Links up", "none", "Links whose driver delivers valid data (qlink_up = 1).",
               Q("sum(qlink_up)")),
            st("Links down", "none", "Links whose driver has not delivered a valid batch recently.",
               Q("count(qlink_up == 0) or vector(0)"), steps=((1, RED),)),
            st("Firing alerts", "none", "qtelemetry alerts firing now (all severities).",
               Q(f'count(ALERTS{{alertstate="firing", alertname=~"{ALERT_NAMES}"}}) or vector(0)'),
               steps=((1, ORANGE),)),
            st("Secret key rate (fleet)", "bps", "Secret key distilled by all links together, bits per second.",
               Q("sum(qkd_secret_key_rate_bits_per_second)")),
            st("Key delivered (fleet)", "bps", "Key handed to applications by all links, bits per second.",
               Q("sum(rate(qkd_key_delivered_bits_total[$__rate_interval]))")),
            st("Exporters up", "none", "qtelemetry exporters Prometheus scrapes successfully.",
               Q("sum(up)")),
        )),
        Row("Links", (
            Panel("Links", "none",
                  "One row per link; click a link name to open its drill-down dashboard.", (
                      Q("max by (link, protocol, site_a, site_b) (qlink_info)"),
                      Q("max by (link) (qlink_up)"),
                      Q("max by (link) (qkd_secret_key_rate_bits_per_second)"),
                      Q("max by (link) (qkd_qber_upper_bound_ratio)"),
                      Q("max by (link) (qkd_channel_loss_db)"),
                      Q("max by (link) (qkd_key_buffer_bits / qkd_key_buffer_capacity_bits)"),
                      Q("max by (link) (qent_chsh_value)"),
                  ), kind="table", w=24, h=8,
                  table_columns=(("link", "Link"), ("protocol", "Protocol"), ("site_a", "Site A"),
                                 ("site_b", "Site B"), ("Value #B", "Up"), ("Value #C", "Secret key rate (bit/s)"),
                                 ("Value #D", "QBER upper bound"), ("Value #E", "Loss (dB)"),
                                 ("Value #F", "Key store fill"), ("Value #G", "CHSH S")),
                  table_link=f"/d/{link_uid}?var-link=${{__value.raw}}&${{datasource:queryparam}}",
                  table_units=(("Value #C", "bps"), ("Value #D", "percentunit"), ("Value #E", "dB"),
                               ("Value #F", "percentunit"))),
        )),
        Row("Key", (
            ts("Secret key rate by link", "bps", "Secret key each link distils (finite-key), bits per second.",
               Q("qkd_secret_key_rate_bits_per_second", "{{link}}"), log=True),
            ts("QBER upper bound by link", "percentunit",
               "Worst basis of each link: upper confidence bound on the quantum bit error rate. Dashed "
               f"lines: warning {num(t.qber_warning)}, critical {num(t.qber_critical)}, no key above "
               f"{num(t.qber_no_key)}.",
               Q("max by (link) (qkd_qber_upper_bound_ratio)", "{{link}}"), steps=qber_steps(c), lines=True, min=0),
            ts("Channel loss by link", "dB", "Optical loss of each decoy-BB84 link's fibre, inferred from detections.",
               Q("qkd_channel_loss_db", "{{link}}")),
            ts("Key store fill by link", "percentunit", "Key waiting for applications, as a fraction of the store.",
               Q("qkd_key_buffer_bits / qkd_key_buffer_capacity_bits", "{{link}}"), min=0, max=1,
               steps=((0, RED), (0.1, ORANGE), (0.5, GREEN))),
        )),
        Row("Entanglement", (
            ts("CHSH S by link", "none", "Bell-test value of entangled-photon links: above 2 (dashed) is entanglement.",
               Q("qent_chsh_value", "{{link}}"), steps=((2, RED),), lines=True),
            ts("Fidelity by link", "percentunit",
               "Bell-state fidelity: lower bound for entangled-photon links, estimate for heralded memory pairs.",
               Q("qent_fidelity_lower_bound_ratio", "{{link}} (lower bound)"),
               Q("qent_heralded_fidelity_ratio", "{{link}}"), max=1),
            ts("Entangled pairs per second", "cps", "Coincidences (photon pairs) and heralded memory pairs per second.",
               Q("qent_coincidence_rate_per_second", "{{link}} coincidences"),
               Q("qent_heralded_pairs_per_second", "{{link}} heralded pairs"), log=True),
            ts("Heralding success probability", "percentunit", "Heralded pairs per attempt of memory links.",
               Q("qent_heralding_success_probability_ratio", "{{link}}"), min=0),
        )),
    ), tags=("fleet",))


def link(c: MonitoringConfig) -> Board:
    t, b = c.thresholds, c.baseline
    L = '{link="$link"}'
    skr_smooth, skr_base = baseline_names("qkd_secret_key_rate_bits_per_second", c)
    _, loss_base = baseline_names("qkd_channel_loss_db", c)
    gain_smooth, gain_base = baseline_names("qkd_gain_ratio", c)
    k = num(t.dark_count_factor)
    vac = '{link="$link", intensity="vacuum"}'
    return Board("link", "qtelemetry / QKD link",
                 "Drill-down of one key-distilling link (decoy BB84 or entanglement-based BBM92).", (
        Row("Status", (
            st("Link", "none", "Does the driver deliver valid data?", Q(f"qlink_up{L}"), mappings=UP_MAPPINGS,
               steps=((0, RED), (1, GREEN))),
            st("Data age", "s", "Time since the last valid batch from the device.",
               Q(f"time() - qlink_last_update_timestamp_seconds{L}"),
               steps=((t.stale_after_seconds, RED),)),
            st("Secret key rate", "bps", "Finite-key secret key rate, bits per second.",
               Q(f"qkd_secret_key_rate_bits_per_second{L}")),
            st("QBER upper bound", "percentunit", "Worst basis, upper confidence bound.",
               Q(f"max(qkd_qber_upper_bound_ratio{L})"), steps=qber_steps(c)),
            st("Channel loss", "dB", "Optical loss of the fibre (decoy BB84 links).", Q(f"qkd_channel_loss_db{L}")),
            st("Key store", "percentunit", "Fill of the key store between the link and its applications.",
               Q(f"qkd_key_buffer_bits{L} / qkd_key_buffer_capacity_bits{L}"),
               steps=((0, RED), (t.key_buffer_imminent.fill_ratio, ORANGE), (t.key_buffer_forecast.fill_ratio, GREEN))),
        )),
        Row("Key rate", (
            ts("Secret key rate vs plan and repeaterless bound", "bps",
               "Finite-key rate (what the link delivers), asymptotic rate (infinitely long blocks), the rate "
               "the link's plan promised, and the PLOB bound no repeaterless link can beat (Pirandola et al. 2017).",
               Q(f"qkd_secret_key_rate_bits_per_second{L}", "finite-key"),
               Q(f"qkd_asymptotic_secret_key_rate_bits_per_second{L}", "asymptotic"),
               Q(f"qkd_expected_secret_key_rate_bits_per_second{L}", "plan"),
               Q(f"qkd_repeaterless_bound_bits_per_second{L}", "repeaterless bound (PLOB)"),
               Q(f"{skr_base}{L}", f"baseline ({b.window} median)"),
               w=16, log=True, styles=(("plan", DASHED), ("repeaterless.*", DASHED), ("baseline.*", DOTTED))),
            ts("Fraction of the repeaterless bound", "percentunit",
               "Achieved key rate / PLOB bound: how close the link is to the fundamental limit (above 1 is impossible).",
               Q(f"qkd_repeaterless_bound_ratio{L}", "of PLOB bound"), w=8, min=0, steps=((1, RED),), lines=True),
            ts("Sifted key rate", "bps", "Bits left after discarding mismatched bases, before error correction.",
               Q(f"qkd_sifted_key_rate_bits_per_second{L}", "sifted"), w=12),
            ts("Key rate vs its baseline", "percentunit",
               f"{b.smoothing} average of the secret key rate over its {b.window} median; the drop alert fires "
               f"below {num(t.key_rate_drop_ratio)}.",
               Q(f"{skr_smooth}{L} / {skr_base}{L}", "of baseline"), w=12, min=0,
               steps=((0, RED), (t.key_rate_drop_ratio, GREEN)), lines=True),
        )),
        Row("QBER", (
            ts("QBER with its upper confidence bound", "percentunit",
               "Quantum bit error rate per basis (solid) and its upper confidence bound (dashed), which the "
               f"alerts use. Threshold lines: warning {num(t.qber_warning)}, critical {num(t.qber_critical)}, "
               f"no key above {num(t.qber_no_key)}.",
               Q(f"qkd_qber_ratio{L}", "{{basis}} basis"),
               Q(f"qkd_qber_upper_bound_ratio{L}", "{{basis}} basis upper bound"),
               w=24, min=0, steps=qber_steps(c), lines=True, styles=((".*upper bound", DASHED),)),
        )),
        Row("Channel", (
            ts("Channel loss vs budget", "dB",
               f"Loss inferred from the signal gain, the budget the link is engineered for, and its {b.window} median.",
               Q(f"qkd_channel_loss_db{L}", "loss"),
               Q(f"qkd_channel_loss_budget_db{L}", "budget"),
               Q(f"{loss_base}{L}", f"baseline ({b.window} median)"),
               styles=(("budget", DASHED), ("baseline.*", DOTTED))),
            ts("Gain by intensity", "percentunit", "Detection probability per pulse for signal, decoy and vacuum pulses.",
               Q(f"qkd_gain_ratio{L}", "{{intensity}}"), log=True),
        )),
        Row("Detectors", (
            ts("Detections per second", "cps", "Receiver clicks per second by intensity class (before sifting).",
               Q(f"sum by (intensity) (rate(qkd_detections_total{L}[$__rate_interval]))", "{{intensity}}"), log=True),
            ts("Sifted bits and errors per second", "cps", "Signal-pulse sifted bits and bit errors per second, by basis.",
               Q('sum by (basis) (rate(qkd_sifted_detections_total{link="$link", intensity="signal"}[$__rate_interval]))',
                 "{{basis}} sifted"),
               Q('sum by (basis) (rate(qkd_errors_total{link="$link", intensity="signal"}[$__rate_interval]))',
                 "{{basis}} errors"), log=True),
            ts("Dark counts: vacuum gain vs baseline", "percentunit",
               f"Clicks on empty pulses ({b.smoothing} average) against the band of x{k} around the {b.window} "
               "median. Far above: hot detector or stray light. Far below: a detector-blinding signature.",
               Q(f"{gain_smooth}{vac}", "vacuum gain"),
               Q(f"{gain_base}{vac} * {k}", f"baseline x{k}"),
               Q(f"{gain_base}{vac} / {k}", f"baseline / {k}"),
               log=True, styles=(("baseline.*", DASHED),)),
            ts("Pulses sent per second", "cps", "Transmitter pulses per second by intensity class.",
               Q(f"sum by (intensity) (rate(qkd_pulses_total{L}[$__rate_interval]))", "{{intensity}}"), log=True),
        )),
        Row("Key store", (
            ts("Key store", "decbits", "Key waiting for applications and the store's size, in bits.",
               Q(f"qkd_key_buffer_bits{L}", "stored"), Q(f"qkd_key_buffer_capacity_bits{L}", "capacity"), min=0,
               styles=(("capacity", DASHED),)),
            ts("Key flow", "bps", "Key added to the store, requested by applications and delivered to them, bits/s.",
               Q(f"rate(qkd_key_generated_bits_total{L}[$__rate_interval])", "generated"),
               Q(f"rate(qkd_key_requested_bits_total{L}[$__rate_interval])", "requested"),
               Q(f"rate(qkd_key_delivered_bits_total{L}[$__rate_interval])", "delivered")),
        )),
        Row("Driver", (
            ts("Batches and driver errors per second", "cps",
               "Valid acquisition windows per second, and batches lost by reason.",
               Q(f"rate(qlink_batches_total{L}[$__rate_interval])", "valid batches"),
               Q(f"sum by (reason) (rate(qlink_driver_errors_total{L}[$__rate_interval]))", "lost: {{reason}}")),
            ts("Simulated faults", "none", "Faults injected into simulated links (demos only; never alerted on).",
               Q(f"qlink_fault_active{L}", "{{kind}}"), min=0, max=1),
        )),
    ), link=LinkVariable(KEY_LINKS), tags=("qkd",))


def entanglement(c: MonitoringConfig) -> Board:
    t = c.thresholds
    L = '{link=~"$link"}'
    s = num(t.chsh_sigmas)
    return Board("entanglement", "qtelemetry / Entanglement",
                 "Entangled-photon (SPDC, BBM92) links and heralded entanglement between quantum memories.", (
        Row("Entangled photons", (
            ts("CHSH S", "none",
               f"Bell-test value S and S minus {s} standard deviations; above 2 (dashed) the pairs are entangled, "
               "2.83 for a perfect Bell pair.",
               Q(f"qent_chsh_value{L}", "{{link}} S"),
               Q(f"qent_chsh_value{L} - {s} * qent_chsh_value_stddev{L}", f"{{{{link}}}} S - {s} sigma"),
               steps=((2, RED), (2 * 2 ** 0.5, BLUE)), lines=True, styles=((".*sigma", DASHED),)),
            ts("Fidelity lower bound", "percentunit",
               f"Lower confidence bound on the Bell-state fidelity of detected pairs; warning below {num(t.fidelity_min)}.",
               Q(f"qent_fidelity_lower_bound_ratio{L}", "{{link}}"), max=1,
               steps=((0, RED), (t.fidelity_min, GREEN)), lines=True),
            ts("Visibility", "percentunit", "Two-photon visibility per basis (1 - 2 QBER).",
               Q(f"qent_visibility_ratio{L}", "{{link}} {{basis}}"), max=1),
            ts("QBER with its upper bound", "percentunit", "Key-round QBER per basis and its upper confidence bound.",
               Q(f"qkd_qber_ratio{L}", "{{link}} {{basis}}"),
               Q(f"qkd_qber_upper_bound_ratio{L}", "{{link}} {{basis}} upper bound"),
               min=0, steps=qber_steps(c), lines=True, styles=((".*upper bound", DASHED),)),
            ts("Coincidences and accidentals per second", "cps",
               "Photon-pair coincidences, and accidental coincidences in delayed windows.",
               Q(f"qent_coincidence_rate_per_second{L}", "{{link}} coincidences"),
               Q(f"qent_accidental_rate_per_second{L}", "{{link}} accidentals"), log=True),
            ts("Coincidence-to-accidental ratio", "none", "(C - A)/A: signal over background of the pair source.",
               Q(f"qent_coincidence_to_accidental{L}", "{{link}}")),
            ts("Arm heralding efficiency", "percentunit",
               "Klyshko heralding efficiency of each arm (fiber x detector): falls with that arm's loss.",
               Q(f"qent_heralding_efficiency_ratio{L}", "{{link}} arm {{side}}"), min=0, max=1),
            ts("Secret key rate", "bps", "BBM92 secret key rate, finite-key and asymptotic.",
               Q(f"qkd_secret_key_rate_bits_per_second{L} and on (link) qent_chsh_value{L}", "{{link}} finite-key"),
               Q(f"qkd_asymptotic_secret_key_rate_bits_per_second{L} and on (link) qent_chsh_value{L}",
                 "{{link}} asymptotic"), log=True, styles=((".*asymptotic", DASHED),)),
            ts("Pair rates per second", "cps", "Raw coincidences (key rounds by basis pair) and CHSH rounds per second.",
               Q(f"sum by (link) (rate(qent_coincidences_total{L}[$__rate_interval]))", "{{link}} key rounds"),
               Q(f"sum by (link) (rate(qent_chsh_coincidences_total{L}[$__rate_interval]))", "{{link}} CHSH rounds"),
               Q(f"rate(qent_accidentals_total{L}[$__rate_interval])", "{{link}} accidentals"),
               log=True),
            ts("Bit errors and pump pulses per second", "cps",
               "Key-round bit errors by basis, and pump pulses (coincidence gates) of the source.",
               Q(f"sum by (link, basis) (rate(qent_bit_errors_total{L}[$__rate_interval]))", "{{link}} {{basis}} errors"),
               Q(f"rate(qent_pump_pulses_total{L}[$__rate_interval])", "{{link}} pump pulses"), log=True),
        )),
        Row("Heralded entanglement", (
            ts("Heralding success probability", "percentunit", "Heralds per attempt with its confidence interval.",
               Q(f"qent_heralding_success_probability_ratio{L}", "{{link}}"),
               Q(f"qent_heralding_success_probability_lower_bound_ratio{L}", "{{link}} lower bound"),
               Q(f"qent_heralding_success_probability_upper_bound_ratio{L}", "{{link}} upper bound"),
               styles=((".*bound", DASHED),)),
            ts("Heralded pairs per second", "cps", "Entangled memory pairs produced per second.",
               Q(f"qent_heralded_pairs_per_second{L}", "{{link}}")),
            ts("Heralded pair fidelity", "percentunit",
               f"Fidelity of stored pairs when used, with its confidence interval; warning when even the upper "
               f"bound is below {num(t.heralded_fidelity_min)}.",
               Q(f"qent_heralded_fidelity_ratio{L}", "{{link}}"),
               Q(f"qent_heralded_fidelity_lower_bound_ratio{L}", "{{link}} lower bound"),
               Q(f"qent_heralded_fidelity_upper_bound_ratio{L}", "{{link}} upper bound"),
               max=1, steps=((0, RED), (t.heralded_fidelity_min, GREEN)), lines=True, styles=((".*bound", DASHED),)),
            ts("Attempts and heralds per second", "cps", "Entanglement-generation attempts and heralds per second.",
               Q(f"rate(qent_heralding_attempts_total{L}[$__rate_interval])", "{{link}} attempts"),
               Q(f"rate(qent_heralding_successes_total{L}[$__rate_interval])", "{{link}} heralds"), log=True),
            ts("Fidelity test measurements per second", "cps",
               "Heralded pairs measured to estimate fidelity, by Pauli basis and outcome.",
               Q(f"sum by (link, basis, outcome) (rate(qent_heralded_pair_measurements_total{L}[$__rate_interval]))",
                 "{{link}} {{basis}} {{outcome}}")),
        )),
    ), link=LinkVariable(ENT_LINKS, multi=True), tags=("entanglement",))


def slo_board(c: MonitoringConfig) -> Board:
    L = '{link=~"$link"}'
    rows = []
    for slo in c.slos:
        budget = f"(1 - {num(slo.objective)})"
        burn = [w for a in slo.burn_alerts for w in a.windows]
        longs = list(dict.fromkeys(w.long for w in burn))
        shorts = list(dict.fromkeys(w.short for w in burn))
        rows += [
            Row(f"{slo.title} SLO: {num(slo.objective * 100)}% over {slo.period}", (
                st("Objective", "percentunit", slo.description, Q(f"vector({num(slo.objective)})"), w=4, h=6),
                st(f"Achieved ({slo.period})", "percentunit", f"1 - error ratio over {slo.period}, per link.",
                   Q(f"1 - {slo_record(slo, slo.period)}{L}", "{{link}}"), w=10, h=6,
                   steps=((0, RED), (slo.objective, GREEN))),
                st("Error budget remaining", "percentunit",
                   f"Share of the {slo.period} error budget ({num(100 * (1 - slo.objective))}% of requests) not yet spent.",
                   Q(f"{slo_budget_record(slo)}{L}", "{{link}}"), w=10, h=6,
                   steps=((0, RED), (0.25, ORANGE), (0.5, GREEN))),
            )),
            Row(f"{slo.title}: burn rate", (
                ts("Burn rate by window", "none",
                   "Error ratio / error budget: 1 spends the budget exactly over the period. Alerts need both the "
                   "long and the short window of a pair above its factor (dashed lines: "
                   + ", ".join(f"{w.long}/{w.short} x{num(w.factor)}" for w in burn) + ").",
                   *(Q(f"{slo_record(slo, w)}{L} / {budget}", f"{{{{link}}}} {w}") for w in longs),
                   w=24, min=0, log=True, lines=True,
                   steps=tuple(sorted(((w.factor, ORANGE if w.factor < 6 else RED) for w in burn)))),
                ts("Error ratio (short windows)", "percentunit", "Share of requested key not delivered.",
                   *(Q(f"{slo_record(slo, w)}{L}", f"{{{{link}}}} {w}") for w in shorts),
                   min=0),
                ts("Requested vs delivered", "bps", "Key requested by applications and delivered to them, bits/s.",
                   Q(f"sum by (link) (rate({slo.total}{L}[$__rate_interval]))", "{{link}} requested"),
                   Q(f"sum by (link) (rate({slo.good}{L}[$__rate_interval]))", "{{link}} delivered"),
                   styles=((".*requested", DASHED),)),
            )),
        ]
    rows.append(Row("Key stores", (
        ts("Key store fill", "percentunit", "Key waiting in each link's store as a fraction of its size.",
           Q(f"qkd_key_buffer_bits{L} / qkd_key_buffer_capacity_bits{L}", "{{link}}"), min=0, max=1),
        ts("Key generated per second", "bps", "Secret key added to each link's store, bits/s.",
           Q(f"rate(qkd_key_generated_bits_total{L}[$__rate_interval])", "{{link}}")),
    )))
    return Board("key-supply-slo", "qtelemetry / Key supply SLO",
                 "Key-supply SLO: key delivered / key requested, error budget and multi-window burn rates.",
                 tuple(rows), link=LinkVariable(".*", multi=True, metric=c.slos[0].total if c.slos else "qlink_info"),
                 tags=("slo",))


def exporter(c: MonitoringConfig) -> Board:
    t = c.thresholds
    return Board("exporter", "qtelemetry / Exporter health",
                 "Is monitoring itself healthy: scrape targets, link drivers, data age, estimation time.", (
        Row("Scrape", (
            ts("Exporters up", "none", "1 when Prometheus scrapes the exporter successfully.",
               Q("up", "{{instance}}"), min=0, max=1),
            ts("Scrape duration", "s", "Time Prometheus needs to scrape each exporter.",
               Q("scrape_duration_seconds", "{{instance}}")),
            ts("Estimation cycle (mean)", "s",
               f"Mean wall time of one estimation cycle over all links; alert above {num(t.estimation_duration_seconds)} s.",
               Q("rate(qtelemetry_estimation_duration_seconds_sum[$__rate_interval])"
                 " / rate(qtelemetry_estimation_duration_seconds_count[$__rate_interval])", "{{instance}}"),
               steps=((t.estimation_duration_seconds, RED),), lines=True),
            ts("Links configured", "none", "Links per protocol in each exporter's config.",
               Q("qtelemetry_links", "{{instance}} {{protocol}}")),
        )),
        Row("Links", (
            ts("Links up", "none", "qlink_up per link: 1 while the driver delivers valid batches.",
               Q("qlink_up", "{{link}}"), min=0, max=1),
            ts("Data age", "s", f"Seconds since each link's last valid batch; stale above {num(t.stale_after_seconds)} s.",
               Q("time() - qlink_last_update_timestamp_seconds", "{{link}}"),
               steps=((t.stale_after_seconds, RED),), lines=True, min=0),
            ts("Driver errors per second by reason", "cps", "Batches lost to driver failures or impossible data.",
               Q("sum by (link, reason) (rate(qlink_driver_errors_total[$__rate_interval]))", "{{link}} {{reason}}")),
            ts("Estimates skipped per second by reason", "cps",
               "Estimation cycles whose window held too little data (no detections, coincidences or heralds).",
               Q("sum by (link, reason) (rate(qlink_estimates_skipped_total[$__rate_interval]))", "{{link}} {{reason}}")),
            ts("Valid batches per second", "cps", "Acquisition windows received from each link's driver.",
               Q("rate(qlink_batches_total[$__rate_interval])", "{{link}}")),
            ts("Simulated faults active", "none",
               "Faults injected into simulated links (demos); informational, never alerted on.",
               Q("qlink_fault_active", "{{link}} {{kind}}"), min=0, max=1),
            Panel("Versions", "none", "qtelemetry version of each exporter.",
                  (Q("qtelemetry_build_info"),), kind="table",
                  table_columns=(("instance", "Instance"), ("version", "Version"))),
        )),
    ), tags=("exporter",))


BOARDS = (fleet, link, entanglement, slo_board, exporter)


# -------------------------------------------------------------------------------------------
# building
# -------------------------------------------------------------------------------------------


def _thresholds(steps: tuple[tuple[float, str], ...]) -> db.ThresholdsConfig:
    base = dm.Threshold(None, GREEN)
    if steps and steps[0][0] == 0:  # a step at 0 sets the base colour
        base, steps = dm.Threshold(None, steps[0][1]), steps[1:]
    return (db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([base, *(dm.Threshold(float(v), color) for v, color in steps)]))


def _target(expr: str, legend: str, ref: str, instant: bool, table_format: bool) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS).legend_format(legend or "__auto")
    if instant:
        q = q.instant()
    else:
        q = q.range()
    if table_format:
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


def _panel(spec: Panel, pid: int, grid: dm.GridPos, exprs: list[tuple[str, str]]) -> Any:
    kind = spec.kind
    builder: Any
    if kind == "timeseries":
        builder = (timeseries.Panel()
                   .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
                           .placement(cm.LegendPlacement.BOTTOM).calcs(["lastNotNull", "min", "max"]))
                   .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
                   .line_width(1).fill_opacity(0).span_nulls(False))
        if spec.lines:
            builder = builder.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        if spec.log:
            builder = builder.scale_distribution(cb.ScaleDistributionConfig().type(cm.ScaleDistribution.LOG).log(10))
        for pattern, style in spec.styles:
            builder = builder.override_by_regexp(pattern, [dm.DynamicConfigValue("custom.lineStyle", style)])
    elif kind == "stat":
        builder = (stat.Panel()
                   .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                   .color_mode(cm.BigValueColorMode.VALUE).graph_mode(cm.BigValueGraphMode.NONE)
                   .text_mode(cm.BigValueTextMode.AUTO))
        if spec.mappings:
            builder = builder.mappings([dm.ValueMap({v: dm.ValueMappingResult(text=text, color=color, index=i)
                                                     for i, (v, text, color) in enumerate(spec.mappings)})])
    elif kind == "table":
        builder = table.Panel().show_header(True)
        builder = builder.with_transformation(dm.DataTransformerConfig(
            id_val="joinByField", options={"byField": spec.table_columns[0][0], "mode": "outer"}))
        order = {name: i for i, (name, _) in enumerate(spec.table_columns)}
        hidden = ["Time", *(f"Time {i}" for i in range(1, len(spec.queries) + 1)),
                  *(f"Value #{chr(ord('A') + i)}" for i in range(len(spec.queries)))]
        builder = builder.with_transformation(dm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {name: True for name in hidden if name not in order},
            "includeByName": {name: True for name in order},
            "indexByName": order, "renameByName": {name: header for name, header in spec.table_columns}}))
        for name, unit in spec.table_units:
            builder = builder.override_by_name(name, [dm.DynamicConfigValue("unit", unit)])
        if spec.table_link:
            builder = builder.override_by_name(spec.table_columns[0][0], [dm.DynamicConfigValue("links", [
                {"title": "Open link dashboard", "url": spec.table_link}])])
    else:
        raise GenerationError(f"panel {spec.title!r}: unknown kind {kind!r}")
    builder = (builder.id(pid).title(spec.title).description(spec.description).datasource(DS)
               .grid_pos(grid).unit(spec.unit).thresholds(_thresholds(spec.steps)))
    if spec.min is not None:
        builder = builder.min(spec.min)
    if spec.max is not None:
        builder = builder.max(spec.max)
    instant = kind in ("stat", "table")
    for i, (expr, legend) in enumerate(exprs):
        builder = builder.with_target(_target(expr, legend, chr(ord("A") + i), instant, kind == "table"))
    return builder


def known_names(ruleset: RuleSet) -> set[str]:
    return set(sample_names()) | PROMETHEUS_SERIES | recording_names(ruleset)


def build(board: Board, c: MonitoringConfig, ruleset: RuleSet) -> Built:
    """Dashboard JSON for one spec: checked names, injected selector, explicit ids and grid."""
    known = known_names(ruleset)
    pending = {g.name for g in ruleset.gated if g.kind == "record"} | set(PENDING_METRICS - set(sample_names()))
    targets = set(sample_names()) | TARGET_SERIES | PENDING_METRICS
    gated: list[str] = []
    panels: list[Any] = []
    pid, y = 1, 0
    for row in board.rows:
        kept = []
        for spec in row.panels:
            exprs = []
            for i, q in enumerate(spec.queries):
                waits = check_names(q.expr, known, pending, f"dashboard {board.slug} / panel {spec.title!r}")
                if waits:
                    gated.append(f"{spec.title} [{chr(ord('A') + i)}] waits for {', '.join(waits)}")
                    continue
                exprs.append((inject_selector(q.expr, c.selector, targets), q.legend))
            if not exprs:
                continue
            if spec.kind == "table" and len(exprs) != len(spec.queries):
                raise GenerationError(f"table {spec.title!r}: gating a column would shift its Value #X names")
            kept.append((spec, exprs))
        if not kept:
            continue
        panels.append(db.Row(row.title).id(pid).grid_pos(dm.GridPos(h=1, w=24, x=0, y=y)).build())
        pid, y, x, row_h = pid + 1, y + 1, 0, 0
        for spec, exprs in kept:
            if x + spec.w > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(_panel(spec, pid, dm.GridPos(h=spec.h, w=spec.w, x=x, y=y), exprs).build())
            pid, x, row_h = pid + 1, x + spec.w, max(row_h, spec.h)
        y += row_h
    dashboard_uid = uid(c, board.slug)
    builder = (db.Dashboard(board.title).uid(dashboard_uid).description(board.description)
               .tags(sorted({*c.dashboard_tags, *board.tags})).editable().timezone("browser")
               .time(c.dashboard_time_from, "now").refresh(c.dashboard_refresh)
               .tooltip(dm.DashboardCursorSync.CROSSHAIR)
               .link(db.DashboardLink("qtelemetry dashboards").type(dm.DashboardLinkType.DASHBOARDS)
                     .tags(list(c.dashboard_tags)).as_dropdown(True).include_vars(True).keep_time(True))
               .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus")))
    if board.link is not None:
        matcher = f'protocol=~"{board.link.protocols}"' if board.link.metric == "qlink_info" else ""
        query = inject_selector(f"{board.link.metric}{{{matcher}}}" if matcher else board.link.metric,
                                c.selector, targets)
        check_names(query, known, (), f"dashboard {board.slug} / variable link")
        variable = (db.QueryVariable("link").label("Link").datasource(DS)
                    .query(f"label_values({query}, link)").definition(f"label_values({query}, link)")
                    .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
                    .multi(board.link.multi).include_all(board.link.multi))
        if board.link.multi:
            variable = variable.all_value(".*")
        builder = builder.with_variable(variable)
    model = builder.build()
    model.panels = panels
    return Built(dashboard_uid, json.loads(json.dumps(model, cls=JSONEncoder, sort_keys=True)), tuple(gated))


def build_all(c: MonitoringConfig, ruleset: RuleSet) -> list[Built]:
    built = [build(board(c), c, ruleset) for board in BOARDS]
    uids = [b.uid for b in built]
    if len(set(uids)) != len(uids):
        raise GenerationError(f"duplicate dashboard uid in {uids}")
    return built


def dashboard_text(dashboard_json: dict) -> str:
    return json.dumps(dashboard_json, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -------------------------------------------------------------------------------------------
# for tests that run the panels against a real Prometheus
# -------------------------------------------------------------------------------------------


def iter_panels(dashboard_json: dict):
    for panel in dashboard_json.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels of collapsed rows


def panel_targets(dashboard_json: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every target, in panel order."""
    return [(p.get("title", ""), t["refId"], t["expr"])
            for p in iter_panels(dashboard_json) for t in p.get("targets", []) if "expr" in t]


def panel_queries(dashboard_json: dict, link: str = "", rate_interval: str = "1m",
                  **variables: str) -> list[str]:
    """Every target's expr with template variables substituted: ``$link`` by ``link``, Grafana's
    ``$__rate_interval``/``$__interval`` by ``rate_interval``, ``$__range`` by 1h, others from
    ``variables``. A variable left unsubstituted raises ValueError."""
    values = {"link": link, "__rate_interval": rate_interval, "__interval": rate_interval,
              "__range": "1h", **variables}

    def sub(expr: str) -> str:
        def one(match: re.Match) -> str:
            name = match.group(1) or match.group(2) or match.group(3)
            if name not in values:
                raise ValueError(f"no value for template variable ${name} in: {expr}")
            return values[name]
        return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", one, expr)

    return [sub(expr) for _, _, expr in panel_targets(dashboard_json)]
