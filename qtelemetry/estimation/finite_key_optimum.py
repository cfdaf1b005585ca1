"""The finite-key protocol a modelled link should run: Lim et al.'s numerical optimisation.

Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014), §IV, maximise the key per pulse ℓ/N
of one block over {q, p_μ1, p_μ2, μ1, μ2} with μ3 fixed. Near the distance where the key ends
the region with key shrinks to a sliver (a block of 10^4 at 134 km on their channel: key basis
q ≈ 0.01, p_μ1 ≈ 0.05–0.1, 3e-5 of the searched box; 10^8 at 182 km: q < 0.01, p_μ1 ≈ 0.8, 4e-6
of it), which a coarse grid misses. So: a scrambled Sobol sample of the whole box, evaluated
for every problem in one batch, picks the best few starts of each; SciPy's SLSQP (bounded,
quasi-Newton) refines each start, its central-difference gradient one batched evaluation of
eqs. 1–5 per step. SLSQP rather than L-BFGS-B: same answers here, but L-BFGS-B's BLAS calls made
each step cost milliseconds on a busy two-core machine (OpenBLAS threads spinning).

The objective is asinh(ℓ/N ÷ one bit per block), with ℓ before the floor and before clipping
at 0: log-like where there is key, so a step does not depend on how many pulses one bit costs
(1e-3 to 1e-12 per pulse across distances), and still smooth into the region without key, so a
start there has a slope towards it. Without it SLSQP stalled at points half as good. Where no
start finds key, and in the last kilometres before the reach none of the samples lies in the
sliver, ℓ/N is a poor guide: negative everywhere, it is highest where N is largest, not where key
is nearest, and the climbs ended short of the reach (180.7 instead of 182.1 km for 10^8). There
the search climbs asinh(ℓ in bits) from the sample with the longest ℓ, then ℓ/N from where that
leads: at a fixed key block ℓ grows towards the sliver (a lower q sends more pulses to the test
basis, which tightens its bounds at no cost to the block).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.stats import qmc

from qtelemetry.estimation.decoy import Array
from qtelemetry.estimation.finite_key import (DEFAULT_EPS_COR, DEFAULT_EPS_SEC, block_counts, finite_key_from_model,
                                             raw_key_length)

#: ``channel(problem, intensities)``: click and erroneous-click probabilities per pulse, shape
#: (M, 3) each, of problems ``problem`` (M indices) sending ``intensities`` (M, 3).
Channel = Callable[[Array, Array], tuple[Array, Array]]

#: Searched ranges. μ1 up to MU1_MAX; μ2 as a fraction of its admissible range (μ3, μ1 − μ3);
#: p_μ1 on a log scale; the weak decoy's share of the other pulses; q on a logit scale.
MU1_MAX = 1.5
MU2_FRACTION = (0.01, 0.98)
LOG10_P_SIGNAL = (-3.0, float(np.log10(0.98)))
DECOY_SHARE = (0.01, 0.99)
LOGIT_Z_BASIS = (-5.0, 5.0)  # q in (0.0067, 0.9933)
#: Central-difference step in the unit box, SLSQP's iteration cap, problems per sampling batch.
STEP = 1e-6
MAX_ITERATIONS = 400
BATCH_PROBLEMS = 64
#: The climbs' value where eqs. 1–5 are undefined: below asinh of any finite float (−710).
UNDEFINED = -1e3

#: ``key_length(problem, unit)``: ℓ before the floor (negative: no key, NaN: undefined) and the
#: pulses N of the block, one per row of ``unit`` (points of the unit box) and ``problem``.
KeyLength = Callable[[Array, Array], tuple[Array, Array]]


class FiniteKeyProtocol(NamedTuple):
    """Best protocol found for each problem and the key it gives (Lim et al. eqs. 1–5)."""

    rate: Array  #: ℓ/N, secret bits per pulse, ≥ 0
    length: Array  #: ℓ, secret bits per block
    mu: Array  #: (μ1, μ2, μ3) on the last axis
    probabilities: Array  #: (p_μ1, p_μ2, p_μ3) on the last axis
    z_basis: Array  #: q, the probability of the key basis for both sides


def _protocol(unit: Array, signal: Array | None, mu3: float) -> tuple[Array, Array, Array]:
    """Intensities, their probabilities and q from a point of the unit box (last axis)."""
    def scale(u: Array, span: tuple[float, float]) -> Array:
        return span[0] + (span[1] - span[0]) * u

    if signal is None:
        mu1, unit = scale(unit[..., 0], (3.0 * mu3 + 1e-3, MU1_MAX)), unit[..., 1:]
    else:
        mu1 = signal
    mu2 = mu3 + (mu1 - 2.0 * mu3) * scale(unit[..., 0], MU2_FRACTION)
    p1 = 10.0 ** scale(unit[..., 1], LOG10_P_SIGNAL)
    p2 = (1.0 - p1) * scale(unit[..., 2], DECOY_SHARE)
    q = 1.0 / (1.0 + np.exp(-scale(unit[..., 3], LOGIT_Z_BASIS)))
    mu = np.stack(np.broadcast_arrays(mu1, mu2, mu3), axis=-1)
    return mu, np.stack([p1, p2, 1.0 - p1 - p2], axis=-1), q


def optimal_finite_key(
    channel: Channel,
    block_size: ArrayLike,
    *,
    mu3: float,
    ec_efficiency: float,
    eps_sec: ArrayLike = DEFAULT_EPS_SEC,
    eps_cor: float = DEFAULT_EPS_COR,
    signal: ArrayLike | None = None,
    samples: int = 512,
    starts: int = 2,
    starts_without_key: int = 1,
) -> FiniteKeyProtocol:
    """Maximise ℓ/N over q, p_μ1, p_μ2, μ2 (and μ1 unless ``signal`` fixes it) for each problem.

    One problem per element of ``block_size`` (1-D); ``eps_sec`` and ``signal`` broadcast to it.
    ``starts`` samples best in ℓ/N climb ℓ/N; where none finds key, ``starts_without_key`` samples
    longest in ℓ climb ℓ, then ℓ/N. Deterministic: the Sobol sample is seeded.
    """
    block = np.atleast_1d(np.asarray(block_size, float))
    problems = block.size
    eps = np.broadcast_to(np.asarray(eps_sec, float), block.shape)
    fixed = None if signal is None else np.broadcast_to(np.asarray(signal, float), block.shape)
    dims = 4 if fixed is not None else 5

    def model(problem: Array, unit: Array) -> tuple[Array, ...]:
        """Click and erroneous-click probabilities, μ, p and q of each row of ``unit``."""
        mu, probabilities, q = _protocol(unit, None if fixed is None else fixed[problem], mu3)
        return (*channel(problem, mu), mu, probabilities, q)

    def key_length(problem: Array, unit: Array) -> tuple[Array, Array]:
        """The ``KeyLength`` of these problems."""
        gain, error_gain, mu, probabilities, q = model(problem, unit)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            counts = block_counts(gain, error_gain, probabilities, q, block[problem])
            length = raw_key_length(*counts[:4], mu, probabilities, ec_efficiency, eps[problem], eps_cor)
        return length, counts[4].sum(axis=-1)

    def protocols(problem: Array, unit: Array) -> FiniteKeyProtocol:
        """The key after the floor, and the protocol, of each row of ``unit``."""
        gain, error_gain, mu, probabilities, q = model(problem, unit)
        key = finite_key_from_model(gain, error_gain, mu, probabilities, q, block[problem],
                                    ec_efficiency=ec_efficiency, eps_sec=eps[problem], eps_cor=eps_cor)
        return FiniteKeyProtocol(key.rate, key.length, mu, probabilities, q)

    # Global stage: the same scrambled Sobol points for every problem (a few problems per batch,
    # to bound memory); rank each problem's points by ℓ/N and by ℓ (undefined: last).
    sample = qmc.Sobol(dims, scramble=True, seed=0).random(samples)
    lengths, rates = np.empty((problems, samples)), np.empty((problems, samples))
    for first in range(0, problems, BATCH_PROBLEMS):
        chunk = np.arange(first, min(first + BATCH_PROBLEMS, problems))
        length, pulses = key_length(np.repeat(chunk, samples), np.tile(sample, (chunk.size, 1)))
        with np.errstate(divide="ignore", invalid="ignore"):
            lengths[chunk], rates[chunk] = (a.reshape(chunk.size, samples) for a in (length, length / pulses))
    lengths, rates = (np.where(np.isfinite(a), a, -np.inf) for a in (lengths, rates))

    # Local stage: climb ℓ/N from each problem's best starts; where that gives no key, climb ℓ
    # from the longest starts, then ℓ/N from the climbs that reach key. The candidates are the
    # first starts (a start is never made worse) and the ends of all climbs.
    owner = np.repeat(np.arange(problems), starts)
    x0 = sample[np.argsort(-rates, axis=1)[:, :starts]].reshape(-1, dims)
    points, owners = np.concatenate([x0, _climb(key_length, x0, owner, per_pulse=True)]), np.tile(owner, 2)
    without_key = np.setdiff1d(np.arange(problems), owners[protocols(owners, points).rate > 0])
    if without_key.size and starts_without_key:
        owner = np.repeat(without_key, starts_without_key)
        x0 = sample[np.argsort(-lengths[without_key], axis=1)[:, :starts_without_key]].reshape(-1, dims)
        longest = _climb(key_length, x0, owner, per_pulse=False)
        keyed = protocols(owner, longest).rate > 0
        points = np.concatenate([points, longest, _climb(key_length, longest[keyed], owner[keyed], per_pulse=True)])
        owners = np.concatenate([owners, owner, owner[keyed]])
    found = protocols(owners, points)
    chosen = _best_per_problem(found.rate, owners, problems)
    return FiniteKeyProtocol(*(field[chosen] for field in found))


def _climb(key_length: KeyLength, x0: Array, owner: Array, *, per_pulse: bool) -> Array:
    """SLSQP from each row of ``x0`` (a point of problem ``owner``) to a local maximum of
    asinh(ℓ/N ÷ one bit per block of the start) if ``per_pulse``, else of asinh(ℓ in bits).

    One problem at a time, all 1 + 2·dims probes of a central-difference gradient in one batched
    evaluation of eqs. 1–5.
    """
    dims = x0.shape[1]
    offsets = np.concatenate([np.zeros((1, dims)), STEP * np.eye(dims), -STEP * np.eye(dims)])
    with np.errstate(divide="ignore", invalid="ignore"):
        bit = 1.0 / key_length(owner, x0)[1] if per_pulse else np.ones(len(x0))  # ℓ/N of 1 bit per block
    bit = np.where(np.isfinite(bit) & (bit > 0), bit, 1.0)
    refined = x0.copy()
    for row, (problem, x) in enumerate(zip(owner, x0)):
        probe_index = np.full(len(offsets), problem)

        def fun(point: Array) -> tuple[float, Array]:
            probes = np.clip(point + offsets, 0.0, 1.0)
            length, pulses = key_length(probe_index, probes)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                value = np.arcsinh((length / pulses if per_pulse else length) / bit[row])
            f = -np.nan_to_num(value, nan=UNDEFINED, neginf=UNDEFINED)
            span = np.diagonal(probes[1 : dims + 1] - probes[dims + 1 :])
            return float(f[0]), (f[1 : dims + 1] - f[dims + 1 :]) / np.where(span > 0, span, 1.0)

        refined[row] = minimize(fun, x, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * dims,
                                options={"maxiter": MAX_ITERATIONS}).x
    return refined


def _best_per_problem(rate: Array, owner: Array, problems: int) -> Array:
    """Row of the highest ``rate`` of each problem 0 … problems − 1 (the first row on ties)."""
    order = np.lexsort((-rate, owner))  # stable: by problem, then rate descending
    return order[np.searchsorted(owner[order], np.arange(problems))]
