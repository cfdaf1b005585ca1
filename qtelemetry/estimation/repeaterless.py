"""Repeaterless bound: no point-to-point protocol over a lossy channel beats it, whatever the hardware.

Source: Pirandola, Laurenza, Ottaviani, Banchi, "Fundamental limits of repeaterless quantum
communications", Nat. Commun. 8, 15043 (2017) ("PLOB"): the two-way assisted secret-key capacity
of a pure-loss channel of transmissivity η is −log2(1 − η) bits per channel use.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from qtelemetry.estimation.decoy import Array


def plob_bound(transmissivity: ArrayLike) -> Array:
    """Secret-key capacity −log2(1 − η) per channel use of a pure-loss channel (PLOB 2017).

    ≈ 1.44·η for small η; +inf for a lossless channel (η = 1), 0 for η = 0. η is clipped to [0, 1].
    """
    eta = np.clip(np.asarray(transmissivity, float), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return -np.log1p(-eta) / np.log(2.0) + 0.0  # log1p keeps η ≪ 1e-16; + 0.0 turns −0.0 into 0.0


def plob_fraction(rate_per_pulse: ArrayLike, transmissivity: ArrayLike) -> Array:
    """Achieved key rate as a fraction of the PLOB bound (PLOB 2017); 0 where the bound is 0."""
    bound = plob_bound(transmissivity)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.asarray(rate_per_pulse, float) / bound
    return np.where(bound > 0, np.nan_to_num(fraction, nan=0.0), 0.0)
