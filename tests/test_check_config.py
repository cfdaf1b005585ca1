"""``check-config`` refuses what the run would refuse, and every example it accepts runs.

Rows of the third review: a web config allowing only TLS 1.0/1.1 passed and every handshake then
failed (F6); an ETSI 015 bearer token file with an embedded newline passed and every poll then
failed (F7); the ETSI 014/015 TLS files, the 015 bearer token and the paths of the ``simulate``
config were taken from the working directory, not the config file's, with errors naming no path
(F12).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import DeviceProcess, RunningExporter
from tls import make_pki

from qtelemetry.cli import main
from qtelemetry.config import ConfigError
from qtelemetry.devices.config import load_devices_config

ROOT = Path(__file__).resolve().parents[1]
UUID = "3ab7cf8c-187b-58f5-bae1-d37d35572160"


def check(config: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["check-config", str(config), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("versions", [("TLS10", "TLS10"), ("TLS10", "TLS11"), ("TLS11", "TLS11")])
def test_tls_versions_openssl_cannot_serve_are_refused(versions, pki, tmp_path, capsys):
    web = tmp_path / "web.yaml"
    web.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"]),
        "min_version": versions[0], "max_version": versions[1]}}))
    config = tmp_path / "c.yaml"
    config.write_text("links: [{name: a, driver: {type: simulated-bb84, fiber_length_km: 10}}]\n")
    code, err = check(config, capsys, "--web.config.file", str(web))
    assert code == 2
    assert "tls_server_config: cannot set up TLS: no client could complete a TLS handshake" in err
    assert f"max_version {versions[1]}" in err
    web.write_text(web.read_text().replace(f"max_version: {versions[1]}", "max_version: TLS12"))
    assert check(config, capsys, "--web.config.file", str(web))[0] == 0  # a set-up OpenSSL serves


def etsi015(token: str, tls: dict[str, str]) -> str:
    return yaml.safe_dump({"links": [{"name": "node", "driver": {
        "type": "etsi015", "url": "https://127.0.0.1:9/restconf/data/etsi-qkd-sdn-node:qkd_node", "qkdl_id": UUID,
        "tls": tls, "bearer_token_file": token}}]})


@pytest.mark.parametrize("content, reason", [
    (b"abc\ndef\n", "printable ASCII without spaces"),
    (b"abc\xe2\x80\xa8def", "printable ASCII without spaces"),  # U+2028, a line separator
    (b"\n\n", "the file is empty"),
])
def test_bearer_tokens_the_run_cannot_send_are_refused(content, reason, pki, tmp_path, capsys):
    (tmp_path / "token").write_bytes(content)
    config = tmp_path / "c.yaml"
    config.write_text(etsi015(str(tmp_path / "token"), {"ca_file": str(pki["ca"])}))
    code, err = check(config, capsys)
    assert code == 2 and "links[0].driver.bearer_token_file" in err and reason in err, err


def test_simulated_nodes_refuse_such_tokens_too(pki, tmp_path):
    (tmp_path / "token").write_bytes(b"abc\ndef")
    config = tmp_path / "simulate.yaml"
    config.write_text(yaml.safe_dump({
        "links": [{"name": "ab", "site_a": "a", "site_b": "b", "driver": {"type": "simulated-bb84", "fiber_length_km": 10}}],
        "sites": {"a": {"restconf": {"listen": "127.0.0.1:0", "bearer_token_file": str(tmp_path / "token"), "tls": {
            "cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"])}}}}}))
    with pytest.raises(ConfigError) as info:
        load_devices_config(config)
    assert [p for p, _ in info.value.problems] == ["sites.a.restconf.bearer_token_file"]


def test_files_of_device_configs_are_relative_to_the_config_file(pki, tmp_path, monkeypatch, capsys):
    """Started from another directory, relative TLS and token files are found beside the config;
    a missing one is named by the path it was looked for at."""
    here = tmp_path / "conf"
    shutil.copytree(pki["ca"].parent, here / "pki")
    (here / "token").write_text("t0ken\n")
    monkeypatch.chdir(tmp_path)
    tls = {"ca_file": "pki/" + pki["ca"].name, "cert_file": "pki/client.crt", "key_file": "pki/client.key"}
    config = here / "c.yaml"
    config.write_text(etsi015("token", tls))
    assert check(config, capsys)[0] == 0
    config.write_text(etsi015("token", {**tls, "ca_file": "pki/missing.crt"}))
    code, err = check(config, capsys)
    assert code == 2 and f"links[0].driver.tls.ca_file: cannot read '{here / 'pki' / 'missing.crt'}'" in err, err
    devices = here / "simulate.yaml"
    devices.write_text(yaml.safe_dump({
        "links": [{"name": "ab", "site_a": "a", "site_b": "b", "driver": {"type": "simulated-bb84", "fiber_length_km": 10}}],
        "sites": {"a": {"restconf": {"listen": "127.0.0.1:0", "bearer_token_file": "token", "tls": {
            "cert_file": "pki/server.crt", "key_file": "pki/server.key", "client_ca_file": tls["ca_file"]}}}}}))
    assert load_devices_config(devices).sites["a"].restconf.bearer_token() == "t0ken"


# --- every example config the repository ships ------------------------------------------------

#: Configs not run, and why (every other config in the repository is).
NOT_RUN = {
    "qtelemetry/defaults/pilot-week.yaml": "a history config: its 5-minute windows never finish in a test's "
                                            "seconds (tests/test_report.py runs it through `qtelemetry history`)",
    "examples/drill-network.yaml": "a failure drill's history config: 5-minute windows (tests/test_relay_drill.py "
                                   "runs it through `qtelemetry history --fail`)",
    "deploy/compose/simulator/exporter-devices.yaml": "the compose copy of examples/exporter-devices.yaml "
                                                      "(tests/test_deploy.py): certificates in a container volume",
    "deploy/kubernetes/components/web-tls-auth/config-web.example.yaml": "certificates from a Kubernetes Secret",
}
DEVICE_CONFIGS = ("examples/simulate.yaml", "deploy/compose/simulator/simulate.yaml")


def exporter_configs() -> list[str]:
    found = sorted(str(p.relative_to(ROOT)) for d in ("examples", "qtelemetry/defaults", "deploy", "tests")
                   for p in (ROOT / d).rglob("*.yaml") if re.search(r"^links:", p.read_text(), re.M))
    return [p for p in found if p not in DEVICE_CONFIGS]


def test_every_config_is_run_or_says_why_not():
    assert set(NOT_RUN) <= set(exporter_configs())


def _demo_tree(tmp_path: Path) -> Path:
    """The repository's examples as the README sets them up: demo-pki in the root, an admin token."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    assert main(["simulate", "--make-pki", str(tmp_path / "demo-pki"), *(
        f"--client={c}" for c in ("sae-alice", "sae-bob", "sae-carol", "qtelemetry"))]) == 0
    token = tmp_path / "examples" / "admin.token"
    token.write_text("example-admin-token\n")
    token.chmod(0o600)
    return tmp_path / "examples"


def _devices(examples: Path, tmp_path: Path) -> tuple[DeviceProcess, dict[str, str]]:
    """`qtelemetry simulate` of examples/simulate.yaml on free ports; its fixed URLs -> the real ones."""
    config = examples / "simulate.yaml"
    text = config.read_text()
    fixed = {site: {kind: f"https://{device['listen']}" for kind, device in devices.items()}
             for site, devices in yaml.safe_load(text)["sites"].items()}
    config.write_text(re.sub(r'listen: "127\.0\.0\.1:\d+"', 'listen: "127.0.0.1:0"', text))
    devices = DeviceProcess(config, tmp_path / "devices.log", sites=len(fixed))
    return devices, {fixed[site][kind]: re.match(r"https://[^/]+", url).group(0)  # type: ignore[union-attr]
                     for site, urls in devices.urls.items() for kind, url in urls.items() if kind in fixed[site]}


@pytest.mark.parametrize("name", [p for p in exporter_configs() if p not in NOT_RUN])
def test_every_example_config_check_config_accepts_runs_with_its_links_up(name, tmp_path, capsys):
    if name.startswith("examples/"):
        examples = _demo_tree(tmp_path)
        config = examples / Path(name).name
    else:
        config = ROOT / name
    stops = []
    try:
        if name == "examples/exporter-devices.yaml":  # its devices first, as the README runs them
            devices, urls = _devices(examples, tmp_path)
            stops.append(devices.stop)
            text = config.read_text()
            for fixed, real in urls.items():
                text = text.replace(fixed, real)
            config.write_text(text)
        code, err = check(config, capsys)
        assert code == 0, err
        exporter = RunningExporter(["run", "--config", str(config), "--listen", "127.0.0.1:0"], tmp_path / "run.log")
        stops.append(exporter.stop)
        links = {link["name"] for link in yaml.safe_load(config.read_text())["links"]}
        exporter.wait_for(lambda s: {x.labels["link"] for x in s.get("qlink_up", []) if x.value == 1} == links,
                          timeout=90)
    finally:
        for stop in reversed(stops):
            stop()


def test_configs_not_run_are_refused_for_the_reason_given(capsys):
    for name in NOT_RUN:
        if "pilot-week" in name or "drill-network" in name:  # history configs: valid, only slow to run live
            assert check(ROOT / name, capsys)[0] == 0
            continue
        code, err = check(ROOT / name, capsys)
        assert code == 2 and ("/var/lib/qtelemetry/demo-pki" in err or "/etc/qtelemetry/tls" in err), err
