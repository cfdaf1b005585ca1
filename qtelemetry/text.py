"""Words for people: a count with its noun in the right number."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 link``, ``3 links``, ``0 links`` (``plural`` where it is not the noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
