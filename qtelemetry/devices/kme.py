"""A simulated ETSI GS QKD 014 KME: one per site, serving the SAEs of that site over mutual TLS.

The calling SAE is the common name of its client certificate. A master SAE gets keys with
``enc_keys`` (GET or POST); they are drawn from the simulated link's key store, so demand
really consumes key, and handed to the slave SAE's KME through a ``KeyRelay``: the slave gets
each key once, by ID, with ``dec_keys``. Errors follow clause 6.5 with the codes of clause 5:
400 for a request the KME cannot serve as asked, 401 for an SAE it does not serve, and 503
when the store holds too little key (a server-side condition that may clear).
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from qtelemetry.devices.links import SimulatedLink, links_of, peer
from qtelemetry.devices.serving import client_name
from qtelemetry.errors import DriverError
from qtelemetry.standards import etsi014
from qtelemetry.standards.documents import parse, rejection

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class KmeLimits:
    """What the KME reports in Status and enforces on requests (sizes in bits)."""

    key_size: int = 256
    max_key_per_request: int = 128
    min_key_size: int = 64
    max_key_size: int = 8192


class KeyRelay:
    """Keys a master's KME handed out, waiting for the slave's KME; each is handed over once.

    Shared by the KMEs of one device process and used from its event loop. Bounded in bytes:
    past ``capacity_bytes`` of waiting key, the oldest keys are forgotten (never-retrieved probe
    keys, up to 1 KiB each, must not grow memory without end).
    """

    def __init__(self, capacity_bytes: int = 16 * 2**20):
        self._capacity = capacity_bytes
        self._bytes = 0
        self._keys: OrderedDict[uuid.UUID, tuple[str, str, str, bytes]] = OrderedDict()

    def put(self, link: str, master: str, slave: str, keys: Mapping[uuid.UUID, bytes]) -> None:
        for key_id, key in keys.items():
            if (old := self._keys.pop(key_id, None)) is not None:
                self._bytes -= len(old[3])
            self._keys[key_id] = (link, master, slave, key)
            self._bytes += len(key)
        while self._bytes > self._capacity:
            self._bytes -= len(self._keys.popitem(last=False)[1][3])

    def take(self, link: str, master: str, slave: str, key_ids: Sequence[uuid.UUID]) -> list[bytes] | None:
        """The keys with these IDs for this link and SAE pair, removed; None (and none removed) if any is missing."""
        if any(self._keys.get(k, ())[:3] != (link, master, slave) for k in key_ids) or len(set(key_ids)) < len(key_ids):
            return None
        keys = [self._keys.pop(k)[3] for k in key_ids]
        self._bytes -= sum(map(len, keys))
        return keys


class RequestError(Exception):
    """An ETSI 014 error answer: HTTP status and the clause 6.5 body."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.body = status, {"message": message, **({"details": details} if details else {})}


class Kme:
    """The KME of ``site``; ``saes`` maps every SAE ID of the simulation to its site."""

    def __init__(self, site: str, links: Sequence[SimulatedLink], saes: Mapping[str, str], relay: KeyRelay,
                 limits: KmeLimits = KmeLimits()):
        self.site, self.saes, self.relay, self.limits = site, dict(saes), relay, limits
        self._links = {peer(link, site): link for link in links_of(site, links)}
        if len(self._links) < len(links_of(site, links)):
            raise ValueError(f"site {site}: ETSI 014 names a key store by its SAE pair, so at most one link per site pair")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        api = "/api/v1/keys/{sae_id}/"
        app.router.add_get(api + "status", self.status)
        app.router.add_route("*", api + "enc_keys", self.enc_keys)
        app.router.add_route("*", api + "dec_keys", self.dec_keys)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return web.json_response(exc.body, status=exc.status)

    def _caller(self, request: web.Request) -> str:
        sae = client_name(request)
        if sae is None:
            raise RequestError(401, "Unauthorized: a client certificate naming the SAE is required")
        if self.saes.get(sae) != self.site:
            raise RequestError(401, f"Unauthorized: SAE {sae} is not served by the KME of site {self.site}")
        return sae

    def _link(self, other_sae: str) -> SimulatedLink:
        link = self._links.get(self.saes.get(other_sae, ""))
        if link is None:
            raise RequestError(400, "Bad request format: no key stream with that SAE",
                               [{"parameter": "SAE_ID", "error": "unknown, or no link to its site"}])
        return link

    async def status(self, request: web.Request) -> web.Response:
        master, slave = self._caller(request), request.match_info["sae_id"]
        link, limits = self._link(slave), self.limits
        stored, capacity = link.key_store()
        return web.json_response(etsi014.Status(
            source_KME_ID=f"kme-{self.site}", target_KME_ID=f"kme-{self.saes[slave]}", master_SAE_ID=master,
            slave_SAE_ID=slave, key_size=limits.key_size, stored_key_count=int(stored // limits.key_size),
            max_key_count=int(capacity // limits.key_size), max_key_per_request=limits.max_key_per_request,
            max_key_size=limits.max_key_size, min_key_size=limits.min_key_size, max_SAE_ID_count=0,
        ).model_dump(exclude_none=True))

    async def enc_keys(self, request: web.Request) -> web.Response:
        master, slave = self._caller(request), request.match_info["sae_id"]
        link = self._link(slave)
        ask = await _key_request(request)
        number, size = ask.number or 1, ask.size or self.limits.key_size
        problems = [{"parameter": name, "error": error} for name, error in (
            ("number", number > self.limits.max_key_per_request and "above max_key_per_request"),
            ("size", not self.limits.min_key_size <= size <= self.limits.max_key_size and "outside min/max_key_size"),
            ("size", size % 8 and "not a multiple of 8"),
            ("additional_slave_SAE_IDs", ask.additional_slave_SAE_IDs and "not supported (max_SAE_ID_count 0)"),
            ("extension_mandatory", ask.extension_mandatory and "no extension is supported"),
        ) if error]
        if problems:
            raise RequestError(400, "Bad request format: requested parameters do not adhere to KME configuration",
                               problems)
        if not link.withdraw(number * size):
            raise RequestError(503, "Server error: not enough key material for this request",
                               [{"parameter": "number", "error": "keys are being exhausted"}])
        keys = {uuid.uuid4(): secrets.token_bytes(size // 8) for _ in range(number)}
        self.relay.put(link.name, master, slave, keys)
        return _container(keys)

    async def dec_keys(self, request: web.Request) -> web.Response:
        slave, master = self._caller(request), request.match_info["sae_id"]
        link = self._link(master)
        key_ids = await _key_ids(request)
        keys = self.relay.take(link.name, master, slave, key_ids)
        if keys is None:
            raise RequestError(400, "Bad request format: key_IDs not found for this SAE pair")
        return _container(dict(zip(key_ids, keys)))


def _container(keys: Mapping[uuid.UUID, bytes]) -> web.Response:
    return web.json_response({"keys": [{"key_ID": str(k), "key": base64.b64encode(v).decode()} for k, v in keys.items()]})


def _validated(model: type[M], data: bytes | dict[str, Any], what: str) -> M:
    """A request body (JSON text, or the query of the GET form) as ``model``; 400 if it is not one."""
    try:
        return parse(model, data, what) if isinstance(data, bytes) else model.model_validate(data)
    except ValidationError as exc:
        raise RequestError(400, f"Bad request format: {rejection(exc, what)}") from None
    except DriverError as exc:
        raise RequestError(400, f"Bad request format: {exc}") from None


def _allowed(request: web.Request) -> None:
    if request.method not in ("GET", "POST"):
        raise RequestError(405, "Method not allowed: use GET or POST")


async def _key_request(request: web.Request) -> etsi014.KeyRequest:
    """Get key's parameters: the query of the GET form or the Key request body of the POST form (6.2)."""
    _allowed(request)
    if request.method == "GET":
        query = {name: request.query[name] for name in ("number", "size") if name in request.query}
        if not all(value.isdigit() and len(value) < 10 for value in query.values()):
            raise RequestError(400, "Bad request format: number and size are positive integers")
        return _validated(etsi014.KeyRequest, {name: int(value) for name, value in query.items()}, "Key request")
    return _validated(etsi014.KeyRequest, await request.read(), "Key request")


async def _key_ids(request: web.Request) -> list[uuid.UUID]:
    """Get key with key IDs' IDs: ``key_ID`` of the GET form or the Key IDs body of the POST form (6.4)."""
    _allowed(request)
    if request.method == "GET":
        data = {"key_IDs": [{"key_ID": value} for value in request.query.getall("key_ID", [])]}
        return [ref.key_ID for ref in _validated(etsi014.KeyIDs, data, "Key IDs").key_IDs]
    return [ref.key_ID for ref in _validated(etsi014.KeyIDs, await request.read(), "Key IDs").key_IDs]
