"""Build the pilot report: query, compute, judge, draw, write HTML and CSV."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from qtelemetry.configfile import read_text, load_yaml
from qtelemetry.monitoring.config import MonitoringConfig, duration_seconds
from qtelemetry.report import demands, figures, html, incidents, nodata, notifications, summary, tables
from qtelemetry.report.prometheus import HttpConfig, Prometheus, redacted_url
from qtelemetry.report.verdicts import verdicts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportRequest:
    prometheus: str
    http: HttpConfig
    start: float
    end: float
    step: float
    links: list[str]
    monitoring: MonitoringConfig
    rules: Path | None
    alerts_source: str
    out: Path
    title: str
    timeout_s: float | None = None  #: deadline of the whole report (each query has ``http.timeout_s``)
    alertmanager_config: Path | None = None  #: an Alertmanager config file to replay
    alertmanager_url: str | None = None  #: or a live Alertmanager whose config to read


def alert_rules(request: ReportRequest) -> list[incidents.Rule]:
    """The rules file given, or the rules the generator makes from the monitoring config."""
    if request.rules is not None:
        return incidents.parse_rules(load_yaml(read_text(request.rules), str(request.rules)) or {})
    from qtelemetry.monitoring import rules

    document = rules.rules_document(rules.build(request.monitoring), request.monitoring)
    return incidents.parse_rules(yaml.safe_load(yaml.safe_dump(document)))


def routing(request: ReportRequest) -> notifications.AlertmanagerConfig:
    """The Alertmanager config to replay: a live one's, a file, or the routing qtelemetry recommends
    with the inhibit rules generated from the monitoring config."""
    if request.alertmanager_url:
        return notifications.from_api(request.alertmanager_url)
    if request.alertmanager_config is not None:
        return notifications.load(read_text(request.alertmanager_config), str(request.alertmanager_config))
    from qtelemetry.monitoring import alertmanager, causes, rules

    inhibit = causes.inhibit_rules(rules.build(request.monitoring), request.monitoring)
    return notifications.parse_config(alertmanager.recommended(inhibit, request.monitoring),
                                      "the recommended Alertmanager routing (qtelemetry.monitoring.alertmanager)")


def _iso(seconds: float) -> str:
    if not np.isfinite(seconds):
        return ""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_times(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """A copy with Unix-time columns as RFC 3339 strings (CSV for people and spreadsheets)."""
    out = frame.copy()
    for column in columns:
        out[column] = out[column].map(_iso)
    return out


def build_report(request: ReportRequest) -> Path:
    """Query Prometheus for the period and write ``report.html`` and the CSV tables to ``request.out``;
    ``nodata.NoData`` (report written) if no link has data in the period."""
    am = routing(request)  # a bad Alertmanager config fails before any query
    deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
    with Prometheus(request.prometheus, request.http, deadline) as prom:
        return _build(request, prom, am)


def _meta(request: ReportRequest) -> dict[str, str]:
    """The page's title and header fields."""
    d = html.fmt_duration
    return {"title": html.html.escape(request.title),
            "period": f"{_iso(request.start)} – {_iso(request.end)} ({d(request.end - request.start)})",
            "prometheus": html.html.escape(redacted_url(request.prometheus)), "step": d(request.step)}


def _build(request: ReportRequest, prom: Prometheus, am: notifications.AlertmanagerConfig) -> Path:
    monitoring = request.monitoring
    objective = monitoring.slos[0].objective if monitoring.slos else 0.999
    slo_period_s = duration_seconds(monitoring.slos[0].period if monitoring.slos else "30d")
    log.info("reading the period's series", extra={"start": _iso(request.start), "end": _iso(request.end),
                                                    "step_s": request.step})
    series = tables.fetch(prom, monitoring.selector, request.start, request.end, request.step, request.links)
    if not series.links:
        meta = _meta(request)
        reasons = nodata.diagnose(prom, monitoring.selector, request.start, request.end, request.links,
                                  tables.missing(series), meta["period"])
        path = nodata.write(request.out, html.page(**meta, incident_source="—", plain="", cards="", strip="",
                                                   missing="", verdicts=nodata.section(reasons), sections=""))
        raise nodata.NoData(path, reasons)
    rules = alert_rules(request)
    found = incidents.collect(prom, rules, request.start, request.end, request.step, request.alerts_source)
    incident_table = found.table
    if request.links:
        incident_table = incident_table[incident_table["link"].isin(request.links)].reset_index(drop=True)
    links = tables.link_table(series, objective, slo_period_s)
    network = tables.network_row(links, objective, slo_period_s) if not links.empty else {}
    daily = tables.daily_key(series)
    outage_list = tables.outages(series)
    outage_list["cause"] = summary.outage_causes(outage_list, incident_table)
    by_alert = incidents.summarise(incident_table)
    notes = notifications.replay(incident_table, am, request.end)
    period_s = request.end - request.start
    verdict_table = verdicts(links, network, notes, monitoring.pilot, period_s) if network else pd.DataFrame()
    plain = summary.sentences(network, links, outage_list, incident_table, notes, request.step) if network else []
    relayed = demands.fetch(prom, monitoring.selector, request.start, request.end, request.step)
    demand_table = demands.demand_table(relayed, found.table)
    plain += demands.sentences(demand_table, outage_list, relayed.link_sites)

    out = request.out
    out.mkdir(parents=True, exist_ok=True)
    table = pd.concat([pd.DataFrame([network]), links], ignore_index=True) if network else links
    table.to_csv(out / "links.csv", index=False)
    daily.to_csv(out / "key_per_day.csv", index=False)
    _with_times(outage_list, "start", "end").to_csv(out / "outages.csv", index=False)
    _with_times(incident_table.drop(columns=incidents.ALERT_LABELS), "firing_at", "resolved_at").to_csv(
        out / "incidents.csv", index=False)
    by_alert.to_csv(out / "incidents_by_alert.csv", index=False)
    _with_times(notes, "time").to_csv(out / "notifications.csv", index=False)
    verdict_table.to_csv(out / "verdicts.csv", index=False)
    if not demand_table.empty:
        demand_table.to_csv(out / "demands.csv", index=False)

    log.info("drawing figures", extra={"links": len(series.links)})
    page = render(request, series, table, network, daily, outage_list, incident_table, by_alert, verdict_table,
                  found, Received(notes, am.source), plain, demand_table)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# --- HTML -------------------------------------------------------------------------------------

def _verdict_class(value: str) -> str:
    return {"met": "met", "not met": "notmet", "no data": "nodata"}.get(value, "")


def _value(row: dict) -> str:
    value, target = row["value"], row["target"]
    if "time to restore" in target:
        return html.fmt_duration(value) if value else "no outage"
    if target in ("availability", "key supplied / requested"):
        return html.fmt_ratio(value, 3)
    if "QBER" in target:
        return html.fmt_ratio(value)
    return html.fmt_number(value)


def _verdict_matrix(table: pd.DataFrame) -> str:
    """Scopes as rows, targets as columns, each cell value + verdict, coloured."""
    if table.empty:
        return '<p class="note">no links with data in the period</p>'
    targets = list(dict.fromkeys(table["target"]))
    head = "<th>scope</th>" + "".join(f"<th>{html.html.escape(t)}<br><small>{html.html.escape(o)}</small></th>"
                                      for t, o in table.groupby("target", sort=False)["objective"].first().items())
    rows = []
    for scope, part in table.groupby("scope", sort=False):
        cells = {r["target"]: r for r in part.to_dict("records")}
        tds = []
        for target in targets:
            r = cells.get(target)
            if r is None:
                tds.append("<td></td>")
                continue
            tds.append(f'<td class="{_verdict_class(r["verdict"])}">{html.html.escape(_value(r))}<br>'
                       f'<small>{r["verdict"]}</small></td>')
        rows.append(f"<tr><td>{html.html.escape(scope)}</td>{''.join(tds)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


@dataclass(frozen=True)
class Received:
    """The notifications people received, and the Alertmanager config they were replayed through."""

    notes: pd.DataFrame
    source: str


def render(request: ReportRequest, series: tables.Series, summary: pd.DataFrame, network: dict,
           daily: pd.DataFrame, outage_list: pd.DataFrame, incident_table: pd.DataFrame, by_alert: pd.DataFrame,
           verdict_table: pd.DataFrame, found: incidents.Incidents, received: Received, plain: list[str],
           demand_table: pd.DataFrame | None = None) -> str:
    thresholds = request.monitoring.thresholds
    f, d, b, r, n = html.fmt_number, html.fmt_duration, html.fmt_bits, html.fmt_ratio, str
    notes = received.notes
    pages = int((notes["kind"].eq("new") & notes["page"].astype(bool)).sum())
    cards = "".join([
        html.card(b(network.get("key_delivered_bits", np.nan)), "key delivered"),
        html.card(r(network.get("key_supply_ratio", np.nan), 3), "of the key requested"),
        html.card(r(network.get("availability", np.nan), 2), "network availability"),
        html.card(n(network.get("outages", 0)), "outages"),
        html.card(d(network.get("mttr_s", np.nan)), "mean time to restore"),
        html.card(n(pages), "pages (after grouping and inhibition)"),
        html.card(n(len(incident_table)), "alerts fired"),
    ]) if network else ""
    missing = [f"{link}: no data for {d(row['no_data_s'])}" for row in summary.to_dict("records")
               for link in [row["link"]] if link != "(network)" and row["no_data_s"] > 0]
    missing += [f"alert {name} not evaluated: {why}" for name, why in found.not_evaluated]
    missing_html = ('<h2>Missing data</h2><ul class="note">' + "".join(f"<li>{html.html.escape(m)}</li>" for m in missing)
                    + "</ul>") if missing else ""

    links_only = summary[summary["link"] != "(network)"]
    key_cols = {"link": ("link", n), "key_requested_bits": ("requested", b), "key_delivered_bits": ("delivered", b),
                "key_generated_bits": ("generated", b), "key_supply_ratio": ("delivered / requested", lambda v: r(v, 3)),
                "error_budget_bits": ("error budget", b), "unmet_bits": ("unmet", b),
                "error_budget_spent": ("of the budget", html.fmt_multiple),
                "slo_budgets_spent": ("SLO-period budgets", html.fmt_multiple),
                "unmet_demand_s": ("demand unmet for", d), "key_store_empty_s": ("key store empty for", d)}
    avail_cols = {"link": ("link", n), "availability": ("availability", lambda v: r(v, 3)), "up_s": ("available", d),
                  "down_s": ("down", d), "no_key_s": ("up, no key", d), "no_data_s": ("no data", d),
                  "outages": ("outages", n), "outage_s_total": ("outage time", d), "outage_s_max": ("longest", d),
                  "mttr_s": ("MTTR", since_outage), "mtbf_s": ("MTBF", since_outage)}
    perf_cols = {"link": ("link", n), "key_rate_p5_bps": ("key rate p5", f), "key_rate_median_bps": ("median", f),
                 "key_rate_p95_bps": ("p95 bit/s", f), "plan_key_rate_bps": ("plan bit/s", f),
                 "key_rate_vs_plan": ("median / plan", lambda v: r(v, 0)),
                 "plob_bound_median_bps": ("PLOB bound bit/s", f), "key_rate_vs_plob": ("median / PLOB", lambda v: r(v)),
                 "qber_p5": ("QBER p5", r), "qber_median": ("median", r), "qber_p95": ("p95", r)}
    loss_cols = {"link": ("link", n), "loss_p5_db": ("loss p5 dB", f), "loss_median_db": ("median", f),
                 "loss_p95_db": ("p95", f), "loss_budget_db": ("budget dB", f), "no_signal_s": ("no signal for", d),
                 "loss_trend_db_per_month": ("trend dB/month", f)}
    ent = links_only[links_only["protocol"].isin(["bbm92-spdc", "heralded-entanglement"])]
    ent_cols = {"link": ("link", n), "chsh_median": ("CHSH S median", f),
                "fidelity_lower_bound_median": ("fidelity lower bound median", f),
                "coincidence_rate_median_per_s": ("coincidences/s median", f),
                "heralded_fidelity_median": ("heralded fidelity median", f),
                "pair_rate_median_per_s": ("heralded pairs/s median", f)}
    incident_cols = {"alertname": ("alert", n), "severity": ("severity", n), "link": ("link", n),
                     "labels": ("labels", n), "firing_at": ("fired", html_time), "resolved_at": ("resolved", html_time),
                     "firing_s": ("time to resolve", d)}
    grouped_cols = {"alertname": ("alert", n), "severity": ("severity", n), "link": ("link", n),
                    "incidents": ("incidents", n), "firing_s_total": ("firing in total", d),
                    "resolve_s_median": ("median time to resolve", d), "resolve_s_max": ("longest", d),
                    "unresolved": ("still firing at the end", n)}
    outage_cols = {"link": ("link", n), "start": ("from", html_time), "end": ("to", html_time),
                   "length_s": ("length", d), "kind": ("kind", n), "cause": ("cause (alert)", n)}
    received_cols = {"receiver": ("receiver", n), "notifications": ("notifications", n), "pages": ("pages", n),
                     "other new": ("other new", n), "repeat": ("repeats", n), "resolved": ("resolved", n)}
    note_cols = {"time": ("sent", html_time), "receiver": ("receiver", n), "group": ("group", n),
                 "new_alerts": ("new alerts", n), "links": ("links", n), "firing": ("firing in the group", n)}
    objective = request.monitoring.slos[0].objective if request.monitoring.slos else 0.999
    slo_period = request.monitoring.slos[0].period if request.monitoring.slos else "30d"

    sections = [
        html.section("Key supply", "key",
                     html.table(summary, key_cols),
                     '<p class="note">Key delivered to applications against what they requested (counters '
                     'qkd_key_delivered_bits_total / qkd_key_requested_bits_total). Error budget: the key-supply '
                     f'SLO allows {html.fmt_ratio(1 - objective, 2)} of the key requested over {slo_period} to go '
                     f'unmet; prorated to this period, that share of what was requested in it. "Of the budget": '
                     f'unmet / that budget. "SLO-period budgets": how many whole {slo_period} budgets the unmet key '
                     'is, at this period\'s demand. "Demand unmet": steps where applications got less than they '
                     'asked for and fell back to classical or post-quantum key exchange.</p>',
                     html.figure(figures.daily_key(daily), "key per day")),
        html.section("Availability", "availability",
                     html.table(summary, avail_cols),
                     '<p class="note">MTTR: mean outage length. MTBF: available time / number of outages. An outage '
                     'still open at the end of the period counts with its length so far.</p>',
                     "<h3>Outages</h3>", html.table(outage_list, outage_cols)),
        html.section("Link performance against the plan", "performance",
                     html.table(links_only[links_only["key_rate_median_bps"].notna()], perf_cols),
                     html.table(links_only[links_only["loss_median_db"].notna()], loss_cols),
                     '<p class="note">Distributions over the period\'s steps (p5, median, p95). Plan: the link\'s '
                     'modelled key rate (qkd_expected_secret_key_rate_bits_per_second); PLOB: the repeaterless bound '
                     '-log2(1-eta) per pulse for the measured loss (Pirandola et al., Nat. Commun. 8, 15043 (2017)). '
                     'Loss trend: least-squares slope of the finite loss values in dB per month (fibre ageing, a new '
                     'splice); steps without signal are counted apart.</p>',
                     html.figure(figures.key_rate(series), "key rate vs plan"),
                     html.figure(figures.qber(series, thresholds), "QBER"),
                     html.figure(figures.key_store(series), "key store")),
    ]
    if not ent.empty:
        sections.append(html.section("Entanglement links", "entanglement", html.table(ent, ent_cols)))
    if demand_table is not None and not demand_table.empty:
        demand_cols = {"demand": ("demand", n), "src": ("from", n), "dst": ("to", n),
                       "requested_bits": ("requested", b), "delivered_bits": ("delivered", b),
                       "supply_ratio": ("delivered / requested", lambda v: r(v, 3)), "unmet_bits": ("unmet", b),
                       "unmet_s": ("short for", d), "reroutes": ("reroutes", n),
                       "time_to_reroute_s": ("time to reroute", d), "bridged_bits": ("stored key bridging", b),
                       "alerts": ("alerts fired", n)}
        sections.append(html.section(
            "Network demands", "demands", html.table(demand_table, demand_cols),
            '<p class="note">Key relayed over trusted nodes by the simulated key manager (counters '
            'qnet_demand_*_total). Short for: steps where the demand got less than it asked for. Time to reroute: '
            'how long its route had a hop down before the relay moved it (whole windows: the relay acts once per '
            'cycle), averaged over the failovers. Stored key bridging: key delivered over a hop that made none, '
            'spent from that hop\'s store.</p>'))
    sections.append(html.section(
        "What people received", "notifications",
        '<p class="note">The alerts below replayed through Alertmanager\'s routing, grouping and inhibition '
        f'({html.html.escape(received.source)}): what each receiver was sent. A page brings a new critical alert; '
        '"other new": a new warning (a ticket); repeats: the same alerts again after repeat_interval; resolved: '
        'the all-clear. One incident should be one page.</p>',
        html.table(notifications.by_receiver(notes), received_cols), "<h3>Pages</h3>",
        html.table(notes[notes["kind"].eq("new") & notes["page"].astype(bool)], note_cols)))
    sections.append(html.section(
        "Incidents", "incidents",
        f'<p class="note">Source: {html.html.escape(found.source)}. Time to resolve: from firing to resolution. '
        'Every alert that fired, whether Alertmanager muted it or not.</p>',
        html.table(by_alert, grouped_cols), "<h3>Every alert that fired</h3>", html.table(incident_table, incident_cols)))
    return html.page(**_meta(request), incident_source=html.html.escape(found.source), cards=cards,
                     plain="".join(f"{html.html.escape(line)} " for line in plain).strip(),
                     strip=html.figure(figures.availability_strip(series), "availability strip"),
                     verdicts=_verdict_matrix(verdict_table), missing=missing_html, sections="".join(sections))


def since_outage(value: float) -> str:
    """MTTR and MTBF: undefined without an outage, which is not missing data."""
    return html.fmt_duration(value) if value is not None and np.isfinite(value) else "no outage"


def html_time(value: float) -> str:
    return _iso(value).replace("T", " ").replace("Z", "") if value is not None and np.isfinite(value) else "—"
