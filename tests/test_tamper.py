"""Tamper detection: false alarms within the budget (exact run lengths, simulated statistics, a simulated
fleet), detection delay, the attack signatures that must alarm and the benign faults that must not, on
decoy-BB84 and entangled-photon links, and the exporter end to end.

Links are the simulators' models (``sample_window``), many at once in accelerated time
(``tamper_scenarios``); the detectors are the exporter's own (``changedetect.update``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from functools import cache

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats
from web import TOKEN

from qtelemetry.drivers import tamper_scenarios as ts
from qtelemetry.drivers.simulated_bb84 import expected_counts
from qtelemetry.drivers.simulated_spdc import outcome_probabilities
from qtelemetry.estimation import changedetect as cd
from qtelemetry.estimation.tamper_statistics import BBM92Statistics, DecoyBB84Statistics, in_light

BB84 = DecoyBB84Statistics(4)
DETECTOR = {name: j for j, name in enumerate(BB84.detectors)}
SPDC_DETECTOR = {name: j for j, name in enumerate(BBM92Statistics(4).detectors)}
DAY = 86400.0
#: The regimes of the false-alarm tests: production links at 25 and 100 km, and a few counts per window.
REGIMES = {"25 km": dict(fiber_length_km=25), "100 km": dict(fiber_length_km=100),
           "few counts": dict(fiber_length_km=25, clock_rate_hz=1e5, dark_count_probability=1e-4)}


# --- exact run lengths, written here from the definitions -----------------------------------------------


class Window:
    """k ~ Binomial(n, p) successes in a window: pmf and P(k' ≥ k) tabulated where they are not 0 or 1."""

    def __init__(self, n: int, p: float):
        self.n, self.p = n, p
        sd = math.sqrt(n * p * (1 - p)) + 1
        self.lo, self.hi = max(0, int(n * p - 40 * sd - 50)), min(n, int(n * p + 40 * sd + 50))
        k = np.arange(self.lo, self.hi + 1)
        self.pmf, self.sf = stats.binom.pmf(k, n, p), stats.binom.sf(k - 1, n, p)

    def prob(self, k: np.ndarray) -> np.ndarray:
        inside = (k >= self.lo) & (k <= self.hi)
        return np.where(inside, self.pmf[np.clip(k - self.lo, 0, self.hi - self.lo)], 0.0)

    def at_least(self, k: np.ndarray) -> np.ndarray:
        inside = (k > self.lo) & (k <= self.hi)
        return np.where(k <= self.lo, 1.0, np.where(inside, self.sf[np.clip(k - self.lo, 0, self.hi - self.lo)], 0.0))


def exact_arl0(window: Window, c: float, nd: float, h: float) -> float:
    """Mean windows to a false alarm of S ← max(0, S + llr), alarm at S ≥ h, where a window with k successes
    has llr = c·k + nd and k is distributed as ``window``.

    Page (1954): from S = 0 the CUSUM runs cycles that end at S ≤ 0 (a restart) or S ≥ h, so
    ARL₀ = E[cycle length]/P(cycle ends in an alarm). Within a cycle S = t·nd + c·K after t windows with K
    successes in all: the Markov chain on the lattice (t, K) is exact, no grid. Counting failures instead
    when c < 0 makes every statistic a rising one.
    """
    n = window.n
    flip = c < 0
    if flip:
        c, nd = -c, nd + c * n
    lo = hi = 0
    mass, length, alarmed = np.array([1.0]), 0.0, 0.0
    for t in range(1, 10**6):
        length += mass.sum()
        need = np.ceil((h - t * nd) / c - np.arange(lo, hi + 1)).astype(np.int64)
        alarmed += mass @ (1 - window.at_least(n - need + 1) if flip else window.at_least(need))
        new_lo, new_hi = max(math.floor(-t * nd / c) + 1, 0), min(math.ceil((h - t * nd) / c) - 1, t * n)
        if new_hi < new_lo:
            break
        steps = np.arange(new_lo - hi, new_hi - lo + 1)
        mass = np.convolve(mass, window.prob(n - steps if flip else steps))[hi - lo:hi - lo + new_hi - new_lo + 1]
        lo, hi = new_lo, new_hi
        if mass.sum() <= 1e-12 * min(1.0, alarmed):
            break
    with np.errstate(divide="ignore"):
        return float(np.float64(length) / alarmed)


def _warm_columns(statistic: str) -> tuple[int, int]:
    """(successes, trials) columns of a decoy-BB84 statistic's warm-up sums (``DecoyBB84Statistics.warm``;
    a decoy statistic's trials are the signal clicks plus its successes, the decoy clicks)."""
    prefix = statistic.split("#")[0] if statistic.startswith("qber") else statistic.split("_")[0]
    return {"qber_z": (0, 1), "qber_x": (2, 3), "decoy": (5, 4), "vacuum": (6, 9)}[prefix]


@cache
def fleet_arl0(regime: str, fleet_links: int, warm: int, mean_time_s: float | None = None) -> dict[str, tuple]:
    """Per statistic of a decoy-BB84 link in ``regime``: (achieved ARL₀ in windows averaged over the links'
    warm-ups, the link's target per statistic, K = n·KL(p0‖p1) of the model's mean window, h).

    The exporter's detectors learn their baseline from ``warm`` windows; each statistic's warm-up count is
    binomial, so the false-alarm rate of a link is averaged over it: 15 warm-up outcomes from −7 to +7
    standard deviations (the trapezoidal rule is spectrally accurate on such smooth, fast-decaying
    integrands), weighted by their binomial probabilities, each frozen by the exporter's code
    (threshold, baseline, margin), each run length exact (``exact_arl0``) on the model's mean window. The
    fleet's achieved ARL₀ is 1 / (mean rate); a statistic the code does not run has rate 0.
    """
    links = ts.links(1, **REGIMES[regime])
    mean = expected_counts(links.params)  # one second of the model, exactly
    window = {k: np.round(v) for k, v in mean.items()}
    w = BB84.window_sums(window)[0]
    z = np.linspace(-7, 7, 15)
    config = ts.settings(z.size, fleet_links=fleet_links, mean_time_between_false_alarms_seconds=mean_time_s,
                         warmup_seconds=warm)
    target = 12 * (fleet_links * 90 * DAY if mean_time_s is None else mean_time_s)  # 1 s windows, 12 statistics
    out = {}
    for j, name in enumerate(BB84.names):
        k_col, n_col = _warm_columns(name)
        trials = int(w[n_col] + (w[k_col] if name.startswith("decoy") else 0))  # decoy: signal + decoy clicks
        p = w[k_col] / trials
        total = trials * warm
        k_warm = np.unique(np.clip(np.round(total * p + z * math.sqrt(total * p * (1 - p))), 0, total))
        weight = stats.binom.pmf(k_warm, total, p)
        state = cd.DetectorState(BB84, k_warm.size)
        state.warm[:] = w * warm
        state.warm[:, k_col] = k_warm
        if name.startswith("decoy"):
            state.warm[:, 4] = total - k_warm
        state.warm_windows[:], state.warm_seconds[:] = warm, float(warm)
        rows = np.arange(k_warm.size)
        cd.freeze(state, rows, cd.Settings(*(getattr(config, f)[rows] for f in cd.Settings.__dataclass_fields__)))
        # the exporter's llr of a mean window with one success more and one less (the same trials): c·k + nd
        windows = np.tile(w, (2, 1))
        windows[1, k_col] += 1
        if name.startswith("decoy"):
            windows[1, 4] -= 1
        llr = [cd.window_llr(BB84, BB84.trials(np.tile(v, (k_warm.size, 1)), state.baseline, config, rows),
                             state.margin)[:, j] for v in windows]
        c = llr[1] - llr[0]
        nd = llr[0] - c * w[k_col]
        truth = Window(trials, p)
        rate = [0.0 if np.isnan(h) else 1.0 / exact_arl0(truth, *coefficients, h)
                for *coefficients, h in zip(c, nd, state.threshold[:, j])]
        _, _, p_hat, p1 = BB84.trials(w[None], state.baseline[[k_warm.size // 2]], config, rows[:1])
        kl = p * math.log(p / p1[0, j]) + (1 - p) * math.log((1 - p) / (1 - p1[0, j]))
        with np.errstate(divide="ignore"):
            out[name] = (float(1.0 / (weight @ rate / weight.sum())), target, trials * kl,
                         float(np.fmax.reduce(state.threshold[:, j])))
    return out


@pytest.mark.parametrize("regime", REGIMES)
def test_exact_arl0_of_every_statistic_is_at_least_its_target_and_within_25_times(regime):
    """Point 1 of issue 25. A link that shares the default 90-day budget with 999 others (its 12 statistics
    each get 12 × 1,000 × 90 days), after the default 600 s warm-up. The achieved ARL₀, exact and averaged
    over warm-ups (``fleet_arl0``), is at least the target for every statistic; where a window carries less
    evidence against the baseline than the threshold (K < h), where false alarms happen at all, it is at
    most 25× the target (measured 4.6-19.5×). Where one window decides (K ≥ h) it is astronomically longer,
    and there no threshold could alarm before the first attacked window anyway. A statistic the warm-up
    cannot resolve (margin over 10 % of its shift) does not run: the 0.25 % QBER shift with a few counts."""
    for name, (achieved, target, k, h) in fleet_arl0(regime, 1000, 600).items():
        assert achieved >= target, (name, achieved / target)
        if k < h:
            assert achieved <= 25 * target, (name, achieved / target)
    if regime == "few counts":
        assert math.isinf(fleet_arl0(regime, 1000, 600)["qber_z#1"][0])


def test_simulated_false_alarms_of_every_statistic_agree_with_the_exact_run_lengths():
    """Point 1, simulated: 400 links with a few counts per window (1e5 pulses/s, ~300 sifted Z bits, ~1
    vacuum click), their own mean time between false alarms cut to 500 s so that alarms happen (100 per
    statistic at the target), 600 s of warm-up and 1,500 windows after it; each statistic restarts after
    its own alarms. Per statistic the alarms are at most the 99 % Poisson bound at the target rate and within
    the 99.9 % Poisson interval of the exact average rate (``fleet_arl0``; the windows' counts vary, the
    exact chain takes the mean window)."""
    n, warm, after, mean_time = 400, 600, 1500, 500.0
    p = ts.links(n, **REGIMES["few counts"])
    run = ts.simulate(p, None, 0, warm + after, 1.0, ts.settings(n, mean_time_between_false_alarms_seconds=mean_time),
                      np.random.default_rng(5), rearm=True)
    exact = fleet_arl0("few counts", 1, warm, mean_time)
    for j, name in enumerate(BB84.names):
        achieved, target, _, _ = exact[name]
        observed = int(run.alarms[:, j].sum())
        assert observed <= stats.poisson.ppf(0.99, n * after / target), (name, observed)
        expected = n * after / achieved
        low, high = stats.poisson.interval(0.999, expected) if expected > 0 else (0, 0)
        assert low <= observed <= high, (name, observed, expected)


def test_fleet_false_alarms_stay_within_the_fleet_budget():
    """Point 2: 2,000 links, 10,000 link-hours in accelerated time, against the fleet budget. A mixed fleet:
    decoy BB84 at 25 and 100 km and with a few counts per window (500 each), entangled photons at 25 and
    100 km (250 each); 10 s windows (``exporter.window_seconds: 10``) so that the 10,000 link-hours are 3.6
    million link-windows (36 s of simulation on the shared 2-core machine at load ~20), after the default
    600 s warm-up. The fleet budget is cut to
    180 s so that the configured rate allows 100 false alarms in the 5 hours; each link's share is 2,000
    × 180 s. The alarms (windows of a link with an alarm) must be at most the one-sided 99 % Poisson bound
    at that rate (124). Measured: a handful - the thresholds hold with room, as the exact run lengths say."""
    fleet, hours, window, warm = 2000, 5.0, 10.0, 600
    fleet_s = hours * 3600 / 100
    groups = [ts.join(ts.links(500, fiber_length_km=25), ts.links(500, fiber_length_km=100),
                      ts.links(500, fiber_length_km=25, clock_rate_hz=1e4, dark_count_probability=1e-4)),
              ts.join(ts.links(250, "simulated-spdc", fiber_length_km=25),
                      ts.links(250, "simulated-spdc", fiber_length_km=100))]
    alarms = 0
    for seed, links in enumerate(groups):
        config = ts.settings(links.n, fleet_links=fleet, fleet_mean_time_between_false_alarms_seconds=fleet_s,
                             warmup_seconds=warm)
        assert config.mean_time_between_false_alarms_s[0] == pytest.approx(fleet * fleet_s)
        run = ts.simulate(links, None, 0, int((warm + hours * 3600) / window), window, config,
                          np.random.default_rng(seed), rearm=True)
        alarms += int(run.events.sum())
    assert alarms <= stats.poisson.ppf(0.99, hours * 3600 / fleet_s), alarms


# --- detection -----------------------------------------------------------------------------------------


def _qber_llr_moments(p: object, window_s: float, p0: float, p1: float) -> tuple[float, float]:
    """E1[llr] and sd1[llr] of one window of Z signal bits of links ``p`` (first link), written out."""
    counts = expected_counts(p)
    n = counts["sifted"][0, 0, 0] * window_s
    q = counts["errors"][0, 0, 0] / counts["sifted"][0, 0, 0]  # the attacked QBER
    c = math.log(p1 / p0) - math.log((1 - p1) / (1 - p0))
    return n * (q * math.log(p1 / p0) + (1 - q) * math.log((1 - p1) / (1 - p0))), abs(c) * math.sqrt(n * q * (1 - q))


def _delays(run: ts.Run, onset: int) -> np.ndarray:
    """Windows from the onset to each link's first alarm of any detector, counting the onset's window as 1."""
    return np.fmin.reduce(run.first_alarm, axis=1) - onset + 1


@pytest.mark.parametrize("km, median, p95", [(25, 1, 1), (100, 3, 5)])
def test_the_bank_catches_2_percent_intercept_resend_within_a_few_windows(km, median, p95):
    """Point 3: intercept-resend on 2 % of the pulses adds 0.5 % QBER, half the old single detector's
    1.25 % design shift, which then drifted down and took ~650 windows. With the bank (0.25/0.5/1.25/2.5 %)
    and the thresholds of a link in a 10,000-link exporter (default 90-day fleet budget, 600 s warm-up):
    median and p95 over 200 links at most 1 and 1 window at 25 km, 3 and 5 at 100 km (measured: 1/1,
    3/4). Larger attacks are unchanged: 5 % and 25 % alarm in the first window at both distances."""
    n, warm = 200, 600
    p = ts.links(n, fiber_length_km=km)
    config = ts.settings(n, fleet_links=10_000)
    for fraction, limits in ((0.02, (median, p95)), (0.05, (1, 1)), (0.25, (1, 1))):
        run = ts.simulate(p, ts.with_fault(p, "intercept-resend", fraction), warm, warm + 30, 1.0, config,
                          np.random.default_rng(1))
        delays = _delays(run, warm)
        assert not np.isnan(delays).any()
        assert np.median(delays) <= limits[0] and np.quantile(delays, 0.95) <= limits[1], (fraction, delays)


def test_a_single_detector_tuned_to_1_25_percent_misses_2_percent_intercept_resend():
    """The bank's reason: the old setting (one 1.25 % shift) does not alarm on 2 % within 30 windows at 25 km."""
    n, warm = 50, 600
    p = ts.links(n, fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "intercept-resend", 0.02), warm, warm + 30, 1.0,
                      ts.settings(n, fleet_links=10_000, qber_shifts=(0.0125,)), np.random.default_rng(1))
    assert np.isnan(run.first_alarm).all()


def test_detection_delay_follows_siegmunds_formula_where_windows_are_small():
    """5 % intercept-resend at 25 km with 1e5 pulses per window (~300 sifted Z bits) against one detector
    tuned to 1.25 %: the expected delay from S = 0 is (h' + e^(−h') − 1)/K1 with h' = h + 1.166 δ1 (Siegmund
    1985, corrected diffusion), ~10 windows. The mean over 400 links must be within 25 % of it (the
    approximation's error at δ ≈ 1.5 and the rounding up to whole windows are each ~10 %)."""
    n, warm = 400, 600
    p = ts.links(n, fiber_length_km=25, clock_rate_hz=1e5)
    attacked = ts.with_fault(p, "intercept-resend", 0.05)
    onset = warm + 5
    run = ts.simulate(p, attacked, onset, onset + 60, 1.0, ts.settings(n, qber_shifts=(0.0125,), warmup_seconds=warm),
                      np.random.default_rng(2))
    delays = run.first_alarm[:, DETECTOR["qber_z"]] - onset + 1
    assert not np.isnan(delays).any()
    base = run.state.baseline[:, 0]
    predicted = []
    for h, p0 in zip(run.state.threshold[:, 0], base):
        k1, sd1 = _qber_llr_moments(attacked.params, 1.0, p0, p0 + 0.0125)
        x = h + 1.166 * sd1
        predicted.append((x + math.exp(-x) - 1) / k1)
    assert np.mean(delays) == pytest.approx(np.mean(predicted), rel=0.25)


@pytest.mark.parametrize("fraction", [1.0, 0.05])
def test_detector_blinding_alarms_on_the_decoy_statistics_not_the_qber(fraction):
    n, warm = 50, 120
    p = ts.links(n, fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "detector-blinding", fraction), warm, warm + 30, 1.0,
                      ts.settings(n, warmup_seconds=warm), np.random.default_rng(3))
    decoy_stats = run.first_alarm[:, [DETECTOR["decoy_gain"], DETECTOR["vacuum_gain"]]]
    assert np.all(np.nanmin(decoy_stats, axis=1) <= warm + 2)
    assert np.all(np.isnan(run.first_alarm[:, [DETECTOR["qber_z"], DETECTOR["qber_x"]]]))


@pytest.mark.parametrize("choice", [dict(p_signal=0.9, p_decoy=1e-13, p_vacuum=0.1 - 1e-13),
                                    dict(p_signal=1e-13, p_decoy=0.9, p_vacuum=0.1 - 1e-13)],
                         ids=["no decoy pulses", "no signal pulses"])
def test_a_statistic_without_trials_in_the_warm_up_never_alarms_and_shows_nan(choice):
    """A valid config whose warm-up has no decoy (or no signal) pulse gives the decoy statistics no
    baseline: their level is NaN, never an alarm and never a RuntimeWarning (the config fuzzer found
    0/0 here); the other detectors still run, and with decoys missing the QBER ones still see Eve."""
    n, warm = 5, 60
    p = ts.links(n, fiber_length_km=25, **choice)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = ts.simulate(p, ts.with_fault(p, "intercept-resend", 0.25), warm, warm + 5, 1.0,
                          ts.settings(n, warmup_seconds=warm), np.random.default_rng(8))
        level = cd.level(run.state)
    assert np.isnan(run.first_alarm[:, DETECTOR["decoy_gain"]]).all()
    assert np.isnan(level[:, DETECTOR["decoy_gain"]]).all()
    assert np.isfinite(level[:, DETECTOR["vacuum_gain"]]).all()
    if choice["p_decoy"] > 0.5:
        return  # no signal pulses: no signal QBER either
    assert np.all(run.first_alarm[:, DETECTOR["qber_z"]] == warm)


def test_photon_number_splitting_alarms_the_decoy_gain_detector_downwards_not_the_qber():
    """PNS on 25 % of the pulses at 25 km (production settings). The gains, written out (η = 10^(−0.5)·0.1,
    Y0 = 1e-6; Eve's photon clicks Σₙ≥₂ P(n|k)(1 − 0.9^(n−1)) = 0.0104707 at μ = 0.5, 0.000482120 at
    ν = 0.1): Q_μ = 0.75·(Y0 + 1 − e^(−0.5η)) + 0.25·(Y0 + 0.0104707) = 0.014384, Q_ν = 0.0024895, so the
    decoy/signal gain ratio falls from 0.2013 to 0.1731 (−14 %), past half the detector's design
    shift (÷1.2). One window's decoy share among ~1.2e6 clicks then has an expected llr of ~280
    against a threshold of ~20: the first attacked window alarms. Eve adds no errors and leaves the
    vacuum pulses alone: the QBER and vacuum-gain detectors stay quiet for 10 minutes."""
    n, warm = 50, 120
    p = ts.links(n, fiber_length_km=25)
    attacked = {"pulses": np.zeros((n, 3)), "detections": np.zeros((n, 3))}

    def observe(t: int, counts: dict, state: cd.DetectorState) -> None:
        if t >= warm:
            for k in attacked:
                attacked[k] += counts[k]

    run = ts.simulate(p, ts.with_fault(p, "photon-number-splitting", 0.25), warm, warm + 600, 1.0,
                      ts.settings(n, warmup_seconds=warm), np.random.default_rng(7), observe=observe)
    gain = attacked["detections"].sum(axis=0) / attacked["pulses"].sum(axis=0)
    assert gain[1] / gain[0] == pytest.approx(0.1731, rel=0.005)
    np.testing.assert_allclose(run.state.baseline[:, 2], 0.2013, rtol=0.005)  # learned before the attack
    assert np.all(run.first_alarm[:, DETECTOR["decoy_gain"]] == warm)
    down, up = BB84.names.index("decoy_down"), BB84.names.index("decoy_up")
    assert np.all(run.state.statistic[:, down] >= run.state.threshold[:, down])
    assert np.all(run.state.statistic[:, up] < run.state.threshold[:, up])
    assert np.isnan(run.first_alarm[:, [DETECTOR["qber_z"], DETECTOR["qber_x"], DETECTOR["vacuum_gain"]]]).all()


@pytest.mark.parametrize("factor, side", [(20.0, "vacuum_up"), (0.05, "vacuum_down")])
def test_dark_counts_moving_alarm_the_vacuum_gain_detector_on_their_side(factor, side):
    """Dark counts ×20 (detector noise; the runbook tells it from blinding by the QBER rising with it)
    and ÷20 (a detector out of Geiger mode, as blinded ones are) at 25 km: ~10 vacuum clicks per
    window against the baseline's Y0 = 1e-6 of 1e7 vacuum pulses. The vacuum-gain detector alarms on
    that side (asserted: within a minute); the gain-ratio detector, blind to dark counts next to ~1e6
    signal clicks, stays quiet."""
    n, warm = 50, 600
    p = ts.links(n, fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "dark-count-rise", factor), warm, warm + 60, 1.0,
                      ts.settings(n, warmup_seconds=warm), np.random.default_rng(9))
    j = BB84.names.index(side)
    assert np.all(run.first_alarm[:, DETECTOR["vacuum_gain"]] < warm + 60)
    assert np.all(run.state.statistic[:, j] >= run.state.threshold[:, j])
    other = BB84.names.index("vacuum_down" if side == "vacuum_up" else "vacuum_up")
    assert np.all(run.state.statistic[:, other] < run.state.threshold[:, other])
    assert np.isnan(run.first_alarm[:, DETECTOR["decoy_gain"]]).all()


@pytest.mark.parametrize("simulator", ["simulated-bb84", "simulated-spdc"])
def test_a_fiber_cut_is_no_signal_not_tampering(simulator):
    """No light: QKDNoSignal's case. The QBER and gain-ratio statistics skip windows without signal
    (their counts are dark counts: 50 % QBER, decoy share = vacuum share; on entangled links,
    coincidences no more than the accidentals), the vacuum gain is unmoved."""
    n, warm = 20, 120
    p = ts.links(n, simulator, fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "fiber-cut"), warm, warm + 120, 1.0, ts.settings(n, warmup_seconds=warm),
                      np.random.default_rng(6))
    assert np.isnan(run.first_alarm).all()


@pytest.mark.parametrize("km", [25, 100])
@pytest.mark.parametrize("kind", ["fiber-bend", "source-power-drift"])
def test_fiber_bend_and_source_drift_do_not_alarm_as_tampering(km, kind):
    """A 3 dB bend (the fault's default) and a source 1.5x brighter, for 10 minutes of 50 decoy-BB84 links
    each at production settings (links of a 10-link exporter, the lowest thresholds): no detector alarms.
    At 100 km the bend raises the QBER by 0.1 % (the dark counts' share of the clicks doubles), which the
    bank's 0.25 % member took for an attack on half the links in 10 minutes until the QBER baseline followed
    the window's own light (``in_light``)."""
    n, warm = 50, 600
    p = ts.links(n, fiber_length_km=km)
    run = ts.simulate(p, ts.with_fault(p, kind), warm, warm + 600, 1.0, ts.settings(n, fleet_links=10),
                      np.random.default_rng(4))
    assert np.isnan(run.first_alarm).all()


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_warm_up_of_dark_clicks_only_keeps_its_qber():
    """MQZL's split of the QBER into photons' and dark counts' errors divides by the photons' share:
    a warm-up that saw only dark clicks (found by the config fuzz: a 0.008 Hz clock) has none, and
    its QBER stays as learned rather than 0/0; with photons the split gives e_d back at any share."""
    qber, dark = np.array([0.5, 0.3, 0.02]), np.array([0.2, 0.2, 0.5])
    dark0 = np.array([1.0, 1.5, 0.1])
    e_d = (0.02 - 0.1 / 2) / 0.9
    assert np.allclose(in_light(qber, dark0, dark), [0.5, 0.3, e_d + (0.5 - e_d) * 0.5])


# --- entangled photons (BBM92) ---------------------------------------------------------------------------


def _correlator(rho: np.ndarray, a: float, b: float) -> float:
    """⟨σ_a ⊗ σ_b⟩ for linear polarisers at angles a, b (radians): σ_θ = cos 2θ·Z + sin 2θ·X."""
    z, x = np.diag([1.0, -1.0]), np.array([[0.0, 1.0], [1.0, 0.0]])
    sigma = lambda t: math.cos(2 * t) * z + math.sin(2 * t) * x  # noqa: E731
    return float(np.trace(rho @ np.kron(sigma(a), sigma(b))).real)


def _intercepted(rho: np.ndarray, fraction: float) -> np.ndarray:
    """The pair state after Eve measures photon B of a ``fraction`` of the pairs in Z or X (½ each) and resends
    the eigenstate she found: (1 − f)ρ + f·½Σ_bases Σ_outcomes (1⊗Π)ρ(1⊗Π)."""
    h, v = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    d, a = (h + v) / math.sqrt(2), (h - v) / math.sqrt(2)
    measured = sum(0.5 * np.kron(np.eye(2), np.outer(e, e)) @ rho @ np.kron(np.eye(2), np.outer(e, e))
                   for e in (h, v, d, a))
    return (1 - fraction) * rho + fraction * measured


@pytest.mark.parametrize("fraction", [0.02, 0.25, 1.0])
def test_spdc_intercept_resend_lowers_the_visibility_as_the_density_matrix_says(fraction):
    """Point 4's derivation, checked against quantum mechanics written out here: a Werner state of visibility V
    (|Φ+⟩ with white noise) whose photon B Eve measures in Z or X and resends. Every correlator of the key bases
    and the CHSH settings is multiplied by 1 − f/2, so the simulator's QBER (per basis) and CHSH value S
    must be: 1 − 2·QBER and S both times 1 − f/2, from its outcome probabilities; and sampled counts of
    10⁹ pump pulses at f give the QBER e + f(1 − 2e)/4 within their binomial error."""
    v = 0.9
    phi = np.array([1.0, 0.0, 0.0, 1.0]) / math.sqrt(2)
    rho = v * np.outer(phi, phi) + (1 - v) * np.eye(4) / 4
    attacked = _intercepted(rho, fraction)
    angles = [(0, 0), (math.pi / 4, math.pi / 4), (0, math.pi / 8), (0, 3 * math.pi / 8),
              (math.pi / 4, math.pi / 8), (math.pi / 4, 3 * math.pi / 8)]
    factor = [_correlator(attacked, a, b) / _correlator(rho, a, b) for a, b in angles]
    np.testing.assert_allclose(factor, 1 - fraction / 2, rtol=1e-12)

    clean = ts.links(1, "simulated-spdc", fiber_length_km=25)
    eve = ts.with_fault(clean, "intercept-resend", fraction)
    (before, _), (after, _) = outcome_probabilities(clean.params), outcome_probabilities(eve.params)
    qber = lambda cells: cells[0, :2] / (cells[0, :2] + cells[0, 2:4])  # noqa: E731
    chsh = lambda cells: np.sum(np.array([1, -1, 1, 1]) * (cells[0, 6:14:2] - cells[0, 7:14:2])  # noqa: E731
                                / (cells[0, 6:14:2] + cells[0, 7:14:2]))
    np.testing.assert_allclose((1 - 2 * qber(after)) / (1 - 2 * qber(before)), 1 - fraction / 2, rtol=1e-12)
    assert chsh(after) / chsh(before) == pytest.approx(1 - fraction / 2, rel=1e-12)
    np.testing.assert_allclose(before[0, 6:14].sum() + before[0, :6].sum(), after[0, 6:14].sum() + after[0, :6].sum())

    e = qber(before)[0]
    counts = eve.sample(np.random.default_rng(11), 1e9 / eve.params.clock_rate_hz[0])
    sifted = np.diagonal(counts["coincidences"][0])
    measured = counts["errors"][0] / sifted
    sigma = np.sqrt(measured * (1 - measured) / sifted)
    assert np.all(np.abs(measured - (e + fraction * (1 - 2 * e) / 4)) < 4 * sigma), (measured, e)


@pytest.mark.parametrize("km, median, p95", [(25, 3, 4), (100, 60, 90)])
def test_bbm92_intercept_resend_is_caught(km, median, p95):
    """Point 4: entangled-photon links at 25 and 100 km (1e8 pump pulses/s, mean pair number 0.02: ~36,000 and
    ~1,150 sifted pairs per basis per second, QBER 2.7 %), thresholds of a link in a 10,000-link exporter,
    600 s warm-up, 200 links. Intercept-resend on 2 % of the pairs (QBER +0.5 %) alarms a QBER detector with
    median and p95 at most 3 and 4 windows at 25 km, 60 and 90 at 100 km (measured 2/3 and 44/60); on 25 %
    in the first window at 25 km, and the CHSH detector alarms too (S falls by 12 %) within 3 windows."""
    n, warm = 200, 600
    p = ts.links(n, "simulated-spdc", fiber_length_km=km)
    config = ts.settings(n, fleet_links=10_000)
    run = ts.simulate(p, ts.with_fault(p, "intercept-resend", 0.02), warm, warm + 120, 1.0, config,
                      np.random.default_rng(12))
    delays = np.where(np.isnan(_delays(run, warm)), np.inf, _delays(run, warm))
    assert np.median(delays) <= median and np.quantile(delays, 0.95) <= p95, np.quantile(delays, [0.5, 0.95])
    if km == 25:
        run = ts.simulate(p, ts.with_fault(p, "intercept-resend", 0.25), warm, warm + 5, 1.0, config,
                          np.random.default_rng(13))
        assert np.all(_delays(run, warm) == 1)
        assert np.all(run.first_alarm[:, SPDC_DETECTOR["chsh"]] - warm + 1 <= 3)


def test_bbm92_visibility_drop_and_intercept_resend_are_the_same_counts():
    """A source whose visibility falls from V to V(1 − f/2) and intercept-resend on a fraction f give the same
    outcome probabilities (so no detector on the link's counts can tell them apart, and a correlation lost is
    key lost either way): the detectors alarm on both alike, and the runbook tells them apart by what
    realignment and the source's own monitor restore. A fibre bend, which leaves the correlations alone,
    alarms nothing."""
    p = ts.links(1, "simulated-spdc", fiber_length_km=25)
    np.testing.assert_allclose(outcome_probabilities(ts.with_fault(p, "intercept-resend", 0.1).params)[0],
                               outcome_probabilities(ts.with_fault(p, "visibility-drop", 0.98 * 0.95).params)[0],
                               rtol=1e-12)
    n, warm = 50, 600
    p = ts.links(n, "simulated-spdc", fiber_length_km=25)
    run = ts.simulate(p, ts.with_fault(p, "fiber-bend"), warm, warm + 300, 1.0, ts.settings(n, fleet_links=10),
                      np.random.default_rng(14))
    assert np.isnan(run.first_alarm).all()


# --- the exporter ----------------------------------------------------------------------------------------


def _tamper_samples(served: object, link: str = "target") -> dict[tuple[str, str], float]:
    status, _, text = served.request("GET", "/metrics")  # type: ignore[attr-defined]
    assert status == 200
    return {(s.name, s.labels.get("detector", "")): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("qkd_tamper") and s.labels.get("link") == link}


def _wait_for(served: object, predicate, link: str = "target", timeout: float = 20.0) -> dict[tuple[str, str], float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = _tamper_samples(served, link)
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_exporter_shows_an_injected_eavesdropper_and_rearms_on_the_control_plane(endpoint, tmp_path):
    """A real exporter (0.1 s windows, 1 s warm-up) with a decoy-BB84 and an entangled-photon link: warm-up
    exported, each link's share of the 90-day fleet budget (2 × 90 days) exported, then intercept-resend on
    5 % of the pulses injected through /-/faults sets qkd_tamper_alarm 1 on /metrics; a reload keeps it;
    POST /-/tamper re-arms once the attack has ended. The same fault on the entangled link alarms its QBER
    detector. The vacuum-gain detector does not run here: ten 0.1 s windows hold about one vacuum click,
    too little to resolve a 3x change of the dark counts, so its series are absent rather than a quiet 0
    (nor does the CHSH one, on ~16,000 test rounds)."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    served = endpoint(f"exporter:\n  admin_token_file: {token}\n  window_seconds: 0.1\n  stall_timeout_seconds: 5\n"
                      "  tamper: {warmup_seconds: 1}\n"
                      "links:\n  - name: target\n    driver: {type: simulated-bb84, fiber_length_km: 25, seed: 3}\n"
                      "  - name: pairs\n    driver: {type: simulated-spdc, fiber_length_km: 25, seed: 4}\n")
    assert _wait_for(served, lambda s: ("qkd_tamper_warmup", "") in s).get(("qkd_tamper_warmup", "")) == 1.0
    armed = _wait_for(served, lambda s: s.get(("qkd_tamper_warmup", "")) == 0.0)
    assert armed[("qkd_tamper_alarm", "qber_z")] == 0.0 and armed[("qkd_tamper_statistic", "qber_z")] < 1.0
    assert armed[("qkd_tamper_mean_time_between_false_alarms_seconds", "")] == 2 * 90 * DAY
    assert ("qkd_tamper_alarm", "vacuum_gain") not in armed and ("qkd_tamper_statistic", "vacuum_gain") not in armed
    fault = json.dumps({"link": "target", "kind": "intercept-resend", "magnitude": 0.05})
    assert served.control("POST", "/-/faults", fault)[0] == 200
    alarmed = _wait_for(served, lambda s: s.get(("qkd_tamper_alarm", "qber_z")) == 1.0)
    assert alarmed[("qkd_tamper_alarm", "qber_z")] == 1.0 and alarmed[("qkd_tamper_statistic", "qber_z")] >= 1.0
    assert alarmed[("qkd_tamper_alarm", "decoy_gain")] == 0.0
    assert served.reloader.reload() == []
    assert _tamper_samples(served)[("qkd_tamper_alarm", "qber_z")] == 1.0, "a reload keeps the alarm"
    assert served.control("DELETE", "/-/faults", json.dumps({"link": "target"}))[0] == 200
    assert served.control("POST", "/-/tamper", json.dumps({"link": "nope"}))[0] == 400
    assert served.request("POST", "/-/tamper", json.dumps({"link": "target"}))[0] == 401
    status, _, body = served.control("POST", "/-/tamper", json.dumps({"link": "target"}))
    assert status == 200 and json.loads(body) == {"rearmed": "target", "relearn": False}
    rearmed = _wait_for(served, lambda s: s.get(("qkd_tamper_alarm", "qber_z")) == 0.0)
    assert rearmed[("qkd_tamper_alarm", "qber_z")] == 0.0

    pairs = _wait_for(served, lambda s: s.get(("qkd_tamper_warmup", "")) == 0.0, "pairs")
    assert pairs[("qkd_tamper_alarm", "qber_x")] == 0.0 and ("qkd_tamper_alarm", "decoy_gain") not in pairs
    fault = json.dumps({"link": "pairs", "kind": "intercept-resend", "magnitude": 0.25})
    assert served.control("POST", "/-/faults", fault)[0] == 200
    assert _wait_for(served, lambda s: s.get(("qkd_tamper_alarm", "qber_z")) == 1.0, "pairs")[("qkd_tamper_alarm", "qber_z")] == 1.0


LINK = "  - name: {}\n    driver: {{type: simulated-bb84, fiber_length_km: 25}}\n"


@pytest.mark.parametrize("text, field", [
    ("exporter: {tamper: {qber_shifts: [0.01, 0.7]}}\nlinks:\n" + LINK.format("a"), "exporter.tamper.qber_shifts[1]"),
    ("exporter: {tamper: {qber_shifts: []}}\nlinks:\n" + LINK.format("a"), "exporter.tamper.qber_shifts"),
    ("links:\n" + LINK.format("a") + "    tamper: {warmup: 5}\n", "links[0].tamper.warmup"),
    ("exporter: {tamper: {mean_time_between_false_alarms_seconds: 60}}\nlinks:\n" + LINK.format("a"),
     "exporter.tamper.mean_time_between_false_alarms_seconds"),
    ("links:\n" + LINK.format("a") + "    tamper: {fleet_mean_time_between_false_alarms_seconds: 60}\n",
     "links[0].tamper.fleet_mean_time_between_false_alarms_seconds"),
    ("exporter: {tamper: {fleet_mean_time_between_false_alarms_seconds: 100}}\nlinks:\n" + LINK.format("a")
     + "    tamper: {mean_time_between_false_alarms_seconds: 50}\n" + LINK.format("b"),
     "exporter.tamper.fleet_mean_time_between_false_alarms_seconds"),
], ids=["shift over 1/2", "empty bank", "unknown key", "per-link time exporter-wide", "fleet time on a link",
        "links' own times use up the fleet budget"])
def test_config_errors_name_the_field(text, field):
    from qtelemetry.config import parse_config
    from qtelemetry.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert field in str(caught.value)


def test_links_share_the_fleet_budget_and_keep_their_own():
    """Three watched links (two decoy BB84, one entangled), one of them with its own 1,000 days, a link with its
    detectors off and one without any: the other two share what the fleet's 90 days leave, so that the links'
    alarm rates add up to the fleet's. Per-link settings override the exporter's."""
    from qtelemetry.config import parse_config
    from qtelemetry.runtime.tamper import TamperDetectors

    config = parse_config(
        "exporter: {tamper: {warmup_seconds: 60, qber_shifts: [0.02], fleet_mean_time_between_false_alarms_seconds: "
        f"{90 * DAY}}}}}\nlinks:\n" + LINK.format("a") + LINK.format("b")
        + "    tamper: {qber_shifts: [0.005, 0.01], mean_time_between_false_alarms_seconds: " + f"{1000 * DAY}}}\n"
        + "  - {name: c, driver: {type: simulated-spdc, fiber_length_km: 25}}\n"
        + LINK.format("idle") + "    tamper: {enabled: false}\n"
        + "  - {name: memories, driver: {type: simulated-heralded, fiber_length_km: 10}}\n")
    times = config.tamper_mean_times()
    assert times[1] == 1000 * DAY and np.isnan(times[3:]).all()
    assert times[0] == times[2] == pytest.approx(2 / (1 / (90 * DAY) - 1 / (1000 * DAY)))
    assert np.sum(1 / times[:3]) == pytest.approx(1 / (90 * DAY))
    detectors = TamperDetectors("bb84-decoy", config.links[:2], config.exporter.tamper, times[:2])
    np.testing.assert_array_equal(detectors.settings.qber_shifts, [[0.02, np.nan], [0.005, 0.01]])
    assert detectors.settings.warmup_s.tolist() == [60.0, 60.0]
