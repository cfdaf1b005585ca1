"""The simulated key management layer: relays every demand's key over simulated links' stores.

Once per estimation cycle, after the fleets have filled their key stores, each relayed demand
asks for ``bits_per_second`` × the window; its routes deliver what their hops' stores can give,
higher priorities first, and every hop gives exactly that (``estimation/relay.py``), so relay shows in each hop's
``qkd_key_requested_bits_total``/``delivered`` and a busy hop's store drains. A hop whose links
made no key in a window is down from that window's start; a route crossing a hop down for
``failover_seconds`` is re-chosen at the next cycle. Until then, or for as long as there is no
other route, it keeps spending the key the down hop still stores. When a hop comes back, routes
narrower than their demand move to a wider one if there is one. Only links simulated with a
key store relay: real devices relay key themselves, and a demand their links are needed for is
not relayed (its view stays analytical).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation.network import Topology
from qtelemetry.estimation.relay import Route, Routes, choose_routes, deliver
from qtelemetry.networkconfig import NetworkConfig, relays_connect

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class RelayView:
    """What the relay has done, per demand, as published with a snapshot (NaN: not relayed)."""

    requested_bits: Floats  #: cumulative
    delivered_bits: Floats  #: cumulative
    reroutes: Floats  #: cumulative
    route_hops: Floats  #: hops of the active route (the longest of its paths); NaN while it has none
    route_down_seconds: Floats  #: cumulative time its route had a hop down (or it had no route)
    bridged_bits: Floats  #: cumulative key delivered over a hop down: spent from that hop's store


@dataclass(frozen=True)
class Draw:
    """One cycle's relay at the links: bits asked of and taken from each link's store."""

    asked: Floats  #: (links,)
    taken: Floats  #: (links,)


class KeyRelay:
    """Active routes, failover clocks and the per-demand ledger of one config's relay."""

    def __init__(self, top: Topology, network: NetworkConfig, relays: NDArray[np.bool_]):
        self.top, self.routing, self.failover = top, network.routing, network.failover_seconds
        self.relays = relays  #: (links,) links whose key store the relay draws on
        ends = top.link_ends[relays]
        self.relayed = relays_connect(ends, top.trusted, top.demand_ends)
        n, e = len(top.demands), len(top.edge_ends)
        self.routes: list[Route] = [[] for _ in range(n)]
        self._paths = Routes.of(self.routes, e)
        self._hops = np.full(n, np.nan)  #: (demands,) hops of the active route's longest path, NaN: no route
        self._waiting = np.zeros(n, bool)  #: no (other) route was found: look again when a hop comes back
        self.chosen = np.zeros(n, bool)  #: a route was chosen once (later choices are reroutes)
        self.down_since = np.full(e, np.nan)  #: (edges,) start of the first window without key, NaN: up
        self.requested, self.delivered, self.reroutes = np.zeros(n), np.zeros(n), np.zeros(n)
        self.route_down_s, self.bridged = np.zeros(n), np.zeros(n)
        self._edge_links = np.bincount(top.link_edge, weights=relays.astype(float), minlength=e)
        self._last: float | None = None  #: the previous step's time: demands ask for key by the clock

    @classmethod
    def of(cls, top: Topology | None, network: NetworkConfig | None, relays: NDArray[np.bool_]) -> "KeyRelay | None":
        """The relay of a config, or None when it has no demand its simulated links can relay."""
        if top is None or network is None or not top.demands or not relays.any():
            return None
        relay = cls(top, network, relays)
        return relay if relay.relayed.any() else None

    def adopt(self, old: "KeyRelay") -> None:
        """After a reload: the demands both configs have keep their totals (routes are chosen afresh)."""
        where = {name: i for i, name in enumerate(old.top.demands)}
        for i, name in enumerate(self.top.demands):
            if name in where:
                j = where[name]
                for ledger in ("requested", "delivered", "reroutes", "route_down_s", "bridged"):
                    getattr(self, ledger)[i] = getattr(old, ledger)[j]
                self.chosen[i] = old.chosen[j]
        self._last = old._last

    def step(self, now: float, duration: Floats, generated: Floats, stored: Floats) -> Draw:
        """Relay one window ending at ``now``: per link its duration (s; NaN: no window), key
        generated in it and key in its store; returns what to take from each store."""
        top, n = self.top, len(self.top.demands)
        usable = self.relays & np.isfinite(duration) & (duration > 0)
        rate = np.where(usable, generated / np.where(usable, duration, 1.0), 0.0)
        available = np.where(usable, np.maximum(stored, 0.0), 0.0)
        edge_rate = np.bincount(top.link_edge, weights=rate, minlength=len(top.edge_ends))
        # the time since the last step, so a demand asks for key even while no link delivers a window
        if self._last is not None:
            window = max(0.0, now - self._last)
        else:
            window = float(np.nanmax(np.where(usable, duration, np.nan))) if usable.any() else 0.0
        self._last = now
        down = edge_rate <= 0
        came_up = ~down & ~np.isnan(self.down_since)
        self.down_since = np.where(down, np.where(np.isnan(self.down_since), now - window, self.down_since), np.nan)
        # how long in this window each demand's route (as it was) had a hop down, or no route at all
        edge_down_s = np.where(down, now - np.maximum(self.down_since, now - window), 0.0)
        route_down = np.zeros(n)
        np.maximum.at(route_down, self._paths.demand, -self._paths.narrowest(-edge_down_s))  # the longest on a path
        self._reroute(now, edge_rate, came_up)
        route_down[np.isnan(self._hops)] = window
        self.route_down_s += route_down * self.relayed
        request = top.demand_bps * window * self.relayed
        paths = self._paths
        path_request = request[paths.demand] * paths.share
        edge_available = np.bincount(top.link_edge, weights=available, minlength=len(top.edge_ends))
        path_delivered = deliver(paths, path_request, edge_available, top.demand_priority[paths.demand])
        self.requested += request
        self.delivered += paths.per_demand(path_delivered, n)
        # key delivered over a hop that makes none came from that hop's store
        self.bridged += paths.per_demand(path_delivered * (paths.narrowest(np.where(down, 0.0, 1.0)) == 0), n)
        return Draw(self._at_links(paths.hops.T @ path_request, available, edge_available),
                    np.minimum(available, self._at_links(paths.hops.T @ path_delivered, available, edge_available)))

    def _at_links(self, per_edge: Floats, available: Floats, edge_available: Floats) -> Floats:
        """An edge's amount split over its relaying links in proportion to the key they hold
        (evenly when none holds any)."""
        edge = self.top.link_edge
        held = edge_available[edge]
        weight = np.where(held > 0, available / np.where(held > 0, held, 1.0), 1.0 / np.maximum(self._edge_links[edge], 1.0))
        return np.where(self.relays, per_edge[edge] * weight, 0.0)

    def _reroute(self, now: float, edge_rate: Floats, came_up: NDArray[np.bool_]) -> None:
        """Re-choose the routes crossing a hop down for ``failover`` seconds (kept while there is no
        other); when a hop comes back, the routes narrower than their demand (kept if nothing is
        wider); and look for one for relayed demands that have none. A demand for which nothing
        was found waits for a hop to come back before it is looked at again."""
        paths, n = self._paths, len(self.routes)
        failed_edges = now - self.down_since >= self.failover  # False where NaN (up)
        broken = np.zeros(n, bool)
        broken[paths.demand[(paths.hops @ failed_edges.astype(float)) > 0]] = True
        width = paths.per_demand(paths.narrowest(edge_rate), n)
        narrow = came_up.any() & (width < self.top.demand_bps)
        lost = broken | np.isnan(self._hops)
        again = np.flatnonzero(self.relayed & (lost | narrow) & (came_up.any() | ~self._waiting))
        if not again.size:
            return
        for d, route in zip(again.tolist(), choose_routes(self.top, edge_rate, again, self.routing)):
            self._waiting[d] = lost[d] and not route
            if not route or (not broken[d] and _width(route, edge_rate) <= width[d]):
                continue  # with no other route, the old one goes on spending the key its hops store
            self.reroutes[d] += self.chosen[d]
            self.chosen[d] = True
            self.routes[d] = route
            self._hops[d] = max(len(edges) for edges, _ in route)
        self._paths = Routes.of(self.routes, len(self.top.edge_ends))

    def view(self) -> RelayView:
        off = ~self.relayed
        return RelayView(*(np.where(off, np.nan, a) for a in (self.requested, self.delivered, self.reroutes, self._hops,
                                                              self.route_down_s, self.bridged)))


def _width(route: Route, edge_rate: Floats) -> float:
    """Key rate a route can carry: the sum of its paths' narrowest hops."""
    return sum(float(edge_rate[edges].min()) for edges, _ in route)
