"""HTTPS requests to devices from the runtime's event loop, with every failure given a reason.

One aiohttp session per driver (connections are kept alive), mutual TLS from PEM files, one
timeout over the whole request including the body, a bounded body size. Whatever goes wrong
becomes a ``DriverError`` whose reason says what an operator has to fix: the device is not
answering (``timeout``, ``connection_refused``, ...), its certificate is not trusted or expired,
or it refused ours (``tls_client_missing``, ``tls_client_expired``, ``tls_client_rejected``: read
from the TLS alert the server sends).
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field

from qtelemetry.configfile import ReadableFile
from qtelemetry.drivers.base import DriverError, StrictModel, check

#: Reasons a request can fail for before any HTTP answer.
TRANSPORT_REASONS = (
    "timeout", "connection_refused", "connection_failed", "disconnected", "invalid_http", "response_too_large",
    "tls_server_untrusted", "tls_server_expired", "tls_client_missing", "tls_client_expired",
    "tls_client_rejected", "tls_error",
)
#: Reasons for an HTTP answer other than 200: the codes ETSI GS QKD 014 defines, then the rest.
HTTP_REASONS = ("http_400", "http_401", "http_503", "http_other")
#: Largest response body read; a device streaming more is cut off (``response_too_large``).
MAX_BODY_BYTES = 8 * 2**20

#: OpenSSL verify codes for a certificate outside its validity period (not yet valid, expired).
_VALIDITY_CODES = {9, 10}
#: TLS alerts by which a server refuses the client certificate (OpenSSL reason names).
_CLIENT_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "tls_client_missing",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "tls_client_expired",
    "TLSV1_ALERT_UNKNOWN_CA": "tls_client_rejected",
    "SSLV3_ALERT_BAD_CERTIFICATE": "tls_client_rejected",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "tls_client_rejected",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "tls_client_rejected",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "tls_client_rejected",
    "TLSV1_ALERT_ACCESS_DENIED": "tls_client_rejected",
}


class TLSFiles(StrictModel):
    """PEM files for HTTPS to a device: the CA that signed its certificate, and ours."""

    ca_file: ReadableFile = Field(description="CA certificate(s) that signed the device's server certificate")
    cert_file: ReadableFile | None = Field(None, description="client certificate presented to the device (mutual TLS)")
    key_file: ReadableFile | None = Field(None, description="private key of cert_file")

    @check
    def _loadable(self) -> "TLSFiles":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        try:
            self.context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ValueError(f"cannot load the TLS files: {exc}") from None
        return self

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the device against ``ca_file`` and presents our certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, body (at most MAX_BODY_BYTES) and the request's duration."""

    status: int
    body: bytes
    seconds: float


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: what messages name (no path, no credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and aiohttp's wrapped OS error."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__, getattr(item, "os_error", None),
                 getattr(item, "certificate_error", None)]
    return seen


def classify(exc: BaseException, what: str) -> DriverError:
    """The DriverError for a failed request; ``what`` names the request in the message."""
    chain = _chain(exc)
    ssl_errors = [e for e in chain if isinstance(e, ssl.SSLError) and not isinstance(e, aiohttp.ClientError)]
    verify = next((e for e in ssl_errors if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        reason = "tls_server_expired" if verify.verify_code in _VALIDITY_CODES else "tls_server_untrusted"
        return DriverError(reason, f"{what}: the server certificate failed verification: {verify.verify_message}")
    alert = next(iter(ssl_errors), None)
    if alert is not None:
        reason = _CLIENT_ALERTS.get(str(alert.reason), "tls_error")
        return DriverError(reason, f"{what}: TLS failed: {alert.reason or alert}")
    if any(isinstance(e, (asyncio.TimeoutError, TimeoutError)) for e in chain):
        return DriverError("timeout", f"{what}: no answer in time")
    if isinstance(exc, aiohttp.ServerDisconnectedError) or any(
            isinstance(e, ConnectionResetError) or getattr(e, "errno", None) == errno.ECONNRESET for e in chain):
        return DriverError("disconnected", f"{what}: the server closed or reset the connection without answering (a "
                                           "TLS server that refuses the client certificate without an alert looks so)")
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.ClientPayloadError)):
        return DriverError("invalid_http", f"{what}: malformed HTTP answer")
    if any(isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED for e in chain):
        return DriverError("connection_refused", f"{what}: connection refused")
    return DriverError("connection_failed", f"{what}: {type(exc).__name__}: {exc}")


def http_error(answer: Answer, what: str, detail: str) -> DriverError:
    """The DriverError for an answer other than 200; ``detail`` is what the device's error body says."""
    reason = f"http_{answer.status}" if f"http_{answer.status}" in HTTP_REASONS else "http_other"
    return DriverError(reason, f"{what}: HTTP {answer.status}" + (f": {detail}" if detail else ""))


class HttpsClient:
    """Requests to one device; create and use it on the runtime's event loop."""

    def __init__(self, tls: TLSFiles | None, timeout_s: float, headers: Mapping[str, str] | None = None):
        self._ssl: ssl.SSLContext | bool = tls.context() if tls is not None else True
        self._timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, url: str, what: str, json: Any = None) -> Answer:
        """Send one request; raise DriverError (reason, message naming ``what``) on any failure."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.request(method, url, json=json, ssl=self._ssl, allow_redirects=False) as response:
                    body = await read_body(response, MAX_BODY_BYTES)
                    return Answer(response.status, body, time.perf_counter() - started)
        except TooLarge:
            raise DriverError("response_too_large", f"{what}: answer larger than {MAX_BODY_BYTES} bytes") from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise classify(exc, what) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class TooLarge(Exception):
    """An answer grew past the size its reader allows."""


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body as it arrives; TooLarge as soon as it passes ``limit`` bytes (nothing more is read)."""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise TooLarge
    return bytes(body)
