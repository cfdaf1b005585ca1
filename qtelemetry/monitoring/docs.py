"""The documentation's generated tables (metrics, alerts, recording columns), rendered from the
catalogue, the rules and the recording format so they cannot drift.

    python -m qtelemetry.monitoring.docs docs/*.md   # rewrite the tables in place
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from qtelemetry.monitoring.catalogue import METRICS
from qtelemetry.monitoring.config import DEFAULT
from qtelemetry.monitoring.rules import build
from qtelemetry.monitoring.runbooks import alert_table
from qtelemetry.drivers.formats.recording import columns_markdown


def metrics_markdown() -> str:
    rows = ["| metric | type | unit | labels | meaning |", "|---|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels)
        rows.append(f"| `{m.sample_name}` | {m.type} | {m.unit or '-'} | {labels or '-'} | {m.help} |")
    return "\n".join(rows)


def alerts_markdown() -> str:
    return "\n".join(alert_table(build(DEFAULT).alerts, "runbooks.md"))  # the page next to docs/alerts.md


#: marker name -> generator of the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
TABLES = {"metrics": metrics_markdown, "alerts": alerts_markdown, "recording": columns_markdown}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_tables(text: str) -> str:
    for name, render in TABLES.items():
        begin, end = markers(name)
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: f"{begin}\n{render()}\n{end}", text)
    return text


if __name__ == "__main__":
    for path in map(Path, sys.argv[1:]):
        path.write_text(replace_tables(path.read_text()))
