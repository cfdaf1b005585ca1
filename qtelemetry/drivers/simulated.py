"""Shared machinery of simulated drivers: real-time pacing, seeded sampling, live updates."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Generic, TypeVar

import numpy as np

from qtelemetry.drivers.base import CountBatch, StrictModel

C = TypeVar("C", bound=StrictModel)


class SimulatedDriver(ABC, Generic[C]):
    """Emits one window of sampled counts every ``window_s`` seconds of wall time.

    Subclasses implement ``sample``. ``update`` swaps in a re-validated copy of the config,
    so a fault injected while running takes effect at the next window and can never leave
    the simulator in a physically impossible state.
    """

    def __init__(self, config: C, window_s: float):
        self.window_s = window_s
        self._config = config
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(getattr(config, "seed", None))
        self._next_start = time.time()
        self._closed = threading.Event()

    @property
    def config(self) -> C:
        return self._config

    def update(self, **changes: Any) -> None:
        """Change physical parameters while running; raises pydantic.ValidationError if invalid."""
        with self._lock:
            merged = self._config.model_dump() | changes
            self._config = type(self._config).model_validate(merged)

    @abstractmethod
    def sample(self, rng: np.random.Generator, cfg: C) -> dict[str, np.ndarray]:
        """Counts of one window drawn with ``rng`` from the model configured by ``cfg``."""

    def acquire(self) -> CountBatch:
        start = self._next_start
        self._next_start = start + self.window_s
        self._closed.wait(max(0.0, self._next_start - time.time()))
        with self._lock:
            cfg = self._config
        return CountBatch(start=start, duration_s=self.window_s, counts=self.sample(self._rng, cfg))

    def close(self) -> None:
        self._closed.set()
