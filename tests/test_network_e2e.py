"""The network view end to end: a real `qtelemetry run` with a small network, scraped, every
`qnet_` figure checked against brute force on the rates it analysed; then a fibre cut, and the
figures and the generated alert expressions (on a real Prometheus) follow within two analysis
intervals.

Sites a, b, c, d are trusted relays, e an end point. Demand ad (a to d) has two disjoint routes
(a-b-d, a-c-d), so its widest path and its max-flow differ; demand ae must leave d over the
bridge d-e, so d is an articulation point and d-e a single point of failure.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import value
from test_network_analysis import brute_disjoint, brute_min_cut, brute_widest, edges_of, failures, flow, relay_view

ROOT = Path(__file__).resolve().parents[1]
INTERVAL_S = 2.0
SITES = ["a", "b", "c", "d", "e"]
TRUSTED = [True, True, True, True, False]
LINKS = {"ab": ("a", "b", 10), "bd": ("b", "d", 40), "ac": ("a", "c", 20), "cd": ("c", "d", 30), "de": ("d", "e", 50)}
DEMANDS = {"ad": ("a", "d", 30000.0), "ae": ("a", "e", 10000.0)}


def config(token: Path) -> str:
    links = "\n".join(
        f"  - {{name: {name}, site_a: {a}, site_b: {b}, driver: {{type: simulated-bb84, fiber_length_km: {km}, "
        f"insertion_loss_db: 1.0, detector_efficiency: 0.1, misalignment_error: 0.01, clock_rate_hz: 1.0e8, "
        f"seed: {i}}}}}" for i, (name, (a, b, km)) in enumerate(LINKS.items()))
    demands = "\n".join(f"    - {{name: {name}, from: {s}, to: {t}, bits_per_second: {need:g}}}"
                        for name, (s, t, need) in DEMANDS.items())
    sites = ", ".join(f"{{name: {s}, trusted: {str(t).lower()}}}" for s, t in zip(SITES, TRUSTED))
    return (f"exporter: {{window_seconds: 0.5, sliding_windows: 6, admin_token_file: {token}}}\n"
            f"links:\n{links}\nnetwork:\n  analysis_interval_seconds: {INTERVAL_S:g}\n  sites: [{sites}]\n"
            f"  demands:\n{demands}\n")


def expected(samples: dict) -> dict:
    """Every qnet_ figure of the scrape, by brute force on the usable rates the analysis used."""
    names = list(LINKS)
    rates = [value(samples, "qnet_link_usable_key_rate_bits_per_second", link=n) for n in names]
    ends = [(SITES.index(LINKS[n][0]), SITES.index(LINKS[n][1])) for n in names]
    caps = edges_of(len(SITES), ends, rates)
    out: dict = {"link_impact": dict.fromkeys(names, 0), "site_impact": dict.fromkeys(SITES, 0)}
    for demand, (src, dst, need) in DEMANDS.items():
        s, t = SITES.index(src), SITES.index(dst)
        view = relay_view(caps, TRUSTED, s, t)
        capacity = brute_min_cut(len(SITES), view, s, t)
        after = {(kind, i): flow(len(SITES), c, TRUSTED, s, t) for kind, i, c in failures(len(SITES), ends, rates, TRUSTED, s, t)}
        out[demand] = {"single_path": brute_widest(view, s, t), "multipath": capacity,
                       "after": min(after.values(), default=capacity), "disjoint": brute_disjoint(len(SITES), view, s, t)}
        if capacity >= need:
            for (kind, i), left in after.items():
                if left < need:
                    out["link_impact" if kind == "link" else "site_impact"][names[i] if kind == "link" else SITES[i]] += 1
    return out


def check(samples: dict) -> dict:
    want = expected(samples)
    for demand in DEMANDS:
        for routing in ("single_path", "multipath"):
            got = value(samples, "qnet_demand_capacity_bits_per_second", demand=demand, routing=routing)
            assert got == pytest.approx(want[demand][routing], rel=1e-9), (demand, routing)
        assert value(samples, "qnet_demand_capacity_after_worst_failure_bits_per_second", demand=demand) == \
            pytest.approx(want[demand]["after"], rel=1e-9, abs=1e-9), demand
        assert value(samples, "qnet_demand_disjoint_paths", demand=demand) == want[demand]["disjoint"], demand
    for link, impact in want["link_impact"].items():
        assert value(samples, "qnet_link_failure_impact_demands", link=link) == impact, link
    for site, impact in want["site_impact"].items():
        assert value(samples, "qnet_site_failure_impact_demands", site=site) == impact, site
    return want


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((ROOT / "alerts" / "qtelemetry.rules.yaml").read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] if g["name"] == "qtelemetry-network" for r in g["rules"]}


def firing(stack, expr: str) -> set[str]:
    return {r["metric"]["demand"] for r in stack.query(expr)}


def test_network_figures_follow_a_fibre_cut(start_exporter, prometheus_stack, tmp_path):
    token = tmp_path / "token"
    token.write_text("admin-token")
    token.chmod(0o600)
    exporter = start_exporter(config(token))
    stack = prometheus_stack(exporter.url, alerting=False)
    analysed = lambda s: "qnet_demand_disjoint_paths" in s and all(  # noqa: E731
        value(s, "qnet_link_usable_key_rate_bits_per_second", link=n) > 0 for n in LINKS)
    samples = exporter.wait_for(analysed, timeout=60)
    # igraph loaded without the matplotlib.pyplot it imports for plotting (0.6 s, 30-47 MB); the
    # analysis process with NumPy and igraph alone, though it imported the console script again
    assert "/matplotlib/" not in Path(f"/proc/{exporter.proc.pid}/maps").read_text()
    children = Path(f"/proc/{exporter.proc.pid}/task/{exporter.proc.pid}/children").read_text().split()
    [analysis] = [m for m in (Path(f"/proc/{c}/maps").read_text() for c in children) if "/igraph/" in m]
    assert [name for name in ("scipy", "matplotlib", "aiohttp", "pydantic_core") if f"/{name}/" in analysis] == []
    want = check(samples)
    # the shape the test is built for: widest path and max-flow differ; a bridge and an articulation point
    assert want["ad"]["single_path"] < want["ad"]["multipath"] and want["ad"]["disjoint"] == 2
    assert want["ae"]["disjoint"] == 1 and want["link_impact"]["de"] == 1 and want["site_impact"]["d"] == 1
    for name in LINKS:  # the analysis used the links' secret key rates (estimates move a little between cycles)
        assert value(samples, "qnet_link_usable_key_rate_bits_per_second", link=name) == pytest.approx(
            value(samples, "qkd_secret_key_rate_bits_per_second", link=name), rel=0.2)
    assert {s.labels["link"] for s in samples["qnet_link_min_cut"] if s.labels["demand"] == "ae"} == {"de"}
    assert value(samples, "qnet_demand_route_hops", demand="ad") == 2
    assert 0 <= value(samples, "qnet_analysis_age_seconds") < 3 * INTERVAL_S

    exprs = alert_exprs()
    stack.wait_for_query("qnet_demand_capacity_after_worst_failure_bits_per_second", timeout=30)
    stack.wait_for_query(exprs["QNetRedundancyLost"], lambda r: {x["metric"]["demand"] for x in r} == {"ae"}, timeout=30)
    assert firing(stack, exprs["QNetDemandUnmet"]) == firing(stack, exprs["QNetDemandDisconnected"]) == set()

    request = urllib.request.Request(exporter.url.replace("/metrics", "/-/faults"), method="POST",
                                     data=json.dumps({"link": "ab", "kind": "fiber-cut"}).encode(),
                                     headers={"Authorization": "Bearer admin-token"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    exporter.wait_for(lambda s: value(s, "qkd_secret_key_rate_bits_per_second", link="ab") == 0, timeout=30)
    estimated_at = time.monotonic()
    cut = exporter.wait_for(lambda s: value(s, "qnet_link_usable_key_rate_bits_per_second", link="ab") == 0,
                            timeout=4 * INTERVAL_S)
    assert time.monotonic() - estimated_at <= 2 * INTERVAL_S + 1.0  # two intervals, and the polling between scrapes
    want = check(cut)
    assert want["ad"]["multipath"] == want["ad"]["single_path"] and want["ad"]["after"] == 0
    assert value(cut, "qnet_link_failure_impact_demands", link="cd") == 2  # ad and ae now both rely on it
    named = [s.labels for s in cut["qnet_demand_capacity_after_worst_failure_bits_per_second"] if s.labels["demand"] == "ad"]
    assert named[0]["failure_kind"] in ("link", "site") and named[0]["failure"] in ("ac", "cd", "c")
    stack.wait_for_query(exprs["QNetRedundancyLost"], lambda r: {x["metric"]["demand"] for x in r} == {"ad", "ae"},
                         timeout=30)
    assert firing(stack, exprs["QNetDemandUnmet"]) == set()
    assert not math.isnan(value(cut, "qnet_demand_stored_key_seconds", demand="ad"))
