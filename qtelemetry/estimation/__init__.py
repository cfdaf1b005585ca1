"""NumPy estimation core: one vectorised estimator per link protocol."""

from __future__ import annotations

from qtelemetry.estimation.bb84 import BB84_DECOY
from qtelemetry.estimation.entanglement import BBM92
from qtelemetry.estimation.heralded import HERALDED
from qtelemetry.estimation.protocols import LinkProtocol
from qtelemetry.estimation.reported import ETSI014_KME, ETSI015_NODE
from qtelemetry.estimation.sifted import BB84_SIFTED

PROTOCOLS: dict[str, LinkProtocol] = {p.name: p for p in (BB84_DECOY, BBM92, HERALDED, ETSI014_KME, ETSI015_NODE,
                                                     BB84_SIFTED)}
