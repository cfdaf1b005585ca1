"""What a new user runs into (issue 10, after the table): the quick start, the optional extras,
the shipped fault-injection example and the documented commands against it, `generate` without
`--out`, and what `fault` prints."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from qtelemetry.cli import main
from qtelemetry.monitoring import generate
from qtelemetry.monitoring.catalogue import METRICS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
INSTALL = (ROOT / "docs" / "install.md").read_text()
FAULTS = (ROOT / "docs" / "faults.md").read_text()
#: Top-level modules of the extras (plot, generate, report, recording, otel, sequence, pki,
#: plan-network): the demo exporter imports none of them.
EXTRA_MODULES = ("matplotlib", "grafana_foundation_sdk", "requests", "pandas", "pyarrow", "opentelemetry",
                 "sequence", "cryptography", "pyscipopt")
#: Modules of ``FORBIDDEN`` are missing, as in the demo install: another package's optional import
#: of one (igraph's of matplotlib) fails as it would there, and the first import by qtelemetry's
#: own code ends the process (exit 70, naming the module).
TRIPWIRE = """
class Tripwire:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in FORBIDDEN:
            return None
        caller = sys._getframe(1)
        while caller.f_code.co_filename.startswith("<frozen") or "/importlib/" in caller.f_code.co_filename:
            caller = caller.f_back
        if "/qtelemetry/" in caller.f_code.co_filename:
            sys.stderr.write(f"imported {name}\\n")
            os._exit(70)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Tripwire())
"""


def qtelemetry(*args: str, blocked: tuple[str, ...] = (), forbidden: tuple[str, ...] = (), cwd: Path | None = None,
               **popen: object) -> subprocess.Popen:
    """`python -m qtelemetry ARGS` with ``blocked`` modules made unimportable, as if not installed, and
    ended (exit 70) at the first import of a ``forbidden`` one."""
    code = (f"import os, runpy, sys\nsys.modules.update(dict.fromkeys({blocked!r}))\nFORBIDDEN = {forbidden!r}\n"
            f"{TRIPWIRE}\nsys.argv[0] = 'qtelemetry'\nrunpy.run_module('qtelemetry', run_name='__main__')")
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, text=True, **popen)


def finished(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    proc = qtelemetry(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_url(log: Path, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while not (match := re.search(r"url=(http\S+)/metrics", log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return match.group(1)


# -- quick start ---------------------------------------------------------------------------------

def test_quick_start_install_shows_progress():
    for page in (README.split("## Quick start", 1)[1], INSTALL):
        first = next(line for line in page.splitlines() if line.startswith("python3 -m venv"))
        assert "pip install" in first and " -q" not in first


def test_ci_installs_the_sequence_release_the_extra_pins():
    """The test install takes SeQUeNCe without its dependencies: the same release as the sequence extra."""
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["sequence"]
    assert pinned == [re.search(r"--no-deps (sequence==\S+)", (ROOT / ".ci" / "run").read_text()).group(1)]


def test_quick_start_curl_shows_every_link_metric():
    """The demo's grep hid every qent_ metric, so two demo links looked empty."""
    pattern = re.search(r"grep -E '([^']+)'", INSTALL).group(1)
    link_metrics = [m.name + {"info": "_info", "counter": "_total"}.get(m.type, "") for m in METRICS
                    if not (m.own or m.name.startswith("qtelemetry"))]
    assert link_metrics and all(re.match(pattern, name) for name in link_metrics)


def test_the_demo_exporter_imports_no_extra(tmp_path):
    """Started, ready and scraped without the extras' modules: qtelemetry's code imports none of
    them (the tripwire ends the process at the first)."""
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = qtelemetry("run", "--listen", "127.0.0.1:0", forbidden=EXTRA_MODULES, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = wait_for_url(log, proc)
            deadline = time.monotonic() + 60
            while True:  # every link has delivered a window: estimates exist
                try:
                    urllib.request.urlopen(url + "/-/ready", timeout=10).close()
                    break
                except urllib.error.HTTPError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
                assert b"qkd_secret_key_rate_bits_per_second{" in response.read()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert proc.returncode != 70 and "imported" not in log.read_text() and "Traceback" not in log.read_text()


def test_the_tripwire_trips(tmp_path):
    done = finished("plan", "--plot", str(tmp_path / "plan.png"), "--distances", "0:10:10", forbidden=("matplotlib",))
    assert (done.returncode, done.stderr) == (70, "imported matplotlib\n")


RECORDING = "links: [{name: replayed, driver: {type: replay, path: week.parquet}}]\n"
OTLP = ("exporter: {otlp: {endpoint: 'http://127.0.0.1:4318/v1/metrics'}}\n"
        "links: [{name: a, driver: {type: simulated-bb84, fiber_length_km: 1}}]\n")


@pytest.mark.parametrize("args, config, blocked, expected", [
    (["check-config", "c.yaml"], RECORDING, ("pyarrow",),  # a replay reads recordings without pandas
     "c.yaml: links[0].driver.type: pyarrow is not installed: pip install 'qtelemetry[recording]'"),
    (["run", "--config", "c.yaml", "--listen", "127.0.0.1:0"], OTLP, ("opentelemetry",),
     "field=exporter.otlp reason=\"opentelemetry is not installed: pip install 'qtelemetry[otel]'"),
    (["record", "--duration", "1", "--out", "x.parquet"], None, ("pandas",),
     "error: qtelemetry record: pandas is not installed: pip install 'qtelemetry[recording]'"),
    (["analyse", "x.parquet"], None, ("pyarrow",),
     "error: qtelemetry analyse: pyarrow is not installed: pip install 'qtelemetry[recording]'"),
    (["history", "--start", "now-1d", "--days", "1", "--out", "h.om"], None, ("pandas",),
     "error: qtelemetry history: pandas is not installed: pip install 'qtelemetry[report]'"),
    (["simulate", "--make-pki", "pki"], None, ("cryptography",),
     "error: --make-pki: cryptography is not installed: pip install 'qtelemetry[pki]'"),
    (["plan-network", str(ROOT / "examples" / "tokyo-qkd-plan.yaml"), "--out", "plan"], None, ("pyscipopt",),
     "error: qtelemetry plan-network: pyscipopt is not installed: pip install 'qtelemetry[plan-network]'"),
])
def test_what_needs_an_extra_names_it(args, config, blocked, expected, tmp_path):
    """Without the extra: exit 2 and the extra's name, for a command or a config section (a check-config
    error, not an ImportError at run), and nothing written."""
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
    done = finished(*args, blocked=blocked, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert expected in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["c.yaml"] if config else [])


def test_plot_without_matplotlib_names_the_extra(tmp_path):
    done = finished("plan", "--plot", str(tmp_path / "plan.png"), blocked=("matplotlib",))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: --plot: matplotlib is not installed: pip install 'qtelemetry[plot]'" in done.stderr
    assert not (tmp_path / "plan.png").exists()


def test_generate_without_grafana_sdk_names_the_extra(tmp_path):
    done = finished("generate", "--out", str(tmp_path), blocked=("grafana_foundation_sdk",))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "grafana_foundation_sdk is not installed: pip install 'qtelemetry[generate]'" in done.stderr
    assert not list(tmp_path.iterdir())


# -- generate --out -------------------------------------------------------------------------------

def test_generate_without_out_outside_a_checkout_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate"]) == 2
    assert "error: --out: say which directory receives dashboards/ and alerts/" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_generate_without_out_in_the_checkout_root_checks_the_committed_files(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["generate", "--check"]) == 0
    assert "generated files up to date in ." in capsys.readouterr().out


def test_check_suggests_the_command_with_the_out_and_config_it_was_given(tmp_path, capsys):
    out, config = tmp_path / "my site", tmp_path / "monitoring.yaml"
    config.write_text("thresholds: {qber_warning: 0.04}\n")
    assert main(["generate", "--out", str(out), "--config", str(config)]) == 0
    (out / generate.RULE_FILE).write_text("edited\n")
    capsys.readouterr()
    assert main(["generate", "--out", str(out), "--config", str(config), "--check"]) == generate.EXIT_DIFFERS
    command = shlex.join(["qtelemetry", "generate", "--out", str(out), "--config", str(config)])
    assert f"generated files are out of date: run `{command}`" in capsys.readouterr().err


def test_a_pyproject_of_another_project_is_not_a_checkout(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    assert not generate.is_source_checkout(tmp_path)
    for text in ("not toml [", 'project = "qtelemetry"\n', "\udcff"):
        (tmp_path / "pyproject.toml").write_text(text, errors="surrogateescape")
        assert not generate.is_source_checkout(tmp_path)
    assert generate.is_source_checkout(ROOT)


# -- the fault example and the fault command -------------------------------------------------------

def documented_commands(prefix: str) -> list[str]:
    """The shell lines of the fault-injection page that start with ``prefix``."""
    return [line for line in FAULTS.splitlines() if line.startswith(prefix)]


def test_documented_fault_example_works_against_the_shipped_config(tmp_path):
    """The documented steps, run as written from a copy of the checkout's examples/ (the exporter on a
    free port: `--listen` and `--url` are the only things added)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.token"))
    [make_token] = documented_commands("(umask 077")
    subprocess.run(["bash", "-c", make_token], cwd=tmp_path, check=True, timeout=30)
    token = tmp_path / "examples" / "admin.token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32

    [run] = documented_commands("qtelemetry run")
    log = tmp_path / "run.log"
    other = tmp_path / "elsewhere"  # relative paths come from the config file, not the working directory
    other.mkdir()
    config = str(tmp_path / shlex.split(run)[-1])
    with log.open("w") as out:
        proc = qtelemetry(*shlex.split(run)[1:-1], config, "--listen", "127.0.0.1:0", cwd=other,
                          stdout=out, stderr=subprocess.STDOUT)
        try:
            url = wait_for_url(log, proc)
            inject, clear = documented_commands("qtelemetry fault")
            for command, expected in ((inject, "injected intercept-resend on link metro-10km: magnitude 0.3, "
                                               "at full strength now, until cleared\n"),
                                      (clear, "ended 1 fault on link metro-10km\n")):
                done = finished(*shlex.split(command)[1:], "--url", url, cwd=tmp_path)
                assert (done.returncode, done.stdout, done.stderr) == (0, expected, "")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert "control_plane=on" in log.read_text() and "WARNING" not in log.read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fault_names_the_url_it_cannot_reach(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["fault", "clear", "--url", url, "--token-file", str(token), "--link", "x"]) == 1
    assert f"error: cannot reach the exporter at {url}/-/faults: " in capsys.readouterr().err


@pytest.mark.parametrize("content, reason", [(b"", "the file is empty"), (b"\xff\xfe", "not UTF-8 text")])
def test_fault_refuses_an_unusable_token_file(content, reason, tmp_path, capsys):
    token = tmp_path / "token"
    token.write_bytes(content)
    assert main(["fault", "clear", "--token-file", str(token), "--link", "x"]) == 2
    assert f"error: --token-file: {reason}" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_fault_refuses_non_finite_numbers(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fault", "inject", "--token-file", "t", "--link", "x", "--kind", "fiber-cut", f"--magnitude={value}"])
    assert exit_.value.code == 2 and "is not a finite number" in capsys.readouterr().err
