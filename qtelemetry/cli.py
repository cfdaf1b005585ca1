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

from qtelemetry import __version__, logs, sharding
from qtelemetry.config import Config, ConfigError, default_config, load_config, parse_listen

log = logging.getLogger("qtelemetry")

EXIT_CONFIG = 2


def _load(path: str | None) -> Config:
    return default_config() if path is None else load_config(path)


def _refuse(message: str, **fields: object) -> int:
    """Log why the exporter cannot start; the exit code of a config problem."""
    log.error(message, extra=fields)
    return EXIT_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    from qtelemetry.exporter.exposition import Exposition
    from qtelemetry.exporter.server import MetricsServer
    from qtelemetry.runtime.runtime import Runtime

    try:
        config = _load(args.config)
    except ConfigError as exc:
        for field, reason in exc.problems:
            _refuse("invalid config", source=exc.source, field=field, reason=reason)
        return EXIT_CONFIG
    try:
        host, port = parse_listen(args.listen or config.exporter.listen)
    except ValueError as exc:
        return _refuse("invalid --listen", reason=str(exc))
    for field, warning in config.exporter.warnings():
        log.warning(warning, extra={"field": field})
    if args.shard is not None:
        config = sharding.select(config, args.shard)
    runtime = Runtime(config)
    exposition = Exposition(lambda: runtime.snapshot)
    runtime.listeners.append(exposition.published)
    runtime.reload_hooks.append(exposition.families)
    exposition.families(runtime.table)  # lay out the links before the first scrape asks
    try:
        server = MetricsServer(exposition, host, port, config.exporter.web, runtime.faults,
                               config.exporter.admin_token())
    except ssl.SSLError as exc:  # an OSError too: catch it first
        return _refuse("TLS setup failed", field="exporter.web", reason=str(exc))
    except OSError as exc:
        return _refuse("cannot listen", address=f"{host}:{port}", reason=exc.strerror or str(exc))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    runtime.start()
    exposition.start()
    server.start()
    otel = None
    if config.exporter.otlp is not None:
        from qtelemetry.exporter.otel import start_otlp

        otel = start_otlp(exposition, lambda: runtime.snapshot, config.exporter.otlp)
        endpoint = urllib.parse.urlsplit(config.exporter.otlp.endpoint)
        log.info("pushing metrics over OTLP", extra={"host": endpoint.hostname})  # never credentials in the URL
    bound_host, bound_port = server.address
    log.info("serving metrics", extra={
        "url": f"{server.scheme}://{bound_host}:{bound_port}/metrics", "links": len(config.links),
        "source": args.config or "embedded-demo", "fault_injection": "on" if config.exporter.admin_token_file else "off"})
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
    for field, warning in config.exporter.warnings():
        print(f"{args.file}: {field}: warning: {warning}", file=sys.stderr)
    print(f"{args.file}: ok, {len(config.links)} links: {', '.join(l.name for l in config.links)}")
    return 0


def _add_log_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--log-level/--log-format on ``parser``; below the top level they default to SUPPRESS, so
    they may follow the verb without overriding a value given before it."""
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", choices=logs.LEVELS, default="info" if defaults else argparse.SUPPRESS,
                       help="least severe level logged (default: info)")
    group.add_argument("--log-format", choices=logs.FORMATS, default="logfmt" if defaults else argparse.SUPPRESS,
                       help="one line per event: logfmt (default) or JSON")


def _verb_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser``: verbs and their actions (``fault inject``)."""
    found = []
    for action in parser._actions:  # argparse keeps its sub-parsers nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_verb_parsers(sub)]
    return found


def build_parser() -> argparse.ArgumentParser:
    from qtelemetry import planner
    from qtelemetry.devices import simulate
    from qtelemetry.monitoring import generate
    from qtelemetry.exporter import fault_client

    parser = argparse.ArgumentParser(prog="qtelemetry", description=__doc__)
    parser.add_argument("--version", action="version", version=f"qtelemetry {__version__}")
    _add_log_options(parser, defaults=True)
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
    for sub in _verb_parsers(parser):
        _add_log_options(sub, defaults=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    return args.handler(args)
