"""Draw the worked example of docs/plan-network.md: the plan of examples/tokyo-qkd-plan.yaml.

Runs the same plan as `qtelemetry plan-network examples/tokyo-qkd-plan.yaml` and saves its figure
(chosen versus unused spans, span key rates, each demand's bottleneck).

    python docs/plan_network_figure.py [--out docs/plan-network-tokyo.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qtelemetry.networkplan import figure, load_plan, make_plan

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "plan-network-tokyo.png")
    args = parser.parse_args()
    plan = load_plan(HERE.parent / "examples" / "tokyo-qkd-plan.yaml")
    result = make_plan(plan)
    index = {site.name: i for i, site in enumerate(plan.sites)}
    ends = np.array([[index[a], index[b]] for a, b in (span.sites for span in plan.spans)])
    title = (f"Tokyo QKD Network (Sasaki et al. 2011) + one hypothetical route, N-1: "
             f"{result.status}, cost {result.placement.cost:g}")
    figure(result, ends, title).savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
