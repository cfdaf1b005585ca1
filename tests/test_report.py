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
"""

from __future__ import annotations

import csv
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
import pytest
import yaml

from qtelemetry.config import load_config
from qtelemetry.monitoring.config import DEFAULT
from qtelemetry.report.build import ReportRequest, build_report
from qtelemetry.report.cli import BACKFILL_BLOCK, parse_time
from qtelemetry.report.history import write_history
from qtelemetry.report import prometheus as client
from qtelemetry.report.prometheus import HttpConfig
from realstack import PROMTOOL_BIN, Prometheus, find_binary, require_binaries

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
    history, tsdb = work / "week.om", work / "tsdb"
    with history.open("w") as out:  # what `qtelemetry history` runs, without a second interpreter
        ledger = write_history(load_config(CONFIG), T0, T0 + 7 * DAY, out).ledger
    blocks = subprocess.run([find_binary(PROMTOOL_BIN), "tsdb", "create-blocks-from", "openmetrics",
                             f"--max-block-duration={BACKFILL_BLOCK}", str(history), str(tsdb)], capture_output=True, text=True)
    assert blocks.returncode == 0, blocks.stderr
    history.unlink()
    # samples come every 5 minutes and a backfill has no staleness markers: a lookback just under
    # the step makes a series missing from one exposition missing at that step, as live; the
    # retention keeps blocks of any age
    prometheus = Prometheus(work, [], storage=tsdb,
                            extra_args=["--storage.tsdb.retention.time=100y", "--query.lookback-delta=4m"])
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


def test_incidents_from_evaluating_the_rules_match_the_faults(week: dict) -> None:
    step = script()["step"]
    incidents = rows(week["out"] / "incidents.csv")
    assert "evaluation of the alert rules" in (week["out"] / "report.html").read_text()

    def fired(alert: str, link: str, **labels: str) -> list[dict]:
        return [i for i in incidents if i["alertname"] == alert and i["link"] == link
                and all(f"{k}={v}" in i["labels"].split(",") for k, v in labels.items())]

    for alert, link, lasting, for_s, labels in (
        ("QKDNoSignal", "metro-10km", fault("metro-10km", "fiber-cut")["duration_s"], 120, {}),
        ("QKDQberCritical", "regional-50km", fault("regional-50km", "intercept-resend")["duration_s"], 300, {"basis": "Z"}),
        ("QKDKeySupplyErrorBudgetBurnFast", "longhaul-100km", None, 120, {}),
    ):
        found = fired(alert, link, **labels)
        assert len(found) == 1, (alert, link, found)
        if lasting is not None:
            expected = (windows(lasting) - math.ceil(for_s / step)) * step
            assert abs(float(found[0]["firing_s"]) - expected) <= step, (alert, found[0], expected)
    assert not [i for i in incidents if i["link"] == "entangled-20km"]
    assert not [i for i in incidents if i["alertname"] == "QLinkDown"]
    # before the history there was no exporter to scrape: absent until its first sample
    absent = [i for i in incidents if i["alertname"] == "QTelemetryExporterAbsent"]
    assert len(absent) == 1
    assert T0 - step <= datetime.fromisoformat(absent[0]["resolved_at"]).timestamp() <= FIRST + step
    by_alert = rows(week["out"] / "incidents_by_alert.csv")
    assert sum(int(r["incidents"]) for r in by_alert) == len(incidents)


def test_verdicts_follow_the_targets(week: dict) -> None:
    verdicts = {(r["scope"], r["target"]): r["verdict"] for r in rows(week["out"] / "verdicts.csv")}
    # default targets: availability >= 99%, key supplied >= 99.9%, MTTR <= 4 h
    assert verdicts[("metro-10km", "availability")] == "not met"  # 3 h 05 of 7 days: 98.2%
    assert verdicts[("longhaul-100km", "availability")] == "met"
    assert verdicts[("longhaul-100km", "key supplied / requested")] == "not met"
    assert verdicts[("entangled-20km", "key supplied / requested")] == "met"
    assert verdicts[("metro-10km", "mean time to restore")] == "met"


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


def test_times_are_relative_unix_or_rfc3339_with_a_zone() -> None:
    assert parse_time("now-7d", now=1e9) == 1e9 - 7 * DAY
    assert parse_time("2026-11-02T00:00:00Z") == T0 == parse_time(str(T0))
    for bad in ("yesterday", "2026-11-02T00:00:00", "nan", "now-1y"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_live_prometheus_incidents_come_from_its_alerts_series(start_exporter, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a live exporter and Prometheus evaluating rules (as in the Compose stack), the
    report reads ALERTS, and an alert still firing at the end is unresolved, firing till the end."""
    require_binaries("prometheus")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "smoke", "interval": "1s", "rules": [
        {"alert": "MetroUp", "expr": 'qlink_up{job="qtelemetry", link="metro-10km"} == 1', "for": "2s",
         "labels": {"severity": "info"}}]}]}))
    exporter = start_exporter()
    prometheus = Prometheus(tmp_path, [urllib.parse.urlsplit(exporter.url).netloc], [rules])
    try:
        # firing for a few evaluations (1 s each), so that it lasts more than one step of the report
        prometheus.wait_for_query('count_over_time(ALERTS{alertname="MetroUp", alertstate="firing"}[1m]) >= 3',
                                  timeout=60)
        out, now = tmp_path / "out", time.time()  # the report's code path without a second interpreter
        build_report(ReportRequest(prometheus.url, HttpConfig(), now - 30, now, 1.0, ["metro-10km"], DEFAULT,
                                   rules, "auto", out, "live"))
        # a range cut into chunks of 7 points is the same matrix as one query
        whole = client.Prometheus(prometheus.url).range("qlink_up", now - 30, now, 1.0)
        monkeypatch.setattr(client, "MAX_POINTS", 7)
        chunked = client.Prometheus(prometheus.url).range("qlink_up", now - 30, now, 1.0)
        assert chunked.labels == whole.labels and len(whole.labels) == 5
        assert np.array_equal(chunked.values, whole.values, equal_nan=True) and np.isfinite(whole.values[:, -1]).all()
    finally:
        prometheus.stop()
    incidents = rows(out / "incidents.csv")
    assert [(i["alertname"], i["link"], i["resolved_at"]) for i in incidents] == [("MetroUp", "metro-10km", "")]
    assert float(incidents[0]["firing_s"]) > 0
    assert 'ALERTS{alertstate=&quot;firing&quot;}' in (out / "report.html").read_text()
    assert [r["link"] for r in rows(out / "links.csv")] == ["(network)", "metro-10km"]
