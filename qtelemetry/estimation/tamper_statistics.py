"""What the tamper detectors watch on each protocol's links: the binomial trials of every window, the
baseline each is compared with, and the change each statistic is tuned to (``changedetect`` runs them).

Decoy-state BB84 (all against a baseline frozen at the end of the warm-up):

- ``qber_z#i``, ``qber_x#i``: errors among sifted signal bits, p0 → p0 + shift_i, one statistic per
  member of the bank of shifts (intercept-resend on a fraction f of the pulses adds f/4: Bennett &
  Brassard 1984). A CUSUM accumulates evidence only for changes above about half its design shift,
  so a bank of shifts sees small attacks without slowing on large ones. p0 is that of the window's
  own light: a share Y0/Q_μ of the clicks are dark counts with error ½, the rest photons with the
  link's error e_d (MQZL: E_μQ_μ = e0·Y0 + e_d(Q_μ − Y0)), so a fibre bend, which halves Q_μ and so
  doubles the dark share, moves p0 with it and is not taken for an eavesdropper;
- ``decoy_up``, ``decoy_down``: of the signal + decoy clicks of a window, the decoy share, which the
  window's pulse counts and the gain ratio r = Q_ν/Q_μ fix at N_ν r/(N_ν r + N_μ); r → r(1±s). A
  loss change scales both gains alike (Q ≈ ημ), a PNS attack lowers r (Brassard, Lütkenhaus, Mor,
  Sanders, PRL 85, 1330 (2000)), faked clicks after blinding raise it (Lydersen et al., Nat.
  Photon. 4, 686 (2010));
- ``vacuum_up``, ``vacuum_down``: clicks on vacuum pulses, Y0 → Y0·k or Y0/k, against their own
  baseline: no loss change moves dark counts, whereas every fibre bend moves Y0/Q_μ. Blinded
  detectors lose their dark counts, and clicks Eve fakes regardless of intensity land on vacuum
  pulses too.

Entangled photons (BBM92 with a CHSH test, Ma, Fung, Lo, PRA 76, 012307 (2007)):

- ``qber_z#i``, ``qber_x#i``: errors among matching-basis coincidences, the same bank;
- ``chsh``: in the test rounds of each of the four CHSH settings, the outcomes that agree with the
  ideal correlation's sign (same for +, different for −). Their probabilities p_i give
  S = Σᵢ(2p_i − 1) (CHSH, PRL 23, 880 (1969)), so a fall of S by ΔS is each p_i − ΔS/8; the four
  settings are independent binomials, each against its own baseline, and the statistic sums their
  llrs. Intercept-resend on a fraction f of the pairs multiplies S by 1 − f/2 (``simulated_spdc``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation.bb84 import DECOY, SIGNAL, SIGNAL_SIGMAS, VACUUM
from qtelemetry.estimation.changedetect import Rows, Settings, Statistics, Trials
from qtelemetry.estimation.entanglement import CHSH_SETTINGS, CHSH_SIGNS

Array = NDArray[np.float64]


def jeffreys(k: Array, n: Array) -> Array:
    """(k + ½)/(n + 1): a baseline proportion that is never 0 or 1, so every llr stays finite."""
    return (k + 0.5) / (n + 1.0)


def qber_bank(trials: Trials, first: int, errors: Array, sifted: Array, p0: Array, shifts: Array) -> None:
    """Fill the trials of one basis's bank, columns ``first`` on: p0 → p0 + shift (at most ½); a baseline at ½
    or above (no correlation left to lose) has no alternative (NaN)."""
    k, n, base, alt = (t[:, first:first + shifts.shape[1]] for t in trials)
    k[:], n[:], base[:] = errors[:, None], sifted[:, None], p0[:, None]
    alt[:] = np.where(p0[:, None] < 0.5, np.minimum(p0[:, None] + shifts, 0.5), np.nan)


def empty_trials(links: int, trials: int) -> Trials:
    """(k, n, p0, p1) arrays of ``trials`` columns to fill."""
    k, n, p0, p1 = np.empty((4, links, trials))
    return k, n, p0, p1


def in_light(qber: Array, dark0: Array, dark: Array) -> Array:
    """The QBER ``qber`` learned with a share ``dark0`` of dark clicks (error ½), at a share ``dark``: the
    photons' own error e_d = (qber − dark0/2)/(1 − dark0) stays (MQZL §II). A warm-up whose clicks were
    all dark (dark0 ≥ 1) says nothing of the photons' error: the QBER learned stays as it is."""
    with np.errstate(invalid="ignore", divide="ignore"):
        photons = (qber - dark0 / 2) / (1 - dark0)
    return np.where(dark0 < 1, photons + (0.5 - photons) * dark, qber)


def _bank_names(bank: int) -> tuple[str, ...]:
    return tuple(f"qber_{basis}#{i + 1}" for basis in "zx" for i in range(bank))


@dataclass(frozen=True)
class DecoyBB84Statistics:
    """Statistics of decoy-BB84 links (``bank``: members of the QBER bank per basis)."""

    bank: int
    protocol: str = "bb84-decoy"
    #: errors and sifted bits of signal pulses per basis, then clicks and pulses per intensity
    warm: tuple[str, ...] = ("errors_z", "sifted_z", "errors_x", "sifted_x", "det_s", "det_d", "det_v",
                             "pulses_s", "pulses_d", "pulses_v")
    baselines: tuple[str, ...] = ("qber_z", "qber_x", "gain_ratio", "vacuum_gain", "signal_gain")
    #: quantity -> the estimate of its sliding-window value
    quantities: dict[str, str] = field(default_factory=lambda: {
        "qber_z": "qber_z", "qber_x": "qber_x", "signal_gain": "gain_signal", "decoy_gain": "gain_decoy",
        "vacuum_gain": "gain_vacuum"})

    @property
    def names(self) -> tuple[str, ...]:
        return (*_bank_names(self.bank), "decoy_up", "decoy_down", "vacuum_up", "vacuum_down")

    @property
    def detectors(self) -> dict[str, tuple[int, ...]]:
        b = self.bank
        return {"qber_z": tuple(range(b)), "qber_x": tuple(range(b, 2 * b)), "decoy_gain": (2 * b, 2 * b + 1),
                "vacuum_gain": (2 * b + 2, 2 * b + 3)}

    @property
    def owner(self) -> NDArray[np.intp]:
        return np.arange(2 * self.bank + 4)

    def window_sums(self, counts: dict[str, Array]) -> Array:
        e, s, d, p = counts["errors"], counts["sifted"], counts["detections"], counts["pulses"]
        return np.column_stack([e[:, 0, SIGNAL], s[:, 0, SIGNAL], e[:, 1, SIGNAL], s[:, 1, SIGNAL],
                                d[:, SIGNAL], d[:, DECOY], d[:, VACUUM], p[:, SIGNAL], p[:, DECOY], p[:, VACUUM]])

    def baseline(self, w: Array) -> Array:
        q_s, q_d = jeffreys(w[:, 4], w[:, 7]), jeffreys(w[:, 5], w[:, 8])
        return np.column_stack([jeffreys(w[:, 0], w[:, 1]), jeffreys(w[:, 2], w[:, 3]), q_d / q_s,
                                jeffreys(w[:, 6], w[:, 9]), q_s])

    def trials(self, w: Array, baseline: Array, settings: Settings, rows: Rows) -> Trials:
        shifts = settings.qber_shifts[rows]
        r, y0 = baseline[:, 2], baseline[:, 3]
        with np.errstate(invalid="ignore", divide="ignore"):  # no signal clicks: all dark, QBER ½
            dark = np.minimum(y0 * w[:, 7] / w[:, 4], 1.0)  # share of the window's signal clicks that are dark counts
        qber = [in_light(baseline[:, b], y0 / baseline[:, 4], dark) for b in (0, 1)]
        s, factor = settings.decoy_gain_shift[rows], settings.vacuum_gain_factor[rows]
        trials = k, n, p0, p1 = empty_trials(w.shape[0], len(self.names))
        b = self.bank
        qber_bank(trials, 0, w[:, 0], w[:, 1], qber[0], shifts)
        qber_bank(trials, b, w[:, 2], w[:, 3], qber[1], shifts)
        decoy, vacuum = slice(2 * b, 2 * b + 2), slice(2 * b + 2, 2 * b + 4)
        with np.errstate(invalid="ignore", divide="ignore"):  # no signal or decoy pulses: NaN, no trials to weigh
            share = lambda ratio: w[:, 8] * ratio / (w[:, 8] * ratio + w[:, 7])  # noqa: E731
            k[:, decoy], n[:, decoy], p0[:, decoy] = w[:, 5, None], (w[:, 4] + w[:, 5])[:, None], share(r)[:, None]
            p1[:, 2 * b], p1[:, 2 * b + 1] = share(r * (1 + s)), share(r / (1 + s))
        k[:, vacuum], n[:, vacuum], p0[:, vacuum] = w[:, 6, None], w[:, 9, None], y0[:, None]
        p1[:, 2 * b + 2], p1[:, 2 * b + 3] = np.minimum(y0 * factor, 0.5), y0 / factor
        return trials

    def quiet(self, w: Array, baseline: Array) -> NDArray[np.bool_]:
        """A window without light above the dark counts (a cut) says nothing about QBER or gain ratio:
        QKDNoSignal reports it. Dark counts expected from the baseline Y0, which is known far better
        than one window's few vacuum clicks tell it. The vacuum gain does not need the light."""
        expected_dark = w[:, 7] * baseline[:, 3]
        dark = w[:, 4] - expected_dark <= SIGNAL_SIGMAS * np.sqrt(expected_dark + 1.0)
        out = np.zeros((w.shape[0], len(self.names)), bool)
        out[:, :2 * self.bank + 2] = dark[:, None]
        return out

    def baseline_quantities(self, baseline: Array) -> Array:
        return np.column_stack([baseline[:, 0], baseline[:, 1], baseline[:, 4], baseline[:, 2] * baseline[:, 4],
                                baseline[:, 3]])


@dataclass(frozen=True)
class BBM92Statistics:
    """Statistics of entangled-photon (BBM92 + CHSH) links (``bank``: members of the QBER bank per basis)."""

    bank: int
    protocol: str = "bbm92-spdc"
    #: errors and matching-basis coincidences per basis, agreeing outcomes and test rounds per CHSH
    #: setting, then all coincidences and the delayed-window accidentals
    warm: tuple[str, ...] = ("errors_z", "sifted_z", "errors_x", "sifted_x",
                             *(f"agree_{s}" for s in CHSH_SETTINGS), *(f"tests_{s}" for s in CHSH_SETTINGS),
                             "coincidences", "accidentals")
    baselines: tuple[str, ...] = ("qber_z", "qber_x", *(f"agree_{s}" for s in CHSH_SETTINGS))
    quantities: dict[str, str] = field(default_factory=lambda: {"qber_z": "qber_z", "qber_x": "qber_x",
                                                                "chsh": "chsh_s"})

    @property
    def names(self) -> tuple[str, ...]:
        return (*_bank_names(self.bank), "chsh")

    @property
    def detectors(self) -> dict[str, tuple[int, ...]]:
        b = self.bank
        return {"qber_z": tuple(range(b)), "qber_x": tuple(range(b, 2 * b)), "chsh": (2 * b,)}

    @property
    def owner(self) -> NDArray[np.intp]:
        return np.concatenate([np.arange(2 * self.bank), np.full(len(CHSH_SETTINGS), 2 * self.bank)])

    def window_sums(self, counts: dict[str, Array]) -> Array:
        coinc, chsh = counts["coincidences"], counts["chsh"]
        sifted = np.diagonal(coinc, axis1=-2, axis2=-1)
        agree = np.where(CHSH_SIGNS > 0, chsh[:, :, 0], chsh[:, :, 1])
        return np.column_stack([counts["errors"][:, 0], sifted[:, 0], counts["errors"][:, 1], sifted[:, 1], agree,
                                chsh.sum(axis=2), coinc.sum(axis=(1, 2)) + chsh.sum(axis=(1, 2)),
                                counts["accidentals"]])

    def baseline(self, w: Array) -> Array:
        return np.column_stack([jeffreys(w[:, 0], w[:, 1]), jeffreys(w[:, 2], w[:, 3]), jeffreys(w[:, 4:8], w[:, 8:12])])

    def trials(self, w: Array, baseline: Array, settings: Settings, rows: Rows) -> Trials:
        shifts = settings.qber_shifts[rows]
        trials = k, n, p0, p1 = empty_trials(w.shape[0], 2 * self.bank + len(CHSH_SETTINGS))
        qber_bank(trials, 0, w[:, 0], w[:, 1], baseline[:, 0], shifts)
        qber_bank(trials, self.bank, w[:, 2], w[:, 3], baseline[:, 1], shifts)
        chsh = slice(2 * self.bank, None)
        agree1 = baseline[:, 2:6] - settings.chsh_shift[rows, None] / 8.0
        k[:, chsh], n[:, chsh], p0[:, chsh] = w[:, 4:8], w[:, 8:12], baseline[:, 2:6]
        p1[:, chsh] = np.where(agree1 > 0, agree1, np.nan)
        return trials

    def quiet(self, w: Array, baseline: Array) -> NDArray[np.bool_]:
        """Coincidences no more than the window's accidentals (a cut arm, a source off): no pairs to
        judge; the link's own alerts report it."""
        dark = w[:, 12] - w[:, 13] <= SIGNAL_SIGMAS * np.sqrt(w[:, 13] + 1.0)
        return np.repeat(dark[:, None], len(self.names), axis=1)

    def baseline_quantities(self, baseline: Array) -> Array:
        return np.column_stack([baseline[:, 0], baseline[:, 1], (2 * baseline[:, 2:6] - 1).sum(axis=1)])


#: Protocol -> its statistics for a QBER bank of a given size: the links the tamper detectors watch.
STATISTICS: dict[str, Callable[[int], Statistics]] = {
    "bb84-decoy": DecoyBB84Statistics, "bbm92-spdc": BBM92Statistics}
#: Every exported detector and baseline-ratio quantity, of any protocol (the catalogue's label values).
DETECTORS = tuple(dict.fromkeys(d for make in STATISTICS.values() for d in make(1).detectors))
QUANTITIES = tuple(dict.fromkeys(q for make in STATISTICS.values() for q in make(1).quantities))
