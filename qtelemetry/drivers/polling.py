"""The time span a polled device's reading covers: from the previous good reading to this one."""

from __future__ import annotations

import time


class ReadingClock:
    """Start and duration of successive readings; a failed poll extends the next reading's span.

    The first reading has no predecessor and is taken to cover one nominal poll interval.
    """

    def __init__(self, poll_interval_s: float):
        self._poll_interval_s = poll_interval_s
        self._last: float | None = None

    def span(self) -> tuple[float, float]:
        """(start, duration) in Unix seconds of the reading taken now."""
        now = time.time()
        start = now - self._poll_interval_s if self._last is None else self._last
        self._last = now
        return start, max(now - start, 1e-6)
