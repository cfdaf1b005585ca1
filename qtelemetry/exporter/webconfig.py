"""The web endpoint's TLS, basic auth and headers, in the Prometheus exporter-toolkit format.

``qtelemetry run --web.config.file FILE`` reads the file node_exporter and Prometheus read
(``tls_server_config``, ``http_server_config``, ``basic_auth_users``), so a site reuses its
files; the inline ``exporter.web`` keys of the config are the older, smaller form of the same
thing and become a ``WebConfigFile`` too. Relative paths are taken from the file's directory.

A TLS set-up is tried before it is used: the server context completes a handshake in memory
with a client that offers every version and suite, so settings OpenSSL will not serve (only
TLS 1.0/1.1, which OpenSSL 3 refuses at its default security level; suites that do not fit the
key) fail ``check-config`` and a reload instead of every later handshake.

What Python's ``ssl`` module cannot do as Go's ``crypto/tls`` does is refused by name rather
than ignored: client certificates that nobody verifies (``RequestClientCert``,
``RequireAnyClientCert``), curve lists, inline server keys. ``rate_limit`` is refused too: the
server bounds connections and password checks itself.

A certificate or key rotated on disk is picked up at the next TLS handshake (the files are
checked at most once a second); files that do not load yet (half written) leave the previous
certificate in use and log why.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from qtelemetry.config import BasicAuthUsers, ReadableFile, WebConfig, validate_yaml
from qtelemetry.configfile import read_text
from qtelemetry.drivers.base import FieldError, StrictModel, check
from qtelemetry.errors import ConfigError

log = logging.getLogger(__name__)

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
#: Go's names of the TLS 1.2 suites ``crypto/tls.CipherSuites()`` offers, and OpenSSL's names of them.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
#: TLS 1.3 suites: Go accepts their names and, like OpenSSL here, does not let them be restricted.
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
#: Headers the toolkit lets a file set, and the values it accepts where it checks them.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (), "Content-Security-Policy": (),
}
ClientAuth = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert", "RequireClientCert",
                     "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
UNVERIFIED = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
#: How often at most the certificate files are checked for a change.
RECHECK_S = 1.0
#: Keys the toolkit has and qtelemetry refuses, and why.
REFUSED = {
    "cert": "inline server certificates; use cert_file",
    "key": "inline private keys; use key_file",
    "curve_preferences": "Python's ssl module cannot set a curve list; OpenSSL's defaults apply",
    "rate_limit": "the server bounds connections and password checks itself (docs/security.md)",
}


def _refuse(model: StrictModel) -> None:
    for name in REFUSED.keys() & type(model).model_fields.keys():
        if getattr(model, name) is not None:
            raise FieldError(name, f"not supported: {REFUSED[name]}")


class TLSServerConfig(StrictModel):
    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: ReadableFile | None = None
    client_ca: str | None = Field(None, description="client CA certificates, PEM, inline")
    client_allowed_sans: list[str] | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"
    cipher_suites: list[str] | None = None
    prefer_server_cipher_suites: bool = True
    cert: Any = None  #: refused (REFUSED)
    key: Any = None  #: refused
    curve_preferences: Any = None  #: refused

    @check
    def _supported(self) -> None:
        _refuse(self)

    @check
    def _server_pair(self) -> None:
        if self.cert_file is None or self.key_file is None:
            raise FieldError("cert_file" if self.cert_file is None else "key_file",
                             "cert_file and key_file are both needed for TLS")

    @check
    def _client_auth(self) -> None:
        if self.client_auth_type in UNVERIFIED:
            raise FieldError("client_auth_type", f"{self.client_auth_type} accepts client certificates nobody "
                             "verified: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file")
        has_ca = self.client_ca_file is not None or self.client_ca is not None
        if self.client_auth_type == "NoClientCert" and has_ca:
            raise FieldError("client_auth_type", "client CAs are configured without a client auth policy: "
                             "set RequireAndVerifyClientCert")
        if self.client_auth_type != "NoClientCert" and not has_ca:
            raise FieldError("client_ca_file", f"{self.client_auth_type} needs client_ca_file (or client_ca)")
        if self.client_allowed_sans is not None and self.client_auth_type != "RequireAndVerifyClientCert":
            raise FieldError("client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert: "
                             "otherwise a client may send no certificate to match")

    @check
    def _cipher_suites(self) -> None:
        unknown = [s for s in self.cipher_suites or () if s not in CIPHER_SUITES and s not in TLS13_SUITES]
        if unknown:
            raise FieldError("cipher_suites", f"unknown cipher suite {unknown[0][:100]!r}: one of "
                             f"{', '.join(CIPHER_SUITES)} (TLS 1.2) or {', '.join(TLS13_SUITES)}")

    @check
    def _versions(self) -> None:
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise FieldError("min_version", f"{self.min_version} is above max_version {self.max_version}")

    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p is not None)

    def context(self) -> ssl.SSLContext:
        """A server context from the files as they are now, tried (``_serves``); ssl.SSLError or OSError
        if they do not load, ValueError if OpenSSL cannot serve the settings."""
        context = self._context()
        _serves(context, self.max_version if TLS_VERSIONS[self.max_version] < ssl.TLSVersion.TLSv1_2
                else "cipher_suites" if self.cipher_suites else None)
        return context

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = TLS_VERSIONS[self.min_version]
        context.maximum_version = TLS_VERSIONS[self.max_version]
        context.load_cert_chain(self.cert_file, self.key_file)  # type: ignore[arg-type]
        tls12 = [CIPHER_SUITES[s] for s in self.cipher_suites or () if s in CIPHER_SUITES]
        if tls12:
            context.set_ciphers(":".join(tls12))
        if self.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if self.client_auth_type != "NoClientCert":
            context.load_verify_locations(cafile=self.client_ca_file, cadata=self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED if self.client_auth_type == "RequireAndVerifyClientCert" \
                else ssl.CERT_OPTIONAL
        context.set_alpn_protocols(["http/1.1"])
        return context

    def allowed_client(self, peer: dict[str, Any] | None) -> bool:
        """Whether a verified client certificate has one of ``client_allowed_sans`` (all pass if unset)."""
        if self.client_allowed_sans is None:
            return True
        allowed = {_normal_san(s) for s in self.client_allowed_sans}
        return any(_normal_san(value) in allowed for _, value in (peer or {}).get("subjectAltName", ()))


def _serves(server: ssl.SSLContext, culprit: str | None) -> None:
    """A handshake of ``server`` with a client offering everything, in memory; ValueError saying
    why it fails (``culprit``: the setting most likely at fault). The client certificate, if one
    is required, is not asked for: the handshake tests what the server can offer."""
    required, server.verify_mode = server.verify_mode, ssl.CERT_NONE
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    ends = [server.wrap_bio(pipes[0], pipes[1], server_side=True), client.wrap_bio(pipes[2], pipes[3])]
    try:
        for _ in range(8):  # TLS 1.2 needs two round trips
            for end, out, into in ((ends[1], pipes[3], pipes[0]), (ends[0], pipes[1], pipes[2])):
                try:
                    end.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                into.write(out.read())
            if all(end.version() for end in ends):
                return
        raise ssl.SSLError("the handshake did not finish")
    except ssl.SSLError as exc:
        advice = {None: "", "cipher_suites": ": cipher_suites has no suite for this key"}.get(
            culprit, f": max_version {culprit}: OpenSSL {ssl.OPENSSL_VERSION.split()[1]} serves TLS 1.2 and 1.3 only")
        raise ValueError(f"no client could complete a TLS handshake with these settings ({exc.reason or exc}){advice}") from None
    finally:
        server.verify_mode = required


def _normal_san(value: str) -> str:
    """IP addresses compared as addresses (Python spells IPv6 SANs its own way), the rest as text."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


class HTTPServerConfig(StrictModel):
    http2: bool = Field(True, description="accepted for compatibility; qtelemetry serves HTTP/1.1")
    headers: dict[str, str] = Field(default_factory=dict, description="extra response headers")

    @check
    def _known_headers(self) -> "HTTPServerConfig":
        for name, value in self.headers.items():
            if name not in HEADERS:
                raise FieldError("headers", f"header {name[:100]!r} cannot be configured: one of {', '.join(HEADERS)}")
            if HEADERS[name] and value not in HEADERS[name]:
                raise FieldError("headers", f"{name}: expected one of {', '.join(HEADERS[name])}")
            if not value.isprintable():
                raise FieldError("headers", f"{name}: the value must be printable text on one line")
        return self


class WebConfigFile(StrictModel):
    """An exporter-toolkit web config file (or the inline ``exporter.web`` keys converted to one)."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: BasicAuthUsers = Field(default_factory=dict)
    rate_limit: Any = None  #: refused (REFUSED)

    @check
    def _supported(self) -> "WebConfigFile":
        _refuse(self)
        return self

    @classmethod
    def from_exporter_web(cls, web: WebConfig) -> "WebConfigFile":
        tls = None
        if web.tls_cert_file is not None:
            tls = TLSServerConfig(cert_file=web.tls_cert_file, key_file=web.tls_key_file,
                                  client_ca_file=web.tls_client_ca_file,
                                  client_auth_type="RequireAndVerifyClientCert" if web.tls_client_ca_file else "NoClientCert")
        return cls(tls_server_config=tls, basic_auth_users=web.basic_auth_users)


def load_web_config(path: str | Path) -> WebConfigFile:
    """Read and validate a web config file; ConfigError naming each field that is wrong."""
    return validate_yaml(WebConfigFile, read_text(path), str(path), empty_ok=True,
                         config_dir=Path(path).absolute().parent)


class ServerTLS:
    """The server's SSL context, rebuilt when the certificate, key or client CA files change.

    ``context()`` is called for every TLS handshake (on the server's event loop); it looks at
    the files at most once per ``RECHECK_S`` and keeps the last context that loaded.
    """

    def __init__(self, config: TLSServerConfig):
        self.config = config
        self._seen = self._signature()
        self._context = config.context()
        self._checked = time.monotonic()

    @classmethod
    def checked(cls, web: WebConfigFile, source: str, field: str) -> "ServerTLS | None":
        """The TLS of ``web`` (None: plain HTTP), or ConfigError naming ``field`` if its files make no context."""
        if web.tls_server_config is None:
            return None
        try:
            return cls(web.tls_server_config)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(source, [(field, f"cannot set up TLS: {exc}")]) from None

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        signature = []
        for path in self.config.files():
            try:
                st = os.stat(path)
                signature.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                signature.append((0, 0, 0))
        return tuple(signature)

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return self._context
        self._checked = now
        seen = self._signature()
        if seen != self._seen:
            self._seen = seen
            try:
                self._context = self.config.context()
                log.info("TLS certificate files changed: loaded", extra={"cert_file": str(self.config.cert_file)})
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.warning("TLS certificate files changed but do not load: keeping the previous ones",
                            extra={"cert_file": str(self.config.cert_file), "reason": str(exc)})
        return self._context


def web_settings(exporter_web: WebConfig, web_config_file: str | None, config_source: str) -> tuple[WebConfigFile, ServerTLS | None]:
    """The endpoint's settings from ``--web.config.file`` or else the config's ``exporter.web``.

    Both at once is a ConfigError: one place says how the endpoint is protected.
    """
    if web_config_file is None:
        web = WebConfigFile.from_exporter_web(exporter_web)
        return web, ServerTLS.checked(web, config_source, "exporter.web")
    if exporter_web.model_fields_set:
        raise ConfigError(config_source, [("exporter.web", f"--web.config.file {web_config_file} also configures "
                                           "the web endpoint: keep one of the two")])
    web = load_web_config(web_config_file)
    return web, ServerTLS.checked(web, web_config_file, "tls_server_config")
