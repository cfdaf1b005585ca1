"""Errors shared by drivers and the parsers of device documents (which must not import drivers), and
the config error every command reports: light to import, as the command line's module must be (a
spawned analysis process imports it again when the exporter was started by its console script)."""

from __future__ import annotations


class DriverError(Exception):
    """A source answered, but not with usable data (the reason becomes a metric label)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


#: Exit code of a command refused for its config or options.
EXIT_CONFIG = 2


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds (field path, reason) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {path}: {reason}" for path, reason in problems))
