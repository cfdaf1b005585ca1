"""The tamper detectors of one config's links of one protocol, fed each new window as it arrives.

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
from qtelemetry.estimation.tamper_statistics import STATISTICS
from qtelemetry.tamperconfig import TamperConfig, detector_settings, resolve


class TamperDetectors:
    """Detector settings and state of the links of one protocol (rows: that protocol group's rows)."""

    def __init__(self, protocol: str, links: Sequence[LinkConfig], default: TamperConfig,
                 mean_times: NDArray[np.float64]):
        """``mean_times``: each link's mean time between false alarms (its share of the fleet budget)."""
        resolved = [resolve(default, link.tamper) for link in links]
        self.enabled = np.array([t.enabled for t in resolved], bool)
        self.settings = detector_settings(resolved, np.where(self.enabled, mean_times, np.nan))
        self.state = changedetect.DetectorState(STATISTICS[protocol](self.settings.qber_shifts.shape[1]), len(links))

    def fold(self, rows: NDArray[np.intp], counts: Mapping[str, NDArray[np.float64]],
             duration: NDArray[np.float64]) -> None:
        """One new window for each of ``rows`` (counts shaped like the rows)."""
        on = self.enabled[rows]
        if on.all():
            changedetect.update(self.state, rows, counts, duration, self.settings)
        elif on.any():
            changedetect.update(self.state, rows[on], {k: v[on] for k, v in counts.items()}, duration[on],
                                self.settings)

    def estimates(self, current: Mapping[str, NDArray[np.float64]]) -> dict[str, NDArray[np.float64]]:
        """The detectors' exported state: statistic/threshold and alarm per detector, warm-up, baseline
        ratios, and the link's mean time between false alarms."""
        state, stats = self.state, self.state.statistics
        running = (state.armed & self.enabled)[:, None]  # a link disabled by a reload keeps its state, unexported
        level = np.where(running, changedetect.level(state), np.nan)
        alarm = np.where(np.isnan(level), np.nan, state.alarm)  # a detector none of whose statistics runs: absent
        ratios = np.where(running, changedetect.baseline_ratio(
            state, np.column_stack([current[key] for key in stats.quantities.values()])), np.nan)
        out = {changedetect.estimate_key("warmup"): np.where(self.enabled, (~state.armed).astype(float), np.nan),
               changedetect.estimate_key("mean_time"): self.settings.mean_time_between_false_alarms_s}
        for j, detector in enumerate(stats.detectors):
            out[changedetect.estimate_key("statistic", detector)] = level[:, j]
            out[changedetect.estimate_key("alarm", detector)] = alarm[:, j]
        for j, quantity in enumerate(stats.quantities):
            out[changedetect.estimate_key("baseline_ratio", quantity)] = ratios[:, j]
        return out

    def rearm(self, row: int, relearn: bool) -> None:
        """Clear a link's statistics and alarms after an investigation; ``relearn``: new warm-up too."""
        if not self.enabled[row]:
            raise LookupError("its tamper detectors are disabled (tamper.enabled: false)")
        self.state.rearm(np.array([row]), relearn)

    def adopt(self, rows: NDArray[np.intp], old: "TamperDetectors", old_rows: NDArray[np.intp]) -> None:
        """Continue ``old``'s detectors at ``rows`` (a reload keeps baselines, statistics and alarms).

        Thresholds are set again where the settings (or the link's share of the budget) changed, from
        the same warm-up sums.
        """
        self.state.adopt(rows, old.state, old_rows)
        changed = np.zeros(rows.size, bool)
        for name in changedetect.Settings.__dataclass_fields__:
            new, before = getattr(self.settings, name)[rows], getattr(old.settings, name)[old_rows]
            if new.shape != before.shape:
                changed[:] = True
                continue
            same = (new == before) | (np.isnan(new) & np.isnan(before))
            changed |= ~same.reshape(rows.size, -1).all(axis=1)
        refreeze = rows[changed & self.state.armed[rows]]
        if refreeze.size:
            statistic, alarm = self.state.statistic[refreeze], self.state.alarm[refreeze]
            changedetect.freeze(self.state, refreeze, self.settings)
            self.state.statistic[refreeze], self.state.alarm[refreeze] = statistic, alarm
