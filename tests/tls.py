"""Test certificates made at test time: CAs, server and client certificates, expired ones too.

Certificates follow RFC 5280 as Python 3.13's strict default context (VERIFY_X509_STRICT)
demands: Subject and Authority Key Identifiers, critical basic constraints, key usage, and
extended key usage (serverAuth, clientAuth) on leaves.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCALHOST = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")])
USAGE = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


@dataclass
class Authority:
    """A test CA that writes its certificate and the certificates it issues into ``directory``."""

    directory: Path
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str = "qtelemetry test CA") -> "Authority":
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_ca_usage(), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                .sign(key, hashes.SHA256()))
        authority = cls(directory, name, key, cert)
        authority.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return authority

    @property
    def cert_path(self) -> Path:
        return self.directory / f"{self.slug}.crt"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")

    def issue(self, role: str, common_name: str, expired: bool = False, file_stem: str | None = None) -> tuple[Path, Path]:
        """Write a ``role`` ("server" or "client") certificate and key; return (cert path, key path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        start, end = (now - dt.timedelta(days=2), now - dt.timedelta(days=1)) if expired else (
            now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))
        san = LOCALHOST if role == "server" else x509.SubjectAlternativeName([x509.DNSName(common_name)])
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_leaf_usage(), critical=True)
                .add_extension(x509.ExtendedKeyUsage([USAGE[role]]), critical=False)
                .add_extension(san, critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = self.directory / (file_stem or f"{self.slug}-{role}-{common_name}{'-expired' if expired else ''}")
        cert_path = stem.with_suffix(".crt")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, _write_key(stem.with_suffix(".key"), key)


def make_pki(directory: Path) -> dict[str, Path]:
    """Write ca.crt, server.crt/.key (SAN 127.0.0.1, localhost) and client.crt/.key; return their paths."""
    ca = Authority.create(directory)
    paths = {"ca": ca.cert_path}
    for role, name in (("server", "server"), ("client", "prometheus")):
        paths[f"{role}_cert"], paths[f"{role}_key"] = ca.issue(role, name, file_stem=role)
    return paths
