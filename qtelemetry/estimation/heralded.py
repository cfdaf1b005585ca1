"""Heralded entanglement between two quantum-memory nodes through a midpoint station.

Each attempt, both nodes emit a photon entangled with their memory towards a beam splitter
and two threshold detectors at the midpoint; the right click pattern heralds a memory-memory
Bell pair. Two schemes:

- two-click, Barrett & Kok, PRA 71, 060310 (2005): two rounds with a memory π-flip between
  them; exactly one click in each round heralds; success η²/2 for per-arm efficiency η.
- single-click, Cabrillo et al., PRA 59, 1025 (1999); Humphreys et al., Nature 558, 268
  (2018): each node is bright with population p; one click heralds; success ≈ 2pη,
  fidelity ≈ 1 − p (the rate-fidelity trade-off set by p).

The herald model splits heralds into components by the memory state they leave: "good"
(the target Bell state with the intrinsic fidelity F0, a Ψ+/Ψ− mixture), "half" (a which-path
mixture of |↑↓⟩ and |↓↑⟩, F = ½: a lost photon replaced by a dark click) and "zero" (|↑↑⟩ or
|↓↓⟩, F = 0: two photons, or dark clicks with none). Storage dephases the good component only:
F(t) = ½ + (F0 − ½)·exp(−t/T2), T2 the pair's coherence time (1/T2 = 1/T2_A + 1/T2_B).

Fidelity is measured, like in the experiments, on a fraction of heralded pairs measured in the
X, Y or Z basis: each basis's error rate e_P is the fraction of outcomes that disagree with the
target state's correlation, and F = 1 − (e_X + e_Y + e_Z)/2.

All functions broadcast over NumPy arrays and never loop in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Mapping, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qtelemetry.estimation.entanglement import fidelity_from_error_rates, multinomial_cells
from qtelemetry.estimation.protocols import CountKind, Counts, Estimates, shapes
from qtelemetry.estimation.stats import clopper_pearson_interval, ratio

Array = NDArray[np.float64]

PAULI_BASES = ("X", "Y", "Z")
OUTCOMES = ("correct", "error")


class Heralds(NamedTuple):
    """Herald probability per attempt, split by the memory state each herald leaves."""

    good: Array  # target Bell pair with the intrinsic fidelity F0
    half: Array  # mixture of |↑↓⟩ and |↓↑⟩ (F = ½)
    zero: Array  # |↑↑⟩ or |↓↓⟩ (F = 0)

    @property
    def total(self) -> Array:
        return self.good + self.half + self.zero


def _one_click(photons: int, eta: Array, dark: Array) -> tuple[Array, Array]:
    """P(exactly one of two threshold detectors clicks) for 0, 1 or 2 photons at the beam splitter,
    split into (a photon caused it, only a background click did).

    Two indistinguishable photons bunch into one output (Hong, Ou, Mandel, PRL 59, 2044 (1987));
    each detector also clicks from background with probability ``dark`` per gate.
    """
    all_lost = (1.0 - eta) ** photons
    return (1.0 - all_lost) * (1.0 - dark), all_lost * 2.0 * dark * (1.0 - dark)


def two_click_heralds(eta: ArrayLike, dark: ArrayLike) -> Heralds:
    """Barrett–Kok heralds per attempt; good = ½·[η(1 − d)]² → η²/2 without dark counts (Barrett & Kok 2005).

    Odd-parity half of the memory states sends one photon per round; even parity sends two in
    one round and none in the other, heralded only through a dark click.
    """
    eta, dark = np.asarray(eta, float), np.asarray(dark, float)
    photon, background = _one_click(1, eta, dark)
    return Heralds(
        good=0.5 * photon**2,
        half=0.5 * background * (2.0 * photon + background),  # at least one round clicked falsely
        zero=0.5 * sum(_one_click(2, eta, dark)) * sum(_one_click(0, eta, dark)),
    )


def single_click_heralds(eta: ArrayLike, dark: ArrayLike, bright: ArrayLike) -> Heralds:
    """Single-click heralds per attempt; good = 2p(1 − p)·η(1 − d) ≈ 2pη (Cabrillo et al. 1999; Humphreys et al. 2018).

    Both nodes bright (p²) leaves |↑↑⟩ whatever clicks; both dark ((1 − p)²) only heralds
    through a dark click and leaves |↓↓⟩.
    """
    eta, dark, p = (np.asarray(a, float) for a in (eta, dark, bright))
    photon, background = _one_click(1, eta, dark)
    one_bright = 2.0 * p * (1.0 - p)
    return Heralds(
        good=one_bright * photon,
        half=one_bright * background,
        zero=p**2 * sum(_one_click(2, eta, dark)) + (1.0 - p) ** 2 * sum(_one_click(0, eta, dark)),
    )


#: Speed of light in standard single-mode fibre, km/s (group index ≈ 1.468 at 1550 nm, Corning SMF-28).
FIBRE_LIGHT_SPEED_KM_S = 299_792.458 / 1.468


def herald_delay_s(length_km: ArrayLike) -> Array:
    """Time a memory waits for its herald: photon to the midpoint and signal back, L/v in total."""
    return np.asarray(length_km, float) / FIBRE_LIGHT_SPEED_KM_S


def dephased_fidelity(initial: ArrayLike, storage_s: ArrayLike, coherence_time_s: ArrayLike) -> Array:
    """F(t) = ½ + (F0 − ½)·exp(−t/T2): pure dephasing of a Bell pair's coherence (model stated in the module doc)."""
    decay = np.exp(-np.asarray(storage_s, float) / np.asarray(coherence_time_s, float))
    return 0.5 + (np.asarray(initial, float) - 0.5) * decay


def error_rates(
    heralds: Heralds, initial_fidelity: ArrayLike, storage_s: ArrayLike, coherence_time_s: ArrayLike
) -> Array:
    """Per-basis error rates (…, 3) = (e_X, e_Y, e_Z) of heralded pairs after storage.

    Good pairs (Ψ+/Ψ− mixture of fidelity F(t)) err with 1 − F(t) in X and Y, never in Z; half
    pairs err with ½ in X and Y, never in Z; zero pairs err with ½ in X and Y and always in Z.
    """
    f = dephased_fidelity(initial_fidelity, storage_s, coherence_time_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        e_xy = (heralds.good * (1.0 - f) + 0.5 * (heralds.half + heralds.zero)) / heralds.total
        e_z = heralds.zero / heralds.total
    return np.stack(np.broadcast_arrays(e_xy, e_xy, e_z), axis=-1)


def single_click_tradeoff(
    bright: ArrayLike,
    eta: ArrayLike,
    dark: ArrayLike,
    attempt_rate_hz: ArrayLike,
    initial_fidelity: ArrayLike,
    storage_s: ArrayLike,
    coherence_time_s: ArrayLike,
) -> tuple[Array, Array]:
    """(heralded pairs per second, fidelity) against the bright-state population p, for planning.

    Rate ≈ 2pη·R_attempt and F ≈ (1 − p)·F(t) for small p and η (Humphreys et al. 2018):
    brighter nodes herald faster but more often leave |↑↑⟩.
    """
    heralds = single_click_heralds(eta, dark, bright)
    e = error_rates(heralds, initial_fidelity, storage_s, coherence_time_s)
    return heralds.total * attempt_rate_hz, fidelity_from_error_rates(e[..., 0], e[..., 1], e[..., 2])


def sample_window(
    rng: np.random.Generator,
    attempts: ArrayLike,
    herald_probability: ArrayLike,
    basis_errors: ArrayLike,
    measured_fraction: ArrayLike,
) -> dict[str, Array]:
    """One window's counts: binomial heralds, then a multinomial split of heralded pairs into
    (measured in basis X/Y/Z chosen uniformly) × (correct, error) and unmeasured."""
    basis_errors = np.nan_to_num(np.asarray(basis_errors, float), nan=0.5)  # NaN: nothing heralds anyway
    lead = np.broadcast_shapes(np.shape(attempts), np.shape(herald_probability), basis_errors.shape[:-1],
                               np.shape(measured_fraction))
    n = np.broadcast_to(np.asarray(attempts, np.int64), lead)
    successes = np.asarray(rng.binomial(n, np.clip(np.broadcast_to(herald_probability, lead), 0.0, 1.0)))
    per_basis = (np.asarray(measured_fraction, float) / 3.0)[..., None]
    cells = np.stack([per_basis * (1.0 - basis_errors), per_basis * basis_errors], axis=-1)
    cells = np.broadcast_to(cells, (*lead, 3, 2)).reshape(*lead, 6)
    return {
        "attempts": n.astype(float),
        "successes": successes.astype(float),
        "tomography": multinomial_cells(rng, successes, cells).reshape(*lead, 3, 2),
    }


@dataclass(frozen=True)
class HeraldedProtocol:
    """Estimator for heralded-entanglement links, vectorised over links; independent of the scheme."""

    name: str = "heralded-entanglement"
    count_axes = {
        "attempts": (),  # entanglement attempts in the window
        "successes": (),  # heralds (true and false)
        "tomography": (PAULI_BASES, OUTCOMES),  # measured heralded pairs by basis and outcome
    }
    count_shapes = shapes(count_axes)
    count_kinds: ClassVar[Mapping[str, CountKind]] = MappingProxyType({})
    param_names: tuple[str, ...] = ()

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """Successes ≤ attempts, measured pairs ≤ successes."""
        measured = counts["tomography"].sum(axis=(-2, -1))
        return (counts["successes"] <= counts["attempts"]) & (measured <= counts["successes"])

    def no_estimate(self, window: Counts) -> dict[str, NDArray[np.bool_]]:
        """Why a link's window supports no (or no fidelity) estimate: no attempts, or no heralds."""
        return {"no_attempts": window["attempts"] == 0,
                "no_heralds": (window["attempts"] > 0) & (window["successes"] == 0)}

    def estimate(
        self, sums: Counts, duration_s: NDArray[np.float64], params: Counts, confidence: float
    ) -> Estimates:
        attempts, successes, tomo = sums["attempts"], sums["successes"], sums["tomography"]
        p_low, p_high = clopper_pearson_interval(successes, attempts, confidence)
        errors, measured = tomo[..., 1], tomo.sum(axis=-1)  # (links, basis)
        # Union bound over the three bases: all three intervals hold together at `confidence`.
        e_low, e_high = clopper_pearson_interval(errors, measured, 1.0 - (1.0 - confidence) / 3.0)
        e = ratio(errors, measured)
        return {
            "success_probability": ratio(successes, attempts),
            "success_probability_lower": p_low,
            "success_probability_upper": p_high,
            "pair_rate": ratio(successes, duration_s),
            "fidelity": fidelity_from_error_rates(e[:, 0], e[:, 1], e[:, 2]),
            "fidelity_lower": np.clip(fidelity_from_error_rates(e_high[:, 0], e_high[:, 1], e_high[:, 2]), 0.0, 1.0),
            "fidelity_upper": np.clip(fidelity_from_error_rates(e_low[:, 0], e_low[:, 1], e_low[:, 2]), 0.0, 1.0),
        }


HERALDED = HeraldedProtocol()
