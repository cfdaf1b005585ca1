"""Every generated dashboard type-checks against Grafana's own published schema.

Grafana publishes its dashboard model as TypeScript types in the ``@grafana/schema`` npm package:
the dashboard, rows, template variables, and each panel plugin's options and field config
(``raw/composable/<plugin>/panelcfg``). The test installs the package (pinned to the Grafana
release the Compose stack runs) and TypeScript with npm (``typecheck.py``), writes each dashboard
as typed object literals (excess-property checks catch stray fields, missing required ones and
wrong enum values) and runs ``tsc --noEmit``. JSON strings are accepted where the types say
enum (``Json<T>`` maps an enum to its values); targets are checked as Grafana's ``DataQuery``
(the Prometheus query fields live in another package).

A hostile copy with the faults the schema must catch (a stray variable field, a stale table
option, a table without ``cellOptions``, an unknown panel option) is checked in the same run
and must fail exactly there.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typecheck import npm_toolchain, tsc_errors

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PACKAGES = {"@grafana/schema": "12.3.3", "typescript": "5.9.3"}  # Grafana 12.3, as deploy/compose runs

#: panel type -> (namespace, module under raw/composable, whether it has a FieldConfig type)
PANEL_TYPES = {
    "timeseries": ("TimeSeries", "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.js", True),
    "table": ("Table", "table/panelcfg/x/TablePanelCfg_types.gen.js", True),
    "stat": ("Stat", "stat/panelcfg/x/StatPanelCfg_types.gen.js", False),
    "nodeGraph": ("NodeGraph", "nodegraph/panelcfg/x/NodeGraphPanelCfg_types.gen.js", False),
    "geomap": ("Geomap", "geomap/panelcfg/x/GeomapPanelCfg_types.gen.js", False),
}
PRELUDE = [
    "import type { Dashboard, Panel, RowPanel, DataQuery } from '@grafana/schema';",
    *(f"import type * as {ns} from '@grafana/schema/dist/types/raw/composable/{module}';"
      for ns, module, _ in PANEL_TYPES.values()),
    # JSON has strings where the types have string enums: accept each enum's values.
    "type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T"
    " : T extends Array<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;",
    "type Target = DataQuery & Record<string, unknown>;",
    "type Typed<O, F = Record<string, unknown>> = Omit<Panel<O, F>, 'options' | 'targets'> & { options: O; targets: Target[] };",
]


def typescript(dashboards: dict[str, dict]) -> tuple[str, list[str]]:
    """A TypeScript module typing each dashboard and each of its panels; and, per line, what it holds."""
    lines, where = list(PRELUDE), ["prelude"] * len(PRELUDE)
    for name, board in dashboards.items():
        board = copy.deepcopy(board)
        panels = board.pop("panels")
        lines.append(f"export const d{len(lines)}: Json<Dashboard> = {json.dumps(board)};")
        where.append(f"{name} (dashboard, variables)")
        for panel in panels:
            if panel["type"] == "row":
                kind = "Json<RowPanel>"
            else:
                ns, _, field_config = PANEL_TYPES[panel["type"]]
                kind = f"Json<Typed<{ns}.Options{f', {ns}.FieldConfig' if field_config else ''}>>"
            lines.append(f"export const d{len(lines)}: {kind} = {json.dumps(panel)};")
            where.append(f"{name} / panel {panel['title']!r}")
    return "\n".join(lines) + "\n", where


def hostile(board: dict) -> dict:
    """The fleet dashboard with four faults Grafana's schema rejects."""
    board = copy.deepcopy(board)
    board["templating"]["list"][1]["auto_count"] = 30
    table = next(p for p in board["panels"] if p["type"] == "table")
    table["options"]["footer"] = {"show": False}
    del table["fieldConfig"]["defaults"]["custom"]["cellOptions"]
    stat = next(p for p in board["panels"] if p["type"] == "stat")
    stat["options"]["sparkline"] = True
    return board


def test_dashboards_match_grafanas_published_schema(request: pytest.FixtureRequest) -> None:
    assert DASHBOARDS
    work = npm_toolchain(request.config.cache.mkdir("grafana-schema"), PACKAGES, "Grafana's schema (@grafana/schema)")
    boards = {p.name: json.loads(p.read_text()) for p in DASHBOARDS}
    sources = {"generated": typescript(boards), "hostile": typescript({"hostile": hostile(boards["qtelemetry-fleet.json"])})}
    errors = tsc_errors(work, sources)
    assert not errors["generated"], "\n".join(errors["generated"])
    caught = "\n".join(errors["hostile"])
    for fault in ("'\"auto_count\"' does not exist", "'\"footer\"' does not exist",
                  "Property 'cellOptions' is missing", "'\"sparkline\"' does not exist"):
        assert fault in caught, f"the schema check missed {fault!r}:\n{caught}"
