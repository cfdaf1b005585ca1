"""Prometheus custom collector: fresh metric families from the latest snapshot at every scrape.

Follows the prometheus_client custom-collector pattern: no global Gauges for link data, the
scrape reads an immutable snapshot and never waits on a device. Every family is declared in
``qtelemetry.monitoring.catalogue``; NaN estimates (no data yet, nothing to estimate from) are
left out rather than exported.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterator

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
from qtelemetry.config import LinkConfig
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
            if not math.isnan(value):  # +Inf is meaningful (no light: infinite loss)
                family.add_metric([link, *extra], float(value))


Samples = Iterator[tuple[list[str], Any]]


def _info(snap: Snapshot) -> Samples:
    for link in snap.links:
        yield [], {"link": link.name, "protocol": link.driver.protocol, "site_a": link.site_a,
                   "site_b": link.site_b, "driver": link.driver.type}


def _per_link(value: Callable[[Snapshot, LinkConfig], float | None]) -> Callable[[Snapshot], Samples]:
    """Samples labelled by link for a per-link value; None means the link has no such value."""
    def samples(snap: Snapshot) -> Samples:
        for link in snap.links:
            v = value(snap, link)
            if v is not None:
                yield [link.name], v
    return samples


def _key_supply(field: str) -> Callable[[Snapshot], Samples]:
    return _per_link(lambda snap, link: getattr(snap.key_supply[link.name], field)
                     if link.name in snap.key_supply else None)


def _links_by_protocol(snap: Snapshot) -> Samples:
    for protocol, members in itertools.groupby(sorted(link.driver.protocol for link in snap.links)):
        yield [protocol], len(list(members))


#: How each exporter-level catalogue metric is read from a Snapshot.
SNAPSHOT_SAMPLES: dict[str, Callable[[Snapshot], Samples]] = {
    "qlink": _info,
    "qlink_up": _per_link(lambda snap, link: 1.0 if snap.up.get(link.name) else 0.0),
    "qlink_last_update_timestamp_seconds": _per_link(lambda snap, link: snap.last_update.get(link.name)),
    "qlink_batches": _per_link(lambda snap, link: snap.batches.get(link.name, 0)),
    "qlink_driver_errors": lambda snap: (([link, reason], n) for (link, reason), n in sorted(snap.errors.items())),
    "qlink_fault_active": lambda snap: (([link, kind], 1.0) for link, kinds in sorted(snap.faults.items())
                                        for kind in sorted(set(kinds))),
    "qkd_channel_loss_budget_db": _per_link(lambda snap, link: link.loss_budget()),
    "qkd_expected_secret_key_rate_bits_per_second": _per_link(lambda snap, link: link.expected_key_rate()),
    "qkd_key_buffer_bits": _key_supply("stored_bits"),
    "qkd_key_buffer_capacity_bits": _key_supply("capacity_bits"),
    "qkd_key_generated_bits": _key_supply("generated_bits"),
    "qkd_key_requested_bits": _key_supply("requested_bits"),
    "qkd_key_delivered_bits": _key_supply("delivered_bits"),
    "qtelemetry_build": lambda snap: iter([([], {"version": __version__})]),
    "qtelemetry_estimation_duration_seconds": lambda snap: iter(
        [([], {"count_value": snap.estimation_count, "sum_value": snap.estimation_seconds_sum})]),
    "qtelemetry_links": _links_by_protocol,
}


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
            if metric.protocols:
                for protocol in metric.protocols:
                    if protocol in groups:
                        _link_samples(family, metric, groups[protocol])
            else:
                for labels, value in SNAPSHOT_SAMPLES[metric.name](snap):
                    if metric.type == "summary":
                        family.add_metric(labels, **value)
                    else:
                        family.add_metric(labels, value)
            yield family

