"""A period's needs and scores from its history: the forecast `solve` and the batch's forecast step run.

`forecast_period` runs `run_forecast` as `optalloc forecast` does, with the method of the period's settings
(`forecast_method`: a method, or `backtest` = the best on rolling origins; seed 0, one thread); `with_forecast`
puts its needs (floor_cube from the sellers) and scores into the instance. A seller without a performance row (no
history) keeps its given performance_score and productivity.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ..instance import Instance
from .run import ForecastResult, run_forecast


def needs_forecast(instance: Instance) -> bool:
    """A period with history but no needs: its needs come from the history."""
    return not len(instance.needs) and len(instance.history) > 0


def forecast_period(instance: Instance, settlement: pd.DataFrame | None = None) -> ForecastResult:
    method = instance.settings.forecast_method
    return run_forecast(instance, with_backtest=method == "backtest", method="lightgbm" if method == "backtest" else method,
                        seed=0, threads=1, settlement=settlement)


def apply_scores(sellers: pd.DataFrame, performance: pd.DataFrame) -> pd.DataFrame:
    """The sellers table with performance_score and productivity replaced where `performance` has a row."""
    perf = performance.set_index("seller_id")
    out = sellers.copy()
    for col in ("performance_score", "productivity"):
        new = out["seller_id"].map(perf[col]) if len(perf) else pd.Series(np.nan, index=out.index)
        out[col] = new.fillna(out[col]).astype(float).to_numpy()
    return out


def forecast_tables(result: ForecastResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The needs and performance tables as the instance and the outputs hold them."""
    needs = result.needs[["seller_id", "storage_type", "month", "p50_cube", "p90_cube"]].assign(floor_cube=np.nan)
    return needs.reset_index(drop=True), result.performance.reset_index(drop=True)


def with_forecast(instance: Instance, result: ForecastResult) -> Instance:
    needs, perf = forecast_tables(result)
    return replace(instance, needs=needs, sellers=apply_scores(instance.sellers, perf))
