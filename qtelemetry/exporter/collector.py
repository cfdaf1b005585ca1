"""Prometheus custom collector: fresh metric families from the latest snapshot at every scrape.

Follows the prometheus_client custom-collector pattern: no global Gauges for link data, the
scrape reads an immutable snapshot and never waits on a device. Every family is declared in
``qtelemetry.monitoring.catalogue`` and its samples come from ``samples``.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric as Family,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from qtelemetry.exporter.pipeline import Snapshot
from qtelemetry.exporter.samples import samples
from qtelemetry.monitoring.catalogue import METRICS, Metric

FAMILIES = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "info": InfoMetricFamily,
    "histogram": HistogramMetricFamily,
}


def _family(metric: Metric) -> Family:
    labels = list(metric.labels)
    if metric.type == "info":
        return InfoMetricFamily(metric.name, metric.help, labels=[])
    return FAMILIES[metric.type](metric.name, metric.help, labels=labels, unit="")


class SnapshotCollector(Collector):
    """Turns the pipeline's latest Snapshot into the catalogue's metric families."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self._snapshot = snapshot

    def describe(self) -> list[Family]:
        return [_family(metric) for metric in METRICS]

    def collect(self) -> Iterator[Family]:
        snap = self._snapshot()
        for metric in METRICS:
            family = _family(metric)
            for labels, value in samples(metric, snap):
                if metric.type == "histogram":
                    family.add_metric(labels, **value)
                else:
                    family.add_metric(labels, value)
            yield family

