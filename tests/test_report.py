"""The pilot report against a Prometheus with a known history.

A simulated week with scripted faults (``qtelemetry/defaults/pilot-week.yaml``: a 3 h fibre cut,
a 2 h intercept-resend attack, 12 h of tenfold key demand) is written by ``qtelemetry history`` on
a virtual clock, backfilled with ``promtool tsdb create-blocks-from openmetrics`` and served by a
real Prometheus; ``qtelemetry report`` reads it over HTTP. The expected numbers come from the
script (fault times, demand rates) and, for key delivered, from the simulator's own ledger
(``History.ledger``, which ``qtelemetry history --ledger`` writes), never from the report.

Tolerances, from the 5-minute step (one window per sample) and the alerts' ``for:``:

- The simulator applies a fault to every window that *starts* within its closed interval
  [start, start + duration], so a fault of d seconds acts on d / step + 1 windows; outages and
  firing times are counted in whole steps, so they are checked to within one step.
- An alert evaluated at the step fires ceil(for / step) steps after its condition starts and
  resolves at the first step without it: firing time = (windows - ceil(for / step)) x step, to
  within one step.
- Counters are sampled at the ends of whole windows and differenced without extrapolation:
  amounts match to the exposition's 12 significant digits (relative 1e-9).
- A cause of the alert hierarchy resolves ``keep_firing_for`` after its condition ends.

What people received is the report's replay of those alerts through the recommended Alertmanager
routing; a real Alertmanager 0.25 fed the same alerts (time compressed) sends the same.
"""

from __future__ import annotations

import csv
import html as html_module
import math
import re
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qtelemetry.config import default_config, load_config
from qtelemetry.monitoring import causes
from qtelemetry.monitoring.config import DEFAULT, duration_seconds
from qtelemetry.report import notifications
from qtelemetry.report.build import ReportRequest, build_report
from qtelemetry.report.cli import parse_time
from qtelemetry.report.history import write_history
from qtelemetry.report import prometheus as client
from qtelemetry.report.prometheus import HttpConfig
from alert_replay import replay
from realstack import (ALERTMANAGER_BIN, PROMTOOL_BIN, Alertmanager, Prometheus, backfilled_prometheus, find_binary,
                       register_log_plugin, require_binaries)

CONFIG = Path(__file__).resolve().parents[1] / "qtelemetry" / "defaults" / "pilot-week.yaml"
T0 = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()  # start of the history
DAY = 86400.0
#: The report starts half a day before the history (that half day must read "no data", never zero)
#: and ends with it; the faults come after the first day, which gives the alerts' baselines history.
START, END = T0 - DAY / 2, T0 + 7 * DAY
FIRST = T0 + 300  # the history's first sample: the end of its first window


def script() -> dict:
    """The scripted week: per link its driver settings and faults, and the window."""
    config = yaml.safe_load(CONFIG.read_text())
    return {"step": config["exporter"]["window_seconds"], "links": {l["name"]: l["driver"] for l in config["links"]}}


def fault(link: str, kind: str) -> dict:
    return next(f for f in script()["links"][link]["faults"] if f["kind"] == kind)


def windows(duration: float) -> int:
    """Windows a fault of ``duration`` acts on (see the module docstring)."""
    return int(duration // script()["step"]) + 1


def qtelemetry(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qtelemetry", *args], capture_output=True, text=True, timeout=timeout)


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The week's history in a real Prometheus, and its report (built once)."""
    require_binaries("prometheus", PROMTOOL_BIN)
    work = tmp_path_factory.mktemp("report")
    history = work / "week.om"
    with history.open("w") as out:  # what `qtelemetry history` runs, without a second interpreter
        ledger = write_history(load_config(CONFIG), T0, T0 + 7 * DAY, out).ledger
    prometheus = backfilled_prometheus(history, work)
    try:
        out = work / "out"
        report = qtelemetry("report", "--prometheus", prometheus.url, "--start", "2026-11-01T12:00:00Z",
                            "--end", str(END), "--out", str(out))
        assert report.returncode == 0, report.stderr
    finally:
        prometheus.stop()
    return {"out": out, "ledger": ledger, "log": report.stderr,
            "links": {r["link"]: r for r in rows(out / "links.csv")}}


def test_availability_and_outages_match_the_scripted_faults(week: dict) -> None:
    step, links = script()["step"], week["links"]
    period = END - T0  # the time with data
    cut = windows(fault("metro-10km", "fiber-cut")["duration_s"]) * step
    # Eve intercepts half the pulses: +12.5% QBER over the link's 1-2%, past the 11% above which
    # BB84 distils no key at all (Shor-Preskill), so the attack is an outage of the key service
    attack = windows(fault("regional-50km", "intercept-resend")["duration_s"]) * step
    for link, lost in (("metro-10km", cut), ("regional-50km", attack)):
        row = links[link]
        assert int(row["outages"]) == 1, row
        assert abs(float(row["outage_s_total"]) - lost) <= step, (link, row["outage_s_total"], lost)
        assert float(row["mttr_s"]) == float(row["outage_s_total"])
        assert abs(float(row["availability"]) - (1 - lost / period)) <= step / period
        assert float(row["no_data_s"]) == T0 - START  # before the history: no data, not down
    for link in ("longhaul-100km", "entangled-20km"):
        assert int(links[link]["outages"]) == 0 and float(links[link]["availability"]) == 1.0
        assert links[link]["mttr_s"] == ""  # no outage: no MTTR, not a zero
    network = links["(network)"]
    assert int(network["outages"]) == 2
    assert abs(float(network["availability"]) - (1 - (cut + attack) / (4 * period))) <= 2 * step / (4 * period)
    outages = rows(week["out"] / "outages.csv")
    cut_start = datetime.fromisoformat(next(o["start"] for o in outages if o["link"] == "metro-10km"))
    assert abs(cut_start.timestamp() - (T0 + fault("metro-10km", "fiber-cut")["start_s"])) <= step


def test_key_requested_and_delivered_match_the_script_and_the_simulator(week: dict) -> None:
    step, links = script()["step"], week["links"]
    period = END - FIRST  # counters are differenced from their first sample on
    for name, driver in script()["links"].items():
        extra = 0.0
        for f in driver.get("faults", []):
            if f["kind"] == "key-overconsumption":
                extra = (f["magnitude"] - 1) * driver["key_consumption_bps"] * windows(f["duration_s"]) * step
        requested = driver["key_consumption_bps"] * period + extra
        assert math.isclose(float(links[name]["key_requested_bits"]), requested, rel_tol=1e-9), name
        ledger = week["ledger"]
        delivered = ledger.loc[END, (name, "key_delivered_bits")] - ledger.loc[FIRST, (name, "key_delivered_bits")]
        assert math.isclose(float(links[name]["key_delivered_bits"]), delivered, rel_tol=1e-9), name
    # the store of the long-haul link runs dry within the first window of tenfold demand
    burst = windows(fault("longhaul-100km", "key-overconsumption")["duration_s"]) * step
    assert abs(float(links["longhaul-100km"]["key_store_empty_s"]) - burst) <= step
    assert float(links["longhaul-100km"]["key_supply_ratio"]) < 1
    assert float(links["entangled-20km"]["key_supply_ratio"]) == 1.0
    daily = {d["day"]: d for d in rows(week["out"] / "key_per_day.csv") if d["link"] == "metro-10km"}
    assert daily["2026-11-01"]["requested_bits"] == ""  # before the history: missing, not 0
    full = [daily[f"2026-11-{day:02d}"] for day in range(3, 9)]
    assert all(math.isclose(float(d["requested_bits"]), 20000 * DAY, rel_tol=1e-9) for d in full)


def test_error_budgets_are_prorated_to_the_period(week: dict) -> None:
    """The key-supply SLO allows 0.1 % of the key requested in any 30 days to go unmet: over this
    week, 0.1 % of what was requested in it. Spent: unmet / that; and in whole 30-day budgets, at
    the week's demand: times 7 d (with data) / 30 d."""
    objective, slo_period = DEFAULT.slos[0].objective, duration_seconds(DEFAULT.slos[0].period)
    ledger, links = week["ledger"], week["links"]
    for name in ("longhaul-100km", "metro-10km"):
        requested = ledger.loc[END, (name, "key_requested_bits")] - ledger.loc[FIRST, (name, "key_requested_bits")]
        unmet = requested - (ledger.loc[END, (name, "key_delivered_bits")] - ledger.loc[FIRST, (name, "key_delivered_bits")])
        row = links[name]
        assert math.isclose(float(row["error_budget_bits"]), (1 - objective) * requested, rel_tol=1e-9)
        assert math.isclose(float(row["unmet_bits"]), unmet, rel_tol=1e-6)
        assert math.isclose(float(row["error_budget_spent"]), unmet / ((1 - objective) * requested), rel_tol=1e-6)
        assert math.isclose(float(row["slo_budgets_spent"]), float(row["error_budget_spent"]) * (END - T0) / slo_period,
                            rel_tol=1e-9)
    page = (week["out"] / "report.html").read_text()
    spent = float(links["longhaul-100km"]["error_budget_spent"])
    assert spent > 100 and f"{spent:.3g} ×" in page and f"{100 * spent:.0f} %" not in page  # a multiple, not 37213 %


def test_incidents_from_evaluating_the_rules_match_the_faults(week: dict) -> None:
    step = script()["step"]
    incidents = rows(week["out"] / "incidents.csv")
    assert "evaluation of the alert rules" in (week["out"] / "report.html").read_text()

    def fired(alert: str, link: str, **labels: str) -> list[dict]:
        return [i for i in incidents if i["alertname"] == alert and i["link"] == link
                and all(f"{k}={v}" in i["labels"].split(",") for k, v in labels.items())]

    hold = duration_seconds(causes.hold(DEFAULT))  # a cause's keep_firing_for
    for alert, link, lasting, for_s, keep_s, labels in (
        ("QKDNoSignal", "metro-10km", fault("metro-10km", "fiber-cut")["duration_s"], 120, hold, {}),
        ("QKDQberCritical", "regional-50km", fault("regional-50km", "intercept-resend")["duration_s"], 300, 0,
         {"basis": "Z"}),
        ("QKDKeySupplyErrorBudgetBurnFast", "longhaul-100km", None, 120, 0, {}),
    ):
        found = fired(alert, link, **labels)
        assert len(found) == 1, (alert, link, found)
        if lasting is not None:
            expected = (windows(lasting) - math.ceil(for_s / step)) * step + keep_s
            assert abs(float(found[0]["firing_s"]) - expected) <= step, (alert, found[0], expected)
    assert not [i for i in incidents if i["link"] == "entangled-20km"]
    assert not [i for i in incidents if i["alertname"] == "QLinkDown"]
    # before the history this Prometheus had never scraped an exporter: QTelemetryExporterAbsent
    # fires only for exporters it had and lost (monitoring config exporter_absent_alert: lost)
    assert not [i for i in incidents if i["alertname"] == "QTelemetryExporterAbsent"]
    by_alert = rows(week["out"] / "incidents_by_alert.csv")
    assert sum(int(r["incidents"]) for r in by_alert) == len(incidents)


COMPOSE_ALERTMANAGER = Path(__file__).resolve().parents[1] / "deploy" / "compose" / "alertmanager" / "alertmanager.yml"
#: the scripted incidents: (link, fault kind, the alert that explains it and pages)
INCIDENTS = (("metro-10km", "fiber-cut", "QKDNoSignal"),
             ("regional-50km", "intercept-resend", "QKDTamperSuspected"),
             ("longhaul-100km", "key-overconsumption", "QKDKeyBufferExhaustionImminent"))


def incident_window(link: str, kind: str) -> tuple[float, float]:
    """From the fault's start to an hour after its end and the cause's hold."""
    f = fault(link, kind)
    return T0 + f["start_s"], T0 + f["start_s"] + f["duration_s"] + duration_seconds(causes.hold(DEFAULT)) + 3600


def when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def alert_labels(incident: dict) -> dict[str, str]:
    """Every label of an alert of incidents.csv."""
    return {"alertname": incident["alertname"], "severity": incident["severity"], "link": incident["link"],
            **dict(kv.split("=", 1) for kv in incident["labels"].split(",") if kv)}


def amtool_receivers(config: Path, labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager notifies for an alert with ``labels`` (`amtool config routes test`)."""
    result = subprocess.run([find_binary("amtool"), "config", "routes", "test", f"--config.file={config}",
                             *(f'{k}="{v}"' for k, v in labels.items())], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def test_each_incident_pages_once_and_the_fibre_cut_sends_nothing_to_security(week: dict) -> None:
    """After grouping and inhibition (the report's replay of the recommended routing), each scripted
    incident is one page to on-call, by the alert that explains it; the attack one to security too,
    the cut nothing at all; amtool on the Compose Alertmanager config routes those alerts the same way."""
    notes = rows(week["out"] / "notifications.csv")
    pages = [n for n in notes if n["kind"] == "new" and n["page"] == "True"]
    incidents = rows(week["out"] / "incidents.csv")
    for link, kind, cause in INCIDENTS:
        start, end = incident_window(link, kind)
        during = [n for n in notes if start <= when(n["time"]) <= end]
        paged = [p for p in pages if start <= when(p["time"]) <= end]
        expected = ["oncall-webhook", "security-webhook"] if cause == "QKDTamperSuspected" else ["oncall-webhook"]
        assert sorted(p["receiver"] for p in paged) == expected, (link, kind, paged)
        assert {(p["new_alerts"], p["links"]) for p in paged} == {(cause, link)}, paged
        alerts = [alert_labels(i) for i in incidents if i["link"] == link and start <= when(i["firing_at"]) <= end]
        # several alerts that page on their own fired: one page is the hierarchy's doing
        assert len([a for a in alerts if a["severity"] == "critical"]) >= 2, alerts
        if kind == "fiber-cut":
            assert not [n for n in during if n["receiver"] == "security-webhook"], during
            for labels in alerts:  # and no alert of the cut is even routed to security
                assert "security-webhook" not in amtool_receivers(COMPOSE_ALERTMANAGER, labels), labels
        for page in paged:
            cause_labels = next(a for a in alerts if a["alertname"] == cause)
            assert page["receiver"] in amtool_receivers(COMPOSE_ALERTMANAGER, cause_labels)
    assert len(pages) == 4, pages  # nothing else paged all week
    verdicts = {(r["scope"], r["target"]): r for r in rows(week["out"] / "verdicts.csv")}
    assert math.isclose(float(verdicts[("(network)", "pages per link and week")]["value"]),
                        4 / 4 / ((END - START) / (7 * DAY)))


def test_a_real_alertmanager_sends_what_the_report_counts(week: dict, tmp_path: Path, request) -> None:
    """The fibre cut's and the attack's alerts (each in its own cluster, the attack moved onto the
    cut's hours) posted 600 times faster than real time into Alertmanager 0.25 running the Compose
    config: per receiver, the webhook gets the notifications the report's replay computes for the
    same alerts and config, at the same times. Timers are compressed alike. A group_wait of 2.5 min
    puts the flushes midway between the 5-minute evaluation steps, and a 15-minute group_interval
    keeps them there: Alertmanager re-arms a group's timer when it fires, so each flush adds the
    machine's scheduling delay, and fewer flushes drift less. A 62-minute repeat interval keeps
    repeats off the flushes a whole hour would land on, where Alertmanager's choice between two
    flushes depends on that drift too."""
    register_log_plugin(request.config)
    require_binaries(ALERTMANAGER_BIN)
    cut, attack = (incident_window(link, kind)[0] for link, kind, _ in INCIDENTS[:2])
    start, end = cut - 600, cut - 600 + 240 * 60
    alerts = []
    for incident in rows(week["out"] / "incidents.csv"):
        for cluster, shift in (("cut", 0.0), ("attack", attack - cut)):
            firing = when(incident["firing_at"]) - shift
            if start <= firing < end:
                resolved = when(incident["resolved_at"]) - shift if incident["resolved_at"] else None
                alerts.append({"labels": {**alert_labels(incident), "cluster": cluster}, "firing_at": firing,
                               "resolved_at": resolved})
    config = yaml.safe_load(COMPOSE_ALERTMANAGER.read_text())
    config["route"].update(group_wait="2m30s", group_interval="15m")
    for route in config["route"]["routes"]:
        route["repeat_interval"] = "62m"
    sent = replay(tmp_path, alerts, config, start, end, speedup=600)
    frame = pd.DataFrame({"alertname": [a["labels"]["alertname"] for a in alerts],
                          "severity": [a["labels"]["severity"] for a in alerts],
                          "link": [a["labels"]["link"] for a in alerts], "alert_labels": [a["labels"] for a in alerts],
                          "firing_at": [a["firing_at"] for a in alerts],
                          "resolved_at": [np.nan if a["resolved_at"] is None else a["resolved_at"] for a in alerts]})
    counted = notifications.replay(frame, notifications.parse_config(config, "test"), end)

    def firing(note: dict) -> str:
        return ",".join(sorted(f'{a["labels"]["alertname"]}@{a["labels"]["link"]}' for a in note["alerts"]
                               if a["status"] == "firing"))

    got = sorted((n["receiver"], n["groupLabels"].get("cluster"), n["at"], n["status"], firing(n)) for n in sent)
    expected = sorted((r.receiver, r.group.split(",")[0].removeprefix("cluster="), r.time,
                       "firing" if r.firing else "resolved", r.alerts) for r in counted.itertuples())
    assert [g[:2] + g[3:] for g in got] == [e[:2] + e[3:] for e in expected], (got, expected)
    assert all(abs(g[2] - e[2]) < 150 for g, e in zip(got, expected)), (got, expected)  # timer drift, < half a step
    assert sum(1 for r in counted.itertuples() if r.kind == "new" and r.page) == 3  # cut: on-call; attack: both


def test_verdicts_follow_the_targets(week: dict) -> None:
    verdicts = {(r["scope"], r["target"]): r["verdict"] for r in rows(week["out"] / "verdicts.csv")}
    # default targets: availability >= 99%, key supplied >= 99.9%, MTTR <= 4 h
    assert verdicts[("metro-10km", "availability")] == "not met"  # 3 h 05 of 7 days: 98.2%
    assert verdicts[("longhaul-100km", "availability")] == "met"
    assert verdicts[("longhaul-100km", "key supplied / requested")] == "not met"
    assert verdicts[("entangled-20km", "key supplied / requested")] == "met"
    assert verdicts[("metro-10km", "mean time to restore")] == "met"


def test_the_summary_says_what_happened_in_plain_words(week: dict) -> None:
    """The sponsor's paragraph, each figure from the script or the simulator's ledger."""
    page = (week["out"] / "report.html").read_text()
    plain = html_module.unescape(page.split('<p class="plain">', 1)[1].split("</p>", 1)[0])
    ledger = week["ledger"]
    delivered = sum(ledger.loc[END, (n, "key_delivered_bits")] - ledger.loc[FIRST, (n, "key_delivered_bits")]
                    for n in script()["links"])
    requested = sum(ledger.loc[END, (n, "key_requested_bits")] - ledger.loc[FIRST, (n, "key_requested_bits")]
                    for n in script()["links"])
    step = script()["step"]
    cut = windows(fault("metro-10km", "fiber-cut")["duration_s"]) * step
    burst = windows(fault("longhaul-100km", "key-overconsumption")["duration_s"]) * step
    for said in (f"Key was delivered for {100 * delivered / requested:.1f} % of the",
                 f"Two outages, the longest {cut / 3600:.1f} h: a fibre cut (no light reached the receiver) on "
                 "metro-10km; a suspected attack on regional-50km.",
                 "The tamper detectors of regional-50km raised the alarm 5 min after it began",
                 f"longhaul-100km had no outage, but applications were refused key on it for {burst / 3600:.1f} h",
                 "made four pages (oncall-webhook 3, security-webhook 1) and two other notifications (team-email 2)."):
        assert said in plain, (said, plain)
    assert page.index('class="plain"') < page.index('class="headline"')  # first thing on the page


def test_key_rate_chart_is_linear_from_zero_with_outages_shaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a log axis a link without key is a gap; on a linear axis from 0 it is the drop it is."""
    from qtelemetry.report import figures, tables

    times = np.arange(0.0, 11 * 300, 300)
    rate = np.array([np.nan, 900, 900, 0, 0, 0, 900, 900, 900, 900, 900])
    series = tables.Series(times, 300.0, {"up": {"l": np.ones(11)}, "key_rate": {"l": rate},
                                          "plan_rate": {"l": np.full(11, 1000.0)}}, {"l": "bb84-decoy"})
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"png")
    assert figures.key_rate(series) == b"png"
    ax = drawn[0].axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    key = next(line for line in ax.get_lines() if line.get_label() == "secret key rate")
    assert list(np.asarray(key.get_ydata(), float)[2:5]) == [0, 0, 0]  # drawn at 0, not left out
    shaded = [c for c in ax.collections if c.get_label() == "outage"]
    assert len(shaded) == 1 and len(shaded[0].get_paths()) == 1  # one outage, one band


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("src", "href"):
            if key in attrs:
                self.sources.append(attrs[key])


def test_html_is_self_contained_with_every_section(week: dict) -> None:
    page = _Page()
    page.feed((week["out"] / "report.html").read_text())
    assert {"summary", "key", "availability", "performance", "entanglement", "incidents"} <= page.ids
    images = [s for s in page.sources if s.startswith("data:image/png;base64,")]
    assert len(images) >= 5 and len(images) == len(page.sources)  # nothing loaded from elsewhere
    assert "no data for 12.0 h" in (week["out"] / "report.html").read_text()  # the half day before the history


def test_the_screenshot_in_the_docs_shows_this_report(week: dict) -> None:
    """docs/report-summary.png is this week's summary page (docs/report.md says how it is taken); its
    alt text lists the cards it shows, so a report whose figures change fails here until the
    screenshot is taken again."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "report.md").read_text()
    alt = re.search(r"!\[Summary page of the pilot report: (.*?)\]\(report-summary.png\)", page, re.S).group(1)
    cards = re.findall(r'<div class="card"><b>(.*?)</b><span>(.*?)</span>', (week["out"] / "report.html").read_text())
    assert " ".join(alt.split()) == "; ".join(f"{value} {label}" for value, label in cards)


def test_bad_pilot_target_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.yaml"
    config.write_text("pilot:\n  availability: 1.5\n")
    result = qtelemetry("report", "--prometheus", "http://127.0.0.1:9", "--start", "now-1d", "--config", str(config),
                        "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "pilot.availability" in result.stderr


def test_an_out_directory_it_cannot_write_is_refused_before_the_queries(tmp_path: Path) -> None:
    """Before, the report queried the whole period and then ended in a traceback at ``mkdir``."""
    taken = tmp_path / "a-file"
    taken.write_text("x")
    for out in (taken, taken / "sub"):
        result = qtelemetry("report", "--prometheus", "http://127.0.0.1:9", "--start", "now-1d", "--out", str(out))
        assert result.returncode == 2 and f"--out: cannot write the directory {out}" in result.stderr
        assert "Traceback" not in result.stderr and "report failed" not in result.stderr  # Prometheus never asked


def test_times_are_relative_unix_or_rfc3339_with_a_zone() -> None:
    assert parse_time("now-7d", now=1e9) == 1e9 - 7 * DAY
    assert parse_time("2026-11-02T00:00:00Z") == T0 == parse_time(str(T0))
    for bad in ("yesterday", "2026-11-02T00:00:00", "nan", "now-1y", "1e30", "-1"):
        with pytest.raises(ValueError):
            parse_time(bad)


@pytest.mark.parametrize("args, named", [
    (("--start", "1e30"), "not a time: '1e30'"),  # before: no steps, a ValueError traceback
    (("--days", "0.001"), "--days: 0.001 days is shorter than one window of the config (300 s)"),  # the same
    (("--out", "/nonexistent/history.om"), "cannot write /nonexistent/history.om: No such file or directory"),
    (("--ledger", "/nonexistent/ledger.csv"), "cannot write /nonexistent/ledger.csv"),  # after a whole simulation
])
def test_history_refuses_what_it_cannot_write_or_simulate_before_simulating(tmp_path: Path, args, named) -> None:
    options = {"--start": "2026-11-02T00:00:00Z", "--days": "0.1", "--out": str(tmp_path / "h.om"), **dict([args])}
    result = qtelemetry("history", *[x for pair in options.items() for x in pair])
    assert result.returncode == 2 and named in result.stderr and "Traceback" not in result.stderr
    assert "simulating history" not in result.stderr and "history written" not in result.stderr


def test_live_prometheus_incidents_come_from_its_alerts_series(start_exporter, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a live exporter and Prometheus evaluating rules (as in the Compose stack), the
    report reads ALERTS, and an alert still firing at the end is unresolved, firing till the end;
    given a live Alertmanager, it replays that Alertmanager's own routing."""
    require_binaries("prometheus", ALERTMANAGER_BIN)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "smoke", "interval": "1s", "rules": [
        {"alert": "MetroUp", "expr": 'qlink_up{job="qtelemetry", link="metro-10km"} == 1', "for": "2s",
         "labels": {"severity": "info"}}]}]}))
    exporter = start_exporter()
    prometheus = Prometheus(tmp_path, [urllib.parse.urlsplit(exporter.url).netloc], [rules])
    manager = Alertmanager(tmp_path, "http://127.0.0.1:9/")  # its routing: everything to receiver "webhook"
    try:
        # firing for a few evaluations (1 s each), so that it lasts more than one step of the report
        prometheus.wait_for_query('count_over_time(ALERTS{alertname="MetroUp", alertstate="firing"}[1m]) >= 3',
                                  timeout=60)
        out, now = tmp_path / "out", time.time()  # the report's code path without a second interpreter
        build_report(ReportRequest(prometheus.url, HttpConfig(), now - 30, now, 1.0, ["metro-10km"], DEFAULT,
                                   rules, "auto", out, "live", alertmanager_url=manager.url))
        # a range cut into chunks of 7 points is the same matrix as one query
        whole = client.Prometheus(prometheus.url).range("qlink_up", now - 30, now, 1.0)
        monkeypatch.setattr(client, "MAX_POINTS", 7)
        chunked = client.Prometheus(prometheus.url).range("qlink_up", now - 30, now, 1.0)
        assert chunked.labels == whole.labels and len(whole.labels) == len(default_config().links)
        assert np.array_equal(chunked.values, whole.values, equal_nan=True) and np.isfinite(whole.values[:, -1]).all()
    finally:
        prometheus.stop()
        manager.stop()
    incidents = rows(out / "incidents.csv")
    assert [(i["alertname"], i["link"], i["resolved_at"]) for i in incidents] == [("MetroUp", "metro-10km", "")]
    assert float(incidents[0]["firing_s"]) > 0
    assert 'ALERTS{alertstate=&quot;firing&quot;}' in (out / "report.html").read_text()
    assert [r["link"] for r in rows(out / "links.csv")] == ["(network)", "metro-10km"]
    notes = rows(out / "notifications.csv")
    assert [(n["receiver"], n["kind"], n["page"], n["new_alerts"]) for n in notes] == [("webhook", "new", "False", "MetroUp")]
    assert f"Alertmanager at {manager.url}" in (out / "report.html").read_text()
