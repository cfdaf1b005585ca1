"""Shared fixtures: a real `qtelemetry run` subprocess on a free loopback port."""

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

URL_LINE = re.compile(r"url=(http\S+/metrics)")


class RunningExporter:
    """A `qtelemetry run` process; its log goes to a file so the pipe can never fill up."""

    def __init__(self, args: list[str], log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qtelemetry", *args], stdout=self._log, stderr=subprocess.STDOUT
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = URL_LINE.search(self.log())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"exporter did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


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
