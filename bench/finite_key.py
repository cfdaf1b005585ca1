"""The finite-key optimiser with and without its second search where the first finds no key.

`qtelemetry plan --decoy finite --optimize-mu` on its GYS defaults, for each block size: the key
rate at 0–200 km every ``--step-km`` (one batch of problems) and the reach (a bisection, one problem per
step, about half of them beyond the reach). Baseline, timed in the same run: the same calls with
``starts_without_key=0``, the search before it had a second stage, which stopped short of the
reach. Times are CPU seconds of this process (``time.process_time``), the median of
``--repeats``, so that other jobs on a shared machine do not count. Compare the ratio.

    python bench/finite_key.py [--blocks 1e4,1e8] [--step-km 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from unittest import mock

import numpy as np

from qtelemetry import planner
from qtelemetry.estimation import finite_key_optimum

def cpu_seconds(fn, repeats: int) -> tuple[float, object]:
    """Median CPU time of ``fn()`` over ``repeats`` calls, and its last result."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def measure(link: planner.LinkModel, distances_km: np.ndarray, starts_without_key: int | None,
            repeats: int) -> list[tuple[float, str]]:
    """CPU time and outcome of the rate table and of the reach, with the optimiser's default
    second search (None) or ``starts_without_key`` starts for it."""
    search = finite_key_optimum.optimal_finite_key
    if starts_without_key is not None:
        search = functools.partial(search, starts_without_key=starts_without_key)
    with mock.patch.object(finite_key_optimum, "optimal_finite_key", search):
        table, rate = cpu_seconds(lambda: planner.key_rate("finite", link, distances_km)[0], repeats)
        bisection, reach = cpu_seconds(lambda: planner.max_distance_km("finite", link), repeats)
    return [(table, f"key at {np.count_nonzero(rate)} of {rate.size} distances"), (bisection, f"{reach:.2f} km")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", default="1e4,1e8", help="comma-separated block sizes (sifted key bits)")
    parser.add_argument("--step-km", type=float, default=2.0, help="distance step of the rate table")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    distances_km = np.arange(0.0, 200.0 + 1e-9, args.step_km)
    print("| block | work | before: CPU s | after: CPU s | after/before | before | after |")
    print("|---|---|---|---|---|---|---|")
    for block in (float(b) for b in args.blocks.split(",")):
        link = planner.LinkModel(**planner.GYS | planner.PROTOCOL | planner.FINITE_KEY | {"block_size": block}, optimize_mu=True)
        before, after = (measure(link, distances_km, starts, args.repeats) for starts in (0, None))
        for work, (t0, was), (t1, now) in zip((f"rate every {args.step_km:g} km", "reach"), before, after):
            print(f"| {block:.0e} | {work} | {t0:.2f} | {t1:.2f} | {t1 / t0:.2f}x | {was} | {now} |")


if __name__ == "__main__":
    main()
