"""``qtelemetry fault``: inject or clear faults on a running exporter's simulated links."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

from qtelemetry.drivers.faults import EFFECTS


def _request(args: argparse.Namespace, method: str, body: dict[str, Any]) -> int:
    try:
        token = open(args.token_file, encoding="utf-8").read().strip()
    except OSError as exc:
        print(f"error: --token-file: {exc.strerror or exc}", file=sys.stderr)
        return 2
    request = urllib.request.Request(
        args.url.rstrip("/") + "/-/faults", data=json.dumps(body).encode(), method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"error: {exc.code}: {exc.read().decode().strip()}", file=sys.stderr)
    except urllib.error.URLError as exc:
        print(f"error: --url: {exc.reason}", file=sys.stderr)
    return 1


def cmd_inject(args: argparse.Namespace) -> int:
    body = {"link": args.link, "kind": args.kind, "start_s": 0.0, "ramp_s": args.ramp_s,
            "duration_s": args.duration_s, "magnitude": args.magnitude}
    return _request(args, "POST", body)


def cmd_clear(args: argparse.Namespace) -> int:
    return _request(args, "DELETE", {"link": args.link, "kind": args.kind})


def register(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    kinds = "\n".join(f"  {kind:<20} {effect.why} (default {effect.default_magnitude:g})"
                      for kind, effect in EFFECTS.items())
    fault = verbs.add_parser(
        "fault", help="inject or clear faults on a running exporter's simulated links",
        description="Inject or clear a fault on a simulated link of a running exporter "
                    "(needs exporter.admin_token_file in its config).\n\nkinds:\n" + kinds,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = fault.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, help_text in (("inject", cmd_inject, "start a fault now"),
                                     ("clear", cmd_clear, "end faults on a link")):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("--url", default="http://127.0.0.1:9817", help="exporter base URL")
        action.add_argument("--token-file", required=True, help="file with the exporter's admin token")
        action.add_argument("--ca-file", help="CA bundle to verify an HTTPS exporter")
        action.add_argument("--link", required=True)
        action.set_defaults(handler=handler)
        if name == "inject":
            action.add_argument("--kind", required=True, choices=sorted(EFFECTS))
            action.add_argument("--magnitude", type=float, help="strength; default: the kind's default")
            action.add_argument("--ramp-s", type=float, default=0.0, help="seconds to full strength")
            action.add_argument("--duration-s", type=float, help="seconds at full strength; default: until cleared")
        else:
            action.add_argument("--kind", choices=sorted(EFFECTS), help="only this kind; default: all")
