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

There are exponentially many cuts, so they are lazy constraints in one branch-and-cut search
(SCIP through PySCIPOpt, a constraint handler; Achterberg, Math. Program. Comput. 1, 1 (2009)):
at every node the LP solution's violated minimum cuts are separated (igraph), and every integer
solution is checked against every demand and failure before it is accepted, its violated cuts
joining the problem. The dual bound is SCIP's; the gap reported is (cost − bound) / cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from numpy.typing import NDArray
from pyscipopt import SCIP_EVENTTYPE, SCIP_RESULT, Conshdlr, Eventhdlr, Model, quicksum

from qtelemetry.estimation.graphs import igraph

Floats = NDArray[np.float64]
Ints = NDArray[np.intp]
Bools = NDArray[np.bool_]
#: A cut's row: the spans crossing it and their coefficients (≥ 1 required). Sparse: a cut crosses few
#: of thousands of candidate spans, and a separation finds thousands of cuts.
Row = tuple[Ints, Floats]

#: A cut short of the demand by more than this (relative) is violated: SCIP's own feasibility tolerance.
TOLERANCE = 1e-6


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

    def touched(self, spans: Bools) -> Bools:
        """(sites,) the sites at an end of one of ``spans``."""
        out = np.zeros(self.n_sites, bool)
        out[self.span_ends[spans].ravel()] = True
        return out

    def spans_at(self, site: int) -> Bools:
        """(spans,) the spans with an end at ``site``."""
        return (self.span_ends == site).any(axis=1)

    def scenarios(self, d: int, lit: Bools) -> list[tuple[str, int]]:
        """The failures demand ``d`` must survive that can matter for the spans ``lit``."""
        found = [("none", -1)]
        if self.survive:
            found += [("span", e) for e in np.flatnonzero(lit).tolist()]
            touched = self.touched(lit)
            touched[self.demand_ends[d]] = False
            found += [("site", v) for v in np.flatnonzero(touched & self.trusted).tolist()]
        return found

    def failed(self, kind: str, element: int) -> Bools:
        """(spans,) the spans a failure takes."""
        out = np.zeros(len(self.span_ends), bool)
        if kind == "span":
            out[element] = True
        elif kind == "site":
            out = self.spans_at(element)
        return out

    def cost(self, chosen: Bools) -> float:
        """Spans' costs plus the relay costs of the paid sites they touch."""
        touched = self.touched(chosen)
        return float(self.span_cost[chosen].sum() + self.site_cost[self.paid_sites][touched[self.paid_sites]].sum())


@dataclass(frozen=True)
class Placement:
    status: str  #: "optimal" | "feasible" (time ran out; ``gap`` says how far from proven)
    chosen: Bools  #: (spans,)
    cost: float
    lower_bound: float
    gap: float  #: (cost − lower bound) / cost; 0 when proven optimal
    nodes: int  #: branch-and-bound nodes searched
    cuts: int  #: cut constraints generated


def violated_cuts(instance: Instance, x: Floats, deadline: float = math.inf) -> list[Row]:
    """Rows of the minimum cuts that spans lit to the extent ``x`` (0-1, fractional in the
    relaxation) leave short: for each short demand and failure, the cut nearest the source and the
    one nearest the target (back cuts: more cuts per separation). Past ``deadline`` (monotonic
    clock) only those found so far, at least one short demand's if there is one."""
    found: list[Row] = []
    for rows in short_cuts(instance, x):
        found += rows
        if time.monotonic() > deadline:
            break
    return found


def short_cuts(instance: Instance, x: Floats) -> Iterator[list[Row]]:
    """The rows of each short demand and failure in turn (``violated_cuts``), so that a check can stop
    at the first.

    A failure is tried only if it can leave the demand short: taking away an element that carries
    f of a maximum flow F leaves at least F − f (the flow's paths through it removed), so with
    F − f ≥ the demand it cannot."""
    graph = igraph.Graph(n=instance.n_sites, edges=instance.span_ends.tolist())
    for d, ((s, t), need) in enumerate(zip(instance.demand_ends.tolist(), instance.demand_bps.tolist())):
        usable = instance.usable(d)
        capacity = instance.span_rate_bps * x * usable
        short = need * (1 - TOLERANCE)
        for kind, element in _risky_failures(instance, graph, d, capacity, short):
            failed = instance.failed(kind, element)
            left = np.where(failed, 0.0, capacity).tolist()
            cut = graph.mincut(s, t, capacity=left)
            if cut.value >= short:
                continue
            back = graph.mincut(t, s, capacity=left)
            rows = []
            for found, end in ((cut, s), (back, t)):
                side = np.zeros(instance.n_sites, bool)
                side[found.partition[0] if end in found.partition[0] else found.partition[1]] = True
                rows += _cut_rows(instance, side[instance.span_ends[:, 0]] != side[instance.span_ends[:, 1]],
                                  usable & ~failed, need)
            yield rows


def _risky_failures(instance: Instance, graph: igraph.Graph, d: int, capacity: Floats, short: float,
                    ) -> list[tuple[str, int]]:
    """The scenarios of demand ``d`` that may leave it below ``short``: no failure if its maximum flow
    is short already, else the failures of the elements carrying more than its surplus."""
    (s, t), scenarios = instance.demand_ends[d].tolist(), instance.scenarios(d, capacity > 0)
    flow = graph.maxflow(s, t, capacity=capacity.tolist())
    if flow.value < short:
        return [("none", -1)]
    through_span = np.abs(flow.flow)
    through_site = np.zeros(instance.n_sites)
    np.add.at(through_site, instance.span_ends.ravel(), np.repeat(through_span, 2) / 2)  # in = out
    through = {"span": through_span, "site": through_site}
    return [(kind, e) for kind, e in scenarios if kind != "none" and flow.value - through[kind][e] < short]


def _cut_rows(instance: Instance, crossing: Bools, usable: Bools, need: float) -> list[Row]:
    """The cut's row, and when it needs k > 1 of its spans also Σ x_e ≥ k (tighter for the relaxation)."""
    spans = np.flatnonzero(crossing & usable)
    share = np.minimum(instance.span_rate_bps[spans] / need, 1.0)
    needed = int(np.searchsorted(np.cumsum(np.sort(share)[::-1]), 1.0 - TOLERANCE)) + 1
    return [(spans, share), (spans, np.full(len(spans), 1.0 / needed))] if needed > 1 else [(spans, share)]


class _LazyCuts(Conshdlr):
    """Every demand's cuts in every failure, as SCIP asks: separated from LP solutions, enforced on
    integer ones, checked on every candidate solution (a heuristic's too)."""

    def __init__(self, instance: Instance, deadline: float):
        self.instance, self.deadline = instance, deadline
        self.xs: list = []  # SCIP's span variables, set once they exist
        self.cuts = 0
        self._seen: set[bytes] = set()
        self._checked: dict[bytes, bool] = {}  # heuristics propose the same choice again and again
        self._found: list[Row] = []  # rows a check found; a check may not add them, the next separation does

    def values(self, solution=None) -> Floats:
        return np.array([self.model.getSolVal(solution, x) for x in self.xs])

    def add(self, rows: list[Row]) -> int:
        """Add the rows not already in; how many were new."""
        fresh = {spans.tobytes() + share.tobytes(): (spans, share) for spans, share in rows}
        fresh = {key: row for key, row in fresh.items() if key not in self._seen}
        for key, (spans, share) in fresh.items():
            self._seen.add(key)
            self.model.addCons(quicksum(c * self.xs[e] for e, c in zip(spans.tolist(), share.tolist()) if c) >= 1.0)
        self.cuts += len(fresh)
        return len(fresh)

    def conscheck(self, constraints, solution, checkintegrality, checklprows, printreason, completely):
        x = np.round(self.values(solution))
        key = np.packbits(x > 0).tobytes()
        if key not in self._checked:
            rows = next(short_cuts(self.instance, x), [])
            self._checked[key] = not rows
            self._found += rows
        return {"result": SCIP_RESULT.FEASIBLE if self._checked[key] else SCIP_RESULT.INFEASIBLE}

    def _enforce(self) -> dict:
        rows = violated_cuts(self.instance, np.round(self.values()), self.deadline)
        if not rows:
            return {"result": SCIP_RESULT.FEASIBLE}
        return {"result": SCIP_RESULT.CONSADDED if self.add(rows) else SCIP_RESULT.INFEASIBLE}

    def consenfolp(self, constraints, nusefulconss, solinfeasible):
        return self._enforce()

    def consenfops(self, constraints, nusefulconss, solinfeasible, objinfeasible):
        return self._enforce()

    def conssepalp(self, constraints, nusefulconss):
        rows, self._found = violated_cuts(self.instance, np.clip(self.values(), 0.0, 1.0), self.deadline) + self._found, []
        return {"result": SCIP_RESULT.CONSADDED if self.add(rows) else SCIP_RESULT.DIDNOTFIND}

    def conslock(self, constraint, locktype, nlockspos, nlocksneg):
        """Lighting fewer spans may break a cut, more never: SCIP must not fix a span dark for its cost."""
        for x in self.xs:
            self.model.addVarLocksType(x, locktype, nlockspos, nlocksneg)


class _Progress(Eventhdlr):
    """Calls ``progress(nodes, cuts, lower bound, cost)`` at each better network found."""

    def __init__(self, progress: Callable[[int, int, float, float], None], lazy: _LazyCuts):
        self.progress, self.lazy = progress, lazy

    def eventinit(self):
        self.model.catchEvent(SCIP_EVENTTYPE.BESTSOLFOUND, self)

    def eventexec(self, event):
        model = self.model
        self.progress(model.getNNodes(), self.lazy.cuts, model.getDualbound(), model.getSolObjVal(model.getBestSol()))


def place(instance: Instance, time_limit_s: float = 300.0, gap: float = 1e-4,
          progress: Callable[[int, int, float, float], None] = lambda nodes, cuts, bound, cost: None) -> Placement:
    """The cheapest spans meeting every demand (``instance`` must be feasible with every span lit),
    to the relative ``gap`` in at most ``time_limit_s`` seconds, the ``greedy`` start's included (a
    greedy start taking longer leaves the search none; it runs to its end, since the search needs a
    feasible start), so that even without time for more the answer is feasible and the gap says
    how far it may be from the optimum."""
    deadline = time.monotonic() + time_limit_s
    n_spans, paid = len(instance.span_ends), instance.paid_sites
    model = Model()
    model.hideOutput()
    model.setParam("limits/gap", gap)
    lazy = _LazyCuts(instance, deadline)
    lazy.xs = [model.addVar(f"span{e}", vtype="B", obj=float(instance.span_cost[e]), ub=float(instance.span_rate_bps[e] > 0))
               for e in range(n_spans)]
    ys = {v: model.addVar(f"site{v}", vtype="B", obj=float(instance.site_cost[v])) for v in paid.tolist()}
    for v, y in ys.items():
        for e in np.flatnonzero(instance.spans_at(v)).tolist():
            model.addCons(lazy.xs[e] <= y)
    model.includeConshdlr(lazy, "placement-cuts", "every demand's cuts in every failure", sepapriority=1,
                          enfopriority=-1, chckpriority=-1, sepafreq=1)
    model.addPyCons(model.createCons(lazy, "cuts"))
    model.includeEventhdlr(_Progress(progress, lazy), "placement-progress", "better networks found")
    start = greedy(instance)
    solution = model.createSol()
    touched = instance.touched(start)
    for variable, value in [*zip(lazy.xs, start.tolist()), *((y, touched[v]) for v, y in ys.items())]:
        model.setSolVal(solution, variable, float(value))
    model.addSol(solution)
    progress(0, 0, 0.0, instance.cost(start))
    model.setParam("limits/time", min(max(deadline - time.monotonic(), 0.0), model.infinity()))  # SCIP's no limit: 1e20 s
    model.optimize()
    best = model.getBestSol()
    chosen = np.array([model.getSolVal(best, x) > 0.5 for x in lazy.xs])
    cost = instance.cost(chosen)
    bound = min(max(model.getDualbound(), 0.0), cost)
    gap_found = (cost - bound) / cost if cost > 0 else 0.0
    return Placement("optimal" if gap_found <= gap + 1e-9 else "feasible", chosen, cost, bound, gap_found,
                     model.getNNodes(), lazy.cuts)


def greedy(instance: Instance) -> Bools:
    """Spans lit until no demand falls short in any scenario: for each short cut, its unlit span that
    covers most of it per unit of cost (the search's first network: feasible, rarely cheapest)."""
    chosen = np.zeros(len(instance.span_ends), bool)
    while rows := violated_cuts(instance, chosen.astype(float)):
        before = chosen.sum()
        for spans, share in rows:
            value = np.where((share > 0) & ~chosen[spans], share / np.maximum(instance.span_cost[spans], 1e-9), -1.0)
            if share @ chosen[spans] < 1.0 - TOLERANCE and value.size and value.max() > 0:
                chosen[spans[np.argmax(value)]] = True
        if chosen.sum() == before:  # nothing left to light (the instance is infeasible)
            break
    return chosen
