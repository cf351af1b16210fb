"""Baseline allocation LP — formulation in models/baseline.md.

Layers: `prepare_baseline` (instance -> arrays, no model) -> `build_baseline_model` (Pyomo reference,
one `declare_*` per constraint family) or `build_baseline_arrays` (the same LP as arrays for highspy)
-> `solve_*` (optalloc.solver) -> `extract_baseline` (tidy DataFrames).

Sets: CELLS = needs rows (s, k, t); ARCS = (cell, f) with f an FC in the seller's regions holding
type k in month t; CAPACITY = FC rows (f, k, t); TIERS = 1..J.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from .errors import InfeasibleError
from .instance import Instance
from .placement import split_by_class
from .progress import note, stage
from .schemas import SolverOptions
from .solver import INFEASIBLE, LinearProgram, check_outcome, csr_from_triplets, solve_arrays, solve_pyomo

LIMIT_INDEX = ["seller_id", "storage_type", "month"]
PLACEMENT_INDEX = ["seller_id", "fc_id", "storage_type", "month"]
FC_INDEX = ["fc_id", "storage_type", "month"]


@dataclass
class BaselineData:
    """Everything the baseline LP needs, as arrays aligned with its sets."""

    cells: pd.DataFrame  # CELLS: seller_id, storage_type, month, p50_cube, upper_cube, floor_cube, value
    tier_width: np.ndarray  # (n_cells, J) cube
    tier_coef: np.ndarray  # (n_cells, J) $/cube-month
    arc_cell: np.ndarray  # ARCS -> cell position
    arc_cap: np.ndarray  # ARCS -> capacity row position
    capacity: pd.DataFrame  # CAPACITY: fc_id, storage_type, month, capacity_cube, pool_cube, net_cube

    @property
    def n_arcs(self) -> int:
        return len(self.arc_cell)

    @property
    def n_tiers(self) -> int:
        return self.tier_width.shape[1]


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

    # ARCS: join cells to FC rows of the same type and month in one of the seller's regions.
    regions = sellers["regions"].explode().rename("region").reset_index()
    cell_keys = cells[["seller_id", "storage_type", "month"]].assign(cell=np.arange(len(cells)))
    cap_keys = capacity[["fc_id", "region", "storage_type", "month"]].assign(cap=np.arange(len(capacity)))
    arcs = cell_keys.merge(regions, on="seller_id").merge(cap_keys, on=["region", "storage_type", "month"])
    arcs = arcs.sort_values(["cell", "cap"], kind="stable")
    return BaselineData(
        cells=cells.reset_index(drop=True),
        tier_width=tier_width,
        tier_coef=tier_coef,
        arc_cell=arcs["cell"].to_numpy(np.int64),
        arc_cap=arcs["cap"].to_numpy(np.int64),
        capacity=capacity.reset_index(drop=True),
    )


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


@dataclass
class ClassLayout:
    """Cells grouped by eligibility class (storage type, month, the seller's regions): sellers in one
    class can use exactly the same FCs, so where each one's cube sits does not change the LP."""

    cell_class: np.ndarray  # CELLS -> class
    arc_class: np.ndarray  # CLASS_ARCS -> class
    arc_cap: np.ndarray  # CLASS_ARCS -> capacity row
    n_classes: int


def class_layout(d: BaselineData, regions_of_seller: pd.Series) -> ClassLayout:
    keys = pd.DataFrame(
        {
            "storage_type": d.cells["storage_type"].to_numpy(),
            "month": d.cells["month"].to_numpy(),
            "regions": regions_of_seller.reindex(d.cells["seller_id"]).map(";".join).to_numpy(),
        }
    )
    cell_class = keys.groupby(["storage_type", "month", "regions"], sort=True).ngroup().to_numpy()
    pairs = np.unique(np.stack([cell_class[d.arc_cell], d.arc_cap], axis=1), axis=0) if d.n_arcs else np.zeros((0, 2), dtype=np.int64)
    return ClassLayout(cell_class, pairs[:, 0], pairs[:, 1], int(cell_class.max()) + 1 if len(cell_class) else 0)


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


def split_class_placement(d: BaselineData, layout: ClassLayout, limit: np.ndarray, class_place: np.ndarray) -> np.ndarray:
    """Place each seller's limit at its class's FCs (`optalloc.placement.split_by_class`); cube per ARC."""
    place = np.zeros(d.n_arcs)
    cell, ca, amount = split_by_class(layout.cell_class, limit, layout.arc_class, class_place, layout.n_classes)
    arc_key = d.arc_cell * len(d.capacity) + d.arc_cap
    key = cell * len(d.capacity) + layout.arc_cap[ca]
    order = np.argsort(arc_key)
    np.add.at(place, order[np.searchsorted(arc_key, key, sorter=order)], amount)
    return place


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


def extract_baseline(d: BaselineData, place: np.ndarray, tier: np.ndarray, cap_dual: np.ndarray, objective: float, status: str, backend: str) -> BaselineResult:
    """place: (n_arcs,), tier: (n_cells, J), cap_dual: (len(capacity),) aligned with d.capacity."""
    limit = _clean(tier.sum(axis=1))
    limits = d.cells[LIMIT_INDEX].copy()
    limits["limit_cube"] = limit
    limits["p50_cube"] = d.cells["p50_cube"].to_numpy()
    limits["upper_cube"] = d.cells["upper_cube"].to_numpy()
    limits["floor_cube"] = d.cells["floor_cube"].to_numpy()
    limits = limits.set_index(LIMIT_INDEX).sort_index()

    place = _clean(place)
    keep = place > 0
    cap = d.capacity
    placements = pd.DataFrame(
        {
            "seller_id": d.cells["seller_id"].to_numpy()[d.arc_cell[keep]],
            "fc_id": cap["fc_id"].to_numpy()[d.arc_cap[keep]],
            "storage_type": cap["storage_type"].to_numpy()[d.arc_cap[keep]],
            "month": cap["month"].to_numpy()[d.arc_cap[keep]],
            "cube": place[keep],
        }
    ).set_index(PLACEMENT_INDEX).sort_index()

    used = np.bincount(d.arc_cap, weights=place, minlength=len(cap))
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
        return extract_baseline(d, place, tier, cap_dual, outcome.objective, outcome.status, "pyomo")


def _solve_arrays(d: BaselineData, options: SolverOptions, regions_of_seller: pd.Series) -> BaselineResult:
    with stage("baseline: build"):
        layout = class_layout(d, regions_of_seller)
        lp, fam = build_baseline_class_arrays(d, layout)
    note(f"baseline: LP with {len(lp.row_lower)} rows x {len(lp.col_cost)} columns ({layout.n_classes} eligibility classes)")
    with stage("baseline: solve"):
        outcome = solve_arrays(lp, options, what="baseline allocation", check=False)
    if outcome.status == INFEASIBLE:
        raise diagnose_infeasible(d, options)
    check_outcome(outcome, options, "baseline allocation")
    n_tier = len(d.cells) * d.n_tiers
    tier = outcome.x[:n_tier].reshape(len(d.cells), d.n_tiers)
    with stage("baseline: extract"):
        place = split_class_placement(d, layout, tier.sum(axis=1), outcome.x[n_tier:])
        cap_dual = np.zeros(len(d.capacity))
        if outcome.row_duals is not None:
            cap_dual[np.unique(layout.arc_cap)] = outcome.row_duals[fam["fc_capacity"]]
        return extract_baseline(d, place, tier, cap_dual, outcome.objective, outcome.status, "highspy")


def precheck_baseline(d: BaselineData) -> None:
    """Floors that no FC can hold, found before any solve."""
    floor = d.cells["floor_cube"].to_numpy()
    has_arc = np.zeros(len(d.cells), dtype=bool)
    has_arc[d.arc_cell] = True
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
    cell_pos = np.full(len(d.cells), -1)
    cell_pos[cells] = np.arange(len(cells))
    cap_pos = np.full(len(d.capacity), -1)
    cap_pos[caps] = np.arange(len(caps))
    arcs = np.flatnonzero(cell_pos[d.arc_cell] >= 0)
    return BaselineData(
        cells=d.cells.iloc[cells].reset_index(drop=True),
        tier_width=d.tier_width[cells],
        tier_coef=d.tier_coef[cells],
        arc_cell=cell_pos[d.arc_cell[arcs]],
        arc_cap=cap_pos[d.arc_cap[arcs]],
        capacity=d.capacity.iloc[caps].reset_index(drop=True),
    )


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


def solve_market(d: BaselineData, backend: str, options: SolverOptions, regions_of_seller: pd.Series) -> BaselineResult:
    """Solve one market's LP (or the whole LP: `d` may hold several markets) with the chosen build."""
    if not len(d.cells):  # FC rows nobody needs: nothing placed, and more space there is worth nothing
        zeros = np.zeros((0, d.n_tiers))
        return extract_baseline(d, np.zeros(0), zeros, np.zeros(len(d.capacity)), 0.0, "optimal", backend)
    if backend == "pyomo":
        return _solve_pyomo(d, options)
    return _solve_arrays(d, options, regions_of_seller)


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
    regions = instance.sellers.set_index("seller_id")["regions"]
    if not split:
        return solve_market(d, backend, options, regions)
    parts = []
    for k, t in markets(d):
        part = market_data(d, k, t)
        note(f"baseline: market {k} {t}: {len(part.cells)} cells, {len(part.capacity)} FC rows")
        parts.append(solve_market(part, backend, options, regions))
        del part  # each market's LP and arrays are freed before the next is built
    return combine_baselines(parts)
