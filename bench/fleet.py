"""The whole exporter under load: `qtelemetry run` with N simulated links, scraped over HTTP.

For each size, a real `qtelemetry run` process and, as the baseline measured in the same run,
``naive_exporter.py`` (same links, simulators and estimator; labelled prometheus_client Gauges
set every window). Scrapers ask for gzip, as Prometheus does. Printed per process: start-up
time, CPU (cores) idle and while scraped, RSS and PSS (also with children), scrape latency
p50/p99 with 1 and 4 concurrent scrapers, payload size, and the median and worst
`qlink_data_age_seconds` seen by the scrapes.

    python bench/fleet.py [--links 100,1000,10000] [--seconds 30] [--soak 600]

``--soak S`` also runs the largest size alone for S seconds, scraped every 15 s like a
Prometheus job, and prints RSS over time.

Last, what the exporter's own metrics (process, endpoint, durations: a prometheus_client
registry rendered at every scrape) cost a scrape of the largest size: in this process, the
scrape path (cached body reused; scrape-time families, own registry and gzip tail rendered) of
the same snapshot with and without the own registry, alternated ``--own-scrapes`` times, in CPU
time of the rendering thread (wall time on a busy machine also counts waiting for a core after
each of the registry's /proc reads).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
AGE = re.compile(rb"^qlink_data_age_seconds\{[^}]*\} (\S+)$", re.M)
#: An exporter whose links are not all up by then has failed the run (a hang is no figure).
READY_TIMEOUT_S = 240.0
UP = re.compile(rb"^qlink_up\{[^}]*\} 1(?:\.0)?$", re.M)
ARMED = re.compile(rb"^qkd_tamper_warmup\{[^}]*\} 0(?:\.0)?$", re.M)
TICK = os.sysconf("SC_CLK_TCK")
#: The exporter as users start it: the console script beside the interpreter (a process it spawns
#: imports the script again; ``python -m qtelemetry`` it does not).
QTELEMETRY = str(Path(sys.executable).with_name("qtelemetry"))


def config_text(links: int) -> str:
    """N decoy-BB84 links; the tamper detectors' warm-up cut to 5 s (default 600 s) so that they run,
    and their series are exported, for all of the measured time, as in production after warm-up."""
    lines = ["exporter: {window_seconds: 1.0, sliding_windows: 60, tamper: {warmup_seconds: 5}}", "links:"]
    lines += [f"  - {{name: link-{i:05d}, site_a: site-{i % 7}, site_b: site-{(i + 1) % 7}, driver: "
              f"{{type: simulated-bb84, fiber_length_km: {5 + i % 120}, seed: {i}}}}}" for i in range(links)]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pss_mb(pid: int) -> float:
    """Proportional set size: each page shared with other processes (the libraries a child
    loads again, say) counted as its share, so a process tree's PSS adds up to what its
    container's memory (cgroup) counts once, where the RSS sum counts shared pages twice."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def descendants(pid: int) -> list[int]:
    """The process's children, their children, ... (the exporter's network analysis runs in one)."""
    try:
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except FileNotFoundError:  # it ended meanwhile
        return []
    return children + [d for c in children for d in descendants(c)]


def tree_total(pid: int, figure: Callable[[int], float]) -> float:
    """A figure (RSS, CPU seconds) summed over the process and its descendants: what its container
    spends; a child that ended meanwhile counts nothing."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(FileNotFoundError):
            total += figure(p)
    return total


def scrape(url: str) -> tuple[float, bytes, bool]:
    """(seconds, body as sent, whether it is gzip-encoded) of one scrape asking for gzip."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        raw = response.read()
        encoded = response.headers.get("Content-Encoding") == "gzip"
    return time.perf_counter() - started, raw, encoded


def body_of(raw: bytes, encoded: bool) -> bytes:
    return gzip.decompress(raw) if encoded else raw


@dataclass
class Scrapes:
    latencies: list[float] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)
    wire: int = 0
    size: int = 0
    failed: int = 0

    def add(self, elapsed: float, raw: bytes, encoded: bool, read_ages: bool) -> None:
        """One scrape; every fifth one is decompressed to read the data ages (from the end of
        the body, where the scrape-time families are), so scrapers stay light on the CPU."""
        self.latencies.append(elapsed)
        if len(self.latencies) % 5 == 1:
            body = body_of(raw, encoded)
            self.wire, self.size = len(raw), len(body)
            if read_ages:
                self.ages += [float(v) for v in AGE.findall(body, max(0, len(body) - 4_000_000))]


def scrape_loop(url: str, deadline: float, read_ages: bool) -> Scrapes:
    """One scraper: back-to-back scrapes until ``deadline`` (time.time())."""
    result = Scrapes()
    while time.time() < deadline:
        try:
            result.add(*scrape(url), read_ages)
        except OSError:  # a timeout (60 s) or a refused connection: the scrape failed
            result.failed += 1
    return result


def scrape_for(url: str, seconds: float, scrapers: int, read_ages: bool) -> Scrapes:
    """``scrapers`` concurrent scrapers, each its own process (as Prometheus servers are), so that
    decompressing and parsing 30 MB bodies never queues behind one interpreter lock."""
    with multiprocessing.Pool(scrapers) as pool:
        parts = pool.starmap(scrape_loop, [(url, time.time() + seconds, read_ages)] * scrapers)
    merged = Scrapes()
    for part in parts:
        merged.latencies += part.latencies
        merged.ages += part.ages
        merged.wire, merged.size = max(merged.wire, part.wire), max(merged.size, part.size)
        merged.failed += part.failed
    return merged


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Process:
    """An exporter process on a free port; ``ready`` once every link is up."""

    def __init__(self, command: list[str], url_pattern: bytes, links: int, log: Path):
        self.log = log.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = self._wait_url(log, url_pattern)
        self.serving_s = time.monotonic() - self.started
        deadline = self.started + READY_TIMEOUT_S
        while (up := len(UP.findall(body_of(*scrape(self.url)[1:])))) < links:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{up} of {links} links up after {READY_TIMEOUT_S:g} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        self.ready_s = time.monotonic() - self.started

    def _wait_url(self, log: Path, pattern: bytes) -> str:
        while not (match := re.search(pattern, log.read_bytes())):
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited:\n{log.read_text()}")
            time.sleep(0.1)
        return match.group(1).decode()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def measure(name: str, command: list[str], pattern: bytes, links: int, seconds: float, tmp: Path) -> dict:
    process = Process(command, pattern, links, tmp / f"{name}-{links}.log")
    pid = process.proc.pid
    try:
        cold_scrape_s = scrape(process.url)[0]  # nothing rendered ahead yet
        rss_start, cpu0, t0 = rss_mb(pid), cpu_seconds(pid), time.monotonic()
        run_start = (t0, cpu0, tree_total(pid, cpu_seconds))  # (time, CPU, CPU with children) of the whole run
        time.sleep(min(10.0, seconds))
        idle_cores = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        row = {"process": name, "links": links, "serving_s": process.serving_s, "ready_s": process.ready_s,
               "cold_scrape_s": cold_scrape_s, "idle_cores": idle_cores, "rss_start_mb": rss_start}
        for scrapers in (1, 4):
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            result = scrape_for(process.url, seconds, scrapers, name == "qtelemetry")
            row[f"cores_{scrapers}"] = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            row[f"p50_{scrapers}"] = percentile(result.latencies, 0.5)
            row[f"p99_{scrapers}"] = percentile(result.latencies, 0.99)
            row[f"scrapes_{scrapers}"] = len(result.latencies)
            row[f"failed_{scrapers}"] = result.failed
            row[f"cpu_per_scrape_{scrapers}"] = row[f"cores_{scrapers}"] * seconds / max(1, len(result.latencies))
            row["payload_mb"], row["wire_mb"] = result.size / 1e6, result.wire / 1e6
            if result.ages:
                row[f"age_median_{scrapers}"] = statistics.median(result.ages)
                row[f"age_worst_{scrapers}"] = max(result.ages)
        row["rss_end_mb"], row["tree_rss_end_mb"] = rss_mb(pid), tree_total(pid, rss_mb)
        row["pss_end_mb"], row["tree_pss_end_mb"] = pss_mb(pid), tree_total(pid, pss_mb)
        elapsed = time.monotonic() - run_start[0]
        row["run_cores"] = (cpu_seconds(pid) - run_start[1]) / elapsed
        row["tree_run_cores"] = (tree_total(pid, cpu_seconds) - run_start[2]) / elapsed
        if name == "qtelemetry":  # the naive exporter runs the same detectors (same Runtime); a scrape of it
            row["tamper_running"] = len(ARMED.findall(body_of(*scrape(process.url)[1:])))  # can take a minute
        return row
    finally:
        process.stop()


def soak(links: int, seconds: float, tmp: Path) -> None:
    config = tmp / f"soak-{links}.yaml"
    config.write_text(config_text(links))
    process = Process([QTELEMETRY, "run", "--config", str(config), "--listen", "127.0.0.1:0"],
                      rb"url=(http\S+/metrics)", links, tmp / "soak.log")
    pid, started = process.proc.pid, time.monotonic()
    print(f"\nsoak: {links} links for {seconds:.0f} s, scraped every 15 s\n"
          "  t (s)   RSS (MB)   cores since last   worst data age (s)")
    cpu0, t0, samples, worst_ages = cpu_seconds(pid), started, [], []
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            body = body_of(*scrape(process.url)[1:])
            worst_ages.append(max(float(v) for v in AGE.findall(body)))
            cpu1, t1, rss = cpu_seconds(pid), time.monotonic(), rss_mb(pid)
            cores = (cpu1 - cpu0) / (t1 - t0) if t1 - t0 > 1 else float("nan")
            print(f"  {elapsed:5.0f}   {rss:8.0f}   {cores:16.2f}   {worst_ages[-1]:6.2f}", flush=True)
            samples.append((elapsed, rss))
            cpu0, t0 = cpu1, t1
            time.sleep(15)
    finally:
        process.stop()
    second_minute = [rss for at, rss in samples if 60 <= at < 120]
    last_minute = [rss for at, rss in samples if at >= seconds - 60]
    if second_minute and last_minute:  # medians: RSS swings by a window's arrays between samples
        early, late = statistics.median(second_minute), statistics.median(last_minute)
        print(f"  RSS median in the second minute {early:.0f} MB, in the last minute {late:.0f} MB "
              f"({100 * (late / early - 1):+.1f} %); worst data age over the run {max(worst_ages):.2f} s")


def own_metrics_cost(links: int, scrapes: int) -> None:
    from qtelemetry import selfmetrics
    from qtelemetry.config import parse_config
    from qtelemetry.exporter.exposition import Exposition
    from qtelemetry.exporter.server import EndpointMetrics
    from qtelemetry.runtime.runtime import Runtime

    own = selfmetrics.registry()
    runtime = Runtime(parse_config(config_text(links)), own)
    EndpointMetrics(own, lambda: 4, lambda: 512).answered("/metrics", 200, 0.1)
    for _ in range(2):
        runtime.cycle()
    variants = {"with": Exposition(lambda: runtime.snapshot, own), "without": Exposition(lambda: runtime.snapshot)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    sizes = {name: len(exposition.render(gzip=True)) for name, exposition in variants.items()}  # renders the body
    for _ in range(scrapes):
        for name, exposition in variants.items():
            started = time.thread_time()
            exposition.render(gzip=True)
            seconds[name].append(time.thread_time() - started)
    alone = []
    for _ in range(scrapes):
        started = time.thread_time()
        own_text = variants["with"]._own(openmetrics=False)  # noqa: SLF001 - the own registry alone
        alone.append(time.thread_time() - started)
    with_ms, without_ms = (1e3 * statistics.median(seconds[n]) for n in ("with", "without"))
    print(f"\nown metrics, {links} links, {scrapes} alternated gzip scrapes of one snapshot "
          "(median CPU ms per scrape):\n"
          f"  without the own registry {without_ms:8.2f}\n  with it                  {with_ms:8.2f}"
          f"   ratio {with_ms / without_ms:.3f}, +{with_ms - without_ms:.2f} ms\n"
          f"  the own registry alone   {1e3 * statistics.median(alone):8.2f}"
          f"   ({len(own_text.splitlines())} lines; gzip body {sizes['without']} -> {sizes['with']} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--links", default="100,1000,10000")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="scraping time per scraper count (0: no processes, only the own metrics' cost)")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of the long run of the largest size")
    parser.add_argument("--own-scrapes", type=int, default=200,
                        help="alternated scrapes measuring the own metrics' cost at the largest size (0: skip)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.links.split(",")]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = []
        for links in sizes if args.seconds else ():
            config = tmp / f"fleet-{links}.yaml"
            config.write_text(config_text(links))
            port = free_port()
            rows.append(measure("qtelemetry", [QTELEMETRY, "run", "--config", str(config),
                                               "--listen", "127.0.0.1:0"], rb"url=(http\S+/metrics)", links, args.seconds, tmp))
            rows.append(measure("naive", [sys.executable, str(HERE / "naive_exporter.py"), str(config), str(port)],
                                rb"serving (http\S+/metrics)", links, args.seconds, tmp))
            report(rows[-2:])
            sys.stdout.flush()
        if args.soak:
            soak(sizes[-1], args.soak, tmp)
    if args.own_scrapes:
        own_metrics_cost(sizes[-1], args.own_scrapes)


def report(rows: list[dict], names: tuple[str, ...] = ("qtelemetry", "naive")) -> None:
    """One column per run, then each later run's ratio to the first."""
    first = rows[0]
    print(f"\n{first['links']} links (gzip scrapes; p50/p99 in ms; ratio = each / {names[0]})")
    keys = [("serving_s", "serving after (s)", 1), ("ready_s", "all links up after (s)", 1),
            ("cold_scrape_s", "first scrape (ms)", 1e3), ("idle_cores", "CPU unscraped (cores)", 1),
            ("run_cores", "CPU over the run (cores)", 1), ("tree_run_cores", "CPU over the run, with children", 1),
            ("cores_1", "CPU, 1 scraper (cores)", 1), ("cores_4", "CPU, 4 scrapers (cores)", 1),
            ("p50_1", "p50, 1 scraper", 1e3), ("p99_1", "p99, 1 scraper", 1e3),
            ("p50_4", "p50, 4 scrapers", 1e3), ("p99_4", "p99, 4 scrapers", 1e3),
            ("scrapes_4", "scrapes served (4 scrapers)", 1), ("failed_4", "scrapes failed (4 scrapers)", 1),
            ("cpu_per_scrape_1", "CPU per scrape, 1 scraper (ms)", 1e3),
            ("cpu_per_scrape_4", "CPU per scrape, 4 scrapers (ms)", 1e3),
            ("payload_mb", "payload (MB)", 1), ("wire_mb", "on the wire, gzip (MB)", 1),
            ("rss_start_mb", "RSS at start (MB)", 1), ("rss_end_mb", "RSS at end (MB)", 1),
            ("tree_rss_end_mb", "RSS at end, with children (MB)", 1),
            ("pss_end_mb", "PSS at end (MB)", 1), ("tree_pss_end_mb", "PSS at end, with children (MB)", 1),
            ("age_median_1", "data age median (s)", 1), ("age_worst_1", "data age worst (s)", 1),
            ("age_median_4", "data age median, 4 scrapers (s)", 1), ("age_worst_4", "data age worst, 4 scrapers (s)", 1),
            ("tamper_running", "links with tamper detectors running", 1)]
    print(f"  {'':34} " + " ".join(f"{name[:12]:>12}" for name in names) + " "
          + " ".join(f"{'ratio ' + name[:6]:>12}" for name in names[1:]))
    for key, label, scale in keys:
        values = [row.get(key) for row in rows]
        fmt = lambda v: f"{v * scale:12.3f}" if isinstance(v, float) else (f"{v:12d}" if v is not None else f"{'-':>12}")  # noqa: E731
        ratios = [f"{v / values[0]:12.2f}" if values[0] and v else f"{'':12}" for v in values[1:]]
        print(f"  {label:34} " + " ".join(fmt(v) for v in values) + " " + " ".join(ratios))


if __name__ == "__main__":
    main()
