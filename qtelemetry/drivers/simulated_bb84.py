"""Simulated decoy-state BB84 link: counts sampled from the standard channel model.

Per window, the source emits ``clock_rate_hz · window`` pulses split over (signal, decoy,
vacuum); Bob's clicks, basis matches and bit errors are binomial draws with the gain
Q = Y0 + 1 − e^(−ημ) and error probability E·Q = e0·Y0 + e_det·(1 − e^(−ημ)) of Ma, Qi, Zhao,
Lo, PRA 72, 012326 (2005). A seeded numpy Generator makes a run reproducible. Attacks and
faults (``faults``) act on the physical parameters, so their signatures come out of the model.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from qtelemetry.drivers.simulated import (MAX_BITS, MAX_EC_EFFICIENCY, MAX_LENGTH_KM, MAX_LOSS_DB, MAX_MEAN_PHOTONS,
                                          MAX_POWER_FACTOR, MAX_RATE_HZ, KeyDistillingConfig, KeyDistillingDriver)
from qtelemetry.estimation import decoy
from qtelemetry.estimation.bb84 import sifting_fraction
from qtelemetry.estimation.stats import ratio

class SimulatedBB84Config(KeyDistillingConfig):
    """A decoy-state BB84 link over fiber, as the simulator models it."""

    protocol: ClassVar[str] = "bb84-decoy"

    type: Literal["simulated-bb84"]
    fiber_length_km: float = Field(ge=0.0, le=MAX_LENGTH_KM, description="fiber length, km")
    attenuation_db_per_km: float = Field(0.2, ge=0.0, le=MAX_LOSS_DB, description="fiber attenuation, dB/km")
    insertion_loss_db: float = Field(0.0, ge=0.0, le=MAX_LOSS_DB, description="extra loss: connectors, switches, dB")
    detector_efficiency: float = Field(0.1, gt=0.0, le=1.0, description="Bob's detection efficiency incl. optics")
    dark_count_probability: float = Field(1e-6, ge=0.0, le=1.0, description="background click probability per gate (Y0)")
    misalignment_error: float = Field(0.01, ge=0.0, le=0.5, description="probability a photon hits the wrong detector")
    clock_rate_hz: float = Field(1e8, gt=0.0, le=MAX_RATE_HZ, description="source pulse rate")
    mu: float = Field(0.5, gt=0.0, le=MAX_MEAN_PHOTONS, description="signal mean photon number")
    nu: float = Field(0.1, gt=0.0, le=MAX_MEAN_PHOTONS, description="weak decoy mean photon number")
    p_signal: float = Field(0.8, gt=0.0, le=1.0)
    p_decoy: float = Field(0.1, gt=0.0, le=1.0)
    p_vacuum: float = Field(0.1, gt=0.0, le=1.0)
    basis_bias: float = Field(0.5, gt=0.0, lt=1.0, description="probability of choosing the Z basis")
    ec_efficiency: float = Field(1.16, ge=1.0, le=MAX_EC_EFFICIENCY, description="error-correction inefficiency f ≥ 1")
    block_size: float = Field(1e8, ge=1e4, le=MAX_BITS, description="sifted Z bits per post-processing block (finite key)")
    epsilon_sec: float = Field(1e-10, gt=0.0, lt=1.0, description="secrecy parameter of the finite-key bound")
    epsilon_cor: float = Field(1e-15, gt=0.0, lt=1.0, description="correctness parameter of the finite-key bound")
    eavesdrop_fraction: float = Field(0.0, ge=0.0, le=1.0, description="pulses intercepted and resent by Eve")
    blinding_fraction: float = Field(0.0, ge=0.0, le=1.0, description="pulses whose clicks Eve fakes after blinding")
    source_power_factor: float = Field(1.0, gt=0.0, le=MAX_POWER_FACTOR, description="emitted / nominal intensity (source drift)")

    @model_validator(mode="after")
    def _physical(self) -> "SimulatedBB84Config":
        if self.nu >= self.mu:
            raise ValueError(f"nu ({self.nu}) must be smaller than mu ({self.mu})")
        total = self.p_signal + self.p_decoy + self.p_vacuum
        if not math.isclose(total, 1.0, rel_tol=1e-5, abs_tol=1e-8):
            raise ValueError(f"p_signal + p_decoy + p_vacuum must be 1, not {total:g}")
        if self.p_signal + self.p_decoy >= 1.0:  # NumPy's multinomial refuses it: no vacuum pulses left
            raise ValueError(f"p_signal + p_decoy must be below 1, not {self.p_signal + self.p_decoy:g}")
        return self

    def estimation_params(self) -> dict[str, float]:
        return {
            "mu": self.mu,
            "nu": self.nu,
            "basis_bias": self.basis_bias,
            "detector_efficiency": self.detector_efficiency,
            "ec_efficiency": self.ec_efficiency,
            "block_size": self.block_size,
            "epsilon_sec": self.epsilon_sec,
            "epsilon_cor": self.epsilon_cor,
        }

    def nominal_loss_db(self) -> float:
        return self.fiber_length_km * self.attenuation_db_per_km + self.insertion_loss_db

    def expected_secret_key_rate_bps(self) -> float:
        return expected_secret_key_rate_bps(self)

    def build(self, window_s: float) -> "SimulatedBB84":
        return SimulatedBB84(self, window_s)


def click_model(cfg: SimulatedBB84Config) -> tuple[np.ndarray, np.ndarray]:
    """Per-intensity click probability Q and error probability of a sifted click, under attack.

    Channel: MQZL §II. Intercept-resend on a fraction f of pulses gives those a 25% error
    (Bennett, Brassard 1984 analysis of intercept-resend). Blinding on a fraction b replaces
    clicks by Eve's faked, error-free clicks at the average gain whatever the intensity
    (Lydersen et al., Nat. Photon. 4, 686 (2010)), which raises the vacuum gain.
    """
    intensities = np.array([cfg.mu, cfg.nu, 0.0]) * cfg.source_power_factor
    eta = decoy.transmittance(cfg.fiber_length_km, cfg.attenuation_db_per_km, cfg.insertion_loss_db)
    eta = eta * cfg.detector_efficiency
    q = decoy.gain(eta, intensities, cfg.dark_count_probability)
    error = ratio(decoy.error_gain(eta, intensities, cfg.dark_count_probability, cfg.misalignment_error), q)
    error = (1 - cfg.eavesdrop_fraction) * error + cfg.eavesdrop_fraction * 0.25
    b = cfg.blinding_fraction
    faked = np.dot([cfg.p_signal, cfg.p_decoy, cfg.p_vacuum], q)
    q_seen = (1 - b) * q + b * faked
    error = ratio((1 - b) * q * error, q_seen)
    # A channel with no clicks at all (no light, no dark counts) has no errors either.
    return np.clip(q_seen, 0.0, 1.0), np.clip(np.nan_to_num(error, nan=0.0), 0.0, 1.0)


def sample_window(cfg: SimulatedBB84Config, rng: np.random.Generator, pulses_total: int) -> dict[str, np.ndarray]:
    """One window of counts for ``pulses_total`` pulses under ``click_model``."""
    q, error_prob = click_model(cfg)
    pulses = rng.multinomial(pulses_total, [cfg.p_signal, cfg.p_decoy, cfg.p_vacuum])
    detections = rng.binomial(pulses, q)
    p_match = sifting_fraction(cfg.basis_bias)
    sifted_any = rng.binomial(detections, p_match)
    sifted_z = rng.binomial(sifted_any, cfg.basis_bias**2 / p_match)
    sifted = np.stack([sifted_z, sifted_any - sifted_z])
    errors = rng.binomial(sifted, error_prob)
    return {"pulses": pulses, "detections": detections, "sifted": sifted, "errors": errors}


def expected_secret_key_rate_bps(cfg: SimulatedBB84Config) -> float:
    """Key rate the link's own distillation achieves under ``cfg``: MQZL vacuum+weak bound."""
    q, error = click_model(cfg)
    rate = decoy.vacuum_weak_rate(q[0], error[0] * q[0], q[1], error[1] * q[1], q[2], cfg.mu, cfg.nu,
                                  cfg.ec_efficiency, sifting_fraction(cfg.basis_bias))
    return float(rate) * cfg.clock_rate_hz * cfg.p_signal


class SimulatedBB84(KeyDistillingDriver[SimulatedBB84Config]):
    """Driver producing one window of decoy-BB84 counts per window period, paced in real time."""

    def sample(self, rng: np.random.Generator, cfg: SimulatedBB84Config) -> dict[str, np.ndarray]:
        return sample_window(cfg, rng, int(round(cfg.clock_rate_hz * self.window_s)))

    def secret_bits(self, cfg: SimulatedBB84Config) -> float:
        return expected_secret_key_rate_bps(cfg) * self.window_s
