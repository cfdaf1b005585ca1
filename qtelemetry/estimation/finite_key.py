"""Finite-key decoy-state BB84 with three intensities, valid against general attacks.

Source: Lim, Curty, Walenta, Xu, Zbinden, "Concise security bounds for practical decoy-state
quantum key distribution", PRA 89, 022307 (2014); equation numbers are the published paper's.

Intensities are on the last axis, ordered (μ1, μ2, μ3) = (signal, weak decoy, vacuum-ish decoy)
with μ1 > μ2 + μ3 and μ2 > μ3 ≥ 0; every other axis broadcasts (links, distances, parameter
grids). The key is distilled from the Z basis and X is the test basis. The published paper
names them the other way round (key from X); the bounds are the same with the names swapped.
"""

from __future__ import annotations

from math import factorial
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from qtelemetry.estimation.decoy import Array, binary_entropy

#: ε_sec is split into 21 equal error terms (Lim et al. App. B, eq. B4: ε_sec = 21ε).
SECURITY_SHARES = 21.0
#: Defaults of the exporter's links and the planner: sifted key bits per post-processing block
#: (Lim et al. §IV: 10^7–10^9 differ only slightly, 10^8 fills in hours to days on metro links),
#: and the total ε_sec and ε_cor of one block.
DEFAULT_BLOCK_SIZE = 1e8
DEFAULT_EPS_SEC = 1e-10
DEFAULT_EPS_COR = 1e-15


class FiniteKey(NamedTuple):
    """Secret key of one post-processing block."""

    length: Array  #: ℓ, secret bits extracted from the block, ≥ 0
    rate: Array  #: ℓ/N, secret bits per pulse sent, ≥ 0


def _photon_number_probability(mu: Array, probabilities: Array, n: int) -> Array:
    """τ_n = Σ_k p_k e^(−k) k^n/n!, the chance that Alice sends n photons (Lim et al., after eq. 2)."""
    return np.sum(probabilities * np.exp(-mu) * mu**n, axis=-1) / factorial(n)


def _hoeffding(counts: Array, mu: Array, probabilities: Array, eps_sec: Array) -> tuple[Array, Array]:
    """n±_k = (e^k/p_k)·[n_k ± √(n/2 · ln(21/ε_sec))], n = Σ_k n_k (Lim et al., after eqs. 2 and 4).

    The bracket is clipped to [0, n], where the expected count n*_k must lie (App. A).
    """
    total = counts.sum(axis=-1, keepdims=True)
    delta = np.sqrt(total / 2.0 * np.log(SECURITY_SHARES / eps_sec[..., None]))
    scale = np.exp(mu) / probabilities
    return (scale * np.minimum(np.maximum(counts - delta, 0.0), total),
            scale * np.minimum(np.maximum(counts + delta, 0.0), total))


def _vacuum_lower(n_minus: Array, n_plus: Array, mu: Array, tau0: Array) -> Array:
    """s_0 ≥ τ0·(μ2 n−_μ3 − μ3 n+_μ2)/(μ2 − μ3): vacuum events in the block (Lim et al. eq. 2)."""
    mu2, mu3 = mu[..., 1], mu[..., 2]
    return np.maximum(tau0 * (mu2 * n_minus[..., 2] - mu3 * n_plus[..., 1]) / (mu2 - mu3), 0.0)


def _single_photon_lower(
    n_minus: Array, n_plus: Array, s0: Array, mu: Array, tau0: Array, tau1: Array
) -> Array:
    """s_1 lower bound from all three intensities and the vacuum bound s_0 (Lim et al. eq. 3)."""
    mu1, mu2, mu3 = mu[..., 0], mu[..., 1], mu[..., 2]
    multi = (mu2**2 - mu3**2) / mu1**2 * (n_plus[..., 0] - s0 / tau0)
    bound = tau1 * mu1 * (n_minus[..., 1] - n_plus[..., 2] - multi) / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
    return np.maximum(bound, 0.0)


def _single_photon_errors_upper(m_minus: Array, m_plus: Array, mu: Array, tau1: Array) -> Array:
    """v_1 ≤ τ1·(m+_μ2 − m−_μ3)/(μ2 − μ3): bit errors of single photons in the test basis (eq. 4)."""
    return np.maximum(tau1 * (m_plus[..., 1] - m_minus[..., 2]) / (mu[..., 1] - mu[..., 2]), 0.0)


def _gamma(eps_sec: Array, b: Array, c: Array, d: Array) -> Array:
    """γ(a,b,c,d), the random-sampling margin between test- and key-basis phase errors (Lim et al. eq. 5)."""
    spread = (c + d) / (c * d) * (1.0 - b) * b
    tail = np.log2((c + d) / (c * d * (1.0 - b) * b) * (SECURITY_SHARES / eps_sec) ** 2)
    return np.where(spread > 0, np.sqrt(spread / np.log(2.0) * np.maximum(tail, 0.0)), 0.0)


def raw_key_length(
    n_z: Array, m_z: Array, n_x: Array, m_x: Array, mu: Array, probabilities: Array,
    ec_efficiency: Array, eps_sec: Array, eps_cor: Array,
) -> Array:
    """ℓ of eq. (1) before the floor, negative where the block gives no key, NaN where undefined.

    Continuous in the protocol parameters where ``finite_key_from_counts`` is a staircase that
    is flat at 0: what an optimiser needs. Arguments as there, already arrays.
    """
    tau0, tau1 = (_photon_number_probability(mu, probabilities, n) for n in (0, 1))
    nz_minus, nz_plus = _hoeffding(n_z, mu, probabilities, eps_sec)
    nx_minus, nx_plus = _hoeffding(n_x, mu, probabilities, eps_sec)
    mx_minus, mx_plus = _hoeffding(m_x, mu, probabilities, eps_sec)
    s_z0 = _vacuum_lower(nz_minus, nz_plus, mu, tau0)
    s_z1 = _single_photon_lower(nz_minus, nz_plus, s_z0, mu, tau0, tau1)
    s_x0 = _vacuum_lower(nx_minus, nx_plus, mu, tau0)
    s_x1 = _single_photon_lower(nx_minus, nx_plus, s_x0, mu, tau0, tau1)
    # Phase error φ_Z (eq. 5). b ≤ 0 (no error certified) leaves γ undefined: assume φ = 1/2.
    b = _single_photon_errors_upper(mx_minus, mx_plus, mu, tau1) / s_x1
    phi = np.where(b > 0, b + _gamma(eps_sec, b, s_x1, s_z1), 0.5)
    phi = np.minimum(np.where(np.isnan(phi), 0.5, phi), 0.5)
    block = n_z.sum(axis=-1)
    ec_leak = block * ec_efficiency * binary_entropy(m_z.sum(axis=-1) / block)
    return (
        s_z0
        + s_z1 * (1.0 - binary_entropy(phi))
        - ec_leak
        - 6.0 * np.log2(SECURITY_SHARES / eps_sec)
        - np.log2(2.0 / eps_cor)
    )


def _valid_intensities(mu: Array, probabilities: Array) -> Array:
    """μ1 > μ2 + μ3, μ2 > μ3 ≥ 0 and every p_k > 0, which eqs. 2–4 assume (Lim et al. §II)."""
    mu1, mu2, mu3 = mu[..., 0], mu[..., 1], mu[..., 2]
    return (mu1 > mu2 + mu3) & (mu2 > mu3) & (mu3 >= 0) & np.all(probabilities > 0, axis=-1)


def finite_key_from_counts(
    n_z: ArrayLike,
    m_z: ArrayLike,
    n_x: ArrayLike,
    m_x: ArrayLike,
    pulses: ArrayLike,
    mu: ArrayLike,
    probabilities: ArrayLike,
    *,
    ec_efficiency: ArrayLike,
    eps_sec: ArrayLike = DEFAULT_EPS_SEC,
    eps_cor: ArrayLike = DEFAULT_EPS_COR,
) -> FiniteKey:
    """Secret key of one block from its measured counts, composably secure (Lim et al. eqs. 1–5).

    ``n_z``/``m_z``: sifted Z-basis (key) clicks and bit errors per intensity; ``n_x``/``m_x``
    the same for the X (test) basis; ``pulses``: pulses sent per intensity (N = their sum);
    ``mu`` and ``probabilities``: intensities and Alice's probabilities p_k of choosing them.
    ``eps_sec`` is the total secrecy ε_sec, shared as 21 equal terms (App. B, eq. B4).
    With λ_EC = n_Z·f·h(E_Z):
    ℓ = ⌊s_Z0 + s_Z1·(1 − h(φ_Z)) − λ_EC − 6·log2(21/ε_sec) − log2(2/ε_cor)⌋,
    or 0 where that is negative or the intensities break μ1 > μ2 + μ3, μ2 > μ3 ≥ 0. Never NaN.
    """
    n_z, m_z, n_x, m_x, pulses, mu, probabilities = (
        np.asarray(a, float) for a in (n_z, m_z, n_x, m_x, pulses, mu, probabilities)
    )
    eps_sec, eps_cor, f = (np.asarray(a, float) for a in (eps_sec, eps_cor, ec_efficiency))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        length = np.floor(raw_key_length(n_z, m_z, n_x, m_x, mu, probabilities, f, eps_sec, eps_cor))
        valid = _valid_intensities(mu, probabilities) & np.isfinite(length)
        length = np.where(valid, np.maximum(length, 0.0), 0.0)
        rate = np.nan_to_num(length / pulses.sum(axis=-1), nan=0.0, posinf=0.0)
    return FiniteKey(length, rate)


def block_counts(
    gain: Array, error_gain: Array, probabilities: Array, z_basis_probability: Array, block_size: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """Expected (n_Z, m_Z, n_X, m_X, pulses) per intensity when Alice sends until n_Z = block_size.

    As in Lim et al.'s simulations (§IV): both sides pick Z with probability q, so N pulses give
    n_Z = q²·N·Σ_k p_k Q_k; counts are their expectations.
    """
    p_z = z_basis_probability[..., None]
    sift_z, sift_x = p_z**2, (1.0 - p_z) ** 2
    clicks_per_pulse = np.sum(probabilities * gain, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pulses_sent = block_size[..., None] / (sift_z * clicks_per_pulse)
    pulses = pulses_sent * probabilities
    pulses = np.where(np.isfinite(pulses), pulses, 0.0)
    return sift_z * pulses * gain, sift_z * pulses * error_gain, sift_x * pulses * gain, sift_x * pulses * error_gain, pulses


def finite_key_from_model(
    gain: ArrayLike,
    error_gain: ArrayLike,
    mu: ArrayLike,
    probabilities: ArrayLike,
    z_basis_probability: ArrayLike,
    block_size: ArrayLike,
    *,
    ec_efficiency: ArrayLike,
    eps_sec: ArrayLike = DEFAULT_EPS_SEC,
    eps_cor: ArrayLike = DEFAULT_EPS_COR,
) -> FiniteKey:
    """Expected key of a modelled link when Alice sends until the Z block is full (Lim et al. §IV).

    ``gain``/``error_gain`` are the click and erroneous-click probabilities per pulse of each
    intensity (e.g. ``decoy.gain``/``decoy.error_gain``); both sides pick Z with probability
    ``z_basis_probability``. As in the paper's simulations, the number of pulses N is the one
    whose expected sifted Z-basis block n_Z equals ``block_size``; counts are their expectations.
    """
    gain, error_gain, probabilities, p_z, block = (
        np.asarray(a, float) for a in (gain, error_gain, probabilities, z_basis_probability, block_size)
    )
    return finite_key_from_counts(
        *block_counts(gain, error_gain, probabilities, p_z, block),
        mu,
        probabilities,
        ec_efficiency=ec_efficiency,
        eps_sec=eps_sec,
        eps_cor=eps_cor,
    )
