"""optalloc: fulfillment-center capacity allocation and capacity-reservation market clearing.

    from optalloc import Scenario
    result = Scenario.load("instances/worked_example.json").optimize()

Names are imported when first used, so `import optalloc` (and the command line's start-up) loads no solver.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Scenario": "scenario", "Result": "scenario", "compare": "scenario",
    "Instance": "instance", "load_instance": "io", "write_tables": "results_io",
    "Period": "schemas", "Settings": "schemas", "SolverOptions": "schemas",
    "InfeasibleError": "errors", "InputError": "errors", "OptallocError": "errors", "SolveError": "errors", "StoreError": "errors",
    "BaselineResult": "baseline", "allocate": "baseline",
    "RoundResult": "clearing", "clear_round": "clearing", "held_grants": "clearing",
    "ClearingResult": "period", "PeriodResult": "period", "clear_rounds": "period", "run_period": "period", "settle": "period",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optalloc' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
