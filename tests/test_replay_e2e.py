"""Record 60 s of the demo live, replay it at 20×, analyse it: the same estimates, window by window.

What is compared: after every estimation cycle of the live run, each link's published estimates
(every key of its protocol's estimator, and its levels) are kept under the number of windows the
link had delivered so far; the same is done for the replay run. For each link and each window
count k both runs published, the estimates must agree to 1e-12 relative (the replay feeds the
same counts and window lengths to the same estimator, so they are equal up to nothing). The
offline analysis with the exporter's sliding window must give the live estimates after every
window. At 20× windows arrive 50 ms apart and the exporter's cycle (its shortest window) runs
every 50 ms, so now and then two windows land in one cycle and are folded together: the estimate
after the pair is compared, the one between them was never published. Within the 60-window
sliding window that changes no sum; the test asks that at least half the windows were published
alone (51 to 58 of 60 in the runs so far). The ring holds cycles, not windows: once it has wrapped
(a 61st window, when the live run made one), a pair folded earlier leaves it one window more than
live had, as the README says, so only the first 60 windows are compared.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qtelemetry.config import Config, default_config, parse_config
from qtelemetry.estimation.changedetect import ESTIMATE_PREFIX
from qtelemetry.recording.analyse import estimate_frame
from qtelemetry.drivers.formats.recording import read_recording
from qtelemetry.recording.record import record
from qtelemetry.runtime.links import LinkTable
from qtelemetry.runtime.runtime import Runtime

SECONDS, SPEED = 60.0, 20.0


def capture(runtime: Runtime) -> dict[str, dict[int, dict[str, float]]]:
    """link -> windows delivered so far -> its estimates, filled after every published snapshot."""
    seen: dict[str, dict[int, dict[str, float]]] = {name: {} for name in runtime.table.names}
    lock = threading.Lock()

    def published() -> None:
        snapshot = runtime.snapshot
        table = snapshot.table
        with lock:
            for protocol, members in table.groups.items():
                group = snapshot.groups.get(protocol)
                if group is None:
                    continue
                for row, link in enumerate(members):
                    k = int(snapshot.batches[link])
                    if k:
                        seen[table.names[link]][k] = {key: float(v[row]) for key, v in group.estimates.items()}

    runtime.listeners.append(published)
    return seen


def assert_same(a: dict[str, float], b: dict[str, float], what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        x, y = a[key], b[key]
        same = (math.isnan(x) and math.isnan(y)) or x == y or math.isclose(x, y, rel_tol=1e-12)
        assert same, f"{what}: {key}: {x!r} != {y!r}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, dict]:
    config = default_config()
    runtime = Runtime(config)
    seen = capture(runtime)
    path = tmp_path_factory.mktemp("replay") / "demo.parquet"
    rows = record(runtime, SECONDS, path)
    assert rows >= 5 * 58  # five links, a window a second
    return config, path, seen


def replay_config(config: Config, path: Path) -> Config:
    links = "\n".join(f"  - {{name: {link.name}, driver: {{type: replay, path: '{path}', link: {link.name}, "
                      f"speed: {SPEED:g}}}}}" for link in config.links)
    exporter = config.exporter
    return parse_config(f"""
exporter:
  window_seconds: {1.0 / SPEED}
  sliding_windows: {exporter.sliding_windows}
  confidence_level: {exporter.confidence_level}
links:
{links}
""")


def test_replay_at_20x_gives_the_live_estimates_window_by_window(live):
    config, path, live_seen = live
    windows = {link: max(seen) for link, seen in live_seen.items()}
    runtime = Runtime(replay_config(config, path))
    seen = capture(runtime)
    started = time.monotonic()
    runtime.start()
    try:
        deadline = started + SECONDS / SPEED + 20.0
        while time.monotonic() < deadline and any(max(seen[l], default=0) < windows[l] for l in windows):
            time.sleep(0.05)
    finally:
        runtime.stop()
    live_table = LinkTable.build(config)  # the plan dashboards and alerts compare with, as recorded
    np.testing.assert_array_equal(runtime.table.loss_budget_db, live_table.loss_budget_db)
    np.testing.assert_array_equal(runtime.table.expected_key_rate_bps, live_table.expected_key_rate_bps)
    snapshot = runtime.snapshot
    assert not snapshot.errors.any(), dict(zip(snapshot.table.reasons, snapshot.errors.sum(axis=0)))
    for link, live_windows in live_seen.items():
        replayed = seen[link]
        assert max(replayed) == windows[link], f"{link}: replay stopped at window {max(replayed)} of {windows[link]}"
        common = sorted(k for k in replayed.keys() & live_windows.keys() if k <= config.exporter.sliding_windows)
        assert len(common) >= 0.5 * windows[link], f"{link}: only {len(common)} windows published alone"
        for k in common:
            assert_same(replayed[k], live_windows[k], f"{link} after window {k}")


def test_analysis_of_the_recording_matches_the_live_run(live):
    config, path, live_seen = live
    frame = read_recording(path)
    estimates = estimate_frame(frame, config.exporter.sliding_windows, config.exporter.confidence_level)
    for link, live_windows in live_seen.items():
        mine = estimates[estimates["link"] == link].reset_index(drop=True)
        assert len(mine) == max(live_windows)
        for k, expected in live_windows.items():
            row = mine.iloc[k - 1]
            expected = {key: v for key, v in expected.items() if not key.startswith(ESTIMATE_PREFIX)}  # not analysed offline
            got = {key: float(row[key]) for key in expected}
            for key in expected:  # a cumulative sum adds the same integers in another order: 1e-9 relative
                assert (math.isnan(got[key]) and math.isnan(expected[key])) or np.isclose(
                    got[key], expected[key], rtol=1e-9, atol=0), f"{link} after window {k}: {key}"
