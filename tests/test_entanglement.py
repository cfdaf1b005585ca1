"""Entangled-photon (SPDC, BBM92) model and estimators against analytic values.

Statistical tolerances are Z_TOL standard deviations of the binomial/Poisson count behind each
estimate (delta method where an estimate is a function of counts), so a correct estimator fails
with probability ~1e-6 per check; the draws are seeded anyway.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation.protocols import KEY_STORE_KINDS
from qtelemetry.estimation import entanglement as ent
from qtelemetry.estimation.decoy import binary_entropy

Z_TOL = 5.0
F_EC = 1.16
TEST_FRACTION = 0.1
PULSES = 10**9  # one window: 1 s at a 1 GHz pump clock
SQRT2 = math.sqrt(2.0)

# Three links at once (vectorised): (λ, η_A, η_B, Y0A, Y0B, e_d)
LINKS = np.array([
    [0.05, 0.10, 0.10, 1e-6, 1e-6, 0.01],   # bright, metro
    [0.02, 0.05, 0.02, 1e-6, 2e-6, 0.02],   # asymmetric arms
    [0.10, 0.01, 0.01, 1e-5, 1e-5, 0.005],  # lossy, multi-pair noise matters
]).T


def exact_photon_number_sum(lam: float, eta_a: float, eta_b: float, n_max: int = 200) -> tuple[float, float]:
    """(Q, E·Q) summed over n pairs from first principles, Y0 = e_d = 0.

    The n-pair polarisation state measured in the H/V basis gives m H-photons to Alice and
    n − m to Bob, m uniform on 0..n (Ma, Fung, Lo 2007: the n-pair state); each photon is detected with η;
    a side where both detectors click assigns a random bit.
    """
    n = np.arange(n_max)[:, None]
    m = np.arange(n_max)[None, :]
    weight = np.where(m <= n, lam**n / (1 + lam) ** (n + 2), 0.0)  # P(n)/(n+1)

    def clicks(h, v, eta):  # P(only H), P(only V), P(both)
        ph, pv = 1 - (1 - eta) ** h, 1 - (1 - eta) ** v
        return ph * (1 - pv), pv * (1 - ph), ph * pv

    a_h, a_v, a_b = clicks(m, np.maximum(n - m, 0), eta_a)
    b_h, b_v, b_b = clicks(np.maximum(n - m, 0), m, eta_b)  # Bob's photons are anti-correlated
    q = (a_h + a_v + a_b) * (b_h + b_v + b_b)
    # anti-correlated outcomes are correct; a double click gives a random bit
    err = a_h * b_h + a_v * b_v + 0.5 * (a_b * (b_h + b_v) + b_b * (a_h + a_v)) + 0.5 * a_b * b_b
    return float(np.sum(weight * q)), float(np.sum(weight * err))


@pytest.mark.parametrize("lam, eta_a, eta_b", [(0.5, 0.3, 0.6), (0.1, 0.05, 0.9), (1.0, 1.0, 1.0), (0.02, 0.01, 0.2)])
def test_closed_forms_equal_photon_number_sum(lam, eta_a, eta_b):
    q, eq = exact_photon_number_sum(lam, eta_a, eta_b)
    assert ent.pdc_gain(lam, eta_a, eta_b, 0.0, 0.0) == pytest.approx(q, rel=1e-10)
    assert ent.pdc_error_gain(lam, eta_a, eta_b, 0.0, 0.0, 0.0) == pytest.approx(eq, rel=1e-10)


def test_model_limits():
    # one pair, no background: the QBER is the intrinsic error e_d and Q = 2λη_Aη_B to first order
    lam = 1e-7
    q = ent.pdc_gain(lam, 0.3, 0.4, 0.0, 0.0)
    assert q == pytest.approx(2 * lam * 0.3 * 0.4, rel=1e-5)
    assert ent.pdc_error_gain(lam, 0.3, 0.4, 0.0, 0.0, 0.03) / q == pytest.approx(0.03, rel=1e-5)
    # background only: clicks are random, E = e0 = 1/2
    assert ent.pdc_error_gain(0.0, 0.3, 0.4, 1e-3, 1e-3, 0.03) / ent.pdc_gain(0.0, 0.3, 0.4, 1e-3, 1e-3) == pytest.approx(0.5)
    # weak source without background: CAR = (C − A)/A → 1/(2λ), the inverse mean pair number
    lam = 1e-3
    c = ent.pdc_gain(lam, 0.2, 0.1, 0.0, 0.0)
    a = ent.accidental_probability(lam, 0.2, 0.1, 0.0, 0.0)
    assert ent.coincidence_to_accidental(c, a) == pytest.approx(1 / (2 * lam), rel=2e-3)


def test_source_position_moves_loss_between_arms():
    mid_a, mid_b = ent.arm_transmittances(100.0, 0.2, 0.5, 0.8, 0.6)
    end_a, end_b = ent.arm_transmittances(100.0, 0.2, 0.0, 0.8, 0.6)
    assert mid_a == pytest.approx(0.8 * 0.1) and mid_b == pytest.approx(0.6 * 0.1)
    assert end_a == pytest.approx(0.8) and end_b == pytest.approx(0.6 * 0.01)
    assert mid_a * mid_b == pytest.approx(end_a * end_b)  # same total loss


def sample(links: np.ndarray, seed: int = 1, pulses: int = PULSES) -> tuple[dict, dict]:
    cells, acc = ent.outcome_probabilities(*links, TEST_FRACTION)
    counts = ent.sample_window(np.random.default_rng(seed), pulses, cells, acc)
    n = links.shape[1]
    est = ent.BBM92.estimate(counts, np.ones(n), params(n), 0.99)
    return counts, est


def params(n: int) -> dict[str, np.ndarray]:
    """Estimator parameters; detector efficiencies of 1 make the arms' η the whole channel."""
    return {"ec_efficiency": np.full(n, F_EC), "detector_efficiency_a": np.ones(n), "detector_efficiency_b": np.ones(n)}


def model(links: np.ndarray) -> dict[str, np.ndarray]:
    q = ent.pdc_gain(*links[:5])
    e = ent.pdc_error_gain(*links) / q
    return {"q": q, "e": e, "acc": ent.accidental_probability(*links[:5])}


def test_rates_car_qber_visibility_match_model():
    counts, est = sample(LINKS)
    m = model(LINKS)
    assert ent.BBM92.consistent(counts).all()
    # coincidences and accidentals per pulse are binomial
    c, a = PULSES * m["q"], PULSES * m["acc"]
    assert np.all(np.abs(est["coincidence_rate"] - c) < Z_TOL * np.sqrt(c))
    assert np.all(np.abs(est["accidental_rate"] - a) < Z_TOL * np.sqrt(a))
    car = (c - a) / a
    car_sigma = (c / a) * np.sqrt(1 / c + 1 / a)
    assert np.all(np.abs(est["car"] - car) < Z_TOL * car_sigma)
    # QBER per basis: binomial over the sifted coincidences of that basis
    sifted = PULSES * (1 - TEST_FRACTION) * m["q"] / 4
    e_sigma = np.sqrt(m["e"] * (1 - m["e"]) / sifted)
    for basis in ("z", "x"):
        assert np.all(np.abs(est[f"qber_{basis}"] - m["e"]) < Z_TOL * e_sigma)
        assert np.all(np.abs(est[f"visibility_{basis}"] - (1 - 2 * m["e"])) < Z_TOL * 2 * e_sigma)
        # the one-sided 99 % Clopper–Pearson bound sits about 2.3 σ above the estimate
        gap = est[f"qber_{basis}_upper"] - est[f"qber_{basis}"]
        assert np.all((gap > 2.0 * e_sigma) & (gap < 2.7 * e_sigma))


def test_misalignment_sets_the_qber_of_a_weak_clean_source():
    links = np.array([[1e-3], [0.5], [0.5], [0.0], [0.0], [0.04]])
    _, est = sample(links, seed=3, pulses=10**8)
    sifted = 1e8 * (1 - TEST_FRACTION) * ent.pdc_gain(*links[:5]) / 4
    # multi-pair errors add ~λ/2 on top of e_d: keep them inside the tolerance
    assert est["qber_z"] == pytest.approx(0.04, abs=Z_TOL * math.sqrt(0.04 * 0.96 / sifted[0]) + 1e-3)


def test_chsh_tracks_visibility():
    _, est = sample(LINKS, seed=2)
    v = 1 - 2 * model(LINKS)["e"]
    expected = ent.chsh_from_visibility(v)
    assert np.allclose(expected, 2 * SQRT2 * v)
    assert np.all(np.abs(est["chsh_s"] - expected) < Z_TOL * est["chsh_s_stddev"])
    assert np.all(est["chsh_s"] > 2.0)
    assert np.all((est["chsh_s"] - Z_TOL * est["chsh_s_stddev"])[:2] > 2.0)  # clear violations
    # σ_S from the counts agrees with the binomial prediction √Σ(1 − E_i²)/N_i
    n_setting = PULSES * TEST_FRACTION * model(LINKS)["q"] / 4
    predicted = np.sqrt(4 * (1 - v**2 / 2) / n_setting)
    assert np.allclose(est["chsh_s_stddev"], predicted, rtol=0.05)


def test_low_visibility_gives_no_violation_and_no_key():
    links = LINKS.copy()
    links[5] = 0.16  # V ≈ 0.68 < 1/√2
    _, est = sample(links, seed=4)
    v = 1 - 2 * model(links)["e"]
    assert np.all(v < 1 / SQRT2)
    assert np.all(est["chsh_s"] < 2.0)
    assert np.all(est["chsh_s"] + Z_TOL * est["chsh_s_stddev"] > ent.chsh_from_visibility(v))
    assert np.all(est["asymptotic_key_rate_bps"] == 0.0)
    assert np.all(est["secret_key_rate_bps"] == 0.0)


def test_fidelity_lower_bound():
    _, est = sample(LINKS, seed=5)
    e = model(LINKS)["e"]
    sifted = PULSES * (1 - TEST_FRACTION) * model(LINKS)["q"] / 4
    e_sigma = np.sqrt(e * (1 - e) / sifted)
    werner_fidelity = 1 - 1.5 * e  # isotropic noise: e_X = e_Y = e_Z = E
    assert np.all(est["fidelity_lower_bound"] <= werner_fidelity)
    # 1 − e_Z − e_X minus the two Clopper–Pearson margins (≈ 2.6 σ each at 99.5 %)
    assert np.all(np.abs(est["fidelity_lower_bound"] - (1 - 2 * e - 2 * 2.6 * e_sigma)) < Z_TOL * 2 * e_sigma)


def test_key_rate_matches_mfl():
    _, est = sample(LINKS, seed=6)
    m = model(LINKS)
    sifted_gain = (1 - TEST_FRACTION) * m["q"] / 2  # q = 1/2 of key rounds keep matching bases
    rate = PULSES * sifted_gain * (1 - (1 + F_EC) * binary_entropy(m["e"]))
    assert np.allclose(rate, PULSES * ent.bbm92_rate(sifted_gain, m["e"], m["e"], F_EC))
    # delta method: count fluctuation plus QBER fluctuation through H2'(E) = log2((1 − E)/E)
    n = PULSES * sifted_gain
    # (each basis's key is n/2 coincidences; both bases' QBERs enter with weight (n/2)(1 + f)H2')
    e_sigma = np.sqrt(m["e"] * (1 - m["e"]) / (n / 2))
    slope = (n / 2) * (1 + F_EC) * np.log2((1 - m["e"]) / m["e"])
    sigma = np.sqrt(rate**2 / n + 2 * (slope * e_sigma) ** 2)
    assert np.all(rate > 0)
    assert np.all(np.abs(est["asymptotic_key_rate_bps"] - rate) < Z_TOL * sigma)
    # the finite-size penalty: below the asymptotic rate everywhere; the lossy third link sits
    # so close to its limit that its finite-size rate is 0 in about half the seeds
    assert np.all((0 <= est["secret_key_rate_bps"]) & (est["secret_key_rate_bps"] < est["asymptotic_key_rate_bps"]))
    assert np.all(est["secret_key_rate_bps"][:2] > 0)


def test_finite_key_converges_to_asymptotic():
    rates = [sample(LINKS[:, :1], seed=7, pulses=p)[1] for p in (10**7, 10**8, 10**9, 10**10)]
    ratio = [r["secret_key_rate_bps"][0] / r["asymptotic_key_rate_bps"][0] for r in rates]
    assert ratio == sorted(ratio) and ratio[-1] > 0.97


def test_no_counts_gives_nan_without_warnings():
    zeros = {k: np.zeros((2, *s)) for k, s in ent.BBM92.count_shapes.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = ent.BBM92.estimate(zeros, np.array([1.0, 0.0]), params(2), 0.99)
        assert set(est) >= {"chsh_s", "chsh_s_stddev", "fidelity_lower_bound", "car", "qber_z", "visibility_x"}
        for key, values in est.items():
            assert values.shape == (2,)
            if key not in ("coincidence_rate", "accidental_rate"):
                assert np.all(np.isnan(values)), key
        # an observed zero rate is a measurement, not a missing estimate; a zero-length window is not
        assert est["coincidence_rate"][0] == 0.0 and np.isnan(est["coincidence_rate"][1])


def test_inconsistent_counts_are_flagged():
    counts, _ = sample(LINKS[:, :2])
    bad = {k: v.copy() for k, v in counts.items()}
    bad["errors"][0, 0] = bad["coincidences"][0, 0, 0] + 1
    bad["accidentals"][1] = bad["pulses"][1] + 1
    assert list(ent.BBM92.consistent(bad)) == [False, False]
    lonely = {k: v.copy() for k, v in counts.items()}
    lonely["singles"][0, 1] = 0  # fewer clicks at B than coincidences
    assert list(ent.BBM92.consistent(lonely)) == [False, True]


def test_registered():
    assert PROTOCOLS["bbm92-spdc"] is ent.BBM92
    shapes = ent.BBM92.count_shapes
    assert shapes == {"pulses": (), "coincidences": (2, 2), "errors": (2,), "chsh": (4, 2), "accidentals": (),
                      "singles": (2,), **{name: () for name in KEY_STORE_KINDS}}


def test_empty_windows_say_why_there_is_no_estimate():
    from qtelemetry.estimation.heralded import HERALDED

    empty = {k: np.zeros((2, *shape)) for k, shape in ent.BBM92.count_shapes.items()}
    assert ent.BBM92.no_estimate(empty)["no_coincidences"].tolist() == [True, True]
    attempts_only = {k: np.zeros((2, *shape)) for k, shape in HERALDED.count_shapes.items()}
    attempts_only["attempts"] = np.array([0.0, 1e6])
    reasons = HERALDED.no_estimate(attempts_only)
    assert reasons["no_attempts"].tolist() == [True, False]
    assert reasons["no_heralds"].tolist() == [False, True]


def test_klyshko_efficiency_recovers_each_arm_and_the_channel_loss():
    """Klyshko (1980): η_A ≈ (C − A)/S_B. Model value: true coincidences per B click, from the MFL
    probabilities; it equals the configured arm transmittance up to multi-pair and dark-count
    corrections, which the weak first link keeps below 3%."""
    counts, est = sample(LINKS)
    q, acc = model(LINKS)["q"], model(LINKS)["acc"]
    singles = np.stack([ent.singles_probability(LINKS[0], LINKS[1], LINKS[3]),
                        ent.singles_probability(LINKS[0], LINKS[2], LINKS[4])], axis=-1)
    expected = (q - acc)[:, None] / singles[:, ::-1]
    sigma = expected * np.sqrt(1 / (PULSES * q)[:, None] + 1 / (PULSES * singles[:, ::-1]))
    measured = np.stack([est["heralding_efficiency_a"], est["heralding_efficiency_b"]], axis=-1)
    assert np.all(np.abs(measured - expected) < Z_TOL * sigma)
    assert measured[0] == pytest.approx([0.10, 0.10], rel=0.03)
    assert est["loss_db"][0] == pytest.approx(20.0, abs=0.3)  # -10 log10(0.1 × 0.1)
    # PLOB at the end-to-end transmittance η_A·η_B, times the pump rate (1 window of 1 s)
    eta = measured[:, 0] * measured[:, 1]
    np.testing.assert_allclose(est["plob_bound_bps"], -np.log2(1 - eta) * PULSES, rtol=1e-9)
    assert np.all(est["plob_ratio"] < 1)
