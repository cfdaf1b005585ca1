"""Asymptotic decoy-state rates at the GYS parameters against Lo-Ma-Chen 2005 and MQZL 2005.

GYS (Gobby, Yuan, Shields, APL 84, 3762 (2004)) as tabulated by Lo, Ma, Chen, PRL 94, 230504
(2005) and used by Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005) ("MQZL"): α = 0.21 dB/km,
e_detector = 3.3 %, Y0 = 1.7e-6, η_Bob = 4.5 %, f(e) = 1.22, q = 1/2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qtelemetry.estimation import decoy
from qtelemetry.planner import maximise

Y0, E_DET, F_EC, ETA_BOB, ALPHA = 1.7e-6, 0.033, 1.22, 0.045, 0.21
FINE_KM = np.arange(120.0, 160.0, 0.005)


def eta_at(distance_km):
    return ETA_BOB * decoy.transmittance(distance_km, ALPHA)


def reach_km(rates: np.ndarray) -> float:
    """Longest distance of FINE_KM with a positive key."""
    return float(FINE_KM[rates > 0].max())


def test_infinite_decoy_reach_matches_mqzl():
    """MQZL, GYS simulation: infinitely many decoys reach 142.05 km.

    We get 142.01 km at their μ = 0.48 and 142.21 km with μ optimised at every distance.
    """
    fixed = decoy.infinite_decoy_rate(eta_at(FINE_KM), 0.48, Y0, E_DET, F_EC)
    best, _ = maximise(
        lambda mu: decoy.infinite_decoy_rate(eta_at(FINE_KM)[:, None], mu, Y0, E_DET, F_EC),
        {"mu": (0.2, 0.8)}, FINE_KM.shape,
    )
    assert reach_km(fixed) == pytest.approx(142.05, abs=0.25)
    assert reach_km(best) == pytest.approx(142.05, abs=0.25)


def test_vacuum_weak_reach_matches_mqzl():
    """MQZL §V.A, GYS simulation: vacuum + weak decoy (μ = 0.48, ν = 0.05) reaches 140.55 km.

    We get 140.62 km (+0.05 %); an independent reimplementation reports 140.61 km.
    """
    rates = decoy.model_vacuum_weak_rate(eta_at(FINE_KM), 0.48, 0.05, Y0, E_DET, F_EC)
    assert reach_km(rates) == pytest.approx(140.55, abs=0.2)


def test_vacuum_weak_approaches_the_infinite_decoy_limit():
    """MQZL abstract: vacuum + weak decoy asymptotically approaches infinitely many decoys (ν → 0)."""
    infinite = decoy.infinite_decoy_rate(eta_at(FINE_KM), 0.48, Y0, E_DET, F_EC)
    weak = decoy.model_vacuum_weak_rate(eta_at(FINE_KM), 0.48, 1e-3, Y0, E_DET, F_EC)
    assert reach_km(weak) == pytest.approx(reach_km(infinite), abs=0.05)
    assert weak[FINE_KM == 120.0] == pytest.approx(infinite[FINE_KM == 120.0], rel=0.02)


@pytest.mark.parametrize("rate", [
    lambda eta: decoy.infinite_decoy_rate(eta, 0.48, Y0, E_DET, F_EC),
    lambda eta: decoy.model_vacuum_weak_rate(eta, 0.48, 0.1, Y0, E_DET, F_EC),
], ids=["infinite", "vacuum-weak"])
def test_decoy_rate_is_linear_in_transmittance(rate):
    """LMC abstract: with decoys the key rate scales as O(η), not O(η²); slope 20–80 km ≈ 1."""
    eta = eta_at(np.array([20.0, 80.0]))
    slope = np.diff(np.log(rate(eta))) / np.diff(np.log(eta))
    assert slope[0] == pytest.approx(1.0, abs=0.05)


def test_optimal_signal_intensity_for_gys_is_about_0_48():
    """MQZL simulate GYS at μ = 0.48, the optimum of the infinite-decoy rate; it stays ~0.48 to 120 km."""
    distances = np.array([0.0, 50.0, 100.0, 120.0])
    _, at = maximise(
        lambda mu: decoy.infinite_decoy_rate(eta_at(distances)[:, None], mu, Y0, E_DET, F_EC),
        {"mu": (0.05, 1.5)}, distances.shape,
    )
    assert at["mu"] == pytest.approx(np.full(4, 0.48), abs=0.02)


def test_noise_free_channel_gives_eta_over_2e():
    """Derived: with Y0 = 0 and e_det = 0, R = ½·η·μe^(−μ) exactly, maximal at μ = 1: η/(2e)."""
    eta = np.array([1e-1, 1e-3, 1e-6])
    best, at = maximise(
        lambda mu: decoy.infinite_decoy_rate(eta[:, None], mu, 0.0, 0.0, F_EC), {"mu": (0.05, 1.5)}, eta.shape
    )
    assert best == pytest.approx(eta / (2 * math.e), rel=1e-6)
    assert at["mu"] == pytest.approx(np.ones(3), abs=1e-3)


def test_no_single_photon_yield_is_certified_unless_mu_exceeds_nu():
    """MQZL §V.A's bound needs μ > ν > 0; outside it no yield can be certified (was: a positive number)."""
    eta = eta_at(50.0)
    y1 = decoy.vacuum_weak_y1_lower(
        decoy.gain(eta, 0.05, Y0), decoy.gain(eta, 0.1, Y0), Y0, np.array([0.05, 0.1, 0.1]), np.array([0.1, 0.1, 0.0])
    )
    assert y1.tolist() == [0.0, 0.0, 0.0]


def test_dead_channel_and_invalid_settings_give_zero_never_nan():
    """No detections at all (η = 0, Y0 = 0) and ν ≥ μ both mean no key: 0, never NaN."""
    assert decoy.infinite_decoy_rate(0.0, 0.48, 0.0, E_DET, F_EC) == 0.0
    rates = decoy.model_vacuum_weak_rate(np.array([0.0, eta_at(10.0)]), 0.1, 0.2, Y0, E_DET, F_EC)
    assert rates.tolist() == [0.0, 0.0]


def test_gain_keeps_a_tiny_background_and_a_tiny_signal():
    """Q = Y0 + 1 − e^(−ημ) for ημ ≪ 1 is Y0 + ημ − (ημ)²/2 (Taylor), even when Y0 and ημ are far
    below the 1e-16 that adding to 1.0 would keep."""
    x = np.array([1e-20, 1e-12, 1e-6])
    assert decoy.gain(x, 1.0, 1e-18) == pytest.approx(1e-18 + x - x**2 / 2, rel=1e-12, abs=0)
    assert decoy.error_gain(x, 1.0, 1e-18, 0.01) == pytest.approx(0.5e-18 + 0.01 * (x - x**2 / 2), rel=1e-12, abs=0)
