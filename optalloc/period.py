"""A whole period in one call, and its steps as plain functions: conveniences over `optalloc.Scenario`, which holds
the workflow (forecast where needs are missing -> baseline -> every round -> settlement)."""

from __future__ import annotations

import pandas as pd

from .baseline import BaselineResult
from .clearing import ClearingResult
from .errors import InputError, Problem
from .instance import Instance
from .scenario import Result, Scenario
from .schemas import SolverOptions

PeriodResult = Result  # the name run_period's result had


def run_period(instance: Instance, options: SolverOptions | dict | None = None, executor=None) -> Result:
    """Forecast where needs are missing, the baseline, every round and the settlement: `Scenario(...).optimize()`."""
    return Scenario(instance, options, executor=executor).optimize()


def _scenario(instance: Instance, baseline: BaselineResult, options, executor=None) -> Scenario:
    scenario = Scenario(instance, options, executor=executor)
    if not isinstance(baseline, BaselineResult):
        raise InputError(Problem(f"needs a BaselineResult (what allocate returns), not {type(baseline).__name__}", None, None, "baseline"))
    scenario.baseline = baseline
    return scenario


def clear_rounds(instance: Instance, baseline: BaselineResult, options: SolverOptions | dict | None = None, through: int | None = None,
                 executor=None) -> ClearingResult:
    """The period's rounds in order (up to `through`) against `baseline`: `Scenario.optimize(through=..., settle=False)`."""
    return ClearingResult(_scenario(instance, baseline, options, executor).optimize(through=through, settle=False).rounds)


def settle(instance: Instance, baseline: BaselineResult, clearing: ClearingResult) -> pd.DataFrame:
    """Price protection, fees, credits and net of the grants of `clearing`'s rounds: `Scenario.settle()`."""
    scenario = _scenario(instance, baseline, None)
    if not isinstance(clearing, ClearingResult):
        raise InputError(Problem(f"needs a ClearingResult (what clear_rounds returns), not {type(clearing).__name__}", None, None, "clearing"))
    scenario.rounds = list(clearing.rounds)
    return scenario.settle()
