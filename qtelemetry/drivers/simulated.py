"""Shared machinery of simulated drivers: real-time pacing, seeded sampling, faults, key store."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import numpy as np
from pydantic import Field, model_validator

from qtelemetry.drivers.base import CountBatch, KeySupply, StrictModel
from qtelemetry.drivers.faults import EFFECTS, FaultConfig, apply_faults


class SimulatedConfig(StrictModel):
    """Fields every simulated link has: a seed and scripted faults."""

    seed: int | None = Field(None, ge=0, lt=2**63, description="random seed (0 ≤ seed < 2^63); omit for a fresh one per run")
    faults: list[FaultConfig] = Field(default_factory=list, description="scripted fault scenarios")

    @model_validator(mode="after")
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


C = TypeVar("C", bound=SimulatedConfig)
K = TypeVar("K", bound=KeyDistillingConfig)


class KeyStore:
    """Key store between the link and its applications: generation fills it, demand drains it."""

    def __init__(self, capacity_bits: float, stored_bits: float):
        self.capacity_bits = capacity_bits
        self.stored_bits = stored_bits

    def step(self, generated_bits: float, requested_bits: float) -> KeySupply:
        self.stored_bits = min(self.capacity_bits, self.stored_bits + generated_bits)
        delivered = min(requested_bits, self.stored_bits)
        self.stored_bits -= delivered
        return KeySupply(generated_bits, requested_bits, delivered, self.stored_bits, self.capacity_bits)


class SimulatedDriver(ABC, Generic[C]):
    """Emits one window of sampled counts every ``window_s`` seconds of wall time.

    Subclasses implement ``sample``. Faults, from the config or injected while running,
    modify the physical parameters of each window before sampling.
    """

    def __init__(self, config: C, window_s: float):
        self.window_s = window_s
        self.config = config
        self._faults = list(config.faults)
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(config.seed)
        self._started = self._next_start = time.time()
        self._closed = threading.Event()

    def inject(self, fault: FaultConfig) -> FaultConfig:
        """Start a fault now (its ``start_s`` counts from now); raises ValueError if it can't apply."""
        check_fault_applies(type(self.config), fault)
        shifted = fault.model_copy(update={"start_s": time.time() - self._started + fault.start_s})
        with self._lock:
            self._faults.append(shifted)
        return shifted

    def clear(self, kind: str | None = None) -> int:
        """End faults of one kind (all kinds if None); returns how many were ended."""
        with self._lock:
            kept = [f for f in self._faults if kind is not None and f.kind != kind]
            ended, self._faults = len(self._faults) - len(kept), kept
        return ended

    def effective_config(self, t: float) -> tuple[C, list[str]]:
        """The config with the faults active at ``t`` (seconds since start) applied."""
        with self._lock:
            faults = list(self._faults)
        touched = {f.effect.parameter for f in faults}
        base = {name: getattr(self.config, name) for name in touched}
        values, active = apply_faults(base, faults, t)
        return self.config.model_copy(update=values), active

    @abstractmethod
    def sample(self, rng: np.random.Generator, cfg: C) -> dict[str, np.ndarray]:
        """Counts of one window drawn with ``rng`` from the model configured by ``cfg``."""

    def key_supply(self, cfg: C) -> KeySupply | None:
        """What the link's key store reports for this window; None: the link has no key store."""
        return None

    def acquire(self) -> CountBatch:
        start = self._next_start
        self._next_start = start + self.window_s
        self._closed.wait(max(0.0, self._next_start - time.time()))
        cfg, active = self.effective_config(start - self._started)
        return CountBatch(start=start, duration_s=self.window_s, counts=self.sample(self._rng, cfg),
                          key_supply=self.key_supply(cfg), active_faults=tuple(active))

    def close(self) -> None:
        self._closed.set()


class KeyDistillingDriver(SimulatedDriver[K]):
    """A simulated link whose distilled key fills a key store that applications drain."""

    def __init__(self, config: K, window_s: float):
        super().__init__(config, window_s)
        self._store = KeyStore(config.key_buffer_capacity_bits,
                               config.key_buffer_initial_ratio * config.key_buffer_capacity_bits)

    @abstractmethod
    def secret_bits(self, cfg: K) -> float:
        """Secret key the link distils in one window under ``cfg`` (expected value, bits)."""

    def key_supply(self, cfg: K) -> KeySupply:
        return self._store.step(self.secret_bits(cfg), cfg.key_consumption_bps * self.window_s)
