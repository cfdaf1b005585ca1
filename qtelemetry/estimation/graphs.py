"""igraph, imported without its plotting.

igraph imports matplotlib.pyplot at import when matplotlib is installed (it is, for the report):
0.6 s and 30-47 MB in every process that analyses a network, for drawing, which qtelemetry never
asks igraph for. While igraph is imported, ``matplotlib`` is marked missing (a ``None`` in
``sys.modules``), so igraph takes its stand-in; matplotlib itself stays importable afterwards.
"""

from __future__ import annotations

import sys

if "matplotlib" in sys.modules:
    import igraph
else:
    sys.modules["matplotlib"] = None  # type: ignore[assignment]
    try:
        import igraph
    finally:
        del sys.modules["matplotlib"]

__all__ = ["igraph"]
