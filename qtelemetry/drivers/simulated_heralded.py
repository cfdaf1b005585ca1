"""Simulated heralded-entanglement link: two memory nodes and a midpoint heralding station.

Per window, ``attempt_rate_hz · window`` attempts are made; heralds are binomial with the
herald probability of the chosen scheme (Barrett–Kok two-click or single-click, see
``qtelemetry.estimation.heralded``), and a fraction of heralded pairs is measured in a random
Pauli basis after storage: the herald delay L/v plus ``storage_time_s``. A seeded numpy
Generator makes a run reproducible; faults act on the physical parameters.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from qtelemetry.drivers.faults import MAX_TIME_S
from qtelemetry.drivers.simulated import MAX_LENGTH_KM, MAX_LOSS_DB, MAX_RATE_HZ, SimulatedConfig, SimulatedFleet
from qtelemetry.estimation import decoy, heralded


class SimulatedHeraldedConfig(SimulatedConfig):
    """Two quantum-memory nodes entangled through a midpoint station, as the simulator models them."""

    protocol: ClassVar[str] = "heralded-entanglement"

    type: Literal["simulated-heralded"]
    scheme: Literal["two-click", "single-click"] = Field(
        "two-click", description="two-click (Barrett-Kok) or single-click heralding")
    fiber_length_km: float = Field(ge=0.0, le=MAX_LENGTH_KM, description="fiber length between the two nodes (station at the midpoint), km")
    attenuation_db_per_km: float = Field(0.2, ge=0.0, le=MAX_LOSS_DB, description="fiber attenuation, dB/km")
    insertion_loss_db: float = Field(0.0, ge=0.0, le=MAX_LOSS_DB, description="extra loss in each arm: connectors, switches, dB")
    collection_efficiency: float = Field(0.3, gt=0.0, le=1.0,
                                         description="probability a node's photon enters the fiber (emission, collection, conversion)")
    detector_efficiency: float = Field(0.9, gt=0.0, le=1.0, description="midpoint detector efficiency")
    dark_count_probability: float = Field(1e-6, ge=0.0, le=1.0, description="background click probability per detector and gate")
    bright_state_population: float = Field(0.05, gt=0.0, le=0.5,
                                           description="single-click only: population p of the photon-emitting state")
    intrinsic_fidelity: float = Field(0.95, ge=0.5, le=1.0, description="fidelity of a correctly heralded pair before storage")
    coherence_time_s: float = Field(0.01, gt=0.0, le=MAX_TIME_S, description="coherence time T2 of the stored pair (both memories), s")
    storage_time_s: float = Field(0.0, ge=0.0, le=MAX_TIME_S, description="storage after the herald arrives, before use, s")
    attempt_rate_hz: float = Field(1e5, gt=0.0, le=MAX_RATE_HZ, description="entanglement attempts per second")
    measured_fraction: float = Field(0.1, ge=0.0, le=1.0, description="fraction of heralded pairs measured to estimate fidelity")

    @classmethod
    def fleet(cls, configs: Sequence["SimulatedHeraldedConfig"], started: float) -> "HeraldedFleet":
        return HeraldedFleet(configs, started)


def heralds(p: Any) -> heralded.Heralds:
    """Herald probabilities per attempt of each link's scheme."""
    eta = (np.asarray(p.collection_efficiency) * p.detector_efficiency
           * decoy.transmittance(np.asarray(p.fiber_length_km) / 2.0, p.attenuation_db_per_km, p.insertion_loss_db))
    two = heralded.two_click_heralds(eta, p.dark_count_probability)
    one = heralded.single_click_heralds(eta, p.dark_count_probability, p.bright_state_population)
    single = np.asarray(p.scheme) == "single-click"
    return heralded.Heralds(*(np.where(single, a, b) for a, b in zip(one, two)))


def basis_errors(p: Any, h: heralded.Heralds) -> NDArray[np.float64]:
    """Per-basis error rates (X, Y, Z) of pairs measured after the herald delay and storage."""
    storage = heralded.herald_delay_s(p.fiber_length_km) + p.storage_time_s
    return heralded.error_rates(h, p.intrinsic_fidelity, storage, p.coherence_time_s)


class HeraldedFleet(SimulatedFleet[SimulatedHeraldedConfig]):
    """All simulated heralded-entanglement links of a process, sampled together."""

    def draw(self, rng: np.random.Generator, p: SimpleNamespace, duration_s: float) -> dict[str, NDArray[np.float64]]:
        h = heralds(p)
        return heralded.sample_window(rng, np.round(p.attempt_rate_hz * duration_s), h.total,
                                      basis_errors(p, h), p.measured_fraction)
