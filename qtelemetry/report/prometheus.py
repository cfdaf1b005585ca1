"""A small client of the Prometheus HTTP API: range queries cut into chunks the server accepts.

Prometheus refuses a range query of more than 11,000 points per series, so a long period at a
fine step is asked for in chunks of at most ``MAX_POINTS`` steps and put back together on one
time grid. Authentication and TLS take the options of Prometheus' own ``http_config`` (basic
auth, bearer token, CA file, client certificate), so the report reads any Prometheus a
dashboard could. Missing data stays NaN: a step without a sample is never a zero.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from dataclasses import dataclass, field

import numpy as np
import requests

log = logging.getLogger(__name__)

#: Points per series and query; Prometheus' limit is 11,000 (api/v1: "exceeded maximum resolution").
MAX_POINTS = 10_000


def redacted_url(url: str) -> str:
    """``url`` without user info, query or fragment: what logs and the report may show."""
    parts = urllib.parse.urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PrometheusError(Exception):
    """Prometheus could not be reached or refused a query; the message says which and why."""


@dataclass(frozen=True)
class HttpConfig:
    """How to reach Prometheus, as in its ``http_config``: basic auth or bearer token, TLS files."""

    basic_auth: tuple[str, str] | None = None
    bearer_token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 120.0


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
    """Range and metadata queries against one Prometheus server."""

    def __init__(self, url: str, http: HttpConfig = HttpConfig()):
        self.url = url.rstrip("/")
        self.http = http
        self.session = requests.Session()
        if http.basic_auth is not None:
            self.session.auth = http.basic_auth
        if http.bearer_token is not None:
            self.session.headers["Authorization"] = f"Bearer {http.bearer_token}"
        self.session.verify = False if http.insecure_skip_verify else (http.ca_file or True)
        if http.cert_file is not None:
            self.session.cert = (http.cert_file, http.key_file) if http.key_file else http.cert_file
        self.progress = Progress()

    def _call(self, path: str, params: dict[str, str]) -> object:
        """POST a form to an API endpoint (long queries fit no URL) and return its ``data``."""
        try:
            response = self.session.post(f"{self.url}{path}", data=params, timeout=self.http.timeout_s)
        except requests.RequestException as exc:
            # requests' messages repeat the URL: name the exception type only, never user info
            raise PrometheusError(f"cannot reach Prometheus at {redacted_url(self.url)}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"{path}: HTTP {response.status_code} without a JSON body "
                                  f"({response.text[:200]!r})") from None
        if not isinstance(body, dict):
            raise PrometheusError(f"{path}: HTTP {response.status_code}: not a Prometheus API answer ({str(body)[:200]!r})")
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path}: HTTP {response.status_code}: {body.get('errorType', '')}: {body.get('error', body)}")
        return body["data"]

    def instant(self, query: str) -> list[tuple[dict[str, str], float]]:
        """``query`` now: (labels, value) of every series; PrometheusError if the answer is not a vector."""
        data = self._call("/api/v1/query", {"query": query})
        try:
            if data["resultType"] != "vector":
                raise TypeError(data["resultType"])
            return [(dict(series["metric"]), float(series["value"][1])) for series in data["result"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError(f"query returned {str(data)[:200]!r} for {query!r}, not an instant vector") from None

    def range(self, query: str, start: float, end: float, step: float, name: str = "") -> Matrix:
        """``query`` at every ``step`` from ``start`` to ``end`` (inclusive), in chunks of at most
        ``MAX_POINTS`` steps; NaN where a series has no value. ``name`` labels progress logs."""
        times = start + step * np.arange(int(math.floor((end - start) / step + 1e-9)) + 1)
        index: dict[tuple, int] = {}
        labels: list[dict[str, str]] = []
        rows: list[np.ndarray] = []
        chunks = max(1, math.ceil(times.size / MAX_POINTS))
        for chunk in range(chunks):
            part = times[chunk * MAX_POINTS:(chunk + 1) * MAX_POINTS]
            self.progress.tick(name or query[:60], chunk + 1, chunks)
            data = self._call("/api/v1/query_range", {"query": query, "start": repr(float(part[0])),
                                                      "end": repr(float(part[-1])), "step": repr(float(step))})
            if not isinstance(data, dict) or data.get("resultType") != "matrix":
                raise PrometheusError(f"query_range returned {data!r:.200} for {query!r}")
            for series in data["result"]:
                key = tuple(sorted(series["metric"].items()))
                if key not in index:
                    index[key] = len(labels)
                    labels.append(dict(series["metric"]))
                    rows.append(np.full(times.size, np.nan))
                points = np.asarray(series["values"], dtype=object)
                at = np.rint((points[:, 0].astype(float) - start) / step).astype(np.intp)
                rows[index[key]][at] = points[:, 1].astype(float)
        values = np.vstack(rows) if rows else np.empty((0, times.size))
        return Matrix(times, labels, values)

    def has_series(self, match: str, start: float, end: float) -> bool:
        """Whether any series matches ``match`` between ``start`` and ``end``."""
        data = self._call("/api/v1/series", {"match[]": match, "start": repr(float(start)), "end": repr(float(end))})
        return bool(data)
