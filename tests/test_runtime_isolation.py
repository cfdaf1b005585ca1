"""Hostile drivers: whatever one link's driver does, the other links keep their batch rate.

A real Runtime (estimation thread + asyncio poll loop) runs polled devices that return None,
strings, wrong shapes, NaN, negative or inconsistent counts, hang, raise, or answer at once,
next to healthy devices and simulated fleets, one of which is itself broken.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import parse_exposition, value
from runtime_drivers import BrokenFleetConfig, DeviceConfig, make_config, simulated

from qtelemetry.exporter.exposition import Exposition
from qtelemetry.runtime.runtime import Runtime

EXPECTED_REASON = {
    "none": "malformed_batch",
    "not-a-batch": "malformed_batch",
    "bad-duration": "malformed_batch",
    "strings": "malformed_batch",
    "wrong-shape": "malformed_batch",
    "missing": "malformed_batch",
    "extra": "malformed_batch",
    "nan": "invalid_counts",
    "negative": "invalid_counts",
    "fractional": "invalid_counts",
    "inconsistent": "inconsistent_counts",
    "hangs": "timeout",
    "raises": "driver_exception",
    "refuses": "unreachable",
    "undeclared-reason": "driver_exception",
}
RUN_SECONDS = 3.0
POLL = 0.05


def run(drivers: dict, seconds: float = RUN_SECONDS) -> tuple[Runtime, dict]:
    runtime = Runtime(make_config(drivers, window_seconds=0.1, stall_timeout_seconds=1.0))
    exposition = Exposition(lambda: runtime.snapshot)
    runtime.start()
    try:
        time.sleep(seconds)
        return runtime, parse_exposition(exposition.render().decode())
    finally:
        runtime.stop()


def healthy_links() -> dict:
    return {"healthy-a": DeviceConfig(seed=1), "healthy-b": DeviceConfig(seed=2), "eager": DeviceConfig(behaviour="eager"),
            "sim-a": simulated(1), "sim-b": simulated(2)}


@pytest.fixture(scope="module")
def baseline() -> tuple[Runtime, dict]:
    return run(healthy_links())


@pytest.fixture(scope="module")
def hostile() -> tuple[Runtime, dict]:
    drivers = healthy_links() | {name: DeviceConfig(behaviour=name) for name in EXPECTED_REASON}
    drivers |= {"fleet-raises": BrokenFleetConfig(behaviour="raises")}
    return run(drivers)


def test_healthy_links_keep_their_batch_rate_beside_hostile_ones(baseline, hostile):
    base, bad = baseline[1], hostile[1]
    for link in ("healthy-a", "healthy-b", "sim-a", "sim-b"):
        expected = value(base, "qlink_batches_total", link=link)
        assert expected >= 0.6 * RUN_SECONDS / (POLL if "healthy" in link else 0.1), link
        assert value(bad, "qlink_batches_total", link=link) >= 0.8 * expected, link
        assert value(bad, "qlink_up", link=link) == 1, link
        assert value(bad, "qkd_channel_loss_db", link=link) == pytest.approx(4.0, abs=0.5), link


def test_a_driver_that_answers_at_once_is_still_polled_at_its_interval(hostile):
    batches = value(hostile[1], "qlink_batches_total", link="eager")
    assert 0.6 * RUN_SECONDS / POLL <= batches <= RUN_SECONDS / POLL + 2


@pytest.mark.parametrize("link", sorted(EXPECTED_REASON))
def test_each_bad_link_is_down_with_its_reason_and_no_estimates(hostile, link):
    samples = hostile[1]
    assert value(samples, "qlink_up", link=link) == 0
    assert value(samples, "qlink_driver_errors_total", link=link, reason=EXPECTED_REASON[link]) >= 1
    assert value(samples, "qlink_batches_total", link=link) == 0
    assert not [s for s in samples.get("qkd_channel_loss_db", []) if s.labels["link"] == link]
    assert {s.value for s in samples["qkd_pulses_total"] if s.labels["link"] == link} == {0}  # nothing folded in


def test_a_failing_device_is_polled_with_back_off(hostile):
    runtime = hostile[0]
    errors = runtime.snapshot.errors[runtime.table.index["raises"], runtime.table.reasons.index("driver_exception")]
    assert 1 <= errors < 0.5 * RUN_SECONDS / POLL  # without back-off it would fail every 50 ms


def test_a_broken_fleet_takes_down_its_own_links_only(hostile):
    samples = hostile[1]
    assert value(samples, "qlink_up", link="fleet-raises") == 0
    assert value(samples, "qlink_driver_errors_total", link="fleet-raises", reason="driver_exception") >= 10


def test_a_malformed_fleet_window_is_rejected_whole():
    runtime, samples = run({"fleet-bad-shape": BrokenFleetConfig(behaviour="shape"), "sim": simulated(3)}, 1.0)
    assert value(samples, "qlink_driver_errors_total", link="fleet-bad-shape", reason="malformed_batch") >= 3
    assert value(samples, "qlink_up", link="sim") == 1


def test_errors_are_logged_once_per_change_not_every_poll(caplog):
    with caplog.at_level("INFO", logger="qtelemetry.runtime"):
        run({"raises": DeviceConfig(behaviour="raises", poll_interval_seconds=0.01), "ok": DeviceConfig()}, 1.0)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    # ~100 failed polls: one warning when it starts failing, one when it has been silent too long
    assert [(w.getMessage(), w.reason) for w in warnings if getattr(w, "link", None) == "raises"] == [
        ("batch dropped", "driver_exception"), ("batch dropped", "stalled")]


def test_silent_link_reports_up_with_no_estimate_and_says_why():
    runtime, samples = run({"dark": simulated(4, insertion_loss_db=400.0, dark_count_probability=0.0), "sim": simulated(5)}, 1.0)
    assert value(samples, "qlink_up", link="dark") == 1  # valid data, just no light in it
    assert value(samples, "qlink_estimates_skipped_total", link="dark", reason="no_detections") >= 3
    assert not [s for s in samples.get("qkd_secret_key_rate_bits_per_second", []) if s.labels["link"] == "dark"]
    assert not [s for s in samples.get("qlink_estimates_skipped_total", []) if s.labels["link"] == "sim"]
    assert np.isinf(value(samples, "qkd_channel_loss_db", link="dark"))
