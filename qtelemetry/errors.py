"""Errors shared by drivers and the parsers of device documents (which must not import drivers)."""

from __future__ import annotations


class DriverError(Exception):
    """A source answered, but not with usable data (the reason becomes a metric label)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
