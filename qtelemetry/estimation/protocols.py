"""The contract between a link protocol's counts and its vectorised estimator.

Each protocol (decoy BB84, entangled-photon BBM92, heralded entanglement) declares the count
arrays a driver delivers per window, the per-link parameters its estimator needs from the
config, and one ``estimate`` function that computes every estimate for all links of that
protocol at once from counts summed over the sliding window.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np
from numpy.typing import NDArray

Counts = Mapping[str, NDArray[np.float64]]
Estimates = dict[str, NDArray[np.float64]]


class LinkProtocol(Protocol):
    #: protocol name, also the ``protocol`` label of the link's ``_info`` metric
    name: str
    #: count name -> shape of that count in one window (without the leading link axis)
    count_shapes: Mapping[str, tuple[int, ...]]
    #: count name -> label values along each axis of that count (e.g. (BASES, INTENSITIES)),
    #: used for the labels of its raw-count counter
    count_axes: Mapping[str, tuple[tuple[str, ...], ...]]
    #: names of per-link numeric parameters ``estimate`` reads from ``params``
    param_names: tuple[str, ...]

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """Per-link mask of physically possible windows; arrays are shaped (links, *count_shape)."""
        ...

    def no_estimate(self, sums: Counts) -> Mapping[str, NDArray[np.bool_]]:
        """Reason -> per-link mask of windows too empty to estimate from (counted, not exported as NaN)."""
        ...

    def estimate(
        self,
        sums: Counts,
        duration_s: NDArray[np.float64],
        params: Counts,
        confidence: float,
    ) -> Estimates:
        """Estimates for all links from counts summed over the sliding window.

        ``sums[name]`` has shape (links, *count_shape), ``duration_s`` and every
        ``params[name]`` have shape (links,). Each returned array has shape (links,); NaN
        means "no estimate possible from these counts" and is never exported.
        """
        ...
