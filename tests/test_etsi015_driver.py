"""ETSI 015 driver: ``acquire()`` against the simulated RESTCONF node, hand-written documents and bad servers."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from devices import acquire, Pki, ServerThread, StoreLink, json_app, make_device_pki
from qtelemetry.devices.links import LinkFigures, qkdl_id
from qtelemetry.devices.restconf import RestconfNode, node_tree
from qtelemetry.devices.serving import server_context
from qtelemetry.drivers.base import CountBatch, DriverError
from qtelemetry.drivers.etsi015 import Etsi015Config
from qtelemetry.estimation.reported import ETSI015_NODE
from qtelemetry.standards.etsi015 import INTERFACE_STATUSES, LINK_STATUSES
from qtelemetry.standards.restconf import NODE_PATH
from test_etsi_standards import LINK_ID, NODE

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_device_pki(tmp_path_factory.mktemp("pki"))


def config(url: str, link_id: str = LINK_ID, **extra: Any) -> Etsi015Config:
    return Etsi015Config.model_validate({"type": "etsi015", "url": url, "qkdl_id": link_id, "timeout_seconds": 5,
                                         **extra})


def estimates(batch: CountBatch) -> dict[str, float]:
    sums = {k: np.asarray(v, float)[None] for k, v in batch.counts.items()}
    return {k: float(v[0]) for k, v in ETSI015_NODE.estimate(sums, np.array([batch.duration_s]), {}, 0.99).items()}


@pytest.fixture
def node(servers: ServerThread, pki: Pki, tmp_path: Path) -> tuple[str, StoreLink, dict[str, Any]]:
    """Site a's simulated node over HTTPS with mutual TLS and a bearer token: (url, its link, driver TLS options)."""
    link = StoreLink("ab", "a", "b")
    other = StoreLink("ac", "a", "c", live=LinkFigures("PENDING", 0.0, 0.0))
    port = servers.serve(RestconfNode("a", [link, other], TOKEN).app(),
                         server_context(*pki.server, client_ca_file=pki.ca.cert_path))
    (tmp_path / "token").write_text(TOKEN + "\n")
    cert, key = pki.client("controller")
    tls = {"tls": {"ca_file": str(pki.ca.cert_path), "cert_file": str(cert), "key_file": str(key)},
           "bearer_token_file": str(tmp_path / "token")}
    return f"https://127.0.0.1:{port}{NODE_PATH}", link, tls


def test_reads_the_simulated_node_over_restconf(node):
    url, link, tls = node
    [batch] = acquire(config(url, qkdl_id("ab"), **tls))
    counts = batch.counts
    assert list(counts["link_status"]) == [1, 0, 0, 0] and list(counts["interface_status"]) == [1, 0, 0]
    assert (counts["skr_bps"], counts["eskr_bps"], counts["expected_consumption_bps"]) == (1200, 1000, 300)
    assert counts["phys_perf"][0] == pytest.approx(0.021) and math.isnan(counts["phys_perf"][1])
    assert counts["unknown_identities"].sum() == 0
    assert set(counts) == set(ETSI015_NODE.count_shapes)
    assert all(np.shape(counts[k]) == s for k, s in ETSI015_NODE.count_shapes.items())
    figures = estimates(batch)
    assert figures["qber_z"] == pytest.approx(0.021) and math.isnan(figures["qber_x"]) and math.isnan(figures["snr"])
    assert (figures["secret_key_rate_bps"], figures["link_active"]) == (1200, 1.0)


def test_follows_the_link_status(node):
    url, link, tls = node
    link.live = LinkFigures("OFF", 0.0, 0.0)
    [batch] = acquire(config(url, qkdl_id("ab"), **tls))
    assert list(batch.counts["link_status"]) == [0, 0, 0, 1]
    assert list(batch.counts["interface_status"]) == [0, 1, 0]  # DOWN
    assert math.isnan(batch.counts["phys_perf"][0])  # QBER not measured: not reported
    assert estimates(batch)["link_active"] == 0.0
    [other] = acquire(config(url, qkdl_id("ac"), **tls))
    assert LINK_STATUSES[int(np.argmax(other.counts["link_status"]))] == "PENDING"


def test_bearer_token_and_link_id_are_checked(node, tmp_path):
    url, _, tls = node
    (tmp_path / "wrong").write_text("guess")
    [error] = acquire(config(url, qkdl_id("ab"), **{**tls, "bearer_token_file": str(tmp_path / "wrong")}))
    assert error.reason == "http_401" and "access-denied" in str(error)
    [error] = acquire(config(url, LINK_ID, **tls))
    assert error.reason == "unknown_link"


def test_hand_written_document_as_a_file(tmp_path, caplog, logged):
    """A document shaped as ETSI GS QKD 015 defines it, with the YANG prefix and a vendor identity."""
    document = json.loads(json.dumps(NODE))
    entry = document["etsi-qkd-sdn-node:qkd_node"]["qkd_links"]["qkd_link"][0]
    entry["qkdl_status"] = "etsi-qkdn-types:ACTIVE"
    entry["qkdl_performance"]["phys_perf"].append({"perf_type": "acme-qkd:LASER_TEMPERATURE", "value": "41.5"})
    path = tmp_path / "node.json"
    path.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING):
        first, second = acquire(config(path.as_uri()), attempts=2)
    assert list(first.counts["link_status"]) == [1, 0, 0, 0]
    assert list(first.counts["phys_perf"]) == [0.031, 17.5] and estimates(first)["snr"] == 17.5
    assert list(first.counts["unknown_identities"]) == [0, 0, 1] and list(second.counts["unknown_identities"]) == [0, 0, 1]
    assert logged().count("acme-qkd:LASER_TEMPERATURE") == 1  # logged once, counted every time
    assert INTERFACE_STATUSES[int(np.argmax(first.counts["interface_status"]))] == "UP"


def test_virtual_link_without_performance_reports_nothing(tmp_path):
    document = {"etsi-qkd-sdn-node:qkd_node": {"qkd_links": {"qkd_link": [
        {"qkdl_id": LINK_ID, "qkdl_type": "etsi-qkd-node-types:VIRT"}]}}}
    path = tmp_path / "virtual.json"
    path.write_text(json.dumps(document))
    [batch] = acquire(config(path.as_uri()))
    assert all(np.isnan(batch.counts[k]).all() for k in ("link_status", "interface_status", "skr_bps", "phys_perf"))
    assert math.isnan(estimates(batch)["link_active"])


@pytest.mark.parametrize("content, reason", [
    (None, "file_unreadable"), ("{", "invalid_json"), ('{"qkd_node": {}}', "missing_field"),
    (json.dumps({"etsi-qkd-sdn-node:qkd_node": {"qkd_links": {"qkd_link": [{"qkdl_id": LINK_ID, "qkdl_performance":
                 {"skr": "fast"}}]}}}), "wrong_type"),
])
def test_bad_documents_give_their_reason(tmp_path, content, reason):
    path = tmp_path / "node.json"
    if content is not None:
        path.write_text(content)
    [error] = acquire(config(path.as_uri()))
    assert isinstance(error, DriverError) and error.reason == reason
    assert reason in Etsi015Config.error_reasons


def test_plain_http_and_restconf_errors(servers):
    async def answer(request: web.Request) -> web.Response:
        body = {"ietf-restconf:errors": {"error": [{"error-type": "application", "error-tag": "operation-failed",
                                                    "error-message": "datastore locked"}]}}
        return web.json_response(body, status=503)
    port = servers.serve(json_app(answer))
    [error] = acquire(config(f"http://127.0.0.1:{port}{NODE_PATH}"))
    assert error.reason == "http_503" and "operation-failed: datastore locked" in str(error)
    port = servers.serve(RestconfNode("a", [StoreLink("ab", "a", "b")]).app())
    [batch] = acquire(config(f"http://127.0.0.1:{port}{NODE_PATH}", qkdl_id("ab")))
    assert batch.counts["skr_bps"] == 1200


def test_silent_node_times_out(servers, pki):
    [error] = acquire(config(f"https://127.0.0.1:{servers.silent()}{NODE_PATH}", timeout_seconds=0.3,
                          tls={"ca_file": str(pki.ca.cert_path)}))
    assert error.reason == "timeout"


def test_config_errors(tmp_path, pki):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "token").write_text("t0ken\n")
    with pytest.raises(ValueError, match="need an https"):
        config("http://node/restconf/data/x", bearer_token_file=str(tmp_path / "token"))
    with pytest.raises(ValueError, match="empty"):
        config("https://node/restconf/data/x", bearer_token_file=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="qkdl_id"):
        config("https://node/restconf/data/x", link_id="link-1")
    with pytest.raises(ValueError, match="url"):
        config("ftp://node/x")


def test_both_nodes_of_a_link_agree_on_it():
    links = [StoreLink("ab", "a", "b"), StoreLink("bc", "b", "c"), StoreLink("ac", "a", "c")]
    trees = {site: node_tree(site, links)["etsi-qkd-sdn-node:qkd_node"] for site in "abc"}
    for link in links:
        ends = {site: next(entry for entry in trees[site]["qkd_links"]["qkd_link"] if entry["qkdl_id"] == qkdl_id(link.name))
                for site in (link.site_a, link.site_b)}
        a, b = ends[link.site_a], ends[link.site_b]
        assert a["qkdl_remote"] == b["qkdl_local"] and b["qkdl_remote"] == a["qkdl_local"]
        for site, entry in ends.items():
            interfaces = {i["qkdi_id"] for i in trees[site]["qkd_interfaces"]["qkd_interface"]}
            assert entry["qkdl_local"]["qkdi_id"] in interfaces and entry["qkdl_local"]["qkdn_id"] == trees[site]["qkdn_id"]
