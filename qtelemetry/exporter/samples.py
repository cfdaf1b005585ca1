"""Snapshot → samples of each catalogue metric, shared by the Prometheus and OpenTelemetry outputs.

A sample is (label values in the order of ``Metric.labels``, value). Info metrics carry their
labels as a dict value; the histogram carries ``buckets``/``sum_value``. NaN estimates (no data,
nothing to estimate from) are left out rather than exported.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Callable, Iterator

from qtelemetry import __version__
from qtelemetry.config import LinkConfig
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.exporter.pipeline import DURATION_BUCKETS, GroupSnapshot, Snapshot
from qtelemetry.monitoring.catalogue import Metric

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
    "qlink_estimates_skipped": lambda snap: (([link, reason], n) for (link, reason), n in sorted(snap.skipped.items())),
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
    "qlink_data_age_seconds": _per_link(lambda snap, link: time.time() - snap.last_update[link.name]
                                        if link.name in snap.last_update else None),
    "qtelemetry_estimation_duration_seconds": lambda snap: iter([([], {
        "buckets": [(str(le), n) for le, n in zip((*DURATION_BUCKETS, "+Inf"), snap.estimation_buckets)],
        "sum_value": snap.estimation_seconds_sum})]),
    "qtelemetry_estimation_lag_seconds": lambda snap: iter([([], time.time() - snap.published_at)]),
    "qtelemetry_estimation_interval_seconds": lambda snap: iter([([], snap.window_seconds)]),
    "qtelemetry_estimation_cycles_skipped": lambda snap: iter([([], snap.cycles_skipped)]),
    "qtelemetry_links": _links_by_protocol,
}


def _group_samples(metric: Metric, group: GroupSnapshot) -> Samples:
    """One protocol group's samples: counters from count totals, gauges from estimates."""
    if metric.type == "counter":
        totals = group.totals[metric.source]
        axes = PROTOCOLS[group.protocol].count_axes[metric.source]
        for i, link in enumerate(group.links):
            for position in itertools.product(*(range(len(a)) for a in axes)):
                values = [axes[d][p] for d, p in enumerate(position)]
                yield [link, *values], float(totals[(i, *position)])
        return
    for extra, key in metric.series or (((), metric.source),):
        for link, value in zip(group.links, group.estimates[key]):
            if not math.isnan(value):  # +Inf is meaningful (no light: infinite loss)
                yield [link, *extra], float(value)


def samples(metric: Metric, snap: Snapshot) -> Samples:
    """Every sample of ``metric`` in ``snap``."""
    if not metric.protocols:
        yield from SNAPSHOT_SAMPLES[metric.name](snap)
        return
    groups = {group.protocol: group for group in snap.groups}
    for protocol in metric.protocols:
        if protocol in groups:
            yield from _group_samples(metric, groups[protocol])
