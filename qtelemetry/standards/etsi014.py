"""ETSI GS QKD 014 V1.1.1 (2019-02): REST key delivery API between SAEs and their KME.

Data formats of clause 6 with the standard's member names: Status (6.1), Key request (6.2), Key
container (6.3), Key IDs (6.4), Error (6.5); paths of clause 5 (``/api/v1/keys/{SAE_ID}/status``,
``enc_keys``, ``dec_keys``). Key sizes are in bits; keys are base64 (RFC 4648), key IDs UUIDs.
Models of keys and key IDs hide their values from ``repr`` so that they cannot reach a log.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal
from urllib.parse import quote
from uuid import UUID

from pydantic import AfterValidator, Field

from qtelemetry.standards.documents import Document, parse

#: Largest integer accepted in a count (the standard says "integer"; this keeps it exact in float64
#: arithmetic up to 2**53 and rejects absurd values as out of range).
MAX_COUNT = 2**53

Count = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNT)]
Endpoint = Literal["status", "enc_keys", "dec_keys"]


def path(sae_id: str, endpoint: Endpoint) -> str:
    """``/api/v1/keys/{SAE_ID}/{endpoint}`` with the SAE ID URL-encoded (clause 5.1)."""
    return f"/api/v1/keys/{quote(sae_id, safe='')}/{endpoint}"


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    return value


class Status(Document):
    """Status of the keys a KME holds for one master/slave SAE pair (clause 6.1)."""

    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: Count  #: default key size, bits
    stored_key_count: Count  #: keys ready (some KMEs count bits here: see ``key_count_unit``)
    max_key_count: Count
    max_key_per_request: Count
    max_key_size: Count
    min_key_size: Count
    max_SAE_ID_count: Count
    status_extension: dict[str, Any] | None = None


class Key(Document):
    """One key of a key container; its ID and material never appear in ``repr``."""

    key_ID: UUID = Field(repr=False)
    key: Annotated[str, AfterValidator(_base64)] = Field(repr=False)
    key_ID_extension: dict[str, Any] | None = None
    key_extension: dict[str, Any] | None = None


class KeyContainer(Document):
    """Answer to Get key and Get key with key IDs (clause 6.3): at least one key."""

    keys: list[Key] = Field(min_length=1)
    key_container_extension: dict[str, Any] | None = None


class KeyRequest(Document):
    """Body of Get key as POST (clause 6.2); absent members take the KME's defaults."""

    number: Annotated[int, Field(strict=True, ge=1)] | None = None
    size: Annotated[int, Field(strict=True, ge=1)] | None = None
    additional_slave_SAE_IDs: list[str] = []
    extension_mandatory: list[dict[str, Any]] = []
    extension_optional: list[dict[str, Any]] = []


class KeyIDRef(Document):
    key_ID: UUID = Field(repr=False)
    key_ID_extension: dict[str, Any] | None = None


class KeyIDs(Document):
    """Body of Get key with key IDs as POST (clause 6.4)."""

    key_IDs: list[KeyIDRef] = Field(min_length=1)
    key_IDs_extension: dict[str, Any] | None = None


class Error(Document):
    """Error body of a 400, 401 or 503 answer (clause 6.5)."""

    message: str
    details: list[dict[str, Any]] | None = None


def parse_status(body: bytes | str) -> Status:
    return parse(Status, body, "Status")


def parse_key_container(body: bytes | str) -> KeyContainer:
    return parse(KeyContainer, body, "Key container")


def parse_error(body: bytes | str) -> Error:
    return parse(Error, body, "Error")
