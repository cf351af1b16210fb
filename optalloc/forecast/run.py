"""history -> backtest -> chosen method -> needs (cube to hold per month) and performance scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import units
from ..schemas import MAX_CUBE
from ..tables import publish
from ..errors import InputError, Problem
from ..history import COVER_WEEKS
from ..instance import Instance
from .methods import METHODS, Panel, age, forecast, make_panel
from .metrics import coverage, wql
from .performance import performance_scores


@dataclass
class ForecastResult:
    needs: pd.DataFrame
    performance: pd.DataFrame
    backtest: pd.DataFrame | None
    summary: dict
    weekly: tuple | None = None  # (series keys, horizon weeks, weekly P50, weekly P90): the loop checks calibration with it

    def tables(self) -> dict[str, pd.DataFrame]:
        t = {"needs": self.needs.set_index(["seller_id", "storage_type", "month"]), "performance": self.performance.set_index("seller_id")}
        if self.backtest is not None:
            t["backtest"] = self.backtest.set_index(["method", "horizon"])
        return t


def horizon_weeks(panel: Panel, months: list[str]) -> pd.DatetimeIndex:
    """The Mondays after the last week of history up to the last Monday of the period's last month."""
    end = pd.Period(months[-1], "M").end_time.normalize()
    return pd.date_range(panel.weeks[-1] + pd.Timedelta(weeks=1), end, freq="7D")


def backtest(panel: Panel, H: int, methods=METHODS, *, origins: int = 3, step: int = 4, seed: int = 0, threads: int = 1,
             source: str = "history", **lgb_args) -> pd.DataFrame:
    """Rolling origins: cutoffs W - H - step k (k = 0..origins-1); each method forecasts H weeks from each cutoff
    seeing only the weeks before it; errors pooled over series alive at the cutoff and over origins, per horizon."""
    W = panel.y.shape[1]
    woy = panel.woy(H)
    rows = []
    cutoffs = [W - H - step * k for k in range(origins) if W - H - step * k > 13]
    if not cutoffs:
        raise InputError(Problem(f"too little history for a backtest: {W} weeks, horizon {H}", source, None, "week"))
    for method in methods:
        ys, p50s, p90s = [], [], []
        for c in cutoffs:
            Y = panel.y[:, :c]
            alive = age(Y) >= 1
            q50, q90, _ = forecast(method, Y[alive], H, woy, panel.keys[alive].reset_index(drop=True), seed=seed, threads=threads, **lgb_args)
            ys.append(panel.y[alive, c : c + H])
            p50s.append(q50)
            p90s.append(q90)
        y, q50, q90 = np.concatenate(ys), np.concatenate(p50s), np.concatenate(p90s)
        for h in range(H):
            rows.append({"method": method, "horizon": h + 1, "wql_50": wql(y[:, h], q50[:, h], 0.5), "wql_90": wql(y[:, h], q90[:, h], 0.9),
                         "coverage_90": coverage(y[:, h], q90[:, h]), "series": int(len(y))})
    return pd.DataFrame(rows)


def choose(bt: pd.DataFrame) -> tuple[str, dict]:
    """The method with the lowest mean over horizons of (wql_50 + wql_90) / 2; ties go to the earlier in METHODS."""
    score = bt.assign(wql=(bt["wql_50"] + bt["wql_90"]) / 2).groupby("method")["wql"].mean()
    order = [m for m in METHODS if m in score.index]
    best = min(order, key=lambda m: (round(float(score[m]), 12), order.index(m)))
    return best, {m: float(score[m]) for m in order}


def monthly_needs(panel: Panel, weeks: pd.DatetimeIndex, q50: np.ndarray, q90: np.ndarray, months: list[str]) -> pd.DataFrame:
    """need(m) = COVER_WEEKS x the mean of the weekly quantile over the weeks whose Monday is in month m."""
    month_of = weeks.strftime("%Y-%m").to_numpy()
    frames = []
    for m in months:
        cols = np.flatnonzero(month_of == m)
        p50 = COVER_WEEKS * q50[:, cols].mean(axis=1)
        p90 = COVER_WEEKS * q90[:, cols].mean(axis=1)
        frames.append(panel.keys[["seller_id", "storage_type"]].assign(month=m, p50_cube=np.round(p50, 3), p90_cube=np.round(np.maximum(p90, p50), 3)))
    return pd.concat(frames).sort_values(["seller_id", "storage_type", "month"], kind="stable").reset_index(drop=True)


def can_sell(instance: Instance) -> pd.DataFrame:
    """(seller_id, storage_type, month) where the seller can sell: an FC of that storage type and month in one of its
    regions."""
    cells = instance.fcs[["region", "storage_type", "month"]].drop_duplicates()
    regions = instance.sellers[["seller_id", "regions"]].explode("regions").rename(columns={"regions": "region"})
    out = regions.merge(cells, on="region")[["seller_id", "storage_type", "month"]].drop_duplicates()
    return out.sort_values(["seller_id", "storage_type", "month"], kind="stable").reset_index(drop=True)


NEW_SELLER_PEERS = 3  # cold-start series of a storage type a seller without history borrows from (else the lower quartile)
NEW_SELLER_QUANTILE = 0.25


def complete_needs(needs: pd.DataFrame, instance: Instance, cold_series: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Needs for every (seller, storage type, month) the seller can sell in (models/forecast.md, "Sellers without
    history"): a seller with history but none in a storage type gets 0 there (its history shows it does not sell it);
    a seller with no history at all gets, per storage type and month, the median P50 and P90 of the cold-start series
    (sellers new to that type, fewer than 8 weeks) when there are at least 3, else the lower quartile of all of that
    type's series in that month (a small seller's need), else 0."""
    key = ["seller_id", "storage_type", "month"]
    want = can_sell(instance)
    missing = want.merge(needs[key], on=key, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
    with_history = set(needs["seller_id"])
    old = missing["seller_id"].isin(with_history).to_numpy()
    new = missing[~old]
    young = needs.merge(cold_series, on=["seller_id", "storage_type"])
    peer50, peer90 = {}, {}
    for (k, m), g in needs.groupby(["storage_type", "month"], sort=True):
        y = young[(young["storage_type"] == k) & (young["month"] == m)]
        if len(y) >= NEW_SELLER_PEERS:
            peer50[k, m], peer90[k, m] = float(y["p50_cube"].median()), float(y["p90_cube"].median())
        else:
            peer50[k, m], peer90[k, m] = float(g["p50_cube"].quantile(NEW_SELLER_QUANTILE)), float(g["p90_cube"].quantile(NEW_SELLER_QUANTILE))
    pairs = list(zip(new["storage_type"], new["month"]))
    p50 = np.round([peer50.get(p, 0.0) for p in pairs], 3)
    p90 = np.round([max(peer90.get(p, 0.0), peer50.get(p, 0.0)) for p in pairs], 3)
    filled = pd.concat([
        needs,
        missing[old].assign(p50_cube=0.0, p90_cube=0.0),
        new.assign(p50_cube=np.asarray(p50, dtype=float), p90_cube=np.asarray(p90, dtype=float)),
    ], ignore_index=True)
    filled = filled.sort_values(key, kind="stable").reset_index(drop=True)
    return filled, {"sellers_without_history": int(new["seller_id"].nunique()), "zero_need_rows": int(old.sum()),
                    "new_seller_rows": int(len(new))}


def run_forecast(instance: Instance, *, with_backtest: bool = False, method: str = "lightgbm", origins: int = 3, step: int = 4,
                 seed: int = 0, threads: int = 1, settlement: pd.DataFrame | None = None, **lgb_args) -> ForecastResult:
    if instance.history is None or not len(instance.history):
        raise InputError(Problem("the instance has no history table (history.csv / history.parquet / \"history\")", instance.sources.get("history", "history")))
    panel = make_panel(instance.history)
    months = list(instance.period.months)
    weeks = horizon_weeks(panel, months)
    H = len(weeks)
    bt, scores = None, {}
    if with_backtest:
        bt = backtest(panel, H, origins=origins, step=step, seed=seed, threads=threads, source=instance.sources.get("history", "history"),
                      **lgb_args)
        method, scores = choose(bt)
    q50, q90, cold = forecast(method, panel.y, H, panel.woy(H), panel.keys, seed=seed, threads=threads, **lgb_args)
    needs = monthly_needs(panel, weeks, q50, q90, months)
    needs, filled = complete_needs(needs, instance, panel.keys.loc[cold, ["seller_id", "storage_type"]])
    # What the forecast writes is read back as an instance's needs (by solve, the store, a later run): within the
    # bounds those are read with (history at its maxima forecast 6e12 cube, which the store then refused for ever),
    # and in their units, as the files hold them.
    needs[["p50_cube", "p90_cube"]] = needs[["p50_cube", "p90_cube"]].clip(0.0, MAX_CUBE)
    needs = publish("needs", needs)
    perf = publish("performance", performance_scores(instance.history, settlement))
    summary = {
        "method": method,
        "mean_wql": {m: units.value(v, units.RATIO) for m, v in scores.items()},
        "horizon_weeks": H,
        "cover_weeks": COVER_WEEKS,
        "series": int(len(panel.keys)),
        "cold_start_series": int(cold.sum()),
        **filled,
        "history_weeks": [str(panel.weeks[0].date()), str(panel.weeks[-1].date())],
        "backtest": None if bt is None else {"origins": origins, "step_weeks": step},
        "seed": seed,
    }
    if bt is not None:
        by = bt.groupby("method")[["coverage_90"]].mean()
        summary["mean_coverage_90"] = {m: units.value(by.loc[m, "coverage_90"], units.SHARE) for m in scores}
    return ForecastResult(needs, perf, bt, summary, (panel.keys, weeks, q50, q90))
