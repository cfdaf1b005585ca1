"""The cause hierarchy: generated from what alerts read, so new alerts fall into place; the inhibit
rules, the causes' hold and the runbooks' cross-references all come from it; and the alerts it
changed read what they should (finite-key plan, opt-in absent exporter, the site on every link alert)."""

from __future__ import annotations

import re

import pytest
import yaml

from qtelemetry.monitoring import alertmanager, causes, rules, runbooks
from qtelemetry.monitoring.config import DEFAULT, MonitoringConfig, duration_seconds
from qtelemetry.monitoring.promql import GenerationError


def targets(inhibit: list[dict], source: str) -> set[str]:
    """Alerts an inhibit rule with ``source`` mutes."""
    return {t for r in inhibit if r["source_matchers"] == [f'alertname="{source}"']
            for t in r["target_matchers"][0].split('"')[1].split("|")}


def test_a_new_alert_is_placed_by_the_metrics_it_reads(monkeypatch):
    """An alert nobody listed in the hierarchy, on QBER, is muted by a cut and by a tamper alarm, and
    not by an empty key store; one on a link metric without a concern cannot be generated."""
    new = rules.Alert("QKDQberDoubled", "qkd_qber_ratio > 0.2", "5m", "critical", "QBER of [[link]] doubled.",
                      "QBER of [[link]] is [[value]].")
    specs = rules.qkd_alerts
    monkeypatch.setattr(rules, "qkd_alerts", lambda c: [*specs(c), new])
    ruleset = rules.build(DEFAULT)
    inhibit = causes.inhibit_rules(ruleset, DEFAULT)
    assert "QKDQberDoubled" in targets(inhibit, "QKDNoSignal") & targets(inhibit, "QKDTamperSuspected")
    assert "QKDQberDoubled" in targets(inhibit, "QTelemetryExporterDown") & targets(inhibit, "QLinkSiteDown")
    assert "QKDQberDoubled" not in targets(inhibit, "QKDKeyBufferExhaustionImminent")
    assert "QKDQberDoubled" in " ".join(runbooks.cross_references(ruleset, DEFAULT)["QKDNoSignal"])

    stray = rules.Alert("QLinkFaultSimulated", "qlink_fault_active == 1", "5m", "warning", "A fault on [[link]].",
                        "Fault [[kind]] on [[link]].")
    monkeypatch.setattr(rules, "qkd_alerts", lambda c: [*specs(c), stray])
    with pytest.raises(GenerationError, match="qlink_fault_active has no concern in the cause hierarchy"):
        rules.build(DEFAULT)


def test_what_each_level_mutes_and_what_it_leaves():
    inhibit = causes.inhibit_rules(rules.build(DEFAULT), DEFAULT)
    symptoms = {"QKDQberCritical", "QKDSecretKeyRateZero", "QKDKeyBufferExhaustionImminent",
                "QKDKeySupplyErrorBudgetBurnFast", "QKDDarkCountsSuppressed"}
    assert symptoms | {"QKDTamperSuspected", "QKDChannelLossStep"} <= targets(inhibit, "QKDNoSignal")
    assert symptoms <= targets(inhibit, "QLinkDown")
    # a link that is merely down (or inactive) does not hide a tamper alarm; a dark one does
    assert "QKDTamperSuspected" not in targets(inhibit, "QLinkDown") | targets(inhibit, "QKDLinkInactive")
    assert symptoms - {"QKDKeyBufferExhaustionImminent"} < targets(inhibit, "QKDTamperSuspected")
    assert {"QLinkDown", "QKDNoSignal", "QKDLinkInactive"} <= targets(inhibit, "QLinkSiteDown")
    assert {"QLinkSiteDown"} == targets(inhibit, "QTelemetryExporterDown") & {"QLinkSiteDown", "QTelemetryExporterAbsent"}
    # the alerts each rule ties: the link, the site, the exporter (instance) — always within a cluster and job
    equal = {(r["source_matchers"][0], tuple(r["equal"])) for r in inhibit}
    assert ('alertname="QKDNoSignal"', ("cluster", "job", "link")) in equal
    assert ('alertname="QLinkSiteDown"', ("cluster", "job", "site")) in equal
    assert ('alertname="QTelemetryExporterDown"', ("cluster", "job", "instance")) in equal
    assert ('alertname="QTelemetryExporterDown"', ("cluster", "job", "site")) in equal


def test_causes_hold_for_the_longest_window_a_paging_symptom_averages():
    ruleset = rules.build(DEFAULT)
    # the fast burn's 6h/30m pair resolves 30 minutes after the errors stop
    assert causes.hold(DEFAULT) == "30m"
    assert {a.alert for a in ruleset.alerts if a.keep_firing_for} == set(causes.CAUSES)
    assert {a.keep_firing_for for a in ruleset.alerts if a.keep_firing_for} == {"30m"}
    smoother = MonitoringConfig(baseline={"smoothing": "45m"})
    assert causes.hold(smoother) == "45m"
    document = rules.rules_document(ruleset, DEFAULT)
    noted = {r["alert"]: r.get("keep_firing_for") for g in document["groups"] for r in g["rules"] if "alert" in r}
    assert noted["QKDNoSignal"] == "30m" and noted["QKDQberCritical"] is None


def test_a_cause_fires_no_later_than_the_paging_symptoms_it_mutes():
    """Alertmanager mutes only what arrives while the cause fires: a cause with a longer for: than a
    symptom that fires with it would page after the symptom had paged. (Pairs whose conditions
    cannot hold together are left out: a link that is down has no QBER to alarm on.)"""
    ruleset = rules.build(DEFAULT)
    alerts = {a.alert: a for a in ruleset.alerts}
    together = {("QKDNoSignal", e) for e in ("QKDQberCritical", "QKDSecretKeyRateZero", "QKDKeyBufferExhaustionImminent",
                                             "QKDKeySupplyErrorBudgetBurnFast", "QKDTamperSuspected")}
    together |= {("QKDKeyBufferExhaustionImminent", "QKDKeySupplyErrorBudgetBurnFast"),
                 ("QKDTamperSuspected", "QKDQberCritical"), ("QKDTamperSuspected", "QKDDarkCountsSuppressed")}
    pairs = {(r.cause, r.effect) for r in causes.relations(ruleset, DEFAULT)}
    assert together <= pairs
    late = [(c, e) for c, e in together if alerts[e].severity == "critical" and e != "QKDTamperSuspected"
            and duration_seconds(alerts[c].for_) > duration_seconds(alerts[e].for_)]
    assert not late


def test_runbooks_cross_reference_causes_and_symptoms_both_ways():
    ruleset = rules.build(DEFAULT)
    book = runbooks.markdown(ruleset, DEFAULT)
    sections = dict(re.findall(r"\n## (\S+)\n(.*?)(?=\n## |\Z)", book, re.S))
    for r in causes.relations(ruleset, DEFAULT):
        assert f"[{r.cause}](#{r.cause.lower()})" in sections[r.effect].split("**If another alert fires too")[1], r
        assert f"[{r.effect}](#{r.effect.lower()})" in sections[r.cause].split("**It mutes its symptoms.**")[1], r
    qber = sections["QKDQberCritical"]
    assert "a cut reads as ~50% QBER from dark counts alone" in qber
    assert "inform security - unless QKDTamperSuspected fires" in qber


def test_below_plan_compares_finite_with_finite():
    expr = rules.build(DEFAULT).alert("QKDSecretKeyRateBelowPlan").expr
    assert "link:qkd_secret_key_rate_bits_per_second:avg10m" in expr
    assert "qkd_expected_secret_key_rate_bits_per_second" in expr and "asymptotic" not in expr


@pytest.mark.parametrize("mode,present,never", [("lost", True, False), ("always", True, True), ("off", False, False)])
def test_exporter_absent_alert_is_opt_in_for_a_prometheus_that_never_scraped_one(mode, present, never):
    ruleset = rules.build(MonitoringConfig(exporter_absent_alert=mode))
    names = {a.alert for a in ruleset.alerts}
    assert ("QTelemetryExporterAbsent" in names) == present
    if present:
        assert ("absent_over_time" in ruleset.alert("QTelemetryExporterAbsent").expr) == never


def test_every_link_alert_carries_its_site_and_routing_groups_by_it():
    config = MonitoringConfig(site_label="datacenter")
    ruleset = rules.build(config)
    for alert in ruleset.alerts:
        if alert.scope == "link":
            assert "group_left (protocol, datacenter)" in alert.expr, alert.alert
    assert ruleset.alert("QLinkSiteDown").expr.count("datacenter") == 3
    assert alertmanager.route(config)["group_by"] == ["cluster", "datacenter"]
    site_rules = [r for r in causes.inhibit_rules(ruleset, config) if "datacenter" in r["equal"]]
    assert site_rules and yaml.safe_dump(site_rules).count("site") == 0
