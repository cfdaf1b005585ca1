"""Grafana dashboards, built with grafana-foundation-sdk from the catalogue and the monitoring config.

A dashboard is a ``Board`` of ``Row``s of ``Panel`` specs; a panel is a title, a unit, a
plain-words description and its ``Q``ueries. ``build`` turns a spec into dashboard JSON through
the SDK's builders: explicit panel ids and refIds, a grid computed here, the deployment's
selector and the dashboard's cluster/job/instance variables injected into every query, and
every metric name checked against the catalogue and the generated recording rules (an unknown
name is a ``GenerationError``; a query that reads a metric promised but not yet in the
catalogue is left out and reported).

Boards: the fleet overview, one drill-down per link kind (protocol; its uid ends with the
protocol, so a link's protocol label leads to its dashboard, and every panel applies to every
link it offers), the key-supply SLO and the exporter's health. Every board has ``datasource``,
cluster, ``job`` and ``instance`` variables (multi-select, "All" by default).

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
from grafana_foundation_sdk.builders import geomap, nodegraph, prometheus, stat, table, timeseries  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models import common as cm  # noqa: E402
from grafana_foundation_sdk.models import dashboard as dm  # noqa: E402
from grafana_foundation_sdk.models import geomap as gm  # noqa: E402
from grafana_foundation_sdk.models import prometheus as pm  # noqa: E402

from qtelemetry.estimation.reported import ETSI014, ETSI015
from qtelemetry.monitoring.catalogue import BB84, BBM92, HERALDED, SIFTED
from qtelemetry.monitoring.config import MonitoringConfig
from qtelemetry.monitoring.promql import PROMETHEUS_SERIES, TARGET_SERIES, GenerationError, inject_selector, sample_names
from qtelemetry.monitoring.rules import (
    PENDING_METRICS,
    PREFIXES,
    RuleSet,
    baseline_names,
    check_names,
    num,
    pct,
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
    """One panel target: a PromQL expression, its legend, and its refId when a panel finds its
    frames by refId (default: A, B, ... in order)."""

    expr: str
    legend: str = ""
    ref: str = ""


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
    symlog: float | None = None  # symmetric log axis, linear below this: zero stays on the chart
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
    """The ``link`` template variable: links of these protocols (all if empty) that have ``metric``."""

    protocols: tuple[str, ...] = ()
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
    demand: bool = False  #: a ``demand`` variable (multi-select) over the network's key demands


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


def qber_steps(c: MonitoringConfig) -> tuple[tuple[float, str], ...]:
    t = c.thresholds
    return ((t.qber_warning, ORANGE), (t.qber_critical, RED), (t.qber_no_key, DARK_RED))


UP_MAPPINGS = (("1", "UP", GREEN), ("0", "DOWN", RED))
ALERT_NAMES = "|".join(f"{prefix}.*" for prefix in PREFIXES)
L = '{link="$link"}'  # the drill-downs' link


def link_dashboard_url(c: MonitoringConfig) -> str:
    """A table cell's link to the drill-down of the row's link (its protocol's dashboard)."""
    cl = c.cluster_label
    return (f"/d/{c.dashboard_uid('${__data.fields.protocol}')}?var-link=${{__value.raw}}"
            f"&var-{cl}=${{__data.fields.{cl}}}&${{datasource:queryparam}}")


def fleet(c: MonitoringConfig) -> Board:
    cl = c.cluster_label
    url = link_dashboard_url(c)
    per_link = f"max by ({cl}, link)"
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
                  "One row per link; click a link name to open the dashboard of its kind.", (
                      Q(f"max by ({cl}, link, protocol, site_a, site_b) (qlink_info)"),
                      Q(f"{per_link} (qlink_up)"),
                      Q(f"{per_link} (qkd_secret_key_rate_bits_per_second)"),
                      Q(f"{per_link} (qkd_qber_upper_bound_ratio)"),
                      Q(f"{per_link} (qkd_channel_loss_db)"),
                      Q(f"{per_link} (qkd_key_buffer_bits / qkd_key_buffer_capacity_bits)"),
                      Q(f"{per_link} (qent_chsh_value)"),
                      Q(f"{per_link} (qlink_data_age_seconds)"),
                  ), kind="table", w=24, h=8,
                  table_columns=(("link", "Link"), (cl, "Cluster"), ("protocol", "Protocol"), ("site_a", "Site A"),
                                 ("site_b", "Site B"), ("Value #B", "Up"), ("Value #C", "Secret key rate (bit/s)"),
                                 ("Value #D", "QBER upper bound"), ("Value #E", "Loss (dB)"),
                                 ("Value #F", "Key store fill"), ("Value #G", "CHSH S"), ("Value #H", "Data age (s)")),
                  table_link=url,
                  table_units=(("Value #C", "bps"), ("Value #D", "percentunit"), ("Value #E", "dB"),
                               ("Value #F", "percentunit"), ("Value #H", "s"))),
        )),
        Row("Key", (
            ts("Secret key rate by link", "bps", "Secret key each link distils (finite-key), bits per second.",
               Q("qkd_secret_key_rate_bits_per_second", f"{{{{link}}}} {{{{{cl}}}}}"), symlog=1),
            ts("QBER upper bound by link", "percentunit",
               "Worst basis of each link: upper confidence bound on the quantum bit error rate. Dashed "
               f"lines: warning {num(c.thresholds.qber_warning)}, critical {num(c.thresholds.qber_critical)}, "
               f"no key above {num(c.thresholds.qber_no_key)}.",
               Q(f"{per_link} (qkd_qber_upper_bound_ratio)", f"{{{{link}}}} {{{{{cl}}}}}"), steps=qber_steps(c),
               lines=True, min=0),
            ts("Channel loss by link", "dB", "Optical loss of each key-distilling link's fibre, inferred from detections.",
               Q("qkd_channel_loss_db", f"{{{{link}}}} {{{{{cl}}}}}")),
            ts("Key store fill by link", "percentunit", "Key waiting for applications, as a fraction of the store.",
               Q("qkd_key_buffer_bits / qkd_key_buffer_capacity_bits", f"{{{{link}}}} {{{{{cl}}}}}"), min=0, max=1,
               steps=((0, RED), (0.1, ORANGE), (0.5, GREEN))),
        )),
        Row("Key delivery (ETSI 014 KMEs)", (
            ts("KME status latency p90 by link", "s",
               f"90th percentile of the status requests each KME answered; ticket above "
               f"{num(c.thresholds.kme_latency_seconds)} s.",
               Q(kme_latency('{endpoint="status"}', f"{cl}, link", 0.9), f"{{{{link}}}} {{{{{cl}}}}}"), w=8, min=0,
               steps=((c.thresholds.kme_latency_seconds, RED),), lines=True),
            ts("KME availability by link", "percentunit", "Share of each KME's status polls that got a valid answer.",
               Q(f"sum by ({cl}, link) (rate(qlink_batches_total[$__rate_interval]))\n"
                 f"/ (\n  sum by ({cl}, link) (rate(qlink_batches_total[$__rate_interval]))\n"
                 f"  + sum by ({cl}, link) (rate(qlink_driver_errors_total[$__rate_interval]))\n)\n"
                 f"and on ({cl}, link) group by ({cl}, link) (qlink_info{{protocol=\"{ETSI014}\"}})",
                 f"{{{{link}}}} {{{{{cl}}}}}"), w=8, min=0, max=1),
            ts("Key probes refused by link", "percentunit",
               "Share of one-key probes each KME answered with an error: applications would have been refused a key.",
               Q(f'sum by ({cl}, link) (rate(qkd_kme_key_probes_total{{result="refused"}}[$__rate_interval]))\n'
                 f"/ sum by ({cl}, link) (rate(qkd_kme_key_probes_total[$__rate_interval]))", f"{{{{link}}}} {{{{{cl}}}}}"),
               w=8, min=0, max=1, steps=((c.thresholds.key_refusal_ratio, RED),), lines=True),
        )),
        Row("Entanglement", (
            ts("CHSH S by link", "none", "Bell-test value of entangled-photon links: above 2 (dashed) is entanglement.",
               Q("qent_chsh_value", f"{{{{link}}}} {{{{{cl}}}}}"), steps=((2, RED),), lines=True),
            ts("Fidelity by link", "percentunit",
               "Bell-state fidelity: lower bound for entangled-photon links, estimate for heralded memory pairs.",
               Q("qent_fidelity_lower_bound_ratio", f"{{{{link}}}} {{{{{cl}}}}} (lower bound)"),
               Q("qent_heralded_fidelity_ratio", f"{{{{link}}}} {{{{{cl}}}}}"), max=1),
            ts("Entangled pairs per second", "cps", "Coincidences (photon pairs) and heralded memory pairs per second.",
               Q("qent_coincidence_rate_per_second", f"{{{{link}}}} {{{{{cl}}}}} coincidences"),
               Q("qent_heralded_pairs_per_second", f"{{{{link}}}} {{{{{cl}}}}} heralded pairs"), symlog=1),
            ts("Heralding success probability", "percentunit", "Heralded pairs per attempt of memory links.",
               Q("qent_heralding_success_probability_ratio", f"{{{{link}}}} {{{{{cl}}}}}"), min=0),
        )),
    ), tags=("fleet",))


# --- rows shared by the drill-downs ----------------------------------------------------------


def status_row(c: MonitoringConfig, *panels: Panel) -> Row:
    t = c.thresholds
    return Row("Status", (
        st("Link", "none", "Does the driver deliver valid data?", Q(f"qlink_up{L}"), mappings=UP_MAPPINGS,
           steps=((0, RED), (1, GREEN))),
        st("Data age", "s", "Age of the newest data in the link's estimates, measured by the exporter when scraped.",
           Q(f"qlink_data_age_seconds{L}"), steps=((t.stale_after_seconds, RED),)),
        *panels,
    ))


def key_rate_row(c: MonitoringConfig, *panels: Panel) -> Row:
    t, b = c.thresholds, c.baseline
    skr_smooth, skr_base = baseline_names("qkd_secret_key_rate_bits_per_second", c)
    return Row("Key rate", (
        ts("Secret key rate vs plan and repeaterless bound", "bps",
           "Finite-key rate (what the link delivers), asymptotic rate (infinitely long blocks), the rate "
           "the link's plan promised, and the PLOB bound no repeaterless link can beat (Pirandola et al. 2017).",
           Q(f"qkd_secret_key_rate_bits_per_second{L}", "finite-key"),
           Q(f"qkd_asymptotic_secret_key_rate_bits_per_second{L}", "asymptotic"),
           Q(f"qkd_expected_secret_key_rate_bits_per_second{L}", "plan"),
           Q(f"qkd_repeaterless_bound_bits_per_second{L}", "repeaterless bound (PLOB)"),
           Q(f"{skr_base}{L}", f"baseline ({b.window} median)"),
           w=16, symlog=1, styles=(("plan", DASHED), ("repeaterless.*", DASHED), ("baseline.*", DOTTED))),
        ts("Fraction of the repeaterless bound", "percentunit",
           "Achieved key rate / PLOB bound: how close the link is to the fundamental limit (above 1 is impossible).",
           Q(f"qkd_repeaterless_bound_ratio{L}", "of PLOB bound"), w=8, min=0, steps=((1, RED),), lines=True),
        *panels,
        ts("Key rate vs its baseline", "percentunit",
           f"{b.smoothing} average of the secret key rate over its {b.window} median; the drop alert fires "
           f"below {num(t.key_rate_drop_ratio)}.",
           Q(f"{skr_smooth}{L} / {skr_base}{L}", "of baseline"), w=12, min=0,
           steps=((0, RED), (t.key_rate_drop_ratio, GREEN)), lines=True),
    ))


def qber_row(c: MonitoringConfig) -> Row:
    t = c.thresholds
    return Row("QBER", (
        ts("QBER with its upper confidence bound", "percentunit",
           "Quantum bit error rate per basis (solid) and its upper confidence bound (dashed), which the "
           f"alerts use. Threshold lines: warning {num(t.qber_warning)}, critical {num(t.qber_critical)}, "
           f"no key above {num(t.qber_no_key)}.",
           Q(f"qkd_qber_ratio{L}", "{{basis}} basis"),
           Q(f"qkd_qber_upper_bound_ratio{L}", "{{basis}} basis upper bound"),
           w=24, min=0, steps=qber_steps(c), lines=True, styles=((".*upper bound", DASHED),)),
    ))


def loss_panel(c: MonitoringConfig) -> Panel:
    _, loss_base = baseline_names("qkd_channel_loss_db", c)
    return ts("Channel loss vs budget", "dB",
              f"End-to-end loss, the budget the link is engineered for, and its {c.baseline.window} median.",
              Q(f"qkd_channel_loss_db{L}", "loss"),
              Q(f"qkd_channel_loss_budget_db{L}", "budget"),
              Q(f"{loss_base}{L}", f"baseline ({c.baseline.window} median)"),
              styles=(("budget", DASHED), ("baseline.*", DOTTED)))


def key_store_row(c: MonitoringConfig) -> Row:
    t = c.thresholds
    return Row("Key store", (
        ts("Key store", "decbits", "Key waiting for applications and the store's size, in bits.",
           Q(f"qkd_key_buffer_bits{L}", "stored"), Q(f"qkd_key_buffer_capacity_bits{L}", "capacity"), min=0,
           styles=(("capacity", DASHED),)),
        ts("Key flow", "bps", "Key added to the store, requested by applications and delivered to them, bits/s.",
           Q(f"rate(qkd_key_generated_bits_total{L}[$__rate_interval])", "generated"),
           Q(f"rate(qkd_key_requested_bits_total{L}[$__rate_interval])", "requested"),
           Q(f"rate(qkd_key_delivered_bits_total{L}[$__rate_interval])", "delivered"), symlog=1),
        st("Key store fill", "percentunit", "Fill of the key store between the link and its applications.",
           Q(f"qkd_key_buffer_bits{L} / qkd_key_buffer_capacity_bits{L}"), w=24, h=4,
           steps=((0, RED), (t.key_buffer_imminent.fill_ratio, ORANGE), (t.key_buffer_forecast.fill_ratio, GREEN))),
    ))


def driver_row(simulated: bool = True) -> Row:
    """Batches and errors; for simulated link kinds also the faults injected into them."""
    faults = (ts("Simulated faults", "none", "Faults injected into simulated links (demos only; never alerted on).",
                 Q(f"qlink_fault_active{L}", "{{kind}}"), min=0, max=1),) if simulated else ()
    return Row("Driver", (
        ts("Batches and driver errors per second", "cps",
           "Valid acquisition windows (device readings) per second, and batches lost by reason (overflow: the "
           "estimator could not keep up with this driver).",
           Q(f"rate(qlink_batches_total{L}[$__rate_interval])", "valid batches"),
           Q(f"sum by (reason) (rate(qlink_driver_errors_total{L}[$__rate_interval]))", "lost: {{reason}}"), symlog=1,
           w=12 if simulated else 24),
        *faults,
    ))


def key_status(c: MonitoringConfig) -> tuple[Panel, ...]:
    return (
        st("Secret key rate", "bps", "Finite-key secret key rate, bits per second.",
           Q(f"qkd_secret_key_rate_bits_per_second{L}")),
        st("QBER upper bound", "percentunit", "Worst basis, upper confidence bound.",
           Q(f"max(qkd_qber_upper_bound_ratio{L})"), steps=qber_steps(c)),
        st("Channel loss", "dB", "End-to-end optical loss.", Q(f"qkd_channel_loss_db{L}")),
        st("Key store", "percentunit", "Fill of the key store between the link and its applications.",
           Q(f"qkd_key_buffer_bits{L} / qkd_key_buffer_capacity_bits{L}"),
           steps=((0, RED), (c.thresholds.key_buffer_imminent.fill_ratio, ORANGE),
                  (c.thresholds.key_buffer_forecast.fill_ratio, GREEN))),
    )


# --- one drill-down per link kind --------------------------------------------------------------


def bb84_link(c: MonitoringConfig) -> Board:
    b = c.baseline
    gain_smooth, gain_base = baseline_names("qkd_gain_ratio", c)
    k = num(c.thresholds.dark_count_factor)
    vac = '{link="$link", intensity="vacuum"}'
    return Board(BB84, "qtelemetry / QKD link (decoy BB84)",
                 "Drill-down of one prepare-and-measure decoy-state BB84 link.", (
        status_row(c, *key_status(c)),
        key_rate_row(c, ts("Sifted key rate", "bps", "Bits left after discarding mismatched bases, before error correction.",
                           Q(f"qkd_sifted_key_rate_bits_per_second{L}", "sifted"), w=12, symlog=1)),
        qber_row(c),
        Row("Channel", (
            loss_panel(c),
            ts("Gain by intensity", "percentunit", "Detection probability per pulse for signal, decoy and vacuum pulses.",
               Q(f"qkd_gain_ratio{L}", "{{intensity}}"), symlog=1e-7),
        )),
        Row("Detectors", (
            ts("Detections per second", "cps", "Receiver clicks per second by intensity class (before sifting).",
               Q(f"sum by (intensity) (rate(qkd_detections_total{L}[$__rate_interval]))", "{{intensity}}"), symlog=1),
            sifted_errors_panel(),
            ts("Dark counts: vacuum gain vs baseline", "percentunit",
               f"Clicks on empty pulses ({b.smoothing} average) against the band of x{k} around the {b.window} "
               "median. Far above: hot detector or stray light. Far below: a detector-blinding signature.",
               Q(f"{gain_smooth}{vac}", "vacuum gain"),
               Q(f"{gain_base}{vac} * {k}", f"baseline x{k}"),
               Q(f"{gain_base}{vac} / {k}", f"baseline / {k}"),
               symlog=1e-9, styles=(("baseline.*", DASHED),)),
            ts("Pulses sent per second", "cps", "Transmitter pulses per second by intensity class.",
               Q(f"sum by (intensity) (rate(qkd_pulses_total{L}[$__rate_interval]))", "{{intensity}}"), symlog=1),
        )),
        tamper_row(),
        key_store_row(c),
        driver_row(),
    ), link=LinkVariable((BB84,)), tags=("qkd",))


def tamper_row() -> Row:
    """The tamper detectors of a decoy-BB84 or entangled-photon link."""
    return Row("Tamper detection", (
        ts("Tamper detectors: statistic over threshold", "none",
           "Each sequential detector's CUSUM statistic divided by its alarm threshold (the largest of a bank): at 1 "
           "(red) the detector alarms and QKDTamperSuspected pages security. qber_z/qber_x: QBER rise; decoy_gain: "
           "decoy/signal gain ratio (PNS, blinding); vacuum_gain: dark counts; chsh: CHSH value falls (entangled "
           "photons). Empty during the warm-up, and for a detector whose warm-up could not resolve its shift.",
           Q(f"qkd_tamper_statistic{L}", "{{detector}}"), steps=((1, RED),), lines=True, min=0),
        ts("Against the learned baseline", "none",
           "Sliding-window QBERs, gains and CHSH value over the baseline the detectors learned (1 = as learned): a "
           "bend or a source drift moves signal_gain and decoy_gain together; blinding moves decoy_gain and "
           "vacuum_gain up and QBER down.",
           Q(f"qkd_tamper_baseline_ratio{L}", "{{quantity}}"), symlog=1),
    ))


def sifted_errors_panel(**kw: Any) -> Panel:
    return ts("Sifted bits and errors per second", "cps", "Signal-pulse sifted bits and bit errors per second, by basis.",
              Q('sum by (basis) (rate(qkd_sifted_detections_total{link="$link", intensity="signal"}[$__rate_interval]))',
                "{{basis}} sifted"),
              Q('sum by (basis) (rate(qkd_errors_total{link="$link", intensity="signal"}[$__rate_interval]))',
                "{{basis}} errors"), symlog=1, **kw)


def sifted_link(c: MonitoringConfig) -> Board:
    """SeQUeNCe's BB84 + Cascade: no decoy states and no privacy amplification, so no loss or secret key."""
    return Board(SIFTED, "qtelemetry / BB84 link without decoy states (SeQUeNCe)",
                 "Drill-down of one simulated BB84 + Cascade link: sifted and error-corrected key, QBER.", (
        status_row(c,
                   st("QBER upper bound", "percentunit", "Worst basis, upper confidence bound.",
                      Q(f"max(qkd_qber_upper_bound_ratio{L})"), steps=qber_steps(c)),
                   st("Corrected key rate", "bps", "Key released by error correction: reconciled, not secret.",
                      Q(f"qkd_corrected_key_rate_bits_per_second{L}"))),
        Row("Key rate", (
            ts("Sifted and error-corrected key rate", "bps",
               "Bits left after sifting, and bits Cascade released after error correction (no privacy "
               "amplification follows, so neither is secret key).",
               Q(f"qkd_sifted_key_rate_bits_per_second{L}", "sifted"),
               Q(f"qkd_corrected_key_rate_bits_per_second{L}", "error-corrected"), w=12, symlog=1),
            sifted_errors_panel(w=12),
        )),
        qber_row(c),
        driver_row(simulated=False),
    ), link=LinkVariable((SIFTED,)), tags=("qkd",))


def bbm92_link(c: MonitoringConfig) -> Board:
    t = c.thresholds
    s = num(t.chsh_sigmas)
    return Board(BBM92, "qtelemetry / Entangled-photon link (BBM92)",
                 "Drill-down of one entangled-photon link: SPDC source, BBM92 key and CHSH test rounds.", (
        status_row(c, *key_status(c)),
        key_rate_row(c),
        qber_row(c),
        Row("Entanglement", (
            ts("CHSH S", "none",
               f"Bell-test value S and S minus {s} standard deviations; above 2 (dashed) the pairs are entangled, "
               "2.83 for a perfect Bell pair.",
               Q(f"qent_chsh_value{L}", "S"),
               Q(f"qent_chsh_value{L} - {s} * qent_chsh_value_stddev{L}", f"S - {s} sigma"),
               steps=((2, RED), (2 * 2 ** 0.5, BLUE)), lines=True, styles=((".*sigma", DASHED),)),
            ts("Fidelity lower bound", "percentunit",
               f"Lower confidence bound on the Bell-state fidelity of detected pairs; warning below {num(t.fidelity_min)}.",
               Q(f"qent_fidelity_lower_bound_ratio{L}", "fidelity lower bound"), max=1,
               steps=((0, RED), (t.fidelity_min, GREEN)), lines=True),
            ts("Visibility", "percentunit", "Two-photon visibility per basis (1 - 2 QBER).",
               Q(f"qent_visibility_ratio{L}", "{{basis}}"), max=1),
            ts("Coincidences and accidentals per second", "cps",
               "Photon-pair coincidences, and accidental coincidences in delayed windows.",
               Q(f"qent_coincidence_rate_per_second{L}", "coincidences"),
               Q(f"qent_accidental_rate_per_second{L}", "accidentals"), symlog=1),
            ts("Coincidence-to-accidental ratio", "none", "(C - A)/A: signal over background of the pair source.",
               Q(f"qent_coincidence_to_accidental{L}", "CAR")),
            ts("Pair rates per second", "cps", "Raw coincidences (key rounds) and CHSH rounds per second.",
               Q(f"sum(rate(qent_coincidences_total{L}[$__rate_interval]))", "key rounds"),
               Q(f"sum(rate(qent_chsh_coincidences_total{L}[$__rate_interval]))", "CHSH rounds"),
               Q(f"rate(qent_accidentals_total{L}[$__rate_interval])", "accidentals"), symlog=1),
            ts("Bit errors and pump pulses per second", "cps",
               "Key-round bit errors by basis, and pump pulses (coincidence gates) of the source.",
               Q(f"sum by (basis) (rate(qent_bit_errors_total{L}[$__rate_interval]))", "{{basis}} errors"),
               Q(f"rate(qent_pump_pulses_total{L}[$__rate_interval])", "pump pulses"), symlog=1),
        )),
        Row("Channel", (
            loss_panel(c),
            ts("Arm heralding efficiency", "percentunit",
               "Klyshko heralding efficiency of each arm (fiber x detector): falls with that arm's loss.",
               Q(f"qent_heralding_efficiency_ratio{L}", "arm {{side}}"), min=0, max=1),
        )),
        tamper_row(),
        key_store_row(c),
        driver_row(),
    ), link=LinkVariable((BBM92,)), tags=("entanglement", "qkd"))


def heralded_link(c: MonitoringConfig) -> Board:
    t = c.thresholds
    return Board(HERALDED, "qtelemetry / Heralded entanglement link",
                 "Drill-down of one heralded-entanglement link between two quantum memories.", (
        status_row(c,
                   st("Heralding success", "percentunit", "Heralds per attempt.",
                      Q(f"qent_heralding_success_probability_ratio{L}")),
                   st("Heralded pairs", "cps", "Entangled memory pairs per second.",
                      Q(f"qent_heralded_pairs_per_second{L}")),
                   st("Pair fidelity", "percentunit", "Bell-state fidelity of stored pairs when used.",
                      Q(f"qent_heralded_fidelity_ratio{L}"), steps=((0, RED), (t.heralded_fidelity_min, GREEN)))),
        Row("Heralded entanglement", (
            ts("Heralding success probability", "percentunit", "Heralds per attempt with its confidence interval.",
               Q(f"qent_heralding_success_probability_ratio{L}", "success probability"),
               Q(f"qent_heralding_success_probability_lower_bound_ratio{L}", "lower bound"),
               Q(f"qent_heralding_success_probability_upper_bound_ratio{L}", "upper bound"),
               min=0, styles=((".*bound", DASHED),)),
            ts("Heralded pairs per second", "cps", "Entangled memory pairs produced per second.",
               Q(f"qent_heralded_pairs_per_second{L}", "pairs"), symlog=1),
            ts("Heralded pair fidelity", "percentunit",
               f"Fidelity of stored pairs when used, with its confidence interval; warning when even the upper "
               f"bound is below {num(t.heralded_fidelity_min)}.",
               Q(f"qent_heralded_fidelity_ratio{L}", "fidelity"),
               Q(f"qent_heralded_fidelity_lower_bound_ratio{L}", "lower bound"),
               Q(f"qent_heralded_fidelity_upper_bound_ratio{L}", "upper bound"),
               max=1, steps=((0, RED), (t.heralded_fidelity_min, GREEN)), lines=True, styles=((".*bound", DASHED),)),
            ts("Attempts and heralds per second", "cps", "Entanglement-generation attempts and heralds per second.",
               Q(f"rate(qent_heralding_attempts_total{L}[$__rate_interval])", "attempts"),
               Q(f"rate(qent_heralding_successes_total{L}[$__rate_interval])", "heralds"), symlog=1),
            ts("Fidelity test measurements per second", "cps",
               "Heralded pairs measured to estimate fidelity, by Pauli basis and outcome.",
               Q(f"sum by (basis, outcome) (rate(qent_heralded_pair_measurements_total{L}[$__rate_interval]))",
                 "{{basis}} {{outcome}}"), w=24, symlog=1),
        )),
        driver_row(),
    ), link=LinkVariable((HERALDED,)), tags=("entanglement",))


# --- devices that report their own figures ----------------------------------------------------


def kme_latency(selector: str, by_labels: str, q: float) -> str:
    """The q-quantile of answered KME requests over the panel's rate interval, kept apart by ``by_labels``."""
    return (f"histogram_quantile({num(q)}, sum by ({by_labels}, le) "
            f"(rate(qkd_kme_request_duration_seconds_bucket{selector}[$__rate_interval])))")


def kme_link(c: MonitoringConfig) -> Board:
    t = c.thresholds
    refused = (f'sum(rate(qkd_kme_key_probes_total{{link="$link", result="refused"}}[$__rate_interval])) '
               f"/ sum(rate(qkd_kme_key_probes_total{L}[$__rate_interval]))")
    polls = f"sum(rate(qlink_batches_total{L}[$__rate_interval]))"
    return Board(ETSI014, "qtelemetry / Key management entity (ETSI GS QKD 014)",
                 "Drill-down of one SAE pair's key stream at a KME: key store, request latency, key probes.", (
        status_row(c,
                   st("Key store", "percentunit", "Fill of the KME's key store for the SAE pair.",
                      Q(f"qkd_key_buffer_bits{L} / qkd_key_buffer_capacity_bits{L}"),
                      steps=((0, RED), (t.key_buffer_imminent.fill_ratio, ORANGE), (t.key_buffer_forecast.fill_ratio, GREEN))),
                   st("Status latency p90", "s", "90th percentile of the status requests the KME answered.",
                      Q(kme_latency(f'{{link="$link", endpoint="status"}}', "endpoint", 0.9)),
                      steps=((t.kme_latency_seconds, RED),)),
                   st("Probes refused", "percentunit",
                      "Share of one-key probes the KME answered with an error: applications would have been refused.",
                      Q(refused), steps=((t.key_refusal_ratio, RED),)),
                   st("Availability", "percentunit", "Share of status polls that got a valid answer.",
                      Q(f"{polls} / ({polls} + sum(rate(qlink_driver_errors_total{L}[$__rate_interval])))"),
                      steps=((0, RED), (0.99, GREEN)))),
        Row("Key store", (
            ts("Key store", "decbits", "Key ready for the SAE pair and the store's size, in bits (ETSI 014 Status: "
               "stored_key_count and max_key_count times key_size).",
               Q(f"qkd_key_buffer_bits{L}", "stored"), Q(f"qkd_key_buffer_capacity_bits{L}", "capacity"), min=0,
               styles=(("capacity", DASHED),)),
            ts("Key supply and consumption", "bps",
               "Rises and falls of the store between polls (lower bounds on key supplied and consumed), and the net "
               "trend over the sliding window.",
               Q(f"rate(qkd_key_buffer_increase_bits_total{L}[$__rate_interval])", "supplied"),
               Q(f"rate(qkd_key_buffer_decrease_bits_total{L}[$__rate_interval])", "consumed"),
               Q(f"qkd_key_buffer_trend_bits_per_second{L}", "trend"), symlog=1, styles=(("trend", DASHED),)),
        )),
        Row("Requests", (
            ts("Request latency by endpoint", "s",
               f"Quantiles of the requests the KME answered (status polls, enc_keys key probes); ticket above "
               f"{num(t.kme_latency_seconds)} s at the 90th percentile.",
               *(Q(kme_latency(L, "endpoint", q), f"{{{{endpoint}}}} p{q * 100:g}") for q in (0.5, 0.9, 0.99)),
               min=0, steps=((t.kme_latency_seconds, RED),), lines=True),
            ts("Requests answered per second", "cps", "Requests the KME answered (any HTTP status), by endpoint.",
               Q(f"sum by (endpoint) (rate(qkd_kme_request_duration_seconds_count{L}[$__rate_interval]))",
                 "{{endpoint}}"), min=0),
            ts("Key probes per second by result", "cps",
               "One-key probes: delivered, refused (the KME answered with an error), failed (no usable answer).",
               Q(f"sum by (result) (rate(qkd_kme_key_probes_total{L}[$__rate_interval]))", "{{result}}"), min=0),
            ts("Probes refused", "percentunit",
               f"Share of probes the KME refused; the page fires above {num(t.key_refusal_ratio)} over 10 minutes.",
               Q(refused, "refused"), min=0, max=1, steps=((t.key_refusal_ratio, RED),), lines=True),
        )),
        driver_row(simulated=False),
    ), link=LinkVariable((ETSI014,)), tags=("qkd", "kme"))


def node_link(c: MonitoringConfig) -> Board:
    t = c.thresholds
    return Board(ETSI015, "qtelemetry / SD-QKD node link (ETSI GS QKD 015)",
                 "Drill-down of one key association link as its SD-QKD node reports it over RESTCONF.", (
        status_row(c,
                   st("Link active", "none", "The node reports the link ACTIVE (generating key).",
                      Q(f"qkd_link_active{L}"), mappings=(("1", "ACTIVE", GREEN), ("0", "NOT ACTIVE", RED)),
                      steps=((0, RED), (1, GREEN))),
                   st("Secret key rate", "bps", "Secret key rate the node reports (qkdl_performance skr).",
                      Q(f"qkd_secret_key_rate_bits_per_second{L}")),
                   st("QBER", "percentunit", "QBER the node reports (phys_perf QBER).",
                      Q(f"qkd_qber_ratio{L}"), steps=qber_steps(c))),
        Row("Status", (
            ts("Link status", "none", "qkdl_status as a state set: 1 for the status the node reports.",
               Q(f"qkd_link_status{L}", "{{status}}"), min=0, max=1),
            ts("Interface status", "none", "qkdi_status of the link's local QKD interface as a state set.",
               Q(f"qkd_interface_status{L}", "{{status}}"), min=0, max=1),
        )),
        Row("Key rate", (
            ts("Key rates and demand", "bps",
               "Secret key rate, effective rate left after the node's own consumption (eskr), and the applications' "
               "expected consumption.",
               Q(f"qkd_secret_key_rate_bits_per_second{L}", "skr"),
               Q(f"qkd_effective_secret_key_rate_bits_per_second{L}", "eskr"),
               Q(f"qkd_expected_key_consumption_bits_per_second{L}", "expected consumption"),
               w=24, symlog=1, styles=(("expected consumption", DASHED),)),
        )),
        Row("Physical performance", (
            ts("QBER", "percentunit",
               f"QBER of the node's key. Threshold lines: warning {num(t.qber_warning)}, critical "
               f"{num(t.qber_critical)}, no key above {num(t.qber_no_key)}.",
               Q(f"qkd_qber_ratio{L}", "{{basis}} basis"), min=0, steps=qber_steps(c), lines=True),
            ts("Signal-to-noise ratio", "none", "SNR the node reports (phys_perf SNR), if it reports one.",
               Q(f"qkd_signal_to_noise{L}", "SNR")),
            ts("Unknown identities per second", "cps",
               "Identity values outside etsi-qkd-node-types in the node's reports, by leaf (counted, never labels).",
               Q(f"sum by (leaf) (rate(qkd_node_unknown_identities_total{L}[$__rate_interval]))", "{{leaf}}"),
               w=24, min=0),
        )),
        driver_row(simulated=False),
    ), link=LinkVariable((ETSI015,)), tags=("qkd", "sdn"))


def slo_board(c: MonitoringConfig) -> Board:
    sel = '{link=~"$link"}'
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
                   Q(f"1 - {slo_record(slo, slo.period)}{sel}", "{{link}}"), w=10, h=6,
                   steps=((0, RED), (slo.objective, GREEN))),
                st("Error budget remaining", "percentunit",
                   f"Share of the {slo.period} error budget ({num(100 * (1 - slo.objective))}% of requests) not yet spent.",
                   Q(f"{slo_budget_record(slo)}{sel}", "{{link}}"), w=10, h=6,
                   steps=((0, RED), (0.25, ORANGE), (0.5, GREEN))),
            )),
            Row(f"{slo.title}: burn rate", (
                ts("Burn rate by window", "none",
                   "Error ratio / error budget: 1 spends the budget exactly over the period. Alerts need both the "
                   "long and the short window of a pair above its factor (dashed lines: "
                   + ", ".join(f"{w.long}/{w.short} x{num(w.factor)}" for w in burn) + ").",
                   *(Q(f"{slo_record(slo, w)}{sel} / {budget}", f"{{{{link}}}} {w}") for w in longs),
                   w=24, min=0, symlog=1, lines=True,
                   steps=tuple(sorted(((w.factor, ORANGE if w.factor < 6 else RED) for w in burn)))),
                ts("Error ratio (short windows)", "percentunit", "Share of requested key not delivered.",
                   *(Q(f"{slo_record(slo, w)}{sel}", f"{{{{link}}}} {w}") for w in shorts),
                   min=0),
                ts("Requested vs delivered", "bps", "Key requested by applications and delivered to them, bits/s.",
                   Q(f"sum by (link) (rate({slo.total}{sel}[$__rate_interval]))", "{{link}} requested"),
                   Q(f"sum by (link) (rate({slo.good}{sel}[$__rate_interval]))", "{{link}} delivered"),
                   styles=((".*requested", DASHED),)),
            )),
        ]
    rows.append(Row("Key stores", (
        ts("Key store fill", "percentunit", "Key waiting in each link's store as a fraction of its size.",
           Q(f"qkd_key_buffer_bits{sel} / qkd_key_buffer_capacity_bits{sel}", "{{link}}"), min=0, max=1),
        ts("Key generated per second", "bps", "Secret key added to each link's store, bits/s.",
           Q(f"rate(qkd_key_generated_bits_total{sel}[$__rate_interval])", "{{link}}"), symlog=1),
    )))
    return Board("key-supply-slo", "qtelemetry / Key supply SLO",
                 "Key-supply SLO: key delivered / key requested, error budget and multi-window burn rates.",
                 tuple(rows), link=LinkVariable(multi=True, metric=c.slos[0].total if c.slos else "qlink_info"),
                 tags=("slo",))


def exporter(c: MonitoringConfig) -> Board:
    t = c.thresholds
    inst = ", ".join((*c.identity, "instance"))
    legend = "{{instance}}"
    return Board("exporter", "qtelemetry / Exporter health",
                 "Is monitoring itself healthy: scrape targets, the exporter process and its endpoint, estimation "
                 "lag and cycle time, data age, drivers.", (
        Row("Scrape", (
            ts("Exporters up", "none", "1 when Prometheus scrapes the exporter successfully.",
               Q("up", legend), min=0, max=1),
            ts("Scrape duration", "s", "Time Prometheus needs to scrape each exporter.",
               Q("scrape_duration_seconds", legend)),
            ts("Links configured", "none", "Links per protocol in each exporter's config (its shard).",
               Q("qtelemetry_links", f"{legend} {{{{protocol}}}}")),
            Panel("Versions", "none", "qtelemetry version of each exporter.",
                  (Q("qtelemetry_build_info"),), kind="table",
                  table_columns=(("instance", "Instance"), ("version", "Version"))),
            ts("Config reloads", "none",
               "1 while the last config reload (SIGHUP or POST /-/reload) succeeded; 0: a rejected config, the "
               "previous one still runs.",
               Q("qtelemetry_config_last_reload_successful", legend), min=0, max=1,
               steps=((0, RED), (1, GREEN))),
        )),
        Row("Process and endpoint", (
            ts("Resident memory and limit", "bytes",
               "Resident memory of each exporter and the memory limit of its cgroup (container limit, systemd "
               f"MemoryMax=; absent when unlimited). A ticket above {pct(t.memory_limit_ratio)} of the limit: at the "
               "limit the kernel kills the exporter.",
               Q("process_resident_memory_bytes", f"{legend} RSS"), Q("qtelemetry_memory_limit_bytes", f"{legend} limit"),
               w=8, min=0, styles=((".* limit", DASHED),)),
            ts("CPU", "percentunit", "CPU time of each exporter process per second (100% = one core).",
               Q("rate(process_cpu_seconds_total[$__rate_interval])", legend), w=8, min=0),
            ts("Connections against the cap", "none",
               "Client connections each endpoint holds, and its cap; at the cap a new client closes the connection "
               f"that waited longest. A ticket above {pct(t.connections_ratio)} of the cap.",
               Q("qtelemetry_http_connections", f"{legend} open"),
               Q("qtelemetry_http_connections_limit", f"{legend} cap"), w=8, min=0, styles=((".* cap", DASHED),)),
            ts("Rejections per second by reason", "cps",
               "Clients refused or disconnected: wrong credentials (unauthorized), password checks queued full "
               "(auth_queue_full), oversized or late bodies, the connection cap, idle clients, failed TLS handshakes "
               "and client certificates, readers too slow to take their answer.",
               Q(f"sum by ({inst}, reason) (rate(qtelemetry_http_rejections_total[$__rate_interval]))",
                 f"{legend} {{{{reason}}}}"), w=8, min=0),
            ts("Requests per second by handler and code", "reqps",
               "Requests each endpoint answered, by path (other: any path it does not serve) and status code.",
               Q(f"sum by ({inst}, handler, code) (rate(qtelemetry_http_requests_total[$__rate_interval]))",
                 f"{legend} {{{{handler}}}} {{{{code}}}}"), w=8, min=0),
            ts("Scrape answer and render time p90", "s",
               "90th percentile of the time from a /metrics request to its answer written, and of rendering a "
               "snapshot's link series (once per cycle and format, ahead of the scrapes).",
               Q(f'histogram_quantile(0.9, sum by ({inst}, le) '
                 f'(rate(qtelemetry_http_request_duration_seconds_bucket{{handler="/metrics"}}[$__rate_interval])))',
                 f"{legend} /metrics"),
               Q(f"histogram_quantile(0.9, sum by ({inst}, le) "
                 "(rate(qtelemetry_exposition_render_duration_seconds_bucket[$__rate_interval])))", f"{legend} render"),
               w=8, min=0),
            ts("Open file descriptors", "none", "File descriptors each exporter holds (sockets included) and its limit.",
               Q("process_open_fds", f"{legend} open"), Q("process_max_fds", f"{legend} limit"), w=12, min=0,
               styles=((".* limit", DASHED),)),
            ts("Uptime", "s", "Time since each exporter process started: a drop is a restart.",
               Q("time() - process_start_time_seconds", legend), w=12, min=0),
        )),
        Row("Estimation", (
            ts("Estimation lag", "s",
               "Time since the last completed estimation cycle (computed when scraped) against the acquisition window. "
               f"Falling behind above {num(t.estimation_lag_windows)} windows on average; stalled (page) above "
               f"{num(t.estimation_stall_seconds)} s.",
               Q("qtelemetry_estimation_lag_seconds", f"{legend} lag"),
               Q("qtelemetry_estimation_interval_seconds", f"{legend} window"),
               min=0, steps=((t.estimation_stall_seconds, RED),), lines=True, styles=((".* window", DASHED),)),
            ts("Estimation cycle duration", "s",
               "Quantiles of the whole cycle's wall time (drain, validation, estimation, publication) from the "
               f"histogram, against the window; little headroom when the 90th percentile passes "
               f"{num(t.estimation_slow_ratio)} of the window.",
               *(Q(f"histogram_quantile({q}, sum by ({inst}, le) "
                   "(rate(qtelemetry_estimation_duration_seconds_bucket[$__rate_interval])))", f"{legend} p{q * 100:g}")
                 for q in (0.5, 0.9, 0.99)),
               Q("qtelemetry_estimation_interval_seconds", f"{legend} window"),
               min=0, styles=((".* window", DASHED),)),
            ts("Cycles completed and skipped per second", "cps",
               "Estimation cycles per second, and cycles skipped because the previous one overran (overload).",
               Q("rate(qtelemetry_estimation_duration_seconds_count[$__rate_interval])", f"{legend} completed"),
               Q("rate(qtelemetry_estimation_cycles_skipped_total[$__rate_interval])", f"{legend} skipped"), min=0),
            ts("Batches dropped for overflow per second", "cps",
               "Batches a link's bounded slot dropped because the estimator could not keep up with its driver.",
               Q(f'sum by ({inst}) (rate(qlink_driver_errors_total{{reason="overflow"}}[$__rate_interval]))', legend),
               min=0),
        )),
        Row("Links", (
            ts("Links up and down", "none", "Links per exporter whose driver delivers valid batches, and those that do not.",
               Q(f"sum by ({inst}) (qlink_up)", f"{legend} up"),
               Q(f"count by ({inst}) (qlink_up == 0) or sum by ({inst}) (qlink_up) * 0", f"{legend} down"), min=0),
            ts("Data age (worst and median link)", "s",
               "Age of the newest data in each exporter's estimates, measured when scraped: its oldest link and "
               f"its median link; a link that reports up with data older than {num(t.stale_after_seconds)} s is stale.",
               Q(f"max by ({inst}) (qlink_data_age_seconds)", f"{legend} worst"),
               Q(f"quantile by ({inst}) (0.5, qlink_data_age_seconds)", f"{legend} median"),
               min=0, steps=((t.stale_after_seconds, RED),), lines=True, styles=((".* median", DASHED),)),
            ts("Driver errors per second by reason", "cps", "Batches lost to driver failures or impossible data.",
               Q(f"sum by ({inst}, reason) (rate(qlink_driver_errors_total[$__rate_interval]))",
                 f"{legend} {{{{reason}}}}"), min=0),
            ts("Estimates skipped per second by reason", "cps",
               "Estimation cycles whose window held too little data (no detections, coincidences or heralds).",
               Q(f"sum by ({inst}, reason) (rate(qlink_estimates_skipped_total[$__rate_interval]))",
                 f"{legend} {{{{reason}}}}"), min=0),
            ts("Valid batches per second", "cps", "Acquisition windows received from the drivers of each exporter.",
               Q(f"sum by ({inst}) (rate(qlink_batches_total[$__rate_interval]))", legend), min=0),
            ts("Simulated faults active", "none",
               "Faults injected into simulated links (demos); informational, never alerted on.",
               Q(f"count by ({inst}, kind) (qlink_fault_active == 1)", f"{legend} {{{{kind}}}}"), min=0),
        )),
    ), tags=("exporter",))


#: Node Graph and Geomap nodes: one per site (id and title from the site label); the value is
#: its failure impact.
NODES = Q('label_replace(label_replace(qnet_site_failure_impact_demands, "id", "$1", "site", "(.*)"), '
          '"title", "$1", "site", "(.*)")', ref="nodes")
#: Edge colours (the ``color`` label): no key, in a selected demand's minimum cut, has key.
EDGE_COLOURS = {"red": RED, "blue": BLUE, "green": GREEN}
#: refIds of the Geomap's coordinate queries, joined into the nodes frame
COORDINATES = ("latitude", "longitude")


def _edges() -> Q:
    """Node Graph and Geomap edges: one per link (id, source, target from qlink_info); ``color``
    red without key, blue in a selected demand's minimum cut, else green; ``highlighted`` in such
    a cut; the value is the usable key rate."""
    base = ("qnet_link_usable_key_rate_bits_per_second\n* on (link) group_left (site_a, site_b)\n"
            "max by (link, site_a, site_b) (qlink_info)")
    for label, source in (("id", "link"), ("source", "site_a"), ("target", "site_b")):
        base = f'label_replace({base}, "{label}", "$1", "{source}", "(.*)")'
    cut = 'max by (link) (qnet_link_min_cut{demand=~"$demand"})'
    # (key rate test, and/unless the cut, colour, highlighted): four disjoint branches
    branches = (("== 0", "and", "red", "true"), ("== 0", "unless", "red", "false"),
                ("> 0", "and", "blue", "true"), ("> 0", "unless", "green", "false"))
    return Q("\nor ".join(f'label_replace(label_replace({base} {test}\n{join} on (link) {cut}, '
                          f'"color", "{colour}", "", ""), "highlighted", "{highlighted}", "", "")'
                          for test, join, colour, highlighted in branches), ref="edges")


def network(c: MonitoringConfig) -> Board:
    cl = c.cluster_label
    D = '{demand=~"$demand"}'
    multipath = 'max without (routing) (qnet_demand_capacity_bits_per_second{demand=~"$demand", routing="multipath"})'
    need = f"max by ({cl}, demand) (qnet_demand_bits_per_second{D})"
    edges = _edges()
    return Board("network", "qtelemetry / Network",
                 "Key between sites over trusted-node relay: capacity per demand (single route and multipath), "
                 "redundancy, survivable capacity after the worst single failure, stored-key autonomy, and which "
                 "links and sites matter most.", (
        Row("Demands", (
            st("Demands unmet", "none", "Demands whose multipath capacity is below what they need.",
               Q(f"count({multipath} < on ({cl}, demand) {need}) or vector(0)"), steps=((1, RED),)),
            st("One failure from unmet", "none",
               "Demands met now that the worst single failure of a link or site would leave unmet.",
               Q(f"count(max by ({cl}, demand) (qnet_demand_capacity_after_worst_failure_bits_per_second{D}) "
                 f"< on ({cl}, demand) {need}) or vector(0)"), steps=((1, ORANGE),)),
            st("Analysis age", "s", "Age of the data of the latest network analysis (computed when scraped).",
               Q("max(qnet_analysis_age_seconds)"), steps=((60, ORANGE),)),
            Panel("Demands", "none",
                  "One row per demand: its priority (larger is more important), what it needs, what a single route "
                  "and all routes give, what is left after the worst single failure (and which), node-disjoint "
                  "paths, and how long stored key would last.", (
                      Q(f"max by ({cl}, demand, src, dst) (qnet_demand_bits_per_second{D})"),
                      Q(f'max by ({cl}, demand) (qnet_demand_capacity_bits_per_second{{demand=~"$demand", routing="single_path"}})'),
                      Q(f"max by ({cl}, demand) ({multipath})"),
                      Q(f"max by ({cl}, demand, failure_kind, failure) "
                        f"(qnet_demand_capacity_after_worst_failure_bits_per_second{D})"),
                      Q(f"max by ({cl}, demand) (qnet_demand_disjoint_paths{D})"),
                      Q(f"max by ({cl}, demand) (qnet_demand_stored_key_seconds{D})"),
                      Q(f"max by ({cl}, demand) ({multipath}) - on ({cl}, demand) {need}"),
                      Q(f"max by ({cl}, demand) (qnet_demand_priority{D})"),
                  ), kind="table", w=24, h=7,
                  table_columns=(("demand", "Demand"), ("src", "From"), ("dst", "To"), ("Value #H", "Priority"),
                                 ("Value #A", "Needs (bit/s)"),
                                 ("Value #B", "Single route (bit/s)"), ("Value #C", "Multipath (bit/s)"),
                                 ("Value #D", "After worst failure (bit/s)"), ("failure", "Worst failure"),
                                 ("Value #E", "Disjoint paths"), ("Value #F", "Stored key (s)"),
                                 ("Value #G", "Headroom (bit/s)")),
                  table_units=(("Value #A", "bps"), ("Value #B", "bps"), ("Value #C", "bps"), ("Value #D", "bps"),
                               ("Value #F", "s"), ("Value #G", "bps"))),
        )),
        Row("Graph", (
            Panel("Sites and links", "bps",
                  "Sites (main stat: demands a failure of the site would leave unmet) and links (main stat: usable key "
                  "rate; red: no key; blue, highlighted: in a selected demand's minimum cut).",
                  (NODES, edges), kind="nodegraph", w=16, h=12),
            Panel("Map", "bps",
                  "Sites at their configured coordinates (size: demands a failure of the site would leave unmet) and "
                  "the links between them (width and label: usable key rate; red: no key; blue: in a selected "
                  "demand's minimum cut). Sites without coordinates and their links are not drawn.",
                  (NODES, edges, *(Q(f"max by (site) (qnet_site_{axis}_degrees)", ref=axis) for axis in COORDINATES)),
                  kind="geomap", w=8, h=12),
        )),
        Row("Capacity", (
            ts("Capacity vs demand", "bps",
               "Multipath capacity of each demand (solid) against what it needs (dashed) and its repeaterless bound "
               "(dotted: no relay over these links can beat it).",
               Q(multipath, "{{demand}} capacity"),
               Q(f"qnet_demand_bits_per_second{D}", "{{demand}} needs"),
               Q(f"qnet_demand_repeaterless_bound_bits_per_second{D}", "{{demand}} bound"),
               symlog=1, styles=((".*needs", DASHED), (".*bound", DOTTED))),
            ts("Capacity after the worst single failure", "bps",
               "What is left for each demand if its worst single link or site failure happened now (N-1).",
               Q(f"max by ({cl}, demand) (qnet_demand_capacity_after_worst_failure_bits_per_second{D})",
                 "{{demand}}"), symlog=1),
        )),
        Row("Relayed key (simulated links)", (
            ts("Key relayed vs requested", "bps",
               "Key the simulated key relay delivered end to end for each demand (solid) against what it asked for "
               "(dashed); absent for demands over real devices, which relay key themselves.",
               Q(f"sum by ({cl}, demand) (rate(qnet_demand_delivered_bits_total{D}[$__rate_interval]))", "{{demand}} delivered"),
               Q(f"sum by ({cl}, demand) (rate(qnet_demand_requested_bits_total{D}[$__rate_interval]))", "{{demand}} requested"),
               styles=((".*requested", DASHED),)),
            ts("Relay route and reroutes", "none",
               "Hops of the route the relay uses for each demand, and its reroutes (a hop down for "
               "network.failover_seconds, or back to a wider route).",
               Q(f"max by ({cl}, demand) (qnet_demand_relay_route_hops{D})", "{{demand}} hops"),
               Q(f"sum by ({cl}, demand) (increase(qnet_demand_reroutes_total{D}[$__rate_interval]))", "{{demand}} reroutes")),
        )),
        Row("Failure impact", (
            Panel("Links that matter most", "none",
                  "Links whose failure alone would leave the most demands unmet; click one to open its dashboard.", (
                      Q(f"topk(10, max by ({cl}, link) (qnet_link_failure_impact_demands))\n"
                        f"* on ({cl}, link) group_left (protocol) max by ({cl}, link, protocol) (qlink_info)"),),
                  kind="table", w=12, h=8,
                  table_columns=(("link", "Link"), ("protocol", "Protocol"), ("Value", "Demands left unmet")),
                  table_link=link_dashboard_url(c)),
            Panel("Sites that matter most", "none", "Trusted sites whose failure alone would leave the most demands unmet.",
                  (Q(f"topk(10, max by ({cl}, site) (qnet_site_failure_impact_demands))"),),
                  kind="table", w=12, h=8, table_columns=(("site", "Site"), ("Value", "Demands left unmet"))),
        )),
    ), demand=True, tags=("network",))


#: Every board; the drill-downs' slugs are the protocols they show (alerts link to them by protocol).
BOARDS = (fleet, bb84_link, sifted_link, bbm92_link, heralded_link, kme_link, node_link, slo_board, exporter, network)


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
        if spec.symlog is not None:
            builder = builder.scale_distribution(cb.ScaleDistributionConfig().type(cm.ScaleDistribution.SYMLOG)
                                                 .log(10).linear_threshold(spec.symlog))
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
        # "merge" joins the instant table-format frames on their shared label columns (cluster and
        # link), so equal link names in two clusters stay two rows.
        builder = (table.Panel().show_header(True).cell_options(cm.TableAutoCellOptions())
                   .with_transformation(dm.DataTransformerConfig(id_val="merge", options={})))
        order = {name: i for i, (name, _) in enumerate(spec.table_columns)}
        hidden = ["Time", *(f"Value #{chr(ord('A') + i)}" for i in range(len(spec.queries)))]
        builder = builder.with_transformation(dm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {name: True for name in hidden if name not in order},
            "includeByName": {name: True for name in order},
            "indexByName": order, "renameByName": {name: header for name, header in spec.table_columns}}))
        for name, unit in spec.table_units:
            builder = builder.override_by_name(name, [dm.DynamicConfigValue("unit", unit)])
        if spec.table_link:
            builder = builder.override_by_name(spec.table_columns[0][0], [dm.DynamicConfigValue("links", [
                {"title": "Open link dashboard", "url": spec.table_link}])])
    elif kind == "nodegraph":
        # the panel finds its frames by field name (id; source, target), so the fields come from the
        # queries' labels; the value field is the main stat
        builder = (nodegraph.Panel().nodes(nodegraph.NodeOptions().main_stat_unit("none"))
                   .edges(nodegraph.EdgeOptions().main_stat_unit(spec.unit))
                   .override_by_name("Value", [dm.DynamicConfigValue("displayName", "mainstat")]))
    elif kind == "geomap":
        builder = _network_map()
    else:
        raise GenerationError(f"panel {spec.title!r}: unknown kind {kind!r}")
    builder = (builder.id(pid).title(spec.title).description(spec.description).datasource(DS)
               .grid_pos(grid).unit(spec.unit).thresholds(_thresholds(spec.steps)))
    if spec.min is not None:
        builder = builder.min(spec.min)
    if spec.max is not None:
        builder = builder.max(spec.max)
    instant = kind in ("stat", "table", "nodegraph", "geomap")
    for expr, legend, ref in exprs:
        builder = builder.with_target(_target(expr, legend, ref, instant, kind != "stat" and instant))
    return builder


def _network_map() -> Any:
    """Grafana's Geomap "network" layer: the Node Graph's nodes and edges frames on a map.

    The layer takes the first frame with a ``source`` field as the edges (refId ``edges`` in older
    Grafana) and the first other frame as the nodes, located by its coordinate fields; so the
    coordinate queries are joined into the nodes frame on the site label, and only there (the
    transformation's refId filter). Field names are what Prometheus table-format frames carry:
    labels, and ``Value #<refId>``.
    """
    def text(field: str) -> Any:
        return cb.TextDimensionConfig().mode(cm.TextDimensionMode.FIELD).field(field).build()

    def size(field: str, smallest: float, largest: float, fixed: float) -> Any:
        return cb.ScaleDimensionConfig().field(field).min(smallest).max(largest).fixed(fixed).build()

    nodes = {"size": size("Value #nodes", 4, 15, 5), "text": text("title"), "opacity": 0.8,
             "color": cb.ColorDimensionConfig().fixed("purple").build(),
             "textConfig": {"fontSize": 12, "offsetY": -14, "textAlign": "center", "textBaseline": "bottom"}}
    edges = {"size": size("Value #edges", 1, 8, 2), "text": text("Value #edges"), "opacity": 1,
             "color": cb.ColorDimensionConfig().field("color").fixed(GREEN).build(),
             "textConfig": {"fontSize": 10, "textAlign": "center", "textBaseline": "middle"}}
    joined = "|".join(("nodes", *COORDINATES))
    return (geomap.Panel().view(geomap.MapViewConfig().id("fit"))
            .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
            .with_transformation(dm.DataTransformerConfig(
                id_val="joinByField", filter_val=dm.MatcherConfig(id_val="byRefId", options=f"/^(?:{joined})$/"),
                options={"byField": "site", "mode": "inner"}))
            .layers([cb.MapLayerOptions().type("network").name("Sites and links").location(
                cb.FrameGeometrySource().mode(cm.FrameGeometrySourceMode.COORDS)
                .latitude(f"Value #{COORDINATES[0]}").longitude(f"Value #{COORDINATES[1]}")).config(
                {"style": nodes, "edgeStyle": edges, "arrow": 0, "showLegend": False})])
            .override_by_name("color", [dm.DynamicConfigValue("mappings", [dm.ValueMap({
                value: dm.ValueMappingResult(color=colour, index=i)
                for i, (value, colour) in enumerate(EDGE_COLOURS.items())})])]))


def known_names(ruleset: RuleSet) -> set[str]:
    return set(sample_names()) | PROMETHEUS_SERIES | recording_names(ruleset)


@dataclass(frozen=True)
class Selectors:
    """What the dashboard adds to each series selector: the deployment's selector and the
    cluster/job/instance variables on exported series and ``up``; cluster and job on recorded
    series (recording rules keep only those of the three); cluster on ``ALERTS``."""

    exported: str
    recorded: str
    alerts: str

    @staticmethod
    def of(c: MonitoringConfig) -> "Selectors":
        cluster = f'{c.cluster_label}=~"${c.cluster_label}"'
        return Selectors(f'{c.selector}, {cluster}, job=~"$job", instance=~"$instance"',
                         f'{cluster}, job=~"$job"', cluster)

    def inject(self, expr: str, ruleset: RuleSet) -> str:
        expr = inject_selector(expr, self.exported, set(sample_names()) | TARGET_SERIES | PENDING_METRICS)
        expr = inject_selector(expr, self.recorded, recording_names(ruleset))
        return inject_selector(expr, self.alerts, {"ALERTS"})


def _query_variable(name: str, label: str, query: str, multi: bool) -> db.QueryVariable:
    variable = (db.QueryVariable(name).label(label).datasource(DS)
                .query(f"label_values({query}, {name})")
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
                .multi(multi).include_all(multi))
    return variable.all_value(".*") if multi else variable


def variables(board: Board, c: MonitoringConfig, ruleset: RuleSet) -> list[Any]:
    """datasource, cluster, job, instance (each filtered by the ones before) and the link variable."""
    sel = Selectors.of(c)
    cl = c.cluster_label
    targets = set(sample_names()) | TARGET_SERIES
    up = f"up{{{c.selector}}}"
    out: list[Any] = [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _query_variable(cl, cl.capitalize(), up, multi=True),
        _query_variable("job", "Job", f'up{{{c.selector}, {cl}=~"${cl}"}}', multi=True),
        _query_variable("instance", "Instance", f'up{{{c.selector}, {cl}=~"${cl}", job=~"$job"}}', multi=True),
    ]
    if board.link is not None:
        protocols = "|".join(board.link.protocols)
        metric = f'{board.link.metric}{{protocol=~"{protocols}"}}' if protocols else board.link.metric
        query = inject_selector(metric, sel.exported, targets)
        check_names(query, known_names(ruleset), (), f"dashboard {board.slug} / variable link")
        out.append(_query_variable("link", "Link", query, multi=board.link.multi))
    if board.demand:
        query = inject_selector("qnet_demand_bits_per_second", sel.exported, targets)
        out.append(_query_variable("demand", "Demand", query, multi=True))
    return out


def _schema_clean(model: Any) -> None:
    """Drop what the SDK (0.0.21) always writes although Grafana's schema has no such field:
    interval-variable settings on every variable, the old table footer."""
    for variable in model.templating.list_val or []:
        variable.auto = variable.auto_min = variable.auto_count = None
    for panel in model.panels:
        if getattr(panel, "type_val", None) == "table":
            panel.options.footer = None


def build(board: Board, c: MonitoringConfig, ruleset: RuleSet) -> Built:
    """Dashboard JSON for one spec: checked names, injected selectors, explicit ids and grid."""
    known = known_names(ruleset)
    pending = {g.name for g in ruleset.gated if g.kind == "record"} | set(PENDING_METRICS - set(sample_names()))
    sel = Selectors.of(c)
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
                exprs.append((sel.inject(q.expr, ruleset), q.legend, q.ref or chr(ord("A") + i)))
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
    dashboard_uid = c.dashboard_uid(board.slug)
    builder = (db.Dashboard(board.title).uid(dashboard_uid).description(board.description)
               .tags(sorted({*c.dashboard_tags, *board.tags})).readonly().timezone("browser")
               .time(c.dashboard_time_from, "now").refresh(c.dashboard_refresh)
               .tooltip(dm.DashboardCursorSync.CROSSHAIR)
               .link(db.DashboardLink("qtelemetry dashboards").type(dm.DashboardLinkType.DASHBOARDS)
                     .tags(list(c.dashboard_tags)).as_dropdown(True).include_vars(True).keep_time(True)))
    for variable in variables(board, c, ruleset):
        builder = builder.with_variable(variable)
    model = builder.build()
    model.panels = panels
    _schema_clean(model)
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
    ``$__rate_interval``/``$__interval`` by ``rate_interval``, ``$__range`` by 1h, ``$cluster``,
    ``$job``, ``$instance`` and ``$demand`` by ``.*`` (their "All"), others from ``variables``. A variable
    left unsubstituted raises ValueError."""
    values = {"link": link, "__rate_interval": rate_interval, "__interval": rate_interval,
              "__range": "1h", "cluster": ".*", "job": ".*", "instance": ".*", "demand": ".*", **variables}

    def sub(expr: str) -> str:
        def one(match: re.Match) -> str:
            name = match.group(1) or match.group(2) or match.group(3)
            if name not in values:
                raise ValueError(f"no value for template variable ${name} in: {expr}")
            return values[name]
        # $1 in label_replace's replacement is a regex group, not a variable
        return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$([A-Za-z_]\w*)", one, expr)

    return [sub(expr) for _, _, expr in panel_targets(dashboard_json)]
