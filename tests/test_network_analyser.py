"""`qtelemetry network` against a real Prometheus, one that is gone, and one that answers garbage.

The analyser reads the links from a real Prometheus scraping a real exporter (which has no
network section of its own): its qnet_ figures match the engine run on the rates Prometheus
holds. Then Prometheus stops: qnet_analyser_up drops to 0, the unreachable counter rises, and
no capacity is shown any more. A server that answers garbage counts as bad_response. The
process never exits on any of it.
"""

from __future__ import annotations

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import QtelemetryProcess, parse_exposition, value
from realstack import poll

from qtelemetry.cli import main
from qtelemetry.exporter.network_metrics import RELAY_METRICS
from qtelemetry.monitoring.catalogue import METRICS

LINKS = """links:
  - {name: ab, site_a: a, site_b: b, driver: {type: simulated-bb84, fiber_length_km: 10, seed: 1}}
  - {name: bc, site_a: b, site_b: c, driver: {type: simulated-bb84, fiber_length_km: 30, seed: 2}}
  - {name: ac, site_a: a, site_b: c, driver: {type: simulated-bb84, fiber_length_km: 60, seed: 3}}
"""
NETWORK = """network:
  analysis_interval_seconds: 0.5
  demands: [{name: ac, from: a, to: c, bits_per_second: 1000}]
"""


class Analyser(QtelemetryProcess):
    def __init__(self, prometheus_url: str, config: Path, log_path: Path, *extra: str):
        super().__init__(["network", "--prometheus", prometheus_url, "--config", str(config), "--listen", "127.0.0.1:0",
                          "--timeout", "2", *extra], log_path,
                         lambda log: (m := __import__("re").search(r"url=(http\S+/metrics)", log)) and m.group(1))
        self.url = self.ready

    def scrape(self) -> dict[str, list]:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return parse_exposition(response.read().decode())


class Garbage(BaseHTTPRequestHandler):
    """Answers every request with something that is not a Prometheus API answer."""

    bodies = [b"<html>proxy error</html>", b"[1, 2, 3]", b'{"status": "success", "data": {"resultType": "vector", '
              b'"result": [{"metric": {"link": "x"}, "value": "oops"}]}}']

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.bodies[self.server.calls % len(self.bodies)]  # type: ignore[attr-defined]
        self.server.calls += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_bad_analyser_configs_are_field_named_errors(tmp_path, capsys):
    path = tmp_path / "fleet.yaml"
    path.write_text(LINKS)
    assert main(["network", "--prometheus", "http://127.0.0.1:1", "--config", str(path)]) == 2
    path.write_text("network:\n  demands: [{name: x, from: a, to: a, bits_per_second: 1}]\n")
    assert main(["network", "--prometheus", "http://127.0.0.1:1", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "field=network reason=\"the config has no network section" in err
    assert "field=network.demands[0].to" in err and "Traceback" not in err


def test_analyser_follows_prometheus_and_drops_what_it_cannot_read(start_exporter, prometheus_stack, tmp_path):
    exporter = start_exporter(LINKS)
    stack = prometheus_stack(exporter.url, alerting=False)
    config = tmp_path / "network.yaml"
    config.write_text(NETWORK)
    analyser = Analyser(stack.prometheus.url, config, tmp_path / "analyser.log")
    try:
        def analysed() -> dict | None:
            samples = analyser.scrape()
            return samples if "qnet_demand_capacity_bits_per_second" in samples and all(
                value(samples, "qnet_link_usable_key_rate_bits_per_second", link=n) > 0 for n in ("ab", "bc", "ac")) else None

        samples = poll(analysed, 60, "the analyser to show the demand's capacity")
        assert value(samples, "qnet_analyser_up") == 1
        ab, bc, ac = (value(samples, "qnet_link_usable_key_rate_bits_per_second", link=n) for n in ("ab", "bc", "ac"))
        assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="multipath") == \
            pytest.approx(ac + min(ab, bc), rel=1e-9)
        assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="single_path") == \
            pytest.approx(max(ac, min(ab, bc)), rel=1e-9)
        assert value(samples, "qnet_demand_disjoint_paths", demand="ac") == 2
        rates = {s["metric"]["link"]: float(s["value"][1]) for s in stack.query("qkd_secret_key_rate_bits_per_second")}
        assert ac == pytest.approx(rates["ac"], rel=0.2)  # what Prometheus holds, not something else

        stack.prometheus.stop()
        gone = poll(lambda: (s := analyser.scrape()) and value(s, "qnet_analyser_up") == 0 and s, 30,
                    "the analyser to notice Prometheus is gone")
        assert "qnet_demand_capacity_bits_per_second" not in gone, "an old capacity shown as current"
        assert value(gone, "qnet_analyser_errors_total", reason="unreachable") >= 1
        assert analyser.proc.poll() is None
    finally:
        analyser.stop()


def test_analyser_counts_garbage_answers(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    server.calls = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "network.yaml"
    config.write_text(NETWORK)
    analyser = Analyser(f"http://127.0.0.1:{server.server_address[1]}", config, tmp_path / "analyser.log")
    try:
        samples = poll(lambda: (s := analyser.scrape()) and value(s, "qnet_analyser_errors_total", reason="bad_response")
                       >= 3 and s, 30, "three garbage answers counted")
        assert value(samples, "qnet_analyser_up") == 0 and "qnet_demand_capacity_bits_per_second" not in samples
        assert analyser.proc.poll() is None and "Traceback" not in analyser.log()
    finally:
        analyser.stop()
        server.shutdown()


# --- a sharded fleet: two shards, leaf Prometheus servers, a global store, one analyser ---------

FLEET = """exporter: {window_seconds: 0.5, sliding_windows: 10}
links:
""" + "".join(f"""  - {{name: {name}, site_a: {a}, site_b: {b}, driver: {{type: simulated-bb84, fiber_length_km: {km}, seed: {i}}}}}
""" for i, (name, (a, b, km)) in enumerate({"ab": ("a", "b", 10), "bd": ("b", "d", 40), "ac": ("a", "c", 20),
                                             "cd": ("c", "d", 30), "de": ("d", "e", 50)}.items())) + """network:
  analysis_interval_seconds: 1
  sites: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e, trusted: false}]
  demands:
    - {name: ad, from: a, to: d, bits_per_second: 3000}
    - {name: ae, from: a, to: e, bits_per_second: 1000}
"""


def figures(samples: dict) -> dict:
    """The qnet_ figures of a scrape: exact ones as they are, capacities to compare within noise;
    not the simulated key relay's ledger, which only an exporter simulating the links keeps."""
    relay = {m.sample_name for m in METRICS if m.name in RELAY_METRICS}
    out: dict = {}
    for name, rows in samples.items():
        if not name.startswith("qnet_") or name.startswith(("qnet_analys", "qnet_site_l")) or name in relay:
            continue
        for s in rows:
            key = (name, tuple(sorted(s.labels.items())))
            out[key] = s.value
    return out


def same_view(analyser: dict, reference: dict) -> bool:
    """The analyser shows the series the reference exporter shows, with the same integers (paths,
    hops, failure impacts, min cuts, the failure named) and rates within 15 % (two processes
    estimating the same seeded links)."""
    if analyser.keys() != reference.keys():
        return False
    for key, want in reference.items():
        got = analyser[key]
        if "bits_per_second" in key[0] or "seconds" in key[0]:
            if not got == pytest.approx(want, rel=0.15):
                return False
        elif got != want:
            return False
    return True


def test_a_sharded_fleet_gets_the_network_view_of_one_exporter(tmp_path, request):
    from conftest import RunningExporter
    from realstack import PROMETHEUS_BIN, Prometheus, VictoriaMetrics, free_port, register_log_plugin, require_binaries

    from qtelemetry.sharding import shard_of

    register_log_plugin(request.config)
    require_binaries(PROMETHEUS_BIN)
    assert {shard_of(n, 2) for n in ("ab", "bd", "ac", "cd", "de")} == {0, 1}, "both shards must get links"
    config = tmp_path / "fleet.yaml"
    config.write_text(FLEET)
    running: list = []
    try:
        reference = RunningExporter(["run", "--config", str(config), "--listen", "127.0.0.1:0"], tmp_path / "one.log")
        running.append(reference)
        ports = [free_port(), free_port()]
        running += [RunningExporter(["run", "--config", str(config), "--listen", f"127.0.0.1:{ports[i]}",
                                     "--shard", f"{i}/2"], tmp_path / f"shard{i}.log") for i in range(2)]
        (tmp_path / "global").mkdir()
        world = Prometheus(tmp_path / "global", [], remote_write_receiver=True)
        running.append(world)
        (tmp_path / "vm").mkdir()
        victoria = VictoriaMetrics(tmp_path / "vm")
        running.append(victoria)
        for i in range(2):
            (tmp_path / f"leaf{i}").mkdir()
            running.append(Prometheus(tmp_path / f"leaf{i}", [f"127.0.0.1:{ports[i]}"],
                                      external_labels={"cluster": "site-a", "prometheus": f"leaf-{i}"},
                                      remote_write=[world.url + "/api/v1/write", victoria.write_url]))
        analysers = {store: Analyser(url, config, tmp_path / f"analyser-{store}.log")
                     for store, url in (("prometheus", world.url), ("victoria-metrics", victoria.url))}
        running += analysers.values()
        for store, analyser in analysers.items():
            last: list = [None, None]

            def agree() -> bool:
                last[:] = [figures(analyser.scrape()), figures(reference.scrape())]
                return bool(last[1]) and same_view(*last)

            poll(agree, 90, f"the analyser on {store} to show the one exporter's network view",
                 describe=lambda: f"analyser {sorted(last[0].items())}\nreference {sorted(last[1].items())}")
            samples = analyser.scrape()
            assert value(samples, "qnet_analyser_up") == 1
            assert value(samples, "qnet_demand_disjoint_paths", demand="ad") == 2
    finally:
        for part in reversed(running):
            part.stop()
