"""``qtelemetry analyse``: the live estimators, offline, over a recording.

Each protocol's vectorised ``estimate`` runs once over all its rows (windows × links at once)
on the sums the runtime's ``SlidingWindow`` would hold after each window: counts and amounts
summed over the link's last N windows (N = 1: window by window), levels as of that window.
With N equal to the exporter's ``sliding_windows`` the figures are those the exporter published
after each window.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from qtelemetry.drivers.formats.recording import RecordingError, counts_of, is_csv, params_of, read_recording
from qtelemetry.errors import EXIT_CONFIG
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.monitoring.catalogue import QBER_PROTOCOLS

#: What the summary reports, per link: estimate key -> column title.
SUMMARY = {"loss_db": "loss_db", "qber_z": "qber", "secret_key_rate_bps": "key_rate_bps"}


def sliding_sums(values: NDArray[np.float64], first: NDArray[np.intp], windows: int) -> NDArray[np.float64]:
    """Sum of each row and the up to ``windows - 1`` rows before it of the same link.

    Rows are grouped by link in time order; ``first[i]`` is the row where row i's link begins.
    A cumulative sum with a zero row on top gives any run of rows as one difference.
    """
    total = np.concatenate([np.zeros((1, *values.shape[1:])), np.cumsum(values, axis=0)])
    i = np.arange(len(values))
    begin = np.maximum(first, i + 1 - windows)
    return total[i + 1] - total[begin]


def estimate_frame(frame: pd.DataFrame, windows: int = 1, confidence: float = 0.99) -> pd.DataFrame:
    """Estimates after each window of a checked recording, one row per link-window, in file order."""
    parts = []
    for protocol_name in pd.unique(frame["protocol"]):
        protocol = PROTOCOLS[protocol_name]
        rows = frame[frame["protocol"] == protocol_name]
        order = np.argsort(pd.factorize(rows["link"])[0], kind="stable")  # by link, each in file (time) order
        rows = rows.iloc[order]
        codes = pd.factorize(rows["link"])[0]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        first = np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
        counts = counts_of(rows, protocol_name)
        window = {name: values if protocol.count_kinds.get(name, "count") == "level" else sliding_sums(values, first, windows)
                  for name, values in counts.items()}
        duration = sliding_sums(rows["window_seconds"].to_numpy(float), first, windows)
        with np.errstate(all="ignore"):
            estimates = protocol.estimate(window, duration, params_of(rows, protocol_name), confidence)
        levels = {name: values for name, values in window.items()  # scalar levels (a key store's fill); the
                  if protocol.count_kinds.get(name) == "level" and values.ndim == 1}  # others are in the recording
        out = rows[["link", "protocol", "window_start", "window_end"]].copy()
        parts.append(pd.concat([out, pd.DataFrame(estimates | levels, index=rows.index)], axis=1))
    return pd.concat(parts).sort_index() if parts else pd.DataFrame(columns=["link", "protocol", "window_start", "window_end"])


def summary(estimates: pd.DataFrame) -> pd.DataFrame:
    """Per link: windows, mean/p5/p95 of loss, QBER (Z basis) and secret key rate, windows with no key
    (key rate 0 or no estimate; empty for links whose protocol has no key rate)."""
    table = estimates.reindex(columns=["link", *SUMMARY])
    groups = table.groupby("link", sort=False)
    out = pd.DataFrame({"windows": groups.size()})
    for key, title in SUMMARY.items():
        values = groups[key]
        out[f"{title}_mean"] = values.mean()
        out[f"{title}_p5"] = values.quantile(0.05)
        out[f"{title}_p95"] = values.quantile(0.95)
    key = table["secret_key_rate_bps"]
    no_key = (key.isna() | (key <= 0)).groupby(table["link"], sort=False).sum()
    distils = estimates.groupby("link", sort=False)["protocol"].first().isin(QBER_PROTOCOLS)
    out["windows_without_key"] = no_key.astype("Int64").where(distils)
    return out


def write_frame(frame: pd.DataFrame, path: str | Path) -> None:
    """CSV if the name ends in .csv, else Parquet."""
    if is_csv(path):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def cmd_analyse(args: argparse.Namespace) -> int:
    try:
        frame = read_recording(args.file)
    except RecordingError as exc:
        print(f"qtelemetry analyse: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    estimates = estimate_frame(frame, args.sliding_windows, args.confidence)
    if args.out:
        try:
            write_frame(estimates, args.out)
        except OSError as exc:
            print(f"qtelemetry analyse: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(summary(estimates).to_string(float_format=lambda v: f"{v:.4g}"))
    return 0
