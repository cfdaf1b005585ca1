"""Bad config: a message naming the field and the reason, exit code 2, nothing starts."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from qtelemetry.cli import main
from qtelemetry.config import default_config
from qtelemetry.configmodel import StrictModel

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


#: Problems of every layer, each alone in an otherwise good file of three links: (what a file()
#: argument adds, the line check-config prints). Field errors hide a model's cross-field rules in
#: pydantic, and its rules stop at the first that fails.
LAYERS = [
    ({"exporter": "listen: nowhere"}, "exporter.listen: expected HOST:PORT"),
    ({"exporter": "window_seconds: 5, stall_timeout_seconds: 1"}, "exporter.stall_timeout_seconds: must be at least"),
    ({"exporter": "sliding_windows: 100000000"}, "exporter.sliding_windows: 100000000 windows of 3 links need"),
    ({"name2": "a"}, "links: duplicate link names: a (links[0], links[2])"),
    ({"extra0": ", mu: 0.1, nu: 0.2"}, "links[0].driver: nu (0.2) must be smaller than mu (0.1)"),
    ({"extra0": ", p_signal: 0.5"}, "links[0].driver: p_signal + p_decoy + p_vacuum must be 1, not 0.7"),
    ({"extra0": ", detector_efficiency: 2"}, "links[0].driver.detector_efficiency: Input should be less than"),
    ({"name1": "Bad"}, "links[1].name: String should match pattern"),
]


def layered(exporter: str = "", extra0: str = "", name1: str = "b", name2: str = "c") -> str:
    return (f"exporter: {{{exporter}}}\nlinks:\n  - {GOOD_LINK % ('a', extra0)}\n"
            f"  - {GOOD_LINK % (name1, '')}\n  - {GOOD_LINK % (name2, '')}\n")


def check_config_lines(path, capsys) -> list[str]:
    assert main(["check-config", str(path)]) == 2
    return [line.removeprefix(f"{path}: ") for line in capsys.readouterr().err.splitlines()]


def test_every_problem_of_every_layer_is_listed_in_one_pass(tmp_path, capsys):
    """A file with all of LAYERS' problems at once reports each, exactly as it is reported alone:
    cross-field rules run next to field errors, and none stops another."""
    path = tmp_path / "layers.yaml"
    alone = []
    for change, expected in LAYERS:
        path.write_text(layered(**change))
        [line] = check_config_lines(path, capsys)
        assert line.startswith(expected), line
        alone.append(line)
    path.write_text(layered(", ".join(c["exporter"] for c, _ in LAYERS if "exporter" in c),
                            "".join(c.get("extra0", "") for c, _ in LAYERS), name1="Bad", name2="a"))
    assert sorted(check_config_lines(path, capsys)) == sorted(alone)


def test_run_with_bad_config_exits_2_and_serves_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(config(extra=", mu: 0.1, nu: 0.2"))
    proc = subprocess.run([sys.executable, "-m", "qtelemetry", "run", "--config", str(path), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "nu (0.2) must be smaller than mu (0.1)" in proc.stderr
    assert "serving metrics" not in proc.stderr


def test_good_config_passes_and_counts_its_links_in_words(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(config())
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok, 1 link: ok-link\n"
    path.write_text(config(more="\n  - " + GOOD_LINK % ("other-link", "")))
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok, 2 links: ok-link, other-link\n"


def test_embedded_demo_is_valid():
    assert len(default_config().links) >= 3


def test_every_cross_field_rule_is_a_check():
    """A pydantic model validator runs only once its model's fields are valid and stops at the first
    that fails: the config models' cross-field rules are @check methods, which all run (a validator a
    merge brings in fails here)."""
    for module in ("qtelemetry.config", "qtelemetry.devices.config", "qtelemetry.exporter.webconfig"):
        importlib.import_module(module)
    models, todo = [], [StrictModel]
    while todo:
        models.append(todo.pop())
        todo += models[-1].__subclasses__()
    validators = {f"{m.__module__}.{m.__name__}.{name}" for m in models
                  for name in m.__pydantic_decorators__.model_validators if name != "_every_problem"}
    assert len(models) > 20 and validators == set()
