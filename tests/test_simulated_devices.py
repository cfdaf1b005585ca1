"""Simulated devices on the real simulator: key stores shared with the KMEs, node figures from the
estimator, the ``qtelemetry simulate`` config and the demo PKI."""

from __future__ import annotations

import math
import ssl
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from qtelemetry.cli import main
from qtelemetry.config import ConfigError, parse_config
from qtelemetry.devices.config import parse_devices_config
from qtelemetry.devices.links import qkdl_id
from qtelemetry.devices.restconf import node_tree
from qtelemetry.devices.simulation import link_status, runtime_links
from qtelemetry.runtime.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
LINK = {"type": "simulated-bb84", "fiber_length_km": 10, "seed": 3}
DARK = {**LINK, "faults": [{"kind": "fiber-cut", "start_s": 0}]}  # no light from the start: no key


def runtime(*drivers: dict, **exporter: float) -> Runtime:
    links = [{"name": f"l{i}", "site_a": "a", "site_b": "b", "driver": d} for i, d in enumerate(drivers)]
    exporter = {"sliding_windows": 5, "stall_timeout_seconds": 10.0} | exporter
    return Runtime(parse_config(yaml.safe_dump({"exporter": exporter, "links": links})))


def test_withdraw_takes_key_from_the_store_the_simulator_fills():
    rt = runtime({**DARK, "key_buffer_capacity_bits": 4096, "key_buffer_initial_ratio": 0.5}, LINK)
    dark, _ = runtime_links(rt)
    assert dark.key_store() == (2048, 4096)
    assert dark.withdraw(1024) and not dark.withdraw(1025) and dark.key_store() == (1024, 4096)  # all or nothing
    assert dark.withdraw(1024) and dark.key_store() == (0, 4096)
    snapshot = rt.cycle(rt.started + 1.0)
    totals = snapshot.groups["bb84-decoy"].totals
    assert totals["key_requested_bits"][0] == 1024 + 1025 + 1024 and totals["key_delivered_bits"][0] == 2048
    assert snapshot.groups["bb84-decoy"].estimates["key_stored_bits"][0] == 0
    assert totals["key_requested_bits"][1] == 0  # the other link's demand is its own


def test_concurrent_withdrawals_and_cycles_conserve_key():
    """Threads draining one store while the runtime fills it: every bit is generated, stored or delivered once."""
    rt = runtime({**LINK, "key_buffer_capacity_bits": 1e15, "key_buffer_initial_ratio": 1e-9})
    [link] = runtime_links(rt)
    initial, _ = link.key_store()
    taken = [0] * 4

    def drain(k: int) -> None:
        for _ in range(2000):
            taken[k] += 4096 * link.withdraw(4096)
    threads = [threading.Thread(target=drain, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for step in range(1, 30):
        rt.cycle(rt.started + 0.05 * step)
    for thread in threads:
        thread.join()
    snapshot = rt.cycle(rt.started + 1.6)
    totals = snapshot.groups["bb84-decoy"].totals
    stored, _ = link.key_store()
    assert totals["key_delivered_bits"][0] == sum(taken) > 0
    assert stored == pytest.approx(initial + totals["key_generated_bits"][0] - sum(taken), rel=1e-12)


@pytest.mark.parametrize("generating, stored, delivered, status", [
    (True, 0, True, "ACTIVE"), (False, 1, True, "PASSIVE"), (False, 0, True, "OFF"),
    (False, 0, False, "PENDING"), (False, 5, False, "PASSIVE"),
])
def test_link_status_follows_the_etsi_015_identities(generating, stored, delivered, status):
    assert link_status(generating, stored, delivered) == status


def test_node_figures_are_the_estimators():
    rt = runtime({**LINK, "key_consumption_bps": 300.0, "misalignment_error": 0.02},
                 {**DARK, "key_buffer_initial_ratio": 0.0})
    bright, dark = runtime_links(rt)
    assert bright.figures().status == "PASSIVE" and dark.figures().status == "PENDING"  # before the first window
    estimates = rt.cycle(rt.started + 2.0).groups["bb84-decoy"].estimates
    figures = bright.figures()
    assert figures.status == "ACTIVE" and figures.skr_bps == estimates["secret_key_rate_bps"][0] > 0
    assert figures.eskr_bps == figures.skr_bps and figures.expected_consumption_bps == 300.0
    assert figures.qber == estimates["qber_z"][0] == pytest.approx(0.02, abs=0.003)
    assert dark.figures().status == "OFF" and dark.figures().skr_bps == 0  # no light, no key left
    tree = node_tree("a", [bright, dark])["etsi-qkd-sdn-node:qkd_node"]["qkd_links"]["qkd_link"]
    assert [entry["qkdl_status"] for entry in tree] == ["etsi-qkd-node-types:ACTIVE", "etsi-qkd-node-types:OFF"]
    assert tree[0]["qkdl_performance"]["skr"] == round(figures.skr_bps) and tree[1]["qkdl_id"] == qkdl_id("l1")


def test_a_link_whose_data_is_stale_is_not_generating():
    rt = runtime(LINK, window_seconds=0.1, stall_timeout_seconds=0.2)
    [link] = runtime_links(rt)
    time.sleep(0.05)
    rt.cycle()
    assert link.figures().status == "ACTIVE"
    time.sleep(0.3)  # no window for longer than the stall timeout
    figures = link.figures()
    assert (figures.status, figures.skr_bps) == ("PASSIVE", 0.0) and math.isnan(figures.qber)


def test_only_links_with_a_key_store_can_be_served():
    heralded = {"type": "simulated-heralded", "fiber_length_km": 10}
    with pytest.raises(ValueError, match="without a simulated key store: l1"):
        runtime_links(runtime(LINK, heralded))


# --- config -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    assert main(["simulate", "--make-pki", str(directory), "--client", "sae-a", "--host", "simulator"]) == 0
    return directory


def devices_config(pki: Path) -> dict:
    tls = {"cert_file": str(pki / "device.crt"), "key_file": str(pki / "device.key"), "client_ca_file": str(pki / "ca.crt")}
    return {
        "links": [{"name": "ab", "site_a": "a", "site_b": "b", "driver": LINK},
                  {"name": "bc", "site_a": "b", "site_b": "c", "driver": LINK}],
        "sites": {"a": {"kme": {"listen": "127.0.0.1:0", "tls": tls, "sae_ids": ["sae-a"]},
                        "restconf": {"listen": "127.0.0.1:0", "tls": tls}},
                  "b": {"kme": {"listen": "127.0.0.1:0", "tls": dict(tls), "sae_ids": ["sae-b"]}}},
    }


def test_example_configs_are_valid_and_agree(pki, tmp_path):
    """The simulated-devices demo's pair: the exporter watches every simulated link through both drivers."""
    local = lambda text: text.replace("../demo-pki/", f"{pki}/").replace("sae-bob.", "sae-a.").replace(
        "sae-alice.", "sae-a.").replace("qtelemetry.crt", "sae-a.crt").replace("qtelemetry.key", "sae-a.key")
    devices = parse_devices_config(local((ROOT / "examples" / "simulate.yaml").read_text()), "simulate.yaml")
    exporter = parse_config(local((ROOT / "examples" / "exporter-devices.yaml").read_text()), "exporter.yaml")
    simulated = {qkdl_id(link.name): link for link in devices.links}
    kmes = {f"https://{site.kme.listen}": name for name, site in devices.sites.items()}
    nodes = {f"https://{site.restconf.listen}": name for name, site in devices.sites.items()}
    saes = {sae: name for name, site in devices.sites.items() for sae in site.kme.sae_ids}
    watched = {"etsi014": set(), "etsi015": set()}
    for link in exporter.links:
        driver = link.driver
        if driver.type == "etsi014":
            pair = (kmes[driver.kme_url], saes[driver.slave_sae_id])
            watched["etsi014"].add(pair)
            assert pair == (link.site_a, link.site_b)
        else:
            served = simulated[str(driver.qkdl_id)]
            assert nodes[driver.url.split("/restconf")[0]] == served.site_a == link.site_a
            watched["etsi015"].add((served.site_a, served.site_b))
    pairs = {(link.site_a, link.site_b) for link in devices.links}
    assert watched == {"etsi014": pairs, "etsi015": pairs}


def _server_tls(c: dict) -> dict:
    return {k: v for k, v in c["sites"]["a"]["kme"]["tls"].items() if k != "client_ca_file"}


@pytest.mark.parametrize("change, path, said", [
    (lambda c: c["links"][0].update(driver={"type": "simulated-heralded", "fiber_length_km": 5}),
     "links[0].driver.type", "no key store"),
    (lambda c: c["links"][1].update(name="ab"), "links[1].name", "duplicate"),
    (lambda c: c["sites"]["b"]["kme"].update(sae_ids=["sae-a"]), "sites.b.kme.sae_ids[0]", "also served at site a"),
    (lambda c: c["sites"]["b"]["kme"].update(sae_ids=["a/b"]), "sites.b.kme.sae_ids", "without '/'"),
    (lambda c: c["sites"]["b"]["kme"]["tls"].update(cert_file="/nonexistent"), "sites.b.kme.tls.cert_file",
     "cannot read '/nonexistent'"),
    (lambda c: c["sites"]["b"]["kme"]["tls"].update(cert_file=c["sites"]["b"]["kme"]["tls"]["client_ca_file"]),
     "sites.b.kme.tls", "cannot load"),
    (lambda c: c["sites"]["b"]["kme"]["tls"].pop("client_ca_file"), "sites.b.kme", "client_ca_file is required"),
    (lambda c: c["sites"]["b"]["kme"].update(listen="localhost"), "sites.b.kme.listen", "HOST:PORT"),
    (lambda c: c["sites"]["b"].update(extra=1), "sites.b.extra", "Extra inputs"),
    (lambda c: c["sites"].update(B={"kme": None}), "sites.B (key)", "pattern"),
    (lambda c: c["sites"].update(c={}), "sites.c", "kme, a restconf node or both"),
    (lambda c: c["sites"].update(e={"restconf": {"listen": "127.0.0.1:9", "tls": _server_tls(c)}}), "sites.e", "no link"),
    (lambda c: c["links"][1].update(site_b="a"), "sites.a.kme", "ETSI GS QKD 014 names a key stream"),
    (lambda c: (c["sites"]["a"]["restconf"].update(listen="127.0.0.1:7000"),
                c["sites"]["b"]["kme"].update(listen="127.0.0.1:7000")), "sites.b.kme.listen", "also sites.a.restconf"),
])
def test_config_errors_name_the_field(pki, change, path, said):
    config = devices_config(pki)
    change(config)
    with pytest.raises(ConfigError) as info:
        parse_devices_config(yaml.safe_dump(config))
    assert any(p == path and said in reason for p, reason in info.value.problems), info.value.problems


def test_simulate_exits_2_on_a_bad_config(pki, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    config = devices_config(pki)
    config["links"][0]["driver"]["mu"] = -1
    bad.write_text(yaml.safe_dump(config))
    assert main(["simulate", "--config", str(bad)]) == 2
    assert "links[0].driver.mu" in capsys.readouterr().err
    assert main(["simulate", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["simulate", "--config", str(bad), "--client", "x"]) == 2


def test_demo_pki_certificates_work_and_keys_are_private(pki):
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki / "device.crt", pki / "device.key")
    client = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    client.load_cert_chain(pki / "sae-a.crt", pki / "sae-a.key")
    device = x509.load_pem_x509_certificate((pki / "device.crt").read_bytes())
    names = device.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "simulator"}
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    sae = x509.load_pem_x509_certificate((pki / "sae-a.crt").read_bytes())
    assert sae.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sae-a"
    assert all((pki / name).stat().st_mode & 0o077 == 0 for name in ("device.key", "sae-a.key"))
    assert not list(pki.glob("ca.key"))  # the CA's key is not kept: nobody can issue more


def test_make_pki_keeps_a_complete_pki_and_refuses_to_mix(pki, tmp_path, capsys):
    assert main(["simulate", "--make-pki", str(pki), "--client", "sae-a"]) == 0  # already there: kept
    assert "kept" in capsys.readouterr().out
    assert main(["simulate", "--make-pki", str(pki), "--client", "sae-a", "--client", "sae-b"]) == 2
    assert "already holds" in capsys.readouterr().err and not (pki / "sae-b.crt").exists()
    for bad in ("device", "ca", "../x", ""):
        assert main(["simulate", "--make-pki", str(tmp_path / "new"), "--client", bad]) == 2
    for bad in ("bad host!", "-x.example", "a..b", "x" * 64, "\x1b[31m"):  # before: written into the SAN
        assert main(["simulate", "--make-pki", str(tmp_path / "new"), f"--host={bad}"]) == 2
        assert "--host: not an IP address or a DNS name" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main(["simulate", "--make-pki", str(tmp_path / "ok"), "--host", "kme-1.site-a.example",
                 "--host", "::1", "--host", "10.0.0.7"]) == 0


def test_documented_example_of_the_simulate_config_is_valid(pki):
    page = (ROOT / "docs" / "devices.md").read_text()
    example = next(block.split("```", 1)[0] for block in page.split("```yaml\n") if "sae_ids:" in block)
    config = parse_devices_config(example.replace("demo-pki/", f"{pki}/"), "docs/devices.md")
    assert [link.name for link in config.links] == ["metro-alice-bob"] and set(config.sites) == {"alice", "bob"}
    assert config.sites["alice"].restconf.tls.client_ca_file == pki / "ca.crt"
