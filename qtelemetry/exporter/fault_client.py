"""``qtelemetry fault``: inject or clear faults on a running exporter's simulated links."""

from __future__ import annotations

import argparse
import json
import math
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from qtelemetry.configfile import printable, read_token
from qtelemetry.drivers.faults import EFFECTS, FaultConfig
from qtelemetry.text import count

M = TypeVar("M", bound=BaseModel)

EXIT_USAGE = 2
EXIT_REFUSED = 1
#: Largest answer read: the exporter's are a few hundred bytes.
MAX_ANSWER_BYTES = 64 * 1024


def _refused(message: str) -> int:
    """Print why the exporter did not do it, one line, control characters escaped."""
    print(f"error: {printable(message, 1000)}", file=sys.stderr)
    return EXIT_REFUSED


def _read(response: Any) -> bytes:
    """At most ``MAX_ANSWER_BYTES`` of an answer; ValueError if it is longer."""
    data = response.read(MAX_ANSWER_BYTES + 1)
    if len(data) > MAX_ANSWER_BYTES:
        raise ValueError(f"the answer is longer than {MAX_ANSWER_BYTES} bytes: not the exporter's")
    return data


def _request(args: argparse.Namespace, method: str, body: dict[str, Any], shape: type[M]) -> M | int:
    """The exporter's JSON answer checked against ``shape``, or the exit code after printing why there is none."""
    try:
        token = read_token(Path(args.token_file))
    except ValueError as exc:
        print(f"error: --token-file: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = args.url.rstrip("/") + "/-/faults"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return shape.model_validate_json(_read(response), strict=True)
    except urllib.error.HTTPError as exc:
        try:
            said = _read(exc).decode(errors="replace").strip()
        except (OSError, ValueError) as cause:
            said = str(cause)
        return _refused(f"{method} {url}: {exc.code} {said}")
    except urllib.error.URLError as exc:
        return _refused(f"cannot reach the exporter at {url}: {exc.reason}")
    except ValidationError as exc:  # a 200 that is not what the exporter answers
        first = exc.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"])) or "the answer"
        return _refused(f"{method} {url}: not the exporter's answer ({where}: {first['msg']})")
    except (OSError, ValueError) as exc:  # a reset connection, a bad CA file, an answer too long
        return _refused(f"{method} {url}: {exc}")


class Cleared(BaseModel):
    """The answer to DELETE /-/faults."""

    ended: int = Field(ge=0)


def describe_injected(link: str, fault: dict[str, Any]) -> str:
    """One sentence for a fault the exporter started (its reply to POST /-/faults)."""
    kind = str(fault.get("kind"))
    effect = EFFECTS.get(kind)
    magnitude = fault.get("magnitude")
    strength = (f"magnitude {magnitude:g}" if isinstance(magnitude, (int, float))
                else f"default magnitude {effect.default_magnitude:g}" if effect else "default magnitude")
    ramp = fault.get("ramp_s") or 0
    duration = fault.get("duration_s")
    timing = f"full strength after {ramp:g} s, " if ramp else "at full strength now, "
    timing += f"for {duration:g} s" if duration else "until cleared"
    return f"injected {kind} on link {link}: {strength}, {timing}"


def describe_cleared(link: str, kind: str | None, ended: Any) -> str:
    """One sentence for the reply to DELETE /-/faults."""
    what = f"{kind} fault" if kind else "fault"
    if not ended:
        return f"no {what} was active on link {link}"
    return f"ended {count(ended, what)} on link {link}"


def finite(text: str) -> float:
    """argparse type: a finite number (the exporter refuses NaN and infinities)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def cmd_inject(args: argparse.Namespace) -> int:
    body = {"link": args.link, "kind": args.kind, "start_s": 0.0, "ramp_s": args.ramp_s,
            "duration_s": args.duration_s, "magnitude": args.magnitude}
    answer = _request(args, "POST", body, FaultConfig)
    if isinstance(answer, int):
        return answer
    print(describe_injected(args.link, answer.model_dump()))
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    answer = _request(args, "DELETE", {"link": args.link, "kind": args.kind}, Cleared)
    if isinstance(answer, int):
        return answer
    print(describe_cleared(args.link, args.kind, answer.ended))
    return 0


def register(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    width = max(map(len, EFFECTS)) + 1
    kinds = "\n".join(f"  {kind:<{width}} {effect.why} (default {effect.default_magnitude:g})"
                      for kind, effect in EFFECTS.items())
    fault = verbs.add_parser(
        "fault", help="inject or clear faults on a running exporter's links",
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
            action.add_argument("--magnitude", type=finite, help="strength; default: the kind's default")
            action.add_argument("--ramp-s", type=finite, default=0.0, help="seconds to full strength")
            action.add_argument("--duration-s", type=finite, help="seconds at full strength; default: until cleared")
        else:
            action.add_argument("--kind", choices=sorted(EFFECTS), help="only this kind; default: all")
