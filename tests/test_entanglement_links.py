"""Entanglement links in the exporter: config errors name the field, a scrape finds the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import value

from qtelemetry.config import ConfigError, default_config, parse_config
from qtelemetry.estimation import entanglement, heralded
from qtelemetry.monitoring.catalogue import METRICS

SPDC = "{name: pair-link, driver: {type: simulated-spdc, fiber_length_km: 10%s}}"
HERALDED = "{name: memory-link, driver: {type: simulated-heralded, fiber_length_km: 10%s}}"

CASES = {
    "efficiency zero": (SPDC % ", detector_efficiency_a: 0", "links[0].driver.detector_efficiency_a", "greater than 0"),
    "efficiency above 1": (SPDC % ", detector_efficiency_b: 1.5", "links[0].driver.detector_efficiency_b",
                           "less than or equal to 1"),
    "negative pair number": (SPDC % ", mean_pair_number: -0.1", "links[0].driver.mean_pair_number", "greater than 0"),
    "zero coincidence window": (SPDC % ", coincidence_window_s: 0", "links[0].driver.coincidence_window_s",
                                "greater than 0"),
    "window longer than pump period": (SPDC % ", coincidence_window_s: 1.0e-6, clock_rate_hz: 1.0e8", "links[0].driver",
                                       "must not exceed the pump period"),
    "visibility above 1": (SPDC % ", visibility: 1.2", "links[0].driver.visibility", "less than or equal to 1"),
    "zero coherence time": (HERALDED % ", coherence_time_s: 0", "links[0].driver.coherence_time_s", "greater than 0"),
    "negative coherence time": (HERALDED % ", coherence_time_s: -0.5", "links[0].driver.coherence_time_s",
                                "greater than 0"),
    "collection efficiency above 1": (HERALDED % ", collection_efficiency: 1.2",
                                      "links[0].driver.collection_efficiency", "less than or equal to 1"),
    "unknown scheme": (HERALDED % ", scheme: three-click", "links[0].driver.scheme", "'two-click' or 'single-click'"),
    "fault for another link kind": (HERALDED % ", faults: [{kind: visibility-drop}]", "links[0].driver",
                                    "does not apply to this driver"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_names_the_field(case):
    link, field, reason = CASES[case]
    with pytest.raises(ConfigError) as caught:
        parse_config("links:\n  - " + link + "\n")
    assert any(path == field and reason in message for path, message in caught.value.problems), caught.value.problems


def test_demo_has_one_link_of_each_entanglement_kind():
    kinds = [link.driver.type for link in default_config().links]
    assert kinds.count("simulated-spdc") == 1 and kinds.count("simulated-heralded") == 1


LINKS = """
exporter:
  window_seconds: 0.1
  sliding_windows: 30
  confidence_level: 0.99
links:
  - name: pair-link
    driver:
      type: simulated-spdc
      fiber_length_km: 20
      detector_efficiency_a: 0.6
      detector_efficiency_b: 0.6
      mean_pair_number: 0.02
      visibility: 0.98
      misalignment_error: 0.01
      dark_count_rate_hz: 100
      coincidence_window_s: 1.0e-9
      clock_rate_hz: 1.0e8
      chsh_fraction: 0.1
      seed: 11
  - name: memory-link
    driver:
      type: simulated-heralded
      scheme: two-click
      fiber_length_km: 2
      collection_efficiency: 0.4
      detector_efficiency: 0.9
      dark_count_probability: 0
      intrinsic_fidelity: 0.9
      coherence_time_s: 0.01
      storage_time_s: 0.005
      attempt_rate_hz: 1.0e5
      measured_fraction: 0.5
      seed: 12
"""


def test_scrape_finds_entanglement_metrics(start_exporter):
    exporter = start_exporter(LINKS)
    samples = exporter.wait_for(lambda s: all(x.value >= 30 for x in s.get("qlink_batches_total", []))
                                and len(s.get("qlink_batches_total", [])) == 2)
    for metric in METRICS:
        if metric.protocol in ("bbm92-spdc", "heralded-entanglement"):
            assert metric.sample_name in samples, metric.sample_name
    pair, memory = {"link": "pair-link"}, {"link": "memory-link"}
    assert value(samples, "qlink_info", protocol="bbm92-spdc", **pair) == 1.0
    assert value(samples, "qlink_info", protocol="heralded-entanglement", **memory) == 1.0

    # entangled photons: model of the link above (Ma, Fung, Lo 2007), window of 30 × 1e7 pulses
    eta = 10 ** (-10 * 0.2 / 10) * 0.6
    y0 = -math.expm1(-100 * 1e-9)
    e_d = entanglement.intrinsic_error(0.98, 0.01)
    q = float(entanglement.pdc_gain(0.01, eta, eta, y0, y0))
    e = float(entanglement.pdc_error_gain(0.01, eta, eta, y0, y0, e_d)) / q
    pulses = value(samples, "qent_pump_pulses_total", **pair)
    coincidences = sum(s.value for s in samples["qent_coincidences_total"]) + sum(
        s.value for s in samples["qent_chsh_coincidences_total"])
    assert abs(coincidences - pulses * q) < 5 * math.sqrt(pulses * q)
    window_coincidences = 3e8 * q * 0.9 / 4  # per matching basis over the sliding window
    for basis in ("Z", "X"):
        qber = value(samples, "qkd_qber_ratio", basis=basis, **pair)
        assert abs(qber - e) < 5 * math.sqrt(e * (1 - e) / window_coincidences)
        assert value(samples, "qent_visibility_ratio", basis=basis, **pair) == pytest.approx(1 - 2 * qber)
        assert qber < value(samples, "qkd_qber_upper_bound_ratio", basis=basis, **pair)
    s, sigma = value(samples, "qent_chsh_value", **pair), value(samples, "qent_chsh_value_stddev", **pair)
    assert abs(s - 2 * math.sqrt(2) * (1 - 2 * e)) < 5 * sigma and s - 5 * sigma > 2
    assert 0 < value(samples, "qent_fidelity_lower_bound_ratio", **pair) < 1 - 1.5 * e
    assert value(samples, "qent_coincidence_to_accidental", **pair) > 10
    asymptotic = value(samples, "qkd_asymptotic_secret_key_rate_bits_per_second", **pair)
    finite = value(samples, "qkd_secret_key_rate_bits_per_second", **pair)
    assert 0 < finite < asymptotic
    # channel loss from both arms' Klyshko efficiencies: 20 km × 0.2 dB/km end to end
    assert value(samples, "qkd_channel_loss_db", **pair) == pytest.approx(4.0, abs=0.3)
    assert value(samples, "qent_heralding_efficiency_ratio", side="a", **pair) == pytest.approx(eta, rel=0.05)
    plob = value(samples, "qkd_repeaterless_bound_bits_per_second", **pair)
    assert plob == pytest.approx(-math.log2(1 - 10 ** -0.4) * 1e8, rel=0.05)  # 1e8 pump pulses/s
    assert value(samples, "qkd_repeaterless_bound_ratio", **pair) == pytest.approx(finite / plob, rel=0.05)

    # heralded pairs: Barrett–Kok η²/2 per attempt, fidelity after the herald delay and storage
    eta_arm = 0.4 * 0.9 * 10 ** (-1 * 0.2 / 10)
    p = eta_arm**2 / 2
    attempts = value(samples, "qent_heralding_attempts_total", **memory)
    successes = value(samples, "qent_heralding_successes_total", **memory)
    assert abs(successes - attempts * p) < 5 * math.sqrt(attempts * p * (1 - p))
    assert (value(samples, "qent_heralding_success_probability_lower_bound_ratio", **memory) < p
            < value(samples, "qent_heralding_success_probability_upper_bound_ratio", **memory))
    fidelity = float(heralded.dephased_fidelity(0.9, heralded.herald_delay_s(2.0) + 0.005, 0.01))
    assert (value(samples, "qent_heralded_fidelity_lower_bound_ratio", **memory) < fidelity
            < value(samples, "qent_heralded_fidelity_upper_bound_ratio", **memory))
    measured = np.array([s.value for s in samples["qent_heralded_pair_measurements_total"]]).sum()
    assert 0 < measured <= successes
