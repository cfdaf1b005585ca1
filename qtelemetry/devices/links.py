"""What the simulated devices need from a simulated link: its key store and live figures.

A link joins two sites; the KMEs of both sites draw from the same key store (QKD leaves the same
key at both ends). Implementations are called from the devices' event loop while the simulator
runs elsewhere, so every method must be thread-safe and must not block.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Protocol, Sequence

#: Namespace of the UUIDs the simulated devices derive from link and site names.
NAMESPACE = uuid.UUID("5b6f2f53-2d0e-4a57-9a43-8f3d53a4b0e1")


@dataclass(frozen=True)
class LinkFigures:
    """A link's live figures as its devices report them."""

    status: str  #: one of etsi015.LINK_STATUSES: ACTIVE, PASSIVE, PENDING, OFF
    skr_bps: float  #: secret key rate, bits/s
    eskr_bps: float  #: secret key rate left after internal consumption, bits/s
    qber: float = math.nan  #: QBER of the distilled key (0-1); NaN: not measured
    expected_consumption_bps: float = math.nan  #: applications' demand, bits/s; NaN: unknown


class SimulatedLink(Protocol):
    """One simulated QKD link between ``site_a`` and ``site_b``."""

    name: str  #: link name from the config
    site_a: str
    site_b: str

    def key_store(self) -> tuple[float, float]:
        """(stored bits, capacity bits) of the link's key store now."""
        ...

    def withdraw(self, bits: int) -> bool:
        """Take ``bits`` of key from the store if it holds that much (all or nothing)."""
        ...

    def figures(self) -> LinkFigures:
        ...


def peer(link: SimulatedLink, site: str) -> str:
    """The site at the other end of ``link`` from ``site``."""
    return link.site_b if site == link.site_a else link.site_a


def links_of(site: str, links: Sequence[SimulatedLink]) -> list[SimulatedLink]:
    """The links with an end at ``site``, in config order."""
    return [link for link in links if site in (link.site_a, link.site_b)]


def qkdl_id(link_name: str) -> str:
    """A link's ETSI 015 ``qkdl_id``: the same at both nodes, stable across runs."""
    return str(uuid.uuid5(NAMESPACE, f"qkd_link:{link_name}"))


def qkdn_id(site: str) -> str:
    """The ETSI 015 ``qkdn_id`` of a site's node."""
    return str(uuid.uuid5(NAMESPACE, f"qkd_node:{site}"))
