"""Who may scrape (basic auth, bcrypt) and who may steer the exporter (the admin bearer token).

bcrypt is slow on purpose (~0.3 s at cost 12), so checking it on every request lets wrong
passwords starve scrapes and lets anyone tell known user names from unknown ones by the reply
time. ``BasicAuth`` therefore

- remembers the credentials that passed (at most ``CACHE_SIZE``), keyed by an HMAC of user,
  hash and password under a key made at start, so no password is kept: a scraper pays bcrypt
  once, not once per scrape;
- checks an unknown user's password against a configured hash (the result is discarded), so
  both cost the same bcrypt time;
- runs bcrypt on ``BCRYPT_WORKERS`` thread(s) with at most ``BCRYPT_QUEUE`` checks waiting; past
  that a request is answered 429 at once, so failed attempts can use one core at most and
  never queue scrapes behind them;
- answers passwords bcrypt cannot take (over 72 bytes) with a plain 401, as any wrong password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import secrets
from collections import OrderedDict
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


class BasicAuth:
    """Checks basic credentials against ``users`` (name -> bcrypt hash); no users: everyone passes."""

    def __init__(self, users: Mapping[str, str]):
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        #: what an unknown user's password is checked against: a configured hash, so the time is a known user's
        self._decoy = next(iter(self._users.values()), b"")
        self._key = secrets.token_bytes(32)
        self._passed: OrderedDict[bytes, None] = OrderedDict()
        self._pool = ThreadPoolExecutor(BCRYPT_WORKERS, thread_name_prefix="bcrypt")
        self._waiting = 0

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def _cache_key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user.encode(), hashed, password):
            mac.update(len(part).to_bytes(8, "big") + part)
        return mac.digest()

    async def check(self, header: str | None) -> Verdict:
        """The verdict on an ``Authorization`` header (call on the server's event loop)."""
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
        if self._waiting >= BCRYPT_WORKERS + BCRYPT_QUEUE:
            return Verdict.BUSY
        self._waiting += 1
        try:
            matches = await asyncio.get_running_loop().run_in_executor(
                self._pool, bcrypt.checkpw, password, hashed or self._decoy)
        finally:
            self._waiting -= 1
        if key is None or not matches:
            return Verdict.DENIED
        self._passed[key] = None
        if len(self._passed) > CACHE_SIZE:
            self._passed.popitem(last=False)
        return Verdict.OK

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization: Bearer`` header carries ``token`` (compared in constant time); an
    empty token matches nothing, whatever is offered."""
    offered = credentials(header, "Bearer")
    return bool(token) and offered is not None and hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token.encode())
