"""Decoy-state BB84: channel model and vacuum+weak decoy key-rate bound.

All functions take NumPy arrays (or scalars) that broadcast against each other, one element
per link or per planning point, and never loop in Python.

Sources:
- Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005) ("MQZL"), section cited per function.
- Gottesman, Lo, Lütkenhaus, Preskill, QIC 4, 325 (2004) ("GLLP") key-rate formula.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import entr

Array = NDArray[np.float64]

#: Error rate of a background (dark-count) click: random bit, MQZL §II, e0 = 1/2.
E0_BACKGROUND = 0.5


def transmittance(
    length_km: ArrayLike, attenuation_db_per_km: ArrayLike, insertion_loss_db: ArrayLike = 0.0
) -> Array:
    """Channel transmittance t = 10^(-(αL + insertion loss)/10) (MQZL §II, channel model)."""
    loss_db = np.asarray(length_km, float) * attenuation_db_per_km + np.asarray(insertion_loss_db, float)
    return 10.0 ** (-loss_db / 10.0)


def gain(eta: ArrayLike, intensity: ArrayLike, y0: ArrayLike) -> Array:
    """Gain of a coherent state of mean photon number μ: Q = Y0 + 1 − e^(−ημ) (MQZL §II)."""
    return np.asarray(y0, float) - np.expm1(-np.asarray(eta, float) * intensity)  # expm1: exact for tiny ημ, Y0


def error_gain(
    eta: ArrayLike, intensity: ArrayLike, y0: ArrayLike, misalignment: ArrayLike
) -> Array:
    """Erroneous-click probability E·Q = e0·Y0 + e_det·(1 − e^(−ημ)) (MQZL §II)."""
    return E0_BACKGROUND * np.asarray(y0, float) - np.asarray(misalignment, float) * np.expm1(
        -np.asarray(eta, float) * intensity
    )


def single_photon_yield(eta: ArrayLike, y0: ArrayLike) -> Array:
    """Single-photon yield Y1 = Y0 + η − Y0·η (MQZL §II, i = 1)."""
    eta = np.asarray(eta, float)
    return np.asarray(y0, float) + eta - np.asarray(y0, float) * eta


def single_photon_error(eta: ArrayLike, y0: ArrayLike, misalignment: ArrayLike) -> Array:
    """Single-photon error rate e1 = (e0·Y0 + e_det·η)/Y1 (MQZL §II, i = 1)."""
    eta = np.asarray(eta, float)
    return (E0_BACKGROUND * np.asarray(y0, float) + np.asarray(misalignment, float) * eta) / (
        single_photon_yield(eta, y0)
    )


def binary_entropy(p: ArrayLike) -> Array:
    """Shannon binary entropy H2(p) in bits; H2(0) = H2(1) = 0, clipped to [0, 1]."""
    p = np.minimum(np.maximum(np.asarray(p, float), 0.0), 1.0)
    h = (entr(p) + entr(1.0 - p)) / np.log(2.0)  # entr(x) = −x·ln x, 0 at x = 0
    return np.where(np.isnan(h), 0.0, h)


def vacuum_weak_y1_lower(
    q_mu: ArrayLike, q_nu: ArrayLike, y0: ArrayLike, mu: ArrayLike, nu: ArrayLike
) -> Array:
    """Lower bound on the single-photon yield from vacuum + one weak decoy (MQZL §V.A).

    The bound needs μ > ν > 0; elsewhere it is 0 (no single-photon yield can be certified).
    """
    q_mu, q_nu, y0, mu, nu = (np.asarray(a, float) for a in (q_mu, q_nu, y0, mu, nu))
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = mu / (mu * nu - nu**2) * (
            q_nu * np.exp(nu) - q_mu * np.exp(mu) * nu**2 / mu**2 - (mu**2 - nu**2) / mu**2 * y0
        )
    return np.where((mu > nu) & (nu > 0), np.maximum(np.nan_to_num(bound, nan=0.0), 0.0), 0.0)


def vacuum_weak_e1_upper(
    eq_nu: ArrayLike, y0: ArrayLike, y1_lower: ArrayLike, nu: ArrayLike
) -> Array:
    """Upper bound on the single-photon error rate e1 ≤ (E_ν·Q_ν·e^ν − e0·Y0)/(Y1^L·ν) (MQZL §V.A).

    ``eq_nu`` is the erroneous-click probability E_ν·Q_ν of the weak decoy. Clipped to [0, 1/2]:
    an error rate above 1/2 carries no more information than a random bit.
    """
    eq_nu, y0, y1_lower, nu = (np.asarray(a, float) for a in (eq_nu, y0, y1_lower, nu))
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = (eq_nu * np.exp(nu) - E0_BACKGROUND * y0) / (y1_lower * nu)
    return np.clip(np.nan_to_num(e1, nan=0.5, posinf=0.5, neginf=0.0), 0.0, 0.5)


def gllp_rate(
    q_mu: ArrayLike,
    e_mu: ArrayLike,
    q1: ArrayLike,
    e1: ArrayLike,
    ec_efficiency: ArrayLike,
    sifting: ArrayLike = 0.5,
) -> Array:
    """GLLP secret key rate per pulse R = q·{−Q_μ f H2(E_μ) + Q1·[1 − H2(e1)]} (GLLP; MQZL eq. 1), ≥ 0.

    ``sifting`` is q, the fraction of detections kept after basis reconciliation (1/2 for
    standard BB84, p_Z² + p_X² ... for biased bases where only matching bases are kept).
    """
    rate = np.asarray(sifting, float) * (
        -np.asarray(q_mu, float) * np.asarray(ec_efficiency, float) * binary_entropy(e_mu)
        + np.asarray(q1, float) * (1.0 - binary_entropy(e1))
    )
    return np.maximum(np.nan_to_num(rate, nan=0.0), 0.0)


def vacuum_weak_rate(
    q_mu: ArrayLike,
    eq_mu: ArrayLike,
    q_nu: ArrayLike,
    eq_nu: ArrayLike,
    y0: ArrayLike,
    mu: ArrayLike,
    nu: ArrayLike,
    ec_efficiency: ArrayLike,
    sifting: ArrayLike = 0.5,
) -> Array:
    """Key rate per signal pulse from measured gains with vacuum + weak decoy (MQZL §V.A).

    ``eq_mu``/``eq_nu`` are the erroneous-click probabilities E·Q of signal and decoy; ``y0`` is
    the vacuum gain. Returns 0 where no key can be distilled, never a negative or NaN rate.
    """
    q_mu = np.asarray(q_mu, float)
    mu = np.asarray(mu, float)
    y1 = vacuum_weak_y1_lower(q_mu, q_nu, y0, mu, nu)
    e1 = vacuum_weak_e1_upper(eq_nu, y0, y1, nu)
    with np.errstate(divide="ignore", invalid="ignore"):
        e_mu = np.where(q_mu > 0, np.asarray(eq_mu, float) / q_mu, 0.5)
    return gllp_rate(q_mu, e_mu, mu * np.exp(-mu) * y1, e1, ec_efficiency, sifting)


def infinite_decoy_rate(
    eta: ArrayLike,
    mu: ArrayLike,
    y0: ArrayLike,
    misalignment: ArrayLike,
    ec_efficiency: ArrayLike,
    sifting: ArrayLike = 0.5,
) -> Array:
    """Asymptotic rate with infinitely many decoys, which pin Y1, e1 exactly (Lo, Ma, Chen, PRL 94, 230504 (2005)).

    The GLLP rate with the channel model's own Y1, e1 (MQZL §II): the limit that every
    practical decoy protocol approaches. Per pulse, ≥ 0, never NaN.
    """
    mu = np.asarray(mu, float)
    q_mu = gain(eta, mu, y0)
    q1 = mu * np.exp(-mu) * single_photon_yield(eta, y0)
    with np.errstate(divide="ignore", invalid="ignore"):  # a dead channel: 0/0, rate 0
        e_mu = error_gain(eta, mu, y0, misalignment) / q_mu
        e1 = single_photon_error(eta, y0, misalignment)
    return gllp_rate(q_mu, e_mu, q1, e1, ec_efficiency, sifting)


def model_vacuum_weak_rate(
    eta: ArrayLike,
    mu: ArrayLike,
    nu: ArrayLike,
    y0: ArrayLike,
    misalignment: ArrayLike,
    ec_efficiency: ArrayLike,
    sifting: ArrayLike = 0.5,
) -> Array:
    """Expected vacuum+weak rate of a modelled link, for planning (MQZL §V.A fed the gains of §II).

    The model's gains and error gains stand in for measured ones in ``vacuum_weak_rate``.
    """
    return vacuum_weak_rate(
        gain(eta, mu, y0),
        error_gain(eta, mu, y0, misalignment),
        gain(eta, nu, y0),
        error_gain(eta, nu, y0, misalignment),
        y0,
        mu,
        nu,
        ec_efficiency,
        sifting,
    )
