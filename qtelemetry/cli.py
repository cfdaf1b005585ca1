"""Command line: one verb per job (``qtelemetry --help`` lists them), each a handler returning the exit code.

Each verb imports what it needs when it runs: this module is light to import, because a spawned
process (the network analysis) imports the console script's module again before anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import urllib.parse
from typing import Sequence

from qtelemetry import __version__, logs, sharding, text
from qtelemetry.errors import EXIT_CONFIG, ConfigError

log = logging.getLogger("qtelemetry")
#: Exit code of a command whose reader went away (``qtelemetry analyse FILE | head``): what a shell
#: reports for a program SIGPIPE ended, as it ends cat or grep.
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE


def _refuse(message: str, **fields: object) -> int:
    """Log why the exporter cannot start; the exit code of a config problem."""
    log.error(message, extra=fields)
    return EXIT_CONFIG


def _log_config_error(exc: ConfigError) -> int:
    for field, reason in exc.problems:
        _refuse("invalid config", source=exc.source, field=field, reason=reason)
    return EXIT_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    from qtelemetry import selfmetrics
    from qtelemetry.config import parse_listen
    from qtelemetry.exporter.exposition import Exposition
    from qtelemetry.exporter.reload import Reloader, Source
    from qtelemetry.exporter.server import MetricsServer
    from qtelemetry.runtime.network import NetworkAnalyser
    from qtelemetry.runtime.runtime import Runtime

    # from the start, signals only queue what to do (SimpleQueue.put is reentrant); the main
    # thread does it once the exporter runs, so an early SIGHUP reloads instead of killing it
    commands: queue.SimpleQueue[str] = queue.SimpleQueue()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: commands.put("stop"))
    signal.signal(signal.SIGHUP, lambda *_: commands.put("reload"))
    source = Source(args.config, args.web_config_file, args.shard, args.listen)
    try:
        settings = source.load()
    except ConfigError as exc:
        return _log_config_error(exc)
    try:
        host, port = parse_listen(source.listen_address(settings.config))
    except ValueError as exc:
        return _refuse("invalid --listen", reason=str(exc))
    for field, warning in settings.warnings():
        log.warning("config warning", extra={"field": field, "reason": warning})
    own = selfmetrics.registry()
    runtime = Runtime(settings.config, own)
    exposition = Exposition(lambda: runtime.snapshot, own)
    runtime.listeners.append(exposition.published)
    runtime.reload_hooks.append(exposition.families)
    exposition.families(runtime.table)  # lay out the links before the first scrape asks
    reloader = Reloader(source, runtime, settings)
    try:
        server = MetricsServer(exposition, host, port, settings.protection, runtime.faults, reloader.reload,
                               lambda now: runtime.snapshot.ready(now), runtime.rearm, own)
    except OSError as exc:
        return _refuse("cannot listen", address=f"{host}:{port}", reason=os.strerror(exc.errno) if exc.errno else str(exc))
    reloader.hooks.append(server.protect)
    network = NetworkAnalyser(runtime.network_interval, runtime.network_inputs, runtime.publish_network)
    runtime.start()
    network.start()
    exposition.start()
    server.start()
    otel = None
    if settings.config.exporter.otlp is not None:
        from qtelemetry.exporter.otel import OtlpPush

        otel = OtlpPush(exposition, lambda: runtime.snapshot, settings.config.exporter.otlp, own)
        endpoint = urllib.parse.urlsplit(settings.config.exporter.otlp.endpoint)
        log.info("pushing metrics over OTLP", extra={"host": endpoint.hostname})  # never credentials in the URL
    bound_host, bound_port = server.address
    log.info("serving metrics", extra={
        "url": f"{server.scheme}://{bound_host}:{bound_port}/metrics", "links": len(settings.config.links),
        "source": args.config or "embedded-demo", "web_config": args.web_config_file or "exporter.web",
        "control_plane": "off" if settings.protection.admin_token is None else "on"})
    while _next_command(commands) == "reload":
        log.info("SIGHUP: reloading the config")
        reloader.reload()
    log.info("shutting down")
    if otel is not None:
        otel.shutdown()
    server.close()
    exposition.stop()
    network.stop()
    runtime.stop()
    return 0


def _next_command(commands: "queue.SimpleQueue[str]") -> str:
    """The next command a signal queued. The kernel may hand a signal to any thread, and Python runs
    its handler only when the main thread runs bytecode again: a main thread blocked in ``get()``
    left a SIGHUP unhandled until the next signal, so it wakes every quarter second to let it run."""
    while True:
        try:
            return commands.get(timeout=0.25)
        except queue.Empty:
            continue


def cmd_check_config(args: argparse.Namespace) -> int:
    from qtelemetry.exporter.reload import Source

    try:
        settings = Source(args.file, args.web_config_file).load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for field, warning in settings.warnings():
        print(f"{args.file}: {field}: warning: {warning}", file=sys.stderr)
    links = settings.config.links
    print(f"{args.file}: ok, {text.count(len(links), 'link')}: {', '.join(l.name for l in links)}")
    return 0


def _add_log_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--log-level/--log-format on ``parser``; below the top level they default to SUPPRESS, so
    they may follow the verb without overriding a value given before it."""
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", choices=logs.LEVELS, default="info" if defaults else argparse.SUPPRESS,
                       help="least severe level logged (default: info)")
    group.add_argument("--log-format", choices=logs.FORMATS, default="logfmt" if defaults else argparse.SUPPRESS,
                       help="one line per event: logfmt (default) or JSON")


def _add_web_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS, basic auth and headers of the endpoint from a Prometheus exporter-toolkit web "
                             "config file (as node_exporter reads it), instead of the config's exporter.web")


def _verb_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser``: verbs and their actions (``fault inject``)."""
    found = []
    for action in parser._actions:  # argparse keeps its sub-parsers nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_verb_parsers(sub)]
    return found


def build_parser() -> argparse.ArgumentParser:
    from qtelemetry import analyser, networkplan, planner
    from qtelemetry.devices import simulate
    from qtelemetry.monitoring import generate
    from qtelemetry.exporter import fault_client
    from qtelemetry import recording
    from qtelemetry.report import cli as report

    parser = argparse.ArgumentParser(
        prog="qtelemetry", description="Telemetry for quantum networks (QKD and entanglement links).",
        epilog="`qtelemetry VERB --help` shows a verb's options.")
    parser.add_argument("--version", action="version", version=f"qtelemetry {__version__}")
    _add_log_options(parser, defaults=True)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run the exporter (embedded demo config if no --config)",
                           description="Run the exporter and serve Prometheus metrics on /metrics.")
    run.add_argument("--config", metavar="FILE", help="YAML config; default: the embedded demo")
    run.add_argument("--listen", metavar="HOST:PORT", help="override exporter.listen (port 0 = any free port)")
    run.add_argument("--shard", metavar="I/N", type=sharding.parse_shard,
                     help="serve only the links a stable hash of their name assigns to shard I of N (0 <= I < N)")
    _add_web_config_option(run)
    run.set_defaults(handler=cmd_run)

    check = verbs.add_parser("check-config", help="validate a config file and list every error",
                             description="Validate a config file; exit 2 listing each error with its field path.")
    check.add_argument("file", metavar="FILE")
    _add_web_config_option(check)
    check.set_defaults(handler=cmd_check_config)

    planner.register(verbs)
    networkplan.register(verbs)
    generate.register(verbs)
    fault_client.register(verbs)
    simulate.register(verbs)
    recording.register(verbs)
    report.register(verbs)
    analyser.register(verbs)
    for sub in _verb_parsers(parser):
        _add_log_options(sub, defaults=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print a traceback
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left for the exit flush
        return EXIT_CLOSED_PIPE
    return code
