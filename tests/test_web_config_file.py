"""`--web.config.file`: the Prometheus exporter-toolkit web config format, over real TLS."""

from __future__ import annotations

import base64
import socket
import ssl
import time
import urllib.error
import urllib.request

import bcrypt
import pytest
from cryptography import x509
from tls import Authority
from web import LINKS

from qtelemetry.cli import main

HASH = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4)).decode()
AUTH = {"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-pass").decode()}


@pytest.fixture
def ca(tmp_path) -> Authority:
    authority = Authority.create(tmp_path)
    authority.issue("server", "server", file_stem="server")
    authority.issue("client", "prometheus", file_stem="client")
    return authority


def client_context(ca: Authority, cert: str | None = "client", **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    if cert is not None:
        context.load_cert_chain(ca.directory / f"{cert}.crt", ca.directory / f"{cert}.key")
    for name, version in versions.items():
        setattr(context, name, version)
    return context


def peer_serial(port: int, context: ssl.SSLContext) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


def test_a_node_exporter_web_config_file_is_served_as_written(endpoint, ca):
    web = f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {ca.cert_path.name}
  min_version: TLS13
http_server_config:
  http2: true
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: '{HASH}'
"""
    served = endpoint("exporter: {}\n" + LINKS, web, context=client_context(ca))
    assert served.server.scheme == "https"
    status, headers, body = served.request("GET", "/metrics", headers=AUTH)
    assert status == 200 and "qlink_info" in body
    assert (headers["X-Frame-Options"], headers["X-Content-Type-Options"]) == ("deny", "nosniff")
    status, headers, _ = served.request("GET", "/metrics")
    assert status == 401 and headers["Strict-Transport-Security"] == "max-age=31536000"
    served.context = client_context(ca, cert=None)  # mutual TLS: no certificate, no connection
    with pytest.raises((ssl.SSLError, ConnectionError)):
        served.request("GET", "/-/healthy")
    served.context = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)  # min_version TLS13
    with pytest.raises((ssl.SSLError, ConnectionError)):
        served.request("GET", "/-/healthy")
    served.context = client_context(ca)
    counted = served.rejections(AUTH)
    assert (counted["tls_handshake"], counted["unauthorized"]) == (2, 1)


def test_client_allowed_sans_let_only_named_clients_in(endpoint, ca):
    ca.issue("client", "intruder", file_stem="intruder")
    web = (f"tls_server_config: {{cert_file: server.crt, key_file: server.key, client_ca_file: {ca.cert_path.name}, "
           "client_auth_type: RequireAndVerifyClientCert, client_allowed_sans: [prometheus]}\n")
    served = endpoint("exporter: {}\n" + LINKS, web, context=client_context(ca))
    assert served.request("GET", "/-/healthy")[0] == 200
    served.context = client_context(ca, cert="intruder")
    with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
        served.request("GET", "/-/healthy")
    served.context = client_context(ca)
    counted = served.rejections()
    assert (counted["client_certificate"], counted["tls_handshake"]) == (1, 0)


def test_cipher_suites_take_go_names(endpoint, ca):
    web = ("tls_server_config: {cert_file: server.crt, key_file: server.key, max_version: TLS12, "
           "cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]}\n")
    served = endpoint("exporter: {}\n" + LINKS, web)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw:
        with client_context(ca, cert=None).wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.cipher()[:2] == ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2")


def test_verify_client_cert_if_given_admits_anonymous_clients_only_without_a_bad_certificate(endpoint, ca, tmp_path):
    web = (f"tls_server_config: {{cert_file: server.crt, key_file: server.key, client_ca_file: {ca.cert_path.name}, "
           "client_auth_type: VerifyClientCertIfGiven}\n")
    served = endpoint("exporter: {}\n" + LINKS, web, context=client_context(ca, cert=None))
    assert served.request("GET", "/-/healthy")[0] == 200
    (tmp_path / "elsewhere").mkdir()
    stranger = Authority.create(tmp_path / "elsewhere", "other CA")
    stranger.issue("client", "prometheus", file_stem="stranger")
    served.context = client_context(ca, cert=None)
    served.context.load_cert_chain(stranger.directory / "stranger.crt", stranger.directory / "stranger.key")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        served.request("GET", "/-/healthy")


def test_a_rotated_certificate_is_served_at_the_next_handshake(endpoint, ca, caplog):
    context = client_context(ca, cert=None)
    served = endpoint("exporter: {}\n" + LINKS, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n",
                      context=context)
    before = peer_serial(served.port, context)
    (ca.directory / "server.crt").write_text("-----BEGIN CERTIFICATE-----\nhalf written\n")
    time.sleep(1.1)  # past the once-a-second check: the broken file is seen, and the old certificate stays
    assert peer_serial(served.port, context) == before
    assert "TLS certificate files changed but do not load" in caplog.text
    ca.issue("server", "server", file_stem="server")  # a new key and certificate, as cert-manager would
    deadline = time.monotonic() + 10
    while (after := peer_serial(served.port, context)) == before:
        assert time.monotonic() < deadline, "the new certificate was never served"
        time.sleep(0.2)
    assert after == x509.load_pem_x509_certificate((ca.directory / "server.crt").read_bytes()).serial_number
    assert served.request("GET", "/-/healthy")[0] == 200


@pytest.mark.parametrize("web, field, reason", [
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequireAnyClientCert}",
     "tls_server_config.client_auth_type", "accepts client certificates nobody verified"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_ca_file: server.crt}",
     "tls_server_config.client_auth_type", "client CAs are configured without a client auth policy"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequireAndVerifyClientCert}",
     "tls_server_config.client_ca_file", "needs client_ca_file"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_allowed_sans: [a]}",
     "tls_server_config.client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, curve_preferences: [X25519]}",
     "tls_server_config.curve_preferences", "not supported"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]}",
     "tls_server_config.cipher_suites", "unknown cipher suite"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13, max_version: TLS12}",
     "tls_server_config.min_version", "above max_version"),
    ("tls_server_config: {cert_file: server.crt, key: inline}", "tls_server_config.key", "not supported"),
    ("tls_server_config: {cert_file: server.crt, key_file: client.key}", "tls_server_config", "cannot set up TLS"),
    ("tls_server_config: {cert_file: nowhere.crt, key_file: server.key}", "tls_server_config.cert_file", "cannot read"),
    ("http_server_config: {headers: {Set-Cookie: a}}", "http_server_config.headers", "cannot be configured"),
    ("http_server_config: {headers: {X-Frame-Options: allow}}", "http_server_config.headers", "expected one of"),
    ("basic_auth_users: {prometheus: hunter2}", "basic_auth_users", "never a plain password"),
    ("rate_limit: {interval: 1s, burst: 5}", "rate_limit", "not supported"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, typo: 1}", "tls_server_config.typo",
     "Extra inputs are not permitted"),
])
def test_web_config_files_qtelemetry_cannot_honour_are_refused_naming_the_field(ca, capsys, web, field, reason):
    config = ca.directory / "config.yaml"
    config.write_text("links: [{name: a, driver: {type: simulated-bb84, fiber_length_km: 10}}]\n")
    path = ca.directory / "web.yaml"
    path.write_text(web + "\n")
    assert main(["check-config", str(config), "--web.config.file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {field}: " in err and reason in err, err
    assert "hunter2" not in err


def test_exporter_web_and_a_web_config_file_are_one_or_the_other(ca, capsys):
    config = ca.directory / "config.yaml"
    config.write_text(f"exporter: {{web: {{basic_auth_users: {{prometheus: '{HASH}'}}}}}}\n"
                      "links: [{name: a, driver: {type: simulated-bb84, fiber_length_km: 10}}]\n")
    (ca.directory / "web.yaml").write_text("")
    assert main(["check-config", str(config), "--web.config.file", str(ca.directory / "web.yaml")]) == 2
    assert "exporter.web: --web.config.file" in capsys.readouterr().err


def test_run_takes_the_flag(start_exporter, ca):
    web = ca.directory / "web.yaml"
    web.write_text(f"tls_server_config: {{cert_file: server.crt, key_file: server.key}}\n"
                   f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    exporter = start_exporter("exporter: {}\n" + LINKS, "--web.config.file", str(web))
    assert exporter.url.startswith("https://") and f"web_config={web}" in exporter.log()
    request = urllib.request.Request(exporter.url, headers=AUTH)
    with urllib.request.urlopen(request, context=client_context(ca, cert=None), timeout=10) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(exporter.url, context=client_context(ca, cert=None), timeout=10)
