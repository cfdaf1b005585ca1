"""The README stays true: its metric table is the catalogue's, its commands are CI's."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtelemetry.monitoring.docs import TABLES, markers

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_are_generated_from_the_catalogue_and_rules(name):
    begin, end = markers(name)
    table = README.split(begin, 1)[1].split(end, 1)[0].strip()
    assert table == TABLES[name](), "regenerate: python -m qtelemetry.monitoring.docs README.md"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert test_command in README
