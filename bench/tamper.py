"""Tamper detection in accelerated time: detection delay and false alarms of the sequential detectors
against the threshold alerts that existed before them, by exporter size, and their cost per estimation cycle.

    python bench/tamper.py [--links 50] [--horizon 1800] [--fa-links 400] [--fa-hours 10] [--cost-links 10000]

Links are the simulators' models at 25 and 100 km (decoy BB84: 1e8 pulses/s; entangled photons: 1e8 pump
pulses/s, mean pair number 0.02), 1 s windows, exporter defaults (90-day fleet budget, 600 s warm-up),
drawn for all links at once; the detectors are the exporter's (``changedetect.update``). A link's
thresholds depend on how many links share the budget: ``--fleet`` (default 1,000). The threshold alerts
are evaluated as the generated rules state them, on the exporter's own estimates (60-window sliding sums)
sampled every 15 s (a scrape): QKDQberHigh (upper bound > 5 % for 10m), QKDQberCritical (> 8 % for 5m),
and on decoy-BB84 links QKDDarkCountsHigh/Suppressed (10-minute average of the vacuum gain above 3x /
below 1/3 of its baseline for 15m/10m) and QKDChannelLossStep (10-minute average loss 3 dB over its
baseline for 5m); the baselines (a 1-day median in the rules) are the pre-attack level. Rule evaluation
every 1m adds up to a minute to those delays, which is not counted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from qtelemetry.config import LinkConfig
from qtelemetry.drivers import tamper_scenarios as ts
from qtelemetry.estimation import changedetect
from qtelemetry.estimation.bb84 import BB84_DECOY, VACUUM, channel_loss_db
from qtelemetry.estimation.stats import clopper_pearson_upper
from qtelemetry.estimation.tamper_statistics import DETECTORS
from qtelemetry.monitoring.config import MonitoringConfig, duration_seconds
from qtelemetry.runtime.tamper import TamperDetectors
from qtelemetry.tamperconfig import TamperConfig

BB84, SPDC = "simulated-bb84", "simulated-spdc"
LINK_KIND = {BB84: "decoy BB84", SPDC: "entangled"}
SCENARIOS = {
    BB84: (
        ("intercept-resend 2 %", "intercept-resend", 0.02),
        ("intercept-resend 5 %", "intercept-resend", 0.05),
        ("intercept-resend 10 %", "intercept-resend", 0.10),
        ("intercept-resend 25 %", "intercept-resend", 0.25),
        ("detector blinding 10 %", "detector-blinding", 0.10),
        ("detector blinding (all)", "detector-blinding", 1.0),
        ("source drift x1.5", "source-power-drift", 1.5),
        ("fiber bend +3 dB", "fiber-bend", 3.0),
        ("photon-number splitting 25 %", "photon-number-splitting", 0.25),
        ("photon-number splitting (all)", "photon-number-splitting", 1.0),
    ),
    SPDC: (
        ("intercept-resend 2 %", "intercept-resend", 0.02),
        ("intercept-resend 5 %", "intercept-resend", 0.05),
        ("intercept-resend 25 %", "intercept-resend", 0.25),
        ("visibility 0.98 -> 0.93 (as intercept-resend 10 %)", "visibility-drop", 0.98 * 0.95),
        ("misalignment +0.5 %", "misalignment-drift", 0.005),
        ("source drift x1.5", "source-power-drift", 1.5),
        ("fiber bend +3 dB", "fiber-bend", 3.0),
    ),
}
DISTANCES = (25, 100)
FLEET_SIZES = (10, 1_000, 10_000)
SCRAPE_S, SLIDING = 15, 60


class Rules:
    """The threshold alerts' inputs, sampled every scrape from 60-window sliding sums."""

    def __init__(self, simulator: str, n: int, windows: int):
        self.bb84 = simulator == BB84
        self.ring: dict[str, np.ndarray] = {}
        self.samples = windows // SCRAPE_S
        self.qber_upper = np.full((self.samples, n), np.nan)
        self.vacuum_gain = np.full((self.samples, n), np.nan)
        self.loss = np.full((self.samples, n), np.nan)
        self.params = {"mu": np.full(n, 0.5), "detector_efficiency": np.full(n, 0.1)}

    def observe(self, t: int, counts: dict, state: object) -> None:
        for k in (("pulses", "detections", "sifted", "errors") if self.bb84 else ("errors", "coincidences")):
            self.ring.setdefault(k, np.zeros((SLIDING, *counts[k].shape)))[t % SLIDING] = counts[k]
        if t % SCRAPE_S or t // SCRAPE_S >= self.samples:
            return
        sums = {k: ring.sum(axis=0) for k, ring in self.ring.items()}
        if self.bb84:
            k, n = sums["errors"][:, :, 0], sums["sifted"][:, :, 0]
        else:
            k, n = sums["errors"], np.diagonal(sums["coincidences"], axis1=-2, axis2=-1)
        i = t // SCRAPE_S
        self.qber_upper[i] = clopper_pearson_upper(k, n, 0.99).max(axis=1)
        if self.bb84:
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


def threshold_alerts(rules: Rules, warmup: int, onset_sample: int) -> dict[str, np.ndarray | None]:
    """Fire sample of each threshold alert per link (NaN: never; None: not on this kind of link), with the
    baselines before the onset."""
    c = MonitoringConfig()
    t, smooth = c.thresholds, c.baseline.smoothing
    qber = np.fmin(fires(rules.qber_upper > t.qber_warning, 600), fires(rules.qber_upper > t.qber_critical, 300))
    if not rules.bb84:
        return {"QBER": qber, "DarkCounts": None, "LossStep": None}
    vac = smoothed(rules.vacuum_gain, smooth)
    loss = smoothed(rules.loss, smooth)
    base_vac = np.nanmedian(vac[warmup // SCRAPE_S:onset_sample], axis=0)
    base_loss = np.nanmedian(loss[warmup // SCRAPE_S:onset_sample], axis=0)
    return {
        "QBER": qber,
        "DarkCounts": np.fmin(fires(vac > t.dark_count_factor * base_vac, 900),
                              fires(vac < base_vac / t.dark_count_factor, 600)),
        "LossStep": fires(loss - base_loss > t.loss_step_db, 300),
    }


def quantiles(delays: np.ndarray | None, horizon: float) -> str:
    """'median / p95' seconds of the links' delays; never: '-', beyond the horizon: '>horizon'; None: 'n/a'."""
    if delays is None:
        return "n/a"
    if np.isnan(delays).all():
        return "-"
    median, p95 = (np.quantile(np.where(np.isnan(delays), np.inf, delays), q, method="higher") for q in (0.5, 0.95))
    return " / ".join(f"{v:.0f}" if np.isfinite(v) else f">{horizon:.0f}" for v in (median, p95))


def delays(run: ts.Run, onset: int) -> np.ndarray:
    """Seconds from the onset to each link's first alarm, per detector (the onset's window counts as 1);
    an alarm before the onset, a false alarm, shows as 0."""
    delay = run.first_alarm - onset + 1
    delay[delay <= 0] = 0
    return delay


def delay_table(links: int, horizon: int, warmup: int, before: int, seed: int, fleet: int) -> None:
    print(f"Detection delay, seconds after the onset (median / p95 of {links} links; '-': no alarm within {horizon} s; "
          f"n/a: not on this kind of link; thresholds of a link in a {fleet:,}-link exporter; threshold alerts "
          "without the up to 1 m of rule evaluation)")
    header = ["link", "scenario", "km", *DETECTORS, "first tamper alarm", "QBER alerts", "dark-count alerts", "loss step"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rng = np.random.default_rng(seed)
    onset = warmup + before
    windows = onset + horizon
    for simulator, scenarios in SCENARIOS.items():
        for name, kind, magnitude in scenarios:
            for km in DISTANCES:
                p = ts.links(links, simulator, fiber_length_km=km)
                rules = Rules(simulator, links, windows)
                run = ts.simulate(p, ts.with_fault(p, kind, magnitude), onset, windows, 1.0,
                                  ts.settings(links, fleet_links=fleet, warmup_seconds=warmup), rng, observe=rules.observe)
                delay = delays(run, onset)
                by_detector = dict(zip(run.state.statistics.detectors, delay.T))
                alerts = threshold_alerts(rules, warmup, onset // SCRAPE_S)
                after = {k: None if v is None else (v - onset // SCRAPE_S) * SCRAPE_S for k, v in alerts.items()}
                cells = [quantiles(by_detector.get(d), horizon) for d in DETECTORS]
                cells.append(quantiles(np.fmin.reduce(delay, axis=1), horizon))
                cells += [quantiles(after[k], horizon) for k in ("QBER", "DarkCounts", "LossStep")]
                print(f"| {LINK_KIND[simulator]} | {name} | {km} | " + " | ".join(cells) + " |")


def fleet_size_table(links: int, horizon: int, warmup: int, seed: int) -> None:
    """Delay of the first tamper alarm for intercept-resend with the thresholds of a link among 10, 1,000 and
    10,000 that share the default budget: the thresholds grow with the log of the fleet only."""
    print(f"\nFirst tamper alarm after intercept-resend starts, seconds (median / p95 of {links} links; '-': none "
          f"within {horizon} s), by the number of links sharing the 90-day budget (h = ln of each statistic's "
          "mean windows between false alarms)")
    header = ["link", "km", "attack", *(f"{n:,} links" for n in FLEET_SIZES)]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for simulator in SCENARIOS:
        for km in DISTANCES:
            p = ts.links(links, simulator, fiber_length_km=km)
            for fraction in (0.02, 0.05, 0.25):
                cells = []
                for fleet in FLEET_SIZES:
                    run = ts.simulate(p, ts.with_fault(p, "intercept-resend", fraction), warmup, warmup + horizon, 1.0,
                                      ts.settings(links, fleet_links=fleet, warmup_seconds=warmup),
                                      np.random.default_rng(seed))
                    h = np.fmax.reduce(run.state.threshold[0])
                    cells.append(f"{quantiles(np.fmin.reduce(delays(run, warmup), axis=1), horizon)} (h {h:.1f})")
                print(f"| {LINK_KIND[simulator]} | {km} | {fraction:.0%} | " + " | ".join(cells) + " |")


def false_alarm_table(links: int, hours: float, window: float, warmup: int, seed: int) -> None:
    """No attack: the false alarms of a mixed fleet against the fleet budget, and which statistics raise them.

    The budget is cut so that the fleet's configured rate allows 100 false alarms in the run; each statistic
    restarts after its own alarms, and a link's alarm counts once per window (the page)."""
    groups = [
        (f"decoy BB84 {km} km", BB84, dict(fiber_length_km=km)) for km in DISTANCES] + [
        ("decoy BB84 25 km, a few counts per window", BB84,
         dict(fiber_length_km=25, clock_rate_hz=1e5 / window, dark_count_probability=1e-4))] + [
        (f"entangled {km} km", SPDC, dict(fiber_length_km=km)) for km in DISTANCES]
    fleet = links * len(groups)
    fleet_s = hours * 3600 / 100
    print(f"\nFalse alarms without an attack: {fleet:,} links ({links:,} of each kind), {hours:g} h each after the "
          f"{warmup} s warm-up, {window:g} s windows, in accelerated time; the fleet budget cut to {fleet_s:g} s so "
          f"that it allows 100 false alarms in the {fleet * hours:,.0f} link-hours (each link's share: "
          f"{fleet * fleet_s / 3600:g} h)")
    print("| links | link-hours | allowed (at the link's share) | tamper alarms | from which statistics |\n|---|---|---|---|---|")
    rng = np.random.default_rng(seed)
    total = 0
    for label, simulator, fields in groups:
        p = ts.links(links, simulator, **fields)
        config = ts.settings(links, fleet_links=fleet, fleet_mean_time_between_false_alarms_seconds=fleet_s,
                             warmup_seconds=warmup)
        run = ts.simulate(p, None, 0, int((warmup + hours * 3600) / window), window, config, rng, rearm=True)
        by_statistic = ", ".join(f"{name} {count}" for name, count in zip(run.state.statistics.names, run.alarms.sum(axis=0))
                                 if count) or "-"
        total += int(run.events.sum())
        print(f"| {label} | {links * hours:,.0f} | {links * hours * 3600 / (fleet * fleet_s):.1f} | "
              f"{int(run.events.sum())} | {by_statistic} |")
    print(f"| all | {fleet * hours:,.0f} | 100.0 | {total} (99 % Poisson bound at the budget: "
          f"{stats.poisson.ppf(0.99, 100):.0f}) | |")


def cost_table(links: int, repeats: int, seed: int) -> None:
    """One cycle's detector work (fold + exported state) against the estimate call, at ``links`` links, and
    the end of a warm-up (baselines, Lorden thresholds and margins) for all of them at once."""
    p = ts.links(links, fiber_length_km=50)
    rng = np.random.default_rng(seed)
    counts = p.sample(rng, 1.0)
    window = {k: v * SLIDING for k, v in counts.items()}
    window.update({k: np.zeros(links) for k in BB84_DECOY.count_shapes if k not in window})
    params = {k: np.full(links, v) for k, v in dict(mu=0.5, nu=0.1, basis_bias=0.5, detector_efficiency=0.1,
                                                    ec_efficiency=1.16, block_size=1e8, epsilon_sec=1e-10,
                                                    epsilon_cor=1e-15).items()}
    link = LinkConfig(name="x", driver={"type": "simulated-bb84", "fiber_length_km": 50})
    detectors = TamperDetectors("bb84-decoy", [link] * links, TamperConfig(warmup_seconds=1),
                                np.full(links, links * TamperConfig().fleet_mean_time_between_false_alarms_seconds))
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
        freeze = median_ms(lambda: changedetect.freeze(detectors.state, rows, detectors.settings))
    print(f"\nCost per estimation cycle at {links:,} links (median of {repeats}): estimate {estimate:.1f} ms, "
          f"tamper detectors {tamper:.1f} ms ({tamper / estimate:.2f}x the estimate call); the end of the warm-up "
          f"of all {links:,} links at once (baselines, thresholds, margins) {freeze:.1f} ms "
          f"({freeze / estimate:.2f}x the estimate call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=50, help="links per scenario and distance")
    parser.add_argument("--horizon", type=int, default=1800, help="seconds watched after the onset")
    parser.add_argument("--fleet-horizon", type=int, default=300, help="seconds watched in the fleet-size table")
    parser.add_argument("--warmup", type=int, default=600, help="warm-up seconds (the exporter's default)")
    parser.add_argument("--before", type=int, default=660, help="seconds without attack between warm-up and onset")
    parser.add_argument("--fleet", type=int, default=1000, help="links sharing the budget in the delay table")
    parser.add_argument("--fa-links", type=int, default=400, help="links of each kind in the false-alarm run")
    parser.add_argument("--fa-hours", type=float, default=10.0, help="hours of each link in the false-alarm run")
    parser.add_argument("--fa-window", type=float, default=10.0, help="window seconds of the false-alarm run")
    parser.add_argument("--cost-links", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tables", default="delay,fleet,false-alarms,cost", help="which tables, comma-separated")
    args = parser.parse_args()
    tables = args.tables.split(",")
    if "delay" in tables:
        delay_table(args.links, args.horizon, args.warmup, args.before, args.seed, args.fleet)
    if "fleet" in tables:
        fleet_size_table(args.links, args.fleet_horizon, args.warmup, args.seed)
    if "false-alarms" in tables:
        false_alarm_table(args.fa_links, args.fa_hours, args.fa_window, args.warmup, args.seed)
    if "cost" in tables:
        cost_table(args.cost_links, args.repeats, args.seed)


if __name__ == "__main__":
    main()
