"""Simulated decoy-state BB84 link: counts sampled from the standard channel model.

Per window, the source emits ``clock_rate_hz · window`` pulses split over (signal, decoy,
vacuum); Bob's clicks, basis matches and bit errors are binomial draws with the gain
Q = Y0 + 1 − e^(−ημ) and error probability E·Q = e0·Y0 + e_det·(1 − e^(−ημ)) of Ma, Qi, Zhao,
Lo, PRA 72, 012326 (2005). A seeded numpy Generator makes a run reproducible. Attacks and
faults (``faults``) act on the physical parameters, so their signatures come out of the model.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import Field

from qtelemetry.drivers.base import FieldError, check
from qtelemetry.drivers.simulated import (MAX_BITS, MAX_EC_EFFICIENCY, MAX_LENGTH_KM, MAX_LOSS_DB, MAX_MEAN_PHOTONS,
                                          MAX_POWER_FACTOR, MAX_RATE_HZ, KeyDistillingConfig, KeyDistillingFleet,
                                          parameter_table)
from qtelemetry.estimation import decoy
from qtelemetry.estimation.bb84 import BB84_DECOY, sifting_fraction
from qtelemetry.estimation.finite_key import DEFAULT_BLOCK_SIZE, DEFAULT_EPS_COR, DEFAULT_EPS_SEC
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
    block_size: float = Field(DEFAULT_BLOCK_SIZE, ge=1e4, le=MAX_BITS, description="sifted Z bits per post-processing block (finite key)")
    epsilon_sec: float = Field(DEFAULT_EPS_SEC, gt=0.0, lt=1.0, description="secrecy parameter of the finite-key bound")
    epsilon_cor: float = Field(DEFAULT_EPS_COR, gt=0.0, lt=1.0, description="correctness parameter of the finite-key bound")
    eavesdrop_fraction: float = Field(0.0, ge=0.0, le=1.0, description="pulses intercepted and resent by Eve")
    blinding_fraction: float = Field(0.0, ge=0.0, le=1.0, description="pulses whose clicks Eve fakes after blinding")
    pns_fraction: float = Field(0.0, ge=0.0, le=1.0, description="pulses Eve splits by photon number (PNS)")
    source_power_factor: float = Field(1.0, gt=0.0, le=MAX_POWER_FACTOR, description="emitted / nominal intensity (source drift)")

    @check
    def _intensities(self) -> None:
        if self.nu >= self.mu:
            raise ValueError(f"nu ({self.nu}) must be smaller than mu ({self.mu})")

    @check
    def _probabilities(self) -> None:
        total = self.p_signal + self.p_decoy + self.p_vacuum
        if not math.isclose(total, 1.0, rel_tol=1e-5, abs_tol=1e-8):
            raise ValueError(f"p_signal + p_decoy + p_vacuum must be 1, not {total:g}")
        if self.p_signal + self.p_decoy >= 1.0:  # NumPy's multinomial refuses it: no vacuum pulses left
            raise ValueError(f"p_signal + p_decoy must be below 1, not {self.p_signal + self.p_decoy:g}")

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

    @classmethod
    def fleet(cls, configs: Sequence["SimulatedBB84Config"], started: float) -> "BB84Fleet":
        return BB84Fleet(configs, started)

    @classmethod
    def nominal_loss_db(cls, configs: Sequence["SimulatedBB84Config"]) -> NDArray[np.float64]:
        return nominal_loss_db(parameter_table(configs))

    @classmethod
    def expected_key_rate_bps(cls, configs: Sequence["SimulatedBB84Config"]) -> NDArray[np.float64]:
        return planned_secret_key_rate_bps(parameter_table(configs))


def nominal_loss_db(p: Any) -> NDArray[np.float64]:
    """Channel loss the link is built with: fiber plus insertion loss, dB."""
    return np.asarray(p.fiber_length_km * p.attenuation_db_per_km + p.insertion_loss_db, float)


def pns_click_probability(intensity: ArrayLike, efficiency: ArrayLike) -> NDArray[np.float64]:
    """Probability that Bob's detector fires on a photon of a Poisson pulse of mean ``intensity`` under
    photon-number splitting (Brassard, Lütkenhaus, Mor, Sanders, PRL 85, 1330 (2000)).

    Eve blocks single photons and forwards n − 1 photons of an n-photon pulse over a lossless channel
    to a detector of ``efficiency`` η: Σₙ≥₂ P(n|k)(1 − a^(n−1)) with a = 1 − η, which is
    e^(−k)[g(k) − g(ka)/a] with g(x) = e^x − 1 − x, or equally [(1 − e^(−ηk)) − η(1 − e^(−k))]/a.
    The first form serves a ≤ ½ (accurate as a → 0, a perfect detector), the second a > ½; each is
    evaluated with a clipped to its side, so neither divides by 0 nor overflows (k up to 1400).
    """
    k, eta = np.broadcast_arrays(np.asarray(intensity, float), np.asarray(efficiency, float))
    a = 1.0 - eta
    near = np.minimum(a, 0.5)
    g_ka = np.expm1(k * near) - k * near  # 0 at a = 0, the limit of g(ka)/a there
    close = -np.expm1(-k) - k * np.exp(-k) - np.exp(-k) * g_ka / np.where(near > 0, near, 1.0)
    away = (eta * np.expm1(-k) - np.expm1(-eta * k)) / np.maximum(a, 0.5)
    return np.maximum(np.where(a <= 0.5, close, away), 0.0)


def click_model(p: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-intensity click probability Q and error probability of a sifted click, under attack.

    ``p`` is one link's config or a fleet's parameter table (arrays over links); results have a
    trailing intensity axis (signal, decoy, vacuum). Channel: MQZL §II. The attacks act in this
    order, each on what the previous one left: PNS, intercept-resend, blinding. Photon-number
    splitting on a fraction s of the pulses replaces the channel there by ``pns_click_probability``
    plus dark counts, Q = (1 − s)·Q_channel + s·Q_PNS, and the error gain likewise; Eve measures
    her photons after basis reconciliation, so her clicks carry only Bob's misalignment and the
    dark counts' 1/2 (Brassard et al., PRL 85, 1330 (2000)). She does not equalise the signal gain
    here: a gain-preserving variant moves it less but shows the same fall of the decoy/signal gain
    ratio. Intercept-resend on a fraction f of pulses gives those a 25% error (Bennett, Brassard
    1984 analysis of intercept-resend). Blinding on a fraction b replaces clicks by Eve's faked,
    error-free clicks at the average gain whatever the intensity
    (Lydersen et al., Nat. Photon. 4, 686 (2010)), which raises the vacuum gain.
    """
    intensities = np.stack(np.broadcast_arrays(p.mu, p.nu, 0.0), axis=-1) * np.asarray(p.source_power_factor)[..., None]
    eta = decoy.transmittance(p.fiber_length_km, p.attenuation_db_per_km, p.insertion_loss_db) * p.detector_efficiency
    eta, y0 = np.asarray(eta)[..., None], np.asarray(p.dark_count_probability)[..., None]
    misalignment = np.asarray(p.misalignment_error)[..., None]
    split = pns_click_probability(intensities, np.asarray(p.detector_efficiency)[..., None])
    s = np.asarray(p.pns_fraction)[..., None]
    q = (1 - s) * decoy.gain(eta, intensities, y0) + s * (y0 + split)
    error_gain = (1 - s) * decoy.error_gain(eta, intensities, y0, misalignment) + s * (
        decoy.E0_BACKGROUND * y0 + misalignment * split)
    error = ratio(error_gain, q)
    f = np.asarray(p.eavesdrop_fraction)[..., None]
    error = (1 - f) * error + f * 0.25
    b = np.asarray(p.blinding_fraction)[..., None]
    choice = np.stack(np.broadcast_arrays(p.p_signal, p.p_decoy, p.p_vacuum), axis=-1)
    faked = np.sum(choice * q, axis=-1, keepdims=True)
    q_seen = (1 - b) * q + b * faked
    error = np.nan_to_num(ratio((1 - b) * q * error, q_seen))  # no clicks at all: no errors either
    return np.clip(q_seen, 0.0, 1.0), np.clip(error, 0.0, 1.0)


def sample_window(p: Any, rng: np.random.Generator, pulses_total: ArrayLike,
                  model: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None) -> dict[str, NDArray[np.float64]]:
    """One window of counts for ``pulses_total`` pulses per link under ``click_model`` (``model``: its
    result, if the caller has it already)."""
    q, error_prob = click_model(p) if model is None else model
    choice = np.stack(np.broadcast_arrays(p.p_signal, p.p_decoy, p.p_vacuum), axis=-1)
    pulses = rng.multinomial(np.asarray(pulses_total, np.int64), choice)
    detections = rng.binomial(pulses, q)
    bias = np.asarray(p.basis_bias, float)[..., None]
    p_match = sifting_fraction(bias)
    sifted_any = rng.binomial(detections, p_match)
    sifted_z = rng.binomial(sifted_any, bias**2 / p_match)
    sifted = np.stack([sifted_z, sifted_any - sifted_z], axis=-2)
    errors = rng.binomial(sifted, error_prob[..., None, :])
    return {"pulses": pulses.astype(float), "detections": detections.astype(float),
            "sifted": sifted.astype(float), "errors": errors.astype(float)}


def expected_counts(p: Any) -> dict[str, NDArray[np.float64]]:
    """Counts of one second of links that behave exactly as modelled (``p``: arrays over links)."""
    q, error = click_model(p)
    pulses = np.stack(np.broadcast_arrays(p.p_signal, p.p_decoy, p.p_vacuum), axis=-1) * np.asarray(p.clock_rate_hz)[..., None]
    detections = pulses * q
    bias = np.asarray(p.basis_bias, float)[..., None, None]
    sifted = detections[..., None, :] * np.concatenate([bias**2, (1.0 - bias) ** 2], axis=-2)
    return {"pulses": pulses, "detections": detections, "sifted": sifted, "errors": sifted * error[..., None, :]}


def expected_secret_key_rate_bps(p: Any) -> NDArray[np.float64]:
    """Key rate the link's own distillation achieves under ``p``: the rate the estimator finds
    (finite key, Lim et al. 2014, one block of ``block_size``) in counts that follow the model,
    so that a healthy link's store fills as fast as its secret key rate says. 0 where no key."""
    params = {name: np.asarray(getattr(p, name), float) for name in BB84_DECOY.param_names}
    with np.errstate(all="ignore"):
        rate = BB84_DECOY.finite_key_rate_per_pulse(expected_counts(p), params) * np.asarray(p.clock_rate_hz)
    return np.nan_to_num(rate, nan=0.0)


#: What a plan assumes of a link: nobody attacks it and its source sends the nominal intensities.
AS_BUILT = {"eavesdrop_fraction": 0.0, "blinding_fraction": 0.0, "pns_fraction": 0.0, "source_power_factor": 1.0}


def planned_secret_key_rate_bps(p: Any) -> NDArray[np.float64]:
    """The key rate a link's plan promises: ``expected_secret_key_rate_bps`` of the link as built
    (``AS_BUILT``), whatever attack or drift its config simulates. The one model behind both
    ``qtelemetry plan``'s finite bound and the exporter's qkd_expected_secret_key_rate_bits_per_second."""
    return expected_secret_key_rate_bps(SimpleNamespace(**{**vars(p), **AS_BUILT}))


class BB84Fleet(KeyDistillingFleet[SimulatedBB84Config]):
    """All simulated decoy-BB84 links of a process, sampled together."""

    def draw_counts(self, rng: np.random.Generator, p: SimpleNamespace, duration_s: float) -> dict[str, NDArray[np.float64]]:
        return sample_window(p, rng, np.round(p.clock_rate_hz * duration_s))

    def secret_key_rate_bps(self, p: SimpleNamespace) -> NDArray[np.float64]:
        return expected_secret_key_rate_bps(p)
