"""Exact binomial confidence bounds (Clopper & Pearson, Biometrika 26, 404 (1934)).

Vectorised over arrays of counts; an empty sample (n = 0) has no bound and gives NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta


def ratio(k: ArrayLike, n: ArrayLike) -> NDArray[np.float64]:
    """k / n, NaN where n = 0 (no estimate rather than a division error)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, k / n, np.nan)


def clopper_pearson_upper(k: ArrayLike, n: ArrayLike, confidence: float) -> NDArray[np.float64]:
    """One-sided upper bound p_U with P(p ≤ p_U) ≥ confidence: the Beta(k+1, n−k) quantile."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore"):
        upper = beta.ppf(confidence, k + 1.0, np.maximum(n - k, 1e-300))
    return np.where(n <= 0, np.nan, np.where(k >= n, 1.0, upper))


def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, confidence: float) -> NDArray[np.float64]:
    """One-sided lower bound p_L with P(p ≥ p_L) ≥ confidence: the Beta(k, n−k+1) quantile."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore"):
        lower = beta.ppf(1.0 - confidence, np.maximum(k, 1e-300), n - k + 1.0)
    return np.where(n <= 0, np.nan, np.where(k <= 0, 0.0, lower))


def clopper_pearson_interval(
    k: ArrayLike, n: ArrayLike, confidence: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided interval at the given confidence: each tail holds (1 − confidence)/2."""
    one_sided = 1.0 - (1.0 - confidence) / 2.0
    return clopper_pearson_lower(k, n, one_sided), clopper_pearson_upper(k, n, one_sided)
