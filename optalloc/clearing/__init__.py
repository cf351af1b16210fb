"""Reservation clearing — formulation in models/clearing.md.

`model` holds the round's data (`prepare_clearing`), the welfare model (Pyomo reference and class-aggregated
arrays), the sort, pro rata, the choice of rule and method, and the result tables; `priority` holds the
default rule's exact sequential method. Rules (settings.clearing_rule): priority (default), welfare, pro_rata.
"""

from .model import (  # noqa: F401
    EPS,
    POOL_INDEX,
    ClearingData,
    RoundResult,
    Solution,
    build_clearing_arrays,
    build_clearing_model,
    choose_method,
    clear_by_sort,
    clear_market,
    clear_pro_rata,
    clear_round,
    clearing_rule,
    combine_markets,
    concat_results,
    extract_round,
    held_grants,
    initial_pool,
    prepare_clearing,
    price_pools,
    request_caps,
    retime_tied_min_cube,
    solve_clearing,
)
from .priority import clear_by_priority, rank_order, to_cents, to_milli  # noqa: F401
