"""Config of the network view (``network:``): sites, the key demands between them, the cadence.

A link is an undirected edge between its ``site_a`` and ``site_b``; links between the same two
sites add up. A site that is not ``trusted`` is an end point: key flows from or to it, never
through it. Cross-checks against the links (every site used, every demand reachable) are made
by ``check_against``, which the exporter config calls with its links.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from qtelemetry.drivers.base import FieldError, StrictModel, check
from qtelemetry.estimation.graphs import components

#: Label values come from config only (the same rule as link names).
LABEL_VALUE = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
#: A demand's priority is ETSI GS QKD 015's ``app_priority``: a uint32, default 0. Larger is more
#: important, as an OpenFlow flow entry's priority (OpenFlow Switch Specification 1.3, 5.3: the highest-priority entry matches).
PRIORITY_MAX = 2**32 - 1
#: The most key a demand may ask for, bits/s: a terabit per second, millions of times what a QKD
#: link makes, so that the simulated relay's requests (demand x window, summed over demands and over
#: time) stay finite; 1e308 overflowed every hop's qkd_key_requested_bits_total to +Inf.
DEMAND_MAX_BPS = 1e12


class SiteConfig(StrictModel):
    name: str = Field(pattern=LABEL_VALUE, description="site name, as links' site_a/site_b give it")
    trusted: bool = Field(True, description="may relay key (a trusted node); false: an end point that never relays")
    latitude: float | None = Field(None, ge=-90.0, le=90.0, description="degrees north, for the map")
    longitude: float | None = Field(None, ge=-180.0, le=180.0, description="degrees east, for the map")

    @check
    def _both_coordinates(self) -> "SiteConfig":
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude go together")
        return self


class DemandConfig(StrictModel):
    name: str = Field(pattern=LABEL_VALUE, description="demand name, the `demand` label")
    source: str = Field(alias="from", description="site that needs the key")
    target: str = Field(alias="to", description="site at the other end")
    bits_per_second: float = Field(gt=0.0, le=DEMAND_MAX_BPS,
                                   description="key the applications between the two sites need, bits/s (at most 1e12)")
    priority: int = Field(0, ge=0, le=PRIORITY_MAX, strict=True, description=(
        "larger is more important: the simulated relay serves higher priorities first, and QNetDemandUnmet pages "
        "only at or above the monitoring config's page_demand_priority (ETSI GS QKD 015 app_priority)"))

    @check
    def _two_sites(self) -> "DemandConfig":
        if self.source == self.target:
            raise FieldError("to", "the same site as from: a demand joins two sites")
        return self


class NetworkConfig(StrictModel):
    sites: list[SiteConfig] | None = Field(None, description="default: every site of the links, trusted")
    demands: list[DemandConfig] = Field(default_factory=list)
    analysis_interval_seconds: float = Field(15.0, ge=0.1, le=3600.0, description="how often the network is analysed, s")
    routing: Literal["widest-path", "multipath"] = Field(
        "widest-path", description="how the simulated key relay routes a demand: the widest path, or split along the max-flow")
    failover_seconds: float = Field(5.0, ge=0.0, le=86400.0,
                                    description="how long a hop of a relayed route must be down before the route is re-chosen, s")

    def site_list(self, links: Sequence) -> list[SiteConfig]:
        """The sites: as listed, or those of the links in order of first use."""
        if self.sites is not None:
            return self.sites
        names = dict.fromkeys(name for link in links for name in (link.site_a, link.site_b))
        return [SiteConfig(name=name) for name in names]

    @check
    def _unique(self) -> "NetworkConfig":
        for what, items in (("sites", self.sites or []), ("demands", self.demands)):
            first: dict[str, int] = {}
            for i, item in enumerate(items):
                if item.name in first:
                    raise FieldError(f"{what}.{i}.name", f"duplicate {what[:-1]} {item.name!r} (also network.{what}[{first[item.name]}])")
                first[item.name] = i
        return self

    def check_against(self, links: Sequence) -> None:
        """FieldError (relative to the whole config) for sites and demands the links do not fit."""
        sites = self.site_list(links)
        index = {site.name: i for i, site in enumerate(sites)}
        for i, link in enumerate(links):
            for end in ("site_a", "site_b"):
                if getattr(link, end) not in index:
                    raise FieldError(f"links.{i}.{end}", f"site {getattr(link, end)!r} is not in network.sites")
        used = {name for link in links for name in (link.site_a, link.site_b)}
        for i, site in enumerate(sites):
            if site.name not in used:
                raise FieldError(f"network.sites.{i}.name", f"no link has site {site.name!r}: remove it or add its links")
        ends = np.array([[index[link.site_a], index[link.site_b]] for link in links], np.intp).reshape(-1, 2)
        trusted = np.array([site.trusted for site in sites])
        for i, demand in enumerate(self.demands):
            for end, name in (("from", demand.source), ("to", demand.target)):
                if name not in index:
                    raise FieldError(f"network.demands.{i}.{end}", f"unknown site {name!r}")
        pairs = np.array([[index[d.source], index[d.target]] for d in self.demands], np.intp).reshape(-1, 2)
        unreachable = np.flatnonzero(~relays_connect(ends, trusted, pairs))
        if unreachable.size:
            i = int(unreachable[0])
            demand = self.demands[i]
            over = "" if trusted.all() else " over trusted sites"
            raise FieldError(f"network.demands.{i}",
                             f"no chain of links joins {demand.source!r} and {demand.target!r}{over}: key cannot flow")


def relays_connect(ends: np.ndarray, trusted: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(pairs,) whether a path of links (``ends``: pairs of site indices) joins each pair's two
    sites with only trusted sites between (a path ends the first time it reaches the target, so the
    two ends may be end points).

    One pass for every pair: a path is the direct link, or it enters the trusted sites' connected
    components at one end (an end point by a trusted neighbour) and leaves that same component at
    the other; O(links + pairs), not a search per pair (5,000 demands at 10,000 links: 37 s).
    """
    n = trusted.size
    ends, pairs = np.asarray(ends, np.intp).reshape(-1, 2), np.asarray(pairs, np.intp).reshape(-1, 2)
    component = components(n, ends[trusted[ends].all(axis=1)])
    # where each site enters the trusted components: its own, or (an end point) its trusted neighbours'
    half = np.concatenate([ends, ends[:, ::-1]])
    entered = half[~trusted[half[:, 0]] & trusted[half[:, 1]]]
    site, comp = np.r_[np.flatnonzero(trusted), entered[:, 0]], component[np.r_[np.flatnonzero(trusted), entered[:, 1]]]
    order = np.argsort(site, kind="stable")
    site, comp = site[order], comp[order]
    first, last = np.searchsorted(site, np.arange(n)), np.searchsorted(site, np.arange(n), side="right")

    def keys(at: np.ndarray) -> np.ndarray:
        """(pair, component) keys of the components each pair's site ``at`` enters."""
        counts = last[at] - first[at]
        pair = np.repeat(np.arange(len(at)), counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return pair * n + comp[np.repeat(first[at], counts) + offset]

    from_source = keys(pairs[:, 0])
    met = np.zeros(len(pairs), bool)
    met[from_source[np.isin(from_source, keys(pairs[:, 1]))] // n] = True
    linked = np.sort(ends, axis=1) @ np.array([n, 1])
    return met | np.isin(np.sort(pairs, axis=1) @ np.array([n, 1]), linked)
