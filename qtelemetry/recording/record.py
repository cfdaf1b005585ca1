"""``qtelemetry record``: run the configured links and keep every window's raw counts in a file.

The links run in the exporter's own runtime (fleets, polled devices, checks), without serving
/metrics; an observer on the engine receives each window as it is folded and the main thread
writes them out in blocks, so memory holds at most a few seconds of windows. Links that reach
the simulated device process (``qtelemetry simulate``) through ETSI 014/015 drivers record
like any other: what is kept is what the estimator was given.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qtelemetry.config import Config, ConfigError, default_config, load_config
from qtelemetry.drivers.formats.recording_writer import RecordingWriter, block_frame
from qtelemetry.errors import EXIT_CONFIG
from qtelemetry.runtime.engine import Folded
from qtelemetry.runtime.runtime import Runtime

log = logging.getLogger(__name__)

#: How often the main thread writes what was recorded (and logs progress), seconds.
FLUSH_SECONDS = 10.0


class Recorder:
    """Observer of a runtime's engine: keeps the windows folded since the last ``flush``."""

    def __init__(self, writer: RecordingWriter):
        self.writer = writer
        self._pending: list[Folded] = []
        self._lock = threading.Lock()

    def __call__(self, folded: Folded) -> None:
        """On the estimation thread: keep the window (its arrays are already the engine's copies)."""
        with self._lock:
            self._pending.append(folded)

    def flush(self) -> int:
        """Write the windows kept so far as rows; returns how many."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return 0
        frame = pd.concat([frame_of(f) for f in pending], ignore_index=True)
        self.writer.write(frame)
        return len(frame)


def frame_of(folded: Folded) -> pd.DataFrame:
    """One observer call as rows of the recording."""
    table, links = folded.table, folded.links
    plan = (table.loss_budget_db[links], table.expected_key_rate_bps[links])
    return block_frame(folded.protocol, [table.names[i] for i in links], folded.counts, folded.end,
                       folded.duration, folded.params, plan, folded.faults)


def record(runtime: Runtime, seconds: float, out: str | Path, stop: threading.Event | None = None) -> int:
    """Run ``runtime`` for ``seconds`` (or until ``stop`` is set) writing every window to ``out``;
    returns the number of rows written. The runtime is started and stopped here."""
    writer = RecordingWriter(out, list(runtime.table.groups))
    recorder = Recorder(writer)
    runtime.observers.append(recorder)
    stop = stop or threading.Event()
    started = time.monotonic()
    runtime.start()
    try:
        while not stop.wait(min(FLUSH_SECONDS, max(0.0, started + seconds - time.monotonic()))):
            recorder.flush()
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                break
            log.info("recording", extra={"seconds": f"{elapsed:.0f}/{seconds:g}", "rows": writer.rows})
    finally:
        runtime.stop()
        recorder.flush()
        writer.close()
    return writer.rows


def cmd_record(args: argparse.Namespace) -> int:
    try:
        config: Config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime = Runtime(config)
    log.info("recording links", extra={"links": len(config.links), "seconds": args.duration, "out": args.out})
    try:
        rows = record(runtime, args.duration, args.out, stop)
    except OSError as exc:
        log.error("cannot write the recording", extra={"out": args.out, "reason": exc.strerror or str(exc)})
        return 1
    log.info("recorded", extra={"rows": rows, "out": args.out,
                                "links": int(np.count_nonzero(runtime.snapshot.batches))})
    return 0
