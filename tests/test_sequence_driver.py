"""The SeQUeNCe driver end to end: a real `qtelemetry run` with a BB84 + Cascade link and a
Barrett–Kok link simulated by SeQUeNCe, scraped over HTTP; then a hung and a killed simulation.

What is exported is checked against what SeQUeNCe's own objects reported (BB84's per-key
``error_rates``, Cascade's released keys, the entanglement attempts and successes and the
memories' ``fidelity``), which the simulation process writes to its reference log, and against
the physics: Barrett & Kok, PRA 71, 060310 (2005), heralds with probability η_A·η_B/2; the BB84
QBER follows from the channel's polarisation fidelity (derived below).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from pathlib import Path

import pytest
from scipy.stats import beta

from conftest import value
from qtelemetry.config import parse_config
from qtelemetry.errors import ConfigError

#: Both links' physics (no dark counts, so the herald and QBER models below are exact).
FIBER_KM, ATTENUATION = 1.0, 0.2
POLARIZATION_FIDELITY, MU, BOB_EFFICIENCY = 0.99, 1.0, 0.8
BK_FIBER_KM, MEMORY_EFFICIENCY, MEMORY_FIDELITY, BSM_EFFICIENCY = 2.0, 0.9, 0.9, 0.9
#: Tail probability of the statistical checks (two-sided).
ALPHA = 1e-3
#: The driver's log line for each simulation process it starts.
STARTED = re.compile(r'msg="SeQUeNCe simulation started" pid=(\d+) kind=([a-z0-9-]+)')


def config(tmp_path: Path) -> str:
    return f"""
exporter: {{window_seconds: 0.5, sliding_windows: 2000, stall_timeout_seconds: 600}}
links:
  - name: sequence-bb84
    driver:
      type: sequence
      window_simulated_seconds: 0.05  # holds BB84's first key (10,000 sifted bits, which Cascade asks for first)
      seed: 11
      poll_interval_seconds: 0.2
      reference_log_file: {tmp_path / "bb84.jsonl"}
      simulation: {{kind: bb84-cascade, fiber_length_km: {FIBER_KM}, attenuation_db_per_km: {ATTENUATION},
                   polarization_fidelity: {POLARIZATION_FIDELITY}, source_frequency_hz: 1.0e6,
                   mean_photon_number: {MU}, detector_efficiency: {BOB_EFFICIENCY}, dark_count_rate_hz: 0}}
  - name: sequence-bk
    driver:
      type: sequence
      window_simulated_seconds: 0.02
      seed: 12
      poll_interval_seconds: 0.2
      reference_log_file: {tmp_path / "bk.jsonl"}
      simulation: {{kind: barrett-kok, fiber_length_km: {BK_FIBER_KM}, attenuation_db_per_km: {ATTENUATION},
                   memory_efficiency: {MEMORY_EFFICIENCY}, memory_fidelity: {MEMORY_FIDELITY},
                   detector_efficiency: {BSM_EFFICIENCY}, dark_count_rate_hz: 0}}
  - name: sequence-hung
    driver:
      type: sequence
      timeout_seconds: 0.3
      poll_interval_seconds: 5
      simulation: {{kind: barrett-kok}}
"""


def reference(path: Path, windows: int) -> list[dict]:
    """SeQUeNCe's own figures of the first ``windows`` windows (the log line follows the window by a moment)."""
    deadline = time.monotonic() + 30
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= windows or time.monotonic() > deadline:
            return [json.loads(line)["sequence"] for line in lines[:windows]]
        time.sleep(0.1)


def interval(k: float, n: float) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval of a binomial proportion at 1 − ALPHA."""
    return (beta.ppf(ALPHA / 2, k, n - k + 1) if k > 0 else 0.0,
            beta.ppf(1 - ALPHA / 2, k + 1, n - k) if k < n else 1.0)


def bb84_qber_model() -> float:
    """QBER of sifted bits, from SeQUeNCe's model: Poisson(μ) photons, each kept with η = 10^(−αL/10)·η_det;
    a photon keeps its polarisation with probability F, else takes a random one (error ½). A pulse
    gives a bit when every detected photon hits the same detector; k detected photons are Poisson(μη):
    P(all right) = e^(−μη)(e^(μη·r) − 1), P(all wrong) = e^(−μη)(e^(μη·w) − 1), w = (1 − F)/2, r = 1 − w."""
    mu_eta = MU * 10 ** (-ATTENUATION * FIBER_KM / 10) * BOB_EFFICIENCY
    w = (1 - POLARIZATION_FIDELITY) / 2
    return math.expm1(mu_eta * w) / (math.expm1(mu_eta * w) + math.expm1(mu_eta * (1 - w)))


def test_sequence_links_export_what_sequence_reports(start_exporter, tmp_path):
    exporter = start_exporter(config(tmp_path))

    def enough(samples: dict) -> bool:
        def total(name: str, link: str) -> float:
            return sum(s.value for s in samples.get(name, []) if s.labels["link"] == link)
        return (total("qkd_sifted_detections_total", "sequence-bb84") > 0
                and total("qent_heralding_successes_total", "sequence-bk") >= 100)

    samples = exporter.wait_for(enough, timeout=240)

    # --- BB84 + Cascade: the exported counts are SeQUeNCe's keys, bit for bit -----------------
    windows = int(value(samples, "qlink_batches_total", link="sequence-bb84"))
    own = reference(tmp_path / "bb84.jsonl", windows)
    keys = [key for window in own for key in window["bb84_keys"]]
    sifted = {b: value(samples, "qkd_sifted_detections_total", link="sequence-bb84", basis=b, intensity="signal")
              for b in "ZX"}
    errors = {b: value(samples, "qkd_errors_total", link="sequence-bb84", basis=b, intensity="signal") for b in "ZX"}
    assert keys, "SeQUeNCe's BB84 made no key in the windows exported"
    assert sum(sifted.values()) == sum(length for length, _ in keys)
    assert sum(errors.values()) == sum(round(length * rate) for length, rate in keys)  # BB84.error_rates
    qber = {b: value(samples, "qkd_qber_ratio", link="sequence-bb84", basis=b) for b in "ZX"}
    assert math.isclose(sum(qber[b] * sifted[b] for b in "ZX"), sum(errors.values()), abs_tol=1e-6)
    low, high = interval(sum(errors.values()), sum(sifted.values()))
    assert low <= bb84_qber_model() <= high
    for b in "ZX":
        assert value(samples, "qkd_qber_upper_bound_ratio", link="sequence-bb84", basis=b) >= qber[b]
    cascade = own[-1]
    assert value(samples, "qkd_corrected_key_bits_total", link="sequence-bb84") == (
        cascade["cascade_valid_keys"] * cascade["cascade_key_length"])
    assert value(samples, "qkd_pulses_total", link="sequence-bb84", intensity="signal") >= value(
        samples, "qkd_detections_total", link="sequence-bb84", intensity="signal") > 0

    # --- Barrett–Kok: attempts and heralds are SeQUeNCe's; the rate is Barrett & Kok's ------------
    windows = int(value(samples, "qlink_batches_total", link="sequence-bk"))
    own = reference(tmp_path / "bk.jsonl", windows)[-1]
    attempts = value(samples, "qent_heralding_attempts_total", link="sequence-bk")
    successes = value(samples, "qent_heralding_successes_total", link="sequence-bk")
    assert (attempts, successes) == (own["attempts"], own["successes"])
    assert own["mismatched_outcomes"] == 0
    assert math.isclose(value(samples, "qent_heralding_success_probability_ratio", link="sequence-bk"),
                        successes / attempts)
    eta = MEMORY_EFFICIENCY * 10 ** (-ATTENUATION * BK_FIBER_KM / 2 / 10) * BSM_EFFICIENCY
    low, high = interval(successes, attempts)
    assert low <= eta**2 / 2 <= high
    # Fidelity from the sampled Pauli measurements brackets SeQUeNCe's own figures: Memory.fidelity and the
    # exact overlap of the quantum manager's state with Φ+, averaged over heralded pairs.
    measured = sum(value(samples, "qent_heralded_pair_measurements_total", link="sequence-bk", basis=b, outcome=o)
                   for b in "XYZ" for o in ("correct", "error"))
    assert measured == successes
    low = value(samples, "qent_heralded_fidelity_lower_bound_ratio", link="sequence-bk")
    high = value(samples, "qent_heralded_fidelity_upper_bound_ratio", link="sequence-bk")
    assert math.isclose(own["memory_fidelity_sum"] / successes, MEMORY_FIDELITY)
    assert low <= MEMORY_FIDELITY <= high
    assert low <= own["state_fidelity_sum"] / successes <= high

    # --- a hung simulation: killed, counted, the link down, the others up ------------------------
    samples = exporter.wait_for(lambda s: value(s, "qlink_driver_errors_total", link="sequence-hung",
                                                reason="simulation_hung") >= 1, timeout=30)
    assert value(samples, "qlink_up", link="sequence-hung") == 0
    assert value(samples, "qlink_up", link="sequence-bk") == 1

    # --- a simulation that dies: counted, and started afresh ------------------------------------
    started = STARTED.findall(exporter.log())
    os.kill(next(int(pid) for pid, kind in started if kind == "bb84-cascade"), signal.SIGKILL)
    exporter.wait_for(lambda s: value(s, "qlink_driver_errors_total", link="sequence-bb84",
                                      reason="simulation_exited") == 1, timeout=60)
    deadline = time.monotonic() + 30
    while [kind for _, kind in STARTED.findall(exporter.log())].count("bb84-cascade") < 2:
        assert time.monotonic() < deadline, "the dead simulation was not restarted"
        time.sleep(0.1)


@pytest.mark.parametrize("setting, field", [
    ("simulation: {kind: barrett-kok, memory_efficiency: 1.5}", "simulation.barrett-kok.memory_efficiency"),
    ("simulation: {kind: bb84}", "simulation"),
    ("simulation: {kind: bb84-cascade}, reference_log_file: /", "reference_log_file"),
])
def test_bad_sequence_settings_name_the_field(setting, field):
    with pytest.raises(ConfigError) as raised:
        parse_config(f"links:\n  - name: l\n    driver: {{type: sequence, {setting}}}\n")
    assert f"links[0].driver.{field}" in str(raised.value)
