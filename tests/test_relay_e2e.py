"""Failover of the simulated key relay with a real `qtelemetry run` and a real Prometheus.

Sites a, b, c, d are trusted, e an end point. Demand ad has two routes (a-b-d, the widest, and
a-c-d, which alone carries more than ad needs: N-1 capacity ≥ demand); demand ae must leave d over
the bridge d-e. A fibre cut on a-b moves both demands to a-c-d within failover_seconds + one
window and ad's delivery is whole again; a cut on d-e leaves ae no second route: its relayed key
stops once d-e's store is spent, and QNetDemandUnmet (the committed rule, `for:` held at 0) fires
for ae only. Exact timing on a virtual clock: tests/test_relay.py.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import value
from realstack import fast_rule_copies

ROOT = Path(__file__).resolve().parents[1]
WINDOW_S, FAILOVER_S = 0.5, 1.0
LINKS = {"ab": ("a", "b", 10), "bd": ("b", "d", 10), "ac": ("a", "c", 20), "cd": ("c", "d", 20), "de": ("d", "e", 10)}
NEED = {"ad": ("a", "d", 5000), "ae": ("a", "e", 3000)}


def config(token: Path) -> str:
    links = "".join(
        f"  - {{name: {name}, site_a: {a}, site_b: {b}, driver: {{type: simulated-bb84, fiber_length_km: {km}, "
        f"clock_rate_hz: 1.0e7, key_buffer_capacity_bits: 20000, seed: {i}}}}}\n"
        for i, (name, (a, b, km)) in enumerate(LINKS.items()))
    demands = "".join(f"    - {{name: {n}, from: {s}, to: {t}, bits_per_second: {bps}}}\n" for n, (s, t, bps) in NEED.items())
    return (f"exporter: {{window_seconds: {WINDOW_S}, sliding_windows: 6, admin_token_file: {token}}}\nlinks:\n{links}"
            f"network:\n  analysis_interval_seconds: 1\n  failover_seconds: {FAILOVER_S}\n"
            f"  sites: [{{name: a}}, {{name: b}}, {{name: c}}, {{name: d}}, {{name: e, trusted: false}}]\n"
            f"  demands:\n{demands}")


def cut(exporter, link: str) -> None:
    request = urllib.request.Request(exporter.url.replace("/metrics", "/-/faults"), method="POST",
                                     data=json.dumps({"link": link, "kind": "fiber-cut"}).encode(),
                                     headers={"Authorization": "Bearer admin-token"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def rates(stack, demand: str, since: float) -> tuple[float, float]:
    """(requested, delivered) bits/s of ``demand`` between the first sample Prometheus has after
    ``since`` (Unix s) and its latest one, once they are 4 s apart (the relay adds a window's bits
    per cycle, so this is within a window's worth of the truth)."""
    pair = f'{{__name__=~"qnet_demand_(requested|delivered)_bits_total", demand="{demand}"}}'
    result: list = []

    def spread(r: list) -> bool:
        result[:] = r
        points = [[(float(t), float(v)) for t, v in x["values"] if float(t) > since] for x in r]
        return len(points) == 2 and all(p and p[-1][0] - p[0][0] >= 4 for p in points)

    stack.wait_for_query(f"{pair}[2m]", spread, timeout=30)
    got = {}
    for x in result:
        points = [(float(t), float(v)) for t, v in x["values"] if float(t) > since]
        got[x["metric"]["__name__"]] = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
    return got["qnet_demand_requested_bits_total"], got["qnet_demand_delivered_bits_total"]


def test_relay_fails_over_and_an_unmet_demand_pages(start_exporter, prometheus_stack, tmp_path):
    token = tmp_path / "token"
    token.write_text("admin-token")
    token.chmod(0o600)
    exporter = start_exporter(config(token))
    rules = fast_rule_copies([ROOT / "alerts" / "qtelemetry.rules.yaml"], tmp_path / "rules", hold="0s")
    stack = prometheus_stack(exporter.url, rules, alerting=False)
    before = exporter.wait_for(lambda s: "qnet_demand_delivered_bits_total" in s
                               and "qnet_demand_capacity_bits_per_second" in s, timeout=60)
    assert value(before, "qnet_demand_relay_route_hops", demand="ad") == 2
    requested, delivered = rates(stack, "ad", time.time())
    assert delivered == pytest.approx(requested, rel=1e-6) and requested == pytest.approx(5000, rel=0.25)

    cut(exporter, "ab")
    injected = time.monotonic()
    moved = exporter.wait_for(lambda s: value(s, "qnet_demand_reroutes_total", demand="ad") == 1, timeout=30)
    # failover_seconds + one window, and the 0.1 s polling of the scrapes (the exact bound: test_relay.py)
    assert time.monotonic() - injected <= FAILOVER_S + WINDOW_S + 1.0
    assert value(moved, "qnet_demand_reroutes_total", demand="ae") == 1
    assert value(moved, "qnet_demand_relay_route_hops", demand="ae") == 3  # a-c-d-e
    # delivery returns to the demand: Prometheus sees whole windows after the reroute
    requested, delivered = rates(stack, "ad", time.time())
    assert delivered == pytest.approx(requested, rel=1e-6)
    assert value(moved, "qkd_key_delivered_bits_total", link="ac") > 0  # the new route's hops give the key

    cut(exporter, "de")
    alerts = 'ALERTS{alertname="QNetDemandUnmet", alertstate="firing"}'
    firing = stack.wait_for_query(alerts, lambda r: {x["metric"]["demand"] for x in r} == {"ae"}, timeout=60)
    assert firing[0]["metric"]["severity"] == "critical"
    # no second route: no reroute, and once d-e's store is spent ae gets nothing
    spent = exporter.wait_for(lambda s: value(s, "qkd_key_buffer_bits", link="de") == 0, timeout=30)
    assert value(spent, "qnet_demand_reroutes_total", demand="ae") == 1
    requested, delivered = rates(stack, "ae", time.time())
    assert requested == pytest.approx(3000, rel=0.25) and delivered == 0
    assert stack.query(f'{alerts[:-1]}, demand="ad"}}') == []
