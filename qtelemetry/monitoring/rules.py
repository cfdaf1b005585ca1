"""Prometheus recording and alerting rules, generated from the catalogue and the monitoring config.

Every rule is one spec below. Expressions are written without the deployment's selector;
``build`` adds it (``job="qtelemetry"`` by default) to every exported metric and to ``up``,
checks every metric name against the catalogue and the generated recording rules, and skips
(and reports) the specs that wait for a metric the catalogue does not have yet
(``PENDING_METRICS``). An unknown name anywhere else is a ``GenerationError``.

Many sites: every aggregation keeps the config's identity labels (the cluster label and
``job``), so one global Prometheus holding several sites never merges two sites' links. A link
is identified by (cluster, job, link): recording rules drop ``instance`` so that a link keeps
its history when its exporter moves (a new pod IP, another shard). Per-link alerts gain the
link's ``protocol`` from ``qlink_info`` (for routing and for the dashboard of that link kind).

Annotation shorthand (expanded to Go templates): ``[[link]]`` is ``{{ $labels.link }}`` (any
label name), ``[[value]]`` ``{{ $value | humanize }}``, ``[[value%]]``
``{{ $value | humanizePercentage }}``, ``[[value_duration]]`` ``{{ $value | humanizeDuration }}``.
Summaries are one sentence without values (Alertmanager groups them); values go in descriptions.

Naming: alerts are CamelCase with the prefix of the metrics they read (QKD, QLink, QEnt,
QTelemetry); recording rules follow ``level:metric:operation``, the level naming the labels the
series keeps besides the identity labels (``link``, ``link_intensity``, ``link_reason``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Literal

from qtelemetry.estimation.reported import ETSI014
from qtelemetry.monitoring import causes
from qtelemetry.monitoring.catalogue import METRICS
from qtelemetry.monitoring.config import SLO, MonitoringConfig, duration_seconds
from qtelemetry.monitoring.network_alerts import network_alerts
from qtelemetry.monitoring.promql import (
    PROMETHEUS_SERIES,
    TARGET_SERIES,
    GenerationError,
    inject_selector,
    metric_names,
    sample_names,
)

#: Metrics promised for the catalogue but not in it yet: specs that read them are skipped (and
#: listed by ``qtelemetry generate``) until they appear. Any other unknown name is an error.
#: Example: frozenset({"qkd_repeaterless_bound_ratio"}) held QKDKeyRateAboveRepeaterlessBound and
#: the PLOB panels back until the lead added that metric.
PENDING_METRICS: frozenset[str] = frozenset()

SEVERITIES = ("critical", "warning", "info")
PREFIXES = ("QKD", "QLink", "QEnt", "QNet", "QTelemetry")
#: What an alert is about: one link, one site (all its links), one exporter (an instance), a whole
#: cluster, or a key demand between two sites.
Scope = Literal["link", "site", "exporter", "cluster", "demand"]


@dataclass(frozen=True)
class Record:
    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """One alerting rule. ``inhibits`` names milder forms of the same condition (QKDQberHigh for
    QKDQberCritical): while this one fires, Alertmanager mutes them for the same link (or
    exporter, or cluster), and for the same values of ``inhibit_equal`` labels too; causes and
    the symptoms they explain are the cause hierarchy's (``causes``). ``keep_firing_for`` holds
    a cause a while after it clears (set by the hierarchy). ``dashboard`` overrides the
    dashboard slug of ``dashboard_url`` (default: the link kind's dashboard, or the exporter
    dashboard)."""

    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)
    scope: Scope = "link"
    inhibits: tuple[str, ...] = ()
    inhibit_equal: tuple[str, ...] = ()
    dashboard: str | None = None
    keep_firing_for: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(rf"({'|'.join(PREFIXES)})[A-Z][A-Za-z0-9]*", self.alert):
            raise GenerationError(f"{self.alert}: alert names are CamelCase with a {'/'.join(PREFIXES)} prefix")
        if self.severity not in SEVERITIES:
            raise GenerationError(f"{self.alert}: severity must be one of {SEVERITIES}")
        if not self.summary.endswith(".") or "[[value" in self.summary or "$value" in self.summary:
            raise GenerationError(f"{self.alert}: the summary is one sentence ending with a period, without $value "
                                  "(values change while an alert fires; they belong in the description)")


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Record | Alert, ...]
    interval: str | None = None


@dataclass(frozen=True)
class Gated:
    """A spec left out because a metric it reads is not in the catalogue yet."""

    kind: str
    name: str
    waits_for: tuple[str, ...]


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------


def num(x: float) -> str:
    """A threshold as PromQL/humans write it: 0.05, 14.4, 3, 14400."""
    return f"{x:.10g}"


def pct(x: float) -> str:
    return f"{x * 100:.10g}%"


_SHORTHAND = re.compile(r"\[\[([a-z_]+%?)\]\]")


def expand(text: str) -> str:
    """Annotation shorthand → Go template (see the module docstring)."""
    def one(match: re.Match) -> str:
        word = match.group(1)
        if word == "value":
            return "{{ $value | humanize }}"
        if word == "value%":
            return "{{ $value | humanizePercentage }}"
        if word == "value_duration":
            return "{{ $value | humanizeDuration }}"
        return "{{ $labels.%s }}" % word
    return _SHORTHAND.sub(one, text)


def by(c: MonitoringConfig, *labels: str) -> str:
    """A label list for ``by (...)``/``on (...)``: the identity labels, then ``labels``."""
    return ", ".join((*c.identity, *labels))


_LABELS = {m.name: m.labels for m in METRICS}


def baseline_names(metric: str, c: MonitoringConfig) -> tuple[str, str]:
    """Recording-rule names of a metric's smoothed value and its median baseline."""
    level = "_".join(_LABELS[metric])
    b = c.baseline
    return f"{level}:{metric}:avg{b.smoothing}", f"{level}:{metric}:median{b.window}"


#: Metrics that get a smoothed series and a median baseline (the link's own normal).
BASELINE_METRICS = (
    "qkd_secret_key_rate_bits_per_second",
    "qkd_channel_loss_db",
    "qkd_gain_ratio",
    "qent_coincidence_rate_per_second",
    "qent_heralding_success_probability_ratio",
)


def slo_record(slo: SLO, window: str) -> str:
    return f"{'_'.join(slo.group_by)}:{slo.name}_errors:ratio_rate{window}"


def slo_budget_record(slo: SLO) -> str:
    return f"{'_'.join(slo.group_by)}:{slo.name}_error_budget_remaining:ratio{slo.period}"


def slo_rate_record(slo: SLO, counter: str) -> str:
    """The short-window rate of one of the SLO's counters, from which the period is summed up."""
    return f"{'_'.join(slo.group_by)}:{counter.removesuffix('_total')}:rate{slo.windows[0]}"


# -------------------------------------------------------------------------------------------
# recording rules
# -------------------------------------------------------------------------------------------


def baseline_rules(c: MonitoringConfig) -> list[Record]:
    rules = []
    for metric in BASELINE_METRICS:
        smooth, median = baseline_names(metric, c)
        rules.append(Record(smooth, f"avg by ({by(c, *_LABELS[metric])}) (avg_over_time({metric}[{c.baseline.smoothing}]))"))
        rules.append(Record(median, f"quantile_over_time(0.5, {smooth}[{c.baseline.window}])"))
    rules.append(Record(
        "link_reason:qlink_driver_errors:ratio_rate10m",
        f"sum by ({by(c, 'link', 'reason')}) (rate(qlink_driver_errors_total[10m]))\n"
        f"/ on ({by(c, 'link')}) group_left ()\n"
        f"(\n"
        f"  sum by ({by(c, 'link')}) (rate(qlink_batches_total[10m]))\n"
        f"  + sum by ({by(c, 'link')}) (rate(qlink_driver_errors_total[10m]))\n"
        f")"))
    return rules


def _error_ratio(good: str, total: str) -> str:
    return f"clamp(\n  1 - {good} / {total},\n  0, 1\n)"


def slo_groups(c: MonitoringConfig, slo: SLO) -> list[Group]:
    """Recording rules per window (as sloth/pyrra do) and the multi-window multi-burn-rate alerts.

    The period (30 days) is summed from the shortest window's recorded rates instead of a
    ``rate()`` over 30 days of raw samples: the rates are sampled every rule interval, so the
    sums of good and total weigh every moment alike and their ratio is the period's error ratio.
    """
    labels = {"slo": slo.name}
    keep = by(c, *slo.group_by)

    def rate(counter: str, window: str) -> str:
        return f"sum by ({keep}) (rate({counter}[{window}]))"

    windows = [Record(slo_record(slo, w), _error_ratio(rate(slo.good, w), rate(slo.total, w)), labels)
               for w in slo.windows]
    rates = [Record(slo_rate_record(slo, counter), rate(counter, slo.windows[0])) for counter in (slo.good, slo.total)]
    good, total = (f"sum_over_time({slo_rate_record(slo, counter)}[{slo.period}])" for counter in (slo.good, slo.total))
    period = [
        Record(slo_record(slo, slo.period), _error_ratio(good, total), labels),
        Record(slo_budget_record(slo), f"1 - {slo_record(slo, slo.period)} / (1 - {num(slo.objective)})", labels),
    ]
    alerts = []
    for burn in slo.burn_alerts:
        branches = []
        for w in burn.windows:
            limit = f"({num(w.factor)} * (1 - {num(slo.objective)}))"
            branches.append(f"(\n  {slo_record(slo, w.long)} > {limit}\n"
                            f"  and\n  {slo_record(slo, w.short)} > {limit}\n)")
        pairs = ", ".join(f"{w.long}/{w.short} at {num(w.factor)}x" for w in burn.windows)
        fastest = min(burn.windows, key=lambda w: duration_seconds(w.long))
        exhaust_h = duration_seconds(slo.period) / fastest.factor / 3600
        alerts.append(Alert(
            f"{slo.alert_prefix}{burn.name}", "\nor\n".join(branches), burn.for_, burn.severity,
            summary=f"{slo.title} SLO of link [[link]] is burning its error budget "
                    f"({'page' if burn.severity == 'critical' else 'ticket'}).",
            description=(
                f"{slo.description} The objective is {pct(slo.objective)} over {slo.period} "
                f"(error budget {pct(1 - slo.objective)}). Link [[link]] failed [[value%]] of the demand "
                f"over the long window of a burn-rate pair ({pairs}; both windows of a pair must exceed "
                f"the rate, so the alert resolves soon after the problem stops). At {num(fastest.factor)}x the "
                f"whole {slo.period} budget is gone in about {exhaust_h:.3g} h."),
            labels=labels, dashboard="key-supply-slo"))
    # a faster burn explains the slower ones
    alerts = [replace(a, inhibits=tuple(x.alert for x in alerts[i + 1:]), inhibit_equal=("slo",)) if i < len(alerts) - 1
              else a for i, a in enumerate(alerts)]
    return [
        Group(f"qtelemetry-slo-{slo.name}-recording", (*windows, *rates), c.rule_interval),
        Group(f"qtelemetry-slo-{slo.name}-period", tuple(period), c.slow_rule_interval),
        Group(f"qtelemetry-slo-{slo.name}-alerts", tuple(alerts), c.rule_interval),
    ]


# -------------------------------------------------------------------------------------------
# alerts
# -------------------------------------------------------------------------------------------


def qber_alerts(c: MonitoringConfig) -> list[Alert]:
    """QBER of every key-distilling link (decoy BB84 and entanglement-based BBM92)."""
    t = c.thresholds
    why = ("The alert reads the upper confidence bound (Clopper-Pearson, at the exporter's "
           "confidence_level), not the point estimate: the bound already contains the counting noise "
           "of the estimation window, it is the QBER the key's security has to assume, and its margin "
           "over the point estimate follows the link's count rate instead of a fixed guard band; "
           "the for: duration ignores single-window excursions.")
    out = []
    for name, level, severity, for_ in (("QberHigh", t.qber_warning, "warning", "10m"),
                                        ("QberCritical", t.qber_critical, "critical", "5m")):
        out.append(Alert(
            f"QKD{name}", f"qkd_qber_upper_bound_ratio > {num(level)}", for_, severity,
            summary=f"QBER bound of [[link]] ([[basis]] basis) is above {pct(level)}.",
            description=(
                f"The upper confidence bound on the [[basis]]-basis QBER of link [[link]] is [[value%]], "
                f"above the {pct(level)} {severity} threshold; above {pct(t.qber_no_key)} no key can be "
                f"distilled at all. Rising QBER means misalignment, a noisy detector, stray light or an "
                f"eavesdropper, and the secret key rate falls with it. {why}"),
            inhibits=("QKDQberHigh",) if severity == "critical" else (), inhibit_equal=("basis",)))
    return out


def qkd_alerts(c: MonitoringConfig) -> list[Alert]:
    t = c.thresholds
    raw, link = by(c, "instance", "link"), by(c, "link")
    skr = "qkd_secret_key_rate_bits_per_second"
    skr_smooth, skr_base = baseline_names(skr, c)
    loss_smooth, loss_base = baseline_names("qkd_channel_loss_db", c)
    gain_smooth, gain_base = baseline_names("qkd_gain_ratio", c)
    b = c.baseline
    vac = '{intensity="vacuum"}'
    forecast, imminent = t.key_buffer_forecast, t.key_buffer_imminent
    return [
        *qber_alerts(c),
        Alert("QKDSecretKeyRateDrop",
              f"{skr_smooth} < {num(t.key_rate_drop_ratio)} * {skr_base}", "15m", "warning",
              summary=f"Secret key rate of [[link]] fell below {pct(t.key_rate_drop_ratio)} of its baseline.",
              description=(
                  f"Link [[link]] distils [[value]]bit/s ({b.smoothing} average), less than "
                  f"{pct(t.key_rate_drop_ratio)} of its own baseline (median of the last {b.window}). "
                  f"The median makes the baseline robust: a drop must last half of {b.window} before it "
                  f"becomes the new normal. Look at QBER, loss and dark counts of the link to see why.")),
        Alert("QKDSecretKeyRateZero",
              f"(\n  {skr}\n  or on ({link})\n  0 * {skr_base}\n) == 0\n"
              f"and on ({link}) {skr_base} > 0\n"
              f"and on ({link}) qlink_up == 1", "10m", "critical",
              summary="QKD link [[link]] distils no secret key.",
              description=(
                  "Link [[link]] is up and delivering counts but its secret key rate is 0 (or cannot be "
                  f"estimated) while its {b.window} baseline is positive: applications now live on the "
                  "key store. Causes: QBER above the no-key limit, no signal (fibre cut), or too few "
                  "decoy detections to bound the single-photon yield."),
              inhibits=("QKDSecretKeyRateDrop", "QKDSecretKeyRateBelowPlan")),
        Alert("QKDSecretKeyRateBelowPlan",
              f"{skr_smooth}\n"
              f"< on ({link}) {num(t.key_rate_below_expected_ratio)}\n"
              f"* max by ({link}) (qkd_expected_secret_key_rate_bits_per_second)",
              "1h", "info",
              summary=f"Key rate of [[link]] is below {pct(t.key_rate_below_expected_ratio)} of its plan.",
              description=(
                  f"The secret key rate of link [[link]] ([[value]]bit/s, {b.smoothing} average) has stayed below "
                  f"{pct(t.key_rate_below_expected_ratio)} of what its plan (channel model) promises for an "
                  f"hour. Both are finite-key rates (the plan is what the link's own distillation, with its "
                  f"block size, achieves on the modelled channel), so the gap is the link's, not the asymptotic "
                  f"limit's. Not an outage: the link under-performs its design (extra loss, misalignment, "
                  f"detector ageing, wrong model inputs).")),
        Alert("QKDKeyRateAboveRepeaterlessBound", "qkd_repeaterless_bound_ratio > 1", "15m", "warning",
              summary="Key rate of [[link]] exceeds the repeaterless (PLOB) bound.",
              description=(
                  "Link [[link]] reports [[value]] times the Pirandola-Laurenza-Ottaviani-Banchi bound for "
                  "its loss, which no repeaterless link can beat: an input of the estimate (detector "
                  "efficiency, loss, pulse rate) is wrong, or the link has a trusted node or repeater the "
                  "model does not know about. Its key-rate numbers cannot be trusted until this is fixed.")),
        Alert("QKDChannelLossOverBudget",
              f"qkd_channel_loss_db > on ({raw}) qkd_channel_loss_budget_db", "15m", "warning",
              summary="Channel loss of [[link]] is over its budget.",
              description=(
                  "Link [[link]] loses [[value]] dB, more than the loss budget it was engineered for: the "
                  "key rate is below plan and the link is close to its distance limit. Check connectors, "
                  "splices, patch panels and recent fibre work.")),
        Alert("QKDChannelLossStep",
              f"{loss_smooth} - {loss_base} > {num(t.loss_step_db)}", "5m", "warning",
              summary=f"Channel loss of [[link]] stepped up by more than {num(t.loss_step_db)} dB.",
              description=(
                  f"The {b.smoothing} average loss of link [[link]] is [[value]] dB above its {b.window} "
                  f"median: a fibre bend, a bad splice or connector, a patch change or a cut (+Inf dB: "
                  f"no light above the dark-count background).")),
        Alert("QKDNoSignal", "qkd_channel_loss_db == Inf", "2m", "critical",
              summary="No signal reaches the receiver of QKD link [[link]].",
              description=(
                  "The signal gain of link [[link]] is no higher than the dark-count background, so the "
                  "inferred loss is infinite: fibre cut, disconnected patch, source off, or shutter "
                  "closed. The link distils no key. It reads as ~50% QBER (dark counts only): a cut, not an "
                  "attack; this alert mutes the link's QBER, key-rate, key-store, SLO and tamper alerts.")),
        Alert("QKDLinkInactive",
              f"(qkd_link_active == 0)\n* on ({raw}) group_left (status)\n(qkd_link_status == 1)\n"
              f"or on ({raw})\nlabel_replace(qkd_link_active == 0, \"status\", \"unknown\", \"\", \"\")",
              "5m", "critical",
              summary="The SD-QKD node reports link [[link]] not ACTIVE: it generates no key.",
              description=(
                  "For 5 minutes the ETSI GS QKD 015 node of link [[link]] has reported the key association link "
                  "[[status]] instead of ACTIVE (PASSIVE: not generating, keys left; PENDING: awaiting activation; "
                  "OFF; unknown: a status outside the model). The node answers (the link is up), but no key is "
                  "made: applications live on the key store until it runs dry. This alert mutes the link's "
                  "key-rate, key-store and SLO alerts. A planned standby link: silence it.")),
        Alert("QKDDarkCountsHigh",
              f"{gain_smooth}{vac} > {num(t.dark_count_factor)} * {gain_base}{vac}", "15m", "warning",
              summary="Dark counts of [[link]] are far above their baseline.",
              description=(
                  f"The vacuum-pulse gain of link [[link]] ({b.smoothing} average [[value]]) is more than "
                  f"{num(t.dark_count_factor)} times its {b.window} median: a warm or ageing detector, "
                  f"afterpulsing, or stray light in the fibre. QBER and key rate suffer.")),
        Alert("QKDDarkCountsSuppressed",
              f"{gain_smooth}{vac} < {gain_base}{vac} / {num(t.dark_count_factor)}\n"
              f"and on ({by(c, 'link', 'intensity')})\n"
              f"sum by ({by(c, 'link', 'intensity')}) (increase(qkd_pulses_total{vac}[{b.smoothing}]))\n"
              f"* {gain_base}{vac} > {num(t.dark_count_min_expected)}",
              "10m", "critical",
              summary="Dark counts of [[link]] vanished: possible detector blinding.",
              description=(
                  f"The vacuum-pulse gain of link [[link]] ([[value]]) is less than 1/{num(t.dark_count_factor)} "
                  f"of its {b.window} median although the baseline predicts more than "
                  f"{num(t.dark_count_min_expected)} vacuum detections per {b.smoothing}. Detectors that "
                  f"stop clicking on empty pulses are the signature of a blinding attack (bright light "
                  f"forcing the detectors into linear mode), or of a detector that lost its bias. Treat the "
                  f"link's key as suspect.")),
        Alert("QKDTamperSuspected", "qkd_tamper_alarm == 1", "0s", "critical",
              summary="Tamper detector [[detector]] of QKD link [[link]] alarmed: possible eavesdropping.",
              description=(
                  "The [[detector]] sequential detector (CUSUM) of link [[link]] crossed its threshold against the "
                  "baseline it learned at start: qber_z/qber_x a QBER rise (a bank of detectors; intercept-resend on "
                  "a fraction f of the pulses or pairs adds about f/4), decoy_gain a shift of the decoy/signal gain "
                  "ratio (photon-number splitting, faked clicks after blinding), vacuum_gain dark counts far from "
                  "their baseline (blinding, detector control, or detector noise), chsh a fall of the CHSH value "
                  "(entangled photons). Thresholds hold the exporter's false-alarm budget by construction "
                  "(exporter.tamper.fleet_mean_time_between_false_alarms_seconds, shared among the links: "
                  "qkd_tamper_mean_time_between_false_alarms_seconds), so a page is rare and needs no for: delay; "
                  "the alarm latches until an operator re-arms the link (POST /-/tamper). Treat key distilled since "
                  "the statistic began to rise as compromised."),
              labels={"notify": "security"}),
        Alert("QKDKeyBufferExhaustionForecast",
              f"qkd_key_buffer_bits / qkd_key_buffer_capacity_bits < {num(forecast.fill_ratio)}\n"
              f"and on ({raw})\n"
              f"predict_linear(qkd_key_buffer_bits[{forecast.lookback}], {num(duration_seconds(forecast.horizon))}) < 0",
              "15m", "warning",
              summary=f"Key store of [[link]] will run dry within {forecast.horizon}.",
              description=(
                  f"The key store of link [[link]] is [[value%]] full and, at the consumption trend of the "
                  f"last {forecast.lookback}, empty within {forecast.horizon}. Key generation is slower than "
                  f"applications draw key.")),
        Alert("QKDKeyBufferExhaustionImminent",
              f"qkd_key_buffer_bits / qkd_key_buffer_capacity_bits < {num(imminent.fill_ratio)}\n"
              f"and on ({raw})\n"
              f"predict_linear(qkd_key_buffer_bits[{imminent.lookback}], {num(duration_seconds(imminent.horizon))}) <= 0",
              "2m", "critical",
              summary=f"Key store of [[link]] runs dry within {imminent.horizon}.",
              description=(
                  f"The key store of link [[link]] is down to [[value%]] and still falling (or empty and not "
                  f"refilling): within {imminent.horizon} applications will be refused key, if they are not "
                  f"already. Prepare the fallback (classical or post-quantum key exchange) now. This alert "
                  f"mutes the link's key-supply SLO alerts: the empty store is why requests fail (its for: is "
                  f"no longer than theirs, so it fires first)."),
              inhibits=("QKDKeyBufferExhaustionForecast",)),
    ]


def link_alerts(c: MonitoringConfig) -> list[Alert]:
    t = c.thresholds
    site = by(c, c.site_label)
    return [
        Alert("QLinkSiteDown",
              f"count by ({site}) (qlink_up) > 1\nand on ({site})\nmax by ({site}) (qlink_up) == 0", "5m", "critical",
              summary=f"Every link of site [[{c.site_label}]] is down.",
              description=(
                  f"All [[value]] links of site \"[[{c.site_label}]]\" (the {c.site_label} label of their exporters; "
                  f"empty: the whole {c.cluster_label}) have been down for 5 minutes: a site-wide cause (power, "
                  "the site's network, its exporter host) rather than [[value]] separate faults. This alert mutes "
                  "those links' own alerts: one page for the site."),
              scope="site", dashboard="fleet"),
        Alert("QLinkDown", "qlink_up == 0", "5m", "critical",
              summary="Quantum link [[link]] is down.",
              description=(
                  "The driver of link [[link]] has not delivered a valid batch for the exporter's "
                  "stall timeout (driver error, stalled device or impossible data; see "
                  "qlink_driver_errors_total by reason). No new key or entanglement is produced; "
                  "for: 5m rides out driver reconnects.")),
        Alert("QLinkStale",
              f"qlink_data_age_seconds > {num(t.stale_after_seconds)}\nand on ({by(c, 'instance', 'link')}) qlink_up == 1",
              "2m", "warning",
              summary="Quantum link [[link]] reports up with stale data.",
              description=(
                  "The newest data in the estimates of link [[link]] is [[value_duration]] old (measured by "
                  "the exporter when scraped, so host clocks do not matter), yet the link reports up: its "
                  "numbers are frozen but look live. The exporter's stall timeout (exporter.stall_timeout_seconds) "
                  f"is longer than {num(t.stale_after_seconds)} s, or the exporter's freshness check is broken.")),
        Alert("QLinkDriverErrors",
              f"link_reason:qlink_driver_errors:ratio_rate10m > {num(t.driver_error_ratio)}", "15m", "warning",
              summary="Link [[link]] loses batches to driver errors ([[reason]]).",
              description=(
                  f"[[value%]] of the batches of link [[link]] over 10 minutes were dropped for reason "
                  f"[[reason]] (threshold {pct(t.driver_error_ratio)}). Estimates use fewer windows and may "
                  f"lag; overflow means the estimator cannot keep up with this driver; persistent impossible "
                  f"data points at the device or its firmware.")),
    ]


def kme_alerts(c: MonitoringConfig) -> list[Alert]:
    """Key delivery as applications see it: ETSI GS QKD 014 KMEs answering, answering fast, handing out keys."""
    t = c.thresholds
    raw = by(c, "instance", "link")
    kme = f'qlink_info{{protocol="{ETSI014}"}}'
    return [
        Alert("QKDKmeUnavailable",
              f"max by ({by(c, 'instance', 'link', 'reason')}) (increase(qlink_driver_errors_total[5m]) > 0)\n"
              f"and on ({raw}) qlink_up == 0\n"
              f"and on ({by(c, 'link')}) {kme}", "5m", "critical",
              summary="The KME of [[link]] does not serve key status ([[reason]]).",
              description=(
                  "For 5 minutes the exporter has had no valid answer from the ETSI GS QKD 014 key management "
                  "entity of link [[link]] ([[value]] failed polls in the last 5 minutes, reason [[reason]]). "
                  "Applications that ask this KME for keys are most likely failing the same way and fall back "
                  "to classical or post-quantum key exchange. This alert mutes the link's QLinkDown and "
                  "driver-error alerts: one page, with the reason."),
              inhibits=("QLinkDown",)),
        Alert("QKDKmeSlow",
              f"histogram_quantile(0.9,\n"
              f"  sum by ({by(c, 'instance', 'link', 'endpoint')}, le) (rate(qkd_kme_request_duration_seconds_bucket[10m]))\n"
              f") > {num(t.kme_latency_seconds)}", "15m", "warning",
              summary="The KME of [[link]] answers [[endpoint]] requests slowly.",
              description=(
                  f"The 90th percentile of the [[endpoint]] requests the ETSI GS QKD 014 KME of link "
                  f"[[link]] answered over 10 minutes is [[value]]s, above {num(t.kme_latency_seconds)} s. "
                  "Applications wait as long for their keys; near the driver's timeout the polls start failing.")),
        Alert("QKDKeyRequestsRefused",
              f"sum by ({raw}) (rate(qkd_kme_key_probes_total{{result=\"refused\"}}[10m]))\n"
              f"/ sum by ({raw}) (rate(qkd_kme_key_probes_total[10m]))\n"
              f"> {num(t.key_refusal_ratio)}", "5m", "critical",
              summary="The KME of [[link]] refuses key requests.",
              description=(
                  f"The ETSI GS QKD 014 KME of link [[link]] refused [[value%]] of the exporter's one-key probes over "
                  f"10 minutes (threshold {pct(t.key_refusal_ratio)}): it answers, but with an error instead of a "
                  "key (503: its store is empty; 400/401: it will not serve this SAE pair). Applications asking it "
                  "for keys are refused the same way and fall back to classical or post-quantum key exchange."),
              inhibits=("QKDKeyBufferExhaustionImminent", "QKDKeyBufferExhaustionForecast")),
    ]


def exporter_alerts(c: MonitoringConfig) -> list[Alert]:
    t = c.thresholds
    instance, identity = by(c, "instance", c.site_label), by(c)  # the site: for routing and the hierarchy
    cluster = c.cluster_label
    lost = f"group by ({identity}) (max_over_time(up[1d]))\nunless\ngroup by ({identity}) (up)"
    never = c.exporter_absent_alert == "always"
    absent = Alert(
        "QTelemetryExporterAbsent", lost + ("\nor\nabsent_over_time(up[1d])" if never else ""), "15m", "warning",
        summary="No qtelemetry exporter is being scraped.",
        description=(
            f"Prometheus has no scrape target matching {{{c.selector}}} in {cluster} "
            f"\"[[{cluster}]]\" (empty: the whole Prometheus), although it had some within a day"
            + (" or has never had one" if never else "") + ": service discovery or the scrape config lost the "
            "exporters, so the quantum links there are unmonitored."),
        scope="cluster")
    return [
        Alert("QTelemetryExporterDown", "up == 0", "5m", "critical",
              summary="qtelemetry exporter [[instance]] is down.",
              description=(
                  "Prometheus cannot scrape the qtelemetry exporter [[instance]] (job [[job]]): every "
                  "link it serves is unmonitored, and link alerts cannot fire."),
              scope="exporter"),
        *([absent] if c.exporter_absent_alert != "off" else []),
        Alert("QTelemetryEstimationStalled",
              f"qtelemetry_estimation_lag_seconds > {num(t.estimation_stall_seconds)}", "2m", "critical",
              summary="qtelemetry exporter [[instance]] has stopped estimating.",
              description=(
                  f"No estimation cycle of exporter [[instance]] has completed for [[value_duration]] (above "
                  f"{num(t.estimation_stall_seconds)} s): every link it serves is frozen and will report down. "
                  "This alert mutes those links' alerts: one page for one cause."),
              scope="exporter",
              inhibits=("QTelemetryEstimationLagging", "QTelemetryFallingBehind", "QTelemetryEstimationSlow")),
        Alert("QTelemetryEstimationLagging",
              f"avg_over_time(qtelemetry_estimation_lag_seconds[5m])\n"
              f"> {num(t.estimation_lag_windows)} * qtelemetry_estimation_interval_seconds",
              "10m", "warning",
              summary="qtelemetry exporter [[instance]] publishes estimates late.",
              description=(
                  f"On average over 5 minutes the last completed estimation cycle of exporter [[instance]] is "
                  f"[[value_duration]] old, more than {num(t.estimation_lag_windows)} acquisition windows: "
                  "cycles take longer than the windows they estimate, so every link's numbers trail the "
                  "devices."),
              scope="exporter", inhibits=("QTelemetryEstimationSlow",)),
        Alert("QTelemetryFallingBehind",
              "rate(qtelemetry_estimation_cycles_skipped_total[10m])\n/ (\n"
              "  rate(qtelemetry_estimation_cycles_skipped_total[10m])\n"
              "  + rate(qtelemetry_estimation_duration_seconds_count[10m])\n"
              f") > {num(t.estimation_skipped_ratio)}",
              "10m", "warning",
              summary="qtelemetry exporter [[instance]] skips estimation cycles: it is overloaded.",
              description=(
                  f"Exporter [[instance]] skipped [[value%]] of its estimation cycles over 10 minutes "
                  f"(threshold {pct(t.estimation_skipped_ratio)}) because the previous cycle overran its "
                  "window. It degrades visibly instead of silently (estimates cover fewer, larger steps), "
                  "but it has more links than it can estimate in a window."),
              scope="exporter", inhibits=("QTelemetryEstimationSlow",)),
        Alert("QTelemetryConfigReloadFailed", "qtelemetry_config_last_reload_successful == 0", "10m", "warning",
              summary="qtelemetry exporter [[instance]] rejected its new config.",
              description=(
                  "The last config reload of exporter [[instance]] (SIGHUP or POST /-/reload) was rejected: it "
                  "still runs the config it had before, and the change that was meant to apply (links added or "
                  "removed, credentials, certificates) did not. Its log names each field that is wrong; a "
                  "restart would fail the same way."),
              scope="exporter"),
        Alert("QTelemetryEstimationSlow",
              f"histogram_quantile(0.9, sum by ({instance}, le) (rate(qtelemetry_estimation_duration_seconds_bucket[10m])))\n"
              f"> on ({instance}) {num(t.estimation_slow_ratio)} * qtelemetry_estimation_interval_seconds",
              "30m", "warning",
              summary="qtelemetry exporter [[instance]] has little headroom left.",
              description=(
                  f"The 90th percentile of the estimation cycles of exporter [[instance]] is [[value]]s, more "
                  f"than {pct(t.estimation_slow_ratio)} of its acquisition window: a little more load (links, "
                  "host CPU) and it starts skipping cycles."),
              scope="exporter"),
        Alert("QTelemetryConnectionsNearLimit",
              f"qtelemetry_http_connections / qtelemetry_http_connections_limit > {num(t.connections_ratio)}",
              "10m", "warning",
              summary="qtelemetry exporter [[instance]] is near its connection cap.",
              description=(
                  f"Exporter [[instance]] holds [[value%]] of the connections it accepts at most (threshold "
                  f"{pct(t.connections_ratio)}). At the cap every new client closes the connection that has waited "
                  "longest, so idle or hostile clients can cost a scraper its connection; "
                  "qtelemetry_http_rejections_total by reason says who is being turned away."),
              scope="exporter"),
        Alert("QTelemetryMemoryNearLimit",
              f"process_resident_memory_bytes / qtelemetry_memory_limit_bytes > {num(t.memory_limit_ratio)}",
              "15m", "warning",
              summary="qtelemetry exporter [[instance]] is near its memory limit.",
              description=(
                  f"Exporter [[instance]] uses [[value%]] of its memory limit (its cgroup's: the container limit "
                  f"or systemd MemoryMax=; threshold {pct(t.memory_limit_ratio)}). At the limit the kernel kills "
                  "it and every link it serves goes unmonitored until it restarts. Memory grows with the links "
                  "and the sliding windows configured."),
              scope="exporter"),
        Alert("QTelemetryOtlpPushFailing",
              'sum without (result) (rate(qtelemetry_otlp_pushes_total{result!="success"}[15m]))\n'
              "/ sum without (result) (rate(qtelemetry_otlp_pushes_total[15m]))\n"
              f"> {num(t.otlp_failure_ratio)}",
              "15m", "warning",
              summary="qtelemetry exporter [[instance]] cannot push its metrics over OTLP.",
              description=(
                  f"[[value%]] of the OTLP pushes of exporter [[instance]] were not delivered over 15 minutes "
                  f"(threshold {pct(t.otlp_failure_ratio)}): the OpenTelemetry pipeline (collector, dashboards and "
                  "alerts built on it) has gaps or stale link data, while /metrics and this Prometheus are "
                  "unaffected. qtelemetry_otlp_pushes_total by result says how they fail."),
              scope="exporter"),
    ]


def entanglement_alerts(c: MonitoringConfig) -> list[Alert]:
    t = c.thresholds
    b = c.baseline
    car_smooth, car_base = baseline_names("qent_coincidence_rate_per_second", c)
    _, herald_base = baseline_names("qent_heralding_success_probability_ratio", c)
    return [
        Alert("QEntCHSHNoViolation", "qent_chsh_value <= 2", "5m", "critical",
              summary="Entangled link [[link]] no longer violates the CHSH inequality.",
              description=(
                  "The CHSH value S of link [[link]] is [[value]], at or below the classical limit 2 "
                  "(2.83 for a perfect Bell pair). The photon pairs show no entanglement: no key can be "
                  "distilled (S <= 2 means QBER above 14.6%) and any entanglement-based service on the "
                  "link is down."),
              inhibits=("QEntCHSHViolationWeak", "QEntFidelityLow")),
        Alert("QEntCHSHViolationWeak",
              f"qent_chsh_value - {num(t.chsh_sigmas)} * qent_chsh_value_stddev <= 2\n"
              f"unless on ({by(c, 'instance', 'link')}) qent_chsh_value <= 2", "15m", "warning",
              summary=f"CHSH violation of [[link]] is below {num(t.chsh_sigmas)} standard deviations.",
              description=(
                  f"S - {num(t.chsh_sigmas)} sigma of link [[link]] is [[value]]: the Bell violation is no "
                  f"longer significant at {num(t.chsh_sigmas)} standard deviations. Either S fell (source "
                  "visibility, polarisation drift) or the CHSH rounds have too few coincidences.")),
        Alert("QEntFidelityLow", f"qent_fidelity_lower_bound_ratio < {num(t.fidelity_min)}", "15m", "warning",
              summary=f"Bell-state fidelity of [[link]] may be below {pct(t.fidelity_min)}.",
              description=(
                  f"The lower confidence bound on the fidelity of the pairs of link [[link]] is [[value%]] "
                  f"(threshold {pct(t.fidelity_min)}, i.e. about {pct((1 - t.fidelity_min) / 2)} QBER per "
                  f"basis). The lower bound is used because fidelity is what the link certifies: "
                  f"polarisation drift, source visibility or multi-pair emission.")),
        Alert("QEntHeraldedFidelityLow",
              f"qent_heralded_fidelity_upper_bound_ratio < {num(t.heralded_fidelity_min)}", "15m", "warning",
              summary=f"Heralded pairs of [[link]] are below {pct(t.heralded_fidelity_min)} fidelity.",
              description=(
                  f"Even the upper confidence bound on the fidelity of the stored pairs of link [[link]] is "
                  f"[[value%]], below {pct(t.heralded_fidelity_min)}; alerting on the upper bound means the "
                  f"fidelity is low with confidence, not just a noisy sample. Memory decoherence (storage "
                  f"time vs coherence time), phase drift of the interferometer or double excitations.")),
        Alert("QEntHeraldingRateDrop",
              f"qent_heralding_success_probability_upper_bound_ratio\n"
              f"< on ({by(c, 'link')}) {num(t.rate_drop_ratio)} * {herald_base}", "15m", "warning",
              summary="Heralding success probability of [[link]] dropped.",
              description=(
                  f"Even the upper confidence bound on the heralding success probability of link [[link]] "
                  f"([[value%]]) is below {pct(t.rate_drop_ratio)} of its {b.window} median: fewer "
                  f"entangled pairs per attempt. Loss on the fibre to the heralding station, collection "
                  f"efficiency, or detector trouble.")),
        Alert("QEntCoincidenceRateDrop",
              f"{car_smooth} < {num(t.rate_drop_ratio)} * {car_base}", "15m", "warning",
              summary="Coincidence rate of entangled link [[link]] dropped.",
              description=(
                  f"Link [[link]] records [[value]] coincidences/s ({b.smoothing} average), below "
                  f"{pct(t.rate_drop_ratio)} of its {b.window} median: loss on one of the fibres from the "
                  f"source, source pump power, or a receiver's detectors.")),
    ]


# -------------------------------------------------------------------------------------------
# assembly
# -------------------------------------------------------------------------------------------


def spec_groups(c: MonitoringConfig) -> list[Group]:
    """Every group as specified, before selector injection and gating."""
    groups = [Group("qtelemetry-baselines", tuple(baseline_rules(c)), c.rule_interval)]
    for slo in c.slos:
        groups += slo_groups(c, slo)
    groups += [
        Group("qtelemetry-links", tuple(link_alerts(c)), c.rule_interval),
        Group("qtelemetry-qkd", tuple(qkd_alerts(c)), c.rule_interval),
        Group("qtelemetry-kme", tuple(kme_alerts(c)), c.rule_interval),
        Group("qtelemetry-entanglement", tuple(entanglement_alerts(c)), c.rule_interval),
        Group("qtelemetry-exporter", tuple(exporter_alerts(c)), c.rule_interval),
        Group("qtelemetry-network", tuple(network_alerts(c)), c.rule_interval),
    ]
    return groups


@dataclass(frozen=True)
class RuleSet:
    groups: tuple[Group, ...]
    gated: tuple[Gated, ...]

    @property
    def alerts(self) -> list[Alert]:
        return [r for g in self.groups for r in g.rules if isinstance(r, Alert)]

    @property
    def records(self) -> list[Record]:
        return [r for g in self.groups for r in g.rules if isinstance(r, Record)]

    def alert(self, name: str) -> Alert:
        return next(a for a in self.alerts if a.alert == name)


def check_names(expr: str, known: Iterable[str], pending: Iterable[str], where: str) -> tuple[str, ...]:
    """Names ``expr`` reads that are pending; raises for a name that is neither known nor pending."""
    used = metric_names(expr)
    known, pending = set(known), set(pending)
    unknown = sorted(used - known - pending)
    if unknown:
        raise GenerationError(f"{where}: unknown metric {', '.join(unknown)} (not in the catalogue, "
                              f"not a generated recording rule): {expr}")
    return tuple(sorted((used - known) & pending))


def with_protocol(expr: str, c: MonitoringConfig) -> str:
    """``expr`` labelled with its link's protocol and site (``qlink_info``), so that Alertmanager
    routes it by link kind and groups it by site even where the expression aggregated the site
    away; ``topk`` keeps one series per link even while the link briefly shows under two
    instances or sites."""
    link = by(c, "link")
    body = "\n".join("  " + line for line in expr.splitlines())
    return (f"(\n{body}\n)\n* on ({link}) group_left (protocol, {c.site_label})\n"
            f"topk by ({link}) (1, group by ({link}, protocol, {c.site_label}) (qlink_info))")


def build(c: MonitoringConfig) -> RuleSet:
    """Selector-injected, name-checked rule groups, and the specs gated on pending metrics."""
    samples = set(sample_names())
    targets = samples | TARGET_SERIES | PENDING_METRICS
    known = samples | PROMETHEUS_SERIES
    pending = set(PENDING_METRICS - samples)
    gated: list[Gated] = []
    seen: set[str] = set()
    out = []
    for group in spec_groups(c):
        rules: list[Record | Alert] = []
        for rule in group.rules:
            name = rule.record if isinstance(rule, Record) else rule.alert
            if isinstance(rule, Alert) and name in seen:
                raise GenerationError(f"alert {name} is specified twice")
            seen.add(name)
            if isinstance(rule, Alert) and rule.scope == "link":
                rule = replace(rule, expr=with_protocol(rule.expr, c))
            if isinstance(rule, Alert) and rule.alert in causes.CAUSES:
                rule = replace(rule, keep_firing_for=causes.hold(c))
            waits = check_names(rule.expr, known, pending, f"{group.name}/{name}")
            if waits:
                gated.append(Gated("record" if isinstance(rule, Record) else "alert", name, waits))
                if isinstance(rule, Record):
                    pending.add(rule.record)
                continue
            if isinstance(rule, Record):
                known.add(rule.record)
            rules.append(replace(rule, expr=inject_selector(rule.expr, c.selector, targets)))
        if rules:
            out.append(Group(group.name, tuple(rules), group.interval))
    ruleset = RuleSet(tuple(out), tuple(gated))
    unknown = {t for a in ruleset.alerts for t in a.inhibits} - seen
    if unknown:
        raise GenerationError(f"inhibits names unknown alerts: {', '.join(sorted(unknown))}")
    causes.check(ruleset, seen)
    return ruleset


def recording_names(ruleset: RuleSet) -> set[str]:
    return {r.record for r in ruleset.records}


def dashboard_url(alert: Alert, c: MonitoringConfig) -> str:
    """The dashboard that shows what the alert is about, with its variables set from the alert.

    The cluster variable is the alert's cluster label where the series carry one (rules
    evaluated in a global view); otherwise "All": where the cluster is only an external label
    of the Prometheus that evaluates the rules, its own series lack it, and a Grafana reading
    that Prometheus would find nothing for a named cluster.
    """
    cl = c.cluster_label
    params = [f'var-{cl}={{{{ or $labels.{cl} "$__all" | urlquery }}}}']
    if alert.scope == "link":
        slug = alert.dashboard or "{{ $labels.protocol }}"
        params.append("var-link={{ $labels.link }}")
    else:
        slug = alert.dashboard or "exporter"
        if alert.scope == "exporter":
            params.append("var-instance={{ $labels.instance | urlquery }}")
        if alert.scope == "demand":
            params.append("var-demand={{ $labels.demand }}")
    return f"{c.grafana_url}/d/{c.dashboard_uid(slug)}?{'&'.join(params)}"


def rule_dict(rule: Record | Alert, c: MonitoringConfig) -> dict:
    if isinstance(rule, Record):
        out = {"record": rule.record, "expr": rule.expr}
        if rule.labels:
            out["labels"] = dict(sorted(rule.labels.items()))
        return out
    labels = dict(sorted({"severity": rule.severity, **rule.labels}.items()))
    timing = {"for": rule.for_} | ({"keep_firing_for": rule.keep_firing_for} if rule.keep_firing_for else {})
    return {
        "alert": rule.alert,
        "expr": rule.expr,
        **timing,
        "labels": labels,
        "annotations": {
            "summary": expand(rule.summary),
            "description": expand(rule.description),
            "runbook_url": c.runbook_url(rule.alert),
            "dashboard_url": dashboard_url(rule, c),
        },
    }


def rules_document(ruleset: RuleSet, c: MonitoringConfig) -> dict:
    groups = []
    for group in ruleset.groups:
        g: dict = {"name": group.name}
        if group.interval:
            g["interval"] = group.interval
        g["rules"] = [rule_dict(r, c) for r in group.rules]
        groups.append(g)
    return {"groups": groups}
