"""The exact sort for rounds whose requests each draw from one pool (one FC, one month), and the pro rata rule.

When every request can draw from exactly one pool and all are divisible, the welfare LP and the priority rule are
both a set of independent fractional knapsacks: sort by fee, then time, and fill (models/clearing.md, "Fast path").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, Problem
from .data import EPS, ClearingData, Solution


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
