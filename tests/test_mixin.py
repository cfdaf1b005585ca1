"""mixin/ is a configurable monitoring mixin (monitoring-mixins conventions): evaluated with the
jsonnet package's real evaluator, its defaults give exactly the committed rules and dashboards,
and a ``_config`` override gives exactly what the Python generator makes from the same settings
in a monitoring config: every selector, cluster label, link and threshold moves."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from qtelemetry.monitoring import dashboards, generate, mixin
from qtelemetry.monitoring.config import DEFAULT, MonitoringConfig
from qtelemetry.monitoring.promql import GenerationError, names, sample_names
from qtelemetry.monitoring.rules import num, pct

ROOT = Path(__file__).resolve().parents[1]
MIXIN = ROOT / "mixin"
EVERYTHING = "{alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards}"
#: The same settings, once as a monitoring config (YAML path) and once as a Jsonnet _config override.
OVERRIDES = {
    "selector": 'job="quantum", env="prod"',
    "cluster_label": "region",
    "site_label": "pop",
    "runbook_url_pattern": "https://runbooks.example.org/qkd/%s.html",
    "grafana_url": "https://grafana.example.org",
    "thresholds": {"qber_warning": 0.0412345, "qber_critical": 0.0712, "fidelity_min": 0.875,
                   "connections_ratio": 0.75, "stale_after_seconds": 90.5,
                   "key_buffer_imminent": {"lookback": "45m", "horizon": "90s", "fill_ratio": 0.125}},
}
JSONNET_OVERRIDES = """_config+:: {
  selector: 'job="quantum", env="prod"', clusterLabel: 'region', siteLabel: 'pop',
  grafanaURL: 'https://grafana.example.org',
  runbookURLPattern: 'https://runbooks.example.org/qkd/%s.html',
  thresholds+: { qberWarning: 0.0412345, qberCritical: 0.0712, fidelityMin: 0.875, connectionsRatio: 0.75,
                 staleAfterSeconds: 90.5, keyBufferImminent: { lookback: '45m', horizon: '90s', fillRatio: 0.125 } },
}"""


def evaluate(snippet: str, jpathdir: Path = MIXIN) -> dict:
    try:
        import _jsonnet  # the jsonnet package (test extra)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI is set but the jsonnet package is missing: pip install -e '.[test]'", pytrace=False)
        pytest.skip("the jsonnet package is missing: pip install -e '.[test]'")
    return json.loads(_jsonnet.evaluate_snippet("test.jsonnet", snippet, jpathdir=str(jpathdir)))


def committed() -> dict:
    groups = yaml.safe_load((ROOT / "alerts" / "qtelemetry.rules.yaml").read_text())["groups"]
    boards = {p.name: json.loads(p.read_text()) for p in (ROOT / "dashboards").glob("*.json")}
    return mixin.documents({"groups": groups}, boards)


def test_mixin_evaluates_to_the_generated_rules_and_dashboards():
    evaluated = evaluate(f"local m = import 'mixin.libsonnet'; {EVERYTHING}")
    assert evaluated == committed()
    assert all("record" in r for g in evaluated["rules"]["groups"] for r in g["rules"])
    assert all("alert" in r for g in evaluated["alerts"]["groups"] for r in g["rules"])


@pytest.fixture(scope="module")
def generated() -> generate.Output:
    """What ``qtelemetry generate --config`` writes for the same settings as OVERRIDES."""
    return generate.render(MonitoringConfig.model_validate(OVERRIDES))


@pytest.fixture(scope="module")
def overridden(generated) -> tuple[dict, dict]:
    """(the committed mixin with the _config override, the Python generator's files for the same settings)."""
    evaluated = evaluate(f"local m = (import 'mixin.libsonnet') + {{ {JSONNET_OVERRIDES} }}; {EVERYTHING}")
    groups = yaml.safe_load(generated.files[generate.RULE_FILE])["groups"]
    boards = {rel.removeprefix("dashboards/"): json.loads(text) for rel, text in generated.files.items()
              if rel.startswith("dashboards/")}
    return evaluated, mixin.documents({"groups": groups}, boards)


def test_a_config_override_gives_what_the_python_generator_gives(overridden):
    evaluated, python = overridden
    for name in ("alerts", "rules", "dashboards"):
        assert evaluated[name] == python[name], name


def test_a_monitoring_config_generates_a_mixin_with_its_values_as_defaults(tmp_path, generated, overridden):
    """``qtelemetry generate --config`` writes a mixin whose _config holds that config's settings."""
    for rel, text in generated.files.items():
        if rel.startswith("mixin/"):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(text)
    evaluated = evaluate("local m = import 'mixin.libsonnet'; {config: m._config, alerts: m.prometheusAlerts}",
                         tmp_path / "mixin")
    assert evaluated["alerts"] == overridden[1]["alerts"]  # the rest follows from _config, as the override test shows
    assert evaluated["config"] == evaluate(f"((import 'mixin.libsonnet') + {{ {JSONNET_OVERRIDES} }})._config")


def expressions(documents: dict) -> list[tuple[str, str]]:
    exprs = [(r.get("alert") or r["record"], r["expr"])
             for part in ("alerts", "rules") for g in documents[part]["groups"] for r in g["rules"]]
    for name, board in documents["dashboards"].items():
        exprs += [(f"{name}: {title}", expr) for title, _, expr in dashboards.panel_targets(board)]
        exprs += [(f"{name}: variable", v["query"]) for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def selected(expr: str) -> list:
    """The selectors of the exporter's series (and ``up``) in ``expr``: each must carry the selector."""
    tokens = [t for t in names(expr) if t.name in set(sample_names()) | {"up"}]
    assert all(t.brace is not None for t in tokens), f"a series without a selector: {expr}"
    return tokens


def test_overriding_the_selector_and_runbook_pattern_moves_every_selector_and_link(overridden):
    evaluated, _ = overridden
    for where, expr in expressions(evaluated):
        for token in selected(expr):
            assert expr[token.brace:].startswith('{job="quantum", env="prod"'), f"{where}: {expr}"
        assert not re.search(r"\bcluster\b", expr), f"{where}: the cluster label is still 'cluster': {expr}"
    count = lambda documents: sum(len(selected(expr)) for _, expr in expressions(documents))  # noqa: E731
    assert count(evaluated) == count(committed()) > 300
    text = json.dumps(evaluated)
    assert 'job=\\"qtelemetry\\"' not in text and "alerts/runbooks.md" not in text
    for group in evaluated["alerts"]["groups"]:
        for rule in group["rules"]:
            notes = rule["annotations"]
            assert notes["runbook_url"] == f"https://runbooks.example.org/qkd/{rule['alert'].lower()}.html"
            assert notes["dashboard_url"].startswith("https://grafana.example.org/d/qtelemetry-")
            assert "var-region=" in notes["dashboard_url"]
    for board in evaluated["dashboards"].values():
        assert [v["name"] for v in board["templating"]["list"]][1:3] == ["region", "job"]


def test_thresholds_move_in_expressions_texts_and_threshold_lines(overridden):
    evaluated, _ = overridden
    alerts = {r["alert"]: r for g in evaluated["alerts"]["groups"] for r in g["rules"]}
    assert "qkd_qber_upper_bound_ratio{" in alerts["QKDQberHigh"]["expr"] and "> 0.0412345" in alerts["QKDQberHigh"]["expr"]
    assert "above the 4.12345% warning threshold" in alerts["QKDQberHigh"]["annotations"]["description"]
    assert "about 6.25% QBER per basis" in alerts["QEntFidelityLow"]["annotations"]["description"]
    assert "predict_linear(qkd_key_buffer_bits{" in alerts["QKDKeyBufferExhaustionImminent"]["expr"]
    assert "[45m], 90) <= 0" in alerts["QKDKeyBufferExhaustionImminent"]["expr"]
    assert "runs dry within 90s" in alerts["QKDKeyBufferExhaustionImminent"]["annotations"]["summary"]
    link = evaluated["dashboards"]["qtelemetry-bb84-decoy.json"]
    qber = next(p for p in dashboards.iter_panels(link) if p["title"] == "QBER with its upper confidence bound")
    assert [s["value"] for s in qber["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 0.0412345, 0.0712, 0.11]


def test_the_params_print_numbers_as_the_python_generator_does():
    """Jsonnet's own %g counts decimals below 1, so lib/params.libsonnet formats by arithmetic:
    checked against Python's '%.10g' on thresholds people write and on awkward values."""
    values = [0.05, 0.0412345, 0.1, 0.3, 0.999, 1, 3, 14.4, 60, 90.5, 100, 1e-7, 3.5e-5, 0.0001, 9.99999e-5,
              123456789, 1234567890, 98765432101, 1e15, 0.1 + 0.2, 1 / 3, 2 / 3, 0.07, 0.00123456789, 7.125e-3]
    ratios = [v for v in values if v <= 1]
    snippet = ("local params = import 'lib/params.libsonnet';"
               "local config = (import 'config.libsonnet')._config;"
               "local printed(field, v) = params(config + {thresholds+: {[field]: v}});"
               f"[printed('estimationStallSeconds', v).estimationStallSeconds for v in {json.dumps(values)}]"
               f" + [printed('connectionsRatio', v).connectionsRatioPct for v in {json.dumps(ratios)}]")
    assert evaluate(snippet) == [num(v) for v in values] + [pct(v) for v in ratios]


def test_a_bad_override_names_the_field():
    with pytest.raises(RuntimeError, match="thresholds.qberWarning: must be a number > 0 and < 0.5"):
        evaluate("((import 'mixin.libsonnet') + {_config+:: {thresholds+: {qberWarning: 0.7}}})._config.selector")
    with pytest.raises(RuntimeError, match="runbookURLPattern: needs exactly one %s"):
        evaluate("((import 'mixin.libsonnet') + {_config+:: {runbookURLPattern: 'https://x/'}})._config.selector")
    assert evaluate("(import 'mixin.libsonnet')._config.thresholds.qberWarning") == 0.05


def test_a_setting_the_mixin_cannot_express_is_a_generation_error(monkeypatch):
    """The fidelity threshold also shows as the QBER it allows, (1 - F)/2. Without that rendering
    the mixin would freeze the text at today's value; generation refuses instead, naming where."""
    monkeypatch.setattr(mixin, "DERIVED", {})
    mixin.settings.cache_clear()
    try:
        with pytest.raises(GenerationError, match=r"QEntFidelityLow.*depends on a setting in a way the mixin cannot"):
            generate.render(DEFAULT)
    finally:
        mixin.settings.cache_clear()  # the renderings come back when monkeypatch restores DERIVED


def test_mixin_fields_are_hidden_and_compose_with_overrides():
    """Hidden (``::``) like every mixin's, so rendering the object alone shows nothing, and ``+::``
    lets a user add groups or change a rule without copying the mixin."""
    assert evaluate("import 'mixin.libsonnet'") == {}
    composed = evaluate("""
        local m = (import 'mixin.libsonnet') + {
          prometheusAlerts+:: { groups+: [{ name: 'site-extra', rules: [] }] },
        };
        [g.name for g in m.prometheusAlerts.groups]
    """)
    assert composed[-1] == "site-extra" and "qtelemetry-links" in composed
