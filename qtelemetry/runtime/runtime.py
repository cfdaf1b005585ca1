"""The runtime: one estimation thread, one poll loop, and the engine of the current config.

The estimation thread wakes every window and runs one cycle of the engine, then publishes an
immutable Snapshot. A cycle that overruns its window skips the ticks it missed and counts them:
the exporter degrades visibly, and a scrape works out freshness from its own clock. A reload
builds an engine for the new config beside the running one, lets it adopt the state of the
links both have, and swaps it in between two cycles.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry

from qtelemetry import selfmetrics
from qtelemetry.config import Config
from qtelemetry.drivers.base import FaultControl, FleetDriver
from qtelemetry.runtime.engine import Engine, Folded
from qtelemetry.estimation.network import Topology
from qtelemetry.runtime.links import LinkTable
from qtelemetry.runtime.network import LinkInputs, NetworkSnapshot, snapshot_inputs
from qtelemetry.runtime.polling import PollLoop
from qtelemetry.runtime.snapshot import Snapshot
from qtelemetry.runtime.window import SlidingWindow

log = logging.getLogger(__name__)


class Runtime:
    """Owns the engine, the estimation thread and the poll loop; publishes Snapshots. The duration
    of every cycle goes to the exporter's own ``registry`` (if given)."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None):
        self.started = time.time()
        self._engine = Engine(config, self.started)
        self._lock = threading.Lock()  # one cycle or one swap at a time
        self._cycle_duration = selfmetrics.instrument("qtelemetry_estimation_duration_seconds", registry)
        self._cycles_skipped = 0
        self._sequence = 0
        self._reloaded = (True, self.started)  # (last attempt applied, when the running config was loaded)
        self._network: NetworkSnapshot | None = None  # the latest network analysis, published with each snapshot
        self._snapshot = self._publish({}, self.started)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_loop = PollLoop(self.accept, self.reject)
        #: called on the estimation thread after each published snapshot; must not block
        self.listeners: list[Callable[[], None]] = []
        #: called with the new config's links before a reload swaps them in (e.g. to lay them out)
        self.reload_hooks: list[Callable[[LinkTable], object]] = []

    @property
    def config(self) -> Config:
        return self._engine.config

    @property
    def table(self) -> LinkTable:
        return self._engine.table

    @property
    def windows(self) -> dict[str, SlidingWindow]:
        """The current engine's sliding windows, by protocol."""
        return self._engine.windows

    @property
    def observers(self) -> list[Callable[[Folded], None]]:
        """Called on the estimation thread with every window folded (they stay across reloads)."""
        return self._engine.observers

    @property
    def snapshot(self) -> Snapshot:
        """The latest published state (an atomic reference read)."""
        return self._snapshot

    def faults(self, link: str) -> FaultControl:
        return self._engine.faults(link)

    def rearm(self, link: str, relearn: bool = False) -> None:
        """Clear a link's tamper statistics and alarms (``relearn``: and learn a new baseline) between
        two cycles; LookupError for a link without tamper detectors."""
        with self._lock:
            self._engine.rearm(link, relearn)

    def fleet_of(self, link: str) -> tuple[FleetDriver, int]:
        """The fleet that simulates ``link`` and its row there (a device process reads its key store)."""
        return self._engine.fleet_of(link)

    # --- running ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="estimation", daemon=True)
        self._thread.start()
        self._poll_loop.start(self._engine.polled)

    def stop(self) -> None:
        self._stop.set()
        self._poll_loop.stop()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        tick = time.monotonic() + self.config.exporter.window_seconds
        while not self._stop.wait(max(0.0, tick - time.monotonic())):
            try:
                self.cycle()
            except Exception:  # pragma: no cover - last line of defence, logged with its traceback
                log.exception("estimation cycle failed")
            window = self.config.exporter.window_seconds
            missed = max(0, int((time.monotonic() - tick) // window))
            self._cycles_skipped += missed
            tick += (missed + 1) * window

    def cycle(self, now: float | None = None) -> Snapshot:
        """One cycle of the current engine at ``now`` (default: the clock), published with the
        exporter's own figures."""
        with self._lock:
            started = time.perf_counter()
            now = time.time() if now is None else now
            groups = self._engine.cycle(now)
            elapsed = time.perf_counter() - started
            self._cycle_duration.observe(elapsed)
            self._sequence += 1
            self._snapshot = self._publish(groups, now + elapsed)
        for listener in self.listeners:
            listener()
        return self._snapshot

    def _publish(self, groups: dict, published_at: float) -> Snapshot:
        return self._engine.snapshot(
            groups, sequence=self._sequence, published_at=published_at,
            window_seconds=self._engine.config.exporter.window_seconds,
            cycles_skipped=self._cycles_skipped, reload_successful=self._reloaded[0],
            reload_success_at=self._reloaded[1], network=self._network)

    # --- the network view ------------------------------------------------------------------

    def network_inputs(self) -> tuple[Topology, LinkInputs, float] | None:
        """The topology and per-link inputs of a network analysis now; None: nothing to analyse yet."""
        snap, now = self._snapshot, time.time()
        if snap.table.network is None or snap.sequence == 0:
            return None
        return snap.table.network, snapshot_inputs(snap, now), now

    def publish_network(self, network: NetworkSnapshot) -> None:
        """Publish ``network`` with the next snapshot (dropped if a reload changed the topology)."""
        with self._lock:
            if network.topology is self._engine.table.network:
                self._network = network

    def network_interval(self) -> float | None:
        """Seconds between network analyses; None: the config has no network section."""
        network = self.config.network
        return None if network is None else network.analysis_interval_seconds

    def accept(self, link: str, reading: object, received_at: float) -> bool:
        """A polled reading, for whichever engine is current (retried once across a swap)."""
        for _ in range(2):
            accepted = self._engine.accept(link, reading, received_at)
            if accepted is not None:
                return accepted
        return False

    def reject(self, link: str, reason: str, message: str) -> None:
        for _ in range(2):
            if self._engine.reject(link, reason, message) is not None:
                return

    # --- reload ----------------------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Run ``config`` from the next cycle on: links added start, links removed stop, the
        others continue their series and counters; polled links whose driver is unchanged
        keep their connection. Building the new engine happens beside the running one."""
        engine = Engine(config, self.started)
        for hook in self.reload_hooks:
            hook(engine.table)
        with self._lock:
            old, self._engine = self._engine, engine
            engine.adopt(old)
            self._reloaded = (True, time.time())
            self._network = None  # of the old topology; the next analysis is of the new one
            self._snapshot = self._publish(engine.estimates(), self._snapshot.published_at)
        self._poll_loop.update(engine.polled)
        log.info("config reloaded", extra={"links": len(engine.table),
                                           "added": len(set(engine.table.names) - set(old.table.names)),
                                           "removed": len(set(old.table.names) - set(engine.table.names))})

    def reload_failed(self) -> None:
        """A reload was rejected: the running config stays, and the snapshot says so."""
        with self._lock:
            self._reloaded = (False, self._reloaded[1])
            self._snapshot = dataclasses.replace(self._snapshot, reload_successful=False)
        for listener in self.listeners:
            listener()
