"""Heralded entanglement (Barrett–Kok, single-click) model and estimators against analytic values.

Tolerances are Z_TOL binomial standard deviations of the counts behind each estimate.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation import heralded as her
from qtelemetry.estimation.entanglement import fidelity_from_error_rates

Z_TOL = 5.0
CONFIDENCE = 0.99


def estimate(counts: dict, duration: float = 1.0) -> dict:
    n = counts["attempts"].shape[0]
    return her.HERALDED.estimate(counts, np.full(n, duration), {}, CONFIDENCE)


def test_barrett_kok_success_probability():
    eta = np.array([0.5, 0.1, 0.03])
    heralds = her.two_click_heralds(eta, 0.0)
    assert np.allclose(heralds.total, eta**2 / 2) and np.all(heralds.half == 0) and np.all(heralds.zero == 0)
    attempts = 10**7
    counts = her.sample_window(np.random.default_rng(1), attempts, heralds.total,
                               her.error_rates(heralds, 1.0, 0.0, 1.0), 0.1)
    est = estimate(counts)
    p = eta**2 / 2
    assert np.all(np.abs(est["success_probability"] - p) < Z_TOL * np.sqrt(p * (1 - p) / attempts))
    assert np.all((est["success_probability_lower"] < p) & (p < est["success_probability_upper"]))
    assert np.allclose(est["pair_rate"], est["success_probability"] * attempts)


def test_dark_counts_add_false_heralds():
    eta, dark = 0.01, 1e-4
    clean, noisy = her.two_click_heralds(eta, 0.0), her.two_click_heralds(eta, dark)
    assert noisy.total > clean.total and noisy.good < clean.good
    # first order in the dark-click probability 2d per round: a lost photon's round clicks falsely
    # (odd parity, ½·2η(1 − η)·2d) or the empty round of an even-parity attempt does (½·(2η − η²)·2d)
    first_order = 2 * dark * (eta * (1 - eta) + 0.5 * (2 * eta - eta**2))
    assert noisy.half + noisy.zero == pytest.approx(first_order, rel=0.01)


def test_single_click_rate_fidelity_tradeoff():
    bright = np.array([0.02, 0.05, 0.1, 0.2])
    eta = 0.02
    rate, fidelity = her.single_click_tradeoff(bright, eta, 0.0, 1e5, 1.0, 0.0, 1.0)
    # exact without dark counts: rate = 2pη(1 − pη/2)·R, F = (1 − p)/(1 − pη/2) ≈ 1 − p
    assert np.allclose(rate, 2 * bright * eta * (1 - bright * eta / 2) * 1e5)
    assert np.allclose(fidelity, (1 - bright) / (1 - bright * eta / 2))
    assert np.all(np.abs(fidelity - (1 - bright)) <= bright * eta)
    assert np.all(np.diff(rate) > 0) and np.all(np.diff(fidelity) < 0)


def test_fidelity_decays_with_storage_time():
    t2, f0 = 0.01, 0.95
    storage = np.array([0.0, 0.005, 0.01, 0.03])
    expected = 0.5 + (f0 - 0.5) * np.exp(-storage / t2)
    assert np.allclose(her.dephased_fidelity(f0, storage, t2), expected)
    assert her.dephased_fidelity(f0, t2, t2) == pytest.approx(0.5 + 0.45 / math.e)
    heralds = her.two_click_heralds(np.full(4, 0.2), 0.0)
    errors = her.error_rates(heralds, f0, storage, t2)
    assert np.allclose(fidelity_from_error_rates(*np.moveaxis(errors, -1, 0)), expected)
    counts = her.sample_window(np.random.default_rng(2), 10**7, heralds.total, errors, 0.5)
    est = estimate(counts)
    measured = counts["tomography"].sum(axis=-1)  # (links, basis)
    sigma = np.sqrt(np.sum(errors * (1 - errors) / measured, axis=-1)) / 2
    assert np.all(np.abs(est["fidelity"] - expected) < Z_TOL * sigma)
    assert np.all((est["fidelity_lower"] < expected) & (expected < est["fidelity_upper"]))
    assert np.all(np.diff(est["fidelity"]) < 0)


def test_single_click_fidelity_from_sampled_outcomes():
    p, eta, dark = 0.1, 0.05, 1e-6
    heralds = her.single_click_heralds(eta, dark, np.array([p]))
    errors = her.error_rates(heralds, 1.0, 0.0, 1.0)
    counts = her.sample_window(np.random.default_rng(3), 10**7, heralds.total, errors, 1.0)
    est = estimate(counts)
    measured = counts["tomography"].sum(axis=-1)
    sigma = np.sqrt(np.sum(errors * (1 - errors) / measured, axis=-1)) / 2
    assert abs(est["fidelity"][0] - (1 - p)) < Z_TOL * sigma[0] + p * eta
    assert est["success_probability"][0] == pytest.approx(2 * p * eta, rel=p * eta + 0.05)


def test_no_attempts_gives_nan_without_warnings():
    zeros = {k: np.zeros((2, *s)) for k, s in her.HERALDED.count_shapes.items()}
    zeros["attempts"][1] = 1000.0  # attempts but no heralds: p = 0 is an estimate, fidelity is not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = estimate(zeros)
        for key in ("success_probability", "success_probability_lower", "success_probability_upper"):
            assert np.isnan(est[key][0]) and np.isfinite(est[key][1])
        for key in ("fidelity", "fidelity_lower", "fidelity_upper"):
            assert np.all(np.isnan(est[key]))
        assert np.all(est["pair_rate"] == 0.0)
        # the model itself with η = 0 and no dark counts heralds nothing and does not warn either
        assert np.all(np.isnan(her.error_rates(her.two_click_heralds(0.0, 0.0), 0.9, 0.0, 1.0)))


def test_inconsistent_counts_are_flagged():
    heralds = her.two_click_heralds(np.array([0.3, 0.3]), 0.0)
    counts = her.sample_window(np.random.default_rng(4), 1000, heralds.total, her.error_rates(heralds, 1, 0, 1), 1.0)
    assert her.HERALDED.consistent(counts).all()
    counts["successes"][0] = counts["attempts"][0] + 1
    counts["tomography"][1, 0, 0] += counts["successes"][1] + 1
    assert list(her.HERALDED.consistent(counts)) == [False, False]


def test_registered():
    assert PROTOCOLS["heralded-entanglement"] is her.HERALDED
