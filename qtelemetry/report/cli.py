"""``qtelemetry report`` (the pilot report from a Prometheus) and ``qtelemetry history`` (a simulated
history as OpenMetrics, to backfill a Prometheus for a demo or a test)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

from typing import TYPE_CHECKING

from qtelemetry import extras
from qtelemetry.config import ConfigError
from qtelemetry.configfile import read_text
from qtelemetry.errors import EXIT_CONFIG
from qtelemetry.text import count

if TYPE_CHECKING:  # the client (aiohttp, pydantic) is imported only when a report or analyser runs
    from qtelemetry.report.prometheus import HttpConfig

log = logging.getLogger("qtelemetry")

#: Exit codes of ``report`` besides 0 and EXIT_CONFIG: Prometheus failed or answered nonsense;
#: no link has data in the period (a report saying so, and what to check, is written).
EXIT_FAILED = 1
EXIT_NO_DATA = 3

#: ``now``, ``now-7d``, Unix seconds or RFC 3339 (``2026-11-01T00:00:00Z``).
_RELATIVE = re.compile(r"^now(?:-([1-9][0-9]*)([smhdw]))?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: promtool backfill block length: a month of history in one block
BACKFILL_BLOCK = "768h"


#: Unix time of 10000-01-01: later times have no RFC 3339 form, and past ~1e15 s a day no longer
#: adds to a float's value (a history of such a start had no steps and crashed).
LAST_TIME = 253402300800.0


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from ``now[-N{s,m,h,d,w}]``, Unix seconds or an RFC 3339 time; ValueError if none."""
    match = _RELATIVE.match(text)
    if match:
        now = time.time() if now is None else now
        return now - (int(match.group(1)) * _UNITS[match.group(2)] if match.group(1) else 0)
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {text!r} (use now-7d, Unix seconds or 2026-11-01T00:00:00Z)") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{text!r} has no time zone: add Z or an offset") from None
        return parsed.timestamp()
    if not 0 <= value < LAST_TIME:
        raise ValueError(f"not a time: {text!r} (Unix seconds from 0 to the end of year 9999)")
    return value


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _secret(path: str | None, flag: str) -> str | None:
    """The first line of a secret file (credentials never go on the command line)."""
    if path is None:
        return None
    try:
        return read_text(path).strip()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{flag}: cannot read {path}: {exc}") from None


def add_http_options(parser: argparse.ArgumentParser) -> None:
    """How to reach Prometheus: the options of its ``http_config`` (``report`` and ``network``)."""
    http = parser.add_argument_group("HTTP (as Prometheus' http_config)")
    http.add_argument("--basic-auth-user", metavar="USER")
    http.add_argument("--basic-auth-password-file", metavar="FILE")
    http.add_argument("--bearer-token-file", metavar="FILE")
    http.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify Prometheus' certificate")
    http.add_argument("--cert-file", metavar="FILE", help="client certificate (mutual TLS)")
    http.add_argument("--key-file", metavar="FILE", help="client key (mutual TLS)")
    http.add_argument("--insecure-skip-verify", action="store_true", help="do not verify Prometheus' certificate")


def http_config(args: argparse.Namespace, timeout_s: float | None = None) -> "HttpConfig":
    """The HttpConfig of ``add_http_options``' options, its TLS files loaded; ValueError naming the
    option that is wrong."""
    from qtelemetry.report.prometheus import HttpConfig

    password = _secret(args.basic_auth_password_file, "--basic-auth-password-file")
    token = _secret(args.bearer_token_file, "--bearer-token-file")
    if (password is None) != (args.basic_auth_user is None):
        raise ValueError("--basic-auth-user and --basic-auth-password-file go together")
    http = HttpConfig(basic_auth=(args.basic_auth_user, password) if password is not None else None,
                      bearer_token=token, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                      insecure_skip_verify=args.insecure_skip_verify,
                      **({} if timeout_s is None else {"timeout_s": timeout_s}))
    http.ssl_context()
    return http


def run_report(args: argparse.Namespace) -> int:
    from qtelemetry.monitoring.config import duration_seconds, load_monitoring_config
    from qtelemetry.report.prometheus import PrometheusError

    try:
        start, end = parse_time(args.start), parse_time(args.end)
        step = duration_seconds(args.step)
        if step < 1:
            raise ValueError(f"--step ({args.step}) must be at least 1s")
        if end <= start:
            raise ValueError(f"--end ({args.end}) must be after --start ({args.start})")
        query_timeout, timeout = duration_seconds(args.query_timeout), duration_seconds(args.timeout)
        if query_timeout <= 0 or timeout <= 0:
            raise ValueError("--query-timeout and --timeout must be positive")
        http = http_config(args, timeout_s=query_timeout)
    except ValueError as exc:
        return _usage(str(exc))
    try:
        monitoring = load_monitoring_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        extras.check_installed(("matplotlib", "pandas"), "report")
    except extras.MissingExtra as exc:
        return _usage(f"qtelemetry report: {exc}")
    try:  # before the queries, which may take an hour: a bad --out loses none of them
        Path(args.out).mkdir(parents=True, exist_ok=True)
        if not os.access(args.out, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), args.out)
    except OSError as exc:
        return _usage(f"--out: cannot write the directory {exc.filename or args.out}: {exc.strerror}")
    from qtelemetry.report.build import ReportRequest, build_report
    from qtelemetry.report.nodata import NoData

    request = ReportRequest(args.prometheus, http, start, end, step, args.link or [], monitoring,
                            Path(args.rules) if args.rules else None, args.alerts_source, Path(args.out), args.title,
                            timeout, Path(args.alertmanager_config) if args.alertmanager_config else None,
                            args.alertmanager)
    started = time.monotonic()
    try:
        written = build_report(request)
    except PrometheusError as exc:
        log.error("report failed", extra={"reason": str(exc)})
        return EXIT_FAILED
    except OSError as exc:  # the disk filled, or the directory went away, while it was written
        log.error("report failed", extra={"reason": f"cannot write {exc.filename}: {exc.strerror}"})
        return EXIT_FAILED
    except NoData as exc:
        log.warning("no data in the period: report written without tables",
                    extra={"html": str(exc.path), "reason": str(exc)})
        return EXIT_NO_DATA
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    log.info("report written", extra={"html": str(written), "seconds": f"{time.monotonic() - started:.1f}"})
    return 0


def run_history(args: argparse.Namespace) -> int:
    from qtelemetry.config import load_config, parse_config
    from qtelemetry.drivers.base import FleetConfig

    try:
        history_module = extras.require("qtelemetry.report.history", "report")
        with_failures, write_history = history_module.with_failures, history_module.write_history
    except extras.MissingExtra as exc:
        return _usage(f"qtelemetry history: {exc}")
    try:
        start = parse_time(args.start)
        days = float(args.days)
        if not 0 < days <= 366:
            raise ValueError(f"--days: {args.days} is not in (0, 366]")
    except ValueError as exc:
        return _usage(str(exc))
    try:
        config = load_config(args.config) if args.config else parse_config(pilot_config_text(), "pilot-week.yaml")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    polled = [link.name for link in config.links if not isinstance(link.driver, FleetConfig)]
    if polled:
        return _usage(f"history needs simulated links only; polled: {', '.join(polled)}")
    try:
        config = with_failures(config, args.fail or [])
    except ValueError as exc:
        return _usage(str(exc))
    step = config.exporter.window_seconds
    if days * 86400 < step:
        return _usage(f"--days: {args.days} days is shorter than one window of the config ({step:g} s)")
    with contextlib.ExitStack() as files:
        try:  # both opened before the simulation, which may take minutes: a bad path loses none of it
            out = files.enter_context(open(args.out, "w", encoding="utf-8"))
            ledger = files.enter_context(open(args.ledger, "w", encoding="utf-8", newline="")) if args.ledger else None
        except OSError as exc:
            return _usage(f"cannot write {exc.filename}: {exc.strerror}")
        history = write_history(config, start, start + days * 86400, out, job=args.job, instance=args.instance)
        if ledger:  # one row per time and link: the amounts a report's key figures must match
            history.ledger.stack(level="link").rename_axis(["time", "link"]).reset_index().to_csv(ledger, index=False)
    # one block for the whole file: promtool's default 2 h blocks each re-read all of it
    print(f"{args.out}: {count(history.samples, 'sample')}, {count(history.times.size, 'step')}; next: "
          f"promtool tsdb create-blocks-from openmetrics --max-block-duration={BACKFILL_BLOCK} {args.out} DATA_DIR")
    return 0


def pilot_config_text() -> str:
    from importlib import resources

    return resources.files("qtelemetry.defaults").joinpath("pilot-week.yaml").read_text(encoding="utf-8")


def register(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``report`` and ``history`` verbs."""
    report = verbs.add_parser(
        "report", help="pilot report (HTML + CSV) from a Prometheus' history",
        description="Query a Prometheus over a period and write a self-contained HTML pilot report "
                    "(figures embedded) and its tables as CSV. Needs the report extra (matplotlib).",
        epilog=f"exit codes: 0 report written; {EXIT_FAILED} Prometheus unreachable, refusing or answering "
               f"nonsense (logged: report failed); {EXIT_CONFIG} bad options or config; {EXIT_NO_DATA} no link has "
               "data in the period (report.html says what is missing and what to check, no CSV tables)")
    report.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL, e.g. http://localhost:9090")
    report.add_argument("--start", required=True, metavar="T", help="now-7d, Unix seconds or RFC 3339 (2026-11-01T00:00:00Z)")
    report.add_argument("--end", default="now", metavar="T", help="as --start (default: now)")
    report.add_argument("--step", default="5m", metavar="DURATION",
                        help="resolution of the report's series and of alert evaluation where ALERTS is missing "
                             "(default 5m; at least the scrape interval)")
    report.add_argument("--link", action="append", metavar="NAME", help="report only these links (repeatable)")
    report.add_argument("--config", metavar="FILE", help="monitoring config (thresholds, SLOs, pilot targets)")
    report.add_argument("--rules", metavar="FILE",
                        help="alert rules to evaluate where ALERTS is missing (default: generated from --config)")
    report.add_argument("--alerts-source", choices=("auto", "alerts", "evaluate"), default="auto",
                        help="incidents from ALERTS, from evaluating the rules, or ALERTS if present (default)")
    routing = report.add_mutually_exclusive_group()
    routing.add_argument("--alertmanager-config", metavar="FILE",
                         help="Alertmanager config whose routing, grouping and inhibit rules the alerts are replayed "
                              "through to count what people received (default: the routing qtelemetry recommends, "
                              "deploy/compose/alertmanager/alertmanager.yml, with the generated inhibit rules)")
    routing.add_argument("--alertmanager", metavar="URL",
                         help="read that config from a live Alertmanager's API instead (/api/v2/status)")
    report.add_argument("--out", required=True, metavar="DIR", help="directory for report.html and the CSV tables")
    report.add_argument("--title", default="Quantum network pilot report", help="the report's title")
    report.add_argument("--query-timeout", default="2m", metavar="DURATION",
                        help="deadline of each query, answer read in full (default 2m)")
    report.add_argument("--timeout", default="1h", metavar="DURATION", help="deadline of the whole report (default 1h)")
    add_http_options(report)
    report.set_defaults(handler=run_report)

    history = verbs.add_parser(
        "history", help="a simulated history as OpenMetrics, for backfilling",
        description="Run a config's simulated links on a virtual clock, one window per step, and write every "
                    "step's metrics as OpenMetrics with timestamps (then: promtool tsdb create-blocks-from "
                    "openmetrics FILE DIR). Default config: a pilot week with scripted faults.")
    history.add_argument("--config", metavar="FILE", help="exporter config with simulated links only (default: pilot week)")
    history.add_argument("--start", required=True, metavar="T", help="Unix seconds or RFC 3339")
    history.add_argument("--days", default="7", metavar="N", help="length in days (default 7)")
    history.add_argument("--out", required=True, metavar="FILE.om")
    history.add_argument("--ledger", metavar="FILE.csv", help="also write the simulated key ledger (cumulative bits)")
    history.add_argument("--fail", action="append", metavar="SITE_OR_LINK@OFFSET/DURATION",
                         help="a failure drill: cut a link, or every link of a site (a trusted node lost), OFFSET after "
                              "the start for DURATION (PromQL durations: m1@2d3h/2h); repeatable, beside the config's "
                              "own faults")
    history.add_argument("--job", default="qtelemetry", help="job label of the samples (default qtelemetry)")
    history.add_argument("--instance", default="history", help="instance label of the samples")
    history.set_defaults(handler=run_history)
