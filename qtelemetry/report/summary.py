"""The report's first paragraph, in plain words for the pilot's sponsor.

Every sentence is read off the report's own tables (key supply, outages, incidents, the
notifications after Alertmanager): what was delivered, what went wrong and why, what people
were woken for. An outage's cause is the highest cause of the alert hierarchy that fired on the
link during it (``monitoring.causes``), said as people would say it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qtelemetry.monitoring.causes import LEVELS
from qtelemetry.report.html import fmt_bits, fmt_duration, fmt_ratio

#: Causes in words, for outages.
WORDS = {
    "QTelemetryExporterDown": "the exporter was down",
    "QTelemetryEstimationStalled": "the exporter stopped estimating",
    "QLinkSiteDown": "its whole site was down",
    "QLinkDown": "the link was unreachable",
    "QKDKmeUnavailable": "its key manager did not answer",
    "QKDLinkInactive": "its node stopped the link",
    "QKDNoSignal": "a fibre cut (no light reached the receiver)",
    "QKDTamperSuspected": "a suspected attack",
    "QKDKeyBufferExhaustionImminent": "its key store ran dry",
}
#: Causes from the top of the hierarchy down: the first one firing during an outage explains it.
RANK = [cause for level in LEVELS for cause in level.causes]
TAMPER = "QKDTamperSuspected"


def outage_causes(outages: pd.DataFrame, incidents: pd.DataFrame) -> list[str]:
    """Per outage, the alert of the hierarchy that explains it ("" if none fired on the link then)."""
    out = []
    for row in outages.to_dict("records"):
        end = row["end"] if np.isfinite(row["end"]) else np.inf
        during = incidents[(incidents["link"] == row["link"]) & (incidents["firing_at"] <= end)
                           & ~(incidents["resolved_at"] < row["start"])]
        out.append(next((c for c in RANK if c in set(during["alertname"])), ""))
    return out


def _count(n: int, noun: str) -> str:
    words = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    return f"{words.get(n, str(n))} {noun}{'' if n == 1 else 's'}"


def sentences(network: dict, links: pd.DataFrame, outages: pd.DataFrame, incidents: pd.DataFrame,
              notes: pd.DataFrame, step: float) -> list[str]:
    """The summary, sentence by sentence."""
    out = []
    if np.isfinite(network.get("key_supply_ratio", np.nan)):
        out.append(f"Key was delivered for {fmt_ratio(network['key_supply_ratio'], 1)} of the "
                   f"{fmt_bits(network['key_requested_bits'])} applications requested.")
    if outages.empty:
        out.append("No link was out.")
    else:
        longest = outages.loc[outages["length_s"].idxmax()]
        why = [f"{WORDS.get(c, c) if c else 'cause unknown'} on {link}"
               for link, c in zip(outages["link"], outages["cause"])]
        out.append(f"{_count(len(outages), 'outage').capitalize()}, the longest {fmt_duration(longest['length_s'])}: "
                   + "; ".join(why) + ".")
    attacks = outages[outages["cause"] == TAMPER]
    alarms = incidents[incidents["alertname"] == TAMPER]
    for link in sorted(set(alarms["link"])):
        first = alarms[alarms["link"] == link]["firing_at"].min()
        onset = attacks[attacks["link"] == link]["start"]
        delay = (f" {fmt_duration(max(first - onset.min(), 0.0))} after it began (at the report's "
                 f"{fmt_duration(step)} resolution)") if not onset.empty else ""
        out.append(f"The tamper detectors of {link} raised the alarm{delay}; security was paged.")
    dry = links[(links["key_store_empty_s"] > 0) & ~links["link"].isin(outages["link"])]
    for row in dry.to_dict("records"):
        out.append(f"{row['link']} had no outage, but applications were refused key on it for "
                   f"{fmt_duration(row['unmet_demand_s'])}: they asked for more than it makes and its key store ran dry.")
    new = notes[notes["kind"] == "new"]
    pages, tickets = (new[new["page"] == flag].groupby("receiver").size() for flag in (True, False))
    said = [f"{_count(int(pages.sum()), 'page')} ({_each(pages)})" if len(pages) else "no page"]
    if len(tickets):
        said.append(f"{_count(int(tickets.sum()), 'other notification')} ({_each(tickets)})")
    out.append(f"After Alertmanager's grouping and inhibition, the {len(incidents)} alerts that fired made "
               + " and ".join(said) + ".")
    return out


def _each(counts: pd.Series) -> str:
    return ", ".join(f"{receiver} {n}" for receiver, n in counts.items())
