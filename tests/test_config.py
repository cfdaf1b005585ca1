"""Bad config: a message naming the field and the reason, exit code 2, nothing starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qtelemetry.cli import main
from qtelemetry.config import default_config

GOOD_LINK = "{name: %s, driver: {type: simulated-bb84, fiber_length_km: 10%s}}"


def config(name: str = "ok-link", extra: str = "", more: str = "") -> str:
    return "links:\n  - " + GOOD_LINK % (name, extra) + more + "\n"


CASES = {
    "unknown key": (config(extra=", colour: blue"), "links[0].driver.colour", "Extra inputs"),
    "unknown top-level key": (config() + "exporterr: {}\n", "exporterr", "Extra inputs"),
    "negative length": (config(extra=", fiber_length_km: -3").replace("fiber_length_km: 10, ", ""),
                        "fiber_length_km", "greater than or equal to 0"),
    "probability above 1": (config(extra=", dark_count_probability: 1.5"), "dark_count_probability", "less than or equal to 1"),
    "efficiency above 1": (config(extra=", detector_efficiency: 1.2"), "detector_efficiency", "less than or equal to 1"),
    "efficiency zero": (config(extra=", detector_efficiency: 0"), "detector_efficiency", "greater than 0"),
    "mu not above nu": (config(extra=", mu: 0.1, nu: 0.2"), "links[0].driver", "nu (0.2) must be smaller than mu (0.1)"),
    "duplicate names": (config(more="\n  - " + GOOD_LINK % ("ok-link", "")), "links", "duplicate link names: ok-link (links[0], links[1])"),
    "unsafe label value": (config(name='"bad name\\""'), "links[0].name", "should match pattern"),
    "uppercase label": (config(name="Metro"), "links[0].name", "should match pattern"),
    "unknown driver": ("links: [{name: x, driver: {type: carrier-pigeon}}]", "links[0].driver", "carrier-pigeon"),
    "invalid YAML": ("links: [unclosed", "line 1, column 8", "invalid YAML"),
    "not a mapping": ("- just\n- a list\n", "(top level)", "expected a mapping"),
    "bad listen": ("exporter: {listen: nowhere}\n" + config(), "exporter.listen", "HOST:PORT"),
    "zero window": ("exporter: {window_seconds: 0}\n" + config(), "exporter.window_seconds", "greater than or equal to 0.05"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_config_names_the_field(case, tmp_path, capsys):
    text, field, reason = CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    line = next((l for l in err.splitlines() if f"{field}: " in l), None)
    assert line is not None, err
    assert reason in line


def test_missing_file(tmp_path, capsys):
    assert main(["check-config", str(tmp_path / "absent.yaml")]) == 2
    assert "(file): No such file or directory" in capsys.readouterr().err


def test_every_problem_is_listed(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(config(name="Bad Name", extra=", detector_efficiency: 2, misalignment_error: 0.9"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    for field in ("links[0].name", "detector_efficiency", "misalignment_error"):
        assert field in err


def test_run_with_bad_config_exits_2_and_serves_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(config(extra=", mu: 0.1, nu: 0.2"))
    proc = subprocess.run([sys.executable, "-m", "qtelemetry", "run", "--config", str(path), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "nu (0.2) must be smaller than mu (0.1)" in proc.stderr
    assert "serving metrics" not in proc.stderr


def test_good_config_passes(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(config())
    assert main(["check-config", str(path)]) == 0
    assert "ok, 1 links: ok-link" in capsys.readouterr().out


def test_embedded_demo_is_valid():
    assert len(default_config().links) >= 3
