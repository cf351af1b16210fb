"""A market simulator: does the reservation market put the pool where it sells most, and who pays what?

Sellers know what the planner does not: their true productivity (sales $ per cube-month; the planner's estimate
is off by a log-normal error) and their true need (the planner's P50 forecast is off by another). The planner's
baseline LP sets limits from the forecasts. Sellers whose true need exceeds their limit bid for the shortfall over
the period's rounds: a request names the months it is short in, asks for the shortfall (within the request
cap) and offers a fee below its value (margin x true productivity x months named, shaded by a private factor);
a bidder who is not fully granted bids again in the next round for the rest, raising its fee toward its value.
Every round is cleared by the real engine (`clear_round`, earlier grants held), and the period is settled by the
real engine from the sales the sellers then truly make (`settle`: price protection, credits).

The comparison, "planner's LP alone": the same LP allocating the pool too, from the forecasts (pool_share = 0).
The headline table compares the two uses of the pool's space:
- sales per cube-month of the space the pool gave out (true incremental sales: sales made with it);
- fees, credits and net paid; the share of winners whose fee the credits fully offset;
- and, per round of grant, what bidders offered and paid: how early bidders fare under price protection.
Seeded: the same spec gives the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from . import tables, units
from .baseline import allocate
from .clearing import clear_round, held_grants, request_caps
from .generate import generate
from .specs import GenerateSpec, SimulationSpec
from .instance import Instance
from .progress import note, stage
from .schemas import MAX_FEE, MAX_PRODUCTIVITY, MAX_SALES, SolverOptions
from .settlement import settle

EPS = 1e-6


@dataclass
class SimulationResult:
    spec: SimulationSpec
    headline: pd.DataFrame  # metric -> market, planner_lp
    by_round: pd.DataFrame  # (round of grant, storage type) -> bidders, offers and payments
    requests: pd.DataFrame  # every bid, with its round
    grants: pd.DataFrame
    settlement: pd.DataFrame
    truth: pd.DataFrame = field(repr=False)  # per (seller, type, month): forecast, true need, limits, used

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"headline": self.headline, "by_round": self.by_round, "bids": self.requests.set_index("request_id"),
                "grants": self.grants, "settlement": self.settlement, "truth": self.truth}


def _market(spec: SimulationSpec) -> Instance:
    base = generate(GenerateSpec(sellers=spec.sellers, fcs=spec.fcs, regions=spec.regions, storage_types=spec.storage_types, months=3,
                                 rounds=spec.rounds, requests=0, tightness=spec.tightness, with_sales=False, seed=spec.seed))
    fcs = base.fcs.assign(pool_cube=np.round(base.fcs["capacity_cube"] * spec.pool_share, 1))
    return replace(base, fcs=fcs, settings=base.settings.model_copy(update={"pool_share": spec.pool_share}), name=f"simulation_s{spec.seed}")


def _bids(first: pd.DataFrame, r: int, rng: np.random.Generator, opens: pd.Timestamp) -> pd.DataFrame:
    """Requests of round r: one per bidder, submitted during the round's week."""
    out = first.copy()
    out["round"] = r
    out["request_id"] = [f"B{r}-{s}-{k}" for s, k in zip(out["seller_id"], out["storage_type"])]
    out["submitted_at"] = opens + pd.to_timedelta(rng.integers(0, 7 * 86400, len(out)), unit="s")
    out["min_cube"] = 0.0
    return out


def simulate(spec: SimulationSpec, options: SolverOptions | None = None) -> SimulationResult:
    rng = np.random.default_rng(spec.seed + 1)  # the market itself comes from `generate` with spec.seed
    with stage("simulate: market"):
        market = _market(spec)
    options = options or market.settings.solver
    sellers = market.sellers.set_index("seller_id")
    # capped where the engine's inputs are (a wide error gave fees of 1e18 and sales of 1e22, past every bound)
    true_prod = np.minimum(sellers["productivity"] * np.exp(rng.normal(0.0, spec.productivity_error, len(sellers))), MAX_PRODUCTIVITY)
    needs = market.needs.copy()
    needs["true_need"] = np.round(needs["p50_cube"] * np.exp(rng.normal(0.0, spec.forecast_error, len(needs))), 1)

    # The planner's LP, from the forecasts: with the pool set aside (the market's baseline), and with the pool too.
    baseline = allocate(market, options)
    limits = baseline.limits["limit_cube"]
    planner = allocate(replace(market, fcs=market.fcs.assign(pool_cube=0.0)), options).limits["limit_cube"]
    key = pd.MultiIndex.from_frame(needs[["seller_id", "storage_type", "month"]])
    needs["limit"] = limits.reindex(key).fillna(0.0).to_numpy()
    needs["planner_limit"] = planner.reindex(key).fillna(0.0).to_numpy()
    needs["shortfall"] = (needs["true_need"] - needs["limit"]).clip(lower=0.0)

    requests, results = market_rounds(market, needs, limits, true_prod, spec, rng, options)
    note(f"simulate: {len(sellers)} sellers, {requests['seller_id'].nunique() if len(requests) else 0} short of space bid over {spec.rounds} rounds")
    grants, prices, extra = round_grants(results)

    # What sellers then truly use and sell: their true need, up to limit + granted extra in that month.
    needs["granted"] = extra.reindex(key).fillna(0.0).to_numpy()
    needs["used_cube"] = np.minimum(needs["true_need"], needs["limit"] + needs["granted"])
    prod = true_prod.reindex(needs["seller_id"]).to_numpy()
    needs["sales"] = np.minimum(np.round(prod * needs["used_cube"], 2), MAX_SALES)
    sales = needs[["seller_id", "storage_type", "month", "sales", "used_cube"]]
    with stage("simulate: settle"):
        settlement = settle(grants, prices, limits, sales, market.grant_sales, market.settings)

    # Sales made with the pool's space: the market's grants vs the planner's extra limits.
    market_extra_used = np.minimum(needs["granted"], needs["shortfall"])
    planner_extra = (needs["planner_limit"] - needs["limit"]).clip(lower=0.0)
    planner_extra_used = np.minimum(planner_extra, needs["shortfall"])
    headline = _headline(needs, prod, market_extra_used, planner_extra, planner_extra_used, settlement, market)
    by_round = _by_round(requests, grants, settlement)
    truth = needs.set_index(["seller_id", "storage_type", "month"])[
        ["p50_cube", "true_need", "limit", "planner_limit", "granted", "used_cube", "sales"]].sort_index()
    return SimulationResult(spec, headline, by_round, requests, grants, settlement, truth)


def round_grants(results) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """The cleared rounds' grants and prices, and the cube granted per (seller_id, storage_type, month): a
    multi-month grant counts in each of its months."""
    grants = pd.concat([x.grants for x in results]).sort_index()
    prices = pd.concat([x.prices for x in results]).sort_index()
    g = grants[grants["granted_cube"] > EPS].reset_index()
    extra = g[["seller_id", "storage_type", "months", "granted_cube"]].explode("months")
    return grants, prices, extra.groupby(["seller_id", "storage_type", "months"])["granted_cube"].sum()


def market_rounds(market: Instance, needs: pd.DataFrame, limits: pd.Series, true_prod: pd.Series, spec: SimulationSpec,
                  rng: np.random.Generator, options: SolverOptions) -> tuple[pd.DataFrame, list]:
    """The period's rounds: sellers short of space (`needs.shortfall` > 0 in some month) bid for it, as the module
    docstring says, and every round is cleared by the engine with the earlier rounds' grants held. Returns every bid
    and each round's result."""
    period = market.period
    # Bidders: one request per (seller, storage type) short in some month, for the months it is short in.
    short = needs[needs["shortfall"] > EPS]
    bidders = short.groupby(["seller_id", "storage_type"], sort=True).agg(months=("month", lambda m: tuple(sorted(m))),
                                                                          want=("shortfall", "mean")).reset_index()
    bidders["value"] = spec.margin * true_prod.reindex(bidders["seller_id"]).to_numpy() * bidders["months"].map(len).to_numpy()
    bidders["max_fee_per_cube"] = np.minimum(np.round(bidders["value"] * rng.uniform(*spec.shading, len(bidders)), 2), MAX_FEE)
    weights = np.array(spec.first_round_weights[: spec.rounds], dtype=float)
    weights = np.pad(weights, (0, spec.rounds - len(weights)), constant_values=weights[-1] if len(weights) else 1.0)
    bidders["first_round"] = np.array(period.rounds)[rng.choice(spec.rounds, len(bidders), p=weights / weights.sum())]
    bidders["max_cube"] = np.round(bidders["want"], 0)
    caps = request_caps(bidders, limits, market.settings)
    bidders["max_cube"] = np.minimum(bidders["max_cube"], np.floor(caps))
    bidders = bidders[(bidders["max_cube"] >= 1) & (bidders["max_fee_per_cube"] > 0)].reset_index(drop=True)  # no free bids

    # Rounds: first bids, plus rebids of the earlier round's losers for what they did not get.
    opens0 = pd.Timestamp(f"{period.months[0]}-01", tz="UTC") - pd.Timedelta(days=7 * (spec.rounds + 1))
    requests, results, pending = [], [], bidders.iloc[:0]
    for i, r in enumerate(period.rounds):
        fresh = bidders[bidders["first_round"] == r]
        bids = _bids(pd.concat([fresh, pending]), r, rng, opens0 + pd.Timedelta(days=7 * i))
        requests.append(bids)
        all_requests = pd.concat(requests, ignore_index=True)
        inst = replace(market, requests=all_requests[["request_id", "seller_id", "storage_type", "months", "max_fee_per_cube", "max_cube",
                                                      "min_cube", "round", "submitted_at"]])
        res = clear_round(inst, r, limits=limits, held=held_grants(*[x.grants for x in results]), options=options)
        results.append(res)
        got = res.grants.reset_index().set_index("request_id")["granted_cube"].reindex(bids["request_id"]).to_numpy()
        rest = bids.assign(max_cube=np.round(bids["max_cube"].to_numpy() - got, 0))
        rest = rest[rest["max_cube"] >= 1]
        raised = rest["max_fee_per_cube"] + spec.raise_share * (rest["value"] - rest["max_fee_per_cube"])
        pending = rest.assign(max_fee_per_cube=np.round(np.minimum(np.minimum(raised, rest["value"]), MAX_FEE), 2))

    return pd.concat(requests, ignore_index=True), results



def _headline(needs, prod, market_used, planner_extra, planner_used, settlement, market) -> pd.DataFrame:
    pool_total = float(market.fcs["pool_cube"].sum())
    granted = float(needs["granted"].sum())
    planner_given = float(planner_extra.sum())
    market_sales = float((prod * market_used).sum())
    planner_sales = float((prod * planner_used).sum())
    shown = tables.round_table("settlement", settlement)  # money totals as settlement.csv shows its rows
    winners = shown.groupby("seller_id")[["reservation_fee", "credit", "net"]].sum()
    rows = {
        "pool (cube-months)": (pool_total, pool_total),
        "pool space given out (cube-months)": (granted, planner_given),
        "of it used by its holder (cube-months)": (float(market_used.sum()), float(planner_used.sum())),
        "sales made with it ($)": (market_sales, planner_sales),
        "sales per cube-month given out ($)": (market_sales / granted if granted else np.nan, planner_sales / planner_given if planner_given else np.nan),
        "sellers given pool space": (float((needs.groupby("seller_id")["granted"].sum() > EPS).sum()),
                                     float((planner_extra.groupby(needs["seller_id"]).sum() > EPS).sum())),
        "reservation fees ($)": (units.total(shown["reservation_fee"], units.MONEY), 0.0),
        "performance credits ($)": (units.total(shown["credit"], units.MONEY), 0.0),
        "fees net of credits ($)": (units.total(shown["net"], units.MONEY), 0.0),
        "winners whose fee credits fully offset (share)": (float((winners["net"] == 0).mean()) if len(winners) else np.nan, np.nan),
    }
    # Each row's unit: optalloc.tables.HEADLINE.row_units (rounded when written or printed).
    return pd.DataFrame.from_dict(rows, orient="index", columns=["market", "planner_lp"]).rename_axis("metric")


def _by_round(requests: pd.DataFrame, grants: pd.DataFrame, settlement: pd.DataFrame) -> pd.DataFrame:
    """Per round of grant and storage type (each type is its own market with its own price): bids, grants, what
    winners offered and paid, and what they saved against their offers, split in two (shares of what they offered):
    - saved_by_uniform_price: offer -> their own round's clearing price (everyone granted in a round pays the
      round's lowest granted fee, whatever they offered);
    - saved_by_price_protection: own round's clearing price -> the protected price (the lowest clearing price of
      their round and every later one), what they pay.
    The two add up to 1 - paid / offered."""
    key = ["round", "storage_type"]
    bids = requests.groupby(key).agg(bids=("request_id", "size"))
    g = grants.reset_index()
    granted = g[g["granted_cube"] > EPS].groupby(key).agg(granted_requests=("request_id", "size"), granted_cube=("granted_cube", "sum"))
    st = tables.round_table("settlement", settlement.reset_index())  # fees and net as settlement.csv shows them
    st["offered"] = st["max_fee_per_cube"] * st["granted_cube"]
    st["at_round_price"] = np.minimum(st["max_fee_per_cube"], st["round_clearing_price"].fillna(np.inf)) * st["granted_cube"]
    paid = st.groupby(key).agg(offered=("offered", "sum"), at_round_price=("at_round_price", "sum"), paid=("reservation_fee", "sum"),
                               cube=("granted_cube", "sum"),
                                   round_clearing_price=("round_clearing_price", "first"), protected_price=("protected_price", "first"),
                                   net=("net", "sum"))
    out = bids.join(granted, how="left").join(paid, how="left").fillna({"granted_requests": 0, "granted_cube": 0.0})
    out["mean_offer_per_cube"] = out["offered"] / out["cube"]
    out["mean_paid_per_cube"] = out["paid"] / out["cube"]
    out["saved_by_uniform_price"] = 1.0 - out["at_round_price"] / out["offered"]
    out["saved_by_price_protection"] = (out["at_round_price"] - out["paid"]) / out["offered"]
    cols = ["bids", "granted_requests", "granted_cube", "round_clearing_price", "protected_price", "mean_offer_per_cube", "mean_paid_per_cube",
            "saved_by_uniform_price", "saved_by_price_protection", "net"]
    return out[cols].astype({"granted_requests": "int64"})


def markdown(frame: pd.DataFrame, name: str) -> str:
    """Table `name` (`headline`, `by_round`) as a Markdown table for the terminal and the docs: every number in
    its unit's decimals with thousands separators (`optalloc.units`: money to the cent, cube to 0.001)."""
    f = frame.reset_index()
    found = tables.units_of(name, f)
    row_col = (tables.WRITTEN[name].row_units or (None,))[0] if name in tables.WRITTEN else None

    def cell(v, col: str, row) -> str:
        unit = found.get(col)
        if isinstance(unit, dict):
            unit = unit[str(row[row_col])]
        if unit is not None and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            return units.text(v, unit)
        return str(v)

    lines = ["| " + " | ".join(map(str, f.columns)) + " |", "|" + "---|" * len(f.columns)]
    lines += ["| " + " | ".join(cell(v, c, row) for c, v in row.items()) + " |" for _, row in f.iterrows()]
    return "\n".join(lines)
