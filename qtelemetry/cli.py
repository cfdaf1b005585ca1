"""Command line: ``qtelemetry run | check-config | plan | generate | fault | simulate``."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
import urllib.parse
from typing import Sequence

from qtelemetry import __version__, sharding
from qtelemetry.config import Config, ConfigError, default_config, load_config, parse_listen

log = logging.getLogger("qtelemetry")

EXIT_CONFIG = 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format='ts=%(asctime)s level=%(levelname)s logger=%(name)s msg="%(message)s"',
        stream=sys.stderr,
    )


def _load(path: str | None) -> Config:
    return default_config() if path is None else load_config(path)


def cmd_run(args: argparse.Namespace) -> int:
    from qtelemetry.exporter.exposition import Exposition, layout
    from qtelemetry.exporter.server import MetricsServer
    from qtelemetry.runtime.runtime import Runtime

    try:
        config = _load(args.config)
        host, port = parse_listen(args.listen or config.exporter.listen)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.shard is not None:
        config = sharding.select(config, args.shard)
    runtime = Runtime(config)
    families = layout(runtime.table, config.exporter.window_seconds)
    exposition = Exposition(families, lambda: runtime.snapshot)
    runtime.listeners.append(exposition.published)
    try:
        server = MetricsServer(exposition, host, port, config.exporter.web, runtime.faults,
                               config.exporter.admin_token())
    except OSError as exc:
        print(f"error: listen {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ssl.SSLError as exc:
        print(f"error: exporter.web: TLS setup failed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    runtime.start()
    exposition.start()
    server.start()
    otel = None
    if config.exporter.otlp is not None:
        from qtelemetry.exporter.otel import start_otlp

        otel = start_otlp(families, lambda: runtime.snapshot, config.exporter.otlp)
        endpoint = urllib.parse.urlsplit(config.exporter.otlp.endpoint)
        log.info("pushing metrics over OTLP host=%s", endpoint.hostname)  # never credentials in the URL
    bound_host, bound_port = server.address
    log.info("serving metrics url=%s://%s:%d/metrics links=%d source=%s fault_injection=%s",
             server.scheme, bound_host, bound_port, len(config.links), args.config or "embedded-demo",
             "on" if config.exporter.admin_token_file else "off")
    stopping.wait()
    log.info("shutting down")
    if otel is not None:
        otel.shutdown()
    server.close()
    exposition.stop()
    runtime.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: ok, {len(config.links)} links: {', '.join(l.name for l in config.links)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from qtelemetry import planner
    from qtelemetry.devices import simulate
    from qtelemetry.monitoring import generate
    from qtelemetry.exporter import fault_client

    parser = argparse.ArgumentParser(prog="qtelemetry", description=__doc__)
    parser.add_argument("--version", action="version", version=f"qtelemetry {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run the exporter (embedded demo config if no --config)",
                           description="Run the exporter and serve Prometheus metrics on /metrics.")
    run.add_argument("--config", metavar="FILE", help="YAML config; default: the embedded demo")
    run.add_argument("--listen", metavar="HOST:PORT", help="override exporter.listen (port 0 = any free port)")
    run.add_argument("--shard", metavar="I/N", type=sharding.parse_shard,
                     help="serve only the links a stable hash of their name assigns to shard I of N (0 <= I < N)")
    run.set_defaults(handler=cmd_run)

    check = verbs.add_parser("check-config", help="validate a config file and list every error",
                             description="Validate a config file; exit 2 listing each error with its field path.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=cmd_check_config)

    planner.register(verbs)
    generate.register(verbs)
    fault_client.register(verbs)
    simulate.register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    return args.handler(args)
