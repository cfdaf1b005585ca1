"""``qtelemetry run --shard I/N``: a stable partition of the links, and a global view of the shards.

The real-process test runs what docs/operations.md describes for a large site: two exporter
shards reading one config, two Prometheus servers each scraping one shard (external labels
``cluster`` and a per-server ``prometheus`` label, as an HA or per-shard server would have) and
remote-writing into a global Prometheus started with ``--web.enable-remote-write-receiver``,
which evaluates the generated rules over everything. Every configured link must appear exactly
once globally, before and after a shard restarts, and the generated recording rules must give
one series per link, in proportion to the key demand each link is configured with: nothing
counted twice across shards or servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import RunningExporter
from qtelemetry.cli import main
from qtelemetry.config import parse_config
from qtelemetry.monitoring.config import DEFAULT
from qtelemetry.sharding import Shard, parse_shard, select, shard_of
from realstack import PROMETHEUS_BIN, Prometheus, fast_rule_copies, free_port, poll, register_log_plugin, require_binaries

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts" / "qtelemetry.rules.yaml"
CLUSTER = DEFAULT.cluster_label


def names(n: int) -> list[str]:
    return [f"corridor-{i:04d}" for i in range(n)]


# --- the partition ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [("2/2", "0 <= I < N"), ("0/0", "0 <= I < N"), ("1", "expected I/N"),
                                           ("-1/2", "expected I/N"), ("a/b", "expected I/N")])
def test_bad_shards_are_usage_errors(text, problem, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", f"--shard={text}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--shard" in err and problem in err


def test_every_link_lands_in_exactly_one_shard_evenly():
    links = names(1000)
    for count in range(1, 8):
        shards = [{link for link in links if shard_of(link, count) == i} for i in range(count)]
        assert sum(len(s) for s in shards) == len(links) and set().union(*shards) == set(links)
        expected = len(links) / count
        assert all(abs(len(s) - expected) < 0.2 * expected for s in shards), [len(s) for s in shards]


def test_select_keeps_the_config_and_only_the_shards_links():
    config = parse_config("links:\n" + "".join(
        f"  - {{name: {name}, driver: {{type: simulated-bb84, fiber_length_km: 10, seed: {i}}}}}\n" for i, name in enumerate(names(20))))
    parts = [select(config, Shard(i, 3)) for i in range(3)]
    assert sorted(link.name for part in parts for link in part.links) == names(20)
    assert all(part.exporter.model_dump(exclude={"tamper"}) == config.exporter.model_dump(exclude={"tamper"})
               for part in parts)
    # the tamper false-alarm budget is the 20 links': each replica's links keep the share they had unsharded
    shares = [part.tamper_mean_times() for part in parts]
    np.testing.assert_allclose(np.concatenate(shares), 20 * config.exporter.tamper.fleet_mean_time_between_false_alarms_seconds)
    assert sum(1 / part.exporter.tamper.fleet_mean_time_between_false_alarms_seconds for part in parts) == pytest.approx(
        1 / config.exporter.tamper.fleet_mean_time_between_false_alarms_seconds)
    assert [link.name for link in parts[1].links] == [n for n in names(20) if shard_of(n, 3) == 1]  # config order


def test_the_assignment_is_the_same_in_every_process():
    """Python's own hash() of a str changes with PYTHONHASHSEED; the shard of a link must not."""
    code = "from qtelemetry.sharding import shard_of; print([shard_of(f'corridor-{i:04d}', 5) for i in range(50)])"
    seen = set()
    for seed in ("1", "2", "random"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        seen.add(out.strip())
    assert seen == {str([shard_of(name, 5) for name in names(50)])}
    assert parse_shard(" 3 / 8 ") == Shard(3, 8)


# --- two shards, two Prometheus, one global view -----------------------------------------------

LINKS = names(8)
DEMAND = {name: 1000.0 * (i + 1) for i, name in enumerate(LINKS)}  # key_consumption_bps, bit/s
CONFIG = """
exporter:
  window_seconds: 0.5
  sliding_windows: 10
links:
""" + "".join(f"""  - name: {name}
    driver: {{type: simulated-bb84, fiber_length_km: 20, clock_rate_hz: 1.0e8, seed: {i},
              key_consumption_bps: {DEMAND[name]}, key_buffer_initial_ratio: 1.0}}
""" for i, name in enumerate(LINKS))


def global_links(prom: Prometheus) -> dict[str, int]:
    """link -> number of qlink_info series the global view holds for it."""
    return {s["metric"]["link"]: int(float(s["value"][1]))
            for s in prom.query(f'count by ({CLUSTER}, link) (qlink_info{{job="qtelemetry"}})')}


def test_two_shards_make_one_global_view_without_double_counting(tmp_path, request):
    register_log_plugin(request.config)
    require_binaries(PROMETHEUS_BIN)
    shard_links = [{n for n in LINKS if shard_of(n, 2) == i} for i in range(2)]
    assert all(shard_links), "the test config must give both shards links"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    ports = [free_port(), free_port()]

    def start_shard(i: int) -> RunningExporter:
        return RunningExporter(["run", "--config", str(config), "--listen", f"127.0.0.1:{ports[i]}", "--shard", f"{i}/2"],
                               tmp_path / f"shard{i}.log")

    running: list = []
    try:
        shards = [start_shard(0), start_shard(1)]
        running += shards
        (tmp_path / "global").mkdir()
        world = Prometheus(tmp_path / "global", [], fast_rule_copies([RULES], tmp_path / "rules"),
                           remote_write_receiver=True)
        running.append(world)
        leaves = []
        for i in range(2):
            (tmp_path / f"leaf{i}").mkdir()
            leaves.append(Prometheus(tmp_path / f"leaf{i}", [f"127.0.0.1:{ports[i]}"],
                                     external_labels={CLUSTER: "site-a", "prometheus": f"leaf-{i}"},
                                     remote_write=[world.url + "/api/v1/write"]))
            running.append(leaves[-1])

        # Each shard serves its links only; the global view holds every link exactly once.
        for shard, expected in zip(shards, shard_links):
            assert {s.labels["link"] for s in shard.scrape()["qlink_info"]} == expected
        poll(lambda: global_links(world) == dict.fromkeys(LINKS, 1), 60, "every link exactly once in the global view",
             describe=lambda: str(global_links(world)))

        # The generated rules, evaluated globally: one series per link, each link's key demand
        # counted once. Seconds into the run, rate() over 5 minutes divides a few seconds of
        # increase by the whole window, so every link reads the same fraction of its demand: a
        # link counted twice (two shards, two servers) would read twice the others' fraction.
        rate = "link:qkd_key_requested_bits:rate5m"
        seen: list[dict[str, float]] = [{}]

        def fractions() -> dict[str, float]:
            seen[0] = {s["metric"]["link"]: float(s["value"][1]) / DEMAND[s["metric"]["link"]] for s in world.query(rate)}
            return seen[0]

        def one_fraction() -> bool:
            got = fractions()
            return got.keys() == DEMAND.keys() and min(got.values()) > 0.05 and max(got.values()) < 1.2 * min(got.values())

        poll(one_fraction, 60, f"{rate} to read the same fraction of every link's configured demand",
             describe=lambda: str(seen[0]))
        series = world.query(rate)
        assert len(series) == len(LINKS) and {s["metric"][CLUSTER] for s in series} == {"site-a"}
        assert all(set(s["metric"]) == {"__name__", CLUSTER, "job", "link"} for s in series), series

        # Restart shard 1 on the same address: its links leave the global view and come back, to
        # the same shard, never twice.
        shards[1].stop()
        running.remove(shards[1])
        poll(lambda: set(global_links(world)) == shard_links[0], 60, "shard 1's links to go stale globally",
             describe=lambda: str(global_links(world)))
        shards[1] = start_shard(1)
        running.append(shards[1])
        counts: list[dict[str, int]] = []

        def back() -> bool:
            counts.append(global_links(world))
            return counts[-1] == dict.fromkeys(LINKS, 1)

        poll(back, 60, "every link exactly once after the restart", describe=lambda: str(counts[-1]))
        assert all(max(c.values(), default=1) == 1 for c in counts), "a link was counted twice during the restart"
        assert {s.labels["link"] for s in shards[1].scrape()["qlink_info"]} == shard_links[1]
    finally:
        for part in reversed(running):
            part.stop()
