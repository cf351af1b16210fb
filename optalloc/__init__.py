"""optalloc: fulfillment-center capacity allocation and capacity-reservation market clearing.

    from optalloc import load_instance, run_period
    result = run_period(load_instance("instances/worked_example.json"))
"""

__version__ = "0.1.0"

from .baseline import BaselineResult, allocate
from .clearing import RoundResult, clear_round, held_grants
from .errors import InfeasibleError, InputError, OptallocError, SolveError
from .instance import Instance
from .io import load_instance, write_tables
from .period import ClearingResult, PeriodResult, clear_rounds, run_period, settle
from .schemas import Period, Settings, SolverOptions

__all__ = [
    "BaselineResult", "ClearingResult", "InfeasibleError", "InputError", "Instance", "OptallocError", "Period",
    "PeriodResult", "RoundResult", "Settings", "SolveError", "SolverOptions", "allocate", "clear_round",
    "clear_rounds", "held_grants", "load_instance", "run_period", "settle", "write_tables",
]
