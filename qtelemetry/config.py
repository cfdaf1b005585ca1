"""Typed exporter config; every error names the field path and the reason.

The embedded demo config (``qtelemetry/defaults/demo.yaml``) is what ``qtelemetry run`` uses
when no file is given. Relative file paths in a config file are resolved against the file's own
directory, as Prometheus does, so a config works whatever directory the exporter starts in.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import stat
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator

from qtelemetry.configfile import ReadableFile, TokenFile, load_yaml, printable, read_text, read_token
from qtelemetry.drivers import DriverConfig
from qtelemetry.drivers.base import FieldError, StrictModel, check
from qtelemetry.errors import ConfigError
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation.tamper_statistics import STATISTICS as TAMPER_STATISTICS
from qtelemetry.networkconfig import NetworkConfig
from qtelemetry.tamperconfig import LinkTamperConfig, TamperConfig, link_mean_times, resolve
from qtelemetry.text import count

#: Label values come from config only; this pattern keeps them short and safe in any query.
LABEL_VALUE = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
#: Default margin of a loss budget over the modelled loss (a common engineering margin).
LOSS_MARGIN_DB = 3.0
#: The hashes bcrypt verifies: $2a$/$2b$/$2y$, cost 04-31, 22 salt characters (the last one carries
#: only two bits, so it is one of .Oeu) and 31 hash characters.
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}$")
#: Shortest and longest acquisition window: shorter burns a core on scheduling, longer is not live.
WINDOW_SECONDS_MIN, WINDOW_SECONDS_MAX = 0.05, 3600.0
#: Highest confidence level: 1 - level must stay far from float rounding for the bounds' quantiles.
CONFIDENCE_LEVEL_MAX = 1.0 - 1e-9
#: Memory the sliding windows of all links may take (float64 count arrays, one per window).
RING_MEMORY_LIMIT_BYTES = 2 * 2**30
def loose_mode(path: Path) -> str | None:
    """The file's mode as ``0644`` if it lets more than its owner at a secret, else None.

    PostgreSQL's rule for private keys: others may not access it, its group may not write it, and
    its group may read it only when root owns it (how Kubernetes mounts a Secret, 0440 for an
    fsGroup).
    """
    try:
        status = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(status.st_mode)
    loose = mode & 0o027 or (mode & 0o040 and status.st_uid != 0)
    return f"{mode:04o}" if loose else None


def secret_file_warnings(secrets: list[tuple[str, Path, str]]) -> list[tuple[str, str]]:
    """(field path, message) for each (field path, file, what it holds) that others may access;
    a file that many links share is named once, by its first field."""
    first: dict[Path, tuple[str, str]] = {}
    for field, path, what in secrets:
        first.setdefault(path, (field, what))
    return [(field, f"{path} has mode {mode}: other users can read or change {what}; chmod 600 it")
            for path, (field, what) in first.items() if (mode := loose_mode(path)) is not None]


def _bcrypt_users(users: dict[str, str]) -> dict[str, str]:
    for user, hashed in users.items():
        if not user or ":" in user or not user.isprintable():
            raise ValueError(f"user {user[:64]!r}: basic auth user names are printable, non-empty, without ':'")
        if not BCRYPT_HASH.match(hashed):
            raise ValueError(f"user {user!r}: expected a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31), "
                             "never a plain password")
    return users


#: ``basic_auth_users``: user name -> bcrypt hash, never a plain password.
BasicAuthUsers = Annotated[dict[str, str], AfterValidator(_bcrypt_users)]


class WebConfig(StrictModel):
    """TLS and basic auth of the HTTP endpoint, inline; ``qtelemetry run --web.config.file`` reads the
    same settings (and more) from a Prometheus exporter-toolkit web config file instead."""

    tls_cert_file: ReadableFile | None = Field(None, description="server certificate (PEM); enables HTTPS")
    tls_key_file: ReadableFile | None = Field(None, description="private key of the server certificate (PEM)")
    tls_client_ca_file: ReadableFile | None = Field(None, description="CA for client certificates; enables mutual TLS")
    basic_auth_users: BasicAuthUsers = Field(default_factory=dict, description="user -> bcrypt hash")

    @check
    def _tls_pairs(self) -> "WebConfig":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self


class OtlpConfig(StrictModel):
    """Push metrics to an OpenTelemetry collector over OTLP/HTTP (protobuf)."""

    requires = ("otel", ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"))

    endpoint: str = Field(pattern=r"^https?://", description="full URL, e.g. http://otel-collector:4318/v1/metrics")
    interval_seconds: float = Field(15.0, ge=0.1, le=86400.0, description="push period")
    timeout_seconds: float = Field(10.0, ge=0.1, le=3600.0, description="per-push timeout")


class ExporterConfig(StrictModel):
    listen: str = Field("127.0.0.1:9817", description="HOST:PORT the /metrics server binds to")
    window_seconds: float = Field(1.0, ge=WINDOW_SECONDS_MIN, le=WINDOW_SECONDS_MAX,
                                  description="acquisition window of every link, s")
    sliding_windows: int = Field(60, ge=1, description="windows summed per estimate")
    confidence_level: float = Field(0.99, gt=0.5, le=CONFIDENCE_LEVEL_MAX,
                                    description="one-sided level of QBER bounds")
    stall_timeout_seconds: float = Field(10.0, gt=0.0, description="a link with no batch for this long is down")
    web: WebConfig = WebConfig()
    otlp: OtlpConfig | None = Field(None, description="also push metrics over OTLP; omit to only serve /metrics")
    admin_token_file: TokenFile | None = Field(
        None, description="file holding the bearer token that enables /-/faults; omit to disable it")
    tamper: TamperConfig = Field(TamperConfig(), description="tamper detectors of decoy-BB84 and entangled-photon links")

    def admin_token(self) -> str | None:
        """The admin token as the file holds it now; ConfigError if the file became unusable."""
        if self.admin_token_file is None:
            return None
        try:
            return read_token(self.admin_token_file)
        except ValueError as exc:
            raise ConfigError(str(self.admin_token_file), [("exporter.admin_token_file", str(exc))]) from None

    def secret_files(self) -> list[tuple[str, Path, str]]:
        """(field path, file, what it holds) of the exporter's secrets."""
        return [(field, path, what) for field, path, what in (
            ("exporter.admin_token_file", self.admin_token_file, "the admin token"),
            ("exporter.web.tls_key_file", self.web.tls_key_file, "the private key of /metrics"),
        ) if path is not None]

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @check
    def _stall_after_window(self) -> "ExporterConfig":
        if self.stall_timeout_seconds < self.window_seconds:
            raise FieldError("stall_timeout_seconds", f"must be at least window_seconds ({self.window_seconds:g} s): "
                             "otherwise every link is down between two windows")
        return self


class LinkConfig(StrictModel):
    name: str = Field(pattern=LABEL_VALUE, description="unique link name, used as the `link` label")
    site_a: str = Field("a", pattern=LABEL_VALUE, description="site at Alice's (transmitter) end")
    site_b: str = Field("b", pattern=LABEL_VALUE, description="site at Bob's (receiver) end")
    driver: DriverConfig
    loss_budget_db: float | None = Field(
        None, ge=0.0, description="channel loss the link is engineered for; default: the model's + 3 dB")
    expected_secret_key_rate_bps: float | None = Field(
        None, ge=0.0, description="key rate the plan promised; default: the driver's model, if it has one")
    tamper: LinkTamperConfig | None = Field(None, description="overrides of exporter.tamper for this link")


def floats_per_window(protocol: str) -> int:
    """Values one window of a link of ``protocol`` keeps in its sliding window: the sizes of its
    counts and amounts (levels keep only their latest value)."""
    proto = PROTOCOLS[protocol]
    return sum(math.prod(shape) for name, shape in proto.count_shapes.items()
               if proto.count_kinds.get(name, "count") != "level")


class Config(StrictModel):
    exporter: ExporterConfig = ExporterConfig()
    links: list[LinkConfig] = Field(min_length=1)
    network: NetworkConfig | None = Field(None, description="sites and key demands: the network view; omit for none")

    def ring_memory_bytes(self) -> int:
        """Memory of every link's sliding windows: one float64 copy of its counts per window."""
        per_protocol = Counter(link.driver.protocol for link in self.links)
        floats = sum(n * floats_per_window(protocol) for protocol, n in per_protocol.items())
        return self.exporter.sliding_windows * floats * 8

    def warnings(self) -> list[tuple[str, str]]:
        """(field path, message) of settings that work but are unsafe or lose data, logged at start
        and reload: secrets (the admin token, private keys of /metrics and of mutual TLS to
        devices) that other users may read; what a driver will skip (a recording's bad rows)."""
        secrets = self.exporter.secret_files()
        for i, link in enumerate(self.links):
            tls = getattr(link.driver, "tls", None)
            if getattr(tls, "key_file", None) is not None:
                secrets.append((f"links[{i}].driver.tls.key_file", tls.key_file, f"the client key of link {link.name}"))
        drivers = [(f"links[{i}].driver.{field}", message) for i, link in enumerate(self.links)
                   for field, message in link.driver.warnings()]
        return secret_file_warnings(secrets) + drivers

    def tamper_mean_times(self) -> NDArray[np.float64]:
        """Each link's mean time between tamper false alarms, s: its own, or its share of the exporter's
        budget; NaN for a link without detectors. ValueError if the links' own use up the budget."""
        out = np.full(len(self.links), np.nan)
        resolved = [resolve(self.exporter.tamper, link.tamper) for link in self.links]
        watched = [i for i, (link, t) in enumerate(zip(self.links, resolved))
                   if t.enabled and link.driver.protocol in TAMPER_STATISTICS]
        out[watched] = link_mean_times(self.exporter.tamper.fleet_mean_time_between_false_alarms_seconds,
                                       [resolved[i].mean_time_between_false_alarms_seconds for i in watched])
        return out

    @check
    def _tamper_budget(self) -> "Config":
        try:
            self.tamper_mean_times()
        except ValueError as exc:
            raise FieldError("exporter.tamper.fleet_mean_time_between_false_alarms_seconds", str(exc)) from None
        return self

    @check
    def _unique_names(self) -> "Config":
        where: defaultdict[str, list[int]] = defaultdict(list)
        for i, link in enumerate(self.links):
            if (name := getattr(link, "name", None)) is not None:  # None: the name failed validation, and says so
                where[name].append(i)
        duplicates = [f"{name} ({', '.join(f'links[{i}]' for i in at)})" for name, at in where.items() if len(at) > 1]
        if duplicates:
            raise FieldError("links", f"duplicate link names: {', '.join(duplicates)}")
        return self

    @check
    def _network_fits_links(self) -> "Config":
        if self.network is not None:
            self.network.check_against(self.links)
        return self

    @check
    def _ring_fits_in_memory(self) -> "Config":
        needed = self.ring_memory_bytes()
        if needed > RING_MEMORY_LIMIT_BYTES:
            raise FieldError("exporter.sliding_windows", (
                f"{self.exporter.sliding_windows} windows of {count(len(self.links), 'link')} need {needed / 2**30:.3g} GiB "
                f"of count history, over the limit of {RING_MEMORY_LIMIT_BYTES / 2**30:g} GiB: use fewer windows "
                "(or longer ones) or spread the links over several exporters"))
        return self


def parse_listen(value: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 hosts in brackets); raises ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port in 0..65535, got {value[:100]!r}")
    return host.strip("[]"), int(port)


def _field_path(loc: tuple[Any, ...]) -> str:
    """``("links", 0, "driver", "simulated-bb84", "mu")`` → ``links[0].driver.mu``.

    The part after ``driver`` is pydantic's union tag (the driver type), not a field. Keys that
    are not plain names (spaces, quotes, numbers, newlines) are shown quoted.
    """
    path = ""
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "driver" and isinstance(part, str):
            continue
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        elif part == "[key]":  # pydantic's mark for a mapping's key rather than its value
            path += " (key)"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            path += f".{part}" if path else part
        else:
            path += f"[{printable(repr(part), 80)}]"
    return path or "(top level)"


def _problem(error: Any) -> tuple[str, str]:
    """(field path, reason) of one pydantic error; a FieldError adds the field it is about."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        loc += tuple(int(part) if part.isdigit() else part for part in cause.field.split("."))
    return _field_path(loc), printable(error["msg"].removeprefix("Value error, "))


M = TypeVar("M", bound=BaseModel)

#: Every kind of config file: its model, what it is, the command that reads it. A file given to
#: the wrong command is named as what it is, rather than as a list of keys this one does not know.
CONFIG_KINDS = (
    ("qtelemetry.config", "Config", "an exporter config", "qtelemetry run --config"),
    ("qtelemetry.devices.config", "DevicesConfig", "a simulated-devices config", "qtelemetry simulate --config"),
    ("qtelemetry.monitoring.config", "MonitoringConfig", "a monitoring config", "qtelemetry generate --config"),
    ("qtelemetry.exporter.webconfig", "WebConfigFile", "a web config file", "qtelemetry run --web.config.file"),
    ("qtelemetry.networkplan", "NetworkPlanFile", "a network plan", "qtelemetry plan-network"),
)


def _wrong_kind(model: type[BaseModel], data: dict[Any, Any]) -> str | None:
    """Why ``data`` belongs to another command, if its top-level keys are not all ``model``'s and
    all another kind's; else None."""
    unknown = data.keys() - model.model_fields.keys()
    if not unknown:
        return None
    kinds = [(getattr(importlib.import_module(module), name), what, command) for module, name, what, command in CONFIG_KINDS]
    expected = next((what for kind, what, _ in kinds if kind is model), "this command's config")
    for kind, what, command in kinds:
        if kind is not model and data.keys() <= kind.model_fields.keys():
            keys = ", ".join(sorted(f"`{key}`" for key in unknown))
            return f"this is {what} ({keys}), for `{command}`; this command reads {expected}"
    return None


def validate_yaml(model: type[M], text: str, source: str, empty_ok: bool = False,
                  config_dir: Path | None = None) -> M:
    """Validate YAML text into ``model``, or raise ConfigError listing every problem by field path.

    Relative paths in file fields are taken from ``config_dir`` (default: the current directory).
    """
    data = _mapping(model, load_yaml(text, source), source, empty_ok)
    return _validate(model, data, source, config_dir)


def _mapping(model: type[BaseModel], data: Any, source: str, empty_ok: bool = False) -> dict[Any, Any]:
    """A document's top level: a mapping, with the keys of ``model``'s kind of file; else ConfigError."""
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "expected a mapping")])
    if (other := _wrong_kind(model, data)) is not None:
        raise ConfigError(source, [("(top level)", other)])
    return data


def _validate(model: type[M], data: Any, source: str, config_dir: Path | None, at: tuple[Any, ...] = ()) -> M:
    """``data`` validated into ``model``; ConfigError with every problem, its field path under ``at``."""
    try:
        return model.model_validate(data, context={"config_dir": config_dir or Path.cwd()})
    except ValidationError as exc:
        raise ConfigError(source, [_problem({**e, "loc": (*at, *e["loc"])}) for e in exc.errors()]) from None
    except RecursionError:
        raise ConfigError(source, [(_field_path(at), "nested too deeply")]) from None


def parse_config(text: str, source: str = "<config>", config_dir: Path | None = None) -> Config:
    """Validate exporter config YAML (``exporter`` and ``links``)."""
    return validate_yaml(Config, text, source, config_dir=config_dir)


def load_config(path: str | Path) -> Config:
    """Read and validate an exporter config file; relative paths in it are from its directory."""
    return parse_config(read_text(path), str(path), Path(path).absolute().parent)


def load_link(path: str | Path, name: str) -> LinkConfig:
    """Link ``name`` of an exporter config file, validated alone: what ``plan --config`` needs, so
    that the rest (the admin token file, TLS keys, other links' devices) need not be readable by the
    one planning. ConfigError if the link is not valid, LookupError if it is not there."""
    source = str(path)
    data = _mapping(Config, load_yaml(read_text(path), source), source)
    links = data.get("links")
    if not isinstance(links, list):
        raise ConfigError(source, [("links", "expected a list of links")])
    names = [link.get("name") for link in links if isinstance(link, dict)]
    if name not in names:
        raise LookupError(f"no link {name!r} in {source} (links: {', '.join(map(str, names))})")
    at = next(i for i, link in enumerate(links) if isinstance(link, dict) and link.get("name") == name)
    return _validate(LinkConfig, links[at], source, Path(path).absolute().parent, ("links", at))


def default_config_text() -> str:
    return resources.files("qtelemetry.defaults").joinpath("demo.yaml").read_text(encoding="utf-8")


def default_config() -> Config:
    """The embedded demo: links that look different on a dashboard."""
    return parse_config(default_config_text(), "embedded demo config")
