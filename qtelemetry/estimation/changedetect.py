"""Sequential change detection on binomial counts: CUSUMs whose false alarms are bounded by construction.

Every statistic is Page's CUSUM of per-window log-likelihood ratios, S ← max(0, S + llr), alarm at
S ≥ h (Page, Biometrika 41, 100 (1954); minimax-optimal for a known shift: Lorden, Ann. Math.
Stat. 42, 1897 (1971), Moustakides, Ann. Stat. 14, 1379 (1986)). A window's llr is that of the
exact binomials of its own counts (Reynolds & Stoumbos, J. Qual. Technol. 31, 87 (1999), for a
proportion), summed over the binomials a statistic watches, so windows of any length and count,
ten vacuum clicks or a million sifted bits, enter without a normal approximation. What each
protocol's statistics watch is ``tamper_statistics``; this module is the machinery they share.

Thresholds hold by construction (Lorden 1971, Theorem 2): under the baseline e^llr has mean 1 in
every window, so by Ville's inequality a sequential test started in any window ever reaches h with
probability at most e^−h; a CUSUM that restarts after each alarm therefore raises at most e^−h
false alarms per window on average, ARL₀ ≥ e^h. h = ln ARL₀ needs no approximation and no
stationarity: it holds for the lattice of a few dark counts as for a million sifted bits, and for
windows of any length. The price is that false alarms are rarer than the target: 4.6–20× where a
window carries little evidence (tests/test_tamper.py computes the exact ARL₀), far more where one
window decides on its own, and there no threshold could alarm before the first attacked window.
The bound needs the baseline, which a warm-up only estimates: ``freeze`` moves each statistic's
reference towards its alternative by a margin that keeps the average over the links' warm-ups within
the bound, and does not run a statistic whose warm-up cannot resolve its shift.

A link's budget is split equally among its M running statistics: each gets ARL₀ = M × the link's
mean time between false alarms (in mean warm-up windows), so their alarm rates add up to at most
the link's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

#: Largest margin for the warm-up's error, as a fraction of a statistic's shift, with which it runs (``freeze``).
MAX_MARGIN = 0.1
#: Estimate keys of the detectors' published state start with this: not an estimator's output.
ESTIMATE_PREFIX = "tamper_"
#: A statistic stops growing at this many thresholds: past the alarm (which latches) more evidence
#: changes nothing, and a capped statistic falls back below 1 soon after the change ends.
CAP = 10.0


def estimate_key(what: str, name: str = "") -> str:
    """The estimate key of ``what`` (statistic, alarm, baseline_ratio, warmup, mean_time) of detector or
    quantity ``name``, which the runtime publishes and the metric catalogue reads."""
    return ESTIMATE_PREFIX + "_".join(filter(None, (what, name)))


def binomial_llr(k: NDArray, n: NDArray, p0: NDArray, p1: NDArray) -> NDArray[np.float64]:
    """log P1/P0 of k successes in n trials: k ln(p1/p0) + (n − k) ln((1 − p1)/(1 − p0)); 0 when n = 0.
    Two logarithms, not four: the second as log1p((p0 − p1)/(1 − p0)), accurate for small proportions."""
    return k * np.log(p1 / p0) + (n - k) * np.log1p((p0 - p1) / (1 - p0))


def kl_divergence(p: NDArray, q: NDArray) -> NDArray[np.float64]:
    """KL(Bernoulli(p) ‖ Bernoulli(q)), nats per trial."""
    return p * (np.log(p) - np.log(q)) + (1 - p) * (np.log1p(-p) - np.log1p(-q))


def lorden_threshold(arl0: NDArray) -> NDArray[np.float64]:
    """h = ln ARL₀: a CUSUM of exact log-likelihood ratios then has ARL₀ ≥ e^h (Lorden 1971, Theorem 2);
    never below ln 2."""
    return np.log(np.maximum(np.asarray(arl0, float), 2.0))


@dataclass(frozen=True)
class Settings:
    """Per-link detector settings (arrays over links)."""

    mean_time_between_false_alarms_s: NDArray[np.float64]
    warmup_s: NDArray[np.float64]
    qber_shifts: NDArray[np.float64]  #: (links, bank members); NaN: no such member on that link
    decoy_gain_shift: NDArray[np.float64]
    vacuum_gain_factor: NDArray[np.float64]
    chsh_shift: NDArray[np.float64]


#: (k, n, p0, p1) of each window's binomial trials: successes, trials, baseline, alternative.
Trials = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
#: Links of a group: their rows, or all of them in order.
Rows = NDArray[np.intp] | slice


class Statistics(Protocol):
    """What one protocol's detectors watch: binomial trials per window, grouped into statistics."""

    protocol: str
    names: tuple[str, ...]  #: the statistics (columns of the state)
    detectors: dict[str, tuple[int, ...]]  #: exported detectors and the statistics each is the maximum of
    owner: NDArray[np.intp]  #: the statistic each trial belongs to
    warm: tuple[str, ...]  #: columns of ``window_sums``, summed over the warm-up
    baselines: tuple[str, ...]  #: columns of ``baseline``
    quantities: tuple[str, ...]  #: compared with their baseline in ``qkd_tamper_baseline_ratio``

    def window_sums(self, counts: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
        """One window's counts as (links, warm) columns."""

    def baseline(self, warm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Baseline proportions from (links, warm) sums."""

    def trials(self, w: NDArray[np.float64], baseline: NDArray[np.float64], settings: Settings, rows: Rows) -> Trials:
        """(k, n, p0, p1) of every trial, (links, trials), for windows ``w`` of links ``rows``."""

    def quiet(self, w: NDArray[np.float64], baseline: NDArray[np.float64]) -> NDArray[np.bool_]:
        """(links, statistics): windows a statistic skips because they hold no evidence (no light)."""

    def baseline_quantities(self, baseline: NDArray[np.float64]) -> NDArray[np.float64]:
        """(links, quantities): the baseline value of each of ``quantities``."""


@dataclass
class DetectorState:
    """Detector state of a group of links; arrays are updated in place by ``update``."""

    statistics: Statistics
    n: int
    warm: NDArray[np.float64] = field(init=False)  #: (links, warm) sums over the warm-up
    warm_seconds: NDArray[np.float64] = field(init=False)
    warm_windows: NDArray[np.float64] = field(init=False)
    armed: NDArray[np.bool_] = field(init=False)  #: baseline frozen, detectors running
    baseline: NDArray[np.float64] = field(init=False)
    threshold: NDArray[np.float64] = field(init=False)  #: (links, statistics); NaN: not running
    #: (links, statistics): how far towards its alternative each statistic's reference is moved from the
    #: learned baseline, as a fraction of the shift (the warm-up's margin, ``freeze``)
    margin: NDArray[np.float64] = field(init=False)
    statistic: NDArray[np.float64] = field(init=False)  #: (links, statistics), S
    alarm: NDArray[np.bool_] = field(init=False)  #: (links, detectors), latched

    def __post_init__(self) -> None:
        n, stats = self.n, self.statistics
        self.warm = np.zeros((n, len(stats.warm)))
        self.warm_seconds = np.zeros(n)
        self.warm_windows = np.zeros(n)
        self.armed = np.zeros(n, bool)
        self.baseline = np.full((n, len(stats.baselines)), np.nan)
        self.threshold = np.full((n, len(stats.names)), np.nan)
        self.margin = np.full((n, len(stats.names)), np.nan)
        self.statistic = np.zeros((n, len(stats.names)))
        self.alarm = np.zeros((n, len(stats.detectors)), bool)

    def adopt(self, rows: NDArray[np.intp], old: "DetectorState", old_rows: NDArray[np.intp]) -> None:
        """Continue ``old``'s links at ``rows`` (a reload): warm-up, baseline, alarms, and the statistics
        (with their thresholds) both have."""
        for name in ("warm", "warm_seconds", "warm_windows", "armed", "baseline", "alarm"):
            getattr(self, name)[rows] = getattr(old, name)[old_rows]
        for j, name in enumerate(self.statistics.names):
            if name in old.statistics.names:
                i = old.statistics.names.index(name)
                for name in ("statistic", "threshold", "margin"):
                    getattr(self, name)[rows, j] = getattr(old, name)[old_rows, i]

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
            self.margin[rows] = np.nan


def window_llr(statistics: Statistics, trials: Trials, margin: NDArray[np.float64]) -> NDArray[np.float64]:
    """(links, statistics): each statistic's llr in one window, the sum of its trials', against the baseline
    moved by ``margin``."""
    k, n, p0, p1 = trials
    owner = statistics.owner
    identity = owner.size == margin.shape[1]  # one trial per statistic, in order
    p0 = p0 + (margin if identity else margin[:, owner]) * (p1 - p0)
    with np.errstate(invalid="ignore", divide="ignore"):  # no trials (n = 0, or p undefined): no evidence
        per_trial = binomial_llr(k, n, p0, p1)
    per_trial[~np.isfinite(per_trial)] = 0.0
    return per_trial if identity else per_trial @ membership(statistics)


def membership(statistics: Statistics) -> NDArray[np.float64]:
    """(trials, statistics): 1 where a trial belongs to a statistic."""
    return np.eye(len(statistics.names))[statistics.owner]


def freeze(state: DetectorState, rows: NDArray[np.intp], settings: Settings) -> None:
    """End the warm-up of ``rows``: baseline from its sums, thresholds from the false-alarm budget, and
    each statistic's margin for the warm-up's own error.

    Threshold h = ln ARL₀ (Lorden). The margin: a baseline off by ε multiplies a statistic's false-alarm
    rate by about e^(b·ε), b = h·n·(p1 − p0)/(p0(1 − p0)·K₁) per trial (first order in ε of the root
    θ* < 1 of E[e^(θ·llr)] = 1, rate ∝ e^(−θ*h); K₁ = Σ n·KL(p1‖p0) the statistic's llr per window under
    the change). The warm-up's ε is normal with variance p0(1 − p0)/(n·W) after W windows, so weighing
    windows against p0 + m·(p1 − p0) with m = h/(2·W·K₁) makes the rate's average over warm-ups
    e^(−b·m + b²σ²/2) = 1: the links' false alarms add up to Lorden's bound. The expansion holds while the
    margin is small: a statistic runs only if m ≤ ``MAX_MARGIN``, i.e. if its warm-up carried at least
    5·h of llr for its shift (W·K₁ ≥ 5h); the exact check is in tests/test_tamper.py.

    A statistic whose trials had no baseline in the warm-up (a link with no decoy pulses, no CHSH
    rounds, a bank member the link does not have) is not running either: NaN threshold, so it never
    alarms and its level is NaN, not 0, and it takes no share of the budget.
    """
    stats = state.statistics
    windows = state.warm_windows[rows]
    state.baseline[rows] = stats.baseline(state.warm[rows])
    _, n, p0, p1 = stats.trials(state.warm[rows] / windows[:, None], state.baseline[rows], settings, rows)
    member = membership(stats)
    with np.errstate(invalid="ignore", divide="ignore"):
        usable = (n > 0) & (p0 > 0) & (p0 < 1) & (p1 > 0) & (p1 < 1) & (p0 != p1)
        k1 = np.where(usable, n * kl_divergence(p1, p0), 0.0) @ member
    defined = (~usable) @ member == 0  # every trial of the statistic usable
    share = defined.sum(axis=1) * settings.mean_time_between_false_alarms_s[rows] / (state.warm_seconds[rows] / windows)
    h = lorden_threshold(share)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = h / (2 * windows[:, None] * k1)
    running = defined & (margin <= MAX_MARGIN)
    state.threshold[rows] = np.where(running, h, np.nan)
    state.margin[rows] = np.where(running, margin, np.nan)
    state.statistic[rows] = 0.0
    state.armed[rows] = True


def update(state: DetectorState, rows: NDArray[np.intp], counts: dict[str, NDArray[np.float64]],
           duration: NDArray[np.float64], settings: Settings) -> None:
    """Fold one new window per row: warm-up sums while learning, else a CUSUM step and the alarms."""
    stats = state.statistics
    w = stats.window_sums(counts)
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
        if running.size == state.n and np.array_equal(running, np.arange(state.n)):
            running, armed = slice(None), slice(None)  # every link, in order: views, not copies (the usual cycle)
        baseline = state.baseline[running]
        llr = window_llr(stats, stats.trials(w[armed], baseline, settings, running), state.margin[running])
        llr[stats.quiet(w[armed], baseline)] = 0.0
        threshold = state.threshold[running]
        s = np.clip(state.statistic[running] + llr, 0.0, CAP * np.nan_to_num(threshold))
        state.statistic[running] = s
        with np.errstate(invalid="ignore"):
            over = s >= threshold  # NaN threshold: not running, never over
        state.alarm[running] |= np.column_stack([over[:, list(cols)].any(axis=1) for cols in stats.detectors.values()])


def restart(state: DetectorState, rows: NDArray[np.intp]) -> NDArray[np.bool_]:
    """Restart the statistics of ``rows`` that reached their threshold (S = 0) and clear the alarms:
    each statistic as a CUSUM restarted after its own alarms. Returns which statistics restarted,
    (rows, statistics)."""
    with np.errstate(invalid="ignore"):
        over = state.statistic[rows] >= state.threshold[rows]
    state.statistic[rows] = np.where(over, 0.0, state.statistic[rows])
    state.alarm[rows] = False
    return over


def level(state: DetectorState) -> NDArray[np.float64]:
    """Each detector's statistic over its threshold (the largest of its statistics): 1 is the alarm level;
    NaN while warming up or where none of its statistics runs."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = state.statistic / state.threshold
    out = np.column_stack([np.fmax.reduce(ratio[:, list(cols)], axis=1) for cols in state.statistics.detectors.values()])
    out[~state.armed] = np.nan
    return out


def baseline_ratio(state: DetectorState, current: NDArray[np.float64]) -> NDArray[np.float64]:
    """``current`` (links, quantities: sliding-window values) over the frozen baseline; NaN while warming up."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return current / state.statistics.baseline_quantities(state.baseline)
