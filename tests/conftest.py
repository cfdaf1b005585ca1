"""Shared fixtures: real `qtelemetry run` (and `qtelemetry simulate`) subprocesses on free loopback ports."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from devices import servers  # noqa: F401  (fixture: device servers on a background event loop)
from realstack import prometheus_stack  # noqa: F401  (fixture: real Prometheus + Alertmanager + webhook)
from web import endpoint  # noqa: F401  (fixture: the exporter's endpoint in the test process)

from qtelemetry import logs

URL_LINE = re.compile(r"url=(http\S+/metrics)")


#: The console script the install puts beside the interpreter: what the README runs.
QTELEMETRY = str(Path(sys.executable).with_name("qtelemetry"))


class QtelemetryProcess:
    """A ``qtelemetry ARGS`` process (the console script, as users start it: a spawned child
    process imports the script again, ``python -m`` it does not); its log goes to a file so the
    pipe can never fill up.

    Started once ``ready(log)`` returns something (kept as ``self.ready``); fails with the log if
    the process exits first or ``timeout`` passes.
    """

    def __init__(self, args: list[str], log_path: Path, ready: Callable[[str], object], timeout: float = 60.0):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [QTELEMETRY, *args], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not (found := ready(self.log())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"qtelemetry {args[0]} did not start (exit {self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        self.ready = found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


class RunningExporter(QtelemetryProcess):
    """A `qtelemetry run` process; ``url`` is its /metrics URL, as it logs it."""

    def __init__(self, args: list[str], log_path: Path):
        super().__init__(args, log_path, lambda log: (m := URL_LINE.search(log)) and m.group(1))
        self.url = self.ready

    def scrape(self) -> dict[str, list]:
        """Samples by sample name, parsed with prometheus_client's own text parser."""
        with urllib.request.urlopen(self.url, timeout=5) as response:
            return parse_exposition(response.read().decode())

    def wait_for(self, predicate: Callable[[dict[str, list]], bool], timeout: float = 60.0) -> dict[str, list]:
        """Scrape until ``predicate`` holds; fail with the last scrape's view if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape()
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                raise AssertionError("condition not met before timeout")
            time.sleep(0.1)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """The records captured so far as the exporter writes them: logfmt lines, fields included
    (``caplog.text`` holds the messages only)."""
    formatter = logs.LogfmtFormatter()
    return lambda: "\n".join(formatter.format(record) for record in caplog.records)


SERVING = re.compile(r'msg="serving site" site=(\S+) (.*) links=')


class DeviceProcess(QtelemetryProcess):
    """A `qtelemetry simulate` process; ``urls[site]`` maps kme/restconf to the URLs it logs for the site."""

    def __init__(self, config: Path, log_path: Path, sites: int):
        super().__init__(["simulate", "--config", str(config)], log_path, lambda log: len(SERVING.findall(log)) >= sites)
        self.urls = {site: dict(pair.split("=", 1) for pair in rest.split()) for site, rest in SERVING.findall(self.log())}


@pytest.fixture
def start_exporter(tmp_path: Path) -> Iterator[Callable[..., RunningExporter]]:
    """Start `qtelemetry run` with a config text (None: the embedded demo) on a free port."""
    running: list[RunningExporter] = []

    def start(config_text: str | None = None, *extra: str) -> RunningExporter:
        args = ["run", "--listen", "127.0.0.1:0", *extra]
        if config_text is not None:
            path = tmp_path / f"config{len(running)}.yaml"
            path.write_text(config_text)
            args += ["--config", str(path)]
        exporter = RunningExporter(args, tmp_path / f"exporter{len(running)}.log")
        running.append(exporter)
        return exporter

    yield start
    for exporter in running:
        exporter.stop()


def parse_exposition(text: str) -> dict[str, list]:
    """Samples by sample name, parsed with prometheus_client's own text parser."""
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]
