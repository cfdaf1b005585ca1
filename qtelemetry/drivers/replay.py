"""Replay driver: feeds a recorded link back through the live pipeline, at real time or faster.

A recorded incident then shows on dashboards and fires alerts as it did: each window reaches the
runtime as a polled reading with its recorded counts and length. Window i is delivered at
t0 + (end_i − end_0)/speed, t0 being the first delivery, so ``speed: 20`` plays a minute in
3 s while every window keeps its recorded duration (rates do not change with speed). With
``loop`` the recording starts again with its times shifted by its span, so windows stay in
order; without it the link stops delivering at the end and reads stalled, then down, as any
link without data does.

The driver reads windows through a ``WindowSource`` (``qtelemetry.recording.format``): a
recording file (``path``, ``link``: a ``RecordingSource``) or a link's raw detection-event files
(``events``: ``qtelemetry.drivers.event_files``, counted into windows when the replay starts).
A row that cannot be used counts one ``bad_row`` error and is skipped; a file that cannot be
read counts ``bad_file``, an event file its ``EventError`` reason (the link is down, retried
with back-off), never stopping other links.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, PrivateAttr

from qtelemetry.configfile import ReadableFile
from qtelemetry.drivers.base import CountBatch, DriverError, FieldError, IODriverConfig, SourceEnded, check
from qtelemetry.drivers.event_files import EventFiles
from qtelemetry.estimation.reported import ETSI014, ETSI015
from qtelemetry.recording.events import ERROR_REASONS

if TYPE_CHECKING:  # the recording format imports the drivers' fault kinds: imported where used
    from qtelemetry.recording.format import BadRow, LinkInfo, Window

#: Fastest replay: a week of 1 s windows in about a second.
MAX_SPEED = 1e6


class ReplayConfig(IODriverConfig):
    """One link of a recording (``qtelemetry record``), or of raw event files, played back as if it were live."""

    error_reasons: ClassVar[tuple[str, ...]] = ("bad_file", "bad_row", *ERROR_REASONS)
    requires = ("recording", ("pandas", "pyarrow"))

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

    @check
    def _one_source(self) -> "ReplayConfig":
        from qtelemetry.recording.format import LinkInfo, RecordingError, link_info

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
            self.link, self._info = link_info(self.path, self.link)
        except RecordingError as exc:
            raise FieldError("path", str(exc)) from None
        return self

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
        """The parameters the link was estimated with, as recorded in its first row (event files: the config's)."""
        return dict(self._info.params)

    def plan(self) -> tuple[float, float]:
        """The recorded link's loss budget and expected key rate (its first row's); event files have none."""
        return self._info.plan

    def build(self) -> "ReplayDriver":
        return ReplayDriver(self)


class ReplayDriver:
    """Delivers one recorded link's windows on the recording's clock, scaled by ``speed``."""

    def __init__(self, config: ReplayConfig):
        self.config = config
        self._rows: list[Window | BadRow] | None = None
        self._next = 0
        self._shift = 0.0  # added to recorded times: whole spans of the recording, one per loop
        self._span = 0.0
        self._clock: tuple[float, float] | None = None  # (loop time, recorded end) of the first delivery

    async def _load(self) -> list[Window | BadRow]:
        from qtelemetry.recording.format import RecordingError, RecordingSource, Window, WindowSource

        config = self.config
        source: WindowSource = (config.events if config.events is not None else
                                RecordingSource(config.path or "", config.link or "", config.protocol))
        try:
            rows = await asyncio.to_thread(source.read)  # EventError: a DriverError with its own reason
        except RecordingError as exc:
            raise DriverError("bad_file", str(exc)) from None
        windows = [w for w in rows if isinstance(w, Window)]
        if not windows:
            raise DriverError("bad_file", f"{config.source}: no usable window")
        self._span = windows[-1].end - windows[0].start
        return rows

    async def acquire(self) -> CountBatch:
        """The next window, once its time has come; SourceEnded after the last one (without loop)."""
        if self._rows is None:
            self._rows = await self._load()
        if self._next == len(self._rows):
            if not self.config.loop:
                raise SourceEnded(f"{self.config.source}: replay finished")
            self._next, self._shift = 0, self._shift + self._span
        row = self._rows[self._next]
        if not hasattr(row, "counts"):  # a BadRow
            self._next += 1
            raise DriverError("bad_row", row.describe(self.config.path))
        loop = asyncio.get_running_loop()
        end = row.end + self._shift
        if self._clock is None:
            self._clock = (loop.time(), end)
        due = self._clock[0] + (end - self._clock[1]) / self.config.speed
        await asyncio.sleep(max(0.0, due - loop.time()))
        self._next += 1
        return CountBatch(start=row.start + self._shift, duration_s=row.duration, counts=row.counts)

    async def aclose(self) -> None:
        self._rows = None
