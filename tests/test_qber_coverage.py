"""Coverage of the QBER upper bound: over many simulated windows, the true QBER lies under the
one-sided bound at least as often as the nominal confidence level says (Clopper & Pearson 1934).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config, click_model, sample_window
from qtelemetry.estimation.bb84 import BB84_DECOY

WINDOWS = 4000


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.99])
@pytest.mark.parametrize("misalignment", [0.005, 0.03])
def test_true_qber_is_under_the_bound_at_the_nominal_rate(confidence, misalignment):
    cfg = SimulatedBB84Config(type="simulated-bb84", fiber_length_km=25, detector_efficiency=0.1,
                              misalignment_error=misalignment, seed=0)
    true_qber = click_model(cfg)[1][0]  # error probability of a sifted signal click
    rng = np.random.default_rng(int(confidence * 1000 + misalignment * 1e4))
    # short windows (2e5 pulses: ~200 sifted bits per basis) so that the bound really matters
    windows = [sample_window(cfg, rng, 200_000) for _ in range(WINDOWS)]
    sums = {k: np.stack([w[k] for w in windows]).astype(float) for k in windows[0]}
    params = {k: np.full(WINDOWS, v) for k, v in cfg.estimation_params().items()}
    est = BB84_DECOY.estimate(sums, np.ones(WINDOWS), params, confidence)  # every window is a "link"
    for basis in ("z", "x"):
        covered = np.mean(true_qber <= est[f"qber_{basis}_upper"])
        # not significantly below nominal: 3 binomial standard deviations of the coverage estimate
        assert covered >= confidence - 3 * math.sqrt(confidence * (1 - confidence) / WINDOWS), covered
        # and a real bound, not a trivial one: the point estimate alone covers only about half
        assert np.mean(true_qber <= est[f"qber_{basis}"]) < covered
