"""Runtime: driver threads → batch validation → sliding-window sums → one estimate per protocol.

Each link's driver runs in its own thread and may block; batches go to a queue. One
estimation thread wakes every window, validates the new batches of all links at once, folds
them into per-protocol sliding-window sums and calls each protocol's vectorised estimator
once. The result is an immutable ``Snapshot`` swapped in atomically, so a scrape reads the
latest snapshot and never waits on a device.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from qtelemetry.config import Config, LinkConfig
from qtelemetry.drivers.base import CountBatch, Driver, DriverError, KeySupply
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation.protocols import LinkProtocol

log = logging.getLogger(__name__)

#: Reasons the pipeline itself can drop a batch for; exported as 0 from the start, so that
#: rate() and increase() see every series before its first error (drivers may add their own).
PIPELINE_REASONS = ("driver_exception", "stalled", "overflow", "malformed_batch", "invalid_counts",
                    "inconsistent_counts", "invalid_key_supply", "inconsistent_key_supply")


#: Upper bounds (s) of the estimation-duration histogram buckets.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class GroupSnapshot:
    """Latest state of all links of one protocol, arrays indexed like ``links``."""

    protocol: str
    links: tuple[str, ...]
    estimates: Mapping[str, NDArray[np.float64]]
    totals: Mapping[str, NDArray[np.float64]]


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape exports, computed once per estimation cycle."""

    links: tuple[LinkConfig, ...] = ()
    groups: tuple[GroupSnapshot, ...] = ()
    up: Mapping[str, bool] = field(default_factory=dict)
    last_update: Mapping[str, float] = field(default_factory=dict)
    batches: Mapping[str, int] = field(default_factory=dict)
    errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    skipped: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: per link that reports a key store: its latest KeySupply with cumulative
    #: generated/requested/delivered bits (levels as last reported)
    key_supply: Mapping[str, KeySupply] = field(default_factory=dict)
    faults: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: cumulative counts of cycles per ``DURATION_BUCKETS`` upper bound (then +Inf), and their sum
    estimation_buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    estimation_seconds_sum: float = 0.0
    cycles_skipped: int = 0
    published_at: float = 0.0
    window_seconds: float = 0.0


class ProtocolGroup:
    """Sliding-window count sums for all links of one protocol, updated without loops over links."""

    def __init__(self, protocol: LinkProtocol, links: Sequence[LinkConfig], windows: int):
        self.protocol = protocol
        self.links = tuple(link.name for link in links)
        self.index = {name: i for i, name in enumerate(self.links)}
        n = len(links)
        self.params = {
            name: np.array([link.driver.estimation_params()[name] for link in links], float)
            for name in protocol.param_names
        }
        self.ring = {k: np.zeros((n, windows, *s)) for k, s in protocol.count_shapes.items()}
        self.ring_duration = np.zeros((n, windows))
        self.sums = {k: np.zeros((n, *s)) for k, s in protocol.count_shapes.items()}
        self.duration = np.zeros(n)
        self.totals = {k: np.zeros((n, *s)) for k, s in protocol.count_shapes.items()}
        self.position = np.zeros(n, dtype=np.intp)

    def reject_reasons(self, batches: Sequence[CountBatch]) -> list[str | None]:
        """Why each batch is unusable (None if usable); checks run on the stacked arrays."""
        shapes = self.protocol.count_shapes
        reasons: list[str | None] = [
            None if set(b.counts) == set(shapes) and all(np.shape(b.counts[k]) == s for k, s in shapes.items())
            and b.duration_s > 0 else "malformed_batch"
            for b in batches
        ]
        ok = [i for i, r in enumerate(reasons) if r is None]
        if ok:
            counts = {k: np.stack([np.asarray(batches[i].counts[k], float) for i in ok]) for k in shapes}
            flat = np.concatenate([c.reshape(len(ok), -1) for c in counts.values()], axis=1)
            valid = np.all(np.isfinite(flat) & (flat >= 0) & (flat == np.round(flat)), axis=1)
            with np.errstate(invalid="ignore"):
                consistent = self.protocol.consistent(counts)
            for j, i in enumerate(ok):
                reasons[i] = None if valid[j] and consistent[j] else ("invalid_counts" if not valid[j] else "inconsistent_counts")
        return reasons

    def add(self, index: NDArray[np.intp], batches: Sequence[CountBatch]) -> None:
        """Fold valid batches (at most one per link per call) into the window sums and totals."""
        slot = self.position[index]
        for key in self.protocol.count_shapes:
            new = np.stack([np.asarray(b.counts[key], float) for b in batches])
            self.sums[key][index] += new - self.ring[key][index, slot]
            self.ring[key][index, slot] = new
            self.totals[key][index] += new
        duration = np.array([b.duration_s for b in batches])
        self.duration[index] += duration - self.ring_duration[index, slot]
        self.ring_duration[index, slot] = duration
        self.position[index] = (slot + 1) % self.ring_duration.shape[1]

    def estimate(self, confidence: float) -> dict[str, NDArray[np.float64]]:
        return self.protocol.estimate(self.sums, self.duration, self.params, confidence)


class Pipeline:
    """Owns the drivers, their threads and the estimation loop; publishes Snapshots."""

    def __init__(self, config: Config, build_driver: Callable[[LinkConfig], Driver] | None = None):
        self.config = config
        exporter = config.exporter
        self._build = build_driver or (lambda link: link.driver.build(exporter.window_seconds))
        self._queue: queue.Queue[tuple[str, CountBatch | DriverError]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._drivers: dict[str, Driver] = {}
        by_protocol: dict[str, list[LinkConfig]] = {}
        for link in config.links:
            by_protocol.setdefault(link.driver.protocol, []).append(link)
        self.groups = {
            name: ProtocolGroup(PROTOCOLS[name], links, exporter.sliding_windows)
            for name, links in by_protocol.items()
        }
        self._group_of = {link.name: link.driver.protocol for link in config.links}
        self._up = {link.name: False for link in config.links}
        self._last_batch = {link.name: time.time() for link in config.links}
        self._last_update: dict[str, float] = {}
        self._stalled: set[str] = set()
        self._batches: Counter[str] = Counter()
        self._errors: Counter[tuple[str, str]] = Counter(
            {(link.name, reason): 0 for link in config.links for reason in PIPELINE_REASONS})
        self._skipped: Counter[tuple[str, str]] = Counter()
        self._key_supply: dict[str, KeySupply] = {}
        self._faults: dict[str, tuple[str, ...]] = {}
        self._buckets = np.zeros(len(DURATION_BUCKETS) + 1, dtype=np.int64)
        self._estimation_seconds = 0.0
        self._cycles_skipped = 0
        self.snapshot = Snapshot(links=tuple(config.links), window_seconds=exporter.window_seconds,
                                 published_at=time.time())

    @property
    def drivers(self) -> dict[str, Driver]:
        """Running drivers by link name (empty before ``start``)."""
        return dict(self._drivers)

    def start(self) -> None:
        for link in self.config.links:
            self._drivers[link.name] = self._build(link)
            self._spawn(f"driver-{link.name}", self._poll, link.name)
        self._spawn("estimation", self._estimate_loop)

    def _spawn(self, name: str, target: Callable[..., None], *args: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for driver in self._drivers.values():
            driver.close()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _poll(self, link: str) -> None:
        """Driver thread: a failing driver is reported and retried after a window, never fatal."""
        driver = self._drivers[link]
        while not self._stop.is_set():
            try:
                self._queue.put((link, driver.acquire()))
            except DriverError as exc:
                self._queue.put((link, exc))
                self._stop.wait(self.config.exporter.window_seconds)
            except Exception as exc:  # a driver bug must not take the exporter down
                self._queue.put((link, DriverError("driver_exception", f"{type(exc).__name__}: {exc}")))
                self._stop.wait(self.config.exporter.window_seconds)

    def _estimate_loop(self) -> None:
        window = self.config.exporter.window_seconds
        next_tick = time.monotonic() + window
        while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
            try:
                self.cycle()
            except Exception:  # pragma: no cover - last line of defence, logged with traceback
                log.exception("estimation cycle failed")
            missed = int((time.monotonic() - next_tick) // window)
            self._cycles_skipped += missed
            next_tick += (missed + 1) * window

    def _fail(self, link: str, reason: str, message: str) -> None:
        self._errors[(link, reason)] += 1
        self._up[link] = False
        log.warning("link=%s reason=%s dropped: %s", link, reason, message)

    def cycle(self) -> Snapshot:
        """Drain new batches, validate, estimate every protocol group once, publish a Snapshot."""
        started = time.perf_counter()
        pending: dict[str, list[tuple[str, CountBatch]]] = {name: [] for name in self.groups}
        while True:
            try:
                link, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, DriverError):
                self._fail(link, item.reason, str(item))
            else:
                pending[self._group_of[link]].append((link, item))
        for name, group in self.groups.items():
            self._ingest(group, pending[name])
        now = time.time()
        for link, last in self._last_batch.items():
            if now - last > self.config.exporter.stall_timeout_seconds and link not in self._stalled:
                self._stalled.add(link)
                self._fail(link, "stalled", f"no batch for {now - last:.1f} s")
        groups = tuple(
            GroupSnapshot(
                protocol=name,
                links=group.links,
                estimates=MappingProxyType(group.estimate(self.config.exporter.confidence_level)),
                totals=MappingProxyType({k: v.copy() for k, v in group.totals.items()}),
            )
            for name, group in self.groups.items()
        )
        for group in self.groups.values():
            self._count_skipped(group)
        self.snapshot = Snapshot(
            links=tuple(self.config.links),
            groups=groups,
            up=MappingProxyType(dict(self._up)),
            last_update=MappingProxyType(dict(self._last_update)),
            batches=MappingProxyType(dict(self._batches)),
            errors=MappingProxyType(dict(self._errors)),
            skipped=MappingProxyType(dict(self._skipped)),
            key_supply=MappingProxyType(dict(self._key_supply)),
            faults=MappingProxyType(dict(self._faults)),
        )
        elapsed = time.perf_counter() - started
        self._buckets[np.searchsorted(DURATION_BUCKETS, elapsed)] += 1
        self._estimation_seconds += elapsed
        self.snapshot = replace(
            self.snapshot, estimation_buckets=tuple(np.cumsum(self._buckets).tolist()),
            estimation_seconds_sum=self._estimation_seconds, cycles_skipped=self._cycles_skipped,
            published_at=time.time(), window_seconds=self.config.exporter.window_seconds)
        return self.snapshot

    def _ingest(self, group: ProtocolGroup, batches: list[tuple[str, CountBatch]]) -> None:
        """Validate and fold in batches; a link that sent several since the last cycle adds them in order."""
        remaining = batches
        while remaining:
            seen: set[str] = set()
            this_round: list[tuple[str, CountBatch]] = []
            later: list[tuple[str, CountBatch]] = []
            for link, batch in remaining:
                (later if link in seen else this_round).append((link, batch))
                seen.add(link)
            remaining = later
            reasons = [r or key_supply_problem(b.key_supply)
                       for r, (_, b) in zip(group.reject_reasons([b for _, b in this_round]), this_round)]
            now = time.time()
            good = []
            for (link, batch), reason in zip(this_round, reasons):
                self._last_batch[link] = now
                if reason is None:
                    good.append((link, batch))
                else:
                    self._fail(link, reason, "batch rejected")
            if good:
                group.add(np.array([group.index[link] for link, _ in good], dtype=np.intp), [b for _, b in good])
            for link, batch in good:
                self._add_key_supply(link, batch.key_supply)
                self._faults[link] = batch.active_faults
                self._up[link] = True
                self._stalled.discard(link)
                self._last_update[link] = now
                self._batches[link] += 1

    def _count_skipped(self, group: ProtocolGroup) -> None:
        """Count, per reason, the links with data whose window supports no estimate this cycle."""
        has_data = group.duration > 0
        for reason, mask in group.protocol.no_estimate(group.sums).items():
            for i in np.flatnonzero(mask & has_data):
                self._skipped[(group.links[i], reason)] += 1

    def _add_key_supply(self, link: str, supply: KeySupply | None) -> None:
        if supply is None:
            return
        before = self._key_supply.get(link, KeySupply(0.0, 0.0, 0.0, 0.0, 0.0))
        self._key_supply[link] = KeySupply(
            generated_bits=before.generated_bits + supply.generated_bits,
            requested_bits=before.requested_bits + supply.requested_bits,
            delivered_bits=before.delivered_bits + supply.delivered_bits,
            stored_bits=supply.stored_bits,
            capacity_bits=supply.capacity_bits,
        )


def key_supply_problem(supply: KeySupply | None) -> str | None:
    """Why a reported key store is impossible (None if it is fine or absent)."""
    if supply is None:
        return None
    values = np.array([supply.generated_bits, supply.requested_bits, supply.delivered_bits,
                       supply.stored_bits, supply.capacity_bits])
    if not np.all(np.isfinite(values) & (values >= 0)):
        return "invalid_key_supply"
    if supply.delivered_bits > supply.requested_bits or supply.stored_bits > supply.capacity_bits:
        return "inconsistent_key_supply"
    return None
