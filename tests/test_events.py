"""Raw detection events → window counts: checked against pandas and plain loops, known constructions, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from qtelemetry.config import validate_yaml
from qtelemetry.drivers.base import StrictModel
from qtelemetry.drivers.event_files import EventFiles
from qtelemetry.drivers.formats import events as ev
from qtelemetry.drivers.formats.events import PS, TIME, EventError, bb84_windows, bbm92_windows, event_table, read_events
from qtelemetry.errors import ConfigError
from qtelemetry.estimation.bb84 import BB84_DECOY
from qtelemetry.estimation.entanglement import BBM92, CHSH_IDEAL, chsh
from eventfiles import bb84_columns, tag_streams, write


@pytest.fixture(params=[(7, 5, 50), (4096, 1000, 10_000), (ev.CHUNK, ev.MERGE_CHUNK, ev.READ_ROWS)],
                ids=["chunk7", "chunk4096", "chunk_default"])
def chunk(request, monkeypatch):
    """Small chunks (steps of a pass and of the merge, and rows read at a time) put window
    boundaries and sortedness checks across chunk edges, and B's read-ahead across A's."""
    set_steps(monkeypatch, request.param)
    return request.param


def set_steps(monkeypatch, steps: tuple[int, int, int]) -> None:
    for name, value in zip(("CHUNK", "MERGE_CHUNK", "READ_ROWS"), steps):
        monkeypatch.setattr(ev, name, value)


def test_bb84_counts_equal_a_pandas_groupby(chunk):
    rng = np.random.default_rng(1)
    cols = bb84_columns(rng, 20_000, 10 * PS)
    w = bb84_windows(event_table(cols, "bb84"), 0.7, 1e6, [0.5, 0.3, 0.2], epoch_s=1.7e9)
    df = pd.DataFrame(cols)
    first = cols["time_ps"][0]
    df["window"] = (df.time_ps - first) // (7 * PS // 10)
    windows = int((cols["time_ps"][-1] - first) // (7 * PS // 10))  # whole windows only
    df = df[df.window < windows]
    df["differ"] = df.bit_a != df.bit_b
    grid = dict(window=range(windows), basis_a=range(2), intensity=range(3))
    sifted = df[df.basis_a == df.basis_b]

    def table(frame, columns):
        index = pd.MultiIndex.from_product([grid[c] for c in columns], names=columns)
        return frame.groupby(columns).size().reindex(index, fill_value=0).to_numpy()

    assert len(w.start) == windows
    np.testing.assert_allclose(w.start, 1.7e9 + (first + np.arange(windows) * 7 * PS // 10) / PS)
    np.testing.assert_allclose(w.end - w.start, 0.7)
    np.testing.assert_array_equal(w.counts["detections"], table(df, ["window", "intensity"]).reshape(windows, 3))
    np.testing.assert_array_equal(w.counts["sifted"], table(sifted, ["window", "basis_a", "intensity"]).reshape(windows, 2, 3))
    np.testing.assert_array_equal(w.counts["errors"],
                                  table(sifted[sifted.differ], ["window", "basis_a", "intensity"]).reshape(windows, 2, 3))
    # pulses: 1 MHz × 0.7 s × p; key-store amounts are not in event files: not reported
    np.testing.assert_array_equal(w.counts["pulses"], np.tile([350_000, 210_000, 140_000], (windows, 1)))
    assert np.isnan(w.counts["key_generated_bits"]).all()
    assert {k: v.shape[1:] for k, v in w.counts.items()} == BB84_DECOY.count_shapes


def test_bb84_known_qber_reaches_the_estimator():
    """Events built with a 3 % bit-flip rate and realistic gains: the estimator reads 3 % back."""
    rng = np.random.default_rng(2)
    rate, window, probabilities, gains = 1e7, 1.0, np.array([0.7, 0.2, 0.1]), np.array([3e-3, 1e-3, 1e-5])
    n_per_class = rng.poisson(rate * 4 * window * probabilities * gains)  # 4 windows
    intensity = np.repeat(np.arange(3, dtype=np.uint8), n_per_class)
    n = len(intensity)
    bit_a = rng.integers(0, 2, n, dtype=np.uint8)
    cols = {"time_ps": np.sort(rng.integers(0, 4 * PS + 1, n)), "intensity": rng.permutation(intensity),
            "basis_a": rng.integers(0, 2, n, dtype=np.uint8), "bit_a": bit_a,
            "basis_b": rng.integers(0, 2, n, dtype=np.uint8), "bit_b": bit_a ^ (rng.random(n) < 0.03)}
    w = bb84_windows(event_table(cols, "bb84"), window, rate, probabilities)
    assert BB84_DECOY.consistent(w.counts).all()
    sums = {k: v.sum(axis=0, keepdims=True) for k, v in w.counts.items()}
    params = {"mu": [0.5], "nu": [0.1], "basis_bias": [0.5], "detector_efficiency": [0.1], "ec_efficiency": [1.16],
              "block_size": [1e6], "epsilon_sec": [1e-10], "epsilon_cor": [1e-15]}
    est = BB84_DECOY.estimate(sums, np.array([len(w.start) * window]), {k: np.array(v) for k, v in params.items()}, 0.99)
    sifted = sums["sifted"][0, 0, 0]
    assert abs(est["qber_z"][0] - 0.03) < 5 * np.sqrt(0.03 * 0.97 / sifted)
    assert abs(est["gain_signal"][0] - 3e-3) < 5 * np.sqrt(3e-3 / sums["pulses"][0, 0])


def coincidences_by_loop(a: dict, b: dict, delay: int, tau: int, offset: int, origin: int, width: int, n: int):
    """The BBM92 counts by a plain loop: each A tag pairs with the first B tag in [d − τ/2, d + τ/2)."""
    cells, accidentals = np.zeros((n, 4, 4, 2), int), np.zeros(n, int)
    for i, t in enumerate(a["time_ps"].tolist()):
        window = (t - origin) // width
        if not 0 <= window < n:
            continue
        for shift in (0, offset):
            for j, u in enumerate(b["time_ps"].tolist()):
                if t + delay + shift - tau // 2 <= u < t + delay + shift - tau // 2 + tau:
                    if shift:
                        accidentals[window] += 1
                    else:
                        cells[window, a["setting"][i], b["setting"][j], int(a["outcome"][i] != b["outcome"][j])] += 1
                    break
    singles = np.zeros((n, 2), int)
    for side, tags, shift in ((0, a, 0), (1, b, delay)):
        for t in tags["time_ps"].tolist():
            window = (t - shift - origin) // width
            if 0 <= window < n:
                singles[window, side] += 1
    return cells, accidentals, singles


def test_bbm92_counts_equal_a_plain_loop(chunk):
    rng = np.random.default_rng(3)
    tau, delay, width = 2_000, 50_000, 10**6
    sides = [(rng.integers(0, 4, 150), rng.integers(0, 2, 150)) for _ in "ab"]
    a, b = tag_streams(rng, rng.integers(0, 5 * width, 150), *sides, 150, 5 * width, delay, 1_500)
    w = bbm92_windows(event_table(a, "tags"), event_table(b, "tags"), width / PS, tau / PS, delay_s=delay / PS,
                      accidental_offset_s=7_000 / PS)
    origin = max(a["time_ps"][0], b["time_ps"][0] - delay)
    n = int((min(a["time_ps"][-1], b["time_ps"][-1] - delay) - origin) // width)
    cells, accidentals, singles = coincidences_by_loop(a, b, delay, tau, 7_000, origin, width, n)
    assert len(w.start) == n and w.delay_s == pytest.approx(delay / PS) and cells.sum() > 100
    np.testing.assert_array_equal(w.counts["coincidences"], cells[:, :2, :2].sum(axis=-1))
    np.testing.assert_array_equal(w.counts["errors"], [np.diagonal(c[:2, :2, 1]) for c in cells])
    np.testing.assert_array_equal(w.counts["chsh"], cells[:, 2:, 2:].reshape(n, 4, 2))
    np.testing.assert_array_equal(w.counts["accidentals"], accidentals)
    np.testing.assert_array_equal(w.counts["singles"], singles)
    np.testing.assert_array_equal(w.counts["pulses"], np.full(n, width // tau))
    assert {k: v.shape[1:] for k, v in w.counts.items()} == BBM92.count_shapes


def tag_rows(max_time: int):
    """A stream of (time, setting, outcome) rows, sorted by time: ties and empty stretches are likely."""
    row = st.tuples(st.integers(0, max_time), st.integers(0, 3), st.integers(0, 1))
    return st.lists(row, min_size=1, max_size=60).map(
        lambda rows: {name: np.array(values, np.int64 if name == TIME else np.uint8)
                      for name, values in zip((TIME, "setting", "outcome"), zip(*sorted(rows)))})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=tag_rows(1_000), b=tag_rows(1_000), tau=st.integers(1, 40), offset=st.integers(0, 200),
       width=st.integers(10, 400), delay=st.integers(-150, 150),
       steps=st.sampled_from([(2, 3, 5), (3, 2, 16), (ev.CHUNK, ev.MERGE_CHUNK, ev.READ_ROWS)]))
def test_bbm92_counts_equal_a_plain_loop_on_random_streams(monkeypatch, a, b, tau, offset, width, delay, steps):
    """Every count, bit for bit, against the O(n·m) loop: tags on window and coincidence-window
    edges, equal times, negative delays, accidentals windows overlapping the coincidence window,
    steps of a few tags."""
    set_steps(monkeypatch, steps)
    offset += tau  # the accidentals window starts at least τ after the coincidence window
    w = bbm92_windows(event_table(a, "tags"), event_table(b, "tags"), width / PS, tau / PS, delay_s=delay / PS,
                      accidental_offset_s=offset / PS)
    origin = max(a[TIME][0], b[TIME][0] - delay)
    n = max(int((min(a[TIME][-1], b[TIME][-1] - delay) - origin) // width), 0)
    cells, accidentals, singles = coincidences_by_loop(a, b, delay, tau, offset, origin, width, n)
    assert len(w.start) == n
    np.testing.assert_array_equal(w.counts["coincidences"], cells[:, :2, :2].sum(axis=-1))
    np.testing.assert_array_equal(w.counts["errors"], np.diagonal(cells[:, :2, :2, 1], axis1=1, axis2=2))
    np.testing.assert_array_equal(w.counts["chsh"], cells[:, 2:, 2:].reshape(n, 4, 2))
    np.testing.assert_array_equal(w.counts["accidentals"], accidentals)
    np.testing.assert_array_equal(w.counts["singles"], singles)



def test_bbm92_refuses_tags_whose_windows_pass_int64_and_counts_those_just_below():
    """A tag + delay − τ/2 + accidentals offset + τ (its windows' farthest end) must stay a time tag:
    beyond 2⁶³ − 1 ps the sums wrapped round and coincidences went uncounted, silently. The first
    such tag is refused with a declared reason; the tag 1 ps below the limit counts as the loop does
    (its accidentals window ends at 2⁶³ − 1: the B tag just before it is an accidental)."""
    tau, delay, offset, width = 300, 20, 300, 50
    reach = delay - tau // 2 + offset + tau
    for beyond in (0, 1):
        last = np.iinfo(np.int64).max - reach + beyond  # A's last tag: the farthest end is 2⁶³ − 1 + beyond
        a = {TIME: np.array([last - 50, last - 1, last]), "setting": np.array([0, 1, 2], np.uint8),
             "outcome": np.array([0, 1, 1], np.uint8)}
        b = {TIME: np.array([last - 40, last + 100, np.iinfo(np.int64).max - 2]), "setting": np.array([0, 1, 3], np.uint8),
             "outcome": np.array([1, 1, 0], np.uint8)}
        count = lambda **options: bbm92_windows(event_table(a, "tags"), event_table(b, "tags"), width / PS, tau / PS,
                                                accidental_offset_s=offset / PS, **options)
        if beyond:
            for options, row in (({"delay_s": delay / PS}, 2), ({"max_delay_s": 1e-6}, 0)):  # given; searched
                with pytest.raises(EventError, match="would end past the largest int64 time tag") as err:
                    count(**options)
                assert (err.value.reason, err.value.row, err.value.column) == ("invalid_value", row, TIME)
            continue
        w = count(delay_s=delay / PS)
        cells, accidentals, singles = coincidences_by_loop(a, b, delay, tau, offset, int(a[TIME][0]), width, 1)
        assert len(w.start) == 1 and cells.sum() == 2 and accidentals.sum() == 1
        np.testing.assert_array_equal(w.counts["coincidences"], cells[:, :2, :2].sum(axis=-1))
        np.testing.assert_array_equal(w.counts["errors"], np.diagonal(cells[:, :2, :2, 1], axis1=1, axis2=2))
        np.testing.assert_array_equal(w.counts["accidentals"], accidentals)
        np.testing.assert_array_equal(w.counts["singles"], singles)

def test_bbm92_finds_a_known_delay_qber_and_chsh():
    """Pairs 1,234,567 ps apart (±200 ps jitter) among as many unpaired clicks: half key rounds with
    5 % of matching-basis bits flipped, half CHSH rounds agreeing with probability (1 + V·E_ideal)/2,
    V = 0.9, so S = 2√2·0.9 (Horodecki, PLA 200, 340 (1995))."""
    rng = np.random.default_rng(4)
    pairs, delay, span = 200_000, 1_234_567, 2 * PS
    test = rng.random(pairs) < 0.5
    setting_a = rng.integers(0, 2, pairs) + 2 * test
    setting_b = rng.integers(0, 2, pairs) + 2 * test
    outcome_a = rng.integers(0, 2, pairs)
    ideal = CHSH_IDEAL[np.clip((setting_a - 2) * 2 + setting_b - 2, 0, 3)]
    differ = np.where(test, rng.random(pairs) >= (1 + 0.9 * ideal) / 2,
                      np.where(setting_a == setting_b, rng.random(pairs) < 0.05, rng.integers(0, 2, pairs)))
    t = rng.integers(0, span, pairs)
    a, b = tag_streams(rng, t, (setting_a, outcome_a), (setting_b, outcome_a ^ differ), pairs, span, delay, 200)
    w = bbm92_windows(event_table(a, "tags"), event_table(b, "tags"), 0.5, 1e-9, max_delay_s=1e-5)
    assert abs(w.delay_s * PS - delay) <= 200
    counted = w.counts["coincidences"].sum() + w.counts["chsh"].sum()
    in_windows = np.count_nonzero((t >= a["time_ps"][0]) & (t < a["time_ps"][0] + len(w.start) * PS // 2))
    assert abs(counted - in_windows) < 0.001 * in_windows
    sums = {k: v.sum(axis=0) for k, v in w.counts.items()}
    sifted = np.diagonal(sums["coincidences"])
    np.testing.assert_allclose(sums["errors"] / sifted, 0.05, atol=5 * np.sqrt(0.05 * 0.95 / sifted.min()))
    s, sigma = chsh(sums["chsh"][:, 0], sums["chsh"][:, 1])
    assert abs(s - 2 * np.sqrt(2) * 0.9) < 5 * sigma
    assert BBM92.consistent({k: v for k, v in w.counts.items()}).all()


@pytest.mark.parametrize("delay", [-777_777, 0, 9_999_000])
def test_delay_search_finds_negative_zero_and_edge_delays(delay):
    """B's tags earlier than A's, simultaneous, or near the edge of the ±10 µs search range."""
    rng = np.random.default_rng(7)
    sides = [(rng.integers(0, 4, 20_000), rng.integers(0, 2, 20_000)) for _ in "ab"]
    a, b = tag_streams(rng, rng.integers(10**8, PS // 10, 20_000), *sides, 20_000, PS // 10, delay, 100)
    assert abs(ev.find_delay(a["time_ps"], b["time_ps"], 1_000, 10**7) - delay) <= 100


def test_delay_search_refuses_streams_without_a_coincidence_peak():
    rng = np.random.default_rng(5)
    a, b = ({"time_ps": np.sort(rng.integers(0, PS, 50_000)), "setting": np.zeros(50_000, np.uint8),
             "outcome": np.zeros(50_000, np.uint8)} for _ in "ab")
    with pytest.raises(EventError, match="no coincidence peak") as err:
        bbm92_windows(event_table(a, "tags", "a.npy"), event_table(b, "tags", "b.npy"), 0.1, 1e-9)
    assert err.value.reason == "no_coincidence_peak"


# --- bad files: a clear error naming file, row and column, never a crash ---------------------------------------


@pytest.fixture(params=["npy", "parquet"])
def suffix(request):
    return request.param


def good_columns(n: int = 100_000) -> dict:
    return bb84_columns(np.random.default_rng(6), n, n * 10**6)


@pytest.mark.parametrize("change, reason, row, column", [
    (lambda c: c.pop("bit_b"), "missing_column", None, None),
    (lambda c: c.update(time_ps=c["time_ps"] / PS), "wrong_type", None, "time_ps"),
    (lambda c: c.update(basis_a=c["basis_a"].astype(float)), "wrong_type", None, "basis_a"),
    (lambda c: c.update(intensity=np.where(np.arange(len(c["intensity"])) == 5, -1, c["intensity"])),
     "invalid_value", 5, "intensity"),
    (lambda c: c.update(bit_a=np.where(np.arange(len(c["bit_a"])) == 5, -1, c["bit_a"]).astype(np.int8)),
     "invalid_value", 5, "bit_a"),
    (lambda c: c["basis_b"].__setitem__(70_001, 2), "invalid_value", 70_001, "basis_b"),
    (lambda c: c["time_ps"].__setitem__(80_000, c["time_ps"][79_999] - 1), "unsorted_time_tags", 80_000, "time_ps"),
    (lambda c: c["time_ps"].__setitem__(slice(None), c["time_ps"] - c["time_ps"][0] - 1), "invalid_value", 0,
     "time_ps"),
    (lambda c: c["time_ps"].__setitem__(-1, 2**62), "invalid_value", 99_999, "time_ps"),
], ids=["missing", "float_time", "float_flag", "negative_int64", "negative_int8", "out_of_range",
        "unsorted", "negative_time", "span"])
def test_bad_columns_name_file_row_and_column(tmp_path, suffix, change, reason, row, column):
    columns = good_columns()
    change(columns)
    path = write(tmp_path / f"events.{suffix}", columns)
    with pytest.raises(EventError) as err:
        bb84_windows(read_events(path, "bb84"), 0.001, 1e9, [0.5, 0.3, 0.2])
    assert (err.value.reason, err.value.row, err.value.column, err.value.source) == (reason, row, column, path)
    assert str(err.value).startswith(path) and (row is None or f"row {row}" in str(err.value))


def test_unreadable_and_missing_files(tmp_path):
    for name, content in [("a.parquet", b"PAR1 not really"), ("b.npy", b"\x93NUMPY garbage"), ("c.csv", b"t\n1\n")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(EventError, match=name) as err:
            list(read_events(tmp_path / name, "tags").chunks())
        assert err.value.reason == "file_unreadable"
    np.save(tmp_path / "plain.npy", np.arange(10))
    with pytest.raises(EventError, match="structured array") as err:
        list(read_events(tmp_path / "plain.npy", "tags").chunks())
    assert err.value.reason == "wrong_type"
    with pytest.raises(EventError) as err:
        read_events(tmp_path / "absent.parquet", "tags")
    assert err.value.reason == "file_missing"
    pq.write_table(pa.table({"time_ps": pa.array([1, None, 3], pa.int64()), "setting": [0, 1, 2], "outcome": [0, 1, 0]}),
                   tmp_path / "null.parquet")
    with pytest.raises(EventError) as err:
        list(read_events(tmp_path / "null.parquet", "tags").chunks())
    assert (err.value.reason, err.value.row, err.value.column) == ("invalid_value", 1, "time_ps")


DTYPES = st.sampled_from([np.int64, np.int64, np.int32, np.uint64, np.int8, np.uint8, np.uint8, np.bool_, np.float64])


@st.composite
def event_files(draw):
    """A layout's columns, one of them perhaps missing, an extra one, any dtype and values, sorted or not."""
    layout = draw(st.sampled_from(sorted(ev.LAYOUTS)))
    limits = {**ev.LAYOUTS[layout], "extra": 1}
    n = draw(st.integers(0, 40))
    missing = draw(st.sampled_from([None, None, *limits]))
    columns = {}
    for name, limit in limits.items():
        if name != missing:
            values = st.integers(-5, 2**40) if limit is None else st.integers(-1, limit + 1)
            array = np.array(draw(st.lists(values, min_size=n, max_size=n)), np.int64)
            columns[name] = (np.sort(array) if name == TIME and draw(st.booleans()) else array).astype(draw(DTYPES))
    return layout, columns


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=event_files(), fmt=st.sampled_from(["npy", "parquet", "garbage"]), garbage=st.binary(max_size=64))
def test_fuzzed_files_give_counts_or_an_event_error(tmp_path, files, fmt, garbage):
    layout, columns = files
    path = tmp_path / f"fuzz.{'npy' if fmt == 'garbage' else fmt}"
    if fmt == "garbage" or not columns:
        path.write_bytes(garbage)
    else:
        write(path, columns)
    try:
        table = read_events(path, layout)
        w = (bb84_windows(table, 1e-3, 1e9, [0.5, 0.3, 0.2]) if layout == "bb84"
             else bbm92_windows(table, table, 1e-3, 1e-10, delay_s=0.0))
    except EventError as err:
        assert str(err).startswith(str(path)) and err.reason in ev.ERROR_REASONS
    else:
        assert all(v.shape[0] == len(w.start) for v in w.counts.values())


def test_replay_config_points_at_event_files(tmp_path):
    """The config a replay driver embeds: checked fields, then the same counts as the functions give."""
    adapter = TypeAdapter(EventFiles)
    columns = good_columns(20_000)
    path = write(tmp_path / "link.parquet", columns)
    config = adapter.validate_python({"protocol": "bb84-decoy", "path": path, "window_s": 0.002,
                                      "clock_rate_hz": 1e9, "p_signal": 0.5, "p_decoy": 0.3, "p_vacuum": 0.2,
                                      "mu": 0.5, "nu": 0.1, "detector_efficiency": 0.1})
    expected = bb84_windows(event_table(columns, "bb84"), 0.002, 1e9, [0.5, 0.3, 0.2])
    for name, values in ev.concat(list(config.windows()), BB84_DECOY).counts.items():
        np.testing.assert_array_equal(values, expected.counts[name])
    class Replay(StrictModel):
        events: EventFiles

    relative = validate_yaml(Replay, "events: {protocol: bb84-decoy, path: link.parquet, window_s: 0.002, "
                             "clock_rate_hz: 1e9, p_signal: 0.5, p_decoy: 0.3, p_vacuum: 0.2, mu: 0.5, nu: 0.1, "
                             "detector_efficiency: 0.1}", "replay.yaml",
                             config_dir=tmp_path)
    assert relative.events.path == tmp_path / "link.parquet"  # from the config file's directory
    for text, field in [(f"events: {{protocol: bb84-decoy, path: {path}, window_s: 1, clock_rate_hz: 1e9, "
                         "p_signal: 0.5, p_decoy: 0.3, p_vacuum: 0.3, mu: 0.5, nu: 0.1, detector_efficiency: 0.1}",
                         "events.bb84-decoy.p_vacuum"),
                        (f"events: {{protocol: bbm92-spdc, path_a: {path}, path_b: {path}, window_s: 5e-4, "
                         "coincidence_window_s: 5e-4, detector_efficiency_a: 0.5, detector_efficiency_b: 0.5}",
                         "events.bbm92-spdc.coincidence_window_s")]:
        with pytest.raises(ConfigError) as err:
            validate_yaml(Replay, text, "replay.yaml")
        assert [p[0] for p in err.value.problems] == [field]


class _Touch:
    """Unpickling this touches a file: the proof that something in an event file was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_event_files_get_a_declared_reason_and_nothing_executes(tmp_path):
    """F8: object (pickled) arrays, plain or in a zip archive named .npy, are refused with a reason
    of their own (not the driver_exception catch-all), and never unpickled."""
    marker = tmp_path / "executed"
    payload = np.array([_Touch(marker)] * 3, dtype=object)
    np.save(tmp_path / "objects.npy", payload, allow_pickle=True)
    fields = np.empty(3, [("time_ps", object), ("setting", "u1"), ("outcome", "u1")])
    fields["time_ps"] = payload
    np.save(tmp_path / "object_field.npy", fields, allow_pickle=True)
    np.savez(tmp_path / "archive.npz", time_ps=payload)
    (tmp_path / "archive.npy").write_bytes((tmp_path / "archive.npz").read_bytes())
    for name, reason in [("objects.npy", "wrong_type"), ("object_field.npy", "wrong_type"),
                         ("archive.npy", "file_unreadable")]:
        with pytest.raises(EventError) as err:
            bbm92_windows(read_events(tmp_path / name, "tags"), read_events(tmp_path / name, "tags"), 1.0, 1e-9,
                          delay_s=0.0)
        assert err.value.reason == reason and str(err.value).startswith(str(tmp_path / name)), str(err.value)
    assert "pickled" in str(err.value) or "not a readable .npy file" in str(err.value)
    assert not marker.exists()
