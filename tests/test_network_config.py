"""The `network:` section: every bad topology is exit code 2 with an error naming its field."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtelemetry.cli import main
from qtelemetry.config import parse_config
from qtelemetry.networkconfig import relays_connect

LINKS = """links:
  - {name: ab, site_a: a, site_b: b, driver: {type: simulated-bb84, fiber_length_km: 10}}
  - {name: bc, site_a: b, site_b: c, driver: {type: simulated-bb84, fiber_length_km: 10}}
  - {name: de, site_a: d, site_b: e, driver: {type: simulated-bb84, fiber_length_km: 10}}
"""
SITES = "  sites: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}]\n"


def document(network: str) -> str:
    return LINKS + "network:\n" + network


BAD = {
    "a link's site that is not a site": (
        "  sites: [{name: a}, {name: b}, {name: c}, {name: d}]\n",
        "links[2].site_b", "site 'e' is not in network.sites"),
    "a site no link uses": (
        SITES.replace("]", ", {name: lonely}]"), "network.sites[5].name", "no link has site 'lonely'"),
    "a duplicate site": (
        SITES.replace("]", ", {name: c, trusted: false}]"), "network.sites[5].name", "duplicate site 'c' (also network.sites[2])"),
    "a duplicate demand": (
        "  demands:\n  - {name: x, from: a, to: c, bits_per_second: 1}\n  - {name: x, from: c, to: a, bits_per_second: 1}\n",
        "network.demands[1].name", "duplicate demand 'x' (also network.demands[0])"),
    "a demand from an unknown site": (
        "  demands: [{name: x, from: z, to: c, bits_per_second: 1}]\n", "network.demands[0].from", "unknown site 'z'"),
    "a demand to an unknown site": (
        "  demands: [{name: x, from: a, to: zz, bits_per_second: 1}]\n", "network.demands[0].to", "unknown site 'zz'"),
    "a demand from a site to itself": (
        "  demands: [{name: x, from: a, to: a, bits_per_second: 1}]\n", "network.demands[0].to", "the same site as from"),
    "a demand between unconnected sites": (
        "  demands: [{name: x, from: a, to: e, bits_per_second: 1}]\n", "network.demands[0]",
        "no chain of links joins 'a' and 'e'"),
    "a demand whose only path relays through an end point": (
        "  sites: [{name: a}, {name: b, trusted: false}, {name: c}, {name: d}, {name: e}]\n"
        "  demands: [{name: x, from: a, to: c, bits_per_second: 1}]\n", "network.demands[0]",
        "no chain of links joins 'a' and 'c' over trusted sites"),
    "a demand of no key": (
        "  demands: [{name: x, from: a, to: c, bits_per_second: 0}]\n", "network.demands[0].bits_per_second",
        "greater than 0"),
    "a demand of more key than a double can sum": (  # the relay's requests overflowed the hops' counters to +Inf
        "  demands: [{name: x, from: a, to: c, bits_per_second: 1e308}]\n", "network.demands[0].bits_per_second",
        "less than or equal to 1000000000000"),
    "a demand name that is not a label value": (
        "  demands: [{name: 'X Y', from: a, to: c, bits_per_second: 1}]\n", "network.demands[0].name", "pattern"),
    "a latitude without a longitude": (
        "  sites: [{name: a, latitude: 48.1}, {name: b}, {name: c}, {name: d}, {name: e}]\n",
        "network.sites[0]", "latitude and longitude go together"),
    "a latitude off the globe": (
        "  sites: [{name: a, latitude: 91, longitude: 2}, {name: b}, {name: c}, {name: d}, {name: e}]\n",
        "network.sites[0].latitude", "less than or equal to 90"),
    "an analysis interval of zero": ("  analysis_interval_seconds: 0\n", "network.analysis_interval_seconds", "greater than"),
    "an unknown key": ("  sights: []\n", "network.sights", "Extra inputs are not permitted"),
    "a routing typo": ("  routing: widest_path\n", "network.routing", "'widest-path' or 'multipath'"),
    "a negative failover time": ("  failover_seconds: -1\n", "network.failover_seconds", "greater than or equal to 0"),
    **{f"a priority of {text}": (f"  demands: [{{name: x, from: a, to: c, bits_per_second: 1, priority: {text}}}]\n",
                                 "network.demands[0].priority", reason) for text, reason in (
        ("-1", "greater than or equal to 0"), ("4294967296", "less than or equal to 4294967295"),
        ("1.5", "integer"), ("high", "integer"), ("true", "integer"), ("'7'", "integer"))},
}


@pytest.mark.parametrize("case", BAD)
def test_bad_network_is_a_field_named_error(case, tmp_path: Path, capsys):
    network, field, reason = BAD[case]
    path = tmp_path / "c.yaml"
    path.write_text(document(network))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{path}: {field}: " in err and reason in err, err


def test_sites_come_from_the_links_when_not_listed():
    config = parse_config(document("  demands: [{name: x, from: a, to: c, bits_per_second: 5}]\n"))
    network = config.network
    assert [s.name for s in network.site_list(config.links)] == ["a", "b", "c", "d", "e"]
    assert all(s.trusted for s in network.site_list(config.links))
    assert network.analysis_interval_seconds == 15
    assert network.routing == "widest-path" and network.failover_seconds == 5
    assert network.demands[0].source == "a" and network.demands[0].target == "c"
    assert network.demands[0].priority == 0  # ETSI GS QKD 015's app_priority default


def test_priority_takes_the_whole_uint32_range_of_etsi_015():
    config = parse_config(document("  demands: [{name: x, from: a, to: c, bits_per_second: 5, priority: 4294967295},"
                                   " {name: y, from: c, to: a, bits_per_second: 5, priority: 0}]\n"))
    assert [d.priority for d in config.network.demands] == [4294967295, 0]


def test_no_network_section_means_no_analysis():
    assert parse_config(LINKS).network is None


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 9).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=14),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1]), max_size=8))))
def test_which_demands_key_can_reach_against_a_search_per_demand(graph):
    """The demands' reachability, found for all demands in one pass (a search per demand took 37 s
    for check-config at 5,000 demands and 10,000 links), against networkx's path search on the
    links key may use for each demand alone: none touching an end point other than its two ends."""
    n, trusted, ends, pairs = graph
    want = []
    for s, t in pairs:
        allowed = {v for v in range(n) if trusted[v]} | {s, t}
        view = nx.Graph([e for e in ends if e[0] in allowed and e[1] in allowed])
        view.add_nodes_from(range(n))
        want.append(nx.has_path(view, s, t))
    got = relays_connect(np.array(ends, np.intp), np.array(trusted), np.array(pairs, np.intp))
    assert got.tolist() == want
