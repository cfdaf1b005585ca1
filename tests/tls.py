"""Test certificates made at test time (``qtelemetry.devices.pki``), and the exporter's web TLS set."""

from __future__ import annotations

from pathlib import Path

from qtelemetry.devices.pki import Authority

__all__ = ["Authority", "make_pki"]


def make_pki(directory: Path) -> dict[str, Path]:
    """Write a CA, server.crt/.key (SAN 127.0.0.1, localhost) and client.crt/.key; return their paths."""
    ca = Authority.create(directory)
    paths = {"ca": ca.cert_path}
    for role, name in (("server", "server"), ("client", "prometheus")):
        paths[f"{role}_cert"], paths[f"{role}_key"] = ca.issue(role, name, file_stem=role)
    return paths
