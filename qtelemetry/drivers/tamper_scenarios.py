"""Accelerated-time runs of many simulated decoy-BB84 links through the tamper detectors.

Each window is drawn for all links at once from the simulator's channel model
(``simulated_bb84.sample_window``) and folded into the same detector code the exporter runs
(``changedetect.update``), so a scenario that would take a month of wall time takes seconds. A
fault is the simulator's own: from window ``change_at`` on, one parameter is moved to full
strength as ``faults.EFFECTS`` says. Used by ``bench/tamper.py`` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np
from numpy.typing import NDArray

from qtelemetry.drivers.faults import EFFECTS
from qtelemetry.drivers.simulated import parameter_table
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config, sample_window
from qtelemetry.estimation import changedetect
from qtelemetry.tamperconfig import TamperConfig

#: Called after every window with (window index, that window's counts, the detector state).
Observer = Callable[[int, dict[str, NDArray[np.float64]], changedetect.DetectorState], None]


def links(n: int, **fields: float) -> SimpleNamespace:
    """Parameter table of ``n`` identical simulated-bb84 links (config defaults, ``fields`` set)."""
    return parameter_table([SimulatedBB84Config(type="simulated-bb84", **fields)] * n)


def with_fault(p: SimpleNamespace, kind: str, magnitude: float | None = None) -> SimpleNamespace:
    """The links of ``p`` under fault ``kind`` at full strength (the kind's default magnitude if None)."""
    effect = EFFECTS[kind]
    moved = effect.apply(getattr(p, effect.parameter), effect.default_magnitude if magnitude is None else magnitude, 1.0)
    return SimpleNamespace(**{**vars(p), effect.parameter: moved})


def settings(n: int, **fields: float) -> changedetect.Settings:
    """Detector settings of ``n`` links: ``TamperConfig`` defaults, ``fields`` set."""
    config = TamperConfig(**fields)
    return changedetect.Settings(*(np.full(n, float(getattr(config, f))) for f in (
        "mean_time_between_false_alarms_seconds", "warmup_seconds", "qber_shift", "decoy_gain_shift",
        "vacuum_gain_factor")))


@dataclass
class Run:
    """What the detectors did: per link and detector, the first alarm's window (NaN: none) and,
    with ``rearm``, how many alarms (each one re-arms the link at once, baseline kept) by detector
    and in all (a window where two detectors alarm is one event of the link)."""

    first_alarm: NDArray[np.float64]
    alarms: NDArray[np.int64]
    events: NDArray[np.int64]
    state: changedetect.DetectorState


def simulate(before: SimpleNamespace, after: SimpleNamespace | None, change_at: int, windows: int, window_s: float,
             config: changedetect.Settings, rng: np.random.Generator, rearm: bool = False,
             observe: Observer | None = None) -> Run:
    """Run ``windows`` windows of ``window_s`` seconds; ``after`` replaces ``before`` from ``change_at`` on."""
    n = np.asarray(before.clock_rate_hz).size
    state = changedetect.DetectorState(n)
    rows = np.arange(n)
    duration = np.full(n, window_s)
    first = np.full((n, len(changedetect.DETECTORS)), np.nan)
    alarms = np.zeros((n, len(changedetect.DETECTORS)), np.int64)
    events = np.zeros(n, np.int64)
    for t in range(windows):
        p = before if after is None or t < change_at else after
        counts = sample_window(p, rng, np.round(p.clock_rate_hz * window_s))
        changedetect.update(state, rows, counts, duration, config)
        new = state.alarm & np.isnan(first)
        first[new] = t
        if rearm:
            alarms += state.alarm
            alarmed = state.alarm.any(axis=1)
            events += alarmed
            state.rearm(np.flatnonzero(alarmed), relearn=False)
        if observe is not None:
            observe(t, counts, state)
    return Run(first, alarms, events, state)
