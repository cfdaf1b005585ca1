"""`qtelemetry generate`: the committed dashboards, rules, promtool tests and runbooks are exactly
what the generator makes, promtool accepts and passes them, the SDK reads the dashboards back,
and every name, label and annotation follows the project's conventions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from qtelemetry.cli import main
from qtelemetry.config import ConfigError
from qtelemetry.monitoring import dashboards, generate, promtool_tests, rules, runbooks
from qtelemetry.monitoring.config import DEFAULT, load_monitoring_config
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.monitoring.promql import PROMETHEUS_SERIES, GenerationError, metric_names, sample_names

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / generate.RULE_FILE
RUNBOOK = ROOT / generate.RUNBOOK_FILE
TEST_FILES = sorted((ROOT / "alerts" / "tests").glob("*.test.yaml"))
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PREFIXES = ("QKD", "QLink", "QEnt", "QNet", "QTelemetry")


def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    reason = ("promtool not found: install Debian's `prometheus` package "
              "(`apt-get install -y --no-install-recommends prometheus`, or run `bash .ci/run`)")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def output() -> generate.Output:
    return generate.render(DEFAULT)


@pytest.fixture(scope="module")
def rule_doc() -> dict:
    return yaml.safe_load(RULES.read_text())


@pytest.fixture(scope="module")
def alert_rules(rule_doc) -> list[dict]:
    return [r for g in rule_doc["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


# --- regeneration ----------------------------------------------------------------------------


def test_committed_files_are_exactly_what_generate_makes(output):
    problems = generate.differences(ROOT, output, DEFAULT)
    assert not problems, f"{problems}: run `qtelemetry generate` in the repository root"
    assert {p.relative_to(ROOT).as_posix() for p in DASHBOARDS} == {f for f in output.files if f.startswith("dashboards/")}


def test_generate_verb_is_deterministic_and_check_detects_drift(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "a")]) == 0
    assert main(["generate", "--out", str(tmp_path / "b")]) == 0
    files_a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    files_b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert files_a == files_b
    for rel, data in files_a.items():
        assert (ROOT / rel).read_bytes() == data, rel
    assert main(["generate", "--out", str(tmp_path / "a"), "--check"]) == 0
    (tmp_path / "a" / "dashboards" / "qtelemetry-fleet.json").write_text("{}")
    (tmp_path / "a" / "mixin" / "lib" / "old.libsonnet").write_text("{}")
    (tmp_path / "a" / "alerts" / "tests" / "qtelemetry-old.test.yaml").write_text("stale")
    assert main(["generate", "--out", str(tmp_path / "a"), "--check"]) == generate.EXIT_DIFFERS
    err = capsys.readouterr().err
    assert "differs: dashboards/qtelemetry-fleet.json" in err and "stale: alerts/tests/qtelemetry-old.test.yaml" in err
    assert "stale: mixin/lib/old.libsonnet" in err
    assert main(["generate", "--out", str(tmp_path / "a")]) == 0  # repairs and removes the stale file
    assert not (tmp_path / "a" / "alerts" / "tests" / "qtelemetry-old.test.yaml").exists()
    assert main(["generate", "--out", str(tmp_path / "a"), "--check"]) == 0


def test_an_out_it_cannot_write_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    assert main(["generate", "--out", str(tmp_path / "a-file")]) == 2  # before: NotADirectoryError traceback
    assert f"error: --out: cannot write {tmp_path / 'a-file' / 'alerts'}: Not a directory" in capsys.readouterr().err


def test_monitoring_config_overrides_flow_into_rules_dashboards_and_runbooks(tmp_path):
    path = tmp_path / "monitoring.yaml"
    path.write_text("selector: 'job=\"quantum\"'\nthresholds:\n  qber_warning: 0.04\n")
    config = load_monitoring_config(path)
    out = generate.render(config)
    rules_text = out.files[generate.RULE_FILE]
    assert 'qkd_qber_upper_bound_ratio{job="quantum"} > 0.04' in rules_text
    assert 'job="qtelemetry"' not in rules_text
    link = json.loads(out.files["dashboards/qtelemetry-bb84-decoy.json"])
    qber = next(p for p in dashboards.iter_panels(link) if p["title"] == "QBER with its upper confidence bound")
    assert [s["value"] for s in qber["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 0.04, 0.08, 0.11]
    assert "above 4%" in out.files[generate.RUNBOOK_FILE]


def test_a_paging_floor_splits_unmet_demands_into_pages_and_tickets(tmp_path):
    """With page_demand_priority 3, promtool runs the network group's generated cases on both sides
    of the floor: priority 3 and an unknown priority page (QNetDemandUnmet), priority 2 opens a
    ticket (QNetDemandUnmetLowPriority) instead; the default floor 0 keeps one paging alert."""
    path = tmp_path / "monitoring.yaml"
    path.write_text("page_demand_priority: 3\n")
    assert main(["generate", "--out", str(tmp_path), "--config", str(path)]) == 0
    network = yaml.safe_load((tmp_path / "alerts" / "tests" / "qtelemetry-network.test.yaml").read_text())
    names = {t["name"] for t in network["tests"]}
    assert {"QNetDemandUnmet: priority 2, below the floor: a ticket instead",
            "QNetDemandUnmetLowPriority: priority 2, below the floor", "QNetDemandUnmet: priority not known: pages"} <= names
    result = subprocess.run([promtool(), "test", "rules", "qtelemetry-network.test.yaml"], cwd=tmp_path / "alerts" / "tests",
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "QNetDemandUnmetLowPriority" not in RULES.read_text()


def test_bad_monitoring_config_names_the_field(tmp_path):
    path = tmp_path / "monitoring.yaml"
    path.write_text("thresholds:\n  qber_critcal: 0.1\n")
    with pytest.raises(ConfigError, match="thresholds.qber_critcal: Extra inputs are not permitted"):
        load_monitoring_config(path)
    path.write_text("thresholds:\n  qber_warning: 0.09\n")
    with pytest.raises(ConfigError, match="thresholds: need qber_warning < qber_critical"):
        load_monitoring_config(path)
    assert main(["generate", "--out", str(tmp_path), "--config", str(path)]) == 2


@pytest.mark.parametrize("line, problem", [
    ("runbook_base_url: https://x/runbooks.md", "runbook_base_url is now runbook_url_pattern"),
    ("runbook_url_pattern: https://wiki.example.org/qkd", "runbook_url_pattern: .*needs exactly one %s"),
    ("runbook_url_pattern: https://wiki.example.org/%s%20%s", "runbook_url_pattern: .*needs exactly one %s"),
    ("grafana_url: https://grafana.example.org/", "grafana_url: String should match pattern"),
    ("selector: ''", "selector: String should have at least 1 character"),
    ("page_demand_priority: -1", "page_demand_priority: Input should be greater than or equal to 0"),
    ("page_demand_priority: 4294967296", "page_demand_priority: Input should be less than or equal to 4294967295"),
    ("page_demand_priority: high", "page_demand_priority: Input should be a valid integer"),
    ("page_demand_priority: 2.5", "page_demand_priority: Input should be a valid integer"),
])
def test_links_and_selector_are_checked(tmp_path, line, problem):
    path = tmp_path / "monitoring.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=problem):
        load_monitoring_config(path)


def test_no_shipped_file_links_to_a_host_nobody_configured(alert_rules):
    """By default the alerts point at their runbook by its path in the generated tree and at their
    dashboard by its path on the user's Grafana; nothing shipped names localhost or our host."""
    shipped = [RULES, *TEST_FILES, *DASHBOARDS, *(ROOT / "mixin").rglob("*.*sonnet"),
               *(ROOT / "deploy" / "kubernetes" / "monitoring").glob("*.yaml")]
    for path in shipped:
        assert not re.search(r"://|localhost|127\.0\.0\.1", path.read_text()), path
    for rule in alert_rules:
        assert rule["annotations"]["runbook_url"] == f"alerts/runbooks.md#{rule['alert'].lower()}"
        assert rule["annotations"]["dashboard_url"].startswith("/d/qtelemetry-")
    configured = load_monitoring_config(None).model_copy(update={
        "grafana_url": "https://grafana.example.org", "runbook_url_pattern": "https://wiki.example.org/qkd/%s"})
    rule = rules.rule_dict(rules.build(configured).alert("QLinkDown"), configured)
    assert rule["annotations"]["runbook_url"] == "https://wiki.example.org/qkd/qlinkdown"
    assert rule["annotations"]["dashboard_url"].startswith("https://grafana.example.org/d/qtelemetry-{{ $labels.protocol }}?")


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_no_threshold_is_infinite_or_nan(value, tmp_path):
    """An infinite loss step would pass ``gt=0`` and compile to an alert that can never fire."""
    path = tmp_path / "monitoring.yaml"
    path.write_text(f"thresholds:\n  loss_step_db: {value}\n")
    with pytest.raises(ConfigError, match="thresholds.loss_step_db: Input should be a finite number"):
        load_monitoring_config(path)


# --- promtool ----------------------------------------------------------------------------------


def test_promtool_check_rules_accepts_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    tool = promtool()

    def run(path: Path) -> subprocess.CompletedProcess:
        # the largest file takes ~14 s of CPU (every case evaluates every group); a loaded CI machine can
        # stretch that tenfold
        return subprocess.run([tool, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True,
                              timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, TEST_FILES))
    failed = [(p.name, r.stdout + r.stderr) for p, r in zip(TEST_FILES, results) if r.returncode != 0]
    assert TEST_FILES and not failed, failed


def test_every_alert_has_a_firing_and_a_silent_promtool_case(alert_rules):
    tested: dict[str, set[bool]] = {}
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        assert doc["evaluation_interval"]
        for group in doc["tests"]:
            assert group["interval"], f"{path.name}: {group['name']} has no explicit interval"
            for case in group["alert_rule_test"]:
                tested.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for rule in alert_rules:
        assert tested.get(rule["alert"]) == {True, False}, f"{rule['alert']}: needs a firing and a silent case"


def test_generation_refuses_an_alert_without_a_silent_case():
    ruleset = rules.build(DEFAULT)
    only_firing = [c for c in promtool_tests.cases() if c.alert != "QLinkDown" or c.firing]
    with pytest.raises(GenerationError, match="QLinkDown needs at least one firing and one silent"):
        promtool_tests.test_documents(ruleset, DEFAULT, "x.yaml", only_firing)


def test_template_rendering_matches_prometheus_humanize():
    assert promtool_tests.humanize(1234567) == "1.235M"
    assert promtool_tests.humanize(0.000004) == "4u"
    assert promtool_tests.humanize(float("inf")) == "+Inf"
    assert promtool_tests.humanize_percentage(0.1234) == "12.34%"
    assert promtool_tests.humanize_duration(600) == "10m 0s"
    assert promtool_tests.humanize_duration(90061) == "1d 1h 1m 1s"


# --- alert conventions -------------------------------------------------------------------------


def test_alert_names_labels_annotations_and_runbook_anchors(alert_rules):
    book = RUNBOOK.read_text()
    names = [r["alert"] for r in alert_rules]
    assert len(names) == len(set(names))
    for rule in alert_rules:
        name = rule["alert"]
        assert re.fullmatch(rf"({'|'.join(PREFIXES)})[A-Z][A-Za-z0-9]*", name), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), f"{name}: every alert has a deliberate for:"
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert notes["summary"].endswith(".") and "$value" not in notes["summary"], f"{name}: {notes['summary']}"
        assert "$labels." in notes["description"] or "$value" in notes["description"], name
        assert notes["runbook_url"] == f"alerts/runbooks.md#{name.lower()}" == DEFAULT.runbook_url(name)
        assert f'<a id="{name.lower()}"></a>' in book and f"\n## {name}\n" in book, f"{name}: no runbook section"
    sections = re.findall(r"^## (\S+)$", book, re.M)
    assert sorted(sections) == sorted(names), "one runbook section per alert, no orphans"


def test_every_dashboard_url_opens_a_generated_dashboard_with_its_variables(alert_rules, boards):
    """The URL's uid is a dashboard (the link's protocol picks the drill-down of its kind) and every
    var-X it sets is a variable of that dashboard."""
    by_uid = {b["uid"]: {v["name"] for v in b["templating"]["list"]} for b in boards.values()}
    protocols = set(PROTOCOLS)  # every link kind, device-reported ones too
    for rule in alert_rules:
        url = rule["annotations"]["dashboard_url"]
        match = re.fullmatch(re.escape(DEFAULT.grafana_url) + r"/d/([^?]+)\?(.*)", url)
        assert match, url
        uid, query = match.groups()
        uids = {uid.replace("{{ $labels.protocol }}", p) for p in protocols} if "$labels.protocol" in uid else {uid}
        for one in uids:
            assert one in by_uid, f"{rule['alert']}: no dashboard {one}"
            assert {p.split("=")[0].removeprefix("var-") for p in query.split("&")} <= by_uid[one], url
        if "$labels.protocol" in uid:
            assert re.search(r"group_left \(protocol\b", rule["expr"]), f"{rule['alert']}: the alert must carry its link's protocol"


def test_summaries_and_inhibitions_are_checked_at_generation(monkeypatch):
    with pytest.raises(GenerationError, match="summary is one sentence ending with a period"):
        rules.Alert("QLinkX", "qlink_up == 0", "5m", "critical", "Link [[link]] is at [[value]].", "d [[link]]")
    bad = rules.Alert("QLinkX", "qlink_up == 0", "5m", "critical", "Link [[link]] is down.", "d [[link]]",
                      inhibits=("QLinkNoSuchAlert",))
    monkeypatch.setattr(rules, "link_alerts", lambda c: [bad])
    with pytest.raises(GenerationError, match="inhibits names unknown alerts: .*QLinkNoSuchAlert"):
        rules.build(DEFAULT)


def test_every_aggregation_and_join_keeps_the_cluster_and_job(rule_doc):
    """No rule merges two clusters' (or two jobs') links: every by/on/group by clause names both."""
    for group in rule_doc["groups"]:
        for rule in group["rules"]:
            clauses = re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"])
            for clause in clauses:
                labels = {x.strip() for x in clause.split(",")}
                assert {DEFAULT.cluster_label, "job"} <= labels, f"{rule.get('alert') or rule['record']}: by/on ({clause})"


def test_recording_rules_are_named_after_the_labels_they_keep(rule_doc):
    """level:metric:operation, the level naming the labels kept besides cluster and job."""
    for group in rule_doc["groups"]:
        for rule in group["rules"]:
            if "record" not in rule:
                continue
            level, metric, operation = rule["record"].split(":")
            outer = re.search(r"\b(?:avg|sum|max|min) by \(([^)]*)\)", rule["expr"])
            if outer:  # the first aggregation makes the series (the left side of a ratio)
                assert [x.strip() for x in outer.group(1).split(",")] == [DEFAULT.cluster_label, "job",
                                                                        *level.split("_")], rule["record"]
            else:  # built from other recorded series of the same level
                assert re.search(rf"\b{level}:", rule["expr"]), rule["record"]


def test_the_slo_period_is_summed_from_recorded_short_rates(rule_doc):
    records = {r["record"]: r["expr"] for g in rule_doc["groups"] for r in g["rules"] if "record" in r}
    period = records["link:qkd_key_supply_errors:ratio_rate30d"]
    assert "sum_over_time(link:qkd_key_delivered_bits:rate5m[30d])" in period
    assert "sum_over_time(link:qkd_key_requested_bits:rate5m[30d])" in period
    assert "rate(" not in period, "no rate() over 30 days of raw samples"


def test_qber_alerts_use_the_upper_confidence_bound_and_say_why(alert_rules):
    qber = [r for r in alert_rules if r["alert"].startswith("QKDQber")]
    assert {r["labels"]["severity"] for r in qber} == {"warning", "critical"}
    for rule in qber:
        assert "qkd_qber_upper_bound_ratio" in rule["expr"] and "qkd_qber_ratio" not in rule["expr"]
        assert "upper confidence bound" in rule["annotations"]["description"]
        assert "counting noise" in rule["annotations"]["description"]


def test_slo_alerts_are_multiwindow_multi_burn_rate(alert_rules):
    by_name = {r["alert"]: r for r in alert_rules}
    fast, slow = by_name["QKDKeySupplyErrorBudgetBurnFast"], by_name["QKDKeySupplyErrorBudgetBurnSlow"]
    assert fast["labels"]["severity"] == "critical" and slow["labels"]["severity"] == "warning"
    windows = lambda expr: re.findall(r"ratio_rate(\w+) > \(([\d.]+) \*", expr)  # noqa: E731
    assert windows(fast["expr"]) == [("1h", "14.4"), ("5m", "14.4"), ("6h", "6"), ("30m", "6")]
    assert windows(slow["expr"]) == [("1d", "3"), ("2h", "3"), ("3d", "1"), ("6h", "1")]


# --- metric names ------------------------------------------------------------------------------


def test_every_metric_in_rules_and_panels_is_in_the_catalogue_or_a_recording_rule(rule_doc, boards):
    records = {r["record"] for g in rule_doc["groups"] for r in g["rules"] if "record" in r}
    known = set(sample_names()) | records | PROMETHEUS_SERIES
    exprs = [(r.get("alert") or r["record"], r["expr"]) for g in rule_doc["groups"] for r in g["rules"]]
    for name, board in boards.items():
        exprs += [(f"{name}: {title}", expr) for title, _, expr in dashboards.panel_targets(board)]
        exprs += [(f"{name}: variable", re.fullmatch(r"label_values\((.*), \w+\)", v["query"]).group(1))
                  for v in board["templating"]["list"] if v["type"] == "query"]
    exprs += [("runbooks", q) for q in re.findall(r"```promql\n(.*?)```", RUNBOOK.read_text(), re.S)]
    for where, expr in exprs:
        assert metric_names(expr) <= known, f"{where}: {metric_names(expr) - known}"
        for token in re.findall(r"(?<![\w:])(q(?:kd|ent|link|telemetry)_[a-z0-9_]+)(?![\w:])(\{[^}]*\})?", expr):
            assert 'job="qtelemetry"' in token[1], f"{where}: {token[0]} without the selector"


def test_an_unknown_metric_is_a_generation_error():
    board = dashboards.Board("x", "x", "x", (dashboards.Row("r", (
        dashboards.ts("t", "none", "d", dashboards.Q("qkd_secret_key_rate_bits_per_secnd")),)),))
    with pytest.raises(GenerationError, match="unknown metric qkd_secret_key_rate_bits_per_secnd"):
        dashboards.build(board, DEFAULT, rules.build(DEFAULT))


def test_an_unknown_metric_in_a_rule_is_a_generation_error(monkeypatch):
    typo = rules.Alert("QLinkTypo", "qlink_upp == 0", "5m", "critical", "s.", "d [[link]]")
    monkeypatch.setattr(rules, "link_alerts", lambda c: [typo])
    with pytest.raises(GenerationError, match="unknown metric qlink_upp"):
        rules.build(DEFAULT)


def test_specs_reading_a_pending_metric_are_left_out_and_reported(monkeypatch):
    monkeypatch.setattr(rules, "PENDING_METRICS", frozenset({"qkd_future_ratio"}))
    monkeypatch.setattr(dashboards, "PENDING_METRICS", frozenset({"qkd_future_ratio"}))
    future = rules.Alert("QKDFuture", "qkd_future_ratio > 1", "5m", "warning", "s.", "d [[link]]")
    links = rules.link_alerts
    monkeypatch.setattr(rules, "link_alerts", lambda c: [*links(c), future])
    ruleset = rules.build(DEFAULT)
    assert [g.name for g in ruleset.gated] == ["QKDFuture"] and "QKDFuture" not in {a.alert for a in ruleset.alerts}
    board = dashboards.Board("x", "x", "x", (dashboards.Row("r", (
        dashboards.ts("t", "none", "d", dashboards.Q("qlink_up"), dashboards.Q("qkd_future_ratio")),)),))
    built = dashboards.build(board, DEFAULT, ruleset)
    assert built.gated == ("t [B] waits for qkd_future_ratio",)
    assert [t[2] for t in dashboards.panel_targets(built.json)] == [
        'qlink_up{job="qtelemetry", cluster=~"$cluster", job=~"$job", instance=~"$instance"}']


# --- dashboards --------------------------------------------------------------------------------


#: What the SDK (0.0.21) adds to every variable and table when it reads a dashboard, although
#: Grafana's schema has no such fields (the generator leaves them out; the schema test checks).
SDK_DEFAULTS = {"variable": ("auto", "auto_count", "auto_min"), "table": ("footer",)}


def without_sdk_defaults(board: dict) -> dict:
    board = json.loads(json.dumps(board))
    for variable in board["templating"]["list"]:
        for key in SDK_DEFAULTS["variable"]:
            variable.pop(key, None)
    for panel in board["panels"]:
        if panel["type"] == "table":
            for key in SDK_DEFAULTS["table"]:
                panel["options"].pop(key, None)
    return board


def test_dashboards_round_trip_through_the_sdk_models(boards):
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import prometheus as pm

    register_default_plugins()
    for name, board in boards.items():
        model = dm.Dashboard.from_json(board)
        assert without_sdk_defaults(json.loads(json.dumps(model, cls=JSONEncoder, sort_keys=True))) == board, name
        targets = [t for p in model.panels if isinstance(p, dm.Panel) for t in p.targets]
        assert targets and all(isinstance(t, pm.Dataquery) for t in targets), name


def test_dashboard_uids_ids_units_legends_and_grid(boards):
    assert {b["uid"] for b in boards.values()} == {
        "qtelemetry-fleet", "qtelemetry-bb84-decoy", "qtelemetry-bb84-sifted", "qtelemetry-bbm92-spdc",
            "qtelemetry-heralded-entanglement",
        "qtelemetry-etsi-qkd-014", "qtelemetry-etsi-qkd-015", "qtelemetry-key-supply-slo", "qtelemetry-exporter",
        "qtelemetry-network"}
    for name, board in boards.items():
        assert name == f"{board['uid']}.json"
        panels = list(dashboards.iter_panels(board))
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids), name
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & mine, f"{name}: {panel['title']} overlaps another panel"
            cells |= mine
            if panel["type"] == "row":
                continue
            assert panel["fieldConfig"]["defaults"].get("unit"), (name, panel["title"])
            assert panel.get("description"), (name, panel["title"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(set(refs)) == len(refs), (name, panel["title"])
            if panel["type"] not in ("nodeGraph", "geomap"):  # those find their frames by refId (nodes, edges)
                assert refs == [chr(ord("A") + i) for i in range(len(refs))], (name, panel["title"])
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
            if panel["type"] == "timeseries":
                assert panel["options"]["legend"]["showLegend"] is True, (name, panel["title"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        for name_ in (DEFAULT.cluster_label, "job", "instance"):
            assert variables[name_]["multi"] and variables[name_]["includeAll"] and variables[name_]["allValue"] == ".*"
        assert board["editable"] is False, f"{name}: provisioned dashboards cannot be saved from the UI"


def test_one_drill_down_per_link_kind_offers_only_links_of_that_kind(boards):
    for protocol in PROTOCOLS:
        board = boards[f"qtelemetry-{protocol}.json"]
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert set(variables) == {"datasource", DEFAULT.cluster_label, "job", "instance", "link"}
        assert f'protocol=~"{protocol}"' in variables["link"]["query"]
        assert 'instance=~"$instance"' in variables["link"]["query"]
    exprs = " ".join(e for _, _, e in dashboards.panel_targets(boards["qtelemetry-bb84-decoy.json"]))
    for metric in ("qkd_qber_upper_bound_ratio", "qkd_expected_secret_key_rate_bits_per_second",
                   "qkd_repeaterless_bound_bits_per_second", "qkd_channel_loss_budget_db",
                   "rate(qkd_detections_total"):
        assert metric in exprs, metric


def test_axes_where_zero_matters_are_symlog_never_log(boards):
    for name, board in boards.items():
        for panel in dashboards.iter_panels(board):
            scale = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("scaleDistribution")
            assert not scale or scale["type"] in ("linear", "symlog"), (name, panel["title"])
    key = next(p for p in dashboards.iter_panels(boards["qtelemetry-fleet.json"]) if p["title"] == "Secret key rate by link")
    assert key["fieldConfig"]["defaults"]["custom"]["scaleDistribution"]["type"] == "symlog"


def test_dashboard_selectors_filter_on_cluster_job_and_instance(boards):
    for name, board in boards.items():
        for title, _, expr in dashboards.panel_targets(board):
            for token in re.findall(r"(?<![\w:])(q(?:kd|ent|link|telemetry)_[a-z0-9_]+)(?![\w:])(\{[^}]*\})?", expr):
                assert f'{DEFAULT.cluster_label}=~"${DEFAULT.cluster_label}"' in token[1], (name, title, token)
                assert 'instance=~"$instance"' in token[1], (name, title, token)
            for token in re.findall(r"(?<![\w:])([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)(\{[^}]*\})?", expr):
                assert f'{DEFAULT.cluster_label}=~"${DEFAULT.cluster_label}", job=~"$job"' in token[1], (name, title)


def test_panel_queries_substitute_the_template_variables(boards):
    for name, board in boards.items():
        queries = dashboards.panel_queries(board, "metro-10km")
        assert len(queries) == len(dashboards.panel_targets(board))
        assert not [q for q in queries if re.search(r"\$(?!\d)", q)], name  # $1: label_replace's group
    link_queries = dashboards.panel_queries(boards["qtelemetry-bb84-decoy.json"], "metro-10km", rate_interval="2m")
    assert ('qkd_qber_ratio{job="qtelemetry", cluster=~".*", job=~".*", instance=~".*", link="metro-10km"}'
            in link_queries)
    assert any("[2m]" in q for q in link_queries)
    with pytest.raises(ValueError, match=r"\$nope"):
        dashboards.panel_queries({"panels": [{"targets": [{"refId": "A", "expr": "up{x=\"$nope\"}"}]}]}, "l")


def test_runbooks_cover_every_generated_alert_and_nothing_else():
    ruleset = rules.build(DEFAULT)
    assert {a.alert for a in ruleset.alerts} <= set(runbooks.runbooks(DEFAULT))
