"""The verbs of recorded link data: ``qtelemetry record`` (run the links, keep every window's raw
counts) and ``qtelemetry analyse`` (the estimators offline over a recording).

They drive the runtime and read the catalogue, so they sit above them, beside the other verbs;
the file formats they write and read are below, with the drivers that replay them
(``qtelemetry.drivers.formats``). The verbs are registered here without importing pandas or the
runtime: every other verb starts without paying for them.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Callable

from qtelemetry import extras
from qtelemetry.errors import EXIT_CONFIG


def number_between(low: float, high: float, what: str) -> Callable[[str], float]:
    """An argparse type: a number strictly between ``low`` and ``high``, else an error saying ``what``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _windows(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10**7:
        raise argparse.ArgumentTypeError(f"expected a whole number of windows from 1, got {text!r}")
    return int(text)


def _record(args: argparse.Namespace) -> int:
    module = _with_extra("qtelemetry.recording.record", "record")
    return EXIT_CONFIG if module is None else module.cmd_record(args)


def _analyse(args: argparse.Namespace) -> int:
    module = _with_extra("qtelemetry.recording.analyse", "analyse")
    return EXIT_CONFIG if module is None else module.cmd_analyse(args)


def _with_extra(module: str, verb: str) -> ModuleType | None:
    """The verb's module, which needs the recording extra (pandas, pyarrow); None, having said
    which extra to install, without it."""
    try:
        return extras.require(module, "recording")
    except extras.MissingExtra as exc:
        print(f"error: qtelemetry {verb}: {exc}", file=sys.stderr)
        return None


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``record`` and ``analyse`` verbs."""
    parser = subparsers.add_parser(
        "record", help="write the links' raw counts to Parquet or CSV",
        description="Run the configured links (no /metrics) for --duration seconds and write one row per "
                    "link-window of raw counts to --out: Parquet, or CSV if the name ends in .csv. "
                    "Ctrl-C stops early and keeps what was recorded.")
    parser.add_argument("--config", metavar="FILE", help="YAML config; default: the embedded demo")
    parser.add_argument("--duration", metavar="SECONDS", required=True, help="how long to record",
                        type=number_between(0.0, 1e9, "a positive number of seconds"))
    parser.add_argument("--out", metavar="FILE", required=True, help="recording to write (.parquet or .csv)")
    parser.set_defaults(handler=_record)

    parser = subparsers.add_parser(
        "analyse", help="run the estimators over a recording, per link",
        description="Run the live estimators offline over a recording (qtelemetry record), window by window or "
                    "over a sliding window of N windows; print per link the mean, 5th and 95th percentile of "
                    "loss, QBER and secret key rate and the windows without key; --out writes every window's "
                    "estimates (CSV if the name ends in .csv, else Parquet).")
    parser.add_argument("file", metavar="FILE", help="recording (Parquet or CSV)")
    parser.add_argument("--out", metavar="FILE", help="write the estimates of every link-window here")
    parser.add_argument("--sliding-windows", metavar="N", type=_windows, default=1,
                        help="estimate from the sum of each link's last N windows, as the exporter's "
                             "sliding_windows does (default 1: each window alone)")
    parser.add_argument("--confidence", metavar="LEVEL", default=0.99,
                        type=number_between(0.5, 1.0, "a confidence level between 0.5 and 1"),
                        help="one-sided level of the QBER upper bounds (default 0.99)")
    parser.set_defaults(handler=_analyse)
