"""Reservation clearing — formulation in models/clearing.md.

Layers, one module each: `data` (`prepare_clearing`: the round's audit and sets) -> the rule (`rules`: the
`ClearingRule` interface and the built-in priority, welfare and pro_rata rules, registered in `optalloc.rules`),
computed by one of its exact methods (`priority`: the default rule's sequential method; `sort`: single-pool rounds,
and pro rata; `model`: the welfare model, Pyomo reference and class-aggregated arrays, solved in stages) ->
`results` (`extract_round`: tidy DataFrames). `solve` holds the entry points, `clear_round` and `clear_market`.
"""

from .data import EPS, POOL_INDEX, ClearingData, Solution, held_grants, initial_pool, prepare_clearing, request_caps  # noqa: F401
from .model import build_clearing_arrays, build_clearing_model, price_pools, retime_tied_min_cube  # noqa: F401
from .priority import clear_by_priority, rank_order  # noqa: F401
from .results import ClearingResult, RoundResult, combine_markets, concat_results, extract_round  # noqa: F401
from .rules import ClearingRule, PriorityRule, ProRataRule, WelfareRule  # noqa: F401
from .solve import choose_method, clear_market, clear_round, clearing_rule, round_markets, solve_clearing  # noqa: F401
from .sort import clear_by_sort, clear_pro_rata  # noqa: F401
