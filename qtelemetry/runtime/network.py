"""The network view inside the exporter: its own links analysed on their own cadence.

A thread wakes every ``network.analysis_interval_seconds``, reads the latest estimation
snapshot, turns it into each link's usable key rate, buffer and repeaterless bound, runs the
analysis and hands the result to the runtime, which publishes it with the next snapshot. The
analysis never runs on the scrape path nor in the estimation cycle. An analysis that fails (its
process died, it raised, or it overran its deadline: the interval and a minute) is counted by
reason (``qnet_analysis_failures_total``) and withdraws the previous result's figures, so that
they are never shown as current; ``qnet_analysis_age_seconds`` keeps rising until one succeeds.

The analysis runs in a child process: it is seconds of igraph and Python at 10,000 links, and
in a thread it held the GIL against the scrapes and the estimation cycle (scrape p50 2.8x,
data age 1.3-2x at 10,000 links). Its inputs and result are a few hundred kB to pickle. The
child runs at the lowest CPU priority (nice 19): the analysis has a whole interval to finish,
while a scrape or an estimation cycle waiting behind it is late at once; on a machine too busy
to give it any time it is late, and ``qnet_analysis_age_seconds`` says so; one that has had its
deadline is killed (a stopped or deadlocked child would otherwise hold the last figures forever).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation.network import NetworkAnalysis, Topology, analyse, usable
from qtelemetry.monitoring.catalogue import ANALYSIS_BUCKETS
from qtelemetry.networkconfig import NetworkConfig

if TYPE_CHECKING:  # the snapshot carries the network's results: only its type is needed here
    from qtelemetry.runtime.snapshot import Snapshot

log = logging.getLogger(__name__)

#: How much lower the analysis process' CPU priority is than the exporter's: to the lowest (19)
#: from the default (0). Set by ``os.nice`` itself as the child's initializer, so that the child
#: imports nothing of the exporter's for it.
ANALYSIS_NICENESS = 19

#: How long an analysis may run beyond its interval before its process is killed and it counts as
#: failed (``timeout``): ~30x the 2 s of one analysis at 10,000 links and 200 demands.
ANALYSIS_GRACE_SECONDS = 60.0
#: How long a new analysis process may take to start (spawn, import NumPy and igraph): seconds on a
#: busy machine, at nice 19.
START_TIMEOUT_SECONDS = 120.0
#: Why an analysis failed: its process died (killed: out of memory?), it overran its deadline (hung,
#: stopped, or starved of CPU), or it raised.
FAILURE_REASONS = ("process_died", "timeout", "error")

#: Estimate keys a link's usable key rate is read from, in order of preference: an ETSI 015
#: node's effective rate (after its own consumption), else the secret key rate.
RATE_KEYS = ("eskr_bps", "secret_key_rate_bps")


def build_topology(network: NetworkConfig, links: Sequence) -> Topology:
    """The analysis' topology of ``links`` (objects with name, site_a, site_b) and the demands."""
    sites = network.site_list(links)
    index = {site.name: i for i, site in enumerate(sites)}
    return Topology.build(
        [s.name for s in sites], [s.trusted for s in sites], [link.name for link in links],
        [(index[link.site_a], index[link.site_b]) for link in links],
        [d.name for d in network.demands], [(index[d.source], index[d.target]) for d in network.demands],
        [d.bits_per_second for d in network.demands],
        [(np.nan if s.latitude is None else s.latitude, np.nan if s.longitude is None else s.longitude) for s in sites],
        [d.priority for d in network.demands])


@dataclass(frozen=True)
class LinkInputs:
    """Per-link inputs of one analysis (NaN: not known)."""

    rate_bps: NDArray[np.float64]
    buffer_bits: NDArray[np.float64]
    bound_bps: NDArray[np.float64]


@dataclass(frozen=True)
class NetworkSnapshot:
    """The latest analysis and the analyser's own figures, published as one immutable object."""

    topology: Topology
    analysis: NetworkAnalysis | None = None  #: None: no analysis yet (or no data to analyse)
    rate_bps: NDArray[np.float64] | None = None  #: (links,) the usable key rates it analysed
    analysed_at: float = float("nan")  #: Unix time of the data the analysis used
    duration_buckets: NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(ANALYSIS_BUCKETS) + 1, np.int64))
    duration_sum: float = 0.0
    failures: NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(FAILURE_REASONS), np.int64))  #: by reason

    def age(self, now: float) -> float:
        """Seconds since the data analysed; NaN (no sample) before the first analysis, not 0."""
        return float(np.maximum(0.0, now - self.analysed_at))


class Durations:
    """The analysis-duration histogram: cumulative bucket counts and the sum."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(ANALYSIS_BUCKETS) + 1, np.int64)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[np.searchsorted(ANALYSIS_BUCKETS, seconds)] += 1
        self.total += seconds

    def published(self, topology: Topology, analysis: NetworkAnalysis | None, rate_bps: NDArray[np.float64] | None,
                  at: float) -> NetworkSnapshot:
        return NetworkSnapshot(topology, analysis, rate_bps, at, np.cumsum(self.counts), self.total)


Analyse = Callable[[Topology, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]], NetworkAnalysis]


def timed_analysis(topology: Topology, inputs: LinkInputs, durations: Durations, at: float,
                   run: Analyse = analyse) -> NetworkSnapshot:
    """Analyse (with ``run``), observe the duration, and return the snapshot to publish."""
    started = time.perf_counter()
    analysis = run(topology, inputs.rate_bps, inputs.buffer_bits, inputs.bound_bps)
    durations.observe(time.perf_counter() - started)
    return durations.published(topology, analysis, usable(inputs.rate_bps), at)


def snapshot_inputs(snap: "Snapshot", now: float) -> LinkInputs:
    """Each link's usable key rate (0 while down), key in store (NaN while down or not known) and
    repeaterless bound (NaN: none) from an estimation snapshot."""
    n = len(snap.table)
    rate, buffer, bound = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for protocol, members in snap.table.groups.items():
        group = snap.groups.get(protocol)
        if group is None:
            continue
        estimates = group.estimates
        for key in reversed(RATE_KEYS):  # the preferred key last, where it has a value
            if key in estimates:
                rate[members] = np.where(np.isnan(estimates[key]), rate[members], estimates[key])
        if "key_stored_bits" in estimates:
            buffer[members] = estimates["key_stored_bits"]
        if "plob_bound_bps" in estimates:
            bound[members] = estimates["plob_bound_bps"]
    down = ~snap.up(now)
    rate[down] = 0.0
    buffer[down] = np.nan
    return LinkInputs(rate, buffer, bound)


class AnalysisProcess:
    """``analyse`` in a child process (spawned when first needed, again after it died or hung)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future[NDArray[np.float64]] | None = None
        self._ended = False  #: ``end()`` was called: no new child
        self._lock = threading.Lock()  #: a start and an end, one at a time

    def start(self) -> ProcessPoolExecutor:
        """The child, starting: spawned, then importing the analysis (seconds on a busy machine)."""
        with self._lock:
            if self._ended:  # a shutdown ended the child: none may start after it (the exit would wait for it)
                raise BrokenProcessPool("the analysis process was ended")
            if self._pool is None:  # spawn, not fork: this process has threads
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=os.nice, initargs=(ANALYSIS_NICENESS,))
                self._started = self._pool.submit(usable, np.zeros(0))
            return self._pool

    def ready(self, timeout: float) -> None:
        """Wait until the child answers (a new one: until it has started, so that inputs read after
        it are not aged by its start); BrokenProcessPool if it died since, TimeoutError if it does
        not answer within ``timeout`` seconds (then it is killed)."""
        with self._replaced_if_dead():
            if self._pool is None:
                self.start()
                assert self._started is not None
                self._started.result(START_TIMEOUT_SECONDS)
            else:
                self._pool.submit(usable, np.zeros(0)).result(timeout)

    def __call__(self, topology: Topology, rate_bps: NDArray[np.float64], buffer_bits: NDArray[np.float64],
                 bound_bps: NDArray[np.float64], timeout: float) -> NetworkAnalysis:
        with self._replaced_if_dead():
            return self.start().submit(analyse, topology, rate_bps, buffer_bits, bound_bps).result(timeout)

    @contextlib.contextmanager
    def _replaced_if_dead(self) -> Iterator[None]:
        """A child killed (out of memory?) or past its deadline (killed here): the next call starts a new one."""
        try:
            yield
        except BrokenProcessPool:
            self._pool = None
            raise
        except TimeoutError:
            self.close()
            raise

    def end(self) -> None:
        """Close for good (a shutdown): a call under way fails, and none starts a child again."""
        with self._lock:
            self._ended = True
        self.close()

    def close(self) -> None:
        """End the child now, even mid-analysis (a shutdown must not wait for it). SIGKILL: a child
        stopped (SIGSTOP, a debugger) would hold SIGTERM pending, and the shutdown would wait for it."""
        pool, self._pool = self._pool, None
        if pool is not None:
            for process in list(pool._processes.values()):  # Python 3.14 has pool.kill_workers()
                process.kill()
            # the pool's own thread reaps them (joining them here as well raced it: the loser's waitpid
            # failed, and a child already gone stayed listed as running)
            pool.shutdown(wait=True, cancel_futures=True)


class NetworkAnalyser:
    """Analyses the exporter's own links every interval, from its own thread, in a child process.

    ``interval()`` gives the analysis interval, or None while the config has no network section
    (then no child process is kept: a reload may add one or take it away); ``inputs()`` gives the
    topology and link inputs as of now (None: nothing to analyse); ``publish(snapshot)`` hands a
    result over, or, after a failed analysis, the figures' withdrawal. An analysis has its interval
    and ``grace_seconds`` to finish.
    """

    def __init__(self, interval: Callable[[], float | None],
                 inputs: Callable[[], tuple[Topology, LinkInputs, float] | None],
                 publish: Callable[[NetworkSnapshot], None], grace_seconds: float = ANALYSIS_GRACE_SECONDS):
        self._interval, self._inputs, self._publish = interval, inputs, publish
        self._grace = grace_seconds
        self._durations = Durations()
        self._failures = np.zeros(len(FAILURE_REASONS), np.int64)
        self._last: NetworkSnapshot | None = None  #: the latest analysis published
        self._process = AnalysisProcess()
        self._stop = threading.Event()
        self._wake = threading.Event()  #: set by ``wake()`` and ``stop()``
        self._thread = threading.Thread(target=self._run, name="network", daemon=True)

    def start(self) -> None:
        if self._interval() is not None:
            self._process.start()
        self._thread.start()

    def wake(self) -> None:
        """Analyse now, not at the end of the wait (after a reload: its topology has no analysis yet,
        and its interval may be shorter); during an analysis, right after it."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._process.end()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def run_once(self) -> NetworkSnapshot | None:
        """Analyse now and publish the result; None: nothing to analyse. A failure is counted, the
        figures withdrawn, and raised (BrokenProcessPool, TimeoutError, or the analysis' own)."""
        interval = self._interval()
        if interval is None:  # no network (a reload may have taken it away): no idle child
            self._process.close()
            return None
        deadline = interval + self._grace
        topology: Topology | None = None
        try:
            try:
                self._process.ready(deadline)
            except BrokenProcessPool:  # it died after its last analysis: none is lost, start a new one
                self._count("process_died")
                log.error("network analysis process died; starting a new one")
                self._process.ready(deadline)
            got = self._inputs()
            if got is None:
                return None
            topology, inputs, at = got
            snapshot = timed_analysis(topology, inputs, self._durations, at, functools.partial(self._process, timeout=deadline))
        except Exception as exc:
            if self._stop.is_set():  # stop() ended the child under it
                raise
            self._count("process_died" if isinstance(exc, BrokenProcessPool) else "timeout" if isinstance(exc, TimeoutError)
                        else "error")
            self._withdraw(topology)
            raise
        self._last = self._with_failures(snapshot)
        self._publish(self._last)
        return self._last

    def _count(self, reason: str) -> None:
        self._failures[FAILURE_REASONS.index(reason)] += 1

    def _withdraw(self, topology: Topology | None) -> None:
        """Publish a failure of an analysis of ``topology`` (None: not read yet): the figures withdrawn,
        the age of the last analysis of that topology rising."""
        if topology is None:
            got = self._inputs()
            if got is None:
                return
            topology = got[0]
        last = self._last if self._last is not None and self._last.topology is topology else None
        self._publish(self._with_failures(
            self._durations.published(topology, None, None, float("nan") if last is None else last.analysed_at)))

    def _with_failures(self, snapshot: NetworkSnapshot) -> NetworkSnapshot:
        return dataclasses.replace(snapshot, failures=self._failures.copy())

    def _wait(self, analysed: bool) -> float:
        """Seconds until the next look: an interval after an analysis, else at most a second (the
        first analysis as soon as there are estimates; a network a reload adds, within a second)."""
        interval = self._interval()
        if interval is None:
            return 1.0
        return interval if analysed else min(1.0, interval)

    def _run(self) -> None:
        wait = self._wait(False)
        while True:
            self._wake.wait(wait)
            if self._stop.is_set():
                return
            self._wake.clear()  # a wake from now on (a reload during this analysis) is for the next one
            try:
                done = self.run_once() is not None
            except BrokenProcessPool:
                if self._stop.is_set():
                    return
                log.error("network analysis process died; its figures are withdrawn, the next analysis starts a new one")
                done = True
            except TimeoutError:
                if self._stop.is_set():
                    return
                log.error("network analysis overran its deadline (its interval and a grace): process killed, its figures "
                          "withdrawn; the next analysis starts a new one (a network this large on this machine may need a "
                          "longer network.analysis_interval_seconds)", extra={"grace_seconds": self._grace})
                done = True
            except Exception:  # pragma: no cover - last line of defence, logged with its traceback
                if self._stop.is_set():  # stop() ended the child under it
                    return
                log.exception("network analysis failed; its figures are withdrawn")
                done = True
            wait = self._wait(done)
