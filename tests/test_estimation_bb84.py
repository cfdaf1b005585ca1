"""Decoy-BB84 estimator against independently derived values (MQZL 2005 model, exact binomial)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy.stats import binomtest

from qtelemetry.estimation.bb84 import BB84_DECOY, channel_loss_db
from qtelemetry.estimation.stats import clopper_pearson_interval, clopper_pearson_upper


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (37, 1000), (500, 1000), (3, 3)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    """scipy's binomtest(...).proportion_ci(method='exact') is an independent Clopper-Pearson."""
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lower, upper = clopper_pearson_interval(k, n, 0.95)
    assert lower == pytest.approx(ci.low, abs=1e-12)
    assert upper == pytest.approx(ci.high, abs=1e-12)


@pytest.mark.parametrize("confidence", [0.9, 0.99, 0.9999])
def test_fast_beta_quantile_agrees_with_scipy_over_six_decades(confidence):
    rng = np.random.default_rng(3)
    n = np.round(10 ** rng.uniform(0, 8, 5000))
    k = np.round(n * rng.uniform(0, 0.5, 5000))
    exact = np.where(k >= n, 1.0, special.betaincinv(k + 1, np.maximum(n - k, 1e-300), confidence))
    np.testing.assert_allclose(clopper_pearson_upper(k, n, confidence), exact, rtol=1e-9)


def test_clopper_pearson_closed_forms():
    # zero errors: upper bound 1 − α^(1/n) (the "rule of three" in its exact form)
    assert clopper_pearson_upper(0, 100, 0.99) == pytest.approx(1 - 0.01 ** (1 / 100))
    assert np.isnan(clopper_pearson_upper(0, 0, 0.99))


def test_loss_inverts_the_gain_model():
    eta = 10 ** (-7.3 / 10) * 0.2
    q = 2e-6 + 1 - math.exp(-eta * 0.6)
    assert channel_loss_db(np.array([q]), np.array([2e-6]), np.array([0.6]), np.array([0.2]))[0] == pytest.approx(7.3, abs=1e-9)


def expected_counts(lengths_km, pulses=1e12, y0=1e-6, ed=0.02, det=0.1, mu=0.5, nu=0.1):
    """Noise-free counts: pulses × model probabilities (MQZL §II), for several links at once."""
    eta = 10 ** (-0.2 * np.asarray(lengths_km)[:, None] / 10) * det
    x = np.array([mu, nu, 0.0])
    n = pulses * np.array([0.8, 0.1, 0.1])
    q = y0 + 1 - np.exp(-eta * x)
    eq = 0.5 * y0 + ed * (1 - np.exp(-eta * x))
    sifted = np.stack([n * q / 4, n * q / 4], axis=1)
    errors = np.stack([n * eq / 4, n * eq / 4], axis=1)
    return {"pulses": np.broadcast_to(n, q.shape).copy(), "detections": n * q, "sifted": sifted, "errors": errors}


def test_estimator_recovers_model_values_for_many_links_at_once():
    lengths = np.array([0.0, 25.0, 80.0, 300.0])
    sums = expected_counts(lengths)
    params = {"mu": np.full(4, 0.5), "nu": np.full(4, 0.1), "basis_bias": np.full(4, 0.5),
              "detector_efficiency": np.full(4, 0.1), "ec_efficiency": np.full(4, 1.16),
              "block_size": np.full(4, 1e9), "epsilon_sec": np.full(4, 1e-10), "epsilon_cor": np.full(4, 1e-15)}
    est = BB84_DECOY.estimate(sums, np.full(4, 1000.0), params, 0.99)
    np.testing.assert_allclose(est["loss_db"], 0.2 * lengths, atol=1e-6)
    # QBER = E·Q / Q
    eta = 10 ** (-0.2 * lengths / 10) * 0.1
    q = 1e-6 + 1 - np.exp(-eta * 0.5)
    np.testing.assert_allclose(est["qber_z"], (0.5e-6 + 0.02 * (1 - np.exp(-eta * 0.5))) / q)
    # beyond the maximum distance the bounds give no key: 0, never negative or NaN
    for key in ("asymptotic_key_rate_bps", "secret_key_rate_bps"):
        assert est[key][3] == 0.0
        assert np.all(est[key][:3] > 0)
        assert np.all(np.diff(est[key]) <= 0)


def test_no_data_gives_no_estimate_not_an_error():
    zeros = {k: np.zeros((2, *s)) for k, s in BB84_DECOY.count_shapes.items()}
    params = {k: np.ones(2) * 0.5 for k in BB84_DECOY.param_names} | {"nu": np.full(2, 0.1)}
    with np.errstate(all="raise"):
        est = BB84_DECOY.estimate(zeros, np.zeros(2), params, 0.99)
    assert all(np.all(np.isnan(v)) for v in est.values())


def test_a_dark_fiber_reads_as_infinite_loss_not_noise():
    """Signal clicks indistinguishable from dark counts: +Inf loss, whatever the noise draws."""
    rng = np.random.default_rng(11)
    pulses = np.tile([8e8, 1e8, 1e8], (200, 1))
    det = rng.poisson(pulses * 1e-6).astype(float)  # dark counts only, same rate in every class
    sums = {"pulses": pulses, "detections": det, "sifted": np.stack([det / 4] * 2, axis=1),
            "errors": np.stack([det / 8] * 2, axis=1)}
    params = {k: np.full(200, v) for k, v in dict(mu=0.5, nu=0.1, basis_bias=0.5, detector_efficiency=0.1,
                                                   ec_efficiency=1.16, block_size=1e8, epsilon_sec=1e-10,
                                                   epsilon_cor=1e-15).items()}
    est = BB84_DECOY.estimate(sums, np.ones(200), params, 0.99)
    assert np.all(np.isinf(est["loss_db"]))
