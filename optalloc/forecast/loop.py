"""The loop across periods (Python API only): history -> forecast -> limits -> the next period's history and scores.

Each period: needs and scores come from history (`run_forecast`), the baseline LP sets limits, then the weeks up to
the next period's history end are realized: demand continues last year's weeks with the series' growth and noise;
each seller stocks its usual weeks of cover, at most its limit; it ships what demand and stock allow. A share of
the overstocking sellers reform at the start (they stock COVER_WEEKS of cover): their scores rise, and the report
shows their share of the limits grow. The market (requests, clearing, settlement) is not simulated here.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ..baseline import allocate
from ..history import COVER_WEEKS
from ..instance import Instance
from .methods import make_panel
from .run import run_forecast

PERIOD_WEEKS = 13


def _with_forecast(inst: Instance, method: str, seed: int) -> tuple[Instance, pd.DataFrame]:
    res = run_forecast(inst, method=method, seed=seed)
    perf = res.performance.set_index("seller_id")
    sellers = inst.sellers.copy()
    sellers["performance_score"] = sellers["seller_id"].map(perf["performance_score"]).fillna(0.0).to_numpy()
    sellers["productivity"] = sellers["seller_id"].map(perf["productivity"]).fillna(0.0).to_numpy()
    return replace(inst, sellers=sellers, needs=res.needs.assign(floor_cube=np.nan)), res.needs


def run_loop(instance: Instance, periods: int, *, reform_share: float = 0.5, method: str = "seasonal_yoy", seed: int = 0) -> pd.DataFrame:
    """One row per period and seller group (efficient, overstock, reformed): mean score, share of all limits, and
    the P90 coverage of the period's monthly needs by the realized need (COVER_WEEKS x realized mean weekly demand)."""
    rng = np.random.default_rng([seed, 77])
    hist = instance.history
    ratio = (hist["on_hand_cube"] / hist["shipped_cube"].where(hist["shipped_cube"] > 0)).groupby(hist["seller_id"]).median()
    cover = ratio.reindex(instance.sellers["seller_id"]).fillna(COVER_WEEKS)
    over = cover > 2 * COVER_WEEKS
    reform = over & (rng.random(len(cover)) < reform_share)
    group = pd.Series(np.where(reform, "reformed", np.where(over, "overstock", "efficient")), index=cover.index)
    cover = cover.where(~reform, COVER_WEEKS)
    inst, rows = instance, []
    for p in range(periods):
        inst, needs = _with_forecast(inst, method, seed)
        limits = allocate(inst).limits["limit_cube"].rename("limit").reset_index()
        panel = make_panel(inst.history)
        W = panel.y.shape[1]
        weeks = pd.date_range(panel.weeks[-1] + pd.Timedelta(weeks=1), periods=PERIOD_WEEKS, freq="7D")
        # Demand: last year's week x growth (last 13 weeks over the same weeks a year before) x noise.
        last_year = np.nan_to_num(panel.y[:, W - 52 : W - 52 + PERIOD_WEEKS], nan=0.0)
        recent, before = np.nansum(panel.y[:, -13:], axis=1), np.nansum(panel.y[:, W - 65 : W - 52], axis=1)
        growth = np.where(before > 0, recent / np.where(before > 0, before, 1), 1.0).clip(0.5, 2)
        demand = last_year * growth[:, None] * rng.gamma(8.0, 1 / 8.0, last_year.shape)
        lim = limits.groupby(["seller_id", "storage_type"])["limit"].mean()
        cap = pd.MultiIndex.from_frame(panel.keys[["seller_id", "storage_type"]]).map(lambda k: lim.get(k, np.inf)).to_numpy(dtype=float)
        c = cover.reindex(panel.keys["seller_id"]).to_numpy()
        on_hand = np.minimum(c[:, None] * demand, cap[:, None])
        shipped = np.minimum(demand, on_hand)
        price = (inst.history.groupby("seller_id")["sales"].sum() / inst.history.groupby("seller_id")["shipped_cube"].sum()).fillna(0)
        i, t = np.nonzero(np.ones_like(demand, dtype=bool))
        new = pd.DataFrame({"seller_id": panel.keys["seller_id"].to_numpy()[i], "storage_type": panel.keys["storage_type"].to_numpy()[i],
                            "week": weeks.strftime("%Y-%m-%d").to_numpy()[t], "shipped_cube": np.round(shipped[i, t], 3),
                            "on_hand_cube": np.round(on_hand[i, t], 3), "category": panel.keys["category"].to_numpy()[i],
                            "size_band": panel.keys["size_band"].to_numpy()[i]})
        new["sales"] = np.round(new["shipped_cube"] * new["seller_id"].map(price).to_numpy(), 2)
        # Coverage: the realized need (cover weeks x the mean weekly demand of the weeks in the period's months).
        month_of = weeks.strftime("%Y-%m").to_numpy()
        realized = [pd.DataFrame({"seller_id": panel.keys["seller_id"], "storage_type": panel.keys["storage_type"], "month": m,
                                  "real": COVER_WEEKS * demand[:, month_of == m].mean(axis=1)}) for m in inst.period.months if (month_of == m).any()]
        cov = needs.merge(pd.concat(realized), on=["seller_id", "storage_type", "month"])
        scores = inst.sellers.set_index("seller_id")["performance_score"]
        share = limits.groupby("seller_id")["limit"].sum().reindex(scores.index, fill_value=0.0)
        for g in ("efficient", "overstock", "reformed"):
            members = group.index[group == g]
            rows.append({"period": p + 1, "period_id": inst.period.period_id, "group": g, "sellers": len(members),
                         "mean_score": float(scores.reindex(members).mean()) if len(members) else float("nan"),
                         "limit_share": float(share.reindex(members).sum() / share.sum()) if share.sum() > 0 else float("nan"),
                         "coverage_90": float((cov["real"] <= cov["p90_cube"]).mean())})
        # The next period: three months on, the same FCs, the history extended.
        months = [str(pd.Period(m, "M") + 3) for m in inst.period.months]
        fcs = inst.fcs.assign(month=inst.fcs["month"].map(dict(zip(inst.period.months, months))))
        inst = Instance.from_tables(
            period={"period_id": f"P{months[0].replace('-', '')}", "months": months, "rounds": [1]},
            tables={"fcs": fcs, "sellers": inst.sellers.assign(regions=inst.sellers["regions"].map(";".join)),
                    "needs": needs.assign(month=needs["month"].map(dict(zip(inst.period.months, months)))),
                    "history": pd.concat([inst.history, new[inst.history.columns]], ignore_index=True)},
            settings=inst.settings, name=inst.name)
    return pd.DataFrame(rows)
