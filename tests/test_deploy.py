"""Deployment files (Dockerfile, docker-compose, Kubernetes, systemd) agree with each other and
with the exporter, and the real tools accept them: `qtelemetry check-config`, promtool, amtool
(`check-config`, and `config routes test` for who gets notified), kubernetes-validate (core kinds,
offline schemas), the compose-spec schema (check-jsonschema), the Prometheus operator's published
API (npm, cached after the first run), systemd-analyze, and kustomize (`kubectl kustomize`) where
kubectl is installed.

Fast, and offline but for that one npm install: nothing is pulled, built or started (there is no
Docker engine here)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from tls import make_pki
from typecheck import npm_toolchain, tsc_errors

from qtelemetry.cli import main as qtelemetry_main
from qtelemetry.config import load_config, parse_listen
from qtelemetry.devices.config import load_devices_config
from qtelemetry.monitoring import alertmanager
from qtelemetry.monitoring.config import DEFAULT as MONITORING

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONTAINER_CONFIG = DEPLOY / "container" / "config.yaml"
DEMO_CONFIG = ROOT / "qtelemetry" / "defaults" / "demo.yaml"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
SITES = sorted(p for p in (K8S / "sites").iterdir() if (p / "kustomization.yaml").exists())
TLS_COMPONENT = K8S / "components" / "web-tls-auth"
RULES = ROOT / "alerts" / "qtelemetry.rules.yaml"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
SYSTEMD_UNIT = DEPLOY / "systemd" / "qtelemetry.service"

#: Kinds kubernetes-validate has schemas for; the Prometheus operator's are checked otherwise.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
#: Oldest Kubernetes minor we claim (still common in long-lived clusters) and the newest schema shipped.
K8S_OLDEST = "1.29.0"
#: `kubectl apply` (client side) stores the object in an annotation; annotations are capped at 256 KiB.
ANNOTATION_LIMIT = 256 * 1024


def _job_from_selector() -> str:
    match = re.search(r'\bjob="([^"]+)"', MONITORING.selector)
    assert match, f"monitoring selector {MONITORING.selector!r} has no job matcher"
    return match.group(1)


JOB = _job_from_selector()


# --- tools -------------------------------------------------------------------------------------

def debian_tool(name: str, package: str) -> str:
    """A Debian-packaged tool: skipped locally when missing, a failure in CI (.ci/run installs it)."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} not found: install Debian's `{package}` package (or run `bash .ci/run`)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


def test_dependency(module: str, package: str):
    """A module from the project's `test` extra: skipped locally when missing, a failure in CI."""
    try:
        return __import__(module)
    except ImportError:
        reason = f"{package} is not installed: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)


test_dependency.__test__ = False  # a helper, not a test


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


def check_config(path: Path, capsys) -> str:
    """`qtelemetry check-config PATH` (in process); its output; fails with the errors it lists."""
    code = qtelemetry_main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, f"qtelemetry check-config {path} exited {code}:\n{err}"
    return out


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- Dockerfile and build context ----------------------------------------------------------------

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (KEYWORD, arguments) by build stage; ARG defaults substituted into FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:  # global ARGs, usable in FROM
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            stages.append([])
        assert stages, f"Dockerfile: {keyword} before the first FROM"
        stages[-1].append((keyword, rest))
    return stages


def final_stage() -> dict[str, list[str]]:
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in dockerfile_stages()[-1]:
        by_keyword.setdefault(keyword, []).append(rest)
    return by_keyword


def container_config_path() -> str:
    """The config path of the image's CMD (`run --config PATH`)."""
    cmd = json.loads(final_stage()["CMD"][-1])
    return cmd[cmd.index("--config") + 1]


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Whether `path` (relative to the repository root) survives .dockerignore: the last
    pattern matching the path or one of its parents decides; `!` re-includes."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            cleaned = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
            rules.append((negated, _pattern_regex(cleaned)))
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negated
    return not excluded


def test_dockerfile_builds_a_non_root_image_running_the_exporter():
    stages = dockerfile_stages()
    final = final_stage()
    for stage in stages:
        base = stage[0][1].split()[0]
        assert base.startswith("python:3.11-slim"), f"base image {base}: expected python:3.11-slim"
    user = final["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "USER must be a numeric non-root uid (runAsNonRoot verifies it)"
    assert final["EXPOSE"] == ["9817"]
    assert json.loads(final["ENTRYPOINT"][-1]) == ["qtelemetry"]
    assert json.loads(final["CMD"][-1]) == ["run", "--config", "/etc/qtelemetry/config.yaml"]
    runs = " ".join(rest for stage in stages for keyword, rest in stage if keyword == "RUN")
    assert re.search(r"pip install '?\.(\[[a-z,]+\])?'?(\s|$)", runs), "the image installs this package with `pip install .`"
    copies = [rest.split() for keyword, rest in stages[-1] if keyword == "COPY" and "--from" not in rest]
    assert ["deploy/container/config.yaml", container_config_path()] in copies


def test_build_context_holds_what_the_build_copies_and_nothing_else():
    copied: list[str] = []
    for stage in dockerfile_stages():
        for keyword, rest in stage:
            if keyword in ("COPY", "ADD") and "--from" not in rest:
                copied += [s for s in rest.split()[:-1] if not s.startswith("--")]
    pyproject = (ROOT / "pyproject.toml").read_text()
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.M)
    assert readme and readme.group(1) in copied, "pip install . needs the readme pyproject.toml names"
    for source in copied:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files, f"COPY {source}: empty"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert in_build_context(relative), f"{relative} is copied by the Dockerfile but excluded by .dockerignore"
    for kept_out in (".git/HEAD", ".venv/pyvenv.cfg", "tests/test_deploy.py", "qtelemetry/__pycache__/cli.cpython-311.pyc"):
        assert not in_build_context(kept_out), f"{kept_out} should stay out of the build context"


def test_container_config_is_the_demo_listening_on_all_interfaces(capsys):
    container = yaml.safe_load(CONTAINER_CONFIG.read_text())
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    assert container["exporter"].pop("listen") == "0.0.0.0:9817"
    demo["exporter"].pop("listen")
    assert container == demo, f"{CONTAINER_CONFIG.relative_to(ROOT)} drifted from the demo config: update it"
    assert "6 links" in check_config(CONTAINER_CONFIG, capsys)


# --- every exporter config the deployments ship -------------------------------------------------

@pytest.mark.parametrize("path", [CONTAINER_CONFIG, *(s / "config.yaml" for s in SITES)],
                         ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_shipped_configs_pass_check_config_and_listen_where_the_deployments_expect(path, capsys):
    check_config(path, capsys)
    host, port = parse_listen(load_config(path).exporter.listen)
    assert host == "0.0.0.0", "inside a container or pod the exporter must listen on all interfaces"
    assert str(port) in final_stage()["EXPOSE"]


def test_site_link_names_are_unique_across_sites():
    """The sites share one Prometheus (one cluster): a link is identified by cluster, job and name."""
    names = [link.name for site in SITES for link in load_config(site / "config.yaml").links]
    assert len(SITES) >= 2 and len(names) == len(set(names)), names


def test_tls_example_config_passes_check_config_with_the_mounted_secret(tmp_path, capsys):
    example = TLS_COMPONENT / "config-web.example.yaml"
    component = yaml.safe_load((TLS_COMPONENT / "kustomization.yaml").read_text())
    ops = yaml.safe_load(next(p["patch"] for p in component["patches"] if p["target"]["kind"] == "Deployment"))
    mount = next(op["value"] for op in ops if op["path"].endswith("/volumeMounts/-"))
    secret_name = next(op["value"]["secret"]["secretName"] for op in ops if op["path"].endswith("/volumes/-"))
    secret = next(d for d in load_all(K8S / "examples" / "web-secrets.example.yaml") if d["metadata"]["name"] == secret_name)
    web = yaml.safe_load(example.read_text())["exporter"]["web"]
    files = [web[k] for k in ("tls_cert_file", "tls_key_file", "tls_client_ca_file")]
    for file in files:
        directory, key = file.rsplit("/", 1)
        assert directory == mount["mountPath"] and key in secret["stringData"], f"{file} is not in Secret {secret_name}"
    # check-config loads the certificates: stand real ones in under tmp_path, named as in the Secret
    (tmp_path / "tls").mkdir()
    pki = make_pki(tmp_path)
    for file, made in zip(files, ("server_cert", "server_key", "ca")):
        (tmp_path / "tls" / file.rsplit("/", 1)[1]).write_bytes(pki[made].read_bytes())
    local = tmp_path / "config.yaml"
    local.write_text(example.read_text().replace(mount["mountPath"] + "/", f"{tmp_path}/tls/"))
    check_config(local, capsys)


# --- docker compose ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> local path of a compose service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE_DIR / source).resolve()
    return mounts


def local_path(service: dict, container_path: str) -> Path:
    """Where a container path of a service comes from in this repository, through its bind mounts."""
    for target, source in sorted(bind_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / os.path.relpath(container_path, target)
    raise AssertionError(f"{container_path} is not bind-mounted from the repository")


def test_compose_file_follows_the_compose_spec_and_references_existing_files(compose):
    test_dependency("check_jsonschema", "check-jsonschema")
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr
    services = compose["services"]
    assert {"qtelemetry", "qtelemetry-devices", "simulator", "pki", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), f"{name}: pin the image tag"
        if "build" in service:
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
            assert context == ROOT
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    exporter = services["qtelemetry"]
    assert local_path(exporter, container_config_path()) == CONTAINER_CONFIG
    assert exporter["read_only"] is True and "ALL" in exporter["cap_drop"]
    assert "/-/healthy" in " ".join(exporter["healthcheck"]["test"])
    prometheus = services["prometheus"]
    assert local_path(prometheus, "/etc/prometheus/qtelemetry/qtelemetry.rules.yaml") == RULES
    grafana = services["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert local_path(grafana, home).is_file()


EXAMPLES = ROOT / "examples"
DEMO_PKI = "/var/lib/qtelemetry/demo-pki"  # where the compose demo's PKI volume is mounted


def compose_copy(example: str, service: dict, container_path: str) -> tuple[str, str]:
    """(example text, compose copy text) without their leading comment blocks."""
    strip = lambda text: re.sub(r"\A(#.*\n)+", "", text)
    return strip((EXAMPLES / example).read_text()), strip(local_path(service, container_path).read_text())


def test_compose_simulator_runs_the_example_devices_and_the_devices_exporter_watches_them(compose):
    """The compose copies are the simulated-devices demo's examples with container addresses and the PKI volume."""
    services = compose["services"]
    simulator, exporter = services["simulator"], services["qtelemetry-devices"]
    command = simulator["command"]
    assert command[:2] == ["simulate", "--config"]
    example, copy_ = compose_copy("simulate.yaml", simulator, command[2])
    assert copy_ == example.replace('listen: "127.0.0.1:', 'listen: "0.0.0.0:').replace("../demo-pki/", f"{DEMO_PKI}/")
    example, copy_ = compose_copy("exporter-devices.yaml", exporter, container_config_path())
    assert copy_ == example.replace('"127.0.0.1:9817"', '"0.0.0.0:9817"').replace(
        "https://127.0.0.1:", "https://simulator:").replace("../demo-pki/", f"{DEMO_PKI}/")
    for service in (simulator, exporter, services["pki"]):
        assert f"demo-pki:{DEMO_PKI}" in " ".join(service["volumes"]) and service["read_only"] is True
        assert service["image"] == services["qtelemetry"]["image"]
    assert simulator["depends_on"]["pki"]["condition"] == "service_completed_successfully"
    assert f"{DEMO_PKI} " in " ".join(final_stage()["RUN"]) and f"chown 10001:10001 {DEMO_PKI}" in " ".join(final_stage()["RUN"])


def test_compose_pki_service_makes_every_certificate_the_configs_name(compose, tmp_path, capsys):
    """Run the pki service's command here, then validate both configs against what it wrote."""
    services = compose["services"]
    command = services["pki"]["command"]
    local = tmp_path / "pki"
    assert qtelemetry_main([local.as_posix() if arg == DEMO_PKI else arg for arg in command]) == 0
    capsys.readouterr()
    for service, container_path in (("simulator", services["simulator"]["command"][2]),
                                     ("qtelemetry-devices", container_config_path())):
        text = local_path(services[service], container_path).read_text().replace(DEMO_PKI, local.as_posix())
        (tmp_path / f"{service}.yaml").write_text(text)
    devices = load_devices_config(tmp_path / "simulator.yaml")
    check_config(tmp_path / "qtelemetry-devices.yaml", capsys)
    hosts = {url.split("//")[1].split(":")[0] for link in load_config(tmp_path / "qtelemetry-devices.yaml").links
             for url in (getattr(link.driver, "kme_url", None), getattr(link.driver, "url", None)) if url}
    assert hosts == {"simulator"} and command[command.index("--host") + 1] == "simulator"
    saes = {sae for site in devices.sites.values() if site.kme for sae in site.kme.sae_ids}
    assert saes <= {command[i + 1] for i, arg in enumerate(command) if arg == "--client"}


def test_compose_prometheus_config_passes_promtool_with_the_generated_rules(compose, tmp_path):
    promtool = debian_tool("promtool", "prometheus")
    service = compose["services"]["prometheus"]
    config_arg = next(a for a in service["command"] if a.startswith("--config.file="))
    config_path = local_path(service, config_arg.split("=", 1)[1])
    config = yaml.safe_load(config_path.read_text())
    # resolve the container paths to the repository's files, as the bind mounts do
    config["rule_files"] = [str(local_path(service, f)) for f in config["rule_files"]]
    assert str(RULES) in config["rule_files"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert JOB in jobs, f"no scrape job {JOB!r}: the generated rules select job={JOB!r}"
    targets = []
    for sd in jobs[JOB]["file_sd_configs"]:
        sd["files"] = [str(local_path(service, f)) for f in sd["files"]]
        for pattern in sd["files"]:
            for file in sorted(Path(pattern).parent.glob(Path(pattern).name)):
                targets += [t for group in yaml.safe_load(file.read_text()) for t in group["targets"]]
    exporter_port = parse_listen(load_config(CONTAINER_CONFIG).exporter.listen)[1]
    assert f"qtelemetry:{exporter_port}" in targets, "Prometheus must scrape the compose exporter"
    assert f"qtelemetry-devices:{exporter_port}" in targets, "and the exporter watching the simulated devices"
    am_targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert [t.split(":")[0] for t in am_targets] == ["alertmanager"]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run([promtool, "check", "config", str(local)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout + result.stderr), result.stdout


INHIBIT_RULES = ROOT / "alerts" / "alertmanager-inhibit-rules.yaml"
#: who must be notified: alert labels -> receivers, in Alertmanager's order (deploy/README.md, Alertmanager)
ROUTING = {
    "tamper alert: security and on-call": (
        {"alertname": "QKDTamperSuspected", "severity": "critical", "notify": "security", "link": "x"},
        ["security-webhook", "oncall-webhook"]),
    "critical alert: on-call only": ({"alertname": "QKDQberCritical", "severity": "critical", "link": "x"},
                                     ["oncall-webhook"]),
    "warning: e-mail (ticket) only": ({"alertname": "QKDQberHigh", "severity": "warning", "link": "x"},
                                      ["team-email"]),
    "info: nobody": ({"alertname": "QKDSecretKeyRateBelowPlan", "severity": "info", "link": "x"}, ["null"]),
}


def compose_alertmanager_config(compose: dict) -> Path:
    """The Alertmanager config file the compose service runs with."""
    service = compose["services"]["alertmanager"]
    config_arg = next(a for a in service["command"] if a.startswith("--config.file="))
    return local_path(service, config_arg.split("=", 1)[1])


def routed_receivers(amtool: str, config: Path, labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager notifies for an alert with ``labels`` (`amtool config routes test`)."""
    result = run([amtool, "config", "routes", "test", f"--config.file={config}",
                  *(f'{name}="{value}"' for name, value in labels.items())])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def test_compose_alertmanager_config_passes_amtool_and_has_the_generated_inhibit_rules(compose):
    amtool = debian_tool("amtool", "prometheus-alertmanager")
    path = compose_alertmanager_config(compose)
    result = run([amtool, "check-config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    generated = yaml.safe_load(INHIBIT_RULES.read_text())
    assert config["inhibit_rules"] == generated["inhibit_rules"], "copy alerts/alertmanager-inhibit-rules.yaml"
    # the routing qtelemetry recommends, which `qtelemetry report` replays: grouped by cluster and site
    recommended = alertmanager.recommended(generated["inhibit_rules"], MONITORING)
    assert {k: v for k, v in config.items() if k != "global"} == recommended
    assert config["route"]["group_by"] == [MONITORING.cluster_label, MONITORING.site_label]


def test_compose_alertmanager_routes_tamper_alerts_to_security_and_on_call(compose):
    amtool = debian_tool("amtool", "prometheus-alertmanager")
    path = compose_alertmanager_config(compose)
    for case, (labels, receivers) in ROUTING.items():
        assert routed_receivers(amtool, path, labels) == receivers, case


def test_compose_grafana_provisions_the_prometheus_datasource_and_the_dashboards(compose):
    grafana = compose["services"]["grafana"]
    provisioning = local_path(grafana, "/etc/grafana/provisioning")
    sources = [s for f in sorted((provisioning / "datasources").glob("*.yaml"))
               for s in yaml.safe_load(f.read_text())["datasources"]]
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0]["isDefault"] is True
    assert prometheus[0]["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.yaml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = local_path(grafana, providers[0]["options"]["path"])
    assert sorted(folder.glob("*.json")) == DASHBOARDS
    for board in DASHBOARDS:  # they pick the datasource through a variable of type prometheus
        variables = json.loads(board.read_text())["templating"]["list"]
        assert {"name": "datasource", "query": "prometheus"}.items() <= next(
            v for v in variables if v["type"] == "datasource").items(), board.name


# --- Kubernetes: generated files ----------------------------------------------------------------

@pytest.fixture(scope="module")
def build_module():
    spec = importlib.util.spec_from_file_location("deploy_kubernetes_build", K8S / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kubernetes_generated_files_are_what_build_py_makes(build_module):
    for path, text in build_module.outputs().items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run `python deploy/kubernetes/build.py` "
            "(after `qtelemetry generate`)")


def test_prometheus_rule_spec_is_the_generated_rule_file_and_passes_promtool(build_module, tmp_path):
    promtool = debian_tool("promtool", "prometheus")
    rule = yaml.safe_load(build_module.RULE_OUT.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    spec = tmp_path / "spec.rules.yaml"
    spec.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    result = run([promtool, "check", "rules", str(spec)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout + result.stderr)


def test_dashboard_configmaps_carry_each_dashboard_for_grafanas_sidecar(build_module):
    maps = load_all(build_module.DASHBOARD_OUT)
    assert len(maps) == len(DASHBOARDS)
    for config_map, board in zip(maps, DASHBOARDS):
        assert config_map["kind"] == "ConfigMap"
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["data"] == {board.name: board.read_text()}
        assert len(json.dumps(config_map)) < ANNOTATION_LIMIT, f"{board.name}: too big for kubectl apply"


# --- Kubernetes: Alertmanager routing (AlertmanagerConfig) ----------------------------------------

#: The Prometheus operator's API as published on npm (TypeScript types and JSON schemas generated
#: from its Go types), and the compiler that checks objects against the types.
OPERATOR_MODELS = {"@kubernetes-models/prometheus-operator": "6.0.0", "typescript": "5.9.3"}
V1ALPHA1 = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1alpha1"
#: Runs each (name, kind, object) of stdin through the package's own schema validation (ajv);
#: prints {name: [errors]}.
SCHEMA_VALIDATE_JS = f"""
import {{ readFileSync }} from 'node:fs';
import {{ AlertmanagerConfig }} from '{V1ALPHA1}/AlertmanagerConfig';
import {{ Route }} from '{V1ALPHA1}/Route';
const models = {{ AlertmanagerConfig, Route }}, found = {{}};
for (const [name, kind, doc] of JSON.parse(readFileSync(0, 'utf8'))) {{
  try {{ new models[kind](doc).validate(); }}
  catch (e) {{ found[name] = (e.errors ?? [e]).map(x => `${{x.instancePath ?? ''}} ${{x.message}}`); }}
}}
console.log(JSON.stringify(found));
"""


def child_routes(route: dict, path: str = "route") -> list[tuple[str, dict]]:
    """Every route below ``route``: the CRD keeps child routes as free JSON, the operator decodes
    them as Routes with unknown fields disallowed, so each is checked as a Route of its own."""
    found = []
    for i, child in enumerate(route.get("routes", [])):
        found += [(f"{path}.routes[{i}]", child), *child_routes(child, f"{path}.routes[{i}]")]
    return found


def operator_api_errors(work: Path, objects: dict[str, dict]) -> dict[str, list[str]]:
    """Errors of each AlertmanagerConfig against the operator's published API: tsc on typed
    literals (stray or misspelt fields, missing required ones) and the package's JSON-schema
    validation (enums, duration patterns)."""
    sources: dict[str, tuple[str, list[str]]] = {}
    checks = []
    for stem, amcfg in objects.items():
        lines = [f"import type {{ IAlertmanagerConfig }} from '{V1ALPHA1}/AlertmanagerConfig';",
                 f"import type {{ IRoute }} from '{V1ALPHA1}/Route';",
                 f"export const amcfg: IAlertmanagerConfig = {json.dumps(amcfg)};"]
        where = ["import", "import", "AlertmanagerConfig"]
        checks.append((stem, "AlertmanagerConfig", amcfg))
        for path, route in child_routes(amcfg["spec"]["route"]):
            lines.append(f"export const r{len(lines)}: IRoute = {json.dumps(route)};")
            where.append(path)
            checks.append((f"{stem} {path}", "Route", route))
        sources[stem] = ("\n".join(lines) + "\n", where)
    errors = tsc_errors(work, sources)
    done = subprocess.run(["node", "--input-type=module", "-e", SCHEMA_VALIDATE_JS], cwd=work,
                          input=json.dumps(checks), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, found in json.loads(done.stdout).items():
        errors[name.split()[0]] += [f"{name} (schema): {error}" for error in found]
    return errors


def test_alertmanager_config_matches_the_operators_published_api(build_module, request):
    """The generated AlertmanagerConfig against the operator's API, and a copy with five faults
    that the check must catch, each where it is."""
    amcfg = load_all(build_module.AMCFG_OUT)[0]
    hostile = copy.deepcopy(amcfg)
    spec = hostile["spec"]
    oncall, security = (next(r for r in spec["receivers"] if r["name"] == n) for n in ("oncall-webhook", "security-webhook"))
    oncall["webhookConfigs"][0]["urlsecret"] = oncall["webhookConfigs"][0].pop("urlSecret")
    del security["webhookConfigs"][0]["urlSecret"]["key"]
    spec["route"]["routes"][1]["repeat_interval"] = spec["route"]["routes"][1].pop("repeatInterval")
    spec["route"]["groupWait"] = "soon"
    spec["inhibitRules"][0]["sourceMatch"][0]["matchType"] = "=="
    work = npm_toolchain(request.config.cache.mkdir("prometheus-operator-api"), OPERATOR_MODELS,
                         "the Prometheus operator's API (@kubernetes-models/prometheus-operator)")
    errors = operator_api_errors(work, {"generated": amcfg, "hostile": hostile})
    assert not errors["generated"], "\n".join(errors["generated"])
    caught = "\n".join(errors["hostile"])
    for fault in ("'\"urlsecret\"' does not exist in type 'IWebhookConfig'",
                  "Property '\"key\"' is missing in type '{ name: string; }' but required in type 'ISecretKeySelector'",
                  "route.routes[1]: TS2353: Object literal may only specify known properties, and "
                  "'\"repeat_interval\"' does not exist in type 'IRoute'",
                  "/spec/route/groupWait must match pattern", "/spec/inhibitRules/0/sourceMatch/0/matchType must be"):
        assert fault in caught, f"the API check missed {fault!r}:\n{caught}"


#: AlertmanagerConfig field -> Alertmanager config key (the operator's translation back)
ALERTMANAGER_KEYS = {"groupBy": "group_by", "groupWait": "group_wait", "groupInterval": "group_interval",
                     "repeatInterval": "repeat_interval", "continue": "continue", "sendResolved": "send_resolved",
                     "to": "to", "from": "from", "smarthost": "smarthost", "requireTLS": "require_tls"}


def as_the_operator_renders_it(amcfg: dict, namespace: str, secrets: dict[str, dict[str, str]]) -> dict:
    """The Alertmanager config the operator makes of ``amcfg`` in ``namespace`` (pkg/alertmanager/
    amcfg.go, default matcher strategy OnNamespace): receivers named <namespace>/<name>/<receiver>;
    the route, with a namespace matcher and continue: true, first under the Alertmanager's own root
    route (here the operator's default: receiver "null"); a namespace matcher on both sides of every
    inhibit rule; webhook URLs read from the Secrets (``secrets``: name -> data)."""
    prefix = f"{namespace}/{amcfg['metadata']['name']}/"
    in_namespace = f'namespace="{namespace}"'

    def matchers(crd: list[dict]) -> list[str]:
        escape = lambda v: v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')  # noqa: E731
        return [f'{m["name"]}{m["matchType"]}"{escape(m["value"])}"' for m in crd]

    def route(crd: dict) -> dict:
        out = {ALERTMANAGER_KEYS[k]: v for k, v in crd.items() if k not in ("matchers", "routes", "receiver")}
        out["receiver"] = prefix + crd["receiver"]
        if "matchers" in crd:
            out["matchers"] = matchers(crd["matchers"])
        if "routes" in crd:
            out["routes"] = [route(child) for child in crd["routes"]]
        return out

    def receiver(crd: dict) -> dict:
        out: dict = {"name": prefix + crd["name"]}
        for webhook in crd.get("webhookConfigs", []):
            ref = webhook["urlSecret"]
            out.setdefault("webhook_configs", []).append(
                {"url": secrets[ref["name"]][ref["key"]], "send_resolved": webhook.get("sendResolved", True)})
        for email in crd.get("emailConfigs", []):
            out.setdefault("email_configs", []).append({ALERTMANAGER_KEYS[k]: v for k, v in email.items()})
        assert set(crd) <= {"name", "webhookConfigs", "emailConfigs"}, f"translate {sorted(crd)} too"
        return out

    spec = amcfg["spec"]
    top = route(spec["route"])
    top["matchers"] = top.get("matchers", []) + [in_namespace]
    top["continue"] = True
    inhibit = [{"source_matchers": matchers(rule["sourceMatch"]) + [in_namespace],
                "target_matchers": matchers(rule["targetMatch"]) + [in_namespace], "equal": rule["equal"]}
               for rule in spec["inhibitRules"]]
    return {"route": {"receiver": "null", "routes": [top]},
            "receivers": [{"name": "null"}, *(receiver(r) for r in spec["receivers"])], "inhibit_rules": inhibit}


def test_alertmanager_config_routes_tamper_alerts_to_security_and_on_call(build_module, tmp_path):
    """The AlertmanagerConfig, as the operator puts it into the Alertmanager's config, notifies who
    the Compose config notifies (`amtool config routes test`), with the generated inhibit rules and
    the webhook URLs from the Secret; and only for alerts of its namespace."""
    amtool = debian_tool("amtool", "prometheus-alertmanager")
    monitoring = yaml.safe_load((build_module.AMCFG_OUT.parent / "kustomization.yaml").read_text())
    assert build_module.AMCFG_OUT.name in monitoring["resources"], "deployed with the monitoring objects"
    amcfg = load_all(build_module.AMCFG_OUT)[0]
    webhooks = [w for r in amcfg["spec"]["receivers"] for w in r.get("webhookConfigs", [])]
    assert webhooks and all("url" not in w and "urlSecret" in w for w in webhooks), "webhook URLs come from a Secret"
    secrets = {d["metadata"]["name"]: d["stringData"] for d in load_all(build_module.WEBHOOK_SECRET_OUT)}
    namespace = build_module.NAMESPACE
    rendered = as_the_operator_renders_it(amcfg, namespace, secrets)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(rendered, sort_keys=False))
    result = run([amtool, "check-config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = f"{namespace}/{amcfg['metadata']['name']}/"
    for case, (labels, receivers) in ROUTING.items():
        assert routed_receivers(amtool, path, {**labels, "namespace": namespace}) == [prefix + r for r in receivers], case
        # an alert without the namespace label passes this object by (deploy/README.md: enforcedNamespaceLabel)
        assert routed_receivers(amtool, path, labels) == ["null"], case
    in_namespace = f'namespace="{namespace}"'
    inhibit = [{k: [m for m in v if m != in_namespace] if k.endswith("_matchers") else v for k, v in rule.items()}
               for rule in rendered["inhibit_rules"]]
    assert inhibit == yaml.safe_load(INHIBIT_RULES.read_text())["inhibit_rules"]


def test_build_refuses_a_compose_setting_it_cannot_carry_to_kubernetes(build_module, tmp_path, monkeypatch):
    """A route setting without a translation stops the build rather than vanish from the cluster's routing."""
    config = yaml.safe_load(build_module.ALERTMANAGER.read_text())
    config["route"]["routes"][0]["mute_time_intervals"] = ["weekends"]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(build_module, "ALERTMANAGER", path)
    with pytest.raises(ValueError, match=r"route\.routes\[0\]: \['mute_time_intervals'\] have no AlertmanagerConfig"):
        build_module.alertmanager_objects()


# --- Kubernetes: manifests ----------------------------------------------------------------------

def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    """Every Kubernetes object file under deploy/kubernetes (not kustomizations, not exporter configs)."""
    skip = {"kustomization.yaml", "config.yaml", "config-web.example.yaml", "prometheus-kubernetes-sd.yaml"}
    return sorted(p for p in K8S.rglob("*.yaml") if p.name not in skip)


def generated_configmaps() -> list[dict]:
    """The ConfigMaps the site overlays' configMapGenerator makes (as kustomize would, unhashed)."""
    maps = []
    for site in SITES:
        for generator in yaml.safe_load((site / "kustomization.yaml").read_text()).get("configMapGenerator", []):
            data = {Path(f).name: (site / f).read_text() for f in generator["files"]}
            maps.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": generator["name"] + "-" + site.name}, "data": data})
    return maps


def validate_core(docs: list[dict]) -> list[str]:
    """kubernetes-validate (strict: unknown fields are errors) at the oldest and newest supported
    Kubernetes; returns the kinds it validated."""
    kv = test_dependency("kubernetes_validate", "kubernetes-validate")
    from kubernetes_validate import utils

    versions = (K8S_OLDEST, utils.latest_version())
    validated = []
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except utils.ValidationError as exc:
                path = "/".join(map(str, exc.path))
                raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {path}: {exc.message}")
        validated.append(doc["kind"])
    return validated


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    docs = [doc for path in manifest_files() for doc in load_all(path)] + generated_configmaps()
    kinds = validate_core(docs)
    assert {"Namespace", "Deployment", "Service", "ConfigMap", "Secret"} <= set(kinds)


def test_kubernetes_validate_rejects_a_misspelt_field():
    """The strict schemas do catch mistakes (so the test above means something)."""
    deployment = copy.deepcopy(load_all(K8S / "exporter" / "deployment.yaml")[0])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(AssertionError, match="readinessprobe"):
        validate_core([deployment])


def test_kustomizations_reference_files_that_exist():
    for kustomization in kustomizations():
        spec = yaml.safe_load(kustomization.read_text())
        where = kustomization.parent
        entries = spec.get("resources", []) + spec.get("components", [])
        entries += [f for g in spec.get("configMapGenerator", []) for f in g.get("files", [])]
        for entry in entries:
            path = where / entry
            assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{kustomization}: {entry} not found"
    top = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {f"sites/{s.name}" for s in SITES} <= set(top["resources"]), "every site is deployed"


def check_exporter_wiring(docs: list[dict], rendered: bool) -> None:
    """The objects fit together: Services select their site's pods on a port the container opens,
    the ServiceMonitor finds every Service and names the job the rules select, probes hit the
    exporter's health endpoints, pods are locked down, the config lands where the image reads it."""
    kinds: dict[str, list[dict]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    deployments, services = kinds["Deployment"], kinds["Service"]
    (monitor,) = kinds["ServiceMonitor"]
    config_maps = {c["metadata"]["name"] for c in kinds.get("ConfigMap", [])}
    for deployment in deployments:
        spec = deployment["spec"]
        pod = spec["template"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        security = pod["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": 9817}
        assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
        args = container["args"]
        config_path = args[args.index("--config") + 1]
        assert config_path == container_config_path()
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == config_path)
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
        if rendered:
            assert volume["configMap"]["name"] in config_maps, "the config ConfigMap is generated"
        # exactly one Service selects this site's pods, on the container's named port
        selecting = [s for s in services if s["spec"]["selector"].items() <= pod["metadata"]["labels"].items()]
        assert len(selecting) == 1, f"{deployment['metadata']['name']}: {len(selecting)} Services select it"
        assert all(p["targetPort"] in ports for p in selecting[0]["spec"]["ports"])
    spec = monitor["spec"]
    port_names = [e["port"] for e in spec["endpoints"]]
    for service in services:
        labels = service["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), "the ServiceMonitor selects every site"
        assert labels[spec["jobLabel"]] == JOB, f"job label would be {labels[spec['jobLabel']]!r}, rules select {JOB!r}"
        assert set(port_names) <= {p["name"] for p in service["spec"]["ports"]}
        if rendered:
            assert set(spec["targetLabels"]) <= set(labels), "every Service carries the target labels (site)"
    assert all(e["path"] == "/metrics" for e in spec["endpoints"])


def test_kubernetes_objects_fit_together():
    """On the files as written (no kustomize needed): the base, the shared monitoring objects and
    each site overlay's config, suffix and `site` label."""
    docs = [doc for part in ("exporter", "monitoring") for path in manifest_files()
            if part in path.relative_to(K8S).parts for doc in load_all(path)]
    check_exporter_wiring(docs, rendered=False)
    volumes = load_all(K8S / "exporter" / "deployment.yaml")[0]["spec"]["template"]["spec"]["volumes"]
    config_volume = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    monitor = load_all(K8S / "monitoring" / "servicemonitor.yaml")[0]
    suffixes = set()
    for site in SITES:
        overlay = yaml.safe_load((site / "kustomization.yaml").read_text())
        assert [g["name"] for g in overlay["configMapGenerator"]] == [config_volume]
        (label,) = overlay["labels"]
        assert label["pairs"]["site"] == site.name and label["includeSelectors"] is True
        assert set(monitor["spec"]["targetLabels"]) <= set(label["pairs"])
        suffixes.add(overlay["nameSuffix"])
    assert len(suffixes) == len(SITES)


class Yaml12Loader(yaml.SafeLoader):
    """kustomize writes YAML 1.2, where a plain ``=`` (an AlertmanagerConfig matchType) is the
    string "=", not YAML 1.1's value key that PyYAML cannot construct."""


Yaml12Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)


def kustomize(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:  # not in Debian's or PyPI's packages, so CI may lack it: skip, never fail
        pytest.skip("kubectl not found: `kubectl kustomize` renders the overlays where it is installed")
    result = run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.load_all(result.stdout, Loader=Yaml12Loader) if doc]


def test_kustomize_renders_one_exporter_per_site():
    docs = kustomize(K8S)
    validate_core(docs)
    check_exporter_wiring(docs, rendered=True)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"qtelemetry"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert sorted(d["metadata"]["labels"]["site"] for d in deployments) == [s.name for s in SITES]
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    (amcfg,) = [d for d in docs if d["kind"] == "AlertmanagerConfig"]
    assert amcfg["spec"] == load_all(K8S / "monitoring" / "alertmanagerconfig.yaml")[0]["spec"]


def test_kustomize_renders_the_tls_and_basic_auth_component(tmp_path):
    tree = tmp_path / "kubernetes"
    shutil.copytree(K8S, tree)
    top = yaml.safe_load((tree / "kustomization.yaml").read_text())
    top["components"] = [TLS_COMPONENT.relative_to(K8S).as_posix()]
    (tree / "kustomization.yaml").write_text(yaml.safe_dump(top))
    docs = kustomize(tree)
    validate_core(docs)
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["tcpSocket"] == {"port": "http"} and "httpGet" not in container[probe]
        assert any(v.get("secret", {}).get("secretName") == "qtelemetry-web-tls" for v in pod["volumes"])
        assert any(m["mountPath"] == "/etc/qtelemetry/tls" for m in container["volumeMounts"])
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and {"tlsConfig", "basicAuth"} <= set(endpoint)


def test_kubernetes_sd_example_passes_promtool_and_names_the_job_the_rules_select(tmp_path):
    promtool = debian_tool("promtool", "prometheus")
    path = K8S / "examples" / "prometheus-kubernetes-sd.yaml"
    config = yaml.safe_load(path.read_text())
    assert [j["job_name"] for j in config["scrape_configs"]] == [JOB]
    result = run([promtool, "check", "config", str(path)])
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes service discovery: check the rest of the
        # job (relabelling included) with the discovery swapped for a static target.
        (job,) = config["scrape_configs"]
        assert [sd["role"] for sd in job.pop("kubernetes_sd_configs")] == ["endpoints"]
        job["static_configs"] = [{"targets": ["placeholder:9817"]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        result = run([promtool, "check", "config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- plain hosts --------------------------------------------------------------------------------

def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not found")
    unit = SYSTEMD_UNIT.read_text()
    exec_lines = re.findall(r"^ExecStart(?:Pre)?=(\S+) (.*)$", unit, re.M)
    assert [args for _, args in exec_lines] == [f"run --config {container_config_path()}"]
    # verify checks that the binaries exist: point them at a stand-in
    stand_in = tmp_path / "qtelemetry"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    local = tmp_path / SYSTEMD_UNIT.name
    local.write_text(unit.replace(exec_lines[0][0], str(stand_in)))
    result = run([analyze, "verify", str(local)])
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_sharded_statefulset_runs_one_shard_per_pod_with_the_exporters_pod(build_module):
    """Each pod's ordinal (the pod-index label) is its shard of `replicas`; the pod is the base one."""
    from qtelemetry.sharding import parse_shard

    service, statefulset, analyser_service, analyser = load_all(build_module.SHARDED_OUT)
    assert statefulset["kind"] == "StatefulSet" and service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    replicas = statefulset["spec"]["replicas"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    (env,) = container["env"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    shard = container["args"][container["args"].index("--shard") + 1]
    assert shard == f"$({env['name']})/{replicas}"
    assert [parse_shard(shard.replace(f"$({env['name']})", str(i))).index for i in range(replicas)] == list(range(replicas))
    base = load_all(K8S / "exporter" / "deployment.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {k: v for k, v in container.items() if k not in ("env", "args")} == {
        k: v for k, v in base.items() if k != "args"}
    assert container["args"][:len(base["args"])] == base["args"]
    monitor = load_all(K8S / "monitoring" / "servicemonitor.yaml")[0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # beside the shards, the network view of all of them: `qtelemetry network`, scraped the same way
    (network,) = analyser["spec"]["template"]["spec"]["containers"]
    assert network["args"][0] == "network" and "--prometheus" in network["args"]
    assert {k: v for k, v in network.items() if k not in ("args", "ports")} == {
        k: v for k, v in base.items() if k not in ("args", "ports")}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= analyser_service["metadata"]["labels"].items()
    assert analyser_service["spec"]["selector"] == analyser["spec"]["selector"]["matchLabels"]
