"""The exporter's endpoint in the test process: a real Runtime, Exposition and MetricsServer on a free
loopback port, wired as ``qtelemetry run`` wires them, so tests can shrink the server's limits
(monkeypatch ``qtelemetry.exporter.server`` constants before ``serve``) and reach its state.
Raw-socket helpers send what no well-behaved client would.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qtelemetry import selfmetrics
from qtelemetry.exporter.exposition import Exposition
from qtelemetry.exporter.reload import Reloader, Source
from qtelemetry.exporter.server import MetricsServer
from qtelemetry.runtime.runtime import Runtime

LINKS = """links:
  - {name: target, driver: {type: simulated-bb84, fiber_length_km: 20, seed: 1}}
  - {name: bystander, driver: {type: simulated-spdc, fiber_length_km: 20, seed: 2}}
"""
TOKEN = "s3cret-admin-token"


@dataclass
class Endpoint:
    server: MetricsServer
    runtime: Runtime
    reloader: Reloader
    context: ssl.SSLContext | None = None
    stops: list[Callable[[], None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.address[1]

    def connection(self, timeout: float = 10.0, source: str | None = None) -> http.client.HTTPConnection:
        """A connection to the endpoint, from the loopback address ``source`` if given (127.0.0.2, ...)."""
        bind = None if source is None else (source, 0)
        if self.context is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=bind)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.context,
                                           source_address=bind)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10.0,
                source: str | None = None) -> tuple[int, dict[str, str], str]:
        """(status, headers, body text) of one request on a fresh connection (from ``source``)."""
        conn = self.connection(timeout, source)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
        finally:
            conn.close()

    def rejections(self, headers: dict[str, str] | None = None) -> dict[str, float]:
        """``qtelemetry_http_rejections_total`` by reason, as a scrape of /metrics reads it."""
        status, _, text = self.request("GET", "/metrics", headers=headers)
        assert status == 200, text
        family = next(f for f in text_string_to_metric_families(text) if f.name == "qtelemetry_http_rejections")
        return {s.labels["reason"]: s.value for s in family.samples}

    def control(self, method: str, path: str, body: bytes | str | None = None, token: str = TOKEN,
                **kwargs: object) -> tuple[int, dict[str, str], str]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return self.request(method, path, body, headers, **kwargs)  # type: ignore[arg-type]


def serve(directory: Path, config_text: str, web_config_text: str | None = None, run: bool = True,
          context: ssl.SSLContext | None = None) -> Endpoint:
    """Start an endpoint for ``config_text`` (and a web config file), as ``qtelemetry run`` does."""
    config_file = directory / "config.yaml"
    config_file.write_text(config_text)
    web_file = None
    if web_config_text is not None:
        web_file = directory / "web.yaml"
        web_file.write_text(web_config_text)
    source = Source(str(config_file), None if web_file is None else str(web_file), listen="127.0.0.1:0")
    settings = source.load()
    own = selfmetrics.registry()
    runtime = Runtime(settings.config, own)
    exposition = Exposition(lambda: runtime.snapshot, own)
    runtime.listeners.append(exposition.published)
    runtime.reload_hooks.append(exposition.families)
    reloader = Reloader(source, runtime, settings)
    server = MetricsServer(exposition, "127.0.0.1", 0, settings.protection, runtime.faults, reloader.reload,
                           lambda now: runtime.snapshot.ready(now), runtime.rearm, own)
    reloader.hooks.append(server.protect)
    endpoint = Endpoint(server, runtime, reloader, context)
    if run:
        runtime.start()
        endpoint.stops.append(runtime.stop)
    exposition.start()
    server.start()
    endpoint.stops += [exposition.stop, server.close]
    return endpoint


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Callable[..., Endpoint]]:
    started: list[Endpoint] = []

    def start(*args: object, **kwargs: object) -> Endpoint:
        started.append(serve(tmp_path, *args, **kwargs))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for running in started:
        for stop in reversed(running.stops):
            stop()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a plain connection and read until the server closes it or ``timeout`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return received


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0 if there is none)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if answer.startswith(b"HTTP/1.") and len(parts) > 1 else 0


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except (socket.timeout, ssl.SSLError):
        return False
