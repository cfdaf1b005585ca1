"""Incidents: every alert that fired in the period, with when it fired and when it resolved.

The first source is Prometheus' own ``ALERTS{alertstate="firing"}`` series. Where that history
is missing (a TSDB backfilled with promtool, rules loaded after the fact), the generated alert
rules are evaluated over the period instead: each ``expr`` as a range query at its group's
interval, with ``for:`` and ``keep_firing_for:`` applied as Prometheus applies them (an alert
fires at the first evaluation at which its expression has returned the series without a gap for
``for:``, and resolves at the first evaluation that has not returned it for ``keep_firing_for:``).
Each incident keeps the alert's labels (``alert_labels``) for replaying it through Alertmanager's
routing (``notifications``). Recording rules whose series are missing too are
inlined into the expressions (a range over a recorded series becomes a subquery at the rule's
interval), so the evaluation needs nothing but the exporter's own series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qtelemetry.monitoring import promql
from qtelemetry.monitoring.config import duration_seconds
from qtelemetry.report.prometheus import Matrix, Prometheus, PrometheusError

#: Labels that tell one incident from another besides the alert name (never the value-bearing ones).
IDENTITY = ("alertname", "severity", "link")
INCIDENT_COLUMNS = ["alertname", "severity", "link", "labels", "firing_at", "resolved_at", "firing_s"]
#: Not written to incidents.csv: every label of the alert, as Alertmanager receives it.
ALERT_LABELS = "alert_labels"


@dataclass(frozen=True)
class Rule:
    """One rule of a rules document (``groups: [{interval, rules: [...]}]``)."""

    name: str
    expr: str
    interval_s: float
    for_s: float = 0.0
    labels: tuple[tuple[str, str], ...] = ()
    alert: bool = True
    keep_s: float = 0.0


def parse_rules(document: dict, default_interval: str = "1m") -> list[Rule]:
    """Alert and recording rules of a Prometheus rules document."""
    rules = []
    for group in document.get("groups", []):
        interval = duration_seconds(group.get("interval", default_interval))
        for rule in group.get("rules", []):
            alert = "alert" in rule
            rules.append(Rule(rule["alert"] if alert else rule["record"], rule["expr"], interval,
                              duration_seconds(rule["for"]) if rule.get("for") else 0.0,
                              tuple(sorted((rule.get("labels") or {}).items())), alert,
                              duration_seconds(rule["keep_firing_for"]) if rule.get("keep_firing_for") else 0.0))
    return rules


def inline(expr: str, records: dict[str, Rule], resolution: float = 0.0) -> str:
    """``expr`` with every reference to a recording rule in ``records`` replaced by the rule's
    expression: label matchers move into the rule's selectors, a range ``[d]`` becomes a
    subquery ``[d:r]`` with ``r`` the rule's interval or ``resolution`` if longer (Prometheus
    evaluates a subquery afresh at every step of a range query: a one-day baseline at one-minute
    resolution costs 1,440 inner evaluations per step). Matchers on labels the rule itself adds
    are dropped (they hold)."""
    out = expr
    for token in reversed(promql.names(expr)):
        rule = records.get(token.name)
        if rule is None:
            continue
        end, matchers = token.end, ""
        if token.brace is not None:
            end = promql._skip_group(out, token.brace)
            added = {f'{k}="{v}"' for k, v in rule.labels}
            matchers = ", ".join(m.strip() for m in out[token.brace + 1:end - 1].split(",")
                                 if m.strip() and m.replace(" ", "") not in added)
        body = inline(rule.expr, records, resolution)
        if matchers:
            body = promql.inject_selector(body, matchers, promql.metric_names(body))
        after = promql._next_non_space(out, end)
        if after < len(out) and out[after] == "[":
            close = promql._skip_group(out, after)
            window = out[after + 1:close - 1].strip()
            out = out[:token.start] + f"({body})[{window}:{_duration(max(rule.interval_s, resolution))}]" + out[close:]
        else:
            out = out[:token.start] + f"({body})" + out[end:]
    return out


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


def runs(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of every run of True in a 1-d boolean array."""
    edges = np.diff(np.concatenate(([False], present, [False])).astype(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def firing_runs(matrix: Matrix, for_s: float, step: float, keep_s: float = 0.0) -> pd.DataFrame:
    """Incidents in a matrix of an alert expression: each run of presence that lasted ``for_s``
    fires at its start + ``for_s`` (rounded up to an evaluation) and resolves at the first
    evaluation ``keep_s`` (rounded up) after its end, unless presence resumes before (the alert
    fires on, without a new ``for:``); one still firing at the end of the matrix is unresolved
    (``resolved_at`` NaN)."""
    wait, keep = (int(math.ceil(s / step - 1e-9)) for s in (for_s, keep_s))
    rows = []
    for labels, values in zip(matrix.labels, matrix.values):
        starts, ends = runs(~np.isnan(values))
        fire = None  # index the current incident fired at
        for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
            if fire is None and start + wait < end:
                fire = start + wait
            if fire is None or (i + 1 < starts.size and starts[i + 1] <= end + keep):
                continue  # not firing, or held across the gap to the next run
            resolved = end + keep
            rows.append((labels, matrix.times[fire], matrix.times[resolved] if resolved < matrix.times.size else np.nan))
            fire = None
    return _incidents(rows, matrix.times[-1] if matrix.times.size else np.nan)


def _incidents(rows: list[tuple[dict[str, str], float, float]], end: float = np.nan) -> pd.DataFrame:
    """Incidents as a table; ``firing_s`` of an unresolved one runs to ``end``."""
    frame = pd.DataFrame({
        "alertname": [r[0].get("alertname", "") for r in rows],
        "severity": [r[0].get("severity", "") for r in rows],
        "link": [r[0].get("link", "") for r in rows],
        "labels": [",".join(f"{k}={v}" for k, v in sorted(r[0].items())
                            if k not in (*IDENTITY, "alertstate", "__name__")) for r in rows],
        "firing_at": [r[1] for r in rows],
        "resolved_at": [r[2] for r in rows],
    }, columns=INCIDENT_COLUMNS[:-1])
    frame["firing_s"] = frame["resolved_at"].fillna(end) - frame["firing_at"]
    frame[ALERT_LABELS] = [{k: v for k, v in r[0].items() if k not in ("alertstate", "__name__")} for r in rows]
    return frame


@dataclass(frozen=True)
class Incidents:
    """The incidents of a period and where they came from (``ALERTS`` or rule evaluation)."""

    table: pd.DataFrame
    source: str
    not_evaluated: tuple[tuple[str, str], ...] = ()  #: (alert, why) for rules that could not be evaluated


def from_alerts_series(prom: Prometheus, start: float, end: float, step: float, alert_names: list[str]) -> pd.DataFrame:
    """Incidents from ``ALERTS{alertstate="firing"}``: each run of the series is one firing."""
    matrix = prom.range(f'ALERTS{{alertstate="firing", alertname=~"{"|".join(alert_names)}"}}', start, end, step, "ALERTS")
    return firing_runs(matrix, 0.0, step)


def evaluate(prom: Prometheus, rules: list[Rule], start: float, end: float, step: float = 0.0) -> Incidents:
    """Incidents by evaluating each alert rule over the period (see the module docstring), at its
    group's interval or at ``step`` if that is longer (``for:`` then rounds up to whole steps)."""
    records = {r.name: r for r in rules if not r.alert}
    missing = {name: rule for name, rule in records.items() if not prom.has_series(name, start, end)}
    frames, failed = [], []
    for rule in (r for r in rules if r.alert):
        try:
            # start early enough that an alert pending at the start of the period fires on time
            every = max(rule.interval_s, step)
            lead = math.ceil(rule.for_s / every - 1e-9) * every  # on the period's grid
            matrix = prom.range(inline(rule.expr, missing, every), start - lead, end, every, rule.name)
        except PrometheusError as exc:  # a rule Prometheus refuses is reported, not fatal
            failed.append((rule.name, str(exc)[:300]))
            continue
        for labels in matrix.labels:
            labels.update({"alertname": rule.name, **dict(rule.labels)})
        frames.append(firing_runs(matrix, rule.for_s, every, rule.keep_s))
    table = pd.concat(frames, ignore_index=True) if frames else _incidents([])
    source = "evaluation of the alert rules" + (f" (recording rules inlined: {len(missing)})" if missing else "")
    return Incidents(_in_period(table, start, end), source, tuple(failed))


def _in_period(table: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    """Incidents that were firing at some time in the period, in firing order."""
    keep = (table["firing_at"] <= end) & ~(table["resolved_at"] <= start)
    return table[keep].sort_values(["firing_at", "alertname", "link"], ignore_index=True)


def collect(prom: Prometheus, rules: list[Rule], start: float, end: float, step: float,
            source: str = "auto") -> Incidents:
    """Incidents of the period from ``ALERTS`` when Prometheus has it (``auto``), else by
    evaluating the rules at their interval or ``step`` if longer."""
    names = [r.name for r in rules if r.alert]
    if source == "alerts" or (source == "auto" and prom.has_series(f'ALERTS{{alertname=~"{"|".join(names)}"}}', start, end)):
        # ALERTS changes at rule evaluations: read it at the shortest rule interval, whatever the step
        interval = min((r.interval_s for r in rules if r.alert), default=60.0)
        table = from_alerts_series(prom, start, end, interval, names)
        return Incidents(_in_period(table, start, end), 'Prometheus ALERTS{alertstate="firing"} series')
    return evaluate(prom, rules, start, end, step)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Incidents grouped by alert and link: how many, how long they fired, time to resolve."""
    if table.empty:
        return pd.DataFrame(columns=["alertname", "severity", "link", "incidents", "firing_s_total",
                                     "resolve_s_median", "resolve_s_max", "unresolved"])
    grouped = table.groupby(["alertname", "severity", "link"], sort=True)
    return grouped.agg(incidents=("firing_at", "size"), firing_s_total=("firing_s", "sum"),
                       resolve_s_median=("firing_s", "median"), resolve_s_max=("firing_s", "max"),
                       unresolved=("resolved_at", lambda s: int(s.isna().sum()))).reset_index()
