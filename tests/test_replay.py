"""The replay driver in a real runtime: bad rows are counted and skipped, a file gone bad takes down
its own link only, loop starts again, the end of a recording leaves the link stalled; and
check-config catches a recording that is missing or ambiguous. Replayed event files deliver the
counts the event readers give, window by window; a bad event file counts its own reason."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qtelemetry.cli import main
from qtelemetry.config import parse_config
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config
from qtelemetry.drivers.formats.events import PS, bb84_windows, bbm92_windows, event_table
from qtelemetry.runtime.engine import Folded
from qtelemetry.runtime.runtime import Runtime
from eventfiles import bb84_columns, tag_streams, write
from recordings import record_cycles, small_config

ROWS = 6


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "small.csv"
    record_cycles(small_config(), ROWS, path)
    return path


def _wait(until, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_bad_rows_bad_files_loop_and_end(recording, tmp_path):
    frame = pd.read_csv(recording)
    cut = np.flatnonzero(frame["link"] == "cut-10km")
    frame.loc[cut[2], "pulses_signal"] = -1  # one bad row of cut-10km
    bad_rows = tmp_path / "bad-row.csv"
    frame.to_csv(bad_rows, index=False)
    gone_bad = tmp_path / "gone-bad.csv"
    gone_bad.write_bytes(recording.read_bytes())
    config = parse_config(f"""
exporter: {{window_seconds: 0.05, stall_timeout_seconds: 0.5}}
links:
  - {{name: ending, driver: {{type: replay, path: '{bad_rows}', link: cut-10km, speed: 100, timeout_seconds: 0.1}}}}
  - {{name: looping, driver: {{type: replay, path: '{recording}', link: spdc-20km, speed: 100, loop: true}}}}
  - {{name: broken, driver: {{type: replay, path: '{gone_bad}', link: memories-5km, speed: 100}}}}
""")
    gone_bad.write_bytes(b"PAR1 not any more")  # after the config was loaded: a runtime error
    runtime = Runtime(config)
    runtime.start()
    index = runtime.table.index
    reason = {r: i for i, r in enumerate(runtime.table.reasons)}
    try:
        _wait(lambda: runtime.snapshot.batches[index["ending"]] == ROWS - 1 and not runtime.snapshot.ok[index["ending"]]
              and runtime.snapshot.batches[index["looping"]] > 3 * ROWS)
    finally:
        runtime.stop()
    snapshot = runtime.snapshot
    errors = {name: {r: int(snapshot.errors[i, j]) for r, j in reason.items() if snapshot.errors[i, j]}
              for name, i in index.items()}
    # ending: five good windows, one bad row counted, then no data: stalled, down (a slow start may
    # have stalled it once before its first window too)
    assert errors["ending"].keys() == {"bad_row", "stalled"} and errors["ending"]["bad_row"] == 1
    assert snapshot.batches[index["ending"]] == ROWS - 1 and not snapshot.ok[index["ending"]]
    good = frame.loc[np.delete(cut, 2)]
    bb84 = snapshot.groups["bb84-decoy"].totals
    assert bb84["pulses"][0, 0] == good["pulses_signal"].sum()
    assert bb84["errors"][0, 1, 2] == good["errors_x_vacuum"].sum()
    # looping: the six windows again and again, without an error
    delivered = int(snapshot.batches[index["looping"]])
    assert set(errors["looping"]) <= {"stalled"} and delivered > 3 * ROWS  # (a slow start stalls it)
    spdc = frame[frame["link"] == "spdc-20km"]["singles_a"].to_numpy()
    assert snapshot.groups["bbm92-spdc"].totals["singles"][0, 0] == spdc[np.arange(delivered) % ROWS].sum()
    # broken: the file went bad after the config was loaded: counted, down, the other links went on
    assert errors["broken"].get("bad_file", 0) >= 1 and snapshot.batches[index["broken"]] == 0
    assert not snapshot.ok[index["broken"]]


def test_check_config_names_a_missing_or_ambiguous_recording(recording, tmp_path, capsys):
    config = tmp_path / "replay.yaml"
    config.write_text("links:\n  - {name: a, driver: {type: replay, path: missing.parquet}}\n")
    assert main(["check-config", str(config)]) == 2
    assert "links[0].driver.path" in capsys.readouterr().err
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, path: '{recording}'}}}}\n")
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "links[0].driver.path" in err and "holds 3 links" in err and "`link`" in err
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, path: '{recording}', link: spdc-20km, speed: 20}}}}\n")
    assert main(["check-config", str(config)]) == 0


# --- event files ----------------------------------------------------------------------------------------------

BB84_EVENTS = ("protocol: bb84-decoy, window_s: 1.0, clock_rate_hz: 1.0e+6, p_signal: 0.5, p_decoy: 0.3, "
               "p_vacuum: 0.2, mu: 0.6, nu: 0.1, detector_efficiency: 0.2")
QBER = 0.03


@pytest.fixture(scope="module")
def event_replay(tmp_path_factory):
    """One runtime replaying a BB84 event file, a BBM92 pair of tag files (delay searched for), a
    missing event file and an unsorted one; returns (columns, tag streams, snapshot, folded windows by link)."""
    tmp = tmp_path_factory.mktemp("events")
    rng = np.random.default_rng(21)
    bb84 = bb84_columns(rng, 40_000, 8 * PS, qber=QBER)  # 7 whole windows of 1 s, ~5,700 detections each
    write(tmp / "bb84.npy", bb84)
    sides = [(rng.integers(0, 4, 20_000), rng.integers(0, 2, 20_000)) for _ in "ab"]
    tags = tag_streams(rng, rng.integers(0, 2 * PS, 20_000), *sides, 20_000, 2 * PS, 345_678, 200)
    write(tmp / "a.parquet", tags[0])
    write(tmp / "b.npy", tags[1])
    unsorted = {k: v.copy() for k, v in bb84.items()}
    unsorted["time_ps"][100] = unsorted["time_ps"][99] - 1
    write(tmp / "unsorted.parquet", unsorted)
    np.save(tmp / "pickled.npy", np.array([{"time_ps": 1}], dtype=object), allow_pickle=True)  # F8
    config = parse_config(f"""
exporter: {{window_seconds: 0.05, stall_timeout_seconds: 0.5, sliding_windows: 100}}
links:
  - {{name: bb84, driver: {{type: replay, speed: 10, events: {{{BB84_EVENTS}, path: bb84.npy}}}}}}
  - {{name: bbm92, driver: {{type: replay, speed: 2.5, events: {{protocol: bbm92-spdc, path_a: a.parquet,
      path_b: b.npy, window_s: 0.25, coincidence_window_s: 1.0e-9, max_delay_s: 1.0e-5,
      detector_efficiency_a: 0.5, detector_efficiency_b: 0.5}}}}}}
  - {{name: missing, driver: {{type: replay, events: {{{BB84_EVENTS}, path: absent.npy}}}}}}
  - {{name: unsorted, driver: {{type: replay, events: {{{BB84_EVENTS}, path: unsorted.parquet}}}}}}
  - {{name: pickled, driver: {{type: replay, events: {{{BB84_EVENTS}, path: pickled.npy}}}}}}
""", config_dir=tmp)
    runtime = Runtime(config)
    folded: dict[str, list[tuple[float, dict]]] = {name: [] for name in runtime.table.index}

    def observe(f: Folded) -> None:
        for k, i in enumerate(f.links):
            folded[runtime.table.names[i]].append((float(f.duration[k]), {n: v[k].copy() for n, v in f.counts.items()}))

    runtime.observers.append(observe)
    runtime.start()
    index = runtime.table.index
    reason = {r: i for i, r in enumerate(runtime.table.reasons)}
    try:
        _wait(lambda: runtime.snapshot.batches[index["bb84"]] == 7 and runtime.snapshot.batches[index["bbm92"]] == 7
              and runtime.snapshot.errors[index["missing"], reason["file_missing"]] > 0
              and runtime.snapshot.errors[index["unsorted"], reason["unsorted_time_tags"]] > 0
              and runtime.snapshot.errors[index["pickled"], reason["wrong_type"]] > 0)
    finally:
        runtime.stop()
    return bb84, tags, runtime, folded


def _delivered_window_by_window(folded: list[tuple[float, dict]], windows, window_s: float) -> None:
    """Each fold is one or more consecutive windows (a cycle may catch two): its counts are their sums."""
    i = 0
    for duration, counts in folded:
        k = round(duration / window_s)
        assert k >= 1 and duration == pytest.approx(k * window_s, rel=1e-9)
        for name, values in counts.items():
            np.testing.assert_array_equal(values, windows.counts[name][i:i + k].sum(axis=0), err_msg=name)
        i += k
    assert i == len(windows.start)


def test_replayed_bb84_events_give_their_windows_and_qber(event_replay):
    columns, _, runtime, folded = event_replay
    expected = bb84_windows(event_table(columns, "bb84"), 1.0, 1e6, [0.5, 0.3, 0.2])
    assert len(expected.start) == 7
    _delivered_window_by_window(folded["bb84"], expected, 1.0)
    # the Z-basis QBER of the signal pulses in the whole windows, counted from the records themselves
    t = columns["time_ps"]
    z_signal = ((t < t[0] + 7 * PS) & (columns["basis_a"] == 0) & (columns["basis_b"] == 0)
                & (columns["intensity"] == 0))
    errors, sifted = np.count_nonzero(z_signal & (columns["bit_a"] != columns["bit_b"])), np.count_nonzero(z_signal)
    row = np.flatnonzero(runtime.table.groups["bb84-decoy"] == runtime.table.index["bb84"])[0]
    estimates = runtime.snapshot.groups["bb84-decoy"].estimates
    assert estimates["qber_z"][row] == pytest.approx(errors / sifted, rel=1e-12)
    assert abs(estimates["qber_z"][row] - QBER) < 5 * np.sqrt(QBER * (1 - QBER) / sifted)
    # the link's estimator parameters are the config's, as a simulated-bb84 link takes them (defaults included)
    params = runtime.table.links[runtime.table.index["bb84"]].driver.estimation_params()
    simulated = SimulatedBB84Config(type="simulated-bb84", fiber_length_km=1, mu=0.6, nu=0.1, detector_efficiency=0.2)
    assert params == simulated.estimation_params() and params["mu"] == 0.6


def test_replayed_bbm92_tag_files_give_their_windows(event_replay):
    _, (a, b), _, folded = event_replay
    expected = bbm92_windows(event_table(a, "tags"), event_table(b, "tags"), 0.25, 1e-9, max_delay_s=1e-5)
    assert len(expected.start) == 7 and abs(expected.delay_s * PS - 345_678) <= 200
    _delivered_window_by_window(folded["bbm92"], expected, 0.25)


def test_a_missing_unsorted_or_pickled_event_file_is_its_links_own_declared_error(event_replay):
    _, _, runtime, folded = event_replay
    snapshot, index = runtime.snapshot, runtime.table.index
    for name, reason in [("missing", "file_missing"), ("unsorted", "unsorted_time_tags"), ("pickled", "wrong_type")]:
        errors = {r: int(snapshot.errors[index[name], j]) for j, r in enumerate(runtime.table.reasons)
                  if snapshot.errors[index[name], j]}
        assert errors.keys() <= {reason, "stalled"} and errors[reason] >= 1, errors
        assert snapshot.batches[index[name]] == 0 and not snapshot.ok[index[name]] and not folded[name]
    assert snapshot.batches[index["bb84"]] == snapshot.batches[index["bbm92"]] == 7  # the others went on


@pytest.mark.parametrize("driver, field", [
    ("{type: replay}", "path"),
    (f"{{type: replay, path: REC, events: {{{BB84_EVENTS}, path: e.npy}}}}", "events"),
    (f"{{type: replay, link: spdc-20km, events: {{{BB84_EVENTS}, path: e.npy}}}}", "link"),
    (f"{{type: replay, events: {{{BB84_EVENTS.replace('nu: 0.1', 'nu: 0')}, path: e.npy}}}}", "events.bb84-decoy.nu"),
    (f"{{type: replay, events: {{{BB84_EVENTS.replace('nu: 0.1', 'nu: 0.6')}, path: e.npy}}}}", "events.bb84-decoy.nu"),
    ("{type: replay, events: {protocol: bbm92-spdc, path_a: a.npy, path_b: b.npy, window_s: 1, "
     "coincidence_window_s: 1.0e-9, detector_efficiency_a: 2}}", "events.bbm92-spdc.detector_efficiency_a"),
    (f"{{type: replay, events: {{{BB84_EVENTS.replace('mu: 0.6, ', '')}, path: e.npy}}}}", "events.bb84-decoy.mu"),
], ids=["neither", "both", "link", "nu", "nu_mu", "efficiency", "mu_required"])
def test_check_config_names_the_replay_source_field(recording, tmp_path, capsys, driver, field):
    config = tmp_path / "replay.yaml"
    config.write_text(f"links:\n  - {{name: a, driver: {driver.replace('REC', repr(str(recording)))}}}\n")
    assert main(["check-config", str(config)]) == 2
    assert f"links[0].driver.{field}:" in capsys.readouterr().err


def test_check_config_takes_event_files_it_does_not_read(tmp_path):
    """A missing event file is the running link's error (counted), not a config error."""
    config = tmp_path / "replay.yaml"
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, events: {{{BB84_EVENTS}, path: e.npy}}}}}}\n")
    assert main(["check-config", str(config)]) == 0


def test_a_poll_timeout_shorter_than_the_load_keeps_one_load_in_flight(tmp_path):
    """F1: the event file is a named pipe nobody writes to yet, so its read waits, and every poll
    times out (after 2 × 0.05 + 1 s). One read waits on the file all along, not one more per poll;
    once the file comes through, that same read delivers the windows."""
    fifo = tmp_path / "late.npy"
    os.mkfifo(fifo)
    write(tmp_path / "file.npy", bb84_columns(np.random.default_rng(3), 20_000, 4 * PS))  # 3 whole windows
    config = parse_config(f"""
exporter: {{window_seconds: 0.05, stall_timeout_seconds: 60}}
links:
  - {{name: late, driver: {{type: replay, speed: 100, timeout_seconds: 0.05, events: {{{BB84_EVENTS}, path: late.npy}}}}}}
""", config_dir=tmp_path)

    def reads() -> int:  # threads reading a replayed file: ours, or asyncio's executor's
        return sum(t.name == "replay-read" or t.name.startswith("asyncio_") for t in threading.enumerate())

    runtime = Runtime(config)
    link, timeout = runtime.table.index["late"], list(runtime.table.reasons).index("timeout")
    most = 0
    runtime.start()
    try:
        deadline = time.monotonic() + 30
        while runtime.snapshot.errors[link, timeout] < 3 and time.monotonic() < deadline:
            most = max(most, reads())
            time.sleep(0.02)
        timeouts = int(runtime.snapshot.errors[link, timeout])
        with open(fifo, "wb") as pipe:
            pipe.write((tmp_path / "file.npy").read_bytes())
        _wait(lambda: runtime.snapshot.batches[link] == 3)
    finally:
        runtime.stop()
    assert timeouts >= 3 and most == 1
    assert runtime.snapshot.batches[link] == 3
