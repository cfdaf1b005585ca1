"""mixin/ is a monitoring mixin (monitoring-mixins conventions) that evaluates, with the jsonnet
package's real evaluator, to exactly the committed rules and dashboards, and composes like one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MIXIN = ROOT / "mixin"


def evaluate(snippet: str) -> dict:
    try:
        import _jsonnet  # the jsonnet package (test extra)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI is set but the jsonnet package is missing: pip install -e '.[test]'", pytrace=False)
        pytest.skip("the jsonnet package is missing: pip install -e '.[test]'")
    return json.loads(_jsonnet.evaluate_snippet("test.jsonnet", snippet, jpathdir=str(MIXIN)))


def test_mixin_evaluates_to_the_generated_rules_and_dashboards():
    mixin = evaluate("local m = import 'mixin.libsonnet';"
                     "{alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards}")
    groups = yaml.safe_load((ROOT / "alerts" / "qtelemetry.rules.yaml").read_text())["groups"]
    alerting = [g for g in groups if any("alert" in r for r in g["rules"])]
    assert mixin["alerts"] == {"groups": alerting}
    assert mixin["rules"] == {"groups": [g for g in groups if g not in alerting]}
    assert all("record" in r for g in mixin["rules"]["groups"] for r in g["rules"])
    dashboards = {p.name: json.loads(p.read_text()) for p in (ROOT / "dashboards").glob("*.json")}
    assert mixin["dashboards"] == dashboards


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
