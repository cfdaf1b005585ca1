"""The immutable state a scrape reads: published once per cycle, swapped in atomically."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.typing import NDArray

from qtelemetry.runtime.links import LinkTable
from qtelemetry.runtime.network import NetworkSnapshot
from qtelemetry.runtime.relay import RelayView
from qtelemetry.text import count

#: The exporter is not ready while its last cycle is older than this many windows.
LAGGING_WINDOWS = 3


@dataclass(frozen=True)
class GroupSnapshot:
    """One protocol group: arrays indexed like the group's links (``LinkTable.groups``)."""

    estimates: Mapping[str, NDArray[np.float64]]  #: estimates and latest levels, NaN: none
    totals: Mapping[str, NDArray[np.float64]]  #: cumulative counts and amounts


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape exports, computed once per cycle; per-link arrays in config order.

    Whether a link is up, and how old its data is, depends on when it is read: a scrape works
    them out from ``received_at`` and its own clock, so a stuck cycle cannot look current.
    """

    table: LinkTable  #: the links these arrays are about
    groups: Mapping[str, GroupSnapshot]
    received_at: NDArray[np.float64]  #: arrival of the newest data in the estimates, NaN: none yet
    ok: NDArray[np.bool_]  #: the link's newest event was valid data (not an error)
    batches: NDArray[np.int64]
    errors: NDArray[np.int64]  #: (links, reasons)
    skipped: NDArray[np.int64]  #: (links, skip reasons)
    faults: NDArray[np.bool_]  #: (links, fault kinds)
    sequence: int = 0  #: cycle number: 0 before the first cycle
    published_at: float = 0.0  #: Unix time the cycle finished (the start time before the first)
    window_seconds: float = 1.0  #: the cycle's period
    cycles_skipped: int = 0
    reload_successful: bool = True  #: the last reload attempt was applied (a start counts as one)
    reload_success_at: float = 0.0  #: Unix time the running config was loaded
    network: NetworkSnapshot | None = None  #: the latest network analysis (its own cadence)
    relay: RelayView | None = None  #: the simulated key relay's ledger, when it relays

    def up(self, now: float) -> NDArray[np.bool_]:
        """Links whose newest event was valid data received within their stall timeout."""
        with np.errstate(invalid="ignore"):
            return self.ok & (now - self.received_at <= self.table.stall_timeout)

    def lag(self, now: float) -> float:
        """Seconds since the last completed cycle."""
        return max(0.0, now - self.published_at)

    def ready(self, now: float) -> tuple[bool, str]:
        """Ready to be scraped: cycles run on time and every link has delivered data or failed."""
        if self.sequence == 0:
            return False, "no estimation cycle has completed yet"
        if self.lag(now) > LAGGING_WINDOWS * self.window_seconds:
            return False, f"estimation lags by {self.lag(now):.1f} s (the window is {self.window_seconds:g} s)"
        waiting = ~(self.batches > 0) & ~(self.errors.sum(axis=1) > 0)
        if waiting.any():
            return False, f"waiting for the first window or error of {count(int(waiting.sum()), 'link')}"
        return True, "ready"
