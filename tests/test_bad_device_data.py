"""Bad device data: the link goes down, a counter by reason rises, the other links keep going."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qtelemetry.config import LinkConfig, parse_config
from qtelemetry.drivers.base import CountBatch, DriverError
from qtelemetry.exporter.collector import SnapshotCollector
from qtelemetry.exporter.pipeline import Pipeline

NAMES = ["healthy", "silent", "raises", "refuses", "stalls", "negative", "nan", "too-many-detections",
         "errors-over-sifted", "wrong-shape"]
CONFIG = "exporter: {window_seconds: 0.05, stall_timeout_seconds: 0.3}\nlinks:\n" + "".join(
    f"  - {{name: {n}, driver: {{type: simulated-bb84, fiber_length_km: 20, seed: {i}}}}}\n" for i, n in enumerate(NAMES)
)


class Faulty:
    """A driver that misbehaves in one way; built around the real simulator's good batches."""

    def __init__(self, link: LinkConfig, window_s: float):
        self.name = link.name
        self.real = link.driver.build(window_s)
        self.closed = threading.Event()

    def acquire(self) -> CountBatch:
        batch = self.real.acquire()
        counts = {k: np.array(v, float) for k, v in batch.counts.items()}
        match self.name:
            case "raises":
                raise ConnectionResetError("device hung up")
            case "refuses":
                raise DriverError("unreachable", "connection refused")
            case "stalls":
                self.closed.wait()
            case "negative":
                counts["errors"][0, 0] = -1
            case "nan":
                counts["detections"][1] = np.nan
            case "too-many-detections":
                counts["detections"][0] = counts["pulses"][0] + 1
            case "errors-over-sifted":
                counts["errors"][1, 0] = counts["sifted"][1, 0] + 5
            case "silent":  # a dark receiver: pulses go out, nothing is detected
                counts = {k: (v if k == "pulses" else np.zeros_like(v)) for k, v in counts.items()}
            case "wrong-shape":
                counts["sifted"] = counts["sifted"][0]
        return CountBatch(batch.start, batch.duration_s, counts)

    def close(self) -> None:
        self.closed.set()
        self.real.close()


@pytest.fixture
def pipeline():
    config = parse_config(CONFIG)
    pipe = Pipeline(config, build_driver=lambda link: Faulty(link, config.exporter.window_seconds))
    pipe.start()
    yield pipe
    pipe.stop()


def scrape(pipe: Pipeline) -> dict:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: pipe.snapshot))
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


EXPECTED_REASON = {
    "raises": "driver_exception",
    "refuses": "unreachable",
    "stalls": "stalled",
    "negative": "invalid_counts",
    "nan": "invalid_counts",
    "too-many-detections": "inconsistent_counts",
    "errors-over-sifted": "inconsistent_counts",
    "wrong-shape": "malformed_batch",
}


def test_bad_links_go_down_with_a_reason_and_healthy_keeps_reporting(pipeline):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        snap = pipeline.snapshot
        if snap.batches.get("healthy", 0) >= 10 and all((n, r) in snap.errors for n, r in EXPECTED_REASON.items()):
            break
        time.sleep(0.05)
    samples = scrape(pipeline)
    assert samples[("qlink_up", (("link", "healthy"),))] == 1.0
    assert samples[("qkd_channel_loss_db", (("link", "healthy"),))] == pytest.approx(4.0, abs=0.5)
    for link, reason in EXPECTED_REASON.items():
        assert samples[("qlink_up", (("link", link),))] == 0.0, link
        assert samples[("qlink_driver_errors_total", (("link", link), ("reason", reason)))] >= 1, link
        # the dropped batches never reach the estimates or raw counters
        assert ("qkd_channel_loss_db", (("link", link),)) not in samples, link
        assert samples[("qlink_batches_total", (("link", link),))] == 0, link


def test_errors_are_logged_one_line_each(pipeline, caplog):
    with caplog.at_level("WARNING", logger="qtelemetry.exporter.pipeline"):
        time.sleep(0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert any("link=negative reason=invalid_counts" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_an_empty_window_gives_no_estimate_and_says_why(pipeline):
    deadline = time.monotonic() + 20
    while pipeline.snapshot.skipped.get(("silent", "no_detections"), 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = scrape(pipeline)
    assert samples[("qlink_up", (("link", "silent"),))] == 1.0  # valid data, just nothing in it
    assert samples[("qlink_estimates_skipped_total", (("link", "silent"), ("reason", "no_detections")))] >= 3
    assert ("qkd_qber_ratio", (("basis", "Z"), ("link", "silent"))) not in samples
    assert ("qkd_secret_key_rate_bits_per_second", (("link", "silent"),)) not in samples
    assert ("qlink_estimates_skipped_total", (("link", "healthy"), ("reason", "no_detections"))) not in samples
