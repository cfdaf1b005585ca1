"""Event files made for tests: detection records and tag streams with known statistics, written as .npy or Parquet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def bb84_columns(rng: np.random.Generator, n: int, span_ps: int, qber: float = 0.25) -> dict[str, np.ndarray]:
    """Detections at random times; Bob's bit differs from Alice's with probability ``qber``."""
    bit_a = rng.integers(0, 2, n, dtype=np.uint8)
    return {"time_ps": np.sort(rng.integers(0, span_ps, n)), "intensity": rng.choice(3, n, p=[0.5, 0.3, 0.2]).astype(np.uint8),
            "basis_a": rng.integers(0, 2, n, dtype=np.uint8), "bit_a": bit_a,
            "basis_b": rng.integers(0, 2, n, dtype=np.uint8), "bit_b": bit_a ^ (rng.random(n) < qber)}


def tag_streams(rng, t: np.ndarray, a: tuple, b: tuple, noise: int, span_ps: int, delay_ps: int, jitter_ps: int):
    """Pairs at times ``t`` (B later by delay ± jitter) with per-side (settings, outcomes), and unpaired clicks."""
    streams = []
    for (setting, outcome), shift, jitter in ((a, 0, 0), (b, delay_ps, jitter_ps)):
        times = np.concatenate([t + shift + rng.integers(-jitter, jitter + 1, len(t)), rng.integers(0, span_ps, noise)])
        order = np.argsort(times, kind="stable")
        streams.append({"time_ps": times[order],
                        "setting": np.concatenate([setting, rng.integers(0, 4, noise)]).astype(np.uint8)[order],
                        "outcome": np.concatenate([outcome, rng.integers(0, 2, noise)]).astype(np.uint8)[order]})
    return streams


def write(path, columns: dict) -> str:
    """``columns`` as a .npy structured array or a Parquet table, by the suffix of ``path``."""
    if str(path).endswith(".npy"):
        array = np.empty(len(next(iter(columns.values()))), [(k, np.asarray(v).dtype) for k, v in columns.items()])
        for k, v in columns.items():
            array[k] = v
        np.save(path, array)
    else:
        pq.write_table(pa.table(columns), path)
    return str(path)
