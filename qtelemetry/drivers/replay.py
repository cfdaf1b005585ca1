"""Replay driver: feeds a recorded link back through the live pipeline, at real time or faster.

A recorded incident then shows on dashboards and fires alerts as it did: each window reaches the
runtime as a polled reading with its recorded counts and length. Window i is delivered at
t0 + (end_i − end_0)/speed, t0 being the first delivery, so ``speed: 20`` plays a minute in
3 s while every window keeps its recorded duration (rates do not change with speed). With
``loop`` the recording starts again with its times shifted by its span, so windows stay in
order; without it the link stops delivering at the end and reads stalled, then down, as any
link without data does.

The driver reads windows through a ``WindowSource`` (``qtelemetry.drivers.formats.recording``): a
recording file (``path``, ``link``: a ``RecordingSource``) or a link's raw detection-event files
(``events``: ``qtelemetry.drivers.event_files``, counted into windows as the replay goes).
Either is read a batch at a time, in a thread of its own, so memory holds one batch whatever the
file's size; at most one read is in flight per link: a poll that times out while a batch is read
stops waiting, the next poll waits for the same read, and stopping the link drops it (the
thread never holds up the process's exit). A row that cannot be used counts one ``bad_row``
error and is skipped; a file that cannot be read counts ``bad_file``, an event file its
``EventError`` reason (the link is down, retried with back-off, the pass starting again and
skipping what it delivered), never stopping other links. The config is checked against the
recording when it is loaded (``check-config``, start, reload): whatever would make the run refuse
the file is a config error, bad rows a warning.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Literal, Sequence

from pydantic import Field, PrivateAttr

from qtelemetry.configfile import ReadableFile
from qtelemetry.drivers.base import CountBatch, DriverError, FieldError, IODriverConfig, SourceEnded, check
from qtelemetry.drivers.event_files import EventFiles
from qtelemetry.drivers.formats.events import ERROR_REASONS
from qtelemetry.estimation.reported import ETSI014, ETSI015

if TYPE_CHECKING:  # pyarrow: imported where a replay needs it, not by every run
    from qtelemetry.drivers.formats.recording import BadRow, LinkInfo, Window, WindowSource

#: Fastest replay: a week of 1 s windows in about a second.
MAX_SPEED = 1e6


class ReplayConfig(IODriverConfig):
    """One link of a recording (``qtelemetry record``), or of raw event files, played back as if it were live."""

    error_reasons: ClassVar[tuple[str, ...]] = ("bad_file", "bad_row", *ERROR_REASONS)
    requires = ("recording", ("pyarrow",))

    type: Literal["replay"]
    path: ReadableFile | None = Field(
        None, description="recording (Parquet, or CSV); relative paths are taken from the config file's directory")
    link: str | None = Field(None, min_length=1, max_length=256,
                             description="the recorded link to play; omit when the recording holds one link")
    events: EventFiles | None = Field(
        None, description="instead of a recording: the link's time-tagged detection files, and what they do not say")
    speed: float = Field(1.0, gt=0.0, le=MAX_SPEED, description="1 = real time; N = N times faster")
    loop: bool = Field(False, description="start again at the end (times shifted, windows stay in order)")
    poll_interval_seconds: float = Field(
        0.001, gt=0.0, le=60.0, description="shortest time between two windows; the recording's times pace the rest")
    timeout_seconds: float = Field(
        4.0, gt=0.0, le=60.0, description="a wait for the next window longer than 2×this+1 s counts a timeout")
    _info: LinkInfo = PrivateAttr()
    _warnings: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @check
    def _one_source(self) -> "ReplayConfig":
        from qtelemetry.drivers.formats.recording import LinkInfo, RecordingError, survey_link

        if self.events is not None:
            if self.path is not None or self.link is not None:
                raise FieldError("events" if self.path is not None else "link",
                                 "a replay reads a recording (`path`, `link`) or event files (`events`), not both")
            nan = float("nan")  # event files carry no plan
            self._info = LinkInfo(self.events.protocol, self.events.estimation_params(), (nan, nan))
            return self
        if self.path is None:
            raise FieldError("path", "missing: a recording (`path`), or event files (`events`)")
        try:
            survey = survey_link(self.path, self.link)
        except RecordingError as exc:
            raise FieldError("path", str(exc)) from None
        self.link, self._info = survey.link, survey.info
        if survey.first_bad is not None:
            self._warnings = [("path", f"{survey.bad:,} of the {survey.rows:,} rows of link {self.link!r} cannot be "
                                       f"used: each counts bad_row and is skipped; the first: "
                                       f"{survey.first_bad.describe(self.path)}")]
        return self

    def warnings(self) -> list[tuple[str, str]]:
        """The recording's rows the replay will skip."""
        return list(self._warnings)

    @property
    def source(self) -> str:
        """What is replayed, for messages."""
        return self.events.paths if self.events is not None else f"{self.path}, link {self.link!r}"

    @property  # type: ignore[override]
    def protocol(self) -> str:
        """The recorded link's protocol, or the event files'."""
        return self._info.protocol

    @property  # type: ignore[override]
    def estimated_by(self) -> str:
        return "device" if self._info.protocol in (ETSI014, ETSI015) else "qtelemetry"

    def estimation_params(self) -> dict[str, float]:
        """The parameters the link was estimated with, as recorded in its first usable row (event files: the config's)."""
        return dict(self._info.params)

    def plan(self) -> tuple[float, float]:
        """The recorded link's loss budget and expected key rate (its first usable row's); event files have none."""
        return self._info.plan

    def build(self) -> "ReplayDriver":
        return ReplayDriver(self)


class ReplayDriver:
    """Delivers one recorded link's windows on the recording's clock, scaled by ``speed``."""

    def __init__(self, config: ReplayConfig):
        self.config = config
        self._batches: Iterator[Sequence[Window | BadRow] | None] | None = None  # the pass under way
        self._read: asyncio.Future[Sequence[Window | BadRow] | None] | None = None  # its read in flight
        self._batch: Sequence[Window | BadRow] = ()
        self._next = 0  # in the batch
        self._pass: tuple[float, float] | None = None  # (first start, last end) of the pass's windows so far
        self._shift = 0.0  # added to recorded times: whole spans of the recording, one per loop
        self._delivered = -float("inf")  # end (shifted) of the last window delivered
        self._clock: tuple[float, float] | None = None  # (loop time, recorded end) of the first delivery

    def _source(self) -> WindowSource:
        from qtelemetry.drivers.formats.recording import RecordingSource

        config = self.config
        return config.events if config.events is not None else RecordingSource(config.path or "", config.link or "",
                                                                                 config.protocol)

    async def _peek(self) -> Window | BadRow | None:
        """The next window or bad row of the pass, reading batches as needed; None at its end."""
        from qtelemetry.drivers.formats.recording import RecordingError

        while self._next == len(self._batch):
            if self._batches is None:
                self._batches = iter(self._source().batches())
            if self._read is None:
                self._read = _in_daemon_thread(lambda batches=self._batches: next(batches, None))
            try:
                batch = await asyncio.shield(self._read)  # a timeout stops the wait, not the read
            except (RecordingError, DriverError) as exc:  # EventError: a DriverError with its own reason
                self._read = self._batches = None
                self._batch, self._next, self._pass = (), 0, None
                raise exc if isinstance(exc, DriverError) else DriverError("bad_file", str(exc)) from None
            self._read = None
            if batch is None:
                return None
            self._batch, self._next = batch, 0
        return self._batch[self._next]

    def _end_of_pass(self) -> None:
        """Start the next pass (``loop``), or say the source has ended."""
        span, self._batches, self._pass = self._pass, None, None
        if span is None:
            raise DriverError("bad_file", f"{self.config.source}: no usable window")
        if not self.config.loop:
            raise SourceEnded(f"{self.config.source}: replay finished")
        self._shift += span[1] - span[0]

    async def acquire(self) -> CountBatch:
        """The next window, once its time has come; SourceEnded after the last one (without loop)."""
        while True:
            row = await self._peek()
            if row is None:
                self._end_of_pass()
                continue
            if not hasattr(row, "counts"):  # a BadRow
                self._next += 1
                raise DriverError("bad_row", row.describe(self.config.path or self.config.source))
            self._pass = (row.start if self._pass is None else self._pass[0], row.end)
            end = row.end + self._shift
            if end > self._delivered:
                break
            self._next += 1  # delivered before the file failed and the pass started again
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = (loop.time(), end)
        due = self._clock[0] + (end - self._clock[1]) / self.config.speed
        await asyncio.sleep(max(0.0, due - loop.time()))
        self._next += 1
        self._delivered = end
        return CountBatch(start=row.start + self._shift, duration_s=row.duration, counts=row.counts)

    async def aclose(self) -> None:
        """Drop the pass; a read in flight ends with its batch, and nobody waits for it."""
        if self._read is not None:
            self._read.cancel()
        self._read = self._batches = None
        self._batch = ()


def _in_daemon_thread(read: Callable[[], Any]) -> asyncio.Future[Any]:
    """``read()`` on a thread of its own, its outcome on a future of the running loop. A daemon
    thread: a read stuck in the filesystem never holds up the process's exit (SIGTERM)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def run() -> None:
        try:
            result, error = read(), None
        except BaseException as exc:  # handed to whoever awaits the read
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop has closed: the link has stopped, nobody waits
            pass

    threading.Thread(target=run, name="replay-read", daemon=True).start()
    return future
