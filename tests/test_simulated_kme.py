"""The simulated ETSI 014 KMEs: keys drawn from the link's store, handed to the slave once, standard errors.

Interop: the third-party PyPI client ``etsi-qkd-014-client`` as master SAE (enc_keys) at site a's
KME and as slave SAE (dec_keys by key ID) at site b's KME gets the same keys.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest
import requests
from etsi_qkd_014_client import QKD014Client

from devices import Pki, ServerThread, StoreLink, make_device_pki
from qtelemetry.devices.kme import KeyRelay, Kme
from qtelemetry.devices.links import LinkFigures
from qtelemetry.devices.serving import server_context
from qtelemetry.drivers.etsi014 import Etsi014Config
from qtelemetry.standards import etsi014

SAES = {"sae-a": "a", "sae-b": "b", "sae-c": "c"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_device_pki(tmp_path_factory.mktemp("pki"))


class Sites:
    """KMEs of sites a and b joined by link ab, sharing one key relay."""

    def __init__(self, servers: ServerThread, pki: Pki):
        self.pki = pki
        self.link = StoreLink("ab", "a", "b", capacity_bits=1e6, stored_bits=10_240)
        relay = KeyRelay()
        context = server_context(*pki.server, client_ca_file=pki.ca.cert_path)
        self.port = {site: servers.serve(Kme(site, [self.link], SAES, relay).app(), context) for site in ("a", "b")}
        self.certs = {sae: pki.client(sae) for sae in SAES}

    def call(self, site: str, sae: str | None, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"https://127.0.0.1:{self.port[site]}{path}", verify=str(self.pki.ca.cert_path),
                                cert=self.certs[sae] if sae else None, timeout=5, **kwargs)

    def client(self, site: str, sae: str) -> QKD014Client:
        cert, key = self.certs[sae]
        return QKD014Client(f"127.0.0.1:{self.port[site]}", str(cert), str(key), str(self.pki.ca.cert_path))


@pytest.fixture
def sites(servers: ServerThread, pki: Pki) -> Sites:
    return Sites(servers, pki)


def test_interop_with_the_etsi_qkd_014_client(sites):
    """The third-party client's keys match at both ends, and the driver sees them leave the store."""
    master, slave = sites.client("a", "sae-a"), sites.client("b", "sae-b")
    cert, key = sites.certs["sae-a"]
    driver = Etsi014Config.model_validate({
        "type": "etsi014", "kme_url": f"https://127.0.0.1:{sites.port['a']}", "slave_sae_id": "sae-b",
        "tls": {"ca_file": str(sites.pki.ca.cert_path), "cert_file": str(cert), "key_file": str(key)}}).build()
    loop = asyncio.new_event_loop()
    before = loop.run_until_complete(driver.acquire())
    code, status = master.get_status("sae-b")
    assert code == 200 and (status.stored_key_count, status.key_size, status.master_sae_id) == (40, 256, "sae-a")
    code, container = master.get_key("sae-b", number=3, size=512)
    assert code == 200 and len(container.keys) == 3
    assert sites.link.stored_bits == 10_240 - 3 * 512  # demand consumed the simulated store
    after = loop.run_until_complete(driver.acquire())
    loop.run_until_complete(driver.aclose())
    loop.close()
    assert before.counts["key_stored_bits"] - after.counts["key_stored_bits"] == after.counts["buffer_decrease_bits"] == 3 * 512
    code, received = slave.get_key_with_key_IDs("sae-a", [key.key_id for key in container.keys])
    assert code == 200
    assert [(k.key_id, k.key) for k in received.keys] == [(k.key_id, k.key) for k in container.keys]
    assert all(len(base64.b64decode(k.key)) == 64 for k in received.keys)
    code, error = slave.get_key_with_key_IDs("sae-a", [container.keys[0].key_id])  # a key is handed over once
    assert code == 400 and "not found" in error.message
    code, single = master.get_key("sae-b")  # the GET form: one key of key_size
    assert code == 200 and len(base64.b64decode(single.keys[0].key)) == 32


def test_get_forms_and_the_keys_leave_the_store(sites):
    answer = sites.call("a", "sae-a", "GET", etsi014.path("sae-b", "enc_keys"), params={"number": 2, "size": 128})
    keys = etsi014.parse_key_container(answer.content).keys
    assert answer.status_code == 200 and len(keys) == 2 and sites.link.stored_bits == 10_240 - 256
    answer = sites.call("b", "sae-b", "GET", etsi014.path("sae-a", "dec_keys"), params={"key_ID": str(keys[1].key_ID)})
    assert answer.status_code == 200 and answer.json()["keys"][0]["key"] == keys[1].key


def error(answer: requests.Response) -> etsi014.Error:
    return etsi014.parse_error(answer.content)


@pytest.mark.parametrize("body, parameter", [
    ({"size": 100}, "size"), ({"size": 32}, "size"), ({"number": 1000}, "number"),
    ({"additional_slave_SAE_IDs": ["sae-c"]}, "additional_slave_SAE_IDs"),
    ({"extension_mandatory": [{"route": "x"}]}, "extension_mandatory"),
])
def test_requests_the_kme_cannot_serve_are_400_with_details(sites, body, parameter):
    answer = sites.call("a", "sae-a", "POST", etsi014.path("sae-b", "enc_keys"), json=body)
    assert answer.status_code == 400 and parameter in [d["parameter"] for d in error(answer).details]
    assert sites.link.stored_bits == 10_240


@pytest.mark.parametrize("site, sae, method, path, kwargs, status, said", [
    ("a", None, "GET", etsi014.path("sae-b", "status"), {}, 401, "client certificate"),
    ("a", "sae-b", "GET", etsi014.path("sae-a", "status"), {}, 401, "not served"),
    ("a", "sae-a", "GET", etsi014.path("sae-c", "status"), {}, 400, "no key stream"),
    ("a", "sae-a", "GET", etsi014.path("sae-nobody", "status"), {}, 400, "no key stream"),
    ("a", "sae-a", "POST", etsi014.path("sae-b", "enc_keys"), {"data": b"{not json"}, 400, "not valid JSON"),
    ("a", "sae-a", "POST", etsi014.path("sae-b", "enc_keys"), {"json": {"number": "2"}}, 400, "number"),
    ("a", "sae-a", "GET", etsi014.path("sae-b", "enc_keys"), {"params": {"number": "0"}}, 400, "number"),
    ("a", "sae-a", "PUT", etsi014.path("sae-b", "enc_keys"), {}, 405, "GET or POST"),
    ("b", "sae-b", "GET", etsi014.path("sae-a", "dec_keys"), {"params": {"key_ID": "nope"}}, 400, "key_ID"),
    ("b", "sae-b", "POST", etsi014.path("sae-a", "dec_keys"), {"json": {"key_IDs": []}}, 400, "key_IDs"),
])
def test_error_answers_follow_clause_6_5(sites, site, sae, method, path, kwargs, status, said):
    answer = sites.call(site, sae, method, path, **kwargs)
    assert answer.status_code == status and said in error(answer).message


def test_store_exhaustion_is_503_and_keys_only_go_to_their_slave(sites):
    sites.link.stored_bits = 100
    answer = sites.call("a", "sae-a", "POST", etsi014.path("sae-b", "enc_keys"), json={"number": 1})
    assert answer.status_code == 503 and "not enough key material" in error(answer).message
    sites.link.stored_bits = 1024
    keys = etsi014.parse_key_container(
        sites.call("a", "sae-a", "POST", etsi014.path("sae-b", "enc_keys"), json={}).content).keys
    ids = {"key_IDs": [{"key_ID": str(keys[0].key_ID)}]}
    assert sites.call("a", "sae-a", "POST", etsi014.path("sae-a", "dec_keys"), json=ids).status_code == 400
    assert sites.call("b", "sae-b", "POST", etsi014.path("sae-c", "dec_keys"), json=ids).status_code == 400
    assert sites.call("b", "sae-b", "POST", etsi014.path("sae-a", "dec_keys"), json=ids).status_code == 200


def test_key_relay_is_bounded_and_all_or_nothing():
    relay = KeyRelay(capacity_bytes=2)
    ids = [uuid.uuid4() for _ in range(3)]
    relay.put("ab", "m", "s", {k: bytes([i]) for i, k in enumerate(ids)})
    assert relay.take("ab", "m", "s", [ids[0]]) is None  # the oldest was forgotten
    assert relay.take("ab", "m", "s", [ids[1], uuid.uuid4()]) is None  # one missing: none handed over
    assert relay.take("ab", "m", "x", [ids[1]]) is None and relay.take("ab", "m", "s", [ids[1], ids[1]]) is None
    assert relay.take("ab", "m", "s", [ids[2], ids[1]]) == [bytes([2]), bytes([1])]
    assert relay.take("ab", "m", "s", [ids[1]]) is None


def test_key_relay_bound_counts_bytes_of_waiting_keys():
    relay = KeyRelay(capacity_bytes=3 * 1024)
    ids = [uuid.uuid4() for _ in range(5)]
    relay.put("ab", "m", "s", {ids[0]: bytes(1024), ids[1]: bytes(1024)})
    assert relay.take("ab", "m", "s", [ids[0]]) == [bytes(1024)]  # handed over: its bytes are free again
    relay.put("ab", "m", "s", {k: bytes(1024) for k in ids[2:]})  # 4 KiB put, 3 KiB kept: ids[1] goes
    assert relay.take("ab", "m", "s", [ids[1]]) is None
    assert relay.take("ab", "m", "s", ids[2:]) == [bytes(1024)] * 3


def test_one_link_per_site_pair():
    twins = [StoreLink("ab1", "a", "b"), StoreLink("ab2", "b", "a", live=LinkFigures("OFF", 0, 0))]
    with pytest.raises(ValueError, match="one link per site pair"):
        Kme("a", twins, SAES, KeyRelay())
