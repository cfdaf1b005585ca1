"""The recording format, `analyse` and bad recordings: columns follow the protocols' axes, files
round-trip through Parquet and CSV, the offline estimates are the live ones, and every bad file
gives an error naming the file, row and column."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qtelemetry import __version__
from qtelemetry.cli import main
from qtelemetry.drivers.faults import FAULT_KINDS
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation.changedetect import ESTIMATE_PREFIX
from qtelemetry.recording.analyse import estimate_frame, sliding_sums, summary
from qtelemetry.drivers.formats.recording import (FAULT_COLUMNS, ID_COLUMNS, PLAN_COLUMNS, RecordingError, count_columns,
                                         param_columns, read_recording)
from recordings import SMALL, record_cycles, small_config

CYCLES, SLIDING = 9, 4


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The small config recorded for 9 one-second windows to Parquet and to CSV (4-window sliding sums)."""
    where = tmp_path_factory.mktemp("recording")
    runtime, snapshots = record_cycles(small_config(SLIDING), CYCLES, where / "small.parquet")
    record_cycles(small_config(SLIDING), CYCLES, where / "small.csv")  # same seeds: the same counts
    return runtime, snapshots, where / "small.parquet", where / "small.csv"


def test_columns_are_the_count_name_then_each_axis_label_lowercased():
    names = {c.column for c in count_columns("bb84-decoy")}
    assert {"pulses_signal", "sifted_z_decoy", "errors_x_vacuum", "key_stored_bits"} <= names
    for name, protocol in PROTOCOLS.items():
        expected = [("_".join((count, *(label.lower() for label in labels))))
                    for count, axes in protocol.count_axes.items() for labels in itertools.product(*axes)]
        columns = [c.column for c in count_columns(name)]
        assert columns == expected
        others = [*ID_COLUMNS, *param_columns(name).values(), *PLAN_COLUMNS, *FAULT_COLUMNS.values()]
        assert len(set(columns + others)) == len(columns) + len(others), f"{name}: two things share a column"


def test_a_column_two_protocols_share_holds_the_same_kind_of_number():
    kinds: dict[str, set[str]] = {}
    for name, protocol in PROTOCOLS.items():
        for c in count_columns(name):
            kinds.setdefault(c.column, set()).add(protocol.count_kinds.get(c.count, "count") == "count")
    assert all(len(k) == 1 for k in kinds.values())


def test_each_column_holds_its_axis_element_and_parquet_keeps_the_versions(recorded):
    runtime, snapshots, parquet, csv = recorded
    frame = read_recording(parquet)
    assert len(frame) == 3 * CYCLES
    last = snapshots[-1]
    for protocol, members in runtime.table.groups.items():
        totals = last.groups[protocol].totals  # the engine's own cumulative counts per link
        for row, link in enumerate(members):
            mine = frame[frame["link"] == runtime.table.names[link]]
            for count, axes in PROTOCOLS[protocol].count_axes.items():
                if count not in totals:
                    continue  # levels have no total
                for labels in itertools.product(*axes):
                    column = "_".join((count, *(label.lower() for label in labels)))
                    index = tuple(axis.index(label) for axis, label in zip(axes, labels))
                    assert mine[column].sum() == pytest.approx(totals[count][(row, *index)], rel=1e-12), column
    meta = pq.read_schema(parquet).metadata[b"qtelemetry"].decode()
    assert '"format_version": 1' in meta and f'"qtelemetry_version": "{__version__}"' in meta
    times = ["window_start", "window_end"]  # the CSV run started at another instant
    pd.testing.assert_frame_equal(read_recording(csv).drop(columns=times), frame.drop(columns=times),
                                  check_dtype=False, check_exact=False, rtol=1e-15)


def test_faults_are_recorded_per_window(recorded):
    frame = read_recording(recorded[2])
    cut = frame[frame["link"] == "cut-10km"]
    starts = cut["window_start"] - cut["window_start"].iloc[0]
    # the fault acts from 4 s to 6 s after start; a window is marked by the faults at its start
    assert cut["fault_fiber_cut"].tolist() == [4 <= round(s) <= 6 for s in starts]
    others = [c for kind, c in FAULT_COLUMNS.items() if kind != "fiber-cut"]
    assert not frame[others].to_numpy().any() and len(FAULT_COLUMNS) == len(FAULT_KINDS)


def test_a_recording_from_before_a_fault_kind_existed_reads_that_kind_as_never_active(recorded, tmp_path):
    """Fault kinds are added over time (``photon-number-splitting`` after tests/data's SeQUeNCe recording
    was made): a file without a kind's column reads it as false, the rest as written."""
    column = FAULT_COLUMNS["photon-number-splitting"]
    older = tmp_path / "older.csv"
    pd.read_csv(recorded[3], keep_default_na=False).drop(columns=[column]).to_csv(older, index=False)
    frame, full = read_recording(older), read_recording(recorded[3])
    assert frame[column].dtype == bool and not frame[column].any()
    pd.testing.assert_frame_equal(frame[full.columns], full)
    assert not read_recording(Path(__file__).parent / "data" / "sequence-bb84-cascade.parquet")[column].any()


def test_sliding_sums_are_each_rows_last_n_of_its_link():
    values = np.arange(1.0, 8.0)  # link A rows 0-3, link B rows 4-6
    first = np.array([0, 0, 0, 0, 4, 4, 4])
    assert sliding_sums(values, first, 2).tolist() == [1, 3, 5, 7, 5, 11, 13]
    assert sliding_sums(values, first, 10).tolist() == [1, 3, 6, 10, 5, 11, 18]



def test_analyse_gives_what_the_exporter_published_after_each_window(recorded):
    runtime, snapshots, parquet, _ = recorded
    estimates = estimate_frame(read_recording(parquet), SLIDING, runtime.config.exporter.confidence_level)
    compared = 0
    for k, snapshot in enumerate(snapshots):
        for protocol, members in runtime.table.groups.items():
            for row, link in enumerate(members):
                mine = estimates[estimates["link"] == runtime.table.names[link]].iloc[k]
                for key, values in snapshot.groups[protocol].estimates.items():
                    if key.startswith(ESTIMATE_PREFIX):
                        continue  # the tamper detectors' state: not an estimator's output, analyse does not run them
                    live, offline = float(values[row]), float(mine[key])
                    assert (math.isnan(live) and math.isnan(offline)) or math.isclose(live, offline, rel_tol=1e-9), \
                        f"{runtime.table.names[link]} window {k + 1} {key}"
                    compared += 1
    assert compared > 200  # the 4-window sums wrapped 5 times: what the ring drops, the offline sum drops


def test_summary_counts_windows_without_key(recorded):
    estimates = estimate_frame(read_recording(recorded[2]), 1)
    table = summary(estimates)
    # the cut fibre gives no key in the windows starting at 4, 5 and 6 s; the others always have key
    cut = estimates[estimates["link"] == "cut-10km"]["secret_key_rate_bps"]
    assert table.loc["cut-10km", "windows_without_key"] == int((cut.isna() | (cut <= 0)).sum()) == 3
    assert table.loc["spdc-20km", "windows_without_key"] == 0
    assert pd.isna(table.loc["memories-5km", "windows_without_key"])  # heralded links make no key
    assert table.loc["cut-10km", "windows"] == CYCLES
    qber = estimates[estimates["link"] == "spdc-20km"]["qber_z"]
    assert table.loc["spdc-20km", "qber_p95"] == pytest.approx(np.percentile(qber, 95))


# --- bad recordings ------------------------------------------------------------------------

def _mutate(frame: pd.DataFrame, row: int, column: str, value: object) -> pd.DataFrame:
    frame = frame.astype(object)
    frame.loc[row, column] = value
    return frame


BAD = [
    # (what, change to the small CSV recording, row, column, words in the message)
    ("negative count", lambda f: _mutate(f, 5, "attempts", -3), 6, "attempts", "non-negative"),
    ("another protocol's count", lambda f: _mutate(f, 4, "attempts", 3), 5, "attempts", "do not have"),
    ("fractional count", lambda f: _mutate(f, 0, "pulses_signal", 2.5), 1, "pulses_signal", "whole"),
    ("text in a count", lambda f: _mutate(f, 7, "singles_a", "many"), 8, "singles_a", "number"),
    ("empty count", lambda f: _mutate(f, 3, "detections_vacuum", ""), 4, "detections_vacuum", "missing"),
    ("negative amount", lambda f: _mutate(f, 3, "key_generated_bits", -1.0), 4, "key_generated_bits", "non-negative"),
    ("duplicate window", lambda f: _mutate(_mutate(f, 3, "window_end", f.loc[0, "window_end"]), 3, "window_start",
                                           f.loc[0, "window_start"]), 4, "window_end", "duplicate"),
    ("out of order", lambda f: f.iloc[[0, 1, 2, 6, 4, 5, 3, *range(7, len(f))]], 7, "window_end", "not after"),
    ("length mismatch", lambda f: _mutate(f, 6, "window_seconds", 7.0), 7, "window_seconds", "match"),
    ("unknown protocol", lambda f: _mutate(f, 2, "protocol", "bb85"), 3, "protocol", "unknown protocol"),
    ("missing column", lambda f: f.drop(columns=["errors_z_signal"]), None, "errors_z_signal", "missing"),
    ("unknown column", lambda f: f.assign(pulses_sygnal=1), None, "pulses_sygnal", "unknown column"),
    ("missing parameter", lambda f: _mutate(f, 0, "param_mu", ""), 1, "param_mu", "finite"),
    ("not a boolean", lambda f: _mutate(f, 2, "fault_fiber_cut", "maybe"), 3, "fault_fiber_cut", "true or false"),
]


@pytest.mark.parametrize("what,change,row,column,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_recording_is_an_error_naming_file_row_and_column(recorded, tmp_path, what, change, row, column, words):
    path = tmp_path / "bad.csv"
    change(pd.read_csv(recorded[3], keep_default_na=False)).to_csv(path, index=False)
    with pytest.raises(RecordingError) as error:
        read_recording(path)
    message = str(error.value)
    assert message.startswith(str(path)) and words in message
    assert (error.value.row, error.value.column) == (row, column)


@pytest.mark.parametrize("content,words", [
    (None, "no such file"), (b"", "not a recording"), (b"PAR1\x00\x01garbage", "not a recording"),
    (b"\xff\xfe\x00binary", "not a recording"), (b"link,protocol\n", "missing column")])
def test_an_unreadable_file_is_an_error_naming_it(tmp_path, content, words):
    path = tmp_path / "file.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RecordingError, match=words) as error:
        read_recording(path)
    assert str(error.value).startswith(str(path))


def test_record_then_analyse_on_the_command_line(tmp_path, capsys):
    config, recording, out = tmp_path / "small.yaml", tmp_path / "small.csv", tmp_path / "estimates.parquet"
    config.write_text(SMALL.format(sliding=60))
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "record", "--config", str(config), "--duration", "2.5",
                           "--out", str(recording)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    frame = read_recording(recording)
    assert set(frame["link"]) == {"cut-10km", "spdc-20km", "memories-5km"}
    assert 2 <= len(frame) / 3 <= 3 and f"rows={len(frame)}" in done.stderr  # a window a second
    assert main(["analyse", str(recording), "--out", str(out), "--sliding-windows", "2"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("cut-10km", "spdc-20km", "memories-5km", "windows_without_key"))
    pd.testing.assert_frame_equal(pd.read_parquet(out), estimate_frame(frame, 2).reset_index(drop=True),
                                  check_dtype=False)
    bad = tmp_path / "bad.csv"
    _mutate(pd.read_csv(recording, keep_default_na=False), 2, "successes", -1).to_csv(bad, index=False)
    assert main(["analyse", str(bad)]) == 2
    assert f"{bad}, row 3, column successes" in capsys.readouterr().err
