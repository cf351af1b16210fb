"""The reference models: the Pyomo model (one `declare_*` per constraint family of models/baseline.md) and the
same LP per seller as arrays (`build_baseline_arrays`, used by the infeasibility diagnosis and as a reference)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from .. import units
from ..errors import InfeasibleError
from ..progress import stage
from ..schemas import SolverOptions
from ..solver import INFEASIBLE, LinearProgram, check_outcome, csr_from_triplets, solve_arrays, solve_pyomo
from .data import BaselineData
from .results import BaselineSolution, finish_baseline


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


def solve_reference(d: BaselineData, options: SolverOptions) -> BaselineSolution:
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
        where.append(dict(storage_type=k_, month=t, fc_ids=fcs["fc_id"].tolist(), shortfall_cube=units.value(grp["shortfall"].sum(), units.CUBE)))
        lines.append(
            f"storage type '{k_}', month {t}: FC(s) {', '.join(fcs['fc_id'])} hold {units.text(fcs['net_cube'].sum(), units.CUBE)} cube after the "
            f"pool but floors there cannot be met by {units.text(grp['shortfall'].sum(), units.CUBE)} cube (sellers {', '.join(grp['seller_id'].head(5))}"
            f"{'...' if len(grp) > 5 else ''})"
        )
    return InfeasibleError("baseline infeasible: floors exceed capacity net of the pool\n  " + "\n  ".join(lines), where)
