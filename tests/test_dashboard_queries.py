"""Every panel query of every generated dashboard runs against a real Prometheus and returns data,
for every cluster and every link its variables offer.

No Grafana server can run here, so the dashboards are proven the way Grafana would use them: a
real Prometheus 2.42 scrapes two demo exporters (every link kind the embedded demo ships, plus an
ETSI 014 and an ETSI 015 link watching a ``qtelemetry simulate`` device process) as two clusters,
``east`` and ``west`` (target labels, as relabelling would set them; the same link names in
both, the case where rules and dashboards must not merge links), with the generated rule files
of ``alerts/`` loaded. The dashboard's template variables are resolved the way Grafana resolves
them (``label_values(...)`` against Prometheus): the cluster variable and the link variable are
iterated over each of their values, the other multi-value variables take their "All" value
(``.*``), single-value ones their first value. Each ``targets[].expr`` is sent to the HTTP
query API for every combination; a query error fails at once, and a panel query must return
data for every combination (every link a drill-down offers is of that drill-down's kind). Each
failure names the dashboard, the panel title, the refId, the cluster, the link and the query.

Other variables: ``$__rate_interval`` is ``1m`` (what Grafana computes for a Prometheus data
source with the default 15 s scrape interval), ``$__range`` the dashboard's time range.
Extraction and substitution are the project's own
``qtelemetry.monitoring.dashboards.panel_targets`` / ``panel_queries``; a variable it cannot
substitute fails the panel.

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
- Groups of the generated rule files evaluate every 1m/5m, and a fresh Prometheus first runs
  a group up to one interval after start; the rule files are loaded as copies without the
  groups' ``interval:`` (the harness's 1 s applies), expressions untouched.

Empty by design: a panel may read a metric that has no series on a healthy exporter (active
simulated faults) because its label values only exist once the event happens. Such a query
passes only if every name it reads either has series or is announced by the exporter's
HELP/TYPE metadata (Prometheus's metadata API); a name that is neither (a typo, a metric the
exporter does not export, a recording rule that is not loaded) fails, and a query whose names
all have series but that is still empty fails (label matchers or joins).

The same stack also checks the recording rules' output: every recorded series carries exactly
the cluster label, ``job`` and the labels its name's level says, and no link of one cluster is
merged with the same-named link of the other.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import DeviceProcess, RunningExporter
from devices import device_tls, kme_link, node_link
from qtelemetry.cli import main
from qtelemetry.config import default_config_text
from qtelemetry.monitoring.config import DEFAULT

#: 60 s of a SeQUeNCe BB84 + Cascade link (``qtelemetry record``; the config is in docs/sequence.md)
SEQUENCE_RECORDING = Path(__file__).parent / "data" / "sequence-bb84-cascade.parquet"
from grafana_frames import graph_frames, table_frame, transform
from qtelemetry.monitoring.dashboards import iter_panels, panel_queries, panel_targets
from realstack import (
    PROMETHEUS_BIN,
    PromQLError,
    Stack,
    fast_rule_copies,
    poll,
    register_log_plugin,
    require_binaries,
    start_stack,
)

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
CLUSTER = DEFAULT.cluster_label
CLUSTERS = ("east", "west")
#: variables tried with each of their values; other multi-value ones take "All"
ITERATED = (CLUSTER, "link")

DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
OFFSET = re.compile(rf"\s+offset\s+-?{DURATION}")
SUBQUERY = re.compile(rf"\[\s*{DURATION}\s*:\s*(?:{DURATION})?\s*\]")
METRIC_CHARS = r"[A-Za-z0-9_:]"


# ----------------------------------------------------------------------------------------------
# panel queries, through qtelemetry.monitoring.dashboards (panel_targets / panel_queries)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str | None  # None: the helper could not substitute it (see error)
    error: str = ""


def project_panel_queries(dashboard: dict, link: str | None, variables: dict[str, str]) -> list[PanelQuery]:
    """Every target with its variables substituted by the project's own ``panel_queries``.

    Called one target at a time so that a target the helper rejects (an unknown template
    variable) is reported with its panel instead of hiding the others.
    """
    extra = {k: v for k, v in variables.items() if k not in ("link", "__rate_interval", "__interval")}
    found = []
    for title, ref_id, expr in panel_targets(dashboard):
        one = {"panels": [{"title": title, "targets": [{"refId": ref_id, "expr": expr}]}]}
        try:
            [text] = panel_queries(one, link=link or "", rate_interval=RATE_INTERVAL, **extra)
        except ValueError as exc:
            found.append(PanelQuery(title or "(untitled)", ref_id, None, str(exc)))
            continue
        found.append(PanelQuery(title or "(untitled)", ref_id, text))
    return found


VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


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


def variable_combinations(stack: Stack, dashboard_name: str, dashboard: dict) -> list[dict[str, str]]:
    """Every combination of template-variable values the test tries (see the module docstring);
    a variable without values fails."""
    combos = [builtin_variables(dashboard)]
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") == "adhoc":
            continue
        expanded = []
        for known in combos:
            values = variable_values(stack, dashboard_name, var, known)
            assert values, (f"{dashboard_name}: template variable ${var['name']} has no values "
                            f"(query {var.get('query')!r}) with {describe(known)}")
            if var["name"] in ITERATED:
                choices = values
            elif var.get("includeAll"):
                choices = [var.get("allValue") or ".*"]
            else:
                choices = values[:1]
            expanded += [dict(known, **{var["name"]: value}) for value in choices]
        combos = expanded
    return combos


def describe(variables: dict[str, str]) -> str:
    return ", ".join(f"{name}={variables[name]}" for name in ITERATED if name in variables) or "no variables"


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


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
            "unless", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric (and recording-rule) names a PromQL expression reads; good enough for generated queries."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        if match.group(0) not in KEYWORDS and not text[match.end():].lstrip().startswith("("):
            names.add(match.group(0))
    return names


def family_names(name: str) -> list[str]:
    """Names a sample may be announced under in HELP/TYPE (OpenMetrics drops _total/_info)."""
    return [name] + [name[: -len(suffix)] for suffix in ("_total", "_info") if name.endswith(suffix)]


class SeriesCensus:
    """Which names have series, which the exporter announces (HELP/TYPE) without any series."""

    def __init__(self, stack: Stack, records: dict[str, str]):
        self.prom = stack.prometheus
        self.records = records  # recording rule name -> expression
        self._has: dict[str, bool] = {}
        self._announced: dict[str, bool] = {}

    def has_series(self, name: str) -> bool:
        if name not in self._has:
            self._has[name] = bool(self.prom.query(f'count({{__name__="{name}"}})'))
        return self._has[name]

    def announced(self, name: str) -> bool:
        if name not in self._announced:
            self._announced[name] = any(self.prom.api("metadata", {"metric": f}).get(f) for f in family_names(name))
        return self._announced[name]

    def explain_empty(self, expr: str, seen: frozenset = frozenset()) -> tuple[list[str], list[str]]:
        """(names announced without series, names that are unknown) among what ``expr`` reads.

        A recording rule without series is explained by its own expression (recursively).
        """
        quiet, unknown = [], []
        for name in sorted(metric_names(expr)):
            if self.has_series(name):
                continue
            if name in self.records and name not in seen:
                q, u = self.explain_empty(self.records[name], seen | {name})
                quiet += q
                unknown += u if u or q else [f"{name} (recording rule without series)"]
            elif self.announced(name):
                quiet.append(name)
            else:
                unknown.append(name)
        return quiet, unknown


# ----------------------------------------------------------------------------------------------
# the stack, once for the module
# ----------------------------------------------------------------------------------------------


@dataclass
class Env:
    stack: Stack
    shadows: dict[str, str]
    census: SeriesCensus
    data_deadline: float  # time.monotonic() until which an empty query is polled again
    records: dict[str, dict]  # recording rule name -> rule (as in the rule files)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    register_log_plugin(request.config)
    require_binaries(PROMETHEUS_BIN)
    tmp = tmp_path_factory.mktemp("dashboards")
    rule_files = fast_rule_copies(generated_rule_files(), tmp / "rules")  # 1 s evaluation, see realstack
    shadows, shadow_list = shadow_rules(rule_files)
    if shadow_list:
        shadow_file = tmp / "shortwin.rules.yml"
        groups = {"groups": [{"name": "shortwin", "rules": shadow_list}]}
        shadow_file.write_text(yaml.safe_dump(groups, sort_keys=False))
        rule_files.append(shadow_file)
    exporters: list[RunningExporter] = []
    stack = devices = None
    try:
        devices, config = demo_with_devices(tmp)
        for cluster in CLUSTERS:  # the same demo links in both clusters
            exporters.append(RunningExporter(["run", "--listen", "127.0.0.1:0", "--config", str(config)],
                                             tmp / f"exporter-{cluster}.log"))
        stack = start_stack(tmp / "stack", [(e.url, {CLUSTER: c}) for e, c in zip(exporters, CLUSTERS)],
                            rule_files, alerting=False)
        prom = stack.prometheus
        prom.wait_for_target_up(timeout=30)
        # Enough samples for rate()/increase() over any window, then one more rule evaluation.
        prom.wait_for_query('count(count_over_time(up{job="qtelemetry"}[1h]) >= 3) == 2', timeout=15)
        prom.wait_for_rule_evaluations(timeout=15, after=time.time())
        records = {rule["record"]: rule for path in rule_files
                   for group in yaml.safe_load(path.read_text())["groups"]
                   for rule in group.get("rules", []) if "record" in rule}
        yield Env(stack, shadows, SeriesCensus(stack, {k: r["expr"] for k, r in records.items()}),
                  time.monotonic() + 15, records)
    finally:
        if stack is not None:
            stack.stop()
        for exporter in exporters:
            exporter.stop()
        if devices is not None:
            devices.stop()


def demo_with_devices(tmp: Path) -> tuple[DeviceProcess, Path]:
    """A ``qtelemetry simulate`` process, and an exporter config: the embedded demo plus an etsi014
    and an etsi015 link watching it, and a SeQUeNCe BB84 + Cascade link replayed from a recording
    (every link kind the drill-downs show)."""
    pki = tmp / "pki"
    assert main(["simulate", "--make-pki", str(pki), "--client", "sae-a", "--client", "exporter"]) == 0
    link = {"name": "ab", "site_a": "a", "site_b": "b", "driver": {"type": "simulated-bb84", "fiber_length_km": 10}}
    kme = {"listen": "127.0.0.1:0", "tls": device_tls(pki)}
    sites = {"a": {"kme": {**kme, "sae_ids": ["sae-a"]}, "restconf": kme}, "b": {"kme": {**kme, "sae_ids": ["sae-b"]}}}
    (tmp / "devices.yaml").write_text(yaml.safe_dump({"links": [link], "sites": sites}))
    devices = DeviceProcess(tmp / "devices.yaml", tmp / "devices.log", sites=2)
    urls = devices.urls["a"]
    config = yaml.safe_load(default_config_text())
    config["links"] += [kme_link("kme-a-b", urls["kme"], "sae-b", pki, "sae-a", poll_interval_seconds=1, probe_interval_seconds=1),
                        node_link("node-a-b", urls["restconf"], "ab", pki, "exporter", poll_interval_seconds=1),
                        {"name": "sequence-bb84", "site_a": "lab-a", "site_b": "lab-b",
                         "driver": {"type": "replay", "path": str(SEQUENCE_RECORDING), "loop": True}}]
    listed = {site["name"] for site in config["network"]["sites"]}
    config["network"]["sites"] += [{"name": name} for name in dict.fromkeys(
        end for link in config["links"] for end in (link.get("site_a", "a"), link.get("site_b", "b"))) if name not in listed]
    (tmp / "exporter.yaml").write_text(yaml.safe_dump(config))
    return devices, tmp / "exporter.yaml"


# ----------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_query_returns_data(env: Env, path: Path) -> None:
    prom = env.stack.prometheus
    dashboard = json.loads(path.read_text())
    combos = variable_combinations(env.stack, path.name, dashboard)
    assert {c[CLUSTER] for c in combos} == set(CLUSTERS), f"{path.name}: the cluster variable must offer both clusters"

    # (panel, refId) -> [(combination, query)]; the query text differs only in the variables.
    queries: dict[tuple[str, str], list[tuple[str, str]]] = {}
    errors: list[str] = []
    for values in combos:
        for q in project_panel_queries(dashboard, values.get("link"), values):
            if q.expr is None:
                if (q.panel, q.ref_id) not in queries:
                    errors.append(f"{path.name} / panel {q.panel!r} / {q.ref_id}: {q.error}")
                queries[(q.panel, q.ref_id)] = []
                continue
            queries.setdefault((q.panel, q.ref_id), []).append((describe(values), q.expr))
    total = len(queries)
    queries = {key: variants for key, variants in queries.items() if variants}
    assert total, f"{path.name}: no panel queries found"

    report: list[str] = []
    still_empty: list[str] = []
    for (panel, ref_id), variants in queries.items():
        empty = []
        for where, expr in variants:
            try:
                if not prom.query(expr):
                    empty.append((where, expr))
            except PromQLError as exc:
                errors.append(f"{path.name} / panel {panel!r} / {ref_id} ({where}): query error "
                              f"{exc.error_type}: {exc.error}\n    {expr}")
                break
        else:
            if not empty:
                report.append(f"  ok        {panel} / {ref_id}: data for all {len(variants)} combinations")
                continue
            for where, expr in empty:
                verdict = explain_empty(env, path.name, panel, expr)
                if verdict is None:
                    still_empty.append(f"{path.name} / panel {panel!r} / {ref_id} ({where}): empty result\n    {expr}")
                else:
                    report.append(f"  {verdict} {panel} / {ref_id} ({where})")

    print(f"{path.name}: {total} panel queries over {len(combos)} combinations\n" + "\n".join(report))
    problems = errors + still_empty
    assert not problems, f"{len(problems)} panel queries failed:\n" + "\n".join(problems)


def explain_empty(env: Env, dashboard: str, panel: str, expr: str) -> str | None:
    """Why an empty query is fine (a report line), or None if it is not.

    A query only time shifts keep empty is checked rewritten at short windows; one reading a
    name without series is explained by the metadata (waiting would not help); any other is
    polled until the module's data deadline (data keeps arriving)."""
    prom = env.stack.prometheus
    rewritten = rename(shorten(expr), env.shadows)
    shifted = rewritten != expr
    quiet, unknown = env.census.explain_empty(expr)
    if shifted or not (quiet or unknown):
        try:
            if poll(lambda: prom.query(rewritten), max(0.0, env.data_deadline - time.monotonic()), "data", interval=0.5):
                return f"shortwin   data as rewritten: {rewritten}" if shifted else "ok (late)"
        except AssertionError:
            pass
    reason = EXPECTED_EMPTY.get((dashboard, panel))
    if reason:
        return f"empty      expected ({reason})"
    if quiet and not unknown:
        return f"no-series  reads {', '.join(sorted(set(quiet)))}, announced (HELP/TYPE) without series on the demo"
    return None


def test_recorded_series_keep_cluster_job_and_their_level_labels(env: Env) -> None:
    """Every recording rule, evaluated by Prometheus: its series carry exactly the cluster label,
    job, the labels of its level and its own rule labels; a per-link series exists once per
    cluster for every link (the two clusters' same-named links are never merged)."""
    prom = env.stack.prometheus
    links = {s["metric"]["link"] for s in prom.query('qlink_info{job="qtelemetry"}')}
    problems = []
    for name, rule in env.records.items():
        if name.startswith("shortwin:"):
            continue
        level = name.split(":")[0].split("_")
        expected = {CLUSTER, "job", *level, *(rule.get("labels") or {})}
        series = poll(lambda: prom.query(name), max(1.0, env.data_deadline - time.monotonic()), f"series of {name}",
                      interval=0.5)
        for s in series:
            got = set(s["metric"]) - {"__name__"}
            if got != expected:
                problems.append(f"{name}: labels {sorted(got)}, expected {sorted(expected)}")
        per_link: dict[str, set[str]] = {}
        for s in series:
            per_link.setdefault(s["metric"]["link"], set()).add(s["metric"][CLUSTER])
        assert set(per_link) <= links, name
        problems += [f"{name}: link {link} in clusters {sorted(c)}" for link, c in per_link.items() if c != set(CLUSTERS)]
    assert not problems, "\n".join(problems)


def test_the_map_gets_the_network_layers_frames(env: Env) -> None:
    """The Geomap network layer's two frames, made from the panel's own queries on the real
    Prometheus as Grafana makes them (``grafana_frames``: table frames, the refId-filtered join):
    nodes with ``id`` and the coordinates under the layer's field names, exactly the demo's sites
    that have coordinates; edges with ``id``, ``source``, ``target`` for every link, each edge
    between two drawn sites; the fields the layer's styles name, the colour by key and minimum cut."""
    prom = env.stack.prometheus
    board = json.loads((DASHBOARD_DIR / "qtelemetry-network.json").read_text())
    [panel] = [p for p in iter_panels(board) if p["type"] == "geomap"]
    [layer] = panel["options"]["layers"]
    style, edge_style, location = layer["config"]["style"], layer["config"]["edgeStyle"], layer["location"]
    refs = [t["refId"] for t in panel["targets"]]
    exprs = panel_queries({"panels": [panel]}, rate_interval=RATE_INTERVAL, cluster="east")

    def frames() -> tuple[list, list] | None:
        answers = [table_frame(ref, prom.query(expr), len(refs)) for ref, expr in zip(refs, exprs)]
        nodes, edges = graph_frames(transform(panel["transformations"], answers))
        return (nodes, edges) if nodes and edges and nodes[0].length and edges[0].length else None

    nodes, edges = poll(frames, max(1.0, env.data_deadline - time.monotonic()), "the map's frames", interval=0.5)
    assert len(nodes) == 1 and len(edges) == 1, "the layer draws only the first nodes and the first edges frame"
    sites = {s["name"]: (s["latitude"], s["longitude"])
             for s in yaml.safe_load(default_config_text())["network"]["sites"] if "latitude" in s}
    node_rows = nodes[0].rows()
    assert {r["id"]: (r[location["latitude"]], r[location["longitude"]]) for r in node_rows} == sites
    assert all(r[style["text"]["field"]] == r["id"] and r[style["size"]["field"]] >= 0 for r in node_rows)

    links = {s["metric"]["link"]: (s["metric"]["site_a"], s["metric"]["site_b"])
             for s in prom.query(f'qlink_info{{{CLUSTER}="east"}}')}
    in_cut = {s["metric"]["link"] for s in prom.query(f'qnet_link_min_cut{{{CLUSTER}="east"}}')}
    edge_rows = edges[0].rows()
    assert {r["id"]: (r["source"], r["target"]) for r in edge_rows} == links
    drawn = [r for r in edge_rows if r["source"] in sites and r["target"] in sites]
    assert drawn and in_cut & {r["id"] for r in drawn}, "the demo draws links, some in a minimum cut"
    colours = {m for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == edge_style["color"]["field"]
               for p in o["properties"] if p["id"] == "mappings" for m in p["value"][0]["options"]}
    for r in edge_rows:
        rate = r[edge_style["size"]["field"]]
        assert r[edge_style["text"]["field"]] == rate >= 0
        expected = "red" if rate == 0 else "blue" if r["id"] in in_cut else "green"
        assert r[edge_style["color"]["field"]] == expected and expected in colours, r


def documented_series_per_link() -> dict[str, tuple[range, int]]:
    """The sizing table of docs/operations.md: protocol -> (exported series, recorded series) per link."""
    rows = re.findall(r"^\| [^|]*\(`([a-z0-9-]+)`\) \| (\d+)(?:–(\d+))?[^|]* \| (\d+) \|",
                      (ROOT / "docs" / "operations.md").read_text(), re.M)
    return {protocol: (range(int(low), int(high or low) + 1), int(recorded)) for protocol, low, high, recorded in rows}


def test_documented_series_per_link_are_what_prometheus_holds(env: Env) -> None:
    """docs/operations.md sizes Prometheus by the series of each kind of link: the exporter's (before
    the tamper detectors' warm-up ends) and the recording rules', counted as Prometheus holds them."""
    prom = env.stack.prometheus
    documented = documented_series_per_link()
    protocols = {s["metric"]["link"]: s["metric"]["protocol"] for s in prom.query('qlink_info{job="qtelemetry"}')}
    assert set(documented) <= set(protocols.values()) and len(documented) == 3, documented

    def per_link(selector: str) -> dict[tuple[str, str], int]:
        return {(s["metric"][CLUSTER], s["metric"]["link"]): int(float(s["value"][1]))
                for s in prom.query(f"count by ({CLUSTER}, link) ({selector})")}

    def measured() -> dict[tuple[str, str, str], tuple[int, int]]:
        exported = per_link('{job="qtelemetry", link!="", __name__!~".+:.+"}')
        recorded = per_link('{link!="", __name__=~".+:.+", __name__!~"shortwin:.+"}')
        return {(protocols[link], cluster, link): (n, recorded.get((cluster, link), 0))
                for (cluster, link), n in exported.items() if protocols[link] in documented}

    def agrees() -> bool:
        return all(n in documented[protocol][0] and r == documented[protocol][1]
                   for (protocol, _, _), (n, r) in measured().items())

    poll(agrees, max(1.0, env.data_deadline - time.monotonic()), "series per link as docs/operations.md says",
         interval=0.5, describe=lambda: f"documented {documented}, held {measured()}")


def test_shadow_rules_follow_time_shifted_recording_rules(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "interval": "5m", "rules": [
        {"record": "a:plain:rate1d", "expr": "rate(x_total[1d])"},
        {"record": "a:yesterday", "expr": "x offset 1d", "labels": {"k": "v"}},
        {"record": "a:ratio", "expr": "x / a:yesterday"},
        {"alert": "A", "expr": "a:ratio < 0.5"},
    ]}]}))
    shadows, shadow_list = shadow_rules([rules])
    assert shadows == {"a:yesterday": "shortwin:a:yesterday", "a:ratio": "shortwin:a:ratio"}
    assert shadow_list == [
        {"record": "shortwin:a:yesterday", "expr": "x", "labels": {"k": "v"}},
        {"record": "shortwin:a:ratio", "expr": "x / shortwin:a:yesterday"},
    ]
    [copy] = fast_rule_copies([rules], tmp_path / "fast")
    assert "interval" not in yaml.safe_load(copy.read_text())["groups"][0]


def test_query_helpers_understand_grafana_syntax() -> None:
    """The substitution used for variable queries and the short-window rewrite, on their own."""
    variables = {"link": "metro-10km", "__rate_interval": "1m"}
    assert substitute('rate(x{link=~"$link"}[$__rate_interval])', variables) == 'rate(x{link=~"metro-10km"}[1m])'
    assert substitute('x{link="${link:regex}"} + y{l="[[link]]"} + $unknown', variables) == \
        'x{link="metro-10km"} + y{l="metro-10km"} + $unknown'
    assert shorten("max_over_time(a:b[1d:5m]) - a:b offset 1d + rate(c[1d])") == \
        "max_over_time(a:b[5m:1s]) - a:b + rate(c[1d])"
    assert metric_names('sum by (link) (rate(qkd_pulses_total{link="a", x=~"b|c"}[5m])) / on (link) '
                        'group_left (site_a) qlink_info offset 1d > bool 0 and a:b:c[1d:5m] '
                        '+ label_replace(up, "x", "$1", "y", "(.*)")') == {
        "qkd_pulses_total", "qlink_info", "a:b:c", "up"}
    assert family_names("qlink_driver_errors_total") == ["qlink_driver_errors_total", "qlink_driver_errors"]
    assert rename("a:b + a:bc + x_a:b + a:b{l='1'}", {"a:b": "shortwin:a:b"}) == \
        "shortwin:a:b + a:bc + x_a:b + shortwin:a:b{l='1'}"
