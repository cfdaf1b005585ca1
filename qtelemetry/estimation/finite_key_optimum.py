"""The finite-key protocol a modelled link should run: Lim et al.'s numerical optimisation.

Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014), §IV, maximise the key per pulse ℓ/N
of one block over {q, p_μ1, p_μ2, μ1, μ2} with μ3 fixed. Near the distance where the key ends
the region with key is a thin sliver (key basis q ≈ 0.1–0.4, p_μ1 of a few per cent), which a
coarse grid misses. So: a scrambled Sobol sample of the whole box, evaluated for every problem
in one batch, picks the best few starts of each; SciPy's SLSQP (bounded, quasi-Newton) refines
each start, its central-difference gradient one batched evaluation of eqs. 1–5 per step.
SLSQP rather than L-BFGS-B: same answers here, but L-BFGS-B's BLAS calls made each step cost
milliseconds on a busy two-core machine (OpenBLAS threads spinning).

The objective is asinh(ℓ/N ÷ one bit per block), with ℓ before the floor and before clipping
at 0: log-like where there is key, so a step does not depend on how many pulses one bit costs
(1e-3 to 1e-12 per pulse across distances), and still smooth into the region without key, so a
start there has a slope towards it. Without it SLSQP stalled at points half as good.
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
) -> FiniteKeyProtocol:
    """Maximise ℓ/N over q, p_μ1, p_μ2, μ2 (and μ1 unless ``signal`` fixes it) for each problem.

    One problem per element of ``block_size`` (1-D); ``eps_sec`` and ``signal`` broadcast to it.
    Deterministic: the Sobol sample is seeded.
    """
    block = np.atleast_1d(np.asarray(block_size, float))
    problems = block.size
    eps = np.broadcast_to(np.asarray(eps_sec, float), block.shape)
    fixed = None if signal is None else np.broadcast_to(np.asarray(signal, float), block.shape)
    dims = 4 if fixed is not None else 5

    def objective(index: Array, unit: Array) -> tuple[Array, Array]:
        """ℓ/N before the floor (negative: no key) and N, one per row of ``unit``."""
        mu, probabilities, q = _protocol(unit, None if fixed is None else fixed[index], mu3)
        gain, error_gain = channel(index, mu)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            counts = block_counts(gain, error_gain, probabilities, q, block[index])
            length = raw_key_length(*counts[:4], mu, probabilities, ec_efficiency, eps[index], eps_cor)
            pulses = counts[4].sum(axis=-1)
            rate = length / pulses
        return np.where(np.isfinite(rate), rate, -1.0), pulses

    # Global stage: the same scrambled Sobol points for every problem (a few problems per batch,
    # to bound memory); keep each one's best few.
    sample = qmc.Sobol(dims, scramble=True, seed=0).random(samples)
    values, pulses = np.empty((problems, samples)), np.empty((problems, samples))
    for first in range(0, problems, BATCH_PROBLEMS):
        chunk = np.arange(first, min(first + BATCH_PROBLEMS, problems))
        found = objective(np.repeat(chunk, samples), np.tile(sample, (chunk.size, 1)))
        values[chunk], pulses[chunk] = (a.reshape(chunk.size, samples) for a in found)
    best = np.argsort(-values, axis=1)[:, :starts]
    x0 = sample[best].reshape(-1, dims)  # (problems·starts, dims)
    owner = np.repeat(np.arange(problems), starts)
    # Maximise asinh(ℓ/N ÷ one bit per block): like log(ℓ/N) above, so steps do not depend on how
    # many pulses a bit costs, and still smooth through ℓ = 0 into the region without key.
    bit = 1.0 / np.take_along_axis(pulses, best, axis=1).ravel()
    bit = np.where(np.isfinite(bit) & (bit > 0), bit, 1.0)

    # Local stage: SLSQP from each start, one problem at a time, all 1 + 2·dims probes of a
    # central-difference gradient in one batched evaluation.
    offsets = np.concatenate([np.zeros((1, dims)), STEP * np.eye(dims), -STEP * np.eye(dims)])
    refined = x0.copy()
    for row, (problem, x) in enumerate(zip(owner, x0)):
        probe_index = np.full(len(offsets), problem)

        def fun(point: Array) -> tuple[float, Array]:
            probes = np.clip(point + offsets, 0.0, 1.0)
            f = -np.arcsinh(objective(probe_index, probes)[0] / bit[row])
            span = np.diagonal(probes[1 : dims + 1] - probes[dims + 1 :])
            return float(f[0]), (f[1 : dims + 1] - f[dims + 1 :]) / np.where(span > 0, span, 1.0)

        refined[row] = minimize(fun, x, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * dims,
                                options={"maxiter": MAX_ITERATIONS}).x
    candidates = np.concatenate([x0, refined])  # a start is never made worse
    owners = np.concatenate([owner, owner])
    mu, probabilities, q = _protocol(candidates, None if fixed is None else fixed[owners], mu3)
    gain, error_gain = channel(owners, mu)
    key = finite_key_from_model(gain, error_gain, mu, probabilities, q, block[owners],
                                ec_efficiency=ec_efficiency, eps_sec=eps[owners], eps_cor=eps_cor)
    # Rows of problem p are p·starts + s and (problems + p)·starts + s: pick the best of them.
    rows = ((np.arange(problems)[:, None, None] + [[[0], [problems]]]) * starts + np.arange(starts)).reshape(problems, -1)
    chosen = rows[np.arange(problems), np.argmax(key.rate[rows], axis=1)]
    return FiniteKeyProtocol(key.rate[chosen], key.length[chosen], mu[chosen], probabilities[chosen], q[chosen])
