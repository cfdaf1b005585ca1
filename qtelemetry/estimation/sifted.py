"""BB84 without decoy states, from sifted counts: QBER per basis (with bounds), sifted and corrected key rates.

For links whose source has one intensity and whose counts come from a simulator that sees both
ends (SeQUeNCe's BB84 with Cascade above it): pulses and valid clicks, sifted bits and errors per
basis, and the bits of key that error correction (Cascade) released. Without decoy states there
is no bound on the single-photon yield worth exporting, so no secret key rate is claimed here;
the corrected key rate is what error correction delivered, before privacy amplification.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Mapping

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation.bb84 import BASES
from qtelemetry.estimation.protocols import CountKind, Counts, Estimates, shapes
from qtelemetry.estimation.stats import clopper_pearson_upper, ratio

#: The one intensity class (the decoy-BB84 metrics' ``intensity`` label, so both share them).
SIGNAL_ONLY = ("signal",)


@dataclass(frozen=True)
class SiftedBB84:
    """Estimator for single-intensity BB84 links, vectorised over links."""

    name: str = "bb84-sifted"
    count_axes = {
        "pulses": (SIGNAL_ONLY,),  # pulses the receiver listened for
        "detections": (SIGNAL_ONLY,),  # the receiver's valid clicks (one detector only), before sifting
        "sifted": (BASES, SIGNAL_ONLY),  # sifted bits handed to error correction, by basis
        "errors": (BASES, SIGNAL_ONLY),  # of those, bits that disagree between the two ends
        "corrected_key_bits": (),  # key released by error correction
    }
    count_shapes = shapes(count_axes)
    count_kinds: ClassVar[Mapping[str, CountKind]] = MappingProxyType({})
    param_names: tuple[str, ...] = ()

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """Clicks ≤ pulses, errors ≤ sifted bits (sifting lags detection, so sifted bits may fall in a later window)."""
        return (np.all(counts["detections"] <= counts["pulses"], axis=-1)
                & np.all(counts["errors"] <= counts["sifted"], axis=(-2, -1)))

    def no_estimate(self, window: Counts) -> dict[str, NDArray[np.bool_]]:
        """No sifted bits yet: no QBER."""
        return {"no_detections": window["sifted"].sum(axis=(-2, -1)) == 0}

    def estimate(self, sums: Counts, duration_s: NDArray[np.float64], params: Counts, confidence: float) -> Estimates:
        k, n = sums["errors"][:, :, 0], sums["sifted"][:, :, 0]
        return {
            "qber_z": ratio(k[:, 0], n[:, 0]),
            "qber_x": ratio(k[:, 1], n[:, 1]),
            "qber_z_upper": clopper_pearson_upper(k[:, 0], n[:, 0], confidence),
            "qber_x_upper": clopper_pearson_upper(k[:, 1], n[:, 1], confidence),
            "sifted_key_rate_bps": ratio(n.sum(axis=1), duration_s),
            "corrected_key_rate_bps": ratio(sums["corrected_key_bits"], duration_s),
        }


BB84_SIFTED = SiftedBB84()
