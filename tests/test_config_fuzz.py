"""Fuzzing the config loader: whatever a file holds, `check-config` answers 0, or 2 with errors that
name a field (or a line), never a traceback.

Strategies for other tests: ``valid_configs()`` draws config documents (dicts) that check-config
accepts, with every field drawn from its declared bounds (extremes included), so a test can run
any accepted config; ``config_text(document)`` renders one as YAML.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtelemetry.cli import cmd_check_config
from qtelemetry.config import (CONFIDENCE_LEVEL_MAX, WINDOW_SECONDS_MAX, WINDOW_SECONDS_MIN, Config, ConfigError,
                               ExporterConfig, LinkConfig, OtlpConfig, WebConfig, parse_config)
from qtelemetry.configfile import config_loader, load_yaml
from qtelemetry.drivers import DRIVER_CONFIGS
from qtelemetry.drivers.base import FleetConfig
from qtelemetry.drivers.faults import EFFECTS, FaultConfig
from qtelemetry.runtime.runtime import Runtime

#: Examples per run: structured documents + raw text + raw bytes = 2,200 through check-config.
STRUCTURED, TEXT, BYTES = 1200, 500, 500
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- valid configs, from the models' own field bounds ---------------------------------------

def _number(annotation: type, metadata: list[Any]) -> st.SearchStrategy[Any]:
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in metadata
              if isinstance(m, (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le))}
    if annotation is int:
        low = bounds.get("Ge", bounds.get("Gt", -2**63 - 1) + 1)
        high = bounds.get("Le", bounds.get("Lt", 2**63) - 1)
        return st.integers(low, high)
    return st.floats(min_value=bounds.get("Gt", bounds.get("Ge")), max_value=bounds.get("Lt", bounds.get("Le")),
                     exclude_min="Gt" in bounds, exclude_max="Lt" in bounds, allow_nan=False, allow_infinity=False)


def _field(model: type, name: str) -> st.SearchStrategy[Any]:
    """Any value the field's type and bounds allow."""
    info = model.model_fields[name]
    annotation = info.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return st.sampled_from(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(annotation) if a is not type(None))
        return st.none() | _number(inner, info.metadata)
    return _number(annotation, info.metadata)


@st.composite
def _fault(draw: st.DrawFn, driver: type) -> dict[str, Any]:
    kinds = sorted(k for k, e in EFFECTS.items() if e.parameter in driver.model_fields)
    fault = {"kind": draw(st.sampled_from(kinds))}
    for name in ("start_s", "ramp_s", "duration_s", "magnitude"):
        if draw(st.booleans()):
            fault[name] = draw(_field(FaultConfig, name))
    return fault


def _repair(driver: type, values: dict[str, Any]) -> None:
    """Satisfy the drivers' cross-field rules (the fields alone can't say them)."""
    if "nu" in driver.model_fields:  # decoy BB84: nu < mu, intensity probabilities sum to 1
        mu, nu = values.get("mu", 0.5), values.get("nu", 0.1)
        if nu >= mu:
            values["mu"], values["nu"] = (nu, mu) if mu < nu else (2.0 * mu, mu)
        weights = [values.get(p, d) for p, d in (("p_signal", 0.8), ("p_decoy", 0.1), ("p_vacuum", 0.1))]
        total = math.fsum(weights)
        values["p_signal"], values["p_decoy"] = weights[0] / total, weights[1] / total
        values["p_vacuum"] = 1.0 - values["p_signal"] - values["p_decoy"]
        if not min(values["p_signal"], values["p_decoy"], values["p_vacuum"]) > 0 or values["p_signal"] + values["p_decoy"] >= 1.0:
            values["p_signal"], values["p_decoy"], values["p_vacuum"] = 0.8, 0.1, 0.1
    if "coincidence_window_s" in driver.model_fields:  # SPDC: the window fits in one pump period
        clock = values.get("clock_rate_hz", 1e8)
        values["coincidence_window_s"] = min(values.get("coincidence_window_s", 1e-9), 1.0 / clock)


#: Drivers whose every valid config runs without a device to talk to.
SIMULATED = tuple(c for c in DRIVER_CONFIGS if issubclass(c, FleetConfig))


@st.composite
def _driver(draw: st.DrawFn, max_optional: int | None) -> dict[str, Any]:
    """A driver's required fields and up to ``max_optional`` others (None: any number)."""
    driver = draw(st.sampled_from(SIMULATED))
    optional = [name for name, info in driver.model_fields.items() if not info.is_required()]
    chosen = draw(st.sets(st.sampled_from(optional), max_size=len(optional) if max_optional is None else max_optional))
    values: dict[str, Any] = {}
    for name, info in driver.model_fields.items():
        if name == "faults" and name in chosen:
            values[name] = draw(st.lists(_fault(driver), max_size=2))
        elif info.is_required() or name in chosen:
            values[name] = draw(_field(driver, name))
    _repair(driver, values)
    return values


_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-", max_size=12).map(lambda s: "l" + s)  # LABEL_VALUE


@st.composite
def _exporter(draw: st.DrawFn) -> dict[str, Any]:
    window = draw(st.floats(WINDOW_SECONDS_MIN, WINDOW_SECONDS_MAX))
    return {
        "listen": "127.0.0.1:0",
        "window_seconds": window,
        "sliding_windows": draw(st.integers(1, 600)),
        "confidence_level": draw(st.floats(0.5, CONFIDENCE_LEVEL_MAX, exclude_min=True)),
        "stall_timeout_seconds": window * draw(st.floats(1.0, 100.0)),
    }


def valid_configs(max_links: int = 4, max_optional: int | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Config documents that check-config accepts: 1..max_links links of any simulated driver,
    each with up to ``max_optional`` of its optional fields set (None: any of them)."""
    link = st.fixed_dictionaries({"name": _names, "driver": _driver(max_optional)},
                                 optional={"site_a": _names, "site_b": _names})
    return st.fixed_dictionaries({"links": st.lists(link, min_size=1, max_size=max_links,
                                                    unique_by=lambda l: l["name"])},
                                 optional={"exporter": _exporter()})


def config_text(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False)


# -- hostile documents: a valid one with some values, keys or structure broken ----------------

class Raw(str):
    """YAML text put into a document verbatim (tags, dates, huge numbers, anchors)."""


HOSTILE = st.sampled_from([
    Raw("2001-13-45"), Raw("2001-01-01"), Raw("9" * 5000), Raw("-" + "9" * 4301), Raw(".inf"), Raw("-.inf"),
    Raw(".nan"), Raw("1e999"), Raw("1.0e+999"), Raw("-1"), Raw("1e300"), Raw("0x1F"), Raw("0o17"), Raw("1_000"),
    Raw("!!binary aGVsbG8="), Raw("!!binary '%%%'"), Raw("!!timestamp x"), Raw("!!int x"), Raw("!!float y"),
    Raw("!!bool maybe"), Raw("!!python/object/apply:os.system [echo]"), Raw("!!set {a, b}"), Raw("!!omap [a: 1]"),
    Raw("!!str"), Raw("~"), Raw("yes"), Raw("&a [*a]"), Raw("*undefined"), Raw("{<<: 5}"), Raw("{? [1]: 2}"),
    Raw("[" * 500 + "]" * 500), Raw("0.9999999999999999"), Raw("0.05"), Raw("3600.0001"), Raw(str(2**63)),
    Raw('"\\ud800"'), Raw('"a\\nlevel=ERROR"'), Raw('"\\0"'), Raw("'" + "x" * 10000 + "'"),
    Raw("/dev/zero"), Raw("/proc/self/status"), Raw("."), Raw("/"), Raw("'$2$04$" + "a" * 53 + "'"),
])
#: Every field name of the schema: added keys hit real fields (file paths, web, otlp) as often as typos.
FIELD_NAMES = sorted({name for model in (Config, ExporterConfig, WebConfig, OtlpConfig, LinkConfig, FaultConfig,
                                         *DRIVER_CONFIGS) for name in model.model_fields})
VALUES = st.recursive(
    HOSTILE | st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _render(value: Any) -> str:
    """Flow-style YAML; strings as JSON strings (valid YAML), Raw as is."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_render(k)}: {_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") if math.isinf(value) else repr(value)
    return json.dumps(value)


def _containers(value: Any, found: list[Any]) -> list[Any]:
    if isinstance(value, (dict, list)):
        found.append(value)
        for child in value.values() if isinstance(value, dict) else value:
            _containers(child, found)
    return found


@st.composite
def hostile_documents(draw: st.DrawFn) -> str:
    document = draw(valid_configs(max_links=2, max_optional=4))
    for _ in range(draw(st.integers(1, 4))):
        container = draw(st.sampled_from(_containers(document, [])))
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        action = draw(st.sampled_from(["replace", "delete", "add"] if keys else ["add"]))
        if action == "add":
            if isinstance(container, dict):
                container[draw(st.text(max_size=10) | st.sampled_from([*FIELD_NAMES, "colour", "<<"]))] = draw(VALUES)
            else:
                container.append(draw(VALUES))
        elif action == "delete":
            del container[draw(st.sampled_from(keys))]
        else:
            container[draw(st.sampled_from(keys))] = draw(VALUES)
    return _render(document)


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    """Valid config text with characters inserted, deleted or replaced."""
    text = config_text(draw(valid_configs(max_links=2, max_optional=4)))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#%@`,? \t\n") + ["\x00", "\ud800", "é"]) |
                             st.characters(), max_size=4))
        text = text[:at] + piece + text[at + draw(st.integers(0, 3)):]
    return text


# -- the properties ------------------------------------------------------------------------------

def check_config(data: bytes) -> tuple[int, str]:
    """``qtelemetry check-config``'s handler in-process on a file holding ``data``: exit code and stderr
    (argparse is left out: it would cost more than the check)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "fuzz.yaml")
        path.write_bytes(data)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cmd_check_config(argparse.Namespace(file=str(path), web_config_file=None))
        problems = err.getvalue()
    assert code in (0, 2), problems
    assert "Traceback" not in problems
    for line in problems.splitlines():  # "<file>: <field or line>: <reason>", or a caret line under it
        assert line.startswith((f"{path}: ", "    ")), line
    assert code == 0 or problems, "exit 2 without saying why"
    return code, problems


@settings(FUZZ, max_examples=STRUCTURED)
@given(hostile_documents())
def test_hostile_documents_get_field_named_errors(text):
    check_config(text.encode("utf-8", "surrogatepass"))


@settings(FUZZ, max_examples=TEXT)
@given(mutated_text() | st.text())
def test_arbitrary_text_gets_a_clean_answer(text):
    check_config(text.encode("utf-8", "surrogatepass"))


@settings(FUZZ, max_examples=BYTES)
@given(st.binary() | mutated_text().map(lambda t: t.encode("utf-16", "surrogatepass")) |
       st.tuples(mutated_text(), st.binary(max_size=4)).map(lambda p: p[0].encode("utf-8", "replace") + p[1]))
def test_arbitrary_bytes_get_a_clean_answer(data):
    check_config(data)


PURE_PYTHON = config_loader(yaml.SafeLoader)


@settings(FUZZ, max_examples=300)
@given(hostile_documents() | mutated_text())
def test_pure_python_loader_fallback_fails_cleanly_too(text):
    """Without libyaml the loader falls back to PyYAML's Python parser; it too only raises ConfigError."""
    try:
        load_yaml(text, "fuzz.yaml", PURE_PYTHON)
    except ConfigError:
        pass


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(FUZZ, max_examples=100)
@given(valid_configs())
def test_valid_configs_are_accepted_and_run_a_window(document):
    """Whatever check-config accepts runs: every link samples, passes the checks and is estimated
    in its first window (faults of any magnitude included; the strategy draws only accepted configs),
    without a NumPy warning on the way: an overflow or 0/0 that validation let through is a bug
    (found so: a 1.8e306 s coincidence window, a warm-up without decoy pulses)."""
    config = parse_config(config_text(document))
    runtime = Runtime(config)
    snapshot = runtime.cycle(now=runtime.started + config.exporter.window_seconds)
    assert snapshot.errors.sum() == 0, dict(zip(snapshot.table.reasons, snapshot.errors.sum(axis=0)))
    assert snapshot.batches.tolist() == [1] * len(config.links)

