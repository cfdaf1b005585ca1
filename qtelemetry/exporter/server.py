"""HTTP(S) server: /metrics, health, and the fault-injection endpoint for simulated links.

TLS (optionally mutual) and basic auth follow the Prometheus exporter-toolkit web config:
``basic_auth_users`` maps user names to bcrypt hashes, so no password is ever stored or logged.
Fault injection (``/-/faults``) is off unless an admin token file is configured; it needs
``Authorization: Bearer <token>`` on top of basic auth.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import bcrypt
from pydantic import ValidationError

from qtelemetry.config import WebConfig
from qtelemetry.drivers.base import FaultControl
from qtelemetry.drivers.faults import FaultConfig
from qtelemetry.exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Exposition

log = logging.getLogger(__name__)

LANDING = b"""<html><head><title>qtelemetry</title></head><body><h1>qtelemetry</h1>
<p><a href="/metrics">Metrics</a></p></body></html>"""


def accepts_openmetrics(accept: str) -> bool:
    """Content negotiation as Prometheus does it: OpenMetrics when the scraper lists it."""
    return any(part.split(";")[0].strip() == "application/openmetrics-text" for part in accept.split(","))


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s", format % args)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorised(self) -> bool:
        users = self.server.web.basic_auth_users
        if not users:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            hashed = users.get(user)
            if hashed and bcrypt.checkpw(password.encode(), hashed.encode()):
                return True
        self._send(401, b"Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="qtelemetry"'})
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if not self._authorised():
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            openmetrics = accepts_openmetrics(self.headers.get("Accept", ""))
            gzip = "gzip" in (e.split(";")[0].strip() for e in self.headers.get("Accept-Encoding", "").split(","))
            body = self.server.exposition.render(openmetrics=openmetrics, gzip=gzip)
            self._send(200, body, OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE,
                       {"Content-Encoding": "gzip"} if gzip else None)
        elif path == "/":
            self._send(200, LANDING, "text/html; charset=utf-8")
        elif path in ("/-/healthy", "/-/ready"):
            self._send(200, b"OK\n")
        else:
            self._send(404, b"Not found\n")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        """POST /-/faults {"link": ..., "kind": ..., ...FaultConfig fields} starts a fault now."""
        body = self._fault_request()
        if body is None:
            return
        link = body.pop("link", None)
        try:
            fault = FaultConfig.model_validate(body)
            started = self.server.faults(str(link)).inject(fault)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            self._send(400, f"{problems}\n".encode())
            return
        except (LookupError, ValueError) as exc:
            self._send(400, f"{exc}\n".encode())
            return
        log.info("fault injected link=%s kind=%s", link, fault.kind)
        self._send(200, started.model_dump_json().encode(), "application/json")

    def do_DELETE(self) -> None:  # noqa: N802
        """DELETE /-/faults {"link": ..., "kind": optional} ends faults on a link."""
        body = self._fault_request()
        if body is None:
            return
        try:
            ended = self.server.faults(str(body.get("link"))).clear(body.get("kind"))
        except LookupError as exc:
            self._send(400, f"{exc}\n".encode())
            return
        log.info("faults cleared link=%s kind=%s count=%d", body.get("link"), body.get("kind") or "all", ended)
        self._send(200, json.dumps({"ended": ended}).encode(), "application/json")

    def _fault_request(self) -> dict[str, Any] | None:
        """Authenticate a fault request and parse its JSON body; None if already answered."""
        if not self._authorised():
            return None
        if self.path.split("?", 1)[0] != "/-/faults":
            self._send(404, b"Not found\n")
            return None
        token = self.server.admin_token
        offered = self.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if token is None:
            self._send(403, b"fault injection is disabled: set exporter.admin_token_file\n")
            return None
        if not hmac.compare_digest(offered, token.encode()):
            self._send(403, b"bad or missing admin token\n")
            return None
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except (ValueError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict):
            self._send(400, b"expected a JSON object\n")
            return None
        return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    exposition: Exposition
    web: WebConfig
    faults: Callable[[str], FaultControl]
    admin_token: str | None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line (failed TLS handshakes, dropped clients), not a traceback on stderr."""
        log.warning("http client=%s error=%s", client_address[0], sys.exc_info()[1])


class MetricsServer:
    """Serves the exposition on ``host:port`` from a background thread until ``close``.

    ``faults(link)`` gives the fault control of a simulated link (LookupError otherwise).
    """

    def __init__(self, exposition: Exposition, host: str, port: int, web: WebConfig,
                 faults: Callable[[str], FaultControl], admin_token: str | None = None):
        self._httpd = _Server((host, port), _Handler)
        self._httpd.exposition = exposition
        self._httpd.web = web
        self._httpd.faults = faults
        self._httpd.admin_token = admin_token
        if web.tls_cert_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(web.tls_cert_file, web.tls_key_file)
            if web.tls_client_ca_file:
                context.load_verify_locations(web.tls_client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
            # handshake lazily, in the request's own thread, so a slow client can't stall accept()
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.scheme = "https" if web.tls_cert_file else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
