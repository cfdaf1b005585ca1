"""Basic auth under attack: a real `qtelemetry run` with a bcrypt user, probed over HTTP.

Prints the median reply time of a wrong password for the configured user and for an unknown
user (equal times: user names cannot be found by timing), and the p50 of a legitimate scrape
alone and while ``--attackers`` clients send wrong passwords as fast as they are answered (the
ratio shows whether failed checks starve scrapes). bcrypt cost 12 is the library's default.

    python bench/web_auth.py [--attackers 8] [--scrapes 20] [--cost 12]

Run it against another checkout with ``PYTHONPATH=/path/to/checkout``.
"""

from __future__ import annotations

import argparse
import base64
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

LINKS = "links: [{name: metro, driver: {type: simulated-bb84, fiber_length_km: 10}}]\n"
URL = re.compile(r"url=(http\S+/metrics)")


def get(url: str, user: str, password: str) -> tuple[float, int]:
    """(seconds, HTTP status) of one GET with basic credentials."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}", "Accept-Encoding": "gzip"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    return time.perf_counter() - started, status


def median_time(url: str, user: str, password: str, n: int) -> float:
    return statistics.median(get(url, user, password)[0] for _ in range(n))


def start(directory: Path, cost: int) -> tuple[subprocess.Popen, str]:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=cost)).decode()
    config = directory / "config.yaml"
    config.write_text(f"exporter: {{web: {{basic_auth_users: {{prometheus: '{hashed}'}}}}}}\n" + LINKS)
    log = directory / "exporter.log"
    proc = subprocess.Popen([sys.executable, "-m", "qtelemetry", "run", "--config", str(config),
                             "--listen", "127.0.0.1:0"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = URL.search(log.read_text())
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"exporter exited:\n{log.read_text()}")
        time.sleep(0.1)
    raise SystemExit("exporter did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attackers", type=int, default=8)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--cost", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(Path(tmp), args.cost)
        try:
            assert get(url, "prometheus", "right")[1] == 200
            known = median_time(url, "prometheus", "wrong", 10)
            unknown = median_time(url, "nobody", "wrong", 10)
            print(f"wrong password, known user:   {known * 1000:8.1f} ms (median of 10)")
            print(f"wrong password, unknown user: {unknown * 1000:8.1f} ms (median of 10)")
            alone = median_time(url, "prometheus", "right", args.scrapes)
            stop = threading.Event()
            statuses: list[int] = []

            def attack() -> None:
                while not stop.is_set():
                    statuses.append(get(url, "prometheus", "guess")[1])

            attackers = [threading.Thread(target=attack, daemon=True) for _ in range(args.attackers)]
            for thread in attackers:
                thread.start()
            time.sleep(1.0)
            attacked = median_time(url, "prometheus", "right", args.scrapes)
            stop.set()
            for thread in attackers:
                thread.join()
            print(f"legitimate scrape p50 alone:  {alone * 1000:8.1f} ms")
            print(f"  with {args.attackers} wrong-password clients: {attacked * 1000:8.1f} ms "
                  f"({attacked / alone:.1f}x); their answers: "
                  + ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses))))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
