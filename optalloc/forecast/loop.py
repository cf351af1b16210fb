"""The loop across periods (`optalloc simulate --periods N`): history -> forecast -> limits -> market -> the next
period's history and scores.

Each period:
1. needs and scores come from the history so far (`run_forecast`, with the last period's settlement for the
   space-use part of the score); sellers without history keep their given score;
2. the baseline LP sets limits;
3. the market: sellers whose wanted stock exceeds their limit in a month bid for the shortfall over the period's
   rounds (`optalloc.simulate.market_rounds`: the engine clears every round, earlier grants held), and the period
   is settled by the engine from the sales they then make;
4. the 13 weeks after the history's end are realized and appended to the history: demand continues last year's
   weeks with the series' growth and noise; each seller wants its usual weeks of cover on hand, at most its limit
   plus what it was granted; it ships what demand and its sellable stock allow.

Behaviour (models/forecast.md, "The loop"): sellers are *efficient* (COVER_WEEKS of cover or so), *overstock*
(median cover above 2 x COVER_WEEKS in the history) or *reformed* (overstockers who, from the first period on, stock
COVER_WEEKS of cover and sell off their aged stock). An overstocker keeps its aged stock: cube it cannot sell that
is `AGED_SHARE` of its excess cover; it stays on hand (a limit stops new stock coming in, it does not remove stock),
and the space the overstocker is given fills with stock beyond what it sells.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from ..baseline import allocate
from ..generate import generate
from ..progress import stage
from ..settlement import settle
from ..simulate import market_rounds, round_grants
from ..specs import GenerateSpec, SimulationSpec
from ..schemas import SolverOptions
from ..history import COVER_WEEKS
from ..instance import Instance
from .apply import apply_scores
from .methods import make_panel
from .run import run_forecast

PERIOD_WEEKS = 13
AGED_SHARE = 0.5  # share of an overstocker's cover beyond COVER_WEEKS that is aged, unsellable stock
GROUPS = ("efficient", "overstock", "reformed")
EPS = 1e-6


def seller_groups(instance: Instance, reform_share: float, rng: np.random.Generator) -> tuple[pd.Series, pd.Series]:
    """Each seller's group and weeks of cover, from its history (median on hand / shipped)."""
    hist = instance.history
    ratio = (hist["on_hand_cube"] / hist["shipped_cube"].where(hist["shipped_cube"] > 0)).groupby(hist["seller_id"]).median()
    cover = ratio.reindex(instance.sellers["seller_id"]).fillna(COVER_WEEKS)
    over = cover > 2 * COVER_WEEKS
    reform = over & (rng.random(len(cover)) < reform_share)
    group = pd.Series(np.where(reform, "reformed", np.where(over, "overstock", "efficient")), index=cover.index)
    return group, cover


def fc_weights(fcs: pd.DataFrame, months: list[str]) -> pd.Series:
    """Each FC's share of its storage type's capacity in the j-th month of the period, keyed (fc_id, storage_type, j)."""
    j = fcs["month"].map({m: i for i, m in enumerate(months)})
    total = fcs.groupby([fcs["storage_type"], j])["capacity_cube"].transform("sum")
    share = (fcs["capacity_cube"] / total.where(total > 0)).fillna(0.0)
    return pd.Series(share.to_numpy(), index=pd.MultiIndex.from_arrays([fcs["fc_id"], fcs["storage_type"], j], names=["fc_id", "storage_type", "j"]))


def sized_network(fcs: pd.DataFrame, needs: pd.DataFrame, months: list[str], weights: pd.Series, tightness: float,
                  pool_share: float) -> pd.DataFrame:
    """FC capacity sized to the period's forecast: per storage type and month, the capacity net of the pool is
    `tightness` x the sellers' total forecast P50 need, split among FCs by `weights`; the pool is `pool_share` of
    capacity. Below 1, sellers share less space than they are forecast to need, and the baseline's values (score x
    productivity) decide who gets it."""
    p50 = needs.groupby(["storage_type", "month"])["p50_cube"].sum()
    j = fcs["month"].map({m: i for i, m in enumerate(months)})
    share = weights.reindex(pd.MultiIndex.from_arrays([fcs["fc_id"], fcs["storage_type"], j])).fillna(0.0).to_numpy()
    total = p50.reindex(pd.MultiIndex.from_frame(fcs[["storage_type", "month"]])).fillna(0.0).to_numpy()
    cap = np.round(tightness * total / (1 - pool_share) * share, 0)
    return fcs.assign(capacity_cube=cap, pool_cube=np.round(cap * pool_share, 1))


def _next_period(inst: Instance, needs: pd.DataFrame, history: pd.DataFrame) -> Instance:
    """Three months on: the same FCs and sellers, the history extended, last period's needs as placeholders."""
    months = [str(pd.Period(m, "M") + 3) for m in inst.period.months]
    shift = dict(zip(inst.period.months, months))
    fcs = inst.fcs.assign(month=inst.fcs["month"].map(shift))
    return Instance.from_tables(
        period={"period_id": f"P{months[0].replace('-', '')}", "months": months, "rounds": list(inst.period.rounds)},
        tables={"fcs": fcs, "sellers": inst.sellers.assign(regions=inst.sellers["regions"].map(";".join)),
                "needs": needs[["seller_id", "storage_type", "month", "p50_cube", "p90_cube"]].assign(month=needs["month"].map(shift)),
                "history": history},
        settings=inst.settings, name=inst.name)


def run_loop(instance: Instance, periods: int, *, spec=None, reform_share: float = 0.5, method: str = "lightgbm", seed: int = 0,
             options=None, tightness: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run `periods` periods; with `tightness`, each period's network is sized to tightness x its forecast P50 need
    (`sized_network`; else the instance's capacity is kept). Returns (groups, periods): one row per period and seller group (sellers, mean score,
    share of all limits, of the P50 needs and of the granted cube, limit per P50 need, fees and credits), and one
    row per period (P90 coverage of the weekly forecasts by the realized demand, and of the monthly P90 needs by the
    realized need; the market's totals; seconds)."""

    spec = spec or SimulationSpec(seed=seed)
    rng = np.random.default_rng([seed, 77])
    group, cover = seller_groups(instance, reform_share, rng)
    aged_weeks = np.where(group == "overstock", AGED_SHARE * (cover - COVER_WEEKS).clip(lower=0), 0.0)
    aged_weeks = pd.Series(aged_weeks, index=cover.index)
    cover = cover.where(group != "reformed", COVER_WEEKS)
    options = options or instance.settings.solver
    inst, settlement, group_rows, period_rows = instance, None, [], []
    weights = fc_weights(instance.fcs, list(instance.period.months))
    for p in range(periods):
        t0 = time.perf_counter()
        with_backtest = method == "backtest"
        fc = run_forecast(inst, with_backtest=with_backtest, method="lightgbm" if with_backtest else method, seed=seed, settlement=settlement)
        needs = fc.needs
        inst = replace(inst, needs=needs.assign(floor_cube=np.nan), sellers=apply_scores(inst.sellers, fc.performance))
        if tightness is not None:
            inst = replace(inst, fcs=sized_network(inst.fcs, needs, list(inst.period.months), weights, tightness, inst.settings.pool_share))
        limits = allocate(inst, options).limits["limit_cube"]

        # Realized demand of the 13 weeks after the history's end.
        panel = make_panel(inst.history)
        keys = panel.keys
        W = panel.y.shape[1]
        weeks = pd.date_range(panel.weeks[-1] + pd.Timedelta(weeks=1), periods=PERIOD_WEEKS, freq="7D")
        last_year = np.nan_to_num(panel.y[:, W - 52 : W - 52 + PERIOD_WEEKS], nan=0.0) if W >= 52 + PERIOD_WEEKS else np.repeat(
            np.nan_to_num(panel.y[:, -4:], nan=0.0).mean(axis=1, keepdims=True), PERIOD_WEEKS, axis=1)
        recent = np.nansum(panel.y[:, -13:], axis=1)
        before = np.nansum(panel.y[:, W - 65 : W - 52], axis=1) if W >= 65 else recent
        growth = np.where(before > 0, recent / np.where(before > 0, before, 1), 1.0).clip(0.5, 2)
        demand = last_year * growth[:, None] * rng.gamma(8.0, 1 / 8.0, last_year.shape)

        # The market: each seller wants its cover on hand; short of space in a month (wanted > limit), it bids.
        month_of = weeks.strftime("%Y-%m").to_numpy()
        months = list(inst.period.months)
        in_month = np.array([month_of == m for m in months])  # months x weeks
        c = cover.reindex(keys["seller_id"]).to_numpy()
        aged = aged_weeks.reindex(keys["seller_id"]).to_numpy() * demand.mean(axis=1)
        wanted_w = c[:, None] * demand + aged[:, None]
        series_key = pd.MultiIndex.from_frame(keys[["seller_id", "storage_type"]])
        wanted = pd.DataFrame({"seller_id": np.repeat(keys["seller_id"].to_numpy(), len(months)),
                               "storage_type": np.repeat(keys["storage_type"].to_numpy(), len(months)),
                               "month": np.tile(months, len(keys)),
                               "true_need": np.round(np.column_stack([wanted_w[:, w].mean(axis=1) if w.any() else wanted_w[:, 0]
                                                                      for w in in_month]).ravel(), 1)})
        market = inst.needs[["seller_id", "storage_type", "month", "p50_cube", "p90_cube"]].merge(
            wanted, on=["seller_id", "storage_type", "month"], how="left").fillna({"true_need": 0.0})
        mkey = pd.MultiIndex.from_frame(market[["seller_id", "storage_type", "month"]])
        market["limit"] = limits.reindex(mkey).fillna(0.0).to_numpy()
        market["shortfall"] = (market["true_need"] - market["limit"]).clip(lower=0.0)
        price = (inst.history.groupby("seller_id")["sales"].sum() / inst.history.groupby("seller_id")["shipped_cube"].sum()).fillna(0)
        true_prod = inst.sellers.set_index("seller_id")["productivity"]
        requests, results = market_rounds(inst, market, limits, true_prod, spec, rng, options)
        grants, prices, extra = round_grants(results)
        market["granted"] = extra.reindex(mkey).fillna(0.0).to_numpy()

        # The weeks: on hand = wanted stock, at most limit + granted; aged stock first; ships what demand and stock allow.
        by_key = market.set_index(["seller_id", "storage_type", "month"])
        space = by_key["limit"] + by_key["granted"]
        cap = np.full(demand.shape, np.inf)
        for j, m in enumerate(months):
            cols = in_month[j] if j else (in_month[j] | ~in_month.any(axis=0))  # weeks before the period: its first month's space
            per = space.xs(m, level="month").reindex(series_key).to_numpy()
            cap[:, cols] = np.where(np.isnan(per), np.inf, per)[:, None]
        on_hand = np.maximum(aged[:, None], np.minimum(wanted_w, cap))  # aged stock stays, even above the limit
        shipped = np.minimum(demand, on_hand - aged[:, None])
        i, t = np.nonzero(np.ones_like(demand, dtype=bool))
        new = pd.DataFrame({"seller_id": keys["seller_id"].to_numpy()[i], "storage_type": keys["storage_type"].to_numpy()[i],
                            "week": weeks.strftime("%Y-%m-%d").to_numpy()[t], "shipped_cube": np.round(shipped[i, t], 3),
                            "on_hand_cube": np.round(on_hand[i, t], 3), "category": keys["category"].to_numpy()[i],
                            "size_band": keys["size_band"].to_numpy()[i]})
        new["sales"] = np.round(new["shipped_cube"] * new["seller_id"].map(price).to_numpy(), 2)

        # Settlement, from the period's months' sales and average cube used.
        new_month = pd.Series(month_of[t])
        sold = new.assign(month=new_month.to_numpy()).groupby(["seller_id", "storage_type", "month"]).agg(
            sales=("sales", "sum"), used_cube=("on_hand_cube", "mean")).reset_index()
        sold = sold[sold["month"].isin(months)]
        settlement = settle(grants, prices, limits, sold, inst.grant_sales, inst.settings)

        # Calibration: weekly P90s against realized demand; monthly P90 needs against COVER_WEEKS x realized demand.
        _, fweeks, q50, q90 = fc.weekly
        n = min(PERIOD_WEEKS, q90.shape[1])
        alive = ~np.isnan(panel.y).all(axis=1)
        weekly_cov = float((demand[alive, :n] <= q90[alive, :n] + EPS).mean())
        realized = pd.DataFrame({"seller_id": np.repeat(keys["seller_id"].to_numpy(), len(months)),
                                 "storage_type": np.repeat(keys["storage_type"].to_numpy(), len(months)), "month": np.tile(months, len(keys)),
                                 "real": np.column_stack([COVER_WEEKS * demand[:, w].mean(axis=1) if w.any() else np.full(len(keys), np.nan)
                                                          for w in in_month]).ravel()}).dropna()
        cov = needs.merge(realized, on=["seller_id", "storage_type", "month"])
        scores = inst.sellers.set_index("seller_id")["performance_score"]
        lim_s = limits.groupby(level="seller_id").sum().reindex(scores.index, fill_value=0.0)
        need_s = needs.groupby("seller_id")["p50_cube"].sum().reindex(scores.index, fill_value=0.0)
        grant_s = market.groupby("seller_id")["granted"].sum().reindex(scores.index, fill_value=0.0)
        fee_s = settlement.groupby("seller_id")[["reservation_fee", "credit"]].sum().reindex(scores.index, fill_value=0.0)
        seconds = time.perf_counter() - t0
        for gname in GROUPS:
            members = group.index[group == gname]

            def share(v, members=members):
                return float(v.reindex(members).sum() / v.sum()) if v.sum() > 0 else float("nan")

            group_rows.append({
                "period": p + 1, "period_id": inst.period.period_id, "group": gname, "sellers": len(members),
                "mean_score": float(scores.reindex(members).mean()) if len(members) else float("nan"),
                "limit_share": share(lim_s), "need_share": share(need_s), "granted_share": share(grant_s),
                "limit_per_need": float(lim_s.reindex(members).sum() / need_s.reindex(members).sum()) if need_s.reindex(members).sum() > 0 else float("nan"),
                "reservation_fees": float(fee_s["reservation_fee"].reindex(members).sum()), "credits": float(fee_s["credit"].reindex(members).sum()),
            })
        period_rows.append({
            "period": p + 1, "period_id": inst.period.period_id, "method": fc.summary["method"],
            "coverage_90_weekly": weekly_cov, "coverage_90_monthly": float((cov["real"] <= cov["p90_cube"] + EPS).mean()),
            "limits_cube": float(limits.sum()), "bids": int(len(requests)), "granted_cube": float(market["granted"].sum()),
            "reservation_fees": float(settlement["reservation_fee"].sum()), "credits": float(settlement["credit"].sum()),
            "seconds": round(seconds, 2),
        })
        inst = _next_period(inst, needs, pd.concat([inst.history, new[inst.history.columns]], ignore_index=True))
    return pd.DataFrame(group_rows), pd.DataFrame(period_rows)


def simulate_periods(spec: SimulationSpec, periods: int, *, method: str = "lightgbm", reform_share: float = 0.5,
                     history_weeks: int = 104, options: SolverOptions | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """`optalloc simulate --periods N`: the market of `spec` with a seeded history, run for `periods` periods by
    `optalloc.forecast.loop.run_loop` (history -> forecast -> limits -> market -> next history). Returns the
    per-period, per-group table, the per-period table and the summary."""
    with stage("simulate: market and history"):
        base = generate(GenerateSpec(sellers=spec.sellers, fcs=spec.fcs, regions=spec.regions, storage_types=spec.storage_types, months=3,
                                     rounds=spec.rounds, requests=0, tightness=spec.tightness, with_sales=False, history_weeks=history_weeks,
                                     seed=spec.seed))
        market = replace(base, fcs=base.fcs.assign(pool_cube=np.round(base.fcs["capacity_cube"] * spec.pool_share, 1)),
                         settings=base.settings.model_copy(update={"pool_share": spec.pool_share}), name=f"simulation_s{spec.seed}")
    with stage(f"simulate: {periods} periods"):
        groups, by_period = run_loop(market, periods, spec=spec, reform_share=reform_share, method=method, seed=spec.seed, options=options,
                                      tightness=spec.tightness)
    first, last = groups[groups["period"] == 1].set_index("group"), groups[groups["period"] == periods].set_index("group")
    summary = {
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()},
        "periods": periods, "forecast_method": method, "reform_share": reform_share, "history_weeks": history_weeks,
        "coverage_90_weekly": [round(float(v), 4) for v in by_period["coverage_90_weekly"]],
        "coverage_90_monthly": [round(float(v), 4) for v in by_period["coverage_90_monthly"]],
        "limit_share": {g: [round(float(v), 4) for v in groups[groups["group"] == g]["limit_share"]] for g in groups["group"].unique()},
        "limit_per_need": {g: [round(float(v), 4) for v in groups[groups["group"] == g]["limit_per_need"]] for g in groups["group"].unique()},
        "mean_score": {g: [round(float(v), 1) for v in groups[groups["group"] == g]["mean_score"]] for g in groups["group"].unique()},
        "reformed_share_change": round(float(last.loc["reformed", "limit_share"] - first.loc["reformed", "limit_share"]), 4)
        if "reformed" in first.index and first.loc["reformed", "sellers"] else None,
    }
    return groups.round(4), by_period.drop(columns="seconds").round(4), summary


def space_per_need(groups: pd.DataFrame) -> str:
    """The report's claim, one line per group: its limit per P50 need, period by period (sellers who use their
    space well should see it grow)."""
    lines = []
    for g, rows in groups.groupby("group", sort=False):
        lines.append(f"- {g} ({int(rows['sellers'].iloc[0])} sellers): " + " -> ".join(
            "n/a" if pd.isna(v) else f"{v:.2f}" for v in rows.sort_values("period")["limit_per_need"]))
    return "space per need (limit / P50 need), period by period:\n" + "\n".join(lines)
