"""Monitoring config: the one set of thresholds, SLOs and selectors behind dashboards, alerts and runbooks.

Like a monitoring mixin's ``_config``: the generators read nothing else, so a threshold changed
here moves the alert, the dashboard's threshold line and the runbook text together. The
defaults are the project's recommendation; ``qtelemetry generate --config FILE`` overrides any
of them from YAML (unknown keys are errors that name the field). The mixin's Jsonnet
``_config`` has the same settings (``selector``, ``clusterLabel``, ``runbookURLPattern``,
``grafanaURL``, ``thresholds``), generated from these defaults.

No default names a host: the alerts link to their runbook by a path relative to the generated
files (``alerts/runbooks.md#<alert>``) and to Grafana by a path (``/d/<uid>?...``) until
``runbook_url_pattern`` and ``grafana_url`` say where the user's runbooks and Grafana are.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qtelemetry.config import read_text, validate_yaml
from qtelemetry.networkconfig import PRIORITY_MAX

#: A PromQL duration such as 5m, 1h, 1d, 30d (one unit, which is all the generators need).
DURATION = r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$"
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


#: Any PromQL duration, as rule files may write one: units in decreasing order, each at most once (1h30m, 0s).
PROMQL_DURATION = re.compile("".join(rf"(?:(\d+){unit})?" for unit in ("y", "w", "d", "h", "m", "s", "ms")))


def duration_seconds(duration: str) -> float:
    """Seconds in a PromQL duration such as ``5m``, ``1h30m`` or ``0s``."""
    match = PROMQL_DURATION.fullmatch(duration)
    if not duration or not match:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(int(n) * _SECONDS[unit] for n, unit in zip(match.groups(), ("y", "w", "d", "h", "m", "s", "ms")) if n)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Forecast(Strict):
    """predict_linear over ``lookback`` says empty within ``horizon``, and the fill is below ``fill_ratio``."""

    lookback: str = Field(pattern=DURATION)
    horizon: str = Field(pattern=DURATION)
    fill_ratio: float = Field(gt=0, le=1)


class Thresholds(Strict):
    """Alert thresholds. Ratios are 0-1, as the metrics are."""

    qber_warning: float = Field(0.05, gt=0, lt=0.5, description="QBER upper bound that opens a ticket")
    qber_critical: float = Field(0.08, gt=0, lt=0.5, description="QBER upper bound that pages")
    qber_no_key: float = Field(0.11, gt=0, lt=0.5,
                               description="QBER above which BB84/BBM92 distil no key (Shor-Preskill 11%); dashboards only")
    key_rate_drop_ratio: float = Field(0.5, gt=0, lt=1,
                                       description="alert when the key rate falls below this fraction of its baseline")
    key_rate_below_expected_ratio: float = Field(0.5, gt=0, lt=1,
                                                 description="info alert when the key rate stays below this fraction of the plan")
    loss_step_db: float = Field(3.0, gt=0, description="loss rise over the baseline that means a bend, splice or cut")
    dark_count_factor: float = Field(3.0, gt=1, description="vacuum gain this many times above or below its baseline is an anomaly")
    dark_count_min_expected: float = Field(100, gt=0, description=(
        "judge suppressed dark counts only when the baseline predicts at least this many vacuum "
        "detections per smoothing window (so that seeing a third of them is not chance)"))
    key_buffer_forecast: "Forecast" = Field(default_factory=lambda: Forecast(lookback="1h", horizon="4h", fill_ratio=0.5),
                                            description="warn: key store forecast empty (ticket)")
    key_buffer_imminent: "Forecast" = Field(default_factory=lambda: Forecast(lookback="30m", horizon="30m", fill_ratio=0.1),
                                            description="page: key store about to run dry")
    stale_after_seconds: float = Field(60, gt=0, description=(
        "a link that reports up with data older than this is stale (the exporter's stall timeout should "
        "have marked it down)"))
    driver_error_ratio: float = Field(0.01, gt=0, lt=1, description="fraction of a link's batches lost to one error reason")
    estimation_slow_ratio: float = Field(0.5, gt=0, le=1, description=(
        "90th percentile of the estimation cycle above this fraction of the window: headroom is gone (ticket)"))
    estimation_lag_windows: float = Field(3, gt=1, description=(
        "average time since the last completed cycle above this many windows: the exporter falls behind"))
    estimation_skipped_ratio: float = Field(0.05, gt=0, lt=1, description=(
        "fraction of estimation cycles skipped for overload above which the exporter falls behind"))
    estimation_stall_seconds: float = Field(60, gt=0, description=(
        "no estimation cycle completed for this long: every link of the exporter is frozen (page)"))
    connections_ratio: float = Field(0.8, gt=0, le=1, description=(
        "open connections above this fraction of the endpoint's cap (ticket): at the cap each new client "
        "closes the one that waited longest"))
    memory_limit_ratio: float = Field(0.9, gt=0, le=1, description=(
        "resident memory above this fraction of the exporter's cgroup memory limit (ticket): at the limit "
        "the kernel kills it"))
    otlp_failure_ratio: float = Field(0.5, gt=0, le=1, description=(
        "share of OTLP pushes not delivered (failed, timed out or stalled) over 15 minutes above which the "
        "OpenTelemetry pipeline is losing the links' data (ticket)"))
    kme_latency_seconds: float = Field(0.5, gt=0, description=(
        "90th percentile of the requests a KME answered (ETSI 014 status, key probes) above this opens a ticket"))
    key_refusal_ratio: float = Field(0.1, gt=0, lt=1, description=(
        "share of one-key probes a KME refused over 10 minutes above which applications are being refused keys (page)"))
    chsh_sigmas: float = Field(3.0, gt=0, description="a CHSH violation smaller than this many standard deviations is weak")
    fidelity_min: float = Field(0.9, gt=0.5, le=1, description="BBM92 Bell-state fidelity lower bound below this warns")
    heralded_fidelity_min: float = Field(0.75, gt=0.5, le=1,
                                         description="heralded-pair fidelity whose upper bound is below this warns")
    rate_drop_ratio: float = Field(0.5, gt=0, lt=1,
                                   description="coincidence and heralding rates below this fraction of their baseline warn")
    stored_key_floor_seconds: float = Field(3600, gt=0, description=(
        "a demand whose stored key would last less than this if every link stopped warns (QNetStoredKeyLow)"))

    @model_validator(mode="after")
    def _ordered(self) -> "Thresholds":
        if not self.qber_warning < self.qber_critical < self.qber_no_key:
            raise ValueError("need qber_warning < qber_critical < qber_no_key")
        return self


class Baseline(Strict):
    """A link's own normal: the median over ``window`` of its ``smoothing`` averages.

    The median makes the baseline robust: an excursion has to last half the window before it
    becomes the new normal (and the alert resolves by itself).
    """

    smoothing: str = Field("10m", pattern=DURATION)
    window: str = Field("1d", pattern=DURATION)


class BurnWindow(Strict):
    """One multi-window burn-rate condition (SRE workbook, ch. 5 "Alerting on SLOs")."""

    long: str = Field(pattern=DURATION)
    short: str = Field(pattern=DURATION)
    factor: float = Field(gt=0)


class BurnAlert(Strict):
    """Burn-rate conditions OR-ed into one alert of one severity."""

    name: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", description="suffix of the SLO's alert prefix")
    severity: str = Field(pattern=r"^(critical|warning|info)$")
    for_: str = Field(alias="for", pattern=DURATION)
    windows: tuple[BurnWindow, ...]


SRE_WORKBOOK_BURN_ALERTS = (
    BurnAlert(name="ErrorBudgetBurnFast", severity="critical", **{"for": "2m"}, windows=(
        BurnWindow(long="1h", short="5m", factor=14.4), BurnWindow(long="6h", short="30m", factor=6))),
    BurnAlert(name="ErrorBudgetBurnSlow", severity="warning", **{"for": "15m"}, windows=(
        BurnWindow(long="1d", short="2h", factor=3), BurnWindow(long="3d", short="6h", factor=1))),
)


class SLO(Strict):
    """A ratio SLO compiled into recording rules per window and burn-rate alerts (like sloth/pyrra).

    good/total are counters; the error ratio over a window is 1 - rate(good)/rate(total).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="used in recording-rule names")
    title: str
    description: str
    objective: float = Field(gt=0, lt=1)
    period: str = Field("30d", pattern=DURATION)
    good: str = Field(description="counter of good events (catalogue sample name)")
    total: str = Field(description="counter of all events (catalogue sample name)")
    group_by: tuple[str, ...] = Field(("link",), description=(
        "labels an SLO is computed per, besides the cluster label and job that every rule keeps"))
    alert_prefix: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$")
    burn_alerts: tuple[BurnAlert, ...] = SRE_WORKBOOK_BURN_ALERTS

    @property
    def windows(self) -> list[str]:
        """Every window a burn condition or the period needs, shortest first."""
        spans = {w for a in self.burn_alerts for b in a.windows for w in (b.long, b.short)}
        return sorted(spans, key=duration_seconds)


KEY_SUPPLY = SLO(
    name="qkd_key_supply",
    title="Key supply",
    description="Key delivered to applications / key they requested, per link.",
    objective=0.999,
    good="qkd_key_delivered_bits_total",
    total="qkd_key_requested_bits_total",
    alert_prefix="QKDKeySupply",
)


class PilotTargets(Strict):
    """What a pilot promised, judged by ``qtelemetry report`` over the report's period (met / not met)."""

    availability: float = Field(0.99, gt=0, le=1, description=(
        "fraction of the time with data each link must be up and distilling key (or entanglement)"))
    key_supply_ratio: float = Field(0.999, gt=0, le=1, description=(
        "key delivered to applications / key they requested over the period, per link and network"))
    mttr_seconds: float = Field(14400, gt=0, description="mean time to restore a link after an outage, at most")
    key_rate_vs_plan_ratio: float = Field(0.8, gt=0, le=10, description=(
        "median secret key rate / the plan's expected rate, at least (the link performs as modelled)"))
    qber_p95: float = Field(0.05, gt=0, lt=0.5, description="95th percentile of the Z-basis QBER, at most")
    pages_per_week: float = Field(2, ge=0, description=(
        "pages (notifications bringing a new critical alert, after Alertmanager's grouping and inhibition) "
        "per link and week, at most"))


class MonitoringConfig(Strict):
    selector: str = Field('job="qtelemetry"', min_length=1,
                          description="label matchers that select qtelemetry's series in your Prometheus")
    cluster_label: str = Field("cluster", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", description=(
        "label that tells Prometheus servers / sites apart in a global view (an external label or a "
        "target label); every rule keeps it and every dashboard filters on it. Series without it "
        "(one Prometheus) work unchanged"))
    site_label: str = Field("site", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", description=(
        "target label naming the site an exporter watches (one exporter per site): every link alert "
        "carries it, Alertmanager's paging route groups by it, and a site whose links are all down pages "
        "once (QLinkSiteDown). Series without it count as one site per cluster"))
    exporter_absent_alert: Literal["lost", "always", "off"] = Field("lost", description=(
        "QTelemetryExporterAbsent: 'lost' fires when the exporters Prometheus scraped within a day are all "
        "gone; 'always' also when it never scraped one (a Prometheus whose job is to scrape qtelemetry); "
        "'off' leaves the alert out (a Prometheus that loads the rules but scrapes no qtelemetry)"))
    page_demand_priority: int = Field(0, ge=0, le=PRIORITY_MAX, strict=True, description=(
        "QNetDemandUnmet pages only for demands of at least this priority (qnet_demand_priority, larger is more "
        "important); below it an unmet demand opens a ticket (QNetDemandUnmetLowPriority). 0: every demand pages"))
    grafana_url: str = Field("", pattern=r"^(https?://[^#?]+[^/#?])?$", description=(
        "your Grafana's base URL, for the alerts' dashboard_url annotation; empty: a path (/d/<uid>?...) "
        "to open on your Grafana"))
    runbook_url_pattern: str = Field("alerts/runbooks.md#%s", description=(
        "the alerts' runbook_url: %s is the alert name in lower case (the anchor of its section in the "
        "generated alerts/runbooks.md); the default is that file's path, relative to where it is generated"))
    dashboard_uid_prefix: str = Field("qtelemetry", pattern=r"^[A-Za-z0-9_-]{1,30}$")
    dashboard_tags: tuple[str, ...] = ("qtelemetry",)
    dashboard_refresh: str = Field("30s", pattern=DURATION)
    dashboard_time_from: str = "now-6h"
    rule_interval: str = Field("1m", pattern=DURATION)
    slow_rule_interval: str = Field("5m", pattern=DURATION,
                                    description="interval of the SLO-period group (30d windows)")
    thresholds: Thresholds = Thresholds()
    baseline: Baseline = Baseline()
    slos: tuple[SLO, ...] = (KEY_SUPPLY,)
    pilot: PilotTargets = PilotTargets()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "runbook_base_url" in data:
            raise ValueError("runbook_base_url is now runbook_url_pattern: the page URL followed by #%s")
        return data

    @field_validator("runbook_url_pattern")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        if value.replace("%%", "").count("%") != 1 or "%s" not in value.replace("%%", ""):
            raise ValueError("needs exactly one %s (the alert name in lower case); write a literal % as %%")
        return value

    def runbook_url(self, alert: str) -> str:
        return self.runbook_url_pattern % alert.lower()

    def dashboard_uid(self, slug: str) -> str:
        return f"{self.dashboard_uid_prefix}-{slug}"

    @property
    def identity(self) -> tuple[str, ...]:
        """Labels every rule keeps: which Prometheus/site and which scrape job a series came from."""
        return (self.cluster_label, "job")


DEFAULT = MonitoringConfig()


def load_monitoring_config(path: str | Path | None) -> MonitoringConfig:
    """The defaults, or the defaults overridden by a YAML file; errors name the field."""
    if path is None:
        return DEFAULT
    return validate_yaml(MonitoringConfig, read_text(path), str(path), empty_ok=True)
