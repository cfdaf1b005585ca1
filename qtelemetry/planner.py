"""qtelemetry plan: key rate and reach of a decoy-state BB84 fibre link before it is built.

For each distance: the secret key rate per pulse sent and in bit/s, the signal intensity μ used
and the repeaterless (PLOB) bound of the channel; and the longest distance with a positive key.
Defaults are the GYS experiment (Gobby, Yuan, Shields, APL 84, 3762 (2004)) as used by Ma, Qi,
Zhao, Lo, PRA 72, 012326 (2005), at GYS's 2 MHz clock, with the protocol of a simulated-bb84
link (80 % signal pulses, unbiased bases). --config FILE --link NAME takes the link's parameters
from a simulated-bb84 link of an exporter config; flags still override.

Bounds (--decoy, repeatable or comma-separated):
  finite       (default) one block of --block-size sifted key bits, composable security (Lim et
               al. 2014), for the link's protocol as set: intensities μ, ν and vacuum with their
               probabilities and the basis bias. This is the exporter's model of the link, the
               rate its qkd_expected_secret_key_rate_bits_per_second gauge promises. With
               --optimize-mu the protocol is chosen at each distance as in Lim et al. §IV:
               μ, a weak decoy μ2 (--nu is not used), a vacuum-ish 2e-4, their probabilities
               and the key-basis probability.
  vacuum-weak  asymptotic, vacuum + one weak decoy ν (MQZL §V.A)
  infinite     asymptotic, infinitely many decoys (Lo, Ma, Chen 2005): the best of the
               asymptotic bounds, not a ceiling for the finite one
The asymptotic bounds give the key of a signal pulse (GLLP as MQZL eq. 1 write it: the gain
Q_μ and the single-photon part Q1 are the signal state's), sifted with q = p_Z² + p_X², vacuum
events given no credit; decoy pulses carry no key, so per pulse sent that is the signal
fraction --p-signal of it, as the exporter's asymptotic rate counts. The finite bound keys
all three intensities in the Z basis, and Lim et al.'s ℓ/N is already per pulse sent.

JSON output for one bound is {"points": [{distance_km, key_rate_per_pulse, key_rate_bps, mu,
plob_per_pulse}, ...], "max_distance_km": ...}; for several bounds it is {"bounds": {NAME: that
object, ...}}. Unbounded values (PLOB of a lossless channel, the reach of a loss-free fibre)
are null in JSON and inf in CSV and tables. Rates where no key is possible are 0.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import numpy as np

from qtelemetry import extras
from qtelemetry.config import ConfigError, load_link
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config, planned_secret_key_rate_bps
from qtelemetry.estimation import decoy
from qtelemetry.estimation.bb84 import sifting_fraction
from qtelemetry.estimation.decoy import Array
from qtelemetry.estimation.finite_key import DEFAULT_BLOCK_SIZE, DEFAULT_EPS_COR, DEFAULT_EPS_SEC
from qtelemetry.estimation.repeaterless import plob_bound

EXIT_USAGE = 2
BOUNDS = ("finite", "vacuum-weak", "infinite")
#: GYS link and MQZL protocol defaults; ``clock_rate_hz`` is GYS's 2 MHz repetition rate.
GYS = {
    "attenuation_db_per_km": 0.21,
    "insertion_loss_db": 0.0,
    "detector_efficiency": 0.045,
    "dark_count_probability": 1.7e-6,
    "misalignment_error": 0.033,
    "ec_efficiency": 1.22,
    "mu": 0.48,
    "nu": 0.1,
    "clock_rate_hz": 2e6,
}
#: Finite-key protocol defaults: the exporter's simulated-bb84 links use the same.
FINITE_KEY = {"block_size": DEFAULT_BLOCK_SIZE, "epsilon_sec": DEFAULT_EPS_SEC, "epsilon_cor": DEFAULT_EPS_COR}
#: How the pulses are split and the bases chosen: a simulated-bb84 link's defaults.
PROTOCOL = {name: SimulatedBB84Config.model_fields[name].default
            for name in ("p_signal", "p_decoy", "p_vacuum", "basis_bias")}
#: Vacuum-ish third intensity of the finite bound: an intensity modulator's finite extinction (Lim et al. §IV).
VACUUM_INTENSITY = 2e-4
#: Signal intensities searched by --optimize-mu: up to MU_MAX, and at least MU_GAP above the
#: decoy, where the decoy bounds' (μ − ν) denominators would turn rounding error into key.
MU_MAX = 1.5
MU_GAP = 0.02
#: The reach search gives up (reach = inf) beyond this channel loss, and stops within RESOLUTION_KM
#: (or RESOLUTION_RELATIVE of the reach, where a fibre of almost no loss reaches beyond float's 1e-3 km).
MAX_LOSS_DB = 200.0
RESOLUTION_KM = 1e-3
RESOLUTION_RELATIVE = 1e-12
#: Most distances one plan evaluates: every one is a row of output (and memory before it).
MAX_DISTANCES = 100_000


@dataclass(frozen=True)
class LinkModel:
    """Everything the planner needs about one link; field names are the flags' names."""

    attenuation_db_per_km: float
    insertion_loss_db: float
    detector_efficiency: float
    dark_count_probability: float
    misalignment_error: float
    ec_efficiency: float
    mu: float
    nu: float
    clock_rate_hz: float
    p_signal: float
    p_decoy: float
    p_vacuum: float
    basis_bias: float
    block_size: float
    epsilon_sec: float
    epsilon_cor: float
    optimize_mu: bool

    def channel_transmittance(self, distance_km: Array) -> Array:
        """Fibre and insertion loss only: the channel the PLOB bound is about (MQZL §II)."""
        return decoy.transmittance(distance_km, self.attenuation_db_per_km, self.insertion_loss_db)


@dataclass(frozen=True)
class Plan:
    """One bound evaluated over the requested distances."""

    bound: str
    distance_km: Array
    key_rate_per_pulse: Array
    mu: Array
    plob_per_pulse: Array
    max_distance_km: float


def maximise(
    objective: Callable[..., Array], bounds: Mapping[str, tuple[float, float]], shape: tuple[int, ...],
    budget: int = 4096, rounds: int = 5,
) -> tuple[Array, dict[str, Array]]:
    """Vectorised zoom grid search: max of ``objective`` over a box, for every element of ``shape``.

    Why: the key rates are flat zero over much of their parameter space and not smooth
    (clipping, floors), and a grid evaluates every link or distance at once.
    ``objective(**params)`` gets each parameter with shape ``shape + (P,)``, P ≈ ``budget``
    candidates per element, and returns that shape; each round re-centres a finer grid on the
    best candidate. Returns the maxima and where they are.
    """
    names = list(bounds)
    points = min(257, round(budget ** (1 / max(len(names), 1))))
    lo = {n: np.full(shape, float(bounds[n][0])) for n in names}
    hi = {n: np.full(shape, float(bounds[n][1])) for n in names}
    unit = [u.ravel() for u in np.meshgrid(*[np.linspace(0.0, 1.0, points)] * len(names), indexing="ij")]
    for _ in range(rounds if names else 1):
        params = {n: lo[n][..., None] + (hi[n] - lo[n])[..., None] * u for n, u in zip(names, unit)}
        values = np.broadcast_to(objective(**params), shape + (points ** len(names),))
        best = values.argmax(axis=-1)[..., None]
        at = {n: np.take_along_axis(params[n], best, axis=-1)[..., 0] for n in names}
        for n in names:
            step = (hi[n] - lo[n]) / (points - 1)
            lo[n] = np.maximum(at[n] - step, bounds[n][0])
            hi[n] = np.minimum(at[n] + step, bounds[n][1])
    return np.take_along_axis(values, best, axis=-1)[..., 0], at


def _infinite(link: LinkModel, eta: Array, mu: Array) -> Array:
    """Infinite-decoy rate per pulse sent (Lo, Ma, Chen 2005): per signal pulse × signal fraction."""
    return link.p_signal * decoy.infinite_decoy_rate(
        eta, mu, link.dark_count_probability, link.misalignment_error, link.ec_efficiency, sifting_fraction(link.basis_bias)
    )


def _vacuum_weak(link: LinkModel, eta: Array, mu: Array) -> Array:
    """Vacuum + weak decoy rate per pulse sent (MQZL §V.A): per signal pulse × signal fraction."""
    return link.p_signal * decoy.model_vacuum_weak_rate(
        eta, mu, link.nu, link.dark_count_probability, link.misalignment_error, link.ec_efficiency,
        sifting_fraction(link.basis_bias)
    )


def _as_set(link: LinkModel, distance_km: Array) -> Array:
    """Finite-key rate per pulse of the link's own protocol: the exporter's model (``planned_secret_key_rate_bps``)."""
    values = {name: np.full(distance_km.shape, float(value)) for name, value in vars(link).items() if name != "optimize_mu"}
    return planned_secret_key_rate_bps(SimpleNamespace(fiber_length_km=distance_km, **values)) / link.clock_rate_hz


def _finite(link: LinkModel, distance_km: Array) -> tuple[Array, Array]:
    """Finite-key rate per pulse of one block (Lim et al. 2014) with its protocol optimised, and μ."""
    # SciPy's optimisers and Sobol sampler: imported only here, as every CLI start builds this parser.
    from qtelemetry.estimation.finite_key_optimum import optimal_finite_key

    shape = distance_km.shape
    eta = (link.detector_efficiency * link.channel_transmittance(distance_km)).ravel()
    y0, e_det = link.dark_count_probability, link.misalignment_error

    def channel(problem: Array, intensities: Array) -> tuple[Array, Array]:
        eta_k = eta[problem][:, None]
        return decoy.gain(eta_k, intensities, y0), decoy.error_gain(eta_k, intensities, y0, e_det)

    best = optimal_finite_key(
        channel, np.full(eta.size, link.block_size), mu3=VACUUM_INTENSITY, ec_efficiency=link.ec_efficiency,
        eps_sec=link.epsilon_sec, eps_cor=link.epsilon_cor, signal=None,
    )
    return best.rate.reshape(shape), best.mu[:, 0].reshape(shape)


class _Model(NamedTuple):
    """How to evaluate one asymptotic bound: its rate and the lowest admissible μ."""

    rate: Callable[[LinkModel, Array, Array], Array]
    lowest_mu: Callable[[LinkModel], float]


_MODELS = {
    "infinite": _Model(_infinite, lambda link: 0.0),
    "vacuum-weak": _Model(_vacuum_weak, lambda link: link.nu + MU_GAP),
}


def key_rate(bound: str, link: LinkModel, distance_km: Array) -> tuple[Array, Array]:
    """Best key rate per pulse at each distance and the μ that gives it (the configured μ if none)."""
    distance_km = np.asarray(distance_km, float)
    if bound == "finite" and not link.optimize_mu:
        return _as_set(link, distance_km), np.full(distance_km.shape, link.mu)
    if bound == "finite":
        rate, mu = _finite(link, distance_km)
        return rate, np.where(rate > 0, mu, link.mu)
    model = _MODELS[bound]
    eta = (link.detector_efficiency * link.channel_transmittance(distance_km))[..., None]
    free = {"mu": (model.lowest_mu(link), MU_MAX)} if link.optimize_mu else {}
    rate, at = maximise(lambda **p: model.rate(link, eta, p.get("mu", link.mu)), free, distance_km.shape)
    return rate, np.where(rate > 0, at.get("mu", link.mu), link.mu)


def _has_key(bound: str, link: LinkModel, distance_km: float = 0.0) -> bool:
    """Is there a key at this distance (at 0 km: at any distance)?"""
    return bool(key_rate(bound, link, np.array([distance_km]))[0][0] > 0)


def max_distance_km(bound: str, link: LinkModel) -> float:
    """Longest fibre with a positive key: 0 if none at all, inf if the rate never reaches 0.

    Bisected to RESOLUTION_KM (RESOLUTION_RELATIVE) between 0 km and MAX_LOSS_DB of loss; assumes the rate falls
    with distance, as it does in every bound here.
    """
    has_key = functools.partial(_has_key, bound, link)
    if link.attenuation_db_per_km == 0:
        return math.inf if has_key(0.0) else 0.0
    lo, hi = 0.0, max(MAX_LOSS_DB - link.insertion_loss_db, 0.0) / link.attenuation_db_per_km
    if not has_key(lo):
        return 0.0
    if has_key(hi):
        return math.inf
    while hi - lo > max(RESOLUTION_KM, RESOLUTION_RELATIVE * hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if has_key(mid) else (lo, mid)
    return float(lo)


def plan(bound: str, link: LinkModel, distance_km: Array) -> Plan:
    """Evaluate one bound at the requested distances."""
    rate, mu = key_rate(bound, link, distance_km)
    plob = plob_bound(link.channel_transmittance(distance_km))
    return Plan(bound, np.asarray(distance_km, float), rate, mu, plob, max_distance_km(bound, link))


# --- output -------------------------------------------------------------------------------------

COLUMNS = ("distance_km", "key_rate_per_pulse", "key_rate_bps", "mu", "plob_per_pulse")
TABLE_FORMATS = ("11.2f", "18.4e", "12.4e", "6.3f", "14.4e")  # right-aligned, one per column


def _finite_or_none(x: float) -> float | None:
    """JSON has no infinity: unbounded values are null."""
    return float(x) if math.isfinite(x) else None


def _rows(p: Plan, clock_rate_hz: float) -> list[dict[str, float]]:
    """One record per distance, in COLUMNS order."""
    return [
        dict(zip(COLUMNS, (round(float(d), 9), float(r), float(r) * clock_rate_hz, float(m), float(b))))
        for d, r, m, b in zip(p.distance_km, p.key_rate_per_pulse, p.mu, p.plob_per_pulse)
    ]


def to_json(plans: list[Plan], clock_rate_hz: float) -> str:
    """The documented JSON shape: one plan bare, several keyed by bound under "bounds"."""
    objects = {
        p.bound: {
            "points": [{k: _finite_or_none(v) for k, v in row.items()} for row in _rows(p, clock_rate_hz)],
            "max_distance_km": _finite_or_none(p.max_distance_km),
        }
        for p in plans
    }
    return json.dumps(objects[plans[0].bound] if len(plans) == 1 else {"bounds": objects}, indent=2)


def to_csv(plans: list[Plan], clock_rate_hz: float) -> str:
    """One row per bound and distance, the bound's reach repeated on each row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("decoy", *COLUMNS, "max_distance_km"))
    for p in plans:
        for row in _rows(p, clock_rate_hz):
            writer.writerow((p.bound, *row.values(), p.max_distance_km))
    return out.getvalue()


def to_table(plans: list[Plan], clock_rate_hz: float) -> str:
    """Plain aligned text, one section per bound."""
    sections = []
    for p in plans:
        lines = [f"decoy bound: {p.bound}   max distance with key: {p.max_distance_km:.2f} km"]
        lines.append("  ".join(f"{name:>{fmt.split('.')[0]}}" for name, fmt in zip(COLUMNS, TABLE_FORMATS)))
        for row in _rows(p, clock_rate_hz):
            lines.append("  ".join(f"{value:>{fmt}}" for value, fmt in zip(row.values(), TABLE_FORMATS)))
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def save_plot(plans: list[Plan], link: LinkModel, path: Path) -> None:
    """Key rate vs distance on a log axis for each bound, with the PLOB bound and each reach."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for p in plans:
        keep = p.key_rate_per_pulse > 0
        protocol = "protocol optimised" if link.optimize_mu else "protocol as set"
        name = f"finite, n_Z = {link.block_size:.0e}, {protocol}" if p.bound == "finite" else p.bound
        line, = ax.semilogy(p.distance_km[keep], p.key_rate_per_pulse[keep], marker="o", markersize=3,
                            label=f"{name} (max {p.max_distance_km:.1f} km)")
        if math.isfinite(p.max_distance_km):
            ax.axvline(p.max_distance_km, color=line.get_color(), linestyle=":", linewidth=1)
    keep = np.isfinite(plans[0].plob_per_pulse) & (plans[0].plob_per_pulse > 0)
    ax.semilogy(plans[0].distance_km[keep], plans[0].plob_per_pulse[keep], "k--",
                label="PLOB bound (repeaterless)")
    ax.set_xlabel("fibre length (km)")
    ax.set_ylabel("secret key rate (bits per pulse sent)")
    ax.set_title(
        f"α={link.attenuation_db_per_km} dB/km, η_det={link.detector_efficiency}, "
        f"Y0={link.dark_count_probability:g}, e_det={link.misalignment_error}, f={link.ec_efficiency}, "
        + ("μ optimised" if link.optimize_mu else f"μ={link.mu}") + f", ν={link.nu}, p_μ={link.p_signal}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


FORMATTERS = {"json": to_json, "csv": to_csv, "table": to_table}


# --- command line -------------------------------------------------------------------------------

def _decoy_list(text: str) -> list[str]:
    """``--decoy a,b``: a comma list of known bounds."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BOUNDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(BOUNDS)}")
    return names


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``plan`` verb; its handler is ``run``."""
    parser = subparsers.add_parser(
        "plan", help="model a link: key rate vs distance, reach, PLOB bound",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    link = parser.add_argument_group("link (default: GYS; or from --config/--link)")
    for flag, unit, text in (
        ("--attenuation-db-per-km", " dB/km", "fibre attenuation"),
        ("--insertion-loss-db", " dB", "extra loss at the ends: connectors, switches"),
        ("--detector-efficiency", "", "Bob's detection efficiency incl. his optics, in (0, 1]"),
        ("--dark-count-probability", "", "background click probability per pulse, Y0"),
        ("--misalignment-error", "", "probability a photon hits the wrong detector"),
        ("--ec-efficiency", "", "error-correction inefficiency f ≥ 1"),
        ("--mu", "", "signal mean photon number"),
        ("--nu", "", "weak decoy mean photon number"),
        ("--clock-rate-hz", " Hz", "pulse rate, for bit/s"),
    ):
        default = GYS[flag[2:].replace("-", "_")]
        link.add_argument(flag, type=float, metavar="X", help=f"{text} (default {default:g}{unit})")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--decoy", type=_decoy_list, action="append", metavar="BOUND[,BOUND]",
                          help=f"{', '.join(BOUNDS)}; repeatable (default finite)")
    protocol.add_argument("--optimize-mu", action="store_true",
                          help="choose the best μ at each distance (finite: the whole protocol, Lim et al. §IV)")
    for flag, text in (
        ("--p-signal", "probability of a signal pulse (μ)"),
        ("--p-decoy", "probability of a weak decoy pulse (ν)"),
        ("--p-vacuum", "probability of a vacuum pulse"),
        ("--basis-bias", "probability of choosing the Z basis"),
    ):
        default = PROTOCOL[flag[2:].replace("-", "_")]
        protocol.add_argument(flag, type=float, metavar="P", help=f"{text} (default {default:g}, as the exporter's links)")
    for flag, metavar, text in (
        ("--block-size", "BITS", "sifted key bits per block"),
        ("--epsilon-sec", "EPS", "secrecy parameter ε_sec, split into 21 equal terms"),
        ("--epsilon-cor", "EPS", "correctness parameter ε_cor"),
    ):
        default = FINITE_KEY[flag[2:].replace("-", "_")]
        protocol.add_argument(flag, type=float, metavar=metavar,
                              help=f"finite bound: {text} (default {default:g}, as the exporter's links)")
    output = parser.add_argument_group("output")
    output.add_argument("--distances", default="0:200:10", metavar="START:STOP:STEP",
                        help="km, STOP included (default 0:200:10)")
    output.add_argument("--format", choices=sorted(FORMATTERS), default="table")
    output.add_argument("--plot", type=Path, metavar="FILE.png", help="also plot key rate vs distance")
    source = parser.add_argument_group("link from an exporter config")
    source.add_argument("--config", type=Path, metavar="FILE", help="exporter config (YAML)")
    source.add_argument("--link", metavar="NAME", help="a simulated-bb84 link of --config")
    parser.set_defaults(handler=run)


class _Usage(Exception):
    """Bad input, reported as ``error: FLAG: reason`` with exit code 2."""

    def __init__(self, flag: str, reason: str):
        super().__init__(f"{flag}: {reason}")


def _parse_distances(text: str) -> Array:
    """START:STOP:STEP in km, STOP included."""
    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise _Usage("--distances", f"expected START:STOP:STEP in km, e.g. 0:200:10, got {text!r}") from None
    if not all(map(math.isfinite, (start, stop, step))) or start < 0 or step <= 0 or stop < start:
        raise _Usage("--distances", f"empty distance range {text!r}: need 0 ≤ START ≤ STOP and STEP > 0")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_DISTANCES:
        raise _Usage("--distances", f"{text!r} is {count:.3g} distances; at most {MAX_DISTANCES:,}: a larger STEP")
    return start + step * np.arange(count)


def _link_model(args: argparse.Namespace) -> LinkModel:
    """GYS and finite-key defaults, overridden by the --config link, overridden by explicit flags."""
    values = GYS | PROTOCOL | FINITE_KEY
    if args.config is not None or args.link is not None:
        if args.config is None or args.link is None:
            raise _Usage("--config" if args.config is None else "--link", "--config and --link go together")
        try:
            driver = load_link(args.config, args.link).driver
        except ConfigError as exc:
            raise _Usage("--config", str(exc)) from None
        except LookupError as exc:
            raise _Usage("--link", str(exc)) from None
        if driver.type != "simulated-bb84":
            raise _Usage("--link", f"{args.link!r} is a {driver.type} link; plan models decoy-state BB84 links")
        values.update({name: getattr(driver, name) for name in values})
    values.update({name: getattr(args, name) for name in values if getattr(args, name) is not None})
    return LinkModel(**values, optimize_mu=args.optimize_mu)


def _check(link: LinkModel, bounds: list[str], plot: Path | None) -> list[str]:
    """Every problem with the parameters as ``FLAG: reason`` (NaN fails every check)."""
    rules = [
        ("--attenuation-db-per-km", 0 <= link.attenuation_db_per_km < math.inf, "must be ≥ 0 dB/km"),
        ("--insertion-loss-db", 0 <= link.insertion_loss_db < math.inf, "must be ≥ 0 dB"),
        ("--detector-efficiency", 0 < link.detector_efficiency <= 1, "must be in (0, 1]"),
        ("--dark-count-probability", 0 <= link.dark_count_probability < 1, "must be in [0, 1)"),
        ("--misalignment-error", 0 <= link.misalignment_error <= 0.5, "must be in [0, 0.5]"),
        ("--ec-efficiency", 1 <= link.ec_efficiency < math.inf, "must be ≥ 1 (no code beats the Shannon limit)"),
        ("--nu", 0 < link.nu < math.inf, "must be > 0"),
        ("--mu", link.nu < link.mu < math.inf, f"must be greater than --nu ({link.nu:g})"),
        ("--clock-rate-hz", 0 < link.clock_rate_hz < math.inf, "must be > 0"),
        ("--block-size", 1 <= link.block_size < math.inf, "must be ≥ 1 bit"),
        ("--epsilon-sec", 0 < link.epsilon_sec < 1, "must be in (0, 1)"),
        ("--epsilon-cor", 0 < link.epsilon_cor < 1, "must be in (0, 1)"),
        *((flag, 0 < getattr(link, flag[2:].replace("-", "_")) <= 1, "must be in (0, 1]")
          for flag in ("--p-signal", "--p-decoy", "--p-vacuum")),
        ("--p-vacuum", math.isclose(link.p_signal + link.p_decoy + link.p_vacuum, 1.0, rel_tol=1e-5, abs_tol=1e-8),
         f"--p-signal + --p-decoy + --p-vacuum must be 1, not {link.p_signal + link.p_decoy + link.p_vacuum:g}"),
        ("--basis-bias", 0 < link.basis_bias < 1, "must be in (0, 1)"),
    ]
    if plot is not None:
        try:
            figure = extras.require("matplotlib.figure", "plot")
        except extras.MissingExtra as exc:
            return [f"--plot: {exc}"]
        formats = figure.Figure().canvas.get_supported_filetypes()
        rules += [
            ("--plot", plot.parent.is_dir(), f"directory {plot.parent} does not exist"),
            ("--plot", plot.suffix[1:].lower() in formats, f"unknown image type {plot.suffix!r}; try .png"),
        ]
    return [f"{flag}: {reason}" for flag, ok, reason in rules if not ok]


def run(args: argparse.Namespace) -> int:
    """Handler of ``qtelemetry plan``: validate, compute, print, plot; 2 on bad input."""
    bounds = list(dict.fromkeys(sum(args.decoy or [["finite"]], [])))
    try:
        link = _link_model(args)
        distances = _parse_distances(args.distances)
    except _Usage as exc:
        return _fail([str(exc)])
    problems = _check(link, bounds, args.plot)
    if problems:
        return _fail(problems)
    if "finite" in bounds and not _has_key("finite", link) and _has_key("infinite", link):
        return _fail([f"--block-size: {link.block_size:g} bits is too small for any key with these parameters"])
    plans = [plan(bound, link, distances) for bound in bounds]
    print(FORMATTERS[args.format](plans, link.clock_rate_hz))
    if args.plot is not None:
        save_plot(plans, link, args.plot)
    return 0


def _fail(problems: list[str]) -> int:
    """Print each problem as ``error: FLAG: reason``; exit code for bad input."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_USAGE
