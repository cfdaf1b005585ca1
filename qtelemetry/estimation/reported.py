"""Link protocols of real devices that report their own figures (ETSI GS QKD 014 and 015).

Nothing is estimated from photon counts here: a KME reports its key store (ETSI GS QKD 014
Status), an SDN node its link's status, key rates and QBER (ETSI GS QKD 015 ``qkd_link``).
Their counts are of three kinds (``count_kinds``): ``count`` (integers summed over the sliding
window and into totals), ``amount`` (non-negative reals summed likewise) and ``level`` (the
latest reported value; NaN = not reported). ``estimate`` maps them onto the keys the catalogue's
shared metrics read (``secret_key_rate_bps``, ``qber_z``) and adds the key store's trend;
everything else, the key store's level and capacity among it, is exported straight from the levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

import numpy as np
from numpy.typing import NDArray

from qtelemetry.estimation.protocols import CountKind, Counts, Estimates
from qtelemetry.estimation.stats import ratio
from qtelemetry.standards.etsi015 import IDENTITY_LEAVES, INTERFACE_STATUSES, LINK_STATUSES, PERF_TYPES

ETSI014 = "etsi-qkd-014"
ETSI015 = "etsi-qkd-015"

#: KME endpoints the ETSI 014 driver calls (clause 5: Get status, Get key).
ENDPOINTS = ("status", "enc_keys")
#: Upper bounds (s) of the KME request-duration histogram (Prometheus' default buckets).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BUCKET_LABELS = (*(f"{le:g}" for le in REQUEST_BUCKETS), "+Inf")
#: Outcomes of a key probe: a key came back; the KME answered with an error (an application
#: would have been refused); no usable answer (timeout, TLS, malformed container).
PROBE_RESULTS = ("delivered", "refused", "failed")


#: ETSI 014 counts: name -> (label values along each axis, kind).
KME_COUNTS: dict[str, tuple[tuple[tuple[str, ...], ...], CountKind]] = {
    "key_stored_bits": ((), "level"),  # key ready for the SAE pair: stored_key_count × key_size (or × 1)
    "key_capacity_bits": ((), "level"),  # max_key_count × key_size (or × 1)
    "buffer_increase_bits": ((), "amount"),  # rises of stored_bits between successive polls
    "buffer_decrease_bits": ((), "amount"),  # falls of stored_bits between successive polls
    "request_duration": ((ENDPOINTS, BUCKET_LABELS), "count"),  # answered requests per duration bucket
    "request_seconds": ((ENDPOINTS,), "amount"),  # their summed duration
    "probes": ((PROBE_RESULTS,), "count"),  # enc_keys probes by outcome
}
#: ETSI 015 counts of one qkd_link: name -> (label values along each axis, kind).
NODE_COUNTS: dict[str, tuple[tuple[tuple[str, ...], ...], CountKind]] = {
    "link_status": ((LINK_STATUSES,), "level"),  # qkdl_status one-hot (a state set); all 0: unknown identity
    "interface_status": ((INTERFACE_STATUSES,), "level"),  # qkdi_status of the link's local interface
    "skr_bps": ((), "level"),  # qkdl_performance.skr
    "eskr_bps": ((), "level"),  # qkdl_performance.eskr
    "expected_consumption_bps": ((), "level"),  # qkdl_performance.expected_consumption
    "phys_perf": ((PERF_TYPES,), "level"),  # qkdl_performance.phys_perf[perf_type].value
    "unknown_identities": ((IDENTITY_LEAVES,), "count"),  # identityref values outside the model, by leaf
}


def _at_most(a: NDArray[np.float64], b: NDArray[np.float64] | float) -> NDArray[np.bool_]:
    """a ≤ b wherever both are reported (NaN compares as consistent)."""
    return ~(a > b)


@dataclass(frozen=True, eq=False)
class ReportedProtocol:
    """What device-reported protocols share: counts from a table, no parameters, nothing skipped."""

    name: str
    counts: Mapping[str, tuple[tuple[tuple[str, ...], ...], CountKind]]
    param_names: tuple[str, ...] = ()

    @cached_property
    def count_axes(self) -> dict[str, tuple[tuple[str, ...], ...]]:
        return {name: axes for name, (axes, _) in self.counts.items()}

    @cached_property
    def count_kinds(self) -> dict[str, CountKind]:
        return {name: kind for name, (_, kind) in self.counts.items()}

    @cached_property
    def count_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(map(len, axes)) for name, (axes, _) in self.counts.items()}

    def no_estimate(self, sums: Counts) -> dict[str, NDArray[np.bool_]]:
        """A device's report needs no minimum of data."""
        return {}


class Etsi014KME(ReportedProtocol):
    """A KME's key store for one SAE pair, its request latency and key probes (ETSI GS QKD 014)."""

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """The store holds no more than its capacity."""
        return _at_most(counts["key_stored_bits"], counts["key_capacity_bits"])

    def estimate(self, sums: Counts, duration_s: NDArray[np.float64], params: Counts, confidence: float) -> Estimates:
        """The store's net trend over the sliding window (bits/s); its level and capacity are levels."""
        return {"key_buffer_trend_bps": ratio(sums["buffer_increase_bits"] - sums["buffer_decrease_bits"], duration_s)}


class Etsi015Node(ReportedProtocol):
    """One key association link as its SD-QKD node reports it (ETSI GS QKD 015 ``qkd_link``)."""

    def consistent(self, counts: Counts) -> NDArray[np.bool_]:
        """At most one status set in each state set; QBER a ratio."""
        return (_at_most(np.nansum(counts["link_status"], axis=1), 1.0)
                & _at_most(np.nansum(counts["interface_status"], axis=1), 1.0)
                & _at_most(counts["phys_perf"][:, PERF_TYPES.index("QBER")], 1.0))

    def estimate(self, sums: Counts, duration_s: NDArray[np.float64], params: Counts, confidence: float) -> Estimates:
        """The node's skr and QBER under the shared metrics' keys, its SNR, and whether the link is ACTIVE.

        The node reports one QBER, that of the key it distils: the key (Z) basis of the shared
        ``qkd_qber_ratio`` metric. No X-basis figure is reported: ``qber_x`` is NaN, not exported.
        """
        perf = sums["phys_perf"]
        return {
            "secret_key_rate_bps": sums["skr_bps"],
            "qber_z": perf[:, PERF_TYPES.index("QBER")],
            "qber_x": np.full(len(perf), np.nan),
            "snr": perf[:, PERF_TYPES.index("SNR")],
            "link_active": sums["link_status"][:, LINK_STATUSES.index("ACTIVE")],
        }


ETSI014_KME = Etsi014KME(ETSI014, KME_COUNTS)
ETSI015_NODE = Etsi015Node(ETSI015, NODE_COUNTS)
