"""Test harness for device drivers: real servers on loopback, run from a background event loop,
and ``qtelemetry simulate`` processes.

``StoreLink`` is a ``qtelemetry.devices.links.SimulatedLink`` whose key store and figures a test
sets directly, for fast unit tests of the devices' HTTP layer; end-to-end tests use the real
simulator (``conftest.DeviceProcess``).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from qtelemetry.devices.links import LinkFigures, qkdl_id
from qtelemetry.devices.serving import start
from qtelemetry.drivers.base import DriverError
from tls import Authority


def acquire(config: Any, attempts: int = 1, between: Callable[[int], None] | None = None) -> list[Any]:
    """``attempts`` readings of one driver built from ``config``: batches or DriverErrors, in order.

    ``between(i)`` runs after the i-th reading (to change the device between polls).
    """
    async def run() -> list[Any]:
        driver, results = config.build(), []
        try:
            for i in range(attempts):
                try:
                    results.append(await driver.acquire())
                except DriverError as exc:
                    results.append(exc)
                if between:
                    between(i)
        finally:
            await driver.aclose()
        return results
    return asyncio.run(run())


@dataclass
class StoreLink:
    """A simulated link for tests: a thread-safe key store and figures set by the test."""

    name: str
    site_a: str
    site_b: str
    capacity_bits: float = 1e6
    stored_bits: float = 5e5
    live: LinkFigures = LinkFigures("ACTIVE", 1200.0, 1000.0, 0.021, 300.0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def key_store(self) -> tuple[float, float]:
        with self._lock:
            return self.stored_bits, self.capacity_bits

    def withdraw(self, bits: int) -> bool:
        with self._lock:
            if bits > self.stored_bits:
                return False
            self.stored_bits -= bits
            return True

    def figures(self) -> LinkFigures:
        return self.live


class ServerThread:
    """aiohttp applications and raw sockets served by an event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []
        self._sockets: list[socket.socket] = []

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def serve(self, app: web.Application, context: ssl.SSLContext | None = None, port: int = 0) -> int:
        """Serve ``app`` on a loopback port (0: a free one); return the port."""
        runner, port = self.run(start(app, "127.0.0.1", port, context))
        self._runners.append(runner)
        return port

    def stop(self, port: int) -> None:
        """Stop serving on ``port`` (the server goes away: connections are refused)."""
        for runner in list(self._runners):
            if any(addr[1] == port for addr in runner.addresses):
                self.run(runner.cleanup())
                self._runners.remove(runner)

    def silent(self) -> int:
        """A port that accepts TCP connections and never answers (nor reads)."""
        sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._sockets.append(sock)
        return sock.getsockname()[1]

    def close(self) -> None:
        for runner in self._runners:
            self.run(runner.cleanup())
        for sock in self._sockets:
            sock.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


@pytest.fixture
def servers() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


def json_app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], path: str = "/{tail:.*}") -> web.Application:
    """An application answering every request under ``path`` with ``handler``."""
    app = web.Application()
    app.router.add_route("*", path, handler)
    return app


@dataclass
class Pki:
    """CAs and certificates for device tests: a trusted CA, another CA, good and bad leaves."""

    ca: Authority
    other: Authority
    server: tuple[Path, Path]
    expired_server: tuple[Path, Path]

    def client(self, name: str, expired: bool = False, untrusted: bool = False) -> tuple[Path, Path]:
        return (self.other if untrusted else self.ca).issue("client", name, expired=expired)


def make_device_pki(directory: Path) -> Pki:
    ca, other = Authority.create(directory, "device CA"), Authority.create(directory, "other CA")
    return Pki(ca, other, ca.issue("server", "device"), ca.issue("server", "device", expired=True))


class OpensslServer:
    """``openssl s_server`` requiring a client certificate: a production TLS stack that tells the
    client why it refuses its certificate (a TLS alert), which Python's asyncio server does not."""

    def __init__(self, pki: Pki, port: int):
        self.port = port
        cert, key = pki.server
        self._process = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
             "-CAfile", str(pki.ca.cert_path), "-Verify", "1", "-verify_return_error", "-www", "-quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("openssl s_server did not start")

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


OPENSSL = shutil.which("openssl")
NAN = math.nan


def device_tls(pki: Path) -> dict[str, str]:
    """Server TLS of simulated devices with a demo PKI (``qtelemetry simulate --make-pki``)."""
    return {"cert_file": str(pki / "device.crt"), "key_file": str(pki / "device.key"), "client_ca_file": str(pki / "ca.crt")}


def client_tls(pki: Path, client: str) -> dict[str, str]:
    """A driver's ``tls`` for a device of that PKI, presenting ``client``'s certificate."""
    return {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / f"{client}.crt"), "key_file": str(pki / f"{client}.key")}


def kme_link(name: str, kme_url: str, slave_sae_id: str, pki: Path, client: str, **driver: Any) -> dict:
    """An exporter link entry watching a simulated KME (polled and probed twice a second unless ``driver`` says)."""
    return {"name": name, "driver": {"type": "etsi014", "kme_url": kme_url, "slave_sae_id": slave_sae_id,
                                     "tls": client_tls(pki, client), "poll_interval_seconds": 0.5,
                                     "probe_interval_seconds": 0.5, **driver}}


def node_link(name: str, node_url: str, simulated_link: str, pki: Path, client: str, **driver: Any) -> dict:
    """An exporter link entry reading ``simulated_link`` from a simulated RESTCONF node."""
    return {"name": name, "driver": {"type": "etsi015", "url": node_url, "qkdl_id": qkdl_id(simulated_link),
                                     "tls": client_tls(pki, client), "poll_interval_seconds": 0.5, **driver}}
