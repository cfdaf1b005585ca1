"""The README's metric table, rendered from the catalogue so the two cannot drift.

    python -m qtelemetry.monitoring.docs README.md   # rewrite the table in place
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from qtelemetry.monitoring.catalogue import METRICS

BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"


def metrics_markdown() -> str:
    rows = ["| metric | type | unit | labels | meaning |", "|---|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels)
        rows.append(f"| `{m.sample_name}` | {m.type} | {m.unit or '-'} | {labels or '-'} | {m.help} |")
    return "\n".join(rows)


def replace_table(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{BEGIN}\n{metrics_markdown()}\n{END}", text)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(replace_table(path.read_text()))
