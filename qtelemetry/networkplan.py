"""qtelemetry plan-network: where to put the trusted nodes and which fibre spans to light, before buying.

Reads a plan (candidate sites and spans, the simulated-bb84 link they would carry, key demands,
``survive``), prices each span at the key rate the exporter would plan for a simulated link of that
length (``qkd_expected_secret_key_rate_bits_per_second``), finds the cheapest spans meeting every
demand (``qtelemetry.estimation.placement``: a MILP, N-1 with ``survive: 1``) and writes into
``--out``: plan.json, spans.csv, demands.csv, what-if.csv (every single failure against every
demand, by the network view's engine), network.yaml (a ``qtelemetry run`` config of the chosen
network) and plan.html (a figure and the tables). Exit 0: planned; 1: infeasible (plan.json says
which demand fails and the best it can get; the rest is planned for that best); 2: bad input.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import yaml
from pydantic import Field

from qtelemetry import extras
from qtelemetry.configfile import read_text
from qtelemetry.configmodel import FieldError, StrictModel, check
from qtelemetry.drivers.simulated import MAX_BITS, MAX_LENGTH_KM, MAX_LOSS_DB
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config
from qtelemetry.errors import EXIT_CONFIG, ConfigError
from qtelemetry.estimation.graphs import components, igraph
from qtelemetry.estimation.network import NetworkAnalysis, Topology, analyse, max_flows, usable, widest_paths
from qtelemetry.networkconfig import DemandConfig, SiteConfig, relays_connect

if TYPE_CHECKING:  # the solver (SciPy's optimize) is imported when a plan is made, not by every command
    from qtelemetry.estimation.placement import Placement

log = logging.getLogger("qtelemetry")
EXIT_INFEASIBLE = 1
#: A capacity this much (relative) below the demand still meets it: the solver's feasibility tolerance.
MET = 1 - 1e-6


class PlanSite(SiteConfig):
    trusted_node_cost: float = Field(0.0, ge=0.0, le=MAX_BITS, description="paid when a chosen span touches the site "
                                     "and it is the end of no demand")


class PlanSpan(StrictModel):
    sites: tuple[str, str] = Field(description="the two sites a candidate fibre span joins")
    length_km: float = Field(ge=0.0, le=MAX_LENGTH_KM, description="fibre length, km")
    cost: float = Field(ge=0.0, le=MAX_BITS, description="cost of lighting the span (any unit, the same for all)")
    attenuation_db_per_km: float | None = Field(None, ge=0.0, le=MAX_LOSS_DB, description="default: link's")
    insertion_loss_db: float | None = Field(None, ge=0.0, le=MAX_LOSS_DB, description="default: link's")

    @check
    def _two_sites(self) -> None:
        if self.sites[0] == self.sites[1]:
            raise FieldError("sites", f"a span joins two sites, not {self.sites[0]!r} to itself")


class SpanLink(SimulatedBB84Config):
    """The simulated-bb84 link every span would carry; each span gives its own length."""

    type: Literal["simulated-bb84"] = "simulated-bb84"
    fiber_length_km: float | None = Field(None, description="not here: each span's length_km")

    @check
    def _no_length(self) -> None:
        if self.fiber_length_km is not None:
            raise FieldError("fiber_length_km", "each span has its own length: spans[].length_km")


class NetworkPlanFile(StrictModel):
    sites: list[PlanSite] = Field(min_length=2)
    spans: list[PlanSpan] = Field(min_length=1, description="candidate fibre spans")
    link: SpanLink = Field(default_factory=SpanLink, description="keys of a simulated-bb84 driver, not fiber_length_km")
    demands: list[DemandConfig] = Field(min_length=1)
    survive: Literal[0, 1] = Field(0, description="1: every demand met after any single span or relay-site failure")

    @check
    def _unique(self) -> None:
        for what, items in (("sites", self.sites), ("demands", self.demands)):
            first: dict[str, int] = {}
            for i, item in enumerate(items):
                if item.name in first:
                    raise FieldError(f"{what}.{i}.name", f"duplicate {what[:-1]} {item.name!r} (also {what}[{first[item.name]}])")
                first[item.name] = i

    @check
    def _known_sites(self) -> None:
        names = {site.name for site in self.sites}
        for what, items, keys in (("spans", self.spans, ("sites",)), ("demands", self.demands, ("from", "to"))):
            for i, item in enumerate(items):
                for key in keys:
                    ends = item.sites if key == "sites" else [item.source if key == "from" else item.target]
                    for name in ends:
                        if name not in names:
                            raise FieldError(f"{what}.{i}.{key}", f"unknown site {name!r}: not in sites")

    @check
    def _connected(self) -> None:
        """Every site reachable over candidate spans, and every demand over trusted sites."""
        index = {site.name: i for i, site in enumerate(self.sites)}
        if any(name not in index for span in self.spans for name in span.sites) or any(
                name not in index for d in self.demands for name in (d.source, d.target)):
            return  # _known_sites says which
        ends = np.array([[index[a], index[b]] for a, b in (span.sites for span in self.spans)], np.intp)
        n = len(self.sites)
        label = components(n, ends)
        parts = int(label.max()) + 1
        if parts > 1:
            groups = [[s.name for s, g in zip(self.sites, label) if g == k][:5] for k in range(min(parts, 3))]
            raise FieldError("spans", f"the candidate spans leave the sites in {parts} separate parts, e.g. "
                             + " | ".join(", ".join(g) for g in groups) + ": no plan can join them")
        trusted = np.array([site.trusted for site in self.sites])
        pairs = np.array([[index[d.source], index[d.target]] for d in self.demands], np.intp).reshape(-1, 2)
        unreachable = np.flatnonzero(~relays_connect(ends, trusted, pairs))
        if unreachable.size:
            demand = self.demands[i := int(unreachable[0])]
            raise FieldError(f"demands.{i}", f"no chain of candidate spans joins {demand.source!r} and "
                             f"{demand.target!r} over trusted sites")


def load_plan(path: str | Path) -> NetworkPlanFile:
    from qtelemetry.config import validate_yaml

    return validate_yaml(NetworkPlanFile, read_text(path), str(path), config_dir=Path(path).absolute().parent)


# --- the plan ------------------------------------------------------------------------------------

def span_drivers(plan: NetworkPlanFile) -> list[dict]:
    """Each span's simulated-bb84 driver config: the plan's link keys, its length and losses."""
    common = {"type": "simulated-bb84", **plan.link.model_dump(mode="json", exclude_unset=True, exclude={"type", "fiber_length_km"})}
    return [{**common, "fiber_length_km": span.length_km,
             **span.model_dump(include={"attenuation_db_per_km", "insertion_loss_db"}, exclude_none=True)}
            for span in plan.spans]


def span_rates(drivers: list[dict]) -> np.ndarray:
    """Key rate of each span's link: what the exporter's qkd_expected_secret_key_rate_bits_per_second says."""
    return SimulatedBB84Config.expected_key_rate_bps([SimulatedBB84Config.model_validate(d) for d in drivers])


def span_names(plan: NetworkPlanFile) -> list[str]:
    """Link names of the spans: ``a-b`` (its first span's), else ``span-N`` (``span-N.K`` where a span
    already has that name): unique, so that network.yaml is a valid run config."""
    pairs = [f"{a}-{b}" for a, b in (span.sites for span in plan.spans)]
    first = {name: i for i, name in reversed(list(enumerate(pairs))) if len(name) <= 63}
    taken, names = set(first), []
    for i, name in enumerate(pairs):
        if first.get(name) != i:
            name = next(n for n in (f"span-{i}", *(f"span-{i}.{k}" for k in range(1, len(pairs) + 2))) if n not in taken)
            taken.add(name)
        names.append(name)
    return names


@dataclass(frozen=True)
class NetworkPlan:
    """Everything one plan-network run computed."""

    plan: NetworkPlanFile
    names: list[str]  #: (spans,) link names
    drivers: list[dict]  #: (spans,) driver configs
    rate_bps: np.ndarray  #: (spans,)
    placement: Placement
    unmet: np.ndarray  #: (demands,) bool: cannot be met even with every span lit
    best_bps: np.ndarray  #: (demands,) what every span lit gives (after the worst failure with survive: 1)
    topology: Topology  #: the chosen network
    analysis: NetworkAnalysis  #: the engine's view of it
    seconds: float

    @property
    def status(self) -> str:
        return "infeasible" if self.unmet.any() else self.placement.status

    @property
    def trusted_nodes(self) -> list[str]:
        """Sites the chosen spans relay through: touched, and the end of no demand."""
        ends = {name for d in self.plan.demands for name in (d.source, d.target)}
        touched = set(np.unique(self.topology.link_ends).tolist()) if len(self.topology.links) else set()
        return [s.name for i, s in enumerate(self.plan.sites) if i in touched and s.name not in ends]


def topology(plan: NetworkPlanFile, links: list[str], ends: np.ndarray) -> Topology:
    """The engine's view of ``links`` (with site index ``ends``) between the plan's sites and demands."""
    index = {site.name: i for i, site in enumerate(plan.sites)}
    coordinates = [(s.latitude, s.longitude) if s.latitude is not None else (np.nan, np.nan) for s in plan.sites]
    return Topology.build([s.name for s in plan.sites], [s.trusted for s in plan.sites], links, ends,
                          [d.name for d in plan.demands], [[index[d.source], index[d.target]] for d in plan.demands],
                          [d.bits_per_second for d in plan.demands], coordinates, [d.priority for d in plan.demands])


def survivable(top: Topology, rate: np.ndarray, survive: int) -> np.ndarray:
    """Each demand's capacity as ``survive`` counts it: max-flow, after the worst single failure for 1."""
    result = analyse(top, rate)
    return result.after_worst_failure_bps if survive else result.multipath_bps


def make_plan(plan: NetworkPlanFile, time_limit_s: float = 300.0, gap: float = 1e-4) -> NetworkPlan:
    """Price the spans, check what every span lit can do, place, and analyse the choice."""
    from qtelemetry.estimation.placement import Instance, place

    started = time.monotonic()
    names, drivers = span_names(plan), span_drivers(plan)
    rate = span_rates(drivers)
    index = {site.name: i for i, site in enumerate(plan.sites)}
    ends = np.array([[index[a], index[b]] for a, b in (s.sites for s in plan.spans)], np.intp)
    need = np.array([d.bits_per_second for d in plan.demands])
    best = survivable(topology(plan, names, ends), rate, plan.survive)
    unmet = best < need * MET
    goal = np.minimum(need, best)  # an infeasible demand is planned for the best it can get
    keep = goal > 0
    instance = Instance(len(plan.sites), ends, rate, np.array([s.cost for s in plan.spans]),
                        np.array([s.trusted_node_cost for s in plan.sites]), np.array([s.trusted for s in plan.sites]),
                        np.array([[index[d.source], index[d.target]] for d in plan.demands], np.intp)[keep], goal[keep],
                        plan.survive)
    placement = place(instance, time_limit_s, gap, lambda nodes, cuts, bound, cost: log.info(
        "placement: better network found", extra={"cost": round(cost, 6), "lower_bound": round(bound, 6), "nodes": nodes,
                                                  "cuts": cuts}))
    chosen = np.flatnonzero(placement.chosen)
    top = topology(plan, [names[i] for i in chosen], ends[chosen])
    return NetworkPlan(plan, names, drivers, rate, placement, unmet, best, top, analyse(top, rate[chosen]),
                       time.monotonic() - started)


# --- what if ---------------------------------------------------------------------------------------

WHAT_IF_COLUMNS = ("failure_kind", "failure", "demand", "bits_per_second", "single_path_bps", "multipath_bps",
                   "own_end", "single_point_of_failure")


def what_if(top: Topology, rate_bps: np.ndarray) -> list[dict]:
    """Every demand's single-path and multipath capacity with nothing failed, then after each single
    link failure and each site failure, by the network view's engine. A failure of a demand's own
    end leaves it nothing (``own_end``); a single point of failure is any other failure that leaves a
    demand met before it unmet."""
    rate = np.asarray(rate_bps, float)
    failures = [("none", "", np.zeros(len(rate), bool))]
    failures += [("span", name, np.arange(len(rate)) == i) for i, name in enumerate(top.links)]
    failures += [("site", top.sites[v], (top.link_ends == v).any(axis=1)) for v in np.unique(top.link_ends).tolist()]
    rows, before = [], None
    for kind, name, failed in failures:
        left = np.where(failed, 0.0, rate)
        single = widest_paths(top, top.edge_sums(left))[0]
        multipath = max_flows(top, left)
        if before is None:
            before = multipath >= top.demand_bps * MET
        own = (top.demand_ends == top.sites.index(name)).any(axis=1) if kind == "site" else np.zeros(len(top.demands), bool)
        lost = before & (multipath < top.demand_bps * MET) & ~own
        rows += [{"failure_kind": kind, "failure": name, "demand": demand, "bits_per_second": need,
                  "single_path_bps": float(s), "multipath_bps": float(m), "own_end": bool(o), "single_point_of_failure": bool(x)}
                 for demand, need, s, m, o, x in zip(top.demands, top.demand_bps.tolist(), single, multipath, own, lost)]
    return rows


def given_network(path: Path) -> tuple[Topology, np.ndarray]:
    """The topology and planned link rates (``qkd_expected_secret_key_rate_bits_per_second``; none: 0)
    of a ``qtelemetry run`` config with a network section; ConfigError if it has none."""
    from qtelemetry.config import load_config
    from qtelemetry.runtime.links import LinkTable

    table = LinkTable.build(load_config(path))
    if table.network is None:
        raise ConfigError(str(path), [("network", "no network section: --network needs the sites and demands")])
    return table.network, usable(table.expected_key_rate_bps)


def single_points_of_failure(rows: list[dict]) -> list[dict]:
    """The failures that would leave a met demand unmet, with those demands."""
    found: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["single_point_of_failure"]:
            found.setdefault((row["failure_kind"], row["failure"]), []).append(row["demand"])
    return [{"kind": kind, "name": name, "demands": demands} for (kind, name), demands in found.items()]


# --- outputs ---------------------------------------------------------------------------------------

def _number(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def plan_json(result: NetworkPlan, whatif: list[dict]) -> dict:
    """plan.json: the issue's shape first, then what else a reader needs."""
    p, chosen = result.placement, result.placement.chosen
    analysis = result.analysis
    return {
        "status": result.status, "gap": p.gap, "cost": p.cost, "trusted_nodes": result.trusted_nodes,
        "spans": [{"sites": list(span.sites), "length_km": span.length_km, "cost": span.cost,
                   "key_rate_bps": float(rate), "chosen": bool(c), "link": name}
                  for span, rate, c, name in zip(result.plan.spans, result.rate_bps, chosen, result.names)],
        "demands": [{"name": d.name, "capacity_bps": float(m), "capacity_after_worst_failure_bps": float(a),
                     "bits_per_second": d.bits_per_second, "met": bool(not u), "best_possible_bps": float(b),
                     "single_path_bps": float(s), "worst_failure": {"kind": "span" if w[0] == "link" else w[0], "name": w[1]},
                     "bottleneck": [result.topology.links[k] for k in cut.tolist()]}
                    for d, m, a, u, b, s, w, cut in zip(result.plan.demands, analysis.multipath_bps,
                                                        analysis.after_worst_failure_bps, result.unmet, result.best_bps,
                                                        analysis.single_path_bps, analysis.worst_failure, analysis.min_cut)],
        "survive": result.plan.survive, "lower_bound": p.lower_bound,
        "single_points_of_failure": single_points_of_failure(whatif),
        "solver": {"method": "SCIP branch-and-cut (PySCIPOpt), cut constraints added lazily", "nodes": p.nodes,
                   "cuts": p.cuts, "seconds": round(result.seconds, 3)},
    }


def network_yaml(result: NetworkPlan, source: str) -> str:
    """A ``qtelemetry run`` config: one simulated link per chosen span, and the network section."""
    plan, chosen = result.plan, np.flatnonzero(result.placement.chosen)
    used = set(result.topology.link_ends.ravel().tolist())
    sites = [s.model_dump(include={"name", "trusted", "latitude", "longitude"}, exclude_none=True)
             for i, s in enumerate(plan.sites) if i in used]
    names = {s["name"] for s in sites}
    demands = [d.model_dump(by_alias=True, exclude_none=True) for d in plan.demands
               if d.source in names and d.target in names]
    config = {
        "links": [{"name": result.names[i], "site_a": plan.spans[i].sites[0], "site_b": plan.spans[i].sites[1],
                   "driver": result.drivers[i]} for i in chosen],
        "network": {"sites": sites, "demands": demands, "routing": "multipath"},  # the plan's capacity is the max-flow
    }
    header = (f"# qtelemetry run config of the network `qtelemetry plan-network {source}` chose\n"
              f"# ({result.status}, cost {result.placement.cost:g}): run it with qtelemetry run --config network.yaml\n")
    return header + yaml.safe_dump(config, sort_keys=False, width=120)


def csv_text(rows: list[dict], columns: tuple[str, ...] | list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def tables(result: dict, whatif: list[dict]) -> dict[str, str]:
    """The CSV files: spans, demands, what-if."""
    spans = [{**s, "site_a": s["sites"][0], "site_b": s["sites"][1]} for s in result["spans"]]
    demands = [{**d, "worst_failure": f"{d['worst_failure']['kind']} {d['worst_failure']['name']}".strip(),
                "bottleneck": " ".join(d["bottleneck"])} for d in result["demands"]]
    return {
        "spans.csv": csv_text(spans, ("link", "site_a", "site_b", "length_km", "cost", "key_rate_bps", "chosen")),
        "demands.csv": csv_text(demands, ("name", "bits_per_second", "capacity_bps", "capacity_after_worst_failure_bps",
                                          "single_path_bps", "met", "best_possible_bps", "worst_failure", "bottleneck")),
        "what-if.csv": csv_text(whatif, WHAT_IF_COLUMNS),
    }


def positions(top: Topology) -> np.ndarray:
    """(sites, 2) x, y to draw at: longitude and latitude when every site has them, else a layout."""
    if not np.isnan(top.latitude).any():
        return np.column_stack([top.longitude, top.latitude])
    graph = igraph.Graph(n=len(top.sites), edges=top.link_ends.tolist())
    return np.array(graph.layout_kamada_kawai(seed=graph.layout_circle().coords).coords)


def figure(result: NetworkPlan, all_ends: np.ndarray, title: str):
    """The network: unused candidate spans dashed, chosen ones as wide as their key rate, each
    demand's bottleneck (its minimum cut in the chosen network) red; relay sites round, ends square."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    plan = result.plan
    everything = topology(plan, result.names, all_ends)
    xy = positions(everything)
    fig = Figure(figsize=(9, 7))
    ax = fig.subplots()
    chosen = result.placement.chosen
    rate = result.rate_bps
    top_rate = max(float(rate[chosen].max()) if chosen.any() else 1.0, 1.0)
    bottleneck: dict[int, list[str]] = {}
    chosen_index = np.flatnonzero(chosen)
    for demand, cut in zip(plan.demands, result.analysis.min_cut):
        for k in cut.tolist():
            bottleneck.setdefault(int(chosen_index[k]), []).append(demand.name)
    ax.add_collection(LineCollection(xy[all_ends[~chosen]], colors="0.75", linestyles="--", linewidths=0.8, zorder=1))
    for i, (a, b) in enumerate(all_ends.tolist()):
        (x0, y0), (x1, y1) = xy[a], xy[b]
        if not chosen[i]:
            continue
        color = "tab:red" if i in bottleneck else "tab:blue"
        ax.plot([x0, x1], [y0, y1], color=color, linewidth=1.5 + 5 * rate[i] / top_rate, zorder=2)
        label = f"{rate[i] / 1e6:.3g} Mb/s" if rate[i] >= 1e6 else f"{rate[i] / 1e3:.3g} kb/s"
        if i in bottleneck:
            label += "\nbottleneck: " + ", ".join(bottleneck[i][:3]) + ("…" if len(bottleneck[i]) > 3 else "")
        ax.annotate(label, ((x0 + x1) / 2, (y0 + y1) / 2), fontsize=7, ha="center", color=color, zorder=4,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    ends = {name for d in plan.demands for name in (d.source, d.target)}
    relays = set(result.trusted_nodes)
    for v, site in enumerate(plan.sites):
        kind = "end" if site.name in ends else "relay" if site.name in relays else "unused"
        ax.scatter(*xy[v], s=70, marker="s" if kind == "end" else "o", zorder=3,
                   color={"end": "black", "relay": "tab:green", "unused": "white"}[kind], edgecolors="black")
        ax.annotate(site.name, xy[v], textcoords="offset points", xytext=(5, 5), fontsize=8)
    handles = [ax.plot([], [], color=c, linestyle=s, linewidth=w)[0] for c, s, w in
               (("tab:blue", "-", 3), ("tab:red", "-", 3), ("0.75", "--", 1))]
    handles += [ax.scatter([], [], marker=m, color=c, edgecolors="black") for m, c in (("s", "black"), ("o", "tab:green"))]
    # beside the network: "best" searches every line and label for a free corner, minutes at 5,000 spans
    ax.legend(handles, ["chosen span (width: key rate)", "a demand's bottleneck (minimum cut)", "unused candidate",
                        "demand end", "trusted node"], fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title, fontsize=10, parse_math=False)  # a file name's "$" is not TeX
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def plan_html(result: dict, files: dict[str, str], png: bytes | None, title: str) -> str:
    """A page: the summary, the figure (inline), the tables."""
    def table(text: str) -> str:
        rows = list(csv.reader(io.StringIO(text)))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    image = (f'<img alt="the planned network" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
             if png is not None else f"<p>No figure: {html.escape(str(extras.MissingExtra('matplotlib', 'plot')))}</p>")
    summary = (f"status {result['status']}, cost {result['cost']:g}, gap {result['gap']:.2%}, trusted nodes: "
               f"{', '.join(result['trusted_nodes']) or 'none'}")
    sections = "".join(f"<h2>{html.escape(name)}</h2>{table(text)}" for name, text in files.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>{image}{sections}</body></html>\n")


#: Every file plan-network writes: an older plan's are removed first, so none can pass for this one's.
OUTPUTS = ("plan.json", "spans.csv", "demands.csv", "what-if.csv", "what-if-network.csv", "network.yaml", "plan.html",
           "plan.png")


def write_outputs(result: NetworkPlan, out: Path, source: str, given: tuple[Topology, np.ndarray] | None = None) -> dict:
    """Every output file into ``out``, plan.json last (a run stopped while writing leaves none);
    returns plan.json's content."""
    plan = result.plan
    index = {site.name: i for i, site in enumerate(plan.sites)}
    all_ends = np.array([[index[a], index[b]] for a, b in (s.sites for s in plan.spans)], np.intp)
    whatif = what_if(result.topology, result.rate_bps[result.placement.chosen])
    content = plan_json(result, whatif)
    files = tables(content, whatif)
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    (out / "network.yaml").write_text(network_yaml(result, source))
    title = f"qtelemetry plan-network {Path(source).name}: {content['status']}, cost {content['cost']:g}"
    png = None
    try:
        extras.require("matplotlib.figure", "plot")
    except extras.MissingExtra as exc:
        log.warning("plan.html without its figure", extra={"reason": str(exc)})
    else:
        buffer = io.BytesIO()
        figure(result, all_ends, title).savefig(buffer, format="png", dpi=110)
        png = buffer.getvalue()
        (out / "plan.png").write_bytes(png)
    (out / "plan.html").write_text(plan_html(content, files, png, title))
    if given is not None:
        (out / "what-if-network.csv").write_text(csv_text(what_if(*given), WHAT_IF_COLUMNS))
    (out / "plan.json").write_text(json.dumps(content, indent=2) + "\n")
    return content


# --- command line ----------------------------------------------------------------------------------

def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "plan-network", help="cheapest fibre spans and trusted nodes for key demands",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="network plan (YAML: sites, spans, link, demands, survive)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the outputs")
    parser.add_argument("--network", type=Path, metavar="FILE",
                        help="also the what-if table (what-if-network.csv) of a given network: a qtelemetry run config "
                             "with a network section, e.g. an edited network.yaml, its links at their planned rates")
    parser.add_argument("--time-limit", type=float, default=300.0, metavar="SECONDS",
                        help="stop the search after this long with the best plan found and its gap (default 300)")
    parser.add_argument("--gap", type=float, default=1e-4, metavar="RATIO",
                        help="relative optimality gap at which a plan counts as optimal (default 1e-4)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qtelemetry plan-network``."""
    problems = [f"error: {problem}" for wrong, problem in (
        (not args.time_limit > 0, "--time-limit: must be > 0 seconds"), (not 0 <= args.gap < 1, "--gap: must be in [0, 1)"),
        (args.out.exists() and not args.out.is_dir(), f"--out: {args.out} is not a directory")) if wrong]
    plan, given = None, None
    if not problems:
        try:
            plan = load_plan(args.file)
            given = None if args.network is None else given_network(args.network)
        except ConfigError as exc:
            problems.append(str(exc))
    if plan is None or (args.network is not None and given is None):
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    try:
        extras.check_installed(("pyscipopt",), "plan-network")
    except extras.MissingExtra as exc:
        print(f"error: qtelemetry plan-network: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:  # before the search: a plan that cannot be written is not worth minutes of it
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _cannot_write(args.out, exc)
    result = make_plan(plan, args.time_limit, args.gap)
    try:
        content = write_outputs(result, args.out, args.file, given)
    except OSError as exc:
        return _cannot_write(args.out, exc)
    for d in content["demands"]:
        if not d["met"]:
            log.error("demand cannot be met", extra={"demand": d["name"], "bits_per_second": d["bits_per_second"],
                                                     "best_possible_bps": d["best_possible_bps"], "survive": plan.survive})
    log.info("network planned", extra={"status": content["status"], "cost": content["cost"], "gap": content["gap"],
                                       "spans": sum(s["chosen"] for s in content["spans"]),
                                       "trusted_nodes": len(content["trusted_nodes"]), "out": str(args.out)})
    return EXIT_INFEASIBLE if result.unmet.any() else 0


def _cannot_write(out: Path, exc: OSError) -> int:
    print(f"error: --out: {out}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_CONFIG
