"""The priority rule (models/clearing.md, "The priority rule"): requests ranked by fee (cents, highest first),
then submitted_at, then request_id; each in turn gets as much as it can — up to max_cube, and either at least
min_cube or nothing — while every higher-ranked grant (and every earlier round's grant) keeps its cube.

Exact method, in integers (cents, milli-cube). The state is the cube D_c each eligibility class already holds
and one feasible placement Z of it on the class arcs (class, FC). For request i of class c, what it can get is
    a_i = min(max_cube_i, E_c),  E_c = max extra cube class c can hold with every other class's cube fixed
(the set of feasible grants for i is the interval [0, E_c], because its own grant only adds to its class).
E_c is found by:
  1. the direct room: sum over c's FCs of the least room left over c's months under Z. If it covers
     max_cube_i, i gets max_cube_i, placed there (exact: a feasible extension of Z).
  2. if no class sharing a pool row with c can move (each has a single FC), the direct room *is* E_c.
  3. otherwise one LP: max sum of c's placement, every other class's cube fixed, placement free (the
     class-aggregated model of models/clearing.md, warm-started between calls, in units of a power of two of
     milli-cube so that HiGHS's absolute tolerance fits the pools' size). Its value is snapped to the milli-cube
     grid (the only tolerance: 1e-6 cube, a thousandth of the smallest step).
     The LP holds a working set of class arcs (the placement's, the asking classes', and every arc whose reduced
     cost asks to enter, priced until none does): the optimum over every arc at a fraction of the columns.
E_c never increases as grants are added, so a cached upper bound per class skips every later request of a
class that is full (or whose bound is below the request's min_cube and which has no direct room). Every room LP's
pool duals, rounded, bound every class's room from then on (models/clearing.md, "Dual bounds").
With one pool per class (single-FC, single-month rounds) step 3 never runs: the result is the greedy sort.
Requests are taken in chunks where they all fit at once (direct room; else one room LP grants the chunk's longest
prefix whose classes all got their asks): exact, as each of them could then have had all it asks
(models/clearing.md, "Chunks").

The module is long because it is one algorithm and the state it keeps from request to request (class cube, placement,
room, bounds, dual cuts, the warm-started room LP and its working set): split, each part would reach into the
other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
import pandas as pd

from ..schemas import SolverOptions
from ..units import int_bincount, to_cents, to_milli
from ..solver import (LinearProgram, check_outcome, csr_from_triplets, new_warm_lp, pass_model, refresh_values, rerun_cold,
                      rerun_from_scratch, run_highs)

SNAP = 1e-3  # milli-cube: an LP value this close to a whole milli-cube is that milli-cube (at scale 1)
LP_UNITS_MAX = 2.0**20  # the room LP's largest pool, in its own units (see _State.scale)
SNAP_MAX = 0.1  # milli-cube: the snap tolerance never exceeds this, whatever the scale and solver tolerance


def _level_from_top(avail: np.ndarray, a: int) -> np.ndarray:
    """Whole amounts take <= avail summing to a, lowering the largest rooms to a common level first."""
    if len(avail) == 1:
        return np.array([float(a)])
    srt = np.sort(avail)[::-1]
    # the level L with sum(max(avail - L, 0)) = a: the first j whose level is at or above the next room
    levels = (np.cumsum(srt) - a) / np.arange(1, len(srt) + 1)
    below = np.empty_like(srt)
    below[:-1], below[-1] = srt[1:], -np.inf
    j = int(np.argmax(levels >= below)) if len(srt) else 0
    L = max(np.ceil(levels[j]), 0.0)
    take = np.maximum(avail - L, 0.0)
    short = a - take.sum()  # the ceiling left a few milli-cube: hand them out in FC order where room is left
    if short > 0:
        cap = avail - take
        cum = np.cumsum(cap)
        take = take + np.clip(short - (cum - cap), 0.0, cap)
    return take


def lp_scale(pool_milli: np.ndarray) -> float:
    """The room LP's unit, in milli-cube: the least power of two S >= 1 that brings the largest pool under
    LP_UNITS_MAX units. HiGHS's tolerances are absolute (1e-7): a pool of 1e9 milli-cube (a million cube) carries
    about 2e-7 of float rounding in its row sums, more than the tolerance, and the solver starts to call feasible
    rooms infeasible. In units of S the rows stay near 1e6, where rounding is ~1e-10; dividing by a power of two is
    exact, so the data stay whole multiples of 1/S."""
    top = float(np.max(pool_milli)) if len(pool_milli) else 0.0
    return float(2.0 ** max(int(np.ceil(np.log2(top / LP_UNITS_MAX))), 0)) if top > LP_UNITS_MAX else 1.0


def snap_tolerance(scale: float, tolerance: float) -> float:
    """How close (milli-cube) an LP value must be to a whole milli-cube to count as it: SNAP, or ten times the
    solver's tolerance in milli-cube when the LP is scaled (1e-3 at scale 1024 and the default tolerance); never
    more than SNAP_MAX, far below one milli-cube."""
    return min(max(SNAP, 10 * tolerance * scale), SNAP_MAX)


def _snap(v: float, tol: float = SNAP) -> int:
    r = np.rint(v)
    return int(max(r if abs(v - r) < tol else np.floor(v), 0))


def rank_order(fee: np.ndarray, submitted_at: np.ndarray, request_id: np.ndarray) -> np.ndarray:
    """Positions in priority order: fee in cents (highest first), then submitted_at, then request_id."""
    f = pd.DataFrame({"fee": -to_cents(fee), "t": submitted_at, "id": request_id})
    return f.sort_values(["fee", "t", "id"], kind="stable").index.to_numpy()


@dataclass
class PriorityOutcome:
    grant: np.ndarray  # milli-cube per request (input order)
    avail: np.ndarray  # milli-cube each request could have got at its turn (capped at max_cube)
    place: np.ndarray  # milli-cube per class arc (this round's and held grants together)
    lp_calls: int


def arc_rows(d) -> np.ndarray:
    """Each class arc's pool rows (arcs x most rows of one arc), padded with the sentinel row len(d.pools)."""
    nca = len(d.carc_class)
    order = np.argsort(d.centry_carc, kind="stable")
    e_carc, e_pool = d.centry_carc[order], d.centry_pool[order]
    per = np.bincount(e_carc, minlength=nca)
    rows = np.full((nca, int(per.max()) if nca else 1), len(d.pools), dtype=np.int64)
    rows[e_carc, np.arange(len(e_carc)) - np.repeat(np.cumsum(per) - per, per)] = e_pool
    return rows


class _State:
    """Class cube D, a feasible placement Z on class arcs, and the room it leaves per pool row (milli-cube)."""

    def __init__(self, d, options: SolverOptions):
        self.d, self.options = d, options
        nca = len(d.carc_class)
        self.n_pool = len(d.pools)
        self.R = to_milli(d.pools["pool_cube"].to_numpy()).astype(float)
        self.arc_rows = arc_rows(d)
        width = self.arc_rows.shape[1]
        order = np.argsort(d.centry_carc, kind="stable")
        e_carc, e_pool = d.centry_carc[order], d.centry_pool[order]
        self.cstart = np.searchsorted(d.carc_class, np.arange(d.n_classes + 1))
        self.D = int_bincount(d.held_class, d.held_milli, d.n_classes)
        self.Z = np.zeros(nca)
        self.room = np.concatenate([self.R, [np.inf]])
        self.ub = np.full(d.n_classes, np.iinfo(np.int64).max, dtype=np.int64)
        # Direct room is exact for class c when no *other* class touching one of its pool rows has a second FC
        # (c's own cube moving between its FCs adds no room for c).
        n_arcs = np.diff(self.cstart)
        ent_cls = d.carc_class[e_carc]
        mov = n_arcs[ent_cls] > 1
        rows_mov = pd.DataFrame({"row": e_pool[mov], "cls": ent_cls[mov]}).drop_duplicates()
        n_mov = rows_mov.groupby("row")["cls"].size().reindex(range(self.n_pool + 1), fill_value=0).to_numpy()
        own = (n_arcs[d.carc_class] > 1).astype(np.int64)
        valid = self.arc_rows < self.n_pool
        arc_movable = (((n_mov[self.arc_rows] - own[:, None]) > 0) & valid).any(axis=1)
        self.exact_direct = ~np.bincount(d.carc_class, weights=arc_movable, minlength=d.n_classes).astype(bool)
        # Hall bound (models/clearing.md): classes whose FCs all lie inside N(c) must sit inside N(c), so
        # E_c <= min over c's months t of [pool of N(c) in t - cube of those classes that hold in t].
        months = pd.Index(sorted(d.pools["month"].unique()))
        row_month = np.concatenate([months.get_indexer(d.pools["month"]), [-1]])
        self.class_month = np.zeros((d.n_classes, len(months)), dtype=bool)
        first_arc_rows = self.arc_rows[self.cstart[:-1]] if nca else np.zeros((0, width), np.int64)
        for j in range(width):
            mth = row_month[first_arc_rows[:, j]]
            ok = mth >= 0
            self.class_month[np.flatnonzero(ok), mth[ok]] = True
        fcs = pd.Index(sorted(pd.unique(d.carc_fc)))
        A = np.zeros((d.n_classes, len(fcs)), dtype=np.int32)
        A[d.carc_class, fcs.get_indexer(d.carc_fc)] = 1
        self.inside = (A @ (1 - A).T) == 0  # inside[c', c]: N(c') within N(c)
        pool_fc_month = np.zeros((len(fcs), len(months)))
        fc_of_row = fcs.get_indexer(d.pools["fc_id"])
        okr = fc_of_row >= 0
        np.add.at(pool_fc_month, (fc_of_row[okr], row_month[:-1][okr]), self.R[okr])
        self.pool_of_class = A @ pool_fc_month  # pool of N(c) per month
        self.h = None
        self.lp_calls = 0
        self.fallbacks = 0
        self.refreshes = 0
        self.priced = 0  # arcs the room LPs took in by their reduced cost
        self._lp_x = None
        # Dual cuts (models/clearing.md, "Dual bounds"): row k says every class b with cut_m[k, b] >= 1 can add
        # at most cut_w[k] = cut_ry[k] - D . cut_m[k] cube, kept current as D grows.
        self.Ri = to_milli(d.pools["pool_cube"].to_numpy()).astype(np.int64)
        self.cut_m = np.zeros((0, d.n_classes), dtype=np.int64)
        self.cut_ry = np.zeros(0, dtype=np.int64)
        self.cut_w = np.zeros(0, dtype=np.int64)
        self.cuts_made = 0
        if len(d.held_cube):
            self._place_held()

    def hall_bound(self, c: int) -> int:
        held = (self.D[:, None] * self.class_month)[self.inside[:, c]].sum(axis=0)
        left = (self.pool_of_class[c] - held)[self.class_month[c]]
        return int(max(np.floor(left.min() + 1e-6), 0)) if len(left) else 0

    # ----------------------------------------------------------------- placement bookkeeping
    def _set_placement(self, Z: np.ndarray) -> None:
        self.Z = Z
        use = np.bincount(self.d.centry_pool, weights=Z[self.d.centry_carc], minlength=self.n_pool)
        self.room = np.concatenate([self.R - use, [np.inf]])

    def _place_held(self) -> None:
        d = self.d
        single = np.diff(self.cstart) == 1
        if single.all():
            Z = np.zeros(len(d.carc_class))
            Z[self.cstart[:-1]] = self.D
            self._set_placement(Z)
        else:
            self._lp()
            self._set_placement(self._solve(None))

    def direct(self, c: int) -> tuple[np.ndarray, int]:
        s, e = self.cstart[c], self.cstart[c + 1]
        ra = self.room[self.arc_rows[s:e]].min(axis=1)
        avail = np.floor(np.maximum(ra, 0.0) + 1e-6)
        return avail, int(avail.sum())

    def commit_direct(self, c: int, avail: np.ndarray, a: int) -> None:
        s = self.cstart[c]
        # Spread: level the room of c's FCs from the top (take from the roomiest first, down to a common level),
        # so that no FC is emptied while others of the class have room; keeps direct room for later classes.
        take = _level_from_top(avail, a)
        arcs = np.flatnonzero(take > 0) + s
        self.Z[arcs] += take[take > 0]
        rows = self.arc_rows[arcs]
        # a class's arcs are distinct FCs, so their pool rows are distinct (but for the padding row, kept at inf)
        self.room[rows.ravel()] -= np.repeat(take[take > 0], rows.shape[1])
        self.room[self.n_pool] = np.inf
        self.add_cube(np.array([c]), np.array([a], dtype=np.int64))

    def add_cube(self, classes: np.ndarray, amounts: np.ndarray) -> None:
        """D[classes] += amounts (milli-cube), with the LP's class rows and the dual cuts kept in step."""
        self.D[classes] += amounts
        if len(self.cut_w):
            self.cut_w -= self.cut_m[:, classes] @ amounts
        if self.h is not None:
            for c in classes.tolist():
                self.fix_class(c)

    def restore(self, saved: tuple) -> None:
        """Back to a state saved as (Z, room, D) (a chunk that did not fit)."""
        changed = np.flatnonzero(self.D != saved[2])
        self.Z, self.room, self.D = saved
        if len(self.cut_w):
            self.cut_w = self.cut_ry - self.cut_m @ self.D
        if self.h is not None:
            for c in changed.tolist():
                self.fix_class(c)

    # ----------------------------------------------------------------- dual cuts
    def record_cut(self) -> None:
        """The pool-row duals y of the room LP just solved bound every class's room, now and later. Rounded to whole
        numbers (y >= 0) they stay dual feasible with g_b = -m_b, m_b = the least sum of y over the pool rows of one
        of b's arcs; so for every class b with m_b >= 1, E_b <= R.y - D.m (weak duality; exact integers, valid
        whatever the rounding did to the optimum). One LP thus bounds all the classes of a full region at once."""
        duals = self._last.row_duals
        if duals is None:
            return
        y = np.zeros(self.n_pool + 1, dtype=np.int64)
        y[self.used] = np.clip(np.rint(duals[: self.n_lp_pool]), 0, CUT_Y_MAX).astype(np.int64)
        if not y.any():
            return
        m = np.minimum.reduceat(y[self.arc_rows].sum(axis=1), self.cstart[:-1])
        if not (m >= 1).any():
            return
        ry = int(self.Ri @ y[:-1])
        w = ry - int(self.D @ m)
        k = self.cuts_made % CUTS_MAX
        if k == len(self.cut_w):
            self.cut_m = np.vstack([self.cut_m, m[None, :]])
            self.cut_ry, self.cut_w = np.append(self.cut_ry, ry), np.append(self.cut_w, w)
        else:
            self.cut_m[k], self.cut_ry[k], self.cut_w[k] = m, ry, w
        self.cuts_made += 1
        self.ub[m >= 1] = np.minimum(self.ub[m >= 1], max(w, 0))

    def dual_bound(self, c: int) -> float:
        """The least bound on E_c of the dual cuts that cover class c (inf if none does)."""
        if not len(self.cut_w):
            return np.inf
        cover = self.cut_m[:, c] >= 1
        return float(max(self.cut_w[cover].min(), 0)) if cover.any() else np.inf

    # ----------------------------------------------------------------- the LP (class-aggregated placement)
    # The LP works in units of S milli-cube (lp_scale): every bound is divided by S on the way in and every value
    # multiplied by S on the way out; both are exact (S is a power of two). Duals are the same in either unit.
    def fix_class(self, c: int) -> None:
        """class_balance[c] = D_c, after D_c changed."""
        v = float(self.D[c]) / self.S
        self.h.changeRowBounds(int(self.n_lp_pool + c), v, v)

    def open_extra(self, c: int, cap: float) -> None:
        """extra[c] <= cap milli-cube (0 closes it)."""
        self.h.changeColBounds(int(c), 0.0, float(cap) / self.S)

    def _raw(self, out) -> np.ndarray:
        """The LP's values in the full layout (every class arc, then extra[c]); arcs outside the working set are 0."""
        col = out.x if out.x is not None else np.asarray(self.h.getSolution().col_value)
        ncl = self.d.n_classes
        x = np.zeros(self.n_arcs + ncl)
        x[self.work] = col[ncl:]
        x[self.n_arcs :] = col[:ncl]
        return x

    def _values(self, out) -> np.ndarray:
        return self._raw(out) * self.S

    def _lp(self) -> None:
        d = self.d
        nca = len(d.carc_class)
        used = np.unique(d.centry_pool)
        self.used = used
        pos = np.full(self.n_pool + 1, -1)
        pos[used] = np.arange(len(used))
        self.n_lp_pool = len(used)
        # Columns: extra[c] (one per class), then the working set of place columns (class arcs, models/clearing.md,
        # "The room LP's working set"). Rows: pool_capacity, then class_balance[c]: sum of c's place - extra[c] = D_c.
        # The objective max sum extra never changes; extra[c] is opened (upper bound = what the request asks) only
        # while c is the one asking.
        ncl = d.n_classes
        self.n_arcs = nca
        rows = np.concatenate([pos[d.centry_pool], len(used) + d.carc_class, len(used) + np.arange(ncl)])
        cols = np.concatenate([d.centry_carc, np.arange(nca), nca + np.arange(ncl)])
        vals = np.concatenate([np.ones(len(d.centry_pool) + nca), -np.ones(ncl)])
        self._entries = (rows, cols, vals)  # the full layout (arcs, then extras), for _violation
        # Each arc's LP rows (its pool rows, padded with a row whose dual is 0), for pricing arcs outside the LP.
        self.arc_lprows = np.where(self.arc_rows < self.n_pool, pos[np.minimum(self.arc_rows, self.n_pool)], len(used) + ncl)
        self.S = lp_scale(self.R[used])
        self.snap = snap_tolerance(self.S, self.options.feasibility_tolerance)
        # The first LP holds every arc; later ones only the working set (see _admit and _prune).
        self.work = np.arange(nca)
        self.in_work = np.ones(nca, dtype=bool)
        hcols = np.where(cols < nca, ncl + cols, cols - nca)
        start, index, value = csr_from_triplets(rows, hcols, vals, len(used) + ncl)
        lp = LinearProgram(
            col_cost=np.concatenate([np.ones(ncl), np.zeros(nca)]), col_lower=np.zeros(nca + ncl),
            col_upper=np.concatenate([np.zeros(ncl), np.full(nca, np.inf)]),
            row_lower=np.concatenate([np.full(len(used), -np.inf), self.D / self.S]),
            row_upper=np.concatenate([self.R[used] / self.S, self.D / self.S]),
            row_start=start, col_index=index, value=value, maximize=True,
        )
        self.h = new_warm_lp(self.options)
        pass_model(self.h, lp)

    # ----------------------------------------------------------------- the working set of arcs
    def _admit(self, arcs: np.ndarray) -> None:
        """Add place columns for `arcs` (those not in the LP yet), at 0: the basis stays valid."""
        arcs = arcs[~self.in_work[arcs]]
        if not len(arcs):
            return
        lr = self.arc_lprows[arcs]
        ok = lr < self.n_lp_pool + self.d.n_classes
        n_pool_ent = ok.sum(axis=1)
        per = n_pool_ent + 1
        start = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.int32)
        index = np.empty(int(per.sum()), dtype=np.int32)
        # each column: its pool rows, then its class row
        col_of = np.repeat(np.arange(len(arcs)), n_pool_ent)
        slot = np.arange(len(col_of)) - np.repeat(np.cumsum(n_pool_ent) - n_pool_ent, n_pool_ent)
        index[start[col_of] + slot] = lr[ok]
        index[start + n_pool_ent] = self.n_lp_pool + self.d.carc_class[arcs]
        value = np.ones(len(index))
        zeros = np.zeros(len(arcs))
        self.h.addCols(len(arcs), zeros, zeros, np.full(len(arcs), np.inf), len(index), start, index, value)
        self.work = np.concatenate([self.work, arcs])
        self.in_work[arcs] = True

    def _price(self, out) -> np.ndarray:
        """Arcs outside the LP whose reduced cost, at the LP's duals, would improve it (beyond the dual tolerance)."""
        if self.in_work.all():
            return np.zeros(0, dtype=np.int64)
        if out.row_duals is None:  # no duals to price by: take every arc, the LP over all of them
            return np.flatnonzero(~self.in_work)
        y = np.concatenate([out.row_duals, [0.0]])
        # reduced cost of place[a] (cost 0): -(sum of its rows' duals), HiGHS's sign (checked against its col_dual)
        rc = -(y[self.arc_lprows].sum(axis=1) + y[self.n_lp_pool + self.d.carc_class])
        return np.flatnonzero((rc > self.options.feasibility_tolerance) & ~self.in_work)

    def _prune(self, out) -> None:
        """Drop the place columns that are nonbasic at 0 once the LP holds more than WORK_MAX x its rows: the working
        set stays near the basis; an arc dropped comes back when its reduced cost asks for it (_price)."""
        ncl = self.d.n_classes
        if len(self.work) <= WORK_MAX * (self.n_lp_pool + ncl):
            return
        status = np.array([int(s) for s in self.h.getBasis().col_status[ncl:]])
        col = out.x[ncl:] if out.x is not None else np.asarray(self.h.getSolution().col_value)[ncl:]
        drop = (status != BASIC) & (col <= 0)
        if not drop.any():
            return
        self.h.deleteCols(int(drop.sum()), (ncl + np.flatnonzero(drop)).astype(np.int32))
        self.in_work[self.work[drop]] = False
        self.work = self.work[~drop]

    def _solve(self, c: int | None, admit: np.ndarray | None = None) -> np.ndarray:
        """Solve the room LP over its working set, adding the arcs `admit` first and then every arc outside it whose
        reduced cost asks to enter, until none does: the optimum of the LP over all arcs."""
        if admit is not None:
            self._admit(admit)
        while True:
            out = self._run()
            more = self._price(out)
            if not len(more):
                break
            self.priced += len(more)
            self._admit(more)
        self.lp_calls += 1
        self._last = out
        self._x = self._values(out)
        self._prune(out)
        return np.maximum(self._x[: self.n_arcs], 0.0)

    def _run(self):
        out = run_highs(self.h, is_mip=False)
        if out.status != "optimal":
            # Primal simplex from the previous basis is the fast path (only the asking class's column opened), but
            # it was seen to report a feasible room LP infeasible: such an answer is re-checked from scratch by
            # dual simplex before it counts.
            self.fallbacks += 1
            out = rerun_from_scratch(self.h)
        what = f"clearing round {self.d.round} (priority: room for one class)"
        strict = self.options.model_copy(update={"allow_nonoptimal": False})
        out = check_outcome(out, strict, what)
        if self._violation(self._raw(out)) > self.options.feasibility_tolerance:
            # The warm-started values drifted from what the basis gives: recompute them from a fresh factorization
            # (models/clearing.md, "Units of the room LP"); from scratch if that does not bring them back.
            self.refreshes += 1
            out = check_outcome(refresh_values(self.h), strict, what)
            if self._violation(self._raw(out)) > self.options.feasibility_tolerance:
                out = check_outcome(rerun_cold(self.h), strict, what)
        return out

    def _working(self, classes: np.ndarray) -> np.ndarray:
        """The arcs the next LP must hold: the placement's (so that it is feasible) and the asking classes'."""
        own = np.concatenate([np.arange(self.cstart[c], self.cstart[c + 1]) for c in np.atleast_1d(classes).tolist()] or [[]])
        return np.union1d(np.flatnonzero(self.Z > 0), own.astype(np.int64))

    def _violation(self, x: np.ndarray) -> float:
        """The largest amount (LP units) by which x breaks a row of the room LP or goes below zero, computed from x
        itself (not from the solver's running row values)."""
        rows, cols, vals = self._entries
        act = np.bincount(rows, weights=vals * x[cols], minlength=self.n_lp_pool + self.d.n_classes)
        over = act[: self.n_lp_pool] - self.R[self.used] / self.S
        off = np.abs(act[self.n_lp_pool :] - self.D / self.S)
        return float(max(over.max(initial=0.0), off.max(initial=0.0), -x.min(initial=0.0)))

    def lp_extra(self, c: int, cap: int) -> int:
        """min(cap, E_c) exactly: E_c = max cube class c can add with every other class's cube fixed."""
        if self.h is None:
            self._lp()
        s, e = self.cstart[c], self.cstart[c + 1]
        self.open_extra(c, cap)
        x = self._solve(c, self._working(c))
        self.open_extra(c, 0)
        self._lp_x, self._lp_c = x, c
        value = min(_snap(float(x[s:e].sum()) - float(self.D[c]), self.snap), cap)
        if value < cap:
            self.record_cut()
        return value

    def lp_joint(self, classes: np.ndarray, dem: np.ndarray) -> np.ndarray:
        """The room LP with the extras of `classes` all open, each up to dem[c]: the most of their asks that fits
        together (maximising their sum), as the extra each class got (milli-cube). Nothing is committed."""
        if self.h is None:
            self._lp()
        for c in classes.tolist():
            self.open_extra(c, dem[c])
        self._solve(None, self._working(classes))
        for c in classes.tolist():
            self.open_extra(c, 0)
        self.record_cut()
        return self._x[self.n_arcs + classes]

    def _trimmed(self, x: np.ndarray, classes, excess) -> np.ndarray:
        """The LP's placement with `excess` taken off each class's last FCs (fewer cube is always feasible; the
        freed room stays at the class's own FCs)."""
        Z = np.maximum(x[: self.n_arcs], 0.0)
        for c, ex in zip(np.atleast_1d(classes).tolist(), np.atleast_1d(excess).tolist()):
            if ex > 0:
                s, e = self.cstart[c], self.cstart[c + 1]
                part = Z[s:e][::-1]
                cut = np.clip(ex - (np.cumsum(part) - part), 0.0, part)
                Z[s:e] = (part - cut)[::-1]
        return Z

    def commit_lp(self, c: int, a: int) -> None:
        s, e = self.cstart[c], self.cstart[c + 1]
        Z = self._trimmed(self._lp_x, c, self._lp_x[s:e].sum() - (self.D[c] + a))
        self.add_cube(np.array([c]), np.array([a], dtype=np.int64))
        self._set_placement(Z)


CHUNK_FIRST, CHUNK_MAX, LP_CHUNK_FIRST, LP_CHUNK_MAX = 64, 1 << 16, 2, 1024
WORK_MAX = 3  # the room LP's working set is pruned back to its basis when it holds more arcs than this x its rows
BASIC = int(highspy.HighsBasisStatus.kBasic)
CUTS_MAX = 256  # dual cuts kept (the oldest is replaced)
CUT_Y_MAX = 1 << 20  # a rounded pool dual above this is clipped (keeps R.y in int64; any y >= 0 is valid)


def _grant_chunk(st: _State, idx: np.ndarray, req_class: np.ndarray, u: np.ndarray, rem: np.ndarray, grant: np.ndarray,
                 avail_of: np.ndarray, use_lp: bool = False) -> int:
    """The next requests in rank order, granted in full at once as far as their classes can hold all of them together
    (then each one, at its turn, could have had all it asks: the rule's answer). First by the direct room (all of
    them or none); then, with `use_lp`, by one room LP with their classes' extras open: it grants the longest
    prefix of requests whose classes all got their whole ask in it. Requests of a class known to be full get
    nothing, as one at a time. Returns how many requests were decided (0: nothing changed but, after an LP, the
    placement); the caller takes the rest one at a time or in smaller chunks."""
    cls = req_class[idx]
    live = st.ub[cls] > 0
    dem = int_bincount(cls[live], u[idx][live], len(rem))
    classes = np.flatnonzero(dem)
    saved = (st.Z.copy(), st.room.copy(), st.D.copy())
    n = len(idx)
    for c in classes.tolist():
        avail, total = st.direct(c)
        if total < dem[c]:
            st.restore(saved)
            n = _lp_prefix(st, idx, cls, live, u, dem, classes) if use_lp else 0
            if n == 0:
                return 0
            live[n:] = False
            dem = int_bincount(cls[:n][live[:n]], u[idx[:n]][live[:n]], len(rem))
            classes = np.flatnonzero(dem)
            break
        st.commit_direct(c, avail, int(dem[c]))
    granted = idx[:n][live[:n]]
    grant[granted] = u[granted]
    avail_of[granted] = u[granted]
    bounded = classes[st.ub[classes] != np.iinfo(np.int64).max]
    st.ub[bounded] -= dem[bounded]
    rem -= int_bincount(cls[:n], u[idx[:n]], len(rem))
    return n


def _lp_prefix(st: _State, idx, cls, live, u, dem, classes) -> int:
    """How many of the chunk's requests one room LP grants in full (see _grant_chunk), committing them. A class whose
    bound (cached, or a dual cut's) is below its ask in the chunk cannot get it: the chunk ends before its first
    request without an LP. Then the LP: the prefix ends before the first request of a class whose extra fell short
    of its ask. The prefix's asks are at most what the LP placed, so its placement, trimmed, holds them."""
    short = np.zeros(len(dem), dtype=bool)
    low = np.array([st.ub[b] < dem[b] or st.dual_bound(b) < dem[b] for b in classes.tolist()], dtype=bool)
    short[classes[low]] = True
    first = np.flatnonzero(live & short[cls])
    n = int(first[0]) if len(first) else len(idx)
    if n == 0:
        return 0
    pdem = int_bincount(cls[:n][live[:n]], u[idx[:n]][live[:n]], len(dem))
    pclasses = np.flatnonzero(pdem)
    got = st.lp_joint(pclasses, pdem)
    # No tolerance: an extra at its bound is exactly its ask (simplex leaves it there); one a hair short (basic) is
    # short, or pools filled to the brim would be over by the shortfalls of many classes at once.
    short[pclasses[got < pdem[pclasses]]] = True
    first = np.flatnonzero(live[:n] & short[cls[:n]])
    n = int(first[0]) if len(first) else n
    take = int_bincount(cls[:n][live[:n]], u[idx[:n]][live[:n]], len(dem))
    # The LP's placement with what the prefix does not take back off: the freed room stays at the FCs of the classes
    # about to ask (so even n = 0 leaves a better placement).
    Z = st._trimmed(st._x, pclasses, got - take[pclasses])
    if n:
        st.add_cube(pclasses, take[pclasses])
    st._set_placement(Z)
    return n


def clear_by_priority(d, options: SolverOptions, chunks: bool = True) -> PriorityOutcome:
    """The priority rule on a prepared round (see the module docstring). `chunks=False` takes the requests one at a
    time (the plain method, which the tests compare the chunked one against)."""
    st = _State(d, options)
    u, m = d.max_milli, d.min_milli
    grant, avail_of = np.zeros(d.n, np.int64), np.zeros(d.n, np.int64)
    order = rank_order(d.fee, d.req["submitted_at"].to_numpy(), d.req["request_id"].to_numpy())
    # Cube still to be asked by each class (this request included): the room LP looks for all of it at once, and
    # trimming its placement back to what is granted leaves that room at the class's own FCs for its next requests.
    rem = int_bincount(d.req_class, u, d.n_classes)
    # Chunks of requests granted at once: they grow while they fit and halve when they do not. A chunk the direct
    # room cannot hold is tried by one room LP when it is at least `lp_from` long; a failed LP try doubles that
    # length (a success resets it), so a full market wastes few LPs.
    # After an LP granted a prefix, the one request that ended it is taken alone; the next chunk then starts at the
    # length that LP was given (`resume`), not at 2: in a nearly full market, regrowing from 2 costs an LP at every
    # doubling, about ten times the LPs for the same grants (benchmarks/rounds.py shows the count).
    pos, k, lp_from, resume = 0, CHUNK_FIRST, LP_CHUNK_FIRST, 2
    while pos < len(order):
        if chunks and k > 1:
            use_lp = lp_from <= k <= LP_CHUNK_MAX
            chunk = order[pos : pos + k]
            n = _grant_chunk(st, chunk, d.req_class, u, rem, grant, avail_of, use_lp)
            pos += n
            if n == len(chunk):
                k = min(2 * k, CHUNK_MAX)
                lp_from = LP_CHUNK_FIRST if use_lp else lp_from
                continue
            if use_lp:
                # an LP that granted half the chunk or more pays; one that granted less makes LPs rarer
                lp_from = LP_CHUNK_FIRST if 2 * n >= len(chunk) else min(2 * lp_from, LP_CHUNK_MAX)
            if n and use_lp:
                resume = len(chunk)
            k = 1 if n else k // 2  # after a granted prefix, the next request is one whose class fell short
            if k > 1:
                continue
        i, pos, k, resume = order[pos], pos + 1, resume, 2
        c, ui, mi = int(d.req_class[i]), int(u[i]), int(m[i])
        rem[c] -= ui
        if st.ub[c] <= 0:
            continue
        avail, direct_total = st.direct(c)
        if direct_total >= ui:
            a, via = ui, "direct"
        elif st.exact_direct[c]:
            a, via = direct_total, "direct"
            st.ub[c] = direct_total
        elif (hb := min(st.hall_bound(c), int(np.floor(min(st.dual_bound(c), 9e18) + 1e-6)))) <= direct_total:
            a, via = direct_total, "direct"  # direct room <= E_c <= bound (Hall or LP dual): exact
            st.ub[c] = direct_total
        elif min(st.ub[c], hb) < max(mi, 1) and direct_total > 0:
            a, via = min(direct_total, ui), "bound"  # some room, less than min_cube: no need for the exact amount
        else:
            cap = ui + int(rem[c])
            e = st.lp_extra(c, cap)
            if e < cap:
                st.ub[c] = e
            a, via = min(e, ui), "lp"
            if a >= ui:
                # Room exists but the placement hid it: the next requests are tried together by one LP again.
                lp_from = LP_CHUNK_FIRST
        avail_of[i] = a
        if a <= 0 or a < mi:
            continue
        if via == "direct" or (via == "lp" and a <= direct_total):
            st.commit_direct(c, avail, a)
        else:
            st.commit_lp(c, a)
        grant[i] = a
        if st.ub[c] != np.iinfo(np.int64).max:
            st.ub[c] -= a
    return PriorityOutcome(grant, avail_of, st.Z, st.lp_calls)


def place_classes(d, grant_milli: np.ndarray, options: SolverOptions) -> np.ndarray:
    """Where the cube sits, in milli-cube per class arc: one placement chosen from the class totals alone (this
    round's grants plus the held ones), so that every way of computing the rule publishes the same placement.
    Classes with a single FC need no choice; otherwise one feasibility LP of the class-aggregated model."""
    D = int_bincount(d.req_class, grant_milli, d.n_classes) + int_bincount(d.held_class, d.held_milli, d.n_classes)
    st = _State.__new__(_State)
    st.d, st.options = d, options
    cstart = np.searchsorted(d.carc_class, np.arange(d.n_classes + 1))
    Z = np.zeros(len(d.carc_class))
    if len(Z) == 0:
        return Z
    if (np.diff(cstart) == 1).all():
        Z[cstart[:-1]] = D
        return Z
    st.n_pool, st.R, st.D = len(d.pools), to_milli(d.pools["pool_cube"].to_numpy()).astype(float), D.astype(np.int64)
    st.arc_rows = arc_rows(d)
    st._lp()
    st.lp_calls = st.fallbacks = st.refreshes = st.priced = 0
    return st._solve(None)
