"""One config's links at work: drivers → checks → sliding windows → one estimate per protocol.

Each cycle samples every fleet (all simulated links of a protocol in one NumPy draw), takes
what polled devices left in their slots, folds the new windows into the sliding sums and calls
each protocol's vectorised estimator once. An engine lives as long as its config: a reload
builds a new one that adopts the state of the links both configs have.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from qtelemetry.config import Config
from qtelemetry.drivers.base import FaultControl, FleetBatch, FleetConfig, FleetDriver, IODriverConfig
from qtelemetry.drivers.faults import FAULT_KINDS
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation.protocols import LinkProtocol
from qtelemetry.estimation.tamper_statistics import STATISTICS as TAMPER_STATISTICS
from qtelemetry.runtime.failures import FailureLog
from qtelemetry.runtime.ingest import INCONSISTENT, INVALID, MALFORMED, MalformedBatch, Slots, Taken, check_rows, coerce
from qtelemetry.drivers.simulated import KeyDistillingFleet
from qtelemetry.runtime.links import LinkTable
from qtelemetry.runtime.relay import KeyRelay
from qtelemetry.runtime.snapshot import GroupSnapshot, Snapshot
from qtelemetry.runtime.tamper import TamperDetectors
from qtelemetry.runtime.window import SlidingWindow


@dataclass(frozen=True)
class Folded:
    """Windows folded in one go for links of one protocol (what a recorder keeps)."""

    protocol: str
    table: LinkTable  #: the links of the engine that folded them
    links: NDArray[np.intp]  #: config indices
    params: Mapping[str, NDArray[np.float64]]  #: (links,) the estimator's parameters
    counts: Mapping[str, NDArray[np.float64]]  #: (links, *count shape)
    duration: NDArray[np.float64]  #: (links,) seconds
    end: NDArray[np.float64]  #: (links,) Unix time the window ended (arrived, for polled links)
    faults: NDArray[np.bool_]  #: (links, fault kinds) simulated faults acting in the window


@dataclass(frozen=True)
class Sampled:
    """A fleet's checked window, before it is folded: its good rows (of the fleet), their counts."""

    good: NDArray[np.intp]
    counts: dict[str, NDArray[np.float64]]
    batch: FleetBatch


@dataclass(frozen=True)
class Fleet:
    """A fleet driver and where its links sit: config indices and rows of their protocol group."""

    driver: FleetDriver
    protocol: str
    links: NDArray[np.intp]
    rows: NDArray[np.intp]


class Engine:
    """Links, sliding windows, fleets, slots and per-link state of one config."""

    def __init__(self, config: Config, started: float):
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
        self.started = started
        self._built_at = time.time()  # a link that never delivered is stalled counting from here
        self._fleets = self._build_fleets()
        relays = np.zeros(n, bool)
        for fleet in self._fleets:
            relays[fleet.links] = isinstance(fleet.driver, KeyDistillingFleet)
        #: the simulated key management layer, when demands can be relayed over simulated links
        self.relay = KeyRelay.of(table.network, config.network, relays)
        #: polled links: name -> driver config
        self.polled = {link.name: link.driver for link in links if isinstance(link.driver, IODriverConfig)}
        self.slots = Slots(n, table.reasons, {p: (PROTOCOLS[p], m) for p, m in table.groups.items()})
        self._reason = {r: i for i, r in enumerate(table.reasons)}
        self._received = np.full(n, np.nan)
        self._ok = np.zeros(n, bool)
        self._stalled = np.zeros(n, bool)
        self._batches = np.zeros(n, np.int64)
        self._errors = np.zeros((n, len(table.reasons)), np.int64)
        self._skipped = np.zeros((n, len(table.skip_reasons)), np.int64)
        self._faults = np.zeros((n, len(FAULT_KINDS)), bool)
        self._log = FailureLog(table.names)
        #: called on the estimation thread with every window folded; empty (no cost) unless recording
        self.observers: list[Callable[[Folded], None]] = []
        mean_times = config.tamper_mean_times()
        #: the tamper detectors of each protocol that has them
        self.tamper = {protocol: TamperDetectors(protocol, [links[i] for i in members], exporter.tamper, mean_times[members])
                       for protocol, members in table.groups.items() if protocol in TAMPER_STATISTICS}

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

    def fleet_of(self, link: str) -> tuple[FleetDriver, int]:
        """The fleet that simulates ``link`` and the link's row in it; LookupError if there is none."""
        index = self.table.index.get(link)
        if index is None:
            raise LookupError(f"unknown link {link!r}")
        for fleet in self._fleets:
            where = np.flatnonzero(fleet.links == index)
            if where.size:
                return fleet.driver, int(where[0])
        raise LookupError(f"link {link!r} is not simulated")

    def faults(self, link: str) -> FaultControl:
        """Fault control of a simulated link; LookupError for an unknown or non-simulated link."""
        try:
            fleet, row = self.fleet_of(link)
        except LookupError as exc:
            raise LookupError(f"{exc}: faults can only be injected into simulated links") from None
        return fleet.faults(row)

    def rearm(self, link: str, relearn: bool) -> None:
        """Re-arm a link's tamper detectors; LookupError for an unknown link or one without them."""
        index = self.table.index.get(link)
        detectors = None if index is None else self.tamper.get(self.table.links[index].driver.protocol)
        if detectors is None:
            raise LookupError(f"link {link!r} has no tamper detectors (decoy-BB84 and entangled-photon links only)")
        detectors.rearm(int(self._row[index]), relearn)

    def accept(self, link: str, reading: object, received_at: float) -> bool | None:
        """A polled reading (event-loop thread): coerce, check, coalesce into the link's slot.

        None: this engine has been replaced by a reload and takes no more readings.
        """
        index = self.table.index.get(link)
        if index is None or self.slots.closed:
            return None
        protocol = PROTOCOLS[self.table.links[index].driver.protocol]
        try:
            counts, duration = coerce(protocol, reading)
        except MalformedBatch as exc:
            return self._reject(index, MALFORMED, str(exc))
        invalid, inconsistent = check_rows(protocol, counts)
        if invalid[0] or inconsistent[0]:
            return self._reject(index, INVALID if invalid[0] else INCONSISTENT, "reading rejected")
        stored = self.slots.put(index, counts, duration, received_at)
        if stored is None:
            return None
        if not stored:
            self._log.failed([index], "overflow", "slot full: the estimation cycle is not keeping up", down=False)
            return False
        self._log.recovered([index])
        return True

    def reject(self, link: str, reason: str, message: str) -> bool | None:
        """A polled link's failure; None if this engine no longer has the link or takes no more."""
        index = self.table.index.get(link)
        return None if index is None or self.slots.closed else self._reject(index, reason, message)

    def _reject(self, index: int, reason: str, message: str) -> bool | None:
        reason = reason if reason in self._reason else "driver_exception"
        if not self.slots.fail(index, reason):
            return None
        self._log.failed([index], reason, message)
        return False

    # --- one cycle -------------------------------------------------------------------------

    def cycle(self, now: float) -> dict[str, GroupSnapshot]:
        """Sample fleets, take the slots, estimate every protocol once."""
        sampled = [(fleet, self._sample(fleet, now)) for fleet in self._fleets]
        if self.relay is not None:
            self._relay(now, sampled)
        for fleet, window in sampled:
            if window is not None:
                self._ingest(fleet, window, now)
        self._take(self.slots.take())
        self._count_stalls(now)
        self._count_skipped()
        return self.estimates()

    def estimates(self) -> dict[str, GroupSnapshot]:
        """Every protocol's estimates from its current sliding window."""
        return {protocol: self._estimate(protocol, window) for protocol, window in self.windows.items()}

    def _sample(self, fleet: Fleet, now: float) -> Sampled | None:
        """A fleet's new window, checked (failures counted); None when it has none."""
        protocol = PROTOCOLS[fleet.protocol]
        try:
            with np.errstate(all="ignore"):  # what a model's overflow gives is checked below like any window
                batch = fleet.driver.sample(now)
            if isinstance(batch, FleetBatch) and batch.duration_s == 0:
                return None  # asked twice for the same instant: nothing new
            counts = fleet_counts(protocol, batch, len(fleet.links))
        except MalformedBatch as exc:
            return self._fail_rows(fleet.links, MALFORMED, f"{fleet.protocol} fleet: {exc}")
        except Exception as exc:  # a simulator bug takes down its own links only
            return self._fail_rows(fleet.links, "driver_exception", f"{fleet.protocol} fleet: {type(exc).__name__}: {exc}")
        invalid, inconsistent = check_rows(protocol, counts)
        self._fail_rows(fleet.links[invalid], INVALID, f"{fleet.protocol} fleet")
        self._fail_rows(fleet.links[inconsistent], INCONSISTENT, f"{fleet.protocol} fleet")
        good = np.flatnonzero(~(invalid | inconsistent))
        return Sampled(good, {k: v[good] for k, v in counts.items()}, batch)

    def _relay(self, now: float, sampled: list[tuple[Fleet, Sampled | None]]) -> None:
        """Relay the demands' key over the stores the fleets just filled; what each store gives
        counts as requested and delivered key of its link in this window."""
        n = len(self.table)
        duration, generated, stored = np.full(n, np.nan), np.zeros(n), np.zeros(n)
        for fleet, window in sampled:
            if window is not None and isinstance(fleet.driver, KeyDistillingFleet):
                links = fleet.links[window.good]
                duration[links] = window.batch.duration_s
                generated[links] = window.counts["key_generated_bits"]
                stored[links] = window.counts["key_stored_bits"]
        draw = self.relay.step(now, duration, generated, stored)
        for fleet, window in sampled:
            if window is None or not isinstance(fleet.driver, KeyDistillingFleet):
                continue
            links, counts = fleet.links[window.good], window.counts
            taken = fleet.driver.take(window.good, draw.taken[links])
            counts["key_requested_bits"] = counts["key_requested_bits"] + draw.asked[links]
            counts["key_delivered_bits"] = counts["key_delivered_bits"] + taken
            counts["key_stored_bits"] = counts["key_stored_bits"] - taken

    def _ingest(self, fleet: Fleet, window: Sampled, now: float) -> None:
        """Fold a fleet's checked window and mark its links as having delivered."""
        links, counts, batch = fleet.links[window.good], window.counts, window.batch
        duration = np.full(links.size, batch.duration_s)
        self._fold(fleet.protocol, fleet.rows[window.good], counts, duration)
        self._received[links] = now
        self._ok[links] = True
        self._stalled[links] = False
        self._batches[links] += 1
        self._log.recovered(links)
        if batch.faults is not None and np.shape(batch.faults) == (len(fleet.links), len(FAULT_KINDS)):
            self._faults[fleet.links] = batch.faults
        if self.observers:
            self._observe(fleet.protocol, links, fleet.rows[window.good], counts, duration, np.full(links.size, now))

    def _observe(self, protocol: str, links: NDArray[np.intp], rows: NDArray[np.intp], counts: Mapping[str, NDArray],
                 duration: NDArray[np.float64], end: NDArray[np.float64]) -> None:
        params = {k: v[rows] for k, v in self.windows[protocol].params.items()}
        for observe in self.observers:
            observe(Folded(protocol, self.table, links, params, counts, duration, end, self._faults[links]))

    def _fold(self, protocol: str, rows: NDArray[np.intp], counts: Mapping[str, NDArray[np.float64]],
              duration: NDArray[np.float64]) -> None:
        """New windows into the sliding sums and, window by window, into the tamper detectors."""
        self.windows[protocol].fold(rows, counts, duration)
        if protocol in self.tamper:
            self.tamper[protocol].fold(rows, counts, duration)

    def _fail_rows(self, links: NDArray[np.intp], reason: str, what: str) -> None:
        """Count one failure on each of ``links``."""
        if links.size:
            self._errors[links, self._reason[reason]] += 1
            self._ok[links] = False
            self._log.failed(links.tolist(), reason, what)

    def _take(self, taken: Taken) -> None:
        for protocol, (rows, counts, duration) in taken.windows.items():
            self._fold(protocol, rows, counts, duration)
            links = self.table.groups[protocol][rows]
            self._received[links] = taken.received_at[links]
            self._stalled[links] = False
            if self.observers:
                self._observe(protocol, links, rows, counts, duration, taken.received_at[links])
        self._batches += taken.batches
        self._errors += taken.errors
        events = taken.last_ok != 0
        self._ok[events] = taken.last_ok[events] > 0

    def _estimate(self, protocol: str, window: SlidingWindow) -> GroupSnapshot:
        with np.errstate(all="ignore"):
            estimates = PROTOCOLS[protocol].estimate(window.window(), window.duration, window.params,
                                                     self.config.exporter.confidence_level)
        estimates.update({k: v.copy() for k, v in window.latest.items()})
        if protocol in self.tamper:
            estimates.update(self.tamper[protocol].estimates(estimates))
        return GroupSnapshot(MappingProxyType(estimates), MappingProxyType({k: v.copy() for k, v in window.totals.items()}))

    def _count_skipped(self) -> None:
        """Count, per reason, the links with data whose window supports no estimate this cycle."""
        for protocol, window in self.windows.items():
            with np.errstate(all="ignore"):
                empty = PROTOCOLS[protocol].no_estimate(window.window())
            members, has_data = self.table.groups[protocol], window.has_data()
            for reason, mask in empty.items():
                self._skipped[members[mask & has_data], self.table.skip_reasons.index(reason)] += 1

    def _count_stalls(self, now: float) -> None:
        """Count each link's move into 'no new data for its stall timeout' once, as reason stalled."""
        since = np.where(np.isnan(self._received), self._built_at, self._received)
        newly = (now - since > self.table.stall_timeout) & ~self._stalled
        if newly.any():
            self._stalled |= newly
            self._fail_rows(np.flatnonzero(newly), "stalled", "no data within the stall timeout")

    def snapshot(self, groups: Mapping[str, GroupSnapshot], **exporter: Any) -> Snapshot:
        """The per-link state as of now, with ``groups`` from ``cycle`` and the exporter's own figures."""
        return Snapshot(
            table=self.table, groups=MappingProxyType(dict(groups)),
            received_at=self._received.copy(), ok=self._ok.copy(), batches=self._batches.copy(),
            errors=self._errors.copy(), skipped=self._skipped.copy(), faults=self._faults.copy(),
            relay=None if self.relay is None else self.relay.view(), **exporter,
        )

    # --- reload ----------------------------------------------------------------------------

    def adopt(self, old: "Engine") -> None:
        """Take over the state of every link ``old`` also has, so its series continue.

        Called on a new engine before it runs. The old engine's slots are closed and emptied
        first, so no reading is lost between the two: a reading in flight is retried here.
        """
        old.slots.close()
        old._take(old.slots.take())
        self.observers = old.observers
        if self.relay is not None and old.relay is not None:
            self.relay.adopt(old.relay)
        mine, theirs = _common(self.table.names, old.table.names)
        if not mine.size:
            return
        for state in ("_received", "_ok", "_stalled", "_batches", "_faults"):
            getattr(self, state)[mine] = getattr(old, state)[theirs]
        _copy_columns(self._errors, self.table.reasons, mine, old._errors, old.table.reasons, theirs)
        _copy_columns(self._skipped, self.table.skip_reasons, mine, old._skipped, old.table.skip_reasons, theirs)
        for protocol, window in self.windows.items():
            if protocol not in old.windows:
                continue
            rows, old_rows = _common([self.table.names[i] for i in self.table.groups[protocol]],
                                     [old.table.names[i] for i in old.table.groups[protocol]])
            window.adopt(rows, old.windows[protocol], old_rows)
            if protocol in self.tamper and protocol in old.tamper:
                self.tamper[protocol].adopt(rows, old.tamper[protocol], old_rows)
        now = time.time()
        for fleet in self._fleets:
            same = [f for f in old._fleets if type(f.driver) is type(fleet.driver)]
            if same:
                rows, old_rows = _common([self.table.names[i] for i in fleet.links],
                                         [old.table.names[i] for i in same[0].links])
                fleet.driver.continue_from(same[0].driver, rows, old_rows)
            else:  # a kind of link the old config did not have: its first window starts now
                fleet.driver.continue_from(None, np.empty(0, np.intp), np.empty(0, np.intp), now)


def _common(names: Sequence[str], old_names: Sequence[str]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Positions of the names both sequences have: (in ``names``, in ``old_names``)."""
    where = {name: i for i, name in enumerate(old_names)}
    pairs = [(i, where[name]) for i, name in enumerate(names) if name in where]
    return (np.array([p[0] for p in pairs], np.intp), np.array([p[1] for p in pairs], np.intp))


def _copy_columns(new: NDArray, new_columns: Sequence[str], rows: NDArray[np.intp],
                  old: NDArray, old_columns: Sequence[str], old_rows: NDArray[np.intp]) -> None:
    """Copy the columns both tables have (matched by name) for the matched rows."""
    for j, column in enumerate(new_columns):
        if column in old_columns:
            new[rows, j] = old[old_rows, old_columns.index(column)]


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
