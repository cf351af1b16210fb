"""Clearing a round — formulation in models/clearing.md.

Layers: `data.prepare_clearing` (requests + earlier rounds' grants -> arrays, audit of requests that cannot take
part) -> the round's rule (`settings.clearing_rule`, a plug-in of `optalloc.rules`: priority, welfare, pro_rata, or
one registered by a user) computed by one of its exact methods -> `results.extract_round` (tidy DataFrames).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from .. import rules
from .. import arguments
from ..instance import Instance
from ..progress import note, stage
from ..schemas import Settings, SolverOptions
from .data import ClearingData, Solution, held_grants, prepare_clearing
from .results import RoundResult, combine_markets, extract_round


def clearing_rule(settings: Settings):
    """The rule a round is cleared by (`settings.clearing_rule`, from the registry)."""
    from . import rules as _builtin  # noqa: F401 -- registers the built-in rules

    return rules.get(settings.clearing_rule)


def choose_method(d: ClearingData, options: SolverOptions, method: str | None = None) -> str:
    """How the round's rule is computed. A forced method that cannot compute the rule on this round refuses."""
    return clearing_rule(d.settings).choose_method(d, options, method)


def solve_clearing(d: ClearingData, options: SolverOptions, method: str | None = None) -> Solution:
    rule = clearing_rule(d.settings)
    method = rule.choose_method(d, options, method)
    if d.n == 0 and len(d.held_cube) == 0:
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return Solution(np.zeros(0), empty, np.zeros(len(d.pools)), "empty")
    with stage(f"round {d.round}: solve"):
        return rule.solve(d, options, method)


def clear_round(
    instance: Instance,
    round_: int,
    *,
    limits: pd.Series,
    held: pd.DataFrame | None = None,
    options: SolverOptions | None = None,
    method: str | None = None,
    executor=None,
) -> RoundResult:
    """Clear one round against the period's pool, holding the grants of earlier rounds.

    Each storage type is a market of its own (capacity never moves between types, and no request spans two), so
    the round is cleared type by type and the parts concatenated: the same answer as one model of all types,
    from smaller models, and the same code path whether the types are cleared here or on separate workers.

    limits: baseline limit per (seller_id, storage_type, month), for the request cap.
    held: grants of earlier rounds (e.g. `held_grants(r1.grants, r2.grants)`): their cube is kept, where it
          sits is decided again with this round's requests. Default: none (the first round).
    method: force "sort", "pyomo" or "highspy" (default: chosen per market by shape and size).
    executor: clears the storage types' markets in parallel (anything with `map(fn, calls)`, e.g.
          `optalloc.batch.make_executor(2)`); each gets only its own type's part of the instance and limits.
    """
    instance = arguments.instance(instance)
    round_ = arguments.round_of(round_, instance)
    limits = arguments.limits(limits, instance)
    options, executor = arguments.options(options, instance), arguments.executor(executor)
    held = held_grants(held) if held is not None else held_grants()
    fan_out = executor is not None and instance.fcs["storage_type"].nunique() > 1
    calls = round_markets(instance, round_, limits, held, options, method, split_limits=fan_out)
    parts = executor.map(clear_market, list(calls)) if fan_out else [clear_market(*call) for call in calls]
    return parts[0] if len(parts) == 1 else combine_markets(parts)


def round_markets(instance: Instance, round_: int, limits: pd.Series, held: pd.DataFrame, options: SolverOptions, method: str | None,
                  *, split_limits: bool = False) -> Iterator[tuple]:
    """The round's markets, one per storage type, as the arguments of `clear_market`: each type's part of the
    instance, the round's requests of it, the earlier grants of it (and with `split_limits`, as a worker gets them,
    only its type's limits). Lazy: in this process one type's part of the instance exists at a time."""
    of_type = limits.index.get_level_values("storage_type") if split_limits else None
    for k in sorted(instance.fcs["storage_type"].unique()):
        yield (instance.round_market(k, round_), round_, limits[of_type == k] if split_limits else limits, held[held["storage_type"] == k],
               options, method)


def clear_market(instance: Instance, round_: int, limits: pd.Series, held: pd.DataFrame, options: SolverOptions, method: str | None) -> RoundResult:
    """Clear one round of a one-storage-type instance."""
    note(f"round {round_}: the {', '.join(sorted(instance.fcs['storage_type'].unique()))} market")
    with stage(f"round {round_}: prepare"):
        d = prepare_clearing(instance, round_, limits, held)
    note(f"round {round_}: {d.n} requests take part, {len(d.audit) - d.n} rejected before the solve, {len(d.held_cube)} earlier grants held")
    sol = solve_clearing(d, options, method)
    with stage(f"round {round_}: extract"):
        return extract_round(d, sol, clearing_rule(d.settings))
