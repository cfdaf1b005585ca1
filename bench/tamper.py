"""Tamper detection in accelerated time: detection delay and false alarms of the sequential detectors
against the threshold alerts that existed before them, and their cost per estimation cycle.

    python bench/tamper.py [--links 100] [--horizon 1800] [--fa-links 5000] [--fa-hours 2] [--cost-links 10000]

Links are the simulator's decoy-BB84 model at 25 and 100 km (1 s windows, 1e8 pulses/s,
exporter defaults: 30-day mean time between false alarms, 600 s warm-up), drawn for all links at
once; the detectors are the exporter's (``changedetect.update``). The threshold alerts are
evaluated as the generated rules state them, on the exporter's own estimates (60-window sliding
sums) sampled every 15 s (a scrape): QKDQberHigh (upper bound > 5 % for 10m), QKDQberCritical
(> 8 % for 5m), QKDDarkCountsHigh/Suppressed (10-minute average of the vacuum gain above 3x /
below 1/3 of its baseline for 15m/10m) and QKDChannelLossStep (10-minute average loss 3 dB over
its baseline for 5m); the baselines (a 1-day median in the rules) are the pre-attack level.
Rule evaluation every 1m adds up to a minute to those delays, which is not counted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from qtelemetry.config import LinkConfig
from qtelemetry.drivers import tamper_scenarios as ts
from qtelemetry.drivers.simulated_bb84 import sample_window
from qtelemetry.estimation import changedetect
from qtelemetry.estimation.bb84 import BB84_DECOY, VACUUM, channel_loss_db
from qtelemetry.estimation.stats import clopper_pearson_upper
from qtelemetry.monitoring.config import MonitoringConfig, duration_seconds
from qtelemetry.runtime.tamper import TamperDetectors
from qtelemetry.tamperconfig import TamperConfig

SCENARIOS = (
    ("intercept-resend 2 %", "intercept-resend", 0.02),
    ("intercept-resend 5 %", "intercept-resend", 0.05),
    ("intercept-resend 10 %", "intercept-resend", 0.10),
    ("intercept-resend 25 %", "intercept-resend", 0.25),
    ("detector blinding 10 %", "detector-blinding", 0.10),
    ("detector blinding (all)", "detector-blinding", 1.0),
    ("source drift x1.5", "source-power-drift", 1.5),
    ("fiber bend +3 dB", "fiber-bend", 3.0),
    # appended: the scenarios share one RNG stream, so rows added last leave the others' figures as they were
    ("photon-number splitting 25 %", "photon-number-splitting", 0.25),
    ("photon-number splitting (all)", "photon-number-splitting", 1.0),
)
#: The scenarios run again with the detector tuned to a smaller QBER shift.
FINE_SCENARIOS = tuple(s for s in SCENARIOS if s[0] in ("intercept-resend 2 %", "fiber bend +3 dB"))
DISTANCES = (25, 100)
SCRAPE_S, SLIDING = 15, 60


class Rules:
    """The threshold alerts' inputs, sampled every scrape from 60-window sliding sums."""

    def __init__(self, n: int, windows: int):
        self.ring = {k: np.zeros((SLIDING, n, *shape)) for k, shape in BB84_DECOY.count_shapes.items()
                     if k in ("pulses", "detections", "sifted", "errors")}
        self.samples = windows // SCRAPE_S
        self.qber_upper = np.full((self.samples, n), np.nan)
        self.vacuum_gain = np.full((self.samples, n), np.nan)
        self.loss = np.full((self.samples, n), np.nan)
        self.params = {"mu": np.full(n, 0.5), "detector_efficiency": np.full(n, 0.1)}

    def observe(self, t: int, counts: dict, state: object) -> None:
        for k, ring in self.ring.items():
            ring[t % SLIDING] = counts[k]
        if t % SCRAPE_S or t // SCRAPE_S >= self.samples:
            return
        sums = {k: ring.sum(axis=0) for k, ring in self.ring.items()}
        k, n = sums["errors"][:, :, 0], sums["sifted"][:, :, 0]
        i = t // SCRAPE_S
        self.qber_upper[i] = clopper_pearson_upper(k, n, 0.99).max(axis=1)
        with np.errstate(all="ignore"):  # before the first windows: no pulses yet, no estimate (NaN)
            gain = sums["detections"] / sums["pulses"]
            self.loss[i] = channel_loss_db(gain[:, 0], gain[:, VACUUM], self.params["mu"],
                                           self.params["detector_efficiency"])
        self.vacuum_gain[i] = gain[:, VACUUM]


def fires(condition: np.ndarray, for_s: float) -> np.ndarray:
    """Sample index at which a rule with ``for: for_s`` fires, per link (NaN: never)."""
    need = int(round(for_s / SCRAPE_S))
    run = np.zeros(condition.shape[1])
    out = np.full(condition.shape[1], np.nan)
    for i, row in enumerate(condition):
        run = np.where(row, run + 1, 0)
        out[np.isnan(out) & (run > need)] = i
    return out


def smoothed(series: np.ndarray, seconds: str) -> np.ndarray:
    """avg_over_time over ``seconds`` of a series sampled every scrape."""
    width = int(duration_seconds(seconds) // SCRAPE_S)
    cumulative = np.cumsum(np.clip(np.nan_to_num(series), 0.0, 1e6), axis=0)  # +Inf (no light): far off any band
    out = cumulative.copy()
    out[width:] = cumulative[width:] - cumulative[:-width]
    return out / np.minimum(np.arange(1, len(series) + 1), width)[:, None]


def threshold_alerts(rules: Rules, warmup: int, onset_sample: int) -> dict[str, np.ndarray]:
    """Fire sample of each threshold alert per link (NaN: never), with the baselines before the onset."""
    c = MonitoringConfig()
    t, smooth = c.thresholds, c.baseline.smoothing
    vac = smoothed(rules.vacuum_gain, smooth)
    loss = smoothed(rules.loss, smooth)
    base_vac = np.nanmedian(vac[warmup // SCRAPE_S:onset_sample], axis=0)
    base_loss = np.nanmedian(loss[warmup // SCRAPE_S:onset_sample], axis=0)
    return {
        "QberHigh": fires(rules.qber_upper > t.qber_warning, 600),
        "QberCritical": fires(rules.qber_upper > t.qber_critical, 300),
        "DarkCounts": np.fmin(fires(vac > t.dark_count_factor * base_vac, 900),
                              fires(vac < base_vac / t.dark_count_factor, 600)),
        "LossStep": fires(loss - base_loss > t.loss_step_db, 300),
    }


def quantiles(delays: np.ndarray, horizon: float) -> str:
    """'median / p95' seconds of the links' delays; never: '-', beyond the horizon: '>horizon'."""
    if np.isnan(delays).all():
        return "-"
    median, p95 = (np.quantile(np.where(np.isnan(delays), np.inf, delays), q, method="higher") for q in (0.5, 0.95))
    return " / ".join(f"{v:.0f}" if np.isfinite(v) else f">{horizon:.0f}" for v in (median, p95))


def delay_table(links: int, horizon: int, warmup: int, before: int, seed: int, qber_shift: float,
                scenarios: tuple[tuple[str, str, float], ...] = SCENARIOS) -> None:
    print(f"Detection delay with qber_shift {qber_shift:g}, seconds after the onset (median / p95 of {links} links; '-': no alarm within "
          f"{horizon} s; threshold alerts without the up to 1 m of rule evaluation)")
    detectors = list(changedetect.DETECTORS)
    header = ["scenario", "km", *detectors, "first tamper alarm", "QBER alerts", "dark-count alerts", "loss step"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rng = np.random.default_rng(seed)
    onset = warmup + before
    windows = onset + horizon
    for name, kind, magnitude in scenarios:
        for km in DISTANCES:
            p = ts.links(links, fiber_length_km=km)
            rules = Rules(links, windows)
            run = ts.simulate(p, ts.with_fault(p, kind, magnitude), onset, windows, 1.0, ts.settings(links, qber_shift=qber_shift, warmup_seconds=warmup),
                              rng, observe=rules.observe)
            delay = run.first_alarm - onset + 1
            delay[delay <= 0] = 0  # alarmed before the onset: a false alarm, shown as 0
            alerts = threshold_alerts(rules, warmup, onset // SCRAPE_S)
            after = {k: (v - onset // SCRAPE_S) * SCRAPE_S for k, v in alerts.items()}
            cells = [quantiles(delay[:, j], horizon) for j in range(len(detectors))]
            cells.append(quantiles(np.fmin.reduce(delay, axis=1), horizon))
            cells.append(quantiles(np.fmin(after["QberHigh"], after["QberCritical"]), horizon))
            cells += [quantiles(after["DarkCounts"], horizon), quantiles(after["LossStep"], horizon)]
            print(f"| {name} | {km} | " + " | ".join(cells) + " |")


def false_alarm_table(links: int, hours: float, warmup: int, seed: int) -> None:
    """No attack: tamper alarms (each re-arms the link) and threshold-alert firings over links × hours."""
    print(f"\nFalse alarms without an attack ({hours:g} h of each link after its warm-up; each alarm re-arms the link)")
    print("| link | link-hours | configured: mean time | allowed (expected at the configured rate) | tamper alarms "
          "| 99 % Poisson bound | QBER / dark-count / loss alerts |\n|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(seed)
    windows = warmup + int(hours * 3600)
    cases = [(f"{km} km, 1e8 pulses/s", dict(fiber_length_km=km), {}) for km in DISTANCES]
    cases.append(("25 km, 1e5 pulses/s (small counts; a fifth of the links)", dict(fiber_length_km=25, clock_rate_hz=1e5,
                                                           dark_count_probability=1e-4),
                  dict(mean_time_between_false_alarms_seconds=3600)))
    for label, fields, overrides in cases:
        n = max(1, links // 5) if overrides else links
        p = ts.links(n, **fields)
        config = ts.settings(n, warmup_seconds=warmup, **overrides)
        rules = Rules(n, windows)
        run = ts.simulate(p, None, 0, windows, 1.0, config, rng, rearm=True, observe=rules.observe)
        mean_time = float(config.mean_time_between_false_alarms_s[0])
        expected = n * (windows - warmup) / mean_time
        alerts = threshold_alerts(rules, warmup, len(rules.qber_upper))
        fired = sum(int((~np.isnan(v)).sum()) for v in alerts.values())
        shown = f"{mean_time / 86400:g} d" if mean_time >= 86400 else f"{mean_time / 3600:g} h"
        print(f"| {label} | {n * hours:,.0f} | {shown} | {expected:.1f} | {int(run.events.sum())} "
              f"| {stats.poisson.ppf(0.99, expected):.0f} | {fired} |")


def cost_table(links: int, repeats: int, seed: int) -> None:
    """One cycle's detector work (fold + exported state) against the estimate call, at ``links`` links."""
    p = ts.links(links, fiber_length_km=50)
    rng = np.random.default_rng(seed)
    counts = sample_window(p, rng, np.round(p.clock_rate_hz))
    window = {k: v * SLIDING for k, v in counts.items()}
    window.update({k: np.zeros(links) for k in BB84_DECOY.count_shapes if k not in window})
    params = {k: np.full(links, v) for k, v in dict(mu=0.5, nu=0.1, basis_bias=0.5, detector_efficiency=0.1,
                                                    ec_efficiency=1.16, block_size=1e8, epsilon_sec=1e-10,
                                                    epsilon_cor=1e-15).items()}
    link = LinkConfig(name="x", driver={"type": "simulated-bb84", "fiber_length_km": 50})
    detectors = TamperDetectors([link] * links, TamperConfig(warmup_seconds=1))
    rows, duration = np.arange(links), np.ones(links)
    detectors.fold(rows, counts, duration)  # ends the warm-up: the detectors run from here

    def median_ms(call) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return 1e3 * float(np.median(times))

    with np.errstate(all="ignore"):
        estimate = median_ms(lambda: BB84_DECOY.estimate(window, np.full(links, 60.0), params, 0.99))
        estimates = BB84_DECOY.estimate(window, np.full(links, 60.0), params, 0.99)
        tamper = median_ms(lambda: (detectors.fold(rows, counts, duration), detectors.estimates(estimates)))
    print(f"\nCost per estimation cycle at {links:,} links (median of {repeats}): estimate {estimate:.1f} ms, "
          f"tamper detectors {tamper:.1f} ms ({tamper / estimate:.2f}x the estimate call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=50, help="links per scenario and distance")
    parser.add_argument("--horizon", type=int, default=1800, help="seconds watched after the onset")
    parser.add_argument("--warmup", type=int, default=600, help="warm-up seconds (the exporter's default)")
    parser.add_argument("--before", type=int, default=660, help="seconds without attack between warm-up and onset")
    parser.add_argument("--fa-links", type=int, default=5000, help="links of the false-alarm runs")
    parser.add_argument("--fa-hours", type=float, default=2.0, help="hours of each false-alarm run")
    parser.add_argument("--cost-links", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tables", default="delay,false-alarms,cost", help="which tables, comma-separated")
    args = parser.parse_args()
    tables = args.tables.split(",")
    if "delay" in tables:
        delay_table(args.links, args.horizon, args.warmup, args.before, args.seed, TamperConfig().qber_shift)
        print()  # a detector tuned to a smaller shift: what catching 2 % intercept-resend costs
        delay_table(args.links, args.horizon, args.warmup, args.before, args.seed, 0.005, FINE_SCENARIOS)
    if "false-alarms" in tables:
        false_alarm_table(args.fa_links, args.fa_hours, args.warmup, args.seed)
    if "cost" in tables:
        cost_table(args.cost_links, args.repeats, args.seed)


if __name__ == "__main__":
    main()
