"""From a method's solution to the round's tables: grants with their audit, placements, pools, prices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .data import EPS, EXHAUSTED, GRANTED, MIN_CUBE, OUTBID, PARTIAL, POOL_INDEX, REJECTED, ClearingData, Solution
from ..tables import publish
from ..units import MILLI, to_cents, to_milli


@dataclass
class RoundResult:
    """grants: (round, request_id); placements: (round, request_id, fc_id); pools: (round, fc_id, storage_type, month);
    prices: (round, storage_type): clearing price = lowest granted fee of that type; pool dual beside it."""

    round: int
    grants: pd.DataFrame
    placements: pd.DataFrame
    pools: pd.DataFrame
    prices: pd.DataFrame


def _clean(a: np.ndarray) -> np.ndarray:
    return np.round(a, 6) + 0.0


def extract_round(d: ClearingData, sol: Solution, rule) -> RoundResult:
    """The round's tables from `rule`'s solution (the rule explains why a request with a minimum got nothing)."""
    grant = np.maximum(to_milli(sol.grant), 0) / MILLI  # whole milli-cube (exact for the priority rule)
    audit = d.audit.copy()
    audit["granted_cube"] = 0.0
    q0 = d.req["q0"].to_numpy()
    audit.loc[q0, "granted_cube"] = grant
    g = audit["granted_cube"].to_numpy()
    g_milli, mx_milli = to_milli(g), to_milli(audit["max_cube"].to_numpy())
    status = np.where(g_milli >= mx_milli, GRANTED, np.where(g_milli > 0, PARTIAL, REJECTED))
    audit["status"] = status
    # Clearing price per storage type: types are separate markets (capacity never moves between them).
    types = sorted(d.pools["storage_type"].unique())
    type_price = audit.loc[g > 0, ["storage_type", "max_fee_per_cube"]].groupby("storage_type")["max_fee_per_cube"].min().reindex(types)

    # Pool use by earlier rounds' grants (as placed now) and by this round's, from the placements.
    member, carc_i, cube = sol.placements
    cube = np.where(cube > EPS, cube, 0.0)
    is_held = member >= d.n
    ncarc = len(d.carc_class)
    carc_held = np.bincount(carc_i[is_held], weights=cube[is_held], minlength=ncarc)
    carc_new = np.bincount(carc_i[~is_held], weights=cube[~is_held], minlength=ncarc)
    held_use = _clean(np.bincount(d.centry_pool, weights=carc_held[d.centry_carc], minlength=len(d.pools)))
    new_use = _clean(np.bincount(d.centry_pool, weights=carc_new[d.centry_carc], minlength=len(d.pools)))
    pool_cube = d.pools["pool_cube"].to_numpy()
    pool_after = np.maximum(_clean(pool_cube - held_use - new_use), 0.0)
    took_part = np.zeros(len(audit), dtype=bool)
    took_part[q0] = True
    # Pool a request could reach: for each FC of its class, the least left over its months; before this
    # round's grants (room_before) and after them (room_all).
    room_all, room_before = np.zeros(len(audit)), np.zeros(len(audit))
    faced = np.full(len(audit), np.nan)
    if d.n:
        def reach(left: np.ndarray) -> np.ndarray:
            per_carc = pd.Series(left[d.centry_pool]).groupby(d.centry_carc).min().reindex(range(ncarc)).fillna(0).to_numpy()
            return np.bincount(d.carc_class, weights=per_carc, minlength=d.n_classes)[d.req_class]

        room_all[q0] = reach(pool_after)
        room_before[q0] = reach(np.maximum(pool_cube - held_use, 0.0))
        faced[q0] = d.price_faced(sol.pool_dual)
    fee = audit["max_fee_per_cube"].to_numpy()
    with np.errstate(invalid="ignore"):
        above_price = fee > faced + 1e-6  # False where the request did not take part (NaN)
    reason = audit["reason"].to_numpy(object).copy()
    short = took_part & (status != GRANTED)
    rejected = short & (status == REJECTED)
    has_min = audit["min_cube"].to_numpy() > 0
    reason[short] = OUTBID
    did_not_fit = np.zeros(len(audit), dtype=bool)  # the rule's own explanation of a minimum that got nothing
    if d.n:
        did_not_fit[q0] = rule.min_cube_did_not_fit(d, sol, room_all[q0], above_price[q0])
    reason[rejected & has_min & did_not_fit] = MIN_CUBE
    reason[rejected & (reason != MIN_CUBE) & (room_before <= EPS)] = EXHAUSTED  # earlier rounds' grants fill all it could use
    reason[status == GRANTED] = ""
    audit["reason"] = reason
    audit["price_faced"] = _clean(faced)
    # Rejected or cut although its fee is above the lowest fee granted cube of its storage type this round.
    price_cents = to_cents(type_price.reindex(audit["storage_type"]).fillna(np.inf).to_numpy().clip(max=1e15))
    audit["paradoxically_rejected"] = short & (to_cents(fee) > price_cents) & type_price.reindex(audit["storage_type"]).notna().to_numpy()

    audit["round"] = d.round
    cols = ["round", "request_id", "seller_id", "storage_type", "months", "max_fee_per_cube", "max_cube", "min_cube",
            "submitted_at", "request_cap_cube", "granted_cube", "status", "reason", "price_faced", "paradoxically_rejected"]
    grants = audit[cols].set_index(["round", "request_id"]).sort_index()

    # Placements as of this round: this round's grants, and earlier grants where they sit now.
    names = np.concatenate([d.req["request_id"].to_numpy(object), d.held["request_id"].to_numpy(object)])
    granted_round = np.concatenate([np.full(d.n, d.round), d.held["round"].to_numpy(np.int64)])
    placements = pd.DataFrame(
        {"round": d.round, "request_id": names[member], "fc_id": d.carc_fc[carc_i], "granted_round": granted_round[member], "cube": cube}
    )
    placements = placements[placements["cube"] > EPS]  # the split gives one piece per (member, FC); summing guards round-off
    placements = placements.groupby(["round", "request_id", "fc_id"], sort=True).agg(granted_round=("granted_round", "first"), cube=("cube", "sum"))
    placements["cube"] = _clean(placements["cube"].to_numpy())
    placements = placements[placements["cube"] > 0]

    pools = d.pools.copy()
    pools["held_cube"] = held_use
    pools["granted_cube"] = new_use
    pools["pool_after"] = pool_after
    pools["dual_price"] = _clean(sol.pool_dual)
    pools.insert(0, "round", d.round)
    pools = pools.set_index(["round"] + POOL_INDEX).sort_index()

    dual_max = pools.groupby("storage_type")["dual_price"].max().reindex(types).fillna(0.0)
    code = pd.Categorical(audit["storage_type"], categories=types).codes  # factorize once, then bincount
    per_type = lambda w=None: np.bincount(code, weights=w, minlength=len(types))  # noqa: E731
    prices = pd.DataFrame(
        {
            "round": d.round,
            "storage_type": types,
            "requests": per_type().astype("int64"),
            "granted_requests": per_type((g > 0).astype(float)).astype("int64"),
            "granted_cube": _clean(per_type(g)),
            "clearing_price": type_price.to_numpy(),
            "pool_dual_max": dual_max.to_numpy(),
            "objective": _clean(per_type(fee * g)),
            "paradoxically_rejected": per_type(audit["paradoxically_rejected"].to_numpy(float)).astype("int64"),
            "method": sol.method,
        }
    ).set_index(["round", "storage_type"])
    return RoundResult(d.round, publish("grants", grants), publish("grant_placements", placements), publish("pools", pools),
                       publish("round_prices", prices))


def concat_results(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Result tables of several markets or rounds as one, sorted by its index (empty parts kept only if all are)."""
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames).sort_index() if frames else pd.DataFrame()


def combine_markets(parts: list[RoundResult]) -> RoundResult:
    """One round from its storage types' results (they share no rows)."""
    return RoundResult(
        parts[0].round,
        concat_results([p.grants for p in parts]),
        concat_results([p.placements for p in parts]),
        concat_results([p.pools for p in parts]),
        concat_results([p.prices for p in parts]),
    )


@dataclass
class ClearingResult:
    """Several rounds' results as one: each table concatenated over the rounds."""

    rounds: list[RoundResult]

    def _all(self, part: str) -> pd.DataFrame:
        return concat_results([getattr(r, part) for r in self.rounds if getattr(r, part) is not None])

    @property
    def grants(self) -> pd.DataFrame:
        return self._all("grants")

    @property
    def placements(self) -> pd.DataFrame:
        return self._all("placements")

    @property
    def pools(self) -> pd.DataFrame:
        return self._all("pools")

    @property
    def round_prices(self) -> pd.DataFrame:
        return self._all("prices")

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"grants": self.grants, "grant_placements": self.placements, "pools": self.pools, "round_prices": self.round_prices}
