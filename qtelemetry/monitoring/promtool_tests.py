"""promtool unit tests for every alert: a case where it fires and a case where it stays silent.

promtool evaluates rule groups in map order unless told otherwise, so every test file sets
``group_eval_order`` to the rule file's order (recording groups before the alerts that read
them). A live Prometheus evaluates groups independently, so an alert may read a recording rule
one interval late; firing cases therefore keep their inputs constant for a while before the
evaluation time, so that ``$value`` does not depend on the order either.

Each ``Case`` is one promtool test group (explicit ``interval``): input series written without
the deployment's selector labels (added from ``config.selector``, with a cluster label and an
instance), an evaluation time, and the alerts expected then. Cases of per-link alerts also get
the link's ``qlink_info`` series (its protocol labels the alert). Expected annotations are
rendered here from the rule's templates with a small re-implementation of Prometheus's
``humanize*`` and ``urlquery`` functions, so promtool also checks the summary, description and
dashboard URL (and ``$value``) of every firing case.

``generate`` refuses to write the tests unless every generated alert has at least one firing
and one silent case; cases of alerts gated on a pending metric are left out with them.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass, field, replace

from qtelemetry.estimation.reported import ETSI014, ETSI015
from qtelemetry.monitoring import causes
from qtelemetry.monitoring.catalogue import BB84, BBM92, HERALDED
from qtelemetry.monitoring.config import DEFAULT, MonitoringConfig, duration_seconds
from qtelemetry.monitoring.promql import GenerationError, selector_labels
from qtelemetry.monitoring.network_alerts import network_cases
from qtelemetry.monitoring.rules import Alert, RuleSet, rule_dict

INSTANCE = "qtelemetry:9817"  # the instance label of the test series
CLUSTER = "eu-1"  # their cluster label
SITE = "dc-north"  # their site label
LINK = "metro-10km"
#: target labels an alert on recorded per-link series keeps (recording rules drop instance; the
#: site comes back with the link's qlink_info)
RECORDED = ("cluster", "job", "site")


@dataclass(frozen=True)
class Fires:
    """One expected alert: its labels beyond the rule's own, and ``$value`` if a template shows it."""

    labels: dict[str, str] = field(default_factory=dict)
    value: float | None = None
    keep: tuple[str, ...] = ("cluster", "job", "instance", "site")  # selector/target labels the alert keeps


@dataclass(frozen=True)
class Case:
    alert: str
    name: str
    series: dict[str, str]
    at: str
    fires: tuple[Fires, ...] = ()
    target_labels: bool = True  # add the selector's labels, cluster and instance to every series
    protocol: str = BB84  # of the test link, for per-link alerts

    @property
    def firing(self) -> bool:
        return bool(self.fires)


def link(**labels: str) -> dict[str, str]:
    return {"link": LINK, **labels}


def sel(metric: str, **labels: str) -> str:
    """A series selector for ``metric`` on the test link."""
    inner = ", ".join(f'{k}="{v}"' for k, v in link(**labels).items())
    return f"{metric}{{{inner}}}"


def rep(value: str, n: int) -> str:
    """``value`` n times (promtool's ``x`` notation cannot repeat Inf)."""
    return " ".join([value] * n)


VAC = {"intensity": "vacuum"}


def cases(c: MonitoringConfig = DEFAULT) -> list[Case]:
    """Every case of the alerts ``c`` generates (its cluster and site labels, its absent-exporter mode)."""
    skr = "qkd_secret_key_rate_bits_per_second"
    cluster, site = c.cluster_label, c.site_label
    held = causes.hold(c)
    hold_m = int(duration_seconds(held) // 60)
    cut = "10x10 " + rep("Inf", 10) + f" 10x{hold_m + 10}"  # no light from minute 10 to 19
    never_scraped = "no target of the job at all" + ("" if c.exporter_absent_alert == "always" else
                                                      " (never scraped: silent unless exporter_absent_alert is always)")
    return [
        # --- QBER (upper confidence bound) ---------------------------------------------------
        Case("QKDQberHigh", "QBER bound at 6% for 20 min fires (Z basis only)", {
            sel("qkd_qber_upper_bound_ratio", basis="Z"): "0.02x10 0.06x30",
            sel("qkd_qber_upper_bound_ratio", basis="X"): "0.02x40"}, "30m",
            (Fires(link(basis="Z"), 0.06),)),
        Case("QKDQberHigh", "a 5-minute excursion to 6% stays silent", {
            sel("qkd_qber_upper_bound_ratio", basis="Z"): "0.02x10 0.06x5 0.02x25"}, "30m"),
        Case("QKDQberCritical", "QBER bound at 9% for 10 min pages", {
            sel("qkd_qber_upper_bound_ratio", basis="Z"): "0.02x10 0.09x20"}, "20m",
            (Fires(link(basis="Z"), 0.09),)),
        Case("QKDQberCritical", "7% (above warning, below critical) does not page", {
            sel("qkd_qber_upper_bound_ratio", basis="Z"): "0.07x30"}, "25m"),
        # --- key rate vs the link's own baseline ----------------------------------------------
        Case("QKDSecretKeyRateDrop", "rate falls from 1000 to 100 bit/s", {
            sel(skr): "1000x60 100x40"}, "95m", (Fires(link(), 100, keep=RECORDED),)),
        Case("QKDSecretKeyRateDrop", "a dip to 60% of the baseline is tolerated", {
            sel(skr): "1000x60 600x40"}, "95m"),
        Case("QKDSecretKeyRateZero", "rate 0 while the link is up", {
            sel(skr): "1000x60 0x30", sel("qlink_up"): "1x90"}, "85m", (Fires(link()),)),
        Case("QKDSecretKeyRateZero", "rate no longer estimable (series gone) while the link is up", {
            sel(skr): "1000x60 _x30", sel("qlink_up"): "1x90"}, "85m", (Fires(link(), keep=RECORDED),)),
        Case("QKDSecretKeyRateZero", "link down: QLinkDown owns it, no key-rate page", {
            sel(skr): "1000x60 0x30", sel("qlink_up"): "1x60 0x30"}, "85m"),
        Case("QKDSecretKeyRateBelowPlan", "a finite-key rate at 40% of the plan for over an hour", {
            sel(skr): "400x90", sel("qkd_expected_secret_key_rate_bits_per_second"): "1000x90"}, "80m",
            (Fires(link(), 400, keep=RECORDED),)),
        Case("QKDSecretKeyRateBelowPlan", "90% of the plan is fine", {
            sel(skr): "900x90", sel("qkd_expected_secret_key_rate_bits_per_second"): "1000x90"}, "80m"),
        Case("QKDSecretKeyRateBelowPlan", "the asymptotic rate is not compared with the finite-key plan", {
            sel(skr): "900x90", sel("qkd_asymptotic_secret_key_rate_bits_per_second"): "400x90",
            sel("qkd_expected_secret_key_rate_bits_per_second"): "1000x90"}, "80m"),
        Case("QKDKeyRateAboveRepeaterlessBound", "1.2 x PLOB is impossible", {
            sel("qkd_repeaterless_bound_ratio"): "1.2x30"}, "20m", (Fires(link(), 1.2),)),
        Case("QKDKeyRateAboveRepeaterlessBound", "30% of the bound is plausible", {
            sel("qkd_repeaterless_bound_ratio"): "0.3x30"}, "20m"),
        # --- loss -----------------------------------------------------------------------------
        Case("QKDChannelLossOverBudget", "7 dB on a 6 dB budget", {
            sel("qkd_channel_loss_db"): "7x30", sel("qkd_channel_loss_budget_db"): "6x30"}, "25m",
            (Fires(link(), 7),)),
        Case("QKDChannelLossOverBudget", "5 dB on a 6 dB budget", {
            sel("qkd_channel_loss_db"): "5x30", sel("qkd_channel_loss_budget_db"): "6x30"}, "25m"),
        Case("QKDChannelLossStep", "loss steps from 10 to 14 dB (a bend)", {
            sel("qkd_channel_loss_db"): "10x60 14x40"}, "90m", (Fires(link(), 4, keep=RECORDED),)),
        Case("QKDChannelLossStep", "a cut (infinite loss) is a step too", {
            sel("qkd_channel_loss_db"): "10x60 " + rep("Inf", 30)}, "85m", (Fires(link(), math.inf, keep=RECORDED),)),
        Case("QKDChannelLossStep", "a 2 dB step stays below the 3 dB threshold", {
            sel("qkd_channel_loss_db"): "10x60 12x40"}, "90m"),
        Case("QKDNoSignal", "no light above background", {
            sel("qkd_channel_loss_db"): "10x10 " + rep("Inf", 10)}, "15m", (Fires(link()),)),
        Case("QKDNoSignal", f"held {held} after the light returns (keep_firing_for: its symptoms still average the cut)", {
            sel("qkd_channel_loss_db"): cut}, f"{20 + hold_m - 1}m", (Fires(link()),)),
        Case("QKDNoSignal", "resolved once the hold is over", {sel("qkd_channel_loss_db"): cut}, f"{20 + hold_m + 1}m"),
        Case("QKDNoSignal", "high but finite loss", {sel("qkd_channel_loss_db"): "40x20"}, "15m"),
        # --- ETSI GS QKD 015 link state -------------------------------------------------------
        Case("QKDLinkInactive", "the node reports the link PASSIVE for 7 minutes", {
            sel("qkd_link_active"): "1x5 0x10", sel("qkd_link_status", status="ACTIVE"): "1x5 0x10",
            sel("qkd_link_status", status="PASSIVE"): "0x5 1x10", sel("qkd_link_status", status="OFF"): "0x15"},
            "12m", (Fires(link(status="PASSIVE"), 0),), protocol=ETSI015),
        Case("QKDLinkInactive", "a status outside the model reads as unknown", {
            sel("qkd_link_active"): "0x15", sel("qkd_link_status", status="ACTIVE"): "0x15",
            sel("qkd_link_status", status="PASSIVE"): "0x15"}, "12m", (Fires(link(status="unknown"), 0),),
            protocol=ETSI015),
        Case("QKDLinkInactive", "a 3-minute PENDING while the controller re-activates the link", {
            sel("qkd_link_active"): "1x5 0x3 1x10", sel("qkd_link_status", status="ACTIVE"): "1x5 0x3 1x10",
            sel("qkd_link_status", status="PENDING"): "0x5 1x3 0x10"}, "12m", protocol=ETSI015),
        Case("QKDLinkInactive", "ACTIVE", {
            sel("qkd_link_active"): "1x15", sel("qkd_link_status", status="ACTIVE"): "1x15"}, "12m", protocol=ETSI015),
        # --- dark counts (vacuum gain) vs baseline --------------------------------------------
        Case("QKDDarkCountsHigh", "vacuum gain x4", {
            sel("qkd_gain_ratio", **VAC): "0.000001x60 0.000004x50"}, "100m", (Fires(link(**VAC), 4e-6, keep=RECORDED),)),
        Case("QKDDarkCountsHigh", "vacuum gain x2.5 is within the band", {
            sel("qkd_gain_ratio", **VAC): "0.000001x60 0.0000025x50"}, "100m"),
        Case("QKDDarkCountsSuppressed", "vacuum gain drops to a tenth with plenty of vacuum pulses", {
            sel("qkd_gain_ratio", **VAC): "0.000001x60 0.0000001x40",
            sel("qkd_pulses_total", **VAC): "0+600000000x100"}, "95m", (Fires(link(**VAC), 1e-7, keep=RECORDED),)),
        Case("QKDDarkCountsSuppressed", "too few vacuum pulses for the drop to mean anything", {
            sel("qkd_gain_ratio", **VAC): "0.000001x60 0.0000001x40",
            sel("qkd_pulses_total", **VAC): "0+1000x100"}, "95m"),
        # --- tamper detectors -----------------------------------------------------------------
        Case("QKDTamperSuspected", "the decoy-gain detector alarms (blinding)", {
            sel("qkd_tamper_alarm", detector="decoy_gain"): "0x5 1x10",
            sel("qkd_tamper_alarm", detector="qber_z"): "0x15"}, "8m",
            (Fires(link(detector="decoy_gain"), 1),)),
        Case("QKDTamperSuspected", "every detector below its threshold", {
            sel("qkd_tamper_alarm", detector="qber_z"): "0x15",
            sel("qkd_tamper_statistic", detector="qber_z"): "0.9x15"}, "10m"),
        Case("QKDTamperSuspected", "still warming up: no alarm series yet", {
            sel("qkd_tamper_warmup"): "1x15"}, "10m"),
        # --- key store ------------------------------------------------------------------------
        Case("QKDKeyBufferExhaustionForecast", "store at 40% and draining 20 kbit/min", {
            sel("qkd_key_buffer_bits"): "4000000-20000x60", sel("qkd_key_buffer_capacity_bits"): "10000000x60"},
            "30m", (Fires(link(), 0.34),)),
        Case("QKDKeyBufferExhaustionForecast", "store low but steady", {
            sel("qkd_key_buffer_bits"): "3000000x60", sel("qkd_key_buffer_capacity_bits"): "10000000x60"}, "30m"),
        Case("QKDKeyBufferExhaustionImminent", "store at 9% and draining 20 kbit/min", {
            sel("qkd_key_buffer_bits"): "900000-20000x40", sel("qkd_key_buffer_capacity_bits"): "10000000x40"},
            "25m", (Fires(link(), 0.04),)),
        Case("QKDKeyBufferExhaustionImminent", "store empty and not refilling", {
            sel("qkd_key_buffer_bits"): "0x40", sel("qkd_key_buffer_capacity_bits"): "10000000x40"},
            "25m", (Fires(link(), 0),)),
        Case("QKDKeyBufferExhaustionImminent", "store at 9% but steady", {
            sel("qkd_key_buffer_bits"): "900000x40", sel("qkd_key_buffer_capacity_bits"): "10000000x40"}, "25m"),
        # --- key management entities (ETSI GS QKD 014) ------------------------------------------
        Case("QKDKmeUnavailable", "connections refused for 10 minutes", {
            sel("qlink_up"): "1x5 0x15", sel("qlink_driver_errors_total", reason="connection_refused"): "0x5 1+2x15"},
            "15m", (Fires(link(reason="connection_refused"), 10),), protocol=ETSI014),
        Case("QKDKmeUnavailable", "a 3-minute outage", {
            sel("qlink_up"): "1x5 0x3 1x10", sel("qlink_driver_errors_total", reason="timeout"): "0x5 1+2x3 7x10"},
            "12m", protocol=ETSI014),
        Case("QKDKmeUnavailable", "a decoy-BB84 link that is down is QLinkDown's", {
            sel("qlink_up"): "1x5 0x15", sel("qlink_driver_errors_total", reason="stalled"): "0x5 1+2x15"}, "15m"),
        Case("QKDKmeSlow", "90th percentile of status requests at 0.925 s", {
            sel("qkd_kme_request_duration_seconds_bucket", endpoint="status", le="0.25"): "0x40",
            sel("qkd_kme_request_duration_seconds_bucket", endpoint="status", le="0.5"): "0+20x40",
            sel("qkd_kme_request_duration_seconds_bucket", endpoint="status", le="1"): "0+60x40",
            sel("qkd_kme_request_duration_seconds_bucket", endpoint="status", le="+Inf"): "0+60x40"}, "30m",
            (Fires(link(endpoint="status"), 0.925),), protocol=ETSI014),
        Case("QKDKmeSlow", "every request answered within 0.25 s", {
            sel("qkd_kme_request_duration_seconds_bucket", endpoint="status", le="0.25"): "0+60x40",
            sel("qkd_kme_request_duration_seconds_bucket", endpoint="status", le="0.5"): "0+60x40",
            sel("qkd_kme_request_duration_seconds_bucket", endpoint="status", le="+Inf"): "0+60x40"}, "30m",
            protocol=ETSI014),
        Case("QKDKeyRequestsRefused", "one probe in three refused", {
            sel("qkd_kme_key_probes_total", result="delivered"): "0+2x30",
            sel("qkd_kme_key_probes_total", result="refused"): "0+1x30",
            sel("qkd_kme_key_probes_total", result="failed"): "0x30"}, "25m", (Fires(link(), 1 / 3),), protocol=ETSI014),
        Case("QKDKeyRequestsRefused", "one probe in twenty refused", {
            sel("qkd_kme_key_probes_total", result="delivered"): "0+19x30",
            sel("qkd_kme_key_probes_total", result="refused"): "0+1x30",
            sel("qkd_kme_key_probes_total", result="failed"): "0x30"}, "25m", protocol=ETSI014),
        # --- link health ----------------------------------------------------------------------
        Case("QLinkSiteDown", "both links of a site down for 7 minutes", {
            f'qlink_up{{link="a", {site}="north"}}': "1x5 0x10", f'qlink_up{{link="b", {site}="north"}}': "1x5 0x10",
            f'qlink_up{{link="c", {site}="south"}}': "1x15"}, "12m", (Fires({site: "north"}, 2, keep=("cluster", "job")),)),
        Case("QLinkSiteDown", "one link of two down is that link's QLinkDown", {
            f'qlink_up{{link="a", {site}="north"}}': "1x5 0x10", f'qlink_up{{link="b", {site}="north"}}': "1x15"}, "12m"),
        Case("QLinkSiteDown", "a site with a single link", {f'qlink_up{{link="a", {site}="north"}}': "1x5 0x10"}, "12m"),
        Case("QLinkDown", "down for 7 minutes", {sel("qlink_up"): "1x5 0x10"}, "12m", (Fires(link()),)),
        Case("QLinkDown", "a 3-minute flap", {sel("qlink_up"): "1x5 0x3 1x10"}, "12m"),
        Case("QLinkStale", "data 10 minutes old on a link that reports up", {
            sel("qlink_data_age_seconds"): "0.5x5 600x20", sel("qlink_up"): "1x25"}, "20m", (Fires(link(), 600),)),
        Case("QLinkStale", "old data on a link that reports down: QLinkDown's", {
            sel("qlink_data_age_seconds"): "0.5x5 600x20", sel("qlink_up"): "1x5 0x20"}, "20m"),
        Case("QLinkStale", "fresh data", {sel("qlink_data_age_seconds"): "1.5x25", sel("qlink_up"): "1x25"}, "20m"),
        Case("QLinkDriverErrors", "one batch in 11 lost to impossible counts", {
            sel("qlink_batches_total"): "0+60x40", sel("qlink_driver_errors_total", reason="impossible"): "0+6x40"},
            "30m", (Fires(link(reason="impossible"), 6 / 66, keep=RECORDED),)),
        Case("QLinkDriverErrors", "0.5% lost is below the 1% threshold", {
            sel("qlink_batches_total"): "0+60x40", sel("qlink_driver_errors_total", reason="impossible"): "0+0.3x40"},
            "30m"),
        # --- exporter -------------------------------------------------------------------------
        Case("QTelemetryExporterDown", "scrapes fail for 7 minutes", {"up": "1x5 0x10"}, "12m", (Fires(),)),
        Case("QTelemetryExporterDown", "scrapes succeed", {"up": "1x15"}, "12m"),
        Case("QTelemetryExporterAbsent", never_scraped, {'up{job="other"}': "1x30"}, "20m",
             (Fires(keep=("job",)),) if c.exporter_absent_alert == "always" else (), target_labels=False),
        Case("QTelemetryExporterAbsent", "cluster west lost its exporters, east still has its own", {
            f'up{{{cluster}="east"}}': "1x60", f'up{{{cluster}="west"}}': "1x10"}, "40m",
             (Fires({cluster: "west"}, keep=("job",)),)),
        Case("QTelemetryExporterAbsent", "the target exists", {"up": "1x30"}, "20m"),
        Case("QTelemetryEstimationStalled", "no cycle completes any more", {
            "qtelemetry_estimation_lag_seconds": "0.5x5 65+60x20"}, "12m", (Fires(value=425),)),
        Case("QTelemetryEstimationStalled", "cycles complete every second", {
            "qtelemetry_estimation_lag_seconds": "0.8x25"}, "20m"),
        Case("QTelemetryEstimationLagging", "the last cycle is 4 windows old on average", {
            "qtelemetry_estimation_lag_seconds": "4x30", "qtelemetry_estimation_interval_seconds": "1x30"}, "25m",
             (Fires(value=4),)),
        Case("QTelemetryEstimationLagging", "2 windows is within the budget", {
            "qtelemetry_estimation_lag_seconds": "2x30", "qtelemetry_estimation_interval_seconds": "1x30"}, "25m"),
        Case("QTelemetryFallingBehind", "one cycle in ten skipped", {
            "qtelemetry_estimation_cycles_skipped_total": "0+6x40",
            "qtelemetry_estimation_duration_seconds_count": "0+54x40"}, "30m", (Fires(value=0.1),)),
        Case("QTelemetryFallingBehind", "no cycle skipped", {
            "qtelemetry_estimation_cycles_skipped_total": "0x40",
            "qtelemetry_estimation_duration_seconds_count": "0+60x40"}, "30m"),
        Case("QTelemetryConfigReloadFailed", "a reload rejected and none since", {
            "qtelemetry_config_last_reload_successful": "1x5 0x20"}, "20m", (Fires(),)),
        Case("QTelemetryConfigReloadFailed", "a rejected reload fixed within minutes", {
            "qtelemetry_config_last_reload_successful": "1x5 0x5 1x15"}, "20m"),
        Case("QTelemetryEstimationSlow", "90th percentile at 0.925 of a 1 s window", {
            'qtelemetry_estimation_duration_seconds_bucket{le="0.25"}': "0+10x60",
            'qtelemetry_estimation_duration_seconds_bucket{le="0.5"}': "0+20x60",
            'qtelemetry_estimation_duration_seconds_bucket{le="1"}': "0+60x60",
            'qtelemetry_estimation_duration_seconds_bucket{le="+Inf"}': "0+60x60",
            "qtelemetry_estimation_interval_seconds": "1x60"}, "50m", (Fires(value=0.925),)),
        Case("QTelemetryEstimationSlow", "every cycle under a quarter of the window", {
            'qtelemetry_estimation_duration_seconds_bucket{le="0.25"}': "0+60x60",
            'qtelemetry_estimation_duration_seconds_bucket{le="0.5"}': "0+60x60",
            'qtelemetry_estimation_duration_seconds_bucket{le="1"}': "0+60x60",
            'qtelemetry_estimation_duration_seconds_bucket{le="+Inf"}': "0+60x60",
            "qtelemetry_estimation_interval_seconds": "1x60"}, "50m"),
        Case("QTelemetryConnectionsNearLimit", "460 of 512 connections held for 15 minutes", {
            "qtelemetry_http_connections": "20x5 460x20", "qtelemetry_http_connections_limit": "512x25"}, "20m",
             (Fires(value=460 / 512),)),
        Case("QTelemetryConnectionsNearLimit", "a burst of 500 for 5 minutes", {
            "qtelemetry_http_connections": "20x10 500x5 20x10", "qtelemetry_http_connections_limit": "512x25"}, "20m"),
        Case("QTelemetryMemoryNearLimit", "RSS at 95% of a 1 GiB limit", {
            "process_resident_memory_bytes": "6e8x5 1.02e9x25", "qtelemetry_memory_limit_bytes": "1073741824x30"},
             "25m", (Fires(value=1.02e9 / 1073741824),)),
        Case("QTelemetryMemoryNearLimit", "RSS at 60% of the limit", {
            "process_resident_memory_bytes": "6.4e8x30", "qtelemetry_memory_limit_bytes": "1073741824x30"}, "25m"),
        Case("QTelemetryMemoryNearLimit", "no limit: no sample, no alert", {
            "process_resident_memory_bytes": "8e9x30"}, "25m"),
        Case("QTelemetryOtlpPushFailing", "the collector stops answering: every push times out", {
            'qtelemetry_otlp_pushes_total{result="success"}': "0+4x10 40x30",
            'qtelemetry_otlp_pushes_total{result="timeout"}': "0x10 0+4x30"}, "40m", (Fires(value=1.0),)),
        Case("QTelemetryOtlpPushFailing", "one push in ten fails", {
            'qtelemetry_otlp_pushes_total{result="success"}': "0+36x40",
            'qtelemetry_otlp_pushes_total{result="failed"}': "0+4x40"}, "40m"),
        Case("QTelemetryOtlpPushFailing", "no OTLP configured: no series, no alert", {
            "process_resident_memory_bytes": "8e8x40"}, "40m"),
        # --- entanglement ---------------------------------------------------------------------
        Case("QEntCHSHNoViolation", "S falls to 1.9", {sel("qent_chsh_value"): "2.7x5 1.9x10"}, "12m",
             (Fires(link(), 1.9),), protocol=BBM92),
        Case("QEntCHSHNoViolation", "S = 2.1 still violates", {sel("qent_chsh_value"): "2.1x15"}, "12m", protocol=BBM92),
        Case("QEntCHSHViolationWeak", "S = 2.1 with sigma 0.05", {
            sel("qent_chsh_value"): "2.1x30", sel("qent_chsh_value_stddev"): "0.05x30"}, "20m", (Fires(link(), 1.95),), protocol=BBM92),
        Case("QEntCHSHViolationWeak", "S = 2.68 with sigma 0.007", {
            sel("qent_chsh_value"): "2.68x30", sel("qent_chsh_value_stddev"): "0.007x30"}, "20m", protocol=BBM92),
        Case("QEntCHSHViolationWeak", "S <= 2 is QEntCHSHNoViolation's, not this one's", {
            sel("qent_chsh_value"): "1.9x30", sel("qent_chsh_value_stddev"): "0.05x30"}, "20m", protocol=BBM92),
        Case("QEntFidelityLow", "fidelity lower bound 85%", {
            sel("qent_fidelity_lower_bound_ratio"): "0.85x30"}, "20m", (Fires(link(), 0.85),), protocol=BBM92),
        Case("QEntFidelityLow", "fidelity lower bound 94.6%", {
            sel("qent_fidelity_lower_bound_ratio"): "0.946x30"}, "20m", protocol=BBM92),
        Case("QEntHeraldedFidelityLow", "even the upper bound is 70%", {
            sel("qent_heralded_fidelity_upper_bound_ratio"): "0.7x30"}, "20m", (Fires(link(), 0.7),), protocol=HERALDED),
        Case("QEntHeraldedFidelityLow", "upper bound 90% (a noisy low sample is not enough)", {
            sel("qent_heralded_fidelity_lower_bound_ratio"): "0.7x30",
            sel("qent_heralded_fidelity_upper_bound_ratio"): "0.9x30"}, "20m", protocol=HERALDED),
        Case("QEntHeraldingRateDrop", "success probability falls from 2% to 0.5%", {
            sel("qent_heralding_success_probability_ratio"): "0.02x60 0.005x40",
            sel("qent_heralding_success_probability_upper_bound_ratio"): "0.022x60 0.006x40"}, "90m",
            (Fires(link(), 0.006, keep=RECORDED),), protocol=HERALDED),
        Case("QEntHeraldingRateDrop", "upper bound 0.012 is still above half the baseline", {
            sel("qent_heralding_success_probability_ratio"): "0.02x60 0.011x40",
            sel("qent_heralding_success_probability_upper_bound_ratio"): "0.022x60 0.012x40"}, "90m", protocol=HERALDED),
        Case("QEntCoincidenceRateDrop", "coincidences fall from 289k/s to 100k/s", {
            sel("qent_coincidence_rate_per_second"): "289000x60 100000x40"}, "95m", (Fires(link(), 100000, keep=RECORDED),), protocol=BBM92),
        Case("QEntCoincidenceRateDrop", "a fall to 200k/s is within the band", {
            sel("qent_coincidence_rate_per_second"): "289000x60 200000x40"}, "95m", protocol=BBM92),
        # --- key-supply SLO burn rates ---------------------------------------------------------
        Case("QKDKeySupplyErrorBudgetBurnFast", "half of the requested key is not delivered for an hour", {
            sel("qkd_key_requested_bits_total"): "0+60000x100",
            sel("qkd_key_delivered_bits_total"): "0+60000x30 1830000+30000x69"}, "100m",
            (Fires(link(), 0.5, keep=RECORDED),)),
        Case("QKDKeySupplyErrorBudgetBurnFast", "0.5% undelivered is a slow burn, not a page", {
            sel("qkd_key_requested_bits_total"): "0+60000x180",
            sel("qkd_key_delivered_bits_total"): "0+59700x180"}, "180m"),
        Case("QKDKeySupplyErrorBudgetBurnSlow", "0.5% undelivered for 3 hours", {
            sel("qkd_key_requested_bits_total"): "0+60000x180",
            sel("qkd_key_delivered_bits_total"): "0+59700x180"}, "180m",
            (Fires(link(), 0.005, keep=RECORDED),)),
        Case("QKDKeySupplyErrorBudgetBurnSlow", "everything delivered", {
            sel("qkd_key_requested_bits_total"): "0+60000x180",
            sel("qkd_key_delivered_bits_total"): "0+60000x180"}, "180m"),
        *network_cases(c),
    ]


# -------------------------------------------------------------------------------------------
# Go template rendering (the subset the rules use)
# -------------------------------------------------------------------------------------------


def _g4(v: float) -> str:
    """Go's fmt %.4g for finite values, +Inf/-Inf/NaN as Go prints them."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return "%.4g" % v


def humanize(v: float) -> str:
    """Prometheus template function ``humanize`` (SI prefixes, 4 significant digits)."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return _g4(v) + prefix
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return _g4(v) + prefix


def humanize_percentage(v: float) -> str:
    return _g4(v * 100) + "%"


def humanize_duration(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d = int(v)
        seconds, minutes, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{_g4(v)}{prefix}s"


FUNCTIONS = {"humanize": humanize, "humanizePercentage": humanize_percentage, "humanizeDuration": humanize_duration,
             "urlquery": lambda v: urllib.parse.quote_plus(str(v))}
_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def render(template: str, labels: dict[str, str], value: float | None, where: str) -> str:
    """Expand ``{{ OPERAND | f | ... }}`` as Prometheus would: OPERAND is ``$value``,
    ``$labels.x``, a string literal without spaces, or ``or OPERAND...`` (the first non-empty)."""
    def operand(text: str) -> str | float:
        if text == "$value":
            if value is None:
                raise GenerationError(f"{where}: the firing case must give the alert's value")
            return value
        if m := re.fullmatch(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text):
            return labels.get(m.group(1), "")
        if m := re.fullmatch(r'"([^"\s]*)"', text):
            return m.group(1)
        if text.startswith("or "):
            return next((v for v in map(operand, text.split()[1:]) if v != ""), "")
        raise GenerationError(f"{where}: template action {{{{ {text} }}}} is not supported by the test generator")

    def one(match: re.Match) -> str:
        first, *functions = (part.strip() for part in match.group(1).split("|"))
        result = operand(first)
        for name in functions:
            if name not in FUNCTIONS:
                raise GenerationError(f"{where}: template function {name} is not supported")
            result = FUNCTIONS[name](result)
        return str(result)
    return _ACTION.sub(one, template)


# -------------------------------------------------------------------------------------------
# promtool test files
# -------------------------------------------------------------------------------------------


def _with_labels(series: str, labels: dict[str, str]) -> str:
    """``series`` with ``labels`` added, except those it sets itself."""
    name, _, rest = series.partition("{")
    present = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", rest))
    extra = ", ".join(f'{k}="{v}"' for k, v in labels.items() if k not in present)
    if not extra:
        return series
    if not rest or rest.startswith("}"):
        return f"{name}{{{extra}}}"
    return f"{name}{{{extra}, {rest}"


def _expected(alert: dict, fires: Fires, target: dict[str, str], c: MonitoringConfig, where: str) -> dict:
    keep = {{"cluster": c.cluster_label, "site": c.site_label}.get(k, k) for k in fires.keep}
    labels = {k: v for k, v in target.items() if k in keep}
    labels.update(fires.labels)
    labels.update(alert["labels"])
    full = {"alertname": alert["alert"], **labels}
    annotations = {k: render(v, full, fires.value, f"{where}: {k}") for k, v in alert["annotations"].items()}
    return {"exp_labels": dict(sorted(labels.items())), "exp_annotations": annotations}


def check_coverage(ruleset: RuleSet, all_cases: list[Case]) -> None:
    """Every generated alert has a firing and a silent case; every case names a known alert."""
    specified = {a.alert for a in ruleset.alerts} | {g.name for g in ruleset.gated if g.kind == "alert"}
    for case in all_cases:
        if case.alert not in specified:
            raise GenerationError(f"promtool case {case.name!r} names unknown alert {case.alert}")
    for alert in ruleset.alerts:
        mine = [c for c in all_cases if c.alert == alert.alert]
        if not any(c.firing for c in mine) or all(c.firing for c in mine):
            raise GenerationError(f"alert {alert.alert} needs at least one firing and one silent promtool case")


def _series(case: Case, alert: Alert, target: dict[str, str]) -> list[dict]:
    """A case's input series with the target labels, plus its link's qlink_info for a per-link alert."""
    series = dict(case.series)
    if alert.scope == "link":
        minutes = int(duration_seconds(case.at) // 60) + 1
        series[sel("qlink_info", protocol=case.protocol)] = f"1x{minutes}"
    return [{"series": _with_labels(s, target if case.target_labels else {}), "values": v} for s, v in series.items()]


def test_documents(ruleset: RuleSet, config: MonitoringConfig, rule_file: str,
                   all_cases: list[Case] | None = None) -> dict[str, dict]:
    """promtool test files by rule-group name."""
    all_cases = cases(config) if all_cases is None else all_cases
    check_coverage(ruleset, all_cases)
    target = {config.cluster_label: CLUSTER, config.site_label: SITE, **selector_labels(config.selector),
              "instance": INSTANCE}
    docs: dict[str, dict] = {}
    for group in ruleset.groups:
        alerts = [r for r in group.rules if isinstance(r, Alert)]
        tests = []
        for alert in alerts:
            rendered = rule_dict(alert, config)
            for case in (c for c in all_cases if c.alert == alert.alert):
                where = f"{alert.alert} case {case.name!r}"
                protocol = {"protocol": case.protocol} if alert.scope == "link" else {}
                tests.append({
                    "name": f"{alert.alert}: {case.name}",
                    "interval": "1m",
                    "input_series": _series(case, alert, target),
                    "alert_rule_test": [{
                        "alertname": alert.alert,
                        "eval_time": case.at,
                        "exp_alerts": [_expected(rendered, replace(f, labels={**f.labels, **protocol}), target,
                                                 config, where)
                                       for f in case.fires],
                    }],
                })
        if tests:
            docs[group.name] = {
                "rule_files": [rule_file],
                "evaluation_interval": config.rule_interval,
                "group_eval_order": [g.name for g in ruleset.groups],
                "tests": tests,
            }
    return docs
