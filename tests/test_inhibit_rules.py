"""The generated Alertmanager inhibit rules on a real Alertmanager 0.25: the incidents the issue
names, written out (a fibre cut once paged five times, an attack seven), and case by case from the
cause hierarchy: for every (cause, effect) relation, the effect is muted while the cause fires for
the same link, site or exporter, and the cause is not; the same effect elsewhere (another link,
site or exporter, another cluster, another basis or SLO) is not muted.

Alerts are posted to Alertmanager's API as Prometheus would (with the labels the generated rules
give them); Alertmanager's own view (``status.inhibitedBy``) must mute exactly the expected ones.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from realstack import ALERTMANAGER_BIN, Alertmanager, WebhookReceiver, poll, register_log_plugin, require_binaries

from qtelemetry.monitoring import causes, rules
from qtelemetry.monitoring.config import DEFAULT

ROOT = Path(__file__).resolve().parents[1]
INHIBIT = yaml.safe_load((ROOT / "alerts" / "alertmanager-inhibit-rules.yaml").read_text())["inhibit_rules"]
#: values of labels an alert carries; each case gets its own (so that no two cases mute each other)
EXTRA = {"basis": "Z", "slo": "qkd_key_supply", "detector": "qber_z", "reason": "timeout", "endpoint": "status"}


def alert(name: str, severity: str = "critical", **labels: str) -> dict[str, str]:
    return {"alertname": name, "severity": severity, "cluster": "west", "job": "qtelemetry", **labels}


SLO = {"slo": "qkd_key_supply"}
#: name -> (labels, muted?): what one incident must page, and what not
INCIDENTS = {
    "cut: no signal on m": (alert("QKDNoSignal", link="m", instance="h"), False),
    "cut: QBER Z of m": (alert("QKDQberCritical", link="m", instance="h", basis="Z"), True),
    "cut: QBER X of m": (alert("QKDQberCritical", link="m", instance="h", basis="X"), True),
    "cut: store of m": (alert("QKDKeyBufferExhaustionImminent", link="m", instance="h"), True),
    "cut: SLO of m": (alert("QKDKeySupplyErrorBudgetBurnFast", link="m", **SLO), True),
    "cut: key rate of m": (alert("QKDSecretKeyRateZero", link="m"), True),
    "cut: a tamper alarm on m does not page security as well": (
        alert("QKDTamperSuspected", link="m", instance="h", detector="qber_z", notify="security"), True),
    "cut: QBER of another link": (alert("QKDQberCritical", link="n", instance="h", basis="Z"), False),
    "attack: tamper on r": (alert("QKDTamperSuspected", link="r", instance="h", detector="qber_z", notify="security"),
                            False),
    "attack: QBER Z of r": (alert("QKDQberCritical", link="r", instance="h", basis="Z"), True),
    "attack: key rate of r": (alert("QKDSecretKeyRateZero", link="r"), True),
    "attack: SLO of r": (alert("QKDKeySupplyErrorBudgetBurnFast", link="r", **SLO), True),
    "attack: blinding signature on r": (alert("QKDDarkCountsSuppressed", link="r", intensity="vacuum"), True),
    "attack: the tamper alarm does not hide that r is down": (alert("QLinkDown", link="r", instance="h"), False),
    "store: empty on q": (alert("QKDKeyBufferExhaustionImminent", link="q", instance="h"), False),
    "store: SLO fast of q": (alert("QKDKeySupplyErrorBudgetBurnFast", link="q", **SLO), True),
    "store: SLO slow of q": (alert("QKDKeySupplyErrorBudgetBurnSlow", "warning", link="q", **SLO), True),
    "site: every link of site s down": (alert("QLinkSiteDown", site="s"), False),
    "site: link a of s down": (alert("QLinkDown", link="a", instance="h2", site="s"), True),
    "site: link b of s dark": (alert("QKDNoSignal", link="b", instance="h2", site="s"), True),
    "site: link c of site t down": (alert("QLinkDown", link="c", instance="h2", site="t"), False),
    "exporter: h3 down": (alert("QTelemetryExporterDown", instance="h3", site="u"), False),
    "exporter: link d on h3 down": (alert("QLinkDown", link="d", instance="h3", site="u"), True),
    "exporter: link e on h4 down": (alert("QLinkDown", link="e", instance="h4", site="u"), False),
    "ladder: QBER high Z of m2 under critical": (alert("QKDQberHigh", "warning", link="m2", instance="h", basis="Z"),
                                                 True),
    "ladder: QBER critical Z of m2": (alert("QKDQberCritical", link="m2", instance="h", basis="Z"), False),
    "ladder: QBER high X of m2": (alert("QKDQberHigh", "warning", link="m2", instance="h", basis="X"), False),
}


def cases() -> dict[str, tuple[dict[str, str], bool]]:
    """name -> (alert labels, muted?), from the hierarchy: cause, effect, and the effect elsewhere."""
    ruleset = rules.build(DEFAULT)
    severity = {a.alert: a.severity for a in ruleset.alerts}
    out = {}
    for i, r in enumerate(causes.relations(ruleset, DEFAULT)):
        here = {"cluster": "east", "job": "qtelemetry", "link": f"l{i}", "instance": f"i{i}", DEFAULT.site_label: f"s{i}",
                **EXTRA}
        out[f"{i} {r.cause} (cause)"] = ({**here, "alertname": r.cause, "severity": severity[r.cause]}, False)
        effect = {**here, "alertname": r.effect, "severity": severity[r.effect]}
        out[f"{i} {r.effect} (explained by {r.cause})"] = (effect, True)
        for label in r.equal:  # the same effect with one tie label different
            out[f"{i} {r.effect} with another {label}"] = ({**effect, label: effect[label] + "-other"}, False)
    return out


def test_cases_cover_every_inhibit_rule_and_the_hierarchy_is_acyclic():
    pairs = {(r.cause, r.effect) for r in causes.relations(rules.build(DEFAULT), DEFAULT)}
    for rule in INHIBIT:
        source = rule["source_matchers"][0].split('"')[1]
        targets = rule["target_matchers"][0].split('"')[1].split("|")
        assert {(source, t) for t in targets} <= pairs, rule
    assert not {(a, b) for a, b in pairs if (b, a) in pairs}, "two alerts that mute each other go silent together"


def test_alertmanager_mutes_exactly_what_the_hierarchy_explains(tmp_path, request):
    register_log_plugin(request.config)
    require_binaries(ALERTMANAGER_BIN)
    expected_cases = INCIDENTS | cases()
    webhook = WebhookReceiver()
    manager = Alertmanager(tmp_path, webhook.url, inhibit_rules=INHIBIT)
    try:
        manager.post_alerts([{"labels": labels, "annotations": {"case": name}}
                             for name, (labels, _) in expected_cases.items()])
        expected = {name: mute for name, (_, mute) in expected_cases.items()}
        seen: list[dict[str, bool]] = [{}]

        def settled() -> bool:  # the inhibitor learns of source alerts asynchronously: poll
            seen[0] = {a["annotations"]["case"]: bool(a["status"]["inhibitedBy"]) for a in manager.alerts()}
            return seen[0] == expected

        poll(settled, 90, "Alertmanager to mute exactly the explained alerts", interval=1.0,
             describe=lambda: "; ".join(f"{k}: muted={v} (expected {expected[k]})" for k, v in seen[0].items()
                                        if v != expected[k])[:3000] or f"{len(seen[0])} of {len(expected)} alerts held")
    finally:
        manager.stop()
        webhook.stop()
