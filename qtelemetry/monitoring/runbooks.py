"""Runbooks (``alerts/runbooks.md``): one section per generated alert, anchored by its lower-cased name.

Each alert's ``runbook_url`` is ``config.runbook_url_pattern % alert.lower()``; the section
below that anchor says what the alert means, what breaks, how to confirm it with PromQL (the
queries are checked against the catalogue like every other query), what to do and when to
escalate. The rule, its thresholds and its ``for:`` are printed from the generated rule, so
the runbook cannot drift from the alert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qtelemetry.monitoring import causes
from qtelemetry.monitoring.config import SLO, MonitoringConfig, duration_seconds
from qtelemetry.monitoring.network_alerts import network_runbooks
from qtelemetry.monitoring.promql import PROMETHEUS_SERIES, TARGET_SERIES, GenerationError, inject_selector, sample_names
from qtelemetry.monitoring.rules import (
    PENDING_METRICS,
    RuleSet,
    baseline_names,
    check_names,
    expand,
    num,
    pct,
    recording_names,
    slo_budget_record,
    slo_record,
)

SPLIT = ("Check the host's CPU (steal, other workloads, the exporter's CPU limit).",
         "Split the links over more exporters: `qtelemetry run --shard I/N` (docs/operations.md), or raise "
         "exporter.window_seconds.")
FALLBACK = ("Protect traffic first: switch the consumers of this link's key to the fallback key exchange "
            "(classical or post-quantum, e.g. an ML-KEM hybrid) per your crypto policy, so that no session "
            "waits for QKD key.")


@dataclass(frozen=True)
class Runbook:
    meaning: str
    impact: str
    confirm: tuple[str, ...]  # PromQL, without the selector; `<link>` stands for the link's name
    mitigation: tuple[str, ...]
    escalate: str


def runbooks(c: MonitoringConfig) -> dict[str, Runbook]:
    t, b = c.thresholds, c.baseline
    L = '{link="<link>"}'
    skr_smooth, skr_base = baseline_names("qkd_secret_key_rate_bits_per_second", c)
    loss_smooth, loss_base = baseline_names("qkd_channel_loss_db", c)
    gain_smooth, gain_base = baseline_names("qkd_gain_ratio", c)
    coinc_smooth, coinc_base = baseline_names("qent_coincidence_rate_per_second", c)
    _, herald_base = baseline_names("qent_heralding_success_probability_ratio", c)
    qber = Runbook(
        meaning=("The quantum bit error rate of one basis of a key-distilling link (decoy BB84 or BBM92) may be "
                 "above the threshold: its upper confidence bound is. QBER is the share of sifted bits on which "
                 "the two ends disagree. Error correction and privacy amplification pay for every error, and "
                 f"above {pct(t.qber_no_key)} (Shor-Preskill) no secret key can be distilled at all."),
        impact=("The secret key rate falls steeply with QBER, and the key store starts to drain. An unexplained "
                "rise can also be an intercept-resend attack: the protocol stays secure (it distils less or no "
                "key), but the cause must be known."),
        confirm=(f"qkd_qber_ratio{L}", f"qkd_qber_upper_bound_ratio{L}",
                 f"qkd_secret_key_rate_bits_per_second{L}", 'qkd_gain_ratio{link="<link>", intensity="vacuum"}'),
        mitigation=(
            "Open the link dashboard: is only one basis affected (polarisation or phase drift in that basis) or "
            "both (noise: dark counts, stray light, detector temperature)?",
            "Drift in one basis: run the device's alignment / polarisation-compensation routine (realign).",
            "Both bases with rising vacuum gain: check detector cooling and for light leaking into the fibre "
            "(classical channels multiplexed on the same fibre, open patch panels).",
            "No physical explanation and a sudden step: treat as a possible attack; keep the link distilling "
            "(the protocol discards compromised key) but inform security - unless QKDTamperSuspected fires for the "
            "link (security has that page already) or QKDNoSignal does (a cut reads as ~50% QBER from dark "
            "counts alone; Alertmanager mutes this alert then, but a dashboard still shows the QBER).",
            FALLBACK + " (only if the key rate reaches 0)."),
        escalate=("Page the vendor if realignment does not bring the QBER back within an hour, or immediately "
                  f"if it is above {pct(t.qber_no_key)}; inform security if no physical cause is found."),
    )
    books = {
        "QKDQberHigh": qber,
        "QKDQberCritical": qber,
        "QKDSecretKeyRateDrop": Runbook(
            meaning=(f"The secret key rate ({b.smoothing} average) is below {pct(t.key_rate_drop_ratio)} of the "
                     f"link's own baseline, the median of the last {b.window}. The baseline is the link itself, so "
                     "the alert works for a 10 km metro link and a 100 km long-haul link alike."),
            impact=("Less key reaches the key store; if consumption stays, the store drains (see "
                    "QKDKeyBufferExhaustionForecast) and the key-supply SLO burns."),
            confirm=(f"{skr_smooth}{L} / {skr_base}{L}", f"qkd_qber_upper_bound_ratio{L}",
                     f"qkd_channel_loss_db{L}", f"qkd_gain_ratio{L}"),
            mitigation=(
                "Find the driver of the drop on the link dashboard: QBER up (alignment, noise), loss up (fibre), "
                "detections down with loss unchanged (detector, source power).",
                "Fix the cause (realign, clean/replace connectors, reroute to a spare fibre).",
                "If the drop is planned (maintenance, a deliberate power change), silence the alert: the baseline "
                f"adapts once the new level lasted half of {b.window}."),
            escalate="Vendor ticket if the cause is inside the QKD devices; page if the key store is forecast empty.",
        ),
        "QKDSecretKeyRateZero": Runbook(
            meaning=("The link is up and delivering counts, but it distils no secret key at all: the rate is 0 or "
                     "cannot be estimated (NaN, e.g. no decoy detections), while its baseline was positive."),
            impact=("No new key. Applications live on the key store until it is empty, then sessions fail or run "
                    "on the fallback key exchange."),
            confirm=(f"qkd_secret_key_rate_bits_per_second{L}", f"qkd_qber_upper_bound_ratio{L}",
                     f"qkd_channel_loss_db{L}", f"qkd_key_buffer_bits{L} / qkd_key_buffer_capacity_bits{L}"),
            mitigation=(
                FALLBACK,
                f"QBER above {pct(t.qber_no_key)}: follow QKDQberCritical. Loss infinite: follow QKDNoSignal.",
                "Otherwise check the decoy detections: too few to bound the single-photon yield (source intensity "
                "settings, decoy modulator)."),
            escalate="Page the vendor if the link does not produce key within 30 minutes.",
        ),
        "QKDSecretKeyRateBelowPlan": Runbook(
            meaning=(f"The secret key rate ({b.smoothing} average) has stayed below {pct(t.key_rate_below_expected_ratio)} "
                     "of the rate the link's plan (channel model, `qtelemetry plan`) promises for over an hour. Both "
                     "are finite-key rates: the plan is what the link's own distillation, with its block size, "
                     "achieves on the modelled channel (Lim et al. 2014 for decoy BB84)."),
            impact=("None immediate: the link under-delivers on its design. It will hit its distance or demand "
                    "limits earlier than planned."),
            confirm=(f"{skr_smooth}{L} / on (link) qkd_expected_secret_key_rate_bits_per_second{L}",
                     f"qkd_channel_loss_db{L} - qkd_channel_loss_budget_db{L}", f"qkd_qber_ratio{L}"),
            mitigation=(
                "Compare measured loss, QBER and detector figures with the plan's inputs; re-run `qtelemetry plan` "
                "with the measured values.",
                "Fix the component that differs (extra splice loss, detector efficiency, misalignment) or correct "
                "the plan."),
            escalate="Network engineering ticket; vendor if device figures are below their datasheet.",
        ),
        "QKDKeyRateAboveRepeaterlessBound": Runbook(
            meaning=("The key rate is above the PLOB bound, -log2(1 - eta) bits per pulse, which no repeaterless "
                     "point-to-point link can exceed (Pirandola, Laurenza, Ottaviani, Banchi 2017)."),
            impact=("The link's numbers are wrong, so key-rate and loss alerts on it cannot be trusted."),
            confirm=(f"qkd_repeaterless_bound_ratio{L}", f"qkd_secret_key_rate_bits_per_second{L}",
                     f"qkd_repeaterless_bound_bits_per_second{L}", f"qkd_channel_loss_db{L}"),
            mitigation=(
                "Check the link's config: detector efficiency (loss is inferred with it), clock rate, intensities.",
                "If the link has a trusted node or repeater in the middle, the bound of the whole channel does not "
                "apply: model it as two links."),
            escalate="Ticket to whoever owns the link's config; the qtelemetry maintainers if the config is right.",
        ),
        "QKDChannelLossOverBudget": Runbook(
            meaning="The loss inferred from the signal gain exceeds the loss budget the link was engineered for.",
            impact="Key rate below plan; the link is close to the loss at which it distils no key.",
            confirm=(f"qkd_channel_loss_db{L}", f"qkd_channel_loss_budget_db{L}", f"{loss_base}{L}"),
            mitigation=(
                "If the loss rose recently (QKDChannelLossStep), find the event: fibre work, a patch, a bend.",
                "Clean and inspect connectors, measure with an OTDR, move to a spare fibre pair.",
                "If the budget was simply optimistic, raise it in the link config (loss_budget_db)."),
            escalate="Fibre/facilities team for the plant; vendor if the loss is inside the device (insertion loss).",
        ),
        "QKDChannelLossStep": Runbook(
            meaning=(f"The loss ({b.smoothing} average) is more than {num(t.loss_step_db)} dB above the link's "
                     f"{b.window} median: a step, not ageing. +Inf means no light above the dark counts."),
            impact="Key rate drops by the same factor as the transmittance (3 dB halves it) or to zero.",
            confirm=(f"{loss_smooth}{L} - {loss_base}{L}", f"qkd_channel_loss_db{L}",
                     'qkd_gain_ratio{link="<link>", intensity="signal"}'),
            mitigation=(
                "Ask for fibre work, patching or construction along the route at the time of the step.",
                "OTDR the fibre to locate a bend, crushed cable or bad splice; reroute to a spare pair.",
                "+Inf: follow QKDNoSignal."),
            escalate="Fibre provider / facilities immediately for a cut; ticket for a bend.",
        ),
        "QKDNoSignal": Runbook(
            meaning=("The receiver sees no more clicks on signal pulses than on empty (vacuum) ones, so the "
                     "inferred loss is infinite: no light from the transmitter arrives."),
            impact="The link distils no key. Applications live on the key store.",
            confirm=(f"qkd_channel_loss_db{L}", f"qkd_gain_ratio{L}", f"rate(qkd_pulses_total{L}[5m])"),
            mitigation=(
                FALLBACK,
                "Pulses still sent (qkd_pulses_total rising)? Then the light is lost on the way: fibre cut, "
                "disconnected patch, closed optical switch or shutter. Otherwise the source is off.",
                "Switch to a spare fibre if one is provisioned."),
            escalate="Fibre provider for a cut; vendor for a source failure. Page both if not clear in 15 minutes.",
        ),
        "QKDLinkInactive": Runbook(
            meaning=("The link's ETSI GS QKD 015 SD-QKD node answers, but has reported the key association link's "
                     "`qkdl_status` other than ACTIVE for 5 minutes; the alert's `status` label says which: PASSIVE "
                     "(not generating key, keys left), PENDING (awaiting activation), OFF, or unknown (a value "
                     "outside the etsi-qkd-node-types model, counted in qkd_node_unknown_identities_total). "
                     "`qlink_up` stays 1: it means the node is reachable and its reports valid, for every link kind; "
                     "whether the link makes key is this alert's."),
            impact=("No new key on this link: applications live on the key store until it runs dry, then fall "
                    "back. The key-rate, key-store and SLO alerts of the link are muted while this one fires."),
            confirm=(f"qkd_link_status{L} == 1", f"qkd_link_active{L}", f"qkd_secret_key_rate_bits_per_second{L}",
                     f"qkd_interface_status{L} == 1"),
            mitigation=(
                "Planned (a standby link, maintenance, a link not yet activated): silence the alert for the window.",
                "Otherwise ask the SDN controller why it deactivated the link (its log, the node's `qkdl_status` "
                "history); an interface DOWN or FAILURE (qkd_interface_status) points at the QKD module.",
                FALLBACK + " (if the store drains)."),
            escalate="The SDN controller's owner, then the vendor of the QKD module; page if the store is forecast empty.",
        ),
        "QKDDarkCountsHigh": Runbook(
            meaning=(f"The gain of vacuum (empty) pulses, i.e. dark counts and background light, is more than "
                     f"{num(t.dark_count_factor)} times its {b.window} median."),
            impact="More errors and a looser decoy bound on single-photon yield: QBER up, key rate down.",
            confirm=(f"{gain_smooth}{{link=\"<link>\", intensity=\"vacuum\"}}",
                     f"{gain_base}{{link=\"<link>\", intensity=\"vacuum\"}}", f"qkd_qber_ratio{L}"),
            mitigation=(
                "Check detector temperature and cooling (dark counts double every few kelvin).",
                "Look for stray light: classical channels on the same fibre (Raman), open patch panels, lab lights.",
                "Ageing detectors: plan a replacement."),
            escalate="Vendor ticket; page if QBER alerts fire too.",
        ),
        "QKDTamperSuspected": Runbook(
            meaning=("A sequential change detector (CUSUM on each window's counts, against the baseline the link "
                     "learned in its warm-up) crossed its threshold; the `detector` label says which. Thresholds "
                     "hold the exporter's false-alarm budget (exporter.tamper.fleet_mean_time_between_false_alarms_"
                     "seconds, 90 days for all links together by default; each link's share is "
                     "`qkd_tamper_mean_time_between_false_alarms_seconds`), so this alarm is rare without a change. "
                     "What each detector saw, and how to tell an attack from a fault with "
                     "`qkd_tamper_baseline_ratio` (1 = as learned): qber_z/qber_x - the QBER rose beyond what the "
                     "window's light explains (intercept-resend on a fraction f adds about f/4; misalignment drift "
                     "looks the same); decoy_gain - the decoy/signal gain ratio moved: up with vacuum_gain up and QBER "
                     "down is detector blinding (Eve's faked clicks ignore the intensity), down is photon-number "
                     "splitting (Eve keeps multi-photon pulses); vacuum_gain - dark counts moved: down is a blinded "
                     "detector, up with QBER up is detector noise (QKDDarkCountsHigh), up with QBER down is "
                     "blinding; chsh - the CHSH value S fell (entangled photons; intercept-resend on a fraction f "
                     "multiplies S by 1 - f/2). A fibre bend lowers signal_gain and decoy_gain alike (loss step, "
                     "QKDChannelLossStep) and leaves the ratio, the vacuum gain and the QBER the light explains "
                     "alone: it alarms no detector. A source drift scales signal and decoy gains alike and alarms "
                     "nothing on decoy-BB84 links; on entangled-photon links a brighter pump adds multi-pair errors "
                     "and alarms the QBER detectors, with the coincidence rate up and "
                     "`qent_coincidence_to_accidental` down at the same time. A fall of an entangled source's own "
                     "visibility and intercept-resend change the link's counts in exactly the same way (a "
                     "visibility V(1 - f/2) either way): no detector can tell them apart, the source's own monitor "
                     "and realignment can (below)."),
            impact=("Security: an eavesdropper may know part of the key. Treat key distilled since the detector's "
                    "statistic began to rise (the panel shows when it left 0) as compromised, and key from the whole "
                    "window if that time is unclear."),
            confirm=(f"qkd_tamper_statistic{L}", f"qkd_tamper_baseline_ratio{L}",
                     f"sum by (basis) (increase(qkd_errors_total{{link=\"<link>\", intensity=\"signal\"}}[5m]))\n"
                     f"/ sum by (basis) (increase(qkd_sifted_detections_total{{link=\"<link>\", intensity=\"signal\"}}[5m]))",
                     f"rate(qkd_detections_total{L}[5m]) / rate(qkd_pulses_total{L}[5m])",
                     f"qkd_channel_loss_db{L}", f"qent_chsh_value{L}", f"qent_coincidence_to_accidental{L}"),
            mitigation=(
                "Stop handing out key from this link and switch its consumers to the fallback key exchange "
                "(classical or post-quantum) before diagnosing.",
                "Have consumers discard key delivered since the statistic began to rise and rekey from a trusted "
                "source; record the window in the incident.",
                "Confirm with the raw counters above (QBER per basis from errors/sifted, gains per intensity from "
                "detections/pulses): the detector's baseline ratio should show the same move.",
                "Inspect the fibre path and the receiver (photocurrent monitors for blinding, taps, patch changes); "
                "a loss step at the same time points at the fibre, not at the detectors.",
                "QBER or CHSH alarms: realign (polarisation or phase compensation) and, on an entangled-photon link, "
                "check the source's own visibility monitor and its pump and temperature logs. Misalignment and a "
                "source fault go away with realignment or a source fix - qkd_tamper_baseline_ratio{quantity="
                "\"qber_z\"} returns to 1 - an eavesdropper's errors do not.",
                "Once cleared, re-arm: `curl -X POST -H \"Authorization: Bearer $(cat admin.token)\" -d "
                "'{\"link\": \"<link>\"}' https://<exporter>/-/tamper`; add `\"relearn\": true` to learn a new "
                "baseline after a planned change (realignment, new source). The alarm stays latched until then."),
            escalate="Page security at once (the alert is routed to them); do not resume key delivery until they agree.",
        ),
        "QKDDarkCountsSuppressed": Runbook(
            meaning=(f"The vacuum-pulse gain fell below 1/{num(t.dark_count_factor)} of its {b.window} median while "
                     f"the baseline predicts over {num(t.dark_count_min_expected)} vacuum detections per "
                     f"{b.smoothing}: the detectors stopped clicking on empty pulses. Single-photon avalanche "
                     "detectors always have dark counts; a detector that has none is not in Geiger mode - the "
                     "signature of a detector-blinding attack (bright light that makes the detectors follow an "
                     "attacker's pulses), or of a detector whose bias failed."),
            impact=("Security: under blinding, an attacker can learn the key without raising the QBER. Treat key "
                    "distilled since the onset as compromised."),
            confirm=(f"{gain_smooth}{{link=\"<link>\", intensity=\"vacuum\"}}",
                     f"{gain_base}{{link=\"<link>\", intensity=\"vacuum\"}}",
                     f"qkd_gain_ratio{L}", f"qkd_qber_ratio{L}"),
            mitigation=(
                "Stop handing out key from this link and switch its consumers to the fallback key exchange "
                "(classical or post-quantum) - do this before diagnosing.",
                "Mark key generated since the onset as suspect; have consumers rekey from a trusted source.",
                "Check detector bias and photocurrent monitors (blinding shows as high photocurrent), and the "
                "optical power arriving at the receiver."),
            escalate="Page security and the vendor immediately; do not resume until both agree.",
        ),
        "QKDKeyBufferExhaustionForecast": Runbook(
            meaning=(f"The key store is below {pct(t.key_buffer_forecast.fill_ratio)} and its trend over "
                     f"{t.key_buffer_forecast.lookback} (predict_linear) reaches zero within "
                     f"{t.key_buffer_forecast.horizon}: applications draw key faster than the link makes it."),
            impact="Within hours, requests for key will be refused (key-supply SLO).",
            confirm=(f"qkd_key_buffer_bits{L}", f"rate(qkd_key_generated_bits_total{L}[1h])",
                     f"rate(qkd_key_requested_bits_total{L}[1h])"),
            mitigation=(
                "Generation down? Follow the key-rate alerts. Demand up? Find the consumer (rekey interval, a new "
                "application) and lengthen its rekey interval if policy allows.",
                "Plan the fallback key exchange for the consumers in case the store runs dry."),
            escalate="Page if QKDKeyBufferExhaustionImminent fires.",
        ),
        "QKDKeyBufferExhaustionImminent": Runbook(
            meaning=(f"The key store is below {pct(t.key_buffer_imminent.fill_ratio)} and falling: empty within "
                     f"{t.key_buffer_imminent.horizon}; or it is empty and not refilling."),
            impact="Applications will be refused key; encrypted links that need fresh key will fail or degrade.",
            confirm=(f"qkd_key_buffer_bits{L}", f"rate(qkd_key_delivered_bits_total{L}[15m])",
                     f"rate(qkd_key_generated_bits_total{L}[15m])"),
            mitigation=(FALLBACK, "Then work on generation (key-rate alerts) or demand."),
            escalate="Page the service owners of the key consumers.",
        ),
        "QLinkSiteDown": Runbook(
            meaning=(f"Every link of one site (the `{c.site_label}` target label of its exporters; without that "
                     f"label, every link of the {c.cluster_label}) has been down for 5 minutes, and the site has "
                     "more than one link. So many links failing at once have one cause at the site."),
            impact=("No key and no telemetry from any link of the site. Its links' own alerts are muted: this is "
                    "the one page."),
            confirm=(f"count by ({c.site_label}) (qlink_up == 0)",
                     f"sum by ({c.site_label}, reason) (increase(qlink_driver_errors_total[15m]))",
                     "up", "qtelemetry_estimation_lag_seconds"),
            mitigation=(
                "Driver errors by reason say where: connection errors on every link point at the site's network "
                "or power; stalled or impossible data at the devices' management plane.",
                "The exporter itself answers (else QTelemetryExporterDown would fire): check its host's view of "
                "the site network (routes, firewall, DNS).",
                FALLBACK),
            escalate="Site facilities and network team at once; the vendor if the devices are up but silent.",
        ),
        "QLinkDown": Runbook(
            meaning=("The link's driver has not delivered a valid batch within the exporter's stall timeout: the "
                     "device is unreachable, the driver fails, or the device sends impossible counts."),
            impact="No key or entanglement from this link, and no telemetry: other link alerts go quiet.",
            confirm=(f"qlink_up{L}", f"sum by (reason) (increase(qlink_driver_errors_total{L}[15m]))",
                     f"qlink_data_age_seconds{L}"),
            mitigation=(
                "The error reason says where to look: connection errors (network to the device, its management "
                "interface, TLS certificates), impossible data (firmware), stalled (device hung).",
                "Check the exporter log for the link (one line per dropped batch).",
                FALLBACK),
            escalate="Vendor if the device does not answer or sends impossible data; page after 30 minutes.",
        ),
        "QKDKmeUnavailable": Runbook(
            meaning=("The exporter's status polls to the ETSI GS QKD 014 key management entity (KME) of the link have "
                     "failed for 5 minutes; the alert's `reason` says how: no connection (`connection_refused`, "
                     "`timeout`, `disconnected`), TLS (`tls_server_untrusted`, `tls_server_expired`: the KME's "
                     "certificate; `tls_client_*`, `http_401`: the certificate of the SAE the exporter polls as), "
                     "an error answer (`http_503`, `http_400`, `http_other`) or a malformed status document."),
            impact=("Applications (SAEs) at this site that ask the KME for keys most likely fail the same way and fall "
                    "back to classical or post-quantum key exchange; the link's key store is no longer watched."),
            confirm=(f"qlink_up{L}", f"sum by (reason) (increase(qlink_driver_errors_total{L}[15m]))",
                     f"qkd_kme_key_probes_total{L}",
                     f"sum by (endpoint) (rate(qkd_kme_request_duration_seconds_count{L}[15m]))"),
            mitigation=(
                FALLBACK,
                "Connection reasons: is the KME process/host up, its port reachable from the exporter (firewall, "
                "routing, DNS)? The exporter log names the KME's address.",
                "TLS reasons: check the validity dates and the CA of the KME's server certificate, and of the SAE "
                "certificate the exporter presents (an expired or rotated certificate on either side). The same "
                "certificates serve the applications: renew them everywhere.",
                "`http_503` with keys in the store, or `http_401` for an SAE that used to be served: the KME's own "
                "configuration changed (its log and the error message in the exporter log say what)."),
            escalate="Page the KME's owner (vendor or platform team) at once: applications are without QKD keys.",
        ),
        "QKDKmeSlow": Runbook(
            meaning=(f"The 90th percentile of the requests the KME answered for this endpoint (`status` polls, "
                     f"`enc_keys` key probes) over 10 minutes is above {num(t.kme_latency_seconds)} s. ETSI GS QKD 014 "
                     "KMEs answer in milliseconds when healthy; the histogram counts only answered requests (failures "
                     "are in qlink_driver_errors_total)."),
            impact=("Applications wait as long for each key, which delays session set-up; close to the exporter's "
                    "`timeout_seconds` the polls start failing (QKDKmeUnavailable)."),
            confirm=(f'histogram_quantile(0.9, sum by (endpoint, le) (rate(qkd_kme_request_duration_seconds_bucket{L}[10m])))',
                     f"sum by (endpoint) (rate(qkd_kme_request_duration_seconds_count{L}[10m]))",
                     f"qkd_key_buffer_bits{L}"),
            mitigation=(
                "Slow `status` and `enc_keys` alike: the KME host (CPU, memory, disk) or the network path; compare "
                "with other KMEs of the site.",
                "Only `enc_keys` slow: key extraction or relay inside the KME (a key store close to empty, a busy "
                "key relay to the peer KME).",
                "Many applications polling at once: spread their requests or ask for several keys per request."),
            escalate="Ticket to the KME's owner; page if it approaches the timeout and QKDKmeUnavailable follows.",
        ),
        "QKDKeyRequestsRefused": Runbook(
            meaning=(f"The KME answered more than {pct(t.key_refusal_ratio)} of the exporter's one-key probes (ETSI GS "
                     "QKD 014 Get key for the watched SAE pair) over 10 minutes with an error instead of a key. Probes "
                     "stand in for applications: they ask for a key the same way, and the key they get is dropped. "
                     "503 means the key store of the pair is empty; 400 or 401 that the KME will not serve the pair "
                     "(the exporter log has the KME's error message)."),
            impact=("Applications are refused keys now: sessions use the fallback key exchange, or fail where there "
                    "is none. Refusals are what the key-supply SLO measures on the application side."),
            confirm=(f"sum by (result) (increase(qkd_kme_key_probes_total{L}[15m]))",
                     f"qkd_key_buffer_bits{L} / qkd_key_buffer_capacity_bits{L}",
                     f"qkd_key_buffer_trend_bits_per_second{L}"),
            mitigation=(
                FALLBACK,
                "Empty store (qkd_key_buffer_bits near 0): key generation is down or slower than demand; check the "
                "link's key rate (ETSI 015 node or qtelemetry estimates) and reduce demand (longer rekey intervals, "
                "fewer consumers) until it recovers.",
                "Keys in the store yet refused: the KME's configuration (SAE registration, key size limits); its "
                "error message is in the exporter log."),
            escalate=("Page the link owner if generation is down; the KME's owner if it refuses with keys in the "
                      "store."),
        ),
        "QLinkStale": Runbook(
            meaning=(f"The link reports up (qlink_up 1) although the newest data in its estimates is older than "
                     f"{num(t.stale_after_seconds)} s. The exporter computes both when scraped and should mark a link "
                     "down once its data is older than its stall timeout, so either that timeout "
                     "(exporter.stall_timeout_seconds) is longer than this alert's threshold, or the freshness check "
                     "is broken."),
            impact="Dashboards and alerts for the link show old values as live; a real problem would go unnoticed.",
            confirm=(f"qlink_data_age_seconds{L}", f"qlink_up{L}", "qtelemetry_estimation_lag_seconds"),
            mitigation=(
                "Compare the exporter's stall_timeout_seconds with the threshold; lower the timeout (or raise the "
                "threshold with `qtelemetry generate --config`) if the link's driver legitimately polls that slowly.",
                "All links of an exporter stale with a growing lag: the estimator is stuck; follow "
                "QTelemetryEstimationStalled.",
                "Otherwise report it: the exporter shows stale data as live."),
            escalate="qtelemetry maintainers with the exporter's log and a scrape of /metrics.",
        ),
        "QLinkDriverErrors": Runbook(
            meaning=(f"More than {pct(t.driver_error_ratio)} of the link's batches were dropped for one reason "
                     "(driver failure or impossible counts: negative, NaN, more detections than pulses)."),
            impact="Estimates use fewer windows and lag; if the rate grows the link goes down.",
            confirm=(f"sum by (reason) (rate(qlink_driver_errors_total{L}[10m]))",
                     "link_reason:qlink_driver_errors:ratio_rate10m"),
            mitigation=("Read the exporter log for the reason; impossible data points at device firmware or a "
                        "counter reset the driver does not expect.",
                        "Reason overflow: the estimator drains the link's bounded slot slower than the driver fills "
                        "it; see the exporter-health dashboard (lag, cycle duration) and QTelemetryFallingBehind."),
            escalate="Vendor ticket with log lines; qtelemetry maintainers if the driver misreads valid data.",
        ),
        "QTelemetryExporterDown": Runbook(
            meaning="Prometheus cannot scrape the exporter (up == 0): process down, host down, network, TLS or auth.",
            impact="Every link of this exporter is unmonitored; no link alert can fire.",
            confirm=("up", "scrape_duration_seconds"),
            mitigation=("Check the process/pod, its log (config errors exit with code 2 and name the field), and "
                        "the target's error on Prometheus' /targets page.",),
            escalate="Platform team if the host or network is down.",
        ),
        "QTelemetryExporterAbsent": Runbook(
            meaning=(f"Prometheus has no target matching {{{c.selector}}} in a {c.cluster_label}, although it had "
                     "some within a day" + (", or has never had one (monitoring config exporter_absent_alert: "
                                            "always)" if c.exporter_absent_alert == "always" else
                                            " (a Prometheus that never scraped qtelemetry stays quiet; "
                                            "exporter_absent_alert: always makes it fire there too)") + "."),
            impact="All quantum links are unmonitored.",
            confirm=("up", f"count by ({', '.join(c.identity)}) (up)",
                     f"group by ({', '.join(c.identity)}) (max_over_time(up[1d]))"),
            mitigation=("Check the scrape config / ServiceMonitor and service discovery of that cluster; a relabel "
                        "may have changed the job name (then change `selector` in the monitoring config and "
                        "regenerate).",
                        "In a global view: check that the cluster's Prometheus still federates or remote-writes "
                        "(its own `up` for the job, and its remote-write queue)."),
            escalate="Platform team.",
        ),
        "QTelemetryEstimationStalled": Runbook(
            meaning=(f"No estimation cycle of the exporter completed for more than {num(t.estimation_stall_seconds)} s "
                     "(qtelemetry_estimation_lag_seconds, computed when scraped, so a stuck estimator cannot hide "
                     "it). Every link of this exporter is frozen."),
            impact=("All links of the exporter report down (their QLinkDown and QLinkStale are muted by this alert): "
                    "no telemetry for them until the estimator runs again."),
            confirm=("qtelemetry_estimation_lag_seconds", "rate(qtelemetry_estimation_duration_seconds_count[5m])",
                     "qtelemetry_links"),
            mitigation=("Restart the exporter (its log shows the last cycle); a cycle that never ends points at a "
                        "driver or estimator bug: keep the log and a thread dump (py-spy dump --pid) first.",),
            escalate="qtelemetry maintainers with the log and the dump.",
        ),
        "QTelemetryEstimationLagging": Runbook(
            meaning=(f"On average the last completed estimation cycle is more than {num(t.estimation_lag_windows)} "
                     "acquisition windows old: cycles take longer than the windows they estimate."),
            impact="Every link's numbers trail the devices by several windows; alerts fire late.",
            confirm=("avg_over_time(qtelemetry_estimation_lag_seconds[5m]) / qtelemetry_estimation_interval_seconds",
                     "histogram_quantile(0.9, sum by (instance, le) (rate(qtelemetry_estimation_duration_seconds_bucket[10m])))",
                     "qtelemetry_links"),
            mitigation=SPLIT,
            escalate="qtelemetry maintainers with the link count and the bench/ figures of the same machine.",
        ),
        "QTelemetryFallingBehind": Runbook(
            meaning=(f"More than {pct(t.estimation_skipped_ratio)} of the estimation cycles were skipped because the "
                     "previous cycle overran its window: the exporter has more links than it can estimate in one "
                     "window. It degrades visibly (skipped windows are counted, data age grows) instead of "
                     "reporting stale numbers as fresh."),
            impact="Estimates are updated less often than every window; drivers may overflow their slots.",
            confirm=("rate(qtelemetry_estimation_cycles_skipped_total[10m])",
                     'sum by (instance) (rate(qlink_driver_errors_total{reason="overflow"}[10m]))',
                     "max by (instance) (qlink_data_age_seconds)", "qtelemetry_links"),
            mitigation=SPLIT,
            escalate="qtelemetry maintainers with the link count and the bench/ figures of the same machine.",
        ),
        "QTelemetryConfigReloadFailed": Runbook(
            meaning=("The exporter re-read its config (SIGHUP, or POST /-/reload with the admin token) and "
                     "rejected it: the file (or the web config file, or a certificate or token file it names) does "
                     "not load. The previous config keeps running, unchanged; "
                     "qtelemetry_config_last_reload_successful stays 0 until a reload succeeds."),
            impact=("The intended change (links added or removed, users, certificates, admin token) is not in "
                    "effect, and the exporter would refuse to start with the file as it is now."),
            confirm=("qtelemetry_config_last_reload_successful",
                     "time() - qtelemetry_config_last_reload_success_timestamp_seconds"),
            mitigation=("Read the exporter's log: one `config reload rejected` line per problem, naming the "
                        "field and why.",
                        "Check the file where it is edited: `qtelemetry check-config FILE` (with "
                        "`--web.config.file` if the exporter uses one), fix it, then reload again "
                        "(`kill -HUP <pid>`).",
                        "Or roll the file back to the version that runs; the metric returns to 1 at the next "
                        "successful reload."),
            escalate="Whoever changed the config (the deployment's change log).",
        ),
        "QTelemetryEstimationSlow": Runbook(
            meaning=(f"The 90th percentile of the estimation cycle is above {pct(t.estimation_slow_ratio)} of the "
                     "acquisition window (from the cycle-duration histogram): the exporter still keeps up, with "
                     "little headroom."),
            impact="None yet; more links or a busier host and it starts skipping cycles (QTelemetryFallingBehind).",
            confirm=("histogram_quantile(0.9, sum by (instance, le) (rate(qtelemetry_estimation_duration_seconds_bucket[10m])))",
                     "qtelemetry_estimation_interval_seconds", "qtelemetry_links"),
            mitigation=SPLIT,
            escalate="Capacity planning ticket (docs/operations.md, sizing).",
        ),
        "QTelemetryConnectionsNearLimit": Runbook(
            meaning=(f"The exporter's endpoint holds more than {pct(t.connections_ratio)} of the connections it "
                     "accepts at most (qtelemetry_http_connections_limit). At the cap, each new client closes the "
                     "connection that has waited longest."),
            impact=("None while scrapers get through; at the cap a scraper's keep-alive connection can be closed "
                    "by newcomers, and a flood of clients that all hold requests in progress is refused."),
            confirm=("qtelemetry_http_connections", "qtelemetry_http_connections_limit",
                     "sum by (instance, reason) (rate(qtelemetry_http_rejections_total[10m]))",
                     "sum by (instance, handler, code) (rate(qtelemetry_http_requests_total[10m]))"),
            mitigation=("Find the clients: `ss -tn state established '( sport = :9817 )'` on the host, or the load "
                        "balancer's logs. Rejections by reason tell idle clients (idle_timeout), password "
                        "guessing (unauthorized, auth_queue_full) and a flood (connection_limit) apart.",
                        "Block or rate-limit a hostile source in front of the exporter (network policy, firewall); "
                        "legitimate scrapers need one connection each.",
                        "Many Prometheus replicas or federation scraping one exporter: scrape it from fewer places, "
                        "or split its links over shards (`qtelemetry run --shard I/N`)."),
            escalate="Security team if the clients are not yours.",
        ),
        "QTelemetryMemoryNearLimit": Runbook(
            meaning=(f"The exporter's resident memory is above {pct(t.memory_limit_ratio)} of the memory limit of "
                     "its cgroup (qtelemetry_memory_limit_bytes: the container limit, or systemd MemoryMax=)."),
            impact=("At the limit the kernel's OOM killer stops the exporter: every link it serves goes "
                    "unmonitored (QTelemetryExporterDown) until it restarts, and restarts reset its sliding windows."),
            confirm=("process_resident_memory_bytes / qtelemetry_memory_limit_bytes",
                     "deriv(process_resident_memory_bytes[1h])", "qtelemetry_links"),
            mitigation=("Steady growth over hours with the same links: a leak - keep the exporter's log and a heap "
                        "profile before restarting it.",
                        "A step at a reload or a deployment: more links or longer sliding windows than the limit "
                        "was sized for - raise the limit (docs/operations.md, sizing) or split the links over "
                        "shards (`qtelemetry run --shard I/N`)."),
            escalate="qtelemetry maintainers with the RSS history and the link count, if it grows without a change.",
        ),
        "QTelemetryOtlpPushFailing": Runbook(
            meaning=(f"More than {pct(t.otlp_failure_ratio)} of the exporter's pushes to its OTLP endpoint "
                     "(exporter.otlp) were not delivered over 15 minutes: the collector refused them or could not "
                     "be reached (failed), did not answer in full within exporter.otlp.timeout_seconds (timeout), "
                     "or a push still waiting for its answer held back the next ones (stalled)."),
            impact=("Whatever reads the links from the OpenTelemetry pipeline sees gaps or its last values; the "
                    "Prometheus scrape of /metrics, and every qtelemetry alert, are unaffected."),
            confirm=("sum by (instance, result) (rate(qtelemetry_otlp_pushes_total[15m]))",),
            mitigation=("Read the exporter's log: the OpenTelemetry SDK logs each failed push with the HTTP status "
                        "or the connection error; `OTLP push unanswered` means timeouts.",
                        "failed: check the endpoint URL and that the collector runs and accepts OTLP/HTTP on it "
                        "(a 4xx is a collector that refuses the request: its logs say why).",
                        "timeout or stalled: the collector (or a proxy in front of it) accepts connections but does "
                        "not answer; restart it, or raise exporter.otlp.timeout_seconds if it is only slow."),
            escalate="The team that runs the OpenTelemetry Collector.",
        ),
        "QEntCHSHNoViolation": Runbook(
            meaning=("The CHSH value S is at or below 2, the bound of any local-realistic model (2.83 for a "
                     "perfect Bell pair): the link's photon pairs show no entanglement."),
            impact=("No key (S <= 2 means QBER above 14.6%), and any service that needs certified entanglement "
                    "on this link is down."),
            confirm=(f"qent_chsh_value{L}", f"qent_visibility_ratio{L}", f"qent_coincidence_to_accidental{L}"),
            mitigation=(
                "Visibility down in one basis: polarisation drift in a fibre - run polarisation compensation.",
                "Coincidence-to-accidental ratio low: pump power too high (multi-pair emission) or background light.",
                FALLBACK),
            escalate="Vendor / lab team of the source if S does not recover after compensation.",
        ),
        "QEntCHSHViolationWeak": Runbook(
            meaning=(f"S minus {num(t.chsh_sigmas)} standard deviations is at or below 2: the Bell violation is not "
                     f"significant at {num(t.chsh_sigmas)} sigma any more."),
            impact="Entanglement cannot be certified with confidence; key rate likely down.",
            confirm=(f"qent_chsh_value{L}", f"qent_chsh_value_stddev{L}", f"rate(qent_chsh_coincidences_total{L}[10m])"),
            mitigation=("If S itself fell: as QEntCHSHNoViolation. If sigma grew: too few CHSH rounds "
                        "(coincidence rate down, or a smaller CHSH fraction) - check loss and the source.",),
            escalate="Ticket to the link owner.",
        ),
        "QEntFidelityLow": Runbook(
            meaning=(f"The lower confidence bound on the Bell-state fidelity of detected pairs, 1 - e_Z - e_X, is "
                     f"below {pct(t.fidelity_min)}."),
            impact="Lower key rate; applications that need high-fidelity pairs get worse ones.",
            confirm=(f"qent_fidelity_lower_bound_ratio{L}", f"qkd_qber_upper_bound_ratio{L}", f"qent_visibility_ratio{L}"),
            mitigation=("Realign polarisation; check source temperature and pump power.",),
            escalate="Vendor / lab team of the source.",
        ),
        "QEntHeraldedFidelityLow": Runbook(
            meaning=(f"Even the upper confidence bound on the fidelity of heralded memory pairs is below "
                     f"{pct(t.heralded_fidelity_min)}: the pairs are poor with confidence, not just a noisy sample."),
            impact="Applications (teleportation, distillation) get pairs below their useful fidelity.",
            confirm=(f"qent_heralded_fidelity_ratio{L}", f"qent_heralded_fidelity_upper_bound_ratio{L}",
                     f"qent_heralding_success_probability_ratio{L}"),
            mitigation=("Storage time vs memory coherence time (shorter waiting), interferometer phase "
                        "stabilisation, bright-state population (double excitations).",),
            escalate="Lab team of the memory nodes.",
        ),
        "QEntHeraldingRateDrop": Runbook(
            meaning=(f"Even the upper confidence bound on the heralding success probability is below "
                     f"{pct(t.rate_drop_ratio)} of its {b.window} median."),
            impact="Fewer entangled pairs per second.",
            confirm=(f"qent_heralding_success_probability_upper_bound_ratio{L}", f"{herald_base}{L}",
                     f"qent_heralded_pairs_per_second{L}"),
            mitigation=("Loss on the fibres to the heralding station, collection efficiency of the memories, "
                        "detectors at the station.",),
            escalate="Lab team; fibre team if the loss is in the plant.",
        ),
        "QEntCoincidenceRateDrop": Runbook(
            meaning=(f"The photon-pair coincidence rate ({b.smoothing} average) is below {pct(t.rate_drop_ratio)} "
                     f"of its {b.window} median."),
            impact="Fewer pairs: lower key rate and larger statistical errors on CHSH and QBER.",
            confirm=(f"{coinc_smooth}{L}", f"{coinc_base}{L}", f"qent_accidental_rate_per_second{L}"),
            mitigation=("Loss on one of the two fibres from the source (a bend, a connector), pump power, "
                        "receiver detectors.",),
            escalate="Fibre team for the plant; vendor for the source.",
        ),
    }
    for slo in c.slos:
        books.update(slo_runbooks(slo))
    books.update(network_runbooks(c))
    return books


def slo_runbooks(slo: SLO) -> dict[str, Runbook]:
    """Runbooks of an SLO's burn-rate alerts, written from the SLO spec."""
    L = '{link="<link>"}'
    books = {}
    for burn in slo.burn_alerts:
        pairs = " or ".join(f"{num(w.factor)}x over {w.long} (and {w.short})" for w in burn.windows)
        fastest = max(w.factor for w in burn.windows)
        days = duration_seconds(slo.period) / fastest / 86400
        page = burn.severity == "critical"
        books[f"{slo.alert_prefix}{burn.name}"] = Runbook(
            meaning=(f"{slo.title} SLO: {slo.description} The objective is {pct(slo.objective)} over {slo.period}, "
                     f"so the error budget is {pct(1 - slo.objective)} of requests. The budget burns at {pairs} "
                     f"the sustainable rate; at {num(fastest)}x the whole budget lasts {days:.2g} days. Both windows "
                     f"of a pair must be above the factor: the long one proves it matters, the short one that it is "
                     f"still happening (SRE workbook, multi-window multi-burn-rate alerts)."),
            impact=("Applications are being refused key now." if page else
                    f"At this rate the {slo.period} error budget runs out before the period ends."),
            confirm=tuple(f"{slo_record(slo, w)}{L}" for w in
                          dict.fromkeys(x for w in burn.windows for x in (w.long, w.short)))
                    + (f"{slo_budget_record(slo)}{L}", f"qkd_key_buffer_bits{L}",
                       f"qkd_secret_key_rate_bits_per_second{L}"),
            mitigation=((FALLBACK,
                         "Find why delivery fails: an empty key store (generation: see the key-rate alerts of the "
                         "link) or the key delivery interface (ETSI GS QKD 014 KME) refusing requests.")
                        if page else
                        ("Look for a daily pattern (demand peaks draining the store) and for slow degradation of "
                         "the key rate; rebalance demand, lengthen rekey intervals or add capacity.",)),
            escalate=("Page the vendor if the KME refuses requests while key is in the store; page the service "
                      "owners of the key consumers if the fallback is not in place." if page else
                      "Ticket to the link owner; review at the next capacity meeting."),
        )
    return books


def _check(query: str, c: MonitoringConfig, known: set[str], where: str) -> str:
    pending = set(PENDING_METRICS - set(sample_names()))
    check_names(query, known, pending, where)
    return inject_selector(query, c.selector, set(sample_names()) | TARGET_SERIES | PENDING_METRICS)


def markdown(ruleset: RuleSet, c: MonitoringConfig) -> str:
    """The runbook page for the generated alerts (gated alerts have no section yet)."""
    books = runbooks(c)
    known = set(sample_names()) | PROMETHEUS_SERIES | recording_names(ruleset)
    refs = cross_references(ruleset, c)
    alerts = ruleset.alerts
    missing = [a.alert for a in alerts if a.alert not in books]
    if missing:
        raise GenerationError(f"no runbook for {', '.join(missing)}")
    lines = [
        "# qtelemetry runbooks",
        "",
        "Generated by `qtelemetry generate` from the alert rules and the monitoring config; do not edit by hand.",
        "Every alert's `runbook_url` points at its section here. In the PromQL, `<link>` stands for the",
        "`link` label of the alert.",
        "",
        *alert_table(alerts),
    ]
    for a in alerts:
        book = books[a.alert]
        where = f"runbook {a.alert}"
        lines += [
            "",
            f'<a id="{a.alert.lower()}"></a>',
            "",
            f"## {a.alert}",
            "",
            f"**Severity:** {a.severity} &nbsp; **For:** {a.for_} &nbsp; **Summary:** {_plain(a.summary)}",
            "",
            "```promql",
            a.expr,
            "```",
            "",
            f"**Meaning.** {book.meaning}",
            "",
            f"**Impact.** {book.impact}",
            "",
            *(line for paragraph in refs.get(a.alert, ()) for line in (paragraph, "")),
            "**Confirm.**",
            "",
            "```promql",
            *(_check(q, c, known, where) for q in book.confirm),
            "```",
            "",
            "**Mitigation.**",
            "",
            *(f"{i}. {step}" for i, step in enumerate(book.mitigation, 1)),
            "",
            f"**Escalate.** {book.escalate}",
        ]
    return "\n".join(lines) + "\n"


def _same(equal: tuple[str, ...], c: MonitoringConfig) -> str:
    """``equal`` labels as words: "the same link", "the same exporter (instance) and basis"."""
    words = {"instance": "exporter (instance)", c.site_label: "site"}
    return "the same " + " and ".join(words.get(x, x) for x in equal[len(c.identity):])


def _links(names: list[str]) -> str:
    return ", ".join(f"[{n}](#{n.lower()})" for n in names)


def cross_references(ruleset: RuleSet, c: MonitoringConfig) -> dict[str, list[str]]:
    """Per alert, the runbook paragraphs from the cause hierarchy: which alerts explain it (follow
    theirs instead) and which it explains (muted while it fires)."""
    explained: dict[str, dict[tuple[str, str], list[str]]] = {}
    mutes: dict[str, dict[str, list[str]]] = {}
    for r in causes.relations(ruleset, c):
        explained.setdefault(r.effect, {}).setdefault((r.because, _same(r.equal, c)), []).append(r.cause)
        mutes.setdefault(r.cause, {}).setdefault(_same(r.equal, c), []).append(r.effect)
    out: dict[str, list[str]] = {}
    for effect, by_reason in explained.items():
        lines = [f"{_links(names)} for {same}: {because}" for (because, same), names in by_reason.items()]
        out.setdefault(effect, []).append(
            "**If another alert fires too, it is the cause.** Follow its runbook instead; Alertmanager mutes this "
            "alert while it fires:\n" + "\n".join(f"- {line}." for line in lines))
    for cause, by_tie in mutes.items():
        held = next(a for a in ruleset.alerts if a.alert == cause).keep_firing_for
        after = f" and for {held} after it clears (`keep_firing_for`, as its symptoms still average the incident)" if held else ""
        lines = [f"for {same}: {_links(names)}" for same, names in by_tie.items()]
        out.setdefault(cause, []).append(
            f"**It mutes its symptoms.** While it fires{after}, Alertmanager mutes, "
            + "; ".join(lines) + ".")
    return out


def alert_table(alerts: list, page: str = "") -> list[str]:
    """Markdown table of the alerts, most severe first, each linked to its section of ``page``."""
    order = {"critical": 0, "warning": 1, "info": 2}
    rows = ["| alert | severity | for | summary |", "|---|---|---|---|"]
    for a in sorted(alerts, key=lambda a: (order[a.severity], a.alert)):
        rows.append(f"| [{a.alert}]({page}#{a.alert.lower()}) | {a.severity} | {a.for_} | {_plain(a.summary)} |")
    return rows


def _plain(template: str) -> str:
    """A summary for the tables: label templates shown as `<label>`, values as `<value>`."""
    text = expand(template)
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", r"`<\1>`", text)
    text = re.sub(r"\{\{ \$value[^}]*\}\}", "`<value>`", text)
    return text.replace("|", "\\|")
