"""ETSI GS QKD 014 driver: a KME's key store for one SAE pair, its latency, and key probes.

Each reading polls ``GET {kme_url}/api/v1/keys/{slave_SAE_ID}/status`` over mutual TLS (our
certificate is the master SAE's) and reports the store in bits: ``stored_key_count`` and
``max_key_count`` times ``key_size``, or as they are when the KME counts bits
(``key_count_unit: bits``). Successive levels give the store's rises and falls. With probing
on, it asks for one key with ``enc_keys`` every ``probe_interval_seconds`` and keeps only the
outcome (delivered / refused / failed): the key and its ID are dropped at once. Every answered
request is timed per endpoint; durations of requests made while the reading failed are carried
into the next reading, so the histogram misses none.
"""

from __future__ import annotations

import json
import logging
import time
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from qtelemetry.drivers.base import CountBatch, DriverError, IODriverConfig, check
from qtelemetry.drivers.polling import ReadingClock
from qtelemetry.drivers.https import HTTP_REASONS, TRANSPORT_REASONS, Answer, HttpsClient, TLSFiles, http_error, origin
from qtelemetry.estimation.reported import ENDPOINTS, ETSI014, ETSI014_KME, PROBE_RESULTS, REQUEST_BUCKETS
from qtelemetry.standards import etsi014
from qtelemetry.standards.documents import DOCUMENT_REASONS, loggable

log = logging.getLogger(__name__)


class Etsi014Config(IODriverConfig):
    """A KME reached over ETSI GS QKD 014 (REST over mutual TLS)."""

    protocol: ClassVar[str] = ETSI014
    error_reasons: ClassVar[tuple[str, ...]] = TRANSPORT_REASONS + HTTP_REASONS + DOCUMENT_REASONS
    estimated_by: ClassVar[str] = "device"

    type: Literal["etsi014"]
    kme_url: str = Field(pattern=r"^https://[^/?#@]+(/[^?#]*)?$",
                         description="base URL of the KME, e.g. https://kme-a.example:8443 (API under /api/v1/keys)")
    slave_sae_id: str = Field(min_length=1, max_length=256, description="SAE ID of the slave SAE of the watched pair")
    tls: TLSFiles = Field(description="CA of the KME, and the master SAE's certificate and key (mutual TLS)")
    poll_interval_seconds: float = Field(5.0, gt=0.0, allow_inf_nan=False, description="period of status polls")
    timeout_seconds: float = Field(2.0, gt=0.0, allow_inf_nan=False, description="timeout of each request")
    key_count_unit: Literal["keys", "bits"] = Field(
        "keys", description="what stored_key_count and max_key_count count: keys of key_size bits, or bits")
    probe_interval_seconds: float = Field(
        0.0, ge=0.0, allow_inf_nan=False,
        description="period of one-key enc_keys probes, at most one per poll; 0 = off (a probe consumes a key)")

    @check
    def _mutual_tls(self) -> "Etsi014Config":
        if self.tls.cert_file is None:
            raise ValueError("tls.cert_file and tls.key_file are required: ETSI GS QKD 014 uses mutual TLS")
        return self

    def build(self) -> "Etsi014Driver":
        return Etsi014Driver(self)


def error_detail(answer: Answer) -> str:
    """What a KME's error body (clause 6.5) says, made safe to log; or that it sent none."""
    try:
        error = etsi014.parse_error(answer.body)
    except DriverError:
        return "no ETSI 014 error body"
    details = "" if error.details is None else " " + json.dumps(error.details)
    return loggable(error.message + details)


class Etsi014Driver:
    """Polls one KME for one SAE pair; use it on the runtime's event loop."""

    def __init__(self, config: Etsi014Config):
        self.config = config
        self._client = HttpsClient(config.tls, config.timeout_seconds)
        base = config.kme_url.rstrip("/")
        self._urls = {endpoint: base + etsi014.path(config.slave_sae_id, endpoint) for endpoint in ENDPOINTS}
        self._kme = origin(config.kme_url)
        self._what = {endpoint: f"{endpoint} request to {self._kme}" for endpoint in ENDPOINTS}
        self._pending = self._no_requests()
        self._clock = ReadingClock(config.poll_interval_seconds)
        self._last_stored: float | None = None
        self._next_probe = time.monotonic()

    @staticmethod
    def _no_requests() -> dict[str, np.ndarray]:
        """Zeroed counts of the requests made since the last reading."""
        return {name: np.zeros(ETSI014_KME.count_shapes[name]) for name in ("request_duration", "request_seconds", "probes")}

    async def _call(self, endpoint: str, method: str, body: dict | None = None) -> Answer:
        """One timed request; answered requests (any status) go into the duration histogram."""
        answer = await self._client.request(method, self._urls[endpoint], self._what[endpoint], body)
        e = ENDPOINTS.index(endpoint)
        self._pending["request_duration"][e, np.searchsorted(REQUEST_BUCKETS, answer.seconds)] += 1
        self._pending["request_seconds"][e] += answer.seconds
        return answer

    async def _status(self) -> etsi014.Status:
        answer = await self._call("status", "GET")
        if answer.status != 200:
            raise http_error(answer, self._what["status"], error_detail(answer))
        return etsi014.parse_status(answer.body)

    async def _probe(self) -> str:
        """Ask for one key and keep only the outcome: the key container is checked, then dropped."""
        try:
            answer = await self._call("enc_keys", "POST", {"number": 1})
            if answer.status != 200:
                log.warning("key probe refused", extra={"kme": self._kme, "status": answer.status,
                                                        "detail": error_detail(answer)})
                return "refused"
            etsi014.parse_key_container(answer.body)
            return "delivered"
        except DriverError as exc:
            log.warning("key probe failed", extra={"kme": self._kme, "reason": exc.reason, "detail": str(exc)})
            return "failed"

    async def acquire(self) -> CountBatch:
        """One status reading (and a probe when one is due) as a batch of levels and counts."""
        status = await self._status()
        if self.config.probe_interval_seconds > 0 and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + self.config.probe_interval_seconds
            self._pending["probes"][PROBE_RESULTS.index(await self._probe())] += 1
        per_count = status.key_size if self.config.key_count_unit == "keys" else 1
        stored, capacity = float(status.stored_key_count * per_count), float(status.max_key_count * per_count)
        change = 0.0 if self._last_stored is None else stored - self._last_stored
        self._last_stored = stored
        start, duration = self._clock.span()
        counts = {
            "key_stored_bits": np.array(stored),
            "key_capacity_bits": np.array(capacity),
            "buffer_increase_bits": np.array(max(change, 0.0)),
            "buffer_decrease_bits": np.array(max(-change, 0.0)),
            **self._pending,
        }
        self._pending = self._no_requests()
        return CountBatch(start=start, duration_s=duration, counts=counts)

    async def aclose(self) -> None:
        await self._client.aclose()
