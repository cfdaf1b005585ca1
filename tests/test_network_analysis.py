"""The network analysis against brute force on random small graphs, and the Pirandola bound of a
chain and a diamond of pure-loss links against its closed form.

The brute force knows nothing of flows or of the engine's graph model: a relay constraint means
end points other than the demand's two ends are deleted; capacities are minimum cuts found by
enumerating every vertex subset; widest paths by enumerating every simple path; redundancy by
enumerating vertex cuts (Menger); N-1 and failure impact by removing each element in turn.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtelemetry.estimation.network import Topology, analyse

# --- brute force --------------------------------------------------------------------------


def edges_of(n, ends, rates):
    """{(a, b): summed rate} of the site pairs, a < b."""
    caps: dict[tuple[int, int], float] = {}
    for (a, b), r in zip(ends, rates):
        key = (min(a, b), max(a, b))
        caps[key] = caps.get(key, 0.0) + r
    return caps


def relay_view(caps, trusted, s, t):
    """The edges key can use between s and t: none touching an end point other than s and t."""
    allowed = {v for v in range(len(trusted)) if trusted[v]} | {s, t}
    return {e: c for e, c in caps.items() if e[0] in allowed and e[1] in allowed}


def brute_min_cut(n, caps, s, t):
    others = [v for v in range(n) if v not in (s, t)]
    best = math.inf
    for k in range(len(others) + 1):
        for side in itertools.combinations(others, k):
            source_side = {s, *side}
            best = min(best, sum(c for (a, b), c in caps.items() if (a in source_side) != (b in source_side)))
    return best


def brute_widest(caps, s, t):
    adjacency: dict[int, list[int]] = {}
    for a, b in caps:
        adjacency.setdefault(a, []).append(b)
        adjacency.setdefault(b, []).append(a)
    best = 0.0

    def walk(v, seen, width):
        nonlocal best
        if v == t:
            best = max(best, width)
            return
        for w in adjacency.get(v, []):
            if w not in seen:
                walk(w, seen | {w}, min(width, caps[(min(v, w), max(v, w))]))
    walk(s, {s}, math.inf)
    return best


def connected(caps, s, t, removed=()):
    reach, frontier = {s}, [s]
    while frontier:
        v = frontier.pop()
        for (a, b), c in caps.items():
            for x, y in ((a, b), (b, a)):
                if x == v and y not in reach and y not in removed and c > 0:
                    reach.add(y)
                    frontier.append(y)
    return t in reach


def brute_disjoint(n, caps, s, t):
    live = {e: c for e, c in caps.items() if c > 0}
    direct = (min(s, t), max(s, t)) in live
    live.pop((min(s, t), max(s, t)), None)
    others = [v for v in range(n) if v not in (s, t)]
    for k in range(len(others) + 1):  # the smallest vertex cut (Menger)
        if any(not connected(live, s, t, cut) for cut in itertools.combinations(others, k)):
            return k + direct
    return len(others) + direct  # unreachable: a fully connected graph


def failures(n, ends, rates, trusted, s, t):
    """(kind, index, edge capacities after it) for every link and relay site other than s and t."""
    for i in range(len(ends)):
        yield "link", i, edges_of(n, ends, [0.0 if j == i else r for j, r in enumerate(rates)])
    for v in range(n):
        if trusted[v] and v not in (s, t):
            yield "site", v, {e: c for e, c in edges_of(n, ends, rates).items() if v not in e}


def flow(n, caps, trusted, s, t):
    return brute_min_cut(n, relay_view(caps, trusted, s, t), s, t)


# --- random small networks ----------------------------------------------------------------


@st.composite
def networks(draw, sites=(3, 6), links=(2, 10), trusted=st.booleans()):
    """Random networks of ``sites`` sites (least, most), ``links`` links, each site trusted as drawn
    from ``trusted``."""
    n = draw(st.integers(*sites))
    links = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] != e[1]),
                          min_size=links[0], max_size=links[1]))
    rates = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 0.5]), min_size=len(links), max_size=len(links)))
    trusted = draw(st.lists(trusted, min_size=n, max_size=n))
    pairs = [(s, t) for s in range(n) for t in range(n) if s != t]
    demands = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=4))
    needs = draw(st.lists(st.sampled_from([0.5, 1.0, 3.0, 6.0]), min_size=len(demands), max_size=len(demands)))
    return n, links, rates, trusted, demands, needs


def build(n, links, trusted, demands, needs):
    return Topology.build([f"s{i}" for i in range(n)], trusted, [f"l{i}" for i in range(len(links))], links,
                          [f"d{i}" for i in range(len(demands))], demands, needs)


@settings(max_examples=150, deadline=None)
@given(networks())
def test_analysis_equals_brute_force(network):
    n, links, rates, trusted, demands, needs = network
    top = build(n, links, trusted, demands, needs)
    result = analyse(top, np.array(rates), buffer_bits=np.array(rates) * 10)
    caps = edges_of(n, links, rates)
    link_impact, site_impact = np.zeros(len(links), int), np.zeros(n, int)
    for d, ((s, t), need) in enumerate(zip(demands, needs)):
        view = relay_view(caps, trusted, s, t)
        capacity = brute_min_cut(n, view, s, t)
        assert result.multipath_bps[d] == pytest.approx(capacity)
        assert result.single_path_bps[d] == pytest.approx(brute_widest(view, s, t))
        assert result.disjoint_paths[d] == brute_disjoint(n, view, s, t)
        assert result.stored_key_seconds[d] == pytest.approx(10 * capacity / need)
        after = {(kind, i): flow(n, c, trusted, s, t) for kind, i, c in failures(n, links, rates, trusted, s, t)}
        worst = min(after.values(), default=capacity)
        assert result.after_worst_failure_bps[d] == pytest.approx(worst)
        kind, name = result.worst_failure[d]
        if worst < capacity:  # the failure named is one that does it
            assert after[(kind, int(name[1:]))] == pytest.approx(worst)
        else:
            assert kind == "none"
        if capacity >= need:
            for (kind, i), value in after.items():
                if value < need:
                    (link_impact if kind == "link" else site_impact)[i] += 1
        # the route: its hops exist, only trusted sites relay, and its narrowest hop is the width
        route = result.route[d].tolist()
        if result.single_path_bps[d] > 0:
            assert route[0] == s and route[-1] == t and len(set(route)) == len(route)
            assert all(trusted[v] for v in route[1:-1])
            assert min(caps.get((min(a, b), max(a, b)), 0.0) for a, b in zip(route, route[1:])) == \
                pytest.approx(result.single_path_bps[d])
        # the minimum cut's links cut every path and add up to the capacity
        cut = set(result.min_cut[d].tolist())
        rest = edges_of(n, [e for i, e in enumerate(links) if i not in cut], [r for i, r in enumerate(rates) if i not in cut])
        assert not connected(relay_view({e: 1.0 for e in rest}, trusted, s, t), s, t)
        assert sum(rates[i] for i in cut) == pytest.approx(capacity)
    assert result.link_failure_impact.tolist() == link_impact.tolist()
    assert result.site_failure_impact.tolist() == site_impact.tolist()


def test_bad_rates_count_as_no_key():
    top = build(3, [(0, 1), (1, 2), (0, 2)], [True] * 3, [(0, 2)], [1.0])
    result = analyse(top, np.array([np.nan, -4.0, np.inf]))
    assert result.multipath_bps.tolist() == [0.0] and result.single_path_bps.tolist() == [0.0]
    assert np.isnan(result.route_hops[0]) and result.disjoint_paths.tolist() == [0]


# --- the repeaterless bound of a network (Pirandola, Commun. Phys. 2, 51 (2019)) ------------

CLOCK_HZ = 1e9


def pure_loss_bound(km):
    """−log₂(1−η) per channel use of a pure-loss fibre of 0.2 dB/km, times the clock rate."""
    eta = 10 ** (-0.02 * np.asarray(km, float))
    return -np.log2(1 - eta) * CLOCK_HZ


def test_chain_bound_is_the_weakest_link():
    km = [12.0, 47.0, 30.0, 85.0]  # a repeater chain: its capacity is min_i −log₂(1−η_i)
    top = build(5, [(i, i + 1) for i in range(4)], [True] * 5, [(0, 4)], [1.0])
    result = analyse(top, np.zeros(4), bound_bps=pure_loss_bound(km))
    closed_form = -np.log2(1 - 10 ** (-0.02 * max(km))) * CLOCK_HZ
    assert result.bound_bps[0] == pytest.approx(closed_form, rel=1e-12)


def test_diamond_bound_is_its_minimum_cut():
    # s=0, relays a=1, b=2, t=3: routes s-a-t and s-b-t; the flooding capacity is the minimum over
    # the four cuts {sa, sb}, {at, bt}, {sa, bt}, {sb, at} of the summed −log₂(1−η)
    km = {"sa": 20.0, "at": 60.0, "sb": 45.0, "bt": 25.0}
    top = build(4, [(0, 1), (1, 3), (0, 2), (2, 3)], [True] * 4, [(0, 3), (1, 2)], [1.0, 1.0])
    result = analyse(top, np.zeros(4), bound_bps=pure_loss_bound([km["sa"], km["at"], km["sb"], km["bt"]]))
    c = {k: -math.log2(1 - 10 ** (-0.02 * v)) * CLOCK_HZ for k, v in km.items()}
    closed_form = min(c["sa"] + c["sb"], c["at"] + c["bt"], c["sa"] + c["bt"], c["sb"] + c["at"])
    assert closed_form == pytest.approx(min(c["sa"], c["at"]) + min(c["sb"], c["bt"]))  # two disjoint chains
    assert result.bound_bps[0] == pytest.approx(closed_form, rel=1e-12)
    # between the two relays: both routes through s and t
    assert result.bound_bps[1] == pytest.approx(min(c["sa"] + c["at"], c["at"] + c["sb"], c["sa"] + c["bt"],
                                                    c["sb"] + c["bt"]), rel=1e-12)


def test_a_link_without_a_bound_bounds_nothing():
    top = build(3, [(0, 1), (1, 2)], [True] * 3, [(0, 2), (1, 2)], [1.0, 1.0])
    result = analyse(top, np.ones(2), bound_bps=np.array([5.0, np.nan]))
    assert result.bound_bps[0] == 5.0 and np.isnan(result.bound_bps[1])
    for bad in (-5.0, -np.inf):  # bad data is no bound, not a bound of 0 (which says no key is possible)
        result = analyse(top, np.ones(2), bound_bps=np.array([5.0, bad]))
        assert result.bound_bps[0] == 5.0 and np.isnan(result.bound_bps[1])


def test_a_ring_of_relays_hanging_off_an_end_point_is_in_no_cut():
    # found by hypothesis: relays 2 and 3 form a loop through end point 0, which cannot relay
    top = build(4, [(0, 1), (0, 1), (0, 2), (0, 3), (2, 3)], [False, False, True, True], [(1, 0)], [0.5])
    result = analyse(top, np.array([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert result.multipath_bps.tolist() == [0.0] and result.min_cut[0].tolist() == [0, 1]


# --- N-1 on larger networks, where the search for the worst failure prunes most failures ----


def nx_flow(caps, trusted, s, t):
    """Maximum flow by networkx (another solver) over the edges key may use between s and t."""
    graph = nx.Graph()
    graph.add_nodes_from((s, t))
    graph.add_weighted_edges_from(((a, b, c) for (a, b), c in relay_view(caps, trusted, s, t).items()), weight="capacity")
    return nx.maximum_flow_value(graph, s, t)


@settings(max_examples=60, deadline=None)
@given(networks(sites=(8, 14), links=(12, 40), trusted=st.sampled_from([True, True, True, False])))
def test_n_minus_1_on_larger_networks_equals_every_single_removal(network):
    """Every single failure recomputed from scratch by networkx: the worst and the impacts the
    analysis finds after skipping the failures its flows prove harmless."""
    n, links, rates, trusted, demands, needs = network
    result = analyse(build(n, links, trusted, demands, needs), np.array(rates))
    caps = edges_of(n, links, rates)
    link_impact, site_impact = np.zeros(len(links), int), np.zeros(n, int)
    for d, ((s, t), need) in enumerate(zip(demands, needs)):
        capacity = nx_flow(caps, trusted, s, t)
        after = {(kind, i): nx_flow(c, trusted, s, t) for kind, i, c in failures(n, links, rates, trusted, s, t)}
        assert result.after_worst_failure_bps[d] == pytest.approx(min(after.values(), default=capacity))
        for (kind, i), value in after.items():
            if capacity >= need and value < need:
                (link_impact if kind == "link" else site_impact)[i] += 1
    assert result.link_failure_impact.tolist() == link_impact.tolist()
    assert result.site_failure_impact.tolist() == site_impact.tolist()


# --- stored-key autonomy and the bound, with stores and bounds drawn apart from the rates ----


@settings(max_examples=150, deadline=None)
@given(networks(), st.data())
def test_stored_key_and_bound_equal_brute_force_minimum_cuts(network, data):
    """Each link's store and bound drawn on their own (not known: NaN; a bound of +Inf), against
    brute-force minimum cuts: stored key counts a store not known as empty, and is absent when no
    store is known; a cut through a link without a bound bounds nothing (absent if every cut does).
    (The brute-force test above has stores proportional to the rates, so stored key was its
    capacity over again.)"""
    n, links, rates, trusted, demands, needs = network
    amounts = st.sampled_from([np.nan, 0.0, 1.0, 2.0, 4.0, 7.0, -3.0])
    stores = np.array(data.draw(st.lists(amounts, min_size=len(links), max_size=len(links))))
    bounds = np.array(data.draw(st.lists(st.one_of(amounts, st.just(np.inf)), min_size=len(links), max_size=len(links))))
    result = analyse(build(n, links, trusted, demands, needs), np.array(rates), stores, bounds)
    held = edges_of(n, links, np.where(np.isfinite(stores) & (stores > 0), stores, 0.0))
    unbounded = edges_of(n, links, (~(np.isfinite(bounds) & (bounds >= 0))).astype(float))  # negative: bad data
    bound_caps = edges_of(n, links, np.where(np.isfinite(bounds) & (bounds > 0), bounds, 0.0))
    for d, ((s, t), need) in enumerate(zip(demands, needs)):
        if np.isnan(stores).all():
            assert np.isnan(result.stored_key_seconds[d])
        else:
            assert result.stored_key_seconds[d] == pytest.approx(flow(n, held, trusted, s, t) / need)
        # the cuts that cross no unbounded link; the bound is the smallest of them, NaN if there is none
        finite = {e: (math.inf if unbounded[e] else c) for e, c in bound_caps.items()}
        expected = flow(n, finite, trusted, s, t)
        if math.isinf(expected):
            assert np.isnan(result.bound_bps[d])
        else:
            assert result.bound_bps[d] == pytest.approx(expected)


def test_widest_paths_between_end_points_of_many_links_equal_networkx():
    """Two end points linked to every site of a ring of relays (a data centre homed on a metro):
    each demand's width against the path in networkx's maximum spanning tree of the links key may
    use for it (Hu 1961, another implementation), and its route is a path of that width. (A search
    per pair of first hops took 10.6 s for 4 such demands at 300 links each.)"""
    k = 60
    rng = np.random.default_rng(5)
    ends = [(i, (i + 1) % k) for i in range(k)] + [(k, i) for i in range(k)] + [(k + 1, i) for i in range(k)] + [(k, k + 1)]
    rates = rng.choice([1.0, 2.0, 3.0, 5.0, 8.0], len(ends))
    rates[-1] = 0.5  # the end points' own direct link, narrower than a relayed route
    trusted = [True] * k + [False, False]
    demands = [(k, k + 1), (k + 1, k), (k, 7), (3, k + 1), (3, 40)]
    result = analyse(build(k + 2, ends, trusted, demands, [1.0] * len(demands)), rates)
    caps = edges_of(k + 2, ends, rates)
    for d, (s, t) in enumerate(demands):
        view = nx.Graph()
        view.add_weighted_edges_from((a, b, c) for (a, b), c in relay_view(caps, trusted, s, t).items())
        tree = nx.maximum_spanning_tree(view)
        path = nx.shortest_path(tree, s, t)
        want = min(tree[a][b]["weight"] for a, b in zip(path, path[1:]))
        assert result.single_path_bps[d] == want, d
        route = result.route[d].tolist()
        assert route[0] == s and route[-1] == t and all(trusted[v] for v in route[1:-1])
        assert min(caps[(min(a, b), max(a, b))] for a, b in zip(route, route[1:])) == want
