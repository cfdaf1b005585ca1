"""F1: a replayed 10⁶-window recording in a real exporter holds memory flat and stops promptly.

``bench/replay_memory.py`` writes the recording and runs ``qtelemetry run`` twice, with and
without the replayed link; its figures are checked here: peak RSS (the config check's pass over
the whole file included) as a ratio to the exporter without the recording, windows delivered,
and SIGTERM ending the process cleanly and promptly. On the code before streaming, the same
recording took the exporter to 6.7 GB and SIGTERM took 29 s.
"""

from __future__ import annotations

import re

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
