"""The fast path: the LP aggregated by eligibility class (models/baseline.md, "Fast path"), solved exactly on its
margin (`solve_by_margin`, "The exact fast method") or whole (`method="class_lp"`, the reference it is tested
against)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..progress import note, stage
from ..schemas import SolverOptions
from ..solver import INFEASIBLE, OPTIMAL, LinearProgram, check_outcome, csr_from_triplets, solve_arrays
from .data import BaselineData, ClassLayout, tier_lower_bounds
from .reference import diagnose_infeasible
from .results import BaselineSolution, finish_baseline


def build_baseline_class_arrays(d: BaselineData, layout: ClassLayout) -> tuple[LinearProgram, dict[str, slice]]:
    r"""The baseline LP with placement aggregated by eligibility class (models/baseline.md, "Fast path").

    Columns: tier (CELLS x TIERS, cell-major), then place_class (CLASS_ARCS).
    Rows: fc_capacity[f,k,t]: \sum_{class arcs at f,k,t} place_class <= net capacity;
          class_balance[class]: \sum_f place_class - \sum_{c in class, j} tier[c,j] = 0.
    seller_floor becomes lower bounds on tier (see `tier_lower_bounds`).
    """
    n_cells, J = len(d.cells), d.n_tiers
    n_tier, n_ca = n_cells * J, len(layout.arc_class)
    cap_rows = np.unique(layout.arc_cap)
    cap_pos = np.full(len(d.capacity), -1)
    cap_pos[cap_rows] = np.arange(len(cap_rows))
    r_bal = len(cap_rows)
    n_rows = r_bal + layout.n_classes
    ca = np.arange(n_ca)
    rows = np.concatenate([cap_pos[layout.arc_cap], r_bal + layout.arc_class, r_bal + np.repeat(layout.cell_class, J)])
    cols = np.concatenate([n_tier + ca, n_tier + ca, np.arange(n_tier)])
    vals = np.concatenate([np.ones(n_ca), np.ones(n_ca), -np.ones(n_tier)])
    start, index, value = csr_from_triplets(rows, cols, vals, n_rows)
    lp = LinearProgram(
        col_cost=np.concatenate([np.where(d.tier_width > 0, d.tier_coef, 0.0).ravel(), np.zeros(n_ca)]),
        col_lower=np.concatenate([tier_lower_bounds(d).ravel(), np.zeros(n_ca)]),
        col_upper=np.concatenate([d.tier_width.ravel(), np.full(n_ca, np.inf)]),
        row_lower=np.concatenate([np.full(len(cap_rows), -np.inf), np.zeros(layout.n_classes)]),
        row_upper=np.concatenate([d.capacity["net_cube"].to_numpy()[cap_rows], np.zeros(layout.n_classes)]),
        row_start=start,
        col_index=index,
        value=value,
        maximize=True,
    )
    return lp, {"fc_capacity": slice(0, r_bal), "class_balance": slice(r_bal, n_rows)}


@dataclass
class Pieces:
    """The tier columns of a market, flattened: piece p is tier j of cell c (p = c * J + j), of class cls[p],
    worth coef[p] per cube, with bounds [lb[p], ub[p]]."""

    coef: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    cls: np.ndarray


def _pieces(d: BaselineData, layout: ClassLayout) -> Pieces:
    J = d.n_tiers
    return Pieces(np.where(d.tier_width > 0, d.tier_coef, 0.0).ravel(), tier_lower_bounds(d).ravel(), d.tier_width.ravel(),
                  np.repeat(layout.cell_class, J))


def _restricted_lp(d: BaselineData, layout: ClassLayout, pc: Pieces, cols: np.ndarray, fixed: np.ndarray) -> LinearProgram:
    """The class LP over the piece columns `cols` only (plus every class arc); every other piece is held at its
    value in `fixed`, which moves to the right-hand side of its class_balance row."""
    n_free, n_ca = len(cols), len(layout.arc_class)
    cap_rows = np.unique(layout.arc_cap)
    cap_pos = np.full(len(d.capacity), -1)
    cap_pos[cap_rows] = np.arange(len(cap_rows))
    r_bal = len(cap_rows)
    held = np.ones(len(pc.coef), dtype=bool)
    held[cols] = False
    rhs = np.bincount(pc.cls[held], weights=fixed[held], minlength=layout.n_classes)
    ca = np.arange(n_ca)
    rows = np.concatenate([cap_pos[layout.arc_cap], r_bal + layout.arc_class, r_bal + pc.cls[cols]])
    col_ix = np.concatenate([n_free + ca, n_free + ca, np.arange(n_free)])
    vals = np.concatenate([np.ones(n_ca), np.ones(n_ca), -np.ones(n_free)])
    start, index, value = csr_from_triplets(rows, col_ix, vals, r_bal + layout.n_classes)
    return LinearProgram(
        col_cost=np.concatenate([pc.coef[cols], np.zeros(n_ca)]),
        col_lower=np.concatenate([pc.lb[cols], np.zeros(n_ca)]),
        col_upper=np.concatenate([pc.ub[cols], np.full(n_ca, np.inf)]),
        row_lower=np.concatenate([np.full(r_bal, -np.inf), rhs]),
        row_upper=np.concatenate([d.capacity["net_cube"].to_numpy()[cap_rows], rhs]),
        row_start=start, col_index=index, value=value, maximize=True,
    )


def _block_start(d: BaselineData, layout: ClassLayout, pc: Pieces, options: SolverOptions, blocks: int):
    """Where to start: the class LP with each class's pieces, sorted by value, merged into `blocks` columns of their
    summed width and width-weighted value. Its solution says, per class, which blocks are full, which are empty and
    where the margin lies: pieces of full blocks start held at their upper bound, of empty ones at their floor, and
    the pieces of the marginal blocks (a partial block, or the two either side of the full/empty boundary) start
    free. That start is feasible (the merged solution is a point of it), so the first margin LP always solves.
    Returns (held values, free mask), or None when the merged LP fails."""
    order = np.lexsort((-pc.coef, pc.cls))
    cls = pc.cls[order]
    first = np.searchsorted(cls, np.arange(layout.n_classes))
    size = np.bincount(cls, minlength=layout.n_classes)
    rank = np.arange(len(cls)) - first[cls]
    block = cls * blocks + (rank * blocks) // np.maximum(size[cls], 1)
    n = layout.n_classes * blocks
    ub = np.bincount(block, weights=pc.ub[order], minlength=n)
    lb = np.bincount(block, weights=pc.lb[order], minlength=n)
    worth = np.bincount(block, weights=(pc.coef * pc.ub)[order], minlength=n)
    keep = ub > 0
    merged = Pieces(np.divide(worth, ub, out=np.zeros(n), where=keep)[keep], lb[keep], ub[keep], np.repeat(np.arange(layout.n_classes), blocks)[keep])
    out = solve_arrays(_restricted_lp(d, layout, merged, np.arange(len(merged.coef)), np.zeros(len(merged.coef))), options,
                       what="baseline allocation (first prices)", check=False)
    if out.status != OPTIMAL or out.row_duals is None:
        return None
    x = np.zeros(n)
    x[keep] = out.x[: len(merged.coef)]
    eps = 1e-9 * np.maximum(ub, 1.0)
    full = (keep & (x >= ub - eps)).reshape(layout.n_classes, blocks)
    empty = (~keep | (x <= lb + eps)).reshape(layout.n_classes, blocks)
    partial = ~full & ~empty
    nxt = np.concatenate([full[:, 1:], np.zeros((layout.n_classes, 1), bool)], axis=1)
    prv = np.concatenate([np.ones((layout.n_classes, 1), bool), full[:, :-1]], axis=1)
    marginal = (partial | (full & ~nxt) | (~full & prv)).ravel()
    free = np.zeros(len(pc.coef), dtype=bool)
    free[order] = marginal[block]
    held = np.where(full.ravel()[block], pc.ub[order], pc.lb[order])
    fixed = np.empty(len(pc.coef))
    fixed[order] = held
    return fixed, free


def _class_prices(out, layout: ClassLayout) -> np.ndarray:
    """λ_c, the value of one more cube of class c's limit: minus the dual of its class_balance row (the tier
    columns enter that row with -1), so a piece above λ is full and one below is at its floor."""
    r_bal = len(out.row_duals) - layout.n_classes
    return -np.asarray(out.row_duals[r_bal:])


def solve_by_margin(d: BaselineData, layout: ClassLayout, options: SolverOptions, blocks: int = 64):
    """The class LP solved exactly on its margin (models/baseline.md, "The exact fast method").

    Every optimum fills a class's pieces worth more than the class's marginal value λ_c and leaves those worth
    less at their floor; only pieces near λ_c are undecided. So: start from a small LP over merged pieces
    (`_block_start`: pieces of full blocks held at their upper bound, of empty ones at their floor, the marginal
    blocks free), solve the LP over the free pieces, and check the held pieces against its λ (the reduced-cost
    test of LP optimality). Pieces
    that fail join the free set and the LP is solved again; when none fails, the held values and the small
    LP's solution are an optimum of the whole LP, with its duals. Returns (tier, class_place, fc duals by
    capacity row, objective, status, free pieces in the last LP)."""
    pc = _pieces(d, layout)
    n_pieces = len(pc.coef)
    start = _block_start(d, layout, pc, options, blocks) if n_pieces else None
    if start is None:  # no pieces, or the merged LP failed (infeasible floors, say): the whole LP decides and diagnoses
        fixed, free = pc.lb.copy(), np.ones(n_pieces, dtype=bool)
    else:
        fixed, free = start
    tol = 1e-9 * max(1.0, float(np.abs(pc.coef).max(initial=0.0)))
    for _ in range(100):
        cols = np.flatnonzero(free)
        outcome = solve_arrays(_restricted_lp(d, layout, pc, cols, fixed), options, what="baseline allocation", check=False)
        if outcome.status != OPTIMAL or outcome.row_duals is None:
            if free.all():  # the whole LP itself: infeasible, or stopped at a limit (its best point, if any, is returned)
                if outcome.x is None:
                    return None, None, None, None, outcome, len(cols)
                duals = None if outcome.row_duals is None else outcome.row_duals[: len(np.unique(layout.arc_cap))]
                tier = outcome.x[: len(cols)].reshape(len(d.cells), d.n_tiers)
                return tier, outcome.x[len(cols):], duals, float(pc.coef @ tier.ravel()), outcome, len(cols)
            free[:] = True  # a solve stopped (the start is feasible, so not infeasible): the whole LP decides
            continue
        lam = _class_prices(outcome, layout)
        price = lam[pc.cls]
        held = ~free
        at_ub = fixed >= pc.ub
        wrong = held & (pc.ub > pc.lb) & ((at_ub & (pc.coef < price - tol)) | (~at_ub & (pc.coef > price + tol)))
        if not wrong.any():
            tier = fixed.copy()
            tier[cols] = outcome.x[: len(cols)]
            n_cap = len(np.unique(layout.arc_cap))
            objective = float(pc.coef @ tier)
            return tier.reshape(len(d.cells), d.n_tiers), outcome.x[len(cols):], outcome.row_duals[:n_cap], objective, outcome, len(cols)
        free |= wrong
    raise RuntimeError("baseline margin method did not converge")  # never seen: each round frees at least one piece


def solve_classes(d: BaselineData, options: SolverOptions, method: str = "margin") -> BaselineSolution:
    """The class-aggregated LP by highspy: solved on its margin (default), or whole (method="class_lp", the
    reference the margin method is tested against)."""
    with stage("baseline: build"):
        layout = d.layout
    with stage("baseline: solve"):
        if method == "margin":
            tier, class_place, duals, objective, outcome, n_free = solve_by_margin(d, layout, options)
            note(f"baseline: {len(d.cells) * d.n_tiers} tier columns, {n_free} near the margin solved by LP ({layout.n_classes} classes)")
        else:
            lp, fam = build_baseline_class_arrays(d, layout)
            note(f"baseline: LP with {len(lp.row_lower)} rows x {len(lp.col_cost)} columns ({layout.n_classes} eligibility classes)")
            outcome = solve_arrays(lp, options, what="baseline allocation", check=False)
            if outcome.x is not None:
                n_tier = len(d.cells) * d.n_tiers
                tier, class_place, objective = outcome.x[:n_tier].reshape(len(d.cells), d.n_tiers), outcome.x[n_tier:], outcome.objective
                duals = None if outcome.row_duals is None else outcome.row_duals[fam["fc_capacity"]]
    if outcome.status == INFEASIBLE:
        raise diagnose_infeasible(d, options)
    check_outcome(outcome, options, "baseline allocation")
    with stage("baseline: extract"):
        cap_dual = np.zeros(len(d.capacity))
        if duals is not None:
            cap_dual[np.unique(layout.arc_cap)] = duals
        return finish_baseline(d, tier, class_place, cap_dual, objective, outcome.status, "highspy")
