"""A whole period: baseline allocation, every round in order (pool carried forward), settlement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import __version__
from .baseline import BaselineResult, allocate
from .clearing import RoundResult, clear_round, concat_results, held_grants
from .instance import Instance
from .io import inputs_hash
from .progress import stage
from .schemas import SolverOptions
from .settlement import settle as settle_grants


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


def clear_rounds(instance: Instance, baseline: BaselineResult, options: SolverOptions | None = None, through: int | None = None) -> ClearingResult:
    """Clear the period's rounds in order (up to `through`); each holds the grants of the earlier ones."""
    limits = baseline.limits["limit_cube"]
    results: list[RoundResult] = []
    for r in instance.period.rounds:
        if through is not None and r > through:
            break
        results.append(clear_round(instance, r, limits=limits, held=held_grants(*[x.grants for x in results]), options=options))
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


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), 6)


def round_records(round_prices: pd.DataFrame) -> list[dict]:
    return [
        {k: (_num(v) if isinstance(v, float) else (int(v) if isinstance(v, (np.integer,)) else v)) for k, v in row.items()}
        for row in round_prices.reset_index().to_dict("records")
    ]


def build_summary(instance: Instance, baseline: BaselineResult | None, clearing: ClearingResult | None, settlement: pd.DataFrame | None) -> dict:
    """The JSON summary. Deterministic: no timings, no dates, sorted keys."""
    out: dict = {"optalloc_version": __version__, "instance": instance.summary(), "settings": instance.settings.model_dump(mode="json"),
                 "inputs_hash": inputs_hash(instance)}  # what `--previous` checks a folder against
    if baseline is not None:
        fp = baseline.fc_prices
        out["baseline"] = {
            "status": baseline.status,
            "objective": _num(baseline.objective),
            "allocated_cube": _num(baseline.limits["limit_cube"].sum()),
            "net_capacity_cube": _num(fp["net_cube"].sum()),
            "binding_fc_rows": int((fp["shadow_price"] > 0).sum()),
        }
    if clearing is not None:
        rp = clearing.round_prices
        out["rounds"] = round_records(rp)
    if settlement is not None:
        out["settlement"] = {
            "grants": int(len(settlement)),
            "reservation_fees": _num(settlement["reservation_fee"].sum()),
            "credits": _num(settlement["credit"].sum()),
            "net": _num(settlement["net"].sum()),
            "fully_offset_share": _num((settlement["net"] <= 1e-6).mean()) if len(settlement) else None,
        }
    return out


def run_period(instance: Instance, options: SolverOptions | None = None) -> PeriodResult:
    """Baseline, all rounds, settlement: the whole period from one instance."""
    options = options or instance.settings.solver
    baseline = allocate(instance, options)
    clearing = clear_rounds(instance, baseline, options)
    return PeriodResult(instance, baseline, clearing, settle(instance, baseline, clearing))
