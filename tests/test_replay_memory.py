"""F1: a replayed 10⁶-window recording in a real exporter holds memory flat and stops promptly.

``bench/replay_memory.py`` writes the recording and runs ``qtelemetry run`` twice, with and
without the replayed link; its figures are checked here: peak RSS (the config check's pass over
the whole file included) as a ratio to the exporter without the recording, windows delivered,
and SIGTERM ending the process cleanly and promptly. On the code before streaming, the same
recording took the exporter to 6.7 GB and SIGTERM took 29 s.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from test_bench import run


def test_a_million_window_recording_replays_in_bounded_memory_and_stops_on_sigterm():
    out = run("replay_memory.py", "--windows", "1000000", "--seconds", "3")
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(without the recording|replaying it)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+|nan)\s+([\d.]+)\s+(-?\d+)$",
        out, re.M)}
    assert rows.keys() == {"without the recording", "replaying it"}, out
    without, replaying = ({"peak": float(r[0]), "windows": r[3], "sigterm": float(r[4]), "exit": int(r[5])}
                          for r in rows.values())
    assert replaying["peak"] < 3 * without["peak"], out  # pandas and pyarrow alone are ~70 MB of it
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
