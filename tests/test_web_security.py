"""/metrics over real TLS (and mutual TLS) with bcrypt basic auth, as Prometheus would scrape it."""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request

import bcrypt
import pytest
from tls import make_pki

LINK = "links: [{name: secure, driver: {type: simulated-bb84, fiber_length_km: 10}}]\n"


def web_config(pki, client_ca: bool, users: dict[str, str]) -> str:
    lines = ["exporter:", "  web:", f"    tls_cert_file: {pki['server_cert']}", f"    tls_key_file: {pki['server_key']}"]
    if client_ca:
        lines.append(f"    tls_client_ca_file: {pki['ca']}")
    if users:
        lines.append("    basic_auth_users:")
        lines += [f"      {user}: '{hashed}'" for user, hashed in users.items()]
    return "\n".join(lines) + "\n" + LINK


def get(url: str, context: ssl.SSLContext, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


def test_https_with_basic_auth(start_exporter, pki):
    hashed = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4)).decode()
    exporter = start_exporter(web_config(pki, client_ca=False, users={"prometheus": hashed}))
    assert exporter.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    assert get(exporter.url, context)[0] == 401
    assert get(exporter.url, context, ("prometheus", "wrong"))[0] == 401
    status, body = get(exporter.url, context, ("prometheus", "scrape-pass"))
    assert status == 200 and "qlink_up" in body
    # a client that does not trust the CA refuses the server
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(exporter.url, ssl.create_default_context())
    assert "scrape-pass" not in exporter.log() and hashed not in exporter.log()


def test_mutual_tls_requires_a_client_certificate(start_exporter, pki):
    exporter = start_exporter(web_config(pki, client_ca=True, users={}))
    anonymous = ssl.create_default_context(cafile=str(pki["ca"]))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        get(exporter.url, anonymous)
    with_cert = ssl.create_default_context(cafile=str(pki["ca"]))
    with_cert.load_cert_chain(pki["client_cert"], pki["client_key"])
    status, body = get(exporter.url, with_cert)
    assert status == 200 and "qlink_up" in body
    assert exporter.proc.poll() is None  # the refused handshake did not hurt the exporter


def test_plain_passwords_are_refused(tmp_path, capsys):
    from qtelemetry.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("exporter: {web: {basic_auth_users: {prometheus: hunter2}}}\n" + LINK)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "exporter.web.basic_auth_users" in err and "never a plain password" in err and "hunter2" not in err
