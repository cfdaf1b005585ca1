"""Generated alerts against real faults: exporter → Prometheus 2.42 → Alertmanager 0.25 → webhook.

The committed rules (alerts/qtelemetry.rules.yaml) run on a real Prometheus scraping a real
exporter; faults are injected through the exporter's authenticated endpoint with the CLI. The
only changes to the rules are the evaluation cadence and ``for:`` (held at 0s here; the
durations themselves are checked by the promtool unit tests on simulated time).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from realstack import fast_rule_copies

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts" / "qtelemetry.rules.yaml"

CONFIG = """
exporter:
  window_seconds: 0.2
  sliding_windows: 10
  admin_token_file: TOKEN
links:
""" + "".join(f"""  - name: {name}
    driver: {{type: simulated-bb84, fiber_length_km: {km}, clock_rate_hz: 1.0e9, seed: {seed}}}
""" for seed, (name, km) in enumerate([("metro-a", 10), ("metro-b", 15), ("regional-c", 40)]))


def fault(exporter_url: str, token: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "fault", args[0], "--url",
                           exporter_url.removesuffix("/metrics"), "--token-file", str(token), *args[1:]],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def notified(notes: list[dict], alertname: str, status: str) -> list[dict]:
    return [a for n in notes for a in n.get("alerts", [])
            if a["labels"]["alertname"] == alertname and a["status"] == status]


@pytest.fixture
def stack(start_exporter, prometheus_stack, tmp_path):
    token = tmp_path / "admin-token"
    token.write_text("e2e-admin-token")
    exporter = start_exporter(CONFIG.replace("TOKEN", str(token)))
    exporter.wait_for(lambda s: len(s.get("qkd_qber_ratio", [])) == 6)
    running = prometheus_stack(exporter.url, fast_rule_copies([RULES], tmp_path / "rules", hold="0s"))
    running.prometheus.wait_for_target_up()
    running.prometheus.wait_for_alertmanager()
    running.prometheus.wait_for_rule_evaluations()
    return exporter, running, token


@pytest.mark.parametrize("kind,alertname", [("intercept-resend", "QKDQberCritical"),
                                            ("fiber-cut", "QKDNoSignal")])
def test_fault_pages_for_that_link_only_and_resolves(stack, kind, alertname):
    exporter, running, token = stack
    fault(exporter.url, token, "inject", "--link", "metro-b", "--kind", kind)

    firing = running.webhook.wait_for(lambda notes: notified(notes, alertname, "firing"), timeout=60)
    assert {a["labels"]["link"] for a in firing} == {"metro-b"}
    alert = firing[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"] == "alerts/runbooks.md#" + alertname.lower()
    assert "metro-b" in alert["annotations"]["description"]
    assert f'<a id="{alertname.lower()}"></a>' in (ROOT / "alerts" / "runbooks.md").read_text()

    fault(exporter.url, token, "clear", "--link", "metro-b")
    resolved = running.webhook.wait_for(lambda notes: notified(notes, alertname, "resolved"), timeout=60)
    assert {a["labels"]["link"] for a in resolved} == {"metro-b"}
    # no other link paged for this fault at any time
    every = [a for n in running.webhook.snapshot() for a in n.get("alerts", [])
             if a["labels"]["alertname"] == alertname]
    assert {a["labels"]["link"] for a in every} == {"metro-b"}
