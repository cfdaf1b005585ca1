"""A simulated ETSI GS QKD 015 SD-QKD node: the site's ``qkd_node`` tree over RESTCONF.

``GET /restconf/data/etsi-qkd-sdn-node:qkd_node`` returns the tree in the RFC 7951 encoding:
one QKD interface per link of the site (``qkdi_id`` its position, from 1), one ``qkd_link`` per
link with its status, ``skr``, ``eskr``, ``expected_consumption`` (uint32 numbers) and, while the
QBER is measured, ``phys_perf`` QBER (decimal64, so a string). Identityrefs are qualified with
their module, ``etsi-qkd-node-types``. The interface is DOWN while its link is OFF, else UP. With a
bearer token configured, requests without it get 401 and an RFC 8040 error body.
"""

from __future__ import annotations

import hmac
import math
from typing import Any, Sequence

from aiohttp import web

from qtelemetry.devices.links import SimulatedLink, links_of, peer, qkdl_id, qkdn_id
from qtelemetry.standards.etsi015 import NODE_MEMBER, TYPES_MODULE
from qtelemetry.standards.restconf import MEDIA_TYPE, NODE_PATH, errors_body


def _identity(name: str) -> str:
    return f"{TYPES_MODULE}:{name}"


def _bits_per_second(value: float) -> int | None:
    return None if math.isnan(value) else min(round(value), 2**32 - 1)  # uint32 in the model


def node_tree(site: str, links: Sequence[SimulatedLink]) -> dict[str, Any]:
    """The RFC 7951 JSON of ``site``'s node with the live figures of its links."""
    mine = links_of(site, links)
    interfaces, qkd_links = [], []
    for number, link in enumerate(mine, start=1):
        figures = link.figures()
        interfaces.append({"qkdi_id": number, "qkdi_status": _identity("DOWN" if figures.status == "OFF" else "UP")})
        other = peer(link, site)
        remote = next(i for i, candidate in enumerate(links_of(other, links), start=1) if candidate is link)
        performance: dict[str, Any] = {key: rate for key, value in (
            ("skr", figures.skr_bps), ("eskr", figures.eskr_bps), ("expected_consumption", figures.expected_consumption_bps))
            if (rate := _bits_per_second(value)) is not None}
        if not math.isnan(figures.qber):
            performance["phys_perf"] = [{"perf_type": _identity("QBER"), "value": f"{figures.qber:.6f}"}]
        qkd_links.append({
            "qkdl_id": qkdl_id(link.name),
            "qkdl_enable": True,
            "qkdl_local": {"qkdn_id": qkdn_id(site), "qkdi_id": number},
            "qkdl_remote": {"qkdn_id": qkdn_id(other), "qkdi_id": remote},
            "qkdl_type": _identity("PHYS"),
            "qkdl_status": _identity(figures.status),
            "qkdl_performance": performance,
        })
    return {NODE_MEMBER: {
        "qkdn_id": qkdn_id(site),
        "qkdn_location_id": site,
        "qkdn_capabilities": {"link_stats_support": True, "application_stats_support": False,
                              "key_relay_mode_enable": False},
        "qkd_interfaces": {"qkd_interface": interfaces},
        "qkd_links": {"qkd_link": qkd_links},
    }}


class RestconfNode:
    """The RESTCONF server of ``site``'s node; ``bearer_token`` (if set) is required of every request."""

    def __init__(self, site: str, links: Sequence[SimulatedLink], bearer_token: str | None = None):
        self.site, self.links, self._token = site, links, bearer_token

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(NODE_PATH, self.node)
        app.router.add_route("*", "/restconf/{tail:.*}", self.unknown)
        return app

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        return hmac.compare_digest(given, self._token.encode())

    @staticmethod
    def _error(status: int, tag: str, message: str) -> web.Response:
        return web.json_response(errors_body("protocol", tag, message), status=status, content_type=MEDIA_TYPE)

    async def node(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "access-denied", "a valid bearer token is required")
        return web.json_response(node_tree(self.site, self.links), content_type=MEDIA_TYPE)

    async def unknown(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "access-denied", "a valid bearer token is required")
        return self._error(404, "invalid-value", "only the etsi-qkd-sdn-node:qkd_node resource is served")
