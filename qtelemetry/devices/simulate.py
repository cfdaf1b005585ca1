"""``qtelemetry simulate``: simulated QKD devices in a process of their own, and a demo PKI for them.

The process runs the configured simulated links in a Runtime (the exporter's own simulators and
estimator) and serves, per site, an ETSI GS QKD 014 KME over mutual TLS and an ETSI GS QKD 015
RESTCONF node on the addresses of its config. An exporter then watches it with its real
``etsi014``/``etsi015`` drivers, the path a production deployment takes. ``--make-pki DIR``
writes certificates for a demo (never for production).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from qtelemetry import extras
from qtelemetry.config import ConfigError, parse_listen
from qtelemetry.devices.config import DevicesConfig, load_devices_config
from qtelemetry.devices.kme import KeyRelay, Kme
from qtelemetry.devices.links import links_of, qkdl_id
from qtelemetry.devices.restconf import RestconfNode
from qtelemetry.devices.serving import server_context, start
from qtelemetry.devices.simulation import runtime_links
from qtelemetry.errors import EXIT_CONFIG
from qtelemetry.runtime.runtime import Runtime
from qtelemetry.standards.restconf import NODE_PATH

log = logging.getLogger("qtelemetry.simulate")

CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: A host name a certificate may carry (RFC 1123: dot-separated labels of letters, digits and
#: inner hyphens, 63 characters each, 253 in all), unless it is an IP address.
HOST_NAME = re.compile(r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def register(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    simulate = verbs.add_parser(
        "simulate", help="serve simulated ETSI 014 KMEs and ETSI 015 nodes",
        description="Run simulated QKD links and serve, per site, an ETSI GS QKD 014 KME (mutual TLS) and an "
                    "ETSI GS QKD 015 RESTCONF node, for an exporter's etsi014/etsi015 links to watch. "
                    "--make-pki writes demo certificates instead.")
    what = simulate.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", metavar="FILE", help="YAML config: simulated links and each site's devices")
    what.add_argument("--make-pki", metavar="DIR",
                      help="write a demo PKI into DIR: ca.crt, device.crt/.key (the devices' server "
                           "certificate) and NAME.crt/.key per --client; keeps a complete existing one")
    simulate.add_argument("--client", metavar="NAME", action="append", default=[],
                          help="with --make-pki: a client certificate with common name NAME (an SAE ID, or the "
                               "exporter reading the nodes); repeat for more")
    simulate.add_argument("--host", metavar="NAME", action="append", default=[],
                          help="with --make-pki: another DNS name or IP address of the devices' host "
                               "(localhost and 127.0.0.1 are always in); repeat for more")
    simulate.set_defaults(handler=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.make_pki is not None:
        return cmd_make_pki(Path(args.make_pki), args.client, args.host)
    if args.client or args.host:
        print("error: --client and --host go with --make-pki", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_devices_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(run_devices(config))


def cmd_make_pki(directory: Path, clients: list[str], hosts: list[str]) -> int:
    try:
        pki = extras.require("qtelemetry.devices.pki", "pki")
    except extras.MissingExtra as exc:
        print(f"error: --make-pki: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    bad = [c for c in clients if not CLIENT_NAME.match(c) or c in (pki.DEVICE_STEM, pki.CA_FILE.removesuffix(".crt"))]
    if bad or len(set(clients)) < len(clients):
        print(f"error: --client: names are 1-64 letters, digits, . _ -, unique, not 'ca' or 'device': {bad or clients}",
              file=sys.stderr)
        return EXIT_CONFIG
    bad = [h for h in hosts if not _is_ip(h) and not HOST_NAME.match(h)]
    if bad:
        print(f"error: --host: not an IP address or a DNS name (RFC 1123): {bad}", file=sys.stderr)
        return EXIT_CONFIG
    names = pki.demo_pki_files(clients)
    there = [name for name in names if (directory / name).exists()]
    if there and len(there) == len(names):
        print(f"{directory}: a demo PKI with these clients is already there; kept")
        return 0
    if there:
        print(f"error: --make-pki: {directory} already holds {', '.join(there)}: remove them or pick another "
              "directory", file=sys.stderr)
        return EXIT_CONFIG
    try:
        written = pki.make_demo_pki(directory, clients, hosts)
    except (OSError, ValueError) as exc:
        print(f"error: --make-pki: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print("\n".join(str(path) for path in written))
    return 0


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def _serve(app: web.Application, listen: str, context: ssl.SSLContext) -> tuple[web.AppRunner, str]:
    host, port = parse_listen(listen)
    runner, bound = await start(app, host, port, context)
    return runner, f"https://{host}:{bound}"


async def run_devices(config: DevicesConfig) -> int:
    """Simulate the links and serve every site's devices until SIGTERM or SIGINT."""
    runtime = Runtime(config.runtime_config())
    links = runtime_links(runtime)
    relay = KeyRelay()
    saes = {sae: site for site, devices in config.sites.items() if devices.kme for sae in devices.kme.sae_ids}
    runners: list[web.AppRunner] = []
    try:
        for site, devices in config.sites.items():
            urls = {}
            if devices.kme is not None:
                tls = devices.kme.tls
                runner, url = await _serve(Kme(site, links, saes, relay).app(), devices.kme.listen,
                                           server_context(tls.cert_file, tls.key_file, tls.client_ca_file))
                runners.append(runner)
                urls["kme"] = url
            if devices.restconf is not None:
                tls = devices.restconf.tls
                context = server_context(tls.cert_file, tls.key_file, tls.client_ca_file, require_client=True)
                app = RestconfNode(site, links, devices.restconf.bearer_token()).app()
                runner, url = await _serve(app, devices.restconf.listen, context)
                runners.append(runner)
                urls["restconf"] = f"{url}{NODE_PATH}"
            served = ",".join(link.name for link in links_of(site, links))
            log.info("serving site", extra={"site": site, **urls, "links": served})
        for link in links:
            log.info("simulated link", extra={"link": link.name, "qkdl_id": qkdl_id(link.name),
                                              "sites": f"{link.site_a},{link.site_b}"})
    except OSError as exc:
        print(f"error: listen: {exc.strerror or exc}", file=sys.stderr)
        await _cleanup(runners)
        return EXIT_CONFIG
    runtime.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down")
    await _cleanup(runners)
    runtime.stop()
    return 0


async def _cleanup(runners: list[web.AppRunner]) -> None:
    for runner in runners:
        await runner.cleanup()
