"""The exporter's own metrics: its process, its HTTP endpoint, its cycle and render durations.

They come from a prometheus_client registry, not from the Snapshot: they describe this process
at the moment of the scrape (memory, CPU, connections open, requests answered), so the
exposition renders them at every scrape and appends them to the cached link series. Each
instrument is made from its catalogue entry (name, help, labels, buckets), so what dashboards
and alerts read and what is exported cannot differ. ``_created`` series are switched off for
the process: Prometheus 2.x ignores them, and in the text format each would be one more series.

They are not pushed over OTLP. The endpoint's series describe the pull path, which a push
pipeline does not use; process figures have their own OpenTelemetry semantic conventions
(``process.cpu.time``, ``process.memory.usage``), which the Collector's ``hostmetrics`` process
scraper already reports under the names OpenTelemetry users query; and the durations are
histograms, which observable instruments cannot carry (as for the link histograms).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qtelemetry.monitoring.catalogue import METRICS

disable_created_metrics()

OWN = {metric.name: metric for metric in METRICS if metric.own}
#: cgroup v1 writes "no limit" as the largest page-aligned counter (~2^63): anything this large is none.
UNLIMITED = 1 << 62
#: The files read here are a few lines long; more than this is not a cgroup file.
MAX_FILE_BYTES = 65536


def instrument(name: str, registry: CollectorRegistry | None) -> Counter | Gauge | Histogram:
    """The prometheus_client instrument of catalogue metric ``name``, registered in ``registry``
    (None: not registered, e.g. a runtime in a test)."""
    metric = OWN[name]
    if metric.type == "histogram":
        return Histogram(metric.name, metric.help, metric.labels, registry=registry, buckets=metric.buckets)
    kind = {"counter": Counter, "gauge": Gauge}[metric.type]
    return kind(metric.name, metric.help, metric.labels, registry=registry)


def registry() -> CollectorRegistry:
    """A registry holding the process collector and the memory limit; the runtime, the exposition
    and the server register their own instruments in it."""
    own = CollectorRegistry()
    ProcessCollector(registry=own)
    own.register(MemoryLimit())
    return own


def _read(path: Path) -> str:
    try:
        with path.open(encoding="ascii", errors="replace") as file:
            return file.read(MAX_FILE_BYTES)
    except OSError:
        return ""


def _limits_up(base: Path, path: str, name: str) -> Iterator[int]:
    """The ``name`` limits of cgroup ``path`` under ``base`` and of each of its ancestors: the
    kernel enforces all of them. Inside a container the path may not exist under the container's
    own mount; its root is then the container's cgroup."""
    parts = PurePosixPath(path).parts[1:]
    for depth in range(len(parts), -1, -1):
        text = _read(base.joinpath(*parts[:depth]) / name).strip()
        if text.isdigit():
            yield int(text)


def memory_limit(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The lowest memory limit (bytes) on this process's cgroup path, None if there is none:
    ``memory.max`` on a cgroup v2 mount, ``memory.limit_in_bytes`` of the v1 memory controller."""
    limits: list[int] = []
    for line in _read(proc_cgroup).splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers and (root / "cgroup.controllers").exists():
            limits += _limits_up(root, path, "memory.max")
        elif "memory" in controllers.split(","):
            limits += _limits_up(root / "memory", path, "memory.limit_in_bytes")
    limited = [limit for limit in limits if limit < UNLIMITED]
    return min(limited) if limited else None


class MemoryLimit(Collector):
    """``qtelemetry_memory_limit_bytes``, read at every scrape (``systemctl set-property`` changes
    it live); the family is announced without a sample when there is no limit."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        metric = OWN["qtelemetry_memory_limit_bytes"]
        family = GaugeMetricFamily(metric.name, metric.help)
        limit = memory_limit()
        if limit is not None:
            family.add_metric([], limit)
        yield family
