"""What ``qtelemetry run`` runs with, read at start and again at each reload.

A reload (SIGHUP, or ``POST /-/reload`` with the admin token) reads the config file and the web
config file again and applies them all or nothing: links added start, links removed stop, the
others continue their series (``Runtime.reload``); the endpoint's users, certificates, headers
and admin token change for the requests that follow. A config that does not load is rejected
with every problem logged, the running one stays, and
``qtelemetry_config_last_reload_successful`` drops to 0 until a reload succeeds, as in
Prometheus. The listen address and the OTLP push are set up once: a change to them is logged
and waits for a restart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from qtelemetry import sharding
from qtelemetry.config import Config, ConfigError, default_config, load_config, secret_file_warnings
from qtelemetry.exporter.server import Protection
from qtelemetry.exporter.webconfig import web_settings
from qtelemetry.runtime.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    config: Config
    protection: Protection

    def warnings(self) -> list[tuple[str, str]]:
        """(field path, message) of settings that work but are unsafe: the config's, and a web
        config file's private key that other users may read."""
        found = self.config.warnings()
        tls = self.protection.web.tls_server_config
        if tls is not None and tls.key_file is not None and tls.key_file != self.config.exporter.web.tls_key_file:
            found += secret_file_warnings([("tls_server_config.key_file", tls.key_file, "the private key of /metrics")])
        return found


@dataclass(frozen=True)
class Source:
    """Where the settings come from: the config file (None: the embedded demo), the web config
    file (None: the config's ``exporter.web``) and the shard this exporter serves."""

    config_file: str | None
    web_config_file: str | None = None
    shard: sharding.Shard | None = None
    listen: str | None = None  #: ``--listen``, which overrides ``exporter.listen``

    def listen_address(self, config: Config) -> str:
        return self.listen or config.exporter.listen

    def load(self) -> Settings:
        """Read and check everything; ConfigError listing every problem if anything is wrong."""
        config = default_config() if self.config_file is None else load_config(self.config_file)
        if self.shard is not None:
            config = sharding.select(config, self.shard)
        web, tls = web_settings(config.exporter.web, self.web_config_file, self.config_file or "embedded demo config")
        return Settings(config, Protection(web, tls, config.exporter.admin_token()))


class Reloader:
    """Applies a fresh ``source.load()`` to the running exporter, one reload at a time."""

    def __init__(self, source: Source, runtime: Runtime, running: Settings):
        self._source = source
        self._runtime = runtime
        self._running = running
        self._lock = threading.Lock()
        #: called with the new settings once the runtime runs them (e.g. the server's ``protect``)
        self.hooks: list[Callable[[Protection], None]] = []

    def reload(self) -> list[tuple[str, str]]:
        """Reload now; the problems that made it fail as (field, reason) pairs, or [] on success."""
        with self._lock:
            try:
                settings = self._source.load()
            except ConfigError as exc:
                for field, reason in exc.problems:
                    log.error("config reload rejected: the running config stays", extra={
                        "source": exc.source, "field": field, "reason": reason})
                self._runtime.reload_failed()
                return exc.problems
            before, after = self._restart_only(self._running.config), self._restart_only(settings.config)
            for field in before:
                if before[field] != after[field]:
                    log.warning("setting changed: it takes effect at the next restart", extra={"field": field})
            try:
                self._runtime.reload(settings.config)
            except Exception as exc:  # a driver that cannot be built from the new config
                log.exception("config reload failed: the running config stays")
                self._runtime.reload_failed()
                return [("links", str(exc))]
            for hook in self.hooks:
                hook(settings.protection)
            for field, warning in settings.warnings():
                log.warning("config warning", extra={"field": field, "reason": warning})
            self._running = settings
            return []

    def _restart_only(self, config: Config) -> dict[str, object]:
        """Settings read once at start, by field path: a reload that changes them only logs it."""
        return {"exporter.listen": self._source.listen_address(config), "exporter.otlp": config.exporter.otlp}
