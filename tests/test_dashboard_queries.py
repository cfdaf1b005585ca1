"""Every panel query of every generated dashboard runs against a real Prometheus and returns data.

No Grafana server can run here, so the dashboards are proven the way Grafana would use them: a
real Prometheus 2.42 scrapes the demo exporter (every link kind it ships) with the generated
rule files of ``alerts/`` loaded, the dashboard's template variables are resolved the way
Grafana resolves them (``label_values(...)`` against Prometheus), and each ``targets[].expr``
is sent to the HTTP query API. A query error fails at once; an empty result fails too. Each
failure names the dashboard, the panel title, the refId, the link and the query.

Template variables: ``$link`` is tried with every value of the dashboard's ``link`` variable
and a panel query passes if it returns data for at least one of them (a dashboard may hold
panels for several link kinds, and Grafana shows "No data" for the others). Other query
variables take their first value; ``$__rate_interval`` is ``1m`` (what Grafana computes for a
Prometheus data source with the default 15 s scrape interval), ``$__interval`` ``15s``,
``$__range`` the dashboard's time range. When ``qtelemetry.monitoring.dashboards.panel_queries``
exists it does the extraction and substitution instead of the fallback below.

Long windows, and what is honestly checked on a Prometheus that is seconds old:

- Plain range selectors, however long (``rate(x[1d])``, ``avg_over_time(x[3d])``), are *not*
  rewritten: a range selector uses whatever samples it holds, so they return data after two
  scrapes, and we wait for that (and for every rule to have been evaluated, with no rule in
  error) before querying.
- What is empty for a real reason on a fresh server is time-shifted data: ``offset 1d``, and
  subqueries with a step (``[1d:5m]``), whose evaluation points align to multiples of the step
  and so may all lie before the first sample. Only if a query is empty are these rewritten:
  offsets dropped, subqueries turned into ``[5m:1s]``. The rewritten query must return data.
  This keeps the check real: metric names, label matchers, the functions and the joins are
  exactly the panel's; only the time parameters differ.
- A recording rule whose own expression has such time shifts is recorded empty at first, and
  so is every panel that reads it. For each such rule (and, transitively, rules reading it) a
  shadow rule ``shortwin:<name>`` with the same rewrite is loaded next to the generated rules;
  the rewritten panel query reads the shadow instead, so the panel query, the rule's expression
  and the data all take part. Queries checked this way are listed in the test output.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml
from conftest import RunningExporter
from realstack import PromQLError, Stack, poll, register_log_plugin, start_stack

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "dashboards"
RULES_DIR = ROOT / "alerts"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))

pytestmark = pytest.mark.skipif(
    not DASHBOARDS, reason="dashboards/ has no *.json yet: they come from `qtelemetry generate` (issue 5)"
)

# (dashboard file name, panel title) -> why an empty result is correct there. Keep it empty
# unless a panel is *meant* to be empty on the healthy demo, and say why.
EXPECTED_EMPTY: dict[tuple[str, str], str] = {}

RATE_INTERVAL = "1m"
INTERVAL = "15s"

DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
OFFSET = re.compile(rf"\s+offset\s+-?{DURATION}")
SUBQUERY = re.compile(rf"\[\s*{DURATION}\s*:\s*(?:{DURATION})?\s*\]")
METRIC_CHARS = r"[A-Za-z0-9_:]"


# ----------------------------------------------------------------------------------------------
# panel queries: the helper from qtelemetry.monitoring.dashboards if present, else our own
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str


def iter_panels(panels: Iterable[dict]) -> Iterable[dict]:
    """Panels in display order, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def fallback_panel_queries(dashboard: dict, variables: dict[str, str]) -> list[PanelQuery]:
    """Every ``targets[].expr`` of every panel, template variables substituted."""
    found = []
    for panel in iter_panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                found.append(PanelQuery(panel.get("title") or f"panel id {panel.get('id')}",
                                        target.get("refId", "?"), substitute(target["expr"], variables)))
    return found


def project_panel_queries(dashboard: dict, link: str | None, variables: dict[str, str]) -> list[PanelQuery]:
    try:
        from qtelemetry.monitoring.dashboards import panel_queries
    except ImportError:
        return fallback_panel_queries(dashboard, variables)
    result = panel_queries(dashboard, link=link) if link is not None else panel_queries(dashboard)
    return [_as_panel_query(item) for item in result]


def _as_panel_query(item: Any) -> PanelQuery:
    """Accept the shapes a ``panel_queries`` helper plausibly returns: objects, dicts, tuples."""
    if isinstance(item, PanelQuery):
        return item
    if isinstance(item, dict):
        return PanelQuery(str(item.get("title") or item.get("panel")),
                          str(item.get("refId") or item.get("ref_id") or "?"), item.get("expr") or item["query"])
    if isinstance(item, (tuple, list)):
        return PanelQuery(str(item[0]), str(item[1]) if len(item) > 2 else "?", item[-1])
    return PanelQuery(str(getattr(item, "title", None) or getattr(item, "panel")),
                      str(getattr(item, "ref_id", None) or getattr(item, "refId", "?")), getattr(item, "expr"))


VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


# What is left of a Grafana variable after substitution ("$1" in label_replace is PromQL's own).
LEFTOVER_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\[\[\w+\]\]|\$[A-Za-z_]\w*")


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]``; unknown names stay (and then fail)."""
    def repl(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return variables.get(name, match.group(0))

    return VARIABLE.sub(repl, expr)


def builtin_variables(dashboard: dict) -> dict[str, str]:
    time_from = str((dashboard.get("time") or {}).get("from", "now-6h"))
    match = re.fullmatch(r"now-(\d+)([smhdwy])", time_from)
    range_text = f"{match.group(1)}{match.group(2)}" if match else "6h"
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    seconds = int(match.group(1)) * unit[match.group(2)] if match else 21600
    return {
        "__rate_interval": RATE_INTERVAL,
        "__interval": INTERVAL,
        "__interval_ms": str(int(INTERVAL[:-1]) * 1000),
        "__range": range_text,
        "__range_s": str(seconds),
        "__range_ms": str(seconds * 1000),
        "datasource": "prometheus",
        "DS_PROMETHEUS": "prometheus",
    }


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$", re.S)


def variable_values(stack: Stack, dashboard_name: str, var: dict, known: dict[str, str]) -> list[str]:
    """The values Grafana would offer for one templating variable."""
    kind = var.get("type")
    query = var.get("query")
    if isinstance(query, dict):
        query = query.get("query", "")
    if kind == "query":
        match = LABEL_VALUES.match(substitute(str(query or ""), known))
        assert match, f"{dashboard_name}: variable ${var['name']}: unsupported query {query!r} (expected label_values)"
        selector, label = match.groups()
        params = {"match[]": selector} if selector else None
        values = stack.prometheus.api(f"label/{label}/values", params)
        regex = var.get("regex")
        if regex:
            pattern = re.compile(regex.strip("/"))
            values = [v for v in values if pattern.search(v)]
        return sorted(values)
    if kind == "custom":
        options = [o.get("value") for o in var.get("options") or [] if o.get("value") not in (None, "$__all")]
        return options or [v.strip() for v in str(query or "").split(",") if v.strip()]
    if kind in ("constant", "textbox"):
        return [str(query or (var.get("current") or {}).get("value", ""))]
    if kind == "interval":
        return [v.strip() for v in str(query or "").split(",") if v.strip()][:1] or [INTERVAL]
    if kind == "datasource":
        return ["prometheus"]
    return []


def resolve_variables(stack: Stack, dashboard_name: str, dashboard: dict) -> tuple[dict[str, str], list[str]]:
    """(first value of every variable, all values of ``link``); a variable without values fails."""
    known = builtin_variables(dashboard)
    links: list[str] = []
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") == "adhoc":
            continue
        values = variable_values(stack, dashboard_name, var, known)
        assert values, (f"{dashboard_name}: template variable ${var['name']} has no values "
                        f"(query {var.get('query')!r}) against the demo exporter")
        known[var["name"]] = values[0]
        if var["name"] == "link":
            links = values
    return known, links


# ----------------------------------------------------------------------------------------------
# rules and the short-window rewrite
# ----------------------------------------------------------------------------------------------


def generated_rule_files() -> list[Path]:
    """Rule files under alerts/ (YAML with ``groups``; promtool test files are skipped)."""
    files = []
    for path in sorted([*RULES_DIR.glob("*.yaml"), *RULES_DIR.glob("*.yml")]):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "groups" in data:
            files.append(path)
    return files


def shorten(expr: str) -> str:
    """Drop offsets, turn step subqueries into [5m:1s]: the only parts that are empty on a fresh server."""
    return SUBQUERY.sub("[5m:1s]", OFFSET.sub("", expr))


def rename(expr: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        expr = re.sub(rf"(?<!{METRIC_CHARS}){re.escape(old)}(?!{METRIC_CHARS})", new, expr)
    return expr


def shadow_rules(rule_files: list[Path]) -> tuple[dict[str, str], list[dict]]:
    """``{record: shadow name}`` and shadow recording rules for time-shifted recording rules."""
    recording = [rule for path in rule_files for group in yaml.safe_load(path.read_text())["groups"]
                 for rule in group.get("rules", []) if "record" in rule]
    shadows: dict[str, str] = {}
    changed = True
    while changed:  # a rule reading a shadowed rule is shadowed too
        changed = False
        for rule in recording:
            name = rule["record"]
            expr = rule["expr"]
            if name not in shadows and (shorten(expr) != expr or rename(expr, shadows) != expr):
                shadows[name] = f"shortwin:{name}"
                changed = True
    rules = []
    for rule in recording:
        if rule["record"] in shadows:
            shadow = {"record": shadows[rule["record"]], "expr": rename(shorten(rule["expr"]), shadows)}
            if rule.get("labels"):
                shadow["labels"] = rule["labels"]
            rules.append(shadow)
    return shadows, rules


# ----------------------------------------------------------------------------------------------
# the stack, once for the module
# ----------------------------------------------------------------------------------------------


@dataclass
class Env:
    stack: Stack
    shadows: dict[str, str]
    data_deadline: float  # time.monotonic() until which an empty query is polled again


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    register_log_plugin(request.config)
    tmp = tmp_path_factory.mktemp("dashboards")
    rule_files = generated_rule_files()
    shadows, shadow_list = shadow_rules(rule_files)
    if shadow_list:
        shadow_file = tmp / "shortwin.rules.yml"
        groups = {"groups": [{"name": "shortwin", "rules": shadow_list}]}
        shadow_file.write_text(yaml.safe_dump(groups, sort_keys=False))
        rule_files.append(shadow_file)
    exporter = RunningExporter(["run", "--listen", "127.0.0.1:0"], tmp / "exporter.log")
    stack = None
    try:
        stack = start_stack(tmp / "stack", exporter.url, rule_files, alerting=False)
        prom = stack.prometheus
        prom.wait_for_target_up(timeout=30)
        # Enough samples for rate()/increase() over any window, then one more rule evaluation.
        prom.wait_for_query('count_over_time(up{job="qtelemetry"}[1h]) >= 3', timeout=15)
        prom.wait_for_rule_evaluations(timeout=15, after=time.time())
        yield Env(stack, shadows, time.monotonic() + 15)
    finally:
        if stack is not None:
            stack.stop()
        exporter.stop()


# ----------------------------------------------------------------------------------------------
# the test
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_query_returns_data(env: Env, path: Path) -> None:
    prom = env.stack.prometheus
    dashboard = json.loads(path.read_text())
    variables, links = resolve_variables(env.stack, path.name, dashboard)

    # (panel, refId) -> results per link value; the query text differs only in $link.
    queries: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
    for link in links or [None]:
        values = dict(variables, **({"link": link} if link else {}))
        for q in project_panel_queries(dashboard, link, values):
            queries.setdefault((q.panel, q.ref_id), []).append((link, q.expr))
    assert queries, f"{path.name}: no panel queries found"

    errors: list[str] = []
    for (panel, ref_id), variants in list(queries.items()):
        leftover = LEFTOVER_VARIABLE.search(variants[0][1])
        if leftover:
            errors.append(f"{path.name} / panel {panel!r} / {ref_id}: undefined template variable "
                          f"{leftover.group(0)}\n    {variants[0][1]}")
            del queries[(panel, ref_id)]
    empty: list[tuple[str, str, list[tuple[str | None, str]]]] = []
    report: list[str] = []
    for (panel, ref_id), variants in queries.items():
        seen_data = False
        for link, expr in variants:
            try:
                result = prom.query(expr)
            except PromQLError as exc:
                errors.append(f"{path.name} / panel {panel!r} / {ref_id} (link={link}): query error "
                              f"{exc.error_type}: {exc.error}\n    {expr}")
                break
            if result:
                seen_data = True
                report.append(f"  ok      {panel} / {ref_id}: {len(result)} series (link={link})")
                break
        else:
            if not seen_data:
                empty.append((panel, ref_id, variants))

    # Empty now. A query only time shifts keep empty is checked rewritten at short windows at
    # once; any other is polled until the module's data deadline (data keeps arriving).
    still_empty = []
    for panel, ref_id, variants in empty:
        rewritten = [(link, rename(shorten(expr), env.shadows)) for link, expr in variants]
        shifted = any(new != old for (_, new), (_, old) in zip(rewritten, variants))
        candidates = rewritten if shifted else variants

        def first_with_data() -> tuple[str | None, str] | None:
            return next(((link, expr) for link, expr in candidates if prom.query(expr)), None)

        try:
            hit = poll(first_with_data, max(0.0, env.data_deadline - time.monotonic()), "data", interval=0.5)
        except PromQLError as exc:
            errors.append(f"{path.name} / panel {panel!r} / {ref_id}: short-window rewrite fails: {exc.error}\n"
                          f"    {candidates[0][1]}")
            continue
        except AssertionError:
            hit = None
        if hit and shifted:
            report.append(f"  shortwin {panel} / {ref_id}: empty as written on a fresh Prometheus (time shift), "
                          f"data at short windows (link={hit[0]}): {hit[1]}")
            continue
        if hit:
            report.append(f"  ok      {panel} / {ref_id}: data after waiting (link={hit[0]})")
            continue
        reason = EXPECTED_EMPTY.get((path.name, panel))
        if reason:
            report.append(f"  empty   {panel} / {ref_id}: expected ({reason})")
            continue
        still_empty.append(f"{path.name} / panel {panel!r} / {ref_id}: empty result for every link "
                           f"{[link for link, _ in variants]}\n    {variants[0][1]}")

    total = len(queries) + len([e for e in errors if "undefined template variable" in e])
    print(f"{path.name}: {total} panel queries, links {links}\n" + "\n".join(report))
    problems = errors + still_empty
    assert not problems, f"{len(problems)} of {total} panel queries failed:\n" + "\n".join(problems)


def test_query_helpers_understand_grafana_syntax() -> None:
    """The fallback substitution and the short-window rewrite, on their own."""
    variables = {"link": "metro-10km", "__rate_interval": "1m"}
    assert substitute('rate(x{link=~"$link"}[$__rate_interval])', variables) == 'rate(x{link=~"metro-10km"}[1m])'
    assert substitute('x{link="${link:regex}"} + y{l="[[link]]"} + $unknown', variables) == \
        'x{link="metro-10km"} + y{l="metro-10km"} + $unknown'
    assert shorten("max_over_time(a:b[1d:5m]) - a:b offset 1d + rate(c[1d])") == \
        "max_over_time(a:b[5m:1s]) - a:b + rate(c[1d])"
    assert not LEFTOVER_VARIABLE.search('label_replace(x, "a", "$1", "b", "(.*)")')
    assert LEFTOVER_VARIABLE.search('x{site="$site"}').group(0) == "$site"
    assert rename("a:b + a:bc + x_a:b + a:b{l='1'}", {"a:b": "shortwin:a:b"}) == \
        "shortwin:a:b + a:bc + x_a:b + shortwin:a:b{l='1'}"
