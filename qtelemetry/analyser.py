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
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from gzip import compress
from pathlib import Path
from typing import Any

import numpy as np

from qtelemetry.configfile import load_yaml, read_text
from qtelemetry.drivers.base import StrictModel
from qtelemetry.errors import ConfigError
from qtelemetry.estimation.network import Topology
from qtelemetry.networkconfig import NetworkConfig, SiteConfig
from qtelemetry.runtime.network import Durations, LinkInputs, NetworkSnapshot, build_topology, timed_analysis

log = logging.getLogger(__name__)

#: Why a read of the Prometheus API failed (the ``reason`` label of qnet_analyser_errors_total).
REASONS = ("unreachable", "bad_response", "unknown_site")


class NetworkFile(StrictModel):
    """A config file that holds only the network section (the links come from Prometheus)."""

    network: NetworkConfig


def load_network(path: str) -> NetworkConfig:
    """The ``network:`` section of ``path``: a whole exporter config (the fleet's, read by every
    shard) or a file with that section only; ConfigError naming the field otherwise."""
    from qtelemetry.config import load_config, validate_yaml

    text = read_text(path)
    data = load_yaml(text, path)
    if isinstance(data, dict) and "links" in data:
        network = load_config(path).network
        if network is None:
            raise ConfigError(path, [("network", "the config has no network section: nothing to analyse")])
        return network
    return validate_yaml(NetworkFile, text, path, config_dir=Path(path).absolute().parent).network


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
        self._prometheus, self._network, self._max_age = prometheus, network, max_data_age
        self._durations = Durations()
        self._errors: Counter[str] = Counter(dict.fromkeys(REASONS, 0))
        self._topology: tuple[tuple[LinkView, ...], Topology] | None = None
        self.state = AnalyserState(None)

    def run_once(self, now: float | None = None) -> AnalyserState:
        from qtelemetry.report.prometheus import PrometheusError, Unreachable

        now = time.time() if now is None else now
        try:
            topology, inputs = self._read()
        except PrometheusError as exc:
            reason = "unreachable" if isinstance(exc, Unreachable) else "bad_response"
            self._errors[reason] += 1
            log.warning("cannot read the links from Prometheus", extra={"reason": reason, "error": str(exc)})
            self.state = AnalyserState(None if self.state.network is None else NetworkSnapshot(self.state.network.topology),
                                       False, dict(self._errors))
            return self.state
        network = timed_analysis(topology, inputs, self._durations, now)
        self.state = AnalyserState(network, True, dict(self._errors))
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

        info = self._prometheus.instant("max by (link, site_a, site_b) (qlink_info)")
        try:
            links = tuple(sorted({LinkView(l["link"], l["site_a"], l["site_b"]) for l, _ in info}, key=lambda v: v.name))
        except KeyError:
            raise PrometheusError("qlink_info series without link, site_a or site_b") from None
        topology = self._topology_of(links)
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

    def _topology_of(self, links: tuple[LinkView, ...]) -> Topology:
        """The topology of ``links`` (rebuilt only when the links change); links whose sites the
        config does not list are left out and counted."""
        if self._topology is not None and self._topology[0] == links:
            return self._topology[1]
        listed = None if self._network.sites is None else {s.name for s in self._network.sites}
        known = [l for l in links if listed is None or {l.site_a, l.site_b} <= listed]
        if len(known) < len(links):
            self._errors["unknown_site"] += len(links) - len(known)
            log.warning("links between sites the network section does not list are left out",
                        extra={"links": ",".join(l.name for l in links if l not in known)[:500]})
        network = self._network
        if network.sites is None:  # sites from the links, and the demands' ends even without links
            names = dict.fromkeys([*(e for l in known for e in (l.site_a, l.site_b)),
                                   *(e for d in network.demands for e in (d.source, d.target))])
            network = network.model_copy(update={"sites": [SiteConfig(name=n) for n in names]})
        topology = build_topology(network, known)
        self._topology = (links, topology)
        return topology


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
    from qtelemetry.cli import _log_config_error, _refuse
    from qtelemetry.config import WebConfig, parse_listen
    from qtelemetry.exporter.server import MetricsServer, Protection
    from qtelemetry.exporter.webconfig import web_settings
    from qtelemetry.report.cli import http_config

    try:
        network = load_network(args.config)
        web, tls = web_settings(WebConfig(), args.web_config_file, args.config)
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
    analyser = Analyser(Prometheus(args.prometheus, http), network, args.max_data_age)
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
            stop.wait(network.analysis_interval_seconds)

    worker = threading.Thread(target=loop, name="network", daemon=True)
    worker.start()
    bound_host, bound_port = server.address
    log.info("serving network metrics", extra={"url": f"{server.scheme}://{bound_host}:{bound_port}/metrics",
                                               "prometheus": redacted_url(args.prometheus),
                                               "demands": len(network.demands)})
    commands.get()
    log.info("shutting down")
    stop.set()
    server.close()
    worker.join(timeout=10)
    return 0


def register(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from qtelemetry.report.cli import add_http_options

    parser = verbs.add_parser(
        "network", help="the network view of a sharded fleet, from Prometheus",
        description="Read the links' key rates, stores and qlink_info from a Prometheus HTTP API every "
                    "network.analysis_interval_seconds, analyse the network and serve the qnet_ metrics.")
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus API base URL (the global view)")
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the fleet's exporter config, or a file with only its network: section")
    parser.add_argument("--listen", default="127.0.0.1:9818", metavar="HOST:PORT",
                        help="where /metrics is served (default 127.0.0.1:9818; port 0 = any free port)")
    parser.add_argument("--max-data-age", type=float, default=60.0, metavar="SECONDS",
                        help="a link whose newest qlink_up sample is older counts as down (default 60)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per query (default 10)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS and basic auth of /metrics from an exporter-toolkit web config file")
    add_http_options(parser)
    parser.set_defaults(handler=cmd_network)
