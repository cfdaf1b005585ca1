"""Serving a simulated device: TLS server contexts and starting an aiohttp application."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from aiohttp import web


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None,
                   require_client: bool = False) -> ssl.SSLContext:
    """A TLS server context; with ``client_ca_file``, clients may present certificates it signed.

    Client certificates are optional at the TLS layer unless ``require_client``, so that a
    device can answer a client without one in its own protocol (ETSI 014: 401 with an error
    body); one that is presented must verify against ``client_ca_file``.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    if client_ca_file is not None:
        context.load_verify_locations(str(client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return context


def client_name(request: web.Request) -> str | None:
    """Common name of the verified client certificate of the request's connection, if any."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


async def start(app: web.Application, host: str, port: int, context: ssl.SSLContext | None) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0: a free port); return the runner (to stop it) and the port."""
    sock = socket.create_server((host, port))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=context).start()
    return runner, sock.getsockname()[1]
