"""OpenTelemetry output: the catalogue's metrics pushed over OTLP/HTTP every ``interval_seconds``.

For sites whose pipeline is an OpenTelemetry Collector rather than a Prometheus scrape. A push
reads the same snapshot, laid out by the same families, as the Prometheus exposition, so both
outputs always agree. Counters become monotonic cumulative sums (from the exporter's start),
gauges gauges, ``_info`` metrics a gauge of 1 with the metadata as attributes. Histograms are left
to the Prometheus output, as are the exporter's own process and endpoint metrics
(``qtelemetry.selfmetrics`` says why) and the count of pushes by result
(``qtelemetry_otlp_pushes_total``): a push pipeline that fails must show where the exporter is
still watched.

The data points are built from the snapshot's arrays, ``MAX_POINTS_PER_REQUEST`` at a time, and
handed to the SDK's OTLP exporter (encoding, HTTP, retries, the ``OTEL_EXPORTER_OTLP_*``
settings). The SDK's instruments are not used: their aggregation state cost 1.1 KB per series, at
10,000 links (615,000 series) a collection took over a minute and 780 MB, and their default
cardinality limit (2,000) silently merged the series of every link past ~340 into one
``otel.metric.overflow`` point (``bench/otlp.py``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable, Iterator

import numpy as np
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (AggregationTemporality, Gauge, Metric, MetricExportResult,
                                              MetricsData, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, Counter

from qtelemetry import __version__, selfmetrics
from qtelemetry.config import OtlpConfig
from qtelemetry.exporter.exposition import Exposition, Family
from qtelemetry.runtime.snapshot import Snapshot

#: Results of a push, the values of ``qtelemetry_otlp_pushes_total``'s ``result`` label.
RESULTS = ("success", "failed", "timeout", "stalled")
#: The push at shutdown waits at most this long (or the push timeout, if shorter): a stop must
#: not wait on a collector that does not answer (Kubernetes kills after 30 s).
FINAL_PUSH_SECONDS = 5.0
#: Data points per OTLP request: ~70 bytes each with their attributes, so ~1.8 MB requests, under
#: the 4-20 MiB bodies collectors and gateways accept by default, at any number of links; and a
#: push holds one request's points in memory at a time.
MAX_POINTS_PER_REQUEST = 25_000
#: Catalogue units → UCUM units, as OpenTelemetry expects.
UCUM = {"": "1", "ratio": "1", "bits/s": "bit/s", "bits": "bit", "seconds": "s", "dB": "dB", "1/s": "1/s", "degrees": "deg"}

log = logging.getLogger("qtelemetry")


def push_counter(registry: CollectorRegistry) -> Counter:
    """``qtelemetry_otlp_pushes_total``, every result at 0 from the start (a rate needs the zeros)."""
    pushes = selfmetrics.instrument("qtelemetry_otlp_pushes", registry)
    for result in RESULTS:
        pushes.labels(result)
    return pushes  # type: ignore[return-value]


class Batches:
    """A snapshot's series as OTLP ``MetricsData``, at most ``size`` data points each."""

    def __init__(self, resource: Resource, started_ns: int, size: int = MAX_POINTS_PER_REQUEST):
        self.resource, self.started_ns, self.size = resource, started_ns, size
        self.scope = InstrumentationScope("qtelemetry", __version__)

    def __call__(self, families: tuple[Family, ...], snap: Snapshot, now: float) -> Iterator[MetricsData]:
        now_ns, metrics, room = int(now * 1e9), [], self.size
        for family, block in ((f, b) for f in families if f.metric.type != "histogram" for b in f.blocks):
            values, keep = block.values_at(snap, now)
            kept, rows = np.flatnonzero(keep).tolist(), block.label_rows()
            while kept:
                part, kept = kept[:room], kept[room:]
                metrics.append(self._metric(family, [
                    NumberDataPoint(dict(zip(block.label_names, rows[i])), self.started_ns, now_ns, value, exemplars=[])
                    for i, value in zip(part, values[part].tolist())]))
                room -= len(part)
                if not room:
                    yield self._data(metrics)
                    metrics, room = [], self.size
        if metrics:
            yield self._data(metrics)

    def _metric(self, family: Family, points: list[NumberDataPoint]) -> Metric:
        metric = family.metric
        if metric.type == "counter":
            data: Gauge | Sum = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
            name = metric.name
        else:
            data, name = Gauge(points), metric.sample_name
        return Metric(name, metric.help, UCUM[metric.unit], data)

    def _data(self, metrics: list[Metric]) -> MetricsData:
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(self.scope, metrics, "")], "")])


class OtlpPush:
    """Pushes every ``interval_seconds`` to an OTLP/HTTP endpoint until ``shutdown()``.

    Each push runs in a daemon thread that the schedule waits for at most ``timeout_seconds``:
    the SDK's HTTP client bounds each read, not a whole answer, so a collector answering a byte
    at a time held a push (and, before, every later one) for as long as it liked. While a push
    still hangs, the next ones are not sent but counted ``stalled``: one connection at most.
    """

    def __init__(self, exposition: Exposition, snapshot: Callable[[], Snapshot], config: OtlpConfig,
                 registry: CollectorRegistry):
        self.exposition, self.snapshot, self.config = exposition, snapshot, config
        self.exporter = OTLPMetricExporter(endpoint=config.endpoint, timeout=config.timeout_seconds)
        self.pushes = push_counter(registry)
        resource = Resource.create({"service.name": "qtelemetry", "service.version": __version__,
                                    "service.instance.id": socket.gethostname()})
        self.batches = Batches(resource, time.time_ns())
        self.in_flight: threading.Thread | None = None
        self.starting = threading.Lock()  # the schedule's push and the one at shutdown
        self.stopping = threading.Event()
        self.schedule = threading.Thread(target=self._run, name="otlp-schedule", daemon=True)
        self.schedule.start()

    def _run(self) -> None:
        while not self.stopping.wait(self.config.interval_seconds):
            self.push(self.config.timeout_seconds)

    def push(self, timeout: float) -> str:
        """Push the current snapshot, waiting at most ``timeout`` seconds; the result, counted."""
        outcome: list[str] = []
        with self.starting:
            thread = None if self.in_flight is not None and self.in_flight.is_alive() else threading.Thread(
                target=self._send, args=(self.snapshot(), time.time(), outcome), name="otlp-push", daemon=True)
            if thread is not None:
                self.in_flight = thread
                thread.start()
        if thread is None:
            result = "stalled"
        else:
            thread.join(timeout)
            result = outcome[0] if outcome else "timeout"
            if not outcome:
                log.warning("OTLP push unanswered", extra={"timeout_seconds": timeout})
        self.pushes.labels(result).inc()
        return result

    def _send(self, snap: Snapshot, now: float, outcome: list[str]) -> None:
        try:
            for data in self.batches(self.exposition.families(snap.table), snap, now):
                if self.exporter.export(data) is not MetricExportResult.SUCCESS:
                    outcome.append("failed")
                    return
            outcome.append("success")
        except Exception as exc:  # the SDK returns FAILURE for what it expects; anything else is counted too
            log.error("OTLP push failed", extra={"reason": type(exc).__name__})
            outcome.append("failed")

    def shutdown(self) -> None:
        """Stop the schedule (not waiting for a push it may be in) and push once more, waiting at most
        ``FINAL_PUSH_SECONDS`` for it."""
        self.stopping.set()
        self.push(min(FINAL_PUSH_SECONDS, self.config.timeout_seconds))
        self.exporter.shutdown()
