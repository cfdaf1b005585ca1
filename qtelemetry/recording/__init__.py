"""Recording link data (``qtelemetry record``), its file format, and analysing it (``qtelemetry analyse``)."""

from __future__ import annotations

import argparse
from typing import Callable


def number_between(low: float, high: float, what: str) -> Callable[[str], float]:
    """An argparse type: a number strictly between ``low`` and ``high``, else an error saying ``what``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse
