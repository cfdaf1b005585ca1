"""The report's numbers: per link and for the network, from the period's series on one time grid.

Each point of the grid stands for the step that ends there (a sample covers the window before
it), so the point at the start of the period only anchors the counters' first difference.
A link is *available* at a step when ``qlink_up`` is 1 and it produces what it exists for: a
positive secret key rate (QKD links) or heralded pairs (memory links); a link with neither metric
counts as available while up. A step without ``qlink_up`` is *no data*: it is left out of every
ratio and shown as such, never counted as up or down. Counters are differenced step by step with
resets taken as restarts from zero (as ``increase()`` does, without its extrapolation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qtelemetry.monitoring import promql
from qtelemetry.report.incidents import runs
from qtelemetry.report.prometheus import Matrix, Prometheus

#: Seconds in a month for loss trends: the mean Gregorian month (365.2425 d / 12).
MONTH_S = 365.2425 / 12 * 86400
DAY_S = 86400.0

#: name in the report -> PromQL (``{sel}`` is the deployment's selector), one series per link.
QUERIES = {
    "up": "max by (link) (qlink_up{sel})",
    "key_rate": "max by (link) (qkd_secret_key_rate_bits_per_second{sel})",
    "pair_rate": "max by (link) (qent_heralded_pairs_per_second{sel})",
    "requested": "sum by (link) (qkd_key_requested_bits_total{sel})",
    "delivered": "sum by (link) (qkd_key_delivered_bits_total{sel})",
    "generated": "sum by (link) (qkd_key_generated_bits_total{sel})",
    "buffer": "max by (link) (qkd_key_buffer_bits{sel})",
    "capacity": "max by (link) (qkd_key_buffer_capacity_bits{sel})",
    "qber": 'max by (link) (qkd_qber_ratio{basis="Z", sel})',
    "qber_upper": 'max by (link) (qkd_qber_upper_bound_ratio{basis="Z", sel})',
    "loss": "max by (link) (qkd_channel_loss_db{sel})",
    "loss_budget": "max by (link) (qkd_channel_loss_budget_db{sel})",
    "plan_rate": "max by (link) (qkd_expected_secret_key_rate_bits_per_second{sel})",
    "plob": "max by (link) (qkd_repeaterless_bound_bits_per_second{sel})",
    "chsh": "max by (link) (qent_chsh_value{sel})",
    "fidelity": "max by (link) (qent_fidelity_lower_bound_ratio{sel})",
    "heralded_fidelity": "max by (link) (qent_heralded_fidelity_ratio{sel})",
    "coincidence_rate": "max by (link) (qent_coincidence_rate_per_second{sel})",
}


@dataclass(frozen=True)
class Series:
    """The period's data: per query name, per link, values on ``times``; plus each link's protocol."""

    times: np.ndarray
    step: float
    data: dict[str, dict[str, np.ndarray]]
    protocols: dict[str, str]

    @property
    def links(self) -> list[str]:
        return sorted(self.protocols)

    @property
    def ends(self) -> np.ndarray:
        """End times of the period's steps (the grid without its start)."""
        return self.times[1:]

    def get(self, name: str, link: str) -> np.ndarray:
        """Values of ``name`` for ``link`` at the ends of the steps; all NaN (missing) if Prometheus has none."""
        return self.grid(name, link)[1:]

    def grid(self, name: str, link: str) -> np.ndarray:
        """Values of ``name`` for ``link`` on the whole grid, start included."""
        return self.data.get(name, {}).get(link, np.full(self.times.size, np.nan))

    def has(self, name: str, link: str) -> bool:
        return link in self.data.get(name, {})


def selected(template: str, sel: str) -> str:
    """A query template with its ``{sel}`` (or ``, sel}``) filled with the matchers ``sel``."""
    return template.replace("{sel}", "{" + sel + "}").replace(", sel}", (", " + sel if sel else "") + "}")


def fetch(prom: Prometheus, selector: str, start: float, end: float, step: float,
          links: list[str] | None = None) -> Series:
    """Every query of ``QUERIES`` over the period, restricted to ``links`` if given."""
    matchers = [selector] if selector else []
    if links:  # link names are letters, digits and . _ - (config): only the dot is a regex character
        matchers.append('link=~"' + "|".join(link.replace(".", "\\\\.") for link in links) + '"')
    sel = ", ".join(matchers)

    data: dict[str, dict[str, np.ndarray]] = {}
    times = None
    for name, template in QUERIES.items():
        matrix: Matrix = prom.range(selected(template, sel), start, end, step, name)
        times = matrix.times
        data[name] = matrix.by("link")
    info = prom.range(selected("max by (link, protocol) (qlink_info{sel})", sel), start, end, step, "qlink_info")
    protocols = {labels["link"]: labels.get("protocol", "") for labels in info.labels if "link" in labels}
    for link in data["up"]:  # a link without qlink_info still counts
        protocols.setdefault(link, "")
    return Series(times, step, data, protocols)


def missing(series: Series) -> list[str]:
    """The metrics of ``QUERIES`` of which the period has no series at all."""
    return [metric for name, template in QUERIES.items() if not series.data.get(name)
            for metric in sorted(promql.metric_names(template.replace("{sel}", "").replace(", sel}", "}")))]


def increments(series: Series, name: str, link: str) -> np.ndarray:
    """Increase of a counter over each step (NaN where either end is missing); a fall is a reset to 0."""
    counter = series.grid(name, link)
    delta = np.diff(counter)
    return np.where(delta < 0, counter[1:], delta)


def availability_states(series: Series, link: str) -> np.ndarray:
    """Per step: 0 no data, 1 available, 2 down, 3 up but producing nothing."""
    up = series.get("up", link)
    production = next((series.get(n, link) for n in ("key_rate", "pair_rate") if series.has(n, link)), None)
    producing = np.ones(up.size, bool) if production is None else np.nan_to_num(production, nan=0.0) > 0
    state = np.zeros(up.size, np.int8)
    state[up == 1] = np.where(producing[up == 1], 1, 3)
    state[up == 0] = 2
    return state


def _quantiles(values: np.ndarray) -> tuple[float, float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (np.nan, np.nan, np.nan)
    p5, p50, p95 = np.percentile(finite, [5, 50, 95])
    return float(p5), float(p50), float(p95)


def _total(values: np.ndarray) -> float:
    """Sum of the finite values; NaN (missing) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.sum()) if finite.size else np.nan


def error_budget(requested: float, delivered: float, objective: float, data_s: float,
                 slo_period_s: float) -> dict[str, float]:
    """The key-supply SLO's error budget prorated to the period: (1 - objective) of the key requested
    in it (the period's share of the SLO period's budget, by demand), how much of it the unmet key
    used, and how many whole SLO-period budgets that is (the period's demand held for a full SLO period)."""
    ratio = delivered / requested if requested > 0 else np.nan
    budget = (1 - objective) * requested if requested > 0 else np.nan
    spent = (1 - ratio) / (1 - objective) if np.isfinite(ratio) else np.nan
    return {"key_supply_ratio": ratio, "error_budget_bits": budget, "unmet_bits": requested - delivered,
            "error_budget_spent": spent,
            "slo_budgets_spent": spent * data_s / slo_period_s if data_s > 0 else np.nan}


def link_table(series: Series, objective: float, slo_period_s: float) -> pd.DataFrame:
    """One row per link: availability, outages, key supply, distributions, trends."""
    rows = []
    step, hours = series.step, series.ends
    for link in series.links:
        state = availability_states(series, link)
        with_data = state > 0
        unavailable = (state == 2) | (state == 3)
        starts, ends = runs(unavailable)
        lengths = (ends - starts) * step
        up_s = float((state == 1).sum() * step)
        requested = increments(series, "requested", link)
        delivered = increments(series, "delivered", link)
        unmet = requested - delivered
        buffer = series.get("buffer", link)
        req, dlv = _total(requested), _total(delivered)
        data_s = float(with_data.sum() * step)
        qber = _quantiles(series.get("qber", link))
        rate = _quantiles(series.get("key_rate", link))
        loss_values = series.get("loss", link)
        loss = _quantiles(loss_values)
        finite_loss = np.isfinite(loss_values)
        trend = (np.polyfit((hours[finite_loss] - hours[0]) / MONTH_S, loss_values[finite_loss], 1)[0]
                 if finite_loss.sum() >= 2 else np.nan)
        plan = _quantiles(series.get("plan_rate", link))[1]
        plob = _quantiles(series.get("plob", link))[1]
        rows.append({
            "link": link, "protocol": series.protocols.get(link, ""),
            "data_s": data_s, "no_data_s": float((~with_data).sum() * step),
            "up_s": up_s, "down_s": float((state == 2).sum() * step), "no_key_s": float((state == 3).sum() * step),
            "availability": up_s / (with_data.sum() * step) if with_data.any() else np.nan,
            "outages": int(starts.size), "outage_s_total": float(lengths.sum()),
            "outage_s_max": float(lengths.max()) if lengths.size else np.nan,
            "mttr_s": float(lengths.mean()) if lengths.size else np.nan,
            "mtbf_s": up_s / starts.size if starts.size else np.nan,
            "key_requested_bits": req, "key_delivered_bits": dlv, "key_generated_bits": _total(increments(series, "generated", link)),
            **error_budget(req, dlv, objective, data_s, slo_period_s),
            "unmet_demand_s": float((unmet > 0).sum() * step) if series.has("requested", link) else np.nan,
            "key_store_empty_s": float((buffer <= 0).sum() * step) if series.has("buffer", link) else np.nan,
            "qber_p5": qber[0], "qber_median": qber[1], "qber_p95": qber[2],
            "key_rate_p5_bps": rate[0], "key_rate_median_bps": rate[1], "key_rate_p95_bps": rate[2],
            "plan_key_rate_bps": plan, "key_rate_vs_plan": rate[1] / plan if plan > 0 else np.nan,
            "plob_bound_median_bps": plob, "key_rate_vs_plob": rate[1] / plob if plob > 0 else np.nan,
            "loss_p5_db": loss[0], "loss_median_db": loss[1], "loss_p95_db": loss[2],
            "no_signal_s": float(np.isposinf(loss_values).sum() * step),
            "loss_budget_db": _quantiles(series.get("loss_budget", link))[1],
            "loss_trend_db_per_month": float(trend),
            "chsh_median": _quantiles(series.get("chsh", link))[1],
            "fidelity_lower_bound_median": _quantiles(series.get("fidelity", link))[1],
            "heralded_fidelity_median": _quantiles(series.get("heralded_fidelity", link))[1],
            "pair_rate_median_per_s": _quantiles(series.get("pair_rate", link))[1],
            "coincidence_rate_median_per_s": _quantiles(series.get("coincidence_rate", link))[1],
        })
    return pd.DataFrame(rows)


def network_row(links: pd.DataFrame, objective: float, slo_period_s: float) -> dict[str, float]:
    """The whole network: link-time weighted availability, all outages, all key."""
    data_s, up_s = links["data_s"].sum(), links["up_s"].sum()
    outages = links["outages"].sum()
    req, dlv = links["key_requested_bits"].sum(min_count=1), links["key_delivered_bits"].sum(min_count=1)
    return {
        "link": "(network)", "protocol": "", "data_s": data_s, "no_data_s": links["no_data_s"].sum(),
        "up_s": up_s, "down_s": links["down_s"].sum(), "no_key_s": links["no_key_s"].sum(),
        "availability": up_s / data_s if data_s > 0 else np.nan, "outages": int(outages),
        "outage_s_total": links["outage_s_total"].sum(), "outage_s_max": links["outage_s_max"].max(),
        "mttr_s": links["outage_s_total"].sum() / outages if outages else np.nan,
        "mtbf_s": up_s / outages if outages else np.nan,
        "key_requested_bits": req, "key_delivered_bits": dlv,
        "key_generated_bits": links["key_generated_bits"].sum(min_count=1),
        **error_budget(req, dlv, objective, links["data_s"].max(), slo_period_s),
        "unmet_demand_s": links["unmet_demand_s"].sum(min_count=1),
        "key_store_empty_s": links["key_store_empty_s"].sum(min_count=1),
    }


def daily_key(series: Series) -> pd.DataFrame:
    """Key requested and delivered per link and UTC day, in bits."""
    # a step belongs to the day it started in
    day = pd.to_datetime(series.ends - series.step, unit="s", utc=True).floor("D")
    frames = []
    for link in series.links:
        if not series.has("requested", link):
            continue
        frame = pd.DataFrame({"day": day, "requested_bits": increments(series, "requested", link),
                              "delivered_bits": increments(series, "delivered", link)})
        daily = frame.groupby("day").sum(min_count=1).reset_index()
        daily.insert(1, "link", link)
        frames.append(daily)
    if not frames:
        return pd.DataFrame(columns=["day", "link", "requested_bits", "delivered_bits", "supply_ratio"])
    out = pd.concat(frames, ignore_index=True)
    out["supply_ratio"] = out["delivered_bits"] / out["requested_bits"].where(out["requested_bits"] > 0)
    out["day"] = out["day"].dt.strftime("%Y-%m-%d")
    return out


def outages(series: Series) -> pd.DataFrame:
    """Every outage: link, start, end, length and whether the link was down or up without key."""
    rows = []
    for link in series.links:
        state = availability_states(series, link)
        starts, ends = runs((state == 2) | (state == 3))
        for s, e in zip(starts.tolist(), ends.tolist()):
            rows.append({"link": link, "start": series.ends[s] - series.step,
                         "end": series.ends[e - 1] if e < state.size else np.nan,
                         "length_s": (e - s) * series.step,
                         "kind": "down" if (state[s:e] == 2).any() else "no key"})
    return pd.DataFrame(rows, columns=["link", "start", "end", "length_s", "kind"])
