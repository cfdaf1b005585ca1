"""Writing recordings (``qtelemetry record``): blocks of windows as rows, appended to Parquet or CSV.

Apart from the reader (``recording``), which a replayed link runs: writing builds pandas frames,
and a replay must not pay for importing pandas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from qtelemetry.drivers.formats.recording import (FAULT_COLUMNS, PLAN_COLUMNS, columns_for, count_columns, is_csv,
                                                 kind_of, param_columns, schema)
from qtelemetry.estimation import PROTOCOLS


def block_frame(protocol: str, links: list[str], counts: Mapping[str, NDArray[np.float64]],
                end: NDArray[np.float64], seconds: NDArray[np.float64], params: Mapping[str, NDArray[np.float64]],
                plan: tuple[NDArray[np.float64], NDArray[np.float64]], faults: NDArray[np.bool_]) -> pd.DataFrame:
    """Rows of one protocol's windows: ``counts[name]`` shaped (rows, *count shape), the rest (rows,)."""
    rows = len(links)
    data: dict[str, object] = {"link": links, "protocol": [protocol] * rows, "window_start": end - seconds,
                               "window_end": end, "window_seconds": seconds}
    for name in PROTOCOLS[protocol].count_axes:
        flat = np.asarray(counts[name], float).reshape(rows, -1)
        columns = [c.column for c in count_columns(protocol) if c.count == name]
        integer = kind_of(protocol, name) == "count"
        for j, column in enumerate(columns):
            data[column] = pd.array(flat[:, j].astype(np.int64), dtype="Int64") if integer else flat[:, j]
    for name, column in param_columns(protocol).items():
        data[column] = params[name]
    data.update(zip(PLAN_COLUMNS, plan))
    for k, column in enumerate(FAULT_COLUMNS.values()):
        data[column] = faults[:, k]
    return pd.DataFrame(data)




class RecordingWriter:
    """Appends blocks of rows to a Parquet file (row groups) or a CSV file, keeping little in memory."""

    def __init__(self, path: str | Path, protocols: list[str] | tuple[str, ...]):
        self.path = Path(path)
        self._columns = columns_for(protocols)
        self._schema = schema(protocols)
        self._parquet = None if is_csv(path) else pq.ParquetWriter(self.path, self._schema)
        self._header = True
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        frame = frame.reindex(columns=self._columns)
        if self._parquet is not None:
            self._parquet.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))
        else:
            frame.to_csv(self.path, mode="w" if self._header else "a", header=self._header, index=False)
            self._header = False
        self.rows += len(frame)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self._header:  # nothing recorded: still a valid file with its header
            pd.DataFrame(columns=self._columns).to_csv(self.path, index=False)


