"""The welfare model of a round — formulation in models/clearing.md.

Built as a Pyomo model (the reference: one `declare_*` per constraint family) or as arrays for highspy (the fast
path: placement by eligibility class), solved lexicographically: stage 1 maximises sum(fee x grant); stage 2 keeps
that revenue and maximises time priority, so ties at the marginal fee go to earlier submitted_at, then smaller
request_id. Pool prices are the stage-1 duals of pool_capacity; from a MIP they come from the LP re-solved with the
integer choices fixed. `price_pools` prices a priority answer with the same LP, its fill decisions fixed.
"""

from __future__ import annotations

import highspy
import numpy as np
import pandas as pd
import pyomo.environ as pyo

from ..placement import split_by_class
from ..progress import note, stage
from ..schemas import SolverOptions
from ..solver import (
    FACE_TOL,
    INTEGER,
    OPTIMAL,
    LinearProgram,
    SolveOutcome,
    check_outcome,
    csr_from_triplets,
    new_highs,
    pass_model,
    run_highs,
    solve_arrays,
    solve_pyomo,
)
from .data import EPS, ClearingData, Solution

# ---------------------------------------------------------------- Pyomo reference model


def declare_sets(m: pyo.ConcreteModel, d: ClearingData) -> None:
    arc_req, _ = d.request_arcs
    m.REQUESTS = pyo.RangeSet(0, d.n - 1)
    m.HELD = pyo.RangeSet(d.n, d.n + len(d.held_cube) - 1)  # members after the requests: earlier rounds' grants
    m.ARCS = pyo.RangeSet(0, len(arc_req) - 1)
    m.POOLS = pyo.Set(initialize=np.unique(d.centry_pool).tolist(), ordered=True)
    m.MIN_REQUESTS = pyo.Set(initialize=np.flatnonzero(d.min_cube > EPS).tolist(), ordered=True)


def declare_variables(m: pyo.ConcreteModel, d: ClearingData) -> None:
    """grant[q] in [0, max_cube]; place[a] >= 0 (cube of a request or held grant at an FC); filled[q] binary (min_cube > 0 only)."""
    m.grant = pyo.Var(m.REQUESTS, bounds=lambda m, q: (0.0, float(d.max_cube[q])))
    m.place = pyo.Var(m.ARCS, domain=pyo.NonNegativeReals)
    m.filled = pyo.Var(m.MIN_REQUESTS, domain=pyo.Binary)


def declare_pool_capacity(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""pool_capacity[f,k,t]: \sum_{q: k_q = k, t \in M_q} place[q,f] <= pool[f,k,t].  Dual: price of pool space."""
    _, arc_carc = d.request_arcs
    arcs_of_carc = pd.Series(np.arange(len(arc_carc))).groupby(arc_carc).apply(list).to_dict()
    carcs_of_pool = pd.Series(d.centry_carc).groupby(d.centry_pool).apply(list).to_dict()
    cap = d.pools["pool_cube"].to_numpy()
    m.pool_capacity = pyo.Constraint(
        m.POOLS, rule=lambda m, r: sum(m.place[a] for c in carcs_of_pool[r] for a in arcs_of_carc.get(c, [])) <= float(cap[r])
    )


def declare_grant_placement(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""grant_placement[q]: \sum_f place[q,f] = grant[q]."""
    arcs_of = d.arcs_of_member
    m.grant_placement = pyo.Constraint(m.REQUESTS, rule=lambda m, q: sum(m.place[a] for a in arcs_of[q]) - m.grant[q] == 0)


def declare_held_placement(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""held_placement[h]: \sum_f place[h,f] = granted[h]  (an earlier round's grant: its cube is fixed, its FC is not)."""
    arcs_of = d.arcs_of_member
    m.held_placement = pyo.Constraint(m.HELD, rule=lambda m, h: sum(m.place[a] for a in arcs_of[h]) == float(d.held_cube[h - d.n]))


def declare_min_fill(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""min_fill[q]: grant[q] >= min_cube[q] filled[q];  max_fill[q]: grant[q] <= max_cube[q] filled[q]."""
    m.min_fill = pyo.Constraint(m.MIN_REQUESTS, rule=lambda m, q: m.grant[q] - float(d.min_cube[q]) * m.filled[q] >= 0)
    m.max_fill = pyo.Constraint(m.MIN_REQUESTS, rule=lambda m, q: m.grant[q] - float(d.max_cube[q]) * m.filled[q] <= 0)


def declare_revenue(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""Stage 1: max \sum_q fee[q] grant[q]."""
    m.revenue = pyo.Objective(expr=sum(float(d.fee[q]) * m.grant[q] for q in m.REQUESTS), sense=pyo.maximize)


def declare_time_priority(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""Stage 2 objective: max \sum_q time_weight[q] grant[q] (over the optimal set of stage 1)."""
    m.revenue.deactivate()
    m.time_priority = pyo.Objective(expr=sum(float(d.time_weight[q]) * m.grant[q] for q in m.REQUESTS), sense=pyo.maximize)


def retime_tied_min_cube(d: ClearingData, grant: np.ndarray, options: SolverOptions) -> np.ndarray:
    """Stage 2 for min_cube choices: which min_cube requests are filled (one bool per min_cube request).

    The tie rule orders requests *at the same fee* competing for the same space. A tied level is a
    (class, fee) of stage 1's answer holding a min_cube request, a request that got cube and one left
    short. Within each tied level its cube is redistributed by time priority:
        max sum_q time_weight[q] g[q]  s.t.  sum_{q in level} g[q] = the level's stage-1 cube,
        g[q] in [0, max_cube], and for min_cube requests g[q] = 0 or in [min_cube, max_cube].
    Revenue and every pool's use are unchanged (same fee, same class), so the answer is still optimal.
    Other fill decisions were made by price and stand. (Not one whole-round time-priority MIP with a revenue
    floor: that is a second MIP as large as the first, and a revenue row of ~1e8 makes its floor fragile to
    round-off, while the tied levels this revisits are a handful of requests.) Ties across classes whose FCs
    overlap are not revisited."""
    mins = np.flatnonzero(d.min_cube > EPS)
    filled = grant[mins] > EPS
    if len(mins) == 0:
        return filled
    lv = pd.DataFrame({"cls": d.req_class, "fee": d.fee, "got": grant > EPS, "short": grant < d.max_cube - EPS, "min": d.min_cube > EPS})
    flags = lv.groupby(["cls", "fee"])[["got", "short", "min"]].any()
    tied = flags.index[(flags["got"] & flags["short"] & flags["min"]).to_numpy()]
    if len(tied) == 0:
        return filled
    member = pd.MultiIndex.from_arrays([d.req_class, d.fee]).isin(tied)
    q = np.flatnonzero(member)
    level = pd.MultiIndex.from_arrays([d.req_class[q], d.fee[q]]).map({k: i for i, k in enumerate(tied)}).to_numpy(np.int64)
    total = np.bincount(level, weights=grant[q], minlength=len(tied))
    is_min = d.min_cube[q] > EPS
    b = np.flatnonzero(is_min)
    n, nb, nl = len(q), len(b), len(tied)
    rows = np.concatenate([level, nl + np.arange(nb), nl + np.arange(nb), nl + nb + np.arange(nb), nl + nb + np.arange(nb)])
    cols = np.concatenate([np.arange(n), b, n + np.arange(nb), b, n + np.arange(nb)])
    vals = np.concatenate([np.ones(n), np.ones(nb), -d.min_cube[q][b], np.ones(nb), -d.max_cube[q][b]])
    start, index, value = csr_from_triplets(rows, cols, vals, nl + 2 * nb)
    lp = LinearProgram(
        col_cost=np.concatenate([d.time_weight[q], np.zeros(nb)]),
        col_lower=np.zeros(n + nb),
        col_upper=np.concatenate([d.max_cube[q], np.ones(nb)]),
        row_lower=np.concatenate([total, np.zeros(nb), np.full(nb, -np.inf)]),
        row_upper=np.concatenate([total, np.full(nb, np.inf), np.zeros(nb)]),
        row_start=start, col_index=index, value=value, maximize=True,
        integrality=np.concatenate([np.zeros(n, np.int8), np.full(nb, INTEGER, np.int8)]),
    )
    out = solve_arrays(lp, options, what=f"clearing round {d.round} (time priority among tied min_cube requests)", kind="clearing")
    g = grant.copy()
    g[q] = out.x[:n]
    return g[mins] > EPS


def build_clearing_model(d: ClearingData) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel(name=f"clearing_round_{d.round}")
    declare_sets(m, d)
    declare_variables(m, d)
    declare_pool_capacity(m, d)
    declare_grant_placement(m, d)
    declare_held_placement(m, d)
    declare_min_fill(m, d)
    declare_revenue(m, d)
    return m


def _snap(value: float, lb: float | None, ub: float | None) -> float:
    """The bound a nonbasic value sits at (removes solver noise)."""
    if lb is not None and (ub is None or abs(value - lb) <= abs(value - ub)):
        return lb
    return ub if ub is not None else value


# ---------------------------------------------------------------- the staged solve, once, over two backends


class _PyomoRound:
    """The welfare model of a round as the Pyomo reference (per-request arcs), for `staged_solve`."""

    def __init__(self, d: ClearingData, options: SolverOptions):
        self.d, self.options = d, options
        with stage(f"round {d.round}: build"):
            self.m = build_clearing_model(d)
        self.is_mip = len(self.m.MIN_REQUESTS) > 0

    def solve(self, what: str, *, duals: bool = True) -> SolveOutcome:
        return solve_pyomo(self.m, self.options, what=what, duals=duals, kind="clearing")

    def grants(self) -> np.ndarray:
        return np.array([self.m.grant[q].value or 0.0 for q in range(self.d.n)])

    def fix_fill(self, filled: np.ndarray) -> None:
        for q, on in zip(self.m.MIN_REQUESTS, filled.astype(float)):
            self.m.filled[q].domain = pyo.Reals
            self.m.filled[q].fix(on)

    def restrict_to_optimal_face(self, first: SolveOutcome) -> None:
        """Complementary slackness with the stage-1 dual: variables with a nonzero reduced cost stay at their bound and
        constraints with a nonzero dual stay tight. What remains is exactly the set of stage-1 optima, so stage 2 can
        pick among them without any revenue constraint (and its slack)."""
        for var, rc in first.reduced_costs.items():
            if abs(rc) > FACE_TOL and not var.fixed:
                var.fix(_snap(var.value, var.lb, var.ub))
        for con, dual in first.duals.items():
            if abs(dual) > FACE_TOL and not con.equality:
                body = pyo.value(con.body)
                bound = _snap(body, pyo.value(con.lower) if con.has_lb() else None, pyo.value(con.upper) if con.has_ub() else None)
                con.set_value(con.body == bound)

    def time_priority(self) -> None:
        declare_time_priority(self.m, self.d)

    def placements(self) -> tuple:
        arc_req, arc_carc = self.d.request_arcs
        return arc_req, arc_carc, np.array([self.m.place[a].value or 0.0 for a in range(len(arc_req))])

    def pool_duals(self, priced: SolveOutcome) -> np.ndarray:
        dual = np.zeros(len(self.d.pools))
        for r in self.m.POOLS:
            dual[r] = priced.duals.get(self.m.pool_capacity[r], 0.0)
        return dual


class _ArrayRound:
    """The welfare model of a round aggregated by eligibility class, on a highspy object, for `staged_solve`."""

    def __init__(self, d: ClearingData, options: SolverOptions):
        self.d, self.options = d, options
        with stage(f"round {d.round}: build"):
            self.lp, self.fam = build_clearing_arrays(d)
        self.is_mip = self.lp.is_mip
        if self.is_mip:
            note(f"round {d.round}: MIP with {len(self.lp.row_lower)} rows x {len(self.lp.col_cost)} columns, "
                 f"{int((self.lp.integrality > 0).sum())} binary")
        self._load()

    def _load(self) -> None:
        self.h = new_highs(self.options, is_mip=self.lp.is_mip, kind="clearing")
        pass_model(self.h, self.lp)

    def solve(self, what: str, *, duals: bool = True) -> SolveOutcome:
        self.out = check_outcome(run_highs(self.h, is_mip=self.lp.is_mip), self.options, what)
        return self.out

    def grants(self) -> np.ndarray:
        return self.out.x[: self.d.n]

    def fix_fill(self, filled: np.ndarray) -> None:
        """Keep which min_cube requests are filled, by bounds (the same LP as fixing the binaries, without them)."""
        self.lp, self.fam = build_clearing_arrays(self.d, filled=filled)
        self._load()

    def restrict_to_optimal_face(self, first: SolveOutcome) -> None:
        """As `_PyomoRound.restrict_to_optimal_face`, on the loaded Highs object."""
        lp, x, rc = self.lp, first.x, first.col_duals
        cols = np.flatnonzero(np.abs(rc) > FACE_TOL)
        if len(cols):
            at_lower = np.abs(x[cols] - lp.col_lower[cols]) <= np.abs(x[cols] - lp.col_upper[cols])
            v = np.where(at_lower, lp.col_lower[cols], lp.col_upper[cols])
            self.h.changeColsBounds(len(cols), cols.astype(np.int32), v, v)
        rows = np.flatnonzero(np.abs(first.row_duals) > FACE_TOL)
        rows = rows[lp.row_lower[rows] != lp.row_upper[rows]]
        if len(rows):
            activity = np.asarray(self.h.getSolution().row_value)[rows]
            lo, up = lp.row_lower[rows], lp.row_upper[rows]
            at_lower = np.isfinite(lo) & (~np.isfinite(up) | (np.abs(activity - lo) <= np.abs(activity - up)))
            v = np.where(at_lower, lo, up)
            self.h.changeRowsBounds(len(rows), rows.astype(np.int32), v, v)

    def time_priority(self) -> None:
        n_cols = len(self.lp.col_cost)
        self.h.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), np.concatenate([self.d.time_weight, np.zeros(n_cols - self.d.n)]))

    def placements(self) -> tuple:
        d = self.d
        class_place = self.out.x[d.n : d.n + len(d.carc_class)]
        return split_by_class(d.member_class, np.concatenate([self.grants(), d.held_cube]), d.carc_class, class_place, d.n_classes)

    def pool_duals(self, priced: SolveOutcome) -> np.ndarray:
        dual = np.zeros(len(self.d.pools))
        if priced.row_duals is not None:
            dual[np.unique(self.d.centry_pool)] = priced.row_duals[self.fam["pool_capacity"]]
        return dual


def staged_solve(model: _PyomoRound | _ArrayRound, d: ClearingData, options: SolverOptions) -> Solution:
    """The welfare rule, lexicographically (models/clearing.md, "Stages"): with min_cube requests, the revenue MIP
    decides which are filled (`retime_tied_min_cube` re-decides ties by time) and those choices are fixed; then
    stage 1 maximises revenue (its duals price the pools) and stage 2 time priority on stage 1's optimal face. The
    same steps whichever backend holds the model."""
    what = f"clearing round {d.round}"
    with stage(f"round {d.round}: solve"):
        if model.is_mip:
            model.solve(what + " (revenue, MIP)")
            model.fix_fill(retime_tied_min_cube(d, model.grants(), options))
        priced = model.solve(what + " (revenue)")
        if priced.status == OPTIMAL:  # allow_nonoptimal and stopped: no optimal face to restrict to
            model.restrict_to_optimal_face(priced)
            model.time_priority()
            model.solve(what + " (time priority)", duals=False)
        return Solution(model.grants(), model.placements(), np.abs(model.pool_duals(priced)), "mip" if model.is_mip else "lp")


def solve_welfare(d: ClearingData, options: SolverOptions, backend: str) -> Solution:
    """The welfare rule on the Pyomo reference (`backend` "pyomo") or the class-aggregated arrays (highspy)."""
    return staged_solve(_PyomoRound(d, options) if backend == "pyomo" else _ArrayRound(d, options), d, options)


# ---------------------------------------------------------------- the fast path: placement by eligibility class


def build_clearing_arrays(d: ClearingData, filled: np.ndarray | None = None) -> tuple[LinearProgram, dict[str, slice]]:
    r"""The clearing model with placement aggregated by eligibility class (models/clearing.md, "Fast path").

    Columns: grant (REQUESTS), place_class (CLASS_ARCS), filled (MIN_REQUESTS, binary).
    Rows: pool_capacity[f,k,t]: \sum_{class arcs at f touching t} place_class <= pool;
          class_balance[class]: \sum_f place_class - \sum_{q in class} grant = 0;
          min_fill[q]: grant - min_cube filled >= 0;  max_fill[q]: grant - max_cube filled <= 0.
    (HiGHS's semi-continuous columns would save the binaries, but were seen to return a grant of 9e-5
    below its min_cube and then declare a solve error; binaries are what the reference uses.)

    With `filled` given (one bool per min_cube request, in order), the integer choices are fixed: no
    binaries or fill rows, and the grant's bounds become [min_cube, max_cube] or [0, 0] — the same LP
    as fixing the binaries, with 2 rows fewer per min_cube request.
    """
    n, nca = d.n, len(d.carc_class)
    all_mins = np.flatnonzero(d.min_cube > EPS)
    mins = all_mins if filled is None else all_mins[:0]
    nb = len(mins)
    pools_used = np.unique(d.centry_pool)
    prow_pos = np.full(len(d.pools), -1)
    prow_pos[pools_used] = np.arange(len(pools_used))
    c_place, c_fill = n, n + nca
    r_bal = len(pools_used)
    r_min = r_bal + d.n_classes
    r_max = r_min + nb
    n_rows = r_max + nb
    b = np.arange(nb)
    rows = [prow_pos[d.centry_pool], r_bal + d.carc_class, r_bal + d.req_class, r_min + b, r_min + b, r_max + b, r_max + b]
    cols = [c_place + d.centry_carc, c_place + np.arange(nca), np.arange(n), mins, c_fill + b, mins, c_fill + b]
    vals = [np.ones(len(d.centry_carc)), np.ones(nca), -np.ones(n), np.ones(nb), -d.min_cube[mins], np.ones(nb), -d.max_cube[mins]]
    start, index, value = csr_from_triplets(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n_rows)
    grant_lower, grant_upper = np.zeros(n), d.max_cube.copy()
    if filled is not None:
        grant_lower[all_mins[filled]] = d.min_cube[all_mins[filled]]
        grant_upper[all_mins[~filled]] = 0.0
    lp = LinearProgram(
        col_cost=np.concatenate([d.fee, np.zeros(nca + nb)]),
        col_lower=np.concatenate([grant_lower, np.zeros(nca + nb)]),
        col_upper=np.concatenate([grant_upper, np.full(nca, np.inf), np.ones(nb)]),
        row_lower=np.concatenate([np.full(r_bal, -np.inf), d.held_per_class, np.zeros(nb), np.full(nb, -np.inf)]),
        row_upper=np.concatenate([d.pools["pool_cube"].to_numpy()[pools_used], d.held_per_class, np.full(nb, np.inf), np.zeros(nb)]),
        row_start=start,
        col_index=index,
        value=value,
        maximize=True,
        integrality=np.concatenate([np.zeros(n + nca, np.int8), np.full(nb, INTEGER, np.int8)]) if nb else None,
    )
    fam = {"pool_capacity": slice(0, r_bal), "class_balance": slice(r_bal, r_min), "min_fill": slice(r_min, r_max), "max_fill": slice(r_max, n_rows)}
    return lp, fam


def _run(h: highspy.Highs, options: SolverOptions, what: str, is_mip: bool) -> SolveOutcome:
    return check_outcome(run_highs(h, is_mip=is_mip), options, what)


def price_pools(d: ClearingData, grant: np.ndarray, options: SolverOptions) -> np.ndarray:
    """Pool prices beside a priority answer: the duals of the revenue LP with the rule's fill decisions fixed
    (a min_cube request granted keeps [min_cube, max_cube], one rejected gets 0). On divisible single-month
    rounds the rule's grants are an optimum of this LP, so these duals are exact prices supporting them."""
    if d.n == 0:
        return np.zeros(len(d.pools))
    filled = grant[d.min_cube > EPS] > 0
    lp, fam = build_clearing_arrays(d, filled=filled)
    h = new_highs(options, is_mip=False, kind="clearing")
    pass_model(h, lp)
    priced = _run(h, options, f"clearing round {d.round} (pool prices)", False)
    dual = np.zeros(len(d.pools))
    if priced.row_duals is not None:
        dual[np.unique(d.centry_pool)] = priced.row_duals[fam["pool_capacity"]]
    return np.abs(dual)
