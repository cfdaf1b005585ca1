"""The ``qnet_`` families: the network view's figures, laid out once per topology.

Used by the exporter (its own links' analysis, read from the published Snapshot) and by
``qtelemetry network`` (an analysis of what a Prometheus API holds). ``view(snap)`` gives the
NetworkSnapshot the values come from, or None (nothing exported). Per demand, link and site
the series are fixed by the config; the links of a minimum cut and the failure named by N-1
change with the data, so those series are listed afresh from each analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation.network import Topology
from qtelemetry.exporter.exposition import Block, _histogram, format_values, _pairs
from qtelemetry.monitoring.catalogue import ANALYSIS_BUCKETS, METRICS, Metric
from qtelemetry.runtime.network import FAILURE_REASONS, NetworkSnapshot

View = Callable[[Any], NetworkSnapshot | None]
#: The analyser process's own health: not served by an exporter.
ANALYSER_METRICS = ("qnet_analyser_up", "qnet_analyser_errors")
#: The simulated key relay's ledger: only an exporter that relays has it.
RELAY_METRICS = {"qnet_demand_requested_bits": "requested_bits", "qnet_demand_delivered_bits": "delivered_bits",
                 "qnet_demand_reroutes": "reroutes", "qnet_demand_relay_route_hops": "route_hops",
                 "qnet_demand_route_down_seconds": "route_down_seconds", "qnet_demand_bridged_bits": "bridged_bits"}
#: What an exporter with a network section serves.
EXPORTER_NETWORK_METRICS = tuple(m.name for m in METRICS if m.name.startswith("qnet_") and m.name not in ANALYSER_METRICS)


@dataclass(frozen=True)
class SeriesBlock:
    """Series whose label values come with the data: ``series(snap)`` gives rows and values."""

    sample: str
    label_names: tuple[str, ...]
    series: Callable[[Any], tuple[list[tuple[str, ...]], NDArray[np.float64]]]

    def observations(self, snap: Any, now: float) -> list[tuple[tuple[str, ...], float]]:
        rows, values = self.series(snap)
        return list(zip(rows, values.tolist()))

    def render(self, snap: Any, now: float) -> str:
        rows, values = self.series(snap)
        return "".join(f"{self.sample}{{{_pairs(self.label_names, row)}}} {value}\n"
                       for row, value in zip(rows, format_values(values)))


def _no_series(snap: Any) -> tuple[list[tuple[str, ...]], NDArray[np.float64]]:
    return [], np.empty(0)


def network_blocks(metric: Metric, top: Topology, view: View) -> tuple[list[Block | SeriesBlock], bool]:
    """Blocks of a ``qnet_`` metric for ``top``; True if read at scrape time."""
    demands = [(d,) for d in top.demands]
    n_demands = len(top.demands)

    def per_demand(read: Callable[[NetworkSnapshot], NDArray], width: int = 1) -> Callable[[Any, float], NDArray]:
        def values(snap: Any, now: float) -> NDArray:
            net = view(snap)
            if net is None or net.analysis is None:
                return np.full((n_demands, width), np.nan)
            return np.asarray(read(net), float).reshape(n_demands, width)
        return values

    def per(n: int, read: Callable[[NetworkSnapshot], NDArray]) -> Callable[[Any, float], NDArray]:
        def values(snap: Any, now: float) -> NDArray:
            net = view(snap)
            return np.full(n, np.nan) if net is None or net.analysis is None else np.asarray(read(net), float)
        return values

    name, labels = metric.sample_name, metric.labels
    if metric.name in RELAY_METRICS:
        field = RELAY_METRICS[metric.name]
        return [Block(name, labels, demands, (), lambda snap, now: np.full(n_demands, np.nan) if snap.relay is None
                      else getattr(snap.relay, field))], False
    links, sites = [(l,) for l in top.links], [(s,) for s in top.sites]
    match metric.name:
        case "qnet_demand_bits_per_second":
            ends = [(d, top.sites[a], top.sites[b]) for d, (a, b) in zip(top.demands, top.demand_ends.tolist())]
            return [Block(name, labels, ends, (), lambda snap, now: top.demand_bps)], False
        case "qnet_demand_priority":
            return [Block(name, labels, demands, (), lambda snap, now: top.demand_priority)], False
        case "qnet_demand_capacity_bits_per_second":
            return [Block(name, labels, demands, (("single_path", "multipath"),), per_demand(
                lambda net: np.column_stack([net.analysis.single_path_bps, net.analysis.multipath_bps]), 2))], False
        case "qnet_demand_capacity_after_worst_failure_bits_per_second":
            def after(snap: Any) -> tuple[list[tuple[str, ...]], NDArray[np.float64]]:
                net = view(snap)
                if net is None or net.analysis is None:
                    return _no_series(snap)
                rows = [(d, kind, failure) for d, (kind, failure) in zip(top.demands, net.analysis.worst_failure)]
                return rows, net.analysis.after_worst_failure_bps
            return [SeriesBlock(name, labels, after)], False
        case "qnet_demand_disjoint_paths":
            return [Block(name, labels, demands, (), per_demand(lambda net: net.analysis.disjoint_paths))], False
        case "qnet_demand_stored_key_seconds":
            return [Block(name, labels, demands, (), per_demand(lambda net: net.analysis.stored_key_seconds))], False
        case "qnet_demand_repeaterless_bound_bits_per_second":
            return [Block(name, labels, demands, (), per_demand(lambda net: net.analysis.bound_bps))], False
        case "qnet_demand_route_hops":
            return [Block(name, labels, demands, (), per_demand(lambda net: net.analysis.route_hops))], False
        case "qnet_link_min_cut":
            def cut(snap: Any) -> tuple[list[tuple[str, ...]], NDArray[np.float64]]:
                net = view(snap)
                if net is None or net.analysis is None:
                    return _no_series(snap)
                rows = [(d, top.links[i]) for d, members in zip(top.demands, net.analysis.min_cut) for i in members.tolist()]
                return rows, np.ones(len(rows))
            return [SeriesBlock(name, labels, cut)], False
        case "qnet_link_usable_key_rate_bits_per_second":
            return [Block(name, labels, links, (), per(len(links), lambda net: net.rate_bps))], False
        case "qnet_link_failure_impact_demands":
            return [Block(name, labels, links, (), per(len(links), lambda net: net.analysis.link_failure_impact))], False
        case "qnet_site_failure_impact_demands":
            return [Block(name, labels, sites, (), per(len(sites), lambda net: net.analysis.site_failure_impact))], False
        case "qnet_site_latitude_degrees":
            return [Block(name, labels, sites, (), lambda snap, now: top.latitude)], False
        case "qnet_site_longitude_degrees":
            return [Block(name, labels, sites, (), lambda snap, now: top.longitude)], False
        case "qnet_analysis_duration_seconds":
            def cumulative(snap: Any, now: float) -> NDArray:
                net = view(snap)
                return np.zeros(len(ANALYSIS_BUCKETS) + 1) if net is None else net.duration_buckets
            return list(_histogram(metric, [()], (), cumulative, lambda snap, now: np.array(
                [0.0 if view(snap) is None else view(snap).duration_sum]))), False
        case "qnet_analysis_failures":
            def failures(snap: Any, now: float) -> NDArray:
                net = view(snap)
                return np.full(len(FAILURE_REASONS), np.nan) if net is None else net.failures
            return [Block(name, labels, [(r,) for r in FAILURE_REASONS], (), failures)], False
        case "qnet_analysis_age_seconds":
            def age(snap: Any, now: float) -> NDArray:
                net = view(snap)
                return np.array([np.nan if net is None else net.age(now)])
            return [Block(name, (), [()], (), age)], True
    raise KeyError(f"catalogue metric {metric.name} has no value source")
