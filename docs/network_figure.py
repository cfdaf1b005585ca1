"""Draw the demo's network from its own analysis: docs/network-demo.png.

Runs the embedded demo config's links for ``--seconds`` of simulated time (seeded simulators,
so the figure is reproducible), analyses the network as the exporter does and draws the sites
(schematic layout), each link as wide as its usable key rate (red: no key), the links of each
demand's minimum cut dashed, and per demand its capacities, survivable capacity and worst failure.

    python docs/network_figure.py [--out docs/network-demo.png] [--seconds 60]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import igraph
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qtelemetry.config import default_config  # noqa: E402
from qtelemetry.estimation.network import analyse  # noqa: E402
from qtelemetry.runtime.network import snapshot_inputs  # noqa: E402
from qtelemetry.runtime.runtime import Runtime  # noqa: E402

HERE = Path(__file__).resolve().parent


def run_demo(seconds: int) -> tuple:
    """The demo's topology, the analysis' inputs and its result after ``seconds`` one-second windows."""
    runtime = Runtime(default_config())
    start = runtime.started
    for i in range(1, seconds + 1):
        snap = runtime.cycle(start + i)
    inputs = snapshot_inputs(snap, start + seconds)
    top = snap.table.network
    return top, inputs, analyse(top, inputs.rate_bps, inputs.buffer_bits, inputs.bound_bps)


def layout(top) -> tuple[np.ndarray, np.ndarray]:
    """Schematic positions (Kamada-Kawai from a circle: deterministic); the real coordinates put a
    metro's sites on top of each other at this scale (the dashboard's map shows those)."""
    graph = igraph.Graph(n=len(top.sites), edges=top.edge_ends.tolist())
    xy = np.array(graph.layout_kamada_kawai(seed=graph.layout_circle().coords).coords)
    return xy[:, 0], xy[:, 1]


def draw(top, inputs, result, out: Path) -> None:
    x, y = layout(top)
    rate = np.nan_to_num(inputs.rate_bps)
    cut = {int(i) for links in result.min_cut for i in links.tolist()}
    fig, ax = plt.subplots(figsize=(9, 6.2))
    widths = 1.0 + 6.0 * np.log10(1.0 + rate) / np.log10(1.0 + rate.max())
    for i, (a, b) in enumerate(top.link_ends.tolist()):
        colour = "#2e9e4f" if rate[i] > 0 else "#d62728"
        ax.plot([x[a], x[b]], [y[a], y[b]], color=colour, lw=widths[i], ls="--" if i in cut else "-",
                solid_capstyle="round", zorder=1)
        label = f"{top.links[i]}\n{rate[i] / 1e3:,.1f} kbit/s" if rate[i] > 0 else f"{top.links[i]}\nno key"
        ax.annotate(label, ((x[a] + x[b]) / 2, (y[a] + y[b]) / 2), fontsize=7.5, ha="center", va="center",
                    color="#333", bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85), zorder=3)
    for v, name in enumerate(top.sites):
        trusted = bool(top.trusted[v])
        ax.scatter(x[v], y[v], s=220, marker="o" if trusted else "s", color="#1f4e79" if trusted else "#ff9f1c",
                   edgecolor="white", linewidth=1.5, zorder=4)
        impact = int(result.site_failure_impact[v])
        ax.annotate(name + (f"  (failure: {impact} demand unmet)" if impact else ""), (x[v], y[v]),
                    xytext=(8, 8), textcoords="offset points", fontsize=9, weight="bold", zorder=5)
    lines = []
    for d, name in enumerate(top.demands):
        kind, failure = result.worst_failure[d]
        s, t = (top.sites[i] for i in top.demand_ends[d])
        lines.append(f"{name} ({s} → {t}), needs {top.demand_bps[d] / 1e3:g} kbit/s: single route "
                     f"{result.single_path_bps[d] / 1e3:,.1f}, multipath {result.multipath_bps[d] / 1e3:,.1f}, "
                     f"after the worst failure ({kind} {failure}) {result.after_worst_failure_bps[d] / 1e3:,.1f} kbit/s; "
                     f"{int(result.disjoint_paths[d])} disjoint path{'' if result.disjoint_paths[d] == 1 else 's'}")
    ax.set_title("Demo network: link width = usable key rate, dashed = in a demand's minimum cut,\n"
                 "circles relay key (trusted), squares are end points", fontsize=10)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=8, va="bottom")
    ax.set_axis_off()
    ax.margins(0.15)
    fig.subplots_adjust(bottom=0.2)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "network-demo.png")
    parser.add_argument("--seconds", type=int, default=60, help="simulated seconds before the analysis")
    args = parser.parse_args()
    draw(*run_demo(args.seconds), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
