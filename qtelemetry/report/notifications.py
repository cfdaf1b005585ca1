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
  both sides is not muted by sources that do too. Muted alerts are left out of notifications, and
  a flush whose alerts are all muted stops there (no notification, nothing logged).
- Notifications (the dedup stage): a flush notifies when the firing alerts include one not in
  the group's last notification (**new**: the first of an incident, or an alert joining it; a
  *page* when a new alert is critical), when all alerts have resolved after a notified firing
  or, with ``send_resolved``, when alerts resolved since (**resolved**), and otherwise once
  ``repeat_interval`` has passed since the last one (**repeat**). A receiver without
  integrations (a null receiver) sends nothing.

Silences and time intervals are not replayed: the config is refused if a route uses them.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from qtelemetry.configfile import load_yaml
from qtelemetry.drivers.https import TooLarge, classify, read_body
from qtelemetry.errors import ConfigError
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
#: Largest ``/api/v2/status`` answer read: an Alertmanager config is a few hundred kB at most.
MAX_STATUS_BYTES = 4 * 2**20
KINDS = ("new", "repeat", "resolved")
COLUMNS = ["time", "receiver", "group", "kind", "page", "firing", "new_alerts", "links", "alerts"]


class Refused(ValueError):
    """A setting the replay cannot use: which field, and why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def mask(self, labels: pd.DataFrame) -> np.ndarray:
        """Which alerts (rows of ``labels``, one column per label name, "" where absent) it matches."""
        have = labels[self.name] if self.name in labels else pd.Series("", index=labels.index)
        hit = have.eq(self.value) if self.op in ("=", "!=") else have.str.fullmatch(self.value)
        return hit.to_numpy(bool) == (self.op in ("=", "=~"))


def matching(matchers: tuple[Matcher, ...], labels: pd.DataFrame) -> np.ndarray:
    out = np.ones(len(labels), bool)
    for m in matchers:
        out &= m.mask(labels)
    return out


def parse_matchers(texts: list[str], where: str) -> tuple[Matcher, ...]:
    """Alertmanager matcher strings (``name="value"``, ``=~``, ``!=``, ``!~``; several per string
    separated by commas, values quoted or not)."""
    out = []
    for text in texts:
        if not isinstance(text, str):
            raise Refused(where, f"matcher {text!r} is not a string")
        body, pos = text.strip().removeprefix("{").removesuffix("}"), 0
        while pos < len(body):
            match = _MATCHER.match(body, pos)
            if match is None or match.end() == pos:
                raise Refused(where, f"cannot read matcher {text!r}")
            name, op, value = match.groups()
            if value.startswith('"'):
                value = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), value[1:-1])
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise Refused(where, f"matcher {text!r}: bad regular expression: {exc}") from None
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
            raise Refused(where, "expected a map of label to value")
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

    def take(self, labels: pd.DataFrame, offered: np.ndarray) -> list[tuple["Route", np.ndarray]]:
        """The routes that take each offered alert, with the alerts each takes (Route.Match in
        dispatch/route.go: the first matching child, every one while ``continue`` is set, else this one)."""
        mine = offered & matching(self.matchers, labels)
        left, taken, out = mine.copy(), np.zeros(len(labels), bool), []
        for child in self.routes:
            found = child.take(labels, left)
            out += found
            hit = np.logical_or.reduce([m for _, m in found]) if found else np.zeros(len(labels), bool)
            taken |= hit
            if not child.continue_:
                left &= ~hit
        own = mine & ~taken
        return out + ([(self, own)] if own.any() else [])


def _seconds(value: object, where: str) -> float:
    try:
        return duration_seconds(str(value))
    except ValueError:
        raise Refused(where, f"{value!r} is not a duration") from None


def parse_route(doc: object, parent: Route | None = None, path: str = "route") -> Route:
    if not isinstance(doc, dict):
        raise Refused(path, "expected a map")
    unknown = sorted(set(doc) - ROUTE_KEYS)
    if unknown:
        raise Refused(path, f"{', '.join(unknown)} cannot be replayed by the report (only routing, grouping, "
                          "timers and matchers)")
    receiver = doc.get("receiver", parent.receiver if parent else None)
    if not receiver:
        raise Refused(f"{path}.receiver", "the root route needs a receiver")
    group_by = doc.get("group_by", ROOT_DEFAULTS["group_by"] if parent is None else parent.group_by)
    if group_by is not None and not isinstance(group_by, (list, tuple)):
        raise Refused(f"{path}.group_by", "expected a list of label names")
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
        raise Refused(f"{path}.routes", "expected a list")
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
    try:
        return _parse(doc, source)
    except Refused as exc:
        raise ConfigError(source, [(exc.field, exc.reason)]) from None


def _parse(doc: object, source: str) -> AlertmanagerConfig:
    if not isinstance(doc, dict):
        raise Refused("(top level)", "an Alertmanager config is a map")
    if "route" not in doc:
        raise Refused("route", "missing")
    route = parse_route(doc["route"])
    send: dict[str, bool] = {}
    names = []
    for i, receiver in enumerate(doc.get("receivers") or []):
        if not isinstance(receiver, dict) or "name" not in receiver:
            raise Refused(f"receivers[{i}]", "a receiver needs a name")
        names.append(str(receiver["name"]))
        for kind, configs in receiver.items():
            if kind.endswith("_configs") and configs:
                first = configs[0] if isinstance(configs, list) and isinstance(configs[0], dict) else {}
                send[str(receiver["name"])] = bool(first.get("send_resolved", SEND_RESOLVED.get(kind, False)))
    rules = []
    for i, rule in enumerate(doc.get("inhibit_rules") or []):
        where = f"inhibit_rules[{i}]"
        if not isinstance(rule, dict):
            raise Refused(where, "expected a map")
        if not isinstance(rule.get("equal") or [], list):
            raise Refused(f"{where}.equal", "expected a list of label names")
        rules.append(InhibitRule(
            parse_matchers(rule.get("source_matchers") or [], f"{where}.source_matchers")
            + _legacy(rule.get("source_match"), rule.get("source_match_re"), f"{where}.source_match"),
            parse_matchers(rule.get("target_matchers") or [], f"{where}.target_matchers")
            + _legacy(rule.get("target_match"), rule.get("target_match_re"), f"{where}.target_match"),
            tuple(str(e) for e in rule.get("equal") or ())))
    missing = sorted({r.receiver for r in _routes(route)} - set(names)) if names else []
    if missing:
        raise Refused("route", f"receiver {', '.join(missing)} is not defined in receivers")
    return AlertmanagerConfig(route, tuple(rules), send, source, tuple(names))


def _routes(route: Route) -> list[Route]:
    return [route, *(r for child in route.routes for r in _routes(child))]


def load(text: str, source: str) -> AlertmanagerConfig:
    return parse_config(load_yaml(text, source), source)


class _Original(BaseModel):
    original: str


class _Status(BaseModel):
    """The part of ``/api/v2/status`` the replay reads."""

    config: _Original


def from_api(url: str, timeout_s: float = 30.0) -> AlertmanagerConfig:
    """The config a live Alertmanager runs (``/api/v2/status``, ``config.original``), read within
    ``timeout_s`` and ``MAX_STATUS_BYTES``; ConfigError if it cannot be read (the URL's user info
    never in the message)."""
    where = redacted_url(url)

    async def fetch() -> tuple[int, bytes]:
        async with aiohttp.ClientSession(trust_env=True) as session:
            async with session.get(url.rstrip("/") + "/api/v2/status") as response:
                return response.status, await read_body(response, MAX_STATUS_BYTES)

    def refused(reason: str) -> ConfigError:
        return ConfigError("--alertmanager", [(where, reason)])

    try:
        status, body = asyncio.run(asyncio.wait_for(fetch(), timeout_s))
    except TimeoutError:
        raise refused(f"cannot read its config: no answer within {timeout_s:g} s") from None
    except TooLarge:
        raise refused(f"cannot read its config: the answer is over {MAX_STATUS_BYTES // 2**20} MiB") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise refused(f"cannot read its config: {classify(exc, 'status').reason.replace('_', ' ')}") from None
    try:
        original = _Status.model_validate_json(body).config.original
    except ValidationError:
        raise refused(f"HTTP {status}: /api/v2/status has no config.original") from None
    return load(original, f"Alertmanager at {where}")


# --- the replay ---------------------------------------------------------------------------------


@dataclass
class _Log:
    """The notification log entry of one group and receiver: what was last sent, and when."""

    firing: frozenset[int] = frozenset()
    resolved: frozenset[int] = frozenset()
    at: float = -math.inf
    sent: bool = False


def _muted(labels: pd.DataFrame, fingerprints: np.ndarray,
           rules: tuple[InhibitRule, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per inhibit rule, (target rows, source rows): the pairs where the source would mute the target."""
    pairs = []
    for rule in rules:
        src, tgt = matching(rule.source, labels), matching(rule.target, labels)
        if not (src.any() and tgt.any()):
            continue
        equal = [e for e in rule.equal if e in labels]  # a label nobody has is equal (empty) everywhere
        frame = labels[equal].assign(_row=np.arange(len(labels)), _fp=fingerprints, _key=0)
        both = frame[src].merge(frame[tgt], on=[*equal, "_key"], suffixes=("_s", "_t"))
        both = both[both["_fp_s"] != both["_fp_t"]]
        # an alert on both sides is not muted by sources that are on both sides too
        two_sided = src & tgt
        both = both[~(two_sided[both["_row_t"]] & two_sided[both["_row_s"]])]
        pairs.append((both["_row_t"].to_numpy(), both["_row_s"].to_numpy()))
    return pairs


def replay(alerts: pd.DataFrame, config: AlertmanagerConfig, end: float) -> pd.DataFrame:
    """Notifications for alerts firing from ``firing_at`` to ``resolved_at`` (NaN: still firing at
    ``end``), one row each: time, receiver, group (its ``group_by`` labels), kind (new, repeat,
    resolved), whether it is a page (a new critical alert), how many alerts were firing in it, the
    new ones' names and links, and every firing alert in it (``alertname@link``)."""
    if alerts.empty:
        return pd.DataFrame(columns=COLUMNS)
    alerts = alerts.reset_index(drop=True).copy()
    labels = pd.DataFrame.from_records(alerts["alert_labels"].tolist()).fillna("").astype(str)
    names = sorted(labels.columns)
    alerts["fingerprint"] = labels.groupby(names, sort=False).ngroup().to_numpy()  # one alert, several firings
    start = alerts["firing_at"].to_numpy(float)
    stop = alerts["resolved_at"].fillna(np.inf).to_numpy(float)
    pairs = _muted(labels, alerts["fingerprint"].to_numpy(), config.inhibit_rules)
    targets = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0, np.intp)
    sources = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0, np.intp)
    out = []
    for route, taken in config.route.take(labels, np.ones(len(labels), bool)):
        by = names if route.group_by is None else list(route.group_by)
        keys = labels.reindex(columns=by, fill_value="")[taken]
        for key, part in keys.groupby(by, sort=True) if by else [((), keys)]:
            rows = part.index.to_numpy()  # ascending
            group = ",".join(f"{k}={v}" for k, v in zip(by, key if isinstance(key, tuple) else (key,)))
            mine = np.isin(targets, rows)
            mutes = Mutes(np.searchsorted(rows, targets[mine]), start[sources[mine]], stop[sources[mine]])
            out += _group(alerts.iloc[rows], route, group, mutes, config, end)
    frame = pd.DataFrame(out, columns=COLUMNS)
    return frame.sort_values(["time", "receiver", "group"], ignore_index=True)


@dataclass(frozen=True)
class Mutes:
    """What can mute a group's alerts: per (alert of the group, source alert) pair, when the source fires."""

    targets: np.ndarray  #: positions in the group
    start: np.ndarray
    stop: np.ndarray

    def at(self, t: float, n: int) -> np.ndarray:
        muted = np.zeros(n, bool)
        muted[self.targets[(self.start <= t) & (t < self.stop)]] = True
        return muted


def _group(alerts: pd.DataFrame, route: Route, group: str, mutes: Mutes, config: AlertmanagerConfig,
           end: float) -> list[tuple]:
    """One group's notifications: flushes while it has alerts, a new group at the next arrival.
    Flushes at which nothing can have changed (no alert arrived, resolved or changed its muting,
    no repeat due) are skipped: they send nothing."""
    start = alerts["firing_at"].to_numpy(float)
    stop = alerts["resolved_at"].fillna(np.inf).to_numpy(float)
    fps = alerts["fingerprint"].to_numpy()
    events = np.unique(np.concatenate([start, stop, mutes.start, mutes.stop]))
    events = events[np.isfinite(events)]
    log = _Log()
    deleted = np.zeros(len(alerts), bool)
    integrations = route.receiver in config.send_resolved
    send_resolved = config.send_resolved.get(route.receiver, False)
    out = []
    t = start.min() + route.group_wait
    while t <= end:
        present = (start <= t) & ~deleted
        muted = mutes.at(t, len(alerts))
        firing_rows = present & (t < stop)
        firing = frozenset(fps[firing_rows & ~muted].tolist())
        resolved = frozenset(fps[present & ~firing_rows & ~muted].tolist()) - firing
        kind = _needs_update(log, firing, resolved, route.repeat_interval, send_resolved, t) if firing | resolved else None
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
        if deleted.all():
            break
        if not (present & ~deleted).any():  # the group is gone; the next alert starts a new one
            t = start[~deleted].min() + route.group_wait
            continue
        # the next flush at or after the next event, or the first after a repeat falls due
        upcoming = events[np.searchsorted(events, t, side="right"):]
        steps = math.ceil((upcoming[0] - t) / route.group_interval) if upcoming.size else math.inf
        if log.sent and firing:
            steps = min(steps, math.floor((log.at + route.repeat_interval - t) / route.group_interval) + 1)
        if not math.isfinite(steps):
            break
        t += route.group_interval * max(1, steps)
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
