"""The report's Alertmanager replay on small timelines whose notifications can be counted by hand
(the pilot week is checked against a real Alertmanager in test_report), and Alertmanager configs
it cannot replay, refused with the field named."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qtelemetry.config import ConfigError
from qtelemetry.monitoring import alertmanager, causes, rules
from qtelemetry.monitoring.config import DEFAULT
from qtelemetry.report import notifications

MIN = 60.0


@functools.cache
def _inhibit_rules() -> tuple[dict, ...]:
    return tuple(causes.inhibit_rules(rules.build(DEFAULT), DEFAULT))


def recommended_doc() -> dict:
    """The recommended Alertmanager config (a fresh copy)."""
    return copy.deepcopy(alertmanager.recommended(list(_inhibit_rules()), DEFAULT))


def recommended(**route: object) -> notifications.AlertmanagerConfig:
    """The recommended routing and inhibit rules, with route settings overridden."""
    config = recommended_doc()
    config["route"].update(route)
    return notifications.parse_config(config, "test")


def timeline(*alerts: tuple[dict[str, str], float, float | None]) -> pd.DataFrame:
    """Alerts as (labels, firing at, resolved at or None) in the incident table's shape."""
    labels = [{"cluster": "c", "job": "qtelemetry", **a[0]} for a in alerts]
    return pd.DataFrame({"alertname": [l["alertname"] for l in labels], "severity": [l["severity"] for l in labels],
                         "link": [l.get("link", "") for l in labels], "alert_labels": labels,
                         "firing_at": [a[1] for a in alerts],
                         "resolved_at": [np.nan if a[2] is None else a[2] for a in alerts]})


def down(link: str, site: str = "s1") -> dict[str, str]:
    return {"alertname": "QLinkDown", "severity": "critical", "link": link, "instance": "i", "site": site}


def test_a_site_losing_forty_links_pages_once_not_forty_times():
    alerts = timeline(*((down(f"l{i}"), 10.0 + i * 0.5, None) for i in range(40)))
    by_site = notifications.replay(alerts, recommended(), 3600.0)
    assert [(n.receiver, n.kind, n.page, n.firing) for n in by_site.itertuples()] == [("oncall-webhook", "new", True, 40)]
    assert by_site["time"].iloc[0] == 10.0 + 30  # group_wait after the first
    by_link = notifications.replay(alerts, recommended(group_by=["alertname", "cluster", "site", "link"]), 3600.0)
    assert (by_link["kind"] == "new").sum() == 40  # the grouping the issue found: a page per link


def test_a_link_joining_an_open_incident_is_a_second_page_at_the_next_group_interval():
    alerts = timeline((down("a"), 0.0, None), (down("b"), 2 * MIN, None))
    notes = notifications.replay(alerts, recommended(), 30 * MIN)
    assert [(n.time, n.kind, n.links) for n in notes.itertuples() if n.kind == "new"] == [(30.0, "new", "a"),
                                                                                         (30.0 + 5 * MIN, "new", "b")]


def test_a_fibre_cut_with_a_tamper_alarm_on_its_link_never_pages_security_twice():
    """The alarm arrives first (for: 0s against the cut's 2m): security is paged once; the cut then
    mutes it, and when the light returns the latched alarm is the same alert again, not a new page."""
    tamper = {"alertname": "QKDTamperSuspected", "severity": "critical", "link": "m", "instance": "i",
              "detector": "qber_z", "notify": "security"}
    cut = {"alertname": "QKDNoSignal", "severity": "critical", "link": "m", "instance": "i"}
    qber = {"alertname": "QKDQberCritical", "severity": "critical", "link": "m", "instance": "i", "basis": "Z"}
    alerts = timeline((tamper, 0.0, None), (cut, 2 * MIN, 3 * 3600.0), (qber, 5 * MIN, 3 * 3600.0 - 30 * MIN))
    notes = notifications.replay(alerts, recommended(), 8 * 3600.0)
    security = notes[notes["receiver"] == "security-webhook"]
    assert list(security["kind"]).count("new") == 1 and set(security["kind"]) <= {"new", "repeat"}
    oncall = notes[(notes["receiver"] == "oncall-webhook") & (notes["kind"] == "new")]
    # never the QBER, which the cut explains; the alarm, still latched when the light returns (nobody
    # re-armed it), is back in on-call's group, whose last notification was the cut alone
    assert list(oncall["new_alerts"]) == ["QKDTamperSuspected", "QKDNoSignal", "QKDTamperSuspected"]
    # the cut first: nothing reaches security while it lasts, nor after (the alarm is one alert)
    alerts = timeline((cut, 0.0, 3 * 3600.0), (tamper, 2 * MIN, None))
    notes = notifications.replay(alerts, recommended(), 3 * 3600.0)
    assert not (notes["receiver"] == "security-webhook").any()


def test_inhibition_needs_the_cause_firing_and_the_same_link():
    def cut_and_qber(cut_until: float) -> pd.DataFrame:
        return timeline(({"alertname": "QKDNoSignal", "severity": "critical", "link": "a", "instance": "i"}, 0.0, cut_until),
                        ({"alertname": "QKDQberCritical", "severity": "critical", "link": "a", "instance": "i",
                          "basis": "Z"}, 0.0, 60 * MIN),
                        ({"alertname": "QKDQberCritical", "severity": "critical", "link": "b", "instance": "i",
                          "basis": "Z"}, 0.0, 60 * MIN))

    # the cut outlasts the QBER of its link (as its hold makes it): only the other link's QBER joins it
    held = notifications.replay(cut_and_qber(70 * MIN), recommended(), 2 * 3600.0)
    assert [n.alerts for n in held.itertuples() if n.kind == "new"] == ["QKDNoSignal@a,QKDQberCritical@b"]
    # the cut resolves first: the QBER of a joins at the first flush after (group_wait 30s, interval 5m)
    bare = notifications.replay(cut_and_qber(10 * MIN), recommended(), 2 * 3600.0)
    assert [(n.time, n.new_alerts) for n in bare.itertuples() if n.kind == "new"] == [
        (30.0, "QKDNoSignal,QKDQberCritical"), (30.0 + 10 * MIN, "QKDQberCritical")]


def test_repeats_resolved_and_receivers_without_integrations():
    config = notifications.parse_config(
        {"route": {"receiver": "mail", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1m",
                   "repeat_interval": "10m", "routes": [{"matchers": ["severity=info"], "receiver": "nobody"}]},
         "receivers": [{"name": "mail", "email_configs": [{"to": "x@example.org"}]}, {"name": "nobody"}]}, "test")
    alerts = timeline(({"alertname": "A", "severity": "warning"}, 0.0, 25 * MIN),
                      ({"alertname": "B", "severity": "info"}, 0.0, None))
    notes = notifications.replay(alerts, config, 40 * MIN)
    # repeats once 10m have passed at a flush (the strict comparison of Alertmanager's dedup stage:
    # at exactly 10m it waits one more group interval); e-mail does not send resolved by default
    assert [(n.time / MIN, n.kind) for n in notes.itertuples()] == [(0, "new"), (11, "repeat"), (22, "repeat")]
    assert set(notes["receiver"]) == {"mail"}
    summary = notifications.by_receiver(notes)
    assert summary.to_dict("records") == [{"receiver": "mail", "notifications": 3, "pages": 0, "other new": 1,
                                           "repeat": 2, "resolved": 0}]


@pytest.mark.parametrize("change,message", [
    (lambda c: c["route"].update(group_wait="soon"), "route.group_wait: 'soon' is not a duration"),
    (lambda c: c["route"]["routes"][0].update(mute_time_intervals=["weekends"]),
     r"route.routes\[0\]: mute_time_intervals cannot be replayed"),
    (lambda c: c["route"]["routes"][1].update(matchers=["notify=~\"(\""]),
     r"route.routes\[1\].matchers: matcher .* bad regular expression"),
    (lambda c: c["route"]["routes"][2].update(matchers=["severity"]), r"route.routes\[2\].matchers: cannot read matcher"),
    (lambda c: c["route"].update(receiver="pager"), "route: receiver pager is not defined in receivers"),
    (lambda c: c.pop("route"), "am.yml: route: missing"),
    (lambda c: c["inhibit_rules"][0].update(equal="link"), r"inhibit_rules\[0\].equal: expected a list of label names"),
    (lambda c: c["inhibit_rules"].append("mute everything"), r"inhibit_rules\[\d+\]: expected a map"),
])
def test_configs_it_cannot_replay_are_refused_naming_the_field(change, message):
    config = recommended_doc()
    change(config)
    with pytest.raises(ConfigError, match=message):
        notifications.parse_config(config, "am.yml")


def qtelemetry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qtelemetry", *args], capture_output=True, text=True, timeout=120)


def test_report_refuses_a_bad_or_unreachable_alertmanager_before_querying_prometheus(tmp_path: Path):
    bad = tmp_path / "alertmanager.yml"
    bad.write_text(yaml.safe_dump({"route": {"receiver": "r", "group_wait": "soon"}, "receivers": [{"name": "r"}]}))
    common = ["report", "--prometheus", "http://127.0.0.1:9", "--start", "now-1h", "--out", str(tmp_path / "out")]
    result = qtelemetry(*common, "--alertmanager-config", str(bad))
    assert result.returncode == 2 and "route.group_wait: 'soon' is not a duration" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    result = qtelemetry(*common, "--alertmanager", "http://user:secret@127.0.0.1:9")
    assert result.returncode == 2, result.stderr
    assert "--alertmanager: http://127.0.0.1:9: cannot read its config: connection refused" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
