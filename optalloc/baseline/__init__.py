"""Baseline allocation LP — formulation in models/baseline.md.

Layers: `prepare_baseline` (instance -> arrays, no model; `data`) -> one LP per (storage type, month) market,
built as the Pyomo reference (`reference`, one `declare_*` per constraint family) or aggregated by eligibility
class and solved on its margin (`fast`) -> `optalloc.solver` -> `finish_baseline` (`results`: ties, placement,
tidy DataFrames).
"""

from __future__ import annotations


from .. import arguments
from ..progress import note, stage
from ..instance import Instance
from ..schemas import SolverOptions
from .data import (FC_INDEX, LIMIT_INDEX, PLACEMENT_INDEX, BaselineData, ClassLayout, market_data, markets, precheck_baseline,
                   prepare_baseline, seller_value, tier_lower_bounds)
from .fast import build_baseline_class_arrays, solve_by_margin, solve_classes
from .reference import build_baseline_arrays, build_baseline_model, diagnose_infeasible, solve_reference
from .results import BaselineResult, BaselineSolution, combine_solutions, extract_baseline, finish_baseline, split_class_placement, split_ties

__all__ = [
    "FC_INDEX", "LIMIT_INDEX", "PLACEMENT_INDEX", "BaselineData", "BaselineResult", "ClassLayout", "allocate", "build_baseline_arrays",
    "BaselineSolution", "build_baseline_class_arrays", "build_baseline_model", "combine_solutions", "diagnose_infeasible", "extract_baseline",
    "finish_baseline", "market_data", "markets", "precheck_baseline", "prepare_baseline", "seller_value", "solve_by_margin",
    "solve_classes", "solve_market", "solve_reference", "split_class_placement", "split_ties", "tier_lower_bounds",
]


def solve_market(d: BaselineData, backend: str, options: SolverOptions) -> BaselineSolution:
    """Solve one market's LP (or the whole LP: `d` may hold several markets) with the chosen build."""
    if not len(d.cells):
        return BaselineSolution.empty(d, backend)
    if backend == "pyomo":
        return solve_reference(d, options)
    return solve_classes(d, options)


def allocate(instance: Instance, options: SolverOptions | None = None, *, split: bool = True, executor=None) -> BaselineResult:
    """Solve the baseline allocation LP. Backend 'auto' uses the Pyomo reference model for small
    instances and the vectorized highspy build above `auto_pyomo_max_rows` cells.

    Nothing in the LP links two (storage type, month) markets (models/baseline.md, "One LP per market"), so by
    default each market is solved on its own, one after another (each market's LP is freed before the next is
    built), and the solutions are put together; `split=False` solves the one LP over every market (the reference
    the tests compare against). With an executor (`map(fn, calls)`), the markets are solved in parallel: the same
    answer; each market is built as it is sent."""
    instance = arguments.instance(instance)
    options, executor = arguments.options(options, instance), arguments.executor(executor)
    with stage("baseline: prepare"):
        d = prepare_baseline(instance)
    precheck_baseline(d)
    backend = options.backend
    if backend == "auto":
        backend = "pyomo" if len(d.cells) <= options.auto_pyomo_max_rows else "highspy"
    if not split:
        solution = solve_market(d, backend, options)
    elif executor is not None:
        index = []

        def calls():  # each market built only when the executor takes it (and sends it off)
            for k, t in markets(d):
                part = market_data(d, k, t)
                index.append((part.cell_index, part.cap_index))
                yield part, backend, options

        solved = executor.map(solve_market, calls())
        solution = combine_solutions(d, [(*ix, sol) for ix, sol in zip(index, solved)])
    else:
        parts = []
        for k, t in markets(d):
            part = market_data(d, k, t)
            note(f"baseline: market {k} {t}: {len(part.cells)} cells, {len(part.capacity)} FC rows")
            parts.append((part.cell_index, part.cap_index, solve_market(part, backend, options)))
            del part  # only the solution's arrays are kept
        solution = combine_solutions(d, parts)
    with stage("baseline: extract"):
        return extract_baseline(d, solution)
