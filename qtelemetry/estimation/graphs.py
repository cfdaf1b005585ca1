"""igraph, imported without its plotting; and the connected components of an edge list.

igraph imports matplotlib.pyplot at import when matplotlib is installed (it is, for the report):
0.6 s and 30-47 MB in every process that analyses a network, for drawing, which qtelemetry never
asks igraph for. While igraph is imported, ``matplotlib`` is marked missing (a ``None`` in
``sys.modules``), so igraph takes its stand-in; matplotlib itself stays importable afterwards.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import NDArray

if "matplotlib" in sys.modules:
    import igraph
else:
    sys.modules["matplotlib"] = None  # type: ignore[assignment]
    try:
        import igraph
    finally:
        del sys.modules["matplotlib"]

__all__ = ["components", "igraph"]


def components(n: int, ends: NDArray[np.intp]) -> NDArray[np.intp]:
    """The connected component (0, 1, ... in order of their lowest vertex) of each of ``n``
    vertices joined by the undirected edges ``ends`` (pairs of vertex indices)."""
    return np.array(igraph.Graph(n=n, edges=np.asarray(ends).tolist()).connected_components().membership, np.intp)
