"""The tamper detectors of one config's decoy-BB84 links, fed each new window as it arrives.

The engine hands every window it folds into the sliding sums to ``fold`` as well: the CUSUMs
need the counts of each window, not the sliding sums. ``estimates`` adds the detectors' state to
the group's estimates, so the catalogue exports it like any other estimate.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from qtelemetry.config import LinkConfig
from qtelemetry.estimation import changedetect
from qtelemetry.estimation.bb84 import BB84_DECOY
from qtelemetry.tamperconfig import TamperConfig, resolve

#: Estimates of the sliding window that ``qkd_tamper_baseline_ratio`` compares with the baseline.
CURRENT = {"qber_z": "qber_z", "qber_x": "qber_x", "signal_gain": "gain_signal", "decoy_gain": "gain_decoy",
           "vacuum_gain": "gain_vacuum"}


class TamperDetectors:
    """Detector settings and state of the decoy-BB84 links (rows: that protocol group's rows)."""

    protocol = BB84_DECOY.name

    def __init__(self, links: Sequence[LinkConfig], default: TamperConfig):
        resolved = [resolve(default, link.tamper) for link in links]
        column = lambda name: np.array([getattr(t, name) for t in resolved], float)  # noqa: E731
        self.enabled = np.array([t.enabled for t in resolved], bool)
        self.settings = changedetect.Settings(
            column("mean_time_between_false_alarms_seconds"), column("warmup_seconds"), column("qber_shift"),
            column("decoy_gain_shift"), column("vacuum_gain_factor"))
        self.state = changedetect.DetectorState(len(links))

    def fold(self, rows: NDArray[np.intp], counts: Mapping[str, NDArray[np.float64]],
             duration: NDArray[np.float64]) -> None:
        """One new window for each of ``rows`` (counts shaped like the rows)."""
        on = self.enabled[rows]
        if on.any():
            changedetect.update(self.state, rows[on], {k: counts[k][on] for k in ("errors", "sifted", "detections",
                                                                                  "pulses")},
                                duration[on], self.settings)

    def estimates(self, current: Mapping[str, NDArray[np.float64]]) -> dict[str, NDArray[np.float64]]:
        """The detectors' exported state: statistic/threshold and alarm per detector, warm-up, baseline ratios."""
        state = self.state
        running = (state.armed & self.enabled)[:, None]  # a link disabled by a reload keeps its state, unexported
        level = np.where(running, changedetect.level(state), np.nan)
        alarm = np.where(running, state.alarm, np.nan)
        ratios = np.where(running, changedetect.baseline_ratio(
            state, np.column_stack([current[CURRENT[q]] for q in changedetect.QUANTITIES])), np.nan)
        out = {changedetect.estimate_key("warmup"): np.where(self.enabled, (~state.armed).astype(float), np.nan)}
        for j, detector in enumerate(changedetect.DETECTORS):
            out[changedetect.estimate_key("statistic", detector)] = level[:, j]
            out[changedetect.estimate_key("alarm", detector)] = alarm[:, j]
        for j, quantity in enumerate(changedetect.QUANTITIES):
            out[changedetect.estimate_key("baseline_ratio", quantity)] = ratios[:, j]
        return out

    def rearm(self, row: int, relearn: bool) -> None:
        """Clear a link's statistics and alarms after an investigation; ``relearn``: new warm-up too."""
        if not self.enabled[row]:
            raise LookupError("its tamper detectors are disabled (tamper.enabled: false)")
        self.state.rearm(np.array([row]), relearn)

    def adopt(self, rows: NDArray[np.intp], old: "TamperDetectors", old_rows: NDArray[np.intp]) -> None:
        """Continue ``old``'s detectors at ``rows`` (a reload keeps baselines, statistics and alarms).

        Thresholds are set again where the settings changed, from the same warm-up sums.
        """
        self.state.adopt(rows, old.state, old_rows)
        settings = [self.settings, old.settings]
        changed = np.zeros(rows.size, bool)
        for name in changedetect.Settings.__dataclass_fields__:
            new, before = (getattr(s, name) for s in settings)
            changed |= new[rows] != before[old_rows]
        refreeze = rows[changed & self.state.armed[rows]]
        if refreeze.size:
            statistic, alarm = self.state.statistic[refreeze], self.state.alarm[refreeze]
            changedetect.freeze(self.state, refreeze, self.settings)
            self.state.statistic[refreeze], self.state.alarm[refreeze] = statistic, alarm
