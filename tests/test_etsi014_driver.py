"""ETSI 014 driver: ``acquire()`` against the simulated KME and against real servers that misbehave."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from devices import acquire, OPENSSL, OpensslServer, Pki, ServerThread, StoreLink, free_port, json_app, make_device_pki
from qtelemetry.config import ConfigError, parse_config
from qtelemetry.devices.kme import KeyRelay, Kme
from qtelemetry.devices.serving import server_context
from qtelemetry.drivers.base import CountBatch, DriverError
from qtelemetry.drivers.etsi014 import Etsi014Config
from qtelemetry.drivers.https import HttpsClient, TLSFiles
from qtelemetry.estimation.reported import ENDPOINTS, ETSI014_KME, PROBE_RESULTS, REQUEST_BUCKETS

SAES = {"sae-a": "a", "sae-b": "b"}
KEY_ID = "bc490419-7d60-487f-adc1-4ddcc177c139"
KEY = "wHHVxRwDJs3/bXd38GHP3oe4svTuRpZS0yCC7x4Ly+s="
STATUS = {"source_KME_ID": "kme-x", "target_KME_ID": "kme-y", "master_SAE_ID": "sae-a", "slave_SAE_ID": "sae-b",
          "key_size": 256, "stored_key_count": 123456, "max_key_count": 1000000, "max_key_per_request": 1,
          "max_key_size": 256, "min_key_size": 256, "max_SAE_ID_count": 0}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_device_pki(tmp_path_factory.mktemp("pki"))


def config(port: int, pki: Pki, client: tuple[Path, Path] | None = None, ca: Path | None = None, **extra: Any) -> Etsi014Config:
    cert, key = client or pki.client("sae-a")
    return Etsi014Config.model_validate({
        "type": "etsi014", "kme_url": f"https://127.0.0.1:{port}", "slave_sae_id": "sae-b", "timeout_seconds": 5,
        "tls": {"ca_file": str(ca or pki.ca.cert_path), "cert_file": str(cert), "key_file": str(key)}, **extra})


def kme(servers: ServerThread, pki: Pki, link: StoreLink) -> int:
    """Serve the simulated KME of site a over mutual TLS; return its port."""
    app = Kme("a", [link], SAES, KeyRelay()).app()
    return servers.serve(app, server_context(*pki.server, client_ca_file=pki.ca.cert_path))


def requests(batch: CountBatch, endpoint: str) -> int:
    return int(batch.counts["request_duration"][ENDPOINTS.index(endpoint)].sum())


def test_status_gives_the_key_store_in_bits(servers, pki):
    link = StoreLink("ab", "a", "b", capacity_bits=1e6, stored_bits=5e5)
    [batch] = acquire(config(kme(servers, pki, link), pki))
    assert isinstance(batch, CountBatch)
    assert batch.counts["key_stored_bits"] == (5e5 // 256) * 256 and batch.counts["key_capacity_bits"] == (1e6 // 256) * 256
    assert batch.duration_s == pytest.approx(5.0, abs=0.5)  # the first reading covers one poll interval
    assert requests(batch, "status") == 1 and requests(batch, "enc_keys") == 0
    seconds = batch.counts["request_seconds"][0]
    assert seconds > 0 and batch.counts["request_duration"][0, np.searchsorted(REQUEST_BUCKETS, seconds)] == 1
    assert batch.counts["probes"].sum() == 0
    assert set(batch.counts) == set(ETSI014_KME.count_shapes)
    assert all(np.shape(batch.counts[k]) == s for k, s in ETSI014_KME.count_shapes.items())
    assert ETSI014_KME.consistent({k: np.asarray(v)[None] for k, v in batch.counts.items()}).all()


@pytest.mark.parametrize("unit, stored", [("keys", 123456 * 256), ("bits", 123456)])
def test_key_count_unit(servers, pki, unit, stored):
    async def status(request: web.Request) -> web.Response:
        return web.json_response(STATUS)
    port = servers.serve(json_app(status), server_context(*pki.server, client_ca_file=pki.ca.cert_path))
    [batch] = acquire(config(port, pki, key_count_unit=unit))
    assert batch.counts["key_stored_bits"] == stored and batch.counts["key_capacity_bits"] == stored / 123456 * 1000000


def test_successive_polls_give_the_store_trend(servers, pki):
    link = StoreLink("ab", "a", "b", capacity_bits=1e6, stored_bits=5e5)
    changes = {0: -25_600.0, 1: +51_200.0}

    def demand(i: int) -> None:
        if i in changes:
            link.stored_bits += changes[i]
    batches = acquire(config(kme(servers, pki, link), pki), attempts=3, between=demand)
    rises = [float(b.counts["buffer_increase_bits"]) for b in batches]
    falls = [float(b.counts["buffer_decrease_bits"]) for b in batches]
    assert rises == [0.0, 0.0, 51_200.0] and falls == [0.0, 25_600.0, 0.0]
    sums = {k: np.sum([np.asarray(b.counts[k]) for b in batches], axis=0)[None] for k in ETSI014_KME.count_shapes}
    sums["key_stored_bits"], sums["key_capacity_bits"] = np.array([batches[-1].counts["key_stored_bits"]]), np.array([1e6])
    duration = np.array([sum(b.duration_s for b in batches)])
    trend = ETSI014_KME.estimate(sums, duration, {}, 0.99)["key_buffer_trend_bps"]
    assert trend[0] == pytest.approx(25_600.0 / duration[0])


def test_probe_takes_one_key_and_reports_delivered_then_refused(servers, pki, caplog, logged):
    link = StoreLink("ab", "a", "b", capacity_bits=1e6, stored_bits=1024)

    def drain(i: int) -> None:
        link.stored_bits = 0
    with caplog.at_level(logging.WARNING):
        first, second = acquire(config(kme(servers, pki, link), pki, probe_interval_seconds=0.001), 2, drain)
    assert list(first.counts["probes"]) == [1, 0, 0] and requests(first, "enc_keys") == 1
    assert float(first.counts["key_stored_bits"]) == 1024  # read before the probe took its key
    assert list(second.counts["probes"]) == [0, 1, 0]
    assert "not enough key material" in logged() and "status=503" in logged()


def test_probe_keys_and_key_ids_never_reach_a_log(servers, pki, caplog, logged):
    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/status"):
            return web.json_response(STATUS)
        hostile = {"message": f"key {KEY_ID} is {KEY}", "details": [{"key_ID": KEY_ID, "key": KEY}]}
        return web.json_response(hostile, status=400)
    port = servers.serve(json_app(handler), server_context(*pki.server, client_ca_file=pki.ca.cert_path))
    with caplog.at_level(logging.DEBUG):
        [batch] = acquire(config(port, pki, probe_interval_seconds=0.001))
    assert list(batch.counts["probes"]) == [0, 1, 0] and "status=400" in logged()
    assert KEY_ID not in logged() and KEY not in logged()


def test_malformed_key_container_is_a_failed_probe_without_its_content_in_the_log(servers, pki, caplog, logged):
    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/status"):
            return web.json_response(STATUS)
        return web.json_response({"keys": [{"key_ID": KEY, "key": KEY_ID}]})
    port = servers.serve(json_app(handler), server_context(*pki.server, client_ca_file=pki.ca.cert_path))
    with caplog.at_level(logging.DEBUG):
        [batch] = acquire(config(port, pki, probe_interval_seconds=0.001))
    assert list(batch.counts["probes"]) == [0, 0, 1] and "reason=wrong_type" in logged()
    assert KEY_ID not in logged() and KEY not in logged()


def _answer(status: int, body: Any, content_type: str = "application/json") -> Any:
    async def handler(request: web.Request) -> web.Response:
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type=content_type)
    return handler


@pytest.mark.parametrize("handler, reason, said", [
    (_answer(401, {"message": "Unauthorized: SAE not registered"}), "http_401", "SAE not registered"),
    (_answer(503, {"message": "KME overloaded", "details": [{"retry": "later"}]}), "http_503", "KME overloaded"),
    (_answer(400, {"message": "Bad request format"}), "http_400", "Bad request format"),
    (_answer(404, "<html>no such path</html>", "text/html"), "http_other", "HTTP 404: no ETSI 014 error body"),
    (_answer(200, "<html>maintenance</html>", "text/html"), "invalid_json", "not valid JSON"),
    (_answer(200, {k: v for k, v in STATUS.items() if k != "key_size"}), "missing_field", "key_size"),
    (_answer(200, {**STATUS, "stored_key_count": "many"}), "wrong_type", "stored_key_count"),
    (_answer(200, "x" * (9 * 2**20), "text/plain"), "response_too_large", "larger than"),
])
def test_misbehaving_kme_gives_its_reason(servers, pki, handler, reason, said):
    port = servers.serve(json_app(handler), server_context(*pki.server, client_ca_file=pki.ca.cert_path))
    [error] = acquire(config(port, pki))
    assert isinstance(error, DriverError) and error.reason == reason and said in str(error)
    assert error.reason in Etsi014Config.error_reasons


def test_transport_failures_give_their_reason(servers, pki):
    link = StoreLink("ab", "a", "b")
    good = kme(servers, pki, link)
    expired = servers.serve(Kme("a", [link], SAES, KeyRelay()).app(),
                            server_context(*pki.expired_server, client_ca_file=pki.ca.cert_path))
    cases = {
        "tls_server_untrusted": config(good, pki, ca=pki.other.cert_path),
        "tls_server_expired": config(expired, pki),
        "timeout": config(servers.silent(), pki, timeout_seconds=0.3),
        "connection_refused": config(free_port(), pki),
        # Python's TLS server drops a client whose certificate it refuses without a TLS alert
        "disconnected": config(good, pki, client=pki.client("sae-a", expired=True)),
    }
    for expected, cfg in cases.items():
        [error] = acquire(cfg)
        assert isinstance(error, DriverError) and error.reason == expected, (expected, error)


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
@pytest.mark.parametrize("client, reason", [
    ({}, "tls_client_missing"), ({"expired": True}, "tls_client_expired"), ({"untrusted": True}, "tls_client_rejected"),
])
def test_tls_alerts_of_a_server_refusing_our_certificate(pki, client, reason):
    """A production TLS stack (OpenSSL's s_server) says why it refuses a client certificate."""
    server = OpensslServer(pki, free_port())
    try:
        cert, key = pki.client("sae-a", **client) if client else (None, None)
        tls = TLSFiles(ca_file=pki.ca.cert_path, cert_file=cert, key_file=key)

        async def request() -> None:
            http = HttpsClient(tls, 2.0)
            try:
                await http.request("GET", f"https://127.0.0.1:{server.port}/", "test request")
            finally:
                await http.aclose()
        if not client:
            tls = TLSFiles(ca_file=pki.ca.cert_path)
        with pytest.raises(DriverError) as info:
            asyncio.run(request())
        assert info.value.reason == reason
    finally:
        server.close()


def test_recovers_and_keeps_the_durations_of_failed_polls(servers, pki):
    """A KME that answers 503 twice then recovers: two errors, then a batch timing all three requests."""
    answers = iter([503, 503])

    async def flaky(request: web.Request) -> web.Response:
        status = next(answers, 200)
        return web.json_response(STATUS if status == 200 else {"message": "busy"}, status=status)
    port = servers.serve(json_app(flaky), server_context(*pki.server, client_ca_file=pki.ca.cert_path))
    first, second, third = acquire(config(port, pki), attempts=3)
    assert [getattr(r, "reason", None) for r in (first, second)] == ["http_503", "http_503"]
    assert isinstance(third, CountBatch) and requests(third, "status") == 3
    assert third.counts["request_seconds"][0] > 0


def test_server_going_away_and_coming_back(servers, pki):
    link = StoreLink("ab", "a", "b")
    port = kme(servers, pki, link)
    cfg = config(port, pki)

    def outage(i: int) -> None:
        if i == 0:
            servers.stop(port)
        if i == 1:
            app = Kme("a", [link], SAES, KeyRelay()).app()
            servers.serve(app, server_context(*pki.server, client_ca_file=pki.ca.cert_path), port=port)
    results = acquire(cfg, attempts=3, between=outage)
    assert isinstance(results[0], CountBatch) and isinstance(results[2], CountBatch)
    assert getattr(results[1], "reason", None) in ("connection_refused", "disconnected")


def test_config_requires_mutual_tls_and_an_https_url(pki):
    with pytest.raises(ValueError, match="mutual TLS"):
        Etsi014Config.model_validate({"type": "etsi014", "kme_url": "https://kme", "slave_sae_id": "b",
                                      "tls": {"ca_file": str(pki.ca.cert_path)}})
    with pytest.raises(ValueError, match="kme_url"):
        config(1, pki, kme_url="http://kme")
    with pytest.raises(ValueError, match="cannot load"):
        config(1, pki, client=(pki.ca.cert_path, pki.ca.cert_path))
    assert set(PROBE_RESULTS) == {"delivered", "refused", "failed"}


def test_documented_example_of_both_drivers_is_a_valid_config(pki, tmp_path):
    page = (Path(__file__).resolve().parents[1] / "docs" / "devices.md").read_text()
    example = next(block.split("```", 1)[0] for block in page.split("```yaml\n") if "type: etsi014" in block)
    cert, key = pki.client("sae-alpha")
    files = {"kme-ca.crt": pki.ca.cert_path, "sdn-ca.crt": pki.ca.cert_path, "sae-alpha.crt": cert, "sae-alpha.key": key}
    (tmp_path / "sdn-token").write_text("token\n")
    text = re.sub(r"/etc/qtelemetry/([\w.-]+)", lambda m: str(files.get(m.group(1), tmp_path / m.group(1))), example)
    links = parse_config(text).links
    assert [link.driver.type for link in links] == ["etsi014", "etsi015"]
    assert links[0].driver.probe_interval_seconds == 60 and links[1].driver.bearer_token() == "token"
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("kme_url: https://", "kme_url: http://"))
    assert info.value.problems[0][0] == "links[0].driver.kme_url"
