"""Raw time-tagged detection events → the window counts the estimators use, chunk by chunk from disk.

Labs record detections, not tidy counts. Two layouts, one row per time tag (see docs/event-files.md):

- ``bb84``: one row per detection of a prepare-and-measure (decoy BB84) link, as the sifting
  software joins Bob's time tagger with Alice's transmitter log: ``time_ps``, Alice's
  ``intensity`` (0 signal, 1 decoy, 2 vacuum), ``basis_a``/``bit_a``, Bob's ``basis_b``/``bit_b``
  (basis 0 = Z, 1 = X). Pulses are not detections, and a tagger does not see them: the pulses
  sent per intensity in a window are their expected number, clock rate × window × the
  intensity's probability (relative error ~1/√pulses: 10⁻⁴ at 10⁸, far below the detections').
- ``tags``: one row per click at one side of an entangled-photon link: ``time_ps``, ``setting``
  (0 = Z, 1 = X key bases; 2, 3 = the CHSH analysers a0, a1 at A or b0, b1 at B) and
  ``outcome`` (0/1). Coincidences between the two sides' streams are pairs within the
  coincidence window after removing their relative delay, which is searched for when not given.

Time tags are int64 picoseconds, as time taggers output them (float seconds are refused: a float64
of seconds loses picoseconds after ~75 minutes), sorted, ≥ 0. Windows are whole ``window_s`` periods from the
first tag; the partial window at the end is dropped. ``Windows.start``/``end`` are seconds on the
tagger's clock plus ``epoch_s`` (the Unix time of tag 0, if known).

A file is read ``READ_ROWS`` records at a time (``.npy`` by plain reads after its header, Parquet
by record batches), checked and counted as it comes: memory holds a chunk and the windows not yet
complete, whatever the file's size, and ``iter_bb84_windows``/``iter_bbm92_windows`` hand out the
windows each chunk completes. Every problem in a file raises ``EventError`` naming the file, row
and column, with a reason from ``ERROR_REASONS`` for a driver's error counter.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping, Protocol, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qtelemetry.errors import DriverError
from qtelemetry.estimation.bb84 import BB84_DECOY
from qtelemetry.estimation.entanglement import BBM92
from qtelemetry.estimation.protocols import LinkProtocol

TIME = "time_ps"
#: Columns of each layout and the largest value of each flag column (the time column has none).
LAYOUTS: dict[str, dict[str, int | None]] = {
    "bb84": {TIME: None, "intensity": 2, "basis_a": 1, "bit_a": 1, "basis_b": 1, "bit_b": 1},
    "tags": {TIME: None, "setting": 3, "outcome": 1},
}
Layout = Literal["bb84", "tags"]
ERROR_REASONS = ("file_missing", "file_unreadable", "missing_column", "wrong_type", "invalid_value",
                 "unsorted_time_tags", "no_coincidence_peak")
PS = 10**12  # picoseconds per second
#: Rows per step of a pass: a step's temporaries (a byte or a bit per row) stay in the CPU's caches,
#: and its few dozen NumPy calls cost little per row (2¹⁹ rows: decoy BB84 ~20 % faster than 2¹⁷).
CHUNK = 1 << 19
#: A tags per step of the coincidence merge: its int64 keys stay in the CPU's caches.
MERGE_CHUNK = 1 << 17
#: Records read from a file at a time (13 MB of decoy-BB84 records).
READ_ROWS = 1 << 20
#: Above every time tag: the end of a stream, for searches that may run past its last tag.
SENTINEL = np.iinfo(np.int64).max
#: Most windows one file gives (a garbage time tag must not make a pass count empty windows for ever).
MAX_WINDOWS = 1_000_000


class EventError(DriverError):
    """An event file that cannot be turned into counts; the message names file, row and column."""

    def __init__(self, reason: str, source: str, problem: str, row: int | None = None, column: str | None = None):
        where = "".join([f", row {row}" if row is not None else "", f", column {column!r}" if column else ""])
        super().__init__(reason, f"{source}{where}: {problem}")
        self.source, self.row, self.column = source, row, column


@dataclass(frozen=True)
class EventChunk:
    """Consecutive rows of an event file, types checked: time tags int64, flags uint8 (values checked by the pass)."""

    offset: int  #: the row of the first one in the file, from 0
    columns: Mapping[str, NDArray]

    def __len__(self) -> int:
        return len(self.columns[TIME])

    def steps(self) -> Iterator["EventChunk"]:
        """The chunk in steps of ``CHUNK`` rows."""
        for s, e in _chunks(0, len(self)):
            yield EventChunk(self.offset + s, {name: values[s:e] for name, values in self.columns.items()})


class EventSource(Protocol):
    """Rows of one layout, in file order, a chunk at a time: a file on disk or arrays in memory."""

    source: str  #: file name (or a label for arrays) that errors name
    layout: Layout

    def chunks(self) -> Iterator[EventChunk]:
        """One pass over the rows; EventError for a file that cannot be read."""
        ...


@dataclass(frozen=True)
class EventTable:
    """The columns of one layout in memory, types checked (``event_table``)."""

    source: str
    layout: Layout
    columns: Mapping[str, NDArray]

    def __len__(self) -> int:
        return len(self.columns[TIME])

    def chunks(self) -> Iterator[EventChunk]:
        for start in range(0, len(self), READ_ROWS):
            yield EventChunk(start, {name: values[start:start + READ_ROWS] for name, values in self.columns.items()})


@dataclass(frozen=True)
class Windows:
    """Counts per window of one link, shaped (windows, *protocol.count_shapes[name])."""

    start: NDArray[np.float64]  #: seconds: tagger clock + epoch_s
    end: NDArray[np.float64]
    counts: dict[str, NDArray[np.float64]]
    #: entangled-photon links: delay of B's tags after A's that coincidences were counted at (found or given)
    delay_s: float | None = None


def event_table(columns: Mapping[str, ArrayLike], layout: Layout, source: str = "<arrays>") -> EventTable:
    """Check a layout's columns are present, one-dimensional, of equal length and integer-typed."""
    checked = _checked_columns(columns, layout, source, 0)
    if not len(checked[TIME]):
        raise EventError("invalid_value", source, "no events")
    return EventTable(source, layout, checked)


def _checked_columns(columns: Mapping[str, ArrayLike], layout: Layout, source: str, offset: int) -> dict[str, NDArray]:
    """The layout's columns of rows from ``offset``, types and lengths checked (flag values: by the pass)."""
    wanted = LAYOUTS[layout]
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise EventError("missing_column", source, f"missing column(s) {missing}; expected {list(wanted)}")
    checked: dict[str, NDArray] = {}
    for name, limit in wanted.items():
        values = np.asarray(columns[name])
        if values.ndim != 1:
            raise EventError("wrong_type", source, f"expected one value per row, got shape {values.shape}", column=name)
        if len(values) != len(checked.get(TIME, values)):
            raise EventError("invalid_value", source, f"{len(values)} rows, {TIME!r} has {len(checked[TIME])}",
                             column=name)
        checked[name] = (_time_column(values, source, offset) if limit is None
                         else _flag_column(values, limit, source, name, offset))
    return checked


def _time_column(values: NDArray, source: str, offset: int) -> NDArray[np.int64]:
    _check_dtype(values.dtype, TIME, None, source)
    if values.dtype == np.uint64 and len(values) and values.max() > np.iinfo(np.int64).max:
        _bad(values > np.iinfo(np.int64).max, source, TIME, "time tag beyond int64 picoseconds", offset)
    return values.astype(np.int64, copy=False)


def _flag_column(values: NDArray, limit: int, source: str, name: str, offset: int) -> NDArray[np.uint8]:
    _check_dtype(values.dtype, name, limit, source)
    if values.dtype == bool or values.dtype.itemsize == 1:
        return values.view(np.uint8)  # int8 negatives become ≥ 128: out of range in the pass
    bad = (values < 0) | (values > limit)
    if bad.any():
        _bad(bad, source, name, f"value {values[np.argmax(bad)]} is not in 0..{limit}", offset)
    return values.astype(np.uint8)


def _check_dtype(dtype: np.dtype, name: str, limit: int | None, source: str) -> None:
    """Time tags integers, flags integers or booleans; objects (pickled data) never."""
    if dtype.hasobject:
        raise EventError("wrong_type", source, "Python objects (pickled data) are refused: expected integers",
                         column=name)
    if limit is None and dtype.kind not in "iu":
        raise EventError("wrong_type", source, f"time tags are integer picoseconds, not {dtype} "
                         "(float seconds are refused: multiply by 1e12 and round)", column=TIME)
    if limit is not None and dtype.kind not in "biu":
        raise EventError("wrong_type", source, f"expected integers 0..{limit}, not {dtype}", column=name)


def _bad(mask: NDArray[np.bool_], source: str, column: str, problem: str, offset: int = 0,
         reason: str = "invalid_value"):
    """Raise for the first row where ``mask`` holds."""
    raise EventError(reason, source, problem, row=offset + int(np.argmax(mask)), column=column)


def read_events(path: str | Path, layout: Layout) -> "EventFile":
    """An event file to read chunk by chunk: a ``.npy`` structured array or a ``.parquet`` table."""
    path = Path(path)
    if not path.exists():
        raise EventError("file_missing", str(path), "no such file")
    if path.suffix not in (".npy", ".parquet"):
        raise EventError("file_unreadable", str(path), "unknown format: expected a .npy or .parquet file")
    return EventFile(path, layout)


@dataclass(frozen=True)
class EventFile:
    """An event file on disk, read ``READ_ROWS`` rows at a time, nothing kept between chunks."""

    path: Path
    layout: Layout

    @property
    def source(self) -> str:
        return str(self.path)

    def chunks(self) -> Iterator[EventChunk]:
        reader = self._npy_chunks if self.path.suffix == ".npy" else self._parquet_chunks
        try:
            yield from reader()
        except (OSError, EOFError) as exc:  # gone, or unreadable, while read
            reason = "file_missing" if isinstance(exc, FileNotFoundError) else "file_unreadable"
            raise EventError(reason, self.source, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None

    def _npy_chunks(self) -> Iterator[EventChunk]:
        """A .npy file's records by plain reads after its header: never unpickled, never mapped whole."""
        with open(self.path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f".npy format version {version} (this reads 1.0 and 2.0)")
                shape, _, dtype = read_header(f)
            except ValueError as exc:
                raise EventError("file_unreadable", self.source, f"not a readable .npy file ({exc})") from None
            if dtype.names is None or len(shape) != 1:
                if dtype.hasobject:
                    raise EventError("wrong_type", self.source, "Python objects (pickled data) are refused: expected "
                                     f"a structured array with fields {list(LAYOUTS[self.layout])}")
                raise EventError("wrong_type", self.source, f"expected a structured array with fields "
                                 f"{list(LAYOUTS[self.layout])}, got {dtype} of shape {shape}")
            missing = [name for name in LAYOUTS[self.layout] if name not in dtype.names]
            if missing:
                raise EventError("missing_column", self.source, f"missing column(s) {missing}; "
                                 f"expected {list(LAYOUTS[self.layout])}")
            for name, limit in LAYOUTS[self.layout].items():
                _check_dtype(dtype[name], name, limit, self.source)
            if not shape[0]:
                raise EventError("invalid_value", self.source, "no events")
            buffer = np.empty(min(shape[0], READ_ROWS), dtype)
            for start in range(0, shape[0], READ_ROWS):
                records = buffer[:min(READ_ROWS, shape[0] - start)]
                got = f.readinto(memoryview(records).cast("B"))
                if got != records.nbytes:
                    raise EventError("file_unreadable", self.source, f"truncated: {start + (got or 0) // dtype.itemsize:,} "
                                     f"of {shape[0]:,} records")
                # one contiguous copy per column: the pass reads columns, and a record's fields are strided
                yield EventChunk(start, _checked_columns({name: np.ascontiguousarray(records[name])
                                                          for name in LAYOUTS[self.layout]}, self.layout, self.source, start))

    def _parquet_chunks(self) -> Iterator[EventChunk]:
        import pyarrow as pa
        import pyarrow.compute as pc

        from qtelemetry.drivers.formats.parquet import open_parquet

        wanted = list(LAYOUTS[self.layout])
        try:
            with open_parquet(self.path) as file:
                names = set(file.schema_arrow.names)
                missing = [name for name in wanted if name not in names]
                if missing:
                    raise EventError("missing_column", self.source, f"missing column(s) {missing}; expected {wanted}")
                for name in wanted:
                    kind = file.schema_arrow.field(name).type
                    if not (pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_floating(kind)):
                        raise EventError("wrong_type", self.source, f"expected integers, not {kind}", column=name)
                if not file.metadata.num_rows:
                    raise EventError("invalid_value", self.source, "no events")
                start = 0
                for batch in file.iter_batches(READ_ROWS, columns=wanted):
                    columns = {}
                    for name in wanted:
                        column = batch.column(name)
                        if column.null_count:
                            _bad(pc.is_null(column).to_numpy(zero_copy_only=False), self.source, name, "missing value", start)
                        columns[name] = column.to_numpy()
                    yield EventChunk(start, _checked_columns(columns, self.layout, self.source, start))
                    start += batch.num_rows
        except pa.ArrowException as exc:
            raise EventError("file_unreadable", self.source, f"not a readable Parquet file ({exc})") from None


class _Pass:
    """Checks that a layout's rows are sorted and in range, across chunks."""

    def __init__(self, events: EventSource):
        self.events, self.last = events, -1

    def check(self, chunk: EventChunk) -> None:
        time = chunk.columns[TIME]
        source = self.events.source
        if chunk.offset == 0 and time[0] < 0:
            raise EventError("invalid_value", source, f"negative time tag {time[0]}", row=0, column=TIME)
        for s, e in _chunks(0, len(time)):
            before = time[s - 1] if s else self.last
            seg = time[s:e]
            back = seg[1:] < seg[:-1]
            if seg[0] < before:
                _bad(np.array([True]), source, TIME, "time tag before the previous row's (time tags must be sorted)",
                     chunk.offset + s, "unsorted_time_tags")
            if back.any():
                _bad(back, source, TIME, "time tag before the previous row's (time tags must be sorted)",
                     chunk.offset + s + 1, "unsorted_time_tags")
            for name, limit in LAYOUTS[self.events.layout].items():
                if limit is not None and chunk.columns[name][s:e].max() > limit:
                    _bad(chunk.columns[name][s:e] > limit, source, name, f"value not in 0..{limit}", chunk.offset + s)
        self.last = int(time[-1])


def _check_reach(time: NDArray[np.int64], reach: int, source: str, offset: int) -> None:
    """EventError at the first tag whose farthest bound (tag + ``reach`` ps: a coincidence or
    accidentals window after the delay) passes the int64 range: refused, never wrapped around."""
    if len(time) and int(time[-1]) > SENTINEL - reach:
        _bad(time > SENTINEL - reach, source, TIME, f"time tag within {reach:,} ps of 2⁶³ ps: its coincidence and "
             "accidentals windows (after the delay) would end past the largest int64 time tag", offset)


def _chunks(start: int, stop: int, size: int | None = None) -> Iterator[tuple[int, int]]:
    size = size or CHUNK
    return ((s, min(s + size, stop)) for s in range(start, stop, size))


def _picoseconds(seconds: float, name: str) -> int:
    ps = round(seconds * PS)
    if not np.isfinite(seconds) or ps < 1:
        raise ValueError(f"{name} must be at least 1 ps, got {seconds!r}")
    return ps


class _Tally:
    """Counts per window of the windows not handed out yet: rows from window ``first`` on, grown as
    windows come, at most ``MAX_WINDOWS`` windows from the origin."""

    def __init__(self, cells: int, source: str):
        self.first, self.counts, self.source = 0, np.zeros((0, cells), np.int64), source

    def rows(self, w0: int, w1: int) -> NDArray[np.int64]:
        """The rows of windows w0..w1 (≥ ``first``, < ``MAX_WINDOWS``: see ``check_span``), grown as needed."""
        need = w1 + 1 - self.first
        if need > len(self.counts):
            grown = np.zeros((max(need, 2 * len(self.counts)), self.counts.shape[1]), np.int64)
            grown[:len(self.counts)] = self.counts
            self.counts = grown
        return self.counts[w0 - self.first:w1 + 1 - self.first]

    def check_span(self, times: NDArray[np.int64], origin: int, width: int, offset: int) -> None:
        """EventError at the first tag (rows from file row ``offset``) beyond ``MAX_WINDOWS`` windows."""
        if len(times) and (int(times[-1]) - origin) // width >= MAX_WINDOWS:
            row = offset + int(np.searchsorted(times, origin + MAX_WINDOWS * width))
            raise EventError("invalid_value", self.source, f"time tags span more than {MAX_WINDOWS} windows",
                             row=row, column=TIME)

    def add(self, times: NDArray[np.int64], origin: int, width: int, cells: NDArray | None, offset: int) -> None:
        """A histogram of ``cells`` (None: one cell, every tag in it) per window of ``times`` (sorted;
        rows from file row ``offset``); tags before the origin are dropped. The window edges are
        found in the tags (a few binary searches), not the window of each tag (a division each)."""
        if len(times) and times[0] < origin:
            keep = int(np.searchsorted(times, origin))
            times, offset = times[keep:], offset + keep
            cells = cells[keep:] if cells is not None else None
        if not len(times):
            return
        self.check_span(times, origin, width, offset)
        k = self.counts.shape[1]
        w0, w1 = (int(times[0]) - origin) // width, (int(times[-1]) - origin) // width
        rows = self.rows(w0, w1)
        edges = np.searchsorted(times, origin + width * np.arange(w0 + 1, w1 + 1, dtype=np.int64))
        per_window = np.diff(edges, prepend=0, append=len(times))
        if cells is None:
            rows[:, 0] += per_window
        elif w0 == w1:
            rows[0] += np.bincount(cells, minlength=k)
        else:
            index = np.repeat(np.arange(0, len(per_window) * k, k), per_window)
            index += cells
            rows[:] += np.bincount(index, minlength=len(per_window) * k).reshape(-1, k)

    def take(self, upto: int) -> NDArray[np.int64]:
        """The counts of windows ``first``..``upto`` − 1, handed out (and forgotten)."""
        n = max(upto - self.first, 0)
        if n:
            self.rows(self.first, upto - 1)  # windows no tag reached are zeros
        out, self.counts = self.counts[:n].copy(), self.counts[n:]
        self.first += n
        return out


def _windows(protocol: LinkProtocol, origin: int, first: int, width: int, epoch_s: float,
             counts: dict[str, NDArray], delay_s: float | None = None) -> Windows:
    """Windows ``first``.. from the origin, counts as floats in every shape of the protocol; amounts
    event files do not carry are NaN (not reported)."""
    n = len(next(iter(counts.values())))
    start = (origin + width * np.arange(first, first + n, dtype=np.int64)) / PS + epoch_s
    full = {name: np.full((n, *shape), np.nan) for name, shape in protocol.count_shapes.items()}
    for name, values in counts.items():
        full[name] = np.array(values, float, order="C").reshape(n, *protocol.count_shapes[name])  # owned, writable
    return Windows(start, start + width / PS, full, delay_s)


def concat(parts: Sequence[Windows], protocol: LinkProtocol) -> Windows:
    """Successive windows of one link as one (none: no window)."""
    if not parts:
        return Windows(np.empty(0), np.empty(0), {name: np.empty((0, *shape)) for name, shape in protocol.count_shapes.items()})
    return Windows(np.concatenate([w.start for w in parts]), np.concatenate([w.end for w in parts]),
                   {name: np.concatenate([w.counts[name] for w in parts]) for name in parts[0].counts},
                   parts[0].delay_s)


def bb84_windows(events: EventSource, window_s: float, clock_rate_hz: float,
                 intensity_probabilities: Sequence[float], epoch_s: float = 0.0) -> Windows:
    """Every window of ``iter_bb84_windows`` at once."""
    return concat(list(iter_bb84_windows(events, window_s, clock_rate_hz, intensity_probabilities, epoch_s)), BB84_DECOY)


def iter_bb84_windows(
    events: EventSource,
    window_s: float,
    clock_rate_hz: float,
    intensity_probabilities: Sequence[float],
    epoch_s: float = 0.0,
) -> Iterator[Windows]:
    """Decoy-BB84 counts per window (``DecoyBB84.count_axes``) from detection records, one chunk of
    the file per ``next()``: the windows that chunk completed (perhaps none).

    Sifted = bases match, error = sifted with bits that differ. Pulses per intensity are
    clock_rate × window × probability (rounded), the expected number Alice sent. Chunks are cut
    at window edges, so each costs a few dozen NumPy calls (~0.1 ms): windows of fewer than
    ~10⁴ records are bound by that, not by the records.
    """
    probabilities = np.asarray(intensity_probabilities, float)
    if probabilities.shape != (3,) or np.any(probabilities < 0) or abs(probabilities.sum() - 1.0) > 1e-9:
        raise ValueError("intensity_probabilities must be three probabilities (signal, decoy, vacuum) summing to 1")
    if not clock_rate_hz > 0:
        raise ValueError(f"clock_rate_hz must be positive, got {clock_rate_hz!r}")
    width = _picoseconds(window_s, "window_s")
    pulses = np.rint(clock_rate_hz * width / PS * probabilities)
    checks, tally, packer = _Pass(events), _Tally(15, events.source), _BB84Packer()
    origin = None

    def windows(upto: int) -> Windows | None:
        first = tally.first
        masks = tally.take(upto)
        if not len(masks):
            return None
        n = len(masks)
        by_class = masks[:, :12].reshape(n, 2, 2, 3)  # (basis, sifted/errors, (all, decoy, vacuum))
        by_class = np.concatenate([by_class[..., :1] - by_class[..., 1:].sum(axis=-1, keepdims=True),
                                   by_class[..., 1:]], axis=-1)
        return _windows(BB84_DECOY, origin, first, width, epoch_s, {
            "pulses": np.broadcast_to(pulses, (n, 3)),
            "detections": np.stack([masks[:, 14] - masks[:, 12] - masks[:, 13], masks[:, 12], masks[:, 13]], axis=1),
            "sifted": by_class[:, :, 0],
            "errors": by_class[:, :, 1],
        })

    for chunk in events.chunks():
        for step in chunk.steps():  # checked, then counted while it is in the CPU's caches
            checks.check(step)
            time = step.columns[TIME]
            origin = int(time[0]) if origin is None else origin
            w0, w1 = (int(time[0]) - origin) // width, (int(time[-1]) - origin) // width
            tally.check_span(time, origin, width, step.offset)
            rows = tally.rows(w0, w1)
            edges = np.searchsorted(time, origin + width * np.arange(w0 + 1, w1 + 1, dtype=np.int64))
            for w, (s, e) in enumerate(itertools.pairwise([0, *edges, len(time)])):
                rows[w, :14] += packer.count(step.columns, s, e)
                rows[w, 14] += e - s
        done = windows(w1)
        if done is not None:
            yield done
    if origin is None:
        raise EventError("invalid_value", events.source, "no events")
    done = windows((checks.last - origin) // width)  # the partial window at the end is dropped
    if done is not None:
        yield done


class _BB84Packer:
    """Counts of one chunk of detection records from bit-packed columns: 64 records per uint64 word.

    The 14 counts are popcounts of ANDs of the packed masks, in one ``bitwise_count`` call:
    for each basis b, S_b = bases match in b, E = bits differ, I1/I2 = decoy/vacuum:
    S_b, S_b·I1, S_b·I2, S_b·E, S_b·E·I1, S_b·E·I2 (b = Z, X), then I1, I2. Measured: half the
    CPU time of a histogram of a combined cell index (``np.bincount``), which costs ~3 ns a record.
    """

    def __init__(self) -> None:
        words = -(-CHUNK // 64)
        self.bytes = np.zeros((6, 8 * words), np.uint8)
        self.rows = np.empty((14, words), np.uint64)

    def count(self, c: Mapping[str, NDArray], s: int, e: int) -> NDArray[np.int64]:
        n_bytes, words = -(-(e - s) // 8), -(-(e - s) // 64)
        intensity = c["intensity"][s:e]
        for row, bits in enumerate((c["basis_a"][s:e], c["basis_b"][s:e], c["bit_a"][s:e], c["bit_b"][s:e],
                                    intensity & 1, intensity & 2)):
            self.bytes[row, :n_bytes] = np.packbits(bits)
        self.bytes[:, n_bytes:8 * words] = 0
        basis_a, basis_b, bit_a, bit_b, decoy, vacuum = self.bytes.view(np.uint64)[:, :words]
        r = self.rows[:, :words]
        match, x = r[0], r[6]
        np.invert(np.bitwise_xor(basis_a, basis_b, out=match), out=match)  # padding bits become 1 here
        np.bitwise_and(match, basis_a, out=x)
        np.bitwise_xor(match, x, out=match)  # Z: matching bases, not X
        differ = np.bitwise_xor(bit_a, bit_b, out=bit_a)
        for base in (0, 6):
            np.bitwise_and(r[base], differ, out=r[base + 3])
            for k in (base, base + 3):
                np.bitwise_and(r[k], decoy, out=r[k + 1])
                np.bitwise_and(r[k], vacuum, out=r[k + 2])
        r[12], r[13] = decoy, vacuum
        counts = np.bitwise_count(r).sum(axis=1, dtype=np.uint32).astype(np.int64)  # uint32: 4× faster than the default
        counts[0] -= 64 * words - (e - s)  # the padding bits of Z (all other rows are ANDs with a padded-0 mask)
        return counts


def _search_sorted(haystack: NDArray[np.int64], needles: NDArray[np.int64]) -> NDArray[np.intp]:
    """``np.searchsorted(haystack, needles)`` for sorted needles, by one merge instead of a binary search each.

    Both as keys 2v (needle) and 2v + 1 (haystack), relative to the smallest value so the shift
    cannot overflow; a stable sort of the two sorted runs is one timsort merge. The k-th needle
    lands after k needles and as many haystack values as are below it ("left" side: ties first).
    """
    if not len(haystack):
        return np.zeros(len(needles), np.intp)
    base = min(haystack[0], needles[0])
    keys = np.concatenate([(needles - base) << 1, ((haystack - base) << 1) | 1])
    keys.sort(kind="stable")
    return np.flatnonzero((keys & 1) == 0) - np.arange(len(needles))


#: Bins of the folded cross-correlation: its accidental background per bin falls as 1/bins, so a
#: peak of pair fraction p stands p·√bins standard deviations above it (2^20: p ≥ 0.5 % for 5σ).
FOLD_BINS = 1 << 20


def find_delay(time_a: NDArray[np.int64], time_b: NDArray[np.int64], bin_ps: int, max_delay_ps: int,
               sample: int = 1 << 20, source: str = "<arrays>") -> int:
    """Delay (ps) of B's tags after A's that maximises coincidences, within ±``max_delay_ps``.

    Coarse: cross-correlate the two streams' tags binned at ``bin_ps`` and folded modulo
    ``FOLD_BINS`` bins, by FFT (Ho, Lamas-Linares, Kurtsiefer, New J. Phys. 11, 045011 (2009));
    the peak must stand 5σ above the flat accidental background. Fine: the median of the
    differences between A's tags and the nearest B tag around the coarse peak. Uses the first
    ``sample`` tags of A (the fine step the first 65,536) and the B tags in their span.
    """
    a = time_a[:sample]
    b = time_b[np.searchsorted(time_b, a[0] - max_delay_ps):np.searchsorted(time_b, a[-1] + max_delay_ps)]
    lags = -(-max_delay_ps // bin_ps)
    size = max(FOLD_BINS, 1 << int(4 * lags).bit_length())
    fold = [np.bincount((t // bin_ps) & (size - 1), minlength=size) for t in (a, b)]
    xc = np.fft.irfft(np.conj(np.fft.rfft(fold[0])) * np.fft.rfft(fold[1]), size)
    candidates = np.r_[0:lags + 1, size - lags:size]
    peak = candidates[np.argmax(xc[candidates])]
    background = len(a) * len(b) / size
    if xc[peak] - background < 5.0 * np.sqrt(max(background, 1.0)):
        raise EventError("no_coincidence_peak", source, f"no coincidence peak within ±{max_delay_ps} ps: "
                         f"highest {xc[peak]:.0f} pairs per {bin_ps} ps bin over a background of {background:.1f}"
                         " (give the delay instead)")
    delay = (peak if peak <= lags else peak - size) * bin_ps
    a = a[:1 << 16]
    for half in (2 * bin_ps, bin_ps // 2):  # around the coarse peak, then ±½ bin around the median
        # a binary search each: 2¹⁶ needles in up to 4 × 2²⁰ tags (a merge would sort them all, 6× the CPU)
        j = np.minimum(np.searchsorted(b, a + (delay - half)), len(b) - 1)
        diff = b[j] - a
        near = diff[np.abs(diff - delay) <= half]
        delay = int(np.median(near)) if len(near) else delay
    return delay


def bbm92_windows(tags_a: EventSource, tags_b: EventSource, window_s: float, coincidence_window_s: float,
                  **options: float | None) -> Windows:
    """Every window of ``iter_bbm92_windows`` at once."""
    return concat(list(iter_bbm92_windows(tags_a, tags_b, window_s, coincidence_window_s, **options)),  # type: ignore[arg-type]
                  BBM92)


class _Buffered:
    """B's tags from the last A step's coincidence windows on, read ahead chunk by chunk as A's need
    them, checked and counted as singles once each; each tag's setting and outcome as one code,
    2 × setting + outcome."""

    def __init__(self, events: EventSource, tally: _Tally, delay: int, width: int):
        self.events, self.tally, self.delay, self.width = events, tally, delay, width
        self.chunks, self.checks = events.chunks(), _Pass(events)
        self.time, self.code = np.empty(0, np.int64), np.empty(0, np.uint8)
        self.ended = False
        self.origin: int | None = None
        self._read()

    def _read(self) -> None:
        chunk = next(self.chunks, None)
        if chunk is None:
            self.ended = True
            return
        self.checks.check(chunk)
        if self.origin is not None:
            self.tally.add(chunk.columns[TIME], self.origin + self.delay, self.width, None, chunk.offset)
        else:
            self.pending = chunk  # counted once the origin is known
        self.time = np.concatenate([self.time, chunk.columns[TIME]])
        self.code = np.concatenate([self.code, (chunk.columns["setting"] << 1) | chunk.columns["outcome"]])

    def start(self, origin: int) -> None:
        self.origin = origin
        pending = self.pending
        self.tally.add(pending.columns[TIME], origin + self.delay, self.width, None, pending.offset)

    def cover(self, low: int, high: int) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
        """B's tags in [``low``, ``high``) then ``SENTINEL``, and their codes then 0; those before
        ``low`` are forgotten."""
        keep = int(np.searchsorted(self.time, low))
        self.time, self.code = self.time[keep:], self.code[keep:]
        while not self.ended and (not len(self.time) or self.time[-1] < high):
            self._read()
        stop = int(np.searchsorted(self.time, high))
        return np.append(self.time[:stop], SENTINEL), np.append(self.code[:stop], np.uint8(0))


def iter_bbm92_windows(
    tags_a: EventSource,
    tags_b: EventSource,
    window_s: float,
    coincidence_window_s: float,
    *,
    delay_s: float | None = None,
    max_delay_s: float = 1e-6,
    accidental_offset_s: float | None = None,
    gate_rate_hz: float | None = None,
    epoch_s: float = 0.0,
) -> Iterator[Windows]:
    """Entangled-photon (BBM92 + CHSH) counts per window (``BBM92Protocol.count_axes``) from two tag
    streams, one chunk of A's file per ``next()``: the windows it completed (perhaps none).

    A coincidence is a B tag within [d − τ/2, d + τ/2) of an A tag (τ the coincidence window,
    d the delay: given, or found by ``find_delay`` within ±``max_delay_s`` from the files'
    beginnings); each A tag pairs with the first such B tag. Both key settings →
    ``coincidences``/``errors`` (bits differ in the same basis: |Φ+⟩ correlations, Ma, Fung, Lo,
    PRA 76, 012307 (2007)); both CHSH settings → ``chsh``; a key setting with a CHSH one is
    neither. Accidentals: the same count at d + ``accidental_offset_s`` (default 10 τ; a whole
    number of pump periods for a pulsed source). Pulses are coincidence gates: ``gate_rate_hz`` ×
    window, by default 1/τ (CW pump). Windows are counted on A's clock; B's tags shifted by −d.
    B is read alongside A, a chunk ahead of A's coincidence windows at most.
    """
    tau = _picoseconds(coincidence_window_s, "coincidence_window_s")
    width = _picoseconds(window_s, "window_s")
    offset = _picoseconds(accidental_offset_s if accidental_offset_s is not None else 10 * tau / PS,
                          "accidental_offset_s")
    rate = gate_rate_hz if gate_rate_hz is not None else PS / tau
    if not rate > 0:
        raise ValueError(f"gate_rate_hz must be positive, got {gate_rate_hz!r}")
    delay = (round(delay_s * PS) if delay_s is not None else
             _search_delay(tags_a, tags_b, tau, _picoseconds(max_delay_s, "max_delay_s")))
    # per A tag one cell: 2 × (setting a, setting b, outcomes differ), + 64 without a partner, + 1
    # with one in the accidentals window; A's singles are the sum
    cells = _Tally(128, tags_a.source)
    b = _Buffered(tags_b, _Tally(1, tags_b.source), delay, width)
    checks, origin, half = _Pass(tags_a), None, tau // 2
    reach = delay - half + offset + tau  # from an A tag to the end of its accidentals window, the farthest

    def windows(upto: int) -> Windows | None:
        first = cells.first
        c, singles_b = cells.take(upto), b.tally.take(upto)
        n = len(c)
        if not n:
            return None
        c = c.reshape(n, 64, 2)
        pairs = c.sum(axis=-1)[:, :32].reshape(n, 4, 4, 2)
        return _windows(BBM92, origin, first, width, epoch_s, {
            "pulses": np.full(n, np.rint(rate * width / PS)),
            "coincidences": pairs[:, :2, :2].sum(axis=-1),
            "errors": np.diagonal(pairs[:, :2, :2, 1], axis1=1, axis2=2),
            "chsh": pairs[:, 2:, 2:].reshape(n, 4, 2),
            "accidentals": c[:, :, 1].sum(axis=1),
            "singles": np.stack([c.sum(axis=(1, 2)), singles_b[:, 0]], axis=1),
        }, delay / PS)

    for chunk in tags_a.chunks():
        checks.check(chunk)
        _check_reach(chunk.columns[TIME], reach, tags_a.source, chunk.offset)
        ta = chunk.columns[TIME]
        if origin is None:
            if not len(b.time):
                raise EventError("invalid_value", tags_b.source, "no events")
            origin = max(int(ta[0]), int(b.time[0]) - delay)
            b.start(origin)
        code_a = (chunk.columns["setting"] << 3) | chunk.columns["outcome"]  # XOR B's code: the cell
        for s, e in _chunks(0, len(ta), MERGE_CHUNK):
            t = ta[s:e]
            after, code_b = b.cover(int(t[0]) + delay - half, int(t[-1]) + reach)
            low = t + (delay - half)  # each A tag's coincidence window [low, low + τ)
            j = _search_sorted(after[:-1], low)  # one merge of the two streams per step: B's first tag ≥ low
            partner = after[j]  # where there is none, the sentinel
            cell = code_a[s:e] ^ code_b[j]  # 8 × setting a + 2 × setting b + (outcomes differ)
            cell |= (partner >= low + tau).view(np.uint8) << 5  # + 32 without a partner in the window
            cell <<= 1
            # the accidentals window's first B tag: the partner's or the next, but for a few
            low += offset
            late = after[j + (partner < low)]
            short = np.flatnonzero(late < low)
            late[short] = after[np.searchsorted(after, low[short])]
            cell += late < low + tau
            cells.add(t, origin, width, cell, chunk.offset + s)
        # complete: the windows both streams have passed (B's shifted by −d); the partial window at
        # the end of either is dropped
        done = windows((min(checks.last, b.checks.last - delay) - origin) // width)
        if done is not None:
            yield done
    if origin is None:
        raise EventError("invalid_value", tags_a.source, "no events")


def _search_delay(tags_a: EventSource, tags_b: EventSource, tau: int, max_delay: int, sample: int = 1 << 20) -> int:
    """``find_delay`` on the first ``sample`` tags of A and B's tags in their span (at most 4 × ``sample``)."""
    a = _prefix(tags_a.chunks(), sample, None)
    if not len(a):
        raise EventError("invalid_value", tags_a.source, "no events")
    _check_reach(a, max_delay + 3 * tau, tags_a.source, 0)  # the search reaches the range + a bin, the fine step 2 more
    b = _prefix(tags_b.chunks(), 4 * sample, int(a[-1]) + max_delay)
    return find_delay(a, b, tau, max_delay, sample, source=f"{tags_a.source}, {tags_b.source}")


def _prefix(chunks: Iterator[EventChunk], most: int, until: int | None) -> NDArray[np.int64]:
    """The first time tags of a file: at most ``most``, up to ``until`` (ps) if given."""
    parts, count = [], 0
    for chunk in chunks:
        time = chunk.columns[TIME]
        parts.append(time[:most - count] if until is None else time[:min(most - count, int(np.searchsorted(time, until)))])
        count += len(parts[-1])
        if count >= most or (until is not None and time[-1] >= until):
            break
    return np.concatenate(parts) if parts else np.empty(0, np.int64)
