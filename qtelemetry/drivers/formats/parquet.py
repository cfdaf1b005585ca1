"""Parquet files read a batch at a time, in memory that does not grow with the file.

pyarrow's ``ParquetFile`` pre-buffers by default: it reads ahead, and keeps, the column chunks of
the row groups still to come, the compressed file whole (35 MB of Arrow memory for a 26 MB
recording of 10⁶ windows, 11 MB for a 4 MB file, 38 MB for a 33 MB one), and Arrow's allocator
kept ~30 MB of it after ``check-config``'s pass. Without it: 12 MB, whatever the file's length.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

#: Bytes read from the file at a time (pyarrow's default reads a column chunk whole).
READ_BUFFER = 1 << 16


def open_parquet(path: str | Path, read_dictionary: list[str] | None = None) -> pq.ParquetFile:
    """``path`` to read with ``iter_batches``: only the pages the next batch needs are in memory
    (``read_dictionary``: columns read dictionary-encoded, as Parquet stores them)."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER, read_dictionary=read_dictionary)
