"""Drivers that misbehave on purpose, and configs that run them in a real Runtime.

The config union only admits the shipped driver types, so these configs are put together with
``model_construct``; the Runtime reads them like any other.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal, Sequence

import numpy as np

from qtelemetry.config import Config, ExporterConfig, LinkConfig
from qtelemetry.drivers.base import CountBatch, DriverError, FleetBatch, FleetConfig, IODriverConfig
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config, sample_window

REFERENCE = SimulatedBB84Config(type="simulated-bb84", fiber_length_km=20, seed=0)
PULSES_PER_READING = 5_000_000


def good_counts(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Physics counts of one reading of a 20 km decoy-BB84 link (no key store reported)."""
    return sample_window(REFERENCE, rng, PULSES_PER_READING)


def bad_counts(behaviour: str, counts: dict) -> dict:
    """``counts`` broken the way ``behaviour`` says."""
    counts = {k: np.array(v, float) for k, v in counts.items()}
    match behaviour:
        case "strings":
            return {k: [str(x) for x in np.ravel(v)] for k, v in counts.items()}
        case "wrong-shape":
            counts["sifted"] = counts["sifted"][0]
        case "nan":
            counts["detections"][1] = np.nan
        case "negative":
            counts["errors"][0, 0] = -1
        case "fractional":
            counts["pulses"][0] += 0.5
        case "inconsistent":
            counts["detections"][0] = counts["pulses"][0] + 1
        case "missing":
            del counts["errors"]
        case "extra":
            counts["bogus"] = np.zeros(3)
    return counts


class Device:
    """A polled device that behaves as its name says."""

    def __init__(self, behaviour: str, seed: int):
        self.behaviour = behaviour
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    async def acquire(self) -> object:
        self.calls += 1
        match self.behaviour:
            case "healthy":
                await asyncio.sleep(0.005)  # a little network time
            case "hangs":
                await asyncio.Event().wait()
            case "raises":
                raise ConnectionResetError("device hung up")
            case "refuses":
                raise DriverError("unreachable", "connection refused")
            case "undeclared-reason":
                raise DriverError("made-up-reason", "a driver bug: this reason is not declared")
            case "none":
                return None
            case "not-a-batch":
                return {"pulses": [1, 2, 3]}
            case "bad-duration":
                return CountBatch(0.0, "0.05", good_counts(self.rng))  # type: ignore[arg-type]
        # "eager" (answers at once) and the value-level faults
        return CountBatch(0.0, 0.05, bad_counts(self.behaviour, good_counts(self.rng)))

    async def aclose(self) -> None:
        pass


class DeviceConfig(IODriverConfig):
    protocol: ClassVar[str] = "bb84-decoy"
    error_reasons: ClassVar[tuple[str, ...]] = ("unreachable",)
    type: Literal["test-device"] = "test-device"
    behaviour: str = "healthy"
    seed: int = 0
    poll_interval_seconds: float = 0.05
    timeout_seconds: float = 0.1

    def estimation_params(self) -> dict[str, float]:
        return REFERENCE.estimation_params()

    def build(self) -> Device:
        return Device(self.behaviour, self.seed)


class BrokenFleet:
    """A fleet driver that fails as a whole."""

    def __init__(self, behaviour: str, size: int):
        self.behaviour, self.size = behaviour, size

    def sample(self, now: float) -> FleetBatch:
        if self.behaviour == "raises":
            raise ZeroDivisionError("simulator bug")
        counts = {k: np.zeros((self.size + 1, *s)) for k, s in
                  {"pulses": (3,), "detections": (3,), "sifted": (2, 3), "errors": (2, 3)}.items()}
        return FleetBatch(duration_s=0.1, counts=counts)  # one row too many, key store missing

    def faults(self, index: int) -> None:
        raise LookupError("no faults")


class BrokenFleetConfig(FleetConfig):
    protocol: ClassVar[str] = "bb84-decoy"
    type: Literal["broken-fleet"] = "broken-fleet"
    behaviour: str = "raises"

    def estimation_params(self) -> dict[str, float]:
        return REFERENCE.estimation_params()

    @classmethod
    def fleet(cls, configs: Sequence["BrokenFleetConfig"], started: float) -> BrokenFleet:
        return BrokenFleet(configs[0].behaviour, len(configs))


def make_config(drivers: dict[str, object], **exporter: float) -> Config:
    """A config of links named by ``drivers`` (name -> driver config), skipping validation of the union."""
    links = [LinkConfig.model_construct(name=name, site_a="a", site_b="b", driver=driver,
                                        loss_budget_db=None, expected_secret_key_rate_bps=None)
             for name, driver in drivers.items()]
    return Config.model_construct(exporter=ExporterConfig(**exporter), links=links)


def simulated(seed: int, **fields: float) -> SimulatedBB84Config:
    return SimulatedBB84Config(type="simulated-bb84", fiber_length_km=20, seed=seed, **fields)

