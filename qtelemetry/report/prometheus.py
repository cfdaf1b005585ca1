"""A small client of the Prometheus HTTP API that no answer can crash, hang or blow up.

Prometheus refuses a range query of more than 11,000 points per series, so a long period at a
fine step is asked for in chunks of at most ``MAX_POINTS`` steps and put back together on one
time grid. Authentication and TLS take the options of Prometheus' own ``http_config`` (basic
auth, bearer token, CA file, client certificate), so the report reads any Prometheus a
dashboard could. Missing data stays NaN: a step without a sample is never a zero.

What a broken or hostile server sends is held to bounds before anything uses it:

- every answer is read with an overall deadline (``HttpConfig.timeout_s`` per query, and the
  report's own ``deadline``): a server that drips one byte every few seconds is cut off, where
  a per-read timeout would wait forever;
- an answer larger than ``MAX_RESPONSE_BYTES`` is cut off as it arrives; the chunk is asked for
  again in smaller pieces (a large fleet's week at a fine step), and refused once a single step
  is still too large;
- every answer is checked against the API's documented shape (``/api/v1/query_range``: a
  ``matrix`` of series with string labels and ``[time, "value"]`` pairs on the queried grid) by
  pydantic's JSON parser, which also bounds nesting; what does not fit is a ``PrometheusError``
  naming the query, the place in the answer and what was wrong;
- a query's matrix holds at most ``MAX_CELLS`` values (series x steps).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Annotated, Generic, Literal, TypeVar

import aiohttp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qtelemetry.configfile import printable
from qtelemetry.drivers.https import TooLarge, classify, read_body

log = logging.getLogger(__name__)

#: Points per series and query; Prometheus' limit is 11,000 (api/v1: "exceeded maximum resolution").
MAX_POINTS = 10_000
#: Largest answer read (~1.3 million points); a larger one is asked for again in smaller chunks.
MAX_RESPONSE_BYTES = 32 * 2**20
#: Chunks a too-large chunk is split into when asked for again.
SPLIT = 8
#: Values of one query's matrix (series x steps): 400 MB of float64.
MAX_CELLS = 50_000_000


def redacted_url(url: str) -> str:
    """``url`` without user info, query or fragment: what logs and the report may show."""
    parts = urllib.parse.urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PrometheusError(Exception):
    """Prometheus could not be reached, refused a query or answered nonsense; the message says which."""


class Unreachable(PrometheusError):
    """No (complete) answer came: the connection failed or the deadline passed."""


class AnswerTooLarge(PrometheusError):
    """An answer grew past ``MAX_RESPONSE_BYTES`` and was cut off."""


@dataclass(frozen=True)
class HttpConfig:
    """How to reach Prometheus, as in its ``http_config``: basic auth or bearer token, TLS files."""

    basic_auth: tuple[str, str] | None = None
    bearer_token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 120.0  #: deadline of one query, answer read in full

    def ssl_context(self) -> ssl.SSLContext:
        """The client's TLS context; ValueError naming the option whose file does not load."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--ca-file: cannot load {self.ca_file}: {exc}") from None
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"--cert-file/--key-file: cannot load {self.cert_file}: {exc}") from None
        return context


# --- the API's answers, as documented (https://prometheus.io/docs/prometheus/latest/querying/api/) ---

class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class _Series(_Strict):
    metric: dict[str, str]
    values: Annotated[list[tuple[float, str]], Field(min_length=1)]


class _Matrix(_Strict):
    resultType: Literal["matrix"]  # noqa: N815 - the API's name
    result: list[_Series]


class _Sample(_Strict):
    metric: dict[str, str]
    value: tuple[float, str]


class _Vector(_Strict):
    resultType: Literal["vector"]  # noqa: N815
    result: list[_Sample]


Data = TypeVar("Data")


class _Answer(_Strict, Generic[Data]):
    status: Literal["success"]
    data: Data


class _Refusal(BaseModel):
    """What Prometheus sends with an error (extra keys, ``data`` included, are ignored)."""

    status: Literal["error"]
    errorType: str = ""  # noqa: N815
    error: str = ""


def _problem(exc: ValidationError) -> str:
    """The first problem of a validation error: where in the answer, and what."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(map(str, first["loc"])) or "the answer"
    return printable(f"{where}: {first['msg']}", 200)


@dataclass(frozen=True)
class Matrix:
    """Series of one query on a common grid: ``values[i, j]`` of series ``labels[i]`` at ``times[j]``."""

    times: np.ndarray
    labels: list[dict[str, str]]
    values: np.ndarray

    def by(self, label: str) -> dict[str, np.ndarray]:
        """Values per value of ``label`` (e.g. per link); series without the label are left out."""
        return {labels[label]: self.values[i] for i, labels in enumerate(self.labels) if label in labels}


@dataclass
class Progress:
    """Counts queries and logs how far a long report is, at most every ``every`` seconds."""

    every: float = 5.0
    queries: int = 0
    _last: float = field(default_factory=time.monotonic)

    def tick(self, what: str, chunk: int, chunks: int) -> None:
        self.queries += 1
        if time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            log.info("querying Prometheus", extra={"queries": self.queries, "query": what, "chunk": f"{chunk}/{chunks}"})


class Prometheus:
    """Range and metadata queries against one Prometheus server, all done by ``deadline``
    (``time.monotonic()`` seconds; None: none but each query's own). Close it when done."""

    def __init__(self, url: str, http: HttpConfig = HttpConfig(), deadline: float | None = None):
        self.url = url.rstrip("/")
        self.http = http
        self.deadline = deadline
        self.progress = Progress()
        self._context = http.ssl_context() if url.lower().startswith("https:") else None
        self._runner = asyncio.Runner()
        self._session: aiohttp.ClientSession | None = None

    def __enter__(self) -> "Prometheus":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._runner.run(self._session.close())
        self._runner.close()

    async def _request(self, path: str, params: dict[str, str], post: bool) -> tuple[int, bytes]:
        """POST a form (long queries fit no URL) or GET; the status and at most ``MAX_RESPONSE_BYTES`` of answer."""
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.http.bearer_token}"} if self.http.bearer_token else {}
            auth = aiohttp.BasicAuth(*self.http.basic_auth) if self.http.basic_auth else None
            self._session = aiohttp.ClientSession(auth=auth, headers=headers, trust_env=True,
                                                  connector=aiohttp.TCPConnector(ssl=self._context or True))
        form = {"data": params} if post else {"params": params}
        async with self._session.request("POST" if post else "GET", f"{self.url}{path}", **form) as response:
            return response.status, await read_body(response, MAX_RESPONSE_BYTES)

    def _call(self, path: str, params: dict[str, str], shape: type[Data], what: str, post: bool = True) -> Data:
        """The ``data`` of an API answer, checked against ``shape``; PrometheusError on anything else."""
        budget, whose = self.http.timeout_s, "the query's deadline"
        if self.deadline is not None and self.deadline - time.monotonic() < budget:
            budget, whose = self.deadline - time.monotonic(), "the report's deadline"
            if budget <= 0:
                raise PrometheusError(f"{what}: the report's deadline passed before it was asked")
        try:
            status, body = self._runner.run(asyncio.wait_for(self._request(path, params, post), budget))
        except TimeoutError:
            raise Unreachable(f"{what}: no complete answer from {redacted_url(self.url)} "
                                  f"before {whose} ({budget:.3g} s)") from None
        except TooLarge:
            raise AnswerTooLarge(f"{what}: the answer is over {MAX_RESPONSE_BYTES // 2**20} MiB") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # messages may repeat the URL with its user info: say only what kind of failure it was
            why = classify(exc, what).reason.replace("_", " ")
            raise Unreachable(f"{what}: no answer from Prometheus at {redacted_url(self.url)}: {why}") from None
        try:
            answer = _Answer[shape].model_validate_json(body)  # type: ignore[valid-type]
        except ValidationError as exc:
            try:
                refusal = _Refusal.model_validate_json(body)
            except ValidationError:
                if status != 200:
                    raise PrometheusError(f"{what}: HTTP {status} without a Prometheus answer "
                                          f"({printable(body[:200].decode(errors='replace'), 200)})") from None
                raise PrometheusError(f"{what}: not a Prometheus answer: {_problem(exc)}") from None
            raise PrometheusError(f"{what}: HTTP {status}: {printable(refusal.errorType, 50)}: "
                                  f"{printable(refusal.error, 300)}") from None
        if status != 200:
            raise PrometheusError(f"{what}: HTTP {status} with a successful answer")
        return answer.data

    def instant(self, query: str) -> list[tuple[dict[str, str], float]]:
        """``query`` now: (labels, value) of every series; PrometheusError if the answer is not a
        vector of numbers."""
        what = f"query {printable(query, 80)!r}"
        vector = self._call("/api/v1/query", {"query": query}, _Vector, what)
        samples = []
        for series in vector.result:
            if not _is_number(series.value[1]):
                raise PrometheusError(f"{what}: sample value {printable(series.value[1], 40)!r} is not a number")
            samples.append((dict(series.metric), float(series.value[1])))
        return samples

    def range(self, query: str, start: float, end: float, step: float, name: str = "") -> Matrix:
        """``query`` at every ``step`` from ``start`` to ``end`` (inclusive), in chunks of at most
        ``MAX_POINTS`` steps (fewer if the answer is too large); NaN where a series has no value.
        ``name`` labels progress logs and errors."""
        times = start + step * np.arange(int(math.floor((end - start) / step + 1e-9)) + 1)
        what = f"query {printable(name or query, 80)!r}"
        index: dict[tuple[tuple[str, str], ...], int] = {}
        labels: list[dict[str, str]] = []
        rows: list[np.ndarray] = []
        pending = [(first, min(first + MAX_POINTS, times.size)) for first in range(0, times.size, MAX_POINTS)][::-1]
        done = 0
        while pending:
            first, stop = pending.pop()
            self.progress.tick(name or query[:60], done + 1, done + 1 + len(pending))
            try:
                matrix = self._call("/api/v1/query_range", {
                    "query": query, "start": repr(float(times[first])), "end": repr(float(times[stop - 1])),
                    "step": repr(float(step))}, _Matrix, what)
            except AnswerTooLarge as exc:
                if stop - first == 1:
                    raise PrometheusError(f"{exc} for a single step") from None
                size = math.ceil((stop - first) / SPLIT)
                pending += [(f, min(f + size, stop)) for f in range(first, stop, size)][::-1]
                continue
            done += 1
            for series in matrix.result:
                at, values = _on_grid(series, times, first, stop, step, what)
                key = tuple(sorted(series.metric.items()))
                if key not in index:
                    if (len(labels) + 1) * times.size > MAX_CELLS:
                        raise PrometheusError(f"{what}: more than {len(labels)} series of {times.size} steps: "
                                              "narrow the report (--link, a larger --step or a shorter period)")
                    index[key] = len(labels)
                    labels.append(dict(series.metric))
                    rows.append(np.full(times.size, np.nan))
                rows[index[key]][at] = values
        return Matrix(times, labels, np.vstack(rows) if rows else np.empty((0, times.size)))

    def has_series(self, match: str, start: float, end: float) -> bool:
        """Whether any series matches ``match`` between ``start`` and ``end``."""
        return bool(self._call("/api/v1/series", {"match[]": match, "start": repr(float(start)),
                                                  "end": repr(float(end))}, list[dict[str, str]],
                               f"series {printable(match, 80)!r}"))

    def label_values(self, label: str, match: str, start: float | None = None, end: float | None = None) -> list[str]:
        """Values of ``label`` on the series matching ``match`` (between ``start`` and ``end``, or ever)."""
        params = {"match[]": match}
        if start is not None and end is not None:
            params |= {"start": repr(float(start)), "end": repr(float(end))}
        return self._call(f"/api/v1/label/{urllib.parse.quote(label)}/values", params, list[str],
                          f"values of {label} on {printable(match, 80)!r}", post=False)  # GET only in 2.42


def _on_grid(series: _Series, times: np.ndarray, first: int, stop: int, step: float,
             what: str) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices and values of a series of the chunk ``times[first:stop]``; PrometheusError for
    a timestamp off the chunk's grid or a value that is no number."""
    stamps = np.fromiter((t for t, _ in series.values), float, len(series.values))
    at = np.rint((stamps - times[0]) / step)
    # Prometheus keeps milliseconds: a timestamp is on the grid to within one
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(stamps) & (at >= first) & (at < stop)
                & (np.abs(stamps - times[0] - at * step) <= 1e-3 + 1e-9 * np.abs(stamps)))
    if bad.any():
        raise PrometheusError(f"{what}: timestamp {float(stamps[bad][0])!r} is not a step of the queried range "
                              f"{times[first]:.3f}-{times[stop - 1]:.3f} (every {step:g} s)")
    try:
        values = np.array([v for _, v in series.values], dtype=np.float64)
    except ValueError:
        text = next(v for _, v in series.values if not _is_number(v))
        raise PrometheusError(f"{what}: sample value {printable(text, 40)!r} is not a number") from None
    return at.astype(np.intp), values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
