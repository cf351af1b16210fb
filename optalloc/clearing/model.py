"""Reservation clearing for one round — formulation in models/clearing.md.

Layers: `prepare_clearing` (requests + earlier rounds' grants -> arrays, audit of requests that cannot
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

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import highspy
import pyomo.environ as pyo

from ..errors import InputError, Problem
from ..instance import Instance
from ..placement import split_by_class
from ..progress import note, stage
from ..schemas import Settings, SolverOptions
from .priority import MILLI, clear_by_priority, place_classes, rank_order, to_cents, to_milli
from ..solver import (
    INTEGER,
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
    """One round's requests that take part, and the sets of its model.

    Requests are kept in input order. Requests with the same storage type, months and seller regions
    form an eligibility *class*: they may use exactly the same FCs. CLASS_ARCS are (class, FC) pairs;
    each touches one pool row per month of the class (`centry_*`). The Pyomo reference model works on
    per-request arcs (`request_arcs`), the fast path on class arcs; both describe the same LP.
    """

    round: int
    audit: pd.DataFrame  # every request of the round, with pre-filter reasons (input order)
    req: pd.DataFrame  # REQUESTS that take part; column q0 = row in audit
    fee: np.ndarray
    max_cube: np.ndarray
    min_cube: np.ndarray
    req_class: np.ndarray  # REQUESTS -> class
    held: pd.DataFrame  # HELD: grants of earlier rounds (request_id, round, granted_cube): fixed cube, placement free
    held_cube: np.ndarray
    held_class: np.ndarray  # HELD -> class
    n_classes: int
    carc_class: np.ndarray  # CLASS_ARCS -> class (sorted)
    carc_fc: np.ndarray  # CLASS_ARCS -> fc_id
    centry_pool: np.ndarray  # (pool row, class arc) incidences: pool row ...
    centry_carc: np.ndarray  # ... and class arc
    pools: pd.DataFrame  # POOLS: fc_id, storage_type, month, pool_cube (the period's pool, every row)
    settings: Settings

    @property
    def n(self) -> int:
        return len(self.req)

    @cached_property
    def time_weight(self) -> np.ndarray:
        """Stage-2 weight: 1 for the earliest (submitted_at, request_id), falling by 1/n per rank."""
        rank = np.empty(self.n)
        order = self.req.reset_index(drop=True).sort_values(["submitted_at", "request_id"], kind="stable").index.to_numpy()
        rank[order] = np.arange(self.n)
        return 1.0 - rank / max(self.n, 1)

    @property
    def member_class(self) -> np.ndarray:
        """Class of every member: this round's requests, then the held grants."""
        return np.concatenate([self.req_class, self.held_class])

    @property
    def held_per_class(self) -> np.ndarray:
        return np.bincount(self.held_class, weights=self.held_cube, minlength=self.n_classes)

    @cached_property
    def request_arcs(self) -> tuple[np.ndarray, np.ndarray]:
        """ARCS of the reference model: (member, class arc) for every class arc of the member's class.
        Members 0..n-1 are this round's requests, n.. the held grants."""
        per_class = np.bincount(self.carc_class, minlength=self.n_classes)
        first = np.concatenate([[0], np.cumsum(per_class)[:-1]])
        cls = self.member_class
        k = per_class[cls]
        arc_req = np.repeat(np.arange(len(cls)), k)
        within = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
        return arc_req, first[cls][arc_req] + within

    @cached_property
    def arcs_of_member(self) -> dict[int, list[int]]:
        """For the reference model: the ARCS of each member (request or held grant)."""
        arc_req, _ = self.request_arcs
        return pd.Series(np.arange(len(arc_req))).groupby(arc_req).apply(list).to_dict()

    @property
    def single_pool(self) -> bool:
        """True when every class has one class arc touching one pool row: the LP splits into knapsacks."""
        if self.n_classes == 0:
            return True
        return bool(np.bincount(self.carc_class, minlength=self.n_classes).max() == 1 and len(self.centry_carc) == len(self.carc_class))

    @property
    def divisible(self) -> bool:
        return bool(np.all(self.min_cube <= EPS))

    def price_faced(self, pool_dual: np.ndarray) -> np.ndarray:
        """Per request: the cheapest, over the FCs it may use, of the sum over its months of the pool dual.
        In an LP optimum no request is rejected with a fee above this (complementary slackness)."""
        carc_price = np.bincount(self.centry_carc, weights=pool_dual[self.centry_pool], minlength=len(self.carc_class))
        class_price = pd.Series(carc_price).groupby(self.carc_class).min().reindex(range(self.n_classes)).to_numpy()
        return class_price[self.req_class] if self.n else np.zeros(0)


HELD_COLUMNS = ["request_id", "round", "seller_id", "storage_type", "months", "granted_cube"]


def held_grants(*grants: pd.DataFrame) -> pd.DataFrame:
    """The grants earlier rounds made (granted_cube > 0), as carried into the next round."""
    frames = [g.reset_index() for g in grants if g is not None and len(g)]
    if not frames:
        return pd.DataFrame(columns=HELD_COLUMNS)
    held = pd.concat(frames, ignore_index=True)
    return held.loc[held["granted_cube"] > 0, HELD_COLUMNS].reset_index(drop=True)


def prepare_clearing(instance: Instance, round_: int, limits: pd.Series, held: pd.DataFrame | None = None) -> ClearingData:
    """Audit the round's requests and lay out the model's sets.

    held: grants of earlier rounds of the period. Their cube is fixed, but where it sits is decided again
    with this round's requests, against the period's whole pool: what carries from round to round is
    grants (unique), not placements (many are optimal, and an arbitrary one would decide later rounds).
    """
    settings = instance.settings
    held = held_grants(held) if held is not None else held_grants()
    requests = instance.requests[instance.requests["round"] == round_].reset_index(drop=True)
    audit = requests.copy()
    audit["reason"] = ""
    caps = request_caps(requests, limits, settings)
    audit["request_cap_cube"] = caps
    over = to_milli(requests["max_cube"].to_numpy()) > np.floor(caps * MILLI + 1e-6)
    audit.loc[over, "reason"] = OVER_CAP
    if settings.reserve_price is not None:
        below = (to_cents(requests["max_fee_per_cube"].to_numpy()) < to_cents(settings.reserve_price)) & (audit["reason"] == "").to_numpy()
        audit.loc[below, "reason"] = BELOW_RESERVE
    pools = initial_pool(instance).rename("pool_cube").reset_index()
    # The rule works in whole milli-cube: a derived pool (pool_share x capacity) counts its whole milli-cube only.
    pools["pool_cube"] = np.floor(pools["pool_cube"].to_numpy(float) * MILLI + 1e-6) / MILLI

    live = requests[audit["reason"] == ""].copy()
    live["q0"] = live.index
    regions = instance.sellers.set_index("seller_id")["regions"]
    live["regions"] = regions.reindex(live["seller_id"]).to_numpy()
    held = held.assign(regions=regions.reindex(held["seller_id"]).to_numpy())
    key = ["storage_type", "months", "regions"]
    classes = pd.concat([live[key], held[key]]).drop_duplicates().sort_values(key, kind="stable").reset_index(drop=True)
    classes["cls"] = np.arange(len(classes))

    # Class arcs: FC f may hold a class's cube if f is in one of its regions and has pool of its storage
    # type in every month it names (the same cube sits at the same FC in every month).
    ex = classes.explode("months").rename(columns={"months": "month"}).explode("regions").rename(columns={"regions": "region"})
    fc_region = instance.fcs[["fc_id", "region"]].drop_duplicates()
    prow = pools.assign(prow=np.arange(len(pools))).merge(fc_region, on="fc_id")
    j = ex.merge(prow, on=["region", "storage_type", "month"]).drop_duplicates(["cls", "fc_id", "month"])
    j = j[j["pool_cube"] > EPS]
    n_months = classes["months"].map(len).to_numpy()
    cover = j.groupby(["cls", "fc_id"])["month"].transform("size").to_numpy()
    j = j[cover == n_months[j["cls"].to_numpy()]]
    usable = np.zeros(len(classes), dtype=bool)
    usable[j["cls"].unique()] = True
    cls_of = live[key].merge(classes, on=key, how="left")["cls"].to_numpy()
    held_cls = held[key].merge(classes, on=key, how="left")["cls"].to_numpy() if len(held) else np.zeros(0, np.int64)
    if len(held) and not usable[held_cls].all():
        bad = held.loc[~usable[held_cls], "request_id"].tolist()[:5]
        raise InputError(Problem(f"earlier grants {bad} have no pool left to sit in (did the FC table change?)", "grants"))
    no_pool = ~usable[cls_of] if len(cls_of) else np.zeros(0, dtype=bool)
    audit.loc[live["q0"].to_numpy()[no_pool], "reason"] = NO_POOL
    live, cls_of = live[~no_pool].reset_index(drop=True), cls_of[~no_pool]

    # Renumber the classes in use; class arcs sorted by (class, fc_id).
    used = np.unique(np.concatenate([cls_of, held_cls]).astype(np.int64))
    renum = np.full(len(classes), -1)
    renum[used] = np.arange(len(used))
    j = j[np.isin(j["cls"].to_numpy(), used)].assign(cls=lambda f: renum[f["cls"].to_numpy()])
    carcs = j[["cls", "fc_id"]].drop_duplicates().sort_values(["cls", "fc_id"], kind="stable").reset_index(drop=True)
    carcs["carc"] = np.arange(len(carcs))
    j = j.merge(carcs, on=["cls", "fc_id"]).sort_values(["prow", "carc"], kind="stable")
    return ClearingData(
        round=round_,
        audit=audit,
        req=live.drop(columns=["regions"]),
        fee=live["max_fee_per_cube"].to_numpy(float),
        max_cube=live["max_cube"].to_numpy(float),
        min_cube=live["min_cube"].to_numpy(float),
        req_class=renum[cls_of].astype(np.int64),
        held=held.drop(columns=["regions"]),
        held_cube=held["granted_cube"].to_numpy(float),
        held_class=renum[held_cls].astype(np.int64),
        n_classes=len(used),
        carc_class=carcs["cls"].to_numpy(np.int64),
        carc_fc=carcs["fc_id"].to_numpy(object),
        centry_pool=j["prow"].to_numpy(np.int64),
        centry_carc=j["carc"].to_numpy(np.int64),
        pools=pools,
        settings=settings,
    )


# ---------------------------------------------------------------- exact sort (independent single pools)


@dataclass
class Solution:
    grant: np.ndarray  # per request
    placements: tuple[np.ndarray, np.ndarray, np.ndarray]  # (member, class arc, cube); members n.. are held grants
    pool_dual: np.ndarray  # per pool row
    method: str
    rule: str = "welfare"
    avail: np.ndarray | None = None  # priority: cube each request could have got at its turn (its reason)


def _single_pool_of_class(d: ClearingData) -> np.ndarray:
    """Single-pool rounds: the one pool row of each class (class arc index == class index)."""
    carc_pool = np.empty(len(d.carc_class), dtype=np.int64)
    carc_pool[d.centry_carc] = d.centry_pool
    return carc_pool


def _single_pool_available(d: ClearingData) -> np.ndarray:
    """Pool per row left for this round's requests when every class has one pool row: held grants can only sit there."""
    held = np.bincount(_single_pool_of_class(d)[d.held_class], weights=d.held_cube, minlength=len(d.pools))
    return d.pools["pool_cube"].to_numpy() - held


def _from_grants(d: ClearingData, grant: np.ndarray) -> tuple:
    """Single-pool rounds: each member's cube sits at its class's only class arc (index == class)."""
    carc = d.member_class
    return np.arange(len(carc)), carc, np.concatenate([grant, d.held_cube])


def clear_by_sort(d: ClearingData) -> Solution:
    """Fractional knapsack per pool row, exact for divisible single-pool rounds.

    One argsort of the fees (per pool) orders the fee levels; every level above the marginal one is
    granted in full, every level below gets nothing; only inside the marginal level is the time order
    (submitted_at, then request_id) needed. The pool's price is the LP dual: the fee of the first level
    left short, else 0.
    """
    q_pool = _single_pool_of_class(d)[d.req_class]
    fee, u = d.fee, d.max_cube
    order = np.argsort(-fee, kind="stable") if len(np.unique(q_pool)) <= 1 else np.lexsort((-fee, q_pool))
    P, F, U = q_pool[order], fee[order], u[order]
    new_level = np.r_[True, (P[1:] != P[:-1]) | (F[1:] != F[:-1])] if len(P) else np.zeros(0, bool)
    level = np.cumsum(new_level) - 1
    lvl_total = np.bincount(level, weights=U)
    lvl_pool, lvl_fee = P[new_level], F[new_level]
    lvl_end = np.cumsum(lvl_total)
    first_of_pool = np.r_[True, lvl_pool[1:] != lvl_pool[:-1]] if len(lvl_pool) else np.zeros(0, bool)
    pool_start = (lvl_end - lvl_total)[np.maximum.accumulate(np.where(first_of_pool, np.arange(len(lvl_pool)), 0))]
    left = _single_pool_available(d)[lvl_pool] - (lvl_end - lvl_total - pool_start)
    full = lvl_total <= left + EPS
    g = np.where(full[level], U, 0.0)
    marginal = np.flatnonzero(~full[level] & (left[level] > EPS))
    if len(marginal):
        rows = d.req.iloc[order[marginal]]  # take the few marginal rows before touching their columns
        sub = pd.DataFrame(
            {"level": level[marginal], "t": rows["submitted_at"].to_numpy(), "id": rows["request_id"].to_numpy(), "pos": marginal}
        ).sort_values(["level", "t", "id"], kind="stable")
        pos, lv = sub["pos"].to_numpy(), sub["level"].to_numpy()
        cum = np.cumsum(U[pos])
        first = np.r_[True, lv[1:] != lv[:-1]]
        ahead = cum - U[pos] - (cum - U[pos])[np.maximum.accumulate(np.where(first, np.arange(len(lv)), 0))]
        g[pos] = np.clip(left[lv] - ahead, 0.0, U[pos])
    grant = np.empty(d.n)
    grant[order] = g
    dual = np.zeros(len(d.pools))
    short = np.flatnonzero(~full)
    if len(short):
        pools_short, first_idx = np.unique(lvl_pool[short], return_index=True)
        dual[pools_short] = lvl_fee[short[first_idx]]
    return Solution(grant, _from_grants(d, grant), dual, "sort")


def clear_pro_rata(d: ClearingData) -> Solution:
    """tie_rule = pro_rata (the pipeline-capacity auction rule), for single-pool rounds: fee levels are
    served from the top; at the level where the pool runs out, the rest is shared pro rata to max_cube;
    a request whose share falls below its min_cube is dropped and the rest shared again."""
    if not d.single_pool:
        raise InputError(Problem("tie_rule 'pro_rata' needs every request to draw from exactly one pool (one FC, one month)", "settings", None, "tie_rule"))
    q_pool = _single_pool_of_class(d)[d.req_class]
    left = _single_pool_available(d).astype(float)
    grant = np.zeros(d.n)
    dual = np.zeros(len(d.pools))
    for pr in np.unique(q_pool):
        qs = np.flatnonzero(q_pool == pr)
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
    return Solution(grant, _from_grants(d, grant), dual, "pro_rata")


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
    Other fill decisions were made by price and stand. (A whole-round time-priority MIP with a revenue
    floor took HiGHS 14-20 s on 100k requests, refuting round-off "improvements" of a 1e8 revenue row,
    to confirm stage 1; there, 6 of 5,067 min_cube requests were tied.) Ties across classes whose FCs
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
    with stage(f"round {d.round}: build"):
        m = build_clearing_model(d)
    with stage(f"round {d.round}: solve"):
        return _solve_pyomo_model(m, d, options)


def _solve_pyomo_model(m: pyo.ConcreteModel, d: ClearingData, options: SolverOptions) -> Solution:
    what = f"clearing round {d.round}"
    is_mip = len(m.MIN_REQUESTS) > 0
    if is_mip:
        solve_pyomo(m, options, what=what + " (revenue, MIP)", kind="clearing")
        grant1 = np.array([m.grant[q].value or 0.0 for q in range(d.n)])
        filled = retime_tied_min_cube(d, grant1, options)
        # Keep the integer choices; re-optimise the cube as an LP (this also gives the prices).
        on = dict(zip(m.MIN_REQUESTS, filled.astype(float)))
        for q in m.MIN_REQUESTS:
            m.filled[q].domain = pyo.Reals
            m.filled[q].fix(on[q])
    priced = solve_pyomo(m, options, what=what + " (revenue)", kind="clearing")
    if priced.status == "optimal":  # allow_nonoptimal and stopped: no optimal face to restrict to
        _pyomo_restrict_to_optimal_face(m, priced)
        declare_time_priority(m, d)
        solve_pyomo(m, options, what=what + " (time priority)", duals=False, kind="clearing")
    arc_req, arc_carc = d.request_arcs
    grant = np.array([m.grant[q].value or 0.0 for q in range(d.n)])
    place = np.array([m.place[a].value or 0.0 for a in range(len(arc_req))])
    dual = np.zeros(len(d.pools))
    for r in m.POOLS:
        dual[r] = priced.duals.get(m.pool_capacity[r], 0.0)
    return Solution(grant, (arc_req, arc_carc, place), np.abs(dual), "mip" if is_mip else "lp")


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
    h = new_highs(options, is_mip=False, kind="clearing")
    pass_model(h, lp)
    first = _run(h, options, what + " (revenue)", False)
    if first.status != "optimal":  # allow_nonoptimal and stopped: no optimal face to restrict to
        return first.x, first
    _highs_restrict_to_optimal_face(h, lp, first)
    n_cols = len(lp.col_cost)
    h.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), np.concatenate([d.time_weight, np.zeros(n_cols - d.n)]))
    second = _run(h, options, what + " (time priority)", False)
    return second.x, first


def _solve_arrays(d: ClearingData, options: SolverOptions) -> Solution:
    """The same procedure as the Pyomo path, on the class-aggregated arrays."""
    with stage(f"round {d.round}: build"):
        lp, fam = build_clearing_arrays(d)
    with stage(f"round {d.round}: solve"):
        return _solve_arrays_lp(lp, fam, d, options)


def _solve_arrays_lp(lp: LinearProgram, fam: dict, d: ClearingData, options: SolverOptions) -> Solution:
    what = f"clearing round {d.round}"
    is_mip = lp.is_mip
    if is_mip:
        note(f"round {d.round}: MIP with {len(lp.row_lower)} rows x {len(lp.col_cost)} columns, {int((lp.integrality > 0).sum())} binary")
        h = new_highs(options, is_mip=True, kind="clearing")
        pass_model(h, lp)
        first = _run(h, options, what + " (revenue, MIP)", True)
        filled = retime_tied_min_cube(d, first.x[: d.n], options)
        # Keep which min_cube requests are filled; re-optimise the cube as an LP (it also gives the prices).
        lp, fam = build_clearing_arrays(d, filled=filled)
    x, priced = _lexicographic_lp(lp, d, options, what)
    grant, class_place = x[: d.n], x[d.n : d.n + len(d.carc_class)]
    dual = np.zeros(len(d.pools))
    if priced.row_duals is not None:
        dual[np.unique(d.centry_pool)] = priced.row_duals[fam["pool_capacity"]]
    placements = split_by_class(d.member_class, np.concatenate([grant, d.held_cube]), d.carc_class, class_place, d.n_classes)
    return Solution(grant, placements, np.abs(dual), "mip" if is_mip else "lp")


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


def _clean(a: np.ndarray) -> np.ndarray:
    return np.round(a, 6) + 0.0


def extract_round(d: ClearingData, sol: Solution) -> RoundResult:
    grant = np.maximum(to_milli(sol.grant), 0) / MILLI  # whole milli-cube (exact for the priority rule)
    audit = d.audit.copy()
    audit["granted_cube"] = 0.0
    q0 = d.req["q0"].to_numpy()
    audit.loc[q0, "granted_cube"] = grant
    g = audit["granted_cube"].to_numpy()
    g_milli, mx_milli = to_milli(g), to_milli(audit["max_cube"].to_numpy())
    status = np.where(g_milli >= mx_milli, GRANTED, np.where(g_milli > 0, PARTIAL, REJECTED))
    audit["status"] = status
    # Clearing price per storage type: types are separate markets (capacity never moves between them).
    types = sorted(d.pools["storage_type"].unique())
    type_price = audit.loc[g > 0, ["storage_type", "max_fee_per_cube"]].groupby("storage_type")["max_fee_per_cube"].min().reindex(types)

    # Pool use by earlier rounds' grants (as placed now) and by this round's, from the placements.
    member, carc_i, cube = sol.placements
    cube = np.where(cube > EPS, cube, 0.0)
    is_held = member >= d.n
    ncarc = len(d.carc_class)
    carc_held = np.bincount(carc_i[is_held], weights=cube[is_held], minlength=ncarc)
    carc_new = np.bincount(carc_i[~is_held], weights=cube[~is_held], minlength=ncarc)
    held_use = _clean(np.bincount(d.centry_pool, weights=carc_held[d.centry_carc], minlength=len(d.pools)))
    new_use = _clean(np.bincount(d.centry_pool, weights=carc_new[d.centry_carc], minlength=len(d.pools)))
    pool_cube = d.pools["pool_cube"].to_numpy()
    pool_after = np.maximum(_clean(pool_cube - held_use - new_use), 0.0)
    took_part = np.zeros(len(audit), dtype=bool)
    took_part[q0] = True
    # Pool a request could reach: for each FC of its class, the least left over its months; before this
    # round's grants (room_before) and after them (room_all).
    room_all, room_before = np.zeros(len(audit)), np.zeros(len(audit))
    faced = np.full(len(audit), np.nan)
    if d.n:
        def reach(left: np.ndarray) -> np.ndarray:
            per_carc = pd.Series(left[d.centry_pool]).groupby(d.centry_carc).min().reindex(range(ncarc)).fillna(0).to_numpy()
            return np.bincount(d.carc_class, weights=per_carc, minlength=d.n_classes)[d.req_class]

        room_all[q0] = reach(pool_after)
        room_before[q0] = reach(np.maximum(pool_cube - held_use, 0.0))
        faced[q0] = d.price_faced(sol.pool_dual)
    fee = audit["max_fee_per_cube"].to_numpy()
    with np.errstate(invalid="ignore"):
        above_price = fee > faced + 1e-6  # False where the request did not take part (NaN)
    reason = audit["reason"].to_numpy(object).copy()
    short = took_part & (status != GRANTED)
    rejected = short & (status == REJECTED)
    has_min = audit["min_cube"].to_numpy() > 0
    reason[short] = OUTBID
    if sol.avail is not None:  # the priority rule knows what each request could have got at its turn
        could = np.zeros(len(audit))
        could[q0] = sol.avail
        reason[rejected & has_min & (could > 0)] = MIN_CUBE
    else:
        reason[rejected & has_min & ((room_all > EPS) | above_price)] = MIN_CUBE
    reason[rejected & (reason != MIN_CUBE) & (room_before <= EPS)] = EXHAUSTED  # earlier rounds' grants fill all it could use
    reason[status == GRANTED] = ""
    audit["reason"] = reason
    audit["price_faced"] = _clean(faced)
    # Rejected or cut although its fee is above the lowest fee granted cube of its storage type this round.
    price_cents = to_cents(type_price.reindex(audit["storage_type"]).fillna(np.inf).to_numpy().clip(max=1e15))
    audit["paradoxically_rejected"] = short & (to_cents(fee) > price_cents) & type_price.reindex(audit["storage_type"]).notna().to_numpy()

    audit["round"] = d.round
    cols = ["round", "request_id", "seller_id", "storage_type", "months", "max_fee_per_cube", "max_cube", "min_cube",
            "submitted_at", "request_cap_cube", "granted_cube", "status", "reason", "price_faced", "paradoxically_rejected"]
    grants = audit[cols].set_index(["round", "request_id"]).sort_index()

    # Placements as of this round: this round's grants, and earlier grants where they sit now.
    names = np.concatenate([d.req["request_id"].to_numpy(object), d.held["request_id"].to_numpy(object)])
    granted_round = np.concatenate([np.full(d.n, d.round), d.held["round"].to_numpy(np.int64)])
    placements = pd.DataFrame(
        {"round": d.round, "request_id": names[member], "fc_id": d.carc_fc[carc_i], "granted_round": granted_round[member], "cube": cube}
    )
    placements = placements[placements["cube"] > EPS]  # the split gives one piece per (member, FC); summing guards round-off
    placements = placements.groupby(["round", "request_id", "fc_id"], sort=True).agg(granted_round=("granted_round", "first"), cube=("cube", "sum"))
    placements["cube"] = _clean(placements["cube"].to_numpy())
    placements = placements[placements["cube"] > 0]

    pools = d.pools.copy()
    pools["held_cube"] = held_use
    pools["granted_cube"] = new_use
    pools["pool_after"] = pool_after
    pools["dual_price"] = _clean(sol.pool_dual)
    pools.insert(0, "round", d.round)
    pools = pools.set_index(["round"] + POOL_INDEX).sort_index()

    dual_max = pools.groupby("storage_type")["dual_price"].max().reindex(types).fillna(0.0)
    code = pd.Categorical(audit["storage_type"], categories=types).codes  # factorize once, then bincount
    per_type = lambda w=None: np.bincount(code, weights=w, minlength=len(types))  # noqa: E731
    prices = pd.DataFrame(
        {
            "round": d.round,
            "storage_type": types,
            "requests": per_type().astype("int64"),
            "granted_requests": per_type((g > 0).astype(float)).astype("int64"),
            "granted_cube": _clean(per_type(g)),
            "clearing_price": type_price.to_numpy(),
            "pool_dual_max": dual_max.to_numpy(),
            "objective": _clean(per_type(fee * g)),
            "paradoxically_rejected": per_type(audit["paradoxically_rejected"].to_numpy(float)).astype("int64"),
            "method": sol.method,
        }
    ).set_index(["round", "storage_type"])
    return RoundResult(d.round, grants, placements, pools, prices)


def clearing_rule(settings: Settings) -> str:
    """The rule a round is cleared by: settings.clearing_rule; tie_rule = pro_rata (the older spelling) selects pro_rata."""
    return "pro_rata" if settings.tie_rule == "pro_rata" else settings.clearing_rule


def _refuse(message: str) -> None:
    raise InputError(Problem(message, "settings", None, "solver.backend"))


def choose_method(d: ClearingData, options: SolverOptions, method: str | None = None) -> str:
    """How the round's rule is computed. A forced method that cannot compute the rule on this round refuses."""
    rule = clearing_rule(d.settings)
    exact_sort = d.single_pool and d.divisible
    if rule == "pro_rata":
        if method not in (None, "pro_rata"):
            _refuse(f"clearing rule 'pro_rata' is computed only by its own method, not {method!r}")
        return "pro_rata"
    if method == "sort" and not exact_sort:
        _refuse("method 'sort' needs every request to draw from exactly one pool (one FC, one month) and no min_cube")
    if method == "pro_rata":
        _refuse(f"method 'pro_rata' computes only the pro_rata rule, not {rule!r}")
    if method is not None:
        return method
    if d.n == 0:
        return "sort" if d.single_pool else "highspy"  # only earlier grants to place
    if exact_sort:
        return "sort"  # both rules equal the greedy sort there (models/clearing.md)
    if rule == "priority":
        return "pyomo" if options.backend == "pyomo" else "highspy"  # the exact sequential method; "pyomo" is its slow reference
    if options.backend == "auto":
        return "pyomo" if d.n <= options.auto_pyomo_max_rows else "highspy"
    return options.backend


def solve_clearing(d: ClearingData, options: SolverOptions, method: str | None = None) -> Solution:
    method = choose_method(d, options, method)
    rule = clearing_rule(d.settings)
    if d.n == 0 and len(d.held_cube) == 0:
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return Solution(np.zeros(0), empty, np.zeros(len(d.pools)), "empty", rule)
    with stage(f"round {d.round}: solve"):
        if method == "sort":
            sol = clear_by_sort(d)
        elif method == "pro_rata":
            sol = clear_pro_rata(d)
        elif rule == "priority":
            sol = _solve_priority_pyomo(d, options) if method == "pyomo" else _solve_priority(d, options)
        else:
            sol = None
    if sol is None:
        sol = _solve_pyomo(d, options) if method == "pyomo" else _solve_arrays(d, options)
    sol.rule = rule
    return sol


# ---------------------------------------------------------------- the priority rule


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


def _solve_priority(d: ClearingData, options: SolverOptions) -> Solution:
    out = clear_by_priority(d, options)
    note(f"round {d.round}: priority rule, {out.lp_calls} room LPs")
    grant = out.grant / MILLI
    place = place_classes(d, out.grant, options) / MILLI
    placements = split_by_class(d.member_class, np.concatenate([grant, d.held_cube]), d.carc_class, place, d.n_classes)
    return Solution(grant, placements, price_pools(d, grant, options), "priority", "priority", out.avail / MILLI)


def _solve_priority_pyomo(d: ClearingData, options: SolverOptions) -> Solution:
    """Reference for the priority rule, obviously correct and slow: the Pyomo model, one LP per request in rank
    order — max grant[i] with every higher-ranked grant fixed and every lower-ranked one 0 — then the request
    gets that (snapped to whole milli-cube) if it reaches its min_cube, else 0."""
    m = build_clearing_model(d)
    m.min_fill.deactivate()
    m.max_fill.deactivate()
    for q in m.MIN_REQUESTS:
        m.filled[q].fix(0)
    m.revenue.deactivate()
    u, mn = to_milli(d.max_cube), to_milli(d.min_cube)
    for q in m.REQUESTS:
        m.grant[q].fix(0.0)
    got, avail = np.zeros(d.n), np.zeros(d.n)
    order = rank_order(d.fee, d.req["submitted_at"].to_numpy(), d.req["request_id"].to_numpy())
    for i in order:
        i = int(i)
        m.grant[i].unfix()
        m.one = pyo.Objective(expr=m.grant[i], sense=pyo.maximize)
        solve_pyomo(m, options.model_copy(update={"allow_nonoptimal": False}), what=f"clearing round {d.round} (priority reference)", duals=False, kind="clearing")
        m.del_component(m.one)
        v = float(np.rint(pyo.value(m.grant[i]) * MILLI)) if abs(pyo.value(m.grant[i]) * MILLI - np.rint(pyo.value(m.grant[i]) * MILLI)) < 1e-3 else float(np.floor(pyo.value(m.grant[i]) * MILLI))
        v = min(max(v, 0.0), float(u[i]))
        avail[i] = v / MILLI
        got[i] = v / MILLI if v >= mn[i] and v > 0 else 0.0
        m.grant[i].fix(got[i])
    place = place_classes(d, to_milli(got), options) / MILLI  # the same placement as the fast method publishes
    placements = split_by_class(d.member_class, np.concatenate([got, d.held_cube]), d.carc_class, place, d.n_classes)
    return Solution(got, placements, price_pools(d, got, options), "priority", "priority", avail)


def clear_round(
    instance: Instance,
    round_: int,
    *,
    limits: pd.Series,
    held: pd.DataFrame | None = None,
    options: SolverOptions | None = None,
    method: str | None = None,
    executor=None,
) -> RoundResult:
    """Clear one round against the period's pool, holding the grants of earlier rounds.

    Each storage type is a market of its own (capacity never moves between types, and no request spans two), so
    the round is cleared type by type and the parts concatenated: the same answer as one model of all types,
    from smaller models, and the same code path whether the types are cleared here or on separate workers.

    limits: baseline limit per (seller_id, storage_type, month), for the request cap.
    held: grants of earlier rounds (e.g. `held_grants(r1.grants, r2.grants)`): their cube is kept, where it
          sits is decided again with this round's requests. Default: none (the first round).
    method: force "sort", "pyomo" or "highspy" (default: chosen per market by shape and size).
    executor: clears the storage types' markets in parallel (anything with `map(fn, calls)`, e.g.
          `optalloc.batch.make_executor(2)`); each gets only its own type's part of the instance and limits.
    """
    if round_ not in instance.period.rounds:
        raise InputError(Problem(f"round {round_} is not in the period (rounds {instance.period.rounds})", "round"))
    options = options or instance.settings.solver
    held = held_grants(held) if held is not None else held_grants()
    types = sorted(instance.fcs["storage_type"].unique())
    fan_out = executor is not None and len(types) > 1
    of_type = limits.index.get_level_values("storage_type") if fan_out else None  # a worker gets its type's limits only
    calls = (  # lazy: in this process one type's part of the instance exists at a time
        (instance if len(types) == 1 else instance.of_storage_type(k), round_, limits[of_type == k] if fan_out else limits,
         held[held["storage_type"] == k], options, method)
        for k in types
    )
    parts = executor.map(clear_market, list(calls)) if fan_out else [clear_market(*call) for call in calls]
    return parts[0] if len(parts) == 1 else combine_markets(parts)


def clear_market(instance: Instance, round_: int, limits: pd.Series, held: pd.DataFrame, options: SolverOptions, method: str | None) -> RoundResult:
    """Clear one round of a one-storage-type instance."""
    note(f"round {round_}: the {', '.join(sorted(instance.fcs['storage_type'].unique()))} market")
    with stage(f"round {round_}: prepare"):
        d = prepare_clearing(instance, round_, limits, held)
    note(f"round {round_}: {d.n} requests take part, {len(d.audit) - d.n} rejected before the solve, {len(d.held_cube)} earlier grants held")
    sol = solve_clearing(d, options, method)
    with stage(f"round {round_}: extract"):
        return extract_round(d, sol)


def concat_results(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Result tables of several markets or rounds as one, sorted by its index (empty parts kept only if all are)."""
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames).sort_index() if frames else pd.DataFrame()


def combine_markets(parts: list[RoundResult]) -> RoundResult:
    """One round from its storage types' results (they share no rows)."""
    return RoundResult(
        parts[0].round,
        concat_results([p.grants for p in parts]),
        concat_results([p.placements for p in parts]),
        concat_results([p.pools for p in parts]),
        concat_results([p.prices for p in parts]),
    )
