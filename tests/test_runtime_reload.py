"""Reload: links added start, links removed stop, the others continue their series without a gap."""

from __future__ import annotations

import time

import pytest
from conftest import parse_exposition, value
from runtime_drivers import DeviceConfig, make_config, simulated

from qtelemetry.drivers.faults import FaultConfig
from qtelemetry.exporter.exposition import Exposition
from qtelemetry.runtime.runtime import Runtime


class CountingDevice(DeviceConfig):
    """A healthy device that counts how often a driver is built for it."""

    def build(self):  # noqa: ANN201
        BUILT.append(self.seed)
        return super().build()


BUILT: list[int] = []


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


@pytest.fixture
def running():
    BUILT.clear()
    before = {"kept-sim": simulated(1, key_consumption_bps=1e6), "gone-sim": simulated(2),
              "kept-polled": CountingDevice(seed=3), "gone-polled": CountingDevice(seed=4)}
    runtime = Runtime(make_config(before, window_seconds=0.05, stall_timeout_seconds=1.0))
    exposition = Exposition(lambda: runtime.snapshot)
    runtime.reload_hooks.append(exposition.families)
    runtime.start()
    yield runtime, exposition
    runtime.stop()


def scrape(exposition: Exposition) -> dict:
    return parse_exposition(exposition.render().decode())


def test_reload_starts_stops_and_continues_links(running):
    runtime, exposition = running
    wait_for(lambda: runtime.snapshot.batches.min() >= 5)
    runtime.faults("kept-sim").inject(FaultConfig(kind="intercept-resend", magnitude=1.0))
    qber = lambda s: [x.value for x in s.get("qkd_qber_ratio", []) if x.labels == {"link": "kept-sim", "basis": "Z"}]  # noqa: E731
    wait_for(lambda: qber(scrape(exposition)) > [0.2])
    before = scrape(exposition)

    after_config = {"kept-sim": simulated(1, key_consumption_bps=1e6), "new-sim": simulated(5),
                    "kept-polled": CountingDevice(seed=3), "new-polled": CountingDevice(seed=6)}
    runtime.reload(make_config(after_config, window_seconds=0.05, stall_timeout_seconds=1.0))
    first = scrape(exposition)
    wait_for(lambda: runtime.snapshot.batches.min() >= 3)
    after = scrape(exposition)

    links = lambda s: {x.labels["link"] for x in s["qlink_info"]}  # noqa: E731
    assert links(first) == links(after) == {"kept-sim", "new-sim", "kept-polled", "new-polled"}
    for link in ("kept-sim", "kept-polled"):
        # counters continue from where they were: never a reset, never a gap
        for name, labels in (("qlink_batches_total", {}), ("qkd_pulses_total", {"intensity": "signal"})):
            assert value(first, name, link=link, **labels) >= value(before, name, link=link, **labels), (link, name)
            assert value(after, name, link=link, **labels) > value(first, name, link=link, **labels), (link, name)
        assert value(after, "qlink_up", link=link) == 1
    # the unchanged polled link kept its driver; only the new one was built
    assert sorted(BUILT) == [3, 4, 6]
    # the simulated link kept its injected fault and its key store
    assert value(after, "qlink_fault_active", link="kept-sim", kind="intercept-resend") == 1
    assert value(after, "qkd_qber_ratio", link="kept-sim", basis="Z") > 0.2
    assert value(after, "qkd_key_buffer_bits", link="kept-sim") < value(before, "qkd_key_buffer_bits", link="kept-sim")
    # the new links start from zero and run
    assert value(after, "qlink_up", link="new-sim") == value(after, "qlink_up", link="new-polled") == 1


def test_a_reload_that_changes_the_window_length_keeps_totals(running):
    runtime, exposition = running
    wait_for(lambda: runtime.snapshot.batches.min() >= 5)
    before = scrape(exposition)
    same_links = {"kept-sim": simulated(1, key_consumption_bps=1e6), "gone-sim": simulated(2),
                  "kept-polled": CountingDevice(seed=3), "gone-polled": CountingDevice(seed=4)}
    runtime.reload(make_config(same_links, window_seconds=0.05, sliding_windows=7, stall_timeout_seconds=1.0))
    after = scrape(exposition)
    assert value(after, "qkd_pulses_total", link="kept-sim", intensity="signal") >= \
        value(before, "qkd_pulses_total", link="kept-sim", intensity="signal")
    assert sorted(BUILT) == [3, 4]  # no driver rebuilt
