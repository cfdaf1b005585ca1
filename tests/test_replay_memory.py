"""F1: a replayed 10⁶-window recording in a real exporter holds memory flat and stops promptly.

``bench/replay_memory.py`` writes the recording and runs ``qtelemetry run`` twice, with and
without the replayed link; its figures are checked here: peak RSS (the config check's pass over
the whole file included) as a ratio to the exporter without the recording, windows delivered,
and SIGTERM ending the process cleanly and promptly. On the code before streaming, the same
recording took the exporter to 6.7 GB and SIGTERM took 29 s.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from recordings import record_cycles, small_config
from test_bench import run


def test_a_million_window_recording_replays_in_bounded_memory_and_stops_on_sigterm():
    out = run("replay_memory.py", "--windows", "1000000", "--seconds", "3")
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(without the recording|replaying it)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+|nan)"
        r"\s+([\d.]+)\s+(-?\d+)$", out, re.M)}
    assert rows.keys() == {"without the recording", "replaying it"}, out
    without, replaying = ({"peak": float(r[0]), "windows": r[5], "sigterm": float(r[6]), "exit": int(r[7])}
                          for r in rows.values())
    assert replaying["peak"] < 1.75 * without["peak"], out  # issue 23: within 100 MB of ~135 MB (pyarrow is ~40 MB)
    assert int(replaying["windows"].replace(",", "")) > 0, out
    assert replaying["exit"] == without["exit"] == 0 and replaying["sigterm"] < 10, out


ARROW_PEAK = """
import sys
import pyarrow as pa
from qtelemetry.drivers.formats.recording import RecordingFile
for path in sys.argv[1:]:
    print(sum(len(batch) for batch in RecordingFile(path).batches()), pa.default_memory_pool().max_memory())
"""


def test_arrow_memory_while_reading_a_recording_does_not_grow_with_the_file(tmp_path):
    """Read in batches, a file 8× longer must not need more of Arrow's memory: pyarrow's default
    pre-buffering held the compressed file whole (a 10⁶-window recording: 35 MB of Arrow memory,
    12 MB without). Arrow's high-water mark, in a fresh process, after a short file then a long one."""
    rng = np.random.default_rng(0)
    paths = []
    for rows in (20_000, 160_000):
        paths.append(tmp_path / f"{rows}.parquet")
        pq.write_table(pa.table({f"c{i}": rng.integers(0, 10**6, rows) for i in range(20)}), paths[-1],
                       row_group_size=10_000)
    out = subprocess.run([sys.executable, "-c", ARROW_PEAK, *map(str, paths)], capture_output=True, text=True, check=True)
    (short, after_short), (long, after_long) = (map(int, line.split()) for line in out.stdout.splitlines())
    assert (short, long) == (20_000, 160_000)
    assert after_long < 1.5 * after_short, (after_short, after_long)


RUN_AND_LOOK = """
import os, re, signal, sys, threading, time, urllib.request
from qtelemetry.cli import main

def look(url):
    '''Once both replayed links have delivered windows: is pandas loaded? Then stop the run.'''
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            body = ""
        delivered = dict(re.findall(r'qlink_batches_total\\{link="(replayed-\\w+)"[^}]*\\} (\\S+)', body))
        if len(delivered) == 2 and all(float(v) > 0 for v in delivered.values()):
            print("pandas" in sys.modules, flush=True)
            break
        time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=look, args=(f"http://127.0.0.1:{sys.argv[2]}/metrics",), daemon=True).start()
sys.exit(main(["run", "--config", sys.argv[1], "--listen", f"127.0.0.1:{sys.argv[2]}"]))
"""


def test_a_run_replaying_recordings_does_not_import_pandas(tmp_path):
    """Reading a recording is pyarrow and NumPy: pandas (~38 MB of the replay's memory) stays out
    of the exporter, for Parquet and CSV recordings alike."""
    record_cycles(small_config(), 3, tmp_path / "small.csv")
    pq.write_table(pa_csv.read_csv(tmp_path / "small.csv"), tmp_path / "small.parquet")
    config = tmp_path / "replay.yaml"
    config.write_text("links:\n" + "".join(
        f"  - {{name: replayed-{kind}, driver: {{type: replay, path: small.{kind}, link: {link}, speed: 1000, loop: true}}}}\n"
        for kind, link in (("parquet", "cut-10km"), ("csv", "spdc-20km"))))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-c", RUN_AND_LOOK, str(config), str(port)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["False"], (done.stdout, done.stderr[-3000:])
