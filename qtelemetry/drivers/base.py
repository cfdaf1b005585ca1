"""What a driver hands the estimation core: the raw counts of one link over one window.

A driver knows how to talk to one kind of source and nothing about Prometheus. The
runtime calls ``acquire`` from the link's own worker thread once per acquisition window, so a
driver may block on I/O; a stalled driver delays only its own link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class KeySupply:
    """Key material of one window as the link's key store reports it, in bits.

    Never key material itself, only amounts (ETSI GS QKD 014 status reports the same:
    stored_key_count × key_size and max_key_count × key_size).
    """

    generated_bits: float  #: secret key added to the store during the window
    requested_bits: float  #: key asked for by applications during the window
    delivered_bits: float  #: key handed to applications during the window
    stored_bits: float  #: level of the store at the end of the window
    capacity_bits: float  #: size of the store


@dataclass(frozen=True)
class CountBatch:
    """Counts of one link over one acquisition window.

    ``counts`` maps count names to arrays whose names and shapes are fixed by the link's
    protocol (see ``qtelemetry.estimation.protocols``), e.g. for decoy BB84
    ``pulses[intensity]`` and ``errors[basis, intensity]``.
    """

    start: float  #: window start, Unix seconds
    duration_s: float  #: window length, seconds
    counts: Mapping[str, np.ndarray] = field(default_factory=dict)
    key_supply: KeySupply | None = None  #: for links whose source reports a key store
    active_faults: tuple[str, ...] = ()  #: simulated links only: fault kinds in effect


class DriverError(Exception):
    """A source answered, but not with usable data (the reason becomes a metric label)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Driver(Protocol):
    """One source of count batches for one link."""

    def acquire(self) -> CountBatch:
        """Block until the next acquisition window is complete and return its counts."""
        ...

    def close(self) -> None:
        """Release connections and threads; called once at shutdown."""
        ...


class StrictModel(BaseModel):
    """Config model that rejects unknown keys (a typo is an error, not a silent default) and
    non-finite numbers (``.inf``, ``.nan``, ``1e999``), which no field means."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FieldError(ValueError):
    """A model validator's problem that belongs to one field: the error names ``field`` (dotted,
    relative to the model), not just the model."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
