"""Network analysis: what key the sites can get from each other over trusted-node relay.

Hop-by-hop trusted-node relay spends one key bit on every hop per end-to-end bit, so key obeys
flow conservation and the classical results of flows in graphs apply to the links' key rates:

- best single route: the widest (maximum-bottleneck) path, which every maximum spanning tree
  contains (Hu, Oper. Res. 9, 898 (1961));
- multipath capacity: the maximum flow, equal to the minimum cut (Ford & Fulkerson, Can. J.
  Math. 8, 399 (1956));
- redundancy: the number of node-disjoint paths, equal to the minimum vertex cut (Menger 1927);
- survivability: the maximum flow after the worst single failure of a link or a relay site (N-1);
- the ultimate bound: the same minimum cut over each link's repeaterless capacity −log₂(1−η)
  per channel use (Pirandola, Commun. Phys. 2, 51 (2019): multipath capacity of a network of
  pure-loss channels = its minimum cut).

A pure module: a ``Topology`` (sites, links, demands; built once per config) and per-link
arrays in, a ``NetworkAnalysis`` of arrays out; no I/O. The flows run in igraph's C core
(push-relabel), chosen over networkx by measured speed (bench/network.py).

Graph model: links between the same two sites add up to one edge. A relay site with exactly two
neighbours that no demand ends at only passes key along, so the edges through such sites form a
chain that carries what its narrowest edge carries (series reduction); the flows run on one arc
pair per chain, which shrinks the graph and makes failures along a chain one computation.
A site that is not trusted is split into a sending and a receiving vertex, so a flow may start
or end there but never pass through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation.graphs import components, igraph

Floats = NDArray[np.float64]
Ints = NDArray[np.intp]


@dataclass(frozen=True)
class Topology:
    """Sites, links and demands of one config, as index arrays; the graph of their arcs."""

    sites: tuple[str, ...]
    trusted: NDArray[np.bool_]  #: (sites,) may relay key
    links: tuple[str, ...]
    link_ends: Ints  #: (links, 2) site indices
    demands: tuple[str, ...]
    demand_ends: Ints  #: (demands, 2) site indices: from, to
    demand_bps: Floats  #: (demands,) key needed, bits/s
    edge_ends: Ints  #: (edges, 2) site indices of each site pair that links join
    link_edge: Ints  #: (links,) the edge each link belongs to
    sender: Ints  #: (sites,) vertex a flow leaves a site from
    receiver: Ints  #: (sites,) vertex a flow enters a site at (the same vertex for a trusted site)
    edge_chain: Ints  #: (edges,) the chain each edge is in
    chain_ends: Ints  #: (chains, 2) the sites a chain joins (equal for a loop, which carries nothing)
    site_chain: Ints  #: (sites,) the chain a pass-through site is inside, -1 for the others
    graph: igraph.Graph  #: directed: arc 2k is chain k from its first end to its second, 2k + 1 back
    latitude: Floats  #: (sites,) degrees, NaN: not known (for maps only)
    longitude: Floats
    demand_priority: Floats  #: (demands,) larger is more important (the relay's order; for alerts)

    @classmethod
    def build(cls, sites: Sequence[str], trusted: Sequence[bool], links: Sequence[str], link_ends: Sequence[Sequence[int]],
              demands: Sequence[str], demand_ends: Sequence[Sequence[int]], demand_bps: Sequence[float],
              coordinates: Sequence[tuple[float, float]] | None = None,
              demand_priority: Sequence[int] | None = None) -> "Topology":
        trusted_ = np.asarray(trusted, bool)
        ends = np.sort(np.asarray(link_ends, np.intp).reshape(-1, 2), axis=1)
        edge_ends, link_edge = np.unique(ends, axis=0, return_inverse=True)
        edge_ends = edge_ends.reshape(-1, 2)
        demand_ends_ = np.asarray(demand_ends, np.intp).reshape(-1, 2)
        sender = np.arange(len(sites))
        receiver = sender.copy()
        receiver[~trusted_] = len(sites) + np.arange(int((~trusted_).sum()))
        edge_chain, chain_ends, site_chain = _chains(len(sites), trusted_, edge_ends, demand_ends_)
        arcs = np.empty((2 * len(chain_ends), 2), np.intp)
        arcs[0::2] = np.column_stack([sender[chain_ends[:, 0]], receiver[chain_ends[:, 1]]])
        arcs[1::2] = np.column_stack([sender[chain_ends[:, 1]], receiver[chain_ends[:, 0]]])
        graph = igraph.Graph(n=len(sites) + int((~trusted_).sum()), edges=arcs.tolist(), directed=True)
        return cls(tuple(sites), trusted_, tuple(links), np.asarray(link_ends, np.intp).reshape(-1, 2), tuple(demands),
                   demand_ends_, np.asarray(demand_bps, float), edge_ends, link_edge.reshape(-1), sender, receiver,
                   edge_chain, chain_ends, site_chain, graph, *np.array(
                       coordinates if coordinates is not None else [(np.nan, np.nan)] * len(sites), float).reshape(-1, 2).T,
                   np.asarray(demand_priority if demand_priority is not None else [0] * len(demands), float))

    def edge_sums(self, per_link: Floats) -> Floats:
        """Per-edge total of a per-link quantity (parallel links add)."""
        return np.bincount(self.link_edge, weights=per_link, minlength=len(self.edge_ends))

    def chain_capacity(self, per_edge: Floats) -> Floats:
        """Per-chain capacity: its narrowest edge (edges in series); 0 for a loop."""
        capacity = np.full(len(self.chain_ends), np.inf)
        np.minimum.at(capacity, self.edge_chain, per_edge)
        capacity[self.chain_ends[:, 0] == self.chain_ends[:, 1]] = 0.0
        return capacity

    def arcs(self, per_link: Floats) -> list[float]:
        """Arc capacities of the chain graph for a per-link quantity."""
        return np.repeat(self.chain_capacity(self.edge_sums(per_link)), 2).tolist()


def _chains(n_sites: int, trusted: NDArray[np.bool_], edge_ends: Ints, demand_ends: Ints) -> tuple[Ints, Ints, Ints]:
    """Series reduction: (edge -> chain, chain ends, pass-through site -> chain or -1).

    A pass-through site is a trusted site with two neighbours where no demand ends; the edges
    meeting at one belong to the same chain.
    """
    flat = edge_ends.ravel()
    degree = np.bincount(flat, minlength=n_sites)
    through = trusted & (degree == 2)
    through[demand_ends.ravel()] = False
    order = np.argsort(flat, kind="stable")  # each pass-through site's two edges are adjacent here
    first = np.searchsorted(flat[order], np.flatnonzero(through))
    pairs = np.column_stack([order[first], order[first + 1]]) // 2
    n_edges = len(edge_ends)
    edge_chain = components(n_edges, pairs)
    # a chain's ends are its sites that are not pass-through: two per chain (none for a pure cycle)
    ends_at = ~through[flat]
    chain_of_end = np.repeat(edge_chain, 2)[ends_at]
    sites_at = flat[ends_at]
    by_chain = np.argsort(chain_of_end, kind="stable")
    n_chains = int(edge_chain.max()) + 1 if n_edges else 0
    chain_ends = np.full((n_chains, 2), -1, np.intp)
    counts = np.bincount(chain_of_end, minlength=n_chains)
    closed = counts == 2
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
    chain_ends[closed, 0] = sites_at[by_chain][start[closed]]
    chain_ends[closed, 1] = sites_at[by_chain][start[closed] + 1]
    chain_ends[~closed] = 0  # a cycle of pass-through sites only: joined to nothing, a loop
    site_chain = np.full(n_sites, -1, np.intp)
    site_chain[flat[~ends_at]] = np.repeat(edge_chain, 2)[~ends_at]
    return edge_chain, chain_ends, site_chain


@dataclass(frozen=True)
class NetworkAnalysis:
    """Per demand, per link and per site figures of one analysis; NaN where there is none."""

    single_path_bps: Floats  #: (demands,) widest path capacity
    route: tuple[Ints, ...]  #: per demand, the sites of the widest path (empty when capacity is 0)
    multipath_bps: Floats  #: (demands,) maximum flow
    min_cut: tuple[Ints, ...]  #: per demand, the links of a minimum cut
    disjoint_paths: Ints  #: (demands,) node-disjoint paths over links with key
    after_worst_failure_bps: Floats  #: (demands,) maximum flow after the worst single failure
    worst_failure: tuple[tuple[str, str], ...]  #: per demand, ("link" | "site" | "none", name)
    stored_key_seconds: Floats  #: (demands,) max flow of buffered key / demand; NaN: no buffers known
    bound_bps: Floats  #: (demands,) minimum cut of the links' repeaterless bounds; NaN: not known
    link_failure_impact: Ints  #: (links,) met demands a failure of the link alone would leave unmet
    site_failure_impact: Ints  #: (sites,) the same for a trusted site (0 for an end point)

    @property
    def route_hops(self) -> Floats:
        return np.array([len(r) - 1 if len(r) else np.nan for r in self.route])


def usable(values: Floats) -> Floats:
    """Key rates or amounts that may be used: non-finite or negative (bad data) count as none."""
    values = np.asarray(values, float)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(values) & (values > 0), values, 0.0)


def analyse(topology: Topology, rate_bps: Floats, buffer_bits: Floats | None = None,
            bound_bps: Floats | None = None) -> NetworkAnalysis:
    """Every demand's capacities, redundancy and autonomy, and every element's failure impact.

    ``rate_bps``: each link's usable key rate (0 while down); ``buffer_bits``: key in each link's
    store, NaN where not known; ``bound_bps``: each link's repeaterless bound, NaN where it has none.
    """
    top = topology
    rate = usable(rate_bps)
    capacity = top.edge_sums(rate)
    chains = top.chain_capacity(capacity)
    arcs = np.repeat(chains, 2).tolist()
    n_demands = len(top.demands)
    single, routes = widest_paths(top, capacity)
    multipath = np.zeros(n_demands)
    cuts: list[Ints] = []
    disjoint = np.zeros(n_demands, np.intp)
    after = np.zeros(n_demands)
    worst: list[tuple[str, str]] = []
    link_impact = np.zeros(len(top.links), np.intp)
    site_impact = np.zeros(len(top.sites), np.intp)
    failures = Failures.of(top, rate, capacity, chains)
    alive = top.graph.subgraph_edges(np.flatnonzero(np.repeat(chains, 2) > 0).tolist(), delete_vertices=False)
    for d in range(n_demands):
        source, target = top.sender[top.demand_ends[d, 0]], top.receiver[top.demand_ends[d, 1]]
        # igraph's GraphBase.maxflow: value, arc flows and cut as lists, without Graph.maxflow's Flow object
        multipath[d], arc_flow, cut, _ = igraph.GraphBase.maxflow(top.graph, source, target, arcs)
        cuts.append(failures.cut_links(np.unique(np.asarray(cut, np.intp) // 2)))
        disjoint[d] = disjoint_paths(alive, source, target)
        after[d], failure = failures.survive(d, multipath[d], arc_flow, link_impact, site_impact)
        worst.append(failure)
    return NetworkAnalysis(
        single_path_bps=single, route=tuple(routes), multipath_bps=multipath, min_cut=tuple(cuts),
        disjoint_paths=disjoint, after_worst_failure_bps=after, worst_failure=tuple(worst),
        stored_key_seconds=_stored_key_seconds(top, buffer_bits),
        bound_bps=_bound(top, bound_bps), link_failure_impact=link_impact, site_failure_impact=site_impact)


def max_flows(topology: Topology, per_link: Floats) -> Floats:
    """Each demand's maximum flow over per-link capacities ``per_link``."""
    arcs = topology.arcs(per_link)
    return np.array([topology.graph.maxflow_value(topology.sender[s], topology.receiver[t], arcs)
                     for s, t in topology.demand_ends.tolist()])


def _stored_key_seconds(top: Topology, buffer_bits: Floats | None) -> Floats:
    """How long the key already stored could serve each demand if no link made more: the
    maximum flow of the buffers' contents (relay spends a stored bit per hop, like a rate),
    over the demand. Links whose buffer is not known hold none; NaN when no link's is known."""
    if buffer_bits is None or np.isnan(np.asarray(buffer_bits, float)).all():
        return np.full(len(top.demands), np.nan)
    return max_flows(top, usable(buffer_bits)) / top.demand_bps


def _bound(top: Topology, bound_bps: Floats | None) -> Floats:
    """Minimum cut of the links' repeaterless bounds (Pirandola, Commun. Phys. 2, 51 (2019)). A
    link without a bound (NaN, +Inf, or bad data: negative, -Inf) may carry anything, so a cut
    through it bounds nothing: NaN. A bound of 0 (no light) is a bound."""
    if bound_bps is None:
        return np.full(len(top.demands), np.nan)
    bounds = np.asarray(bound_bps, float)
    with np.errstate(invalid="ignore"):
        unbounded = ~(np.isfinite(bounds) & (bounds >= 0))
    known = np.where(unbounded, 0.0, bounds)
    big = 2.0 * known.sum() + 1.0  # more than any cut of known bounds
    flows = max_flows(top, np.where(unbounded, big, known))
    return np.where(flows < big / 2, flows, np.nan)


def widest_paths(top: Topology, capacity: Floats) -> tuple[Floats, list[Ints]]:
    """Each demand's widest path capacity and its sites, from a maximum spanning forest of the
    relay (trusted) sites (Hu 1961), entered from an end point by one of its first hops.

    Kruskal's sweep, widest first: the forest's edges join relay sites, and an end point's link
    to a relay site attaches it to that site's tree (an end point never joins two: it does not
    relay). A demand's width is the edge at which its two ends first share a tree, its route the
    tree's path between the sites they entered by. One sweep for every demand, so an end point's
    many first hops cost one step each (a search per pair of first hops was quadratic in them:
    10.6 s for 4 demands between two end points of 300 links each).
    """
    n = len(top.sites)
    trusted_edges = np.flatnonzero(top.trusted[top.edge_ends].all(axis=1))
    forest = igraph.Graph(n=n, edges=top.edge_ends[trusted_edges].tolist())
    tree_edges = trusted_edges[forest.spanning_tree(weights=(-capacity[trusted_edges]).tolist(), return_tree=False)]
    tree = igraph.Graph(n=n, edges=top.edge_ends[tree_edges].tolist())
    demand_ends = top.demand_ends.tolist()
    of_end: dict[int, list[int]] = {}
    for d, pair in enumerate(demand_ends):
        for end in pair:
            of_end.setdefault(end, []).append(d)
    first, second = top.edge_ends[:, 0], top.edge_ends[:, 1]
    outer = np.where(top.trusted[first], second, first)
    entries = np.flatnonzero((top.trusted[first] != top.trusted[second]) & np.isin(outer, list(of_end)))
    events = np.r_[tree_edges, entries]
    events = events[np.argsort(-capacity[events], kind="stable")]
    root = list(range(n))  # union-find over the relay sites

    def find(v: int) -> int:
        while root[v] != v:
            root[v] = root[root[v]]
            v = root[v]
        return v

    # per tree (by its root): the demand ends in it, and the relay site each entered by
    inside: dict[int, dict[int, int]] = {v: {v: v} for v in of_end if top.trusted[v]}
    width, entered = np.zeros(len(demand_ends)), [(-1, -1)] * len(demand_ends)

    def attach(tree_root: int, end: int, by: int, at: float) -> None:
        members = inside.setdefault(tree_root, {})
        if end in members:
            return
        members[end] = by
        for d in of_end[end]:
            s, t = demand_ends[d]
            if entered[d][0] < 0 and s in members and t in members:
                width[d], entered[d] = at, (members[s], members[t])

    for e, c in zip(events.tolist(), capacity[events].tolist()):
        if c <= 0:
            break
        a, b = top.edge_ends[e].tolist()
        if not top.trusted[a] or not top.trusted[b]:  # an end point's first hop
            end, by = (a, b) if top.trusted[b] else (b, a)
            attach(find(by), end, by, c)
            continue
        big, small = sorted((find(a), find(b)), key=lambda r: -len(inside.get(r, ())))
        root[small] = big
        for end, by in inside.pop(small, {}).items():
            attach(big, end, by, c)
    key = top.edge_ends @ np.array([n, 1])  # sorted: the edges come from np.unique
    wanted = np.sort(top.demand_ends, axis=1) @ np.array([n, 1]) if demand_ends else np.zeros(0, np.intp)
    at = np.minimum(np.searchsorted(key, wanted), max(len(key) - 1, 0))
    direct = np.where(key[at] == wanted, capacity[at], 0.0) if len(key) else np.zeros(len(demand_ends))
    routes = []
    for d, (s, t) in enumerate(demand_ends):
        if direct[d] > 0 and direct[d] >= width[d]:
            width[d] = direct[d]
            routes.append(np.array([s, t], np.intp))
        elif width[d] > 0:
            a, b = entered[d]
            routes.append(np.array([s] * (a != s) + tree.get_shortest_path(a, b) + [t] * (b != t), np.intp))
        else:
            routes.append(np.zeros(0, np.intp))
    return width, routes


def disjoint_paths(alive: igraph.Graph, source: int, target: int) -> int:
    """Node-disjoint paths (Menger) over chains with key; each chain that joins the two ends
    directly is one path of its own."""
    direct = alive.es.select(_source=source, _target=target).indices
    if not direct:
        return int(alive.vertex_connectivity(source, target, neighbors="error"))
    rest = alive.copy()
    rest.delete_edges(direct)
    return int(rest.vertex_connectivity(source, target, neighbors="error")) + len(direct)


@dataclass(frozen=True)
class Failures:
    """The single failures of one analysis, grouped by their effect on the chain graph.

    A link failure lowers its edge by the link's rate, so its chain to the narrowest of its
    edges after that; a pass-through site failure empties its chain; any other relay site takes
    every chain it ends. Failures with the same (chain, capacity left) are one computation.
    """

    top: Topology
    chains: Floats  #: (chains,) capacity
    kind_link: NDArray[np.bool_]  #: (candidates,) a link, else a site
    element: Ints  #: (candidates,) link or site index
    group: Ints  #: (candidates,) failures with the same effect
    group_chain: Ints  #: (groups,) the chain a group changes, or -1 - site for a relay site's failure
    group_left: Floats  #: (groups,) the capacity the chain keeps
    narrowest: Ints  #: (chains,) the chain's narrowest edge

    @classmethod
    def of(cls, top: Topology, rate: Floats, capacity: Floats, chains: Floats) -> "Failures":
        n_chains = len(chains)
        order = np.lexsort((capacity, top.edge_chain))
        first = np.flatnonzero(np.r_[True, np.diff(top.edge_chain[order]) != 0]) if len(order) else np.empty(0, np.intp)
        narrowest = np.zeros(n_chains, np.intp)
        narrowest[top.edge_chain[order[first]]] = order[first]
        others = capacity.copy()
        others[narrowest] = np.inf
        second = np.full(n_chains, np.inf)
        np.minimum.at(second, top.edge_chain, others)
        edge = top.link_edge
        chain = top.edge_chain[edge]
        rest = np.where(narrowest[chain] == edge, second[chain], chains[chain])  # the chain without the link's edge
        link_left = np.minimum(rest, np.maximum(capacity[edge] - rate, 0.0))
        loop = top.chain_ends[:, 0] == top.chain_ends[:, 1]
        link_left[loop[chain]] = 0.0
        inside = np.flatnonzero(top.site_chain >= 0)
        relays = np.flatnonzero(top.trusted & (top.site_chain < 0))
        kind_link = np.r_[np.ones(len(top.links), bool), np.zeros(len(inside) + len(relays), bool)]
        element = np.r_[np.arange(len(top.links)), inside, relays]
        keys = np.column_stack([np.r_[chain, top.site_chain[inside], -1 - relays],
                                np.r_[link_left, np.zeros(len(inside) + len(relays))]])
        unique, group = np.unique(keys, axis=0, return_inverse=True)
        return cls(top, chains, kind_link, element, group.reshape(-1), unique[:, 0].astype(np.intp), unique[:, 1], narrowest)

    def cut_links(self, chains: Ints) -> Ints:
        """The links of the narrowest edge of each chain in a cut; a loop (a ring of pass-through
        sites hanging off one site) joins nothing, so it is in no cut."""
        chains = chains[self.top.chain_ends[chains, 0] != self.top.chain_ends[chains, 1]]
        return np.flatnonzero(np.isin(self.top.link_edge, self.narrowest[chains]))

    def survive(self, d: int, total: float, arc_flow: list[float], link_impact: Ints,
                site_impact: Ints) -> tuple[float, tuple[str, str]]:
        """Demand ``d``'s maximum flow after its worst single failure, and that failure; counts the
        failures that would leave the demand (met now) unmet into the impact arrays. ``total`` and
        ``arc_flow``: its maximum flow.

        Only a failure that takes capacity a flow uses can lower the maximum flow, and any flow
        minus what the failure takes from it still flows after it: a floor, the highest over the
        flows known. Two maximum flows to start from (one found from each end), and every failure
        computed gives a new flow, feasible before the failure too, so each computation raises the
        floors of the others (a failure the flow can route around usually shows that the next one
        can too). Failures are computed from the lowest floor; the search stops once no floor is
        below both the worst found and the demand.
        """
        top = self.top
        s, t = top.demand_ends[d]
        on_chain = self.group_chain >= 0
        chain = np.where(on_chain, self.group_chain, 0)
        relay = np.where(on_chain, 0, -1 - self.group_chain)

        def floors(value: float, flow: list[float]) -> Floats:
            """What still flows after each failure of a flow of ``value`` with these arc flows; inf where
            that is the whole maximum flow (a failure the flow does not feel leaves it whole)."""
            flows = np.asarray(flow, float)
            net = np.abs(flows[0::2] - flows[1::2])  # opposite flows cancel: a valid flow of the same value
            through = np.bincount(top.chain_ends.ravel(), weights=np.repeat(net, 2), minlength=len(top.sites)) / 2
            left = np.where(on_chain, value - np.maximum(net[chain] - self.group_left, 0.0), value - through[relay])
            return np.where(left >= total, np.inf, left)

        arcs = np.repeat(self.chains, 2).tolist()
        _, back, _, _ = igraph.GraphBase.maxflow(top.graph, top.sender[t], top.receiver[s], arcs)  # the other way
        floor = np.maximum(floors(total, arc_flow), floors(total, back))
        floor[~on_chain & np.isin(relay, (s, t))] = np.inf  # the demand's own ends are not its failures
        demand = top.demand_bps[d]
        met = total >= demand
        worst, failure = total, ("none", "")
        source, target = top.sender[s], top.receiver[t]
        while len(floor):
            g = int(np.argmin(floor))
            if floor[g] >= worst and (not met or floor[g] >= demand):  # also when every floor is inf
                break
            floor[g] = np.inf
            left = self.chains.copy()
            if on_chain[g]:
                left[chain[g]] = self.group_left[g]
            else:
                left[(top.chain_ends == relay[g]).any(axis=1)] = 0.0
            value, arc_flow, _, _ = igraph.GraphBase.maxflow(top.graph, source, target, np.repeat(left, 2).tolist())
            floor = np.maximum(floor, floors(value, arc_flow))  # done ones stay inf
            members = np.flatnonzero(self.group == g)
            if value < worst:
                k = members[0]
                worst = value
                failure = ("link", top.links[self.element[k]]) if self.kind_link[k] else ("site", top.sites[self.element[k]])
            if met and value < demand:
                links = self.kind_link[members]
                np.add.at(link_impact, self.element[members[links]], 1)
                np.add.at(site_impact, self.element[members[~links]], 1)
        return worst, failure
