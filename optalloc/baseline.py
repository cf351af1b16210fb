"""Baseline allocation LP — formulation in models/baseline.md.

Layers: `prepare_baseline` (instance -> arrays, no model) -> `build_baseline_model` (Pyomo reference,
one `declare_*` per constraint family) or `build_baseline_arrays` (the same LP as arrays for highspy)
-> `solve_*` (optalloc.solver) -> `extract_baseline` (tidy DataFrames).

Sets: CELLS = needs rows (s, k, t); ARCS = (cell, f) with f an FC in the seller's regions holding
type k in month t; CAPACITY = FC rows (f, k, t); TIERS = 1..J.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from .errors import InfeasibleError
from .instance import Instance
from .placement import split_by_class
from .progress import note, stage
from .schemas import SolverOptions
from .solver import INFEASIBLE, OPTIMAL, LinearProgram, check_outcome, csr_from_triplets, solve_arrays, solve_pyomo

LIMIT_INDEX = ["seller_id", "storage_type", "month"]
PLACEMENT_INDEX = ["seller_id", "fc_id", "storage_type", "month"]
FC_INDEX = ["fc_id", "storage_type", "month"]


@dataclass
class ClassLayout:
    """Cells grouped by eligibility class (storage type, month, the seller's regions): sellers in one
    class can use exactly the same FCs, so where each one's cube sits does not change the LP."""

    cell_class: np.ndarray  # CELLS -> class
    arc_class: np.ndarray  # CLASS_ARCS -> class (sorted)
    arc_cap: np.ndarray  # CLASS_ARCS -> capacity row (sorted within a class)
    n_classes: int


@dataclass
class BaselineData:
    """Everything the baseline LP needs, as arrays aligned with its sets."""

    cells: pd.DataFrame  # CELLS: seller_id, storage_type, month, p50_cube, upper_cube, floor_cube, value
    tier_width: np.ndarray  # (n_cells, J) cube
    tier_coef: np.ndarray  # (n_cells, J) $/cube-month
    capacity: pd.DataFrame  # CAPACITY: fc_id, storage_type, month, capacity_cube, pool_cube, net_cube
    layout: ClassLayout  # eligibility classes and their arcs to capacity rows

    @property
    def n_tiers(self) -> int:
        return self.tier_width.shape[1]

    @cached_property
    def _arcs(self) -> tuple[np.ndarray, np.ndarray]:
        """ARCS, (cell, capacity row) in that order: every arc of each cell's class. Built only for the models that
        place cube per seller (the Pyomo reference, the single LP, the infeasibility diagnosis)."""
        lay = self.layout
        per_class = np.bincount(lay.arc_class, minlength=lay.n_classes)
        first = np.concatenate([[0], np.cumsum(per_class)[:-1]])
        count = per_class[lay.cell_class]
        arc_cell = np.repeat(np.arange(len(lay.cell_class)), count)
        within = np.arange(len(arc_cell)) - np.repeat(np.cumsum(count) - count, count)
        return arc_cell, lay.arc_cap[first[lay.cell_class][arc_cell] + within]

    @property
    def arc_cell(self) -> np.ndarray:
        return self._arcs[0]

    @property
    def arc_cap(self) -> np.ndarray:
        return self._arcs[1]

    @property
    def n_arcs(self) -> int:
        return len(self.arc_cell)


def seller_value(sellers: pd.DataFrame) -> pd.Series:
    """Value of a seller's space in $/cube-month: productivity x performance weight (0.5 at score 0, 1.5 at 1000)."""
    return sellers["productivity"] * (0.5 + sellers["performance_score"] / 1000.0)


def prepare_baseline(instance: Instance) -> BaselineData:
    s = instance.settings
    sellers = instance.sellers.set_index("seller_id")
    value = seller_value(sellers)
    top = float(value.max()) if len(value) and value.max() > 0 else 1.0
    # Compressed into [value_floor, 1], strictly increasing in value: with tier weights falling faster
    # than value_floor, every seller's tier j outranks anyone's tier j+1 (see models/baseline.md).
    norm = s.value_floor + (1.0 - s.value_floor) * (value / top)

    cells = instance.needs.copy()
    p50 = cells["p50_cube"].to_numpy()
    p90 = cells["p90_cube"].fillna(0.0).to_numpy()
    seller_floor = sellers["floor_cube"].reindex(cells["seller_id"]).to_numpy()
    floor = np.where(cells["floor_cube"].isna(), seller_floor, cells["floor_cube"].to_numpy())
    upper = np.maximum(np.maximum(p50, p90) * (1.0 + s.headroom), floor)
    cells["upper_cube"] = upper
    cells["floor_cube"] = floor
    cells["value"] = value.reindex(cells["seller_id"]).to_numpy()

    breaks = np.minimum(np.outer(p50, np.asarray(s.need_tiers)), upper[:, None])
    bounds = np.concatenate([np.zeros((len(cells), 1)), breaks, upper[:, None]], axis=1)
    tier_width = np.maximum(np.diff(bounds, axis=1), 0.0)
    tier_coef = top * np.outer(norm.reindex(cells["seller_id"]).to_numpy(), np.asarray(s.tier_weights))

    capacity = instance.fcs.copy()
    capacity["net_cube"] = capacity["capacity_cube"] - capacity["pool_cube"]

    cells = cells.reset_index(drop=True)
    capacity = capacity.reset_index(drop=True)
    return BaselineData(cells, tier_width, tier_coef, capacity, _eligibility_classes(cells, sellers["regions"], capacity))


def _eligibility_classes(cells: pd.DataFrame, regions_of_seller: pd.Series, capacity: pd.DataFrame) -> ClassLayout:
    """Classes = (storage type, month, the seller's set of regions), numbered in that sorted order, and each
    class's arcs: the FC rows of its type and month in one of its regions. Built per class, never per seller."""
    seller_regions, region_sets = pd.factorize(regions_of_seller.map(";".join), sort=True)
    set_of_cell = seller_regions[regions_of_seller.index.get_indexer(cells["seller_id"])]
    k_code, k_names = pd.factorize(cells["storage_type"], sort=True)
    t_code, t_names = pd.factorize(cells["month"], sort=True)
    key = (k_code.astype(np.int64) * len(t_names) + t_code) * len(region_sets) + set_of_cell
    keys, cell_class = np.unique(key, return_inverse=True)
    classes = pd.DataFrame({
        "cls": np.arange(len(keys)),
        "storage_type": np.asarray(k_names)[keys // (len(t_names) * len(region_sets))],
        "month": np.asarray(t_names)[(keys // len(region_sets)) % len(t_names)],
        "region": [region_sets[i].split(";") for i in keys % len(region_sets)],
    }).explode("region")
    caps = capacity[["region", "storage_type", "month"]].assign(cap=np.arange(len(capacity)))
    pairs = classes.merge(caps, on=["region", "storage_type", "month"]).sort_values(["cls", "cap"], kind="stable")
    return ClassLayout(cell_class.astype(np.int64), pairs["cls"].to_numpy(np.int64), pairs["cap"].to_numpy(np.int64), len(keys))


# ---------------------------------------------------------------- Pyomo reference model


def declare_sets(m: pyo.ConcreteModel, d: BaselineData) -> None:
    m.CELLS = pyo.RangeSet(0, len(d.cells) - 1)
    m.ARCS = pyo.RangeSet(0, d.n_arcs - 1)
    m.TIERS = pyo.RangeSet(0, d.n_tiers - 1)
    used = np.unique(d.arc_cap)
    m.CAPACITY = pyo.Set(initialize=used.tolist(), ordered=True)


def declare_variables(m: pyo.ConcreteModel, d: BaselineData) -> None:
    """place[a] >= 0: cube of an arc's seller at its FC; tier[c, j] in [0, width]: limit in tier j."""
    m.place = pyo.Var(m.ARCS, domain=pyo.NonNegativeReals)
    m.tier = pyo.Var(m.CELLS, m.TIERS, domain=pyo.NonNegativeReals, bounds=lambda m, c, j: (0.0, float(d.tier_width[c, j])))


def declare_fc_capacity(m: pyo.ConcreteModel, d: BaselineData) -> None:
    r"""fc_capacity[f,k,t]:  \sum_{s} place[s,f,k,t] <= capacity[f,k,t] - pool[f,k,t].  Dual: shadow price of space."""
    arcs_of = pd.Series(np.arange(d.n_arcs)).groupby(d.arc_cap).apply(list).to_dict()
    net = d.capacity["net_cube"].to_numpy()
    m.fc_capacity = pyo.Constraint(m.CAPACITY, rule=lambda m, r: sum(m.place[a] for a in arcs_of[r]) <= float(net[r]))


def declare_limit_balance(m: pyo.ConcreteModel, d: BaselineData) -> None:
    r"""limit_balance[s,k,t]:  \sum_f place[s,f,k,t] = \sum_j tier[s,k,t,j]  (= limit[s,k,t])."""
    arcs_of = pd.Series(np.arange(d.n_arcs)).groupby(d.arc_cell).apply(list).to_dict()
    m.limit_balance = pyo.Constraint(
        m.CELLS, rule=lambda m, c: sum(m.place[a] for a in arcs_of.get(c, [])) - sum(m.tier[c, j] for j in m.TIERS) == 0
    )


def declare_seller_floor(m: pyo.ConcreteModel, d: BaselineData) -> None:
    r"""seller_floor[s,k,t]:  \sum_j tier[s,k,t,j] >= floor[s,k,t]  (only where floor > 0)."""
    floor = d.cells["floor_cube"].to_numpy()
    m.FLOOR_CELLS = pyo.Set(initialize=np.flatnonzero(floor > 0).tolist(), ordered=True)
    m.seller_floor = pyo.Constraint(m.FLOOR_CELLS, rule=lambda m, c: sum(m.tier[c, j] for j in m.TIERS) >= float(floor[c]))


def declare_objective(m: pyo.ConcreteModel, d: BaselineData) -> None:
    r"""max \sum_{s,k,t,j} coef[s,j] tier[s,k,t,j]: value of space with diminishing returns by tier."""
    m.value_of_space = pyo.Objective(
        expr=sum(float(d.tier_coef[c, j]) * m.tier[c, j] for c in m.CELLS for j in m.TIERS if d.tier_width[c, j] > 0),
        sense=pyo.maximize,
    )


def build_baseline_model(d: BaselineData) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel(name="baseline")
    declare_sets(m, d)
    declare_variables(m, d)
    declare_fc_capacity(m, d)
    declare_limit_balance(m, d)
    declare_seller_floor(m, d)
    declare_objective(m, d)
    return m


# ---------------------------------------------------------------- the same LP as arrays


def build_baseline_arrays(d: BaselineData) -> tuple[LinearProgram, dict[str, slice]]:
    """Columns: place (ARCS), then tier (CELLS x TIERS, cell-major). Rows: fc_capacity, limit_balance, seller_floor.

    Returns the LP and the row slice of each constraint family (to read duals by family name).
    """
    n_cells, J, n_arcs = len(d.cells), d.n_tiers, d.n_arcs
    n_cols = n_arcs + n_cells * J
    tier_col = n_arcs + np.arange(n_cells * J).reshape(n_cells, J)
    cap_rows = np.unique(d.arc_cap)
    cap_pos = np.full(len(d.capacity), -1)
    cap_pos[cap_rows] = np.arange(len(cap_rows))
    floor = d.cells["floor_cube"].to_numpy()
    floor_cells = np.flatnonzero(floor > 0)
    r_cap, r_bal = 0, len(cap_rows)
    r_floor = r_bal + n_cells
    n_rows = r_floor + len(floor_cells)

    arcs = np.arange(n_arcs)
    rows = [cap_pos[d.arc_cap] + r_cap, d.arc_cell + r_bal, np.repeat(np.arange(n_cells), J) + r_bal]
    cols = [arcs, arcs, tier_col.ravel()]
    vals = [np.ones(n_arcs), np.ones(n_arcs), -np.ones(n_cells * J)]
    rows.append(np.repeat(np.arange(len(floor_cells)), J) + r_floor)
    cols.append(tier_col[floor_cells].ravel())
    vals.append(np.ones(len(floor_cells) * J))
    start, index, value = csr_from_triplets(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n_rows)

    inf = np.inf
    net = d.capacity["net_cube"].to_numpy()[cap_rows]
    lp = LinearProgram(
        col_cost=np.concatenate([np.zeros(n_arcs), np.where(d.tier_width > 0, d.tier_coef, 0.0).ravel()]),
        col_lower=np.zeros(n_cols),
        col_upper=np.concatenate([np.full(n_arcs, inf), d.tier_width.ravel()]),
        row_lower=np.concatenate([np.full(len(cap_rows), -inf), np.zeros(n_cells), floor[floor_cells]]),
        row_upper=np.concatenate([net, np.zeros(n_cells), np.full(len(floor_cells), inf)]),
        row_start=start,
        col_index=index,
        value=value,
        maximize=True,
    )
    families = {"fc_capacity": slice(r_cap, r_bal), "limit_balance": slice(r_bal, r_floor), "seller_floor": slice(r_floor, n_rows)}
    return lp, families


# ---------------------------------------------------------------- the fast path: placement by eligibility class


def tier_lower_bounds(d: BaselineData) -> np.ndarray:
    """A floor as lower bounds on the tiers, filled in tier order. Exact: a seller's tier coefficients
    strictly decrease, so every optimum fills its tiers in order, and then sum(tier) >= floor is this."""
    floor = d.cells["floor_cube"].to_numpy()[:, None]
    before = np.cumsum(d.tier_width, axis=1) - d.tier_width
    return np.clip(floor - before, 0.0, d.tier_width)


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


# ---------------------------------------------------------------- the exact fast method: the LP on its margin


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


def _block_prices(d: BaselineData, layout: ClassLayout, pc: Pieces, options: SolverOptions, blocks: int) -> np.ndarray:
    """A first guess of each class's marginal value: the class LP with each class's pieces, sorted by value,
    merged into `blocks` columns of their summed width and width-weighted value."""
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
    return _class_prices(out, layout)


def _class_prices(out, layout: ClassLayout) -> np.ndarray:
    """λ_c, the value of one more cube of class c's limit: minus the dual of its class_balance row (the tier
    columns enter that row with -1), so a piece above λ is full and one below is at its floor."""
    r_bal = len(out.row_duals) - layout.n_classes
    return -np.asarray(out.row_duals[r_bal:])


def solve_by_margin(d: BaselineData, layout: ClassLayout, options: SolverOptions, blocks: int = 32, band: float = 0.02):
    """The class LP solved exactly on its margin (models/baseline.md, "The exact fast method").

    Every optimum fills a class's pieces worth more than the class's marginal value λ_c and leaves those worth
    less at their floor; only pieces near λ_c are undecided. So: guess λ from a small LP over merged pieces,
    hold every piece clearly above (below) its λ at its upper (lower) bound, solve the LP over the pieces near
    the margin, and check the held pieces against the new λ (the reduced-cost test of LP optimality). Pieces
    that fail join the free set and the LP is solved again; when none fails, the held values and the small
    LP's solution are an optimum of the whole LP, with its duals. Returns (tier, class_place, fc duals by
    capacity row, objective, status, free pieces in the last LP)."""
    pc = _pieces(d, layout)
    n_pieces = len(pc.coef)
    lam = _block_prices(d, layout, pc, options, blocks) if n_pieces else np.zeros(layout.n_classes)
    if lam is None:  # the merged LP failed (infeasible floors, say): the whole LP decides and diagnoses
        lam = np.zeros(layout.n_classes)
        free = np.ones(n_pieces, dtype=bool)
    else:
        price = lam[pc.cls]
        free = np.abs(pc.coef - price) <= band * np.maximum(np.abs(price), 1e-12)
    tol = 1e-9 * max(1.0, float(np.abs(pc.coef).max(initial=0.0)))
    for _ in range(50):
        price = lam[pc.cls]
        fixed = np.where(pc.coef > price, pc.ub, pc.lb)
        cols = np.flatnonzero(free)
        outcome = solve_arrays(_restricted_lp(d, layout, pc, cols, fixed), options, what="baseline allocation", check=False)
        if outcome.status != OPTIMAL or outcome.row_duals is None:
            if free.all():
                return None, None, None, None, outcome, len(cols)
            free[:] = True  # held pieces made it infeasible: let the whole LP decide
            continue
        lam = _class_prices(outcome, layout)
        price = lam[pc.cls]
        held = ~free
        wrong = held & (((fixed == pc.ub) & (pc.coef < price - tol) & (pc.ub > pc.lb)) | ((fixed == pc.lb) & (pc.coef > price + tol) & (pc.ub > pc.lb)))
        if not wrong.any():
            tier = fixed.copy()
            tier[cols] = outcome.x[: len(cols)]
            n_cap = len(np.unique(layout.arc_cap))
            objective = float(pc.coef @ tier)
            return tier.reshape(len(d.cells), d.n_tiers), outcome.x[len(cols):], outcome.row_duals[:n_cap], objective, outcome, len(cols)
        free |= wrong
    raise RuntimeError("baseline margin method did not converge")  # never seen: each round frees at least one piece


def split_class_placement(d: BaselineData, limit: np.ndarray, class_place: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place each seller's limit at its class's FCs (`optalloc.placement.split_by_class`): (cell, capacity row,
    cube) triplets."""
    lay = d.layout
    cell, ca, amount = split_by_class(lay.cell_class, limit, lay.arc_class, class_place, lay.n_classes)
    return cell, lay.arc_cap[ca], amount


def split_ties(d: BaselineData, tier: np.ndarray) -> np.ndarray:
    """The documented split of ties (models/baseline.md, "Ties"): within an eligibility class, tier pieces of equal
    value are interchangeable (same FCs, same worth per cube), so whatever cube an optimum gives such a group is
    shared in proportion to the pieces' widths above their floors. The class's total, and so its placement and
    every constraint, is unchanged; the limits no longer depend on which optimal vertex the solver returned."""
    J = d.n_tiers
    coef = np.where(d.tier_width > 0, d.tier_coef, 0.0).ravel()
    lb, ub, x = tier_lower_bounds(d).ravel(), d.tier_width.ravel(), tier.ravel()
    cls = np.repeat(d.layout.cell_class, J)
    live = np.flatnonzero(ub > lb)
    if len(live) < 2:
        return tier
    i = live[np.lexsort((coef[live], cls[live]))]
    start = np.concatenate([[True], (cls[i][1:] != cls[i][:-1]) | (coef[i][1:] != coef[i][:-1])])
    group = np.cumsum(start) - 1
    size = np.bincount(group)
    if (size <= 1).all():
        return tier
    room = ub[i] - lb[i]
    fill = np.clip(x[i] - lb[i], 0.0, room)
    share = np.bincount(group, weights=fill) / np.bincount(group, weights=room)
    out = x.copy()
    tied = size[group] > 1
    out[i[tied]] = lb[i[tied]] + room[tied] * np.clip(share[group[tied]], 0.0, 1.0)
    return out.reshape(tier.shape)


def finish_baseline(d: BaselineData, tier: np.ndarray, class_place: np.ndarray, cap_dual: np.ndarray, objective: float, status: str,
                    backend: str) -> BaselineResult:
    """From an optimum by class (any build) to the tables: ties split as documented, each seller's limit placed at
    its class's FCs (north-west corner rule), results extracted."""
    tier = split_ties(d, tier)
    return extract_baseline(d, split_class_placement(d, tier.sum(axis=1), class_place), tier, cap_dual, objective, status, backend)


# ---------------------------------------------------------------- results


@dataclass
class BaselineResult:
    """limits: (seller_id, storage_type, month); placements: (seller_id, fc_id, storage_type, month);
    fc_prices: (fc_id, storage_type, month) with the shadow price of space (dual of fc_capacity)."""

    limits: pd.DataFrame
    placements: pd.DataFrame
    fc_prices: pd.DataFrame
    objective: float
    status: str
    backend: str

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"limits": self.limits, "placements": self.placements, "fc_prices": self.fc_prices}


def _clean(a: np.ndarray, decimals: int = 6) -> np.ndarray:
    """Round away solver noise (1e-10 cube) so output is stable and readable; -0.0 becomes 0.0."""
    return np.round(a, decimals) + 0.0


def extract_baseline(d: BaselineData, placed: tuple[np.ndarray, np.ndarray, np.ndarray], tier: np.ndarray, cap_dual: np.ndarray,
                     objective: float, status: str, backend: str) -> BaselineResult:
    """placed: (cell, capacity row, cube) triplets; tier: (n_cells, J); cap_dual: (len(capacity),) aligned with
    d.capacity."""
    limit = _clean(tier.sum(axis=1))
    limits = d.cells[LIMIT_INDEX].copy()
    limits["limit_cube"] = limit
    limits["p50_cube"] = d.cells["p50_cube"].to_numpy()
    limits["upper_cube"] = d.cells["upper_cube"].to_numpy()
    limits["floor_cube"] = d.cells["floor_cube"].to_numpy()
    limits = limits.set_index(LIMIT_INDEX).sort_index()

    cell, row, cube = placed
    cube = _clean(cube)
    keep = cube > 0
    cell, row, cube = cell[keep], row[keep], cube[keep]
    cap = d.capacity
    placements = pd.DataFrame(
        {
            "seller_id": d.cells["seller_id"].to_numpy()[cell],
            "fc_id": cap["fc_id"].to_numpy()[row],
            "storage_type": cap["storage_type"].to_numpy()[row],
            "month": cap["month"].to_numpy()[row],
            "cube": cube,
        }
    ).set_index(PLACEMENT_INDEX).sort_index()

    used = np.bincount(row, weights=cube, minlength=len(cap))
    fc_prices = cap[FC_INDEX + ["capacity_cube", "pool_cube", "net_cube"]].copy()
    fc_prices["baseline_cube"] = _clean(used)
    fc_prices["shadow_price"] = _clean(np.abs(cap_dual))
    fc_prices = fc_prices.set_index(FC_INDEX).sort_index()
    return BaselineResult(limits, placements, fc_prices, float(objective), status, backend)


def _solve_pyomo(d: BaselineData, options: SolverOptions) -> BaselineResult:
    with stage("baseline: build"):
        m = build_baseline_model(d)
    with stage("baseline: solve"):
        outcome = solve_pyomo(m, options, what="baseline allocation", check=False)
    if outcome.status == INFEASIBLE:
        raise diagnose_infeasible(d, options)
    check_outcome(outcome, options, "baseline allocation")
    with stage("baseline: extract"):
        place = np.array([m.place[a].value or 0.0 for a in range(d.n_arcs)])
        tier = np.array([[m.tier[c, j].value or 0.0 for j in range(d.n_tiers)] for c in range(len(d.cells))]).reshape(len(d.cells), d.n_tiers)
        cap_dual = np.zeros(len(d.capacity))
        for r in m.CAPACITY:
            cap_dual[r] = outcome.duals.get(m.fc_capacity[r], 0.0)
        # Per-seller placements are re-derived from the class totals, as on the array path: one split rule for both.
        lay = d.layout
        class_arc = np.searchsorted(lay.arc_class * len(d.capacity) + lay.arc_cap, lay.cell_class[d.arc_cell] * len(d.capacity) + d.arc_cap)
        class_place = np.bincount(class_arc, weights=place, minlength=len(lay.arc_class))
        return finish_baseline(d, tier, class_place, cap_dual, outcome.objective, outcome.status, "pyomo")


def _solve_arrays(d: BaselineData, options: SolverOptions, method: str = "margin") -> BaselineResult:
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


def precheck_baseline(d: BaselineData) -> None:
    """Floors that no FC can hold, found before any solve."""
    floor = d.cells["floor_cube"].to_numpy()
    has_arc = np.bincount(d.layout.arc_class, minlength=d.layout.n_classes)[d.layout.cell_class] > 0
    bad = np.flatnonzero((floor > 0) & ~has_arc)
    if len(bad):
        rows = d.cells.iloc[bad[:10]]
        where = [dict(seller_id=r.seller_id, storage_type=r.storage_type, month=r.month) for r in rows.itertuples()]
        names = "; ".join(f"seller {w['seller_id']} {w['storage_type']} {w['month']}" for w in where)
        raise InfeasibleError(
            f"baseline infeasible: {len(bad)} floor(s) with no FC of that storage type and month in the seller's regions: {names}", where
        )


def diagnose_infeasible(d: BaselineData, options: SolverOptions) -> InfeasibleError:
    """Find which FC/storage type/month cannot hold the floors: solve the elastic LP
    min sum(shortfall) s.t. the baseline constraints with seller_floor relaxed by shortfall."""
    lp, fam = build_baseline_arrays(d)
    floor_cells = np.flatnonzero(d.cells["floor_cube"].to_numpy() > 0)
    n = len(lp.col_cost)
    k = len(floor_cells)
    # Append one shortfall column per floor row; it enters only its own seller_floor row.
    rows_floor = np.arange(fam["seller_floor"].start, fam["seller_floor"].stop)
    rs, ci, va = [], [], []
    for r in range(len(lp.row_lower)):
        s, e = lp.row_start[r], lp.row_start[r + 1]
        rs.append(np.full(e - s, r)), ci.append(lp.col_index[s:e]), va.append(lp.value[s:e])
    rs.append(rows_floor), ci.append(n + np.arange(k)), va.append(np.ones(k))
    start, index, value = csr_from_triplets(np.concatenate(rs), np.concatenate(ci), np.concatenate(va), len(lp.row_lower))
    elastic = LinearProgram(
        col_cost=np.concatenate([np.zeros(n), np.ones(k)]),
        col_lower=np.zeros(n + k),
        col_upper=np.concatenate([lp.col_upper, np.full(k, np.inf)]),
        row_lower=lp.row_lower,
        row_upper=lp.row_upper,
        row_start=start,
        col_index=index,
        value=value,
        maximize=False,
    )
    out = solve_arrays(elastic, options.model_copy(update={"allow_nonoptimal": True}), what="baseline infeasibility diagnosis")
    short = out.x[n:]
    short_cells = floor_cells[short > 1e-6]
    cells = d.cells.iloc[short_cells].assign(shortfall=short[short > 1e-6])
    where, lines = [], []
    for (k_, t), grp in cells.groupby(["storage_type", "month"], sort=True):
        caps = np.unique(d.arc_cap[np.isin(d.arc_cell, grp.index.to_numpy())])
        fcs = d.capacity.iloc[caps]
        where.append(dict(storage_type=k_, month=t, fc_ids=fcs["fc_id"].tolist(), shortfall_cube=round(float(grp["shortfall"].sum()), 6)))
        lines.append(
            f"storage type '{k_}', month {t}: FC(s) {', '.join(fcs['fc_id'])} hold {fcs['net_cube'].sum():g} cube after the pool "
            f"but floors there cannot be met by {grp['shortfall'].sum():g} cube (sellers {', '.join(grp['seller_id'].head(5))}"
            f"{'...' if len(grp) > 5 else ''})"
        )
    return InfeasibleError("baseline infeasible: floors exceed capacity net of the pool\n  " + "\n  ".join(lines), where)


# ---------------------------------------------------------------- one LP per market


def markets(d: BaselineData) -> list[tuple[str, str]]:
    """The (storage type, month) markets: every cell, FC row and arc lies in exactly one."""
    keys = pd.concat([d.cells[["storage_type", "month"]], d.capacity[["storage_type", "month"]]]).drop_duplicates()
    return sorted(map(tuple, keys.to_numpy().tolist()))


def market_data(d: BaselineData, storage_type: str, month: str) -> BaselineData:
    """The part of the baseline LP that lies in one (storage type, month) market: its cells, its FC rows and the
    arcs between them (an arc joins a cell to an FC row of the same type and month), renumbered."""
    cells = np.flatnonzero((d.cells["storage_type"].to_numpy() == storage_type) & (d.cells["month"].to_numpy() == month))
    caps = np.flatnonzero((d.capacity["storage_type"].to_numpy() == storage_type) & (d.capacity["month"].to_numpy() == month))
    cap_pos = np.full(len(d.capacity), -1)
    cap_pos[caps] = np.arange(len(caps))
    lay = d.layout
    classes, cell_class = np.unique(lay.cell_class[cells], return_inverse=True)  # a market's classes are its own
    class_pos = np.full(lay.n_classes, -1)
    class_pos[classes] = np.arange(len(classes))
    arcs = np.flatnonzero(class_pos[lay.arc_class] >= 0)
    layout = ClassLayout(cell_class.astype(np.int64), class_pos[lay.arc_class[arcs]], cap_pos[lay.arc_cap[arcs]], len(classes))
    return BaselineData(d.cells.iloc[cells].reset_index(drop=True), d.tier_width[cells], d.tier_coef[cells],
                        d.capacity.iloc[caps].reset_index(drop=True), layout)


def combine_baselines(parts: list[BaselineResult]) -> BaselineResult:
    """One result from the markets' results: tables concatenated in key order, objectives added."""
    statuses = sorted({p.status for p in parts})
    return BaselineResult(
        limits=pd.concat([p.limits for p in parts]).sort_index(),
        placements=pd.concat([p.placements for p in parts]).sort_index(),
        fc_prices=pd.concat([p.fc_prices for p in parts]).sort_index(),
        objective=float(sum(p.objective for p in parts)),
        status=statuses[0] if len(statuses) == 1 else ",".join(statuses),
        backend=parts[0].backend if parts else "none",
    )


def solve_market(d: BaselineData, backend: str, options: SolverOptions) -> BaselineResult:
    """Solve one market's LP (or the whole LP: `d` may hold several markets) with the chosen build."""
    if not len(d.cells):  # FC rows nobody needs: nothing placed, and more space there is worth nothing
        none = np.zeros(0, dtype=np.int64)
        return extract_baseline(d, (none, none, np.zeros(0)), np.zeros((0, d.n_tiers)), np.zeros(len(d.capacity)), 0.0, "optimal", backend)
    if backend == "pyomo":
        return _solve_pyomo(d, options)
    return _solve_arrays(d, options)


def allocate(instance: Instance, options: SolverOptions | None = None, *, split: bool = True) -> BaselineResult:
    """Solve the baseline allocation LP. Backend 'auto' uses the Pyomo reference model for small
    instances and the vectorized highspy build above `auto_pyomo_max_rows` cells.

    Nothing in the LP links two (storage type, month) markets (models/baseline.md, "One LP per market"), so by
    default each market is solved on its own and the results are concatenated; `split=False` solves the one
    LP over every market (the reference the tests compare against)."""
    options = options or instance.settings.solver
    with stage("baseline: prepare"):
        d = prepare_baseline(instance)
    precheck_baseline(d)
    backend = options.backend
    if backend == "auto":
        backend = "pyomo" if len(d.cells) <= options.auto_pyomo_max_rows else "highspy"
    if not split:
        return solve_market(d, backend, options)
    parts = []
    for k, t in markets(d):
        part = market_data(d, k, t)
        note(f"baseline: market {k} {t}: {len(part.cells)} cells, {len(part.capacity)} FC rows")
        parts.append(solve_market(part, backend, options))
        del part  # each market's LP and arrays are freed before the next is built
    return combine_baselines(parts)
