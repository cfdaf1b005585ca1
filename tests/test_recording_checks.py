"""F4, F10: check-config means it for recordings. Whatever makes a replay refuse a recording, or
skip its rows, is found when the config is loaded (check-config, start, reload) by the same checks
the replay and ``analyse`` read through: the file, row and column of the first problem."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from qtelemetry.cli import main
from recordings import record_cycles, small_config

ROWS = 6


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The spdc-20km link alone of a small recording, as written (CSV)."""
    where = tmp_path_factory.mktemp("checks")
    record_cycles(small_config(), ROWS, where / "small.csv")
    frame = pd.read_csv(where / "small.csv")
    return frame[frame["link"] == "cut-10km"].dropna(axis=1, how="all").reset_index(drop=True)  # its own columns


def _every_row(column, value):
    return lambda f: f.assign(**{column: value})


REFUSED = [
    # (what, change to the one-link recording, (row, column) of the first problem, words in the message)
    ("missing column", lambda f: f.drop(columns=["errors_z_signal"]), (None, "errors_z_signal"), "missing column"),
    ("extra column", lambda f: f.assign(pulses_sygnal=1), (None, "pulses_sygnal"), "unknown column"),
    ("text counts", _every_row("detections_signal", "many"), (1, "detections_signal"), "expected a number"),
    ("negative counts", _every_row("pulses_signal", -5), (1, "pulses_signal"), "non-negative"),
    ("reversed windows", lambda f: f.assign(window_start=f["window_end"], window_end=f["window_start"]),
     (1, "window_start"), "must start before it ends"),
    ("mu 1e308", _every_row("param_mu", 1e308), (1, "param_mu"), "less than or equal to 10"),
    ("block size -1", _every_row("param_block_size", -1.0), (1, "param_block_size"), "greater than or equal to 10000"),
    ("nu above mu", _every_row("param_nu", 0.7), (1, "param_nu"), "must be smaller than mu"),
]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("what,change,where,words", REFUSED, ids=[r[0] for r in REFUSED])
def test_check_config_refuses_what_the_replay_would_and_names_it_as_analyse_does(
        recording, tmp_path, capsys, suffix, what, change, where, words):
    path = tmp_path / f"bad.{suffix}"
    frame = change(recording.copy())
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path, index=False)
    config = tmp_path / "replay.yaml"
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, path: '{path}'}}}}\n")
    assert main(["check-config", str(config)]) == 2
    checked = capsys.readouterr().err
    row, column = where
    named = f"{path}{f', row {row}' if row else ''}, column {column}"
    assert "links[0].driver.path:" in checked and named in checked and words in checked, checked
    assert main(["analyse", str(path)]) == 2  # the same checks, the same first problem
    assert named in capsys.readouterr().err


def test_the_run_refuses_a_parameter_out_of_bounds_before_serving(recording, tmp_path):
    path = tmp_path / "mu.csv"
    recording.assign(param_mu=1e308).to_csv(path, index=False)
    config = tmp_path / "replay.yaml"
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, path: '{path}'}}}}\n")
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "run", "--config", str(config), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "param_mu" in done.stderr and "serving" not in done.stderr, done.stderr


def test_a_few_bad_rows_are_a_warning_naming_the_first(recording, tmp_path, capsys):
    """The replay skips them (bad_row) and plays the rest: check-config passes, and says so."""
    path = tmp_path / "some.csv"
    frame = recording.copy()
    frame.loc[[2, 4], "pulses_signal"] = -1
    frame.to_csv(path, index=False)
    config = tmp_path / "replay.yaml"
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, path: '{path}'}}}}\n")
    assert main(["check-config", str(config)]) == 0
    err = capsys.readouterr().err
    assert f"links[0].driver.path: warning: 2 of the {ROWS} rows of link 'cut-10km' cannot be used" in err
    assert f"{path}, row 3, column pulses_signal" in err


def test_a_link_with_no_rows_or_only_bad_ones_is_named(recording, tmp_path, capsys):
    path = tmp_path / "rec.csv"
    recording.to_csv(path, index=False)
    config = tmp_path / "replay.yaml"
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, path: '{path}', link: spdc-20km}}}}\n")
    assert main(["check-config", str(config)]) == 2
    assert "no rows of link 'spdc-20km'" in capsys.readouterr().err
    frame = recording.copy()
    frame["window_seconds"] = np.where(np.arange(ROWS) % 2, -1.0, 7.0)
    frame.to_csv(path, index=False)
    config.write_text(f"links:\n  - {{name: a, driver: {{type: replay, path: '{path}'}}}}\n")
    assert main(["check-config", str(config)]) == 2
    assert f"no usable window of link 'cut-10km': each of its {ROWS} rows has a problem" in capsys.readouterr().err
