"""Smoke test of the real-component harness: exporter → Prometheus 2.42 → Alertmanager 0.25 → webhook.

The demo exporter (its simulated links of every kind) is scraped by a real Prometheus that evaluates a
tiny rule file written here: one recording rule and one alert that fires at once for every link
(``qlink_up == 1``, ``for: 0s``). The alert must reach the webhook with its labels and templated
annotations; after the rule file is rewritten so the expression cannot match and Prometheus is
reloaded, the resolved notification must arrive too.
"""

from __future__ import annotations

import time
from pathlib import Path

from realstack import rfc3339_seconds

RUNBOOK = "https://example.invalid/runbooks/QtelemetrySmokeLinkUp"

RULES = """
groups:
  - name: qtelemetry-smoke
    rules:
      - record: link:qkd_qber_ratio:max
        expr: max by (link) (qkd_qber_ratio)
      - alert: QtelemetrySmokeLinkUp
        expr: {expr}
        for: 0s
        labels:
          severity: info
        annotations:
          summary: "Link {{{{ $labels.link }}}} is up"
          description: "qlink_up is {{{{ $value }}}} on {{{{ $labels.link }}}}."
          runbook_url: {runbook}
"""


def write_rules(path: Path, expr: str) -> Path:
    path.write_text(RULES.format(expr=expr, runbook=RUNBOOK))
    return path


def alerts_by_link(notes: list[dict], status: str) -> dict[str, dict]:
    """The latest alert of our rule per link whose status is ``status``, across notifications."""
    found: dict[str, dict] = {}
    for note in notes:
        for alert in note.get("alerts", []):
            if alert["labels"].get("alertname") == "QtelemetrySmokeLinkUp" and alert["status"] == status:
                found[alert["labels"]["link"]] = alert
    return found


def test_alert_fires_and_resolves_through_real_prometheus_and_alertmanager(start_exporter, prometheus_stack, tmp_path):
    started = time.monotonic()

    def lap(what: str) -> None:  # phase timings, shown with -s or on failure
        print(f"{time.monotonic() - started:5.1f}s {what}")

    exporter = start_exporter()
    # The exporter's own view once every decoy-BB84 link has its first estimate.
    first = exporter.wait_for(lambda s: {x.labels["link"] for x in s.get("qkd_qber_ratio", [])} >= {
        x.labels["link"] for x in s["qlink_info"] if x.labels["protocol"] == "bb84-decoy"}, timeout=15)
    links = {s.labels["link"] for s in first["qlink_up"]}
    bb84_links = {s.labels["link"] for s in first["qlink_info"] if s.labels["protocol"] == "bb84-decoy"}
    assert len(bb84_links) >= 3, first["qlink_info"]

    rule_file = write_rules(tmp_path / "smoke.rules.yml", "qlink_up == 1")
    lap("exporter estimating")
    stack = prometheus_stack(exporter.url, [rule_file])
    lap("stack ready")
    prom, webhook = stack.prometheus, stack.webhook

    # The scrape target comes up (discovery applies it ~5 s after start).
    [target] = prom.wait_for_target_up(timeout=30)
    lap("target up")
    assert target["scrapeUrl"] == exporter.url

    # A QBER series in Prometheus for every (link, basis) the exporter shows (other link kinds
    # may join the decoy-BB84 ones once their first window is in: compare with a fresh scrape).
    def exporter_pairs() -> set[tuple[str, str]]:
        return {(s.labels["link"], s.labels["basis"]) for s in exporter.scrape()["qkd_qber_ratio"]}

    qber = prom.wait_for_query(
        "qkd_qber_ratio", lambda r: {(s["metric"]["link"], s["metric"]["basis"]) for s in r} == exporter_pairs(),
        timeout=15)
    qber_links = {s["metric"]["link"] for s in qber}
    lap("qber series")
    assert qber_links >= bb84_links and {s["metric"]["basis"] for s in qber} == {"Z", "X"}, qber
    assert all(s["metric"]["job"] == "qtelemetry" for s in qber)
    assert all(0 < float(s["value"][1]) < 0.11 for s in qber), qber

    # The recording rule produces one series per link.
    recorded = prom.wait_for_query("link:qkd_qber_ratio:max", lambda r: len(r) == len(qber_links), timeout=15)
    assert {s["metric"]["link"] for s in recorded} == qber_links

    # Links that are up according to Prometheus: the alert must fire for each of them.
    up = {s["metric"]["link"] for s in prom.wait_for_query("qlink_up == 1")}
    assert qber_links <= up <= links, (up, links)

    # The alert reaches the webhook for every link, with its labels and templated annotations.
    firing = webhook.wait_for(lambda notes: (f := alerts_by_link(notes, "firing")).keys() >= up and f, timeout=30)
    lap("firing notification")
    for link, alert in firing.items():
        assert alert["labels"]["severity"] == "info"
        assert alert["labels"]["job"] == "qtelemetry"
        assert alert["annotations"] == {
            "summary": f"Link {link} is up",
            "description": f"qlink_up is 1 on {link}.",
            "runbook_url": RUNBOOK,
        }
    note = next(n for n in webhook.snapshot() if n.get("alerts"))
    assert note["receiver"] == "webhook" and note["version"] == "4"

    # Rewrite the rule so it cannot match, reload: every link's alert resolves.
    write_rules(rule_file, "qlink_up > 1")
    reloaded_at = time.time()
    prom.reload()
    resolved = webhook.wait_for(
        lambda notes: (r := alerts_by_link(notes, "resolved")).keys() >= firing.keys() and r, timeout=20)
    lap("resolved notification")
    for link, alert in resolved.items():
        # Resolved by Prometheus (endsAt = the first evaluation after the reload), not by
        # Alertmanager timing the firing alert out (endsAt = last send + 4 x resend delay).
        ends = rfc3339_seconds(alert["endsAt"])
        assert reloaded_at - 0.5 < ends < reloaded_at + 3, (alert["endsAt"], reloaded_at)
        assert alert["annotations"]["runbook_url"] == RUNBOOK
    assert not prom.alerts(), prom.alerts()
