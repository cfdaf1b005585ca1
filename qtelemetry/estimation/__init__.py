"""NumPy estimation core: one vectorised estimator per link protocol.

``PROTOCOLS`` is built on first use (PEP 562), with the protocols' SciPy: the network analysis
process imports ``qtelemetry.estimation.network`` alone and never loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qtelemetry.estimation.protocols import LinkProtocol

    PROTOCOLS: dict[str, LinkProtocol]


def __getattr__(name: str) -> object:
    if name != "PROTOCOLS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from qtelemetry.estimation.bb84 import BB84_DECOY
    from qtelemetry.estimation.entanglement import BBM92
    from qtelemetry.estimation.heralded import HERALDED
    from qtelemetry.estimation.reported import ETSI014_KME, ETSI015_NODE
    from qtelemetry.estimation.sifted import BB84_SIFTED

    protocols = {p.name: p for p in (BB84_DECOY, BBM92, HERALDED, ETSI014_KME, ETSI015_NODE, BB84_SIFTED)}
    globals()["PROTOCOLS"] = protocols  # found directly from now on
    return protocols
