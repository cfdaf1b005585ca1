"""Simulated decoy-state BB84 link: counts sampled from the standard channel model.

Per window, the source emits ``clock_rate_hz · window`` pulses split over (signal, decoy,
vacuum); Bob's clicks, basis matches and bit errors are binomial draws with the gain
Q = Y0 + 1 − e^(−ημ) and error probability E·Q = e0·Y0 + e_det·(1 − e^(−ημ)) of Ma, Qi, Zhao,
Lo, PRA 72, 012326 (2005). A seeded numpy Generator makes a run reproducible. Parameters can be
changed while it runs (``update``), which is how faults are injected.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from qtelemetry.drivers.base import StrictModel
from qtelemetry.drivers.simulated import SimulatedDriver
from qtelemetry.estimation import decoy
from qtelemetry.estimation.bb84 import sifting_fraction

class SimulatedBB84Config(StrictModel):
    """A decoy-state BB84 link over fiber, as the simulator models it."""

    protocol: ClassVar[str] = "bb84-decoy"

    type: Literal["simulated-bb84"]
    fiber_length_km: float = Field(ge=0.0, description="fiber length, km")
    attenuation_db_per_km: float = Field(0.2, ge=0.0, description="fiber attenuation, dB/km")
    insertion_loss_db: float = Field(0.0, ge=0.0, description="extra loss: connectors, switches, dB")
    detector_efficiency: float = Field(0.1, gt=0.0, le=1.0, description="Bob's detection efficiency incl. optics")
    dark_count_probability: float = Field(1e-6, ge=0.0, le=1.0, description="background click probability per gate (Y0)")
    misalignment_error: float = Field(0.01, ge=0.0, le=0.5, description="probability a photon hits the wrong detector")
    clock_rate_hz: float = Field(1e8, gt=0.0, description="source pulse rate")
    mu: float = Field(0.5, gt=0.0, description="signal mean photon number")
    nu: float = Field(0.1, gt=0.0, description="weak decoy mean photon number")
    p_signal: float = Field(0.8, gt=0.0, le=1.0)
    p_decoy: float = Field(0.1, gt=0.0, le=1.0)
    p_vacuum: float = Field(0.1, gt=0.0, le=1.0)
    basis_bias: float = Field(0.5, gt=0.0, lt=1.0, description="probability of choosing the Z basis")
    ec_efficiency: float = Field(1.16, ge=1.0, description="error-correction inefficiency f ≥ 1")
    seed: int | None = Field(None, description="random seed; omit for a fresh one per run")

    @model_validator(mode="after")
    def _physical(self) -> "SimulatedBB84Config":
        if self.nu >= self.mu:
            raise ValueError(f"nu ({self.nu}) must be smaller than mu ({self.mu})")
        total = self.p_signal + self.p_decoy + self.p_vacuum
        if not np.isclose(total, 1.0):
            raise ValueError(f"p_signal + p_decoy + p_vacuum must be 1, not {total:g}")
        return self

    def estimation_params(self) -> dict[str, float]:
        return {
            "mu": self.mu,
            "nu": self.nu,
            "basis_bias": self.basis_bias,
            "detector_efficiency": self.detector_efficiency,
            "ec_efficiency": self.ec_efficiency,
        }

    def build(self, window_s: float) -> "SimulatedBB84":
        return SimulatedBB84(self, window_s)


def sample_window(cfg: SimulatedBB84Config, rng: np.random.Generator, pulses_total: int) -> dict[str, np.ndarray]:
    """One window of counts for ``pulses_total`` pulses under the MQZL channel model."""
    intensities = np.array([cfg.mu, cfg.nu, 0.0])
    pulses = rng.multinomial(pulses_total, [cfg.p_signal, cfg.p_decoy, cfg.p_vacuum])
    eta = decoy.transmittance(cfg.fiber_length_km, cfg.attenuation_db_per_km, cfg.insertion_loss_db)
    eta = eta * cfg.detector_efficiency
    q = decoy.gain(eta, intensities, cfg.dark_count_probability)
    error_prob = decoy.error_gain(eta, intensities, cfg.dark_count_probability, cfg.misalignment_error) / q
    detections = rng.binomial(pulses, np.clip(q, 0.0, 1.0))
    p_zz = cfg.basis_bias**2
    p_match = sifting_fraction(cfg.basis_bias)
    sifted_any = rng.binomial(detections, p_match)
    sifted_z = rng.binomial(sifted_any, p_zz / p_match)
    sifted = np.stack([sifted_z, sifted_any - sifted_z])
    errors = rng.binomial(sifted, np.clip(error_prob, 0.0, 1.0))
    return {"pulses": pulses, "detections": detections, "sifted": sifted, "errors": errors}


class SimulatedBB84(SimulatedDriver[SimulatedBB84Config]):
    """Driver producing one window of decoy-BB84 counts per window period, paced in real time."""

    def sample(self, rng: np.random.Generator, cfg: SimulatedBB84Config) -> dict[str, np.ndarray]:
        return sample_window(cfg, rng, int(round(cfg.clock_rate_hz * self.window_s)))
