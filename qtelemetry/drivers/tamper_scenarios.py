"""Accelerated-time runs of many simulated links through the tamper detectors.

Each window is drawn for all links at once from a simulator's channel model (decoy BB84 or
entangled photons, ``sample_window``) and folded into the same detector code the exporter runs
(``changedetect.update``), so a scenario that would take a month of wall time takes seconds. A
fault is the simulator's own: from window ``change_at`` on, one parameter is moved to full
strength as ``faults.EFFECTS`` says. Used by ``bench/tamper.py`` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from qtelemetry.drivers import simulated_bb84, simulated_spdc
from qtelemetry.drivers.faults import EFFECTS
from qtelemetry.drivers.simulated import parameter_table
from qtelemetry.estimation import changedetect
from qtelemetry.estimation.tamper_statistics import STATISTICS
from qtelemetry.tamperconfig import TamperConfig, detector_settings, link_mean_times, resolve

#: Called after every window with (window index, that window's counts, the detector state).
Observer = Callable[[int, dict[str, NDArray[np.float64]], changedetect.DetectorState], None]
#: Simulator -> (its config, its outcome model, its window sampler).
SIMULATORS: dict[str, tuple[Any, Callable[..., Any], Callable[..., dict[str, NDArray[np.float64]]]]] = {
    "simulated-bb84": (simulated_bb84.SimulatedBB84Config, simulated_bb84.click_model, simulated_bb84.sample_window),
    "simulated-spdc": (simulated_spdc.SimulatedSPDCConfig, simulated_spdc.outcome_probabilities,
                       simulated_spdc.sample_window),
}


@dataclass(frozen=True)
class Links:
    """``n`` identical simulated links of one simulator: its parameter table (arrays over links)."""

    simulator: str
    params: SimpleNamespace

    @property
    def protocol(self) -> str:
        return SIMULATORS[self.simulator][0].protocol

    @property
    def n(self) -> int:
        return int(np.size(self.params.clock_rate_hz))

    @cached_property
    def model(self) -> Any:
        """The simulator's outcome probabilities of every link, computed once."""
        return SIMULATORS[self.simulator][1](self.params)

    def sample(self, rng: np.random.Generator, window_s: float) -> dict[str, NDArray[np.float64]]:
        """One window of every link's counts."""
        return SIMULATORS[self.simulator][2](self.params, rng, np.round(self.params.clock_rate_hz * window_s), self.model)


def links(n: int, simulator: str = "simulated-bb84", **fields: float) -> Links:
    """``n`` identical links of ``simulator`` (config defaults, ``fields`` set)."""
    config = SIMULATORS[simulator][0]
    return Links(simulator, parameter_table([config(type=simulator, **fields)] * n))


def join(*groups: Links) -> Links:
    """The links of ``groups`` (of one simulator) as one fleet, in order."""
    fields = vars(groups[0].params)
    return Links(groups[0].simulator,
                 SimpleNamespace(**{k: np.concatenate([getattr(g.params, k) for g in groups]) for k in fields}))


def with_fault(links: Links, kind: str, magnitude: float | None = None) -> Links:
    """``links`` under fault ``kind`` at full strength (the kind's default magnitude if None)."""
    effect = EFFECTS[kind]
    p = links.params
    moved = effect.apply(getattr(p, effect.parameter), effect.default_magnitude if magnitude is None else magnitude, 1.0)
    return replace(links, params=SimpleNamespace(**{**vars(p), effect.parameter: moved}))


def settings(n: int, fleet_links: int | None = None, **fields: Any) -> changedetect.Settings:
    """Detector settings of ``n`` links: exporter defaults and ``fields`` (of ``exporter.tamper`` or
    ``links[].tamper``); each link's mean time between false alarms is its own if ``fields`` sets it,
    else its share of the fleet budget among ``fleet_links`` links (default ``n``)."""
    own = fields.pop("mean_time_between_false_alarms_seconds", None)
    exporter = TamperConfig(**fields)
    fleet = exporter.fleet_mean_time_between_false_alarms_seconds
    mean_time = own if own is not None else link_mean_times(fleet, [None] * (fleet_links or n))[0]
    return detector_settings([resolve(exporter, None)] * n, np.full(n, mean_time))


@dataclass
class Run:
    """What the detectors did: per link and detector, the first alarm's window (NaN: none) and,
    with ``rearm``, how many alarms each statistic raised (each restarts that statistic at once,
    baseline kept) and how many windows of each link had an alarm."""

    first_alarm: NDArray[np.float64]
    alarms: NDArray[np.int64]
    events: NDArray[np.int64]
    state: changedetect.DetectorState


def simulate(before: Links, after: Links | None, change_at: int, windows: int, window_s: float,
             config: changedetect.Settings, rng: np.random.Generator, rearm: bool = False,
             observe: Observer | None = None) -> Run:
    """Run ``windows`` windows of ``window_s`` seconds; ``after`` replaces ``before`` from ``change_at`` on."""
    n = before.n
    state = changedetect.DetectorState(STATISTICS[before.protocol](config.qber_shifts.shape[1]), n)
    rows = np.arange(n)
    duration = np.full(n, window_s)
    first = np.full((n, len(state.statistics.detectors)), np.nan)
    alarms = np.zeros((n, len(state.statistics.names)), np.int64)
    events = np.zeros(n, np.int64)
    for t in range(windows):
        links = before if after is None or t < change_at else after
        counts = links.sample(rng, window_s)
        changedetect.update(state, rows, counts, duration, config)
        first[state.alarm & np.isnan(first)] = t
        if rearm:
            events += state.alarm.any(axis=1)
            alarms += changedetect.restart(state, rows)
        if observe is not None:
            observe(t, counts, state)
    return Run(first, alarms, events, state)
