"""Raw detection events → window counts, against one NumPy pass over the same bytes.

Decoy-BB84 detection records (10⁸ by default: int64 time tag + five uint8 flags, 13 bytes per
event) and two entangled-photon tag streams (10⁷ per side, half of them pairs, with the delay
searched for and given), counted twice: from columns in memory (as a Parquet reader returns
them) against summing those bytes viewed as uint64 (one read of memory, the least any path can
do); and from ``.npy`` files on disk, read chunk by chunk as a replayed link reads them, against
reading the same files the same way and summing their bytes (the least any path that reads the
file can do). Times are CPU seconds of this process (``time.process_time``; NumPy runs on one
thread here), so that other jobs on a shared machine do not count, and the median of
``--repeats``. Machines here are noisy, so compare the ratio. Then where the coincidence count's
time goes, per A tag (CPU time inside each of its stages: checks, merges, tallies, B's
read-ahead, the delay search; the rest is the inline cell and accidentals code), and its floor: the merge alone on
one step of A tags in cache, against one pass over the step's bytes. Then the ratios side by side
against the goal (3× one pass). Last, the peak RSS of a fresh process counting the decoy-BB84 file
(the goal: under 500 MB at 10⁸ records, a 1.3 GB file).

    python bench/events.py [--events 100000000] [--tags 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qtelemetry.drivers.formats import events as ev
from qtelemetry.drivers.formats.events import (MERGE_CHUNK, PS, READ_ROWS, _search_sorted, bb84_windows, bbm92_windows,
                                               event_table, read_events)

#: The stages of the coincidence count timed by ``where_the_time_goes``: (owner, attribute) → stage.
STAGES = {(ev._Pass, "check"): "checks", (ev, "_search_sorted"): "merges", (ev._Tally, "add"): "tallies",
          (ev._Buffered, "cover"): "B's read-ahead", (ev, "_search_delay"): "delay search"}


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


def write_npy(path: Path, columns: dict[str, np.ndarray]) -> None:
    """``columns`` as a .npy structured array, written a chunk of records at a time."""
    dtype = np.dtype([(name, values.dtype) for name, values in columns.items()])
    n = len(next(iter(columns.values())))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                                 "shape": (n,)})
        for start in range(0, n, READ_ROWS):
            records = np.empty(min(READ_ROWS, n - start), dtype)
            for name, values in columns.items():
                records[name] = values[start:start + READ_ROWS]
            f.write(records.tobytes())


def file_pass(*paths: Path) -> int:
    """One pass over the files' bytes as the event reader reads them (chunks into one buffer), summed as uint64."""
    total = 0
    for path in paths:
        buffer = np.empty(READ_ROWS * 16 // 8, np.uint64)
        with open(path, "rb") as f:
            while got := f.readinto(memoryview(buffer).cast("B")):
                total += int(buffer[:got // 8].sum())
    return total


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median_seconds(fn, repeats: int) -> float:
    """Median CPU time of ``fn`` over ``repeats`` calls."""
    return statistics.median(cpu_seconds(fn) for _ in range(repeats))


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def row(name: str, events: int, nbytes: int, seconds: float, base: float) -> str:
    return (f"{name:<32} {events:>12,} {seconds:>8.3f} {events / seconds / 1e6:>10.1f} {nbytes / seconds / 1e9:>7.2f} "
            f"{base:>10.3f} {nbytes / base / 1e9:>8.2f} {seconds / base:>6.2f}x")


def merge_floor(a: dict[str, np.ndarray], b: dict[str, np.ndarray], delay_s: float) -> str:
    """The floor of the coincidence count: its merge alone, for one step of A tags (its B tags
    beside it, all in the CPU's caches), against one pass over the step's bytes, per A tag."""
    t = a["time_ps"][:MERGE_CHUNK]
    low = t + round(delay_s * PS)
    near = {name: values[np.searchsorted(b["time_ps"], low[0]):np.searchsorted(b["time_ps"], low[-1])]
            for name, values in b.items()}
    step = [values[:MERGE_CHUNK] for values in a.values()] + list(near.values())
    per_tag = {name: min(cpu_seconds(fn) for _ in range(20)) / len(t) * 1e9 for name, fn in (
        ("pass", lambda: baseline({str(i): values for i, values in enumerate(step)})),
        ("merge", lambda: _search_sorted(near["time_ps"], low)),
        ("searchsorted", lambda: np.searchsorted(near["time_ps"], low)))}
    return (f"one step of {len(t):,} A tags, in cache: the merge that finds each one's first B tag "
            f"{per_tag['merge']:.1f} ns per A tag ({per_tag['merge'] / per_tag['pass']:.0f}x one pass over the "
            f"step's bytes, {per_tag['pass']:.2f} ns); np.searchsorted instead {per_tag['searchsorted']:.1f} ns")


def where_the_time_goes(count, tags: int) -> str:
    """CPU time of one ``count()`` spent inside each of ``STAGES`` (exclusive: a stage called from
    another counts for itself only), per A tag; the rest is the code between them."""
    spent = dict.fromkeys(STAGES.values(), 0.0)
    inner = [0.0]  # time of stages nested in the running one

    def timed(stage, fn):
        def wrapper(*args, **kwargs):
            outer, inner[0] = inner[0], 0.0
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.process_time() - start
                spent[stage] += elapsed - inner[0]
                inner[0] = outer + elapsed
        return wrapper

    originals = {key: getattr(*key) for key in STAGES}
    for (owner, name), stage in STAGES.items():
        setattr(owner, name, timed(stage, originals[owner, name]))
    try:
        total = cpu_seconds(count)
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)
    parts = [f"{stage} {seconds / tags * 1e9:.1f}" for stage, seconds in spent.items() if seconds]
    return (f"{total / tags * 1e9:.1f} ns per A tag: " + ", ".join(parts)
            + f", the rest (cells, accidentals, codes) {(total - sum(spent.values())) / tags * 1e9:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10**8, help="decoy-BB84 detection records")
    parser.add_argument("--tags", type=int, default=10**7, help="tags per side of the entangled-photon link")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count", metavar="FILE", help="only count this decoy-BB84 .npy file and print the peak RSS")
    args = parser.parse_args()
    if args.count:
        windows = bb84_windows(read_events(args.count, "bb84"), 0.01, 1e9, [0.5, 0.3, 0.2])
        print(f"{len(windows.start)} windows, peak RSS {peak_rss_mb():.0f} MB")
        return
    rng = np.random.default_rng(1)
    print(f"{'path':<32} {'events':>12} {'s':>8} {'Mevents/s':>10} {'GB/s':>7} {'baseline s':>10} "
          f"{'base GB/s':>8} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as where:
        tmp = Path(where)
        columns = bb84_columns(rng, args.events, mean_gap_ps=10_000)  # 10⁸ events over 1 s, 100 windows
        nbytes = sum(c.nbytes for c in columns.values())
        table = event_table(columns, "bb84")
        seconds = median_seconds(lambda: bb84_windows(table, 0.01, 1e9, [0.5, 0.3, 0.2]), args.repeats)
        base = median_seconds(lambda: baseline(columns), args.repeats)
        print(row("decoy BB84 records", args.events, nbytes, seconds, base))
        ratios = {"decoy BB84": seconds / base}
        write_npy(tmp / "bb84.npy", columns)
        del columns, table
        on_disk = read_events(tmp / "bb84.npy", "bb84")
        seconds = median_seconds(lambda: bb84_windows(on_disk, 0.01, 1e9, [0.5, 0.3, 0.2]), args.repeats)
        base = median_seconds(lambda: file_pass(tmp / "bb84.npy"), args.repeats)
        print(row("decoy BB84 records, .npy file", args.events, nbytes, seconds, base))

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
        ratios["BBM92 delay given"], ratios["BBM92 delay searched"] = given / base, seconds / base
        pass_per_tag = base / args.tags
        breakdown = {label: where_the_time_goes(lambda: bbm92_windows(ta, tb, window, 1e-9, **options), args.tags)
                     for label, options in (("delay given", {"delay_s": found.delay_s}),
                                            ("delay searched", {"max_delay_s": 1e-5}))}
        floor = merge_floor(a, b, found.delay_s)
        write_npy(tmp / "a.npy", a)
        write_npy(tmp / "b.npy", b)
        del a, b, ta, tb
        fa, fb = read_events(tmp / "a.npy", "tags"), read_events(tmp / "b.npy", "tags")
        given = median_seconds(lambda: bbm92_windows(fa, fb, window, 1e-9, delay_s=found.delay_s), args.repeats)
        base = median_seconds(lambda: file_pass(tmp / "a.npy", tmp / "b.npy"), args.repeats)
        print(row("BBM92 tags, delay given, files", 2 * args.tags, nbytes, given, base))
        print(f"delay found: {found.delay_s * PS:,.0f} ps (built with 1,234,567 ps); "
              f"{found.counts['coincidences'].sum() + found.counts['chsh'].sum():,.0f} coincidences from "
              f"{args.tags // 2:,} pairs in {len(found.start)} windows")
        for label, line in breakdown.items():
            print(f"BBM92 from memory, {label}: {line}; one pass over both streams {pass_per_tag * 1e9:.1f}")
        print(floor)
        print("side by side, from memory, each against one NumPy pass over its own bytes in this run: "
              + ", ".join(f"{name} {ratio:.1f}x" for name, ratio in ratios.items()) + " (goal: 3x)")
        counted = subprocess.run([sys.executable, __file__, "--count", str(tmp / "bb84.npy")], capture_output=True,
                                 text=True, check=True).stdout.strip()
        print(f"decoy BB84 .npy file of {args.events:,} records ({(tmp / 'bb84.npy').stat().st_size / 1e9:.2f} GB) "
              f"counted by a fresh process: {counted}")


if __name__ == "__main__":
    main()
