"""How long one estimation cycle takes for 10, 1,000 and 10,000 decoy-BB84 links.

Baseline measured in the same run: the same estimator called once per link in a Python loop
(what the vectorised core replaces). Machines here are noisy, so compare the ratio.

    python bench/estimation.py [--repeats 20] [--links 10,1000,10000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config
from qtelemetry.estimation.bb84 import BB84_DECOY
from qtelemetry.runtime.window import SlidingWindow


def build_window(n_links: int, windows: int = 60) -> tuple[SlidingWindow, dict[str, np.ndarray]]:
    """A full sliding window of ``n_links`` simulated links, and one fleet window of counts."""
    configs = [SimulatedBB84Config(type="simulated-bb84", fiber_length_km=5 + i % 120, seed=i) for i in range(n_links)]
    window = SlidingWindow(BB84_DECOY, configs, windows)
    counts = SimulatedBB84Config.fleet(configs, started=0.0).sample(1.0).counts
    rows = np.arange(n_links)
    for _ in range(windows):
        window.fold(rows, counts, np.ones(n_links))
    return window, counts


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--links", default="10,1000,10000", help="comma-separated link counts")
    args = parser.parse_args()
    print(f"{'links':>7} {'ingest ms':>10} {'estimate ms':>12} {'µs/link':>8} {'loop µs/link':>13} {'speed-up':>9}")
    for n in (int(x) for x in args.links.split(",")):
        window, counts = build_window(n)
        rows = np.arange(n)
        ingest = median_seconds(lambda: window.fold(rows, counts, np.ones(n)), args.repeats)
        vectorised = median_seconds(lambda: BB84_DECOY.estimate(window.window(), window.duration, window.params, 0.99),
                                    args.repeats)
        sample = min(n, 50)
        singles = [({k: v[i:i + 1] for k, v in window.window().items()}, window.duration[i:i + 1],
                    {k: v[i:i + 1] for k, v in window.params.items()}) for i in range(sample)]
        loop = median_seconds(lambda: [BB84_DECOY.estimate(s, d, p, 0.99) for s, d, p in singles], 5) / sample
        per_link = vectorised / n
        print(f"{n:>7} {ingest * 1e3:>10.2f} {vectorised * 1e3:>12.2f} {per_link * 1e6:>8.2f} "
              f"{loop * 1e6:>13.1f} {loop / per_link:>8.0f}x")


if __name__ == "__main__":
    main()
