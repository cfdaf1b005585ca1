"""The report as one self-contained HTML file: tables formatted for people, figures as data URIs."""

from __future__ import annotations

import base64
import html
import math
from string import Template

import pandas as pd

NO_DATA = "no data"

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 0 24px 48px; color: #1d1d1f; font-size: 14px; }
h1 { font-size: 24px; margin: 24px 0 4px; } h2 { font-size: 19px; margin-top: 36px; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin-bottom: 12px; } .note { color: #555; font-size: 12.5px; max-width: 900px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 12.5px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f4f4f6; }
td:first-child, th:first-child { text-align: left; }
.met { background: #d8f3dc; } .notmet { background: #ffd6d6; font-weight: 600; } .nodata { background: #eee; color: #777; }
.headline { display: flex; gap: 14px; flex-wrap: wrap; margin: 10px 0 6px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; } .card span { color: #555; font-size: 12px; }
img { max-width: 100%; } #summary { break-after: page; }
.plain { font-size: 16px; line-height: 1.45; max-width: 900px; margin: 10px 0 14px; }
</style></head><body>
<section id="summary">
<h1>$title</h1>
<div class="meta">$period &middot; Prometheus $prometheus &middot; step $step &middot; incidents from $incident_source</div>
<p class="plain">$plain</p>
<div class="headline">$cards</div>
<h2>Verdicts against the pilot's targets</h2>
$verdicts
<p class="note">Targets come from the monitoring config's <code>pilot</code> section. A figure without data is
"no data", never met. Availability: share of the time with data that a link was up <em>and</em> distilling key
(or heralding pairs). Pages: notifications that brought a new critical alert, after Alertmanager's grouping and
inhibition (section "What people received").</p>
$strip
$missing
</section>
$sections
</body></html>
""")


def fmt_duration(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return NO_DATA
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def fmt_bits(bits: float) -> str:
    if bits is None or not math.isfinite(bits):
        return NO_DATA
    for unit, scale in (("Tbit", 1e12), ("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if abs(bits) >= scale:
            return f"{bits / scale:.3g} {unit}"
    return f"{bits:.0f} bit"


def fmt_ratio(value: float, digits: int = 2) -> str:
    return NO_DATA if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f} %"


def fmt_multiple(value: float) -> str:
    """A share of a budget: a percentage up to 100 %, a multiple beyond ("372 ×", not "37213 %")."""
    if value is None or not math.isfinite(value):
        return NO_DATA
    return f"{100 * value:.0f} %" if value <= 1 else f"{value:.3g} ×"


def fmt_number(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "+Inf" if value == math.inf else NO_DATA
    return f"{value:.4g}"


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table(frame: pd.DataFrame, formats: dict[str, object], classes: dict[str, str] | None = None) -> str:
    """An HTML table of ``frame``'s columns in ``formats`` (column -> (title, formatter)); cells of
    column ``c`` get the CSS class ``classes[c](value)`` if given."""
    if frame.empty:
        return '<p class="note">none</p>'
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in formats.values())
    body = []
    for record in frame.to_dict("records"):
        cells = []
        for column, (_, fmt) in formats.items():
            value = record.get(column)
            text = fmt(value) if callable(fmt) else str(value)
            css = classes.get(column, lambda v: "")(value) if classes else ""
            css = css or ("nodata" if text == NO_DATA else "")
            cells.append(f'<td class="{css}">{html.escape(text)}</td>' if css else f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def section(title: str, anchor: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>' + "".join(parts) + "</section>"


def figure(png: bytes | None, alt: str) -> str:
    if png is None:
        return f'<p class="note">{html.escape(alt)}: no data.</p>'
    return f'<img alt="{html.escape(alt)}" src="{png_uri(png)}">'


def card(value: str, label: str) -> str:
    return f'<div class="card"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def page(**fields: str) -> str:
    return PAGE.substitute(**fields)
