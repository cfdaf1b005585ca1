"""The Network dashboard's map is a Grafana Geomap "network" layer of the exact shape Grafana reads.

No Grafana runs here, so the generated panel is checked against the shape read in Grafana's own
source (grafana/grafana, files and commits as cited below); that its queries give the layer the
frames it needs on a real Prometheus is checked in ``test_dashboard_queries.py``
(``test_the_map_gets_the_network_layers_frames``). Not checked: that Grafana renders it.

- ``public/app/plugins/panel/geomap/layers/data/networkLayer.tsx`` @ 6369ac25ff97afdbf4ca0b0782644a9959c8dad7:
  the layer type ``network`` (``NETWORK_LAYER_ID``); its config ``NetworkConfig`` = ``style``,
  ``showLegend``, ``edgeStyle``, ``arrow`` (0 | 1 | -1 | 2); nodes located through the layer's
  ``location`` (``getLocationMatchers``), their ids in a field named ``id``; edges ``source`` and
  ``target`` fields; the edges frame is the first with a ``source`` field (``getGraphFrame``,
  ``public/app/plugins/panel/nodeGraph/utils.ts`` @ 00db3572dc656c12785e7cba64d7cb9e65bfa827).
  The same file @ 02368cf270f39f86260d412c6ac99dd45d1fbcb7 (older Grafana) styles as edges the
  frame whose refId is ``edges``.
- ``public/app/plugins/panel/geomap/style/types.ts`` @ 0524cbafcfcf42e76480675784159fd31136e4d2:
  ``StyleConfig`` and its ``TextStyleConfig`` (keys, text alignments and baselines).
- ``public/app/features/geo/utils/location.ts`` @ 0524cbafcfcf42e76480675784159fd31136e4d2: in
  ``coords`` mode the latitude and longitude fields are found by name.
- The dimension configs (size, colour, text) are ``@grafana/schema`` types, which the SDK's
  ``models/common.py`` mirrors: a config survives its SDK model's round trip only without stray keys.
- ``packages/grafana-data/src/transformations/transformDataFrame.ts`` (a transformation's
  ``filter`` gives it only the frames it matches), ``.../matchers/refIdMatcher.ts`` (``byRefId``
  takes a /regex/), ``.../transformers/joinByField.ts`` (``JoinMode.inner``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grafana_foundation_sdk.models import common as cm
from grafana_frames import ref_id_matcher

from qtelemetry.monitoring.dashboards import iter_panels

BOARD = Path(__file__).resolve().parents[1] / "dashboards" / "qtelemetry-network.json"

NETWORK_CONFIG = {"style", "showLegend", "edgeStyle", "arrow"}
ARROWS = {0, 1, -1, 2}
STYLE_CONFIG = {"color", "opacity", "lineWidth", "size", "symbol", "symbolAlign", "text", "textConfig", "rotation"}
TEXT_STYLE = {"fontSize": (int, float), "offsetX": (int, float), "offsetY": (int, float),
              "textAlign": {"left", "center", "right"}, "textBaseline": {"top", "middle", "bottom"}}
DIMENSIONS = {"size": cm.ScaleDimensionConfig, "color": cm.ColorDimensionConfig, "text": cm.TextDimensionConfig}
#: what follows the data: a site's size (failure impact) and name; a link's width, colour and label
FOLLOWS = {"style": ("size", "text"), "edgeStyle": ("size", "color", "text")}


def geomap(board: dict) -> dict:
    [panel] = [p for p in iter_panels(board) if p["type"] == "geomap"]
    return panel


def shape_problems(panel: dict) -> list[str]:
    """What in a Geomap panel does not match the network layer's shape in Grafana's source."""
    problems = []
    layers = panel["options"]["layers"]
    if [layer["type"] for layer in layers] != ["network"]:
        return [f"layers {[layer['type'] for layer in layers]}: expected one 'network' layer"]
    [layer] = layers
    config = layer["config"]
    problems += [f"config.{k}: not a NetworkConfig key" for k in set(config) - NETWORK_CONFIG]
    if config.get("arrow", 0) not in ARROWS:
        problems.append(f"config.arrow {config['arrow']!r}: not one of {ARROWS}")
    for style in ("style", "edgeStyle"):
        given = config.get(style, {})
        problems += [f"config.{style}.{k}: not a StyleConfig key" for k in set(given) - STYLE_CONFIG]
        for key, model in DIMENSIONS.items():
            if key in given and model.from_json(given[key]).to_json() != given[key]:
                problems.append(f"config.{style}.{key} {given[key]}: not a {model.__name__}")
        for key, value in given.get("textConfig", {}).items():
            allowed = TEXT_STYLE.get(key)
            if allowed is None or (isinstance(allowed, set) and value not in allowed) or (
                    isinstance(allowed, tuple) and not isinstance(value, allowed)):
                problems.append(f"config.{style}.textConfig.{key} {value!r}: not a TextStyleConfig value")
        for key in FOLLOWS[style]:
            if not given.get(key, {}).get("field"):
                problems.append(f"config.{style}.{key}: no field (the style would not follow the data)")
    location = layer.get("location", {})
    if location.get("mode") != "coords" or not location.get("latitude") or not location.get("longitude"):
        problems.append(f"location {location}: expected coords mode with the latitude and longitude field names")
    refs = [t["refId"] for t in panel["targets"]]
    if "edges" not in refs or "nodes" not in refs:
        problems.append(f"refIds {refs}: the edges query's refId must be 'edges' (older Grafana), the nodes' 'nodes'")
    joins = [t for t in panel.get("transformations", []) if t["id"] == "joinByField"]
    if len(joins) != 1 or joins[0]["options"].get("mode") != "inner":
        problems.append("one joinByField in inner mode must bring the coordinates to the nodes frame")
    else:
        [join] = joins
        matches = ref_id_matcher(join.get("filter", {}).get("options", ""))
        joined = {r for r in refs if matches(type("F", (), {"ref_id": r})())}
        if "edges" in joined or "nodes" not in joined or len(joined) != len(refs) - 1:
            problems.append(f"the join's refId filter takes {sorted(joined)}: it must take every query but the edges")
    return problems


def test_the_map_is_a_network_layer_of_the_shape_grafana_reads():
    assert shape_problems(geomap(json.loads(BOARD.read_text()))) == []


@pytest.mark.parametrize("fault, expected", [
    (lambda p: p["options"]["layers"][0].update(type="markers"), "expected one 'network' layer"),
    (lambda p: p["options"]["layers"][0]["config"].update(edgeStyles={}), "config.edgeStyles: not a NetworkConfig key"),
    (lambda p: p["options"]["layers"][0]["config"].update(arrow=3), "config.arrow 3"),
    (lambda p: p["options"]["layers"][0]["config"]["edgeStyle"].update(width=2), "config.edgeStyle.width"),
    (lambda p: p["options"]["layers"][0]["config"]["edgeStyle"]["size"].update(field_name="x"), "not a ScaleDimensionConfig"),
    (lambda p: p["options"]["layers"][0]["config"]["style"]["textConfig"].update(textAlign="middle"), "textAlign 'middle'"),
    (lambda p: p["options"]["layers"][0]["config"]["edgeStyle"]["color"].pop("field"), "edgeStyle.color: no field"),
    (lambda p: p["options"]["layers"][0]["location"].update(mode="auto"), "expected coords mode"),
    (lambda p: p["targets"][1].update(refId="B"), "refIds"),
    (lambda p: p["transformations"][0]["filter"].update(options="/.*/"), "it must take every query but the edges"),
    (lambda p: p["transformations"][0]["options"].update(mode="outer"), "inner mode"),
])
def test_each_shape_fault_is_caught(fault, expected):
    """The check fails on each way the panel could drift from Grafana's shape."""
    panel = geomap(json.loads(BOARD.read_text()))
    fault(panel)
    assert any(expected in p for p in shape_problems(panel)), shape_problems(panel)
