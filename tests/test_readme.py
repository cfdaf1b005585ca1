"""The README stays true: its metric table is the catalogue's, its commands are CI's."""

from __future__ import annotations

from pathlib import Path

from qtelemetry.monitoring.docs import BEGIN, END, metrics_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_metric_table_is_generated_from_the_catalogue():
    table = README.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == metrics_markdown(), "regenerate: python -m qtelemetry.monitoring.docs README.md"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert test_command in README
