"""OpenTelemetry bridge: the catalogue's metrics as observable instruments, pushed over OTLP/HTTP.

For sites whose pipeline is an OpenTelemetry Collector rather than a Prometheus scrape. The
instruments' callbacks read the same snapshot, laid out by the same families, as the Prometheus
exposition, so both outputs always agree. Counters become monotonic cumulative sums, gauges
gauges, ``_info`` metrics a gauge of 1 with the metadata as attributes. Histograms are left to
the Prometheus output: an observable instrument cannot report pre-aggregated buckets. The
exporter's own process and endpoint metrics stay on /metrics too (``qtelemetry.selfmetrics`` says why).
"""

from __future__ import annotations

import socket
import time
from typing import Callable, Iterable

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from qtelemetry import __version__
from qtelemetry.config import OtlpConfig
from qtelemetry.exporter.exposition import Exposition
from qtelemetry.monitoring.catalogue import METRICS, Metric
from qtelemetry.runtime.snapshot import Snapshot

#: Catalogue units → UCUM units, as OpenTelemetry expects.
UCUM = {"": "1", "ratio": "1", "bits/s": "bit/s", "bits": "bit", "seconds": "s", "dB": "dB", "1/s": "1/s", "degrees": "deg"}


def _callback(metric: Metric, exposition: Exposition, snapshot: Callable[[], Snapshot],
              ) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        snap, now = snapshot(), time.time()
        family = next((f for f in exposition.families(snap.table) if f.metric is metric), None)
        if family is None:  # served by another process (the network analyser's own metrics)
            return
        for block in family.blocks:
            for labels, value in block.observations(snap, now):
                yield Observation(value, dict(zip(block.label_names, labels)))
    return observe


def meter_provider(exposition: Exposition, snapshot: Callable[[], Snapshot], reader: MetricReader) -> MeterProvider:
    """A MeterProvider whose instruments observe ``snapshot`` (laid out as ``exposition`` lays it
    out) whenever ``reader`` collects."""
    resource = Resource.create({"service.name": "qtelemetry", "service.version": __version__,
                                "service.instance.id": socket.gethostname()})
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    meter = provider.get_meter("qtelemetry", __version__)
    for metric in (m for m in METRICS if not m.own):
        kwargs = dict(callbacks=[_callback(metric, exposition, snapshot)], unit=UCUM[metric.unit], description=metric.help)
        if metric.type == "counter":
            meter.create_observable_counter(metric.name, **kwargs)
        elif metric.type in ("gauge", "info"):
            meter.create_observable_gauge(metric.sample_name, **kwargs)
    return provider


def start_otlp(exposition: Exposition, snapshot: Callable[[], Snapshot], config: OtlpConfig) -> MeterProvider:
    """Push every ``interval_seconds`` to an OTLP/HTTP endpoint; call ``shutdown()`` to flush."""
    exporter = OTLPMetricExporter(endpoint=config.endpoint, timeout=config.timeout_seconds)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=config.interval_seconds * 1000,
                                           export_timeout_millis=config.timeout_seconds * 1000)
    return meter_provider(exposition, snapshot, reader)
