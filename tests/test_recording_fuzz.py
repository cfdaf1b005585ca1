"""Fuzzing the recording readers: whatever a file holds, they return checked data or raise a
RecordingError naming the file (and, for one bad cell, its row and column), never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtelemetry.estimation import PROTOCOLS
from qtelemetry.drivers.formats.recording import (ID_COLUMNS, PARQUET_MAGIC, BadRow, RecordingError, RecordingSource,
                                                 count_columns, read_recording, survey_link)
from recordings import record_cycles, small_config

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
TIMES = set(ID_COLUMNS[2:])


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("fuzz") / "small.csv"
    record_cycles(small_config(), 3, path)
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def _every_reader(path: Path) -> None:
    """Run every reader over ``path``: only RecordingError may come out."""
    for read in (lambda: read_recording(path), lambda: survey_link(path, None),
                 lambda: [list(batch) for batch in RecordingSource(path, "spdc-20km", "bbm92-spdc").batches()]):
        try:
            read()
        except RecordingError as exc:
            assert str(exc).startswith(str(path))


@settings(FUZZ, max_examples=100)
@given(content=st.binary(max_size=2000) | st.binary(max_size=2000).map(PARQUET_MAGIC.__add__)
       | st.text(max_size=500).map(lambda t: ("link,protocol,window_start\n" + t).encode("utf-8", "surrogatepass")))
def test_any_bytes_are_read_or_refused_by_name(content):
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "recording"
        path.write_bytes(content)
        _every_reader(path)


CELL = (st.integers(-2**70, 2**70).map(str) | st.floats().map(repr) | st.sampled_from(["", "nan", "inf", "-0", "1e400", "True"])
        | st.text(st.characters(blacklist_characters="\r\n"), max_size=6))  # line breaks re-cut the CSV


@FUZZ
@given(data=st.data())
def test_a_damaged_cell_is_refused_by_its_row_and_column_or_is_harmless(valid, data):
    frame = valid.copy()
    cells = data.draw(st.lists(st.tuples(st.integers(0, len(frame) - 1), st.sampled_from(list(frame.columns)), CELL),
                               min_size=1, max_size=3))
    for row, column, value in cells:
        frame.loc[row, column] = value
    damaged = {(row + 1, column) for row, column, _ in cells}
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "damaged.csv"
        frame.to_csv(path, index=False)
        try:
            checked = read_recording(path)
        except RecordingError as exc:
            assert str(exc).startswith(str(path))
            if exc.row is not None:  # a cell's fault: one we damaged, or a later window of a link whose times we
                # moved, or a protocol that is not the one of the link we renamed the row to
                assert ((exc.row, exc.column) in damaged or exc.column in TIMES
                        or (exc.column == "protocol" and (exc.row, "link") in damaged)), (str(exc), cells)
        else:
            for protocol in checked["protocol"].unique():
                rows = checked[checked["protocol"] == protocol]
                for c in count_columns(protocol):
                    values = rows[c.column].to_numpy(float)
                    if PROTOCOLS[protocol].count_kinds.get(c.count, "count") == "count":
                        assert (values >= 0).all() and (values == np.round(values)).all()
                    else:
                        assert (np.isnan(values) | (values >= 0)).all()
        try:
            windows = [w for batch in RecordingSource(path, "cut-10km", "bb84-decoy").batches() for w in batch]
        except RecordingError:
            return
        for window in windows:
            if isinstance(window, BadRow):
                assert (window.row, window.column) in damaged or window.column in TIMES
            else:
                assert all(np.all(np.isnan(v) | (v >= 0)) for v in window.counts.values()) and window.duration > 0
