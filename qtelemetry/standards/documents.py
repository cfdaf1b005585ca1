"""JSON document → pydantic model, with every failure turned into a ``DriverError`` reason.

The message names the field path (``keys[0].key_ID``) and what was wrong with it, never the
value the device sent: a malformed key container must not put key material in a log line.
"""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from qtelemetry.errors import DriverError

#: Reasons a document can be rejected for.
DOCUMENT_REASONS = ("invalid_json", "missing_field", "wrong_type", "invalid_value")

#: pydantic error types that mean "right type, impossible value" rather than "wrong type".
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                           "finite_number", "too_short", "too_long"})

M = TypeVar("M", bound=BaseModel)


class Document(BaseModel):
    """A device document: members the model does not name are ignored (standards let devices extend)."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)


def field_path(loc: tuple[str | int, ...]) -> str:
    """``("keys", 0, "key_ID")`` → ``keys[0].key_ID``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def rejection(exc: ValidationError, what: str) -> DriverError:
    """The DriverError for the first problem pydantic found, named by field path and error type only."""
    error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    kind, path = error["type"], field_path(error["loc"])
    if kind == "json_invalid":
        return DriverError("invalid_json", f"{what} is not valid JSON")
    if kind == "missing":
        return DriverError("missing_field", f"{what}: {path} is missing")
    if kind in _RANGE_ERRORS:
        return DriverError("invalid_value", f"{what}: {path} is out of range ({kind})")
    return DriverError("wrong_type", f"{what}: {path} has the wrong type ({kind})")


def parse(model: type[M], body: bytes | str, what: str) -> M:
    """Validate ``body`` (JSON text) into ``model`` or raise DriverError naming the field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise rejection(exc, what) from None


_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def loggable(text: str, limit: int = 200) -> str:
    """Device-supplied text made safe for one log line: UUIDs (key IDs) and long base64 runs (key
    material) redacted, control characters (forged log lines) collapsed, length bounded."""
    text = _UUID.sub("<uuid>", text)
    text = _BASE64_RUN.sub("<redacted>", text)
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[:limit] + "…"
