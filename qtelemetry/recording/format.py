"""The recording file: one row per link-window of raw counts, a pandas DataFrame in Parquet or CSV.

A pilot's data must outlive the exporter: to re-run an incident, compare a link with its plan
over weeks, hand a vendor evidence. A row holds what the estimator was given for one window of
one link, so the estimators can be run again offline (``analyse``) or fed back live (``replay``):

- ``link``, ``protocol``, ``window_start``, ``window_end`` (float64 Unix seconds) and
  ``window_seconds`` (the window's length as the driver measured it: end − start up to the
  rounding of Unix times, kept so replayed rates are bit-for-bit those of the live run);
- one column per element of each count: the count's name, then each axis label lowercased,
  joined by ``_`` (``pulses_signal``, ``sifted_z_decoy``, ``key_stored_bits``), from the
  protocol's ``count_axes``; counts are integers, amounts and levels reals (empty: not reported);
- ``param_<name>``: the per-link numbers the protocol's estimator reads from the config;
- ``loss_budget_db``, ``expected_secret_key_rate_bps``: the link's plan (empty: none);
- ``fault_<kind>``: whether each simulated fault kind acted during the window.

Columns are mapped back to counts through the protocol's axes, never by parsing their names.
Parquet files carry the format version and the qtelemetry version in their key-value metadata.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from qtelemetry import __version__
from qtelemetry.drivers.faults import FAULT_KINDS
from qtelemetry.estimation import PROTOCOLS

FORMAT_VERSION = 1
#: Parquet key-value metadata key of ``{"format_version": ..., "qtelemetry_version": ...}``.
METADATA_KEY = b"qtelemetry"
ID_COLUMNS = ("link", "protocol", "window_start", "window_end", "window_seconds")
PLAN_COLUMNS = ("loss_budget_db", "expected_secret_key_rate_bps")
#: fault kind -> its column (``fault-kind`` becomes ``fault_fault_kind``: a plain identifier)
FAULT_COLUMNS = {kind: "fault_" + kind.replace("-", "_") for kind in FAULT_KINDS}
#: A window's start, end and length may disagree by this much (s): Unix times are rounded to ~0.2 µs.
TIME_TOLERANCE_S = 1e-3
PARQUET_MAGIC = b"PAR1"


class RecordingError(ValueError):
    """A recording that cannot be used, naming the file and, where it is one row's fault, the row and column."""

    def __init__(self, path: str | Path, message: str, row: int | None = None, column: str | None = None):
        where = "".join((f", row {row}" if row is not None else "", f", column {column}" if column else ""))
        super().__init__(f"{path}{where}: {message}")
        self.path, self.row, self.column = str(path), row, column


@dataclass(frozen=True)
class CountColumn:
    """One column of a protocol's counts: which count, and the element's index along its axes."""

    column: str
    count: str
    index: tuple[int, ...]


@cache
def count_columns(protocol: str) -> tuple[CountColumn, ...]:
    """Every count element of ``protocol`` in C order of its axes (so a count's columns reshape to it)."""
    columns = []
    for name, axes in PROTOCOLS[protocol].count_axes.items():
        for index in itertools.product(*(range(len(axis)) for axis in axes)):
            labels = (axis[i].lower() for axis, i in zip(axes, index))
            columns.append(CountColumn("_".join((name, *labels)), name, index))
    return tuple(columns)


@cache
def param_columns(protocol: str) -> dict[str, str]:
    """Estimator parameter -> its column."""
    return {name: f"param_{name}" for name in PROTOCOLS[protocol].param_names}


@cache
def protocol_columns(protocol: str) -> tuple[str, ...]:
    """The columns a row of ``protocol`` fills, in file order."""
    return (*ID_COLUMNS, *(c.column for c in count_columns(protocol)), *param_columns(protocol).values(),
            *PLAN_COLUMNS, *FAULT_COLUMNS.values())


def columns_for(protocols: list[str] | tuple[str, ...]) -> list[str]:
    """The columns of a file holding links of ``protocols``: times, each protocol's counts and
    parameters in turn (no repeats), plan and faults."""
    own = (c for p in protocols for c in (*(c.column for c in count_columns(p)), *param_columns(p).values()))
    return list(dict.fromkeys((*ID_COLUMNS, *own, *PLAN_COLUMNS, *FAULT_COLUMNS.values())))


def kind_of(protocol: str, count: str) -> str:
    return PROTOCOLS[protocol].count_kinds.get(count, "count")


def columns_markdown() -> str:
    """The docs' table of each protocol's columns (docs/recording.md), from the protocols' own axes."""
    rows = ["| protocol | columns (in file order) | kind |", "|---|---|---|"]
    for name, protocol in PROTOCOLS.items():
        for count, axes in protocol.count_axes.items():
            labels = "".join("_{" + ",".join(label.lower() for label in axis) + "}" for axis in axes)
            rows.append(f"| `{name}` | `{count}{labels}` | {kind_of(name, count)} |")
        if protocol.param_names:
            params = ", ".join(f"`{c}`" for c in param_columns(name).values())
            rows.append(f"| `{name}` | {params} | parameter |")
    return "\n".join(rows)


# --- writing ---------------------------------------------------------------------------------

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


def schema(protocols: list[str] | tuple[str, ...]) -> pa.Schema:
    """The Parquet schema of a file of ``protocols``, with the format's metadata."""
    fields = []
    for column in columns_for(protocols):
        if column in ("link", "protocol"):
            kind = pa.string()
        elif column in FAULT_COLUMNS.values():
            kind = pa.bool_()
        elif any(c.column == column and kind_of(p, c.count) == "count" for p in protocols for c in count_columns(p)):
            kind = pa.int64()
        else:
            kind = pa.float64()
        fields.append(pa.field(column, kind))
    meta = json.dumps({"format_version": FORMAT_VERSION, "qtelemetry_version": __version__})
    return pa.schema(fields, metadata={METADATA_KEY: meta.encode()})


def is_csv(path: str | Path) -> bool:
    return str(path).lower().endswith(".csv")


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


# --- reading ---------------------------------------------------------------------------------

def load(path: str | Path, link: str | None = None) -> pd.DataFrame:
    """The raw table of a Parquet or CSV recording (Parquet by its magic bytes), unchecked; only
    ``link``'s rows when given (Parquet reads no more than those).

    RecordingError for a file that cannot be read as a table at all.
    """
    try:
        with open(path, "rb") as f:
            parquet = f.read(4) == PARQUET_MAGIC
        if parquet:
            table = pq.read_table(path, filters=None if link is None else [("link", "==", link)])
            _check_version(path, table.schema.metadata or {})
            frame = table.to_pandas()
        else:
            frame = pd.read_csv(path, dtype={"link": str, "protocol": str}, keep_default_na=False, na_values=[""],
                                encoding="utf-8")
            if link is not None and "link" in frame:
                frame = frame[frame["link"] == link]
    except RecordingError:
        raise
    except FileNotFoundError:
        raise RecordingError(path, "no such file") from None
    except UnicodeDecodeError:
        raise RecordingError(path, "not a recording: neither Parquet nor UTF-8 CSV") from None
    except OSError as exc:
        raise RecordingError(path, f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # whatever a corrupt file makes pandas' or pyarrow's parser raise
        raise RecordingError(path, f"not a recording: {type(exc).__name__}: {_first_line(exc)}") from None
    return frame.reset_index(drop=True)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _check_version(path: str | Path, metadata: Mapping[bytes, bytes]) -> None:
    raw = metadata.get(METADATA_KEY)
    try:
        version = json.loads(raw)["format_version"] if raw is not None else FORMAT_VERSION
    except (ValueError, TypeError, KeyError):
        raise RecordingError(path, "unreadable qtelemetry metadata") from None
    if version != FORMAT_VERSION:
        raise RecordingError(path, f"recording format version {version!r}; this qtelemetry reads {FORMAT_VERSION}")


#: What a fault column may hold (CSV writes True/False; other tools may write lowercase)
_BOOLEANS = {True: True, False: False, "true": True, "false": False}


def check_columns(path: str | Path, frame: pd.DataFrame) -> list[str]:
    """The protocols of the file's rows; RecordingError for missing, unknown or wrongly typed columns.
    Fault columns are made booleans in place, and a kind's column the file lacks is added as false."""
    for column in ("link", "protocol"):
        if column not in frame:
            raise RecordingError(path, "missing column", column=column)
        values = frame[column]
        if pd.api.types.is_string_dtype(values) and not isinstance(values.dtype, np.dtype):  # a string array
            named = values.notna() & (values.str.len() > 0)
        else:  # anything else (objects of a hand-made file) one by one
            named = values.map(lambda v: isinstance(v, str) and v != "")
        if not named.all():
            raise RecordingError(path, "expected a non-empty name", row=_first_row(~named), column=column)
    protocols = [str(p) for p in pd.unique(frame["protocol"])]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        row = int(np.flatnonzero(frame["protocol"].isin(unknown).to_numpy())[0])
        raise RecordingError(path, f"unknown protocol {unknown[0][:80]!r} (known: {', '.join(PROTOCOLS)})",
                             row=row + 1, column="protocol")
    expected = columns_for(protocols)
    for column in FAULT_COLUMNS.values():  # written before this fault kind existed: it never acted
        if column not in frame:
            frame[column] = False
    missing = [c for c in expected if c not in frame]
    if missing:
        raise RecordingError(path, f"missing column (and {len(missing) - 1} more)" if len(missing) > 1 else "missing column",
                             column=missing[0])
    extra = [c for c in frame.columns if c not in expected]
    if extra:
        raise RecordingError(path, "unknown column for the file's protocols", column=str(extra[0])[:80])
    for column in expected:
        if column in ("link", "protocol"):
            continue
        values = frame[column]
        if column in FAULT_COLUMNS.values():
            if pd.api.types.is_bool_dtype(values):
                continue
            flags = values.map(lambda v: _BOOLEANS.get(v.lower() if isinstance(v, str) else v, None))
            if flags.isna().any():
                raise RecordingError(path, "expected true or false", row=_first_row(flags.isna()), column=column)
            frame[column] = flags.astype(bool)
        elif not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            # a column pandas could not type (text, integers beyond 64 bits, booleans): numbers or blanks only
            numbers = pd.to_numeric(values.map(_number), errors="coerce")
            bad = numbers.isna() & ~values.map(_blank)
            if bad.any():
                raise RecordingError(path, "expected a number", row=_first_row(bad), column=column)
            frame[column] = numbers.astype(float)
    return protocols


def _number(value: object) -> object:
    """A cell as ``pd.to_numeric`` should see it: booleans are not numbers."""
    return None if isinstance(value, (bool, np.bool_)) else value


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _first_row(mask: pd.Series) -> int | None:
    where = np.flatnonzero(mask.to_numpy(bool))
    return int(where[0]) + 1 if where.size else None


#: What is wrong with a cell, by the code ``row_problems`` gives it.
CELL_PROBLEMS = ("", "missing count", "counts must be finite and non-negative", "counts must be whole numbers",
                 "must be a non-negative finite number (empty: not reported)", "expected a finite number",
                 "a value in a column {protocol} links do not have")


def row_problems(frame: pd.DataFrame, protocol: str) -> NDArray[np.object_]:
    """Per row of ``protocol`` (a frame of its rows, in file order): None, or "column: what is wrong"
    for the first problem: non-finite times, a window ending before it starts, a length that does not
    match its times, a window not after the link's previous one (duplicate or out of order), counts
    that are negative, non-integer or missing, amounts or levels negative, parameters missing, a value
    in another protocol's column."""
    n = len(frame)
    problem = np.full(n, None, dtype=object)

    def flag(mask: NDArray[np.bool_], column: str, message: str) -> None:
        new = mask & np.equal(problem, None)
        problem[new] = f"{column}: {message}"

    start, end, seconds = (frame[c].to_numpy(float, na_value=np.nan) for c in ("window_start", "window_end", "window_seconds"))
    with np.errstate(invalid="ignore"):
        flag(~np.isfinite(end), "window_end", "expected a finite time")
        flag(~np.isfinite(start), "window_start", "expected a finite time")
        flag(~(np.isfinite(seconds) & (seconds > 0)), "window_seconds", "expected a positive length")
        flag(~(start < end), "window_start", "the window must start before it ends")
        flag(~(np.abs(end - start - seconds) <= TIME_TOLERANCE_S + 1e-9 * np.abs(end)), "window_seconds",
             "does not match window_end - window_start")
        previous = pd.Series(end).groupby(frame["link"].to_numpy()).cummax().groupby(frame["link"].to_numpy()).shift()
        previous = previous.to_numpy(float, na_value=np.nan)
        flag(end == previous, "window_end", "duplicate window: the link's previous row ends at the same time")
        flag(end < previous, "window_end", "not after the link's previous window (rows must be in time order)")
    counts = count_columns(protocol)
    params = list(param_columns(protocol).values())
    others = [c for c in frame.columns if c not in set(protocol_columns(protocol))]
    names = [*(c.column for c in counts), *params, *others]
    values = frame[names].to_numpy(float, na_value=np.nan)
    k, p = len(counts), len(params)
    integer = np.array([kind_of(protocol, c.count) == "count" for c in counts], bool)
    code = np.zeros(values.shape, np.int8)  # per cell: 0, or the index of its problem in CELL_PROBLEMS
    with np.errstate(invalid="ignore"):
        v = values[:, :k]
        code[:, :k] = np.select(
            [integer & np.isnan(v), integer & (~np.isfinite(v) | (v < 0)), integer & (v != np.round(v)),
             ~integer & ~(np.isnan(v) | (np.isfinite(v) & (v >= 0)))], [1, 2, 3, 4], 0)
        code[:, k:k + p] = np.where(np.isfinite(values[:, k:k + p]), 0, 5)
        code[:, k + p:] = np.where(np.isnan(values[:, k + p:]), 0, 6)
    first = np.argmax(code != 0, axis=1)
    for row in np.flatnonzero(code.any(axis=1) & np.equal(problem, None)):
        column = names[first[row]]
        problem[row] = f"{column}: {CELL_PROBLEMS[code[row, first[row]]].format(protocol=protocol)}"
    return problem


def read_recording(path: str | Path) -> pd.DataFrame:
    """A whole recording, checked; RecordingError naming the file, row and column of the first problem."""
    frame = load(path)
    for protocol in check_columns(path, frame):
        rows = np.flatnonzero((frame["protocol"] == protocol).to_numpy())
        problems = row_problems(frame.iloc[rows], protocol)
        bad = np.flatnonzero(np.not_equal(problems, None))
        if bad.size:
            column, message = problems[bad[0]].split(": ", 1)
            raise RecordingError(path, message, row=int(rows[bad[0]]) + 1, column=column)
    return frame


def counts_of(frame: pd.DataFrame, protocol: str) -> dict[str, NDArray[np.float64]]:
    """The counts of rows of ``protocol`` as float arrays of shape (rows, *count shape), through its axes."""
    shapes = PROTOCOLS[protocol].count_shapes
    counts = {name: np.empty((len(frame), *shape)) for name, shape in shapes.items()}
    for c in count_columns(protocol):
        counts[c.count][(slice(None), *c.index)] = frame[c.column].to_numpy(float, na_value=np.nan)
    return counts


def params_of(frame: pd.DataFrame, protocol: str) -> dict[str, NDArray[np.float64]]:
    return {name: frame[column].to_numpy(float, na_value=np.nan) for name, column in param_columns(protocol).items()}


# --- a source of windows -------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """One window of one link, counts in its protocol's ``count_shapes`` layout (no link axis)."""

    start: float
    end: float
    counts: Mapping[str, NDArray[np.float64]]
    #: the window's length when the source knows it exactly; else ``end - start``
    seconds: float | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start if self.seconds is None else self.seconds


@dataclass(frozen=True)
class BadRow:
    """A row a source could not turn into a window (skipped, counted as the link's driver error)."""

    row: int
    column: str
    message: str

    def describe(self, path: str | Path) -> str:
        return str(RecordingError(path, self.message, self.row, self.column))


@dataclass(frozen=True)
class LinkInfo:
    """What a replayed link needs before its first window: its protocol and estimator parameters."""

    protocol: str
    params: dict[str, float]
    plan: tuple[float, float]


def link_info(path: str | Path, link: str | None) -> tuple[str, LinkInfo]:
    """(link name, protocol and parameters) of ``link`` in a recording, from the first of its rows;
    ``link`` None: the recording's only link. RecordingError if it is not there."""
    frame = load(path, link)
    if "link" not in frame or "protocol" not in frame:
        raise RecordingError(path, "missing column", column="link" if "link" not in frame else "protocol")
    names = list(dict.fromkeys(frame["link"].astype(str)))
    if link is None:
        if len(names) != 1:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise RecordingError(path, f"holds {len(names)} links ({shown}): say which one with `link`")
        link = names[0]
    if frame.empty:
        raise RecordingError(path, f"no rows of link {link!r}")
    first = frame.iloc[:1]
    protocol = str(first["protocol"].iloc[0])
    if protocol not in PROTOCOLS:
        raise RecordingError(path, f"unknown protocol {protocol[:80]!r}", row=1, column="protocol")
    missing = [c for c in (*param_columns(protocol).values(), *PLAN_COLUMNS) if c not in frame]
    if missing:
        raise RecordingError(path, "missing column", column=missing[0])
    params = {name: float(pd.to_numeric(first[column], errors="coerce").iloc[0])
              for name, column in param_columns(protocol).items()}
    bad = [name for name, v in params.items() if not math.isfinite(v)]
    if bad:
        raise RecordingError(path, "expected a finite number", row=1, column=param_columns(protocol)[bad[0]])
    plan = tuple(float(pd.to_numeric(first[c], errors="coerce").iloc[0]) for c in PLAN_COLUMNS)
    return link, LinkInfo(protocol, params, plan)  # type: ignore[arg-type]


class WindowSource(Protocol):
    """What a replayed link reads its windows from: a recording file is one, a link's event files
    (``qtelemetry.drivers.event_files``) another; any source giving ``Window`` (and ``BadRow``) in
    the link protocol's count layout replays the same way."""

    def read(self) -> list[Window | BadRow]:
        """Every window of the link in time order; RecordingError (or a DriverError with its own
        reason) if the source is unusable as a whole."""
        ...


class RecordingSource:
    """The windows of one link of a recording file, in order; bad rows come as ``BadRow``."""

    def __init__(self, path: str | Path, link: str, protocol: str):
        self.path, self.link, self.protocol = path, link, protocol

    def read(self) -> list[Window | BadRow]:
        """Every row of the link; RecordingError if the file as a whole is unusable."""
        frame = load(self.path)
        check_columns(self.path, frame)
        rows = np.flatnonzero((frame["link"] == self.link).to_numpy())
        mine = frame.iloc[rows]
        if not (mine["protocol"] == self.protocol).all():
            raise RecordingError(self.path, f"link {self.link!r} changes protocol: expected {self.protocol}",
                                 row=int(rows[np.flatnonzero((mine["protocol"] != self.protocol).to_numpy())[0]]) + 1,
                                 column="protocol")
        problems = row_problems(mine, self.protocol)
        counts = counts_of(mine, self.protocol)
        times = mine[["window_start", "window_end", "window_seconds"]].to_numpy(float, na_value=np.nan)
        out: list[Window | BadRow] = []
        for i, problem in enumerate(problems):
            if problem is not None:
                column, message = problem.split(": ", 1)
                out.append(BadRow(int(rows[i]) + 1, column, message))
            else:
                out.append(Window(times[i, 0], times[i, 1], {k: v[i] for k, v in counts.items()}, times[i, 2]))
        return out
