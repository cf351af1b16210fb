"""What a period's results add up to: summary.json, and the headline figures per round and storage type.

Post-processing only: the tables in, numbers out, each in its unit (`optalloc.units`), every total the exact sum of
the rows its table shows. No timings, no dates: the same results give the same summary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import __version__, tables, units
from .instance import Instance
from .progress import stage

# The order of a round's record in summary.json: what it is, what was asked and granted, the pool, the prices, the solve.
ROUND_FIELDS = ("round", "storage_type", "requests", "granted_requests", "granted_cube", "pool_available_cube", "pool_left_cube",
                "clearing_price", "pool_dual_max", "paradoxically_rejected", "objective", "method")


def _plain(v):
    if isinstance(v, (float, np.floating)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def pool_by_round(pools: pd.DataFrame) -> pd.DataFrame:
    """Per (round, storage type): the pool open to the round (pool less earlier rounds' grants held) and the pool left
    after it, summed over FCs and months (cube-months), from the rows pools.csv shows."""
    p = tables.round_table("pools", pools.reset_index())
    p["available"] = (p["pool_cube"] - p["held_cube"]).clip(lower=0.0)
    by = p.groupby(["round", "storage_type"])
    return pd.DataFrame({"pool_available_cube": by["available"].agg(lambda v: units.total(v, units.CUBE)),
                         "pool_left_cube": by["pool_after"].agg(lambda v: units.total(v, units.CUBE))})


def round_records(round_prices: pd.DataFrame, pools: pd.DataFrame | None = None) -> list[dict]:
    """One record per (round, storage type), in ROUND_FIELDS order (any other column of round_prices after them),
    each number as round_prices.csv shows it; with `pools`, the pool available to the round and left after it."""
    rp = tables.round_table("round_prices", round_prices)
    if pools is not None and len(pools):
        rp = rp.join(pool_by_round(pools))
    out = []
    for row in rp.reset_index().to_dict("records"):
        keys = [k for k in ROUND_FIELDS if k in row] + [k for k in row if k not in ROUND_FIELDS]
        out.append({k: _plain(row[k]) for k in keys})
    return out


def build_summary(instance: Instance, baseline=None, round_prices: pd.DataFrame | None = None, pools: pd.DataFrame | None = None,
                  settlement: pd.DataFrame | None = None, *, hash_inputs: bool = True) -> dict:
    """The JSON summary, in reading order: the instance and its settings, the baseline, each round, the settlement
    (every field, with its unit, is documented in docs/outputs.md). `hash_inputs`: the hashes of the inputs
    (`inputs_hash`, `period_hash`: what `--previous` checks; ~50 s at 2 M sellers, so only when asked)."""
    out: dict = {"optalloc_version": __version__}
    if hash_inputs:
        from .results_io import PERIOD_TABLES, input_hashes
        from .schemas import TABLES

        with stage("summary"):  # the inputs' text, hashed: one pass over the tables for both hashes
            out["inputs_hash"], out["period_hash"] = input_hashes(instance, tuple(TABLES), PERIOD_TABLES)
    out["instance"] = instance.summary()
    out["settings"] = instance.settings.model_dump(mode="json")
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
    if round_prices is not None:
        out["rounds"] = round_records(round_prices, pools)
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


STATISTICS = ("requests", "granted_requests", "pool_available_cube", "granted_cube_months", "pool_left_cube", "utilisation",
              "clearing_price", "reservation_fees", "credits", "net")


def statistics(round_prices: pd.DataFrame | None, pools: pd.DataFrame | None, settlement: pd.DataFrame | None) -> pd.DataFrame:
    """The headline figures of a period, one row per (round, storage type): requests and those granted, the pool open
    to the round, cube-months granted (a grant counts in each month it holds) and left, utilisation (granted over
    open pool), the clearing price, and the fees, credits and net of the round's grants once settled. Money to
    the cent and cube to 0.001, each total the exact sum of its table's rows."""
    index = pd.MultiIndex.from_tuples([], names=["round", "storage_type"])
    if round_prices is None or not len(round_prices):
        return pd.DataFrame(columns=list(STATISTICS), index=index)
    rp = tables.round_table("round_prices", round_prices)
    out = rp[["requests", "granted_requests", "clearing_price"]].copy()
    if pools is not None and len(pools):
        pool = pool_by_round(pools)
        out = out.join(pool)
        granted = pools.groupby(["round", "storage_type"])["granted_cube"].agg(lambda v: units.total(v, units.CUBE))
        out["granted_cube_months"] = granted
        with np.errstate(invalid="ignore", divide="ignore"):
            out["utilisation"] = units.rounded(np.where(out["pool_available_cube"] > 0, out["granted_cube_months"] / out["pool_available_cube"],
                                                        np.nan), units.SHARE)
    if settlement is not None and len(settlement):
        s = tables.round_table("settlement", settlement.reset_index())
        by = s.groupby(["round", "storage_type"])
        for col, name in (("reservation_fee", "reservation_fees"), ("credit", "credits"), ("net", "net")):
            out[name] = by[col].agg(lambda v: units.total(v, units.MONEY))
    return out.reindex(columns=list(STATISTICS))
