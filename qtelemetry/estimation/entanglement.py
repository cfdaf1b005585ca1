"""Entangled-photon links: SPDC source model, Bell-test and BBM92 estimators.

The model is the entanglement-PDC model of Ma, Fung, Lo, PRA 76, 012307 (2007) ("MFL"): a
polarisation-entangled SPDC source with thermal pair statistics P(n) = (n+1)λⁿ/(1+λ)ⁿ⁺²
(mean pair number 2λ per pulse), each arm a lossy channel of transmittance η_A, η_B
(detector efficiency included) ending in threshold detectors with background click
probability Y0 per gate and intrinsic error e_d. Pulses are indexed by the pump clock, so
"accidentals" are counted in a window delayed by one or more pulses, where the two arms are
independent.

Count layout per acquisition window (see ``BBM92.count_axes``): key rounds give coincidences
by (Alice's basis, Bob's basis) and bit errors for matching bases; a random fraction of rounds
are CHSH test rounds at the four standard analyser settings, giving same/different outcomes.

All functions broadcast over NumPy arrays (one element per link or planning point) and never
loop in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qtelemetry.estimation import decoy
from qtelemetry.estimation.protocols import KEY_STORE_AXES, KEY_STORE_KINDS, Counts, Estimates, shapes
from qtelemetry.estimation.repeaterless import plob_bound, plob_fraction
from qtelemetry.estimation.stats import clopper_pearson_upper, ratio

Array = NDArray[np.float64]

BASES = ("Z", "X")
#: CHSH settings (a_i, b_j) with analyser angles a0 = 0°, a1 = 45°, b0 = 22.5°, b1 = 67.5°
CHSH_SETTINGS = ("a0b0", "a0b1", "a1b0", "a1b1")
OUTCOMES = ("same", "different")
SIDES = ("a", "b")
#: sign of each setting's correlator in S = E00 − E01 + E10 + E11 (CHSH, PRL 23, 880 (1969))
CHSH_SIGNS = np.array([1.0, -1.0, 1.0, 1.0])
#: ideal correlator of each setting for |Φ+⟩: E(α, β) = cos 2(α − β) at the angles above
CHSH_IDEAL = CHSH_SIGNS / np.sqrt(2.0)


def arm_transmittances(
    length_km: ArrayLike,
    attenuation_db_per_km: ArrayLike,
    source_position: ArrayLike,
    efficiency_a: ArrayLike,
    efficiency_b: ArrayLike,
) -> tuple[Array, Array]:
    """(η_A, η_B) for a source at ``source_position`` (0 = at Alice, ½ = midpoint) of a fibre link (MFL model).

    Each arm's transmittance is its fibre's 10^(−αL/10) times that side's detection
    efficiency (collection, optics and detector).
    """
    length = np.asarray(length_km, float)
    position = np.asarray(source_position, float)
    eta_a = decoy.transmittance(position * length, attenuation_db_per_km) * efficiency_a
    eta_b = decoy.transmittance((1.0 - position) * length, attenuation_db_per_km) * efficiency_b
    return eta_a, eta_b


def singles_probability(lam: ArrayLike, eta: ArrayLike, y0: ArrayLike) -> Array:
    """Click probability of one arm per pulse, 1 − (1 − Y0)/(1 + ηλ)² (MFL model, marginal of one arm)."""
    return 1.0 - (1.0 - np.asarray(y0, float)) / (1.0 + np.asarray(eta, float) * lam) ** 2


def _joint_no_click_denominator(lam: ArrayLike, eta_a: ArrayLike, eta_b: ArrayLike) -> Array:
    """1 + η_Aλ + η_Bλ − η_Aη_Bλ, the generating-function denominator shared by Q_λ and E_λQ_λ."""
    eta_a, eta_b = np.asarray(eta_a, float), np.asarray(eta_b, float)
    return 1.0 + (eta_a + eta_b - eta_a * eta_b) * np.asarray(lam, float)


def pdc_gain(lam: ArrayLike, eta_a: ArrayLike, eta_b: ArrayLike, y0_a: ArrayLike, y0_b: ArrayLike) -> Array:
    """Coincidence probability per pulse Q_λ (MFL eq. for the overall gain of the entanglement PDC source).

    Q_λ = 1 − (1−Y0A)/(1+η_Aλ)² − (1−Y0B)/(1+η_Bλ)² + (1−Y0A)(1−Y0B)/(1+η_Aλ+η_Bλ−η_Aη_Bλ)².
    """
    y0_a, y0_b = np.asarray(y0_a, float), np.asarray(y0_b, float)
    return (
        singles_probability(lam, eta_a, y0_a)
        + singles_probability(lam, eta_b, y0_b)
        - 1.0
        + (1.0 - y0_a) * (1.0 - y0_b) / _joint_no_click_denominator(lam, eta_a, eta_b) ** 2
    )


def pdc_error_gain(
    lam: ArrayLike,
    eta_a: ArrayLike,
    eta_b: ArrayLike,
    y0_a: ArrayLike,
    y0_b: ArrayLike,
    misalignment: ArrayLike,
) -> Array:
    """Erroneous-coincidence probability E_λQ_λ (MFL eq. for the overall QBER of the entanglement PDC source).

    E_λQ_λ = e0·Q_λ − 2(e0 − e_d)·η_Aη_Bλ(1+λ) / [(1+η_Aλ)(1+η_Bλ)(1+η_Aλ+η_Bλ−η_Aη_Bλ)], e0 = ½.
    """
    lam, eta_a, eta_b = (np.asarray(a, float) for a in (lam, eta_a, eta_b))
    e0 = decoy.E0_BACKGROUND
    correlated = eta_a * eta_b * lam * (1.0 + lam) / (
        (1.0 + eta_a * lam) * (1.0 + eta_b * lam) * _joint_no_click_denominator(lam, eta_a, eta_b)
    )
    return e0 * pdc_gain(lam, eta_a, eta_b, y0_a, y0_b) - 2.0 * (e0 - np.asarray(misalignment, float)) * correlated


def accidental_probability(
    lam: ArrayLike, eta_a: ArrayLike, eta_b: ArrayLike, y0_a: ArrayLike, y0_b: ArrayLike
) -> Array:
    """Coincidence probability in a delayed window, P_A·P_B: different pulses are independent (MFL model)."""
    return singles_probability(lam, eta_a, y0_a) * singles_probability(lam, eta_b, y0_b)


def coincidence_to_accidental(coincidences: ArrayLike, accidentals: ArrayLike) -> Array:
    """CAR = (C − A)/A, true over accidental coincidences (≈ 1/(2λ) = 1/mean pair number, weak clean source)."""
    c, a = np.asarray(coincidences, float), np.asarray(accidentals, float)
    return ratio(c - a, a)


def intrinsic_error(source_visibility: ArrayLike, misalignment: ArrayLike) -> Array:
    """e_d = (1 − V_src·(1 − 2e_mis))/2: independent bit flips compose, so their visibilities multiply."""
    return (1.0 - np.asarray(source_visibility, float) * (1.0 - 2.0 * np.asarray(misalignment, float))) / 2.0


def visibility(error_rate: ArrayLike) -> Array:
    """Two-photon visibility V = (C_max − C_min)/(C_max + C_min) = 1 − 2E in a basis with error rate E."""
    return 1.0 - 2.0 * np.asarray(error_rate, float)


def chsh_from_visibility(vis: ArrayLike) -> Array:
    """S = 2√2·V for a Werner state of visibility V at optimal settings (Horodecki³, PLA 200, 340 (1995))."""
    return 2.0 * np.sqrt(2.0) * np.asarray(vis, float)


def chsh(same: ArrayLike, different: ArrayLike) -> tuple[Array, Array]:
    """|S| and its standard deviation from same/different counts of the four settings (…, 4).

    E_i = (N_same − N_diff)/N_i, S = E00 − E01 + E10 + E11 (CHSH, PRL 23, 880 (1969)); each
    E_i is a binomial estimate with Var(E_i) = (1 − E_i²)/N_i, settings independent, so
    σ_S = √Σ(1 − E_i²)/N_i. NaN unless every setting has counts.
    """
    same, different = np.asarray(same, float), np.asarray(different, float)
    n = same + different
    corr = ratio(same - different, n)
    s = np.abs(np.sum(CHSH_SIGNS * corr, axis=-1))
    with np.errstate(invalid="ignore"):
        sigma = np.sqrt(np.sum(ratio(1.0 - corr**2, n), axis=-1))
    return s, sigma


def fidelity_from_error_rates(e_x: ArrayLike, e_y: ArrayLike, e_z: ArrayLike) -> Array:
    """Bell-state fidelity F = 1 − (e_X + e_Y + e_Z)/2 from the three Pauli-basis error rates.

    Exact for any two-qubit state: F = (1 + ⟨XX⟩ ∓ ⟨YY⟩ + ⟨ZZ⟩)/4 in the Pauli decomposition of the
    target Bell projector, with each ⟨PP⟩ = ±(1 − 2e_P) (e.g. Gühne & Tóth, Phys. Rep. 474, 1 (2009)).
    """
    return 1.0 - (np.asarray(e_x, float) + np.asarray(e_y, float) + np.asarray(e_z, float)) / 2.0


def fidelity_lower_bound(e_z: ArrayLike, e_x: ArrayLike) -> Array:
    """F ≥ 1 − e_Z − e_X from two bases, clipped to [0, 1].

    In the Bell basis e_Z = p_Ψ+ + p_Ψ−, e_X = p_Φ− + p_Ψ−, so F = p_Φ+ = 1 − e_Z − e_X + p_Ψ−
    (Bennett, DiVincenzo, Smolin, Wootters, PRA 54, 3824 (1996), Bell-diagonal decomposition).
    """
    return np.clip(1.0 - np.asarray(e_z, float) - np.asarray(e_x, float), 0.0, 1.0)


def bbm92_rate(sifted_gain: ArrayLike, bit_error: ArrayLike, phase_error: ArrayLike, ec_efficiency: ArrayLike) -> Array:
    """Secret key per pulse R = q·Q_λ·[1 − f·H2(E_bit) − H2(E_phase)] (MFL eq. for the entanglement PDC key rate), ≥ 0.

    ``sifted_gain`` is q·Q_λ, the sifted coincidences per pulse; MFL's symmetric case has
    E_bit = E_phase = E_λ (Koashi–Preskill: a basis-independent source needs no decoy states).
    """
    rate = np.asarray(sifted_gain, float) * (
        1.0
        - np.asarray(ec_efficiency, float) * decoy.binary_entropy(bit_error)
        - decoy.binary_entropy(phase_error)
    )
    return np.maximum(np.nan_to_num(rate, nan=0.0), 0.0)


def phase_error_upper(
    test_errors: ArrayLike, test_size: ArrayLike, key_size: ArrayLike, confidence: float
) -> Array:
    """Upper bound on the key block's phase-error rate from the other basis's errors, clipped to ½.

    Chosen finite-size correction: the Clopper–Pearson upper bound of the other basis's error
    rate (the phase error of an i.i.d. sample) plus Hoeffding's √(ln(1/ε)/2n) for the key
    block's own n-sample fluctuation (Hoeffding, JASA 58, 13 (1963)); each part fails with
    probability (1 − confidence)/2. Collective-attack (i.i.d.) assumption, no composable ε-terms.
    """
    eps = (1.0 - confidence) / 2.0
    key_size = np.asarray(key_size, float)
    with np.errstate(divide="ignore"):
        hoeffding = np.sqrt(np.log(1.0 / eps) / (2.0 * key_size))
    return np.minimum(clopper_pearson_upper(test_errors, test_size, 1.0 - eps) + hoeffding, 0.5)


def klyshko_efficiency(coincidences: ArrayLike, accidentals: ArrayLike, singles: ArrayLike) -> Array:
    """Heralding (Klyshko) efficiency of each arm, (links, side): η_A = (C − A)/S_B, η_B = (C − A)/S_A.

    Klyshko, Sov. J. Quantum Electron. 10, 1112 (1980): a click at one side heralds a photon
    in the other arm, found there with that arm's total transmittance (fiber × detector).
    True coincidences C − A remove the accidental background counted in a delayed window.
    """
    true = np.asarray(coincidences, float) - np.asarray(accidentals, float)
    singles = np.asarray(singles, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(true[..., None] / singles[..., ::-1], 0.0, 1.0)


# --- model: per-pulse outcome probabilities and a window sampler ---------------------------


def outcome_probabilities(
    lam: ArrayLike,
    eta_a: ArrayLike,
    eta_b: ArrayLike,
    y0_a: ArrayLike,
    y0_b: ArrayLike,
    misalignment: ArrayLike,
    test_fraction: ArrayLike,
) -> tuple[Array, Array]:
    """Per-pulse probabilities of the counted outcomes: (cells (…, 16), delayed-window accidental).

    Cells, in order: bit error Z, X; correct bit Z, X; coincidence with bases ZX, XZ; CHSH
    (setting, same/different) flattened; a click at A only, at B only (singles without partner). Key rounds (1 − test_fraction): each side picks Z or
    X with probability ½ (passive beam splitter); matching bases err with E_λ. Test rounds: one
    of the four CHSH settings uniformly; outcomes agree with probability (1 + V·E_ideal)/2,
    V = 1 − 2E_λ, because the MFL noise (multi-pair, background, misalignment) is isotropic.
    """
    q = pdc_gain(lam, eta_a, eta_b, y0_a, y0_b)
    e = np.nan_to_num(ratio(pdc_error_gain(lam, eta_a, eta_b, y0_a, y0_b, misalignment), q), nan=decoy.E0_BACKGROUND)
    test_fraction = np.asarray(test_fraction, float)
    key = ((1.0 - test_fraction) * q / 4.0)[..., None]  # per basis pair
    test = (test_fraction * q / 4.0)[..., None]  # per CHSH setting
    corr = visibility(e)[..., None] * CHSH_IDEAL
    chsh_cells = np.stack([test * (1.0 + corr) / 2.0, test * (1.0 - corr) / 2.0], axis=-1)
    err = np.broadcast_to(key * e[..., None], chsh_cells.shape[:-2] + (2,))
    lone = np.stack([singles_probability(lam, eta_a, y0_a) - q, singles_probability(lam, eta_b, y0_b) - q], axis=-1)
    cells = np.concatenate(
        [err, key - err, np.broadcast_to(key, err.shape), chsh_cells.reshape(*chsh_cells.shape[:-2], 8),
         np.broadcast_to(lone, err.shape)], axis=-1
    )
    return cells, accidental_probability(lam, eta_a, eta_b, y0_a, y0_b)


def multinomial_cells(rng: np.random.Generator, n: NDArray[np.int64], cells: ArrayLike) -> Array:
    """Counts in each cell (…, k) of ``n`` trials; the probability left over goes to an uncounted cell."""
    cells = np.clip(np.broadcast_to(np.asarray(cells, float), (*np.shape(n), np.shape(cells)[-1])), 0.0, 1.0)
    rest = np.clip(1.0 - cells.sum(-1, keepdims=True), 0.0, 1.0)
    return rng.multinomial(n, np.concatenate([cells, rest], -1))[..., :-1].astype(float)


def sample_window(
    rng: np.random.Generator, pulses: ArrayLike, cells: ArrayLike, accidental: ArrayLike
) -> dict[str, Array]:
    """One window's counts for ``pulses`` pump pulses: one multinomial draw over the outcome cells.

    ``cells`` and ``accidental`` come from ``outcome_probabilities``; leading (link) axes
    broadcast with ``pulses``. Delayed-window accidentals are an independent binomial draw.
    """
    lead = np.broadcast_shapes(np.shape(pulses), np.shape(cells)[:-1], np.shape(accidental))
    n = np.broadcast_to(np.asarray(pulses, np.int64), lead)
    draw = multinomial_cells(rng, n, cells)
    err, correct, mixed = draw[..., 0:2], draw[..., 2:4], draw[..., 4:6]
    sifted = err + correct
    coincidences = np.stack([sifted[..., 0], mixed[..., 0], mixed[..., 1], sifted[..., 1]], -1).reshape(*lead, 2, 2)
    paired = draw[..., :14].sum(axis=-1, keepdims=True)
    return {
        "singles": paired + draw[..., 14:16],
        "pulses": n.astype(float),
        "coincidences": coincidences,
        "errors": err,
        "chsh": draw[..., 6:14].reshape(*lead, 4, 2),
        "accidentals": np.asarray(rng.binomial(n, np.clip(accidental, 0.0, 1.0)), float),
    }


# --- the link protocol ------------------------------------------------------------------------


@dataclass(frozen=True)
class BBM92Protocol:
    """Estimator for entangled-photon (SPDC) links running BBM92 with a CHSH monitor, vectorised over links."""

    name: str = "bbm92-spdc"
    count_axes = {
        "pulses": (),  # pump pulses (coincidence gates) in the window
        "coincidences": (BASES, BASES),  # key-round coincidences by (Alice's, Bob's) basis
        "errors": (BASES,),  # matching-basis coincidences whose bits disagree
        "chsh": (CHSH_SETTINGS, OUTCOMES),  # test-round coincidences by setting and outcome
        "accidentals": (),  # coincidences between arms in a window delayed by whole pulses
        "singles": (SIDES,),  # clicks at each receiver, with or without a partner
        **KEY_STORE_AXES,
    }
    count_shapes = shapes(count_axes)
    count_kinds = KEY_STORE_KINDS
    param_names: tuple[str, ...] = ("ec_efficiency", "detector_efficiency_a", "detector_efficiency_b")

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """Coincidences ≤ each side's singles ≤ pulses, accidentals ≤ pulses, errors ≤ matching-basis coincidences."""
        pulses = counts["pulses"]
        coinc = counts["coincidences"]
        total = coinc.sum(axis=(-2, -1)) + counts["chsh"].sum(axis=(-2, -1))
        diag = np.diagonal(coinc, axis1=-2, axis2=-1)
        singles = counts["singles"]
        return ((total[..., None] <= singles).all(axis=-1) & (singles <= pulses[..., None]).all(axis=-1)
                & (counts["accidentals"] <= pulses) & np.all(counts["errors"] <= diag, axis=-1))

    def no_estimate(self, window: Counts) -> dict[str, NDArray[np.bool_]]:
        """Why a link's window supports no estimate: no coincidences in it at all."""
        return {"no_coincidences": window["coincidences"].sum(axis=(-2, -1)) + window["chsh"].sum(axis=(-2, -1)) == 0}

    def estimate(
        self, sums: Counts, duration_s: NDArray[np.float64], params: Counts, confidence: float
    ) -> Estimates:
        coinc, errors, chsh_counts = sums["coincidences"], sums["errors"], sums["chsh"]
        sifted = np.diagonal(coinc, axis1=-2, axis2=-1)  # (links, basis)
        qber = ratio(errors, sifted)
        qber_upper = clopper_pearson_upper(errors, sifted, confidence)
        all_coinc = coinc.sum(axis=(-2, -1)) + chsh_counts.sum(axis=(-2, -1))
        s, s_sigma = chsh(chsh_counts[..., 0], chsh_counts[..., 1])
        # Each basis's key takes its phase error from the other basis's bit errors (MFL, Koashi–Preskill).
        other_errors, other_sifted = errors[:, ::-1], sifted[:, ::-1]
        sifted_rate = ratio(sifted, duration_s[:, None])
        f = params["ec_efficiency"][:, None]
        asymptotic = bbm92_rate(sifted_rate, qber, qber[:, ::-1], f).sum(axis=-1)
        # Union bound over the two bases: both bases' bounds hold together at `confidence`.
        per_basis = 1.0 - (1.0 - confidence) / 2.0
        phase_upper = phase_error_upper(other_errors, other_sifted, sifted, per_basis)
        finite = bbm92_rate(sifted_rate, qber, phase_upper, f).sum(axis=-1)
        pair_upper = clopper_pearson_upper(errors, sifted, per_basis)
        usable = np.all(sifted > 0, axis=-1)
        heralding = klyshko_efficiency(all_coinc, sums["accidentals"], sums["singles"])
        channel = heralding[:, 0] / params["detector_efficiency_a"] * heralding[:, 1] / params["detector_efficiency_b"]
        pulse_rate = ratio(sums["pulses"], duration_s)
        return {
            "heralding_efficiency_a": heralding[:, 0],
            "heralding_efficiency_b": heralding[:, 1],
            "loss_db": -10.0 * np.log10(channel),
            "plob_bound_bps": plob_bound(channel) * pulse_rate,
            "plob_ratio": np.where(usable, plob_fraction(ratio(finite, pulse_rate), channel), np.nan),
            "coincidence_rate": ratio(all_coinc, duration_s),
            "accidental_rate": ratio(sums["accidentals"], duration_s),
            "car": coincidence_to_accidental(all_coinc, sums["accidentals"]),
            "qber_z": qber[:, 0],
            "qber_x": qber[:, 1],
            "qber_z_upper": qber_upper[:, 0],
            "qber_x_upper": qber_upper[:, 1],
            "visibility_z": visibility(qber[:, 0]),
            "visibility_x": visibility(qber[:, 1]),
            "chsh_s": s,
            "chsh_s_stddev": s_sigma,
            "fidelity_lower_bound": fidelity_lower_bound(pair_upper[:, 0], pair_upper[:, 1]),
            "asymptotic_key_rate_bps": np.where(usable, asymptotic, np.nan),
            "secret_key_rate_bps": np.where(usable, finite, np.nan),
        }


BBM92 = BBM92Protocol()
