"""Typed exporter config; every error names the field path and the reason.

The embedded demo config (``qtelemetry/defaults/demo.yaml``) is what ``qtelemetry run`` uses
when no file is given.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
import re

from typing import TypeVar

from pydantic import BaseModel, Field, FilePath, ValidationError, field_validator, model_validator

from qtelemetry.drivers import DriverConfig
from qtelemetry.drivers.base import StrictModel

#: Label values come from config only; this pattern keeps them short and safe in any query.
LABEL_VALUE = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
#: Default margin of a loss budget over the modelled loss (a common engineering margin).
LOSS_MARGIN_DB = 3.0
BCRYPT_HASH = re.compile(r"^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$")


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds (field path, reason) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {path}: {reason}" for path, reason in problems))


class WebConfig(StrictModel):
    """TLS and basic auth of the HTTP endpoint, as in the Prometheus exporter-toolkit web config."""

    tls_cert_file: FilePath | None = Field(None, description="server certificate (PEM); enables HTTPS")
    tls_key_file: FilePath | None = Field(None, description="private key of the server certificate (PEM)")
    tls_client_ca_file: FilePath | None = Field(None, description="CA for client certificates; enables mutual TLS")
    basic_auth_users: dict[str, str] = Field(default_factory=dict, description="user -> bcrypt hash")

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not BCRYPT_HASH.match(hashed):
                raise ValueError(f"user {user!r}: expected a bcrypt hash ($2b$...), never a plain password")
        return users

    @model_validator(mode="after")
    def _tls_pairs(self) -> "WebConfig":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self


class OtlpConfig(StrictModel):
    """Push metrics to an OpenTelemetry collector over OTLP/HTTP (protobuf)."""

    endpoint: str = Field(pattern=r"^https?://", description="full URL, e.g. http://otel-collector:4318/v1/metrics")
    interval_seconds: float = Field(15.0, gt=0.0, description="push period")
    timeout_seconds: float = Field(10.0, gt=0.0, description="per-push timeout")


class ExporterConfig(StrictModel):
    listen: str = Field("127.0.0.1:9817", description="HOST:PORT the /metrics server binds to")
    window_seconds: float = Field(1.0, gt=0.0, description="acquisition window of every link, s")
    sliding_windows: int = Field(60, ge=1, le=100_000, description="windows summed per estimate")
    confidence_level: float = Field(0.99, gt=0.5, lt=1.0, description="one-sided level of QBER bounds")
    stall_timeout_seconds: float = Field(10.0, gt=0.0, description="a link with no batch for this long is down")
    web: WebConfig = WebConfig()
    otlp: OtlpConfig | None = Field(None, description="also push metrics over OTLP; omit to only serve /metrics")
    admin_token_file: FilePath | None = Field(
        None, description="file holding the bearer token that enables /-/faults; omit to disable it")

    def admin_token(self) -> str | None:
        return None if self.admin_token_file is None else self.admin_token_file.read_text().strip()

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value


class LinkConfig(StrictModel):
    name: str = Field(pattern=LABEL_VALUE, description="unique link name, used as the `link` label")
    site_a: str = Field("a", pattern=LABEL_VALUE, description="site at Alice's (transmitter) end")
    site_b: str = Field("b", pattern=LABEL_VALUE, description="site at Bob's (receiver) end")
    driver: DriverConfig
    loss_budget_db: float | None = Field(
        None, ge=0.0, description="channel loss the link is engineered for; default: the model's + 3 dB")
    expected_secret_key_rate_bps: float | None = Field(
        None, ge=0.0, description="key rate the plan promised; default: the driver's model, if it has one")


class Config(StrictModel):
    exporter: ExporterConfig = ExporterConfig()
    links: list[LinkConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "Config":
        names = [link.name for link in self.links]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate link names: {', '.join(duplicates)}")
        return self


def parse_listen(value: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 hosts in brackets); raises ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port in 0..65535, got {value!r}")
    return host.strip("[]"), int(port)


def _field_path(loc: tuple[str | int, ...]) -> str:
    """``("links", 0, "driver", "simulated-bb84", "mu")`` → ``links[0].driver.mu``.

    The part after ``driver`` is pydantic's union tag (the driver type), not a field.
    """
    path = ""
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "driver":
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


M = TypeVar("M", bound=BaseModel)


def validate_yaml(model: type[M], text: str, source: str, empty_ok: bool = False) -> M:
    """Validate YAML text into ``model``, or raise ConfigError listing every problem by field path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("(yaml)", "invalid YAML: " + str(exc).replace("\n", " "))]) from None
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "expected a mapping")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(_field_path(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ConfigError(source, problems) from None


def read_text(path: str | Path) -> str:
    """A config file's text; a missing or unreadable file is a ConfigError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", exc.strerror or str(exc))]) from None


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate exporter config YAML (``exporter`` and ``links``)."""
    return validate_yaml(Config, text, source)


def load_config(path: str | Path) -> Config:
    """Read and validate an exporter config file."""
    return parse_config(read_text(path), str(path))


def default_config_text() -> str:
    return resources.files("qtelemetry.defaults").joinpath("demo.yaml").read_text(encoding="utf-8")


def default_config() -> Config:
    """The embedded demo: links that look different on a dashboard."""
    return parse_config(default_config_text(), "embedded demo config")
