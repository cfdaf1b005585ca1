"""Recordings made quickly for tests: a runtime's cycles driven at chosen instants, not in real time."""

from __future__ import annotations

from pathlib import Path

from qtelemetry.config import Config, parse_config
from qtelemetry.drivers.formats.recording_writer import RecordingWriter
from qtelemetry.recording.record import Recorder
from qtelemetry.runtime.runtime import Runtime

#: A decoy-BB84 link whose fibre is cut from 4 s to 6 s, an entangled-photon and a heralded link.
SMALL = """
exporter:
  window_seconds: 1.0
  sliding_windows: {sliding}
links:
  - name: cut-10km
    driver:
      type: simulated-bb84
      fiber_length_km: 10
      seed: 11
      faults: [{{kind: fiber-cut, start_s: 4, duration_s: 2}}]
  - name: spdc-20km
    driver: {{type: simulated-spdc, fiber_length_km: 20, seed: 12}}
  - name: memories-5km
    driver: {{type: simulated-heralded, fiber_length_km: 5, seed: 13}}
"""


def small_config(sliding: int = 60) -> Config:
    return parse_config(SMALL.format(sliding=sliding))


def record_cycles(config: Config, cycles: int, path: Path) -> tuple[Runtime, list]:
    """Run ``cycles`` cycles one window apart, recording to ``path``; returns the runtime and the
    snapshot published after each cycle."""
    runtime = Runtime(config)
    writer = RecordingWriter(path, list(runtime.table.groups))
    recorder = Recorder(writer)
    runtime.observers.append(recorder)
    window = config.exporter.window_seconds
    snapshots = [runtime.cycle(runtime.started + (k + 1) * window) for k in range(cycles)]
    recorder.flush()
    writer.close()
    return runtime, snapshots
