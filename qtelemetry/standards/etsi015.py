"""ETSI GS QKD 015 V2.1.1 (2022-04): the ``etsi-qkd-sdn-node`` YANG tree as RESTCONF serves it.

RFC 8040 returns ``GET …/restconf/data/etsi-qkd-sdn-node:qkd_node`` in the RFC 7951 JSON encoding:
the top-level member is module-qualified; identityref values carry the module that defines the
identity (§6.8), here ``etsi-qkd-node-types`` (``etsi-qkd-node-types:ACTIVE``), though devices also
write the YANG prefix ``etsi-qkdn-types``, and both are read; 64-bit and decimal64 numbers are JSON
strings (§6.1), 32-bit ones numbers, and both forms are read. Only the members qtelemetry exports
are modelled: ``qkd_links/qkd_link[qkdl_id]`` (``qkdl_status``, ``qkdl_local``,
``qkdl_performance`` with ``skr``, ``eskr``, ``expected_consumption`` in bits/s and
``phys_perf[perf_type]``) and ``qkd_interfaces/qkd_interface[qkdi_id]/qkdi_status``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Iterable, NamedTuple

from pydantic import BeforeValidator, Field

from qtelemetry.errors import DriverError
from qtelemetry.standards.documents import Document, parse
from qtelemetry.text import count

#: Module defining the identities (RFC 7951 qualifies identityrefs with it) and its YANG prefix.
TYPES_MODULE, TYPES_PREFIX = "etsi-qkd-node-types", "etsi-qkdn-types"
NODE_MEMBER = "etsi-qkd-sdn-node:qkd_node"
#: Identities of etsi-qkd-node-types: the only label values qtelemetry exports for these leaves.
LINK_STATUSES = ("ACTIVE", "PASSIVE", "PENDING", "OFF")  # base LINK-STATUS-TYPES
INTERFACE_STATUSES = ("UP", "DOWN", "FAILURE")  # base IFACE-STATUS-TYPES
PERF_TYPES = ("QBER", "SNR")  # base PHYS-PERF-TYPES
#: Leaves whose identityref values are checked against those identities.
IDENTITY_LEAVES = ("qkdl_status", "qkdi_status", "perf_type")


class Identity(NamedTuple):
    """An identityref value split into its module (None if unqualified) and identity name."""

    module: str | None
    name: str

    def known(self, names: tuple[str, ...]) -> str | None:
        """The identity's name if it is one of ``names`` of etsi-qkd-node-types, else None."""
        return self.name if self.module in (TYPES_MODULE, TYPES_PREFIX) and self.name in names else None

    def __str__(self) -> str:
        return self.name if self.module is None else f"{self.module}:{self.name}"


def _identity(value: object) -> Identity:
    if not isinstance(value, str) or not value:
        raise ValueError("identityref must be a non-empty string")
    module, _, name = value.rpartition(":")
    return Identity(module or None, name)


_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
_DECIMAL = re.compile(r"[+-]?[0-9]{1,20}(\.[0-9]{1,18})?")


def _number(value: object, pattern: re.Pattern[str]) -> float | int:
    """A JSON number, or a string in the RFC 7951 form of 64-bit and decimal64 values."""
    if isinstance(value, str) and pattern.fullmatch(value):
        return float(value) if pattern is _DECIMAL else int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if pattern is _DECIMAL or isinstance(value, int):
            return value
    raise ValueError("not a number of this YANG type")


IdentityRef = Annotated[Identity, BeforeValidator(_identity)]
UInt = Annotated[int, BeforeValidator(lambda v: _number(v, _INTEGER)), Field(ge=0, le=2**64 - 1)]
Decimal = Annotated[float, BeforeValidator(lambda v: _number(v, _DECIMAL))]
#: Key rates: uint32 bits/s in the model; some nodes send decimals, which are read too.
Rate = Annotated[float, BeforeValidator(lambda v: _number(v, _DECIMAL)), Field(ge=0.0)]


class PhysPerf(Document):
    perf_type: IdentityRef
    value: Decimal


class Performance(Document):
    expected_consumption: Rate | None = None  #: sum of the applications' bandwidth, bits/s
    skr: Rate | None = None  #: secret key rate, bits/s
    eskr: Rate | None = None  #: effective secret key rate after internal consumption, bits/s
    phys_perf: list[PhysPerf] = []


class LinkEnd(Document):
    qkdn_id: str | None = None
    qkdi_id: UInt | None = None


class QkdLink(Document):
    qkdl_id: str
    qkdl_status: IdentityRef | None = None
    qkdl_local: LinkEnd | None = None
    qkdl_performance: Performance | None = None


class QkdLinks(Document):
    qkd_link: list[QkdLink] = []


class QkdInterface(Document):
    qkdi_id: UInt
    qkdi_status: IdentityRef | None = None


class QkdInterfaces(Document):
    qkd_interface: list[QkdInterface] = []


class QkdNode(Document):
    qkd_interfaces: QkdInterfaces = QkdInterfaces()
    qkd_links: QkdLinks = QkdLinks()


class NodeDocument(Document):
    """The RESTCONF data resource: ``{"etsi-qkd-sdn-node:qkd_node": {...}}``."""

    qkd_node: QkdNode = Field(alias=NODE_MEMBER)


def parse_node(body: bytes | str) -> QkdNode:
    return parse(NodeDocument, body, "qkd_node").qkd_node


@dataclass(frozen=True)
class LinkReport:
    """What one node says about one of its key association links; NaN/None: not reported."""

    status: str | None  #: one of LINK_STATUSES
    interface_status: str | None  #: one of INTERFACE_STATUSES, of the link's local interface
    skr_bps: float
    eskr_bps: float
    expected_consumption_bps: float
    phys_perf: dict[str, float]  #: perf type (one of PERF_TYPES) -> value
    #: identityref values outside the model's identities, by leaf: counted, never exported
    unknown: tuple[tuple[str, Identity], ...] = field(default_factory=tuple)


def _single(keys: Iterable[str], what: str) -> None:
    repeated = [key for key, n in Counter(keys).items() if n > 1]
    if repeated:
        raise DriverError("invalid_value", f"qkd_node: {what} key repeated in its list")


def link_report(node: QkdNode, qkdl_id: str) -> LinkReport:
    """The report of link ``qkdl_id`` (a UUID, compared case-insensitively); DriverError if absent."""
    links = node.qkd_links.qkd_link
    _single((link.qkdl_id.lower() for link in links), "qkdl_id")
    link = next((link for link in links if link.qkdl_id.lower() == qkdl_id.lower()), None)
    if link is None:
        raise DriverError("unknown_link", f"qkd_node has no qkd_link {qkdl_id} ({count(len(links), 'link')})")
    unknown: list[tuple[str, Identity]] = []

    def known(leaf: str, value: Identity | None, names: tuple[str, ...]) -> str | None:
        name = None if value is None else value.known(names)
        if value is not None and name is None:
            unknown.append((leaf, value))
        return name

    performance = link.qkdl_performance or Performance()
    _single((p.perf_type.known(PERF_TYPES) or str(p.perf_type) for p in performance.phys_perf), "phys_perf perf_type")
    phys_perf = {name: p.value for p in performance.phys_perf
                 if (name := known("perf_type", p.perf_type, PERF_TYPES)) is not None}
    if not 0.0 <= phys_perf.get("QBER", 0.0) <= 1.0:
        raise DriverError("invalid_value", f"qkd_link {qkdl_id}: phys_perf QBER is not a ratio in [0, 1] "
                                           "(a percentage?)")
    local = link.qkdl_local.qkdi_id if link.qkdl_local else None
    interface = next((i for i in node.qkd_interfaces.qkd_interface if i.qkdi_id == local), None)
    nan = math.nan
    return LinkReport(
        status=known("qkdl_status", link.qkdl_status, LINK_STATUSES),
        interface_status=known("qkdi_status", interface.qkdi_status if interface else None, INTERFACE_STATUSES),
        skr_bps=nan if performance.skr is None else performance.skr,
        eskr_bps=nan if performance.eskr is None else performance.eskr,
        expected_consumption_bps=nan if performance.expected_consumption is None else performance.expected_consumption,
        phys_perf=phys_perf,
        unknown=tuple(unknown),
    )
