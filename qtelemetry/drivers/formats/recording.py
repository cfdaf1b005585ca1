"""The recording file: one row per link-window of raw counts, a table in Parquet or CSV.

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

Files are read in batches of rows (``RecordingReader``), each checked as it comes, so that memory
holds one batch whatever the file's size; ``check-config``, a replayed link and ``analyse`` read
through the same checks and see the same problems. Reading is pyarrow and NumPy only: a replayed
link does not import pandas (31 MB on top of pyarrow); ``read_recording`` hands ``analyse`` a
pandas DataFrame, and writing (``recording_writer``) builds them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Protocol, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import ArrayLike, NDArray

from qtelemetry import __version__
from qtelemetry.drivers.faults import FAULT_KINDS
from qtelemetry.drivers.formats.parquet import open_parquet
from qtelemetry.drivers.params import param_problems
from qtelemetry.estimation import PROTOCOLS

if TYPE_CHECKING:  # analyse's tables; reading does not import pandas
    import pandas as pd

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
#: Columns by name: a checked batch's arrays, or a pandas DataFrame (``analyse``).
Columns = Mapping[str, ArrayLike]


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


# --- reading ---------------------------------------------------------------------------------

#: Rows read at a time: one batch's arrays stay a few MB, whatever the size of the file.
BATCH_ROWS = 8192
#: Bytes of a CSV file parsed at a time (a few thousand rows).
CSV_BLOCK = 1 << 20
#: Link names a file is surveyed for when the replayed link is not named (more: "more than").
MAX_NAMES = 100
#: A number as text: what pandas' CSV parser reads as one, and Arrow's cast to float64 parses
#: (signs, decimals, exponents, inf and infinity in any case); "nan" is not a number here.
NUMBER = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity)$"


@contextlib.contextmanager
def _readable(path: str | Path) -> Iterator[None]:
    """RecordingError for whatever a file that is not a readable table makes the OS or pyarrow raise."""
    try:
        yield
    except RecordingError:
        raise
    except FileNotFoundError:
        raise RecordingError(path, "no such file") from None
    except UnicodeDecodeError:
        raise RecordingError(path, "not a recording: neither Parquet nor UTF-8 CSV") from None
    except OSError as exc:
        raise RecordingError(path, f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # whatever a corrupt file makes pyarrow's parsers raise
        if isinstance(exc, pa.ArrowInvalid) and "UTF8" in str(exc):  # a CSV cell Arrow cannot read as text
            raise RecordingError(path, "not a recording: neither Parquet nor UTF-8 CSV") from None
        raise RecordingError(path, f"not a recording: {type(exc).__name__}: {_first_line(exc)}") from None


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


class RecordingFile:
    """A recording's table (Parquet by its magic bytes, else CSV), read in Arrow record batches:
    Parquet columns as written, CSV cells as text (empty: null), typed by the checks."""

    def __init__(self, path: str | Path):
        self.path = path
        with _readable(path):
            with open(path, "rb") as f:
                self.parquet = f.read(4) == PARQUET_MAGIC
            if self.parquet:
                schema = pq.read_schema(path)  # the footer only
                _check_version(path, schema.metadata or {})
                self.columns = [str(name) for name in schema.names]
            else:
                with pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK,
                                                                           use_threads=False)) as reader:
                    self.columns = list(reader.schema.names)  # the header (and the first block, parsed)
                duplicated = [name for name in self.columns if self.columns.count(name) > 1]
                if duplicated:
                    raise RecordingError(path, "duplicate column", column=duplicated[0][:80])

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The rows (only ``columns`` of them, if given) in batches, in file order; names (and a
        CSV file's fault flags) dictionary-encoded."""
        with _readable(self.path):
            if self.parquet:
                names = [name for name in ("link", "protocol") if name in self.columns]
                with open_parquet(self.path, read_dictionary=names) as file:
                    # one thread: as fast here, and a third less memory held by Arrow's allocator
                    yield from file.iter_batches(BATCH_ROWS, columns=columns, use_threads=False)
                pa.default_memory_pool().release_unused()  # what the pass held goes back to the system
            else:
                names = pa.dictionary(pa.int32(), pa.string())  # few distinct values: names, fault flags
                kinds = {name: names if name in ("link", "protocol") or name in FAULT_COLUMN_SET else pa.string()
                         for name in self.columns}
                convert = pa_csv.ConvertOptions(column_types=kinds,
                                                include_columns=columns or [], null_values=[""],
                                                strings_can_be_null=True)
                with pa_csv.open_csv(self.path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK, use_threads=False),
                                     convert_options=convert) as reader:
                    yield from reader


FAULT_COLUMN_SET = frozenset(FAULT_COLUMNS.values())
#: What is wrong with a cell, by the code ``_check_cells`` gives it.
CELL_PROBLEMS = ("", "missing count", "counts must be finite and non-negative", "counts must be whole numbers",
                 "must be a non-negative finite number (empty: not reported)", "expected a finite number",
                 "a value in a column {protocol} links do not have")


@dataclass(frozen=True)
class BadRow:
    """A row a source could not turn into a window (skipped, counted as the link's driver error)."""

    row: int
    column: str
    message: str

    def describe(self, path: str | Path) -> str:
        return str(RecordingError(path, self.message, self.row, self.column))


class Problems:
    """The first problem of each row of a batch: an index into the distinct (column, message) pairs."""

    def __init__(self, rows: int):
        self.code = np.full(rows, -1, np.int32)
        self.kinds: list[tuple[str, str]] = []

    def flag(self, mask: NDArray[np.bool_], column: str, message: str) -> None:
        """Rows of ``mask`` without a problem yet get this one."""
        new = mask & (self.code < 0)
        if new.any():
            self.code[new] = len(self.kinds)
            self.kinds.append((column, message))

    @property
    def ok(self) -> NDArray[np.bool_]:
        return self.code < 0


@dataclass(frozen=True)
class Checked:
    """One batch of a recording's rows, checked: each row's position in the file (from 0), its
    columns as NumPy arrays (names as str objects, numbers float with NaN for empty, fault flags
    bool), and each row's first problem."""

    rows: NDArray[np.int64]
    columns: dict[str, NDArray]
    problems: Problems

    def __len__(self) -> int:
        return len(self.rows)

    def bad_row(self, i: int) -> BadRow | None:
        code = self.problems.code[i]
        return None if code < 0 else BadRow(int(self.rows[i]) + 1, *self.problems.kinds[code])

    def first_bad(self) -> BadRow | None:
        bad = np.flatnonzero(~self.problems.ok)
        return self.bad_row(int(bad[0])) if bad.size else None


class RecordingReader:
    """One pass over a recording in batches, checked: the rows of ``link`` (None: of the file's only
    link, found by a first pass over the names), or of every link with ``every_link``.

    Whole-file problems (unreadable, names missing or unknown protocols, missing or extra columns,
    the link not there) raise RecordingError as they are found; a row's problem (a cell that is
    not a number, a count that is negative, a window out of order, a parameter out of bounds, ...)
    is that row's, in its batch's ``Problems``. Each ``next()`` reads one batch: while the first
    pass surveys the names, the batches it yields are empty.
    """

    def __init__(self, path: str | Path, link: str | None = None, every_link: bool = False):
        self.path, self.link, self.every_link = path, link, every_link
        self.protocols: list[str] = []

    def __iter__(self) -> Iterator[Checked]:
        file = RecordingFile(self.path)
        for column in ("link", "protocol"):
            if column not in file.columns:
                raise RecordingError(self.path, "missing column", column=column)
        protocols: dict[str, None] = {}
        names: dict[str, None] = {}
        start = 0
        for batch in file.batches(["link", "protocol"]):
            self._survey(batch, start, protocols, names)
            start += len(batch)
            yield Checked(np.empty(0, np.int64), {}, Problems(0))
        self._choose_link(names)
        self.protocols = list(protocols)
        expected = columns_for(self.protocols)
        missing = [c for c in expected if c not in file.columns and c not in FAULT_COLUMN_SET]
        if missing:
            raise RecordingError(self.path, f"missing column (and {len(missing) - 1} more)" if len(missing) > 1
                                 else "missing column", column=missing[0])
        extra = [c for c in file.columns if c not in expected]
        if extra:
            raise RecordingError(self.path, "unknown column for the file's protocols", column=extra[0][:80])
        order, start = _Order(), 0
        for batch in file.batches():
            rows = np.arange(start, start + len(batch))
            start += len(batch)
            mine = None if self.every_link else _rows_of(batch["link"], self.link)
            yield self._check(batch, rows if mine is None else rows[mine], mine, expected, order)

    def _survey(self, batch: pa.RecordBatch, start: int, protocols: dict[str, None], names: dict[str, None]) -> None:
        """Names present and not empty, protocols known; the protocols seen, and the link names
        (the first MAX_NAMES + 1) when the link is to be found."""
        text = {}
        for column in ("link", "protocol"):
            codes, labels = _codes(batch[column])
            named = (codes >= 0) & (codes != labels.index("")) if "" in labels else codes >= 0
            if not named.all():
                raise RecordingError(self.path, "expected a non-empty name", row=start + int(np.argmin(named)) + 1,
                                     column=column)
            text[column] = codes, labels
        codes, seen = text["protocol"]
        for k, protocol in enumerate(seen):
            if protocol not in PROTOCOLS:
                row = start + int(np.argmax(codes == k)) + 1
                raise RecordingError(self.path, f"unknown protocol {protocol[:80]!r} (known: {', '.join(PROTOCOLS)})",
                                     row=row, column="protocol")
            protocols[protocol] = None
        if self.link is None and not self.every_link:
            for name in text["link"][1]:
                if len(names) > MAX_NAMES:
                    break
                names[name] = None
        elif self.link is not None and self.link in text["link"][1]:
            names[self.link] = None

    def _choose_link(self, names: dict[str, None]) -> None:
        if self.every_link:
            return
        if self.link is None:
            if len(names) != 1:
                shown = ", ".join(list(names)[:10]) + (", ..." if len(names) > 10 else "")
                count = f"more than {MAX_NAMES}" if len(names) > MAX_NAMES else len(names)
                raise RecordingError(self.path, f"holds {count} links ({shown}): say which one with `link`")
            self.link = next(iter(names))
        elif self.link not in names:
            raise RecordingError(self.path, f"no rows of link {self.link!r}")

    def _check(self, batch: pa.RecordBatch, rows: NDArray[np.int64], mine: NDArray[np.bool_] | None,
               expected: list[str], order: "_Order") -> Checked:
        """The rows ``mine`` of ``batch`` (None: all), at positions ``rows`` in the file, checked."""
        def take(values: NDArray) -> NDArray:
            return values if mine is None else values[mine]

        problems = Problems(len(rows))
        columns: dict[str, NDArray] = {}
        for name in ("link", "protocol"):  # text: the survey saw every row named
            codes, labels = _codes(batch[name])
            columns[name] = np.array(labels, object)[take(codes)]
        for name in expected[2:]:  # after link and protocol: numbers and fault flags
            if name not in batch.schema.names:  # a fault kind added after the file was recorded: never active
                columns[name] = np.zeros(len(rows), bool)
            elif name in FAULT_COLUMN_SET:
                flags, bad = _flags(batch[name])
                problems.flag(take(bad), name, "expected true or false")
                columns[name] = take(flags)
            else:
                values, bad = _numbers(batch[name])
                problems.flag(take(bad), name, "expected a number")
                columns[name] = take(values)
        order.check(columns, problems)
        for protocol in dict.fromkeys(columns["protocol"]):
            _check_cells(columns, columns["protocol"] == protocol, protocol, problems)
        return Checked(rows, columns, problems)


# Arrow to NumPy. pyarrow imports pandas, where it is installed, the first time an array goes to
# NumPy (``to_numpy``) or a Python value goes to Arrow (``pa.array``, ``pa.scalar``, a constant
# handed to a compute function): 31 MB a replaying exporter has no use for. So arrays leave Arrow
# through their buffers; names are read dictionary-encoded (a few distinct values per batch); and
# pyarrow.compute (~8 MB, 0.5 s to import) is imported only to read numbers written as text (CSV),
# through functions that take arrays and options only.

#: Arrow types read from their buffers, and their NumPy dtype
_FIXED_WIDTH = {kind: np.dtype(name) for kind, name in (
    (pa.int8(), "int8"), (pa.int16(), "int16"), (pa.int32(), "int32"), (pa.int64(), "int64"),
    (pa.uint8(), "uint8"), (pa.uint16(), "uint16"), (pa.uint32(), "uint32"), (pa.uint64(), "uint64"),
    (pa.float16(), "float16"), (pa.float32(), "float32"), (pa.float64(), "float64"))}


def _numpy(values: pa.Array, null: object) -> NDArray:
    """An Arrow array of booleans or fixed-width numbers as NumPy, ``null`` where it has none."""
    n = len(values)
    data = values.buffers()[1] if n else None
    if data is None:  # no values at all
        return np.full(n, null)
    if pa.types.is_boolean(values.type):
        out = _bits(data, values.offset, n)
    else:
        dtype = _FIXED_WIDTH[values.type]
        out = np.frombuffer(data, dtype, count=n, offset=values.offset * dtype.itemsize)
    return out if not values.null_count else np.where(_valid(values), out, null)


def _valid(values: pa.Array) -> NDArray[np.bool_]:
    """Which cells of ``values`` are not null."""
    if pa.types.is_null(values.type):
        return np.zeros(len(values), bool)
    validity = values.buffers()[0]
    return np.ones(len(values), bool) if validity is None else _bits(validity, values.offset, len(values))


def _bits(buffer: pa.Buffer, offset: int, n: int) -> NDArray[np.bool_]:
    """Bits ``offset`` to ``offset + n`` of an Arrow bitmap (least significant bit first)."""
    return np.unpackbits(np.frombuffer(buffer, np.uint8), count=offset + n, bitorder="little")[offset:].astype(bool)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _codes(values: pa.Array) -> tuple[NDArray[np.intp], list[str]]:
    """Names as each row's index into the distinct names, in order of appearance (-1: empty
    cell, or not text), and those names."""
    if pa.types.is_dictionary(values.type):  # as read: a few distinct values and an index per row
        indices = _numpy(values.indices, -1).astype(np.intp) if _is_text(values.type.value_type) \
            else np.full(len(values), -1)
        labels = values.dictionary.to_pylist()
    else:  # a column of another kind than the reader asked for (a hand-made file): read cell by cell
        labels = values.to_pylist() if _is_text(values.type) else []
        indices = np.where(_valid(values), np.arange(len(values)), -1) if labels else np.full(len(values), -1)
    used, first = np.unique(indices, return_index=True)
    names: dict[str, int] = {}
    remap = np.full(len(labels) + 1, -1)  # the last: for -1
    for k in used[np.argsort(first)]:
        if k >= 0:
            remap[k] = names.setdefault(labels[k], len(names))
    return remap[indices], list(names)


def _rows_of(links: pa.Array, link: str) -> NDArray[np.bool_] | None:
    """Which rows are of ``link``; None if all are (a one-link file: no copy)."""
    codes, names = _codes(links)
    if names == [link]:
        return None
    return codes == names.index(link) if link in names else np.zeros(len(links), bool)


def _numbers(values: pa.Array) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A column as floats (NaN: empty, or not a number) and which cells are not a number: text
    must read as one (``NUMBER``, blanks allowed), booleans and other kinds are not numbers."""
    kind, empty = values.type, np.zeros(len(values), bool)
    if kind in _FIXED_WIDTH:
        return _numpy(values, np.nan).astype(np.float64, copy=False), empty
    if pa.types.is_dictionary(kind) or pa.types.is_decimal(kind) or _is_text(kind):
        return _parsed(values)
    return np.full(len(values), np.nan), _valid(values)  # booleans, times, bytes, ...: only empty cells pass


def _parsed(values: pa.Array) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """``_numbers`` of text (CSV cells), decimals and dictionary-encoded columns, by Arrow's kernels."""
    import pyarrow.compute as pc

    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_decimal(values.type):
        return _numpy(pc.cast(values, pa.float64(), safe=False), np.nan), np.zeros(len(values), bool)
    if not _is_text(values.type):
        return _numbers(values)
    try:  # a column written by a program: every cell a number, or empty
        parsed = _numpy(pc.cast(values, pa.float64()), np.nan)
    except pa.ArrowInvalid:  # some cell is not: each cell by ``NUMBER``
        pass
    else:  # the cast reads what NUMBER matches, and "nan" too
        return parsed, np.isnan(parsed) & _valid(values)
    text = pc.utf8_trim_whitespace(values)
    number = pc.match_substring_regex(text, NUMBER, ignore_case=True)
    parsed = _numpy(pc.cast(pc.if_else(number, text, pa.nulls(len(text), text.type)), pa.float64()), np.nan)
    blank = _numpy(pc.binary_length(text), 0) == 0
    return parsed, ~(_numpy(number, False) | blank)


def _flags(values: pa.Array) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """A fault column as booleans, and which cells are not a flag: true or false (as booleans, or
    text in any case), or the numbers 1 and 0; empty cells are not flags."""
    if pa.types.is_boolean(values.type):
        return _numpy(values, False), ~_valid(values)
    if _is_text(values.type) or pa.types.is_dictionary(values.type):  # each distinct word once
        codes, words = _codes(values)
        flags = [_flag(word) for word in words] + [None]  # code -1 (empty) reads the last
        return np.array([f is True for f in flags])[codes], np.array([f is None for f in flags])[codes]
    numbers, _ = _numbers(values)
    return numbers == 1, ~((numbers == 1) | (numbers == 0))


def _flag(word: str) -> bool | None:
    """A fault flag written as text: true or false in any case, or the number 1 or 0; else None."""
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    number = float(word.strip()) if re.fullmatch(NUMBER, word.strip(), re.IGNORECASE | re.ASCII) else None
    return {1.0: True, 0.0: False}.get(number)  # type: ignore[arg-type]


class _Order:
    """What each link's earlier rows say about its next ones: its protocol, and its latest window end."""

    def __init__(self) -> None:
        self.protocol: dict[str, str] = {}
        self.end: dict[str, float] = {}

    def check(self, columns: dict[str, NDArray], problems: Problems) -> None:
        """A link's rows keep its protocol; times finite, each window starting before it ends, of
        its recorded length and after the link's previous one (no duplicate, none out of order)."""
        links = columns["link"]
        if not len(links):
            return
        names, first, codes = np.unique(links, return_index=True, return_inverse=True)
        protocols = columns["protocol"]
        for name, row in zip(names, first):
            self.protocol.setdefault(name, protocols[row])
        expected = np.array([self.protocol[name] for name in names], object)[codes]
        changed = protocols != expected
        for protocol in dict.fromkeys(expected[changed]):
            problems.flag(changed & (expected == protocol), "protocol", f"the link's earlier rows are {protocol}")
        start, end, seconds = (columns[c] for c in ("window_start", "window_end", "window_seconds"))
        carried = np.array([self.end.get(name, np.nan) for name in names])
        previous, latest = _latest_before(end, codes, len(names))
        previous = np.fmax(previous, carried[codes])
        self.end.update(zip(names, np.fmax(latest, carried).tolist()))
        with np.errstate(invalid="ignore"):
            problems.flag(~np.isfinite(end), "window_end", "expected a finite time")
            problems.flag(~np.isfinite(start), "window_start", "expected a finite time")
            problems.flag(~(np.isfinite(seconds) & (seconds > 0)), "window_seconds", "expected a positive length")
            problems.flag(~(start < end), "window_start", "the window must start before it ends")
            problems.flag(~(np.abs(end - start - seconds) <= TIME_TOLERANCE_S + 1e-9 * np.abs(end)), "window_seconds",
                          "does not match window_end - window_start")
            problems.flag(end == previous, "window_end", "duplicate window: the link's previous row ends at the same time")
            problems.flag(end < previous, "window_end", "not after the link's previous window (rows must be in time order)")


def _latest_before(end: NDArray[np.float64], codes: NDArray[np.intp], groups: int) -> tuple[NDArray[np.float64],
                                                                                              NDArray[np.float64]]:
    """For each row, the latest ``end`` of the earlier rows of its group (NaN: none; NaN ends do not
    count), and each group's latest. Grouped running maxima in one pass: each end replaced by its
    rank, offset by its group's, so one ``maximum.accumulate`` over the rows sorted by group
    never carries a maximum across groups."""
    n = len(end)
    order = np.argsort(codes, kind="stable")
    values = end[order]
    ranked = np.argsort(values)  # NaN last
    rank = np.empty(n, np.int64)
    rank[ranked] = np.arange(n)
    rank[np.isnan(values)] = -1
    group = codes[order]
    running = np.maximum.accumulate(group * (n + 1) + rank + 1) - group * (n + 1) - 1
    first = np.r_[True, group[1:] != group[:-1]]
    latest_rank = np.r_[-1, running[:-1]]
    latest_rank[first] = -1
    by_rank = np.r_[values[ranked], np.nan]  # rank -1 reads the NaN at the end
    previous = np.empty(n)
    previous[order] = by_rank[latest_rank]
    last = np.flatnonzero(np.r_[group[1:] != group[:-1], True])
    latest = np.full(groups, np.nan)
    latest[group[last]] = by_rank[running[last]]
    return previous, latest


def _check_cells(columns: dict[str, NDArray], mine: NDArray[np.bool_], protocol: str, problems: Problems) -> None:
    """Of the rows ``mine`` of ``protocol``: counts present, non-negative whole numbers; amounts and
    levels non-negative or empty; parameters finite and within a simulated link's bounds; nothing
    in another protocol's column."""
    counts = count_columns(protocol)
    params = list(param_columns(protocol).values())
    others = [c for c in columns if c not in set(protocol_columns(protocol))]
    names = [*(c.column for c in counts), *params, *others]
    rows = np.flatnonzero(mine)
    values = np.column_stack([columns[name][rows] for name in names])
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
    which = code[np.arange(len(rows)), first].astype(np.int64) * len(names) + first  # (problem, column) of each row
    for key in np.unique(which[which >= len(names)]):
        column, problem = names[key % len(names)], CELL_PROBLEMS[key // len(names)].format(protocol=protocol)
        problems.flag(_rows_mask(len(mine), rows[which == key]), column, problem)
    finite = rows[~code[:, k:k + p].any(axis=1)]
    distinct, which = param_problems(protocol, values[np.isin(rows, finite), k:k + p])
    for d, problem in enumerate(distinct):
        if problem is not None:
            problems.flag(_rows_mask(len(mine), finite[which == d]), f"param_{problem[0]}", problem[1])


def _rows_mask(length: int, rows: NDArray[np.intp]) -> NDArray[np.bool_]:
    mask = np.zeros(length, bool)
    mask[rows] = True
    return mask


def read_recording(path: str | Path) -> "pd.DataFrame":
    """A whole recording, checked, as a pandas DataFrame (for ``analyse``, which builds tables);
    RecordingError naming the file, row and column of the first problem."""
    parts = []
    for checked in RecordingReader(path, every_link=True):
        bad = checked.first_bad()
        if bad is not None:
            raise RecordingError(path, bad.message, bad.row, bad.column)
        if len(checked):
            parts.append(checked.columns)
    if not parts:
        return pa.table({c: pa.array([], pa.string() if c in ("link", "protocol") else pa.float64())
                         for c in ID_COLUMNS}).to_pandas()
    return pa.table({name: np.concatenate([part[name] for part in parts]) for name in parts[0]}).to_pandas()


def counts_of(columns: Columns, protocol: str) -> dict[str, NDArray[np.float64]]:
    """The counts of rows of ``protocol`` as float arrays of shape (rows, *count shape), through its axes."""
    shapes = PROTOCOLS[protocol].count_shapes
    rows = len(columns[ID_COLUMNS[0]])
    counts = {name: np.empty((rows, *shape)) for name, shape in shapes.items()}
    for c in count_columns(protocol):
        counts[c.count][(slice(None), *c.index)] = np.asarray(columns[c.column], float)
    return counts


def params_of(columns: Columns, protocol: str) -> dict[str, NDArray[np.float64]]:
    return {name: np.asarray(columns[column], float) for name, column in param_columns(protocol).items()}


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
class WindowBatch(Sequence["Window | BadRow"]):
    """Consecutive windows of one link as arrays, and the rows among them that are bad; a
    ``Window`` is made when it is read, so a batch costs its arrays and no more."""

    times: NDArray[np.float64]  #: (rows, 3): start, end, length
    counts: Mapping[str, NDArray[np.float64]]  #: name -> (rows, *count shape)
    bad: Sequence[BadRow | None] = ()  #: per row, if any row is bad

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, i):  # type: ignore[override]
        if self.bad and self.bad[i] is not None:
            return self.bad[i]
        start, end, seconds = self.times[i]
        return Window(float(start), float(end), {name: values[i] for name, values in self.counts.items()}, float(seconds))


@dataclass(frozen=True)
class LinkInfo:
    """What a replayed link needs before its first window: its protocol and estimator parameters."""

    protocol: str
    params: dict[str, float]
    plan: tuple[float, float]


@dataclass(frozen=True)
class LinkSurvey:
    """A replayed link's rows read once through the checks: what it needs, and its bad rows."""

    link: str
    info: LinkInfo
    rows: int
    bad: int
    first_bad: BadRow | None


def survey_link(path: str | Path, link: str | None) -> LinkSurvey:
    """Read ``link``'s rows (None: the recording's only link) once, checked, in bounded memory.
    RecordingError for a file the replay would refuse: unreadable, wrong columns, the link not
    there, or not one usable window (its protocol and parameters come from the first usable one)."""
    reader = RecordingReader(path, link)
    info, rows, bad, first_bad = None, 0, 0, None
    for checked in reader:
        ok = checked.problems.ok
        rows, bad = rows + len(ok), bad + int(np.count_nonzero(~ok))
        first_bad = first_bad or checked.first_bad()
        if info is None and ok.any():
            first = {name: values[[int(np.argmax(ok))]] for name, values in checked.columns.items()}
            protocol = str(first["protocol"][0])
            params = {name: float(v[0]) for name, v in params_of(first, protocol).items()}
            info = LinkInfo(protocol, params, tuple(float(first[c][0]) for c in PLAN_COLUMNS))  # type: ignore[arg-type]
    if info is None:
        if first_bad is None:
            raise RecordingError(path, f"no rows of link {reader.link!r}")
        raise RecordingError(path, f"no usable window of link {reader.link!r}: each of its {rows:,} rows has a problem, "
                             f"the first: {first_bad.message}", first_bad.row, first_bad.column)
    return LinkSurvey(str(reader.link), info, rows, bad, first_bad)


class WindowSource(Protocol):
    """What a replayed link reads its windows from: a recording file is one, a link's event files
    (``qtelemetry.drivers.event_files``) another; any source giving ``Window`` (and ``BadRow``) in
    the link protocol's count layout replays the same way."""

    def batches(self) -> Iterator[Sequence[Window | BadRow]]:
        """One pass over the link's windows in time order, a batch per ``next()`` (each a bounded
        piece of work, run off the event loop; a batch may be empty); RecordingError (or a
        DriverError with its own reason) if the source is unusable as a whole."""
        ...


class RecordingSource:
    """The windows of one link of a recording file, in order; bad rows come as ``BadRow``."""

    def __init__(self, path: str | Path, link: str, protocol: str):
        self.path, self.link, self.protocol = path, link, protocol

    def batches(self) -> Iterator[WindowBatch]:
        for checked in RecordingReader(self.path, self.link):
            columns, problems = checked.columns, checked.problems
            if not len(checked):  # a batch of the survey of names, or of other links
                yield WindowBatch(np.empty((0, 3)), {})
                continue
            problems.flag(columns["protocol"] != self.protocol, "protocol", f"expected {self.protocol}")
            bad = [checked.bad_row(i) for i in range(len(checked))] if not problems.ok.all() else []
            times = np.column_stack([columns[c] for c in ("window_start", "window_end", "window_seconds")])
            yield WindowBatch(times, counts_of(columns, self.protocol) if problems.ok.any() else {}, bad)
