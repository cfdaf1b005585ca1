"""How long loading a config of 100, 1,000 and 10,000 simulated links takes (read, YAML, validation).

Baseline measured in the same run: PyYAML's pure-Python SafeLoader, what the loader falls back to
without libyaml. Machines here are noisy, so compare the ratio.

    python bench/config_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import timeit
from pathlib import Path

import yaml

from qtelemetry.config import Config, load_config
from qtelemetry.configfile import config_loader, load_yaml, read_text

DRIVERS = ("{type: simulated-bb84, fiber_length_km: %d, seed: %d}",
           "{type: simulated-spdc, fiber_length_km: %d, seed: %d}",
           "{type: simulated-heralded, fiber_length_km: %d, seed: %d}")


def config_text(n_links: int) -> str:
    """A fleet config: the three simulated link kinds in turn, each with sites and a seed."""
    return "exporter: {window_seconds: 1.0, sliding_windows: 60}\nlinks:\n" + "".join(
        f"  - name: link-{i:05d}\n    site_a: s{i % 7}\n    site_b: t{i % 11}\n"
        f"    driver: {DRIVERS[i % 3] % (5 + i % 90, i)}\n" for i in range(n_links))


def median_seconds(fn, repeats: int) -> float:
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pure_python = config_loader(yaml.SafeLoader)
    print(f"libyaml: {yaml.__with_libyaml__}")
    print(f"{'links':>7} {'MB':>5} {'load (s)':>9} {'of which YAML':>14} {'validation':>11} {'pure-Python YAML (s)':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (100, 1_000, 10_000):
            path = Path(tmp, f"links{n}.yaml")
            path.write_text(config_text(n))
            text = read_text(path)
            total = median_seconds(lambda: load_config(path), args.repeats)
            parse = median_seconds(lambda: load_yaml(text, str(path)), args.repeats)
            data = load_yaml(text, str(path))
            validate = median_seconds(lambda: Config.model_validate(data), args.repeats)
            slow = median_seconds(lambda: load_yaml(text, str(path), pure_python), 1)
            print(f"{n:>7,} {path.stat().st_size / 1e6:>5.2f} {total:>9.2f} {parse:>14.2f} {validate:>11.2f} "
                  f"{slow:>21.2f}")


if __name__ == "__main__":
    main()
