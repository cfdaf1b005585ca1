"""What drivers hand the runtime, and the two kinds of driver it runs.

A driver knows how to talk to one kind of source and nothing about Prometheus. There are two
kinds, so that no link costs a thread:

- a **fleet driver** produces one acquisition window for many links at once, as arrays with a
  leading link axis (the simulators: one vectorised NumPy draw per protocol per window);
- an **I/O driver** reads one networked device; the runtime polls it from one asyncio event
  loop with its own interval, timeout and back-off, so a hung device is a pending task.

Counts follow the link's protocol (``qtelemetry.estimation.protocols``); the runtime checks
every value it receives, so nothing a driver returns can break a cycle for other links.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence

import numpy as np
from numpy.typing import NDArray

from qtelemetry.configmodel import FieldError, StrictModel, check  # noqa: F401  (re-exported: driver configs use them)
from qtelemetry.errors import DriverError  # noqa: F401  (re-exported: drivers raise it)


@dataclass(frozen=True)
class CountBatch:
    """Counts of one link over one acquisition window (from an I/O driver).

    ``counts`` maps count names to arrays whose names and shapes are fixed by the link's
    protocol, e.g. for decoy BB84 ``pulses[intensity]`` and ``errors[basis, intensity]``.
    """

    start: float  #: window start, Unix seconds
    duration_s: float  #: window length, seconds
    counts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetBatch:
    """One window of every link of a fleet: each count has shape (links, *count shape)."""

    duration_s: float
    counts: Mapping[str, NDArray[np.float64]]
    #: (links, len(fault kinds)) mask of the simulated faults acting during the window
    faults: NDArray[np.bool_] | None = None


class SourceEnded(Exception):
    """A finite source (a replayed recording) has delivered everything: its link's poll task ends
    without counting an error, and the link then reads stalled, as any link without data does."""


class IODriver(Protocol):
    """One networked source of one link, polled on the runtime's event loop."""

    async def acquire(self) -> CountBatch:
        """One reading of the device; raise ``DriverError`` with a reason for a known failure,
        ``SourceEnded`` when a finite source has nothing more."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the link stops."""
        ...


class FaultControl(Protocol):
    """Faults of one simulated link, as the fault endpoint acts on them."""

    def inject(self, fault: Any) -> Any: ...

    def clear(self, kind: str | None = None) -> int: ...


class FleetDriver(Protocol):
    """All links of one simulated protocol, sampled together."""

    def sample(self, now: float) -> FleetBatch:
        """Counts of every link from the end of the previous window up to ``now`` (Unix seconds)."""
        ...

    def faults(self, index: int) -> FaultControl:
        """Fault control of the link at ``index`` in the fleet's config order."""
        ...

    def continue_from(self, old: "FleetDriver | None", rows: NDArray[np.intp], old_rows: NDArray[np.intp],
                      now: float | None = None) -> None:
        """After a reload: carry on ``old``'s window and the state of its links ``old_rows`` (now at
        ``rows``); with no ``old``, the first window starts at ``now``."""
        ...


class BaseDriverConfig(StrictModel):
    """What every driver config declares to the runtime (class variables, not config keys)."""

    #: the LinkProtocol its counts follow
    protocol: ClassVar[str]
    #: who computes the link's figures: "qtelemetry" (from counts) or "device" (reported)
    estimated_by: ClassVar[str] = "qtelemetry"
    #: reasons its failures are counted under, besides the runtime's own (bounded label values)
    error_reasons: ClassVar[tuple[str, ...]] = ()

    def estimation_params(self) -> dict[str, float]:
        """Per-link numbers the protocol's estimator needs from the config."""
        return {}

    def plan(self) -> tuple[float, float]:
        """(loss budget dB, expected secret key rate bit/s) the driver knows of, e.g. from a
        recording; NaN: none (fleets compute theirs from their model)."""
        return (float("nan"), float("nan"))

    def warnings(self) -> list[tuple[str, str]]:
        """(field, message) of what works but will be lost, e.g. a recording's rows that cannot be replayed."""
        return []


class FleetConfig(BaseDriverConfig):
    """A driver config whose links run together as one fleet driver."""

    @classmethod
    @abstractmethod
    def fleet(cls, configs: Sequence["FleetConfig"], started: float) -> FleetDriver:
        """One driver for all ``configs`` (links of this type), windows counted from ``started``."""

    @classmethod
    def nominal_loss_db(cls, configs: Sequence["FleetConfig"]) -> NDArray[np.float64]:
        """Modelled channel loss per link, dB; NaN where the model has none."""
        return np.full(len(configs), np.nan)

    @classmethod
    def expected_key_rate_bps(cls, configs: Sequence["FleetConfig"]) -> NDArray[np.float64]:
        """Secret key rate the model promises per link, bit/s; NaN where it has none."""
        return np.full(len(configs), np.nan)


class IODriverConfig(BaseDriverConfig):
    """A driver config built into one I/O driver per link."""

    poll_interval_seconds: float
    timeout_seconds: float

    @abstractmethod
    def build(self) -> IODriver:
        """The link's driver; it connects on its first ``acquire``."""
