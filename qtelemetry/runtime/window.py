"""Sliding-window sums of one protocol group, updated for many links at once.

Counts and amounts of the last ``windows`` acquisition windows sit in a ring per link; the
window sum is updated by adding the new window and subtracting the one it overwrites, and a
cumulative total feeds the exported counters. Levels keep only their latest value.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from qtelemetry.drivers.base import BaseDriverConfig
from qtelemetry.estimation.protocols import Counts, LinkProtocol


class SlidingWindow:
    """Window sums, totals and latest levels of every link of one protocol (rows: the group's links)."""

    def __init__(self, protocol: LinkProtocol, drivers: Sequence[BaseDriverConfig], windows: int):
        self.protocol = protocol
        n = len(drivers)
        shapes = protocol.count_shapes
        self.summed = tuple(k for k in shapes if protocol.count_kinds.get(k, "count") != "level")
        self.levels = tuple(k for k in shapes if k not in self.summed)
        self.params = {
            name: np.array([d.estimation_params()[name] for d in drivers], float) for name in protocol.param_names
        }
        self.ring = {k: np.zeros((n, windows, *shapes[k])) for k in self.summed}
        self.sums = {k: np.zeros((n, *shapes[k])) for k in self.summed}
        self.totals = {k: np.zeros((n, *shapes[k])) for k in self.summed}
        self.latest = {k: np.full((n, *shapes[k]), np.nan) for k in self.levels}
        self.ring_duration = np.zeros((n, windows))
        self.duration = np.zeros(n)
        self.position = np.zeros(n, dtype=np.intp)

    def fold(self, rows: NDArray[np.intp], counts: Mapping[str, NDArray[np.float64]],
             duration: NDArray[np.float64]) -> None:
        """Add one window per row (``counts[k]`` shaped (len(rows), ...)); rows must be distinct."""
        slot = self.position[rows]
        for key in self.summed:
            new = counts[key]
            self.sums[key][rows] += new - self.ring[key][rows, slot]
            self.ring[key][rows, slot] = new
            self.totals[key][rows] += new
        for key in self.levels:
            self.latest[key][rows] = counts[key]
        self.duration[rows] += duration - self.ring_duration[rows, slot]
        self.ring_duration[rows, slot] = duration
        self.position[rows] = (slot + 1) % self.ring_duration.shape[1]

    def adopt(self, rows: NDArray[np.intp], old: "SlidingWindow", old_rows: NDArray[np.intp]) -> None:
        """Continue ``old``'s links at ``rows``: totals and levels always, the window if it has the same length."""
        for key in self.summed:
            self.totals[key][rows] = old.totals[key][old_rows]
        for key in self.levels:
            self.latest[key][rows] = old.latest[key][old_rows]
        if self.ring_duration.shape[1] == old.ring_duration.shape[1]:
            for key in self.summed:
                self.ring[key][rows] = old.ring[key][old_rows]
                self.sums[key][rows] = old.sums[key][old_rows]
            self.ring_duration[rows] = old.ring_duration[old_rows]
            self.duration[rows] = old.duration[old_rows]
            self.position[rows] = old.position[old_rows]

    def window(self) -> Counts:
        """What the estimator reads: window sums of counts and amounts, latest levels."""
        return self.sums | self.latest

    def has_data(self) -> NDArray[np.bool_]:
        return self.duration > 0
