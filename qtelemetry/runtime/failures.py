"""Log lines for failing links: what an operator needs, never a line per failed poll.

A link gets a warning when it starts failing or fails for a new reason, and one line when it
recovers; a link that keeps failing, or flaps, for the same reason is reminded of at most every
``REMIND_S``. The counters carry every single failure; the log only tells the story.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Sequence

log = logging.getLogger("qtelemetry.runtime")

#: While a link keeps failing for the same reason, repeat the warning this often at most.
REMIND_S = 60.0


class FailureLog:
    """Which links are failing, and why, as far as the log has told."""

    def __init__(self, names: Sequence[str]):
        self._names = names
        self._lock = threading.Lock()
        self._warned: dict[int, tuple[str, float]] = {}  # link -> (reason, when last warned)
        self._down: set[int] = set()  # warned about and not yet recovered

    def failed(self, links: Sequence[int], reason: str, message: str, down: bool = True) -> None:
        """Warn about ``links`` failing for ``reason``; ``down=False`` when the link itself is fine
        (its reading was dropped because the exporter is behind), so no recovery line follows."""
        now = time.monotonic()
        with self._lock:
            due = [i for i in links if self._due(i, reason, now)]
            self._warned.update({i: (reason, now) for i in due})
            if down:
                self._down.update(due)
        if len(due) == 1:
            log.warning("batch dropped", extra={"link": self._names[due[0]], "reason": reason, "detail": message})
        elif due:
            shown = ",".join(self._names[i] for i in due[:5]) + (",..." if len(due) > 5 else "")
            log.warning("batches dropped", extra={"links": shown, "count": len(due), "reason": reason, "detail": message})

    def _due(self, link: int, reason: str, now: float) -> bool:
        last = self._warned.get(link)
        return last is None or last[0] != reason or now - last[1] >= REMIND_S

    def recovered(self, links: Iterable[int]) -> None:
        """``links`` delivered good data; the ones the log called down are back. Called every
        cycle for every good link, so nothing is done unless some link is down."""
        if not self._down:
            return
        with self._lock:
            back = [i for i in map(int, links) if i in self._down]
            self._down.difference_update(back)
        for i in back:
            log.info("link recovered", extra={"link": self._names[i]})
