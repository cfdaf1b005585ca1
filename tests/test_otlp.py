"""OpenTelemetry output: a real OTLP/HTTP receiver decodes what `qtelemetry run` pushes, and
collectors that refuse, hang or drip their answers cost the exporter nothing but counted pushes."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import value
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest


class OtlpReceiver:
    """Minimal OTLP/HTTP metrics endpoint: records every decoded ExportMetricsServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.authorization: set[str | None] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.authorization.add(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"

    def points(self, name: str) -> list[tuple[dict[str, str], float, str]]:
        """(attributes, value, kind) of ``name`` in the newest request that has it."""
        for request in reversed(self.requests):
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == name:
                            kind = metric.WhichOneof("data")
                            data = getattr(metric, kind).data_points
                            return [({a.key: a.value.string_value for a in p.attributes},
                                     p.as_double if p.HasField("as_double") else p.as_int, kind) for p in data]
        return []


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_otlp_push_matches_the_prometheus_scrape(receiver, start_exporter, monkeypatch):
    # credentials for the collector come from the SDK's environment variables, never the config
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "authorization=Bearer%20s3cret")
    config = f"""
exporter:
  window_seconds: 0.2
  otlp: {{endpoint: "{receiver.url}", interval_seconds: 0.5}}
links:
  - name: otel-link
    driver: {{type: simulated-bb84, fiber_length_km: 30, seed: 4}}
"""
    exporter = start_exporter(config)
    deadline = time.monotonic() + 30
    while not receiver.points("qkd_channel_loss_db") and time.monotonic() < deadline:
        time.sleep(0.1)
    loss = receiver.points("qkd_channel_loss_db")
    assert loss and loss[0][0] == {"link": "otel-link"} and loss[0][2] == "gauge"
    assert loss[0][1] == pytest.approx(6.0, abs=0.5)
    pulses = receiver.points("qkd_pulses")
    assert {p[0]["intensity"] for p in pulses} == {"signal", "decoy", "vacuum"} and pulses[0][2] == "sum"
    info = receiver.points("qlink_info")
    assert info[0][0]["protocol"] == "bb84-decoy" and info[0][1] == 1
    resource = receiver.requests[-1].resource_metrics[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "qtelemetry"
    # both outputs read the same snapshot: the scraped loss is within noise of the pushed one
    assert value(exporter.scrape(), "qkd_channel_loss_db", link="otel-link") == pytest.approx(loss[0][1], abs=0.3)
    # the process and endpoint figures stay on /metrics (qtelemetry.selfmetrics says why)
    scraped = exporter.scrape()
    assert scraped["process_resident_memory_bytes"] and scraped["qtelemetry_http_requests_total"]
    assert not receiver.points("process_resident_memory_bytes") and not receiver.points("qtelemetry_http_requests")
    assert value(scraped, "qtelemetry_otlp_pushes_total", result="success") >= 1
    assert value(scraped, "qtelemetry_otlp_pushes_total", result="failed") == 0
    assert receiver.authorization == {"Bearer s3cret"} and "s3cret" not in exporter.log()


def otlp_config(url: str, timeout: float) -> str:
    return f"""
exporter:
  window_seconds: 0.2
  otlp: {{endpoint: "{url}", interval_seconds: 0.5, timeout_seconds: {timeout}}}
links:
  - name: otel-link
    driver: {{type: simulated-bb84, fiber_length_km: 30, seed: 4}}
"""


def pushes(samples: dict, result: str) -> float:
    return value(samples, "qtelemetry_otlp_pushes_total", result=result) or 0


class SilentCollector:
    """Accepts connections and reads requests, then answers one byte per ``drip`` seconds, or never
    (``drip`` None): what neither a connect nor a per-read timeout catches."""

    def __init__(self, drip: float | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1/metrics"
        self.connections = 0
        self.drip, self.closed = drip, threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(1 << 16)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                    if self.closed.wait(self.drip if self.drip is not None else 3600):
                        return
                    conn.send(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def test_a_refusing_collector_is_counted_and_the_scrape_goes_on(start_exporter):
    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"no\nlevel=ERROR msg=forged \x1b[31m"
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        exporter = start_exporter(otlp_config(f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", 2))
        samples = exporter.wait_for(lambda s: pushes(s, "failed") >= 2, timeout=30)
        assert pushes(samples, "success") == 0 and value(samples, "qlink_up", link="otel-link") == 1
        assert "forged" not in exporter.log()  # the collector's text is not logged
    finally:
        server.shutdown()
        server.server_close()


def test_a_dripping_collector_holds_one_push_and_the_rest_are_counted_stalled(start_exporter):
    """The SDK's timeout is per read: before, the first push hung for as long as the bytes kept
    coming and no later push was sent, with nothing logged or counted."""
    collector = SilentCollector(drip=0.2)
    try:
        exporter = start_exporter(otlp_config(collector.url, 1))
        samples = exporter.wait_for(lambda s: pushes(s, "stalled") >= 2, timeout=30)
        assert pushes(samples, "timeout") >= 1 and pushes(samples, "success") == 0
        assert collector.connections == 1  # one push in flight at most
        assert "OTLP push unanswered" in exporter.log()
    finally:
        collector.close()


def test_a_collector_that_never_answers_does_not_hold_the_stop(start_exporter):
    """A push may wait two minutes for its answer, but a stop waits for it at most
    FINAL_PUSH_SECONDS: the SDK's default made a stop take 30 s, a Kubernetes grace period."""
    collector = SilentCollector(drip=None)
    try:
        exporter = start_exporter(otlp_config(collector.url, 120))
        exporter.wait_for(lambda s: collector.connections >= 1, timeout=30)
        exporter.proc.terminate()
        assert exporter.proc.wait(timeout=20) == 0
    finally:
        collector.close()


def test_every_series_of_a_large_exporter_is_pushed(receiver, start_exporter):
    """400 links: 2,400 series of qkd_sifted_detections (basis × intensity). The SDK's default
    cardinality limit (2000 attribute sets) merged the rest into one ``otel.metric.overflow`` point."""
    links = 400
    config = "exporter: {window_seconds: 0.5, otlp: {endpoint: \"%s\", interval_seconds: 2}}\nlinks:\n" % receiver.url
    config += "".join(f"  - {{name: l{i}, driver: {{type: simulated-bb84, fiber_length_km: {10 + i % 50}, seed: {i}}}}}\n"
                      for i in range(links))
    start_exporter(config)
    deadline = time.monotonic() + 90
    while len(receiver.points("qkd_sifted_detections")) < 6 * links and time.monotonic() < deadline:
        time.sleep(0.5)
    points = receiver.points("qkd_sifted_detections")
    assert len(points) == 6 * links
    assert len({(p[0]["link"], p[0]["basis"], p[0]["intensity"]) for p in points}) == 6 * links
    assert not [p for p in points if "otel.metric.overflow" in p[0]]
