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

Graph model: links between the same two sites add up to one edge. Each edge is two opposite
arcs of its capacity. A site that is not trusted is split into a sending and a receiving
vertex, so a flow may start or end there but never pass through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import igraph
import numpy as np
from numpy.typing import NDArray

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
    graph: igraph.Graph  #: directed: arc 2e is edge e from its first site to its second, 2e + 1 back
    latitude: Floats  #: (sites,) degrees, NaN: not known (for maps only)
    longitude: Floats

    @classmethod
    def build(cls, sites: Sequence[str], trusted: Sequence[bool], links: Sequence[str], link_ends: Sequence[Sequence[int]],
              demands: Sequence[str], demand_ends: Sequence[Sequence[int]], demand_bps: Sequence[float],
              coordinates: Sequence[tuple[float, float]] | None = None) -> "Topology":
        trusted_ = np.asarray(trusted, bool)
        ends = np.sort(np.asarray(link_ends, np.intp).reshape(-1, 2), axis=1)
        edge_ends, link_edge = np.unique(ends, axis=0, return_inverse=True)
        sender = np.arange(len(sites))
        receiver = sender.copy()
        receiver[~trusted_] = len(sites) + np.arange(int((~trusted_).sum()))
        arcs = np.empty((2 * len(edge_ends), 2), np.intp)
        arcs[0::2] = np.column_stack([sender[edge_ends[:, 0]], receiver[edge_ends[:, 1]]])
        arcs[1::2] = np.column_stack([sender[edge_ends[:, 1]], receiver[edge_ends[:, 0]]])
        graph = igraph.Graph(n=len(sites) + int((~trusted_).sum()), edges=arcs.tolist(), directed=True)
        return cls(tuple(sites), trusted_, tuple(links), np.asarray(link_ends, np.intp).reshape(-1, 2), tuple(demands),
                   np.asarray(demand_ends, np.intp).reshape(-1, 2), np.asarray(demand_bps, float), edge_ends,
                   link_edge.reshape(-1), sender, receiver, graph, *np.array(
                       coordinates if coordinates is not None else [(np.nan, np.nan)] * len(sites), float).reshape(-1, 2).T)

    def edge_sums(self, per_link: Floats) -> Floats:
        """Per-edge total of a per-link quantity (parallel links add)."""
        return np.bincount(self.link_edge, weights=per_link, minlength=len(self.edge_ends))


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
    arcs = np.repeat(capacity, 2)
    n_demands = len(top.demands)
    single, routes = widest_paths(top, capacity)
    multipath = np.zeros(n_demands)
    cuts: list[Ints] = []
    disjoint = np.zeros(n_demands, np.intp)
    after = np.zeros(n_demands)
    worst: list[tuple[str, str]] = []
    link_impact = np.zeros(len(top.links), np.intp)
    site_impact = np.zeros(len(top.sites), np.intp)
    alive = top.graph.subgraph_edges(np.flatnonzero(arcs > 0).tolist(), delete_vertices=False)
    for d in range(n_demands):
        source, target = top.sender[top.demand_ends[d, 0]], top.receiver[top.demand_ends[d, 1]]
        flow = top.graph.maxflow(source, target, arcs.tolist())
        multipath[d] = flow.value
        cuts.append(np.flatnonzero(np.isin(top.link_edge, np.unique(np.asarray(flow.cut, np.intp) // 2))))
        disjoint[d] = disjoint_paths(alive, source, target)
        after[d], failure = survive(top, d, rate, capacity, flow, link_impact, site_impact)
        worst.append(failure)
    return NetworkAnalysis(
        single_path_bps=single, route=tuple(routes), multipath_bps=multipath, min_cut=tuple(cuts),
        disjoint_paths=disjoint, after_worst_failure_bps=after, worst_failure=tuple(worst),
        stored_key_seconds=_stored_key_seconds(top, buffer_bits),
        bound_bps=_bound(top, bound_bps), link_failure_impact=link_impact, site_failure_impact=site_impact)


def max_flows(topology: Topology, capacity: Floats) -> Floats:
    """Each demand's maximum flow over edge capacities ``capacity``."""
    arcs = np.repeat(capacity, 2).tolist()
    return np.array([topology.graph.maxflow_value(topology.sender[s], topology.receiver[t], arcs)
                     for s, t in topology.demand_ends.tolist()])


def _stored_key_seconds(top: Topology, buffer_bits: Floats | None) -> Floats:
    """How long the key already stored could serve each demand if no link made more: the
    maximum flow of the buffers' contents (relay spends a stored bit per hop, like a rate),
    over the demand. Links whose buffer is not known hold none; NaN when no link's is known."""
    if buffer_bits is None or np.isnan(np.asarray(buffer_bits, float)).all():
        return np.full(len(top.demands), np.nan)
    return max_flows(top, top.edge_sums(usable(buffer_bits))) / top.demand_bps


def _bound(top: Topology, bound_bps: Floats | None) -> Floats:
    """Minimum cut of the links' repeaterless bounds (Pirandola, Commun. Phys. 2, 51 (2019)). A
    link without a bound may carry anything, so a cut through it bounds nothing: NaN."""
    if bound_bps is None:
        return np.full(len(top.demands), np.nan)
    bounds = np.asarray(bound_bps, float)
    known = usable(bounds)
    unbounded = np.isnan(bounds) | np.isposinf(bounds)
    big = 2.0 * known.sum() + 1.0  # more than any cut of known bounds
    flows = max_flows(top, top.edge_sums(np.where(unbounded, big, known)))
    return np.where(flows < big / 2, flows, np.nan)


def widest_paths(top: Topology, capacity: Floats) -> tuple[Floats, list[Ints]]:
    """Each demand's widest path capacity and its sites, from a maximum spanning forest of the
    relay (trusted) sites (Hu 1961), entered from an end point by its best first hop."""
    trusted_edges = np.flatnonzero(top.trusted[top.edge_ends].all(axis=1))
    forest = igraph.Graph(n=len(top.sites), edges=top.edge_ends[trusted_edges].tolist())
    tree_edges = trusted_edges[forest.spanning_tree(weights=(-capacity[trusted_edges]).tolist(), return_tree=False)]
    tree = igraph.Graph(n=len(top.sites), edges=top.edge_ends[tree_edges].tolist())
    tree_capacity = capacity[tree_edges]
    component = tree.connected_components().membership
    adjacency: dict[int, dict[int, float]] = {}
    for (a, b), c in zip(top.edge_ends.tolist(), capacity.tolist()):
        adjacency.setdefault(a, {})[b] = adjacency.setdefault(b, {})[a] = c

    def entries(s: int) -> list[tuple[int, float]]:
        """Where a route from ``s`` enters the relay forest, and that first hop's capacity."""
        if top.trusted[s]:
            return [(s, np.inf)]
        return [(v, c) for v, c in adjacency.get(s, {}).items() if top.trusted[v]]

    widths, routes = np.zeros(len(top.demands)), []
    for s, t in top.demand_ends.tolist():
        direct = adjacency.get(s, {}).get(t, 0.0)
        best, best_route = direct, [s, t]
        for a, c_a in entries(s):
            for b, c_b in entries(t):
                if component[a] != component[b]:
                    continue
                path = tree.get_shortest_path(a, b)
                hops = tree_capacity[tree.get_eids(pairs=list(zip(path[:-1], path[1:])))] if len(path) > 1 else []
                width = min(c_a, c_b, *hops)
                if width > best:
                    best, best_route = width, [s] * (a != s) + path + [t] * (b != t)
        widths[len(routes)] = best
        routes.append(np.array(best_route if best > 0 else [], np.intp))
    return widths, routes


def disjoint_paths(alive: igraph.Graph, source: int, target: int) -> int:
    """Node-disjoint paths (Menger) over arcs with key; a direct link counts as one path."""
    direct = alive.get_eid(source, target, error=False) >= 0
    return int(alive.vertex_connectivity(source, target, neighbors="ignore")) + direct


def survive(top: Topology, d: int, rate: Floats, capacity: Floats, flow: igraph.Flow,
            link_impact: Ints, site_impact: Ints) -> tuple[float, tuple[str, str]]:
    """Demand ``d``'s maximum flow after its worst single failure, and that failure; counts the
    failures that would leave the demand (met now) unmet into the impact arrays.

    Only an element that carries flow can lower the maximum flow, and removing it leaves at
    least the flow minus what it carried. Candidates are tried from the lowest such floor; the
    search stops once no floor is below both the worst found and the demand.
    """
    total = flow.value
    arc_flow = np.asarray(flow.flow, float)
    net = np.abs(arc_flow[0::2] - arc_flow[1::2])  # opposite flows cancel: a valid flow of the same value
    s, t = top.demand_ends[d]
    # a link: its edge loses its rate; the flow above what is left must reroute
    link_floor = total - np.maximum(net[top.link_edge] - (capacity[top.link_edge] - rate), 0.0)
    # a relay site: everything through it must reroute
    through = np.bincount(top.edge_ends.ravel(), weights=np.repeat(net, 2), minlength=len(top.sites)) / 2
    relay = top.trusted.copy()
    relay[[s, t]] = False
    site_floor = np.where(relay, total - through, total)
    floors = np.concatenate([link_floor, site_floor])
    order = np.argsort(floors, kind="stable")
    demand = top.demand_bps[d]
    met = total >= demand
    worst, failure = total, ("none", "")
    n_links = len(top.links)
    source, target = top.sender[s], top.receiver[t]
    for k in order[floors[order] < total].tolist():
        if floors[k] >= worst and (not met or floors[k] >= demand):
            break
        reduced = capacity.copy()
        if k < n_links:
            reduced[top.link_edge[k]] -= rate[k]
        else:
            reduced[np.flatnonzero((top.edge_ends == k - n_links).any(axis=1))] = 0.0
        value = top.graph.maxflow_value(source, target, np.repeat(np.maximum(reduced, 0.0), 2).tolist())
        if value < worst:
            worst, failure = value, ("link", top.links[k]) if k < n_links else ("site", top.sites[k - n_links])
        if met and value < demand:
            if k < n_links:
                link_impact[k] += 1
            else:
                site_impact[k - n_links] += 1
    return worst, failure
