"""The runtime: drivers → checks → sliding windows → one estimate per protocol → a Snapshot.

One estimation thread wakes every window. Each cycle samples every fleet (all simulated links
of a protocol in one NumPy draw), takes what polled devices left in their slots, folds the new
windows into the sliding sums, calls each protocol's vectorised estimator once and publishes
an immutable Snapshot. A cycle that overruns its window skips the ticks it missed and counts
them: the exporter degrades visibly, and a scrape works out freshness from its own clock.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from qtelemetry.config import Config
from qtelemetry.drivers.base import FaultControl, FleetBatch, FleetConfig, FleetDriver, IODriverConfig
from qtelemetry.drivers.faults import FAULT_KINDS
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation.protocols import LinkProtocol
from qtelemetry.runtime.failures import FailureLog
from qtelemetry.runtime.ingest import INCONSISTENT, INVALID, MALFORMED, MalformedBatch, Slots, Taken, check_rows, coerce
from qtelemetry.runtime.links import LinkTable
from qtelemetry.runtime.polling import PollLoop
from qtelemetry.runtime.snapshot import DURATION_BUCKETS, GroupSnapshot, Snapshot
from qtelemetry.runtime.window import SlidingWindow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fleet:
    """A fleet driver and where its links sit: config indices and rows of their protocol group."""

    driver: FleetDriver
    protocol: str
    links: NDArray[np.intp]
    rows: NDArray[np.intp]


class Runtime:
    """Owns drivers, sliding windows and the estimation thread; publishes Snapshots."""

    def __init__(self, config: Config):
        self.config = config
        self.table = table = LinkTable.build(config)
        exporter = config.exporter
        links = table.links
        n = len(table)
        self.windows = {
            protocol: SlidingWindow(PROTOCOLS[protocol], [links[i].driver for i in members], exporter.sliding_windows)
            for protocol, members in table.groups.items()
        }
        self._row = np.zeros(n, np.intp)
        for members in table.groups.values():
            self._row[members] = np.arange(len(members))
        self.started = time.time()
        self._fleets = self._build_fleets()
        self._polled = [(i, link.driver) for i, link in enumerate(links) if isinstance(link.driver, IODriverConfig)]
        self.slots = Slots(n, table.reasons, {p: (PROTOCOLS[p], m) for p, m in table.groups.items()})
        self._reason = {r: i for i, r in enumerate(table.reasons)}
        self._received = np.full(n, np.nan)
        self._ok = np.zeros(n, bool)
        self._stalled = np.zeros(n, bool)
        self._batches = np.zeros(n, np.int64)
        self._errors = np.zeros((n, len(table.reasons)), np.int64)
        self._skipped = np.zeros((n, len(table.skip_reasons)), np.int64)
        self._faults = np.zeros((n, len(FAULT_KINDS)), bool)
        self._buckets = np.zeros(len(DURATION_BUCKETS) + 1, np.int64)
        self._duration_sum = 0.0
        self._cycles_skipped = 0
        self._sequence = 0
        self._log = FailureLog(table.names)
        self._snapshot = self._publish({}, self.started)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: called on the estimation thread after each published snapshot; must not block
        self.listeners: list[Callable[[], None]] = []
        self._poll_loop: PollLoop | None = None

    def _build_fleets(self) -> list[Fleet]:
        by_type: dict[type[FleetConfig], list[int]] = {}
        for i, link in enumerate(self.table.links):
            if isinstance(link.driver, FleetConfig):
                by_type.setdefault(type(link.driver), []).append(i)
        return [
            Fleet(config_type.fleet([self.table.links[i].driver for i in members], self.started),
                  config_type.protocol, np.array(members, np.intp), self._row[members])
            for config_type, members in by_type.items()
        ]

    @property
    def snapshot(self) -> Snapshot:
        """The latest published state (an atomic reference read)."""
        return self._snapshot

    def faults(self, link: str) -> FaultControl:
        """Fault control of a simulated link; LookupError for an unknown or non-simulated link."""
        index = self.table.index.get(link)
        if index is None:
            raise LookupError(f"unknown link {link!r}")
        for fleet in self._fleets:
            where = np.flatnonzero(fleet.links == index)
            if where.size and self.table.fault_mask[index].any():
                return fleet.driver.faults(int(where[0]))
        raise LookupError(f"link {link!r} is not simulated: faults can only be injected into simulated links")

    # --- running ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="estimation", daemon=True)
        self._thread.start()
        if self._polled:
            self._poll_loop = PollLoop(self._polled, self.accept, self.reject)
            self._poll_loop.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poll_loop is not None:
            self._poll_loop.stop()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        window = self.config.exporter.window_seconds
        tick = time.monotonic() + window
        while not self._stop.wait(max(0.0, tick - time.monotonic())):
            try:
                self.cycle()
            except Exception:  # pragma: no cover - last line of defence, logged with its traceback
                log.exception("estimation cycle failed")
            missed = max(0, int((time.monotonic() - tick) // window))
            self._cycles_skipped += missed
            tick += (missed + 1) * window

    def accept(self, index: int, reading: object, received_at: float) -> bool:
        """A polled reading (event-loop thread): coerce, check, coalesce into the link's slot."""
        protocol = PROTOCOLS[self.table.links[index].driver.protocol]
        try:
            counts, duration = coerce(protocol, reading)
        except MalformedBatch as exc:
            self.reject(index, MALFORMED, str(exc))
            return False
        invalid, inconsistent = check_rows(protocol, counts)
        if invalid[0] or inconsistent[0]:
            self.reject(index, INVALID if invalid[0] else INCONSISTENT, "reading rejected")
            return False
        if not self.slots.put(index, counts, duration, received_at):
            self._log.failed([index], "overflow", "slot full: the estimation cycle is not keeping up")
            return False
        self._log.recovered([index])
        return True

    def reject(self, index: int, reason: str, message: str) -> None:
        reason = reason if reason in self._reason else "driver_exception"
        self.slots.fail(index, reason)
        self._log.failed([index], reason, message)

    # --- one cycle -------------------------------------------------------------------------

    def cycle(self, now: float | None = None) -> Snapshot:
        """Sample fleets, take the slots, estimate every protocol once, publish a Snapshot."""
        started = time.perf_counter()
        now = time.time() if now is None else now
        for fleet in self._fleets:
            self._sample(fleet, now)
        self._take(self.slots.take())
        groups = {protocol: self._estimate(protocol, window) for protocol, window in self.windows.items()}
        self._count_stalls(now)
        elapsed = time.perf_counter() - started
        self._buckets[np.searchsorted(DURATION_BUCKETS, elapsed)] += 1
        self._duration_sum += elapsed
        self._sequence += 1
        self._snapshot = self._publish(groups, time.time())
        for listener in self.listeners:
            listener()
        return self._snapshot

    def _sample(self, fleet: Fleet, now: float) -> None:
        protocol = PROTOCOLS[fleet.protocol]
        try:
            batch = fleet.driver.sample(now)
            if isinstance(batch, FleetBatch) and batch.duration_s == 0:
                return  # asked twice for the same instant: nothing new
            counts = fleet_counts(protocol, batch, len(fleet.links))
        except MalformedBatch as exc:
            return self._fail_rows(fleet.links, MALFORMED, f"{fleet.protocol} fleet: {exc}")
        except Exception as exc:  # a simulator bug takes down its own links only
            return self._fail_rows(fleet.links, "driver_exception", f"{fleet.protocol} fleet: {type(exc).__name__}: {exc}")
        invalid, inconsistent = check_rows(protocol, counts)
        self._fail_rows(fleet.links[invalid], INVALID, f"{fleet.protocol} fleet")
        self._fail_rows(fleet.links[inconsistent], INCONSISTENT, f"{fleet.protocol} fleet")
        good = ~(invalid | inconsistent)
        links = fleet.links[good]
        self.windows[fleet.protocol].fold(fleet.rows[good], {k: v[good] for k, v in counts.items()},
                                          np.full(links.size, batch.duration_s))
        self._received[links] = now
        self._ok[links] = True
        self._stalled[links] = False
        self._batches[links] += 1
        self._log.recovered(links.tolist())
        if batch.faults is not None and np.shape(batch.faults) == (len(fleet.links), len(FAULT_KINDS)):
            self._faults[fleet.links] = batch.faults

    def _fail_rows(self, links: NDArray[np.intp], reason: str, what: str) -> None:
        """Count one failure on each of ``links``."""
        if links.size:
            self._errors[links, self._reason[reason]] += 1
            self._ok[links] = False
            self._log.failed(links.tolist(), reason, what)

    def _take(self, taken: Taken) -> None:
        for protocol, (rows, counts, duration) in taken.windows.items():
            self.windows[protocol].fold(rows, counts, duration)
            links = self.table.groups[protocol][rows]
            self._received[links] = taken.received_at[links]
            self._stalled[links] = False
        self._batches += taken.batches
        self._errors += taken.errors
        events = taken.last_ok != 0
        self._ok[events] = taken.last_ok[events] > 0

    def _estimate(self, protocol: str, window: SlidingWindow) -> GroupSnapshot:
        proto: LinkProtocol = PROTOCOLS[protocol]
        values = window.window()
        with np.errstate(all="ignore"):
            estimates = proto.estimate(values, window.duration, window.params, self.config.exporter.confidence_level)
            empty = proto.no_estimate(values)
        members = self.table.groups[protocol]
        has_data = window.has_data()
        for reason, mask in empty.items():
            self._skipped[members[mask & has_data], self.table.skip_reasons.index(reason)] += 1
        estimates.update({k: v.copy() for k, v in window.latest.items()})
        return GroupSnapshot(MappingProxyType(estimates), MappingProxyType({k: v.copy() for k, v in window.totals.items()}))

    def _count_stalls(self, now: float) -> None:
        """Count each link's move into 'no new data for its stall timeout' once, as reason stalled."""
        since = np.where(np.isnan(self._received), self.started, self._received)
        newly = (now - since > self.table.stall_timeout) & ~self._stalled
        if newly.any():
            self._stalled |= newly
            self._fail_rows(np.flatnonzero(newly), "stalled", "no data within the stall timeout")

    def _publish(self, groups: Mapping[str, GroupSnapshot], published_at: float) -> Snapshot:
        return Snapshot(
            sequence=self._sequence, published_at=published_at, groups=MappingProxyType(groups),
            received_at=self._received.copy(), ok=self._ok.copy(), batches=self._batches.copy(),
            errors=self._errors.copy(), skipped=self._skipped.copy(), faults=self._faults.copy(),
            duration_buckets=np.cumsum(self._buckets), duration_sum=self._duration_sum,
            cycles_skipped=self._cycles_skipped,
        )


def fleet_counts(protocol: LinkProtocol, batch: object, n_links: int) -> dict[str, NDArray[np.float64]]:
    """A fleet's window as float arrays of the protocol's shapes; MalformedBatch if it is not one."""
    if not isinstance(batch, FleetBatch) or not isinstance(batch.counts, Mapping):
        raise MalformedBatch(f"expected a FleetBatch, got {type(batch).__name__}")
    if set(batch.counts) != set(protocol.count_shapes):
        raise MalformedBatch(f"expected counts {sorted(protocol.count_shapes)}")
    counts = {}
    for name, shape in protocol.count_shapes.items():
        values = np.asarray(batch.counts[name])
        if values.dtype.kind not in "biuf" or values.shape != (n_links, *shape):
            raise MalformedBatch(f"{name}: expected numbers of shape {(n_links, *shape)}, got {values.dtype} {values.shape}")
        counts[name] = values.astype(float, copy=False)
    if not (np.isfinite(batch.duration_s) and batch.duration_s > 0):
        raise MalformedBatch("duration_s must be a positive number of seconds")
    return counts
