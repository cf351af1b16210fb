"""Reservation clearing for one round — formulation in models/clearing.md.

Layers: `prepare_clearing` (requests + remaining pool -> arrays, audit of requests that cannot
take part) -> one of three exact methods -> `extract_round` (tidy DataFrames):

- "sort": when every request can draw from exactly one pool (one FC, one month) and all are
  divisible, the LP is a set of independent fractional knapsacks: sort by fee, then time, and
  fill. This is the physical limit of clearing and is proven equal to the LP by the tests.
- "lp" / "mip": the general model (FC placement, multi-month requests, min_cube binaries), built
  as a Pyomo model (reference) or as arrays for highspy (fast path), solved lexicographically:
  stage 1 maximises sum(fee x grant); stage 2 keeps that revenue and maximises time priority, so
  ties at the marginal fee go to earlier submitted_at, then smaller request_id.
Pool prices are the stage-1 duals of pool_capacity; from a MIP they come from the LP re-solved
with the integer choices fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import highspy
import pyomo.environ as pyo

from .errors import InputError, Problem
from .instance import Instance
from .progress import stage
from .schemas import Settings, SolverOptions
from .solver import (
    LinearProgram,
    SolveOutcome,
    check_outcome,
    csr_from_triplets,
    new_highs,
    pass_model,
    run_highs,
    solve_pyomo,
)

POOL_INDEX = ["fc_id", "storage_type", "month"]

# Audit vocabulary: every request ends its round with one status and, unless fully granted, a reason.
GRANTED, PARTIAL, REJECTED = "granted", "partially_granted", "rejected"
OUTBID, BELOW_RESERVE, MIN_CUBE, OVER_CAP, NO_POOL, EXHAUSTED = (
    "outbid",
    "below_reserve",
    "min_cube_did_not_fit",
    "over_request_cap",
    "no_eligible_pool",  # no FC in the seller's regions has pool of that type in all its months
    "pool_exhausted",  # there was such pool, but earlier rounds used it up
)
EPS = 1e-6  # cube: grants below this are zero


def initial_pool(instance: Instance) -> pd.Series:
    """Pool cube per (fc_id, storage_type, month) at the start of the period."""
    return instance.fcs.set_index(POOL_INDEX)["pool_cube"].sort_index()


def request_caps(requests: pd.DataFrame, limits: pd.Series, settings: Settings) -> np.ndarray:
    """max(request_cap_share x baseline limit, request_cap_cube), using the smallest baseline limit
    of the months the request names (the cap must hold in every month the grant holds)."""
    if len(requests) == 0:
        return np.zeros(0)
    ex = requests[["seller_id", "storage_type", "months"]].reset_index(drop=True).explode("months")
    keys = pd.MultiIndex.from_arrays([ex["seller_id"], ex["storage_type"], ex["months"]])
    lim = limits.reindex(keys).fillna(0.0).to_numpy()
    base = pd.Series(lim, index=ex.index).groupby(level=0).min().reindex(range(len(requests))).to_numpy()
    return np.maximum(settings.request_cap_share * base, settings.request_cap_cube)


@dataclass
class ClearingData:
    """One round's candidates (priority order) and the arrays of its model."""

    round: int
    audit: pd.DataFrame  # every request of the round, with pre-filter reasons (in input order)
    req: pd.DataFrame  # REQUESTS that take part, in priority order (fee desc, time asc)
    fee: np.ndarray
    max_cube: np.ndarray
    min_cube: np.ndarray
    time_weight: np.ndarray  # stage-2 weight: 1 for the earliest request, falling with time rank
    arc_req: np.ndarray  # ARCS (request, FC) -> request position
    arc_fc: np.ndarray  # ARCS -> fc_id
    entry_pool: np.ndarray  # pool_capacity entries: pool row ...
    entry_arc: np.ndarray  # ... x arc (one per month the request names)
    pools: pd.DataFrame  # POOLS: fc_id, storage_type, month, pool_before (every pool row)
    settings: Settings

    @property
    def n(self) -> int:
        return len(self.req)

    @property
    def single_pool(self) -> bool:
        """True when each request can draw from exactly one pool row: the LP splits into knapsacks."""
        return bool(self.n == 0 or (np.bincount(self.arc_req, minlength=self.n).max() == 1 and len(self.entry_arc) == len(self.arc_req)))

    @property
    def divisible(self) -> bool:
        return bool(np.all(self.min_cube <= EPS))


def prepare_clearing(instance: Instance, round_: int, pool: pd.Series, limits: pd.Series) -> ClearingData:
    settings = instance.settings
    requests = instance.requests[instance.requests["round"] == round_].reset_index(drop=True)
    audit = requests.copy()
    audit["reason"] = ""
    caps = request_caps(requests, limits, settings)
    audit["request_cap_cube"] = caps
    over = requests["max_cube"].to_numpy() > caps + EPS
    audit.loc[over, "reason"] = OVER_CAP
    if settings.reserve_price is not None:
        below = (requests["max_fee_per_cube"].to_numpy() < settings.reserve_price) & (audit["reason"] == "").to_numpy()
        audit.loc[below, "reason"] = BELOW_RESERVE

    pools = pool.rename("pool_before").reset_index()
    live = requests[audit["reason"] == ""].copy()
    live["q0"] = live.index
    # Arcs: a request may use FC f if f is in one of the seller's regions and holds pool of its
    # storage type in every month it names (the same cube sits at the same FC in every month).
    ex = live[["q0", "seller_id", "storage_type", "months"]].explode("months").rename(columns={"months": "month"})
    regions = instance.sellers[["seller_id", "regions"]].explode("regions").rename(columns={"regions": "region"})
    fc_region = instance.fcs[["fc_id", "region"]].drop_duplicates()
    prow = pools.assign(prow=np.arange(len(pools))).merge(fc_region, on="fc_id")
    j = ex.merge(regions, on="seller_id").merge(
        prow[["fc_id", "region", "storage_type", "month", "prow", "pool_before"]], on=["region", "storage_type", "month"]
    )
    j = j.drop_duplicates(["q0", "fc_id", "month"])
    n_months = live.set_index("q0")["months"].map(len)

    def covering(j: pd.DataFrame) -> pd.DataFrame:
        """Keep (request, FC) pairs where the FC has a pool row in every month the request names."""
        cover = j.groupby(["q0", "fc_id"]).size()
        ok = cover[cover.to_numpy() == n_months.reindex(cover.index.get_level_values(0)).to_numpy()].index
        return j.set_index(["q0", "fc_id"]).loc[ok].reset_index() if len(ok) else j.iloc[0:0]

    structural = covering(j)
    j = covering(j[j["pool_before"] > EPS])
    no_pool = ~live["q0"].isin(structural["q0"])
    exhausted = ~no_pool & ~live["q0"].isin(j["q0"])
    audit.loc[live.loc[no_pool, "q0"], "reason"] = NO_POOL
    audit.loc[live.loc[exhausted, "q0"], "reason"] = EXHAUSTED
    live = live[~(no_pool | exhausted)]

    # Priority order: fee desc, then submitted_at, then request_id.
    live = live.sort_values(["max_fee_per_cube", "submitted_at", "request_id"], ascending=[False, True, True], kind="stable")
    live = live.reset_index(drop=True)
    pos = pd.Series(np.arange(len(live)), index=live["q0"].to_numpy())
    time_rank = live.sort_values(["submitted_at", "request_id"], kind="stable").index.to_numpy()
    time_weight = np.empty(len(live))
    time_weight[time_rank] = 1.0 - np.arange(len(live)) / max(len(live), 1)

    j["q"] = pos.reindex(j["q0"]).to_numpy()
    arcs = j[["q", "fc_id"]].drop_duplicates().sort_values(["q", "fc_id"], kind="stable").reset_index(drop=True)
    arcs["arc"] = np.arange(len(arcs))
    j = j.merge(arcs, on=["q", "fc_id"]).sort_values(["prow", "arc"], kind="stable")
    return ClearingData(
        round=round_,
        audit=audit,
        req=live,
        fee=live["max_fee_per_cube"].to_numpy(float),
        max_cube=live["max_cube"].to_numpy(float),
        min_cube=live["min_cube"].to_numpy(float),
        time_weight=time_weight,
        arc_req=arcs["q"].to_numpy(np.int64),
        arc_fc=arcs["fc_id"].to_numpy(object),
        entry_pool=j["prow"].to_numpy(np.int64),
        entry_arc=j["arc"].to_numpy(np.int64),
        pools=pools,
        settings=settings,
    )


# ---------------------------------------------------------------- exact sort (independent single pools)


@dataclass
class Solution:
    grant: np.ndarray  # per request (priority order)
    place: np.ndarray  # per arc
    pool_dual: np.ndarray  # per pool row
    objective: float
    method: str
    backend: str


def clear_by_sort(d: ClearingData) -> Solution:
    """Fractional knapsack per pool row: fill in priority order. Exact for divisible single-pool rounds.

    The pool's price is the LP dual: the fee of the first request (in priority order) left short
    when the pool runs out, else 0 — the lowest fee at which one more cube would be wanted.
    """
    arc_pool = np.empty(len(d.arc_req), dtype=np.int64)
    arc_pool[d.entry_arc] = d.entry_pool
    q_pool = np.empty(d.n, dtype=np.int64)
    q_pool[d.arc_req] = arc_pool
    # Requests are already in priority order; a stable sort by pool keeps that order within a pool.
    order = np.argsort(q_pool, kind="stable")
    p = q_pool[order]
    u = d.max_cube[order]
    cum = np.cumsum(u)
    first = np.r_[True, p[1:] != p[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(p)), 0))
    before = cum - u - (cum[group_start] - u[group_start])  # cube ahead of me in my pool
    cap = d.pools["pool_before"].to_numpy()[p]
    g = np.clip(cap - before, 0.0, u)
    grant = np.empty(d.n)
    grant[order] = g
    dual = np.zeros(len(d.pools))
    short = g < u - EPS
    if short.any():
        # first short request per pool, in priority order
        idx = np.flatnonzero(short)
        pools_short, first_idx = np.unique(p[idx], return_index=True)
        dual[pools_short] = d.fee[order][idx[first_idx]]
    place = grant[d.arc_req]
    return Solution(grant, place, dual, float(d.fee @ grant), "sort", "numpy")


def clear_pro_rata(d: ClearingData) -> Solution:
    """tie_rule = pro_rata (the pipeline-capacity auction rule), for single-pool rounds: fee levels are
    served from the top; at the level where the pool runs out, the rest is shared pro rata to max_cube;
    a request whose share falls below its min_cube is dropped and the rest shared again."""
    if not d.single_pool:
        raise InputError(Problem("tie_rule 'pro_rata' needs every request to draw from exactly one pool (one FC, one month)", "settings", None, "tie_rule"))
    arc_pool = np.empty(len(d.arc_req), dtype=np.int64)
    arc_pool[d.entry_arc] = d.entry_pool
    q_pool = np.empty(d.n, dtype=np.int64)
    q_pool[d.arc_req] = arc_pool
    left = d.pools["pool_before"].to_numpy().astype(float).copy()
    grant = np.zeros(d.n)
    dual = np.zeros(len(d.pools))
    for pr in np.unique(q_pool):
        qs = np.flatnonzero(q_pool == pr)  # priority order
        for fee in np.unique(d.fee[qs])[::-1]:
            level = qs[d.fee[qs] == fee]
            if left[pr] <= EPS:
                break
            if d.max_cube[level].sum() <= left[pr] + EPS:
                grant[level] = d.max_cube[level]
                left[pr] -= d.max_cube[level].sum()
                continue
            alive = level.copy()
            while len(alive):
                share = left[pr] * d.max_cube[alive] / d.max_cube[alive].sum()
                fits = share >= d.min_cube[alive] - EPS
                if fits.all():
                    grant[alive] = share
                    left[pr] = 0.0
                    dual[pr] = fee
                    break
                alive = alive[fits]
    return Solution(grant, grant[d.arc_req], dual, float(d.fee @ grant), "pro_rata", "numpy")


# ---------------------------------------------------------------- Pyomo reference model


def declare_sets(m: pyo.ConcreteModel, d: ClearingData) -> None:
    m.REQUESTS = pyo.RangeSet(0, d.n - 1)
    m.ARCS = pyo.RangeSet(0, len(d.arc_req) - 1)
    m.POOLS = pyo.Set(initialize=np.unique(d.entry_pool).tolist(), ordered=True)
    m.MIN_REQUESTS = pyo.Set(initialize=np.flatnonzero(d.min_cube > EPS).tolist(), ordered=True)


def declare_variables(m: pyo.ConcreteModel, d: ClearingData) -> None:
    """grant[q] in [0, max_cube]; place[a] >= 0 (cube of a request at an FC); filled[q] binary (min_cube > 0 only)."""
    m.grant = pyo.Var(m.REQUESTS, bounds=lambda m, q: (0.0, float(d.max_cube[q])))
    m.place = pyo.Var(m.ARCS, domain=pyo.NonNegativeReals)
    m.filled = pyo.Var(m.MIN_REQUESTS, domain=pyo.Binary)


def declare_pool_capacity(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""pool_capacity[f,k,t]: \sum_{q: k_q = k, t \in M_q} place[q,f] <= pool[f,k,t].  Dual: price of pool space."""
    arcs_of = pd.Series(d.entry_arc).groupby(d.entry_pool).apply(list).to_dict()
    cap = d.pools["pool_before"].to_numpy()
    m.pool_capacity = pyo.Constraint(m.POOLS, rule=lambda m, r: sum(m.place[a] for a in arcs_of[r]) <= float(cap[r]))


def declare_grant_placement(m: pyo.ConcreteModel, d: ClearingData) -> None:
    r"""grant_placement[q]: \sum_f place[q,f] = grant[q]."""
    arcs_of = pd.Series(np.arange(len(d.arc_req))).groupby(d.arc_req).apply(list).to_dict()
    m.grant_placement = pyo.Constraint(m.REQUESTS, rule=lambda m, q: sum(m.place[a] for a in arcs_of[q]) - m.grant[q] == 0)


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


def declare_revenue_floor(m: pyo.ConcreteModel, revenue: float) -> None:
    r"""MIP stage 2: revenue_floor: \sum_q fee[q] grant[q] >= revenue* - delta (delta: the MIP's own tolerance)."""
    m.revenue_floor = pyo.Constraint(expr=m.revenue.expr >= revenue - mip_slack(revenue))


def mip_slack(revenue: float) -> float:
    """How much revenue the MIP's time-priority stage may give up: the MIP tolerances, nothing more.
    Only the choice of binaries is kept from that stage; the cube is then re-optimised exactly."""
    return 1e-9 * abs(revenue) + 1e-6


def build_clearing_model(d: ClearingData) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel(name=f"clearing_round_{d.round}")
    declare_sets(m, d)
    declare_variables(m, d)
    declare_pool_capacity(m, d)
    declare_grant_placement(m, d)
    declare_min_fill(m, d)
    declare_revenue(m, d)
    return m


FACE_TOL = 1e-7  # a reduced cost or dual above this is "nonzero": fees are cents apart, far above it


def _snap(value: float, lb: float | None, ub: float | None) -> float:
    """The bound a nonbasic value sits at (removes solver noise)."""
    if lb is not None and (ub is None or abs(value - lb) <= abs(value - ub)):
        return lb
    return ub if ub is not None else value


def _pyomo_restrict_to_optimal_face(m: pyo.ConcreteModel, outcome: SolveOutcome) -> None:
    """Complementary slackness with the stage-1 dual: variables with a nonzero reduced cost stay at
    their bound and constraints with a nonzero dual stay tight. What remains is exactly the set of
    stage-1 optima, so stage 2 can pick among them without any revenue constraint (and its slack)."""
    for var, rc in outcome.reduced_costs.items():
        if abs(rc) > FACE_TOL and not var.fixed:
            var.fix(_snap(var.value, var.lb, var.ub))
    for con, dual in outcome.duals.items():
        if abs(dual) > FACE_TOL and not con.equality:
            body = pyo.value(con.body)
            bound = _snap(body, pyo.value(con.lower) if con.has_lb() else None, pyo.value(con.upper) if con.has_ub() else None)
            con.set_value(con.body == bound)


def _solve_pyomo(d: ClearingData, options: SolverOptions) -> Solution:
    m = build_clearing_model(d)
    what = f"clearing round {d.round}"
    is_mip = len(m.MIN_REQUESTS) > 0
    if is_mip:
        first = solve_pyomo(m, options, what=what + " (revenue, MIP)")
        declare_revenue_floor(m, first.objective)
        declare_time_priority(m, d)
        solve_pyomo(m, options, what=what + " (time priority, MIP)")
        # Keep the integer choices; re-optimise the cube as an LP (this also gives the prices).
        on = {q: 1.0 if (m.grant[q].value or 0.0) > EPS else 0.0 for q in m.MIN_REQUESTS}
        m.del_component(m.time_priority)
        m.revenue_floor.deactivate()
        m.revenue.activate()
        for q in m.MIN_REQUESTS:
            m.filled[q].domain = pyo.Reals
            m.filled[q].fix(on[q])
    priced = solve_pyomo(m, options, what=what + " (revenue)")
    _pyomo_restrict_to_optimal_face(m, priced)
    declare_time_priority(m, d)
    solve_pyomo(m, options, what=what + " (time priority)", duals=False)
    grant = np.array([m.grant[q].value or 0.0 for q in range(d.n)])
    place = np.array([m.place[a].value or 0.0 for a in range(len(d.arc_req))])
    dual = np.zeros(len(d.pools))
    for r in m.POOLS:
        dual[r] = priced.duals.get(m.pool_capacity[r], 0.0)
    return Solution(grant, place, np.abs(dual), float(d.fee @ grant), "mip" if is_mip else "lp", "pyomo")


# ---------------------------------------------------------------- the same model as arrays (highspy)


def build_clearing_arrays(d: ClearingData) -> tuple[LinearProgram, dict[str, slice]]:
    """Columns: grant (REQUESTS), place (ARCS), filled (MIN_REQUESTS). Rows: pool_capacity, grant_placement, min_fill, max_fill."""
    n, na = d.n, len(d.arc_req)
    mins = np.flatnonzero(d.min_cube > EPS)
    nb = len(mins)
    pools_used = np.unique(d.entry_pool)
    prow_pos = np.full(len(d.pools), -1)
    prow_pos[pools_used] = np.arange(len(pools_used))
    c_g, c_p, c_b = 0, n, n + na
    r_pool, r_place = 0, len(pools_used)
    r_min = r_place + n
    r_max = r_min + nb
    n_rows = r_max + nb
    rows = [prow_pos[d.entry_pool], d.arc_req + r_place, np.arange(n) + r_place, r_min + np.arange(nb), r_min + np.arange(nb), r_max + np.arange(nb), r_max + np.arange(nb)]
    cols = [c_p + d.entry_arc, c_p + np.arange(na), c_g + np.arange(n), c_g + mins, c_b + np.arange(nb), c_g + mins, c_b + np.arange(nb)]
    vals = [np.ones(len(d.entry_arc)), np.ones(na), -np.ones(n), np.ones(nb), -d.min_cube[mins], np.ones(nb), -d.max_cube[mins]]
    start, index, value = csr_from_triplets(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n_rows)
    inf = np.inf
    lp = LinearProgram(
        col_cost=np.concatenate([d.fee, np.zeros(na + nb)]),
        col_lower=np.zeros(n + na + nb),
        col_upper=np.concatenate([d.max_cube, np.full(na, inf), np.ones(nb)]),
        row_lower=np.concatenate([np.full(len(pools_used), -inf), np.zeros(n), np.zeros(nb), np.full(nb, -inf)]),
        row_upper=np.concatenate([d.pools["pool_before"].to_numpy()[pools_used], np.zeros(n), np.full(nb, inf), np.zeros(nb)]),
        row_start=start,
        col_index=index,
        value=value,
        maximize=True,
        integrality=np.concatenate([np.zeros(n + na, dtype=np.int8), np.ones(nb, dtype=np.int8)]) if nb else None,
    )
    fam = {"pool_capacity": slice(r_pool, r_place), "grant_placement": slice(r_place, r_min), "min_fill": slice(r_min, r_max), "max_fill": slice(r_max, n_rows)}
    return lp, fam


def _run(h: highspy.Highs, options: SolverOptions, what: str, is_mip: bool) -> SolveOutcome:
    return check_outcome(run_highs(h, is_mip=is_mip), options, what)


def _highs_restrict_to_optimal_face(h: highspy.Highs, lp: LinearProgram, first: SolveOutcome) -> None:
    """As `_pyomo_restrict_to_optimal_face`, on a loaded Highs object."""
    x, rc = first.x, first.col_duals
    cols = np.flatnonzero(np.abs(rc) > FACE_TOL)
    if len(cols):
        at_lower = np.abs(x[cols] - lp.col_lower[cols]) <= np.abs(x[cols] - lp.col_upper[cols])
        v = np.where(at_lower, lp.col_lower[cols], lp.col_upper[cols])
        h.changeColsBounds(len(cols), cols.astype(np.int32), v, v)
    rows = np.flatnonzero(np.abs(first.row_duals) > FACE_TOL)
    rows = rows[lp.row_lower[rows] != lp.row_upper[rows]]
    if len(rows):
        activity = np.asarray(h.getSolution().row_value)[rows]
        lo, up = lp.row_lower[rows], lp.row_upper[rows]
        at_lower = np.isfinite(lo) & (~np.isfinite(up) | (np.abs(activity - lo) <= np.abs(activity - up)))
        v = np.where(at_lower, lo, up)
        h.changeRowsBounds(len(rows), rows.astype(np.int32), v, v)


def _lexicographic_lp(lp: LinearProgram, d: ClearingData, options: SolverOptions, what: str) -> tuple[np.ndarray, SolveOutcome]:
    """Stage 1 (revenue) then stage 2 (time priority on the optimal face); returns x and the stage-1 outcome."""
    h = new_highs(options, is_mip=False)
    pass_model(h, lp)
    first = _run(h, options, what + " (revenue)", False)
    _highs_restrict_to_optimal_face(h, lp, first)
    n_cols = len(lp.col_cost)
    h.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), np.concatenate([d.time_weight, np.zeros(n_cols - d.n)]))
    second = _run(h, options, what + " (time priority)", False)
    return second.x, first


def _solve_arrays(d: ClearingData, options: SolverOptions) -> Solution:
    """The same procedure as the Pyomo path, on highspy arrays."""
    lp, fam = build_clearing_arrays(d)
    what = f"clearing round {d.round}"
    is_mip = lp.is_mip
    if is_mip:
        h = new_highs(options, is_mip=True)
        pass_model(h, lp)
        first = _run(h, options, what + " (revenue, MIP)", True)
        n_cols = len(lp.col_cost)
        h.addRow(first.objective - mip_slack(first.objective), highspy.kHighsInf, d.n, np.arange(d.n, dtype=np.int32), d.fee.astype(np.float64))
        h.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), np.concatenate([d.time_weight, np.zeros(n_cols - d.n)]))
        second = _run(h, options, what + " (time priority, MIP)", True)
        nb = n_cols - d.n - len(d.arc_req)
        on = (second.x[: d.n][d.min_cube > EPS] > EPS).astype(float)
        lp = LinearProgram(**{**lp.__dict__, "integrality": None})
        lp.col_lower = np.concatenate([lp.col_lower[: n_cols - nb], on])
        lp.col_upper = np.concatenate([lp.col_upper[: n_cols - nb], on])
    x, priced = _lexicographic_lp(lp, d, options, what)
    grant, place = x[: d.n], x[d.n : d.n + len(d.arc_req)]
    dual = np.zeros(len(d.pools))
    if priced.row_duals is not None:
        dual[np.unique(d.entry_pool)] = priced.row_duals[fam["pool_capacity"]]
    return Solution(grant, place, np.abs(dual), float(d.fee @ grant), "mip" if is_mip else "lp", "highspy")


# ---------------------------------------------------------------- results


@dataclass
class RoundResult:
    """grants: (round, request_id); placements: (round, request_id, fc_id); pools: (round, fc_id, storage_type, month);
    prices: (round, storage_type): clearing price = lowest granted fee of that type; pool dual beside it."""

    round: int
    grants: pd.DataFrame
    placements: pd.DataFrame
    pools: pd.DataFrame
    prices: pd.DataFrame
    pool_after: pd.Series = field(repr=False)


def _clean(a: np.ndarray) -> np.ndarray:
    return np.round(a, 6) + 0.0


def extract_round(d: ClearingData, sol: Solution) -> RoundResult:
    grant = _clean(np.where(sol.grant > EPS, sol.grant, 0.0))
    place = _clean(np.where(sol.place > EPS, sol.place, 0.0))
    audit = d.audit.copy()
    audit["granted_cube"] = 0.0
    q0 = d.req["q0"].to_numpy()
    audit.loc[q0, "granted_cube"] = grant
    g = audit["granted_cube"].to_numpy()
    mx = audit["max_cube"].to_numpy()
    status = np.where(g >= mx - EPS, GRANTED, np.where(g > 0, PARTIAL, REJECTED))
    audit["status"] = status
    # Clearing price per storage type: types are separate markets (capacity never moves between them).
    types = sorted(d.pools["storage_type"].unique())
    type_price = audit[g > 0].groupby("storage_type")["max_fee_per_cube"].min().reindex(types)
    clearing_price = type_price.reindex(audit["storage_type"]).to_numpy()

    # Reasons for requests that took part but did not get all they asked.
    pool_after = d.pools["pool_before"].to_numpy() - np.bincount(d.entry_pool, weights=place[d.entry_arc], minlength=len(d.pools))
    pool_after = np.maximum(_clean(pool_after), 0.0)
    reason = audit["reason"].to_numpy(object).copy()
    took_part = np.zeros(len(audit), dtype=bool)
    took_part[q0] = True
    # Leftover pool a request could still reach: the smallest, over its months, of what is left at its FCs.
    room = np.zeros(d.n)
    if d.n:
        per_entry = pd.DataFrame({"arc": d.entry_arc, "left": pool_after[d.entry_pool]})
        arc_room = per_entry.groupby("arc")["left"].min().reindex(range(len(d.arc_req))).fillna(0).to_numpy()
        room = np.bincount(d.arc_req, weights=arc_room, minlength=d.n)
    room_all = np.zeros(len(audit))
    room_all[q0] = room
    mincube = audit["min_cube"].to_numpy()
    fee = audit["max_fee_per_cube"].to_numpy()
    short = took_part & (status != GRANTED)
    with np.errstate(invalid="ignore"):
        above_price = fee > clearing_price  # False where the type granted nothing (NaN)
    min_blocked = short & (status == REJECTED) & (mincube > EPS) & ((room_all > EPS) | above_price)
    reason[short] = OUTBID
    reason[min_blocked] = MIN_CUBE
    reason[status == GRANTED] = ""
    audit["reason"] = reason
    audit["paradoxically_rejected"] = took_part & (status == REJECTED) & above_price

    audit["round"] = d.round
    cols = ["round", "request_id", "seller_id", "storage_type", "months", "max_fee_per_cube", "max_cube", "min_cube",
            "submitted_at", "request_cap_cube", "granted_cube", "status", "reason", "paradoxically_rejected"]
    grants = audit[cols].set_index(["round", "request_id"]).sort_index()

    keep = place > 0
    placements = pd.DataFrame(
        {"round": d.round, "request_id": d.req["request_id"].to_numpy()[d.arc_req[keep]], "fc_id": d.arc_fc[keep], "cube": place[keep]}
    ).set_index(["round", "request_id", "fc_id"]).sort_index()

    pools = d.pools.copy()
    pools["granted_cube"] = _clean(pools["pool_before"].to_numpy() - pool_after)
    pools["pool_after"] = pool_after
    pools["dual_price"] = _clean(sol.pool_dual)
    pools.insert(0, "round", d.round)
    pools = pools.set_index(["round"] + POOL_INDEX).sort_index()

    dual_max = pools.groupby("storage_type")["dual_price"].max().reindex(types).fillna(0.0)
    by_type = audit.groupby("storage_type")
    price = pd.DataFrame(
        {
            "round": d.round,
            "storage_type": types,
            "requests": by_type.size().reindex(types).fillna(0).astype("int64").to_numpy(),
            "granted_requests": by_type["granted_cube"].apply(lambda x: int((x > 0).sum())).reindex(types).fillna(0).astype("int64").to_numpy(),
            "granted_cube": _clean(by_type["granted_cube"].sum().reindex(types).fillna(0.0).to_numpy()),
            "clearing_price": type_price.to_numpy(),
            "pool_dual_max": dual_max.to_numpy(),
            "objective": _clean((audit["max_fee_per_cube"] * audit["granted_cube"]).groupby(audit["storage_type"]).sum().reindex(types).fillna(0.0).to_numpy()),
            "paradoxically_rejected": by_type["paradoxically_rejected"].sum().reindex(types).fillna(0).astype("int64").to_numpy(),
            "method": sol.method,
        }
    ).set_index(["round", "storage_type"])
    return RoundResult(d.round, grants, placements, pools, price, pd.Series(pool_after, index=pd.MultiIndex.from_frame(d.pools[POOL_INDEX])))


def choose_method(d: ClearingData, options: SolverOptions) -> str:
    if d.settings.tie_rule == "pro_rata":
        return "pro_rata"
    if d.single_pool and d.divisible:
        return "sort"
    if options.backend == "auto":
        return "pyomo" if d.n <= options.auto_pyomo_max_rows else "highspy"
    return options.backend


def solve_clearing(d: ClearingData, options: SolverOptions, method: str | None = None) -> Solution:
    method = method or choose_method(d, options)
    if d.n == 0:
        return Solution(np.zeros(0), np.zeros(0), np.zeros(len(d.pools)), 0.0, "empty", "none")
    if method == "sort":
        return clear_by_sort(d)
    if method == "pro_rata":
        return clear_pro_rata(d)
    return _solve_pyomo(d, options) if method == "pyomo" else _solve_arrays(d, options)


def clear_round(
    instance: Instance,
    round_: int,
    *,
    limits: pd.Series,
    pool: pd.Series | None = None,
    options: SolverOptions | None = None,
    method: str | None = None,
) -> RoundResult:
    """Clear one round against what remains of the pool.

    limits: baseline limit per (seller_id, storage_type, month), for the request cap.
    pool: remaining pool per (fc_id, storage_type, month); default, the period's initial pool.
    method: force "sort", "pyomo" or "highspy" (default: chosen by shape and size).
    """
    if round_ not in instance.period.rounds:
        raise InputError(Problem(f"round {round_} is not in the period (rounds {instance.period.rounds})", "round"))
    options = options or instance.settings.solver
    pool = initial_pool(instance) if pool is None else pool
    with stage(f"round {round_}: prepare"):
        d = prepare_clearing(instance, round_, pool, limits)
    with stage(f"round {round_}: clear {d.n} requests"):
        sol = solve_clearing(d, options, method)
    return extract_round(d, sol)
