"""Raw time-tagged detection events → the window counts the estimators use, in one vectorised pass.

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

Every problem in a file raises ``EventError`` naming the file, row and column, with a reason
from ``ERROR_REASONS`` for a driver's error counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

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
#: Rows per step of a pass: a chunk's temporaries stay in the CPU's caches.
CHUNK = 1 << 17
#: Most windows one call produces (a garbage time tag must not allocate terabytes).
MAX_WINDOWS = 1_000_000


class EventError(DriverError):
    """An event file that cannot be turned into counts; the message names file, row and column."""

    def __init__(self, reason: str, source: str, problem: str, row: int | None = None, column: str | None = None):
        where = "".join([f", row {row}" if row is not None else "", f", column {column!r}" if column else ""])
        super().__init__(reason, f"{source}{where}: {problem}")
        self.source, self.row, self.column = source, row, column


@dataclass(frozen=True)
class EventTable:
    """The columns of one event file, types checked: time tags int64, flags uint8 (values checked by the pass)."""

    source: str  #: file name (or a label for arrays) that errors name
    layout: Layout
    columns: Mapping[str, NDArray]

    def __len__(self) -> int:
        return len(self.columns[TIME])


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
        checked[name] = _time_column(values, source) if limit is None else _flag_column(values, limit, source, name)
    if not len(checked[TIME]):
        raise EventError("invalid_value", source, "no events")
    return EventTable(source, layout, checked)


def _time_column(values: NDArray, source: str) -> NDArray[np.int64]:
    if values.dtype.kind not in "iu":
        raise EventError("wrong_type", source, f"time tags are integer picoseconds, not {values.dtype} "
                         "(float seconds are refused: multiply by 1e12 and round)", column=TIME)
    if values.dtype == np.uint64 and len(values) and values.max() > np.iinfo(np.int64).max:
        return _bad(values > np.iinfo(np.int64).max, source, TIME, "time tag beyond int64 picoseconds")
    return values.astype(np.int64, copy=False)


def _flag_column(values: NDArray, limit: int, source: str, name: str) -> NDArray[np.uint8]:
    if values.dtype == bool or values.dtype.itemsize == 1 and values.dtype.kind in "iu":
        return values.view(np.uint8)  # int8 negatives become ≥ 128: out of range in the pass
    if values.dtype.kind not in "iu":
        raise EventError("wrong_type", source, f"expected integers 0..{limit}, not {values.dtype}", column=name)
    bad = (values < 0) | (values > limit)
    if bad.any():
        _bad(bad, source, name, f"value {values[np.argmax(bad)]} is not in 0..{limit}")
    return values.astype(np.uint8)


def _bad(mask: NDArray[np.bool_], source: str, column: str, problem: str, offset: int = 0,
         reason: str = "invalid_value"):
    """Raise for the first row where ``mask`` holds."""
    raise EventError(reason, source, problem, row=offset + int(np.argmax(mask)), column=column)


def read_events(path: str | Path, layout: Layout) -> EventTable:
    """Read an event file: a ``.npy`` structured array (memory-mapped) or a ``.parquet`` table."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise EventError("file_missing", source, "no such file")
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise EventError("file_unreadable", source, f"not a readable .npy file ({exc})") from None
        if array.dtype.names is None:
            raise EventError("wrong_type", source, f"expected a structured array with fields {list(LAYOUTS[layout])}, "
                             f"got {array.dtype}")
        # one contiguous copy per column: the pass reads columns, and a record's fields are strided
        return event_table({name: np.ascontiguousarray(array[name]) for name in array.dtype.names}, layout, source)
    if path.suffix == ".parquet":
        return event_table(_read_parquet(path, layout), layout, source)
    raise EventError("file_unreadable", source, "unknown format: expected a .npy or .parquet file")


def _read_parquet(path: Path, layout: Layout) -> dict[str, NDArray]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = str(path)
    try:
        names = set(pq.read_schema(path).names)
        table = pq.read_table(path, columns=[name for name in LAYOUTS[layout] if name in names])
    except (OSError, pa.ArrowException) as exc:
        raise EventError("file_unreadable", source, f"not a readable Parquet file ({exc})") from None
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)
                or pa.types.is_floating(column.type)):
            raise EventError("wrong_type", source, f"expected integers, not {column.type}", column=name)
        if column.null_count:
            _bad(pc.is_null(column).to_numpy(zero_copy_only=False), source, name, "missing value")
        columns[name] = column.to_numpy()
    return columns


def _check_chunk(table: EventTable, start: int, stop: int) -> None:
    """Time tags sorted and ≥ 0, flags within their range, on rows [start, stop)."""
    time = table.columns[TIME]
    if start == 0 and time[0] < 0:
        raise EventError("invalid_value", table.source, f"negative time tag {time[0]}", row=0, column=TIME)
    lo = max(start - 1, 0)
    seg = time[lo:stop]
    back = seg[1:] < seg[:-1]
    if back.any():
        _bad(back, table.source, TIME, "time tag before the previous row's (time tags must be sorted)", lo + 1,
             "unsorted_time_tags")
    for name, limit in LAYOUTS[table.layout].items():
        if limit is not None and table.columns[name][start:stop].max() > limit:
            values = table.columns[name][start:stop]
            _bad(values > limit, table.source, name, f"value not in 0..{limit}", start)


def _chunks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    return ((s, min(s + CHUNK, stop)) for s in range(start, stop, CHUNK))


def _validate(table: EventTable) -> None:
    for start, stop in _chunks(0, len(table)):
        _check_chunk(table, start, stop)


def _picoseconds(seconds: float, name: str) -> int:
    ps = round(seconds * PS)
    if not np.isfinite(seconds) or ps < 1:
        raise ValueError(f"{name} must be at least 1 ps, got {seconds!r}")
    return ps


def _window_count(table: EventTable, first: int, last: int, width: int) -> int:
    """Whole windows of ``width`` ps from ``first`` up to ``last`` (the partial one at the end is dropped)."""
    n = max((last - first) // width, 0)
    if n > MAX_WINDOWS:
        raise EventError("invalid_value", table.source, f"time tags span {n} windows of {width} ps, more than "
                         f"{MAX_WINDOWS}", row=len(table) - 1, column=TIME)
    return int(n)


def _accumulate(out: NDArray[np.int64], times: NDArray[np.int64], origin: int, width: int, cells: NDArray) -> None:
    """Add a histogram of ``cells`` per window to ``out`` (windows, k); ``times`` sorted, windows outside ``out`` dropped.

    One bincount over the flattened (window, cell) index; most chunks lie inside one window and
    skip the division.
    """
    if not len(times):
        return
    k = out.shape[1]
    w0, w1 = (int(times[0]) - origin) // width, (int(times[-1]) - origin) // width
    lo, hi = max(w0, 0), min(w1, len(out) - 1)
    if lo > hi:
        return
    if w0 == w1:
        out[w0] += np.bincount(cells, minlength=k)
        return
    index = ((times - origin) // width - w0) * k + cells
    out[lo:hi + 1] += np.bincount(index, minlength=(w1 - w0 + 1) * k).reshape(-1, k)[lo - w0:hi - w0 + 1]


def _windows(protocol: LinkProtocol, origin: int, n: int, width: int, epoch_s: float,
             counts: dict[str, NDArray], delay_s: float | None = None) -> Windows:
    """Counts as floats in every shape of the protocol; amounts event files do not carry are NaN (not reported)."""
    start = (origin + width * np.arange(n, dtype=np.int64)) / PS + epoch_s
    full = {name: np.full((n, *shape), np.nan) for name, shape in protocol.count_shapes.items()}
    for name, values in counts.items():
        full[name] = np.array(values, float, order="C").reshape(n, *protocol.count_shapes[name])  # owned, writable
    return Windows(start, start + width / PS, full, delay_s)


def bb84_windows(
    events: EventTable,
    window_s: float,
    clock_rate_hz: float,
    intensity_probabilities: Sequence[float],
    epoch_s: float = 0.0,
) -> Windows:
    """Decoy-BB84 counts per window (``DecoyBB84.count_axes``) from detection records, in one pass.

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
    time = events.columns[TIME]
    origin = int(time[0])
    n = _window_count(events, origin, int(time[-1]), width)
    edges = np.searchsorted(time, origin + width * np.arange(n + 1, dtype=np.int64))  # first row of each window
    masks = np.zeros((n, 14), np.int64)
    packer = _BB84Packer()
    for w in range(n):
        for s, e in _chunks(edges[w], edges[w + 1]):
            _check_chunk(events, s, e)
            masks[w] += packer.count(events.columns, s, e)
    for s, e in _chunks(edges[n], len(events)):  # the partial window at the end: checked, not counted
        _check_chunk(events, s, e)
    by_class = masks[:, :12].reshape(n, 2, 2, 3)  # (basis, sifted/errors, (all, decoy, vacuum))
    by_class = np.concatenate([by_class[..., :1] - by_class[..., 1:].sum(axis=-1, keepdims=True), by_class[..., 1:]],
                              axis=-1)
    pulses = np.rint(clock_rate_hz * width / PS * probabilities)
    return _windows(BB84_DECOY, origin, n, width, epoch_s, {
        "pulses": np.broadcast_to(pulses, (n, 3)),
        "detections": np.stack([np.diff(edges) - masks[:, 12] - masks[:, 13], masks[:, 12], masks[:, 13]], axis=1),
        "sifted": by_class[:, :, 0],
        "errors": by_class[:, :, 1],
    })


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
        j = np.minimum(_search_sorted(b, a + (delay - half)), len(b) - 1)
        diff = b[j] - a
        near = diff[np.abs(diff - delay) <= half]
        delay = int(np.median(near)) if len(near) else delay
    return delay


def bbm92_windows(
    tags_a: EventTable,
    tags_b: EventTable,
    window_s: float,
    coincidence_window_s: float,
    *,
    delay_s: float | None = None,
    max_delay_s: float = 1e-6,
    accidental_offset_s: float | None = None,
    gate_rate_hz: float | None = None,
    epoch_s: float = 0.0,
) -> Windows:
    """Entangled-photon (BBM92 + CHSH) counts per window (``BBM92Protocol.count_axes``) from two tag streams.

    A coincidence is a B tag within [d − τ/2, d + τ/2) of an A tag (τ the coincidence window,
    d the delay: given, or found by ``find_delay`` within ±``max_delay_s``); each A tag pairs
    with the first such B tag. Both key settings → ``coincidences``/``errors`` (bits differ in
    the same basis: |Φ+⟩ correlations, Ma, Fung, Lo, PRA 76, 012307 (2007)); both CHSH settings →
    ``chsh``; a key setting with a CHSH one is neither. Accidentals: the same count at d +
    ``accidental_offset_s`` (default 10 τ; a whole number of pump periods for a pulsed source).
    Pulses are coincidence gates: ``gate_rate_hz`` × window, by default 1/τ (CW pump).
    Windows are counted on A's clock; B's tags shifted by −d.
    """
    tau = _picoseconds(coincidence_window_s, "coincidence_window_s")
    width = _picoseconds(window_s, "window_s")
    offset = _picoseconds(accidental_offset_s if accidental_offset_s is not None else 10 * tau / PS,
                          "accidental_offset_s")
    rate = gate_rate_hz if gate_rate_hz is not None else PS / tau
    if not rate > 0:
        raise ValueError(f"gate_rate_hz must be positive, got {gate_rate_hz!r}")
    for table in (tags_a, tags_b):
        _validate(table)
    ta, tb = tags_a.columns[TIME], tags_b.columns[TIME]
    delay = (round(delay_s * PS) if delay_s is not None else
             find_delay(ta, tb, tau, _picoseconds(max_delay_s, "max_delay_s"),
                        source=f"{tags_a.source}, {tags_b.source}"))
    origin = max(int(ta[0]), int(tb[0]) - delay)
    n = _window_count(tags_a, origin, min(int(ta[-1]), int(tb[-1]) - delay), width)
    # Every A tag gets a cell, 32 for "no partner": no boolean compress (slow on random masks) in the loop
    cells = np.zeros((n, 33), np.int64)  # (setting a, setting b, outcomes differ), then no partner
    accidentals = np.zeros((n, 2), np.int64)  # (no partner, partner)
    half = tau // 2
    for s, e in _chunks(0, len(tags_a)):
        t = ta[s:e]
        lo = np.searchsorted(tb, t[0] + delay - half)
        b = tb[lo:np.searchsorted(tb, t[-1] + delay + offset + tau)]
        if not len(b):
            continue
        for shift in (0, offset):
            j = np.minimum(_search_sorted(b, t + (delay + shift - half)), len(b) - 1)
            hit = b[j] - t >= delay + shift - half  # the first B tag at or after the window's start...
            hit &= b[j] - t < delay + shift - half + tau  # ...is inside it
            if shift:
                _accumulate(accidentals, t, origin, width, hit.view(np.uint8))
                continue
            j += lo
            cell = tags_a.columns["setting"][s:e] * 8 + tags_b.columns["setting"][j] * 2 + (
                tags_a.columns["outcome"][s:e] ^ tags_b.columns["outcome"][j])
            _accumulate(cells, t, origin, width, np.where(hit, cell, 32))
    cells = cells[:, :32].reshape(n, 4, 4, 2)
    bounds = origin + width * np.arange(n + 1, dtype=np.int64)
    singles = np.stack([np.diff(np.searchsorted(ta, bounds)), np.diff(np.searchsorted(tb, bounds + delay))], axis=1)
    return _windows(BBM92, origin, n, width, epoch_s, {
        "pulses": np.full(n, np.rint(rate * width / PS)),
        "coincidences": cells[:, :2, :2].sum(axis=-1),
        "errors": np.diagonal(cells[:, :2, :2, 1], axis1=1, axis2=2),
        "chsh": cells[:, 2:, 2:].reshape(n, 4, 2),
        "accidentals": accidentals[:, 1],
        "singles": singles,
    }, delay / PS)

