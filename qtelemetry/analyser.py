"""``qtelemetry network``: the network view of a whole fleet, from a Prometheus HTTP API.

A sharded fleet has no exporter that sees every link, and max-flow cannot be written in PromQL;
this process reads what the (global) Prometheus, or any store with its query API (Thanos, Mimir,
VictoriaMetrics), holds about the links every interval: ``qlink_info`` (the topology),
``qlink_up``, the key rates, key stores and repeaterless bounds; runs the same analysis as the
exporter and serves the same ``qnet_`` metrics, plus its own ``qnet_analyser_up`` and
``qnet_analyser_errors_total{reason}``.

A read that fails (Prometheus down, an error answer, garbage) never crashes it and never leaves
an old capacity on show: the analysis is dropped (its figures disappear), up goes to 0 and the
reason is counted. A link whose newest sample is older than ``--max-data-age`` counts as down.
"""

from __future__ import annotations

import argparse
import logging
import queue
import re
import signal
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field, replace
from gzip import compress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qtelemetry.configfile import load_yaml, printable, read_text
from qtelemetry.drivers.base import StrictModel
from qtelemetry.errors import ConfigError
from qtelemetry.estimation.network import Topology
from qtelemetry.networkconfig import LABEL_VALUE, NetworkConfig, SiteConfig
from qtelemetry.runtime.network import Durations, LinkInputs, NetworkSnapshot, build_topology, timed_analysis

if TYPE_CHECKING:
    from qtelemetry.config import WebConfig

log = logging.getLogger(__name__)

#: Why a read of the Prometheus API failed, links were left out or the analysis failed (the ``reason``
#: label of qnet_analyser_errors_total).
REASONS = ("unreachable", "bad_response", "unknown_site", "conflicting_sites", "invalid_name", "analysis_failed")
#: A link or site name as every qtelemetry exporter gives it (config.LABEL_VALUE).
_NAME = re.compile(LABEL_VALUE)


class NetworkFile(StrictModel):
    """A config file that holds only the network section (the links come from Prometheus)."""

    network: NetworkConfig


def load_fleet(path: str) -> "tuple[NetworkConfig, WebConfig]":
    """The ``network:`` section of ``path`` and how /metrics is protected: a whole exporter config
    (the fleet's, read by every shard: its ``exporter.web`` protects the analyser as it does the
    shards, for the scraper that reaches them all alike) or a file with that section only (no
    protection but ``--web.config.file``); ConfigError naming the field otherwise."""
    from qtelemetry.config import WebConfig, load_config, validate_yaml

    text = read_text(path)
    data = load_yaml(text, path)
    if isinstance(data, dict) and data.keys() & {"exporter", "links"}:
        config = load_config(path)
        if config.network is None:
            raise ConfigError(path, [("network", "the config has no network section: nothing to analyse")])
        return config.network, config.exporter.web
    return validate_yaml(NetworkFile, text, path, config_dir=Path(path).absolute().parent).network, WebConfig()


@dataclass(frozen=True)
class LinkView:
    name: str
    site_a: str
    site_b: str


@dataclass(frozen=True)
class AnalyserState:
    """What the analyser serves: the latest analysis (None before the first) and its own health."""

    network: NetworkSnapshot | None
    up: bool = False
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


class Analyser:
    """Reads the links from Prometheus, analyses them, publishes an AnalyserState."""

    def __init__(self, prometheus: Any, network: NetworkConfig, max_data_age: float):
        self._prometheus, self.network, self._max_age = prometheus, network, max_data_age
        self._durations = Durations()
        self._errors: Counter[str] = Counter(dict.fromkeys(REASONS, 0))
        self._topology: tuple[frozenset[tuple[LinkView, bool]], NetworkConfig, Topology] | None = None
        self.state = AnalyserState(None)

    def run_once(self, now: float | None = None) -> AnalyserState:
        from qtelemetry.report.prometheus import PrometheusError, Unreachable

        now = time.time() if now is None else now
        try:
            topology, inputs = self._read()
        except PrometheusError as exc:
            reason = "unreachable" if isinstance(exc, Unreachable) else "bad_response"
            log.warning("cannot read the links from Prometheus", extra={"reason": reason, "error": str(exc)})
            return self.failed(reason)
        network = timed_analysis(topology, inputs, self._durations, now)
        self.state = AnalyserState(network, True, dict(self._errors))
        return self.state

    def failed(self, reason: str) -> AnalyserState:
        """Count ``reason`` and drop the figures: the age of the last analysis keeps rising and its
        histogram keeps its counts, but no capacity stays on show as if current."""
        self._errors[reason] += 1
        last = self.state.network
        self.state = AnalyserState(None if last is None else replace(last, analysis=None, rate_bps=None),
                                   False, dict(self._errors))
        return self.state

    def _vector(self, query: str) -> dict[str, float]:
        """``max by (link)`` of ``query``: link -> value."""
        from qtelemetry.report.prometheus import PrometheusError

        out = {}
        for labels, value in self._prometheus.instant(f"max by (link) ({query})"):
            link = labels.get("link")
            if not isinstance(link, str):
                raise PrometheusError(f"a series of {query!r} has no link label")
            out[link] = value
        return out

    def _read(self) -> tuple[Topology, LinkInputs]:
        from qtelemetry.report.prometheus import PrometheusError

        info = self._prometheus.instant("min by (link, site_a, site_b) (time() - timestamp(qlink_info))")
        try:
            seen = frozenset((LinkView(l["link"], l["site_a"], l["site_b"]), age < self._max_age) for l, age in info)
        except KeyError:
            raise PrometheusError("qlink_info series without link, site_a or site_b") from None
        topology = self._topology_of(seen)
        names = topology.links
        fresh = self._vector(f"time() - timestamp(qlink_up) < bool {self._max_age:g}")
        up = self._vector("qlink_up")
        rate = self._vector("qkd_secret_key_rate_bits_per_second")
        rate.update(self._vector("qkd_effective_secret_key_rate_bits_per_second"))  # ETSI 015 eskr first
        buffer = self._vector("qkd_key_buffer_bits")
        bound = self._vector("qkd_repeaterless_bound_bits_per_second")
        column = lambda values: np.array([values.get(n, np.nan) for n in names], float)  # noqa: E731
        live = (column(up) == 1) & (column(fresh) == 1)
        return topology, LinkInputs(np.where(live, column(rate), 0.0), np.where(live, column(buffer), np.nan),
                                    column(bound))

    def _topology_of(self, seen: frozenset[tuple[LinkView, bool]]) -> Topology:
        """The topology of the qlink_info series ``seen`` (each with whether it is fresh), rebuilt
        only when they change. Left out, counted by reason and logged once per change: names no
        qtelemetry exporter gives (they would reach the labels), a link named between two pairs of
        sites by fresh series (two shards disagree: counting it twice would invent capacity; a
        stale pair beside a fresh one is a rewired link's past), sites the config does not list."""
        config = network = self.network  # read once: a reload may replace it meanwhile
        if self._topology is not None and self._topology[0] == seen and self._topology[1] is config:
            return self._topology[2]
        named = {(view, fresh) for view, fresh in seen if all(map(_NAME.fullmatch, (view.name, view.site_a, view.site_b)))}
        pairs: dict[str, dict[LinkView, bool]] = {}
        for view, fresh in named:
            pairs.setdefault(view.name, {})[view] = fresh
        current = {name: [v for v, fresh in found.items() if fresh] or list(found) for name, found in pairs.items()}
        listed = None if network.sites is None else {s.name for s in network.sites}
        links = sorted((views[0] for views in current.values() if len(views) == 1), key=lambda v: v.name)
        known = [l for l in links if listed is None or {l.site_a, l.site_b} <= listed]
        left_out = {"invalid_name": sorted(printable(v.name, 80) for v, _ in seen - named),
                    "conflicting_sites": sorted(name for name, views in current.items() if len(views) > 1),
                    "unknown_site": [l.name for l in links if l not in known]}
        for reason, names in left_out.items():
            if names:
                self._errors[reason] += len(names)
                log.warning("links left out of the analysis", extra={"reason": reason, "links": ",".join(names)[:500]})
        if network.sites is None:  # sites from the links, and the demands' ends even without links
            ends = dict.fromkeys([*(e for l in known for e in (l.site_a, l.site_b)),
                                  *(e for d in network.demands for e in (d.source, d.target))])
            network = network.model_copy(update={"sites": [SiteConfig(name=n) for n in ends]})
        self._topology = (seen, config, build_topology(network, known))
        return self._topology[2]


class AnalyserExposition:
    """The analyser's metrics as exposition text: the qnet_ families of the current topology."""

    def __init__(self, state: Any):
        self._state = state
        self._layouts: dict[int, tuple] = {}

    def _families(self, topology: Topology | None) -> tuple:
        from qtelemetry.exporter.exposition import Block, Family
        from qtelemetry.exporter.network_metrics import ANALYSER_METRICS, RELAY_METRICS, network_blocks
        from qtelemetry.monitoring.catalogue import METRICS

        key = id(topology)
        if key not in self._layouts:
            families = []
            for metric in METRICS:
                if metric.name == "qnet_analyser_up":
                    blocks = [Block(metric.sample_name, (), [()], (), lambda st, now: np.array([float(st.up)]))]
                elif metric.name == "qnet_analyser_errors":
                    blocks = [Block(metric.sample_name, metric.labels, [(r,) for r in REASONS], (),
                                    lambda st, now: np.array([st.errors[r] for r in REASONS], float))]
                elif (metric.name.startswith("qnet_") and topology is not None and metric.name not in ANALYSER_METRICS
                      and metric.name not in RELAY_METRICS):
                    blocks = network_blocks(metric, topology, lambda st: st.network)[0]
                else:
                    continue
                families.append(Family(metric, tuple(blocks)))
            self._layouts = {key: (topology, tuple(families))}  # keeps the topology alive with its id
        return self._layouts[key][1]

    def parts(self, openmetrics: bool = False, gzip: bool = False, now: float | None = None) -> tuple[bytes, ...]:
        """The exposition at ``now`` (default: the current time), as the server sends it: one part."""
        state: AnalyserState = self._state()
        now = time.time() if now is None else now
        topology = None if state.network is None else state.network.topology
        text = "".join(f.render(state, now, openmetrics) for f in self._families(topology))
        body = (text + ("# EOF\n" if openmetrics else "")).encode()
        return (compress(body, 1) if gzip else body,)


def cmd_network(args: argparse.Namespace) -> int:
    from qtelemetry.cli import _log_config_error, _next_command, _refuse
    from qtelemetry.config import parse_listen
    from qtelemetry.exporter.server import MetricsServer, Protection
    from qtelemetry.exporter.webconfig import web_settings
    from qtelemetry.report.cli import http_config

    try:
        network, exporter_web = load_fleet(args.config)
        web, tls = web_settings(exporter_web, args.web_config_file, args.config)
    except ConfigError as exc:
        return _log_config_error(exc)
    try:
        host, port = parse_listen(args.listen)
        http = http_config(args, timeout_s=args.timeout)
    except ValueError as exc:
        return _refuse("invalid options", reason=str(exc))
    from qtelemetry.report.prometheus import Prometheus, redacted_url

    commands: queue.SimpleQueue[str] = queue.SimpleQueue()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: commands.put("stop"))
    signal.signal(signal.SIGHUP, lambda *_: commands.put("reload"))  # as `qtelemetry run` (systemd's ExecReload)
    prometheus = Prometheus(args.prometheus, http)
    analyser = Analyser(prometheus, network, args.max_data_age)
    exposition = AnalyserExposition(lambda: analyser.state)

    def no_faults(link: str) -> Any:
        raise LookupError("qtelemetry network simulates no links")

    try:
        server = MetricsServer(exposition, host, port, Protection(web, tls, None), no_faults, lambda: [],
                               lambda now: (analyser.state.network is not None, "no analysis yet"), lambda *_: no_faults(""))
    except OSError as exc:
        return _refuse("cannot listen", address=f"{host}:{port}", reason=exc.strerror or str(exc))
    server.start()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                analyser.run_once()
            except Exception:  # pragma: no cover - last line of defence, logged with its traceback
                log.exception("network analysis failed")
                analyser.failed("analysis_failed")
            stop.wait(analyser.network.analysis_interval_seconds)

    worker = threading.Thread(target=loop, name="network", daemon=True)
    worker.start()
    bound_host, bound_port = server.address
    log.info("serving network metrics", extra={"url": f"{server.scheme}://{bound_host}:{bound_port}/metrics",
                                               "prometheus": redacted_url(args.prometheus),
                                               "demands": len(network.demands)})
    while _next_command(commands) == "reload":  # wakes to run a signal handler another thread was handed
        try:  # the network section and the endpoint's protection (users, certificates), as `run` reloads them
            network, exporter_web = load_fleet(args.config)
            web, tls = web_settings(exporter_web, args.web_config_file, args.config)
        except ConfigError as exc:
            _log_config_error(exc)
            log.warning("config reload refused: the running config is kept", extra={"source": args.config})
            continue
        analyser.network = network
        server.protect(Protection(web, tls, None))
        log.info("config reloaded", extra={"source": args.config, "demands": len(network.demands)})
    log.info("shutting down")
    stop.set()
    server.close()
    worker.join(timeout=10)
    if not worker.is_alive():  # else a query is still under way on the client's loop: exit without
        prometheus.close()     # (an unclosed session was logged as an error at every shutdown)
    return 0


def _http_url(text: str) -> str:
    """argparse type: an http(s) URL with a host (anything else is never reached, only logged as
    unreachable every interval); the URL is not repeated, since it may hold credentials."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError("expected an http:// or https:// URL with a host")
    return text


def register(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from qtelemetry.recording import number_between
    from qtelemetry.report.cli import add_http_options

    seconds = number_between(0.0, 1e9, "a positive number of seconds")

    parser = verbs.add_parser(
        "network", help="the network view of a sharded fleet, from Prometheus",
        description="Read the links' key rates, stores and qlink_info from a Prometheus HTTP API every "
                    "network.analysis_interval_seconds, analyse the network and serve the qnet_ metrics.")
    parser.add_argument("--prometheus", required=True, metavar="URL", type=_http_url,
                        help="Prometheus API base URL (the global view)")
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the fleet's exporter config, or a file with only its network: section")
    parser.add_argument("--listen", default="127.0.0.1:9818", metavar="HOST:PORT",
                        help="where /metrics is served (default 127.0.0.1:9818; port 0 = any free port)")
    parser.add_argument("--max-data-age", type=seconds, default=60.0, metavar="SECONDS",
                        help="a link whose newest qlink_up sample is older counts as down (default 60)")
    parser.add_argument("--timeout", type=seconds, default=10.0, metavar="SECONDS", help="per query (default 10)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS and basic auth of /metrics from an exporter-toolkit web config file")
    add_http_options(parser)
    parser.set_defaults(handler=cmd_network)
