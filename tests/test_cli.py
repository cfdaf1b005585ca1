"""The command line as a newcomer meets it (issue 24): `--help` lists every verb on one line each,
`--version` is the package's, a closed pipe ends a command quietly, and a config file given to the
wrong command says which command it is for."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qtelemetry.cli import EXIT_CLOSED_PIPE, build_parser, main
from recordings import record_cycles, small_config

ROOT = Path(__file__).resolve().parents[1]


def verbs() -> list[str]:
    [action] = [a for a in build_parser()._actions if a.dest == "verb"]
    return list(action.choices)


def test_help_lists_every_verb_on_one_line(capsys, monkeypatch):
    """On an 80-column terminal: the verbs' section holds one line per verb, its name and what it
    does, and nothing else; the description is a sentence, not the module's docstring."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    section = out.split("positional arguments:\n  VERB\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in section] == verbs()
    assert all(re.fullmatch(r"    \S+ +\S.*", line) and len(line) <= 80 for line in section), section
    assert {"run", "check-config", "plan", "generate", "record", "analyse", "report"} <= set(verbs())
    assert "``" not in out and "Telemetry for quantum networks" in out


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"qtelemetry {importlib.metadata.version('qtelemetry')}\n"


def closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """`qtelemetry ARGS` writing into a pipe whose reader has already gone, as `... | head` ends."""
    proc = subprocess.Popen([sys.executable, "-m", "qtelemetry", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=120), None, proc.stderr.read())


def test_a_closed_pipe_ends_analyse_quietly(tmp_path):
    recording = tmp_path / "week.parquet"
    record_cycles(small_config(), 3, recording)
    done = closed_pipe("analyse", str(recording))
    assert (done.returncode, done.stderr) == (EXIT_CLOSED_PIPE, "")


def test_a_closed_pipe_ends_a_long_plan_quietly():
    done = closed_pipe("plan", "--distances", "0:200:0.5")
    assert (done.returncode, done.stderr) == (EXIT_CLOSED_PIPE, "")


EXPORTER = (ROOT / "examples" / "fault-injection.yaml").read_text()
SIMULATE = (ROOT / "examples" / "simulate.yaml").read_text()


@pytest.mark.parametrize("args, text, expected", [
    (["check-config", "FILE"], SIMULATE,
     "(top level): this is a simulated-devices config (`simulation`, `sites`), for `qtelemetry simulate --config`; "
     "this command reads an exporter config"),
    (["simulate", "--config", "FILE"], EXPORTER,
     "(top level): this is an exporter config (`exporter`), for `qtelemetry run --config`; "
     "this command reads a simulated-devices config"),
    (["generate", "--config", "FILE", "--out", "OUT"], EXPORTER,
     "(top level): this is an exporter config (`exporter`, `links`), for `qtelemetry run --config`; "
     "this command reads a monitoring config"),
    (["check-config", "FILE"], "thresholds: {qber_warning: 0.04}\n",
     "(top level): this is a monitoring config (`thresholds`), for `qtelemetry generate --config`; "
     "this command reads an exporter config"),
    (["check-config", "--web.config.file", "FILE", "GOOD"], EXPORTER,
     "(top level): this is an exporter config (`exporter`, `links`), for `qtelemetry run --config`; "
     "this command reads a web config file"),
    (["plan", "--config", "FILE", "--link", "metro-10km"], SIMULATE,
     "(top level): this is a simulated-devices config (`simulation`, `sites`), for `qtelemetry simulate --config`"),
])
def test_a_config_of_another_command_names_that_command(args, text, expected, tmp_path, capsys):
    path, good = tmp_path / "given.yaml", tmp_path / "good.yaml"
    path.write_text(text)
    good.write_text("links: [{name: a, driver: {type: simulated-bb84, fiber_length_km: 1}}]\n")
    argv = [{"FILE": str(path), "OUT": str(tmp_path / "out"), "GOOD": str(good)}.get(a, a) for a in args]
    assert main(argv) == 2
    assert f"{path}: {expected}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
