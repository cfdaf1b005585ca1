"""What Grafana makes of a panel's Prometheus answers before a panel plugin sees them, for tests.

No Grafana runs here, so the few steps between the Prometheus HTTP API and a panel's frames are
written out from Grafana's source (grafana/grafana, cited per function), as far as the generated
dashboards use them: instant table-format frames, a transformation's refId filter, ``joinByField``
in inner mode, and the Node Graph's split of frames into nodes and edges. A frame is a refId and
named columns (lists of equal length).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Frame:
    ref_id: str | None
    fields: dict[str, list]

    @property
    def length(self) -> int:
        return len(next(iter(self.fields.values()), []))

    def rows(self) -> list[dict]:
        return [{name: values[i] for name, values in self.fields.items()} for i in range(self.length)]


def table_frame(ref_id: str, result: list[dict], queries: int) -> Frame:
    """An instant vector as a table-format frame: ``Time``, one column per label, then the value,
    named ``Value #<refId>`` when the panel has more than one query (packages/grafana-prometheus/
    src/result_transformer.ts, ``transformDFToTable`` and ``getValueText``)."""
    labels = sorted({name for sample in result for name in sample["metric"]})
    fields = {"Time": [float(s["value"][0]) for s in result]}
    fields.update({name: [s["metric"].get(name, "") for s in result] for name in labels})
    fields["Value" if queries == 1 else f"Value #{ref_id}"] = [float(s["value"][1]) for s in result]
    return Frame(ref_id, fields)


def ref_id_matcher(pattern: str):
    """The ``byRefId`` frame matcher: a /regex/, an A|B list, or one refId
    (packages/grafana-data/src/transformations/matchers/refIdMatcher.ts)."""
    if pattern.startswith("/") and pattern.rfind("/") > 0:
        regex = re.compile(pattern[1:pattern.rfind("/")])
    elif "|" in pattern:
        regex = re.compile("^(?:" + "|".join(map(re.escape, pattern.split("|"))) + ")$")
    else:
        return lambda frame: frame.ref_id == pattern
    return lambda frame: bool(regex.search(frame.ref_id or ""))


def join_inner(frames: list[Frame], by: str) -> list[Frame]:
    """``joinByField`` in inner mode: rows whose ``by`` value every frame has, one per combination;
    the other fields side by side, the later of two equal names suffixed (the panel reads neither
    ``Time``)."""
    if not frames:
        return []
    joined = [dict(row) for row in frames[0].rows()]
    for frame in frames[1:]:
        joined = [{**row, **{(k if k not in row or k == by else f"{k} {i}"): v for k, v in other.items()}}
                  for row in joined for i, other in enumerate(frame.rows(), 1) if other.get(by) == row.get(by)]
    names = list(dict.fromkeys(k for row in joined for k in row)) or list(frames[0].fields)
    return [Frame(None, {name: [row.get(name) for row in joined] for name in names})]


def _join_by_field(frames: list[Frame], options: dict) -> list[Frame]:
    assert options.get("mode") == "inner", f"joinByField {options}: only the inner mode is emulated here"
    return join_inner(frames, options["byField"])


TRANSFORMERS = {"joinByField": _join_by_field}


def transform(transformations: list[dict], frames: list[Frame]) -> list[Frame]:
    """A panel's transformations in order; one with a ``filter`` sees only the frames it matches
    and the others are put back at the place of the first one left out
    (packages/grafana-data/src/transformations/transformDataFrame.ts, ``filterInput`` and
    ``postProcessTransform``)."""
    for config in transformations:
        step = TRANSFORMERS.get(config["id"])
        assert step is not None, f"transformation {config['id']} is not emulated here"
        matcher = ref_id_matcher(config["filter"]["options"]) if config.get("filter", {}).get("options") else None
        seen = [f for f in frames if matcher is None or matcher(f)]
        after = step(seen, config.get("options") or {})
        if matcher is not None:
            kept = [(i, f) for i, f in enumerate(frames) if not matcher(f)]
            insert = next((i for i, _ in kept if i), 0)
            after[insert:insert] = [f for _, f in kept]
        frames = after
    return frames


def graph_frames(frames: list[Frame]) -> tuple[list[Frame], list[Frame]]:
    """(nodes, edges): a frame named ``edges`` or with a ``source`` field is an edges frame, any
    other a nodes frame; the Geomap network layer draws the first of each
    (public/app/plugins/panel/nodeGraph/utils.ts, ``getGraphFrame``)."""
    edges = [f for f in frames if "source" in f.fields]
    return [f for f in frames if "source" not in f.fields], edges
