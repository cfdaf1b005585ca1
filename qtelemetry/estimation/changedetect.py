"""Sequential change detection on decoy-BB84 counts: CUSUMs that see an attack, at a stated false-alarm rate.

Every statistic is Page's CUSUM of per-window log-likelihood ratios, S ← max(0, S + llr), alarm at
S ≥ h (Page, Biometrika 41, 100 (1954); minimax-optimal for a known shift: Lorden, Ann. Math.
Stat. 42, 1897 (1971), Moustakides, Ann. Stat. 14, 1379 (1986)). Each window's llr is that of
the exact binomial of its own counts (Reynolds & Stoumbos, J. Qual. Technol. 31, 87 (1999), for
a proportion), so windows of any length and count, ten vacuum clicks or a million sifted bits,
enter without a normal approximation.

Statistics (columns of the state arrays), all against a baseline frozen at the end of the warm-up:

- ``qber_z``, ``qber_x``: errors among sifted signal bits, p0 → p0 + shift (intercept-resend on a
  fraction f of the pulses adds f/4: Bennett & Brassard 1984);
- ``decoy_up``, ``decoy_down``: of the signal + decoy clicks of a window, the decoy share, which
  the window's pulse counts and the gain ratio r = Q_ν/Q_μ fix at N_ν r/(N_ν r + N_μ); r → r(1±s).
  A loss change scales both gains alike (Q ≈ ημ), a PNS attack lowers r (Brassard, Lütkenhaus,
  Mor, Sanders, PRL 85, 1330 (2000)), faked clicks after blinding raise it (Lydersen et al., Nat.
  Photon. 4, 686 (2010));
- ``vacuum_up``, ``vacuum_down``: clicks on vacuum pulses, Y0 → Y0·k or Y0/k. The vacuum gain is
  compared with its own baseline, not with the signal gain: no loss change moves dark counts,
  whereas every fibre bend moves Y0/Q_μ. Blinded detectors lose their dark counts, and clicks Eve
  fakes regardless of intensity land on vacuum pulses too.

Thresholds come from the mean time between false alarms through Siegmund's corrected diffusion
approximation (Sequential Analysis, 1985, ch. X): ARL0 ≈ (e^h' − h' − 1)/K with h' = h − 2 ln ν(δ),
K = −E0[llr] and δ² = Var0[llr] per window, ν Siegmund's overshoot function. It assumes stationary
windows: the counts of a window like the warm-up's mean window, independent between windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from numpy.typing import NDArray
from scipy import special

from qtelemetry.estimation.bb84 import DECOY, SIGNAL, SIGNAL_SIGMAS, VACUUM

#: The exported detectors and the one-sided statistics (columns) each one is the maximum of.
DETECTORS: dict[str, tuple[int, ...]] = {"qber_z": (0,), "qber_x": (1,), "decoy_gain": (2, 3), "vacuum_gain": (4, 5)}
STATISTICS = ("qber_z", "qber_x", "decoy_up", "decoy_down", "vacuum_up", "vacuum_down")
#: Quantities compared with their baseline in ``qkd_tamper_baseline_ratio``.
QUANTITIES = ("qber_z", "qber_x", "signal_gain", "decoy_gain", "vacuum_gain")
#: Thresholds aim at this many times the configured mean time between false alarms: the
#: approximation and a baseline learned from a finite warm-up gave up to 1.07x the configured rate
#: with a few counts per window (bench/tamper.py); the margin costs ln 1.25 = 0.22 of llr in delay.
MARGIN = 1.25
#: Estimate keys of the detectors' published state start with this: not an estimator's output.
ESTIMATE_PREFIX = "tamper_"


def estimate_key(what: str, name: str = "") -> str:
    """The estimate key of ``what`` (statistic, alarm, baseline_ratio, warmup) of detector or quantity ``name``,
    which the runtime publishes and the metric catalogue reads."""
    return ESTIMATE_PREFIX + "_".join(filter(None, (what, name)))


#: A statistic stops growing at this many thresholds: past the alarm (which latches) more evidence
#: changes nothing, and a capped statistic falls back below 1 soon after the change ends.
CAP = 10.0


def binomial_llr(k: NDArray, n: NDArray, p0: NDArray, p1: NDArray) -> NDArray[np.float64]:
    """log P1/P0 of k successes in n trials: k ln(p1/p0) + (n − k) ln((1 − p1)/(1 − p0)); 0 when n = 0."""
    return k * (np.log(p1) - np.log(p0)) + (n - k) * (np.log1p(-p1) - np.log1p(-p0))


def llr_moments(n: NDArray, p0: NDArray, p1: NDArray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """K = −E0[llr] = n·KL(p0‖p1) and δ = sd0[llr] of a window of n trials."""
    c = np.log(p1) - np.log(p0) - np.log1p(-p1) + np.log1p(-p0)
    kl = p0 * (np.log(p0) - np.log(p1)) + (1 - p0) * (np.log1p(-p0) - np.log1p(-p1))
    return n * kl, np.abs(c) * np.sqrt(n * p0 * (1 - p0))


@cache
def _nu_table() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ln ν(δ) on a log grid: ν(δ) = 2δ⁻² exp(−2 Σₙ n⁻¹ Φ(−δ√n/2)) (Siegmund 1985, ch. X)."""
    delta = np.geomspace(0.05, 200.0, 400)
    n = np.arange(1, 40_001, dtype=float)
    terms = np.stack([(special.ndtr(-d * np.sqrt(n) / 2) / n).sum() for d in delta])
    return np.log(delta), np.log(2.0) - 2 * np.log(delta) - 2 * terms


def log_overshoot(delta: NDArray) -> NDArray[np.float64]:
    """ln ν(δ); below the table ν ≈ e^(−0.583δ) (Siegmund 1985, ch. X)."""
    grid, values = _nu_table()
    delta = np.asarray(delta, float)
    small = delta < np.exp(grid[0])
    return np.where(small, -0.583 * delta, np.interp(np.log(np.maximum(delta, 1e-300)), grid, values))


def cusum_threshold(arl0: NDArray, k: NDArray, delta: NDArray) -> NDArray[np.float64]:
    """Threshold h with a mean of ``arl0`` windows between false alarms (Siegmund's approximation).

    Solves (e^x − x − 1)/K = ARL0 for x = h' by fixed point, then h = h' + 2 ln ν(δ), never
    below ln 2. Where one window decides alone (K ≫ 1) the approximation is conservative:
    false alarms are rarer than asked.
    """
    target = np.asarray(arl0, float) * np.asarray(k, float)
    x = np.log1p(target)
    for _ in range(30):
        x = np.log(target + x + 1.0)
    return np.maximum(x + 2 * log_overshoot(delta), np.log(2.0))


def detection_delay(h: NDArray, k1: NDArray, delta1: NDArray) -> NDArray[np.float64]:
    """Expected windows to alarm after the change, from S = 0: (h' + e^(−h') − 1)/K1 with
    h' = h − 2 ln ν(δ1), K1 = E1[llr] (Siegmund 1985, ch. X); at least one window."""
    x = np.asarray(h, float) - 2 * log_overshoot(delta1)
    return np.maximum((x + np.exp(-x) - 1.0) / np.asarray(k1, float), 1.0)


@dataclass(frozen=True)
class Settings:
    """Per-link detector settings (arrays over links)."""

    mean_time_between_false_alarms_s: NDArray[np.float64]
    warmup_s: NDArray[np.float64]
    qber_shift: NDArray[np.float64]
    decoy_gain_shift: NDArray[np.float64]
    vacuum_gain_factor: NDArray[np.float64]


#: Warm-up sums kept per link: errors and sifted bits of signal pulses per basis, then clicks and
#: pulses per intensity.
_WARM = ("errors_z", "sifted_z", "errors_x", "sifted_x", "det_s", "det_d", "det_v", "pulses_s", "pulses_d", "pulses_v")


@dataclass
class DetectorState:
    """Detector state of a group of links; arrays are updated in place by ``update``."""

    n: int
    warm: NDArray[np.float64] = field(init=False)  #: (links, _WARM) sums over the warm-up
    warm_seconds: NDArray[np.float64] = field(init=False)
    warm_windows: NDArray[np.float64] = field(init=False)
    armed: NDArray[np.bool_] = field(init=False)  #: baseline frozen, detectors running
    #: baseline: p_z, p_x, r = Q_d/Q_s, Y0, Q_s
    baseline: NDArray[np.float64] = field(init=False)
    threshold: NDArray[np.float64] = field(init=False)  #: (links, STATISTICS)
    statistic: NDArray[np.float64] = field(init=False)  #: (links, STATISTICS), S
    alarm: NDArray[np.bool_] = field(init=False)  #: (links, DETECTORS), latched

    def __post_init__(self) -> None:
        n = self.n
        self.warm = np.zeros((n, len(_WARM)))
        self.warm_seconds = np.zeros(n)
        self.warm_windows = np.zeros(n)
        self.armed = np.zeros(n, bool)
        self.baseline = np.full((n, 5), np.nan)
        self.threshold = np.full((n, len(STATISTICS)), np.nan)
        self.statistic = np.zeros((n, len(STATISTICS)))
        self.alarm = np.zeros((n, len(DETECTORS)), bool)

    def adopt(self, rows: NDArray[np.intp], old: "DetectorState", old_rows: NDArray[np.intp]) -> None:
        """Continue ``old``'s links at ``rows`` (a reload): warm-up, baseline, statistics, alarms."""
        for name in ("warm", "warm_seconds", "warm_windows", "armed", "baseline", "threshold", "statistic", "alarm"):
            getattr(self, name)[rows] = getattr(old, name)[old_rows]

    def rearm(self, rows: NDArray[np.intp], relearn: bool) -> None:
        """Clear statistics and alarms of ``rows``; ``relearn`` also starts a new warm-up."""
        self.statistic[rows] = 0.0
        self.alarm[rows] = False
        if relearn:
            self.warm[rows] = 0.0
            self.warm_seconds[rows] = 0.0
            self.warm_windows[rows] = 0.0
            self.armed[rows] = False
            self.baseline[rows] = np.nan
            self.threshold[rows] = np.nan


def window_sums(counts: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """One window's counts in the ``_WARM`` layout, (links, 10)."""
    e, s, d, p = counts["errors"], counts["sifted"], counts["detections"], counts["pulses"]
    return np.column_stack([e[:, 0, SIGNAL], s[:, 0, SIGNAL], e[:, 1, SIGNAL], s[:, 1, SIGNAL],
                            d[:, SIGNAL], d[:, DECOY], d[:, VACUUM], p[:, SIGNAL], p[:, DECOY], p[:, VACUUM]])


def _jeffreys(k: NDArray, n: NDArray) -> NDArray[np.float64]:
    """(k + ½)/(n + 1): a baseline proportion that is never 0 or 1, so every llr stays finite."""
    return (k + 0.5) / (n + 1.0)


def _alternatives(baseline: NDArray, settings: Settings, rows: NDArray[np.intp]) -> tuple[NDArray, NDArray]:
    """(p0, p1) per statistic for qber and vacuum, and (r0, r1) for the decoy statistics: (links, 6) each."""
    p_z, p_x, r, y0 = baseline[:, 0], baseline[:, 1], baseline[:, 2], baseline[:, 3]
    shift, s, k = settings.qber_shift[rows], settings.decoy_gain_shift[rows], settings.vacuum_gain_factor[rows]
    p0 = np.column_stack([p_z, p_x, r, r, y0, y0])
    p1 = np.column_stack([np.minimum(p_z + shift, 0.5), np.minimum(p_x + shift, 0.5), r * (1 + s), r / (1 + s),
                          np.minimum(y0 * k, 0.5), y0 / k])
    return p0, p1


def _trials(w: NDArray, p0: NDArray, p1: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """(k, n, p0, p1) of every statistic for windows ``w`` (_WARM layout); decoy ratios become
    the decoy share N_d r/(N_d r + N_s) of that window's pulses."""
    k = np.column_stack([w[:, 0], w[:, 2], w[:, 5], w[:, 5], w[:, 6], w[:, 6]])
    n = np.column_stack([w[:, 1], w[:, 3], w[:, 4] + w[:, 5], w[:, 4] + w[:, 5], w[:, 9], w[:, 9]])
    share = lambda r: w[:, 8, None] * r / (w[:, 8, None] * r + w[:, 7, None])  # noqa: E731
    p0, p1 = p0.copy(), p1.copy()
    with np.errstate(invalid="ignore", divide="ignore"):  # no signal or decoy pulses: NaN, no trials to weigh
        p0[:, 2:4], p1[:, 2:4] = share(p0[:, 2:4]), share(p1[:, 2:4])
    return k, n, p0, p1


def freeze(state: DetectorState, rows: NDArray[np.intp], settings: Settings) -> None:
    """End the warm-up of ``rows``: baseline from its sums, thresholds from the false-alarm rate.

    The link's mean time between false alarms covers all its statistics: each of the six gets
    six times as long (their alarm rates add up at most to the link's), times ``MARGIN``. A
    statistic that had no trials in the warm-up (a link with no decoy or no signal pulses) has no
    baseline: its threshold is NaN, so it never alarms and its level is NaN, not 0.
    """
    w = state.warm[rows]
    q_s, q_d = _jeffreys(w[:, 4], w[:, 7]), _jeffreys(w[:, 5], w[:, 8])
    state.baseline[rows] = np.column_stack([
        _jeffreys(w[:, 0], w[:, 1]), _jeffreys(w[:, 2], w[:, 3]), q_d / q_s, _jeffreys(w[:, 6], w[:, 9]), q_s])
    windows = state.warm_windows[rows]
    mean_window = w / windows[:, None]
    k, n, p0, p1 = _trials(mean_window, *_alternatives(state.baseline[rows], settings, rows))
    with np.errstate(invalid="ignore", divide="ignore"):  # decoy share 0 or 1 (no trials): NaN, as above
        kl, delta = llr_moments(n, p0, p1)
    arl0 = MARGIN * len(STATISTICS) * settings.mean_time_between_false_alarms_s[rows] / (state.warm_seconds[rows] / windows)
    state.threshold[rows] = cusum_threshold(arl0[:, None], np.maximum(kl, 1e-12), delta)
    state.statistic[rows] = 0.0
    state.armed[rows] = True


def update(state: DetectorState, rows: NDArray[np.intp], counts: dict[str, NDArray[np.float64]],
           duration: NDArray[np.float64], settings: Settings) -> None:
    """Fold one new window per row: warm-up sums while learning, else a CUSUM step and the alarms."""
    w = window_sums(counts)
    armed = state.armed[rows]
    learning, running = rows[~armed], rows[armed]
    if learning.size:
        state.warm[learning] += w[~armed]
        state.warm_seconds[learning] += duration[~armed]
        state.warm_windows[learning] += 1
        done = learning[state.warm_seconds[learning] >= settings.warmup_s[learning]]
        if done.size:
            freeze(state, done, settings)
    if running.size:
        k, n, p0, p1 = _trials(w[armed], *_alternatives(state.baseline[running], settings, running))
        with np.errstate(invalid="ignore", divide="ignore"):
            llr = np.nan_to_num(binomial_llr(k, n, p0, p1))
        # a window without light above the dark counts (a cut) says nothing about QBER or gain ratio:
        # QKDNoSignal reports it. Dark counts expected from the baseline Y0, which is known far better
        # than one window's few vacuum clicks tell it. The vacuum gain does not need the light.
        expected_dark = w[armed, 7] * state.baseline[running, 3]
        dark = w[armed, 4] - expected_dark <= SIGNAL_SIGMAS * np.sqrt(expected_dark + 1.0)
        llr[dark, :4] = 0.0
        s = np.clip(state.statistic[running] + llr, 0.0, CAP * state.threshold[running])
        state.statistic[running] = s
        over = s >= state.threshold[running]
        state.alarm[running] |= np.column_stack([over[:, list(cols)].any(axis=1) for cols in DETECTORS.values()])


def level(state: DetectorState) -> NDArray[np.float64]:
    """Each detector's statistic over its threshold (the larger side of two-sided ones): 1 is the alarm
    level; NaN while warming up."""
    ratio = state.statistic / state.threshold
    out = np.column_stack([ratio[:, list(cols)].max(axis=1) for cols in DETECTORS.values()])
    out[~state.armed] = np.nan
    return out


def baseline_ratio(state: DetectorState, current: NDArray[np.float64]) -> NDArray[np.float64]:
    """``current`` (links, QUANTITIES: sliding-window QBERs and gains) over the frozen baseline; NaN while warming up."""
    base = state.baseline[:, [0, 1, 4, 4, 3]]
    base[:, 3] *= state.baseline[:, 2]  # decoy gain = r · Q_s
    with np.errstate(invalid="ignore", divide="ignore"):
        return current / base
