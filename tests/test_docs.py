"""The documentation stays true: the site builds strictly (no broken link or anchor, no page left
out of the nav), its generated tables are the catalogue's, every block marked runnable runs as
written, and the commands it quotes are CI's and the CLI's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qtelemetry.cli import main
from qtelemetry.monitoring.docs import TABLES, markers, replace_tables
from docblocks import blocks, fresh_shell_env, run

ROOT = Path(__file__).resolve().parents[1]
#: every Markdown file of the site and the front door (the included ones come with their pages)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md",
             ROOT / "bench" / "README.md"]
RUNNABLE = [path for path in DOCUMENTS if blocks(path.read_text())]
#: left out of the copy the blocks run in: the venv (linked instead), VCS and caches, secrets
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "site", "__pycache__", "*.egg-info", ".pytest_cache",
                                    ".hypothesis", "node_modules", "*.token", "demo-pki")


def test_site_builds_strictly(tmp_path):
    """mkdocs.yml sets strict mode and link validation: a link to a missing page or anchor, a page
    missing from the nav or an include that fails is an error."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # Material's banner about its successor
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "runbooks" / "index.html").read_text().count('<h2 id="qkdqbercritical">') == 1


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_are_generated_from_the_catalogue_and_rules(name):
    begin, _ = markers(name)
    holders = [path for path in DOCUMENTS if begin in path.read_text()]
    assert holders, f"no document holds the {name} table"
    for path in holders:
        assert replace_tables(path.read_text()) == path.read_text(), \
            f"regenerate: python -m qtelemetry.monitoring.docs {path.relative_to(ROOT)}"


def test_ci_runs_the_documented_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert test_command in (ROOT / "README.md").read_text()
    assert test_command in (ROOT / "docs" / "install.md").read_text()


def test_history_prints_the_documented_backfill_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["history", "--start", "2026-11-02T00:00:00Z", "--days", "0.01", "--out", "week.om"]) == 0
    command = capsys.readouterr().out.split("next: ", 1)[1].strip().replace("DATA_DIR", "data")
    assert command in (ROOT / "docs" / "report.md").read_text()


@pytest.mark.parametrize("document", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_runnable_blocks_run_as_written(document, tmp_path):
    """Each document's marked blocks, in order, from a copy of the checkout with the venv activated,
    in a network namespace of their own (the documented ports are fixed)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rnp", "--fork", "true"]).returncode:
        pytest.skip("needs unshare -rnp (user, network and PID namespaces)")
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=NOT_COPIED, symlinks=True)
    (checkout / ".venv").symlink_to(sys.prefix)
    done = subprocess.run(["unshare", "-rnp", "--fork", sys.executable, str(ROOT / "tests" / "docblocks.py"),
                           str(checkout / document.relative_to(ROOT)), str(checkout)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the harness itself ---------------------------------------------------------------------------

def venv_checkout(tmp_path: Path) -> Path:
    (tmp_path / ".venv").symlink_to(sys.prefix)
    return tmp_path


def test_harness_stops_at_a_failing_block(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- runnable -->\n```sh\necho one > one\n```\n\n"
                   "<!-- runnable -->\n```sh\nfalse\necho not reached\n```\n\n"
                   "<!-- runnable -->\n```sh\necho three > three\n```\n")
    assert run(doc, venv_checkout(tmp_path)) == 1
    assert "FAILED: exit code 1" in capsys.readouterr().out
    assert (tmp_path / "one").exists() and not (tmp_path / "three").exists()


def test_harness_runs_blocks_in_a_fresh_shell_with_the_venv_activated(tmp_path, capsys):
    assert not shutil.which("qtelemetry", path=fresh_shell_env()["PATH"])  # only activating finds it
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- runnable -->\n```sh\nexport LEFT=over\ncommand -v qtelemetry\n```\n\n"
                   "<!-- runnable -->\n```sh\ntest -z \"${LEFT:-}\"\n```\n")
    assert run(doc, venv_checkout(tmp_path)) == 0
    assert capsys.readouterr().out.count(str(Path(sys.prefix) / "bin" / "qtelemetry")) == 1


def test_harness_waits_for_a_background_block_and_ends_it(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text('<!-- runnable: background ready="up" timeout=30 -->\n```sh\necho $$ > pid; sleep 1; echo up; sleep 600\n```\n\n'
                   "<!-- runnable -->\n```sh\nkill -0 $(cat pid)\n```\n")
    assert run(doc, venv_checkout(tmp_path)) == 0
    pid = int((tmp_path / "pid").read_text())
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def test_harness_fails_a_background_block_that_never_gets_ready(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text('<!-- runnable: background ready="serving" timeout=30 -->\n```sh\necho starting; exit 2\n```\n')
    assert run(doc, venv_checkout(tmp_path)) == 1
    assert "FAILED: no output matching 'serving' (exited 2)" in capsys.readouterr().out


def test_harness_kills_a_block_past_its_timeout(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- runnable: timeout=1 -->\n```sh\nsleep 600\n```\n")
    assert run(doc, venv_checkout(tmp_path)) == 1
    assert "FAILED: still running after 1 s" in capsys.readouterr().out


@pytest.mark.parametrize("text", [
    "<!-- runnable -->\n```python\nprint()\n```\n",  # not a shell block
    "<!-- runnable -->\ntext\n```sh\ntrue\n```\n",  # not right after the marker
    "<!-- runnable: background -->\n```sh\ntrue\n```\n",  # background without ready
    "<!-- runnable: retries=3 -->\n```sh\ntrue\n```\n",  # unknown option
])
def test_a_malformed_marker_is_an_error(text):
    with pytest.raises(ValueError):
        blocks(text)
