"""RESTCONF (RFC 8040) as the ETSI 015 driver and simulated nodes use it: media type and error body."""

from __future__ import annotations

from pydantic import Field

from qtelemetry.standards.documents import Document, parse

MEDIA_TYPE = "application/yang-data+json"  # RFC 8040 §11.3.2
#: The data resource of an SD-QKD node (RFC 8040 §3.3.1 with ETSI GS QKD 015's module).
NODE_PATH = "/restconf/data/etsi-qkd-sdn-node:qkd_node"


class ErrorEntry(Document):
    error_type: str = Field(alias="error-type")
    error_tag: str = Field(alias="error-tag")
    error_message: str | None = Field(None, alias="error-message")


class ErrorList(Document):
    error: list[ErrorEntry] = Field(min_length=1)


class Errors(Document):
    """``{"ietf-restconf:errors": {"error": [...]}}`` (RFC 8040 §7.1)."""

    errors: ErrorList = Field(alias="ietf-restconf:errors")


def errors_body(error_type: str, error_tag: str, message: str) -> dict:
    """An RFC 8040 error body with one error."""
    return {"ietf-restconf:errors": {"error": [{"error-type": error_type, "error-tag": error_tag,
                                                "error-message": message}]}}


def parse_errors(body: bytes | str) -> Errors:
    return parse(Errors, body, "RESTCONF errors")
