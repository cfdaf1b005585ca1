"""PLOB repeaterless bound against its closed form −log2(1 − η).

Pirandola, Laurenza, Ottaviani, Banchi, Nat. Commun. 8, 15043 (2017).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qtelemetry.estimation.repeaterless import plob_bound, plob_fraction


@pytest.mark.parametrize("eta, bits", [(0.5, 1.0), (0.75, 2.0), (1 - 2**-10, 10.0), (0.0, 0.0)])
def test_closed_form_values(eta, bits):
    """−log2(1 − η) at η = 1 − 2^−k is exactly k bits per channel use (PLOB, pure-loss capacity)."""
    assert plob_bound(eta) == pytest.approx(bits, abs=1e-12)


def test_high_loss_limit_is_1_44_eta():
    """PLOB abstract: for high loss the capacity is ≈ 1.44η bits per use (1/ln 2 = 1.4427)."""
    eta = np.array([1e-3, 1e-5, 1e-8, 1e-25])  # 1e-25: 250 dB, below double precision of 1 − η
    assert plob_bound(eta) / eta == pytest.approx(np.full(4, 1 / math.log(2)), rel=1e-3)


def test_vectorised_over_links_and_lossless_channel_is_unbounded():
    """One element per link; a lossless channel (η = 1) has unbounded capacity, never NaN."""
    bound = plob_bound(np.array([[1.0, 0.5], [0.0, 10 ** (-0.2 * 100 / 10)]]))
    assert bound.shape == (2, 2)
    assert math.isinf(bound[0, 0]) and bound[0, 1] == 1.0 and bound[1, 0] == 0.0
    assert bound[1, 1] == pytest.approx(-math.log2(1 - 0.01))  # 100 km at 0.2 dB/km: η = 0.01


def test_fraction_of_the_bound():
    """achieved/bound, 0 where the bound is 0 (η = 0) or unbounded (η = 1)."""
    fraction = plob_fraction([0.25, 1e-3, 0.5], [0.5, 0.0, 1.0])
    assert fraction.tolist() == [0.25, 0.0, 0.0]
