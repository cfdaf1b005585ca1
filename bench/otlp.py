"""What pushing over OTLP costs the exporter: `qtelemetry run` with N links, with and without
``exporter.otlp``, scraped over HTTP in both.

The collector is a real OTLP/HTTP endpoint in its own process: it decodes every request
(protobuf) and records its size, data points and arrival. Printed per size: scrape p50/p99 (one
scraper), exporter CPU (cores) and RSS, each with OTLP as a ratio to the same exporter without it
(measured in the same run); and the pushes: data points per push, requests per push (the
exporter splits them at ``MAX_POINTS_PER_REQUEST`` points), the largest request, and how long a
push's requests took to arrive.

    python bench/otlp.py [--links 1000,10000] [--seconds 60] [--interval 15]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import QTELEMETRY, Process, config_text, cpu_seconds, percentile, rss_mb, scrape_for  # noqa: E402

SERVING = rb"url=(http://\S+/metrics)"


def collector(port: "multiprocessing.Value", requests: "multiprocessing.Queue") -> None:
    """Answer 200 to every OTLP request and queue (arrival time, bytes, data points)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrived = time.time()
            request = ExportMetricsServiceRequest()
            request.ParseFromString(body)
            points = sum(len(getattr(m, m.WhichOneof("data")).data_points) for r in request.resource_metrics
                         for s in r.scope_metrics for m in s.metrics)
            requests.put((arrived, len(body), points))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.value = server.server_address[1]
    server.serve_forever()


def pushes_of(arrivals: list[tuple[float, int, int]], interval: float) -> list[list[tuple[float, int, int]]]:
    """Requests grouped into pushes: a gap of more than half the interval starts a new push."""
    groups: list[list[tuple[float, int, int]]] = []
    for request in sorted(arrivals):
        if not groups or request[0] - groups[-1][-1][0] > interval / 2:
            groups.append([])
        groups[-1].append(request)
    return groups


def run(links: int, seconds: float, otlp_url: str | None, interval: float, tmp: Path) -> dict:
    config = config_text(links)
    if otlp_url:
        config = config.replace("exporter: {", f'exporter: {{otlp: {{endpoint: "{otlp_url}", '
                                              f"interval_seconds: {interval}}}, ")
    path = tmp / f"otlp-{links}-{bool(otlp_url)}.yaml"
    path.write_text(config)
    process = Process([QTELEMETRY, "run", "--config", str(path), "--listen", "127.0.0.1:0"], SERVING, links,
                      tmp / f"{path.stem}.log")
    try:
        time.sleep(interval)  # a first push under way
        cpu0, t0 = cpu_seconds(process.proc.pid), time.monotonic()
        scrapes = scrape_for(process.url, seconds, 1, False)
        return {"cores": (cpu_seconds(process.proc.pid) - cpu0) / (time.monotonic() - t0),
                "p50": percentile(scrapes.latencies, 0.5), "p99": percentile(scrapes.latencies, 0.99),
                "rss": rss_mb(process.proc.pid), "window": (t0, time.monotonic())}
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--links", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=60.0, help="scraping time per exporter")
    parser.add_argument("--interval", type=float, default=15.0, help="exporter.otlp.interval_seconds")
    args = parser.parse_args()
    port, queue = multiprocessing.Value("i", 0), multiprocessing.Queue()
    receiver = multiprocessing.Process(target=collector, args=(port, queue), daemon=True)
    receiver.start()
    while not port.value:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port.value}/v1/metrics"
    with tempfile.TemporaryDirectory() as tmp:
        for links in (int(n) for n in args.links.split(",")):
            without = run(links, args.seconds, None, args.interval, Path(tmp))
            wall = time.time()
            with_otlp = run(links, args.seconds, url, args.interval, Path(tmp))
            arrivals = []
            while not queue.empty():
                arrivals.append(queue.get())
            pushes = pushes_of([a for a in arrivals if a[0] >= wall], args.interval)
            print(f"\n{links} links, {args.seconds:g} s scraped, one push every {args.interval:g} s")
            for key, label in (("p50", "scrape p50"), ("p99", "scrape p99"), ("cores", "exporter CPU (cores)"),
                               ("rss", "exporter RSS (MB)")):
                print(f"  {label:22} without {without[key]:9.4g}  with OTLP {with_otlp[key]:9.4g}  "
                      f"ratio {with_otlp[key] / without[key]:5.2f}")
            if pushes:
                points = [sum(r[2] for r in p) for p in pushes]
                print(f"  pushes received {len(pushes)}: {max(points):,} data points each at most, "
                      f"{max(len(p) for p in pushes)} requests, largest {max(r[1] for p in pushes for r in p) / 1e6:.2f} MB, "
                      f"requests of a push spread over {max(p[-1][0] - p[0][0] for p in pushes):.2f} s at most")
    receiver.terminate()


if __name__ == "__main__":
    main()
