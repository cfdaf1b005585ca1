"""The report's per-demand section: what the simulated key relay delivered to each network demand.

From the relay's counters (``qnet_demand_*_total``, on the report's time grid, differenced step by
step like the links' counters): key delivered against requested, the time the demand was short
(steps where it got less than it asked for), reroutes, the time to reroute (how long the route
had a hop down before the reroute that ended it: whole windows, as the relay acts once per
cycle), the stored key spent bridging the gap, and the alerts about the demand that fired. Then
one sentence per demand in business terms, naming the failure that hurt it: a site when every
one of its links was out over the same steps, else the links.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qtelemetry.report import html
from qtelemetry.report.incidents import ALERT_LABELS, runs
from qtelemetry.report.prometheus import Prometheus
from qtelemetry.report.tables import Series, increments, selected

QUERIES = {
    "requested": "sum by (demand) (qnet_demand_requested_bits_total{sel})",
    "delivered": "sum by (demand) (qnet_demand_delivered_bits_total{sel})",
    "reroutes": "sum by (demand) (qnet_demand_reroutes_total{sel})",
    "route_down": "sum by (demand) (qnet_demand_route_down_seconds_total{sel})",
    "bridged": "sum by (demand) (qnet_demand_bridged_bits_total{sel})",
}
COLUMNS = ["demand", "src", "dst", "requested_bits", "delivered_bits", "supply_ratio", "unmet_bits", "unmet_s",
           "reroutes", "time_to_reroute_s", "bridged_bits", "alerts"]


@dataclass(frozen=True)
class Demands:
    """The relay's series per demand (a ``Series`` keyed by demand), each demand's ends, each link's sites."""

    series: Series
    ends: dict[str, tuple[str, str]]
    link_sites: dict[str, tuple[str, str]]


def fetch(prom: Prometheus, selector: str, start: float, end: float, step: float) -> Demands:
    data, times = {}, None
    for name, template in QUERIES.items():
        matrix = prom.range(selected(template, selector), start, end, step, name)
        times = matrix.times
        data[name] = matrix.by("demand")
    need = prom.range(selected("max by (demand, src, dst) (qnet_demand_bits_per_second{sel})", selector),
                      start, end, step, "qnet_demand_bits_per_second")
    info = prom.range(selected("max by (link, site_a, site_b) (qlink_info{sel})", selector), start, end, step, "qlink_info")
    ends = {x["demand"]: (x.get("src", ""), x.get("dst", "")) for x in need.labels if "demand" in x}
    sites = {x["link"]: (x.get("site_a", ""), x.get("site_b", "")) for x in info.labels if "link" in x}
    demands = {d: "" for d in data["requested"]}
    return Demands(Series(times, step, data, demands), ends, sites)


def demand_table(demands: Demands, incident_table: pd.DataFrame) -> pd.DataFrame:
    """One row per relayed demand (see the module's docstring)."""
    series, rows = demands.series, []
    for demand in series.links:
        requested, delivered = increments(series, "requested", demand), increments(series, "delivered", demand)
        down, rerouted = increments(series, "route_down", demand), increments(series, "reroutes", demand)
        short = requested - delivered > 1e-9 * np.maximum(requested, 1.0)
        starts, stops = runs(np.nan_to_num(down) > 0)
        failovers = [np.nansum(down[a:b]) for a, b in zip(starts.tolist(), stops.tolist()) if np.nansum(rerouted[a:b]) > 0]
        fired = [r["alertname"] for r in incident_table.to_dict("records") if r[ALERT_LABELS].get("demand") == demand]
        req, dlv = float(np.nansum(requested)), float(np.nansum(delivered))
        rows.append({"demand": demand, "src": demands.ends.get(demand, ("", ""))[0],
                     "dst": demands.ends.get(demand, ("", ""))[1], "requested_bits": req, "delivered_bits": dlv,
                     "supply_ratio": dlv / req if req > 0 else np.nan, "unmet_bits": req - dlv,
                     "unmet_s": float(short.sum() * series.step), "reroutes": int(np.nansum(rerouted)),
                     "time_to_reroute_s": float(np.mean(failovers)) if failovers else np.nan,
                     "bridged_bits": float(np.nansum(increments(series, "bridged", demand))),
                     "alerts": ", ".join(sorted(set(fired)))})
    return pd.DataFrame(rows, columns=COLUMNS)


def failures(outage_list: pd.DataFrame, link_sites: dict[str, tuple[str, str]]) -> list[tuple[str, float, float, float]]:
    """The period's failures as (what, start, end, length): outages of the same steps grouped; a
    group holding every link of a site is that site lost."""
    out = []
    for (start, length), group in outage_list.groupby(["start", "length_s"], sort=True):
        links = set(group["link"])
        lost = [site for site in sorted({s for link in links for s in link_sites.get(link, ())})
                if {link for link, ends in link_sites.items() if site in ends} <= links]
        what = (f"losing site {', '.join(lost)}" if lost else
                f"the outage of link{'s' if len(links) > 1 else ''} {', '.join(sorted(links))}")
        out.append((what, float(start), float(start) + float(length), float(length)))
    return out


def sentences(table: pd.DataFrame, outage_list: pd.DataFrame, link_sites: dict[str, tuple[str, str]]) -> list[str]:
    """One sentence per demand: the failures during the period and what they cost it."""
    what = failures(outage_list, link_sites)
    cause = "; ".join(f"{w} for {html.fmt_duration(length)}" for w, _, _, length in what)
    lines = []
    for row in table.to_dict("records"):
        d, cost = row["demand"], html.fmt_bits(row["unmet_bits"])
        moves = (f", rerouted {row['reroutes']} time{'s' if row['reroutes'] != 1 else ''}"
                 + (f" (time to reroute {html.fmt_duration(row['time_to_reroute_s'])})"
                    if np.isfinite(row["time_to_reroute_s"]) else "") if row["reroutes"] else "")
        bridged = f"; {html.fmt_bits(row['bridged_bits'])} of stored key bridged the gap" if row["bridged_bits"] > 0 else ""
        if row["unmet_s"] > 0:
            head = f"{cause[0].upper() + cause[1:]} left demand {d}" if cause else f"Demand {d} was left"
            lines.append(f"{head} short for {html.fmt_duration(row['unmet_s'])} and cost {cost}{moves}{bridged}.")
        elif cause:
            lines.append(f"Demand {d} got all its key through {cause}{moves}{bridged}.")
        else:
            lines.append(f"Demand {d} got all its key ({html.fmt_bits(row['delivered_bits'])}).")
    return lines
