"""The contract between a link protocol's counts and its vectorised estimator.

Each protocol (decoy BB84, entangled-photon BBM92, heralded entanglement, device-reported
figures) declares the arrays a driver delivers per window, how each one aggregates, the per-link
parameters its estimator needs from the config, and one ``estimate`` function that computes every
estimate for all links of that protocol at once.

Kinds of count:

- ``count``: events (non-negative integers), summed over the sliding window for the estimator
  and into cumulative totals that are exported as counters;
- ``amount``: a non-negative real quantity accrued in the window (bits, seconds), summed likewise;
- ``level``: a value the source reports (a key-store fill, a device's own QBER): finite and
  non-negative. Only the latest is kept, and it is also an estimate.

Amounts and levels may be NaN, "not reported" (a device that has no key store), and a polled
device may leave them out altogether; a NaN is never exported.
"""

from __future__ import annotations

from typing import Literal, Mapping, Protocol

import numpy as np
from numpy.typing import NDArray

Counts = Mapping[str, NDArray[np.float64]]
Estimates = dict[str, NDArray[np.float64]]
CountKind = Literal["count", "amount", "level"]


class LinkProtocol(Protocol):
    #: protocol name, also the ``protocol`` label of the link's ``_info`` metric
    name: str
    #: count name -> label values along each axis of that count (e.g. (BASES, INTENSITIES)),
    #: used for the labels of its counter; ``()`` for a scalar per window
    count_axes: Mapping[str, tuple[tuple[str, ...], ...]]
    #: count name -> shape of that count in one window (without the leading link axis)
    count_shapes: Mapping[str, tuple[int, ...]]
    #: count name -> how it aggregates (see the module doc)
    count_kinds: Mapping[str, CountKind]
    #: names of per-link numeric parameters ``estimate`` reads from ``params``
    param_names: tuple[str, ...]

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """Per-link mask of physically possible windows; arrays are shaped (links, *count_shape)."""
        ...

    def no_estimate(self, window: Counts) -> Mapping[str, NDArray[np.bool_]]:
        """Reason -> per-link mask of windows too empty to estimate from (counted, not exported as NaN)."""
        ...

    def estimate(
        self,
        window: Counts,
        duration_s: NDArray[np.float64],
        params: Counts,
        confidence: float,
    ) -> Estimates:
        """Estimates for all links from the sliding window.

        ``window[name]`` has shape (links, *count_shape): the sum over the window for counts and
        amounts, the latest value for levels. ``duration_s`` and every ``params[name]`` have shape
        (links,). Each returned array has shape (links,); NaN means "no estimate possible from
        these counts" and is never exported.
        """
        ...


def shapes(axes: Mapping[str, tuple[tuple[str, ...], ...]]) -> dict[str, tuple[int, ...]]:
    """Count name -> its shape in one window, from its axes."""
    return {name: tuple(map(len, a)) for name, a in axes.items()}


#: Key store between a key-distilling link and its applications, in bits (ETSI GS QKD 014's
#: status reports the same amounts: stored_key_count × key_size, max_key_count × key_size).
KEY_STORE_AXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "key_generated_bits": (),  # secret key added to the store in the window
    "key_requested_bits": (),  # key asked for by applications in the window
    "key_delivered_bits": (),  # key handed to applications in the window
    "key_stored_bits": (),  # fill of the store at the end of the window
    "key_capacity_bits": (),  # size of the store
}
KEY_STORE_KINDS: dict[str, CountKind] = {
    "key_generated_bits": "amount", "key_requested_bits": "amount", "key_delivered_bits": "amount",
    "key_stored_bits": "level", "key_capacity_bits": "level",
}


def key_store_consistent(counts: Counts) -> NDArray[np.bool_]:
    """Delivered ≤ requested and stored ≤ capacity (values not reported, NaN, pass)."""
    with np.errstate(invalid="ignore"):
        return ~(counts["key_delivered_bits"] > counts["key_requested_bits"]) & ~(
            counts["key_stored_bits"] > counts["key_capacity_bits"])
