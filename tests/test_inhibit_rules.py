"""The generated Alertmanager inhibit rules on a real Alertmanager 0.25: an alert mutes only what it
explains, for the same cluster and the same link or exporter.

Alerts are posted to Alertmanager's API as Prometheus would (with the labels the generated rules
give them); Alertmanager's own view (``status.inhibitedBy``) must mute exactly the expected ones.
The cases are the over-muting the old ``severity critical -> warning, equal: [link]`` rule did.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from realstack import ALERTMANAGER_BIN, Alertmanager, WebhookReceiver, poll, register_log_plugin, require_binaries

ROOT = Path(__file__).resolve().parents[1]
INHIBIT = yaml.safe_load((ROOT / "alerts" / "alertmanager-inhibit-rules.yaml").read_text())["inhibit_rules"]

# name -> (labels, muted?)
CASES = {
    "qber critical a/Z": ({"alertname": "QKDQberCritical", "link": "a", "basis": "Z", "severity": "critical"}, False),
    "qber high a/Z (explained)": ({"alertname": "QKDQberHigh", "link": "a", "basis": "Z", "severity": "warning"}, True),
    "qber high a/X (other basis)": ({"alertname": "QKDQberHigh", "link": "a", "basis": "X", "severity": "warning"}, False),
    "loss step a (unrelated)": ({"alertname": "QKDChannelLossStep", "link": "a", "severity": "warning"}, False),
    "qber high a/Z in west": ({"alertname": "QKDQberHigh", "link": "a", "basis": "Z", "severity": "warning",
                               "cluster": "west"}, False),
    "no signal b": ({"alertname": "QKDNoSignal", "link": "b", "instance": "i1", "severity": "critical"}, False),
    "key rate zero b (explained)": ({"alertname": "QKDSecretKeyRateZero", "link": "b", "severity": "critical"}, True),
    "loss step b (explained)": ({"alertname": "QKDChannelLossStep", "link": "b", "severity": "warning"}, True),
    "estimator stalled on i1": ({"alertname": "QTelemetryEstimationStalled", "instance": "i1",
                                 "severity": "critical"}, False),
    "link c down on i1 (explained)": ({"alertname": "QLinkDown", "link": "c", "instance": "i1",
                                       "severity": "critical"}, True),
    "link d down on i2 (other exporter)": ({"alertname": "QLinkDown", "link": "d", "instance": "i2",
                                            "severity": "critical"}, False),
    "exporter i3 down": ({"alertname": "QTelemetryExporterDown", "instance": "i3", "severity": "critical"}, False),
    "slow estimation in west": ({"alertname": "QTelemetryEstimationSlow", "instance": "i3", "severity": "warning",
                                 "cluster": "west"}, False),
}


def test_alertmanager_mutes_only_what_an_alert_explains(tmp_path, request):
    register_log_plugin(request.config)
    require_binaries(ALERTMANAGER_BIN)
    webhook = WebhookReceiver()
    manager = Alertmanager(tmp_path, webhook.url, inhibit_rules=INHIBIT)
    try:
        alerts = [{"labels": {"cluster": "east", "job": "qtelemetry", "protocol": "bb84-decoy", **labels},
                   "annotations": {"case": name}} for name, (labels, _) in CASES.items()]
        manager.post_alerts(alerts)

        expected = {name: mute for name, (_, mute) in CASES.items()}
        seen: list[dict[str, bool]] = [{}]

        def settled() -> bool:  # the inhibitor learns of source alerts asynchronously: poll
            seen[0] = {a["annotations"]["case"]: bool(a["status"]["inhibitedBy"]) for a in manager.alerts()}
            return seen[0] == expected

        poll(settled, 15, "Alertmanager to mute exactly the explained alerts", interval=0.2,
             describe=lambda: "; ".join(f"{k}: muted={v} (expected {expected[k]})" for k, v in seen[0].items()
                                        if v != expected[k]) or f"{len(seen[0])} of {len(expected)} alerts held")
    finally:
        manager.stop()
        webhook.stop()
