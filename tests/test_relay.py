"""The simulated key relay on a virtual clock: key is conserved hop by hop, a busy hop's store
drains, and a cut hop's routes fail over after `failover_seconds`.

The checks read what the links' own counters say (`key_generated/requested/delivered_bits`
totals per link, summed over the parallel links of a hop) against the demands' ledger, so the
relay cannot agree with itself: every bit a demand got must have left the store of every hop of
the route it used in that window, and no store gives more than it made plus what it held.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_network_analysis import brute_min_cut, edges_of, networks, relay_view
from test_network_analysis import build as build_topology

from qtelemetry.config import parse_config
from qtelemetry.estimation.relay import Routes, choose_routes, deliver
from qtelemetry.runtime.engine import Engine

CAPACITY, INITIAL = 2.0e5, 0.5


def link(name: str, a: str, b: str, km: float, seed: int, faults: str = "") -> str:
    return (f"  - {{name: {name}, site_a: {a}, site_b: {b}, driver: {{type: simulated-bb84, fiber_length_km: {km}, "
            f"clock_rate_hz: 1.0e7, seed: {seed}, key_buffer_capacity_bits: {CAPACITY}, "
            f"key_buffer_initial_ratio: {INITIAL}{faults}}}}}\n")


def cut(at: float) -> str:
    return f", faults: [{{kind: fiber-cut, start_s: {at}}}]"


def build(links: str, demands: str, routing: str = "widest-path", failover: float = 3.0, window: float = 1.0) -> Engine:
    text = (f"exporter: {{window_seconds: {window}, stall_timeout_seconds: 7200}}\nlinks:\n{links}"
            f"network:\n  routing: {routing}\n  failover_seconds: {failover}\n  demands:\n{demands}")
    return Engine(parse_config(text), 0.0)


def run(engine: Engine, steps: int, window: float = 1.0) -> list[dict]:
    """Cycle ``steps`` windows; per step the links' key totals, the demands' ledger and routes."""
    table, out = engine.table, []
    for i in range(1, steps + 1):
        snap = engine.snapshot(engine.cycle(i * window))
        totals = {k: np.zeros(len(table)) for k in ("key_generated_bits", "key_requested_bits", "key_delivered_bits",
                                                    "key_stored_bits")}
        for protocol, group in snap.groups.items():
            for k in totals:
                source = group.totals if k in group.totals else group.estimates
                if k in source:  # links without a key store have no key counts
                    totals[k][table.groups[protocol]] = source[k]
        out.append({"t": i * window, **totals, "relay": snap.relay,
                    "routes": [[set(edges.tolist()) for edges, _ in r] for r in engine.relay.routes]})
    return out


# a-b twice (parallel systems), b-c, a-c, c-d, d-e; every demand crosses b-c (17 kbit/s) until it
# is cut at 12 s, then they all move to the 60 km hop a-c (2.7 kbit/s), which drains and goes short
SHARED = (link("ab1", "a", "b", 10, 1) + link("ab2", "a", "b", 15, 2) + link("bc", "b", "c", 20, 3, cut(12))
          + link("ac", "a", "c", 60, 4) + link("cd", "c", "d", 20, 5) + link("de", "d", "e", 25, 6))
DEMANDS = ("    - {name: ad, from: a, to: d, bits_per_second: 6000}\n"
           "    - {name: be, from: b, to: e, bits_per_second: 5000}\n"
           "    - {name: ac, from: a, to: c, bits_per_second: 4000}\n")


def per_edge(engine: Engine, per_link: np.ndarray) -> np.ndarray:
    top = engine.table.network
    return np.bincount(top.link_edge, weights=per_link, minlength=len(top.edge_ends))


@pytest.mark.parametrize("routing", ["widest-path", "multipath"])
def test_key_is_conserved_hop_by_hop(routing):
    engine = build(SHARED, DEMANDS, routing)
    steps = run(engine, 30)
    top = engine.table.network
    last = steps[-1]
    # each demand asked for its rate over the run; no store gave more than it made plus what it held
    assert np.allclose(last["relay"].requested_bits, top.demand_bps * 30)
    assert np.all(last["key_delivered_bits"] <= last["key_generated_bits"] + INITIAL * CAPACITY + 1e-6)
    assert np.all(last["key_stored_bits"] >= 0)
    assert np.all(last["relay"].delivered_bits <= last["relay"].requested_bits + 1e-6)
    # some demand went short (the busy hop), and the cut forced a reroute
    assert (last["relay"].delivered_bits < last["relay"].requested_bits - 1).any()
    assert last["relay"].reroutes.sum() >= 1
    previous = {"relay_delivered": np.zeros(len(top.demands)), "key_delivered_bits": np.zeros(len(top.links))}
    for step in steps:
        got = step["relay"].delivered_bits - previous["relay_delivered"]
        drawn = per_edge(engine, step["key_delivered_bits"] - previous["key_delivered_bits"])
        routed = np.zeros(len(top.edge_ends), bool)
        for routes in step["routes"]:
            for edges in routes:
                routed[list(edges)] = True
        assert np.all(drawn[~routed] == 0)  # a hop on no route gives nothing
        if routing == "widest-path":  # one path per demand: each hop gives the sum of its demands' key
            want = np.zeros(len(top.edge_ends))
            for d, routes in enumerate(step["routes"]):
                for edges in routes:
                    want[list(edges)] += got[d]
            assert drawn == pytest.approx(want, rel=1e-9, abs=1e-6), step["t"]
        previous = {"relay_delivered": step["relay"].delivered_bits, "key_delivered_bits": step["key_delivered_bits"]}


def test_multipath_key_leaves_the_source_and_reaches_the_target():
    """One demand split over two routes: what its source's hops and its target's hops give is
    what it got, window by window."""
    links = link("ab", "a", "b", 10, 1) + link("bd", "b", "d", 30, 2) + link("ac", "a", "c", 20, 3) + link("cd", "c", "d", 25, 4)
    engine = build(links, "    - {name: ad, from: a, to: d, bits_per_second: 60000}\n", "multipath")
    steps = run(engine, 20)
    assert all(len(s["routes"][0]) == 2 for s in steps)
    names = engine.table.names
    at_a = [names.index("ab"), names.index("ac")]
    at_d = [names.index("bd"), names.index("cd")]
    before = np.zeros(len(names)), 0.0
    for step in steps:
        drawn = step["key_delivered_bits"] - before[0]
        got = step["relay"].delivered_bits[0] - before[1]
        assert drawn[at_a].sum() == pytest.approx(got, rel=1e-9) and drawn[at_d].sum() == pytest.approx(got, rel=1e-9)
        before = step["key_delivered_bits"], step["relay"].delivered_bits[0]
    assert steps[-1]["relay"].delivered_bits[0] > 0


def test_a_busy_hop_drains_its_store():
    """A demand above its only route's key rate empties the narrowest hop's store, then gets that rate."""
    links = link("ab", "a", "b", 10, 1) + link("bc", "b", "c", 80, 2)
    engine = build(links, "    - {name: ac, from: a, to: c, bits_per_second: 50000}\n")
    steps = run(engine, 40)
    bc = engine.table.names.index("bc")
    rate = steps[0]["key_generated_bits"][bc]  # per 1 s window
    assert 0 < rate < 50000
    stored = [s["key_stored_bits"][bc] for s in steps]
    assert stored[-1] == pytest.approx(0, abs=1e-6) and stored[0] > stored[-1]
    late = steps[-1]["relay"].delivered_bits[0] - steps[-11]["relay"].delivered_bits[0]
    assert late == pytest.approx(10 * rate, rel=0.01)  # once empty, the hop passes on what it makes


@pytest.mark.parametrize("window,failover", [(1.0, 3.0), (2.0, 3.0), (2.0, 0.0), (1.0, 5.0)])
def test_failover_after_failover_seconds(window, failover):
    """Cut the widest route's first hop at t = 10 s: the demand keeps its key from what the cut hop
    stores, moves to the other route between failover_seconds and failover_seconds + one window
    after the cut, and is met there."""
    links = (link("ab", "a", "b", 10, 1, cut(10)) + link("bd", "b", "d", 10, 2) + link("ac", "a", "c", 30, 3)
             + link("cd", "c", "d", 30, 4))
    engine = build(links, "    - {name: ad, from: a, to: d, bits_per_second: 10000}\n", failover=failover, window=window)
    steps = run(engine, int(30 / window), window)
    top = engine.table.network
    via_b = {e for e, (a, b) in enumerate(top.edge_ends.tolist()) if top.sites[a] == "a" and top.sites[b] == "b"}
    assert via_b <= steps[0]["routes"][0][0]
    rerouted = next(s["t"] for s in steps if s["relay"].reroutes[0] == 1)
    assert failover <= rerouted - 10 <= failover + window
    assert not (via_b & steps[-1]["routes"][0][0])
    assert steps[-1]["relay"].reroutes[0] == 1
    # met all along: the cut hop's store bridged the gap
    assert steps[-1]["relay"].delivered_bits[0] == pytest.approx(steps[-1]["relay"].requested_bits[0])
    assert steps[-1]["relay"].route_hops[0] == 2
    # the ledger of the gap: the route was down from the cut to the reroute; what it delivered
    # meanwhile (every window but the reroute's, which the new route serves) came from the cut hop's store
    assert steps[-1]["relay"].route_down_seconds[0] == pytest.approx(rerouted - 10)
    assert steps[-1]["relay"].bridged_bits[0] == pytest.approx(10000 * (rerouted - 10 - window))


def test_a_repaired_hop_takes_back_a_demand_its_detour_cannot_carry():
    """The detour a-c-d (60 km hops, 2.7 kbit/s) cannot carry 10 kbit/s: when a-b comes back after
    its 10 s cut, the demand returns to a-b-d (a second reroute) and is whole again."""
    links = (link("ab", "a", "b", 10, 1, ", faults: [{kind: fiber-cut, start_s: 10, duration_s: 10}]")
             + link("bd", "b", "d", 10, 2) + link("ac", "a", "c", 60, 3) + link("cd", "c", "d", 60, 4))
    engine = build(links, "    - {name: ad, from: a, to: d, bits_per_second: 10000}\n", failover=2.0)
    steps = run(engine, 40)
    reroutes = [s["relay"].reroutes[0] for s in steps]
    assert reroutes[-1] == 2 and reroutes[11] == 1  # off at 12 s (two seconds after the cut), back after the repair
    assert steps[-1]["routes"] == steps[0]["routes"]
    late = steps[-1]["relay"].delivered_bits[0] - steps[-6]["relay"].delivered_bits[0]
    assert late == pytest.approx(5 * 10000)


def test_without_a_second_route_the_demand_goes_unmet(monkeypatch):
    """The bridge d-e is cut: no reroute, the route spends what the cut hop stores, then nothing;
    having found no other route once, the relay does not search again every cycle."""
    import qtelemetry.runtime.relay as relay_module

    searches = []
    real = relay_module.choose_routes
    monkeypatch.setattr(relay_module, "choose_routes", lambda *a: searches.append(a[2].tolist()) or real(*a))
    links = link("ad", "a", "d", 10, 1) + link("de", "d", "e", 10, 2, cut(5))
    engine = build(links, "    - {name: ae, from: a, to: e, bits_per_second: 20000}\n", failover=1.0)
    steps = run(engine, 30)
    assert searches == [[0], [0]]  # the first route, and one search when the bridge's cut is 1 s old
    relay = steps[-1]["relay"]
    assert relay.reroutes[0] == 0
    spent = [s["relay"].delivered_bits[0] for s in steps]
    assert spent[-1] == spent[-5] < relay.requested_bits[0]  # the store is empty: nothing more arrives
    de = engine.table.names.index("de")
    assert steps[-1]["key_stored_bits"][de] == pytest.approx(0, abs=1e-6)


def test_links_that_are_not_simulated_are_not_relayed_over():
    """A demand that needs a link without a simulated key store (a heralded memory link here) is not relayed (no relay series); the others are."""
    links = (link("ab", "a", "b", 10, 1) + link("bc", "b", "c", 10, 2)
             + "  - {name: cd, site_a: c, site_b: d, driver: {type: simulated-heralded, fiber_length_km: 10, seed: 7}}\n")
    demands = ("    - {name: ac, from: a, to: c, bits_per_second: 100}\n"
               "    - {name: ad, from: a, to: d, bits_per_second: 100}\n")
    engine = build(links, demands)
    relay = run(engine, 3)[-1]["relay"]
    assert relay.delivered_bits[0] == pytest.approx(300) and np.isnan(relay.delivered_bits[1])


@settings(max_examples=150, deadline=None)
@given(networks())
def test_multipath_routes_carry_the_max_flow_within_every_hop(network):
    """The max-flow split into paths, on random small networks: every path joins the demand's ends
    over trusted sites, the paths' flows (share × the brute-force minimum cut) fit every hop, and
    they add up to that cut."""
    n, links, rates, trusted, demands, needs = network
    top = build_topology(n, links, trusted, demands, needs)
    capacity = top.edge_sums(np.array(rates))
    routes = choose_routes(top, capacity, np.arange(len(demands)), "multipath")
    caps = edges_of(n, links, rates)
    for (s, t), route in zip(demands, routes):
        value = brute_min_cut(n, relay_view(caps, trusted, s, t), s, t)
        assert sum(share for _, share in route) == pytest.approx(1.0 if value > 0 else 0.0)
        load = np.zeros(len(top.edge_ends))
        for edges, share in route:
            ends = top.edge_ends[edges]
            sites = np.bincount(ends.ravel(), minlength=n)
            assert sites[s] == 1 and sites[t] == 1 and set(np.flatnonzero(sites == 1)) == {s, t}  # a simple s-t path
            assert all(trusted[v] for v in np.flatnonzero(sites == 2))
            load[edges] += share * value
        assert np.all(load <= capacity + 1e-9)


def test_a_link_without_data_is_a_hop_down_and_the_demand_still_asks():
    """Links whose fleet gave no window this cycle (failed, or bad data) make no key and are drawn
    on by nobody; the demand asks for its key by the clock all the same and goes short."""
    engine = build(link("ab", "a", "b", 10, 1) + link("bc", "b", "c", 10, 2),
                   "    - {name: ac, from: a, to: c, bits_per_second: 1000}\n")
    relay = engine.relay
    relay.step(1.0, np.array([1.0, 1.0]), np.array([5e4, 5e4]), np.array([1e5, 1e5]))
    draw = relay.step(2.0, np.array([1.0, np.nan]), np.array([5e4, 0.0]), np.array([1e5, 0.0]))
    assert relay.requested[0] == 2000 and relay.delivered[0] == 1000
    assert np.all(draw.taken == 0) and relay.route_down_s[0] == 1.0


def test_a_reload_keeps_the_demands_ledger():
    """The relay of a reloaded config goes on counting for the demands both configs have."""
    links = link("ab", "a", "b", 10, 1) + link("bc", "b", "c", 10, 2)
    demand = "    - {name: ac, from: a, to: c, bits_per_second: 1000}\n"
    old = build(links, demand)
    run(old, 3)
    new = build(links, demand + "    - {name: ab, from: a, to: b, bits_per_second: 500}\n")
    new.adopt(old)
    new.cycle(4.0)
    assert new.relay.requested.tolist() == [4000, 500] and new.relay.delivered.tolist() == [4000, 500]


def test_higher_priority_demands_get_their_key_first():
    """One 4,000-bit store on the shared hop a-b, three demands a->c of 3,000 bit/s each: the
    priority-5 demand gets all it asks, the two priority-1 demands share the 1,000 bits left in
    proportion to their asks (500 each); with equal priorities all three share alike (4,000/3)."""
    links = link("ab", "a", "b", 10, 1) + link("bc", "b", "c", 10, 2)

    def delivered(priorities: tuple[int, ...]) -> list[float]:
        engine = build(links, "".join(f"    - {{name: d{i}, from: a, to: c, bits_per_second: 3000, priority: {p}}}\n"
                                      for i, p in enumerate(priorities)))
        engine.relay.step(1.0, np.ones(2), np.ones(2), np.array([4000.0, 1e5]))
        return engine.relay.delivered.tolist()

    assert delivered((1, 5, 1)) == pytest.approx([500, 3000, 500])
    assert delivered((0, 0, 0)) == pytest.approx([4000 / 3] * 3)
    assert delivered((2, 1, 0)) == pytest.approx([3000, 1000, 0])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_strict_priority_never_overdraws_a_hop_and_lower_priorities_cannot_take_from_higher(data):
    """On random paths over random stores: no hop gives more than it holds, and what the paths of
    each priority and above get does not change when every lower-priority path is removed."""
    n_edges = data.draw(st.integers(1, 6))
    n_paths = data.draw(st.integers(1, 8))
    paths = [data.draw(st.lists(st.integers(0, n_edges - 1), min_size=1, max_size=n_edges, unique=True))
             for _ in range(n_paths)]
    request = np.array(data.draw(st.lists(st.floats(0, 1e4), min_size=n_paths, max_size=n_paths)))
    priority = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n_paths, max_size=n_paths)), float)
    available = np.array(data.draw(st.lists(st.floats(0, 2e4), min_size=n_edges, max_size=n_edges)))
    routes = Routes.of([[(np.array(p, np.intp), 1.0)] for p in paths], n_edges)
    got = deliver(routes, request, available, priority)
    assert np.all(got >= 0) and np.all(got <= request + 1e-9)
    assert np.all(routes.hops.T @ got <= available * (1 + 1e-9) + 1e-9)
    for level in np.unique(priority):
        keep = priority >= level
        alone = Routes.of([[(np.array(p, np.intp), 1.0)] for p, k in zip(paths, keep) if k], n_edges)
        assert deliver(alone, request[keep], available, priority[keep]) == pytest.approx(got[keep], rel=1e-9, abs=1e-9)
