"""Test certificates: a CA, a server certificate for 127.0.0.1 and a client certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _cert(subject: str, issuer: x509.Name | None, issuer_key, key, *extensions) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, Path]:
    """Write ca.crt, server.crt/.key (SAN 127.0.0.1) and client.crt/.key; return their paths."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("qtelemetry test CA", None, None, ca_key, (x509.BasicConstraints(ca=True, path_length=None), True))
    ca_path, _ = _write(directory / "ca", ca_key, ca)
    paths = {"ca": ca_path}
    for role, usage, san in (("server", ExtendedKeyUsageOID.SERVER_AUTH,
                              x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])),
                             ("client", ExtendedKeyUsageOID.CLIENT_AUTH,
                              x509.SubjectAlternativeName([x509.DNSName("prometheus")]))):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(role, ca.subject, ca_key, key, (x509.ExtendedKeyUsage([usage]), False), (san, False))
        paths[f"{role}_cert"], paths[f"{role}_key"] = _write(directory / role, key, cert)
    return paths
