"""Prometheus custom collector: fresh metric families from the latest snapshot at every scrape.

Follows the prometheus_client custom-collector pattern: no global Gauges for link data, the
scrape reads an immutable snapshot and never waits on a device. Every family is declared in
``qtelemetry.monitoring.catalogue``; NaN estimates (no data yet, nothing to estimate from) are
left out rather than exported.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric as Family,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from qtelemetry import __version__
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.exporter.pipeline import GroupSnapshot, Snapshot
from qtelemetry.monitoring.catalogue import METRICS, Metric

FAMILIES = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "info": InfoMetricFamily,
    "summary": SummaryMetricFamily,
}


def _family(metric: Metric) -> Family:
    labels = list(metric.labels)
    if metric.type == "info":
        return InfoMetricFamily(metric.name, metric.help, labels=[])
    return FAMILIES[metric.type](metric.name, metric.help, labels=labels, unit="")


def _link_samples(family: Family, metric: Metric, group: GroupSnapshot) -> None:
    """Add one protocol group's samples: counters from totals, gauges from estimates."""
    if metric.type == "counter":
        totals = group.totals[metric.source]
        axes = PROTOCOLS[group.protocol].count_axes[metric.source]
        for i, link in enumerate(group.links):
            for position in itertools.product(*(range(len(a)) for a in axes)):
                values = [axes[d][p] for d, p in enumerate(position)]
                family.add_metric([link, *values], float(totals[(i, *position)]))
        return
    series = metric.series or (((), metric.source),)
    for extra, key in series:
        for link, value in zip(group.links, group.estimates[key]):
            if math.isfinite(value):
                family.add_metric([link, *extra], float(value))


class SnapshotCollector(Collector):
    """Turns the pipeline's latest Snapshot into the catalogue's metric families."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self._snapshot = snapshot

    def describe(self) -> list[Family]:
        return [_family(metric) for metric in METRICS]

    def collect(self) -> Iterator[Family]:
        snap = self._snapshot()
        groups = {group.protocol: group for group in snap.groups}
        for metric in METRICS:
            family = _family(metric)
            if metric.protocol is not None:
                if metric.protocol in groups:
                    _link_samples(family, metric, groups[metric.protocol])
            else:
                self._exporter_samples(family, metric, snap)
            yield family

    @staticmethod
    def _exporter_samples(family: Family, metric: Metric, snap: Snapshot) -> None:
        links = [link.name for link in snap.links]
        match metric.name:
            case "qlink":
                for link in snap.links:
                    family.add_metric([], {
                        "link": link.name, "protocol": link.driver.protocol, "site_a": link.site_a,
                        "site_b": link.site_b, "driver": link.driver.type})
            case "qlink_up":
                for link in links:
                    family.add_metric([link], 1.0 if snap.up.get(link) else 0.0)
            case "qlink_last_update_timestamp_seconds":
                for link in links:
                    if link in snap.last_update:
                        family.add_metric([link], snap.last_update[link])
            case "qlink_batches":
                for link in links:
                    family.add_metric([link], snap.batches.get(link, 0))
            case "qlink_driver_errors":
                for (link, reason), count in sorted(snap.errors.items()):
                    family.add_metric([link, reason], count)
            case "qtelemetry_build":
                family.add_metric([], {"version": __version__})
            case "qtelemetry_estimation_duration_seconds":
                family.add_metric([], count_value=snap.estimation_count, sum_value=snap.estimation_seconds_sum)
            case "qtelemetry_links":
                for protocol, members in itertools.groupby(sorted(l.driver.protocol for l in snap.links)):
                    family.add_metric([protocol], len(list(members)))
            case _:
                raise KeyError(f"catalogue metric {metric.name} has no exporter source")
