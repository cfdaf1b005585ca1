"""Basic auth under attack: a real `qtelemetry run` with a bcrypt user, probed over HTTP.

Prints the median reply time of a wrong password for the configured user and for an unknown
user (equal times: user names cannot be found by timing), and the p50 of a legitimate scrape
alone and while ``--attackers`` connections send wrong passwords as fast as they are answered
(the ratio shows whether failed checks starve scrapes). Then, with the guessing going on, the
share of scrapes answered 200 before and after a SIGHUP (the scraper from 127.0.0.2, the
guessers from 127.0.0.1), and of ten tries of a user never checked before, from 127.0.0.3
(as every user right after a restart). bcrypt cost 12 is the library's default.

    python bench/web_auth.py [--attackers 16] [--scrapes 20] [--cost 12]

Run it against another checkout with ``PYTHONPATH=/path/to/checkout``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import bcrypt

LINKS = "links: [{name: metro, driver: {type: simulated-bb84, fiber_length_km: 10}}]\n"
URL = re.compile(r"url=(http\S+/metrics)")


def get(url: str, user: str, password: str, source: str = "127.0.0.1") -> tuple[float, int]:
    """(seconds, HTTP status) of one GET with basic credentials, from the loopback address ``source``."""
    parts = urllib.parse.urlsplit(url)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    started = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60, source_address=(source, 0))
    try:
        conn.request("GET", parts.path, headers={"Authorization": f"Basic {token}", "Accept-Encoding": "gzip"})
        response = conn.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return time.perf_counter() - started, status


def median_time(url: str, user: str, password: str, n: int) -> float:
    return statistics.median(get(url, user, password)[0] for _ in range(n))


def success(url: str, user: str, password: str, source: str, n: int) -> str:
    statuses = [get(url, user, password, source)[1] for _ in range(n)]
    return f"{statuses.count(200)}/{n} answered 200 (" + ", ".join(
        f"{s}: {statuses.count(s)}" for s in sorted(set(statuses))) + ")"


def start(directory: Path, cost: int) -> tuple[subprocess.Popen, str]:
    hashed = {user: bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=cost)).decode() for user in ("prometheus", "grafana")}
    config = directory / "config.yaml"
    config.write_text(f"exporter: {{web: {{basic_auth_users: {{prometheus: '{hashed['prometheus']}', "
                      f"grafana: '{hashed['grafana']}'}}}}}}\n" + LINKS)
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
    parser.add_argument("--attackers", type=int, default=16)
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
            print(f"legitimate scrape p50 alone:  {alone * 1000:8.1f} ms")
            print(f"  with {args.attackers} wrong-password clients: {attacked * 1000:8.1f} ms ({attacked / alone:.1f}x)")
            get(url, "prometheus", "right", "127.0.0.2")
            print(f"scraper (127.0.0.2) before SIGHUP: {success(url, 'prometheus', 'right', '127.0.0.2', args.scrapes)}")
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)  # the reload is done within this, even on a loaded machine
            print(f"scraper (127.0.0.2) after SIGHUP:  {success(url, 'prometheus', 'right', '127.0.0.2', args.scrapes)}")
            print(f"new user (127.0.0.3):               {success(url, 'grafana', 'right', '127.0.0.3', 10)}")
            stop.set()
            for thread in attackers:
                thread.join()
            print("the guessers' answers: " + ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses))))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
