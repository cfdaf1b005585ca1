"""A replayed 10⁶-window recording in a real exporter: RSS against the same exporter without it.

Writes a one-link decoy-BB84 recording of ``--windows`` one-second windows (Parquet, random
counts a 10 km link could give, in row groups of 100,000 windows),
then runs ``qtelemetry run`` on loopback twice: with one simulated link, and with the same link
plus the recording replayed at top speed in a loop. For each: peak RSS (VmHWM, so the config
check's pass over the whole file counts), RSS after ``--seconds`` of replay and what it is made of
(``/proc/PID/smaps_rollup``: anonymous memory, and pages of files such as the libraries), the
windows the replay delivered, and how long SIGTERM took to end the process. The machine is shared
and noisy: compare the ratio.

    python bench/replay_memory.py [--windows 1000000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from fleet import QTELEMETRY, Process, body_of, rss_mb, scrape
from qtelemetry.drivers.faults import FAULT_KINDS
from qtelemetry.drivers.formats.recording_writer import RecordingWriter, block_frame
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config

BATCHES = re.compile(rb'qlink_batches_total\{link="replayed"[^}]*\} ([0-9.e+]+)')
EXPORTER = """
exporter: {{window_seconds: 0.05, stall_timeout_seconds: 5.0}}
links:
  - {{name: simulated, driver: {{type: simulated-bb84, fiber_length_km: 10, seed: 1}}}}
{replay}"""
REPLAY = "  - {{name: replayed, driver: {{type: replay, path: '{path}', speed: 1000000, loop: true}}}}"


def write_recording(path: Path, windows: int, block: int = 100_000) -> None:
    """``windows`` one-second windows of one decoy-BB84 link, counts drawn around a 10 km link's."""
    rng = np.random.default_rng(7)
    params = SimulatedBB84Config(type="simulated-bb84", fiber_length_km=10).estimation_params()
    writer = RecordingWriter(path, ["bb84-decoy"])
    for start in range(0, windows, block):
        n = min(block, windows - start)
        pulses = np.tile([8e7, 1e7, 1e7], (n, 1))
        detections = rng.poisson([3e5, 1e4, 1e2], (n, 3))
        z = rng.binomial(detections, 0.45)
        sifted = np.stack([z, rng.binomial(detections - z, 0.1)], axis=1)  # (basis, intensity): Z, then X
        errors = rng.binomial(sifted, 0.01)
        keys = {name: np.full(n, np.nan) for name in ("key_generated_bits", "key_requested_bits", "key_delivered_bits",
                                                      "key_stored_bits", "key_capacity_bits")}
        end = 1.8e9 + np.arange(start + 1, start + n + 1, dtype=float)
        writer.write(block_frame("bb84-decoy", ["replayed"] * n,
                                 {"pulses": pulses, "detections": detections, "sifted": sifted, "errors": errors, **keys},
                                 end, np.ones(n), {k: np.full(n, v) for k, v in params.items()},
                                 (np.full(n, 5.0), np.full(n, np.nan)), np.zeros((n, len(FAULT_KINDS)), bool)))
    writer.close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def smaps_mb(pid: int) -> dict[str, float]:
    """Anonymous memory and file pages (libraries) of the process's RSS, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    rss, anonymous = (int(fields[name].split()[0]) / 1024 for name in ("Rss", "Anonymous"))
    return {"anon": anonymous, "file": rss - anonymous}


def run(config: Path, links: int, seconds: float, log: Path) -> dict[str, float]:
    """Start an exporter, let it run ``seconds``, SIGTERM it; its figures."""
    process = Process([QTELEMETRY, "run", "--config", str(config), "--listen", "127.0.0.1:0"],
                      rb"url=(http\S+/metrics)", links, log)
    time.sleep(seconds)
    found = BATCHES.search(body_of(*scrape(process.url)[1:]))
    row = {"peak": peak_rss_mb(process.proc.pid), "rss": rss_mb(process.proc.pid), **smaps_mb(process.proc.pid),
           "windows": float(found.group(1)) if found else float("nan"), "serving": process.serving_s}
    started = time.monotonic()
    process.stop()
    row["sigterm"] = time.monotonic() - started
    row["exit"] = process.proc.returncode
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as where:
        tmp = Path(where)
        recording = tmp / "recording.parquet"
        started = time.monotonic()
        write_recording(recording, args.windows)
        print(f"recording: {args.windows:,} windows, {recording.stat().st_size / 1e6:.1f} MB Parquet, "
              f"written in {time.monotonic() - started:.1f} s")
        rows = {}
        for name, replay in (("without the recording", ""), ("replaying it", REPLAY.format(path=recording))):
            config = tmp / f"{len(rows)}.yaml"
            config.write_text(EXPORTER.format(replay=replay))
            rows[name] = run(config, 2 if replay else 1, args.seconds, tmp / f"{len(rows)}.log")
    print(f"{'exporter':<24} {'peak RSS MB':>12} {'RSS MB':>8} {'anon MB':>8} {'file MB':>8} {'serving s':>10} "
          f"{'windows':>9} {'SIGTERM s':>10} {'exit':>5}")
    for name, row in rows.items():
        print(f"{name:<24} {row['peak']:>12.1f} {row['rss']:>8.1f} {row['anon']:>8.1f} {row['file']:>8.1f} "
              f"{row['serving']:>10.1f} {row['windows']:>9,.0f} {row['sigterm']:>10.2f} {row['exit']:>5}")
    without, replaying = rows.values()
    print(f"{'difference':<24} " + " ".join(f"{replaying[k] - without[k]:>{w}.1f}" for k, w in
                                           (("peak", 12), ("rss", 8), ("anon", 8), ("file", 8))))
    print(f"{'ratio':<24} {replaying['peak'] / without['peak']:>11.2f}x {replaying['rss'] / without['rss']:>7.2f}x")


if __name__ == "__main__":
    main()
