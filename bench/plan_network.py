"""Trusted-node placement at size: `qtelemetry plan-network`'s plan (span rates, the feasibility
check, the MILP with lazily added cuts, the engine's analysis of the choice) on regional networks
of growing size, with N-1, against the same instance without N-1 solved in the same run.

Instances (a realistic shape, not a random graph): sites scattered over a square region; the
candidate spans are the shortest edges of its Delaunay triangulation (fibre follows neighbours),
joined by its minimum spanning tree so every site is reachable, length 1.2 × the straight line;
a span costs 5 + 0.1 per km; a quarter of the sites are the demands' ends (banks, data centres),
the others candidate trusted nodes costing 10; demands between random pairs of ends, each asking
a random 20-60 % of what every span lit could give it after its worst single failure.

Printed: a table per size, time in CPU seconds of this process (SCIP runs on one core), status,
gap, branch-and-bound nodes and cuts generated, cost; the same instance without N-1 (its CPU
seconds, status and gap); and the N-1 solve time as a ratio of the no-failure solve's. The issue's size is 60 sites, 150 spans, 20 demands.

    python bench/plan_network.py [--sizes 20:50:7,40:100:14,60:150:20,80:200:27,100:250:34] [--time-limit 3600] [--gap 0.01]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import Delaunay, distance_matrix

from qtelemetry.networkplan import NetworkPlanFile, make_plan, span_drivers, span_rates, survivable, topology, span_names


def instance(sites: int, spans: int, demands: int, seed: int = 1, side_km: float = 400.0) -> NetworkPlanFile:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, side_km * np.sqrt(sites / 60), (sites, 2))
    km = distance_matrix(xy, xy) * 1.2
    edges = {tuple(sorted((int(a), int(b)))) for simplex in Delaunay(xy).simplices for a, b in zip(simplex, np.roll(simplex, 1))}
    tree = minimum_spanning_tree(km).tocoo()
    kept = {tuple(sorted((int(a), int(b)))) for a, b in zip(tree.row, tree.col)}
    for a, b in sorted(edges - kept, key=lambda e: km[e]):
        if len(kept) >= spans:
            break
        kept.add((a, b))
    ends = rng.choice(sites, max(2, sites // 4), replace=False)
    names = [f"s{i}" for i in range(sites)]
    pairs = [tuple(rng.choice(ends, 2, replace=False)) for _ in range(demands)]
    plan = {
        "sites": [{"name": n, "trusted_node_cost": 0 if i in ends else 10} for i, n in enumerate(names)],
        "spans": [{"sites": [names[a], names[b]], "length_km": round(float(km[a, b]), 1), "cost": round(5 + 0.1 * km[a, b], 1)}
                  for a, b in sorted(kept)],
        "link": {},
        "demands": [{"name": f"d{k}", "from": names[a], "to": names[b], "bits_per_second": 1.0} for k, (a, b) in enumerate(pairs)],
        "survive": 1,
    }
    model = NetworkPlanFile.model_validate(plan)
    index = {n: i for i, n in enumerate(names)}
    span_ends = np.array([[index[a], index[b]] for a, b in (s.sites for s in model.spans)])
    best = survivable(topology(model, span_names(model), span_ends), span_rates(span_drivers(model)), 1)
    for d, b, share in zip(plan["demands"], best, rng.uniform(0.2, 0.6, demands)):
        d["bits_per_second"] = round(float(b * share), 1)
    return NetworkPlanFile.model_validate(plan)


def solve(plan: NetworkPlanFile, survive: int, time_limit: float, gap: float) -> tuple[float, object]:
    plan = plan.model_copy(update={"survive": survive})
    started = time.process_time()
    result = make_plan(plan, time_limit, gap)
    return time.process_time() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20:50:7,40:100:14,60:150:20,80:200:27,100:250:34",
                        help="SITES:SPANS:DEMANDS, comma-separated")
    parser.add_argument("--time-limit", type=float, default=3600.0,
                        help="per solve, wall-clock seconds (default 3600: on a shared machine the CPU seconds printed "
                             "are the measure, and a wall limit would cut a solve short for others' load)")
    parser.add_argument("--gap", type=float, default=0.01, help="optimality gap to stop at (default 0.01, the issue's)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("| sites | spans | demands | N-1 CPU s | status | gap | nodes | cuts | cost | no-N-1 CPU s | status | gap | "
          "N-1 / no-N-1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        sites, spans, demands = map(int, size.split(":"))
        plan = instance(sites, spans, demands, args.seed)
        base_s, base = solve(plan, 0, args.time_limit, args.gap)
        n1_s, result = solve(plan, 1, args.time_limit, args.gap)
        p = result.placement
        print(f"| {sites} | {len(plan.spans)} | {demands} | {n1_s:.2f} | {result.status} | {p.gap:.2%} | {p.nodes} | "
              f"{p.cuts} | {p.cost:.1f} | {base_s:.2f} | {base.status} | {base.placement.gap:.2%} | {n1_s / base_s:.1f}x |",
              flush=True)


if __name__ == "__main__":
    main()
