"""Settlement — price protection, reservation fees, performance credits. See models/settlement.md.

Pure post-processing of the grants (no solver):
- protected price of (round i, type k) = min over rounds j >= i of the clearing price of (j, k) (rounds that granted
  nothing of type k have none);
- final fee per cube = min(max_fee_per_cube, protected price of the grant's round);
- fee = final fee per cube x granted cube, exactly in cents (`fee_cents`);
- attributed sales: given per grant (`grant_sales`), else derived from the seller's months (`sales`):
  sales x min(granted, max(0, used_cube - baseline_limit)) / used_cube, shared among the seller's grants
  holding that storage type and month in proportion to their cube;
- credit = min(credit_rate x attributed sales, credit_cap_share x fee); net = fee - credit >= 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .schemas import Settings
from .tables import publish
from .units import CENTS, to_cents, to_milli

SETTLEMENT_INDEX = ["round", "request_id"]


def protected_prices(round_prices: pd.DataFrame) -> pd.Series:
    """Lowest clearing price of rounds i..last of the same storage type, for each (round, storage_type)."""
    p = round_prices.sort_index()["clearing_price"]
    # cummin skips rounds that granted nothing (NaN) and carries the running minimum past them.
    return p.iloc[::-1].groupby(level="storage_type", sort=False).cummin().iloc[::-1].sort_index()


def attributed_sales(grants: pd.DataFrame, limits: pd.Series, sales: pd.DataFrame, grant_sales: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Incremental sales per grant (index round, request_id) and where each figure came from."""
    g = grants[grants["granted_cube"] > 0]
    out = pd.Series(0.0, index=g.index)
    source = pd.Series("none", index=g.index, dtype=object)
    if len(g) == 0:
        return out, source
    direct = grant_sales.set_index("request_id")["incremental_sales"].astype(float)
    values = direct.reindex(g.index.get_level_values("request_id")).to_numpy(dtype=float)
    has_direct = ~np.isnan(values)
    out[:] = np.where(has_direct, values, 0.0)
    source[:] = np.where(has_direct, "grant_sales", "none")
    if len(sales) and (~has_direct).any():
        # One row per (grant, month) it holds.
        rows = g[~has_direct][["seller_id", "storage_type", "months", "granted_cube"]].explode("months").rename(columns={"months": "month"})
        rows = rows.reset_index()
        key = ["seller_id", "storage_type", "month"]
        total_granted = rows.groupby(key)["granted_cube"].transform("sum")
        s = sales.set_index(key)
        idx = pd.MultiIndex.from_frame(rows[key])
        month_sales = s["sales"].reindex(idx).to_numpy()
        used = s["used_cube"].reindex(idx).to_numpy()
        base = limits.reindex(idx).fillna(0.0).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            extra_used = np.minimum(total_granted.to_numpy(), np.maximum(0.0, used - base))
            seller_month = np.where(used > 0, month_sales * extra_used / used, 0.0)
            share = np.where(total_granted > 0, rows["granted_cube"].to_numpy() / total_granted.to_numpy(), 0.0)
        rows["attributed"] = np.nan_to_num(seller_month * share)
        rows["reported"] = ~np.isnan(month_sales)
        per = rows.groupby(SETTLEMENT_INDEX).agg(attributed=("attributed", "sum"), reported=("reported", "any"))
        idx2 = per.index
        out.loc[idx2] = per["attributed"].to_numpy()
        source.loc[idx2[per["reported"].to_numpy()]] = "seller_months"
    return out, source


def settle(grants: pd.DataFrame, round_prices: pd.DataFrame, limits: pd.Series, sales: pd.DataFrame, grant_sales: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Settlement per granted request, indexed (round, request_id)."""
    g = grants[grants["granted_cube"] > 0].copy()
    protected = protected_prices(round_prices)
    key = pd.MultiIndex.from_arrays([g.index.get_level_values("round"), g["storage_type"]])
    g["round_clearing_price"] = round_prices["clearing_price"].reindex(key).to_numpy()
    g["protected_price"] = protected.reindex(key).to_numpy()
    g["fee_per_cube"] = np.minimum(g["max_fee_per_cube"].to_numpy(), g["protected_price"].to_numpy())
    g["reservation_fee"] = fee_cents(g["fee_per_cube"].to_numpy(), g["granted_cube"].to_numpy()) / CENTS
    sales_amt, source = attributed_sales(g, limits, sales, grant_sales)
    g["attributed_sales"] = _money(sales_amt)
    g["sales_source"] = source
    g["credit"] = _money(np.minimum(settings.credit_rate * g["attributed_sales"], settings.credit_cap_share * g["reservation_fee"]))
    g["net"] = _money(np.maximum(g["reservation_fee"] - g["credit"], 0.0))
    cols = ["seller_id", "storage_type", "months", "granted_cube", "max_fee_per_cube", "round_clearing_price", "protected_price",
            "fee_per_cube", "reservation_fee", "attributed_sales", "sales_source", "credit", "net"]
    return publish("settlement", g[cols].sort_index())


def fee_cents(fee_per_cube: np.ndarray, granted_cube: np.ndarray) -> np.ndarray:
    """Fee = fee per cube x granted cube, in whole cents exactly: cents x milli-cube is a whole number of 1e-5 $,
    rounded half up to the cent (Python integers where an int64 product could overflow)."""
    p, q = to_cents(fee_per_cube), to_milli(granted_cube)
    if len(p) and float(np.max(p.astype(float) * q.astype(float), initial=0.0)) < 2.0**62:
        return (p * q + 500) // 1000
    return np.array([(int(a) * int(b) + 500) // 1000 for a, b in zip(p, q)], dtype=float)


def _money(x) -> pd.Series | np.ndarray:
    """Money to 1e-6 $: removes float noise, keeps cents exact."""
    return np.round(x, 6) + 0.0
