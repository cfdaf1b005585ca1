"""The network analysis process' first act: the lowest CPU priority, and no plotting library.

Run as the child's initializer, before it unpickles any task, so this module imports nothing
heavy: the child then loads only what the analysis needs (NumPy and igraph, about 30 MB).
"""

from __future__ import annotations

import os
import sys

#: How much lower the analysis process' CPU priority is than the exporter's: to the lowest (19)
#: from the default (0).
ANALYSIS_NICENESS = 19


def start() -> None:
    """Lower the child's priority; keep igraph from importing matplotlib.pyplot, which it does at
    import when matplotlib is installed (30-47 MB and a second of CPU, for plotting only): a
    ``None`` in ``sys.modules`` makes that import fail, and igraph runs without plotting."""
    os.nice(ANALYSIS_NICENESS)
    sys.modules["matplotlib"] = None  # type: ignore[assignment]
