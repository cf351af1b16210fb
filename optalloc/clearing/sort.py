"""The exact sort for rounds whose requests each draw from one pool (one FC, one month), and the pro rata rule.

When every request can draw from exactly one pool and all are divisible, the welfare LP and the priority rule are
both a set of independent fractional knapsacks: sort by fee, then time, and fill (models/clearing.md, "Fast path").
Both work in whole cents and milli-cube (`ClearingData.fee_cents`, `max_milli`, ...): no float is compared or summed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, Problem
from ..units import CENTS, MILLI
from .data import ClearingData, Solution


def _single_pool_of_class(d: ClearingData) -> np.ndarray:
    """Single-pool rounds: the one pool row of each class (class arc index == class index)."""
    carc_pool = np.empty(len(d.carc_class), dtype=np.int64)
    carc_pool[d.centry_carc] = d.centry_pool
    return carc_pool


def _single_pool_available(d: ClearingData) -> np.ndarray:
    """Milli-cube per pool row left for this round's requests when every class has one pool row: held grants can
    only sit there."""
    held = np.zeros(len(d.pools), dtype=np.int64)
    np.add.at(held, _single_pool_of_class(d)[d.held_class], d.held_milli)
    return d.pool_milli - held


def _from_grants(d: ClearingData, grant: np.ndarray) -> tuple:
    """Single-pool rounds: each member's cube sits at its class's only class arc (index == class)."""
    carc = d.member_class
    return np.arange(len(carc)), carc, np.concatenate([grant, d.held_cube])


def _group_starts(first: np.ndarray) -> np.ndarray:
    """For each position of a sequence cut into runs (`first` marks each run's first position): its run's first position."""
    return np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))


def clear_by_sort(d: ClearingData) -> Solution:
    """Fractional knapsack per pool row, exact for divisible single-pool rounds, in whole cents and milli-cube.

    One sort of the fees (per pool) orders the fee levels; every level above the marginal one is granted in full,
    every level below gets nothing; only inside the marginal level is the time order (submitted_at, then
    request_id) needed. The pool's price is the LP dual: the fee of the first level left short, else 0.
    """
    q_pool = _single_pool_of_class(d)[d.req_class]
    fee, u = d.fee_cents, d.max_milli
    order = np.lexsort((-fee, q_pool))
    P, F, U = q_pool[order], fee[order], u[order]
    new_level = np.r_[True, (P[1:] != P[:-1]) | (F[1:] != F[:-1])] if len(P) else np.zeros(0, bool)
    level = np.cumsum(new_level) - 1
    starts = np.flatnonzero(new_level)
    lvl_total = np.add.reduceat(U, starts) if len(U) else np.zeros(0, np.int64)
    lvl_pool, lvl_fee = P[new_level], F[new_level]
    lvl_end = np.cumsum(lvl_total)  # exact: a round's asks of one storage type are at most 1e18 milli-cube (validate)
    first_of_pool = np.r_[True, lvl_pool[1:] != lvl_pool[:-1]] if len(lvl_pool) else np.zeros(0, bool)
    before_pool = (lvl_end - lvl_total)[_group_starts(first_of_pool)]
    left = _single_pool_available(d)[lvl_pool] - (lvl_end - lvl_total - before_pool)  # milli-cube left when the level's turn comes
    full = lvl_total <= left
    g = np.where(full[level], U, 0)
    marginal = np.flatnonzero(~full[level] & (left[level] > 0))
    if len(marginal):
        rows = d.req.iloc[order[marginal]]  # take the few marginal rows before touching their columns
        sub = pd.DataFrame(
            {"level": level[marginal], "t": rows["submitted_at"].to_numpy(), "id": rows["request_id"].to_numpy(), "pos": marginal}
        ).sort_values(["level", "t", "id"], kind="stable")
        pos, lv = sub["pos"].to_numpy(), sub["level"].to_numpy()
        cum = np.cumsum(U[pos])
        first = np.r_[True, lv[1:] != lv[:-1]]
        ahead = cum - U[pos] - (cum - U[pos])[_group_starts(first)]
        g[pos] = np.clip(left[lv] - ahead, 0, U[pos])
    grant = np.empty(d.n, dtype=np.int64)
    grant[order] = g
    dual = np.zeros(len(d.pools))
    short = np.flatnonzero(~full)
    if len(short):
        pools_short, first_idx = np.unique(lvl_pool[short], return_index=True)
        dual[pools_short] = lvl_fee[short[first_idx]] / CENTS
    cube = grant / MILLI
    return Solution(cube, _from_grants(d, cube), dual, "sort")


def _pro_rata_shares(left: int, asks: list[int], ranks: list[int]) -> list[int]:
    """`left` milli-cube shared in proportion to `asks` (whole milli-cube, Python integers: exact): each gets the
    whole part of its share, and the milli-cube the whole parts leave go one each to the largest remainders (ties:
    the earlier rank)."""
    total = sum(asks)
    whole = [left * a // total for a in asks]
    rest = left - sum(whole)
    by_remainder = sorted(range(len(asks)), key=lambda i: (-(left * asks[i] % total), ranks[i]))
    for i in by_remainder[:rest]:
        whole[i] += 1
    return whole


def clear_pro_rata(d: ClearingData) -> Solution:
    """clearing_rule = pro_rata (the pipeline-capacity auction rule), for single-pool rounds: fee levels are served
    from the top; at the level where the pool runs out, the rest is shared pro rata to max_cube (in whole milli-cube,
    `_pro_rata_shares`); a request whose share falls below its min_cube is dropped and the rest shared again."""
    if not d.single_pool:
        raise InputError(Problem("tie_rule 'pro_rata' needs every request to draw from exactly one pool (one FC, one month)", "settings", None, "tie_rule"))
    q_pool = _single_pool_of_class(d)[d.req_class]
    left = [int(x) for x in _single_pool_available(d)]
    fee, u, mn = d.fee_cents, d.max_milli, d.min_milli
    rank = np.empty(d.n, dtype=np.int64)
    rank[d.req.reset_index(drop=True).sort_values(["submitted_at", "request_id"], kind="stable").index.to_numpy()] = np.arange(d.n)
    grant = np.zeros(d.n, dtype=np.int64)
    dual = np.zeros(len(d.pools))
    for pr in np.unique(q_pool):
        qs = np.flatnonzero(q_pool == pr)
        for level_fee in np.unique(fee[qs])[::-1]:
            level = qs[fee[qs] == level_fee]
            if left[pr] <= 0:
                break
            asked = int(u[level].sum())
            if asked <= left[pr]:
                grant[level] = u[level]
                left[pr] -= asked
                continue
            alive = level.tolist()
            while alive:
                total = sum(int(u[q]) for q in alive)
                # share_q = left * u_q / total >= min_q, compared exactly
                fits = [left[pr] * int(u[q]) >= int(mn[q]) * total for q in alive]
                if all(fits):
                    shares = _pro_rata_shares(left[pr], [int(u[q]) for q in alive], [int(rank[q]) for q in alive])
                    grant[alive] = shares
                    left[pr] = 0
                    dual[pr] = level_fee / CENTS
                    break
                alive = [q for q, ok in zip(alive, fits) if ok]
    cube = grant / MILLI
    return Solution(cube, _from_grants(d, cube), dual, "pro_rata")
