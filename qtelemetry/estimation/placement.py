"""Trusted-node placement: the cheapest fibre spans (and relay sites) that give every demand its key,
also after any single failure (N-1).

Capacity is the network view's (``qtelemetry.estimation.network``): relay spends a key bit per hop,
so a demand's capacity is its maximum flow over the spans' key rates, each demand on its own (the
live view analyses every demand against the whole network; demands do not share a span's rate).
By max-flow = min-cut (Ford & Fulkerson, Can. J. Math. 8, 399 (1956)) that is a covering problem,
the cut formulation of network design (Magnanti & Wong, Transp. Sci. 18, 1 (1984)):

    minimise  Σ_e cost_e x_e + Σ_v cost_v y_v
    subject to, for each demand d, each failure f it must survive, each site set S with s_d ∈ S ∌ t_d:
              Σ_{e crossing S, e not failed, e usable by d} min(rate_e / need_d, 1) x_e ≥ 1
              x_e ≤ y_v for each span e at a site v whose relay cost is paid;   x, y ∈ {0, 1}

A span alone carrying the whole demand already covers the cut, so its coefficient is capped at 1
(coefficient strengthening: the same integer points, a tighter relaxation). The failures are none
and, with ``survive`` = 1, each span and each relay site that is not an end of the demand; a span
is usable by d unless it touches an end point (not trusted) other than d's ends.

There are exponentially many cuts, so they are added lazily (row generation): HiGHS (scipy's
``milp``) solves the master problem with the cuts found so far; for its choice, every demand's
minimum cut in every failure scenario is found (igraph); the violated ones join the master, until
none is. Every master is a relaxation of the whole problem, so the last one's dual bound bounds
the optimum from below, and its solution, once no cut is violated, is feasible: the gap reported
is the last master's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import igraph
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

Floats = NDArray[np.float64]
Ints = NDArray[np.intp]
Bools = NDArray[np.bool_]

#: A cut short of the demand by more than this (relative) is violated: HiGHS's own feasibility tolerance.
TOLERANCE = 1e-6
#: Integer masters whose choice still falls short are solved only to this gap: their job is cuts.
LOOSE_GAP = 0.05


@dataclass(frozen=True)
class Instance:
    """A placement problem as arrays; site indices are positions in the site list."""

    n_sites: int
    span_ends: Ints  #: (spans, 2)
    span_rate_bps: Floats  #: (spans,) key rate of each span, lit
    span_cost: Floats  #: (spans,)
    site_cost: Floats  #: (sites,) paid when a chosen span touches a site that is the end of no demand
    trusted: Bools  #: (sites,) may relay key
    demand_ends: Ints  #: (demands, 2) from, to
    demand_bps: Floats  #: (demands,)
    survive: int  #: 0: demands met; 1: met after any single span or relay-site failure

    @property
    def paid_sites(self) -> Ints:
        """Sites whose relay cost counts: a cost, and the end of no demand."""
        paid = self.site_cost > 0
        paid[self.demand_ends.ravel()] = False
        return np.flatnonzero(paid)

    def usable(self, d: int) -> Bools:
        """(spans,) the spans demand ``d``'s key may cross: none at an end point other than its ends."""
        relays = self.trusted.copy()
        relays[self.demand_ends[d]] = True
        return relays[self.span_ends].all(axis=1)

    def scenarios(self, d: int, lit: Bools) -> list[tuple[str, int]]:
        """The failures demand ``d`` must survive that can matter for the spans ``lit``."""
        found = [("none", -1)]
        if self.survive:
            found += [("span", e) for e in np.flatnonzero(lit).tolist()]
            touched = np.zeros(self.n_sites, bool)
            touched[self.span_ends[lit].ravel()] = True
            touched[self.demand_ends[d]] = False
            found += [("site", v) for v in np.flatnonzero(touched & self.trusted).tolist()]
        return found

    def failed(self, kind: str, element: int) -> Bools:
        """(spans,) the spans a failure takes."""
        out = np.zeros(len(self.span_ends), bool)
        if kind == "span":
            out[element] = True
        elif kind == "site":
            out = (self.span_ends == element).any(axis=1)
        return out

    def cost(self, chosen: Bools) -> float:
        """Spans' costs plus the relay costs of the paid sites they touch."""
        touched = np.zeros(self.n_sites, bool)
        touched[self.span_ends[chosen].ravel()] = True
        return float(self.span_cost[chosen].sum() + self.site_cost[self.paid_sites][touched[self.paid_sites]].sum())


@dataclass(frozen=True)
class Placement:
    status: str  #: "optimal" | "feasible" (time ran out; ``gap`` says how far from proven)
    chosen: Bools  #: (spans,)
    cost: float
    lower_bound: float
    gap: float  #: (cost − lower bound) / cost; 0 when proven optimal
    rounds: int  #: master problems solved
    cuts: int  #: cut constraints generated


def violated_cuts(instance: Instance, x: Floats) -> list[Floats]:
    """Rows (coefficients over spans, ≥ 1 required) of the minimum cuts that spans lit to the extent
    ``x`` (0-1, fractional in the relaxation) leave short: for each short demand and failure, the
    cut nearest the source and the one nearest the target (back cuts: more cuts per round, fewer rounds)."""
    graph = igraph.Graph(n=instance.n_sites, edges=instance.span_ends.tolist())
    rows: list[Floats] = []
    for d, ((s, t), need) in enumerate(zip(instance.demand_ends.tolist(), instance.demand_bps.tolist())):
        usable = instance.usable(d)
        capacity = instance.span_rate_bps * x * usable
        for kind, element in instance.scenarios(d, capacity > 0):
            failed = instance.failed(kind, element)
            left = np.where(failed, 0.0, capacity).tolist()
            cut = graph.mincut(s, t, capacity=left)
            if cut.value >= need * (1 - TOLERANCE):
                continue
            back = graph.mincut(t, s, capacity=left)
            for found, end in ((cut, s), (back, t)):
                side = np.zeros(instance.n_sites, bool)
                side[found.partition[0] if end in found.partition[0] else found.partition[1]] = True
                rows += _cut_rows(instance, side[instance.span_ends[:, 0]] != side[instance.span_ends[:, 1]],
                                  usable & ~failed, need)
    return rows


def _cut_rows(instance: Instance, crossing: Bools, usable: Bools, need: float) -> list[Floats]:
    """The cut's row, and when it needs k > 1 of its spans also Σ x_e ≥ k (tighter for the relaxation)."""
    crossing = crossing & usable
    share = np.where(crossing, np.minimum(instance.span_rate_bps / need, 1.0), 0.0)
    needed = int(np.searchsorted(np.cumsum(np.sort(share)[::-1]), 1.0 - TOLERANCE)) + 1
    return [share, crossing / needed] if needed > 1 else [share]


class _Master:
    """The master problem: costs, the relay-site links x_e ≤ y_v, and the cuts found so far."""

    def __init__(self, instance: Instance):
        n_spans, paid = len(instance.span_ends), instance.paid_sites
        self.n_spans, self.n = n_spans, n_spans + len(paid)
        self.objective = np.r_[instance.span_cost, instance.site_cost[paid]]
        self.bounds = Bounds(np.zeros(self.n), np.r_[(instance.span_rate_bps > 0).astype(float), np.ones(len(paid))])
        at = [(e, n_spans + k) for k, v in enumerate(paid.tolist())
              for e in np.flatnonzero((instance.span_ends == v).any(axis=1)).tolist()]
        rows = np.r_[np.arange(len(at)), np.arange(len(at))]
        columns = np.array([e for e, _ in at] + [y for _, y in at], np.intp)
        self.links = [LinearConstraint(csr_array((np.r_[np.ones(len(at)), -np.ones(len(at))], (rows, columns)),
                                                 shape=(len(at), self.n)), -np.inf, 0.0)] if at else []
        self.cuts: list[Floats] = []
        self._seen: set[bytes] = set()

    def add(self, rows: list[Floats]) -> int:
        """Add the cuts not already in; how many were new."""
        fresh = [row for row in rows if row.tobytes() not in self._seen]
        self._seen.update(row.tobytes() for row in fresh)
        self.cuts += fresh
        return len(fresh)

    def solve(self, integral: bool, time_limit_s: float, gap: float):
        cuts = np.zeros((len(self.cuts), self.n))
        cuts[:, : self.n_spans] = np.reshape(self.cuts, (-1, self.n_spans))
        return milp(self.objective, integrality=np.full(self.n, int(integral)), bounds=self.bounds,
                    constraints=[LinearConstraint(csr_array(cuts), 1.0, np.inf), *self.links],
                    options={"time_limit": max(time_limit_s, 1e-3), "mip_rel_gap": gap})


def place(instance: Instance, time_limit_s: float = 300.0, gap: float = 1e-4,
          progress: Callable[[int, int, float], None] = lambda rounds, cuts, bound: None) -> Placement:
    """The cheapest spans meeting every demand (``instance`` must be feasible with every span lit).

    Cuts are generated on the linear relaxation, whose masters solve in milliseconds, until it
    violates none; only then is the integer master solved, and the cuts its choice violates
    send the loop back to the relaxation. Out of time with a choice that still falls short,
    its choice is repaired (``repair``) and the gap says how far that is from the bound.
    ``progress(masters solved, cuts, lower bound)`` is called after each integer master.
    """
    deadline = time.monotonic() + time_limit_s
    master = _Master(instance)
    x = np.zeros(len(instance.span_ends))
    rounds, bound = 0, 0.0
    best_guess = np.zeros(len(x))  # the latest integer choice, repaired if time runs out
    fresh = master.add(violated_cuts(instance, x))
    loose = max(gap, LOOSE_GAP)
    while time.monotonic() < deadline:
        # integral once the relaxation holds; to a loose gap while its choices still fall short
        result = master.solve(not fresh, deadline - time.monotonic(), loose)
        rounds += 1
        if result.x is None:
            break
        x = result.x[: len(x)]
        if fresh:
            bound = max(bound, float(result.fun))
            fresh = master.add(violated_cuts(instance, x))
            continue
        bound = max(bound, float(getattr(result, "mip_dual_bound", None) or result.fun))
        progress(rounds, len(master.cuts), bound)
        x = best_guess = np.round(x)
        fresh = master.add(violated_cuts(instance, x))
        if not fresh and loose > gap:  # feasible: now solve it to the gap asked
            loose = gap
            continue
        if not fresh:
            break
    chosen = repair(instance, best_guess)
    cost = instance.cost(chosen)
    bound = min(bound, cost)
    gap_found = (cost - bound) / cost if cost > 0 else 0.0
    return Placement("optimal" if gap_found <= gap + 1e-9 else "feasible", chosen, cost, bound, gap_found, rounds,
                     len(master.cuts))


def repair(instance: Instance, x: Floats) -> Bools:
    """``x`` with spans added until no demand falls short in any scenario: for each short cut, its
    unlit span that covers most of it per unit of cost (greedy; only when the search ran out of time)."""
    chosen = x > 0.5
    while rows := violated_cuts(instance, chosen.astype(float)):
        before = chosen.sum()
        for row in rows:
            value = np.where((row > 0) & ~chosen, row / np.maximum(instance.span_cost, 1e-9), -1.0)
            if row @ chosen < 1.0 - TOLERANCE and value.max() > 0:
                chosen[np.argmax(value)] = True
        if chosen.sum() == before:  # nothing left to light (the instance is infeasible)
            break
    return chosen
