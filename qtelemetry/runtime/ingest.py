"""Checking what drivers deliver, and the bounded slots between I/O drivers and the cycle.

Checks run on stacked arrays (one row per link), so a fleet's window of 10,000 links is
checked in a few NumPy calls. A polled device's reading is coerced to the protocol's shapes
the moment it arrives, on the event loop, and coalesced into its link's slot; the cycle takes
all slots at once. Nothing a driver returns can raise past this module.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from numbers import Real
from typing import Mapping

import numpy as np
from numpy.typing import NDArray

from qtelemetry.drivers.base import CountBatch
from qtelemetry.estimation.protocols import KEY_STORE_KINDS, LinkProtocol, key_store_consistent

MALFORMED, INVALID, INCONSISTENT = "malformed_batch", "invalid_counts", "inconsistent_counts"
#: Readings a link may have waiting between two cycles; more are dropped as "overflow".
SLOT_DEPTH = 16


class MalformedBatch(ValueError):
    """A reading that does not have the protocol's structure or types."""


def check_rows(protocol: LinkProtocol, counts: Mapping[str, NDArray[np.float64]]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Per row: (impossible values, values that contradict each other).

    Counts must be non-negative integers, amounts and levels non-negative reals or NaN (not
    reported); then the protocol's own consistency (e.g. errors ≤ sifted bits) and,
    for links with a key store, the store's (delivered ≤ requested, stored ≤ capacity).
    """
    rows = len(next(iter(counts.values())))
    invalid = np.zeros(rows, bool)
    with np.errstate(invalid="ignore"):
        for name, values in counts.items():
            flat = values.reshape(rows, -1)
            kind = protocol.count_kinds.get(name, "count")
            good = np.isfinite(flat) & (flat >= 0)
            if kind == "count":
                good &= flat == np.round(flat)
            else:
                good |= np.isnan(flat)
            invalid |= ~good.all(axis=1)
        consistent = np.asarray(protocol.consistent(counts), bool)
        if KEY_STORE_KINDS.keys() <= counts.keys():
            consistent &= key_store_consistent(counts)
    return invalid, ~invalid & ~consistent


def coerce(protocol: LinkProtocol, batch: object) -> tuple[dict[str, NDArray[np.float64]], float]:
    """One polled reading as one row of float arrays; raises MalformedBatch saying what is wrong.

    Amounts and levels the reading leaves out are not reported (NaN); counts are required.
    """
    if not isinstance(batch, CountBatch):
        raise MalformedBatch(f"expected a CountBatch, got {type(batch).__name__}")
    duration = batch.duration_s
    if isinstance(duration, bool) or not isinstance(duration, Real) or not math.isfinite(duration) or duration <= 0:
        raise MalformedBatch("duration_s must be a positive number of seconds")
    shapes = protocol.count_shapes
    required = {k for k in shapes if protocol.count_kinds.get(k, "count") == "count"}
    if not isinstance(batch.counts, Mapping) or not required <= set(batch.counts) <= set(shapes):
        raise MalformedBatch(f"expected counts {sorted(required)}, optionally {sorted(set(shapes) - required)}")
    rows = {}
    for name, shape in shapes.items():
        if name not in batch.counts:
            rows[name] = np.full((1, *shape), np.nan)
            continue
        try:
            values = np.asarray(batch.counts[name])
        except Exception as exc:  # an object numpy cannot even look at
            raise MalformedBatch(f"{name}: {type(exc).__name__}") from None
        if values.dtype.kind not in "biuf" or values.shape != shape:
            raise MalformedBatch(f"{name}: expected numbers of shape {shape}, got {values.dtype} {values.shape}")
        rows[name] = values.astype(float)[None]
    return rows, float(duration)


@dataclass
class Taken:
    """What the slots held at one cycle: per protocol group, the rows and their coalesced windows."""

    windows: dict[str, tuple[NDArray[np.intp], dict[str, NDArray[np.float64]], NDArray[np.float64]]]
    batches: NDArray[np.int64]  #: readings accepted per link (config order)
    errors: NDArray[np.int64]  #: (links, reasons) failures per link and reason
    received_at: NDArray[np.float64]  #: arrival of each link's newest reading (NaN: none)
    last_ok: NDArray[np.int8]  #: per link: 0 no event, 1 the newest event was a reading, -1 a failure


class Slots:
    """One bounded slot per polled link; readings wait there until the next cycle takes them.

    Readings that arrive between two cycles are coalesced: counts and amounts add up, levels
    keep the newest. More than ``SLOT_DEPTH`` of them means the cycle is not running: the
    reading is dropped and counted as an overflow, never queued without bound. An overflow leaves
    the link up: its data is valid and fresh, it is the cycle that is late (which shows in the
    exporter's own lag and skipped cycles, and in data age once the cycle stops taking).
    """

    def __init__(self, n_links: int, reasons: tuple[str, ...], groups: Mapping[str, tuple[LinkProtocol, NDArray[np.intp]]]):
        self._lock = threading.Lock()
        self._reason = {r: i for i, r in enumerate(reasons)}
        self._n_reasons = len(reasons)
        self._group_of: dict[int, tuple[str, int]] = {}
        self._stage: dict[str, dict[str, NDArray[np.float64]]] = {}
        self._duration: dict[str, NDArray[np.float64]] = {}
        self._levels: dict[str, tuple[str, ...]] = {}
        for name, (protocol, members) in groups.items():
            for row, link in enumerate(members):
                self._group_of[int(link)] = (name, row)
            self._stage[name] = {k: np.zeros((len(members), *s)) for k, s in protocol.count_shapes.items()}
            self._duration[name] = np.zeros(len(members))
            self._levels[name] = tuple(k for k in protocol.count_shapes if protocol.count_kinds.get(k) == "level")
        self._members = {name: members for name, (_, members) in groups.items()}
        self.closed = False
        self._reset(n_links)

    def _reset(self, n_links: int) -> None:
        self._pending = np.zeros(n_links, np.int64)
        self._errors = np.zeros((n_links, self._n_reasons), np.int64)
        self._received = np.full(n_links, np.nan)
        self._last_ok = np.zeros(n_links, np.int8)

    def close(self) -> None:
        """Take no more readings (a reload replaced these slots); ``take`` still empties them."""
        with self._lock:
            self.closed = True

    def put(self, link: int, counts: Mapping[str, NDArray[np.float64]], duration: float, received_at: float) -> bool | None:
        """Coalesce one checked reading into the link's slot.

        False (and counted) if the slot is full; None if the slots are closed.
        """
        group, row = self._group_of[link]
        with self._lock:
            if self.closed:
                return None
            if self._pending[link] >= SLOT_DEPTH:  # the exporter is behind, not the link: counted, still up
                self._errors[link, self._reason["overflow"]] += 1
                return False
            stage = self._stage[group]
            for key, values in counts.items():
                if key in self._levels[group]:
                    stage[key][row] = values[0]
                else:
                    stage[key][row] += values[0]
            self._duration[group][row] += duration
            self._pending[link] += 1
            self._received[link] = received_at
            self._last_ok[link] = 1
        return True

    def fail(self, link: int, reason: str) -> bool:
        """Count a failure of the link; False if the slots are closed."""
        with self._lock:
            if self.closed:
                return False
            self._fail(link, reason)
            return True

    def _fail(self, link: int, reason: str) -> None:
        self._errors[link, self._reason[reason]] += 1
        self._last_ok[link] = -1

    def take(self) -> Taken:
        """Everything waiting, at once; the slots start empty again."""
        with self._lock:
            windows = {}
            for group, members in self._members.items():
                rows = np.flatnonzero(self._pending[members] > 0)
                if rows.size:
                    stage = self._stage[group]
                    windows[group] = (rows, {k: v[rows] for k, v in stage.items()}, self._duration[group][rows])
                    for values in stage.values():
                        values[rows] = 0.0
                    self._duration[group][rows] = 0.0
            taken = Taken(windows, self._pending, self._errors, self._received, self._last_ok)
            self._reset(len(self._pending))
        return taken
