"""The network analysis in the runtime: published with the snapshot, dropped when a reload changes
the topology, and its families follow the config (no network section, no qnet_ series)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from concurrent.futures.process import BrokenProcessPool

import pytest
from conftest import parse_exposition, value

from qtelemetry.config import parse_config
from qtelemetry.exporter.exposition import Exposition
from qtelemetry.runtime.network import ANALYSIS_NICENESS, NetworkAnalyser
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
    with pytest.raises(BrokenProcessPool):
        analyser.run_once()
    assert analyser.run_once() is not None
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
