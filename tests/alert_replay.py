"""Replay an alert timeline into a real Alertmanager, faster than real time, and collect what it sends.

Alerts are posted to Alertmanager's API at their (compressed) firing time with ``endsAt`` at
their (compressed) resolution, so Alertmanager resolves them on its own clock; the routing
timers (``group_wait``, ``group_interval``, ``repeat_interval``) are compressed by the same
factor and every receiver with integrations notifies one webhook receiver instead. What the
webhook receives is what Alertmanager would send for the timeline at full speed, as long as
the timeline's events keep clear of the flushes (the caller chooses a ``group_wait`` that keeps
them apart) and no group empties and refills within 30 s of wall time (Alertmanager removes an
empty group at its next 30 s maintenance, which is not compressed).
"""

from __future__ import annotations

import copy
import time
from datetime import datetime, timezone
from pathlib import Path

from realstack import Alertmanager, WebhookReceiver

from qtelemetry.monitoring.config import duration_seconds

TIMERS = ("group_wait", "group_interval", "repeat_interval")


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def compressed(config: dict, speedup: float, webhook_url: str) -> dict:
    """``config`` with its route timers divided by ``speedup`` and each receiver's integrations
    replaced by the webhook at ``webhook_url`` (the notification names its receiver)."""
    out = copy.deepcopy(config)

    def scale(route: dict) -> None:
        for key in TIMERS:
            if key in route:
                route[key] = _ms(duration_seconds(route[key]) / speedup)
        for child in route.get("routes", []):
            scale(child)

    scale(out["route"])
    for receiver in out["receivers"]:
        if any(k.endswith("_configs") for k in receiver):
            for key in [k for k in receiver if k.endswith("_configs")]:
                del receiver[key]
            receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    out.pop("global", None)
    return out


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def replay(workdir: Path, alerts: list[dict], config: dict, start: float, end: float, speedup: float) -> list[dict]:
    """Post ``alerts`` (``labels``, ``firing_at``, ``resolved_at`` or None, in timeline seconds) to an
    Alertmanager running ``config`` compressed by ``speedup``; the notifications it sends before
    ``end`` (Alertmanager's webhook JSON), each with ``at`` (timeline seconds) added."""
    webhook = WebhookReceiver(workdir / "webhook.jsonl")
    manager = Alertmanager(workdir, webhook.url, config=compressed(config, speedup, webhook.url))
    try:
        wall0 = time.time() + 1.0
        wall = lambda t: wall0 + (t - start) / speedup  # noqa: E731
        for at in sorted({a["firing_at"] for a in alerts}):
            batch = [{"labels": a["labels"], "startsAt": _iso(wall(at)),
                      "endsAt": _iso(wall(a["resolved_at"]) if a["resolved_at"] is not None else wall(end) + 3600)}
                     for a in alerts if a["firing_at"] == at]
            time.sleep(max(0.0, wall(at) - time.time()))
            manager.post_alerts(batch)
        time.sleep(max(0.0, wall(end) - time.time()))
    finally:
        manager.stop()
        webhook.stop()
    notes = [n for n in webhook.snapshot() if n["_received_at"] <= wall(end)]
    for note in notes:
        note["at"] = start + (note["_received_at"] - wall0) * speedup
    return notes
