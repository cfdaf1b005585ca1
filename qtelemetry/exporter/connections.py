"""The server's open connections, and how long each has waited for its client.

A client owes the server one step at a time: the TLS handshake, a request head, after each
answer the next request head. A connection that waits longer than ``wait_timeout`` is closed,
and when ``limit`` connections are open a new one closes the connection that has waited
longest. So slow or idle clients, however many, hold a socket for a bounded time and cannot
keep a scraper out; on the event loop they cost a file descriptor each, never a thread.
"""

from __future__ import annotations

from typing import Callable, Hashable


class Connections:
    """Open connections by key; the server's event loop is the only caller. ``rejected(reason)``
    hears of every connection closed or refused here: ``connection_limit`` or ``idle_timeout``."""

    def __init__(self, limit: int, wait_timeout: float, rejected: Callable[[str], None] = lambda reason: None):
        self.limit = limit
        self.wait_timeout = wait_timeout
        self._rejected = rejected
        self._close: dict[Hashable, Callable[[], None]] = {}
        #: connections waiting for their client, oldest first, and since when (loop time)
        self._waiting: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._close)

    def opened(self, key: Hashable, close: Callable[[], None], now: float) -> bool:
        """Count a new connection waiting for its client; False if every slot is busy answering."""
        if len(self._close) >= self.limit:
            self._rejected("connection_limit")
            if not self._waiting:
                return False
            self._drop(next(iter(self._waiting)))
        self._close[key] = close
        self._waiting[key] = now
        return True

    def busy(self, key: Hashable) -> None:
        """The client has sent what it owed: the server is answering."""
        self._waiting.pop(key, None)

    def waiting(self, key: Hashable, now: float) -> None:
        """The server has answered: the clock runs for the client again."""
        if key in self._close:
            self._waiting.pop(key, None)
            self._waiting[key] = now

    def closed(self, key: Hashable) -> None:
        self._close.pop(key, None)
        self._waiting.pop(key, None)

    def expire(self, now: float) -> int:
        """Close the connections that waited too long; how many."""
        late = [key for key, since in self._waiting.items() if now - since > self.wait_timeout]
        for key in late:
            self._rejected("idle_timeout")
            self._drop(key)
        return len(late)

    def _drop(self, key: Hashable) -> None:
        close = self._close.pop(key)
        self._waiting.pop(key, None)
        close()
