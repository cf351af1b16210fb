"""Inventory performance score (0-1000) and productivity from the last weeks of history (models/forecast.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..history import COVER_WEEKS
from ..schemas import MAX_PRODUCTIVITY

WINDOW_WEEKS = 13
EXCESS_COVER = 2 * COVER_WEEKS  # stock beyond this many weeks of the window's mean shipments is excess
WEIGHTS = {"sell_through": 0.35, "excess": 0.25, "in_stock": 0.25, "space_use": 0.15}


def performance_scores(history: pd.DataFrame, settlement: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per seller, over the last 13 weeks of the table (all storage types together):
    sell_through = min(1, COVER_WEEKS x shipped / on-hand cube-weeks); excess_share = share of on-hand cube-weeks
    above EXCESS_COVER weeks of mean shipments; in_stock_rate = share of the seller's weeks with cube on hand;
    space_use = credits / fees of the seller's grants in `settlement` (absent: its weight is spread over the others).
    score = 1000 x weighted mean of (sell_through, 1 - excess_share, in_stock_rate, space_use);
    productivity = sales / on-hand cube-months (cube-weeks x 12/52), at most MAX_PRODUCTIVITY."""
    week = pd.to_datetime(history["week"], format="%Y-%m-%d")
    recent = history[week > week.max() - pd.Timedelta(weeks=WINDOW_WEEKS)]
    sw = recent.groupby(["seller_id", "week"], sort=True)[["shipped_cube", "on_hand_cube", "sales"]].sum().reset_index()
    g = sw.groupby("seller_id", sort=True)
    shipped, on_hand, sales = g["shipped_cube"].sum(), g["on_hand_cube"].sum(), g["sales"].sum()
    mean_ship = g["shipped_cube"].mean()
    excess_cube = np.maximum(0.0, sw["on_hand_cube"].to_numpy() - EXCESS_COVER * mean_ship.reindex(sw["seller_id"]).to_numpy())
    excess = pd.Series(excess_cube, index=sw["seller_id"]).groupby(level=0).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        sell_through = np.where(on_hand > 0, np.minimum(1.0, COVER_WEEKS * shipped / on_hand), np.where(shipped > 0, 1.0, 0.0))
        excess_share = np.where(on_hand > 0, excess / on_hand, 0.0)
        productivity = np.where(on_hand > 0, sales / (on_hand * 12 / 52), 0.0)
    in_stock = g["on_hand_cube"].apply(lambda v: float((v > 0).mean()))
    out = pd.DataFrame({"seller_id": shipped.index, "sell_through": sell_through, "excess_share": excess_share,
                        "in_stock_rate": in_stock.to_numpy()})
    out["space_use"] = np.nan
    if settlement is not None and len(settlement):
        s = settlement.groupby("seller_id")[["credit", "reservation_fee"]].sum()
        use = (s["credit"] / s["reservation_fee"].where(s["reservation_fee"] > 0)).clip(0, 1)
        out["space_use"] = out["seller_id"].map(use).to_numpy(dtype=float)
    parts = np.column_stack([out["sell_through"], 1 - out["excess_share"], out["in_stock_rate"], out["space_use"]])
    w = np.array(list(WEIGHTS.values()))
    wm = np.where(np.isnan(parts), 0.0, w[None, :])
    score = 1000 * np.nansum(parts * wm, axis=1) / wm.sum(axis=1)
    out.insert(1, "performance_score", np.round(np.clip(score, 0, 1000), 1))
    # At most the sellers table's bound: a week of large sales on a sliver of cube would otherwise give a period whose
    # sellers no longer validate (the batch stores the scores, then fails to load the period every night).
    out.insert(2, "productivity", np.round(np.minimum(productivity, MAX_PRODUCTIVITY), 2))
    for c in ("sell_through", "excess_share", "in_stock_rate", "space_use"):
        out[c] = out[c].round(4)
    return out.reset_index(drop=True)
