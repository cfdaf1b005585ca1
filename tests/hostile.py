"""An HTTP server that answers what a test tells it to: broken, hostile, huge or slow; with helpers
for answers of the Prometheus HTTP API.

``HostileServer(answer)`` serves on a free loopback port; ``answer(path, form)`` gets the path and
the request's form fields (or, for a JSON body, nothing) and returns a ``Reply``: a status, the
body as chunks, a pause between chunks (a server that drips) and an optional Content-Length that
need not be the truth (a body that breaks off). Connections close after each answer, as HTTP/1.0.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable


@dataclass
class Reply:
    status: int = 200
    chunks: Iterable[bytes] = ()
    pause_s: float = 0.0
    content_length: int | None = None
    content_type: str = "application/json"


def body(document: Any) -> Reply:
    """A 200 with ``document`` as JSON (text as it is)."""
    return Reply(chunks=[document.encode() if isinstance(document, str) else json.dumps(document).encode()])


def grid(form: dict[str, str]) -> list[float]:
    """The timestamps a range query asks for."""
    start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
    return [start + i * step for i in range(int((end - start) / step + 1e-9) + 1)]


def matrix(*series: dict) -> dict:
    return {"status": "success", "data": {"resultType": "matrix", "result": list(series)}}


Answer = Callable[[str, dict[str, str]], Reply]


class HostileServer:
    def __init__(self, answer: Answer):
        self.answer = answer
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.bytes_sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode(errors="replace")).items()}
                path = urllib.parse.urlsplit(self.path).path
                outer.requests.append((path, form))
                reply = outer.answer(path, form)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                if reply.content_length is not None:
                    self.send_header("Content-Length", str(reply.content_length))
                self.end_headers()
                try:
                    for chunk in reply.chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        outer.bytes_sent += len(chunk)
                        time.sleep(reply.pause_s)
                except (BrokenPipeError, ConnectionResetError):  # the client hung up: what a cap does
                    pass

            do_DELETE = do_POST  # noqa: N815 (the fault client's other method)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Shape:
    """A hostile answer to every range query (and, if given, to every series query)."""

    range_answer: Answer
    series_answer: Answer = field(default=lambda path, form: body({"status": "success", "data": []}))

    def __call__(self, path: str, form: dict[str, str]) -> Reply:
        return self.range_answer(path, form) if path.endswith("query_range") else self.series_answer(path, form)
