"""Property: for any interleaving of readings, failures and cycles, every accepted count is folded
exactly once, the sliding window holds exactly the last windows, and no counter goes backwards."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_drivers import DeviceConfig, make_config

from qtelemetry.drivers.base import CountBatch
from qtelemetry.runtime.runtime import Runtime

LINKS = 3
WINDOWS = 3
COUNTS = ("pulses", "detections", "sifted", "errors")


@st.composite
def reading(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Consistent decoy-BB84 counts: errors ≤ sifted ≤ detections ≤ pulses, per intensity."""
    pulses = np.array(draw(st.lists(st.integers(0, 1000), min_size=3, max_size=3)), float)
    detections = np.floor(pulses * draw(st.floats(0, 1)))
    z = np.floor(detections * draw(st.floats(0, 0.5)))
    x = np.floor(detections * draw(st.floats(0, 0.5)))
    sifted = np.stack([z, x])
    return {"pulses": pulses, "detections": detections, "sifted": sifted,
            "errors": np.floor(sifted * draw(st.floats(0, 1)))}


operation = st.one_of(
    st.tuples(st.just("put"), st.integers(0, LINKS - 1), reading(), st.booleans()),
    st.tuples(st.just("fail"), st.integers(0, LINKS - 1), st.sampled_from(["timeout", "driver_exception"])),
    st.tuples(st.just("cycle")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=40))
def test_accepted_counts_are_folded_exactly_once(operations):
    runtime = Runtime(make_config({f"l{i}": DeviceConfig() for i in range(LINKS)}, sliding_windows=WINDOWS))
    accepted = {k: np.zeros((LINKS, *s)) for k, s in {"pulses": (3,), "detections": (3,), "sifted": (2, 3),
                                                       "errors": (2, 3)}.items()}
    since_cycle = {k: np.zeros_like(v) for k, v in accepted.items()}
    folded: list[dict[str, np.ndarray]] = []  # per cycle, what it folded per link
    had = np.zeros(LINKS, bool)  # links with a reading since the last cycle
    batches = np.zeros(LINKS)
    before = runtime.snapshot
    for step in [*operations, ("cycle",)]:
        if step[0] == "put":
            _, link, counts, corrupt = step
            if corrupt:  # an impossible reading: more detections than pulses
                counts = counts | {"detections": counts["pulses"] + 1}
            ok = runtime.accept(f"l{link}", CountBatch(0.0, 1.0, counts), 1.0)
            assert ok is not corrupt
            if ok:
                batches[link] += 1
                had[link] = True
                for k in COUNTS:
                    since_cycle[k][link] += counts[k]
        elif step[0] == "fail":
            runtime.reject(f"l{step[1]}", step[2], "test")
        else:
            snap = runtime.cycle(now=2.0)
            for k in COUNTS:
                accepted[k] += since_cycle[k]
            folded.append(since_cycle | {"had": had})
            since_cycle, had = {k: np.zeros_like(v) for k, v in accepted.items()}, np.zeros(LINKS, bool)
            totals = snap.groups["bb84-decoy"].totals
            sums = runtime.windows["bb84-decoy"].sums
            for k in COUNTS:
                np.testing.assert_array_equal(totals[k], accepted[k])
                # each link's window: its last WINDOWS cycles that brought it data
                for link in range(LINKS):
                    with_data = [f[k][link] for f in folded if f["had"][link]]
                    expected = np.sum(with_data[-WINDOWS:], axis=0) if with_data else 0
                    np.testing.assert_array_equal(sums[k][link], expected)
            np.testing.assert_array_equal(snap.batches, batches)
            for name in ("batches", "errors", "skipped"):
                assert np.all(getattr(snap, name) >= getattr(before, name)), name
            assert snap.sequence == before.sequence + 1
            before = snap
