"""What people receive: the period's alerts replayed through Alertmanager's routing, grouping and inhibition.

Alert instances fire and resolve at known times (``incidents``); this replays them through an
Alertmanager config as Alertmanager 0.25 would (dispatch/dispatch.go, notify/notify.go,
inhibit/inhibit.go):

- Routing: an alert goes down the tree to the first child whose matchers it meets (every one
  while ``continue`` is set), else stays at the node; ``group_by`` and the timers are inherited.
- Grouping: alerts of one route with the same ``group_by`` values form a group. A new group
  flushes ``group_wait`` after its first alert, then every ``group_interval``; a group whose
  alerts have all resolved and been flushed is gone, and the next alert starts a new one.
- Inhibition, at every flush: an alert is muted while a firing alert matching an inhibit rule's
  source carries the same ``equal`` labels (a label it lacks counts as empty); an alert matching
  both sides is not muted by sources that do too. Muted alerts are left out of notifications.
- Notifications (the dedup stage): a flush notifies when the firing alerts include one not in
  the group's last notification (**new**: the first of an incident, or an alert joining it; a
  *page* when a new alert is critical), when all alerts have resolved after a notified firing
  or, with ``send_resolved``, when alerts resolved since (**resolved**), and otherwise once
  ``repeat_interval`` has passed since the last one (**repeat**). A receiver without
  integrations (a null receiver) sends nothing.

Silences and time intervals are not replayed: the config is refused if a route uses them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import requests
import yaml

from qtelemetry.config import ConfigError
from qtelemetry.monitoring.config import duration_seconds
from qtelemetry.report.prometheus import redacted_url

#: Defaults of an Alertmanager root route (config/config.go).
ROOT_DEFAULTS = {"group_by": [], "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}
ROUTE_KEYS = {"receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "continue", "matchers",
              "match", "match_re", "routes"}
#: send_resolved of each integration when its config leaves it out (config/notifiers.go).
SEND_RESOLVED = {"email_configs": False, "slack_configs": False, "wechat_configs": False, "pagerduty_configs": True,
                 "opsgenie_configs": True, "victorops_configs": True, "pushover_configs": True, "sns_configs": True,
                 "telegram_configs": True, "discord_configs": True, "webex_configs": True, "msteams_configs": True,
                 "webhook_configs": True}
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^,"]*?)\s*(?:,|$)')
KINDS = ("new", "repeat", "resolved")
COLUMNS = ["time", "receiver", "group", "kind", "page", "firing", "new_alerts", "links", "alerts"]


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def __call__(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.op in ("=", "!="):
            return (have == self.value) == (self.op == "=")
        return (re.fullmatch(self.value, have) is not None) == (self.op == "=~")


def parse_matchers(texts: list[str], where: str) -> tuple[Matcher, ...]:
    """Alertmanager matcher strings (``name="value"``, ``=~``, ``!=``, ``!~``; several per string
    separated by commas, values quoted or not)."""
    out = []
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f"{where}: matcher {text!r} is not a string")
        body, pos = text.strip().removeprefix("{").removesuffix("}"), 0
        while pos < len(body):
            match = _MATCHER.match(body, pos)
            if match is None or match.end() == pos:
                raise ConfigError(f"{where}: cannot read matcher {text!r}")
            name, op, value = match.groups()
            if value.startswith('"'):
                value = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), value[1:-1])
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ConfigError(f"{where}: matcher {text!r}: bad regular expression: {exc}") from None
            out.append(Matcher(name, op, value))
            pos = match.end()
    return tuple(out)


def _legacy(equal: object, regex: object, where: str) -> tuple[Matcher, ...]:
    """``match``/``match_re`` maps (the pre-0.22 way of writing matchers)."""
    out = []
    for mapping, op in ((equal, "="), (regex, "=~")):
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}: expected a map of label to value")
        out += [Matcher(str(k), op, str(v)) for k, v in mapping.items()]
    return tuple(out)


@dataclass(frozen=True)
class Route:
    receiver: str
    group_by: tuple[str, ...] | None  #: None: every label ("...")
    group_wait: float
    group_interval: float
    repeat_interval: float
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    routes: tuple["Route", ...] = ()
    path: str = "route"

    def match(self, labels: dict[str, str]) -> list["Route"]:
        """The routes that take an alert with ``labels`` (Route.Match in dispatch/route.go)."""
        if not all(m(labels) for m in self.matchers):
            return []
        taken: list[Route] = []
        for child in self.routes:
            found = child.match(labels)
            taken += found
            if found and not child.continue_:
                break
        return taken or [self]

    def key(self, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
        names = sorted(labels) if self.group_by is None else self.group_by
        return tuple((n, labels.get(n, "")) for n in names)


def _seconds(value: object, where: str) -> float:
    try:
        return duration_seconds(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a duration") from None


def parse_route(doc: object, parent: Route | None = None, path: str = "route") -> Route:
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a map")
    unknown = sorted(set(doc) - ROUTE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: {', '.join(unknown)} cannot be replayed by the report (only routing, grouping, "
                          "timers and matchers)")
    receiver = doc.get("receiver", parent.receiver if parent else None)
    if not receiver:
        raise ConfigError(f"{path}.receiver: the root route needs a receiver")
    group_by = doc.get("group_by", ROOT_DEFAULTS["group_by"] if parent is None else parent.group_by)
    if group_by is not None and not isinstance(group_by, (list, tuple)):
        raise ConfigError(f"{path}.group_by: expected a list of label names")
    group_by = None if group_by is None or "..." in group_by else tuple(str(g) for g in group_by)
    timers = {k: _seconds(doc[k], f"{path}.{k}") if k in doc else
              getattr(parent, k) if parent else _seconds(ROOT_DEFAULTS[k], k)
              for k in ("group_wait", "group_interval", "repeat_interval")}
    matchers = parse_matchers(doc.get("matchers") or [], f"{path}.matchers") + _legacy(
        doc.get("match"), doc.get("match_re"), f"{path}.match")
    route = Route(str(receiver), group_by, matchers=matchers, continue_=bool(doc.get("continue", False)), path=path,
                  **timers)
    children = doc.get("routes") or []
    if not isinstance(children, list):
        raise ConfigError(f"{path}.routes: expected a list")
    return Route(**{**route.__dict__, "routes": tuple(parse_route(child, route, f"{path}.routes[{i}]")
                                                     for i, child in enumerate(children))})


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass(frozen=True)
class AlertmanagerConfig:
    """What the replay needs of an Alertmanager config; ``source`` says where it came from."""

    route: Route
    inhibit_rules: tuple[InhibitRule, ...]
    send_resolved: dict[str, bool]  #: per receiver; receivers without integrations are absent
    source: str = ""
    receivers: tuple[str, ...] = field(default=())


def parse_config(doc: object, source: str) -> AlertmanagerConfig:
    """An Alertmanager config document (YAML already parsed); ConfigError names the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: an Alertmanager config is a map")
    if "route" not in doc:
        raise ConfigError(f"{source}: route: missing")
    route = parse_route(doc["route"])
    send: dict[str, bool] = {}
    names = []
    for i, receiver in enumerate(doc.get("receivers") or []):
        if not isinstance(receiver, dict) or "name" not in receiver:
            raise ConfigError(f"{source}: receivers[{i}]: a receiver needs a name")
        names.append(str(receiver["name"]))
        for kind, configs in receiver.items():
            if kind.endswith("_configs") and configs:
                first = configs[0] if isinstance(configs, list) and isinstance(configs[0], dict) else {}
                send[str(receiver["name"])] = bool(first.get("send_resolved", SEND_RESOLVED.get(kind, False)))
    rules = []
    for i, rule in enumerate(doc.get("inhibit_rules") or []):
        where = f"inhibit_rules[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{source}: {where}: expected a map")
        rules.append(InhibitRule(
            parse_matchers(rule.get("source_matchers") or [], f"{where}.source_matchers")
            + _legacy(rule.get("source_match"), rule.get("source_match_re"), f"{where}.source_match"),
            parse_matchers(rule.get("target_matchers") or [], f"{where}.target_matchers")
            + _legacy(rule.get("target_match"), rule.get("target_match_re"), f"{where}.target_match"),
            tuple(str(e) for e in rule.get("equal") or ())))
    missing = sorted({r.receiver for r in _routes(route)} - set(names)) if names else []
    if missing:
        raise ConfigError(f"{source}: route: receiver {', '.join(missing)} is not defined in receivers")
    return AlertmanagerConfig(route, tuple(rules), send, source, tuple(names))


def _routes(route: Route) -> list[Route]:
    return [route, *(r for child in route.routes for r in _routes(child))]


def load(text: str, source: str) -> AlertmanagerConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not YAML: {exc}") from None
    return parse_config(doc, source)


def from_api(url: str, timeout_s: float = 30.0) -> AlertmanagerConfig:
    """The config a live Alertmanager runs (``/api/v2/status``, ``config.original``)."""
    where = redacted_url(url)
    try:
        response = requests.get(url.rstrip("/") + "/api/v2/status", timeout=timeout_s)
        response.raise_for_status()
        text = response.json()["config"]["original"]
    except requests.RequestException as exc:
        raise ConfigError(f"--alertmanager: cannot read the config of {where}: {type(exc).__name__}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"--alertmanager: {where}/api/v2/status has no config.original") from None
    return load(text, f"Alertmanager at {where}")


# --- the replay ---------------------------------------------------------------------------------


@dataclass
class _Log:
    """The notification log entry of one group and receiver: what was last sent, and when."""

    firing: frozenset[int] = frozenset()
    resolved: frozenset[int] = frozenset()
    at: float = -math.inf
    sent: bool = False


def _muted(alerts: pd.DataFrame, rules: tuple[InhibitRule, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per inhibit rule, (target rows, source rows): the pairs where the source would mute the target."""
    labels = alerts["alert_labels"].tolist()
    pairs = []
    for rule in rules:
        src = np.array([all(m(l) for m in rule.source) for l in labels], bool)
        tgt = np.array([all(m(l) for m in rule.target) for l in labels], bool)
        if not (src.any() and tgt.any()):
            continue
        key = [tuple(l.get(e, "") for e in rule.equal) for l in labels]
        frame = pd.DataFrame({"key": key, "row": np.arange(len(labels)), "fp": alerts["fingerprint"].to_numpy()})
        both = frame[src].merge(frame[tgt], on="key", suffixes=("_s", "_t"))
        both = both[both["fp_s"] != both["fp_t"]]
        # an alert on both sides is not muted by sources that are on both sides too
        two_sided = src & tgt
        both = both[~(two_sided[both["row_t"]] & two_sided[both["row_s"]])]
        pairs.append((both["row_t"].to_numpy(), both["row_s"].to_numpy()))
    return pairs


def replay(alerts: pd.DataFrame, config: AlertmanagerConfig, end: float) -> pd.DataFrame:
    """Notifications for alerts firing from ``firing_at`` to ``resolved_at`` (NaN: still firing at
    ``end``), one row each: time, receiver, group (its ``group_by`` labels), kind (new, repeat,
    resolved), whether it is a page (a new critical alert), how many alerts were firing in it, the
    new ones' names and links, and every firing alert in it (``alertname@link``)."""
    if alerts.empty:
        return pd.DataFrame(columns=COLUMNS)
    alerts = alerts.reset_index(drop=True).copy()
    keys = [tuple(sorted(l.items())) for l in alerts["alert_labels"]]
    alerts["fingerprint"] = pd.factorize(pd.Series(keys, dtype=object))[0]
    start = alerts["firing_at"].to_numpy(float)
    stop = alerts["resolved_at"].fillna(np.inf).to_numpy(float)
    pairs = _muted(alerts, config.inhibit_rules)

    def muted_at(t: float) -> np.ndarray:
        muted = np.zeros(len(alerts), bool)
        for targets, sources in pairs:
            live = (start[sources] <= t) & (t < stop[sources])
            muted[targets[live]] = True
        return muted

    groups: dict[tuple, list[int]] = {}
    for row, labels in enumerate(alerts["alert_labels"]):
        for route in config.route.match(labels):
            groups.setdefault((route.path, route.key(labels)), []).append(row)
    routes = {r.path: r for r in _routes(config.route)}
    out = []
    for (path, key), rows in groups.items():
        route = routes[path]
        out += _group(alerts.iloc[rows], np.asarray(rows), route, key, muted_at, config, end)
    frame = pd.DataFrame(out, columns=COLUMNS)
    return frame.sort_values(["time", "receiver", "group"], ignore_index=True)


def _group(alerts: pd.DataFrame, rows: np.ndarray, route: Route, key: tuple, muted_at, config: AlertmanagerConfig,
           end: float) -> list[tuple]:
    """One group's notifications: flushes while it has alerts, a new group at the next arrival."""
    start = alerts["firing_at"].to_numpy(float)
    stop = alerts["resolved_at"].fillna(np.inf).to_numpy(float)
    fps = alerts["fingerprint"].to_numpy()
    order = np.argsort(start, kind="stable")
    log = _Log()
    deleted = np.zeros(len(alerts), bool)
    integrations = route.receiver in config.send_resolved
    send_resolved = config.send_resolved.get(route.receiver, False)
    group = ",".join(f"{k}={v}" for k, v in key)
    out = []
    t = start[order[0]] + route.group_wait
    while t <= end:
        present = (start <= t) & ~deleted
        muted = muted_at(t)[rows]
        firing_rows = present & (t < stop)
        firing = frozenset(fps[firing_rows & ~muted].tolist())
        resolved = frozenset(fps[present & ~firing_rows & ~muted].tolist()) - firing
        kind = _needs_update(log, firing, resolved, route.repeat_interval, send_resolved, t)
        if kind is not None:
            new = firing_rows & ~muted & ~np.isin(fps, list(log.firing))
            if integrations and (firing or send_resolved):
                names = sorted(set(alerts["alertname"].to_numpy()[new]))
                links = sorted(set(alerts["link"].to_numpy()[new]) - {""})
                page = bool((alerts["severity"].to_numpy()[new] == "critical").any())
                shown = firing_rows & ~muted
                every = sorted(f"{a}@{l}" for a, l in zip(alerts["alertname"].to_numpy()[shown],
                                                          alerts["link"].to_numpy()[shown]))
                out.append((t, route.receiver, group, kind, page, len(firing), ",".join(names), ",".join(links),
                            ",".join(every)))
            log = _Log(firing, resolved, t, True)
        deleted |= present & (stop <= t)
        if (start <= t).all() and deleted.all():
            break
        if not (present & ~deleted).any():  # the group is gone; the next alert starts a new one
            t = start[~deleted].min() + route.group_wait
        else:
            t += route.group_interval
    return out


def _needs_update(log: _Log, firing: frozenset[int], resolved: frozenset[int], repeat: float, send_resolved: bool,
                  now: float) -> str | None:
    """DedupStage.needsUpdate of notify/notify.go, naming why a notification goes out."""
    if not log.sent:
        return "new" if firing else None
    if not firing <= log.firing:
        return "new"
    if not firing:
        return "resolved" if log.firing else None
    if send_resolved and not resolved <= log.resolved:
        return "resolved"
    return "repeat" if log.at < now - repeat else None


def by_receiver(notes: pd.DataFrame) -> pd.DataFrame:
    """Per receiver: notifications, and of those the pages, other new ones, repeats and resolved ones."""
    kind = np.where(notes["page"].astype(bool), "pages", notes["kind"].map({"new": "other new"}).fillna(notes["kind"]))
    counts = pd.crosstab(notes["receiver"], kind).reindex(columns=["pages", "other new", "repeat", "resolved"],
                                                           fill_value=0)
    counts.insert(0, "notifications", counts.sum(axis=1))
    return counts.rename_axis(columns=None).reset_index()
