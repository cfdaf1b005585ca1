"""Smoke test of the real-component harness: exporter → Prometheus 2.42 → Alertmanager 0.25 → webhook.

The demo exporter (three simulated links) is scraped by a real Prometheus that evaluates a
tiny rule file written here: one recording rule and one alert that fires at once for every link
(``qlink_up == 1``, ``for: 0s``). The alert must reach the webhook with its labels and templated
annotations; after the rule file is rewritten so the expression cannot match and Prometheus is
reloaded, the resolved notification must arrive too.
"""

from __future__ import annotations

import time
from pathlib import Path

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
    exporter = start_exporter()
    first = exporter.scrape()
    links = {s.labels["link"] for s in first["qlink_up"]}
    # qkd_qber_ratio belongs to prepare-and-measure QKD links (the demo's decoy-BB84 ones).
    bb84_links = {s.labels["link"] for s in first["qlink_info"] if s.labels["protocol"] == "bb84-decoy"}
    assert len(bb84_links) >= 3, first["qlink_info"]

    rule_file = write_rules(tmp_path / "smoke.rules.yml", "qlink_up == 1")
    stack = prometheus_stack(exporter.url, [rule_file])
    prom, webhook = stack.prometheus, stack.webhook

    # The scrape target comes up (discovery applies it ~5 s after start).
    [target] = prom.wait_for_target_up(timeout=30)
    assert target["scrapeUrl"] == exporter.url

    # A QBER series for every BB84 link and basis, with the target labels Prometheus adds.
    qber = prom.wait_for_query("qkd_qber_ratio", lambda r: {s["metric"]["link"] for s in r} == bb84_links, timeout=15)
    assert sorted((s["metric"]["link"], s["metric"]["basis"]) for s in qber) == sorted(
        (l, b) for l in bb84_links for b in "ZX")
    assert all(s["metric"]["job"] == "qtelemetry" for s in qber)
    assert all(0 < float(s["value"][1]) < 0.11 for s in qber), qber

    # The recording rule produces one series per BB84 link.
    recorded = prom.wait_for_query("link:qkd_qber_ratio:max", lambda r: len(r) == len(bb84_links), timeout=15)
    assert {s["metric"]["link"] for s in recorded} == bb84_links

    # Links that are up according to Prometheus: the alert must fire for each of them.
    up = {s["metric"]["link"] for s in prom.wait_for_query("qlink_up == 1")}
    assert bb84_links <= up <= links, (up, links)

    # The alert reaches the webhook for every link, with its labels and templated annotations.
    firing = webhook.wait_for(lambda notes: (f := alerts_by_link(notes, "firing")).keys() >= up and f, timeout=30)
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
    prom.reload()
    resolved = webhook.wait_for(lambda notes: (r := alerts_by_link(notes, "resolved")).keys() >= firing.keys() and r, timeout=20)
    for link, alert in resolved.items():
        assert alert["endsAt"] >= alert["startsAt"]
        assert alert["annotations"]["runbook_url"] == RUNBOOK
    assert not prom.alerts(), prom.alerts()

    assert time.monotonic() - started < 40, "smoke test must stay fast"
