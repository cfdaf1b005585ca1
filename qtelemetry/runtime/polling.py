"""Polled (I/O) links: one asyncio event loop, one task per link, none of them a thread.

Each task polls its device at the link's own interval under a timeout, backs off exponentially
while the device fails and returns to its interval when it answers. A device that hangs costs
one pending task; a driver that returns at once is still polled only at its interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Callable, Mapping

from qtelemetry.drivers.base import DriverError, IODriver, IODriverConfig, SourceEnded

log = logging.getLogger(__name__)

#: Longest wait between two polls of a failing device, unless its own interval is longer.
BACKOFF_CAP_S = 30.0


def guard_timeout(config: IODriverConfig) -> float:
    """The runtime's outer limit on one ``acquire`` (the driver enforces its own per request)."""
    return 2.0 * config.timeout_seconds + 1.0


class PollLoop:
    """Runs one poll task per polled link on a background event loop.

    ``on_reading(link, reading, received_at) -> bool`` takes each reading (False: rejected);
    ``on_failure(link, reason, message)`` each failure. Both run on the loop's thread.
    """

    def __init__(self, on_reading: Callable[[str, object, float], bool], on_failure: Callable[[str, str, str], None]):
        self._on_reading, self._on_failure = on_reading, on_failure
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="poll-loop", daemon=True)
        self._tasks: dict[str, tuple[IODriverConfig, asyncio.Task[None]]] = {}

    def start(self, links: Mapping[str, IODriverConfig]) -> None:
        self._thread.start()
        self.update(links)

    def update(self, links: Mapping[str, IODriverConfig]) -> None:
        """Poll exactly ``links``: new or changed links start, removed ones stop, the rest go on."""
        asyncio.run_coroutine_threadsafe(self._update(dict(links)), self._loop).result(timeout=10.0)

    async def _update(self, links: dict[str, IODriverConfig]) -> None:
        ending = [name for name, (config, _) in self._tasks.items() if links.get(name) != config]
        await self._end([self._tasks.pop(name)[1] for name in ending])
        for name, config in links.items():
            if name not in self._tasks:
                self._tasks[name] = (config, asyncio.create_task(self._poll(name, config), name=f"poll-{name}"))

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel every task, let drivers close, stop the loop."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._end([task for _, task in self._tasks.values()]), self._loop).result(timeout)
        except Exception as exc:  # a driver that will not close must not hold up shutdown
            log.warning("poll loop did not stop cleanly", extra={"reason": str(exc)})
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    @staticmethod
    async def _end(tasks: list[asyncio.Task[None]]) -> None:
        """Cancel until every task has ended (a driver may swallow one cancellation), for at most 3 s."""
        deadline = asyncio.get_running_loop().time() + 3.0
        pending = set(tasks)
        while pending and asyncio.get_running_loop().time() < deadline:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)

    async def _poll(self, link: str, config: IODriverConfig) -> None:
        interval = config.poll_interval_seconds
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0.0, interval))  # spread many links over the interval
        driver: IODriver | None = None
        failures = 0
        try:
            while True:
                due = loop.time() + interval
                try:
                    driver = driver or config.build()
                    async with asyncio.timeout(guard_timeout(config)):
                        reading = await driver.acquire()
                except SourceEnded as exc:
                    log.info("link gets no more data", extra={"link": link, "reason": str(exc)})
                    return
                except TimeoutError:
                    ok = self._fail(link, "timeout", f"no answer within {guard_timeout(config):g} s")
                except DriverError as exc:
                    ok = self._fail(link, exc.reason, str(exc))
                except Exception as exc:  # a driver bug is counted, never fatal
                    ok = self._fail(link, "driver_exception", f"{type(exc).__name__}: {exc}")
                else:
                    ok = self._on_reading(link, reading, time.time())
                failures = 0 if ok else failures + 1
                if failures:
                    due = loop.time() + min(interval * 2.0 ** failures, max(interval, BACKOFF_CAP_S))
                await asyncio.sleep(max(0.0, due - loop.time()))
        finally:
            if driver is not None:
                await _close(driver)

    def _fail(self, link: str, reason: str, message: str) -> bool:
        self._on_failure(link, reason, message)
        return False


async def _close(driver: IODriver) -> None:
    try:
        async with asyncio.timeout(2.0):
            await driver.aclose()
    except Exception as exc:
        log.debug("driver close failed", extra={"reason": str(exc)})
