"""Who may scrape (basic auth, bcrypt) and who may steer the exporter (the admin bearer token).

bcrypt is slow on purpose (~0.3 s at cost 12), so checking it on every request lets wrong
passwords starve scrapes and lets anyone tell known user names from unknown ones by the reply
time. ``BasicAuth`` therefore

- remembers the credentials that passed (at most ``CACHE_SIZE``), keyed by an HMAC of user,
  hash and password under a key made at start, so no password is kept: a scraper pays bcrypt
  once, not once per scrape. A reload keeps them (``use``): an entry matches only while its
  user still has the same hash, so changed or removed credentials stop passing at once;
- checks an unknown user's password against a configured hash (the result is discarded), so
  both cost the same bcrypt time;
- runs bcrypt on ``BCRYPT_WORKERS`` thread(s) with at most ``BCRYPT_QUEUE`` checks waiting; past
  that a request is answered 429 at once, so failed attempts can use one core at most;
- shares that queue fairly between client addresses (an IPv6 /64 counts as one): the worker
  takes the waiting checks in turn by address, and a full queue makes room for an address with
  fewer checks waiting than the one with the most. A client whose password is not remembered
  yet (after a restart, a new scraper) is thus checked after at most one check per other
  guessing address, instead of being refused 429 for as long as the guessing lasts;
- answers passwords bcrypt cannot take (over 72 bytes) with a plain 401, as any wrong password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import secrets
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

import bcrypt

#: Successful checks remembered; a few scrapers and people per exporter.
CACHE_SIZE = 64
#: Threads hashing at once, and checks allowed to wait for one.
BCRYPT_WORKERS = 1
BCRYPT_QUEUE = 8
#: bcrypt hashes the first 72 bytes only; the library refuses longer passwords.
BCRYPT_MAX_BYTES = 72


class Verdict(enum.Enum):
    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"  #: too many checks waiting for bcrypt: try again later (429)


def credentials(header: str | None, scheme: str) -> str | None:
    """The credentials after ``scheme`` (case-insensitive, RFC 9110) in an Authorization header."""
    if header is None:
        return None
    given, _, value = header.partition(" ")
    return value.strip() if given.lower() == scheme.lower() else None


def _basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) of a Basic Authorization header, or None if it is not one (RFC 7617)."""
    value = credentials(header, "Basic")
    if value is None:
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password.encode()) if sep else None


def source_of(address: str | None) -> str:
    """The address a client's checks are queued under: its IP, or its /64 for IPv6 (one host's share)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class BasicAuth:
    """Checks basic credentials against ``users`` (name -> bcrypt hash); no users: everyone passes.

    Use it from one event loop (the server's): the queue is plain asyncio state.
    """

    def __init__(self, users: Mapping[str, str]):
        self._key = secrets.token_bytes(32)
        self._passed: OrderedDict[bytes, None] = OrderedDict()
        self._pool = ThreadPoolExecutor(BCRYPT_WORKERS, thread_name_prefix="bcrypt")
        self._running = 0  #: checks on the worker threads
        #: per source address, the checks waiting for a worker (a future set True when it is their turn,
        #: False when a fairer claim took their place); in the order the addresses take turns
        self._waiting: OrderedDict[str, deque[asyncio.Future[bool]]] = OrderedDict()
        self.use(users)

    def use(self, users: Mapping[str, str]) -> None:
        """Check against ``users`` from now on (a reload); passed checks of unchanged credentials stay."""
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        #: what an unknown user's password is checked against: a configured hash, so the time is a known user's
        self._decoy = next(iter(self._users.values()), b"")

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def _cache_key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user.encode(), hashed, password):
            mac.update(len(part).to_bytes(8, "big") + part)
        return mac.digest()

    async def check(self, header: str | None, address: str | None = None) -> Verdict:
        """The verdict on an ``Authorization`` header from a client at ``address`` (on the server's loop)."""
        if not self._users:
            return Verdict.OK
        parsed = _basic(header)
        if parsed is None or len(parsed[1]) > BCRYPT_MAX_BYTES:
            return Verdict.DENIED
        user, password = parsed
        hashed = self._users.get(user)
        key = None if hashed is None else self._cache_key(user, hashed, password)
        if key is not None and key in self._passed:
            self._passed.move_to_end(key)
            return Verdict.OK
        if not await self._turn(source_of(address)):
            return Verdict.BUSY
        try:
            matches = await asyncio.get_running_loop().run_in_executor(
                self._pool, bcrypt.checkpw, password, hashed or self._decoy)
        finally:
            self._next()
        if key is None or not matches:
            return Verdict.DENIED
        self._passed[key] = None
        if len(self._passed) > CACHE_SIZE:
            self._passed.popitem(last=False)
        return Verdict.OK

    async def _turn(self, source: str) -> bool:
        """Wait for a worker; False if the queue has no room for ``source`` (its fair share is used)."""
        if self._running < BCRYPT_WORKERS:
            self._running += 1
            return True
        queued = sum(map(len, self._waiting.values()))
        if queued >= BCRYPT_QUEUE:
            heaviest = max(self._waiting, key=lambda s: len(self._waiting[s]), default=None)
            if heaviest is None or len(self._waiting[heaviest]) <= len(self._waiting.get(source, ())) + 1:
                return False
            self._dequeue(heaviest, self._waiting[heaviest][-1]).set_result(False)  # its newest check gives way
        ticket: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(source, deque()).append(ticket)
        try:
            return await ticket
        except asyncio.CancelledError:  # the client went away while waiting
            if ticket.done() and not ticket.cancelled() and ticket.result():
                self._next()  # its turn had come: pass it on
            else:
                self._dequeue(source, ticket)
            raise

    def _dequeue(self, source: str, ticket: asyncio.Future[bool]) -> asyncio.Future[bool]:
        queue = self._waiting.get(source)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._waiting[source]
        return ticket

    def _next(self) -> None:
        """A worker is free: give it to the first address in turn (which then goes to the back)."""
        if not self._waiting:
            self._running -= 1
            return
        source, queue = next(iter(self._waiting.items()))
        ticket = queue.popleft()
        del self._waiting[source]
        if queue:
            self._waiting[source] = queue
        ticket.set_result(True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization: Bearer`` header carries ``token`` (compared in constant time); an
    empty token matches nothing, whatever is offered."""
    offered = credentials(header, "Bearer")
    return bool(token) and offered is not None and hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token.encode())
