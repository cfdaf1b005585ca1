"""ETSI GS QKD 015 driver: one key association link as its SD-QKD node reports it.

Each reading fetches the node's ``etsi-qkd-sdn-node:qkd_node`` tree (RESTCONF over HTTPS, with
optional mutual TLS and bearer token, or a ``file://`` JSON document) and reports link
``qkdl_id``: its status and its local interface's status as state sets, ``skr``, ``eskr``,
``expected_consumption`` and every ``phys_perf`` entry whose type is an identity of the model.
Identityref values outside the model are counted by leaf and logged once, never exported.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit
from uuid import UUID

import numpy as np
from pydantic import Field

from qtelemetry.configfile import TokenFile, read_token
from qtelemetry.drivers.base import CountBatch, DriverError, IODriverConfig, check
from qtelemetry.drivers.https import (
    HTTP_REASONS, MAX_BODY_BYTES, TRANSPORT_REASONS, Answer, HttpsClient, TLSFiles, http_error, origin)
from qtelemetry.drivers.polling import ReadingClock
from qtelemetry.estimation.reported import ETSI015
from qtelemetry.standards import restconf
from qtelemetry.standards.documents import DOCUMENT_REASONS, loggable
from qtelemetry.standards.etsi015 import (
    IDENTITY_LEAVES, INTERFACE_STATUSES, LINK_STATUSES, PERF_TYPES, LinkReport, link_report, parse_node)

log = logging.getLogger(__name__)

#: Distinct unknown identities logged per driver; more are still counted.
MAX_LOGGED_IDENTITIES = 16


class Etsi015Config(IODriverConfig):
    """A key association link of an SD-QKD node read over ETSI GS QKD 015 (RESTCONF)."""

    protocol: ClassVar[str] = ETSI015
    error_reasons: ClassVar[tuple[str, ...]] = (
        TRANSPORT_REASONS + HTTP_REASONS + DOCUMENT_REASONS + ("unknown_link", "file_unreadable"))
    estimated_by: ClassVar[str] = "device"

    type: Literal["etsi015"]
    url: str = Field(pattern=r"^(https?://[^/?#@]+/[^?#\s]*|file:///[^?#]+)$",
                     description="RESTCONF data resource of the node (…/restconf/data/etsi-qkd-sdn-node:qkd_node) "
                                 "or file:///path of a JSON document")
    qkdl_id: UUID = Field(description="qkdl_id of the key association link of that node this link is")
    tls: TLSFiles | None = Field(None, description="CA of the node, and a client certificate if it asks for one")
    bearer_token_file: TokenFile | None = Field(None, description="file holding a bearer token sent to the node")
    poll_interval_seconds: float = Field(10.0, gt=0.0, allow_inf_nan=False, description="period of polls")
    timeout_seconds: float = Field(2.0, gt=0.0, allow_inf_nan=False, description="timeout of each poll")

    @check
    def _transport(self) -> None:
        if urlsplit(self.url).scheme != "https" and (self.tls is not None or self.bearer_token_file is not None):
            raise ValueError("tls and bearer_token_file need an https:// url")

    def bearer_token(self) -> str | None:
        return None if self.bearer_token_file is None else read_token(self.bearer_token_file)

    def build(self) -> "Etsi015Driver":
        return Etsi015Driver(self)


def restconf_error_detail(answer: Answer) -> str:
    """What a node's RFC 8040 error body says, made safe to log; or that it sent none."""
    try:
        errors = restconf.parse_errors(answer.body).errors.error
    except DriverError:
        return "no RESTCONF error body"
    return loggable("; ".join(f"{e.error_tag}: {e.error_message or ''}" for e in errors))


def state_set(name: str | None, names: tuple[str, ...], unknown: bool) -> np.ndarray:
    """One-hot over ``names``; all 0 for a value outside them, all NaN when not reported."""
    if name is None:
        return np.full(len(names), 0.0 if unknown else math.nan)
    return (np.array(names) == name).astype(float)


def counts(report: LinkReport) -> dict[str, np.ndarray]:
    """The ETSI 015 protocol's counts of one reading (see ``qtelemetry.estimation.reported``)."""
    unknown_leaves = [leaf for leaf, _ in report.unknown]
    return {
        "link_status": state_set(report.status, LINK_STATUSES, "qkdl_status" in unknown_leaves),
        "interface_status": state_set(report.interface_status, INTERFACE_STATUSES, "qkdi_status" in unknown_leaves),
        "skr_bps": np.array(report.skr_bps),
        "eskr_bps": np.array(report.eskr_bps),
        "expected_consumption_bps": np.array(report.expected_consumption_bps),
        "phys_perf": np.array([report.phys_perf.get(t, math.nan) for t in PERF_TYPES]),
        "unknown_identities": np.array([unknown_leaves.count(leaf) for leaf in IDENTITY_LEAVES], float),
    }


def _read_file(path: Path) -> bytes:
    with path.open("rb") as file:
        body = file.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise DriverError("response_too_large", f"{path}: larger than {MAX_BODY_BYTES} bytes")
    return body


class Etsi015Driver:
    """Polls one node for one link; use it on the runtime's event loop."""

    def __init__(self, config: Etsi015Config):
        self.config = config
        parts = urlsplit(config.url)
        self._file = Path(unquote(parts.path)) if parts.scheme == "file" else None
        token = config.bearer_token()
        headers = {"Accept": restconf.MEDIA_TYPE, **({"Authorization": f"Bearer {token}"} if token else {})}
        self._client = None if self._file else HttpsClient(config.tls, config.timeout_seconds, headers)
        self._what = f"qkd_node request to {origin(config.url)}" if self._file is None else f"qkd_node file {self._file}"
        self._clock = ReadingClock(config.poll_interval_seconds)
        self._logged: set[tuple[str, str]] = set()

    async def _document(self) -> bytes:
        if self._client is None:
            try:
                async with asyncio.timeout(self.config.timeout_seconds):
                    return await asyncio.to_thread(_read_file, self._file)
            except OSError as exc:
                raise DriverError("file_unreadable", f"{self._what}: {exc.strerror or exc}") from None
            except TimeoutError:
                raise DriverError("timeout", f"{self._what}: not read in time") from None
        answer = await self._client.request("GET", self.config.url, self._what)
        if answer.status != 200:
            raise http_error(answer, self._what, restconf_error_detail(answer))
        return answer.body

    def _log_unknown(self, report: LinkReport) -> None:
        for leaf, identity in report.unknown:
            key = (leaf, str(identity))
            if key not in self._logged and len(self._logged) < MAX_LOGGED_IDENTITIES:
                self._logged.add(key)
                log.warning("not an identity of etsi-qkd-node-types: counted, not exported",
                            extra={"source": self._what, "leaf": leaf, "value": loggable(str(identity), 80)})

    async def acquire(self) -> CountBatch:
        report = link_report(parse_node(await self._document()), str(self.config.qkdl_id))
        self._log_unknown(report)
        start, duration = self._clock.span()
        return CountBatch(start=start, duration_s=duration, counts=counts(report))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
