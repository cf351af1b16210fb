"""Clearing a round — formulation in models/clearing.md.

Layers: `data.prepare_clearing` (requests + earlier rounds' grants -> arrays, audit of requests that cannot take
part) -> the round's rule computed by one of its exact methods (`choose_method`) -> `results.extract_round` (tidy
DataFrames):

- "priority" (the default rule): `priority.clear_by_priority`, requests in rank order, each granted as much as is
  left for it with every higher-ranked grant kept;
- "sort": when every request can draw from exactly one pool (one FC, one month) and all are divisible, both rules
  are a set of independent fractional knapsacks (`sort`);
- "lp" / "mip": the welfare rule's model (`model`), Pyomo reference or arrays for highspy;
- "pro_rata": the pipeline-capacity auctions' tie rule, single-pool rounds only (`sort`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from ..errors import InputError, Problem
from ..instance import Instance
from ..placement import split_by_class
from ..progress import note, stage
from ..schemas import Settings, SolverOptions
from ..solver import solve_pyomo
from .data import ClearingData, Solution, held_grants, prepare_clearing
from .model import _solve_arrays, _solve_pyomo, build_clearing_model, price_pools
from ..units import MILLI, to_milli
from .priority import clear_by_priority, place_classes, rank_order
from .results import RoundResult, combine_markets, extract_round
from .sort import clear_by_sort, clear_pro_rata


def clearing_rule(settings: Settings) -> str:
    """The rule a round is cleared by: settings.clearing_rule; tie_rule = pro_rata (the older spelling) selects pro_rata."""
    return "pro_rata" if settings.tie_rule == "pro_rata" else settings.clearing_rule


def _refuse(message: str) -> None:
    raise InputError(Problem(message, "settings", None, "solver.backend"))


def choose_method(d: ClearingData, options: SolverOptions, method: str | None = None) -> str:
    """How the round's rule is computed. A forced method that cannot compute the rule on this round refuses."""
    rule = clearing_rule(d.settings)
    exact_sort = d.single_pool and d.divisible
    if rule == "pro_rata":
        if method not in (None, "pro_rata"):
            _refuse(f"clearing rule 'pro_rata' is computed only by its own method, not {method!r}")
        return "pro_rata"
    if method == "sort" and not exact_sort:
        _refuse("method 'sort' needs every request to draw from exactly one pool (one FC, one month) and no min_cube")
    if method == "pro_rata":
        _refuse(f"method 'pro_rata' computes only the pro_rata rule, not {rule!r}")
    if method is not None:
        return method
    if d.n == 0:
        return "sort" if d.single_pool else "highspy"  # only earlier grants to place
    if exact_sort:
        return "sort"  # both rules equal the greedy sort there (models/clearing.md)
    if rule == "priority":
        return "pyomo" if options.backend == "pyomo" else "highspy"  # the exact sequential method; "pyomo" is its slow reference
    if options.backend == "auto":
        return "pyomo" if d.n <= options.auto_pyomo_max_rows else "highspy"
    return options.backend


def solve_clearing(d: ClearingData, options: SolverOptions, method: str | None = None) -> Solution:
    method = choose_method(d, options, method)
    rule = clearing_rule(d.settings)
    if d.n == 0 and len(d.held_cube) == 0:
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return Solution(np.zeros(0), empty, np.zeros(len(d.pools)), "empty", rule)
    with stage(f"round {d.round}: solve"):
        if method == "sort":
            sol = clear_by_sort(d)
        elif method == "pro_rata":
            sol = clear_pro_rata(d)
        elif rule == "priority":
            sol = _solve_priority_pyomo(d, options) if method == "pyomo" else _solve_priority(d, options)
        else:
            sol = None
    if sol is None:
        sol = _solve_pyomo(d, options) if method == "pyomo" else _solve_arrays(d, options)
    sol.rule = rule
    return sol


def _solve_priority(d: ClearingData, options: SolverOptions) -> Solution:
    out = clear_by_priority(d, options)
    note(f"round {d.round}: priority rule, {out.lp_calls} room LPs")
    grant = out.grant / MILLI
    place = place_classes(d, out.grant, options) / MILLI
    placements = split_by_class(d.member_class, np.concatenate([grant, d.held_cube]), d.carc_class, place, d.n_classes)
    return Solution(grant, placements, price_pools(d, grant, options), "priority", "priority", out.avail / MILLI)


def _solve_priority_pyomo(d: ClearingData, options: SolverOptions) -> Solution:
    """Reference for the priority rule, obviously correct and slow: the Pyomo model, one LP per request in rank
    order — max grant[i] with every higher-ranked grant fixed and every lower-ranked one 0 — then the request
    gets that (snapped to whole milli-cube) if it reaches its min_cube, else 0."""
    m = build_clearing_model(d)
    m.min_fill.deactivate()
    m.max_fill.deactivate()
    for q in m.MIN_REQUESTS:
        m.filled[q].fix(0)
    m.revenue.deactivate()
    u, mn = to_milli(d.max_cube), to_milli(d.min_cube)
    for q in m.REQUESTS:
        m.grant[q].fix(0.0)
    got, avail = np.zeros(d.n), np.zeros(d.n)
    order = rank_order(d.fee, d.req["submitted_at"].to_numpy(), d.req["request_id"].to_numpy())
    for i in order:
        i = int(i)
        m.grant[i].unfix()
        m.one = pyo.Objective(expr=m.grant[i], sense=pyo.maximize)
        solve_pyomo(m, options.model_copy(update={"allow_nonoptimal": False}), what=f"clearing round {d.round} (priority reference)", duals=False, kind="clearing")
        m.del_component(m.one)
        v = float(np.rint(pyo.value(m.grant[i]) * MILLI)) if abs(pyo.value(m.grant[i]) * MILLI - np.rint(pyo.value(m.grant[i]) * MILLI)) < 1e-3 else float(np.floor(pyo.value(m.grant[i]) * MILLI))
        v = min(max(v, 0.0), float(u[i]))
        avail[i] = v / MILLI
        got[i] = v / MILLI if v >= mn[i] and v > 0 else 0.0
        m.grant[i].fix(got[i])
    place = place_classes(d, to_milli(got), options) / MILLI  # the same placement as the fast method publishes
    placements = split_by_class(d.member_class, np.concatenate([got, d.held_cube]), d.carc_class, place, d.n_classes)
    return Solution(got, placements, price_pools(d, got, options), "priority", "priority", avail)


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
    if round_ not in instance.period.rounds:
        raise InputError(Problem(f"round {round_} is not in the period (rounds {instance.period.rounds})", "round"))
    options = options or instance.settings.solver
    held = held_grants(held) if held is not None else held_grants()
    types = sorted(instance.fcs["storage_type"].unique())
    fan_out = executor is not None and len(types) > 1
    of_type = limits.index.get_level_values("storage_type") if fan_out else None  # a worker gets its type's limits only
    calls = (  # lazy: in this process one type's part of the instance exists at a time
        (instance.round_market(k, round_), round_, limits[of_type == k] if fan_out else limits,
         held[held["storage_type"] == k], options, method)
        for k in types
    )
    parts = executor.map(clear_market, list(calls)) if fan_out else [clear_market(*call) for call in calls]
    return parts[0] if len(parts) == 1 else combine_markets(parts)


def clear_market(instance: Instance, round_: int, limits: pd.Series, held: pd.DataFrame, options: SolverOptions, method: str | None) -> RoundResult:
    """Clear one round of a one-storage-type instance."""
    note(f"round {round_}: the {', '.join(sorted(instance.fcs['storage_type'].unique()))} market")
    with stage(f"round {round_}: prepare"):
        d = prepare_clearing(instance, round_, limits, held)
    note(f"round {round_}: {d.n} requests take part, {len(d.audit) - d.n} rejected before the solve, {len(d.held_cube)} earlier grants held")
    sol = solve_clearing(d, options, method)
    with stage(f"round {round_}: extract"):
        return extract_round(d, sol)
