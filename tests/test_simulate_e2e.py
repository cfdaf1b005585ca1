"""End to end, as an SRE sees it: ``qtelemetry simulate`` (real simulated devices) and ``qtelemetry run``
with the real etsi014/etsi015 drivers over mutual TLS, read through the exporter's /metrics.

The device process simulates two links from site a: ``ab`` (10 km, distils key) and ``ac`` (a
fibre cut from the start: no key, a small store that applications drain). Site a serves a KME
and a RESTCONF node, sites b and c a KME each. The exporter watches both links through both
drivers, has a link whose certificate names an SAE site a's KME does not serve, and a simulated
link of its own that keeps reporting whatever the devices do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import yaml
from conftest import DeviceProcess, RunningExporter, value
from devices import device_tls, free_port, kme_link, node_link
from etsi_qkd_014_client import QKD014Client

from qtelemetry.cli import main
from qtelemetry.standards.restconf import NODE_PATH

SAES = {"a": "sae-a", "b": "sae-b", "c": "sae-c"}
DARK_STORE = 131072.0  # bits; a multiple of 256: keys of 256 bits can empty it exactly
DEVICE_LINKS = ("kme-ab", "kme-ac", "node-ab", "node-ac")


class Setup:
    def __init__(self, tmp: Path):
        self.tmp, self.pki = tmp, tmp / "pki"
        assert main(["simulate", "--make-pki", str(self.pki), *(f"--client={c}" for c in (*SAES.values(), "exporter"))]) == 0
        self.ports = {name: free_port() for name in ("kme-a", "kme-b", "kme-c", "restconf-a")}
        self.devices_config = tmp / "devices.yaml"
        self.devices_config.write_text(yaml.safe_dump(self.devices()))
        self.starts = 0
        self.devices_process = self.start_devices()
        exporter_config = tmp / "exporter.yaml"
        exporter_config.write_text(yaml.safe_dump(self.exporter()))
        self.exporter_process = RunningExporter(["run", "--listen", "127.0.0.1:0", "--config", str(exporter_config)],
                                                tmp / "exporter.log")

    def devices(self) -> dict:
        tls = device_tls(self.pki)
        bb84 = {"type": "simulated-bb84", "fiber_length_km": 10, "seed": 5}
        return {
            "links": [
                {"name": "ab", "site_a": "a", "site_b": "b", "driver": {**bb84, "key_consumption_bps": 1000.0}},
                {"name": "ac", "site_a": "a", "site_b": "c", "driver": {
                    **bb84, "key_buffer_capacity_bits": 2 * DARK_STORE, "faults": [{"kind": "fiber-cut", "start_s": 0}]}},
            ],
            "sites": {
                "a": {"kme": {"listen": f"127.0.0.1:{self.ports['kme-a']}", "tls": tls, "sae_ids": [SAES["a"]]},
                      "restconf": {"listen": f"127.0.0.1:{self.ports['restconf-a']}", "tls": tls}},
                **{site: {"kme": {"listen": f"127.0.0.1:{self.ports['kme-' + site]}", "tls": tls, "sae_ids": [SAES[site]]}}
                   for site in "bc"},
            },
        }

    def exporter(self) -> dict:
        kme = f"https://127.0.0.1:{self.ports['kme-a']}"
        node = f"https://127.0.0.1:{self.ports['restconf-a']}{NODE_PATH}"
        return {"links": [
            kme_link("kme-ab", kme, SAES["b"], self.pki, SAES["a"]),
            kme_link("kme-ac", kme, SAES["c"], self.pki, SAES["a"]),
            node_link("node-ab", node, "ab", self.pki, "exporter"),
            node_link("node-ac", node, "ac", self.pki, "exporter"),
            kme_link("kme-intruder", kme, SAES["c"], self.pki, SAES["b"]),  # sae-b is site b's: site a's KME answers 401
            {"name": "local-bb84", "driver": {"type": "simulated-bb84", "fiber_length_km": 20}},
        ]}

    def start_devices(self) -> DeviceProcess:
        self.starts += 1
        return DeviceProcess(self.devices_config, self.tmp / f"devices{self.starts}.log", sites=3)

    def client(self, site: str) -> QKD014Client:
        sae = SAES[site]
        return QKD014Client(f"127.0.0.1:{self.ports['kme-' + site]}", str(self.pki / f"{sae}.crt"),
                            str(self.pki / f"{sae}.key"), str(self.pki / "ca.crt"))

    def stop(self) -> None:
        self.exporter_process.stop()
        self.devices_process.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    running = Setup(tmp_path_factory.mktemp("simulate"))
    yield running
    running.stop()


def up(samples: dict, link: str) -> bool:
    return value(samples, "qlink_up", link=link) == 1


def errors(samples: dict, link: str, reason: str) -> float:
    return value(samples, "qlink_driver_errors_total", link=link, reason=reason)


def test_both_drivers_report_the_simulated_links(setup):
    exporter = setup.exporter_process
    samples = exporter.wait_for(lambda s: all(up(s, link) for link in DEVICE_LINKS)
                                and value(s, "qkd_kme_key_probes_total", link="kme-ab", result="delivered") > 0
                                and value(s, "qkd_link_active", link="node-ab") == 1, timeout=30)
    assert {s.labels["link"]: s.labels["estimated_by"] for s in samples["qlink_info"]} == {
        **dict.fromkeys((*DEVICE_LINKS, "kme-intruder"), "device"), "local-bb84": "qtelemetry"}
    # ETSI 014: the store in bits (whole keys of 256 bits), every answered request timed
    assert value(samples, "qkd_key_buffer_capacity_bits", link="kme-ab") == 1e7 // 256 * 256
    assert 0 < value(samples, "qkd_key_buffer_bits", link="kme-ab") <= 1e7
    assert value(samples, "qkd_kme_request_duration_seconds_count", link="kme-ab", endpoint="status") > 0
    # ETSI 015: what qtelemetry's estimator computes from the simulated counts, as the node reports it
    skr = value(samples, "qkd_secret_key_rate_bits_per_second", link="node-ab")
    assert skr > 1e4 and value(samples, "qkd_effective_secret_key_rate_bits_per_second", link="node-ab") == skr
    assert 0.005 < value(samples, "qkd_qber_ratio", link="node-ab", basis="Z") < 0.02  # misalignment 1%
    assert value(samples, "qkd_expected_key_consumption_bits_per_second", link="node-ab") == 1000
    assert value(samples, "qkd_interface_status", link="node-ab", status="UP") == 1
    # the cut link generates nothing but has key left: PASSIVE
    assert value(samples, "qkd_link_status", link="node-ac", status="PASSIVE") == 1
    assert value(samples, "qkd_secret_key_rate_bits_per_second", link="node-ac") == 0
    # a certificate of an SAE the KME does not serve: down, with its reason; nothing else suffers
    samples = exporter.wait_for(lambda s: errors(s, "kme-intruder", "http_401") > 0, timeout=10)
    assert not up(samples, "kme-intruder") and up(samples, "local-bb84") and up(samples, "kme-ab")
    assert "not served by the KME of site a" in exporter.log()


def test_application_demand_moves_the_exporters_figures_and_refusals_show(setup):
    """The third-party ETSI 014 client takes keys from the cut link's store: the exporter sees the
    store fall, then the KME refuse its probes once the store is empty, and the node turn OFF."""
    exporter, master, slave = setup.exporter_process, setup.client("a"), setup.client("c")
    before = exporter.wait_for(lambda s: up(s, "kme-ac"), timeout=30)
    level = value(before, "qkd_key_buffer_bits", link="kme-ac")
    falls = value(before, "qkd_key_buffer_decrease_bits_total", link="kme-ac")
    code, container = master.get_key(SAES["c"], number=8, size=1024)
    assert code == 200 and len(container.keys) == 8
    code, received = slave.get_key_with_key_IDs(SAES["a"], [k.key_id for k in container.keys])
    assert code == 200 and [k.key for k in received.keys] == [k.key for k in container.keys]
    exporter.wait_for(lambda s: value(s, "qkd_key_buffer_decrease_bits_total", link="kme-ac") >= falls + 8 * 1024
                      and value(s, "qkd_key_buffer_bits", link="kme-ac") <= level - 8 * 1024, timeout=10)
    for size in (8192, 256):  # drain the store: every amount is a multiple of 256 bits
        while (code := master.get_key(SAES["c"], number=1, size=size)[0]) == 200:
            pass
        assert code == 503
    refused = value(exporter.scrape(), "qkd_kme_key_probes_total", link="kme-ac", result="refused")
    samples = exporter.wait_for(
        lambda s: value(s, "qkd_kme_key_probes_total", link="kme-ac", result="refused") >= refused + 2
        and value(s, "qkd_link_status", link="node-ac", status="OFF") == 1, timeout=15)
    assert value(samples, "qkd_key_buffer_bits", link="kme-ac") == 0 and up(samples, "kme-ac")  # refusing is not down
    assert value(samples, "qkd_link_active", link="node-ac") == 0
    assert value(samples, "qkd_interface_status", link="node-ac", status="DOWN") == 1
    assert value(samples, "qkd_kme_key_probes_total", link="kme-ab", result="refused") == 0  # the other pair is served


def test_devices_going_away_and_coming_back(setup):
    exporter = setup.exporter_process
    before = exporter.wait_for(lambda s: up(s, "kme-ab") and up(s, "node-ab"), timeout=30)
    setup.devices_process.stop()
    gone = ("connection_refused", "disconnected")
    samples = exporter.wait_for(lambda s: not any(up(s, link) for link in DEVICE_LINKS), timeout=15)
    for link in DEVICE_LINKS:
        assert sum(errors(samples, link, r) - errors(before, link, r) for r in gone) > 0, link
    assert up(samples, "local-bb84")
    batches = value(samples, "qlink_batches_total", link="local-bb84")
    setup.devices_process = setup.start_devices()
    samples = exporter.wait_for(lambda s: all(up(s, link) for link in DEVICE_LINKS), timeout=40)
    assert value(samples, "qlink_batches_total", link="local-bb84") > batches  # it never stopped
