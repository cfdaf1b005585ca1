"""The metric catalogue: the one place that names every exported metric.

The collector, the README's metric table, dashboards and alert rules all read this list, so a
renamed metric cannot silently break a panel or an alert. Prefixes: ``qlink_`` for health of
any quantum link, ``qkd_`` for prepare-and-measure QKD estimates and raw counts,
``qtelemetry_`` for the exporter itself. Units follow Prometheus base units except where the
domain habit differs (loss in dB, key material in bits), which the help text says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "info", "summary"]


@dataclass(frozen=True)
class Metric:
    """One exported metric family.

    For link metrics, ``protocol`` names the link protocol that provides it and ``source``
    where the value comes from: an estimate key (gauges) or a count name (counters). ``series``
    maps extra label values to estimate keys for gauges split by a label (e.g. basis).
    """

    name: str
    type: MetricType
    unit: str
    help: str
    labels: tuple[str, ...] = ("link",)
    protocol: str | None = None
    source: str | None = None
    series: tuple[tuple[tuple[str, ...], str], ...] = ()

    @property
    def sample_name(self) -> str:
        """The name Prometheus stores (counters gain ``_total``, info metrics ``_info``)."""
        return self.name + {"counter": "_total", "info": "_info"}.get(self.type, "")


BB84 = "bb84-decoy"

METRICS: tuple[Metric, ...] = (
    # --- health of every link, whatever its protocol -------------------------------------
    Metric("qlink", "info", "", "Link metadata from the config: protocol, sites and driver.",
           ("link", "protocol", "site_a", "site_b", "driver")),
    Metric("qlink_up", "gauge", "", "1 if the link's driver delivered a valid batch recently, else 0."),
    Metric("qlink_last_update_timestamp_seconds", "gauge", "seconds",
           "Unix time of the last valid batch from the link's driver."),
    Metric("qlink_batches", "counter", "", "Valid acquisition windows received from the driver."),
    Metric("qlink_driver_errors", "counter", "",
           "Batches lost to driver failures or impossible data, by reason.", ("link", "reason")),
    # --- decoy-state BB84: raw counts (counters, so rate() works over any window) ---------
    Metric("qkd_pulses", "counter", "", "Pulses sent by the transmitter, by intensity class.",
           ("link", "intensity"), BB84, "pulses"),
    Metric("qkd_detections", "counter", "", "Receiver detections before sifting, by intensity class.",
           ("link", "intensity"), BB84, "detections"),
    Metric("qkd_sifted_detections", "counter", "", "Detections with matching bases (sifted bits), by basis and intensity.",
           ("link", "basis", "intensity"), BB84, "sifted"),
    Metric("qkd_errors", "counter", "", "Sifted bits that disagree between the two ends, by basis and intensity.",
           ("link", "basis", "intensity"), BB84, "errors"),
    # --- decoy-state BB84: estimates over the sliding window ------------------------------
    Metric("qkd_channel_loss_db", "gauge", "dB",
           "Channel loss in dB (not a base unit: optical habit), inferred from the signal gain and the known detector efficiency.",
           protocol=BB84, source="loss_db"),
    Metric("qkd_gain_ratio", "gauge", "ratio", "Detection probability per pulse, by intensity class.",
           ("link", "intensity"), BB84,
           series=((("signal",), "gain_signal"), (("decoy",), "gain_decoy"), (("vacuum",), "gain_vacuum"))),
    Metric("qkd_qber_ratio", "gauge", "ratio", "Quantum bit error rate of signal pulses (0-1), by basis.",
           ("link", "basis"), BB84, series=((("Z",), "qber_z"), (("X",), "qber_x"))),
    Metric("qkd_qber_upper_bound_ratio", "gauge", "ratio",
           "One-sided Clopper-Pearson upper confidence bound on the QBER at the configured level, by basis.",
           ("link", "basis"), BB84, series=((("Z",), "qber_z_upper"), (("X",), "qber_x_upper"))),
    Metric("qkd_sifted_key_rate_bits_per_second", "gauge", "bits/s",
           "Sifted key rate of signal pulses in bits per second (key material counts in bits).",
           protocol=BB84, source="sifted_key_rate_bps"),
    Metric("qkd_secret_key_rate_bits_per_second", "gauge", "bits/s",
           "Asymptotic secret key rate in bits per second, vacuum+weak decoy bound with GLLP (Ma et al. 2005).",
           protocol=BB84, source="secret_key_rate_bps"),
    # --- the exporter itself ----------------------------------------------------------------
    Metric("qtelemetry_build", "info", "", "qtelemetry version.", ("version",)),
    Metric("qtelemetry_estimation_duration_seconds", "summary", "seconds",
           "Wall time of one estimation cycle over all links.", ()),
    Metric("qtelemetry_links", "gauge", "", "Links configured in this exporter, by protocol.", ("protocol",)),
)

BY_NAME = {metric.name: metric for metric in METRICS}
