"""Simulated entangled-photon link: an SPDC source between two receivers running BBM92 + CHSH.

Per window, the pump emits ``clock_rate_hz · window`` pulses; coincidences, bit errors, CHSH
test outcomes and delayed-window accidentals are drawn from the entanglement-PDC model of Ma,
Fung, Lo, PRA 76, 012307 (2007) (see ``qtelemetry.estimation.entanglement``). Background
clicks per gate are Y0 = 1 − exp(−dark rate · coincidence window); the intrinsic error e_d
combines the source's own visibility with polarisation misalignment. A seeded numpy
Generator makes a run reproducible; faults act on the physical parameters.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from qtelemetry.drivers.base import check
from qtelemetry.drivers.simulated import (MAX_EC_EFFICIENCY, MAX_LENGTH_KM, MAX_LOSS_DB, MAX_MEAN_PHOTONS,
                                          MAX_POWER_FACTOR, MAX_RATE_HZ, KeyDistillingConfig, KeyDistillingFleet,
                                          parameter_table)
from qtelemetry.estimation import entanglement
from qtelemetry.estimation.stats import ratio


class SimulatedSPDCConfig(KeyDistillingConfig):
    """An entangled-photon link over fiber with a pulsed SPDC source, as the simulator models it."""

    protocol: ClassVar[str] = "bbm92-spdc"

    type: Literal["simulated-spdc"]
    fiber_length_km: float = Field(ge=0.0, le=MAX_LENGTH_KM, description="fiber length between the two receivers, km")
    attenuation_db_per_km: float = Field(0.2, ge=0.0, le=MAX_LOSS_DB, description="fiber attenuation, dB/km")
    insertion_loss_db: float = Field(0.0, ge=0.0, le=MAX_LOSS_DB, description="extra loss in the arm to site B: connectors, switches, dB")
    source_position: float = Field(0.5, ge=0.0, le=1.0,
                                   description="source position as a fraction of the length from site A (0.5: midpoint)")
    detector_efficiency_a: float = Field(0.5, gt=0.0, le=1.0, description="site A detection efficiency incl. coupling")
    detector_efficiency_b: float = Field(0.5, gt=0.0, le=1.0, description="site B detection efficiency incl. coupling")
    mean_pair_number: float = Field(0.02, gt=0.0, le=MAX_MEAN_PHOTONS, description="mean photon pairs per pump pulse (2λ)")
    source_power_factor: float = Field(1.0, gt=0.0, le=MAX_POWER_FACTOR, description="pump power / nominal: scales the mean pair number")
    visibility: float = Field(0.98, ge=0.0, le=1.0, description="two-photon visibility of the source itself")
    misalignment_error: float = Field(0.01, ge=0.0, le=0.5, description="polarisation misalignment error of the channel")
    dark_count_rate_hz: float = Field(100.0, ge=0.0, le=MAX_RATE_HZ, description="background click rate of each receiver, 1/s")
    coincidence_window_s: float = Field(1e-9, gt=0.0, le=1.0, description="coincidence (gate) window, s (at most 1 s)")
    clock_rate_hz: float = Field(1e8, gt=0.0, le=MAX_RATE_HZ, description="pump pulse rate")
    chsh_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of pulses used for the CHSH test")
    ec_efficiency: float = Field(1.16, ge=1.0, le=MAX_EC_EFFICIENCY, description="error-correction inefficiency f ≥ 1")
    eavesdrop_fraction: float = Field(0.0, ge=0.0, le=1.0,
                                      description="pairs whose photon to site B Eve intercepts and resends")

    @check
    def _window_fits_clock(self) -> "SimulatedSPDCConfig":
        if self.coincidence_window_s * self.clock_rate_hz > 1.0:
            raise ValueError(
                f"coincidence_window_s ({self.coincidence_window_s:g}) must not exceed the pump period "
                f"1/clock_rate_hz ({1.0 / self.clock_rate_hz:g} s)"
            )
        return self

    def estimation_params(self) -> dict[str, float]:
        return {"ec_efficiency": self.ec_efficiency, "detector_efficiency_a": self.detector_efficiency_a,
                "detector_efficiency_b": self.detector_efficiency_b}

    @classmethod
    def fleet(cls, configs: Sequence["SimulatedSPDCConfig"], started: float) -> "SPDCFleet":
        return SPDCFleet(configs, started)

    @classmethod
    def nominal_loss_db(cls, configs: Sequence["SimulatedSPDCConfig"]) -> NDArray[np.float64]:
        """End-to-end channel loss (both arms, insertion loss included), dB."""
        p = parameter_table(configs)
        return p.fiber_length_km * p.attenuation_db_per_km + p.insertion_loss_db

    @classmethod
    def expected_key_rate_bps(cls, configs: Sequence["SimulatedSPDCConfig"]) -> NDArray[np.float64]:
        return expected_secret_key_rate_bps(parameter_table(configs))


def intercept_resend_visibility(fraction: Any) -> NDArray[np.float64]:
    """Factor on the pairs' two-photon visibility when Eve measures the photon to site B of a ``fraction`` of
    the pairs in Z or X at random and resends the state she found: 1 − f/2.

    A pair she measured at angle θ keeps the correlation V·cos 2(a − θ)·cos 2(θ − b) between analysers at
    a and b (Alice–Eve, then Eve's resent photon–Bob: ±1 outcomes through symmetric channels multiply),
    which averages over θ ∈ {0°, 45°} to V/2·cos 2(a − b): half the visibility in every direction of the
    key bases and the CHSH settings. Hence QBER e → e + f(1 − 2e)/4 (f/4 from a clean link, as in BB84:
    Bennett & Brassard 1984) and S → S(1 − f/2). Eve sits
    at the source and resends into the same fibre: the counts of clicks and coincidences do not change.
    """
    return 1.0 - np.asarray(fraction, float) / 2.0


def model_args(p: Any) -> tuple[NDArray[np.float64], ...]:
    """(λ, η_A, η_B, Y0A, Y0B, e_d) of the MFL model for a link's config or a fleet's table; e_d includes
    an eavesdropper's intercept-resend (``intercept_resend_visibility``)."""
    eta_a, eta_b = entanglement.arm_transmittances(
        p.fiber_length_km, p.attenuation_db_per_km, p.source_position,
        p.detector_efficiency_a, p.detector_efficiency_b * 10.0 ** (-np.asarray(p.insertion_loss_db) / 10.0),
    )
    y0 = -np.expm1(-np.asarray(p.dark_count_rate_hz) * p.coincidence_window_s)
    lam = np.asarray(p.mean_pair_number) * p.source_power_factor / 2.0
    visibility = np.asarray(p.visibility) * intercept_resend_visibility(p.eavesdrop_fraction)
    return lam, eta_a, eta_b, y0, y0, entanglement.intrinsic_error(visibility, p.misalignment_error)


def outcome_probabilities(p: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-pulse outcome cells and delayed-window accidental probability."""
    return entanglement.outcome_probabilities(*model_args(p), p.chsh_fraction)


def expected_secret_key_rate_bps(p: Any) -> NDArray[np.float64]:
    """Asymptotic BBM92 key rate of the model: MFL with q = ½ of the key rounds."""
    args = model_args(p)
    q = entanglement.pdc_gain(*args[:5])
    e = ratio(entanglement.pdc_error_gain(*args), q)  # NaN for a dead link: rate 0
    sifted_gain = (1.0 - np.asarray(p.chsh_fraction)) * q / 2.0
    return entanglement.bbm92_rate(sifted_gain, e, e, p.ec_efficiency) * p.clock_rate_hz


def sample_window(p: Any, rng: np.random.Generator, pulses: Any,
                  model: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None) -> dict[str, NDArray[np.float64]]:
    """One window of counts for ``pulses`` pump pulses per link under the model (``model``: the result of
    ``outcome_probabilities``, if the caller has it already)."""
    return entanglement.sample_window(rng, pulses, *(outcome_probabilities(p) if model is None else model))


class SPDCFleet(KeyDistillingFleet[SimulatedSPDCConfig]):
    """All simulated entangled-photon links of a process, sampled together."""

    def draw_counts(self, rng: np.random.Generator, p: SimpleNamespace, duration_s: float) -> dict[str, NDArray[np.float64]]:
        return sample_window(p, rng, np.round(p.clock_rate_hz * duration_s))

    def secret_key_rate_bps(self, p: SimpleNamespace) -> NDArray[np.float64]:
        return expected_secret_key_rate_bps(p)
