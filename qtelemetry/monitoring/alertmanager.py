"""The Alertmanager routing qtelemetry recommends: one notification per incident and site.

Pages (critical) and tickets (warning) are grouped by cluster and site, so a site losing forty
links pages once, with every link's detail in that one notification; the cause hierarchy's
inhibit rules keep the symptoms out of it. Tamper alarms go to security and, through
``continue``, page on-call too; info alerts go to a receiver that notifies nobody (as
kube-prometheus does): they are for dashboards and the pilot report.

The Compose config (deploy/compose/alertmanager/alertmanager.yml, from which deploy/kubernetes
derives the AlertmanagerConfig) is this config with your receivers, and ``qtelemetry report``
replays it when not given another Alertmanager config.
"""

from __future__ import annotations

from qtelemetry.monitoring.config import MonitoringConfig

PAGING = "oncall-webhook"
SECURITY = "security-webhook"
TICKETS = "team-email"
NOBODY = "null"

#: Placeholder receivers: replace the URLs and addresses with your own.
RECEIVERS = (
    {"name": PAGING, "webhook_configs": [{"url": "http://oncall-bridge.example.invalid:9000/alertmanager",
                                          "send_resolved": True}]},
    {"name": SECURITY, "webhook_configs": [{"url": "http://security-bridge.example.invalid:9000/alertmanager",
                                            "send_resolved": True}]},
    {"name": TICKETS, "email_configs": [{"to": "quantum-network-team@example.org", "send_resolved": True}]},
    {"name": NOBODY},
)


def route(c: MonitoringConfig) -> dict:
    """The routing tree: tickets by default, info to nobody, tamper to security and on-call, critical to on-call."""
    return {
        "receiver": TICKETS,
        "group_by": [c.cluster_label, c.site_label],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "12h",
        "routes": [
            {"matchers": ['severity="info"'], "receiver": NOBODY},
            {"matchers": ['notify="security"'], "receiver": SECURITY, "repeat_interval": "1h", "continue": True},
            {"matchers": ['severity="critical"'], "receiver": PAGING, "repeat_interval": "1h"},
        ],
    }


def recommended(inhibit_rules: list[dict], c: MonitoringConfig) -> dict:
    """The whole config but ``global``: routing, the generated inhibit rules, placeholder receivers."""
    return {"route": route(c), "inhibit_rules": inhibit_rules, "receivers": [dict(r) for r in RECEIVERS]}
