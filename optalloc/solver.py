"""Solving: the one place that knows solver options, codes and statuses.

Two entry points, one vocabulary:
- `solve_pyomo(model, options)` for the Pyomo reference models;
- `solve_arrays(lp, options)` for the vectorized fast path (`LinearProgram`, passed whole to highspy).
Both return a `SolveOutcome` whose `status` is one of STATUSES, and both raise `SolveError` for any
status but optimal unless `options.allow_nonoptimal` is set. A time-limited answer is never silently
passed on as optimal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import highspy
import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.solver.common.factory import SolverFactory
from pyomo.contrib.solver.common.results import TerminationCondition
from threadpoolctl import threadpool_limits

from .errors import SolveError
from .schemas import SolverOptions

OPTIMAL, STOPPED, INFEASIBLE, UNBOUNDED, ERROR = "optimal", "stopped_at_limit", "infeasible", "unbounded", "error"
STATUSES = (OPTIMAL, STOPPED, INFEASIBLE, UNBOUNDED, ERROR)

# The LP algorithm used when lp_method = "auto", per model, from `benchmarks/bench.py --solver-study`
# and the full benchmark (docs/performance.md); always with presolve off (it took 35-60 s of these solves).
# - baseline, 100k sellers (180-315 rows x 900k bounded columns): IPM 15.1 s / 7.0 s vs dual simplex
#   8.0 s / 23.2 s on the one-region / two-region shapes; primal simplex > 90 s. IPM: best worst case.
# - clearing: dual simplex. 0.18 s vs IPM 0.90 s per LP on a 100k-request round, and it warm-starts the
#   time-priority re-solve. Decisive: once earlier rounds' grants fill the pools, the LP has no interior
#   and IPM stalled (singular matrix, no convergence in 18 minutes); dual simplex took 0.85 s. Its bad
#   case, a 1M-request single pool (148 s vs IPM 8 s), is cleared by the exact sort instead.
AUTO_LP_METHOD = {"baseline": "ipm", "clearing": "dual_simplex"}


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS (OpenBLAS) on one thread while optalloc computes, as HiGHS is (`threads`, default 1).

    The engine's BLAS calls are dot products of a market's vectors (its objective, a class's cut weights): too small
    to gain from threads, whose idle workers spin on the second core. Beside the batch's writer and hash threads that
    core was taken: the 100,000-request baseline took 0.77 s wall and 1.48 s CPU alone, 1.29 s wall beside the input
    hash, 0.96 s with one BLAS thread. A dot product split over threads also sums in an order that depends on the
    machine's core count; on one thread it is the same everywhere. Dask workers start with one BLAS thread already
    (distributed's OPENBLAS_NUM_THREADS=1). The limit is the process's: a caller running several periods at once on
    threads of one process should hold it around all of them (the first to finish gives the old setting back)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def highs_options(options: SolverOptions, *, is_mip: bool = False, kind: str = "baseline") -> dict:
    """Translate our options into HiGHS option names. The only place solver option names appear."""
    method = AUTO_LP_METHOD[kind] if options.lp_method == "auto" else options.lp_method
    opts: dict = {
        "output_flag": bool(options.log),
        "presolve": ("on" if is_mip else "off") if options.presolve == "auto" else options.presolve,
        "threads": int(options.threads),
        "random_seed": 0,
        "mip_rel_gap": float(options.mip_rel_gap),
        "mip_abs_gap": 1e-6,
        "primal_feasibility_tolerance": float(options.feasibility_tolerance),
        "dual_feasibility_tolerance": float(options.feasibility_tolerance),
        "mip_feasibility_tolerance": float(options.feasibility_tolerance),
    }
    if options.time_limit is not None:
        opts["time_limit"] = float(options.time_limit)
    if not is_mip:
        if method == "ipm":
            # Crossover gives a vertex: grants at their bounds, exact ties, duals of a basis.
            opts.update(solver="ipm", run_crossover="on")
        elif method == "primal_simplex":
            opts.update(solver="simplex", simplex_strategy=WARM_PRIMAL_SIMPLEX)
        else:
            opts.update(solver="simplex", simplex_strategy=DUAL_SIMPLEX)
    return opts


@dataclass
class SolveOutcome:
    status: str
    objective: float | None
    message: str = ""
    x: np.ndarray | None = None  # column values (array path)
    row_duals: np.ndarray | None = None  # row duals (array path)
    col_duals: np.ndarray | None = None  # reduced costs (array path)
    duals: dict = field(default_factory=dict)  # constraint data -> dual (Pyomo path)
    reduced_costs: Mapping = field(default_factory=dict)  # variable data -> reduced cost (Pyomo path)
    mip_gap: float | None = None


def check_outcome(outcome: SolveOutcome, options: SolverOptions, what: str) -> SolveOutcome:
    if outcome.status == OPTIMAL:
        return outcome
    if outcome.status == STOPPED and options.allow_nonoptimal and outcome.objective is not None:
        return outcome
    hint = ""
    if outcome.status == STOPPED and options.allow_nonoptimal:  # stopped before it had any answer to publish
        hint = " (no answer was found before the limit, so allow_nonoptimal has nothing to publish: raise --time-limit)"
    elif outcome.status == STOPPED:
        hint = " (raise --time-limit, or pass allow_nonoptimal to publish the best answer found)"
    raise SolveError(f"{what}: solver {outcome.status}{': ' + outcome.message if outcome.message else ''}{hint}", outcome.status)


_TC = TerminationCondition
_PYOMO_STATUS = {
    _TC.convergenceCriteriaSatisfied: OPTIMAL,
    _TC.maxTimeLimit: STOPPED,
    _TC.iterationLimit: STOPPED,
    _TC.objectiveLimit: STOPPED,
    _TC.interrupted: STOPPED,
    _TC.provenInfeasible: INFEASIBLE,
    _TC.locallyInfeasible: INFEASIBLE,
    _TC.infeasibleOrUnbounded: INFEASIBLE,
    _TC.unbounded: UNBOUNDED,
}


def solve_pyomo(
    model: pyo.ConcreteModel, options: SolverOptions, *, what: str, duals: bool = True, check: bool = True, kind: str = "baseline"
) -> SolveOutcome:
    """Solve a Pyomo model with HiGHS; load the primal values, and the duals for an LP."""
    is_mip = any(v.is_integer() and not v.fixed for v in model.component_data_objects(pyo.Var, active=True))
    opt = SolverFactory("highs")
    res = opt.solve(
        model,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
        time_limit=options.time_limit,
        solver_options={k: v for k, v in highs_options(options, is_mip=is_mip, kind=kind).items() if k != "time_limit"},
    )
    status = _PYOMO_STATUS.get(res.termination_condition, ERROR)
    outcome = SolveOutcome(status=status, objective=res.incumbent_objective, message=str(res.termination_condition.name))
    if status in (OPTIMAL, STOPPED) and res.incumbent_objective is not None:
        res.solution_loader.load_vars()
        if duals and not is_mip and status == OPTIMAL:
            outcome.duals = dict(res.solution_loader.get_duals())
            outcome.reduced_costs = res.solution_loader.get_reduced_costs()  # a ComponentMap
    return check_outcome(outcome, options, what) if check else outcome


INTEGER = 1
_VAR_TYPE = {0: highspy.HighsVarType.kContinuous, INTEGER: highspy.HighsVarType.kInteger}


@dataclass
class LinearProgram:
    """An LP/MIP as arrays: max or min c'x s.t. row_lower <= A x <= row_upper, col_lower <= x <= col_upper.

    A is given in compressed sparse row form (row_start, col_index, value).
    """

    col_cost: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    row_start: np.ndarray
    col_index: np.ndarray
    value: np.ndarray
    maximize: bool = True
    integrality: np.ndarray | None = None  # per column: 0 continuous, INTEGER

    @property
    def is_mip(self) -> bool:
        return self.integrality is not None and bool(np.any(self.integrality))


HIGHS_STATUS = {
    highspy.HighsModelStatus.kOptimal: OPTIMAL,
    highspy.HighsModelStatus.kModelEmpty: OPTIMAL,
    highspy.HighsModelStatus.kTimeLimit: STOPPED,
    highspy.HighsModelStatus.kIterationLimit: STOPPED,
    highspy.HighsModelStatus.kSolutionLimit: STOPPED,
    highspy.HighsModelStatus.kInterrupt: STOPPED,
    highspy.HighsModelStatus.kObjectiveBound: STOPPED,
    highspy.HighsModelStatus.kObjectiveTarget: STOPPED,
    highspy.HighsModelStatus.kInfeasible: INFEASIBLE,
    highspy.HighsModelStatus.kUnboundedOrInfeasible: INFEASIBLE,
    highspy.HighsModelStatus.kUnbounded: UNBOUNDED,
}


_banner_shown = False


def _construct_highs(log: bool) -> highspy.Highs:
    """HiGHS prints its banner on stdout when the first Highs object is built, before any option can be
    set (ERGO-Code/HiGHS#2749). Our stdout is for data (e.g. `optalloc validate`), so unless the solver
    log was asked for, the first construction runs with file descriptor 1 pointed at /dev/null."""
    global _banner_shown
    if log or _banner_shown:
        return highspy.Highs()
    _banner_shown = True
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def new_highs(options: SolverOptions, *, is_mip: bool, kind: str = "baseline") -> highspy.Highs:
    h = _construct_highs(options.log)
    h.setOptionValue("output_flag", False)
    for k, v in highs_options(options, is_mip=is_mip, kind=kind).items():
        h.setOptionValue(k, v)
    return h


def pass_model(h: highspy.Highs, lp: LinearProgram) -> None:
    """Hand a whole LinearProgram to HiGHS in one call."""
    model = highspy.HighsLp()
    n, m = len(lp.col_cost), len(lp.row_lower)
    model.num_col_, model.num_row_ = n, m
    model.sense_ = highspy.ObjSense.kMaximize if lp.maximize else highspy.ObjSense.kMinimize
    model.col_cost_ = np.asarray(lp.col_cost, dtype=np.float64)
    model.col_lower_ = np.asarray(lp.col_lower, dtype=np.float64)
    model.col_upper_ = np.asarray(lp.col_upper, dtype=np.float64)
    model.row_lower_ = np.asarray(lp.row_lower, dtype=np.float64)
    model.row_upper_ = np.asarray(lp.row_upper, dtype=np.float64)
    model.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    model.a_matrix_.num_col_, model.a_matrix_.num_row_ = n, m
    model.a_matrix_.start_ = np.asarray(lp.row_start, dtype=np.int32)
    model.a_matrix_.index_ = np.asarray(lp.col_index, dtype=np.int32)
    model.a_matrix_.value_ = np.asarray(lp.value, dtype=np.float64)
    if lp.is_mip:
        model.integrality_ = [_VAR_TYPE[int(i)] for i in lp.integrality]
    h.passModel(model)


def run_highs(h: highspy.Highs, *, is_mip: bool) -> SolveOutcome:
    """Run a loaded Highs object and translate its status; values and duals when it has them."""
    h.run()
    raw = h.getModelStatus()
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    outcome = SolveOutcome(
        status=HIGHS_STATUS.get(raw, ERROR),
        objective=h.getObjectiveValue() if has_solution else None,
        message=h.modelStatusToString(raw),
    )
    if has_solution:
        sol = h.getSolution()
        outcome.x = np.asarray(sol.col_value)
        if not is_mip and sol.dual_valid:
            outcome.row_duals = np.asarray(sol.row_dual)
            outcome.col_duals = np.asarray(sol.col_dual)
        if is_mip:
            outcome.mip_gap = info.mip_gap
    return outcome


# The priority rule's room LPs: many small re-solves after a change of one row's bounds and a few costs, so simplex
# warm-started from the previous basis (interior point would start over every time), primal simplex because the
# previous optimum stays primal feasible when one column opens.
WARM_PRIMAL_SIMPLEX = 4
DUAL_SIMPLEX = 1
# A reduced cost or dual above this is "nonzero" when a staged solve keeps the first stage's optimal face: fees are
# cents apart, far above it.
FACE_TOL = 1e-7


def new_warm_lp(options: SolverOptions) -> highspy.Highs:
    """A Highs object for a sequence of warm-started LP re-solves (the priority rule's room LP)."""
    h = new_highs(options, is_mip=False, kind="clearing")
    h.setOptionValue("solver", "simplex")
    h.setOptionValue("simplex_strategy", WARM_PRIMAL_SIMPLEX)
    return h


def rerun_from_scratch(h: highspy.Highs) -> SolveOutcome:
    """Run a warm LP again from scratch by dual simplex, then back to warm primal simplex: a warm primal simplex was
    seen to report a feasible LP infeasible, so such an answer is re-checked before it counts."""
    h.setOptionValue("simplex_strategy", DUAL_SIMPLEX)
    h.clearSolver()
    try:
        return run_highs(h, is_mip=False)
    finally:
        h.setOptionValue("simplex_strategy", WARM_PRIMAL_SIMPLEX)


def rerun_cold(h: highspy.Highs) -> SolveOutcome:
    """Run a loaded LP again with its basis dropped (its values no longer trusted)."""
    h.clearSolver()
    return run_highs(h, is_mip=False)


def refresh_values(h: highspy.Highs) -> SolveOutcome:
    """Run a loaded LP again from its current basis, freshly factorized. A warm-started simplex updates its values
    step by step, and over many small re-solves they drift from what the basis gives (seen: 2e-6 off on rows of
    1e6, twenty times the tolerance, while HiGHS reported no infeasibility). Setting the basis again makes HiGHS
    invert it and recompute the values; a basis that is still optimal takes no iteration."""
    h.setBasis(h.getBasis())
    return run_highs(h, is_mip=False)


def solve_arrays(lp: LinearProgram, options: SolverOptions, *, what: str, check: bool = True, kind: str = "baseline") -> SolveOutcome:
    """Solve an array LP/MIP with highspy in one bulk call (no per-variable Python work).
    kind: "baseline" or "clearing", for the automatic LP method."""
    h = new_highs(options, is_mip=lp.is_mip, kind=kind)
    pass_model(h, lp)
    outcome = run_highs(h, is_mip=lp.is_mip)
    return check_outcome(outcome, options, what) if check else outcome


def csr_from_triplets(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-compressed (start, index, value) from coordinate triplets; entries keep column order within a row."""
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    start = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=start[1:])
    return start, cols, vals
