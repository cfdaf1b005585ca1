"""The benchmarks keep running: each one, at a toy size, prints its table (figures are not checked)."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_estimation_benchmark_prints_its_table():
    out = run("estimation.py", "--repeats", "1", "--links", "10,200")
    assert "speed-up" in out and len([line for line in out.splitlines() if line.strip()]) == 3


def test_fleet_benchmark_measures_both_exporters():
    out = run("fleet.py", "--links", "20", "--seconds", "1", "--own-scrapes", "5")
    assert "20 links" in out and "p50, 4 scrapers" in out and "data age worst (s)" in out
    assert "own metrics, 20 links" in out and "the own registry alone" in out


def test_otlp_benchmark_receives_pushes():
    out = run("otlp.py", "--links", "20", "--seconds", "3", "--interval", "1")
    assert "20 links" in out and "exporter RSS (MB)" in out and "pushes received" in out


def test_events_benchmark_prints_its_ratios():
    out = run("events.py", "--events", "200000", "--tags", "100000", "--repeats", "1")
    assert out.count("x\n") == 5 and "counted by a fresh process" in out and "peak RSS" in out
    assert "the merge that finds each one's first B tag" in out
    assert "delay given: " in out and "ns per A tag: checks" in out and "delay search" in out
    assert "side by side" in out and "BBM92 delay searched" in out
    found = int(out.split("delay found: ")[1].split(" ps")[0].replace(",", ""))
    assert abs(found - 1_234_567) <= 100  # the pairs' jitter


def test_tamper_benchmark_prints_its_tables():
    out = run("tamper.py", "--links", "3", "--horizon", "20", "--fleet-horizon", "5", "--warmup", "30", "--before", "30",
              "--fa-links", "3", "--fa-hours", "0.01", "--cost-links", "50", "--repeats", "1")
    assert "| decoy BB84 | intercept-resend 5 % | 25 |" in out and "| entangled | intercept-resend 5 % | 100 |" in out
    assert "| decoy BB84 | photon-number splitting 25 % | 100 |" in out and "tamper alarms" in out
    assert "| entangled | 100 | 25% |" in out and "10,000 links" in out and "x the estimate call" in out


def test_install_benchmark_measures_the_documented_installs():
    """bench/install.py runs the pip commands of the README's quick start and of .ci/run, whatever they become."""
    pip_commands = runpy.run_path(str(BENCH / "install.py"))["pip_commands"]
    assert pip_commands("demo", BENCH.parent) == [["pip", "install", "--no-compile", "-e", "."]]
    assert pip_commands("test", BENCH.parent) == [["pip", "install", "-e", ".[test]"],
                                                  ["pip", "install", "--no-deps", "sequence==0.8.5"]]


def test_finite_key_benchmark_prints_its_ratios():
    out = run("finite_key.py", "--blocks", "1e8", "--step-km", "100", "--repeats", "1")
    assert "| 1e+08 | rate every 100 km |" in out and "| 1e+08 | reach |" in out and out.count("x |") == 2


def test_notifications_benchmark_prints_its_table():
    out = run("notifications.py", "--links", "80")
    rows = [line.split() for line in out.splitlines()[1:]]
    # two sites: each its own alert and two per link; four cut links each, five alerts per cut
    assert out.startswith("  links  alerts") and rows[0][:2] == ["80", str(2 * (1 + 2 * 40) + 2 * 4 * 5)]


def test_network_benchmark_prints_its_ratios():
    out = run("network.py", "--metros", "3", "--demands", "4", "--naive", "1", "--exporter", "--rounds", "2", "--links", "300",
              "--seconds", "1", "--relay", "--cycles", "2")
    assert "one full analysis" in out and "x faster" in out and "ratio = each / without" in out and "ratio hourly" in out
    assert "relay at 304 links, 4 demands of 1 priorities (4 relayed" in out and "re-choosing all 4 routes" in out


def test_plan_network_benchmark_prints_its_table():
    out = run("plan_network.py", "--sizes", "8:14:3", "--time-limit", "60")
    assert "| 8 | 14 | 3 |" in out and "x |" in out
