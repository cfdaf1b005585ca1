"""`qtelemetry plan-network`: the placement MILP against brute-force enumeration (hypothesis), the
what-if table against brute force, the outputs, and every bad input.

The brute force knows nothing of flows or of the solver: it enumerates every subset of the
candidate spans and, for each, every site set S separating a demand's ends (max-flow = min-cut),
in every failure scenario (no failure, each span, each relay site other than the demand's ends).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qtelemetry.cli import main
from qtelemetry.config import parse_config
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config, planned_secret_key_rate_bps
from qtelemetry.drivers.simulated import parameter_table
from qtelemetry.estimation.network import Topology
from qtelemetry.estimation.placement import Instance, place
from qtelemetry.networkplan import what_if
from test_network_analysis import brute_min_cut, brute_widest, edges_of, relay_view

# --- placement against brute force -----------------------------------------------------------------


def brute_cheapest(inst: Instance) -> float:
    """The least cost of a span subset meeting every demand in every scenario; inf if none does."""
    m, n = len(inst.span_ends), inst.n_sites
    subsets = np.array(list(itertools.product([0, 1], repeat=m)), bool)  # (2^m, m)
    feasible = np.ones(len(subsets), bool)
    ends_of_demands = set(inst.demand_ends.ravel().tolist())
    for (s, t), need in zip(inst.demand_ends.tolist(), inst.demand_bps.tolist()):
        usable = np.array([all(inst.trusted[v] or v in (s, t) for v in e) for e in inst.span_ends.tolist()])
        others = [v for v in range(n) if v not in (s, t)]
        sides = [{s, *side} for k in range(len(others) + 1) for side in itertools.combinations(others, k)]
        crossing = np.array([[(a in side) != (b in side) for a, b in inst.span_ends.tolist()] for side in sides], float)
        failures = [np.zeros(m, bool)]
        if inst.survive:
            failures += [np.arange(m) == e for e in range(m)]
            failures += [(inst.span_ends == v).any(axis=1) for v in range(n) if inst.trusted[v] and v not in (s, t)]
        for failed in failures:
            capacity = inst.span_rate_bps * (usable & ~failed)
            cuts = (subsets * capacity) @ crossing.T
            feasible &= cuts.min(axis=1) >= need * (1 - 1e-9)
    paid = [v for v in range(n) if inst.site_cost[v] > 0 and v not in ends_of_demands]
    touches = np.array([[v in e for v in paid] for e in inst.span_ends.tolist()], float).reshape(m, len(paid))
    cost = subsets @ inst.span_cost + ((subsets @ touches) > 0) @ inst.site_cost[paid]
    return float(cost[feasible].min()) if feasible.any() else math.inf


@st.composite
def instances(draw, survive: int):
    n = draw(st.integers(3, 6))
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    spans = draw(st.lists(st.sampled_from(pairs), min_size=2, max_size=12))
    m = len(spans)
    rates = draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0, 0.5]), min_size=m, max_size=m))
    costs = draw(st.lists(st.integers(0, 20), min_size=m, max_size=m))
    site_costs = draw(st.lists(st.sampled_from([0, 0, 3, 7]), min_size=n, max_size=n))
    trusted = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    demands = draw(st.lists(st.sampled_from([(a, b) for a in range(n) for b in range(n) if a != b]), min_size=1, max_size=3))
    needs = draw(st.lists(st.sampled_from([0.5, 1.0, 3.0, 6.0]), min_size=len(demands), max_size=len(demands)))
    return Instance(n, np.array(spans, np.intp), np.array(rates), np.array(costs, float), np.array(site_costs, float),
                    np.array(trusted), np.array(demands, np.intp), np.array(needs), survive)


def check_against_brute_force(inst: Instance) -> None:
    everything = Instance(**{**vars(inst), "span_cost": np.zeros(len(inst.span_ends)), "site_cost": np.zeros(inst.n_sites)})
    assume(brute_cheapest(everything) == 0.0)  # feasible with every span lit (the CLI checks that first)
    found = place(inst, gap=0.0)
    assert found.status == "optimal"
    assert found.cost == pytest.approx(brute_cheapest(inst), abs=1e-9)
    # the choice itself is feasible: the brute force on exactly those spans finds it costs no more
    only = Instance(**{**vars(inst), "span_cost": np.where(found.chosen, 0.0, 1e6), "site_cost": np.zeros(inst.n_sites)})
    assert brute_cheapest(only) == 0.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(instances(survive=0))
def test_cheapest_network_equals_brute_force(inst):
    check_against_brute_force(inst)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(instances(survive=1))
def test_cheapest_survivable_network_equals_brute_force(inst):
    check_against_brute_force(inst)


# --- what-if against brute force -------------------------------------------------------------------

@st.composite
def networks(draw):
    n = draw(st.integers(3, 6))
    links = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] != e[1]),
                          min_size=2, max_size=9))
    rates = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, 0.5]), min_size=len(links), max_size=len(links)))
    trusted = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    demands = draw(st.lists(st.sampled_from([(s, t) for s in range(n) for t in range(n) if s != t]), min_size=1, max_size=3))
    needs = draw(st.lists(st.sampled_from([0.5, 1.0, 3.0]), min_size=len(demands), max_size=len(demands)))
    return n, links, rates, trusted, demands, needs


@settings(max_examples=60, deadline=None)
@given(networks())
def test_what_if_equals_brute_force(network):
    n, links, rates, trusted, demands, needs = network
    top = Topology.build([f"s{i}" for i in range(n)], trusted, [f"l{i}" for i in range(len(links))], links,
                         [f"d{i}" for i in range(len(demands))], demands, needs)
    rows = what_if(top, np.array(rates))
    used = sorted({v for e in links for v in e})
    assert [(r["failure_kind"], r["failure"]) for r in rows[::len(demands)]] == \
        [("none", "")] + [("span", f"l{i}") for i in range(len(links))] + [("site", f"s{v}") for v in used]
    base = [brute_min_cut(n, relay_view(edges_of(n, links, rates), trusted, s, t), s, t) for s, t in demands]
    for row in rows:
        d = int(row["demand"][1:])
        s, t = demands[d]
        left = list(rates)
        if row["failure_kind"] == "span":
            left[int(row["failure"][1:])] = 0.0
        caps = edges_of(n, links, left)
        if row["failure_kind"] == "site":
            v = int(row["failure"][1:])
            caps = {e: c for e, c in caps.items() if v not in e}
            assert row["own_end"] == (v in (s, t))
        view = relay_view(caps, trusted, s, t)
        assert row["multipath_bps"] == pytest.approx(brute_min_cut(n, view, s, t), abs=1e-9)
        assert row["single_path_bps"] == pytest.approx(brute_widest(view, s, t), abs=1e-9)
        met_before = base[d] >= needs[d] * (1 - 1e-6)
        assert row["single_point_of_failure"] == (met_before and not row["own_end"] and row["multipath_bps"] < needs[d] * (1 - 1e-6))


# --- the command -------------------------------------------------------------------------------------

EXAMPLE = {
    "sites": [{"name": "bank-a", "latitude": 51.50, "longitude": -0.12}, {"name": "bank-b", "latitude": 51.75, "longitude": -1.25},
              {"name": "m1", "trusted_node_cost": 5}, {"name": "m2", "trusted_node_cost": 5}, {"name": "m3", "trusted_node_cost": 8}],
    "spans": [{"sites": ["bank-a", "m1"], "length_km": 40, "cost": 10}, {"sites": ["m1", "bank-b"], "length_km": 50, "cost": 10},
              {"sites": ["bank-a", "m2"], "length_km": 45, "cost": 12}, {"sites": ["m2", "bank-b"], "length_km": 40, "cost": 12},
              {"sites": ["bank-a", "m3"], "length_km": 30, "cost": 9, "insertion_loss_db": 2.0},
              {"sites": ["m3", "bank-b"], "length_km": 45, "cost": 9}, {"sites": ["m1", "m2"], "length_km": 20, "cost": 3}],
    "link": {"detector_efficiency": 0.2, "clock_rate_hz": 2.0e8},
    "demands": [{"name": "a-b", "from": "bank-a", "to": "bank-b", "bits_per_second": 40000}],
    "survive": 1,
}


def plan_network(tmp_path, plan: dict, capsys) -> tuple[int, str]:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    code = main(["plan-network", str(path), "--out", str(tmp_path / "out")])
    return code, capsys.readouterr().err


def test_outputs(tmp_path, capsys):
    """Every candidate span with the exporter's planned rate; demands meet N-1; the tables, the page,
    and a network.yaml that is a valid run config of exactly the chosen spans."""
    code, err = plan_network(tmp_path, EXAMPLE, capsys)
    out = tmp_path / "out"
    result = json.loads((out / "plan.json").read_text())
    assert code == 0 and result["status"] == "optimal" and result["gap"] <= 1e-4
    # the search logs each better network, from the greedy start to the answer
    found = [float(c) for c in re.findall(r'msg="placement: better network found" cost=(\S+)', err)]
    assert found and found == sorted(found, reverse=True) and found[-1] == pytest.approx(result["cost"]), err
    assert result["solver"]["nodes"] >= 1 and result["solver"]["cuts"] >= 1
    assert list(result)[:6] == ["status", "gap", "cost", "trusted_nodes", "spans", "demands"]
    assert [s["sites"] for s in result["spans"]] == [s["sites"] for s in EXAMPLE["spans"]]
    for span, given_span in zip(result["spans"], EXAMPLE["spans"]):
        link = SimulatedBB84Config(type="simulated-bb84", fiber_length_km=given_span["length_km"], **EXAMPLE["link"],
                                   **{k: v for k, v in given_span.items() if k == "insertion_loss_db"})
        assert span["key_rate_bps"] == pytest.approx(planned_secret_key_rate_bps(parameter_table([link]))[0], rel=1e-12)
    [demand] = result["demands"]
    assert demand["met"] and demand["capacity_after_worst_failure_bps"] >= 40000 * (1 - 1e-6)
    chosen = [s for s in result["spans"] if s["chosen"]]
    assert result["cost"] == pytest.approx(sum(s["cost"] for s in chosen) + sum(
        site.get("trusted_node_cost", 0) for site in EXAMPLE["sites"] if site["name"] in result["trusted_nodes"]))
    config = parse_config((out / "network.yaml").read_text())
    assert [(l.site_a, l.site_b, l.driver.fiber_length_km) for l in config.links] == \
        [(*s["sites"], s["length_km"]) for s in chosen]
    assert [d.name for d in config.network.demands] == ["a-b"]
    whatif = list(csv.DictReader((out / "what-if.csv").open()))
    sites = {v for s in chosen for v in s["sites"]}
    assert len(whatif) == 1 + len(chosen) + len(sites)
    assert not any(r["single_point_of_failure"] == "True" for r in whatif) and result["single_points_of_failure"] == []
    page = (out / "plan.html").read_text()
    assert "data:image/png;base64," in page and "what-if.csv" in page
    assert {p.name for p in out.iterdir()} >= {"plan.json", "what-if.csv", "spans.csv", "demands.csv", "network.yaml", "plan.html"}


def test_infeasible_says_which_demand_and_the_best_it_can_get(tmp_path, capsys):
    """A chain carries its weakest span: a demand above it is infeasible (exit 1), planned for its best."""
    plan = {"sites": [{"name": "a"}, {"name": "m"}, {"name": "b"}, {"name": "c"}],
            "spans": [{"sites": ["a", "m"], "length_km": 20, "cost": 1}, {"sites": ["m", "b"], "length_km": 80, "cost": 1},
                      {"sites": ["a", "c"], "length_km": 10, "cost": 1}],
            "demands": [{"name": "far", "from": "a", "to": "b", "bits_per_second": 1e9},
                        {"name": "near", "from": "a", "to": "c", "bits_per_second": 10}]}
    code, err = plan_network(tmp_path, plan, capsys)
    result = json.loads((tmp_path / "out" / "plan.json").read_text())
    weakest = SimulatedBB84Config.expected_key_rate_bps([SimulatedBB84Config(type="simulated-bb84", fiber_length_km=80)])[0]
    assert code == 1 and result["status"] == "infeasible"
    far, near = result["demands"]
    assert not far["met"] and far["best_possible_bps"] == pytest.approx(weakest, rel=1e-12)
    assert far["capacity_bps"] == pytest.approx(weakest, rel=1e-12) and near["met"]
    assert all(s["chosen"] for s in result["spans"])
    assert 'msg="demand cannot be met" demand=far' in err


def bad(**changes):
    plan = json.loads(json.dumps(EXAMPLE))
    for where, value in changes.items():
        *path, last = where.split("__")
        node = plan
        for key in path:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return plan


@pytest.mark.parametrize("plan, message", [
    (bad(spans__0__sites=["bank-a", "nowhere"]), "spans[0].sites: unknown site 'nowhere'"),
    (bad(spans__1__length_km=-5), "spans[1].length_km: Input should be greater than or equal to 0"),
    (bad(spans__2__cost=-1), "spans[2].cost: Input should be greater than or equal to 0"),
    (bad(sites__2__trusted_node_cost=-1), "sites[2].trusted_node_cost: Input should be greater than or equal to 0"),
    (bad(demands__0__to="bank-a"), "demands[0].to: the same site as from"),
    (bad(demands__0__from="mars"), "demands[0].from: unknown site 'mars'"),
    (bad(spans__3__sites=["m2", "m2"]), "spans[3].sites: a span joins two sites"),
    (bad(sites__4__name="m1"), "sites[4].name: duplicate site 'm1'"),
    (bad(spans=[{"sites": ["bank-a", "m1"], "length_km": 1, "cost": 1}, {"sites": ["m2", "bank-b"], "length_km": 1, "cost": 1}]),
     "spans: the candidate spans leave the sites in 3 separate parts"),
    (bad(link={"fiber_length_km": 5}), "link.fiber_length_km: each span has its own length"),
    (bad(link={"mu": -1}), "link.mu: Input should be greater than 0"),
    (bad(link={"colour": "blue"}), "link.colour: Extra inputs are not permitted"),
    (bad(survive=2), "survive: Input should be 0 or 1"),
    (bad(demands=[]), "demands: List should have at least 1 item"),
])
def test_bad_input_names_the_field(tmp_path, capsys, plan, message):
    code, err = plan_network(tmp_path, plan, capsys)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_not_a_plan(tmp_path, capsys):
    """A file that is not YAML, or a run config given by mistake, is named as such (exit 2)."""
    path = tmp_path / "plan.yaml"
    path.write_text("links: [{name: x, driver: {type: simulated-bb84, fiber_length_km: 1}}]\n")
    assert main(["plan-network", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "this is an exporter config" in capsys.readouterr().err
    path.write_text("sites: [\n")
    assert main(["plan-network", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_network_yaml_runs_and_its_live_capacity_is_the_plans(tmp_path, capsys, start_exporter):
    """plan → run → monitor: `qtelemetry run --config network.yaml` (as written) serves the demand's
    multipath capacity within 5 % of plan.json's once the sampled estimates settle."""
    assert plan_network(tmp_path, EXAMPLE, capsys)[0] == 0
    planned = json.loads((tmp_path / "out" / "plan.json").read_text())["demands"][0]["capacity_bps"]
    exporter = start_exporter(None, "--config", str(tmp_path / "out" / "network.yaml"))

    def settled(samples: dict) -> bool:
        live = [s.value for s in samples.get("qnet_demand_capacity_bits_per_second", [])
                if s.labels == {"demand": "a-b", "routing": "multipath"}]
        return bool(live) and abs(live[0] - planned) <= 0.05 * planned

    exporter.wait_for(settled, timeout=120)


def test_out_of_time_the_choice_is_repaired_and_the_gap_says_so():
    """No time for the search: the greedy repair still gives a network meeting every cut (brute force),
    its cost no lower than the optimum, and the gap is measured from the bound."""
    inst = Instance(5, np.array([[0, 1], [1, 2], [0, 3], [3, 2], [0, 2], [1, 4], [4, 2]]), np.array([2.0, 2, 2, 2, 0.5, 3, 3]),
                    np.array([4.0, 4, 1, 1, 10, 5, 5]), np.zeros(5), np.ones(5, bool), np.array([[0, 2]]), np.array([2.0]), 1)
    found = place(inst, time_limit_s=1e-9)
    assert found.status == "feasible" and found.cost >= brute_cheapest(inst)
    assert found.gap == pytest.approx((found.cost - found.lower_bound) / found.cost)
    only = Instance(**{**vars(inst), "span_cost": np.where(found.chosen, 0.0, 1e6)})
    assert brute_cheapest(only) == 0.0


def test_what_if_of_a_given_network(tmp_path, capsys):
    """--network FILE: the what-if table of a run config's network at its links' planned rates; given
    the network.yaml a plan wrote, it is that plan's own what-if table. A file without a network
    section, or not a run config, is exit 2."""
    assert plan_network(tmp_path, EXAMPLE, capsys)[0] == 0
    out = tmp_path / "out"
    (tmp_path / "given.yaml").write_text((out / "network.yaml").read_text())
    assert main(["plan-network", str(tmp_path / "plan.yaml"), "--out", str(out), "--network", str(tmp_path / "given.yaml")]) == 0
    assert (out / "what-if-network.csv").read_text() == (out / "what-if.csv").read_text()
    (tmp_path / "given.yaml").write_text("links: [{name: x, driver: {type: simulated-bb84, fiber_length_km: 1}}]\n")
    assert main(["plan-network", str(tmp_path / "plan.yaml"), "--out", str(out), "--network", str(tmp_path / "given.yaml")]) == 2
    assert "given.yaml: network: no network section" in capsys.readouterr().err
    assert main(["plan-network", str(tmp_path / "plan.yaml"), "--out", str(out), "--network", str(tmp_path / "plan.yaml")]) == 2
    assert "this is a network plan" in capsys.readouterr().err


# --- hostile inputs ------------------------------------------------------------------------------------

SMALL = {"sites": [{"name": "a"}, {"name": "m"}, {"name": "b"}],
         "spans": [{"sites": ["a", "m"], "length_km": 10, "cost": 1}, {"sites": ["m", "b"], "length_km": 10, "cost": 1},
                   {"sites": ["a", "b"], "length_km": 30, "cost": 5}],
         "demands": [{"name": "d", "from": "a", "to": "b", "bits_per_second": 1000}], "survive": 1}


def run_plan(tmp_path, plan: dict, *args: str, name: str = "plan.yaml") -> int:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plan))
    return main(["plan-network", str(path), *args])


@pytest.mark.parametrize("limit", ["inf", "1e30"])
def test_a_time_limit_beyond_scips_is_no_limit(tmp_path, capsys, limit):
    """SCIP takes at most 1e20 s: a longer limit (or inf) is no limit, not a traceback."""
    assert run_plan(tmp_path, SMALL, "--out", str(tmp_path / "out"), "--time-limit", limit) == 0
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["status"] == "optimal"
    assert "Traceback" not in capsys.readouterr().err


def test_an_out_that_cannot_be_made_is_named_before_the_search(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert run_plan(tmp_path, SMALL, "--out", str(tmp_path / "file" / "out")) == 2
    err = capsys.readouterr().err
    assert "error: --out: " in err and "Not a directory" in err and "Traceback" not in err
    assert "placement" not in err  # no search was made


def test_no_older_plans_file_is_left_to_pass_for_this_ones(tmp_path, capsys):
    """A plan made into the --out of an earlier one (with --network) leaves none of its files behind."""
    out = tmp_path / "out"
    assert run_plan(tmp_path, SMALL, "--out", str(out)) == 0
    (tmp_path / "given.yaml").write_text((out / "network.yaml").read_text())
    assert run_plan(tmp_path, SMALL, "--out", str(out), "--network", str(tmp_path / "given.yaml")) == 0
    assert (out / "what-if-network.csv").exists()
    assert run_plan(tmp_path, {**SMALL, "survive": 0}, "--out", str(out)) == 0
    assert not (out / "what-if-network.csv").exists()
    assert json.loads((out / "plan.json").read_text())["survive"] == 0


def test_a_plan_file_named_with_dollars_is_not_tex(tmp_path, capsys):
    """The figure's title holds the file name: "$\\foo$" is text, not mathtext to parse (a traceback)."""
    assert run_plan(tmp_path, SMALL, "--out", str(tmp_path / "out"), name="x$\\foo$.yaml") == 0
    assert "x$\\foo$.yaml" in (tmp_path / "out" / "plan.html").read_text()


def test_network_yaml_link_names_are_unique(tmp_path, capsys):
    """Two spans between the same sites and a span whose name is the second one's fallback (sites
    `span` and `2`): network.yaml's links still have unique names, so that it is a valid run config."""
    rate = SimulatedBB84Config.expected_key_rate_bps([SimulatedBB84Config(type="simulated-bb84", fiber_length_km=10)])[0].item()
    plan = {"sites": [{"name": "span"}, {"name": "2"}, {"name": "a"}, {"name": "b"}],
            "spans": [{"sites": ["span", "2"], "length_km": 10, "cost": 1}, {"sites": ["a", "b"], "length_km": 10, "cost": 1},
                      {"sites": ["a", "b"], "length_km": 10, "cost": 1}, {"sites": ["2", "a"], "length_km": 10, "cost": 1}],
            "demands": [{"name": "twice", "from": "a", "to": "b", "bits_per_second": 1.5 * rate},
                        {"name": "all", "from": "span", "to": "b", "bits_per_second": 1}]}
    assert run_plan(tmp_path, plan, "--out", str(tmp_path / "out")) == 0
    config = parse_config((tmp_path / "out" / "network.yaml").read_text())
    names = [link.name for link in config.links]
    assert len(names) == 4 and len(set(names)) == 4, names


def test_cuts_past_the_deadline_stop_at_the_first_short_demand():
    """SCIP asks for cuts at every node and checks every candidate network; at 2,000 sites a round of
    them took minutes, beyond --time-limit. Past the deadline a round stops at the first short
    demand's cuts (still a cut, so enforcement progresses); before it, every short demand's. The
    rows are sparse: the spans crossing the cut (a dense row per cut held gigabytes at 20,000 spans)."""
    from qtelemetry.estimation.placement import violated_cuts

    inst = Instance(5, np.array([[0, 1], [1, 2], [0, 3], [3, 2], [0, 2], [1, 4], [4, 2]]), np.array([2.0, 2, 2, 2, 0.5, 3, 3]),
                    np.ones(7), np.zeros(5), np.ones(5, bool), np.array([[0, 2], [1, 3]]), np.array([2.0, 1.0]), 1)
    every = violated_cuts(inst, np.zeros(7))
    first = violated_cuts(inst, np.zeros(7), deadline=0.0)
    assert {tuple(spans) for spans, _ in every} >= {(0, 2, 4), (0, 1, 5)} and 0 < len(first) < len(every)
    assert all(len(spans) == len(share) < 7 for spans, share in every)


@settings(max_examples=20, deadline=None)
@given(instances(survive=1), st.booleans())
def test_infeasible_is_what_brute_force_says(inst, survive):
    """plan-network calls a demand infeasible when every span lit leaves it short (after the worst
    failure with survive: 1), by the network view's engine; the brute force agrees demand by demand."""
    from qtelemetry.networkplan import survivable

    inst = Instance(**{**vars(inst), "survive": int(survive), "span_cost": np.zeros(len(inst.span_ends)),
                       "site_cost": np.zeros(inst.n_sites)})
    n, ends = inst.n_sites, inst.span_ends.tolist()
    top = Topology.build([f"s{i}" for i in range(n)], inst.trusted.tolist(), [f"l{i}" for i in range(len(ends))], ends,
                         [f"d{i}" for i in range(len(inst.demand_bps))], inst.demand_ends.tolist(), inst.demand_bps.tolist())
    met = survivable(top, inst.span_rate_bps, inst.survive) >= inst.demand_bps * (1 - 1e-6)
    for d in range(len(inst.demand_bps)):
        one = Instance(**{**vars(inst), "demand_ends": inst.demand_ends[d:d + 1], "demand_bps": inst.demand_bps[d:d + 1]})
        assert met[d] == (brute_cheapest(one) == 0.0), (d, inst)
