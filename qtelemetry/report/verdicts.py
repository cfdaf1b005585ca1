"""Verdicts of a pilot review: each target of the monitoring config's ``pilot`` section, met or not.

A target whose figure has no data is "no data", never met: a link that reported nothing has not
shown that it meets anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qtelemetry.monitoring.config import PilotTargets

WEEK_S = 7 * 86400.0


def _verdict(value: float, target: float, at_least: bool) -> str:
    if value is None or not np.isfinite(value):
        return "no data"
    return "met" if (value >= target if at_least else value <= target) else "not met"


def pages_per_link(notes: pd.DataFrame) -> pd.Series:
    """Pages (notifications bringing a new critical alert, after grouping and inhibition) per link
    among their new alerts; a page about several links counts for each."""
    links = notes.loc[notes["kind"].eq("new") & notes["page"].astype(bool), "links"].str.split(",").explode()
    return links[links.astype(bool)].value_counts()


def verdicts(links: pd.DataFrame, network: dict, notes: pd.DataFrame, targets: PilotTargets,
             period_s: float) -> pd.DataFrame:
    """One row per (scope, target): the figure, the target and the verdict. Pages are what people
    received (``notifications``), not alerts fired."""
    pages = pages_per_link(notes)
    total = int((notes["kind"].eq("new") & notes["page"].astype(bool)).sum())
    rows = []
    scopes = [network, *links.to_dict("records")]
    for row in scopes:
        link = row["link"]
        network_scope = link == "(network)"
        n_links = max(1, len(links)) if network_scope else 1
        paged = float(total if network_scope else pages.get(link, 0))
        checks = [
            ("availability", row["availability"], targets.availability, True),
            ("key supplied / requested", row["key_supply_ratio"], targets.key_supply_ratio, True),
            # no outage: nothing to restore, the target holds
            ("mean time to restore", row["mttr_s"] if row["outages"] else 0.0, targets.mttr_seconds, False),
            ("pages per link and week", paged / n_links / (period_s / WEEK_S), targets.pages_per_week, False),
        ]
        if not network_scope:
            checks += [("median key rate / plan", row["key_rate_vs_plan"], targets.key_rate_vs_plan_ratio, True),
                       ("QBER p95 (Z)", row["qber_p95"], targets.qber_p95, False)]
        for name, value, target, at_least in checks:
            if name == "key supplied / requested" and not np.isfinite(row["key_requested_bits"]):
                continue  # a link nobody draws key from (e.g. heralded entanglement) has no supply target
            if name in ("median key rate / plan", "QBER p95 (Z)") and not np.isfinite(value):
                continue  # links without key or QBER (entanglement memories)
            rows.append({"scope": link, "target": name, "value": value,
                         "objective": (">= " if at_least else "<= ") + (
                             f"{target / 3600:g} h" if name == "mean time to restore" else f"{target:g}"),
                         "verdict": _verdict(value, target, at_least)})
    return pd.DataFrame(rows, columns=["scope", "target", "value", "objective", "verdict"])
