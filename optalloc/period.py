"""A whole period: baseline allocation, every round in order (pool carried forward), settlement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import __version__, tables, units
from .baseline import BaselineResult, allocate
from .clearing import RoundResult, clear_round, concat_results, held_grants
from .instance import Instance
from .io import PERIOD_TABLES, input_hashes
from .progress import stage
from .schemas import TABLES, SolverOptions
from .settlement import settle as settle_grants
from .solver import one_blas_thread


@dataclass
class ClearingResult:
    rounds: list[RoundResult]

    @property
    def grants(self) -> pd.DataFrame:
        return concat_results([r.grants for r in self.rounds])

    @property
    def placements(self) -> pd.DataFrame:
        return concat_results([r.placements for r in self.rounds])

    @property
    def pools(self) -> pd.DataFrame:
        return concat_results([r.pools for r in self.rounds])

    @property
    def round_prices(self) -> pd.DataFrame:
        return concat_results([r.prices for r in self.rounds])

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"grants": self.grants, "grant_placements": self.placements, "pools": self.pools, "round_prices": self.round_prices}


def clear_rounds(instance: Instance, baseline: BaselineResult, options: SolverOptions | None = None, through: int | None = None,
                 executor=None) -> ClearingResult:
    """Clear the period's rounds in order (up to `through`); each holds the grants of the earlier ones. With an
    executor, each round's storage-type markets are cleared in parallel (the same answer)."""
    limits = baseline.limits["limit_cube"]
    results: list[RoundResult] = []
    for r in instance.period.rounds:
        if through is not None and r > through:
            break
        results.append(clear_round(instance, r, limits=limits, held=held_grants(*[x.grants for x in results]), options=options,
                                   executor=executor))
    return ClearingResult(results)


def settle(instance: Instance, baseline: BaselineResult, clearing: ClearingResult) -> pd.DataFrame:
    with stage("settle"):
        return settle_grants(
            clearing.grants, clearing.round_prices, baseline.limits["limit_cube"], instance.sales, instance.grant_sales, instance.settings
        )


@dataclass
class PeriodResult:
    instance: Instance
    baseline: BaselineResult
    clearing: ClearingResult
    settlement: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {**self.baseline.tables(), **self.clearing.tables(), "settlement": self.settlement}

    def summary(self) -> dict:
        return build_summary(self.instance, self.baseline, self.clearing, self.settlement)


# The order of a round's record in summary.json: what it is, what was asked and granted, the pool, the prices, the solve.
ROUND_FIELDS = ("round", "storage_type", "requests", "granted_requests", "granted_cube", "pool_available_cube", "pool_left_cube",
                "clearing_price", "pool_dual_max", "paradoxically_rejected", "objective", "method")


def _plain(v):
    if isinstance(v, (float, np.floating)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def round_records(round_prices: pd.DataFrame, pools: pd.DataFrame | None = None) -> list[dict]:
    """One record per (round, storage type), in ROUND_FIELDS order (any other column of round_prices after them),
    each number as round_prices.csv shows it. With `pools`: the pool available to the round (pool less earlier
    rounds' grants held) and left after it, summed over FCs and months (cube-months) from the rows pools.csv shows."""
    rp = tables.round_table("round_prices", round_prices)
    if pools is not None and len(pools):
        p = tables.round_table("pools", pools.reset_index())
        p["available"] = (p["pool_cube"] - p["held_cube"]).clip(lower=0.0)
        by = p.groupby(["round", "storage_type"])
        rp["pool_available_cube"] = by["available"].agg(lambda v: units.total(v, units.CUBE)).reindex(rp.index)
        rp["pool_left_cube"] = by["pool_after"].agg(lambda v: units.total(v, units.CUBE)).reindex(rp.index)
    rows = rp.reset_index().to_dict("records")
    out = []
    for row in rows:
        keys = [k for k in ROUND_FIELDS if k in row] + [k for k in row if k not in ROUND_FIELDS]
        out.append({k: _plain(row[k]) for k in keys})
    return out


def build_summary(instance: Instance, baseline: BaselineResult | None, clearing: ClearingResult | None, settlement: pd.DataFrame | None) -> dict:
    """The JSON summary, in reading order: the instance and its settings, the baseline, each round, the settlement
    (every field, with its unit, is documented in the README's "summary.json" table). Deterministic: no timings, no
    dates. Numbers are rounded to their unit (`optalloc.units`), and every total is the exact sum of the rows its
    table shows (summing settlement.csv's reservation_fee gives settlement.reservation_fees to the cent)."""
    with stage("summary"):  # the inputs' text, hashed: ~50 s at 2 M sellers (15 M rows of needs), so it is reported
        inputs, period = input_hashes(instance, tuple(TABLES), PERIOD_TABLES)  # one pass over the tables for both
    out: dict = {"optalloc_version": __version__, "inputs_hash": inputs, "period_hash": period,
                 "instance": instance.summary(), "settings": instance.settings.model_dump(mode="json")}
    if baseline is not None:
        fp = baseline.fc_prices
        out["baseline"] = {
            "status": baseline.status,
            "allocated_cube": units.total(baseline.limits["limit_cube"], units.CUBE),
            "net_capacity_cube": units.total(fp["net_cube"], units.CUBE),
            "pool_cube": units.total(fp["pool_cube"], units.CUBE),
            "binding_fc_rows": int((units.rounded(fp["shadow_price"], units.DUAL) > 0).sum()),
            "objective": units.value(baseline.objective, units.VALUE),
        }
    if clearing is not None:
        out["rounds"] = round_records(clearing.round_prices, clearing.pools)
    if settlement is not None:
        shown = tables.round_table("settlement", settlement)
        out["settlement"] = {
            "grants": int(len(settlement)),
            "reservation_fees": units.total(shown["reservation_fee"], units.MONEY),
            "credits": units.total(shown["credit"], units.MONEY),
            "net": units.total(shown["net"], units.MONEY),
            "fully_offset_share": units.value((shown["net"] == 0).mean(), units.SHARE) if len(settlement) else None,
        }
    return out


def run_period(instance: Instance, options: SolverOptions | None = None, executor=None) -> PeriodResult:
    """Baseline, all rounds, settlement: the whole period from one instance (markets in parallel on `executor`)."""
    options = options or instance.settings.solver
    with one_blas_thread():
        baseline = allocate(instance, options, executor=executor)
        clearing = clear_rounds(instance, baseline, options, executor=executor)
        return PeriodResult(instance, baseline, clearing, settle(instance, baseline, clearing))
