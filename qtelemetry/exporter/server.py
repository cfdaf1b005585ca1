"""The HTTP(S) endpoint: /metrics, health and readiness, and the control plane.

One asyncio event loop on its own thread serves every connection (aiohttp's low-level server),
so a slow or idle client costs a socket, never a thread. ``Connections`` closes clients that
keep the server waiting (TLS handshake, request head: ``WAIT_TIMEOUT_S`` each) and, when
``MAX_CONNECTIONS`` are open, the one that has waited longest. Request bodies and answers have
their own deadlines. Rendering runs on a small thread pool, bcrypt on its own (``auth``).

Who may do what:

- ``/metrics`` and ``/``: basic auth when ``basic_auth_users`` is set (``auth.BasicAuth``);
- ``/-/healthy`` and ``/-/ready``: anyone who completes the TLS handshake, so that probes work
  without credentials; they tell nothing but "up" and "ready or why not";
- the control plane, ``/-/faults`` (simulated links) and ``/-/reload``: only with
  ``Authorization: Bearer <admin token>``, and only when ``exporter.admin_token_file`` is set.
  Basic auth does not apply there: scrape credentials and the admin token are two separate
  credentials for two separate jobs, and each path reads only its own scheme.

TLS, when on, covers every path; with mutual TLS every client needs a certificate.

The endpoint counts what it does in the exporter's own registry (``EndpointMetrics``): requests by
handler and status, their durations, the connections open against the cap, and every client it
refused or disconnected, by reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from qtelemetry import selfmetrics
from qtelemetry.drivers.base import FaultControl
from qtelemetry.drivers.faults import FAULT_KINDS, FaultConfig
from qtelemetry.exporter.auth import BasicAuth, Verdict, token_matches
from qtelemetry.exporter.connections import Connections
from qtelemetry.exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Exposition
from qtelemetry.exporter.webconfig import ServerTLS, WebConfigFile

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 128
MAX_CONNECTIONS = 512
#: Seconds a client may take for each step it owes: the TLS handshake, a request head, the next request.
WAIT_TIMEOUT_S = 10.0
#: aiohttp's keep-alive and asyncio's handshake timeouts are backstops at this multiple: ``Connections``
#: closes a waiting client first, and counts it (idle_timeout).
BACKSTOP_FACTOR = 2.0
#: Seconds to receive a request body, and to deliver an answer to a slow reader.
BODY_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0
#: Largest request body (the control plane's JSON is a few hundred bytes).
MAX_BODY_BYTES = 4096
RENDER_WORKERS = 2
TEXT = "text/plain; charset=utf-8"
LANDING = b"""<html><head><title>qtelemetry</title></head><body><h1>qtelemetry</h1>
<p><a href="/metrics">Metrics</a></p></body></html>"""
CONTROL_PATHS = ("/-/faults", "/-/reload", "/-/tamper")
HEALTH_PATHS = ("/-/healthy", "/-/ready")
#: The ``handler`` label: a path the endpoint serves, or "other" (never a client's free text).
HANDLERS = ("/metrics", "/", *HEALTH_PATHS, *CONTROL_PATHS)
#: Why a client was refused or disconnected (``qtelemetry_http_rejections_total``); all exported from the start.
REJECTION_REASONS = ("unauthorized", "auth_queue_full", "control_plane_disabled", "body_too_large", "body_timeout",
                     "connection_limit", "idle_timeout", "tls_handshake", "client_certificate", "slow_reader")

#: The problems of a rejected reload as (field, reason) pairs; empty: reloaded.
Reload = Callable[[], list[tuple[str, str]]]


def accepts_openmetrics(accept: str) -> bool:
    """Content negotiation as Prometheus does it: OpenMetrics when the scraper lists it."""
    return any(part.split(";")[0].strip() == "application/openmetrics-text" for part in accept.split(","))


def _accepts_gzip(accept_encoding: str) -> bool:
    return "gzip" in (e.split(";")[0].strip() for e in accept_encoding.split(","))


@dataclass(frozen=True)
class Protection:
    """How the endpoint is protected; a reload swaps it whole."""

    web: WebConfigFile
    tls: ServerTLS | None
    admin_token: str | None  #: None: the control plane is off

    def __post_init__(self) -> None:
        if self.admin_token is not None and not self.admin_token:
            raise ValueError("an empty admin token would open the control plane to anyone")


class _Refusal(Exception):
    """An answer other than 200, raised from anywhere while handling a request; ``reason``: a
    rejection worth counting (one of ``REJECTION_REASONS``), None for a plain client error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, reason: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.reason = status, message, headers or {}, reason


class EndpointMetrics:
    """The endpoint's instruments in the exporter's own registry (None: counted, not exported)."""

    def __init__(self, registry: CollectorRegistry | None, connections: Callable[[], int], limit: Callable[[], int]):
        self._requests = selfmetrics.instrument("qtelemetry_http_requests", registry)
        self._durations = selfmetrics.instrument("qtelemetry_http_request_duration_seconds", registry)
        self._rejections = selfmetrics.instrument("qtelemetry_http_rejections", registry)
        for reason in REJECTION_REASONS:
            self._rejections.labels(reason)
        selfmetrics.instrument("qtelemetry_http_connections", registry).set_function(connections)
        selfmetrics.instrument("qtelemetry_http_connections_limit", registry).set_function(limit)

    def answered(self, path: str, status: int, seconds: float) -> None:
        handler = path if path in HANDLERS else "other"
        self._requests.labels(handler, str(status)).inc()
        self._durations.labels(handler).observe(seconds)

    def rejected(self, reason: str) -> None:
        self._rejections.labels(reason).inc()


class _HTTP(web.Server):
    """aiohttp's low-level server, its connections counted in ``Connections``."""

    def __init__(self, handler: Any, connections: Connections, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.tracked = connections

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if not self.tracked.opened(handler, transport.abort, asyncio.get_running_loop().time()):
            transport.abort()

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self.tracked.closed(handler)
        super().connection_lost(handler, exc)


class _Handshake(asyncio.Protocol):
    """An accepted TLS connection until its handshake is done and aiohttp takes it over.

    The context is asked for at each handshake, so a rotated certificate is used at once.
    """

    def __init__(self, server: "MetricsServer", tls: ServerTLS):
        self._server, self._tls = server, tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello waits in the socket until start_tls reads it
        loop = asyncio.get_running_loop()
        if self._server.connections.opened(self, transport.abort, loop.time()):
            self._task = loop.create_task(self._upgrade(transport))
        else:
            transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._server.connections.closed(self)

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        handler = self._server.http()
        peer = transport.get_extra_info("peername")
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport, handler, self._tls.context(), server_side=True, ssl_handshake_timeout=BACKSTOP_FACTOR * WAIT_TIMEOUT_S)
        except OSError as exc:  # ssl.SSLError, a reset, an abort by Connections, the handshake timeout
            if isinstance(exc, ssl.SSLError):
                self._server.metrics.rejected("tls_handshake")
            (log.warning if isinstance(exc, ssl.SSLError) else log.debug)(
                "TLS handshake failed", extra={"client": _host(peer), "reason": str(exc)})
            transport.abort()
            return
        finally:
            self._server.connections.closed(self)
        if secure is None:  # the client went away as the handshake ended
            return
        if not self._tls.config.allowed_client(secure.get_extra_info("peercert")):
            self._server.metrics.rejected("client_certificate")
            log.warning("client certificate has none of client_allowed_sans", extra={"client": _host(peer)})
            secure.abort()
            return
        handler.connection_made(secure)


def _host(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class MetricsServer:
    """Serves ``exposition`` on ``host:port`` from a background thread until ``close``.

    ``faults(link)`` gives a simulated link's fault control (LookupError otherwise), ``reload``
    re-reads the config, ``ready(now)`` says whether the exporter is ready and why not, ``rearm(link,
    relearn)`` clears a link's tamper alarms (LookupError for a link without tamper detectors);
    the endpoint's own metrics go to ``registry``.
    """

    http: _HTTP  #: aiohttp's protocol factory, made on the server's loop

    def __init__(self, exposition: Exposition, host: str, port: int, protection: Protection,
                 faults: Callable[[str], FaultControl], reload: Reload,
                 ready: Callable[[float], tuple[bool, str]], rearm: Callable[[str, bool], None],
                 registry: CollectorRegistry | None = None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        self._sock.setblocking(False)
        self._exposition, self._faults, self._reload, self._ready = exposition, faults, reload, ready
        self._rearm = rearm
        self._protection = protection
        self._auth = BasicAuth(protection.web.basic_auth_users)
        self.metrics = EndpointMetrics(registry, lambda: len(self.connections), lambda: self.connections.limit)
        self.connections = Connections(MAX_CONNECTIONS, WAIT_TIMEOUT_S, self.metrics.rejected)
        self._renderers = ThreadPoolExecutor(RENDER_WORKERS, thread_name_prefix="render")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._up = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def scheme(self) -> str:
        return "https" if self._protection.tls else "http"

    def protect(self, protection: Protection) -> None:
        """Use ``protection`` for the requests and handshakes that start from now on (a reload)."""
        before = self._protection
        self._auth.use(protection.web.basic_auth_users)  # passed checks of unchanged credentials stay
        self._protection = protection
        if (before.tls is None) != (protection.tls is None):
            log.warning("the endpoint changed scheme: scrapers must follow", extra={"scheme": self.scheme})
        if (before.admin_token is None) != (protection.admin_token is None):
            log.info("control plane switched", extra={"control_plane": "off" if protection.admin_token is None else "on"})

    def start(self) -> None:
        self._thread.start()
        self._up.wait(timeout=30)

    def close(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        self._sock.close()
        self._renderers.shutdown(wait=False, cancel_futures=True)
        self._auth.close()

    # --- connections ------------------------------------------------------------------------

    async def _serve(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.http = _HTTP(self._handle, self.connections, access_log=None,
                          keepalive_timeout=BACKSTOP_FACTOR * WAIT_TIMEOUT_S, lingering_time=1.0)
        server = await loop.create_server(self._accept, sock=self._sock, backlog=LISTEN_BACKLOG)
        sweeper = loop.create_task(self._sweep())
        self._up.set()
        await self._stopping.wait()
        server.close()
        sweeper.cancel()
        await self.http.shutdown(timeout=1.0)

    def _accept(self) -> asyncio.BaseProtocol:
        tls = self._protection.tls
        return self.http() if tls is None else _Handshake(self, tls)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, WAIT_TIMEOUT_S / 4))
            expired = self.connections.expire(loop.time())
            if expired:
                log.debug("closed connections that kept the server waiting", extra={"count": expired})

    # --- requests ---------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        self.connections.busy(request.protocol)
        try:
            try:
                status, body, headers = await self._route(request)
            except _Refusal as refusal:
                if refusal.reason is not None:
                    self.metrics.rejected(refusal.reason)
                status, body, headers = refusal.status, (refusal.message + "\n").encode(), {
                    "Content-Type": TEXT, **refusal.headers}
            response = await self._answer(request, status, body, headers)
            self.metrics.answered(request.path, status, time.perf_counter() - started)
            return response
        finally:
            self.connections.waiting(request.protocol, asyncio.get_running_loop().time())

    async def _answer(self, request: web.BaseRequest, status: int, body: bytes | tuple[bytes, ...],
                      headers: dict[str, str]) -> web.StreamResponse:
        """Send the answer (one body, or parts sent one after the other) within ``WRITE_TIMEOUT_S``,
        however slowly the client reads."""
        parts = (body,) if isinstance(body, bytes) else body
        response = web.StreamResponse(status=status, headers={
            "Server": "qtelemetry", **self._protection.web.http_server_config.headers, **headers})
        response.content_length = sum(map(len, parts))
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await response.prepare(request)
                if request.method != "HEAD":
                    for part in parts:
                        await response.write(part)
                await response.write_eof()
        except TimeoutError:
            self.metrics.rejected("slow_reader")
            log.debug("client too slow to read its answer", extra={"client": request.remote or "?"})
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _route(self, request: web.BaseRequest) -> tuple[int, bytes | tuple[bytes, ...], dict[str, str]]:
        path, method = request.path, request.method
        if path in HEALTH_PATHS:
            _allow(method, "GET", "HEAD")
            if path == "/-/healthy":
                return 200, b"OK\n", {"Content-Type": TEXT}
            ready, why = self._ready(time.time())
            return (200, b"ready\n", {"Content-Type": TEXT}) if ready else (503, f"{why}\n".encode(), {"Content-Type": TEXT})
        if path in CONTROL_PATHS:
            return await self._control(request)
        verdict = await self._auth.check(request.headers.get("Authorization"), request.remote)
        if verdict is Verdict.BUSY:
            raise _Refusal(429, "too many password checks waiting: try again", {"Retry-After": "1"}, "auth_queue_full")
        if verdict is Verdict.DENIED:
            raise _Refusal(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="qtelemetry", charset="UTF-8"'},
                           "unauthorized")
        _allow(method, "GET", "HEAD")
        if path == "/metrics":
            openmetrics = accepts_openmetrics(request.headers.get("Accept", ""))
            gzip = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
            body = await asyncio.get_running_loop().run_in_executor(
                self._renderers, lambda: self._exposition.parts(openmetrics=openmetrics, gzip=gzip))
            headers = {"Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE}
            return 200, body, {**headers, "Content-Encoding": "gzip"} if gzip else headers
        if path == "/":
            return 200, LANDING, {"Content-Type": "text/html; charset=utf-8"}
        raise _Refusal(404, "Not found")

    # --- control plane ----------------------------------------------------------------------

    async def _control(self, request: web.BaseRequest) -> tuple[int, bytes, dict[str, str]]:
        token = self._protection.admin_token
        if token is None:
            raise _Refusal(403, "the control plane (fault injection, reload) is disabled: set exporter.admin_token_file",
                           reason="control_plane_disabled")
        if not token_matches(request.headers.get("Authorization"), token):
            raise _Refusal(401, "bad or missing admin token (Authorization: Bearer <token>)",
                           {"WWW-Authenticate": 'Bearer realm="qtelemetry-control"'}, "unauthorized")
        if request.path == "/-/reload":
            _allow(request.method, "POST")
            problems = await asyncio.get_running_loop().run_in_executor(None, self._reload)
            if problems:
                text = "".join(f"{field}: {reason}\n" for field, reason in problems)
                raise _Refusal(500, "config not reloaded, the previous one keeps running:\n" + text.rstrip("\n"))
            return 200, b"config reloaded\n", {"Content-Type": TEXT}
        if request.path == "/-/tamper":
            _allow(request.method, "POST")
            return await self._rearm_link(await _json_object(request))
        _allow(request.method, "POST", "DELETE")
        body = await _json_object(request)
        link = body.pop("link", None)
        if not isinstance(link, str):
            raise _Refusal(400, "link: expected the name of a simulated link")
        if request.method == "POST":
            return await self._inject(link, body)
        return await self._clear(link, body)

    async def _rearm_link(self, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        """POST /-/tamper {"link", "relearn": optional bool} clears a link's tamper alarms after an investigation."""
        link, relearn = body.pop("link", None), body.pop("relearn", False)
        if body:
            raise _Refusal(400, f"unknown keys: {', '.join(sorted(map(repr, body)))[:200]} (expected link, relearn)")
        if not isinstance(link, str):
            raise _Refusal(400, "link: expected the name of a decoy-BB84 link")
        if not isinstance(relearn, bool):
            raise _Refusal(400, "relearn: expected true or false")
        try:
            await asyncio.to_thread(self._rearm, link, relearn)
        except LookupError as exc:
            raise _Refusal(400, str(exc)) from None
        log.warning("tamper detectors re-armed", extra={"link": link, "relearn": relearn})
        return 200, json.dumps({"rearmed": link, "relearn": relearn}).encode(), {"Content-Type": "application/json"}

    async def _inject(self, link: str, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        """POST /-/faults {"link", "kind", ...FaultConfig fields} starts a fault now; JSON types as they
        are (strict: "3" or true is no number)."""
        try:
            fault = FaultConfig.model_validate(body, strict=True)
            started = await asyncio.to_thread(lambda: self._faults(link).inject(fault))
        except ValidationError as exc:
            raise _Refusal(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        except (LookupError, ValueError) as exc:
            raise _Refusal(400, str(exc)) from None
        log.info("fault injected", extra={"link": link, "kind": fault.kind})
        return 200, started.model_dump_json().encode(), {"Content-Type": "application/json"}

    async def _clear(self, link: str, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        """DELETE /-/faults {"link", "kind": optional} ends faults on a link."""
        kind = body.pop("kind", None)
        if body:
            raise _Refusal(400, f"unknown keys: {', '.join(sorted(map(repr, body)))[:200]} (expected link, kind)")
        if kind is not None and kind not in FAULT_KINDS:
            raise _Refusal(400, f"kind: expected one of {', '.join(FAULT_KINDS)}")
        try:
            ended = await asyncio.to_thread(lambda: self._faults(link).clear(kind))
        except LookupError as exc:
            raise _Refusal(400, str(exc)) from None
        log.info("faults cleared", extra={"link": link, "kind": kind or "all", "count": ended})
        return 200, json.dumps({"ended": ended}).encode(), {"Content-Type": "application/json"}


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _Refusal(405, f"method {method} not allowed here", {"Allow": ", ".join(allowed)})


async def _json_object(request: web.BaseRequest) -> dict[str, Any]:
    """The request's body as a JSON object of finite numbers, read within ``BODY_TIMEOUT_S``."""
    length = request.content_length
    if length is None:
        raise _Refusal(411, "a JSON body with a Content-Length is required")
    if length > MAX_BODY_BYTES:
        raise _Refusal(413, f"the body is over {MAX_BODY_BYTES} bytes", reason="body_too_large")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.content.readexactly(length)
    except TimeoutError:
        raise _Refusal(408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s", reason="body_timeout") from None
    except asyncio.IncompleteReadError:
        raise _Refusal(400, "the body is shorter than its Content-Length") from None
    try:
        body = json.loads(raw or b"{}", parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise _Refusal(400, "the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a non-finite number, a huge integer
        raise _Refusal(400, f"not valid JSON: {exc}"[:300]) from None
    if not isinstance(body, dict):
        raise _Refusal(400, "expected a JSON object")
    return body
