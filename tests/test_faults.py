"""Fault scenarios: each fault's signature follows from the channel model, not from a script."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import value

from qtelemetry.config import ConfigError, parse_config
from qtelemetry.drivers.faults import FAULT_KINDS, FaultConfig
from qtelemetry.drivers.simulated import parameter_table
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config, click_model
from qtelemetry.estimation import decoy
from qtelemetry.estimation.bb84 import BB84_DECOY

BASE = dict(type="simulated-bb84", fiber_length_km=25, attenuation_db_per_km=0.2, detector_efficiency=0.1,
            dark_count_probability=1e-6, misalignment_error=0.01, mu=0.5, nu=0.1)


def estimates_under(**changes: float) -> dict[str, float]:
    """Estimator output for noise-free counts (10^12 pulses) of the model under ``changes``."""
    cfg = SimulatedBB84Config(**BASE).model_copy(update=changes)
    q, error = click_model(cfg)
    pulses = 1e12 * np.array([0.8, 0.1, 0.1])
    sifted = np.stack([pulses * q / 4] * 2)
    counts = {"pulses": pulses, "detections": pulses * q, "sifted": sifted, "errors": sifted * error}
    params = {k: np.array([v]) for k, v in cfg.estimation_params().items()}
    est = BB84_DECOY.estimate({k: v[None] for k, v in counts.items()}, np.array([1000.0]), params, 0.99)
    return {k: float(v[0]) for k, v in est.items()}


def test_fault_ramps_holds_and_ends():
    fault = FaultConfig(kind="fiber-bend", start_s=10, ramp_s=4, duration_s=20, magnitude=6)
    levels = [fault.level(t) for t in (9, 10, 12, 14, 30, 34, 34.1)]
    assert levels == [0, 0, 0.5, 1, 1, 1, 0]
    links = [SimulatedBB84Config(**BASE, insertion_loss_db=1.0, faults=faults) for faults in ([fault], [])]
    params, active = SimulatedBB84Config.fleet(links, started=0.0).effective_parameters(12)
    assert params.insertion_loss_db.tolist() == [4.0, 1.0]  # only the faulted link moves
    assert active[:, FAULT_KINDS.index("fiber-bend")].tolist() == [True, False] and active.sum() == 1


def test_intercept_resend_gives_a_quarter_error_on_intercepted_pulses():
    """Intercept-resend with random bases: 1/2 wrong basis × 1/2 wrong bit = 25% QBER."""
    clean = estimates_under()
    full = estimates_under(eavesdrop_fraction=1.0)
    half = estimates_under(eavesdrop_fraction=0.5)
    assert full["qber_z"] == pytest.approx(0.25, abs=1e-9)
    assert half["qber_z"] == pytest.approx(0.5 * clean["qber_z"] + 0.125, abs=1e-9)
    assert full["secret_key_rate_bps"] == 0 and clean["secret_key_rate_bps"] > 0
    assert full["loss_db"] == pytest.approx(clean["loss_db"])  # Eve resends: no loss signature


def test_fiber_cut_and_bend_show_up_as_loss():
    assert estimates_under(insertion_loss_db=3.0)["loss_db"] == pytest.approx(8.0, abs=1e-6)
    cut = estimates_under(insertion_loss_db=300.0)
    assert math.isinf(cut["loss_db"]) and cut["secret_key_rate_bps"] == 0


def test_dark_count_rise_and_blinding_move_the_vacuum_gain_opposite_ways_of_qber():
    clean = estimates_under()
    noisy = estimates_under(dark_count_probability=2e-5)
    assert noisy["gain_vacuum"] == pytest.approx(2e-5)
    blinded = estimates_under(blinding_fraction=1.0)
    # Eve's faked clicks don't depend on intensity: vacuum pulses click like signal ones and
    # errors vanish. The decoy bound is fooled (it still certifies key), which is why the
    # vacuum-gain (dark-count) anomaly alert exists.
    assert blinded["gain_vacuum"] > 1000 * clean["gain_vacuum"]
    assert blinded["qber_z"] == 0 < blinded["secret_key_rate_bps"]


def _pns_photon_clicks(k: float, efficiency: float) -> float:
    """Σₙ≥₂ P(n|k)·(1 − (1 − η_B)^(n−1)), P(n|k) = e^(−k) kⁿ/n!: Bob's photon clicks when Eve keeps one
    photon of every multi-photon pulse and blocks the rest, summed term by term (Brassard et al. 2000)."""
    return math.fsum(math.exp(-k + n * math.log(k) - math.lgamma(n + 1)) * (1 - (1 - efficiency) ** (n - 1))
                     for n in range(2, 150)) if k > 0 else 0.0


@pytest.mark.parametrize("mu,nu,efficiency", [(0.5, 0.1, 0.1), (0.5, 1e-3, 1.0), (3.0, 0.05, 0.5),
                                              (0.8, 0.2, 0.45), (8.0, 2.0, 1e-3)])
def test_photon_number_splitting_gain_is_the_photon_number_sum(mu, nu, efficiency):
    """PNS on every pulse: Q = Y0 + Σₙ P(n)(1 − (1 − η_B)^(n−1)) per intensity, whatever the fibre (Eve's
    channel is lossless), errors only from misalignment and dark counts (1/2); vacuum pulses: Y0 alone.
    η_B = 1 and ν = 0.001 test the a = 1 − η_B → 0 and small-k ends of the closed form."""
    cfg = SimulatedBB84Config(**{**BASE, "mu": mu, "nu": nu, "detector_efficiency": efficiency, "pns_fraction": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q, error = click_model(cfg)
    y0, e_det = 1e-6, 0.01
    photons = np.array([_pns_photon_clicks(k, efficiency) for k in (mu, nu, 0.0)])
    np.testing.assert_allclose(q, y0 + photons, rtol=1e-10)
    np.testing.assert_allclose(error, (0.5 * y0 + e_det * photons) / (y0 + photons), rtol=1e-10)
    assert q[2] == y0 and error[2] == 0.5


def test_photon_number_splitting_limits_and_mixing_over_links():
    """s = 0: the channel model exactly (MQZL: Q = Y0 + 1 − e^(−ημ), η = 10^(−0.5)·0.1 at 25 km); s = 1:
    the decoy/signal gain ratio falls from ≈ ν/μ = 0.2 to at most (ν/μ)²·e^(μ−ν) = 0.06 (each term of the
    sum, e^(−k)kⁿ/n!·cₙ with n ≥ 2, shrinks by at least (ν/μ)²·e^(μ−ν) from k = μ to ν), the vacuum gain
    stays Y0; in between, each link mixes the two by its own fraction."""
    links = [SimulatedBB84Config(**BASE, pns_fraction=s) for s in (0.0, 0.3, 1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q, error = click_model(parameter_table(links))
    intensities, channel = np.array([0.5, 0.1, 0.0]), decoy.transmittance(25, 0.2) * 0.1
    np.testing.assert_array_equal(q[0], decoy.gain(channel, intensities, 1e-6))  # bit for bit: s = 0 adds nothing
    np.testing.assert_array_equal(error[0], decoy.error_gain(channel, intensities, 1e-6, 0.01) / q[0])
    clean_q = 1e-6 + (1 - np.exp(-10**-0.5 * 0.1 * intensities))
    np.testing.assert_allclose(q[0], clean_q, rtol=1e-12)
    np.testing.assert_allclose(error[0], (0.5e-6 + 0.01 * (clean_q - 1e-6)) / clean_q, rtol=1e-12)
    clean_ratio, attacked_ratio = q[0, 1] / q[0, 0], q[2, 1] / q[2, 0]
    assert clean_ratio == pytest.approx(0.2, rel=0.01)
    assert attacked_ratio < (0.1 / 0.5) ** 2 * math.exp(0.5 - 0.1) < 0.3 * clean_ratio
    assert q[2, 2] == 1e-6
    np.testing.assert_allclose(q[1], 0.7 * q[0] + 0.3 * q[2], rtol=1e-12)
    np.testing.assert_allclose(error[1] * q[1], 0.7 * error[0] * q[0] + 0.3 * error[2] * q[2], rtol=1e-12)


def test_photon_number_splitting_leaves_the_qber_and_the_decoy_bound_certifies_no_key():
    """Eve measures her photons after basis reconciliation: no errors added. The vacuum + weak decoy
    bound (MQZL §V.A) sees the missing single-photon yield: at s = 1 it certifies none, so no key."""
    clean, quarter, full = (estimates_under(pns_fraction=s) for s in (0.0, 0.25, 1.0))
    assert full["qber_z"] == pytest.approx(clean["qber_z"], abs=1e-4)
    assert 0 < quarter["secret_key_rate_bps"] < clean["secret_key_rate_bps"]
    assert full["secret_key_rate_bps"] == 0
    assert full["gain_vacuum"] == clean["gain_vacuum"]


def test_source_power_drift_biases_the_loss_estimate_by_the_drift_factor():
    """The estimator assumes the configured μ: a source 1.5× too bright looks 1.76 dB less lossy."""
    drifted = estimates_under(source_power_factor=1.5)
    assert drifted["loss_db"] == pytest.approx(5.0 - 10 * math.log10(1.5), abs=0.01)


def test_misalignment_drift_adds_to_qber():
    assert estimates_under(misalignment_error=0.06)["qber_z"] == pytest.approx(0.06, abs=0.001)


def test_key_store_drains_when_demand_exceeds_generation():
    link = SimulatedBB84Config(**BASE, key_buffer_capacity_bits=1000, key_buffer_initial_ratio=0.5)
    fleet = SimulatedBB84Config.fleet([link, link], started=0.0)
    supplies = [fleet.step_key_store(np.array([100.0, 0.0]), np.array([300.0, 0.0])) for _ in range(5)]
    assert [s["key_stored_bits"][0] for s in supplies] == [300, 100, 0, 0, 0]
    assert [s["key_delivered_bits"][0] for s in supplies] == [300, 300, 200, 100, 100]
    assert [s["key_stored_bits"][1] for s in supplies] == [500] * 5  # the other link's store is its own
    assert fleet.step_key_store(np.array([5000.0, 0.0]), np.zeros(2))["key_stored_bits"][0] == 1000  # full: surplus lost


def test_fault_that_does_not_apply_is_a_config_error():
    text = "links: [{name: l, driver: {type: simulated-bb84, fiber_length_km: 5, faults: [{kind: visibility-drop}]}}]"
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert "links[0].driver" in str(err.value) and "'visibility-drop' does not apply" in str(err.value)
    with pytest.raises(ConfigError, match="links\\[0\\].driver.faults\\[0\\].kind"):
        parse_config(text.replace("visibility-drop", "gremlins"))


RUNTIME = """
exporter:
  window_seconds: 0.1
  sliding_windows: 5
  admin_token_file: {token}
links:
  - name: target
    driver: {{type: simulated-bb84, fiber_length_km: 20, clock_rate_hz: 1.0e9, seed: 1}}
  - name: bystander
    driver: {{type: simulated-bb84, fiber_length_km: 20, clock_rate_hz: 1.0e9, seed: 2}}
  - name: scripted
    driver:
      type: simulated-bb84
      fiber_length_km: 20
      clock_rate_hz: 1.0e9
      key_consumption_bps: 1.0e9
      faults: [{{kind: fiber-bend, start_s: 0, magnitude: 4}}]
"""


def fault_cli(exporter_url: str, token_file, *args: str) -> subprocess.CompletedProcess:
    base = exporter_url.removesuffix("/metrics")
    return subprocess.run([sys.executable, "-m", "qtelemetry", "fault", *args[:1], "--url", base,
                           "--token-file", str(token_file), *args[1:]], capture_output=True, text=True, timeout=30)


def test_inject_and_clear_on_a_running_exporter(start_exporter, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-admin-token\n")
    exporter = start_exporter(RUNTIME.format(token=token))
    qber = lambda s, link: value(s, "qkd_qber_ratio", link=link, basis="Z")  # noqa: E731
    exporter.wait_for(lambda s: len(s.get("qkd_qber_ratio", [])) == 6)

    done = fault_cli(exporter.url, token, "inject", "--link", "target", "--kind", "intercept-resend")
    assert done.returncode == 0, done.stderr
    s = exporter.wait_for(lambda s: qber(s, "target") > 0.2)
    assert qber(s, "bystander") < 0.03
    assert value(s, "qlink_fault_active", link="target", kind="intercept-resend") == 1
    assert not [x for x in s["qlink_fault_active"] if x.labels["link"] == "bystander"]

    done = fault_cli(exporter.url, token, "clear", "--link", "target")
    assert done.returncode == 0 and done.stdout == "ended 1 fault on link target\n"
    exporter.wait_for(lambda s: qber(s, "target") < 0.03)

    # the scripted bend shows as a loss step over the modelled 4 dB, and its key store runs dry
    s = exporter.scrape()
    assert value(s, "qkd_channel_loss_db", link="scripted") == pytest.approx(8.0, abs=0.5)
    assert value(s, "qkd_key_buffer_bits", link="scripted") == 0
    assert value(s, "qkd_key_delivered_bits_total", link="scripted") < value(s, "qkd_key_requested_bits_total", link="scripted")
    assert "s3cret" not in exporter.log()


def test_fault_endpoint_refuses_bad_requests(start_exporter, tmp_path):
    token = tmp_path / "token"
    token.write_text("right")
    exporter = start_exporter(RUNTIME.format(token=token))
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong")
    assert "bad or missing admin token" in fault_cli(exporter.url, wrong, "inject", "--link", "target",
                                                     "--kind", "fiber-cut").stderr
    assert "unknown link 'nowhere'" in fault_cli(exporter.url, token, "inject", "--link", "nowhere",
                                                 "--kind", "fiber-cut").stderr
    assert "does not apply" in fault_cli(exporter.url, token, "inject", "--link", "target",
                                         "--kind", "memory-decoherence").stderr


def test_fault_injection_is_off_without_a_token(start_exporter, tmp_path):
    exporter = start_exporter(None)
    token = tmp_path / "token"
    token.write_text("anything")
    done = fault_cli(exporter.url, token, "inject", "--link", "metro-10km", "--kind", "fiber-cut")
    assert done.returncode == 1 and "control plane (fault injection, reload) is disabled" in done.stderr
