"""`qtelemetry network` against what a fleet's Prometheus can really hold, and bad options.

A real Prometheus scrapes a "shard" that serves whatever exposition a test sets: a link that two
shards name between different sites, names no qtelemetry exporter would give (quotes, newlines,
U+2028), and a Prometheus that goes away behind a proxy and comes back. The analyser must leave
out (and count) what it cannot trust rather than invent capacity or repeat raw control
characters, and must never show the last analysis as current once it cannot read.
"""

from __future__ import annotations

import base64
import signal
import urllib.error
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import parse_exposition, value
from hostile import HostileServer, Reply
from realstack import PROMETHEUS_BIN, Prometheus, poll, register_log_plugin, require_binaries
from test_network_analyser import LINKS
from test_network_analyser import Analyser as AnalyserProcess

from qtelemetry.analyser import Analyser, AnalyserExposition, load_fleet
from qtelemetry.cli import build_parser, main
from qtelemetry.report.prometheus import HttpConfig
from qtelemetry.report.prometheus import Prometheus as Client


class Shard:
    """A scrape target serving ``text`` (set by the test) as its exposition."""

    def __init__(self) -> None:
        self.text = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = outer.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, request):
    """(shard, Prometheus scraping it every second)."""
    register_log_plugin(request.config)
    require_binaries(PROMETHEUS_BIN)
    shard = Shard()
    prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"), [shard.address])
    yield shard, prometheus
    prometheus.stop()
    shard.server.shutdown()


def serve(fleet, links: dict[tuple[str, str, str], float], old: dict[tuple[str, str, str], float] | None = None) -> None:
    """Let the shard expose ``links`` ((name, site_a, site_b) -> key rate), up, and ``old``
    qlink_info series (-> seconds ago, an explicit timestamp: Prometheus keeps them, unmarked
    stale, for its lookback); wait until Prometheus holds exactly these."""
    shard, prometheus = fleet
    now = time.time()
    shard.text = "".join(
        f'qlink_info{{link="{n}",site_a="{a}",site_b="{b}"}} 1\nqlink_up{{link="{n}"}} 1\n'
        f'qkd_secret_key_rate_bits_per_second{{link="{n}"}} {rate}\n'
        for (n, a, b), rate in ((tuple(escape(v) for v in k), r) for k, r in links.items())) + "".join(
        f'qlink_info{{link="{n}",site_a="{a}",site_b="{b}"}} 1 {int((now - ago) * 1000)}\n'
        for (n, a, b), ago in (old or {}).items())
    def held(query: str) -> list[tuple[str, str, str]]:
        return sorted((s["metric"]["link"], s["metric"]["site_a"], s["metric"]["site_b"]) for s in prometheus.query(query))

    # an old series lingers, unmarked stale, after the test that served it: only fresh ones must match
    poll(lambda: held("timestamp(qlink_info) > time() - 30") == sorted(links) and set(old or {}) <= set(held("qlink_info")),
         30, "Prometheus to hold the shard's links", describe=lambda: f"{held('qlink_info')} != {sorted(links)} + {old}")


def escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@pytest.fixture
def analyser_of(tmp_path):
    """Factory: an Analyser of ``network`` (config text) reading ``url``, and its exposition; the
    clients are closed at teardown."""
    clients: list[Client] = []

    def make(url: str, network: str, max_data_age: float = 60) -> tuple[Analyser, AnalyserExposition]:
        path = tmp_path / "network.yaml"
        path.write_text(network)
        clients.append(Client(url, HttpConfig(timeout_s=5)))
        analyser = Analyser(clients[-1], load_fleet(str(path))[0], max_data_age)
        return analyser, AnalyserExposition(lambda: analyser.state)

    yield make
    for client in clients:
        client.close()


def scrape(exposition: AnalyserExposition) -> tuple[str, dict]:
    text = exposition.parts()[0].decode()
    return text, parse_exposition(text)


NETWORK = "network:\n  demands: [{name: ac, from: a, to: c, bits_per_second: 10}]\n"


def test_links_no_exporter_would_name_are_left_out_and_counted(fleet, analyser_of):
    """bc named between b-c and a-c (two shards disagreeing) would add phantom capacity on a-c and
    repeat its series; a name with a quote, a newline and U+2028 would reach the labels raw."""
    hostile = 'x"y\nz\u2028'
    serve(fleet, {("ab", "a", "b"): 100, ("bc", "b", "c"): 50, ("bc", "a", "c"): 50, ("ac", "a", "c"): 30,
                  (hostile, "a", "c"): 1000, ("ad", "a", 'd"\n'): 1000, ("l" * 64, "a", "c"): 1000})
    analyser, exposition = analyser_of(fleet[1].url, NETWORK)
    state = analyser.run_once()
    text, samples = scrape(exposition)
    assert state.up
    # only ab and ac are trustworthy: a-c gets 30 directly, nothing via b (bc's sites are not known)
    assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="multipath") == 30
    assert sorted(s.labels["link"] for s in samples["qnet_link_usable_key_rate_bits_per_second"]) == ["ab", "ac"]
    assert value(samples, "qnet_analyser_errors_total", reason="conflicting_sites") == 1
    assert value(samples, "qnet_analyser_errors_total", reason="invalid_name") == 3
    assert "\u2028" not in text and "\\n" not in text and 'd\\"' not in text
    analyser.run_once()  # the same links again: counted once, not once per read
    assert scrape(exposition)[1]["qnet_analyser_errors_total"] == samples["qnet_analyser_errors_total"]


def test_a_link_whose_old_sites_linger_in_the_store_takes_its_new_ones(fleet, analyser_of):
    """A series without staleness markers (explicit timestamps; federation; some stores) keeps a
    rewired link's old qlink_info for the lookback (5 min): older than --max-data-age, it is not a
    conflict, and the link keeps its new sites."""
    serve(fleet, {("ab", "a", "b"): 100, ("rewired", "b", "c"): 50}, old={("rewired", "a", "c"): 180})
    analyser, exposition = analyser_of(fleet[1].url, NETWORK, max_data_age=60)
    state = analyser.run_once()
    samples = scrape(exposition)[1]
    assert state.up and value(samples, "qnet_analyser_errors_total", reason="conflicting_sites") == 0
    assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="multipath") == 50
    assert value(samples, "qnet_link_usable_key_rate_bits_per_second", link="rewired") == 50


def test_a_prometheus_that_goes_away_never_leaves_the_analysis_current(fleet, analyser_of):
    """Behind a proxy that turns into an HTML error page and back: the analysis' age keeps rising
    (0 would say it is fresh), its duration histogram keeps its counts (a counter never goes back),
    and the analysis returns with Prometheus."""
    serve(fleet, {("ab", "a", "b"): 100, ("bc", "b", "c"): 50})
    down = threading.Event()

    def proxy(path: str, form: dict[str, str]) -> Reply:
        if down.is_set():
            return Reply(status=502, chunks=[b"<html><body>Bad Gateway</body></html>"], content_type="text/html")
        request = urllib.request.Request(fleet[1].url + path, data=urllib.parse.urlencode(form).encode())
        with urllib.request.urlopen(request, timeout=5) as answer:
            return Reply(chunks=[answer.read()])

    server = HostileServer(proxy)
    try:
        analyser, exposition = analyser_of(server.url, NETWORK)
        analyser.run_once(now=1000.0)
        analyser.run_once(now=1010.0)
        down.set()
        analyser.run_once(now=1020.0)
        samples = parse_exposition(exposition.parts(now=1030.0)[0].decode())
        assert value(samples, "qnet_analyser_up") == 0
        assert "qnet_demand_capacity_bits_per_second" not in samples
        assert value(samples, "qnet_analysis_age_seconds") == 20, "the last analysis was of 1010"
        assert value(samples, "qnet_analysis_duration_seconds_count") == 2
        assert value(samples, "qnet_analyser_errors_total", reason="bad_response") == 1
        down.clear()
        analyser.run_once(now=1040.0)
        samples = parse_exposition(exposition.parts(now=1040.0)[0].decode())
        assert value(samples, "qnet_analyser_up") == 1 and value(samples, "qnet_analysis_age_seconds") == 0
        assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="multipath") == 50
        assert value(samples, "qnet_analysis_duration_seconds_count") == 3
    finally:
        server.stop()


@pytest.mark.parametrize("option, bad", [
    ("--max-data-age", "-1"), ("--max-data-age", "0"), ("--max-data-age", "nan"), ("--max-data-age", "inf"),
    ("--timeout", "0"), ("--timeout", "nan"), ("--timeout", "-5"),
    ("--prometheus", "prometheus:9090"), ("--prometheus", "ftp://prometheus:9090"), ("--prometheus", "http://"),
    ("--prometheus", "htp://user:secret@prometheus:9090")])
def test_bad_options_are_named_with_exit_2(option, bad, tmp_path, capsys):
    """Each used to start: -1 or nan counted every link down, a timeout of 0 failed every read as
    'unreachable', a URL without http(s) never reached anything; all said so only in the logs.
    A bad URL is not repeated: it may hold credentials."""
    path = tmp_path / "network.yaml"
    path.write_text(NETWORK)
    args = {"--prometheus": "http://127.0.0.1:1", "--config": str(path), "--listen": "127.0.0.1:0", option: bad}
    with pytest.raises(SystemExit) as exit_:  # parsing only: a command line that passes would serve forever
        build_parser().parse_args(["network", *(part for pair in args.items() for part in pair)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err
    assert (repr(bad) in err) != (option == "--prometheus") and "secret" not in err


def test_an_exporter_config_without_links_is_named(tmp_path, capsys):
    """A fleet config with its exporter section but no links: the field missing is named, not
    'this command reads this command's config'."""
    path = tmp_path / "fleet.yaml"
    path.write_text("exporter: {window_seconds: 1}\n" + NETWORK)
    assert main(["network", "--prometheus", "http://127.0.0.1:1", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "field=links" in err and "this command's config" not in err


def test_sighup_reloads_the_network_section(fleet, tmp_path):
    """SIGHUP (systemd's ExecReload, as for `qtelemetry run`) used to kill the analyser silently;
    it re-reads the config: a new demand appears, a bad config is refused and the old one kept."""
    serve(fleet, {("ab", "a", "b"): 100, ("bc", "b", "c"): 50})
    config = tmp_path / "network.yaml"
    config.write_text("network:\n  analysis_interval_seconds: 0.5\n  demands:\n"
                      "    - {name: ac, from: a, to: c, bits_per_second: 10}\n")
    process = AnalyserProcess(fleet[1].url, config, tmp_path / "analyser.log")
    try:
        poll(lambda: "qnet_demand_capacity_bits_per_second" in process.scrape(), 30, "a first analysis")
        config.write_text(config.read_text() + "    - {name: ab, from: a, to: b, bits_per_second: 10}\n")
        process.proc.send_signal(signal.SIGHUP)
        samples = poll(lambda: (s := process.scrape()) and len(s.get("qnet_demand_capacity_bits_per_second", [])) == 4
                       and s, 30, "the reloaded demand's capacity")
        assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ab", routing="multipath") == 100
        config.write_text("network:\n  demands: [{name: x, from: a, to: a, bits_per_second: 1}]\n")
        process.proc.send_signal(signal.SIGHUP)
        poll(lambda: "field=network.demands[0].to" in process.log(), 30, "the bad config refused")
        assert process.proc.poll() is None
        assert len(process.scrape()["qnet_demand_capacity_bits_per_second"]) == 4
        assert "Traceback" not in process.log()
    finally:
        process.stop()
    assert process.proc.returncode == 0 and "Unclosed" not in process.log(), "a clean shutdown"


def test_the_fleet_configs_web_section_protects_the_analyser_too(tmp_path):
    """The shards' exporter.web (basic auth here) read from the same file protects the analyser's
    /metrics as it does theirs (one scraper, one ServiceMonitor, reaches them all); it was served
    to anyone."""
    import bcrypt

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    config = tmp_path / "fleet.yaml"
    config.write_text(f"exporter: {{web: {{basic_auth_users: {{prometheus: '{hashed}'}}}}}}\n" + LINKS + NETWORK)
    process = AnalyserProcess("http://127.0.0.1:1", config, tmp_path / "analyser.log")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(process.url, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(process.url, headers={
            "Authorization": "Basic " + base64.b64encode(b"prometheus:pw").decode()})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert "qnet_analyser_up" in parse_exposition(answer.read().decode())
        # a SIGHUP applies a changed password at once, as for `qtelemetry run` (it kept the old one)
        config.write_text(config.read_text().replace(hashed, bcrypt.hashpw(b"new", bcrypt.gensalt(4)).decode()))
        process.proc.send_signal(signal.SIGHUP)
        poll(lambda: "config reloaded" in process.log(), 30, "the reload")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
    finally:
        process.stop()
