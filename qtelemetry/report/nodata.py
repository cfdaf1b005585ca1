"""A period in which Prometheus has none of the exporter's series: a report that says so and why.

The usual causes are a fresh Prometheus asked for a week it never scraped, a selector (job) that
is not the one Prometheus gives the exporter's series, and a mistyped ``--link``. Each leaves a
trace that a few metadata queries find: ``qlink_up`` under another job, in another time range, or
under other link names. The report then holds that diagnosis instead of tables of nothing; the
CSV tables of an earlier report in the same directory are removed, so that none of their numbers
passes for this period's.
"""

from __future__ import annotations

import html
from pathlib import Path

from qtelemetry.report.prometheus import Prometheus

#: The CSV tables a report writes (build.build_report).
TABLES = ("links.csv", "key_per_day.csv", "outages.csv", "incidents.csv", "incidents_by_alert.csv", "verdicts.csv")
#: Names listed at most in a hint.
SHOWN = 10


class NoData(Exception):
    """No link has data in the period; ``path`` is the report that says so, ``reasons`` why."""

    def __init__(self, path: Path, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.path, self.reasons = path, reasons


def _names(values: list[str]) -> str:
    shown = ", ".join(values[:SHOWN])
    return shown + (f" and {len(values) - SHOWN} more" if len(values) > SHOWN else "")


def diagnose(prom: Prometheus, selector: str, start: float, end: float, links: list[str],
             missing: list[str], period: str) -> list[str]:
    """What the period lacks, and what Prometheus has instead: sentences an operator can act on."""
    where = "{" + selector + "}" if selector else "any selector"
    reasons = [f"no series of {_names(missing)} matched {where} in {period}"]
    ours = f"qlink_up{{{selector}}}"
    if links:
        found = prom.label_values("link", ours, start, end)
        if found:
            return reasons + [f"--link {_names(links)}: no such link in the period; links with data: {_names(found)}"]
    jobs = prom.label_values("job", "qlink_up", start, end)
    if jobs and selector:
        return reasons + [f"the selector {selector} matches none of the qlink_up series in the period, whose jobs are "
                          f"{_names(jobs)}: check the monitoring config's selector (--config)"]
    if not jobs and prom.label_values("job", "qlink_up"):
        return reasons + ["Prometheus has qlink_up outside the period only: check --start and --end (and the "
                          "retention of its TSDB)"]
    if not jobs:
        return reasons + ["Prometheus has no qlink_up series at all: check that it scrapes the exporter "
                          "(its targets page, Status > Targets) and that you asked the right Prometheus"]
    return reasons


def section(reasons: list[str]) -> str:
    """The report's summary when there is nothing to summarise: what is missing and what to check."""
    items = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons)
    return f'<h2>No data in the period</h2><ul class="note">{items}</ul>'


def write(out: Path, page: str) -> Path:
    """``page`` as ``out/report.html``; the CSV tables of an earlier report in ``out`` removed."""
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        (out / name).unlink(missing_ok=True)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
