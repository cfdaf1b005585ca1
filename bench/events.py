"""Raw detection events → window counts, against one NumPy pass over the same bytes.

Decoy-BB84 detection records (10⁸ by default: int64 time tag + five uint8 flags, 13 bytes per
event, in columns as a Parquet reader returns them) and two entangled-photon tag streams (10⁷
per side, half of them pairs, with the delay searched for). Baseline, timed in the same run:
summing the same bytes viewed as uint64 (one read of memory, the least any path can do).
Times are CPU seconds of this process (``time.process_time``; NumPy runs on one thread here), so
that other jobs on a shared machine do not count, and the median of ``--repeats``. Machines
here are noisy, so compare the ratio.

    python bench/events.py [--events 100000000] [--tags 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from qtelemetry.drivers.formats.events import PS, bb84_windows, bbm92_windows, event_table


def bb84_columns(rng: np.random.Generator, n: int, mean_gap_ps: int) -> dict[str, np.ndarray]:
    """Sorted time tags from random gaps, random intensities, bases and bits."""
    flags = {name: rng.integers(0, 2, n, dtype=np.uint8) for name in ("basis_a", "bit_a", "basis_b", "bit_b")}
    return {"time_ps": np.cumsum(rng.integers(1, 2 * mean_gap_ps, n)), "intensity": rng.integers(0, 3, n, dtype=np.uint8),
            **flags}


def tag_streams(rng: np.random.Generator, n: int, mean_gap_ps: int, delay_ps: int) -> tuple[dict, dict]:
    """Two streams of ``n`` tags: n/2 pairs (B later by ``delay_ps`` ± 100 ps, same setting) and n/2 unpaired clicks each."""
    pairs = np.cumsum(rng.integers(1, 4 * mean_gap_ps, n // 2))
    setting = rng.integers(0, 4, n // 2, dtype=np.uint8)
    streams = []
    for shift in (0, delay_ps):
        times = np.concatenate([pairs + shift + rng.integers(-100, 100, n // 2), rng.integers(0, int(pairs[-1]), n - n // 2)])
        order = np.argsort(times, kind="stable")
        streams.append({"time_ps": times[order],
                        "setting": np.concatenate([setting, rng.integers(0, 4, n - n // 2, dtype=np.uint8)])[order],
                        "outcome": rng.integers(0, 2, n, dtype=np.uint8)})
    return streams[0], streams[1]


def baseline(*column_sets: dict[str, np.ndarray]) -> int:
    """One pass over every byte of the columns, viewed as uint64."""
    return sum(int(c[: len(c) - len(c) % 8].view(np.uint8).view(np.uint64).sum())
               for columns in column_sets for c in columns.values())


def median_seconds(fn, repeats: int) -> float:
    """Median CPU time of ``fn`` over ``repeats`` calls."""
    return statistics.median(cpu_seconds(fn) for _ in range(repeats))


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def row(name: str, events: int, nbytes: int, seconds: float, base: float) -> str:
    return (f"{name:<26} {events:>12,} {seconds:>8.3f} {events / seconds / 1e6:>10.1f} {nbytes / seconds / 1e9:>7.2f} "
            f"{base:>10.3f} {nbytes / base / 1e9:>8.2f} {seconds / base:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10**8, help="decoy-BB84 detection records")
    parser.add_argument("--tags", type=int, default=10**7, help="tags per side of the entangled-photon link")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    print(f"{'path':<26} {'events':>12} {'s':>8} {'Mevents/s':>10} {'GB/s':>7} {'baseline s':>10} "
          f"{'base GB/s':>8} {'ratio':>7}")

    columns = bb84_columns(rng, args.events, mean_gap_ps=10_000)  # 10⁸ events over 1 s, 100 windows
    nbytes = sum(c.nbytes for c in columns.values())
    table = event_table(columns, "bb84")
    seconds = median_seconds(lambda: bb84_windows(table, 0.01, 1e9, [0.5, 0.3, 0.2]), args.repeats)
    base = median_seconds(lambda: baseline(columns), args.repeats)
    print(row("decoy BB84 records", args.events, nbytes, seconds, base))
    del columns, table

    a, b = tag_streams(rng, args.tags, mean_gap_ps=100_000, delay_ps=1_234_567)
    nbytes = sum(c.nbytes for s in (a, b) for c in s.values())
    ta, tb = event_table(a, "tags"), event_table(b, "tags")
    window = 0.01 * args.tags / 10**7
    found = bbm92_windows(ta, tb, window, 1e-9, max_delay_s=1e-5)
    seconds = median_seconds(lambda: bbm92_windows(ta, tb, window, 1e-9, max_delay_s=1e-5), args.repeats)
    given = median_seconds(lambda: bbm92_windows(ta, tb, window, 1e-9, delay_s=found.delay_s), args.repeats)
    base = median_seconds(lambda: baseline(a, b), args.repeats)
    print(row("BBM92 tags, delay searched", 2 * args.tags, nbytes, seconds, base))
    print(row("BBM92 tags, delay given", 2 * args.tags, nbytes, given, base))
    print(f"delay found: {found.delay_s * PS:,.0f} ps (built with 1,234,567 ps); "
          f"{found.counts['coincidences'].sum() + found.counts['chsh'].sum():,.0f} coincidences from "
          f"{args.tags // 2:,} pairs in {len(found.start)} windows")


if __name__ == "__main__":
    main()
