"""The replay driver in a real runtime: bad rows are counted and skipped, a file gone bad takes down
its own link only, loop starts again, the end of a recording leaves the link stalled; and
check-config catches a recording that is missing or ambiguous."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qtelemetry.cli import main
from qtelemetry.config import parse_config
from qtelemetry.runtime.runtime import Runtime
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
