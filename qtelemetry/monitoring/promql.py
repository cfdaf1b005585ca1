"""Just enough PromQL lexing to find the metric names an expression reads.

The generators write every panel query and rule expression without the deployment's selector
(``job="qtelemetry"``); ``inject_selector`` adds it to each selector of an exported metric, and
``metric_names`` lets the generators check every name against the catalogue, so a renamed
metric is a generation error instead of a silently empty panel. This is a lexer, not a parser:
it skips string literals, label matchers ``{...}``, ranges ``[...]``, the label lists of
``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``, numbers, durations,
keywords and function names (an identifier followed by ``(``). promtool and the real-Prometheus
tests check the full syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qtelemetry.monitoring.catalogue import METRICS


class GenerationError(Exception):
    """A dashboard, rule, test or runbook cannot be generated as specified."""


#: Series Prometheus itself creates; they may appear in queries without being in the catalogue.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds",
                               "scrape_samples_scraped"})
#: Of those, the ones that carry the scrape target's labels (so take the deployment selector).
TARGET_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "bool", "offset", "atan2", "inf", "nan"})
#: Aggregation operators may be followed by ``by``/``without`` instead of ``(``.
AGGREGATORS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                         "count_values", "bottomk", "topk", "quantile"})
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?:[smhdwy]|ms)*")
_CLOSE = {"{": "}", "[": "]", "(": ")"}


def sample_names() -> dict[str, str]:
    """Every series name the exporter can expose, mapped to its catalogue family name."""
    names: dict[str, str] = {}
    for metric in METRICS:
        names[metric.sample_name] = metric.name
        if metric.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[metric.name + suffix] = metric.name
    return names


@dataclass(frozen=True)
class Name:
    """One metric-name token: where it is and whether a ``{...}`` selector follows it."""

    name: str
    start: int
    end: int
    brace: int | None  # index of the "{" that follows, if any


def _skip_group(expr: str, i: int) -> int:
    """Index just past the bracket group that opens at ``expr[i]`` (strings inside skipped)."""
    opener, closer, depth = expr[i], _CLOSE[expr[i]], 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
            continue
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise GenerationError(f"unbalanced {opener!r} in: {expr}")


def _skip_string(expr: str, i: int) -> int:
    quote, i = expr[i], i + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise GenerationError(f"unterminated string in: {expr}")


def _next_non_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def names(expr: str) -> list[Name]:
    """Metric-name tokens of ``expr`` in order of appearance."""
    found: list[Name] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "\"'`":
            i = _skip_string(expr, i)
        elif c in "{[":
            i = _skip_group(expr, i)
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            i = _NUMBER.match(expr, i).end()
        elif c == "$":  # a template variable outside a string, e.g. a threshold: skip it
            i = _IDENT.match(expr, i + 1).end() if _IDENT.match(expr, i + 1) else i + 1
        elif _IDENT.match(expr, i):
            token = _IDENT.match(expr, i)
            word, end = token.group(), token.end()
            after = _next_non_space(expr, end)
            nxt = expr[after] if after < len(expr) else ""
            if word.lower() in LABEL_LIST_KEYWORDS:
                i = _skip_group(expr, after) if nxt == "(" else end
            elif word.lower() in KEYWORDS or word in AGGREGATORS:
                i = end
            elif nxt == "(":  # function or aggregation
                i = end
            else:
                found.append(Name(word, i, end, after if nxt == "{" else None))
                i = end
        else:
            i += 1
    return found


def metric_names(expr: str) -> set[str]:
    return {token.name for token in names(expr)}


def inject_selector(expr: str, selector: str, targets: set[str] | frozenset[str]) -> str:
    """Add ``selector`` (e.g. ``job="qtelemetry"``) to every selector of a name in ``targets``."""
    if not selector:
        return expr
    out = expr
    for token in reversed(names(expr)):
        if token.name not in targets:
            continue
        if token.brace is None:
            out = out[: token.end] + "{" + selector + "}" + out[token.end:]
        else:
            inner = _next_non_space(out, token.brace + 1)
            sep = "" if out[inner] == "}" else ", "
            out = out[: token.brace + 1] + selector + sep + out[token.brace + 1:]
    return out


def selector_labels(selector: str) -> dict[str, str]:
    """The labels a series needs to match an equality-only selector (for generated tests)."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in selector.split(","))):
        match = re.fullmatch(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"\\]*)"', part)
        if not match:
            raise GenerationError(
                f"selector {selector!r}: promtool tests need equality matchers (name=\"value\") only")
        labels[match.group(1)] = match.group(2)
    return labels
