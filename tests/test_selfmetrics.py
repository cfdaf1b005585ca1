"""The exporter reports on itself: process, endpoint and durations from a prometheus_client registry,
appended fresh to every scrape in the scraper's format, exactly as the catalogue declares them."""

from __future__ import annotations

import gzip
import http.client
import time
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from web import LINKS

from qtelemetry import selfmetrics
from qtelemetry.exporter.exposition import Exposition
from qtelemetry.exporter.otel import push_counter
from qtelemetry.exporter.server import HANDLERS, REJECTION_REASONS, EndpointMetrics
from qtelemetry.monitoring.catalogue import METRICS
from qtelemetry.runtime.runtime import Runtime
from qtelemetry.config import default_config

FORMATS = {"text": {}, "openmetrics": {"Accept": "application/openmetrics-text; version=1.0.0"},
           "gzip": {"Accept-Encoding": "gzip"}}


def scrape(conn: http.client.HTTPConnection, headers: dict[str, str]) -> dict:
    """/metrics in the format ``headers`` ask for, parsed by the parser of the format served."""
    conn.request("GET", "/metrics", headers=headers)
    response = conn.getresponse()
    raw, served = response.read(), dict(response.getheaders())
    assert response.status == 200
    text = (gzip.decompress(raw) if served.get("Content-Encoding") == "gzip" else raw).decode()
    if served["Content-Type"].startswith("application/openmetrics-text"):
        assert text.endswith("# EOF\n") and text.count("# EOF") == 1
        return {f.name: f for f in parse_openmetrics(text)}  # the strict parser: one block per family
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict, family: str, **labels: str) -> float:
    found = [s.value for s in fams[family].samples
             if s.name == fams[family].name + ("_total" if fams[family].type == "counter" else "")
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, labels, found)
    return found[0]


def test_own_metrics_are_fresh_at_every_scrape_in_every_format(endpoint):
    """The link series are rendered once per cycle and cached (gzip too); the request counter
    still moves by one per scrape, whichever format, because the own registry is rendered each time."""
    served = endpoint("exporter: {}\n" + LINKS, run=False)  # no cycle runs: one cached body serves every scrape
    conn = served.connection()
    seen = []
    for name in [*FORMATS] * 2:
        fams = scrape(conn, FORMATS[name])
        assert sample(fams, "process_resident_memory_bytes") > 10e6, name
        assert time.time() - 3600 < sample(fams, "process_start_time_seconds") <= time.time(), name
        assert sample(fams, "process_open_fds") < sample(fams, "process_max_fds")
        assert sample(fams, "qtelemetry_http_connections") >= 1 and sample(fams, "qtelemetry_http_connections_limit") == 512
        assert "qlink_up" in fams and fams["qtelemetry_http_requests"].type == "counter"
        seen.append(sum(s.value for s in fams["qtelemetry_http_requests"].samples
                        if s.labels.get("handler") == "/metrics" and s.labels.get("code") == "200"))
    assert seen == [float(n) for n in range(6)], "each scrape counts the ones before it, not a cached figure"
    conn.request("HEAD", "/metrics", headers=FORMATS["gzip"])  # the length of the parts it would send, none sent
    head = conn.getresponse()
    assert head.status == 200 and int(head.getheader("Content-Length")) > 1000 and head.read() == b""
    assert served.request("GET", "/nowhere")[0] == 404 and served.request("GET", "/-/healthy")[0] == 200
    fams = scrape(conn, {})
    conn.close()
    assert sample(fams, "qtelemetry_http_requests", handler="other", code="404") == 1  # never the client's path
    assert sample(fams, "qtelemetry_http_requests", handler="/-/healthy", code="200") == 1
    durations = fams["qtelemetry_http_request_duration_seconds"].samples
    assert {s.labels["handler"] for s in durations} == {"/metrics", "other", "/-/healthy"}
    assert {s.labels["reason"] for s in fams["qtelemetry_http_rejections"].samples} == set(REJECTION_REASONS)


def test_every_own_family_is_exported_as_the_catalogue_declares_it():
    """Names, types, labels and help of the registry a running exporter holds (process collector,
    memory limit, runtime, exposition, endpoint, OTLP push) against the catalogue entries marked own."""
    own = selfmetrics.registry()
    runtime = Runtime(default_config(), own)
    runtime.cycle()
    exposition = Exposition(lambda: runtime.snapshot, own)
    endpoint = EndpointMetrics(own, lambda: 1, lambda: 512)
    endpoint.answered("/metrics", 200, 0.01)
    push_counter(own)  # registered by the OTLP push when exporter.otlp is set
    exposition.render()
    exported = {f.name: f for f in parse_openmetrics(exposition.render(openmetrics=True).decode())}
    declared = [m for m in METRICS if m.own]
    assert {m.name for m in declared} <= exported.keys()
    for metric in declared:
        family = exported[metric.name]
        assert (family.type, family.documentation) == (metric.type, metric.help), metric.name
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        assert labels <= set(metric.labels), metric.name
    assert not [m for m in METRICS if m.own and m.protocols], "own metrics are about the process, not links"
    assert set(HANDLERS) >= {"/metrics", "/-/healthy", "/-/ready"}


# --- the memory limit: cgroup files as the kernel lays them out --------------------------------------


def cgroup_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize("proc, files, limit", [
    # cgroup v2, a systemd service under a slice with a lower limit: the lowest on the path counts
    ("0::/system.slice/qtelemetry.service\n",
     {"cgroup.controllers": "cpu memory", "system.slice/memory.max": "1073741824\n",
      "system.slice/qtelemetry.service/memory.max": "2147483648\n"}, 1073741824),
    ("0::/system.slice/qtelemetry.service\n",
     {"cgroup.controllers": "cpu memory", "system.slice/qtelemetry.service/memory.max": "max\n"}, None),
    # a container with its own cgroup namespace: its path is "/", its limit at the mount's root
    ("0::/\n", {"cgroup.controllers": "memory", "memory.max": "536870912\n"}, 536870912),
    # cgroup v1 (hybrid hierarchy, as on this project's CI machine): "unlimited" is ~2^63
    ("4:memory:/process_api/abc\n0::/\n",
     {"memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712\n",
      "memory/memory.limit_in_bytes": "9223372036854771712\n", "unified/cgroup.procs": ""}, None),
    # v1 docker without a cgroup namespace: the host path is absent, the container's limit is the root's
    ("12:cpu,cpuacct:/docker/f00\n4:memory:/docker/f00\n",
     {"memory/memory.limit_in_bytes": "268435456\n"}, 268435456),
    ("", {}, None),  # no /proc/self/cgroup (not Linux): nothing is claimed
    ("0::/a\n", {"cgroup.controllers": "memory", "a/memory.max": "garbage\n"}, None),
])
def test_the_memory_limit_is_the_lowest_on_the_cgroup_path(tmp_path, proc, files, limit):
    proc_file = tmp_path / "cgroup"
    proc_file.write_text(proc)
    assert selfmetrics.memory_limit(proc_file, cgroup_tree(tmp_path / "fs", files)) == limit


def test_the_memory_limit_family_is_announced_even_without_a_limit():
    (family,) = selfmetrics.MemoryLimit().collect()
    assert family.name == "qtelemetry_memory_limit_bytes"
    assert [s.value for s in family.samples] == ([] if selfmetrics.memory_limit() is None else [selfmetrics.memory_limit()])
