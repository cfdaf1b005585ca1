"""Trusted-node key relay: the routes a demand's key takes and what every hop gives for it.

A key manager relays key hop by hop: each end-to-end bit is one-time-pad encrypted with one bit
of every hop's key store on its way (trusted-node relay, as in the Tokyo QKD network: Sasaki et
al., Opt. Express 19, 10387 (2011)). So a path delivers what its emptiest hop can give, and
every hop of the path gives exactly the bits the path delivers: key is conserved.

Routes (chosen on the hops' key rates, with ``estimation.network``'s engine):

- ``widest-path``: one path, the widest (maximum-bottleneck; Hu, Oper. Res. 9, 898 (1961));
- ``multipath``: the maximum flow (Ford & Fulkerson, Can. J. Math. 8, 399 (1956)) decomposed
  into paths, the demand split over them in proportion to their flows.

Sharing a hop: demands of higher priority are served first (strict priority, as a QKD key manager
serves ETSI GS QKD 015 ``app_priority``: larger is more important); the paths of one priority
share what the higher ones left: when they ask a hop for more than it still holds, each gets the
same fraction of what it asked (proportional share), and a path delivers its request times the
smallest fraction along it. Pure functions over arrays; the state (active routes, failover) is
the runtime's (``runtime/relay.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_array

from qtelemetry.estimation.network import Topology, widest_paths

Floats = NDArray[np.float64]
Ints = NDArray[np.intp]
#: One demand's route: (edges of each path, share of the demand sent along it).
Route = list[tuple[Ints, float]]


@dataclass(frozen=True)
class Routes:
    """Every path in use, as arrays: which demand it serves, its share, the edges it crosses."""

    demand: Ints  #: (paths,)
    share: Floats  #: (paths,) fraction of the demand's request sent along the path
    hops: csr_array  #: (paths, edges) 1 where the path crosses the edge

    @classmethod
    def of(cls, routes: Sequence[Route], n_edges: int) -> "Routes":
        paths = [(d, edges, share) for d, route in enumerate(routes) for edges, share in route]
        lengths = np.array([len(edges) for _, edges, _ in paths], np.intp)
        indices = np.concatenate([edges for _, edges, _ in paths]).astype(np.intp) if paths else np.empty(0, np.intp)
        hops = csr_array((np.ones(indices.size), indices, np.r_[0, np.cumsum(lengths)]), shape=(len(paths), n_edges))
        return cls(np.array([d for d, _, _ in paths], np.intp), np.array([s for _, _, s in paths], float), hops)

    def narrowest(self, per_edge: Floats) -> Floats:
        """(paths,) the smallest of ``per_edge`` along each path (every path has a hop)."""
        if not self.demand.size:
            return np.zeros(0)
        return np.minimum.reduceat(per_edge[self.hops.indices], self.hops.indptr[:-1])

    def per_demand(self, per_path: Floats, n_demands: int) -> Floats:
        """(demands,) the sum of ``per_path`` over each demand's paths."""
        return np.bincount(self.demand, weights=per_path, minlength=n_demands)


def deliver(routes: Routes, request: Floats, available: Floats, priority: Floats) -> Floats:
    """Bits each path delivers: ``request`` (paths,) asked at ``priority`` (paths,), ``available``
    (edges,) in the hops' stores.

    Priorities are served from the highest down, each from what the higher ones left. Within one,
    every hop grants each path the same fraction of its ask (all of it when the hop holds enough);
    a path delivers its ask times its smallest grant, so no hop gives more than it holds. When no
    hop is asked for more than it holds, the order does not matter: one pass.
    """
    if np.all(routes.hops.T @ request <= available):  # no hop short: everyone gets all, whatever the order
        return np.asarray(request, float).copy()
    delivered = np.zeros(request.size)
    left = np.asarray(available, float)
    for level in np.unique(priority)[::-1]:  # one pass per distinct priority
        ask = np.where(priority == level, request, 0.0)
        asked = routes.hops.T @ ask
        with np.errstate(divide="ignore", invalid="ignore"):
            granted = np.where(asked > 0, np.minimum(1.0, left / asked), 1.0)
        got = ask * routes.narrowest(granted)
        delivered += got
        left = np.maximum(left - routes.hops.T @ got, 0.0)
    return delivered


def choose_routes(top: Topology, capacity: Floats, demands: Ints, routing: str) -> list[Route]:
    """Routes of ``demands`` over edges of key rate ``capacity`` (edges,); an empty route where no
    path has key."""
    if routing == "multipath":
        return [_flow_paths(top, capacity, int(d)) for d in demands.tolist()]
    _, site_routes = widest_paths(top, capacity)
    edge_of = {pair: e for e, pair in enumerate(map(tuple, top.edge_ends.tolist()))}
    routes: list[Route] = []
    for d in demands.tolist():
        sites = site_routes[d].tolist()
        pairs = [tuple(sorted(p)) for p in zip(sites[:-1], sites[1:])]
        routes.append([(np.array([edge_of[p] for p in pairs], np.intp), 1.0)] if pairs else [])
    return routes


def _flow_paths(top: Topology, capacity: Floats, d: int) -> Route:
    """The demand's maximum flow on the chain graph, decomposed into paths (each path's edges and
    its share of the flow); opposite flows on a chain cancel first, cycles of flow are dropped."""
    source, target = top.sender[top.demand_ends[d, 0]], top.receiver[top.demand_ends[d, 1]]
    flow = top.graph.maxflow(source, target, np.repeat(top.chain_capacity(capacity), 2).tolist())
    if flow.value <= 0:
        return []
    arc_flow = np.asarray(flow.flow, float)
    net = arc_flow[0::2] - arc_flow[1::2]  # > 0: from the chain's first end to its second
    chains = np.flatnonzero(np.abs(net) > flow.value * 1e-12)
    forward = net[chains] > 0
    ends = top.chain_ends[chains]
    tails = np.where(forward, top.sender[ends[:, 0]], top.sender[ends[:, 1]]).tolist()
    heads = np.where(forward, top.receiver[ends[:, 1]], top.receiver[ends[:, 0]]).tolist()
    amount = np.abs(net[chains])
    out: dict[int, list[int]] = {}
    for arc, tail in enumerate(tails):
        out.setdefault(tail, []).append(arc)
    paths: list[tuple[Ints, float]] = []
    while (arcs := _path(out, tails, heads, amount, int(source), int(target))) is not None:
        bottleneck = float(amount[arcs].min())
        amount[arcs] -= bottleneck
        amount[arcs[amount[arcs] <= bottleneck * 1e-12]] = 0.0
        paths.append((chains[arcs], bottleneck))
    total = sum(share for _, share in paths)
    return [(np.flatnonzero(np.isin(top.edge_chain, on)), share / total) for on, share in paths]


def _path(out: dict[int, list[int]], tails: list[int], heads: list[int], amount: Floats, source: int, target: int) -> Ints | None:
    """The arcs of a shortest path with flow left from ``source`` to ``target`` (breadth first)."""
    arriving: dict[int, int] = {source: -1}  # vertex -> the arc it was reached by
    frontier = [source]
    while frontier and target not in arriving:
        reached = []
        for tail in frontier:
            for arc in out.get(tail, []):
                if amount[arc] > 0 and heads[arc] not in arriving:
                    arriving[heads[arc]] = arc
                    reached.append(heads[arc])
        frontier = reached
    if target not in arriving:
        return None
    arcs, v = [], target
    while v != source:
        arcs.append(arriving[v])
        v = tails[arriving[v]]
    return np.array(arcs[::-1], np.intp)
