"""The metric catalogue: the one place that names every exported metric.

The collector, the docs' metric table (docs/metrics.md), dashboards and alert rules all read this list, so a
renamed metric cannot silently break a panel or an alert. Prefixes: ``qlink_`` for health of
any quantum link, ``qkd_`` for prepare-and-measure QKD estimates and raw counts, ``qent_``
for entanglement links (entangled-photon BBM92 and heralded memory pairs),
``qnet_`` for the network view (key between sites over trusted-node relay), ``qtelemetry_`` for the
exporter itself, ``process_`` for its process (prometheus_client's standard collector). Units
follow Prometheus base units except where the domain habit differs (loss in dB, key material in
bits), which the help text says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qtelemetry.estimation.changedetect import estimate_key as tamper_key
from qtelemetry.estimation.tamper_statistics import DETECTORS as TAMPER_DETECTORS
from qtelemetry.estimation.tamper_statistics import QUANTITIES as TAMPER_QUANTITIES
from qtelemetry.estimation.reported import ETSI014, ETSI015, REQUEST_BUCKETS

#: Upper bounds (s) of the network analysis' duration histogram.
ANALYSIS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

MetricType = Literal["gauge", "counter", "info", "histogram"]


@dataclass(frozen=True)
class Metric:
    """One exported metric family.

    For link metrics, ``protocol`` names the link protocol(s) that provide it and ``source``
    where the value comes from: an estimate key or level (gauges), a count or amount
    (counters; its axes give the labels after ``link``). ``series`` maps extra label values to
    estimate keys for gauges split by a label (e.g. basis). A link histogram reads per-bucket
    counts from ``source`` (last axis: the ``buckets`` upper bounds, then +Inf) and the sum of
    observations from the amount ``sum_source``.

    ``own`` metrics describe the exporter process itself (memory, CPU, its HTTP endpoint, cycle and
    render durations): prometheus_client instruments in the exporter's own registry
    (``qtelemetry.selfmetrics``), read fresh at every scrape instead of from the Snapshot.
    """

    name: str
    type: MetricType
    unit: str
    help: str
    labels: tuple[str, ...] = ("link",)
    protocol: str | tuple[str, ...] | None = None
    source: str | None = None
    series: tuple[tuple[tuple[str, ...], str], ...] = ()
    buckets: tuple[float, ...] = ()
    sum_source: str | None = None
    own: bool = False

    @property
    def protocols(self) -> tuple[str, ...]:
        """Protocols providing this metric: several share one name when they estimate the same thing."""
        return (self.protocol,) if isinstance(self.protocol, str) else (self.protocol or ())

    @property
    def sample_name(self) -> str:
        """The name Prometheus stores (counters gain ``_total``, info metrics ``_info``)."""
        return self.name + {"counter": "_total", "info": "_info"}.get(self.type, "")


BB84 = "bb84-decoy"
BBM92 = "bbm92-spdc"
HERALDED = "heralded-entanglement"
SIFTED = "bb84-sifted"
#: Upper bounds (s) of the estimation-cycle and render histograms: a cycle of 10,000 links takes tens of ms.
CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (s) of the HTTP request histogram: probes answer in a millisecond, a 10,000-link scrape in ~0.5 s.
REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Protocols that distil secret key and share the QBER and key-rate metrics.
KEY_PROTOCOLS = (BB84, BBM92)
#: Protocols whose links run tamper detectors.
TAMPER = (BB84, BBM92)
#: Protocols whose QBER and secret key rate come from the estimator or, for ETSI 015, the device.
QBER_PROTOCOLS = (*KEY_PROTOCOLS, ETSI015)

METRICS: tuple[Metric, ...] = (
    # --- health of every link, whatever its protocol -------------------------------------
    Metric("qlink", "info", "",
           "Link metadata from the config: protocol, sites, driver, and who computes its figures "
           "(qtelemetry from counts, or the device itself).",
           ("link", "protocol", "site_a", "site_b", "driver", "estimated_by")),
    Metric("qlink_up", "gauge", "",
           "1 if the link's newest data was valid and arrived within its stall timeout, else 0; computed when scraped."),
    Metric("qlink_last_update_timestamp_seconds", "gauge", "seconds",
           "Unix time of the last valid batch from the link's driver."),
    Metric("qlink_data_age_seconds", "gauge", "seconds",
           "Age of the newest data in the link's published estimates, computed when scraped; grows while the "
           "driver or the estimator is stuck."),
    Metric("qlink_batches", "counter", "", "Valid acquisition windows received from the driver."),
    Metric("qlink_driver_errors", "counter", "",
           "Batches lost to driver failures or impossible data, by reason.", ("link", "reason")),
    Metric("qlink_estimates_skipped", "counter", "",
           "Estimation cycles whose window held too little data for an estimate (e.g. no coincidences), by reason.",
           ("link", "reason")),
    Metric("qlink_fault_active", "gauge", "",
           "1 while a simulated fault of this kind acts on the link (simulated links only; for demos, never alert on it).",
           ("link", "kind")),
    # --- decoy-state BB84: raw counts (counters, so rate() works over any window) ---------
    Metric("qkd_pulses", "counter", "", "Pulses sent by the transmitter, by intensity class.",
           ("link", "intensity"), (BB84, SIFTED), "pulses"),
    Metric("qkd_detections", "counter", "", "Receiver detections before sifting, by intensity class.",
           ("link", "intensity"), (BB84, SIFTED), "detections"),
    Metric("qkd_sifted_detections", "counter", "", "Detections with matching bases (sifted bits), by basis and intensity.",
           ("link", "basis", "intensity"), (BB84, SIFTED), "sifted"),
    Metric("qkd_errors", "counter", "", "Sifted bits that disagree between the two ends, by basis and intensity.",
           ("link", "basis", "intensity"), (BB84, SIFTED), "errors"),
    # --- decoy-state BB84: estimates over the sliding window ------------------------------
    Metric("qkd_channel_loss_db", "gauge", "dB",
           "End-to-end channel loss in dB (not a base unit: optical habit): decoy BB84 from the signal gain and the known "
           "detector efficiency; entangled photons from both arms' heralding (Klyshko) efficiencies. +Inf: no signal.",
           protocol=KEY_PROTOCOLS, source="loss_db"),
    Metric("qkd_gain_ratio", "gauge", "ratio", "Detection probability per pulse, by intensity class.",
           ("link", "intensity"), BB84,
           series=((("signal",), "gain_signal"), (("decoy",), "gain_decoy"), (("vacuum",), "gain_vacuum"))),
    Metric("qkd_qber_ratio", "gauge", "ratio",
           "Quantum bit error rate of the sifted key (signal pulses; entangled pairs) (0-1), by basis. ETSI 015 nodes "
           "report one QBER (phys_perf QBER), that of their key: basis Z.",
           ("link", "basis"), (*QBER_PROTOCOLS, SIFTED), series=((("Z",), "qber_z"), (("X",), "qber_x"))),
    Metric("qkd_qber_upper_bound_ratio", "gauge", "ratio",
           "One-sided Clopper-Pearson upper confidence bound on the QBER at the configured level, by basis.",
           ("link", "basis"), (*KEY_PROTOCOLS, SIFTED), series=((("Z",), "qber_z_upper"), (("X",), "qber_x_upper"))),
    # --- decoy-state BB84 and entangled photons: tamper detection (sequential CUSUMs on each window's counts) --
    Metric("qkd_tamper_statistic", "gauge", "",
           "CUSUM statistic of a tamper detector over its alarm threshold (1 = alarm level; the largest of a bank), by "
           "detector: qber_z, qber_x (QBER rise: a bank of shifts), decoy_gain (decoy/signal gain ratio either way: "
           "PNS, blinding), vacuum_gain (dark counts either way: blinding, detector control), chsh (CHSH value falls; "
           "entangled photons). Absent during the warm-up, and for a detector whose warm-up could not resolve its shift.",
           ("link", "detector"), TAMPER, series=tuple(((d,), tamper_key("statistic", d)) for d in TAMPER_DETECTORS)),
    Metric("qkd_tamper_alarm", "gauge", "",
           "1 once the detector's statistic reached its threshold (latched until re-armed with POST /-/tamper), "
           "else 0, by detector. Absent when the statistic is.",
           ("link", "detector"), TAMPER, series=tuple(((d,), tamper_key("alarm", d)) for d in TAMPER_DETECTORS)),
    Metric("qkd_tamper_warmup", "gauge", "",
           "1 while the tamper detectors learn the link's baseline (no statistic, no alarm yet), 0 once they run.",
           protocol=TAMPER, source=tamper_key("warmup")),
    Metric("qkd_tamper_mean_time_between_false_alarms_seconds", "gauge", "seconds",
           "Mean time between false tamper alarms the link's thresholds are set for, all its detectors together: its "
           "share of exporter.tamper.fleet_mean_time_between_false_alarms_seconds (the links' 1/share add up to "
           "1/fleet), or its own setting.",
           protocol=TAMPER, source=tamper_key("mean_time")),
    Metric("qkd_tamper_baseline_ratio", "gauge", "",
           "A quantity over the sliding window divided by its tamper baseline (1 = as learned), by quantity: qber_z, "
           "qber_x, signal_gain (falls with loss), decoy_gain, vacuum_gain, chsh (entangled photons).",
           ("link", "quantity"), TAMPER, series=tuple(((q,), tamper_key("baseline_ratio", q)) for q in TAMPER_QUANTITIES)),
    Metric("qkd_sifted_key_rate_bits_per_second", "gauge", "bits/s",
           "Sifted key rate of signal pulses in bits per second (key material counts in bits).",
           protocol=(BB84, SIFTED), source="sifted_key_rate_bps"),
    Metric("qkd_corrected_key_bits", "counter", "bits",
           "Key released by error correction (SeQUeNCe's Cascade), in bits: reconciled, before privacy amplification.",
           protocol=SIFTED, source="corrected_key_bits"),
    Metric("qkd_corrected_key_rate_bits_per_second", "gauge", "bits/s",
           "Key released by error correction per second over the sliding window, in bits per second: reconciled key, "
           "not secret key (no privacy amplification).", protocol=SIFTED, source="corrected_key_rate_bps"),
    Metric("qkd_secret_key_rate_bits_per_second", "gauge", "bits/s",
           "Secret key rate in bits per second with finite-size statistics: decoy BB84 (Lim et al. 2014), "
           "BBM92 (Ma, Fung, Lo 2007 with a bounded phase error); as ETSI 015 nodes report it (qkdl_performance skr).",
           protocol=QBER_PROTOCOLS, source="secret_key_rate_bps"),
    Metric("qkd_asymptotic_secret_key_rate_bits_per_second", "gauge", "bits/s",
           "Asymptotic secret key rate in bits per second: decoy BB84 vacuum+weak bound with GLLP "
           "(Ma et al. 2005), BBM92 (Ma, Fung, Lo 2007).",
           protocol=KEY_PROTOCOLS, source="asymptotic_key_rate_bps"),
    Metric("qkd_repeaterless_bound_bits_per_second", "gauge", "bits/s",
           "PLOB bound -log2(1-eta) per pulse for the measured channel transmittance, times the pulse rate, in bits per second "
           "(Pirandola et al. 2017): no repeaterless link can beat it.", protocol=KEY_PROTOCOLS, source="plob_bound_bps"),
    Metric("qkd_repeaterless_bound_ratio", "gauge", "ratio",
           "Finite-key secret key rate as a fraction of the PLOB bound (0-1).", protocol=KEY_PROTOCOLS,
           source="plob_ratio"),
    Metric("qkd_channel_loss_budget_db", "gauge", "dB",
           "Channel loss the link is engineered for, in dB: configured, or the modelled loss + 3 dB."),
    Metric("qkd_expected_secret_key_rate_bits_per_second", "gauge", "bits/s",
           "Secret key rate the link's plan (channel model) promises, in bits per second."),
    # --- key store between the link and its applications (amounts only, never key material) -
    Metric("qkd_key_buffer_bits", "gauge", "bits", "Secret key waiting in the link's key store, in bits.",
           protocol=(*KEY_PROTOCOLS, ETSI014), source="key_stored_bits"),
    Metric("qkd_key_buffer_capacity_bits", "gauge", "bits", "Size of the link's key store, in bits.",
           protocol=(*KEY_PROTOCOLS, ETSI014), source="key_capacity_bits"),
    Metric("qkd_key_generated_bits", "counter", "bits", "Secret key added to the key store, in bits.",
           protocol=KEY_PROTOCOLS, source="key_generated_bits"),
    Metric("qkd_key_requested_bits", "counter", "bits", "Key requested by applications, in bits.",
           protocol=KEY_PROTOCOLS, source="key_requested_bits"),
    Metric("qkd_key_delivered_bits", "counter", "bits",
           "Key delivered to applications, in bits; requested minus delivered is unmet demand.",
           protocol=KEY_PROTOCOLS, source="key_delivered_bits"),
    # --- ETSI GS QKD 014 key managers (KME): key store, latency, key probes -----------------
    Metric("qkd_key_buffer_trend_bits_per_second", "gauge", "bits/s",
           "Net change of the key buffer over the sliding window in bits per second, from successive ETSI 014 status "
           "polls: positive while supply outpaces consumption.", protocol=ETSI014, source="key_buffer_trend_bps"),
    Metric("qkd_key_buffer_increase_bits", "counter", "bits",
           "Rises of the key buffer level between successive ETSI 014 status polls, in bits: a lower bound on key supplied.",
           protocol=ETSI014, source="buffer_increase_bits"),
    Metric("qkd_key_buffer_decrease_bits", "counter", "bits",
           "Falls of the key buffer level between successive ETSI 014 status polls, in bits: a lower bound on key consumed.",
           protocol=ETSI014, source="buffer_decrease_bits"),
    Metric("qkd_kme_request_duration_seconds", "histogram", "seconds",
           "Duration of ETSI 014 requests the KME answered (any HTTP status), by endpoint (status, enc_keys for key "
           "probes); failures to connect or answer count in qlink_driver_errors_total.", ("link", "endpoint"), ETSI014,
           "request_duration", buckets=REQUEST_BUCKETS, sum_source="request_seconds"),
    Metric("qkd_kme_key_probes", "counter", "",
           "One-key enc_keys probes by result: delivered, refused (the KME answered with an error: an application "
           "would have been refused a key), failed (no usable answer).", ("link", "result"), ETSI014, "probes"),
    # --- ETSI GS QKD 015 SD-QKD nodes: what the node reports for the link -------------------
    Metric("qkd_link_status", "gauge", "",
           "Status the SD-QKD node reports for the key association link (ETSI 015 qkdl_status): 1 for the current one "
           "of ACTIVE (generating key), PASSIVE (not generating, keys left), PENDING (awaiting activation), OFF.",
           ("link", "status"), ETSI015, "link_status"),
    Metric("qkd_link_active", "gauge", "",
           "1 while the SD-QKD node reports the key association link ACTIVE (generating key), else 0.",
           protocol=ETSI015, source="link_active"),
    Metric("qkd_interface_status", "gauge", "",
           "Status the SD-QKD node reports for the link's local QKD interface (ETSI 015 qkdi_status): 1 for the "
           "current one of UP, DOWN, FAILURE.", ("link", "status"), ETSI015, "interface_status"),
    Metric("qkd_effective_secret_key_rate_bits_per_second", "gauge", "bits/s",
           "Secret key rate left after the node's internal consumption, in bits per second (ETSI 015 eskr).",
           protocol=ETSI015, source="eskr_bps"),
    Metric("qkd_expected_key_consumption_bits_per_second", "gauge", "bits/s",
           "Sum of the bandwidth of the applications on the link, in bits per second (ETSI 015 expected_consumption).",
           protocol=ETSI015, source="expected_consumption_bps"),
    Metric("qkd_signal_to_noise", "gauge", "",
           "Signal-to-noise ratio as the SD-QKD node reports it (ETSI 015 phys_perf SNR; the model states no unit).",
           protocol=ETSI015, source="snr"),
    Metric("qkd_node_unknown_identities", "counter", "",
           "Identity values outside the etsi-qkd-node-types model in the node's reports, by leaf (qkdl_status, "
           "qkdi_status, perf_type): counted, never exported as labels.", ("link", "leaf"), ETSI015, "unknown_identities"),
    # --- entangled-photon links (SPDC source, BBM92 + CHSH): raw counts ---------------------
    Metric("qent_pump_pulses", "counter", "", "Pump pulses (coincidence gates) of the entangled-photon source.",
           protocol=BBM92, source="pulses"),
    Metric("qent_coincidences", "counter", "",
           "Key-round coincidences between the two receivers, by each side's measurement basis.",
           ("link", "basis_a", "basis_b"), BBM92, "coincidences"),
    Metric("qent_bit_errors", "counter", "", "Matching-basis coincidences whose bits disagree, by basis.",
           ("link", "basis"), BBM92, "errors"),
    Metric("qent_chsh_coincidences", "counter", "",
           "CHSH test-round coincidences by analyser setting (a0b0..a1b1) and outcome (same, different).",
           ("link", "setting", "outcome"), BBM92, "chsh"),
    Metric("qent_singles", "counter", "", "Clicks at each receiver (side a, b), with or without a partner.",
           ("link", "side"), BBM92, "singles"),
    Metric("qent_accidentals", "counter", "",
           "Coincidences in a window delayed by whole pump periods: the accidental background.",
           protocol=BBM92, source="accidentals"),
    # --- entangled-photon links: estimates over the sliding window --------------------------
    Metric("qent_heralding_efficiency_ratio", "gauge", "ratio",
           "Klyshko heralding efficiency of each arm (fiber x detector, 0-1): true coincidences per click at the other side.",
           ("link", "side"), BBM92, series=((("a",), "heralding_efficiency_a"), (("b",), "heralding_efficiency_b"))),
    Metric("qent_coincidence_rate_per_second", "gauge", "1/s",
           "Coincidences per second, key and CHSH rounds together.", protocol=BBM92, source="coincidence_rate"),
    Metric("qent_accidental_rate_per_second", "gauge", "1/s",
           "Delayed-window (accidental) coincidences per second.", protocol=BBM92, source="accidental_rate"),
    Metric("qent_coincidence_to_accidental", "gauge", "",
           "Coincidence-to-accidental ratio (C - A)/A, dimensionless and not bounded by 1 (about 1/mean pair number).",
           protocol=BBM92, source="car"),
    Metric("qent_visibility_ratio", "gauge", "ratio", "Two-photon visibility 1 - 2 QBER (0-1), by basis.",
           ("link", "basis"), BBM92, series=((("Z",), "visibility_z"), (("X",), "visibility_x"))),
    Metric("qent_chsh_value", "gauge", "",
           "Absolute CHSH value S from the test rounds: above 2 violates local realism, 2.83 for a perfect Bell pair.",
           protocol=BBM92, source="chsh_s"),
    Metric("qent_chsh_value_stddev", "gauge", "", "Standard deviation of the CHSH value from the four correlators' counts.",
           protocol=BBM92, source="chsh_s_stddev"),
    Metric("qent_fidelity_lower_bound_ratio", "gauge", "ratio",
           "Lower confidence bound on the Bell-state fidelity of detected pairs, 1 - e_Z - e_X with Clopper-Pearson bounds.",
           protocol=BBM92, source="fidelity_lower_bound"),
    Metric("qent_heralding_attempts", "counter", "", "Entanglement generation attempts.",
           protocol=HERALDED, source="attempts"),
    Metric("qent_heralding_successes", "counter", "", "Heralded entangled pairs (heralds, true and false).",
           protocol=HERALDED, source="successes"),
    Metric("qent_heralded_pair_measurements", "counter", "",
           "Heralded pairs measured to estimate fidelity, by Pauli basis and outcome (correct, error).",
           ("link", "basis", "outcome"), HERALDED, "tomography"),
    # --- heralded entanglement: estimates over the sliding window ----------------------------
    Metric("qent_heralding_success_probability_ratio", "gauge", "ratio", "Heralds per attempt (0-1).",
           protocol=HERALDED, source="success_probability"),
    Metric("qent_heralding_success_probability_lower_bound_ratio", "gauge", "ratio",
           "Lower end of the two-sided Clopper-Pearson interval on heralds per attempt at the configured level.",
           protocol=HERALDED, source="success_probability_lower"),
    Metric("qent_heralding_success_probability_upper_bound_ratio", "gauge", "ratio",
           "Upper end of the two-sided Clopper-Pearson interval on heralds per attempt at the configured level.",
           protocol=HERALDED, source="success_probability_upper"),
    Metric("qent_heralded_pairs_per_second", "gauge", "1/s", "Heralded entangled pairs per second.",
           protocol=HERALDED, source="pair_rate"),
    Metric("qent_heralded_fidelity_ratio", "gauge", "ratio",
           "Bell-state fidelity of stored pairs when used, 1 - (e_X + e_Y + e_Z)/2 from sampled measurements (0-1).",
           protocol=HERALDED, source="fidelity"),
    Metric("qent_heralded_fidelity_lower_bound_ratio", "gauge", "ratio",
           "Lower end of the fidelity confidence interval at the configured level (Clopper-Pearson per basis).",
           protocol=HERALDED, source="fidelity_lower"),
    Metric("qent_heralded_fidelity_upper_bound_ratio", "gauge", "ratio",
           "Upper end of the fidelity confidence interval at the configured level (Clopper-Pearson per basis).",
           protocol=HERALDED, source="fidelity_upper"),
    # --- the network view: key between sites over trusted-node relay -------------------------
    Metric("qnet_demand_bits_per_second", "gauge", "bits/s",
           "Key the applications between two sites need (network.demands), in bits per second.",
           ("demand", "src", "dst")),
    Metric("qnet_demand_priority", "gauge", "",
           "The demand's priority (network.demands[].priority, ETSI GS QKD 015 app_priority; 0 when not set): larger "
           "is more important. The simulated key relay serves higher priorities first; QNetDemandUnmet pages only at "
           "or above the monitoring config's page_demand_priority.", ("demand",)),
    Metric("qnet_demand_capacity_bits_per_second", "gauge", "bits/s",
           "Key the network can relay for the demand over trusted nodes, in bits per second: routing single_path is the "
           "widest route, multipath the max-flow (= min cut) of the links' usable key rates.", ("demand", "routing")),
    Metric("qnet_demand_capacity_after_worst_failure_bits_per_second", "gauge", "bits/s",
           "Multipath capacity left after the worst single failure of a link or a trusted site other than the "
           "demand's ends (N-1), in bits per second; failure_kind (link, site, none) and failure name it.",
           ("demand", "failure_kind", "failure")),
    Metric("qnet_demand_disjoint_paths", "gauge", "",
           "Node-disjoint paths between the demand's sites over links producing key (Menger); 1 is a single point "
           "of failure, 0 disconnected.", ("demand",)),
    Metric("qnet_demand_stored_key_seconds", "gauge", "seconds",
           "Seconds the key already in the links' stores could serve the demand if every link stopped now: max-flow "
           "of the stored key over the demand. Absent when no link reports its store.", ("demand",)),
    Metric("qnet_demand_repeaterless_bound_bits_per_second", "gauge", "bits/s",
           "Minimum cut of the links' repeaterless (PLOB) bounds, in bits per second: no relay over these links can beat "
           "it (Pirandola, Commun. Phys. 2, 51 (2019)). Absent when every cut crosses a link without a bound.",
           ("demand",)),
    Metric("qnet_demand_route_hops", "gauge", "", "Hops of the demand's widest route; absent while it has none.",
           ("demand",)),
    Metric("qnet_demand_requested_bits", "counter", "bits",
           "Key the simulated key relay was asked for on behalf of the demand, in bits (simulated links only: real "
           "devices relay key themselves).", ("demand",)),
    Metric("qnet_demand_delivered_bits", "counter", "bits",
           "Key the simulated key relay delivered end to end for the demand, in bits; every hop of its routes gave "
           "the same bits from its store.", ("demand",)),
    Metric("qnet_demand_reroutes", "counter", "",
           "Times the simulated key relay moved the demand to a new route after a hop was down for "
           "network.failover_seconds.", ("demand",)),
    Metric("qnet_demand_route_down_seconds", "counter", "seconds",
           "Time the simulated key relay's route for the demand had a hop making no key (or the demand had no route).",
           ("demand",)),
    Metric("qnet_demand_bridged_bits", "counter", "bits",
           "Key the simulated key relay delivered for the demand over a hop making no key: spent from that hop's store "
           "to bridge the gap, in bits.", ("demand",)),
    Metric("qnet_demand_relay_route_hops", "gauge", "",
           "Hops of the route the simulated key relay uses for the demand now (multipath: its longest path); absent "
           "while it has none.", ("demand",)),
    Metric("qnet_link_min_cut", "gauge", "",
           "1 for each link of the demand's minimum cut: the links whose key rate limits its multipath capacity "
           "(only those links are exported).", ("demand", "link")),
    Metric("qnet_link_usable_key_rate_bits_per_second", "gauge", "bits/s",
           "Key rate the network analysis counts on for the link, in bits per second: its effective (ETSI 015 eskr) "
           "or secret key rate, 0 while it is down.", ("link",)),
    Metric("qnet_link_failure_impact_demands", "gauge", "",
           "Demands met now that a failure of this link alone would leave below their bits_per_second.", ("link",)),
    Metric("qnet_site_failure_impact_demands", "gauge", "",
           "Demands met now that a failure of this trusted site alone would leave below their bits_per_second "
           "(0 for an end point, which relays nothing).", ("site",)),
    Metric("qnet_site_latitude_degrees", "gauge", "degrees", "Latitude of the site from the config, for the map.",
           ("site",)),
    Metric("qnet_site_longitude_degrees", "gauge", "degrees", "Longitude of the site from the config, for the map.",
           ("site",)),
    Metric("qnet_analysis_duration_seconds", "histogram", "seconds", "Wall time of whole network analyses.", (),
           buckets=ANALYSIS_BUCKETS),
    Metric("qnet_analysis_age_seconds", "gauge", "seconds",
           "Age of the data the latest network analysis used, computed when scraped; absent before the first.", ()),
    Metric("qnet_analyser_up", "gauge", "",
           "1 if the network analyser's last read of the Prometheus API gave usable data, else 0 "
           "(qtelemetry network only).", ()),
    Metric("qnet_analyser_errors", "counter", "",
           "Failed reads of the Prometheus API by the network analyser, by reason (qtelemetry network only).",
           ("reason",)),
    # --- the exporter itself ----------------------------------------------------------------
    Metric("qtelemetry_build", "info", "", "qtelemetry version.", ("version",)),
    Metric("qtelemetry_estimation_duration_seconds", "histogram", "seconds",
           "Wall time of whole estimation cycles over all links: sampling, drain, validation, estimation, publication.",
           (), buckets=CYCLE_BUCKETS, own=True),
    Metric("qtelemetry_estimation_lag_seconds", "gauge", "seconds",
           "Time since the last completed estimation cycle, computed when scraped; above a few windows the "
           "exporter is falling behind.", ()),
    Metric("qtelemetry_estimation_interval_seconds", "gauge", "seconds",
           "Configured acquisition window: the period of the estimation cycle.", ()),
    Metric("qtelemetry_estimation_cycles_skipped", "counter", "",
           "Estimation cycles skipped because the previous cycle overran its window (overload).", ()),
    Metric("qtelemetry_links", "gauge", "", "Links configured in this exporter, by protocol.", ("protocol",)),
    Metric("qtelemetry_config_last_reload_successful", "gauge", "",
           "Whether the last config reload (SIGHUP or POST /-/reload) was applied: 1, or 0 if it was rejected "
           "and the previous config keeps running.", ()),
    Metric("qtelemetry_config_last_reload_success_timestamp_seconds", "gauge", "seconds",
           "Unix time the running config was loaded (at start or by the last successful reload).", ()),
    Metric("qtelemetry_exposition_render_duration_seconds", "histogram", "seconds",
           "Wall time of rendering the scrape-independent part of the exposition for one snapshot and format "
           "(and deflating it for gzip scrapes); the scrape-time families are rendered per scrape on top.",
           (), buckets=CYCLE_BUCKETS, own=True),
    # --- the exporter process and its HTTP endpoint (prometheus_client, fresh at every scrape) ------
    Metric("process_resident_memory_bytes", "gauge", "bytes", "Resident memory size in bytes.", (), own=True),
    Metric("process_virtual_memory_bytes", "gauge", "bytes", "Virtual memory size in bytes.", (), own=True),
    Metric("process_cpu_seconds", "counter", "seconds", "Total user and system CPU time spent in seconds.", (),
           own=True),
    Metric("process_open_fds", "gauge", "", "Number of open file descriptors.", (), own=True),
    Metric("process_max_fds", "gauge", "", "Maximum number of open file descriptors.", (), own=True),
    Metric("process_start_time_seconds", "gauge", "seconds", "Start time of the process since unix epoch in seconds.",
           (), own=True),
    Metric("qtelemetry_memory_limit_bytes", "gauge", "bytes",
           "Memory limit of the exporter's cgroup (container limit, systemd MemoryMax=), the lowest on its path; "
           "no sample when unlimited.", (), own=True),
    Metric("qtelemetry_http_requests", "counter", "",
           "HTTP requests answered, by handler (the path, or other) and status code.", ("handler", "code"), own=True),
    Metric("qtelemetry_http_request_duration_seconds", "histogram", "seconds",
           "Wall time from a request's head to its answer written, by handler (/metrics includes rendering).",
           ("handler",), buckets=REQUEST_SECONDS_BUCKETS, own=True),
    Metric("qtelemetry_http_rejections", "counter", "",
           "Clients the endpoint refused or disconnected, by reason: unauthorized (401), auth_queue_full (429), "
           "control_plane_disabled (403), body_too_large (413), body_timeout (408), connection_limit (closed to make "
           "room, or refused, at the connection cap), idle_timeout, tls_handshake, client_certificate (no allowed "
           "SAN), slow_reader (answer not taken within the write timeout).", ("reason",), own=True),
    Metric("qtelemetry_http_connections", "gauge", "", "Client connections open now (TLS handshakes included).", (),
           own=True),
    Metric("qtelemetry_http_connections_limit", "gauge", "",
           "Connections the endpoint holds at most; at the cap a new one closes the longest-waiting.", (), own=True),
    Metric("qtelemetry_otlp_pushes", "counter", "",
           "Pushes to the OTLP endpoint (exporter.otlp), by result: success; failed (refused or unreachable after "
           "the SDK's retries); timeout (not answered in full within exporter.otlp.timeout_seconds); stalled (not "
           "sent: the previous push still waits for its answer). No sample without exporter.otlp.", ("result",),
           own=True),
)
