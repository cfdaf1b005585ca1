"""Decoy-state BB84 link protocol: counts → loss, QBER (with bounds), sifted and secret key rate.

Intensity classes are indexed (signal μ, weak decoy ν, vacuum); bases (Z, X). The estimator
inverts the channel model of Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005) on measured gains and
bounds the key with their vacuum+weak decoy method (see ``decoy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation import decoy
from qtelemetry.estimation.finite_key import finite_key_from_counts
from qtelemetry.estimation.repeaterless import plob_bound, plob_fraction
from qtelemetry.estimation.protocols import KEY_STORE_AXES, KEY_STORE_KINDS, Counts, Estimates, shapes
from qtelemetry.estimation.stats import clopper_pearson_upper, ratio

INTENSITIES = ("signal", "decoy", "vacuum")
BASES = ("Z", "X")
SIGNAL, DECOY, VACUUM = range(3)


def sifting_fraction(p_z: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Fraction of detections whose bases match when both sides pick Z with probability p_Z."""
    p_z = np.asarray(p_z, float)
    return p_z**2 + (1.0 - p_z) ** 2


def channel_loss_db(
    q_signal: NDArray[np.float64],
    y0: NDArray[np.float64],
    mu: NDArray[np.float64],
    detector_efficiency: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Channel loss (dB) from the signal gain, inverting Q_μ = Y0 + 1 − e^(−ημ) (MQZL §II).

    η = −ln(1 − (Q_μ − Y0))/μ is the overall transmittance; dividing out the known detector
    efficiency leaves the channel (fiber + insertion) transmittance. No signal above the
    background (a cut fiber) gives +Inf; no data gives NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = -np.log1p(-np.clip(q_signal - y0, 0.0, 1.0)) / mu
        return -10.0 * np.log10(eta / detector_efficiency)


#: Signal gain must exceed the vacuum gain by this many standard deviations to count as light.
SIGNAL_SIGMAS = 5.0


def no_signal(det: NDArray[np.float64], pulses: NDArray[np.float64]) -> NDArray[np.bool_]:
    """True where the signal gain is NOT distinguishable from dark counts (a cut or dark fiber).

    Poisson errors on both gains: excess = Q_μ − Y0 against σ = √(D_μ/N_μ² + D_0/N_0²). Without
    this test, a cut fiber's loss estimate would flap between +Inf and noise-driven finite values.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = det[:, SIGNAL] / pulses[:, SIGNAL] - det[:, VACUUM] / pulses[:, VACUUM]
        sigma = np.sqrt(det[:, SIGNAL] / pulses[:, SIGNAL] ** 2 + det[:, VACUUM] / pulses[:, VACUUM] ** 2)
        return excess <= SIGNAL_SIGMAS * sigma


@dataclass(frozen=True)
class DecoyBB84:
    """Estimator for vacuum + weak decoy BB84 links, vectorised over links."""

    name: str = "bb84-decoy"
    count_axes = {
        "pulses": (INTENSITIES,),  # pulses sent per intensity
        "detections": (INTENSITIES,),  # all of Bob's clicks per intensity, before sifting
        "sifted": (BASES, INTENSITIES),  # clicks with matching bases
        "errors": (BASES, INTENSITIES),  # sifted clicks whose bit disagrees
        **KEY_STORE_AXES,
    }
    count_shapes = shapes(count_axes)
    count_kinds = KEY_STORE_KINDS
    param_names: tuple[str, ...] = (
        "mu",
        "nu",
        "basis_bias",
        "detector_efficiency",
        "ec_efficiency",
        "block_size",
        "epsilon_sec",
        "epsilon_cor",
    )

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """Detections ≤ pulses, sifted ≤ detections, errors ≤ sifted, per intensity."""
        pulses, det = counts["pulses"], counts["detections"]
        sifted, errors = counts["sifted"], counts["errors"]
        return (
            np.all(det <= pulses, axis=-1)
            & np.all(sifted.sum(axis=1) <= det, axis=-1)
            & np.all(errors <= sifted, axis=(-2, -1))
        )

    def no_estimate(self, window: Counts) -> dict[str, NDArray[np.bool_]]:
        """Why a link's window supports no key estimate: no sifted signal or decoy bits."""
        sifted = window["sifted"].sum(axis=1)
        return {"no_detections": (sifted[:, SIGNAL] == 0) | (sifted[:, DECOY] == 0)}

    def estimate(
        self, sums: Counts, duration_s: NDArray[np.float64], params: Counts, confidence: float
    ) -> Estimates:
        pulses, det = sums["pulses"], sums["detections"]
        sifted, errors = sums["sifted"], sums["errors"]
        gains = ratio(det, pulses)  # (links, intensity)
        error_rates = ratio(errors.sum(axis=1), sifted.sum(axis=1))  # (links, intensity)
        q_mu, q_nu, y0 = gains[:, SIGNAL], gains[:, DECOY], gains[:, VACUUM]
        rate_per_pulse = decoy.vacuum_weak_rate(
            q_mu,
            error_rates[:, SIGNAL] * q_mu,
            q_nu,
            error_rates[:, DECOY] * q_nu,
            y0,
            params["mu"],
            params["nu"],
            params["ec_efficiency"],
            sifting_fraction(params["basis_bias"]),
        )
        usable = np.isfinite(q_mu) & np.isfinite(q_nu) & np.isfinite(y0) & (sifted[:, :, DECOY].sum(axis=1) > 0)
        pulse_rate = ratio(pulses.sum(axis=1), duration_s)
        asymptotic_bps = rate_per_pulse * ratio(pulses[:, SIGNAL], duration_s)
        finite_bps = self.finite_key_rate_per_pulse(sums, params) * pulse_rate
        loss_db = np.where(no_signal(det, pulses), np.inf,
                           channel_loss_db(q_mu, y0, params["mu"], params["detector_efficiency"]))
        channel_transmittance = 10.0 ** (-loss_db / 10.0)
        k, n = errors[:, :, SIGNAL], sifted[:, :, SIGNAL]
        return {
            "gain_signal": q_mu,
            "gain_decoy": q_nu,
            "gain_vacuum": y0,
            "loss_db": loss_db,
            "qber_z": ratio(k[:, 0], n[:, 0]),
            "qber_x": ratio(k[:, 1], n[:, 1]),
            "qber_z_upper": clopper_pearson_upper(k[:, 0], n[:, 0], confidence),
            "qber_x_upper": clopper_pearson_upper(k[:, 1], n[:, 1], confidence),
            "sifted_key_rate_bps": ratio(n.sum(axis=1), duration_s),
            "asymptotic_key_rate_bps": np.where(usable, asymptotic_bps, np.nan),
            "secret_key_rate_bps": np.where(usable, finite_bps, np.nan),
            "plob_bound_bps": plob_bound(channel_transmittance) * pulse_rate,
            "plob_ratio": np.where(usable, plob_fraction(ratio(finite_bps, pulse_rate), channel_transmittance), np.nan),
        }

    @staticmethod
    def finite_key_rate_per_pulse(sums: Counts, params: Counts) -> NDArray[np.float64]:
        """Finite-key rate per pulse (Lim et al., PRA 89, 022307 (2014)) for one block of ``block_size``.

        The sliding window's counts are scaled to a block holding ``block_size`` sifted Z bits:
        the key each block would yield if the link kept its current gains and error rates.
        """
        pulses, sifted, errors = sums["pulses"], sums["sifted"], sums["errors"]
        scale = ratio(params["block_size"], sifted[:, 0].sum(axis=1))[:, None]
        mu = np.stack([params["mu"], params["nu"], np.zeros_like(params["mu"])], axis=1)
        with np.errstate(invalid="ignore"):
            key = finite_key_from_counts(
                sifted[:, 0] * scale, errors[:, 0] * scale, sifted[:, 1] * scale, errors[:, 1] * scale,
                pulses * scale, mu, ratio(pulses, pulses.sum(axis=1, keepdims=True)),
                ec_efficiency=params["ec_efficiency"], eps_sec=params["epsilon_sec"], eps_cor=params["epsilon_cor"])
        return np.where(np.isfinite(scale[:, 0]), key.rate, np.nan)


BB84_DECOY = DecoyBB84()
