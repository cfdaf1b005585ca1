"""The network analysis in the runtime: published with the snapshot, dropped when a reload changes
the topology, and its families follow the config (no network section, no qnet_ series)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from concurrent.futures.process import BrokenProcessPool

import pytest
from conftest import parse_exposition, value

from qtelemetry.config import parse_config
from qtelemetry.exporter.exposition import Exposition
from qtelemetry.runtime.network import ANALYSIS_NICENESS, FAILURE_REASONS, NetworkAnalyser
from qtelemetry.runtime.runtime import Runtime

# a window of an hour: the estimation thread never ticks, the test runs the cycles itself
LINKS = """exporter: {window_seconds: 3600, stall_timeout_seconds: 7200}
links:
  - {name: ab, site_a: a, site_b: b, driver: {type: simulated-bb84, fiber_length_km: 10, seed: 1}}
  - {name: bc, site_a: b, site_b: c, driver: {type: simulated-bb84, fiber_length_km: 20, seed: 2}}
"""
NETWORK = "network:\n  demands: [{name: ac, from: a, to: c, bits_per_second: 1}]\n"


def test_analysis_is_published_with_the_snapshot_and_dropped_on_reload():
    runtime = Runtime(parse_config(LINKS + NETWORK))
    runtime.start()  # the poll loop a reload updates
    exposition = Exposition(lambda: runtime.snapshot)
    analyser = NetworkAnalyser(runtime.network_interval, runtime.network_inputs, runtime.publish_network)
    assert analyser.run_once() is None  # no estimation cycle yet: nothing to analyse
    start = runtime.started
    for i in range(1, 6):
        runtime.cycle(start + i)
    published = analyser.run_once()
    assert runtime.snapshot.network is None  # published with the next cycle, like the estimates
    runtime.cycle(start + 6)
    assert runtime.snapshot.network is published
    samples = parse_exposition(exposition.render(now=start + 6).decode())
    ab, bc = (value(samples, "qnet_link_usable_key_rate_bits_per_second", link=n) for n in ("ab", "bc"))
    assert ab > bc > 0
    assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="multipath") == bc
    assert value(samples, "qnet_link_failure_impact_demands", link="bc") == 1
    assert value(samples, "qnet_analysis_duration_seconds_count") == 1
    assert value(samples, "qnet_demand_priority", demand="ac") == 0  # not set: ETSI GS QKD 015's default

    runtime.reload(parse_config(LINKS + NETWORK.replace("bits_per_second: 1", "bits_per_second: 2, priority: 7")))
    runtime.cycle(start + 7)
    assert runtime.snapshot.network is None  # an analysis of the old topology is never shown
    exposition.families(runtime.table)
    assert "qnet_demand_capacity_bits_per_second" not in parse_exposition(exposition.render(now=start + 7).decode())
    analyser.run_once()
    runtime.cycle(start + 8)
    samples = parse_exposition(exposition.render(now=start + 8).decode())
    assert value(samples, "qnet_demand_bits_per_second", demand="ac") == 2
    assert value(samples, "qnet_demand_priority", demand="ac") == 7  # the same series, its new value

    runtime.reload(parse_config(LINKS))
    runtime.cycle(start + 9)
    assert analyser.run_once() is None
    assert not any(name.startswith("qnet_") for name in parse_exposition(exposition.render(now=start + 9).decode()))
    analyser.stop()
    runtime.stop()


def test_the_analysis_runs_in_a_child_that_is_started_again_when_it_dies():
    """The analysis holds the GIL for seconds at 10,000 links, so it runs in a child process, at
    the lowest CPU priority, loading no more than NumPy and igraph; one killed (out of memory,
    say) fails that analysis only, and the next starts a new child, at the same priority."""
    runtime = Runtime(parse_config(LINKS + NETWORK))
    analyser = NetworkAnalyser(runtime.network_interval, runtime.network_inputs, runtime.publish_network)
    for i in range(1, 3):
        runtime.cycle(runtime.started + i)
    others = set(multiprocessing.active_children())
    assert analyser.run_once() is not None
    [child] = set(multiprocessing.active_children()) - others
    lowest = min(19, os.nice(0) + ANALYSIS_NICENESS)
    assert ANALYSIS_NICENESS == 19 and os.getpriority(os.PRIO_PROCESS, child.pid) == lowest
    mapped = Path(f"/proc/{child.pid}/maps").read_text()  # the libraries the child loaded
    assert "/numpy/" in mapped and "/igraph/" in mapped
    assert "/scipy/" not in mapped and "/matplotlib/" not in mapped  # 127 MB with them, ~50 without
    child.kill()
    child.join()
    killed = analyser.run_once()  # it died between analyses: none is lost, a new child analyses at once
    assert killed is not None and killed.analysis is not None
    assert dict(zip(FAILURE_REASONS, killed.failures.tolist())) == {"process_died": 1, "timeout": 0, "error": 0}
    [again] = set(multiprocessing.active_children()) - others
    assert again.pid != child.pid
    assert os.getpriority(os.PRIO_PROCESS, again.pid) == lowest
    analyser.stop()
    assert not child.is_alive() and not again.is_alive()
    left = set(multiprocessing.active_children()) - others  # nothing else this analyser started
    assert not left, (left, [t.name for t in threading.enumerate()])  # whose thread started it, if another test's


def test_no_child_process_without_a_network_section_and_one_while_a_reload_gives_one():
    """An exporter whose config has no network keeps no analysis process (it held 130 MB idle);
    a reload that adds a network starts one, and one that takes it away ends it."""
    others = set(multiprocessing.active_children())
    runtime = Runtime(parse_config(LINKS))
    runtime.start()  # the poll loop a reload updates
    idle = NetworkAnalyser(runtime.network_interval, runtime.network_inputs, runtime.publish_network)
    idle.start()
    analyser = NetworkAnalyser(runtime.network_interval, runtime.network_inputs, runtime.publish_network)
    runtime.cycle(runtime.started + 1)
    assert analyser.run_once() is None
    assert set(multiprocessing.active_children()) == others

    idle.stop()
    runtime.reload(parse_config(LINKS + NETWORK))
    runtime.cycle(runtime.started + 2)
    assert analyser.run_once() is not None
    assert len(set(multiprocessing.active_children()) - others) == 1

    runtime.reload(parse_config(LINKS))
    assert analyser.run_once() is None
    assert set(multiprocessing.active_children()) == others
    analyser.stop()
    runtime.stop()


def test_a_hung_or_killed_analysis_withdraws_its_figures_is_counted_and_the_next_one_recovers():
    """A child stopped (SIGSTOP, a debugger; or deadlocked) mid-analysis held the last figures as
    current forever, and the exporter's shutdown waited for it (SIGTERM stays pending on a stopped
    process); one killed mid-analysis left them served until the next. Now an analysis has its
    interval and a grace to finish, then its child is killed; a failure is counted by reason, its
    figures are withdrawn (the age keeps rising), and the next analysis starts a new child."""
    runtime = Runtime(parse_config(LINKS + NETWORK + "  analysis_interval_seconds: 0.5\n"))
    others = set(multiprocessing.active_children())
    sabotage: list[int] = []  # the signal the child gets after the analysis' inputs are read

    def inputs():
        got = runtime.network_inputs()
        for sig in sabotage:
            [child] = set(multiprocessing.active_children()) - others
            os.kill(child.pid, sig)
            if sig == signal.SIGKILL:
                child.join()
        return got

    analyser = NetworkAnalyser(runtime.network_interval, inputs, runtime.publish_network, grace_seconds=5.0)
    start = runtime.started

    def scrape(at: float) -> dict:
        runtime.cycle(start + at)  # the analysis is published with the next cycle
        exposition = Exposition(lambda: runtime.snapshot)  # a new one: none of an earlier snapshot's render cached
        return parse_exposition(exposition.render(now=time.time() + 0.25).decode())  # the analyses' clock

    def failures(samples: dict) -> dict:
        return {r: value(samples, "qnet_analysis_failures_total", reason=r) for r in FAILURE_REASONS}

    for i in range(1, 3):
        runtime.cycle(start + i)
    sabotage[:] = [signal.SIGSTOP]  # the very first analysis hangs: no age yet (it showed 0, "fresh")
    with pytest.raises(TimeoutError):
        analyser.run_once()
    samples = scrape(2.5)
    assert "qnet_analysis_age_seconds" not in samples and "qnet_demand_capacity_bits_per_second" not in samples
    assert failures(samples) == {"process_died": 0, "timeout": 1, "error": 0}

    sabotage[:] = []
    assert analyser.run_once() is not None
    samples = scrape(3)
    assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="multipath") > 0

    sabotage[:] = [signal.SIGSTOP]
    with pytest.raises(TimeoutError):
        analyser.run_once()
    assert not set(multiprocessing.active_children()) - others  # the stopped child was killed
    samples = scrape(4)
    for name in ("qnet_demand_capacity_bits_per_second", "qnet_demand_capacity_after_worst_failure_bits_per_second",
                 "qnet_link_min_cut", "qnet_link_usable_key_rate_bits_per_second", "qnet_link_failure_impact_demands",
                 "qnet_demand_disjoint_paths", "qnet_demand_route_hops"):
        assert name not in samples, name  # never the last analysis' figures as current
    assert value(samples, "qnet_analysis_age_seconds") > 0  # rising from the last one that succeeded
    assert value(samples, "qnet_demand_bits_per_second", demand="ac") == 1  # the config's own series stay
    assert failures(samples) == {"process_died": 0, "timeout": 2, "error": 0}

    sabotage[:] = []
    assert analyser.run_once() is not None  # a new child
    samples = scrape(5)
    assert value(samples, "qnet_demand_capacity_bits_per_second", demand="ac", routing="multipath") > 0

    sabotage[:] = [signal.SIGKILL]
    with pytest.raises(BrokenProcessPool):
        analyser.run_once()
    samples = scrape(6)
    assert "qnet_demand_capacity_bits_per_second" not in samples
    assert failures(samples) == {"process_died": 1, "timeout": 2, "error": 0}

    sabotage[:] = []
    assert analyser.run_once() is not None
    [child] = set(multiprocessing.active_children()) - others
    os.kill(child.pid, signal.SIGSTOP)  # a shutdown must not wait for a stopped child
    stopping = threading.Thread(target=analyser.stop, daemon=True)
    stopping.start()
    stopping.join(timeout=30)
    try:
        assert not stopping.is_alive(), "the shutdown waits for a stopped analysis process"
        assert not child.is_alive()
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)


def test_a_reload_is_analysed_at_once_not_an_old_interval_later(start_exporter, tmp_path: Path):
    """A reload that changes the demands drops the old topology's analysis; the analyser slept out
    its interval first (an hour here), so the network's figures stayed absent that long and a
    shorter interval waited for it too. A reload wakes it: the new topology is analysed at once."""
    links = LINKS.replace("{window_seconds: 3600, stall_timeout_seconds: 7200}", "{window_seconds: 0.5}")
    hourly = NETWORK + "  analysis_interval_seconds: 3600\n"
    exporter = start_exporter(links + hourly)

    def capacity(demand: str):
        return lambda samples: any(s.labels.get("demand") == demand
                                   for s in samples.get("qnet_demand_capacity_bits_per_second", []))

    exporter.wait_for(capacity("ac"))
    (tmp_path / "config0.yaml").write_text(links + hourly.replace("name: ac, from: a, to: c", "name: ca, from: c, to: a"))
    exporter.proc.send_signal(signal.SIGHUP)
    exporter.wait_for(capacity("ca"), timeout=60)


def test_a_stop_while_the_child_starts_starts_no_other():
    """Stopped while its child was still starting (the exporter shut down right after starting),
    the analyser took the killed child for one that had died and started another, which the exit
    then waited for (the newcomer's demo exporter outlived its 10 s to exit under load)."""
    runtime = Runtime(parse_config(LINKS + NETWORK))
    runtime.cycle(runtime.started + 1)
    analyser = NetworkAnalyser(runtime.network_interval, runtime.network_inputs, runtime.publish_network)
    others = set(multiprocessing.active_children())
    raised: list[BaseException] = []

    def analyse() -> None:
        try:
            analyser.run_once()
        except BaseException as exc:  # noqa: BLE001 - the test reads what it was
            raised.append(exc)

    running = threading.Thread(target=analyse)
    running.start()
    deadline = time.monotonic() + 30
    while not set(multiprocessing.active_children()) - others:  # the child is spawned, importing
        assert time.monotonic() < deadline
        time.sleep(0.01)
    analyser.stop()
    running.join(timeout=30)
    assert not running.is_alive() and len(raised) == 1 and isinstance(raised[0], BrokenProcessPool)
    assert not set(multiprocessing.active_children()) - others
