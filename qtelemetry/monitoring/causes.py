"""The cause hierarchy: which alert explains which, so that one incident pages once.

    exporter down, estimation stalled        the exporter that measures the links (and analyses
                                             their network: the key demands between sites)
      site down (all of a site's links)      every link of one site
        link down, KME unavailable,          one link that produces nothing
        link inactive
          no signal                          one dark link (a fibre cut)
            tamper alarm                     one link under a possible attack
              key store running dry          one link whose applications are refused key
                QBER, key rate, key store, key supply (SLO burn), dark counts, loss, ...

While a level's cause fires, Alertmanager mutes every alert *about* what the level explains
(the causes of the levels below included), for the same exporter, site or link. What an alert is
about (its concerns) follows from the metrics it reads: the catalogue's names, recording rules
followed to the metrics they read. So a new alert on QBER is muted by a fibre cut without being
listed here, and a link metric nobody classified is a generation error. A tamper alarm is muted
only by a dark link (no light, no key, and a cut must not page security) or a silent exporter
or site, never by a link that is merely down. The Alertmanager inhibit rules and the
runbooks' cross-references ("if X also fires, X is the cause") both come from this one hierarchy,
together with the alerts' own ``inhibits`` (milder forms of one condition: QKDQberHigh under
QKDQberCritical).

A cause keeps firing (``keep_firing_for``) as long as a paging symptom can outlast it: a
multi-window burn-rate alert resolves when the short window of its last pair clears (30 minutes
for the 6h/30m pair), so without the hold the key-supply SLO would page once the fibre cut that
explained it had resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qtelemetry.monitoring.catalogue import METRICS
from qtelemetry.monitoring.config import MonitoringConfig, duration_seconds
from qtelemetry.monitoring.promql import GenerationError, metric_names, sample_names

if TYPE_CHECKING:
    from qtelemetry.monitoring.rules import Alert, RuleSet

#: What link alerts are about, by the catalogue metrics they read. An alert reading a ``qlink_``,
#: ``qkd_`` or ``qent_`` metric missing here cannot be generated; every other metric (``up``, the
#: exporter's own) is about the exporter.
CONCERNS: dict[str, tuple[str, ...]] = {
    "link health": ("qlink_up", "qlink_data_age_seconds", "qlink_last_update_timestamp_seconds", "qlink_batches",
                    "qlink_driver_errors", "qlink_estimates_skipped"),
    "link state": ("qkd_link_status", "qkd_link_active", "qkd_interface_status", "qkd_node_unknown_identities"),
    "qber": ("qkd_qber_ratio", "qkd_qber_upper_bound_ratio", "qkd_errors", "qkd_sifted_detections"),
    "key rate": ("qkd_secret_key_rate_bits_per_second", "qkd_asymptotic_secret_key_rate_bits_per_second",
                 "qkd_expected_secret_key_rate_bits_per_second", "qkd_repeaterless_bound_bits_per_second",
                 "qkd_repeaterless_bound_ratio", "qkd_sifted_key_rate_bits_per_second", "qkd_corrected_key_bits",
                 "qkd_corrected_key_rate_bits_per_second", "qkd_effective_secret_key_rate_bits_per_second",
                 "qkd_key_generated_bits"),
    "key store": ("qkd_key_buffer_bits", "qkd_key_buffer_capacity_bits", "qkd_key_buffer_trend_bits_per_second",
                  "qkd_key_buffer_increase_bits", "qkd_key_buffer_decrease_bits",
                  "qkd_expected_key_consumption_bits_per_second"),
    "key supply": ("qkd_key_requested_bits", "qkd_key_delivered_bits"),
    "detections": ("qkd_gain_ratio", "qkd_pulses", "qkd_detections"),
    "loss": ("qkd_channel_loss_db", "qkd_channel_loss_budget_db", "qkd_signal_to_noise"),
    "kme": ("qkd_kme_request_duration_seconds", "qkd_kme_key_probes"),
    "tamper": ("qkd_tamper_alarm", "qkd_tamper_statistic", "qkd_tamper_warmup", "qkd_tamper_baseline_ratio"),
    "entanglement": tuple(m.name for m in METRICS if m.name.startswith("qent_")),
    "network": tuple(m.name for m in METRICS if m.name.startswith("qnet_")),
}
EXPORTER = "exporter"
#: Link metadata joined into every link alert (its protocol and site): what the alert is about is the rest.
METADATA = frozenset({"qlink_info"})
LINK_PREFIXES = ("qlink_", "qkd_", "qent_", "qnet_")
LINK_CONCERNS = tuple(c for c in CONCERNS if c != "network")


@dataclass(frozen=True)
class Level:
    """The causes of one level and the concerns they explain."""

    name: str
    causes: tuple[str, ...]
    explains: tuple[str, ...]  #: concerns
    because: str  #: the cause in words, for the runbooks of the alerts it mutes


LEVELS: tuple[Level, ...] = (
    Level("exporter", ("QTelemetryExporterDown", "QTelemetryEstimationStalled"), (*LINK_CONCERNS, "network"),
          "the exporter that measures the links (or analyses their network) is down or frozen"),
    Level("site", ("QLinkSiteDown",), LINK_CONCERNS, "every link of the site is down"),
    Level("link", ("QLinkDown", "QKDKmeUnavailable", "QKDLinkInactive"),
          tuple(c for c in LINK_CONCERNS if c != "tamper"),
          "the link is down or inactive: it distils no key, whatever its other numbers say"),
    Level("light", ("QKDNoSignal",), LINK_CONCERNS,
          "no light reaches the receiver: a cut reads as ~50% QBER from dark counts alone, not as an attack, "
          "and no key is made to steal"),
    Level("attack", ("QKDTamperSuspected",), ("qber", "key rate", "key store", "key supply", "detections"),
          "a tamper detector alarmed: security is paged with it and its runbook leads"),
    Level("key store", ("QKDKeyBufferExhaustionImminent",), ("key supply",),
          "the link's key store is (about to be) empty, which is why requests for key fail"),
)
CAUSES = frozenset(c for level in LEVELS for c in level.causes)
#: Labels an alert of each scope carries that tie it to a cause (the site label stands for the config's).
CARRIES = {"link": ("link", "instance", "site"), "site": ("site",), "exporter": ("instance", "site"), "cluster": (),
           "demand": ("demand", "instance")}
#: Labels a cause of each scope is tied by, finest first: the first one its target also carries.
TIES = {"link": ("link",), "site": ("site",), "exporter": ("instance", "site"), "cluster": (), "demand": ("demand",)}


def hold(c: MonitoringConfig) -> str:
    """How long a cause keeps firing after it clears: the longest window a symptom averages over
    (the baseline smoothing; the short window of every pair of a paging burn-rate alert)."""
    windows = [c.baseline.smoothing, *(w.short for slo in c.slos for burn in slo.burn_alerts
                                       if burn.severity == "critical" for w in burn.windows)]
    return max(windows, key=duration_seconds)


def _concern(name: str) -> str:
    family = sample_names().get(name, name)
    for concern, families in CONCERNS.items():
        if family in families:
            return concern
    if family.startswith(LINK_PREFIXES):
        raise GenerationError(f"metric {family} has no concern in the cause hierarchy (monitoring/causes.py CONCERNS)")
    return EXPORTER


def concerns(alert: "Alert", ruleset: "RuleSet") -> frozenset[str]:
    """What ``alert`` is about: the concerns of the metrics it reads, through recording rules."""
    records = {r.record: r.expr for r in ruleset.records}
    seen: set[str] = set()
    todo = list(metric_names(alert.expr))
    while todo:
        name = todo.pop()
        if name in seen or name in METADATA:
            continue
        seen.add(name)
        if name in records:
            todo += metric_names(records[name])
    return frozenset(_concern(n) for n in seen if n not in records)


@dataclass(frozen=True)
class Relation:
    """``cause`` explains ``effect`` while both fire with equal ``equal`` labels."""

    cause: str
    effect: str
    equal: tuple[str, ...]
    because: str


def _tie(cause: "Alert", effect: "Alert", c: MonitoringConfig) -> tuple[str, ...] | None:
    label = next((t for t in TIES[cause.scope] if t in CARRIES[effect.scope]), None)
    return None if label is None else _named((label,), c)


def _named(labels: tuple[str, ...], c: MonitoringConfig) -> tuple[str, ...]:
    """The identity labels, then ``labels`` with "site" as the config names it."""
    return (*c.identity, *(c.site_label if x == "site" else x for x in labels))


def relations(ruleset: "RuleSet", c: MonitoringConfig) -> list[Relation]:
    """Every (cause, effect) pair of the hierarchy among the generated alerts, then the alerts' own
    ``inhibits`` (milder forms of one condition, tied by the alert's own scope)."""
    alerts = {a.alert: a for a in ruleset.alerts}
    about = {name: concerns(a, ruleset) for name, a in alerts.items()}
    out: list[Relation] = []
    for i, level in enumerate(LEVELS):
        above = {x for lv in LEVELS[:i + 1] for x in lv.causes}
        effects = [a for name, a in alerts.items() if name not in above and about[name] & set(level.explains)]
        for cause in (alerts[name] for name in level.causes if name in alerts):
            for effect in effects:
                equal = _tie(cause, effect, c)
                if equal is not None:
                    out.append(Relation(cause.alert, effect.alert, equal, level.because))
    for alert in ruleset.alerts:
        for target in (t for t in alert.inhibits if t in alerts):
            own = TIES[alert.scope][:1]
            out.append(Relation(alert.alert, target, (*_named(own, c), *alert.inhibit_equal),
                                f"{alert.alert} is the same condition, worse"))
    return out


def inhibit_rules(ruleset: "RuleSet", c: MonitoringConfig) -> list[dict]:
    """Alertmanager inhibit rules: one per cause and set of equal labels, muting what it explains."""
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for r in relations(ruleset, c):
        targets = grouped.setdefault((r.cause, r.equal), [])
        if r.effect not in targets:
            targets.append(r.effect)
    return [{"source_matchers": [f'alertname="{cause}"'],
             "target_matchers": [f'alertname=~"{"|".join(targets)}"'],
             "equal": list(equal)} for (cause, equal), targets in grouped.items()]


def check(ruleset: "RuleSet", specified: set[str]) -> None:
    """Every cause named here is a specified alert (or one the config leaves out)."""
    unknown = sorted(CAUSES - specified)
    if unknown:
        raise GenerationError(f"the cause hierarchy names unknown alerts: {', '.join(unknown)}")
    for alert in ruleset.alerts:
        concerns(alert, ruleset)  # raises for a link metric without a concern
