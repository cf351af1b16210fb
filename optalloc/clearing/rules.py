"""Clearing rules: the interface every rule implements, and the built-in ones (models/clearing.md).

A `ClearingRule` says what it is (`name`, `description`), which exact methods compute it (`methods`, each a way to
the same answer), which method a round gets (`choose_method`), how that method solves a prepared round (`solve`),
and how it explains a request with a minimum that got nothing (`min_cube_did_not_fit`). The registry in
`optalloc.rules` lists them; `settings.clearing_rule` names one.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo

from ..errors import InputError, Problem
from ..placement import split_by_class
from ..progress import note
from ..rules import register
from ..schemas import SolverOptions
from ..solver import solve_pyomo
from ..units import MILLI, to_milli
from .data import ClearingData, Solution
from .model import build_clearing_model, price_pools, solve_welfare
from .priority import clear_by_priority, place_classes, rank_order
from .sort import clear_by_sort, clear_pro_rata


def _refuse(message: str) -> None:
    raise InputError(Problem(message, "settings", None, "solver.backend"))


class ClearingRule:
    """A rule by which a round's requests are granted. Subclass it, set the class attributes, implement `solve`,
    and `optalloc.rules.register` it."""

    name: str = ""
    description: str = ""
    methods: tuple[str, ...] = ()  # the exact methods that compute it; a forced method outside these is refused

    def choose_method(self, d: ClearingData, options: SolverOptions, forced: str | None = None) -> str:
        """The method for this round: `forced` if the rule has it, else the rule's own choice (its first method)."""
        if forced is not None:
            if forced not in self.methods:
                _refuse(f"clearing rule {self.name!r} is computed by {', '.join(map(repr, self.methods))}, not {forced!r}")
            return forced
        return self.methods[0]

    def solve(self, d: ClearingData, options: SolverOptions, method: str) -> Solution:
        raise NotImplementedError

    def min_cube_did_not_fit(self, d: ClearingData, sol: Solution, room_after: np.ndarray, above_price: np.ndarray) -> np.ndarray:
        """For each request that took part (d.n): had it a min_cube and got nothing, was that because the minimum did
        not fit (rather than being outbid)? By default: pool was left that it could reach, or its fee was above the
        price it faced."""
        return (room_after > 1e-6) | above_price


def _single_pool_sort(d: ClearingData) -> bool:
    """Both the welfare LP and the priority rule are the greedy sort when each request draws from one pool and all
    are divisible (models/clearing.md, "Fast path")."""
    return d.single_pool and d.divisible


def _forced_or_sort(rule: ClearingRule, d: ClearingData, options: SolverOptions, forced: str | None) -> str | None:
    """The method forced on a rule whose methods include the sort (the sort only where it is exact), else the sort
    where it is exact; None leaves the choice to the rule."""
    if forced == "sort" and not _single_pool_sort(d):
        _refuse("method 'sort' needs every request to draw from exactly one pool (one FC, one month) and no min_cube")
    if forced is not None:
        return ClearingRule.choose_method(rule, d, options, forced)
    if _single_pool_sort(d) or (d.n == 0 and d.single_pool):
        return "sort"
    return None


class PriorityRule(ClearingRule):
    name = "priority"
    description = ("granted starting with the highest fee (then earliest, then smallest request_id), each request as much as fits, "
                   "its min_cube or nothing (the default)")
    methods = ("sort", "highspy", "pyomo")  # the sort where it is exact; the sequential method; its Pyomo reference

    def choose_method(self, d: ClearingData, options: SolverOptions, forced: str | None = None) -> str:
        return _forced_or_sort(self, d, options, forced) or ("pyomo" if options.backend == "pyomo" else "highspy")

    def solve(self, d: ClearingData, options: SolverOptions, method: str) -> Solution:
        if method == "sort":
            return clear_by_sort(d)
        if method == "pyomo":
            return self._reference(d, options)
        out = clear_by_priority(d, options)
        note(f"round {d.round}: priority rule, {out.lp_calls} room LPs")
        return self._solution(d, out.grant, out.avail, options)

    def _solution(self, d: ClearingData, grant_milli: np.ndarray, avail_milli: np.ndarray, options: SolverOptions) -> Solution:
        """A priority answer published: one placement chosen from the class totals (`place_classes`: the same whichever
        method computed the grants), and the pools priced by the revenue LP with the rule's fill decisions fixed."""
        grant = grant_milli / MILLI
        place = place_classes(d, to_milli(grant), options) / MILLI
        placements = split_by_class(d.member_class, np.concatenate([grant, d.held_cube]), d.carc_class, place, d.n_classes)
        return Solution(grant, placements, price_pools(d, grant, options), "priority", avail_milli / MILLI)

    def _reference(self, d: ClearingData, options: SolverOptions) -> Solution:
        """The rule's reference, obviously correct and slow: the Pyomo model, one LP per request in rank order — max
        grant[i] with every higher-ranked grant fixed and every lower-ranked one 0 — then the request gets that
        (snapped to whole milli-cube) if it reaches its min_cube, else 0."""
        m = build_clearing_model(d)
        m.min_fill.deactivate()
        m.max_fill.deactivate()
        for q in m.MIN_REQUESTS:
            m.filled[q].fix(0)
        m.revenue.deactivate()
        u, mn = d.max_milli, d.min_milli
        for q in m.REQUESTS:
            m.grant[q].fix(0.0)
        got, avail = np.zeros(d.n, np.int64), np.zeros(d.n, np.int64)
        strict = options.model_copy(update={"allow_nonoptimal": False})
        for i in rank_order(d.fee, d.req["submitted_at"].to_numpy(), d.req["request_id"].to_numpy()):
            i = int(i)
            m.grant[i].unfix()
            m.one = pyo.Objective(expr=m.grant[i], sense=pyo.maximize)
            solve_pyomo(m, strict, what=f"clearing round {d.round} (priority reference)", duals=False, kind="clearing")
            m.del_component(m.one)
            x = pyo.value(m.grant[i]) * MILLI
            v = int(np.rint(x)) if abs(x - np.rint(x)) < 1e-3 else int(np.floor(x))  # snapped to the milli-cube grid
            avail[i] = min(max(v, 0), int(u[i]))
            got[i] = avail[i] if avail[i] >= mn[i] and avail[i] > 0 else 0
            m.grant[i].fix(got[i] / MILLI)
        return self._solution(d, got, avail, options)

    def min_cube_did_not_fit(self, d, sol, room_after, above_price) -> np.ndarray:
        if sol.avail is None:  # the sort: no request has a minimum
            return super().min_cube_did_not_fit(d, sol, room_after, above_price)
        return sol.avail > 0  # the rule knows what each request could have had at its turn


class WelfareRule(ClearingRule):
    name = "welfare"
    description = "the most fee x cube in total (an LP, or a MIP with minimums); may reject a higher fee to fit lower ones"
    methods = ("sort", "highspy", "pyomo")

    def choose_method(self, d: ClearingData, options: SolverOptions, forced: str | None = None) -> str:
        if method := _forced_or_sort(self, d, options, forced):
            return method
        if d.n == 0:
            return "highspy"  # only earlier grants to place
        if options.backend == "auto":
            return "pyomo" if d.n <= options.auto_pyomo_max_rows else "highspy"
        return options.backend

    def solve(self, d: ClearingData, options: SolverOptions, method: str) -> Solution:
        return clear_by_sort(d) if method == "sort" else solve_welfare(d, options, method)


class ProRataRule(ClearingRule):
    name = "pro_rata"
    description = "fee levels from the top; the level where the pool runs out is shared in proportion to max_cube (single-pool rounds)"
    methods = ("pro_rata",)

    def choose_method(self, d: ClearingData, options: SolverOptions, forced: str | None = None) -> str:
        if forced not in (None, "pro_rata"):
            _refuse(f"clearing rule 'pro_rata' is computed only by its own method, not {forced!r}")
        return "pro_rata"

    def solve(self, d: ClearingData, options: SolverOptions, method: str) -> Solution:
        return clear_pro_rata(d)


for _rule in (PriorityRule, WelfareRule, ProRataRule):
    register(_rule)
