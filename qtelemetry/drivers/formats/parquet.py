"""Parquet files read a batch at a time in memory that does not grow with their row groups.

pyarrow's ``ParquetFile`` pre-buffers by default: each row group's column chunks are read whole
before the first batch of it is decoded: 35 MB of Arrow memory for a recording in row groups of
100,000 windows, against 12 MB without, and Arrow's allocator kept ~30 MB of it after
``check-config``'s pass over the file.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

#: Bytes read from the file at a time (pyarrow's default reads a column chunk whole).
READ_BUFFER = 1 << 16


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """``path`` to read with ``iter_batches``: only the pages the next batch needs are in memory."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER)
