"""Simulated links as fleets: every link of one simulator sampled in one NumPy call per window.

Per-link physical parameters are columns of a table (one array per config field), so a model
function written once reads a single config (scalars) or a whole fleet (arrays) alike. Faults
(scripted, or injected while running) move one parameter of one link over time; they are
applied per window by looping over the active faults, never over the links.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from functools import cache
from types import SimpleNamespace
from typing import ClassVar, Generic, Sequence, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from qtelemetry.drivers.base import FleetBatch, FleetConfig, check
from qtelemetry.drivers.faults import EFFECTS, FAULT_KINDS, FaultConfig


class SimulatedConfig(FleetConfig):
    """Fields every simulated link has: a seed and scripted faults."""

    seed: int | None = Field(None, ge=0, lt=2**63, description="random seed (0 ≤ seed < 2^63); omit for a fresh one per run")
    faults: list[FaultConfig] = Field(default_factory=list, description="scripted fault scenarios")

    #: fields that are not physical parameters of the model
    NOT_PARAMETERS: ClassVar[frozenset[str]] = frozenset({"type", "seed", "faults"})

    @check
    def _faults_apply(self) -> "SimulatedConfig":
        for fault in self.faults:
            check_fault_applies(type(self), fault)
        return self


# Upper bounds of simulated links' fields: far beyond any real link, low enough that no sampled
# count or model term overflows (the exporter must run whatever config it accepts).
#: Fastest pulse or attempt rate: keeps a window's counts (rate × at most 3,600 s) far inside
#: int64, which NumPy's samplers need. Real sources run at up to a few GHz.
MAX_RATE_HZ = 1e12
#: Longest fibre, km (ten times the longest submarine cable).
MAX_LENGTH_KM = 1e5
#: Largest attenuation (dB/km) and insertion loss (dB).
MAX_LOSS_DB = 1e3
#: Largest mean photon (pair) number per pulse; decoy and SPDC sources run well below 1.
MAX_MEAN_PHOTONS = 10.0
#: Largest drift factor of a source's power.
MAX_POWER_FACTOR = 100.0
#: Largest error-correction inefficiency f (real codes: 1.05-1.5).
MAX_EC_EFFICIENCY = 10.0
#: Largest amount of key, in bits (key stores, post-processing blocks), and key demand, bits/s.
MAX_BITS = 1e18


class KeyDistillingConfig(SimulatedConfig):
    """A simulated link that distils secret key into a key store its applications draw from."""

    key_buffer_capacity_bits: float = Field(1e7, gt=0.0, le=MAX_BITS, description="size of the link's key store, bits")
    key_buffer_initial_ratio: float = Field(0.5, ge=0.0, le=1.0, description="initial fill of the key store")
    key_consumption_bps: float = Field(0.0, ge=0.0, le=MAX_BITS, description="key demand of applications, bits/s")


def check_fault_applies(config_type: type[SimulatedConfig], fault: FaultConfig) -> None:
    """A fault must move a parameter this simulator has (no visibility drop on a BB84 link)."""
    if fault.effect.parameter not in config_type.model_fields:
        kinds = sorted(k for k, e in EFFECTS.items() if e.parameter in config_type.model_fields)
        raise ValueError(f"fault kind {fault.kind!r} does not apply to this driver (applies: {', '.join(kinds)})")


@cache
def field_range(config_type: type[SimulatedConfig], name: str) -> tuple[float, float]:
    """The values a config field accepts, so a fault (any magnitude) keeps the model in its domain;
    an exclusive bound becomes the nearest float inside it."""
    low, high = -np.inf, np.inf
    for bound in config_type.model_fields[name].metadata:
        low = getattr(bound, "ge", None) if getattr(bound, "ge", None) is not None else low
        low = np.nextafter(bound.gt, np.inf) if getattr(bound, "gt", None) is not None else low
        high = getattr(bound, "le", None) if getattr(bound, "le", None) is not None else high
        high = np.nextafter(bound.lt, -np.inf) if getattr(bound, "lt", None) is not None else high
    return float(low), float(high)


def parameter_table(configs: Sequence[SimulatedConfig]) -> SimpleNamespace:
    """One array per physical parameter, indexed like ``configs`` (built once, at start)."""
    names = [n for n in type(configs[0]).model_fields if n not in SimulatedConfig.NOT_PARAMETERS]
    return SimpleNamespace(**{n: np.array([getattr(c, n) for c in configs]) for n in names})


def fleet_rng(configs: Sequence[SimulatedConfig]) -> np.random.Generator:
    """Reproducible when every link has a seed (the seeds together seed the fleet), else fresh."""
    seeds = [c.seed for c in configs]
    return np.random.default_rng(None if None in seeds else np.random.SeedSequence(seeds))


C = TypeVar("C", bound=SimulatedConfig)


class LinkFaults:
    """The fault endpoint's handle on one link of a fleet."""

    def __init__(self, fleet: "SimulatedFleet", row: int):
        self._fleet, self._row = fleet, row

    def inject(self, fault: FaultConfig) -> FaultConfig:
        """Start a fault now (its ``start_s`` counts from now); raises ValueError if it can't apply."""
        return self._fleet.inject(self._row, fault)

    def clear(self, kind: str | None = None) -> int:
        """End faults of one kind (all kinds if None); returns how many were ended."""
        return self._fleet.clear(self._row, kind)


class SimulatedFleet(ABC, Generic[C]):
    """Emits one window of sampled counts for all its links each time the runtime asks.

    A window runs from the end of the previous one to the time asked for, so a late cycle
    yields one longer window rather than lost counts. Subclasses implement ``draw``.
    """

    def __init__(self, configs: Sequence[C], started: float):
        self.config_type = type(configs[0])
        self.params = parameter_table(configs)
        self.size = len(configs)
        self._started = self._window_end = started
        self._rng = fleet_rng(configs)
        self._lock = threading.Lock()
        self._scripted: dict[int, list[FaultConfig]] = {i: list(c.faults) for i, c in enumerate(configs) if c.faults}
        self._injected: dict[int, list[FaultConfig]] = {}

    def faults(self, index: int) -> LinkFaults:
        return LinkFaults(self, index)

    def inject(self, row: int, fault: FaultConfig) -> FaultConfig:
        check_fault_applies(self.config_type, fault)
        with self._lock:
            shifted = fault.model_copy(update={"start_s": self._window_end - self._started + fault.start_s})
            self._injected.setdefault(row, []).append(shifted)
        return shifted

    def clear(self, row: int, kind: str | None) -> int:
        """End the link's faults of ``kind`` (all if None), scripted or injected; how many ended."""
        ended = 0
        with self._lock:
            for faults in (self._scripted, self._injected):
                before = faults.get(row, [])
                faults[row] = [f for f in before if kind is not None and f.kind != kind]
                ended += len(before) - len(faults[row])
        return ended

    def continue_from(self, old: "SimulatedFleet | None", rows: NDArray[np.intp], old_rows: NDArray[np.intp],
                      now: float | None = None) -> None:
        """After a reload: go on where ``old`` stopped (its window, and its links' injected faults
        at ``rows``), or, for a kind of link that is new, start the first window ``now``."""
        if old is None:
            self._window_end = now if now is not None else self._window_end
            return
        self._window_end = old._window_end
        with old._lock:
            injected = {int(new): list(old._injected[int(was)]) for new, was in zip(rows, old_rows)
                        if int(was) in old._injected}
        with self._lock:
            self._injected.update(injected)

    def effective_parameters(self, t: float) -> tuple[SimpleNamespace, NDArray[np.bool_]]:
        """Parameters under the faults active at ``t`` (seconds since start), and which faults act."""
        active = np.zeros((self.size, len(FAULT_KINDS)), bool)
        with self._lock:
            faults = [(row, f) for faults in (self._scripted, self._injected) for row, fs in faults.items() for f in fs]
        if not faults:
            return self.params, active
        params = SimpleNamespace(**vars(self.params))
        touched: set[str] = set()
        for row, fault in faults:
            level = fault.level(t)
            if level <= 0:
                continue
            name = fault.effect.parameter
            if name not in touched:
                setattr(params, name, getattr(params, name).astype(float))
                touched.add(name)
            column = getattr(params, name)
            column[row] = np.clip(fault.effect.apply(column[row], fault.strength, level), *field_range(self.config_type, name))
            active[row, FAULT_KINDS.index(fault.kind)] = True
        return params, active

    def sample(self, now: float) -> FleetBatch:
        start, self._window_end = self._window_end, max(now, self._window_end)
        duration = self._window_end - start
        params, active = self.effective_parameters(start - self._started)
        counts = self.draw(self._rng, params, duration)
        return FleetBatch(duration_s=duration, counts=counts, faults=active)

    @abstractmethod
    def draw(self, rng: np.random.Generator, p: SimpleNamespace, duration_s: float) -> dict[str, NDArray[np.float64]]:
        """Counts of every link over ``duration_s`` under parameters ``p`` (arrays over links)."""


K = TypeVar("K", bound=KeyDistillingConfig)


class KeyDistillingFleet(SimulatedFleet[K]):
    """A fleet whose distilled key fills each link's key store, which applications drain.

    Applications drain it twice over: the configured ``key_consumption_bps`` once per window,
    and requests made through ``withdraw`` (a simulated KME handing out keys) at any time.
    """

    def __init__(self, configs: Sequence[K], started: float):
        super().__init__(configs, started)
        self.capacity_bits = self.params.key_buffer_capacity_bits.astype(float)
        self.stored_bits = self.params.key_buffer_initial_ratio * self.capacity_bits
        self._base_rate = self.secret_key_rate_bps(self.params)
        #: key asked for and taken through ``withdraw`` since the last window, bits per link
        self._asked, self._taken = np.zeros(self.size), np.zeros(self.size)

    def key_store(self, row: int) -> tuple[float, float]:
        """(stored, capacity) bits of link ``row``'s store now (thread-safe)."""
        with self._lock:
            return float(self.stored_bits[row]), float(self.capacity_bits[row])

    def withdraw(self, row: int, bits: float) -> bool:
        """Take ``bits`` from link ``row``'s store if it holds that much, all or nothing (thread-safe).

        The request counts as requested key in the next window, and as delivered if it was served.
        """
        with self._lock:
            self._asked[row] += bits
            if bits > self.stored_bits[row]:
                return False
            self.stored_bits[row] -= bits
            self._taken[row] += bits
            return True

    def take(self, rows: NDArray[np.intp], bits: NDArray[np.float64]) -> NDArray[np.float64]:
        """Take up to ``bits`` from the stores of ``rows`` now (the key relay, after a window);
        returns what was taken. The caller counts it in the window it has just sampled."""
        with self._lock:
            taken = np.minimum(np.maximum(bits, 0.0), self.stored_bits[rows])
            self.stored_bits[rows] -= taken
        return taken

    @abstractmethod
    def secret_key_rate_bps(self, p: SimpleNamespace) -> NDArray[np.float64]:
        """Secret key rate each link distils under ``p`` (expected value, bit/s)."""

    @abstractmethod
    def draw_counts(self, rng: np.random.Generator, p: SimpleNamespace, duration_s: float) -> dict[str, NDArray[np.float64]]:
        """The protocol's own counts, without the key store."""

    def draw(self, rng: np.random.Generator, p: SimpleNamespace, duration_s: float) -> dict[str, NDArray[np.float64]]:
        rate = self._base_rate if p is self.params else self.secret_key_rate_bps(p)
        return self.draw_counts(rng, p, duration_s) | self.step_key_store(rate * duration_s, p.key_consumption_bps * duration_s)

    def continue_from(self, old: "SimulatedFleet | None", rows: NDArray[np.intp], old_rows: NDArray[np.intp],
                      now: float | None = None) -> None:
        """As for any fleet, and each continued link keeps the key its store holds."""
        super().continue_from(old, rows, old_rows, now)
        if isinstance(old, KeyDistillingFleet):
            with old._lock:
                kept = old.stored_bits[old_rows]
            with self._lock:
                self.stored_bits[rows] = np.minimum(kept, self.capacity_bits[rows])

    def step_key_store(self, generated: NDArray[np.float64], requested: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
        """Generation fills each store up to its capacity, then demand takes what is there."""
        with self._lock:
            filled = np.minimum(self.capacity_bits, self.stored_bits + generated)
            delivered = np.minimum(requested, filled)
            self.stored_bits = filled - delivered
            stored = self.stored_bits.copy()
            requested, delivered = requested + self._asked, delivered + self._taken
            self._asked, self._taken = np.zeros(self.size), np.zeros(self.size)
        return {"key_generated_bits": generated, "key_requested_bits": np.asarray(requested, float),
                "key_delivered_bits": delivered, "key_stored_bits": stored, "key_capacity_bits": self.capacity_bits}
