"""Log lines that machines can parse and nobody can forge: logfmt (default) or JSON, one per event.

    ts=2026-11-28T12:41:29.784Z level=WARNING logger=qtelemetry.exporter.pipeline msg="batch dropped" link=metro reason=stalled

Every value is quoted and escaped by the formatter (logfmter, python-json-logger), so a newline
or a ``level=ERROR`` inside a message, a field or a library's message stays inside its value.
Control characters and the Unicode line and paragraph separators (U+0085, U+2028, U+2029: line
breaks to a consumer that splits as ``str.splitlines`` does; a terminal's escapes) are escaped as
``\\uXXXX``, which logfmt and JSON parsers read back as the character (JSON escapes all but ASCII).
Pass fields as ``extra``, not inside the message:
``log.warning("batch dropped", extra={"link": name, "reason": reason})``; they become keys of
their own (``link=…`` in logfmt, ``"link": …`` in JSON). Field names must not be LogRecord
attributes (``name``, ``msg``, ``args``, ``message``, ``module``, …): logging refuses those.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import TextIO

from logfmter import Logfmter
from pythonjsonlogger.json import JsonFormatter

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("logfmt", "json")
_HANDLER_NAME = "qtelemetry"


#: Characters no log line may hold raw: C0 and C1 controls, DEL, line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class _Rfc3339:
    """``ts`` in RFC 3339, UTC, milliseconds: ``2026-11-28T12:41:29.784Z``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class LogfmtFormatter(_Rfc3339, Logfmter):
    def __init__(self) -> None:
        super().__init__(keys=["ts", "level", "logger"],
                         mapping={"ts": "asctime", "level": "levelname", "logger": "name"})

    @classmethod
    def format_string(cls, value: str) -> str:
        """As logfmter, but a value holding a character of ``_UNSAFE`` is quoted with it escaped as
        ``\\uXXXX`` (logfmter leaves all but newlines raw, and unquoted)."""
        if not _UNSAFE.search(value):
            return super().format_string(value)
        value = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", value) + '"'


class JsonLineFormatter(_Rfc3339, JsonFormatter):
    def __init__(self) -> None:
        super().__init__("{asctime}{levelname}{name}{message}", style="{",
                         rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"})


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record arrives (tests swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Send every logger's records, the libraries' and Python warnings too, to ``stream``
    (default: stderr) in ``fmt``; calling it again replaces the previous set-up."""
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
