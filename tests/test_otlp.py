"""OpenTelemetry output: a real OTLP/HTTP receiver decodes what `qtelemetry run` pushes."""

from __future__ import annotations

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
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
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


def test_otlp_push_matches_the_prometheus_scrape(receiver, start_exporter):
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
