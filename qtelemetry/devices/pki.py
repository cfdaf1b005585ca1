"""Certificates for simulated devices and tests: a CA, server and client certificates, made on demand.

Certificates follow RFC 5280 as Python 3.13's strict default context (VERIFY_X509_STRICT)
demands: Subject and Authority Key Identifiers, critical basic constraints, key usage, and
extended key usage (serverAuth, clientAuth) on leaves. A client certificate's common name is
the identity a device reads from it (ETSI GS QKD 014: the SAE ID). Private keys are written
readable by their owner only. Nothing here is for production: a demo PKI has no revocation.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("127.0.0.1", "localhost")
USAGE = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return path


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


@dataclass
class Authority:
    """A CA that writes its certificate and the certificates it issues into ``directory``."""

    directory: Path
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    days: float  #: validity of the certificates it issues
    slug: str  #: file stem of its certificate, and prefix of the default stems of those it issues

    @classmethod
    def create(cls, directory: Path, name: str = "qtelemetry test CA", days: float = 1.0,
               file_stem: str | None = None) -> "Authority":
        """A new CA valid for ``days``; its certificate goes to ``file_stem`` (default: its name) + .crt."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_usage(ca=True), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                .sign(key, hashes.SHA256()))
        authority = cls(directory, name, key, cert, days, file_stem or name.replace(" ", "-"))
        authority.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return authority

    @property
    def cert_path(self) -> Path:
        return self.directory / f"{self.slug}.crt"

    def issue(self, role: str, common_name: str, expired: bool = False, file_stem: str | None = None,
              hosts: Sequence[str] = LOCAL_NAMES) -> tuple[Path, Path]:
        """Write a ``role`` ("server" or "client") certificate and key; return (cert path, key path).

        A server certificate names ``hosts`` (IP addresses or DNS names) as its subject
        alternative names; a client certificate its common name.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        start, end = (now - dt.timedelta(days=2), now - dt.timedelta(days=1)) if expired else (
            now - dt.timedelta(minutes=5), now + dt.timedelta(days=self.days))
        names = hosts if role == "server" else (common_name,)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_usage(ca=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([USAGE[role]]), critical=False)
                .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = self.directory / (file_stem or f"{self.slug}-{role}-{common_name}{'-expired' if expired else ''}")
        cert_path = stem.with_suffix(".crt")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, _write_key(stem.with_suffix(".key"), key)


#: Files of a demo PKI besides one certificate and key per client: the CA and the devices' certificate.
CA_FILE, DEVICE_STEM = "ca.crt", "device"


def demo_pki_files(clients: Sequence[str]) -> list[str]:
    """The file names ``make_demo_pki`` writes for these clients."""
    return [CA_FILE, *(f"{stem}{suffix}" for stem in (DEVICE_STEM, *clients) for suffix in (".crt", ".key"))]


def make_demo_pki(directory: Path, clients: Sequence[str], hosts: Sequence[str] = (), days: float = 90.0) -> list[Path]:
    """A CA (``ca.crt``; its key is not kept), one server certificate for every device of a
    simulation (``device.crt``/``.key``, naming localhost and ``hosts``) and one client
    certificate per name in ``clients`` (``NAME.crt``/``.key``, common name NAME)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority.create(directory, "qtelemetry demo CA", days=days, file_stem=CA_FILE.removesuffix(".crt"))
    ca.issue("server", "qtelemetry simulated devices", file_stem=DEVICE_STEM, hosts=(*LOCAL_NAMES, *hosts))
    for client in clients:
        ca.issue("client", client, file_stem=client)
    return [directory / name for name in demo_pki_files(clients)]
