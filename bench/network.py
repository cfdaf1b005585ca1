"""The network analysis at fleet scale, against a naive networkx analysis in the same run.

Topology (a realistic shape, not a random graph): metro rings of trusted nodes with a few
chords, each metro with customer end points (not trusted) homed on two ring nodes, metros joined
by long-haul chains of trusted relay sites; several parallel QKD links per fibre span. Default:
2,500 sites, 10,000 links, 200 demands between end points of different metros.

Printed: the time of one full analysis (both capacities and routes, minimum cuts, disjoint paths,
N-1 over every link and trusted site, stored key, bound, failure impacts) in CPU seconds of
this process (one core), the time of one max-flow in igraph and in networkx on the same graph
(the library choice), and the naive baseline: networkx recomputing the max-flow from scratch
for every failure of every link and trusted site on a demand's flow, timed on ``--naive``
demands and scaled to all, as a ratio.

    python bench/network.py [--metros 100] [--demands 200] [--naive 3] [--exporter [--rounds 3]] [--relay [--priorities N]]

``--relay`` measures the simulated key relay: the CPU of the estimation cycle of the same
simulated fleet (``--links`` links on this topology, ``--demands`` demands of ``--priorities``
distinct priorities, which the relay serves in turn) with and without the relay, cycles
interleaved in one process so that the machine's noise hits both alike, as a ratio; and the CPU
of re-choosing every demand's route at once (the worst failover).

``--exporter`` also runs bench/fleet.py's measurement of a real ``qtelemetry run`` at ``--links``
simulated links on this topology: without its network section, with it analysed once an hour
(the relay and the exposition, the analysis process idle) and with it analysed every 15 s.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import igraph
import networkx as nx
import numpy as np

from qtelemetry.estimation.network import Topology, analyse

HERE = Path(__file__).resolve().parent


def metro_network(metros: int = 100, ring: int = 16, customers: int = 4, relays_per_metro: int = 5, parallel: int = 3,
                  demands: int = 200, seed: int = 7) -> tuple[list[str], list[bool], list[tuple[int, int]], np.ndarray,
                                                              list[tuple[int, int]], np.ndarray]:
    """Sites, trusted flags, link ends, link key rates (bits/s), demand ends and demand sizes."""
    relays = relays_per_metro * metros
    rng = np.random.default_rng(seed)
    sites: list[str] = []
    trusted: list[bool] = []
    spans: list[tuple[int, int, int, float]] = []  # (a, b, parallel links, rate per link)

    def site(name: str, is_trusted: bool) -> int:
        sites.append(name)
        trusted.append(is_trusted)
        return len(sites) - 1

    rings, ends = [], []
    for m in range(metros):
        nodes = [site(f"m{m}-n{i}", True) for i in range(ring)]
        rings.append(nodes)
        for i in range(ring):
            spans.append((nodes[i], nodes[(i + 1) % ring], parallel, float(rng.uniform(2e3, 8e3))))
        for i in range(0, ring, ring // 4):  # chords across the ring
            spans.append((nodes[i], nodes[(i + ring // 2) % ring], parallel, float(rng.uniform(1e3, 4e3))))
        for c in range(customers):
            end = site(f"m{m}-c{c}", False)
            ends.append(end)
            homes = rng.choice(ring, 2, replace=False)
            for h in homes:
                spans.append((end, nodes[h], parallel - 1, float(rng.uniform(3e3, 9e3))))
    # long-haul chains: a ring of metros plus random cross links, relay sites spread over them
    pairs = [(m, (m + 1) % metros) for m in range(metros)]
    pairs += [tuple(rng.choice(metros, 2, replace=False)) for _ in range(metros // 2)]
    per_chain = np.full(len(pairs), relays // len(pairs))
    per_chain[: relays - per_chain.sum()] += 1
    for (ma, mb), hops in zip(pairs, per_chain.tolist()):
        chain = [rings[ma][int(rng.integers(ring))]] + [site(f"r{len(sites)}", True) for _ in range(hops)]
        chain.append(rings[mb][int(rng.integers(ring))])
        for a, b in zip(chain, chain[1:]):
            spans.append((a, b, parallel + 1, float(rng.uniform(300, 1500))))
    link_ends = [(a, b) for a, b, k, _ in spans for _ in range(k)]
    rates = np.array([r * rng.uniform(0.8, 1.2) for _, _, k, r in spans for _ in range(k)])
    chosen = [tuple(rng.choice(len(ends), 2, replace=False)) for _ in range(demands)]
    demand_ends = [(ends[a], ends[b]) for a, b in chosen]
    demand_bps = rng.choice([200.0, 500.0, 1000.0, 2000.0], demands)
    return sites, trusted, link_ends, rates, demand_ends, demand_bps


def topology(metros: int, demands: int) -> tuple[Topology, np.ndarray]:
    sites, trusted, link_ends, rates, demand_ends, demand_bps = metro_network(metros=metros, demands=demands)
    top = Topology.build(sites, trusted, [f"l{i}" for i in range(len(link_ends))], link_ends,
                         [f"d{i}" for i in range(len(demand_ends))], demand_ends, demand_bps)
    return top, rates


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def nx_graph(top: Topology, rates: np.ndarray, removed_link: int | None = None, removed_site: int | None = None) -> nx.DiGraph:
    """The same relay graph in networkx, built from scratch (the naive way, per failure)."""
    graph = nx.DiGraph()
    kept = rates.copy()
    if removed_link is not None:
        kept[removed_link] = 0.0
    capacity = top.edge_sums(kept)
    for (a, b), c in zip(top.edge_ends.tolist(), capacity.tolist()):
        if removed_site in (a, b):
            continue
        graph.add_edge(int(top.sender[a]), int(top.receiver[b]), capacity=c)
        graph.add_edge(int(top.sender[b]), int(top.receiver[a]), capacity=c)
    return graph


def naive_demand(top: Topology, rates: np.ndarray, d: int) -> float:
    """N-1 of one demand the naive way: a fresh networkx max-flow for every failure of a link or
    trusted site on its flow; returns the capacity after the worst one."""
    s, t = top.demand_ends[d]
    source, target = int(top.sender[s]), int(top.receiver[t])
    value, flows = nx.maximum_flow(nx_graph(top, rates), source, target)
    used = {v for v, out in flows.items() for w, f in out.items() if f > 0} | {w for out in flows.values() for w, f in out.items() if f > 0}
    sites = [v for v in used if v < len(top.sites) and top.trusted[v] and v not in (s, t)]
    edges = {(min(a, b), max(a, b)) for a, b in top.edge_ends.tolist() if a in used and b in used}
    links = [i for i, (a, b) in enumerate(top.link_ends.tolist()) if (min(a, b), max(a, b)) in edges]
    worst = value
    for i in links:
        worst = min(worst, nx.maximum_flow_value(nx_graph(top, rates, removed_link=i), source, target))
    for v in sites:
        worst = min(worst, nx.maximum_flow_value(nx_graph(top, rates, removed_site=v), source, target))
    return worst


def library_choice(top: Topology, rates: np.ndarray, repeats: int = 5) -> tuple[float, float]:
    """Seconds of one max-flow (demand 0) on the same graph (every site pair an arc pair, no series
    reduction) in igraph and in networkx (preflow-push, its default)."""
    graph = nx_graph(top, rates)
    nodes = list(graph.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    arcs = [(index[a], index[b]) for a, b in graph.edges]
    full = igraph.Graph(n=len(nodes), edges=arcs, directed=True)
    capacity = [graph.edges[nodes[a], nodes[b]]["capacity"] for a, b in arcs]
    s, t = (int(v) for v in (top.sender[top.demand_ends[0, 0]], top.receiver[top.demand_ends[0, 1]]))
    start = cpu()
    for _ in range(repeats):
        full.maxflow_value(index[s], index[t], capacity)
    igraph_s = (cpu() - start) / repeats
    start = cpu()
    for _ in range(repeats):
        nx.maximum_flow_value(graph, s, t)
    return igraph_s, (cpu() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metros", type=int, default=100, help="metro rings (100: 2,500 sites, 10,000 links)")
    parser.add_argument("--demands", type=int, default=200)
    parser.add_argument("--naive", type=int, default=3, help="demands the naive baseline is timed on (0: skip it)")
    parser.add_argument("--exporter", action="store_true", help="also measure qtelemetry run with and without the analysis")
    parser.add_argument("--links", type=int, default=10_000, help="links of the exporter measurement")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per exporter measurement")
    parser.add_argument("--rounds", type=int, default=1, help="alternating without/with pairs of the exporter measurement")
    parser.add_argument("--relay", action="store_true", help="also measure the key relay's share of the cycle")
    parser.add_argument("--cycles", type=int, default=20, help="cycles per variant of the relay measurement")
    parser.add_argument("--priorities", type=int, default=1,
                        help="distinct demand priorities of the relay measurement (demand d has priority d mod N)")
    args = parser.parse_args()

    top, rates = topology(args.metros, args.demands)
    buffers = rates * 600.0
    bounds = rates * 40.0
    print(f"{len(top.sites):,} sites ({int((~top.trusted).sum()):,} end points), {len(top.links):,} links "
          f"({len(top.edge_ends):,} site pairs), {len(top.demands)} demands")
    igraph_s, networkx_s = library_choice(top, rates)
    print(f"one max-flow: igraph {igraph_s * 1e3:.2f} ms, networkx {networkx_s * 1e3:.1f} ms "
          f"({networkx_s / igraph_s:.0f}x)")
    start = cpu()
    result = analyse(top, rates, buffers, bounds)
    analysis_s = cpu() - start
    print(f"one full analysis: {analysis_s:.2f} s CPU (interval 15 s: {analysis_s / 15:.0%} of one core); "
          f"{int((result.multipath_bps < top.demand_bps).sum())} demands unmet, "
          f"{int((result.after_worst_failure_bps < top.demand_bps).sum())} one failure from unmet")
    naive_n = min(args.naive, len(top.demands))
    if naive_n:
        start = cpu()
        for d in range(naive_n):
            assert abs(naive_demand(top, rates, d) - result.after_worst_failure_bps[d]) <= 1e-6 * max(1.0, result.multipath_bps[d])
        naive_s = (cpu() - start) / naive_n * len(top.demands)
        print(f"naive networkx N-1 (fresh max-flow per failure), {naive_n} demands scaled to {len(top.demands)}: "
              f"{naive_s:.0f} s CPU; the analysis is {naive_s / analysis_s:.0f}x faster")
    if args.exporter:
        exporter(args.links, args.seconds, args.rounds)
    if args.relay:
        relay_cost(args.links, args.demands, args.cycles, args.priorities)


def relay_cost(links: int, demands: int, cycles: int, priorities: int = 1) -> None:
    """CPU per estimation cycle of one simulated fleet with the relay and without it (the same
    engine with its relay switched off), alternating cycle by cycle; and one reroute of every demand.
    The relay serves each of the ``priorities`` levels in turn."""
    from qtelemetry.config import parse_config
    from qtelemetry.estimation.relay import choose_routes
    from qtelemetry.runtime.engine import Engine

    text, n_links = fleet_config(max(1, round(links / 102)), True, demands, priorities=priorities)
    config = parse_config(text)
    with_relay, without = Engine(config, 0.0), Engine(config, 0.0)
    without.relay = None
    spent = {"with": 0.0, "without": 0.0}
    warmup = 7  # the first routes, and the tamper detectors' warm-up (5 s) that builds a shared table
    for i in range(1, warmup + cycles + 1):
        for name, engine in (("with", with_relay), ("without", without)) if i % 2 else (("without", without), ("with", with_relay)):
            start = cpu()
            engine.cycle(float(i))
            if i > warmup:
                spent[name] += cpu() - start
    relay = with_relay.relay
    delivered = relay.delivered.sum() / relay.requested.sum()
    top = relay.top
    capacity = np.bincount(top.link_edge, weights=np.full(len(top.links), 1e3), minlength=len(top.edge_ends))
    start = cpu()
    choose_routes(top, capacity, np.arange(len(top.demands)), "widest-path")
    widest_s = cpu() - start
    start = cpu()
    choose_routes(top, capacity, np.arange(len(top.demands)), "multipath")
    multipath_s = cpu() - start
    per = {k: v / cycles for k, v in spent.items()}
    print(f"relay at {n_links:,} links, {len(top.demands)} demands of {priorities} priorities "
          f"({int(relay.relayed.sum())} relayed, "
          f"{delivered:.0%} of their key delivered): cycle {per['without'] * 1e3:.0f} ms CPU without, "
          f"{per['with'] * 1e3:.0f} ms with; ratio with / without {per['with'] / per['without']:.3f} "
          f"({cycles} cycles each, interleaved)")
    print(f"re-choosing all {len(top.demands)} routes at once: widest-path {widest_s * 1e3:.0f} ms, "
          f"multipath {multipath_s * 1e3:.0f} ms CPU")


def fleet_config(metros: int, network: bool, demands: int = 200, interval_s: float = 15.0,
                 priorities: int = 1) -> tuple[str, int]:
    """A config of ``metros`` metro rings' worth of simulated decoy-BB84 links (102 links per metro)
    on the benchmark topology, with its network section (``demands`` demands of ``priorities``
    priorities, analysed every ``interval_s`` and relayed over the simulated links) or without; and
    its number of links."""
    sites, trusted, link_ends, _, demand_ends, demand_bps = metro_network(metros=metros, demands=demands)
    lines = ["exporter: {window_seconds: 1.0, sliding_windows: 60, tamper: {warmup_seconds: 5}}", "links:"]
    lines += [f"  - {{name: link-{i:05d}, site_a: {sites[a]}, site_b: {sites[b]}, driver: "
              f"{{type: simulated-bb84, fiber_length_km: {5 + i % 60}, seed: {i}}}}}" for i, (a, b) in enumerate(link_ends)]
    if network:
        lines += ["network:", f"  analysis_interval_seconds: {interval_s:g}", "  sites:"]
        lines += [f"    - {{name: {name}, trusted: {str(t).lower()}}}" for name, t in zip(sites, trusted)]
        lines += ["  demands:"]
        lines += [f"    - {{name: d{d}, from: {sites[a]}, to: {sites[b]}, bits_per_second: {need:g}, priority: {d % priorities}}}"
                  for d, ((a, b), need) in enumerate(zip(demand_ends, demand_bps))]
    return "\n".join(lines) + "\n", len(link_ends)


#: The exporter's variants: no network; the network analysed once an hour (its exposition and
#: key relay, but the analysis process idle after the first); analysed every 15 s (the default).
VARIANTS = {"without": (False, 15.0), "hourly": (True, 3600.0), "with": (True, 15.0)}


def exporter(links: int, seconds: float, rounds: int) -> None:
    """bench/fleet.py's measurement of qtelemetry run at ~``links`` links in each of the
    ``VARIANTS``, in ``rounds`` rounds (the order reversed every other round): the medians."""
    sys.path.insert(0, str(HERE))
    import fleet

    metros = max(1, round(links / 102))
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp_name:
        for i in range(rounds):
            for name in list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]:
                network, interval_s = VARIANTS[name]
                tmp = Path(tmp_name) / f"{name}-{i}"
                tmp.mkdir()
                config = tmp / "fleet.yaml"
                text, n_links = fleet_config(metros, network, interval_s=interval_s)
                config.write_text(text)
                runs[name].append(fleet.measure(
                    "qtelemetry", [fleet.QTELEMETRY, "run", "--config", str(config), "--listen",
                                   "127.0.0.1:0"], rb"url=(http\S+/metrics)", n_links, seconds, tmp))
    fleet.report([median_row(rows) for rows in runs.values()], tuple(runs))


def median_row(rows: list[dict]) -> dict:
    """Each figure's median over the rounds (the first row's value where it is not a number)."""
    return {key: statistics.median(row[key] for row in rows if key in row)
            if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            for key, value in rows[0].items()}


if __name__ == "__main__":
    main()
