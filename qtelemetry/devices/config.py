"""Config of a simulated-device process (``qtelemetry simulate``); every error names its field.

It names the simulated links (the exporter's own ``links`` entries: simulated drivers that
distil key, which the device process runs in a Runtime of its own) and, per site, the devices
that serve them: an ETSI GS QKD 014 KME (listen address, TLS files, the SAE IDs of the site's
applications: the common names of their client certificates) and an ETSI GS QKD 015 RESTCONF
node (listen address, TLS files, an optional bearer token).
"""

from __future__ import annotations

import ssl
from collections import Counter
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from qtelemetry.config import LABEL_VALUE, Config, ConfigError, ExporterConfig, LinkConfig, parse_listen, read_text, validate_yaml
from qtelemetry.configfile import ReadableFile, TokenFile, read_token
from qtelemetry.devices.serving import server_context
from qtelemetry.drivers.base import StrictModel, check
from qtelemetry.drivers.simulated import KeyDistillingConfig


class ServerTLS(StrictModel):
    """TLS of a device's server: its certificate, and the CA its clients' certificates are checked against."""

    cert_file: ReadableFile = Field(description="server certificate (PEM)")
    key_file: ReadableFile = Field(description="private key of cert_file (PEM)")
    client_ca_file: ReadableFile | None = Field(None, description="CA that signs client certificates")

    @check
    def _loadable(self) -> "ServerTLS":
        try:
            server_context(self.cert_file, self.key_file, self.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the TLS files: {exc}") from None
        return self


class Listening(StrictModel):
    listen: str = Field(description="HOST:PORT the device serves on (port 0: any free port, logged)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value


class KmeConfig(Listening):
    """The site's ETSI GS QKD 014 KME, over mutual TLS."""

    tls: ServerTLS = Field(description="server certificate and the CA of the SAEs' client certificates")
    sae_ids: list[str] = Field(min_length=1, description="SAE IDs of the site's applications (certificate common names)")

    @field_validator("sae_ids")
    @classmethod
    def _sae_ids(cls, ids: list[str]) -> list[str]:
        for sae in ids:
            if not sae or len(sae) > 256 or not sae.isprintable() or "/" in sae:
                raise ValueError(f"{sae!r}: an SAE ID is 1-256 printable characters without '/'")
        return ids

    @check
    def _mutual_tls(self) -> "KmeConfig":
        if self.tls.client_ca_file is None:
            raise ValueError("tls.client_ca_file is required: ETSI GS QKD 014 identifies SAEs by client certificates")
        return self


class RestconfConfig(Listening):
    """The site's ETSI GS QKD 015 SD-QKD node over RESTCONF (HTTPS)."""

    tls: ServerTLS = Field(description="server certificate; with client_ca_file, clients must present a certificate")
    bearer_token_file: TokenFile | None = Field(None, description="file holding a bearer token every request must carry")

    def bearer_token(self) -> str | None:
        return None if self.bearer_token_file is None else read_token(self.bearer_token_file)


class SiteDevices(StrictModel):
    kme: KmeConfig | None = None
    restconf: RestconfConfig | None = None

    @check
    def _something(self) -> "SiteDevices":
        if self.kme is None and self.restconf is None:
            raise ValueError("a site serves a kme, a restconf node or both")
        return self


class SimulationConfig(StrictModel):
    window_seconds: float = Field(1.0, gt=0.0, le=60.0, description="simulation and estimation window, s")
    sliding_windows: int = Field(10, ge=1, le=3600, description="windows summed per estimate the nodes report")


class DevicesConfig(StrictModel):
    simulation: SimulationConfig = SimulationConfig()
    links: list[LinkConfig] = Field(min_length=1, description="simulated links (the exporter's link entries)")
    sites: dict[Annotated[str, Field(pattern=LABEL_VALUE)], SiteDevices] = Field(min_length=1, description="site name -> the devices it serves")

    def runtime_config(self) -> Config:
        """The exporter config of the Runtime that simulates the links."""
        exporter = ExporterConfig(window_seconds=self.simulation.window_seconds,
                                  sliding_windows=self.simulation.sliding_windows)
        return Config(exporter=exporter, links=self.links)


def problems(config: DevicesConfig) -> list[tuple[str, str]]:
    """What pydantic cannot see field by field: names, SAE IDs and listen addresses that clash."""
    found = []
    names = Counter(link.name for link in config.links)
    ends = {site for link in config.links for site in (link.site_a, link.site_b)}
    for i, link in enumerate(config.links):
        if not isinstance(link.driver, KeyDistillingConfig):
            found.append((f"links[{i}].driver.type", f"{link.driver.type!r} has no key store to serve: "
                          "simulate runs simulated links that distil key (simulated-bb84, simulated-spdc)"))
        if names[link.name] > 1:
            found.append((f"links[{i}].name", f"duplicate link name {link.name!r}"))
    saes: dict[str, str] = {}
    listens: dict[str, str] = {}
    for site, devices in config.sites.items():
        path = f"sites.{site}"
        if site not in ends:
            found.append((path, "no link has an end at this site"))
        for kind, device in (("kme", devices.kme), ("restconf", devices.restconf)):
            if device is None:
                continue
            where = f"{path}.{kind}.listen"
            if device.listen in listens and not device.listen.endswith(":0"):
                found.append((where, f"{device.listen} is also {listens[device.listen]}"))
            listens.setdefault(device.listen, where)
        if devices.kme is not None:
            for j, sae in enumerate(devices.kme.sae_ids):
                if sae in saes:
                    found.append((f"{path}.kme.sae_ids[{j}]", f"SAE ID {sae!r} is also served at site {saes[sae]}"))
                saes.setdefault(sae, site)
            peers = Counter(link.site_b if link.site_a == site else link.site_a
                            for link in config.links if site in (link.site_a, link.site_b))
            for peer, count in peers.items():
                if count > 1:
                    found.append((f"{path}.kme", f"{count} links join {site} and {peer}: ETSI GS QKD 014 names a key "
                                  "stream by its SAE pair, so a KME serves at most one link per pair of sites"))
    return found


def parse_devices_config(text: str, source: str = "<config>", config_dir: Path | None = None) -> DevicesConfig:
    """Validate a ``qtelemetry simulate`` config; relative paths are from ``config_dir`` (default: here)."""
    config = validate_yaml(DevicesConfig, text, source, config_dir=config_dir)
    found = problems(config)
    if found:
        raise ConfigError(source, found)
    return config


def load_devices_config(path: str | Path) -> DevicesConfig:
    """Read and validate a ``qtelemetry simulate`` config file; relative paths in it are from its directory."""
    return parse_devices_config(read_text(path), str(path), Path(path).absolute().parent)
