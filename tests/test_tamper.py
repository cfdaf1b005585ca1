"""Tamper detection: false-alarm rate as configured, detection delay as the theory predicts, the attack
signatures that must alarm and the benign faults that must not, and the exporter end to end.

Links are the simulator's decoy-BB84 model (``sample_window``), many at once in accelerated time
(``tamper_scenarios``); the detectors are the exporter's own (``changedetect.update``).
"""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats
from web import TOKEN

from qtelemetry.drivers import tamper_scenarios as ts
from qtelemetry.drivers.simulated_bb84 import expected_counts
from qtelemetry.estimation import changedetect as cd

DETECTOR = {name: j for j, name in enumerate(cd.DETECTORS)}


def test_window_llr_is_the_exact_binomial_likelihood_ratio():
    k, n = np.array([0, 3, 10, 250]), np.array([5, 40, 10, 30_000])
    p0, p1 = 0.01, 0.0225
    expected = stats.binom.logpmf(k, n, p1) - stats.binom.logpmf(k, n, p0)
    np.testing.assert_allclose(cd.binomial_llr(k, n, p0, p1), expected, rtol=1e-12)


def test_overshoot_function_agrees_with_siegmunds_approximations():
    """ν(δ) ≈ e^(−0.583δ) for small δ and → 2/δ² for large δ (Siegmund 1985, ch. X)."""
    small = np.array([0.05, 0.2, 0.5])
    np.testing.assert_allclose(cd.log_overshoot(small), -0.583 * small, atol=0.01)
    assert cd.log_overshoot(np.array([60.0]))[0] == pytest.approx(math.log(2 / 60.0**2), abs=1e-6)


def test_no_attack_false_alarm_rate_is_the_configured_one():
    """1,000 links, 400 windows each after a 300-window warm-up, mean time between false alarms set to
    60 windows: each alarm re-arms the link. Counts per window are small (1e5 pulses at 25 km:
    ~300 sifted Z bits, ~1 vacuum click), the regime where the threshold formula is not just a bound.
    One-sided test at 99 %: the alarms must not exceed the 99 % quantile of a Poisson count at the
    configured rate; and not fall below half of it, or the stated rate would be no more than a bound."""
    n, warm, after = 1000, 300, 400
    p = ts.links(n, fiber_length_km=25, clock_rate_hz=1e5, dark_count_probability=1e-4)
    run = ts.simulate(p, None, 0, warm + after, 1.0, ts.settings(n, mean_time_between_false_alarms_seconds=60,
                                                                 warmup_seconds=warm),
                      np.random.default_rng(5), rearm=True)
    configured = n * after / 60
    observed = int(run.events.sum())
    assert observed <= stats.poisson.ppf(0.99, configured), (observed, configured)
    assert observed >= 0.5 * configured, (observed, configured)


def _qber_llr_moments(p: object, window_s: float, p0: float, p1: float) -> tuple[float, float]:
    """E1[llr] and sd1[llr] of one window of Z signal bits of links ``p`` (first link), written out."""
    counts = expected_counts(p)
    n = counts["sifted"][0, 0, 0] * window_s
    q = counts["errors"][0, 0, 0] / counts["sifted"][0, 0, 0]  # the attacked QBER
    c = math.log(p1 / p0) - math.log((1 - p1) / (1 - p0))
    return n * (q * math.log(p1 / p0) + (1 - q) * math.log((1 - p1) / (1 - p0))), abs(c) * math.sqrt(n * q * (1 - q))


def test_intercept_resend_on_5_percent_at_25_km_alarms_in_the_first_window():
    """Production settings (30 days, 1e8 pulses/s, 1 s windows). Predicted delay: E1[llr] per window is
    ~1,400 (316,000 sifted Z bits, QBER 1.0 % → 2.24 %) against a threshold of ~20, so the first
    attacked window crosses it: delay 1 window, for every link."""
    n, warm = 50, 120
    p = ts.links(n, fiber_length_km=25)
    attacked = ts.with_fault(p, "intercept-resend", 0.05)
    run = ts.simulate(p, attacked, warm + 10, warm + 12, 1.0, ts.settings(n, warmup_seconds=warm),
                      np.random.default_rng(1))
    base = run.state.baseline[0, 0]
    k1, _ = _qber_llr_moments(attacked, 1.0, base, base + 0.0125)
    assert k1 > 10 * run.state.threshold[:, 0].max()
    assert np.all(run.first_alarm[:, DETECTOR["qber_z"]] == warm + 10)
    assert np.all(np.isnan(run.first_alarm[:, [DETECTOR["decoy_gain"], DETECTOR["vacuum_gain"]]]))


def test_detection_delay_follows_siegmunds_formula_where_windows_are_small():
    """5 % intercept-resend at 25 km with 1e5 pulses per window (~300 sifted Z bits): the expected delay
    from S = 0 is (h' + e^(−h') − 1)/K1 with h' = h + 1.166 δ1 (Siegmund 1985, corrected diffusion),
    ~10 windows. The mean over 400 links must be within 25 % of it (the approximation's error at
    δ ≈ 1.5 and the rounding up to whole windows are each ~10 %)."""
    n, warm = 400, 300
    p = ts.links(n, fiber_length_km=25, clock_rate_hz=1e5)
    attacked = ts.with_fault(p, "intercept-resend", 0.05)
    onset = warm + 5
    run = ts.simulate(p, attacked, onset, onset + 60, 1.0, ts.settings(n, warmup_seconds=warm),
                      np.random.default_rng(2))
    delays = run.first_alarm[:, DETECTOR["qber_z"]] - onset + 1
    assert not np.isnan(delays).any()
    base = run.state.baseline[:, 0]
    predicted = []
    for h, p0 in zip(run.state.threshold[:, 0], base):
        k1, sd1 = _qber_llr_moments(attacked, 1.0, p0, p0 + 0.0125)
        x = h + 1.166 * sd1
        predicted.append((x + math.exp(-x) - 1) / k1)
    assert np.mean(delays) == pytest.approx(np.mean(predicted), rel=0.25)


@pytest.mark.parametrize("fraction", [1.0, 0.05])
def test_detector_blinding_alarms_on_the_decoy_statistics_not_the_qber(fraction):
    n, warm = 50, 120
    p = ts.links(n, fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "detector-blinding", fraction), warm, warm + 30, 1.0,
                      ts.settings(n, warmup_seconds=warm), np.random.default_rng(3))
    decoy_stats = run.first_alarm[:, [DETECTOR["decoy_gain"], DETECTOR["vacuum_gain"]]]
    assert np.all(np.nanmin(decoy_stats, axis=1) <= warm + 2)
    assert np.all(np.isnan(run.first_alarm[:, [DETECTOR["qber_z"], DETECTOR["qber_x"]]]))


@pytest.mark.parametrize("choice", [dict(p_signal=0.9, p_decoy=1e-13, p_vacuum=0.1 - 1e-13),
                                    dict(p_signal=1e-13, p_decoy=0.9, p_vacuum=0.1 - 1e-13)],
                         ids=["no decoy pulses", "no signal pulses"])
def test_a_statistic_without_trials_in_the_warm_up_never_alarms_and_shows_nan(choice):
    """A valid config whose warm-up has no decoy (or no signal) pulse gives the decoy statistics no
    baseline: their level is NaN, never an alarm and never a RuntimeWarning (the config fuzzer found
    0/0 here); the other detectors still run, and with decoys missing the QBER ones still see Eve."""
    n, warm = 5, 60
    p = ts.links(n, fiber_length_km=25, **choice)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = ts.simulate(p, ts.with_fault(p, "intercept-resend", 0.25), warm, warm + 5, 1.0,
                          ts.settings(n, warmup_seconds=warm), np.random.default_rng(8))
        level = cd.level(run.state)
    assert np.isnan(run.first_alarm[:, DETECTOR["decoy_gain"]]).all()
    assert np.isnan(level[:, DETECTOR["decoy_gain"]]).all()
    assert np.isfinite(level[:, DETECTOR["vacuum_gain"]]).all()
    if choice["p_decoy"] > 0.5:
        return  # no signal pulses: no signal QBER either
    assert np.all(run.first_alarm[:, DETECTOR["qber_z"]] == warm)


def test_photon_number_splitting_alarms_the_decoy_gain_detector_downwards_not_the_qber():
    """PNS on 25 % of the pulses at 25 km (production settings). The gains, written out (η = 10^(−0.5)·0.1,
    Y0 = 1e-6; Eve's photon clicks Σₙ≥₂ P(n|k)(1 − 0.9^(n−1)) = 0.0104707 at μ = 0.5, 0.000482120 at
    ν = 0.1): Q_μ = 0.75·(Y0 + 1 − e^(−0.5η)) + 0.25·(Y0 + 0.0104707) = 0.014384, Q_ν = 0.0024895, so the
    decoy/signal gain ratio falls from 0.2013 to 0.1731 (−14 %), past half the detector's design
    shift (÷1.2). One window's decoy share among ~1.2e6 clicks then has an expected llr of ~280
    against a threshold of ~10.5: the first attacked window alarms. Eve adds no errors and leaves the
    vacuum pulses alone: the QBER and vacuum-gain detectors stay quiet for 10 minutes."""
    n, warm = 50, 120
    p = ts.links(n, fiber_length_km=25)
    attacked = {"pulses": np.zeros((n, 3)), "detections": np.zeros((n, 3))}

    def observe(t: int, counts: dict, state: cd.DetectorState) -> None:
        if t >= warm:
            for k in attacked:
                attacked[k] += counts[k]

    run = ts.simulate(p, ts.with_fault(p, "photon-number-splitting", 0.25), warm, warm + 600, 1.0,
                      ts.settings(n, warmup_seconds=warm), np.random.default_rng(7), observe=observe)
    gain = attacked["detections"].sum(axis=0) / attacked["pulses"].sum(axis=0)
    assert gain[1] / gain[0] == pytest.approx(0.1731, rel=0.005)
    np.testing.assert_allclose(run.state.baseline[:, 2], 0.2013, rtol=0.005)  # learned before the attack
    assert np.all(run.first_alarm[:, DETECTOR["decoy_gain"]] == warm)
    down, up = cd.STATISTICS.index("decoy_down"), cd.STATISTICS.index("decoy_up")
    assert np.all(run.state.statistic[:, down] >= run.state.threshold[:, down])
    assert np.all(run.state.statistic[:, up] < run.state.threshold[:, up])
    assert np.isnan(run.first_alarm[:, [DETECTOR["qber_z"], DETECTOR["qber_x"], DETECTOR["vacuum_gain"]]]).all()


@pytest.mark.parametrize("factor, side", [(20.0, "vacuum_up"), (0.05, "vacuum_down")])
def test_dark_counts_moving_alarm_the_vacuum_gain_detector_on_their_side(factor, side):
    """Dark counts ×20 (detector noise; the runbook tells it from blinding by the QBER rising with it)
    and ÷20 (a detector out of Geiger mode, as blinded ones are) at 25 km: ~10 vacuum clicks per
    window against the baseline's Y0 = 1e-6 of 1e7 vacuum pulses. The vacuum-gain detector alarms on
    that side (measured: in the first window up, the third down; asserted: within a minute); the
    gain-ratio detector, blind to dark counts next to ~1e6 signal clicks, stays quiet."""
    n, warm = 50, 120
    p = ts.links(n, fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "dark-count-rise", factor), warm, warm + 60, 1.0,
                      ts.settings(n, warmup_seconds=warm), np.random.default_rng(9))
    j = cd.STATISTICS.index(side)
    assert np.all(run.first_alarm[:, DETECTOR["vacuum_gain"]] < warm + 60)
    assert np.all(run.state.statistic[:, j] >= run.state.threshold[:, j])
    other = cd.STATISTICS.index("vacuum_down" if side == "vacuum_up" else "vacuum_up")
    assert np.all(run.state.statistic[:, other] < run.state.threshold[:, other])
    assert np.isnan(run.first_alarm[:, DETECTOR["decoy_gain"]]).all()


def test_a_fiber_cut_is_no_signal_not_tampering():
    """No light: QKDNoSignal's case. The QBER and gain-ratio statistics skip windows without signal
    (their counts are dark counts: 50 % QBER, decoy share = vacuum share), the vacuum gain is unmoved."""
    n, warm = 20, 120
    p = ts.links(n, fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "fiber-cut"), warm, warm + 120, 1.0, ts.settings(n, warmup_seconds=warm),
                      np.random.default_rng(6))
    assert np.isnan(run.first_alarm).all()


@pytest.mark.parametrize("km", [25, 100])
@pytest.mark.parametrize("kind", ["fiber-bend", "source-power-drift"])
def test_fiber_bend_and_source_drift_do_not_alarm_as_tampering(km, kind):
    """A 3 dB bend (the fault's default) and a source 1.5x brighter, for 10 minutes of 50 links each
    at production settings: no detector alarms."""
    n, warm = 50, 120
    p = ts.links(n, fiber_length_km=km)
    run = ts.simulate(p, ts.with_fault(p, kind), warm, warm + 600, 1.0, ts.settings(n, warmup_seconds=warm),
                      np.random.default_rng(4))
    assert np.isnan(run.first_alarm).all()


def _tamper_samples(served: object) -> dict[tuple[str, str], float]:
    status, _, text = served.request("GET", "/metrics")  # type: ignore[attr-defined]
    assert status == 200
    return {(s.name, s.labels.get("detector", "")): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("qkd_tamper") and s.labels.get("link") == "target"}


def _wait_for(served: object, predicate, timeout: float = 20.0) -> dict[tuple[str, str], float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = _tamper_samples(served)
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_exporter_shows_an_injected_eavesdropper_and_rearms_on_the_control_plane(endpoint, tmp_path):
    """A real exporter (0.1 s windows, 1 s warm-up): warm-up exported, then intercept-resend on 5 % of
    the pulses injected through /-/faults sets qkd_tamper_alarm 1 on /metrics; a reload keeps it;
    POST /-/tamper re-arms once the attack has ended."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    served = endpoint(f"exporter:\n  admin_token_file: {token}\n  window_seconds: 0.1\n  stall_timeout_seconds: 5\n"
                      "  tamper: {warmup_seconds: 1}\n"
                      "links:\n  - name: target\n    driver: {type: simulated-bb84, fiber_length_km: 25, seed: 3}\n")
    assert _wait_for(served, lambda s: ("qkd_tamper_warmup", "") in s).get(("qkd_tamper_warmup", "")) == 1.0
    armed = _wait_for(served, lambda s: s.get(("qkd_tamper_warmup", "")) == 0.0)
    assert armed[("qkd_tamper_alarm", "qber_z")] == 0.0 and armed[("qkd_tamper_statistic", "qber_z")] < 1.0
    fault = json.dumps({"link": "target", "kind": "intercept-resend", "magnitude": 0.05})
    assert served.control("POST", "/-/faults", fault)[0] == 200
    alarmed = _wait_for(served, lambda s: s.get(("qkd_tamper_alarm", "qber_z")) == 1.0)
    assert alarmed[("qkd_tamper_alarm", "qber_z")] == 1.0 and alarmed[("qkd_tamper_statistic", "qber_z")] >= 1.0
    assert alarmed[("qkd_tamper_alarm", "vacuum_gain")] == 0.0
    assert served.reloader.reload() == []
    assert _tamper_samples(served)[("qkd_tamper_alarm", "qber_z")] == 1.0, "a reload keeps the alarm"
    assert served.control("DELETE", "/-/faults", json.dumps({"link": "target"}))[0] == 200
    assert served.control("POST", "/-/tamper", json.dumps({"link": "nope"}))[0] == 400
    assert served.request("POST", "/-/tamper", json.dumps({"link": "target"}))[0] == 401
    status, _, body = served.control("POST", "/-/tamper", json.dumps({"link": "target"}))
    assert status == 200 and json.loads(body) == {"rearmed": "target", "relearn": False}
    rearmed = _wait_for(served, lambda s: s.get(("qkd_tamper_alarm", "qber_z")) == 0.0)
    assert rearmed[("qkd_tamper_alarm", "qber_z")] == 0.0


def test_config_errors_name_the_field_and_links_override_the_exporter_defaults():
    from qtelemetry.config import parse_config
    from qtelemetry.configfile import ConfigError
    from qtelemetry.runtime.tamper import TamperDetectors

    link = "  - name: {}\n    driver: {{type: simulated-bb84, fiber_length_km: 25}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config("exporter: {tamper: {qber_shift: 0.7}}\nlinks:\n" + link.format("a"))
    assert "exporter.tamper.qber_shift" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config("links:\n" + link.format("a") + "    tamper: {warmup: 5}\n")
    assert "links[0].tamper.warmup" in str(caught.value)
    config = parse_config("exporter: {tamper: {warmup_seconds: 60, qber_shift: 0.02}}\nlinks:\n" + link.format("a")
                          + link.format("b") + "    tamper: {qber_shift: 0.005}\n")
    detectors = TamperDetectors(config.links, config.exporter.tamper)
    assert detectors.settings.qber_shift.tolist() == [0.02, 0.005]
    assert detectors.settings.warmup_s.tolist() == [60.0, 60.0]
