"""A round's data — models/clearing.md, "Sets" and "Parameters".

`prepare_clearing` audits the round's requests (request cap, reserve price, eligible pool) and lays out the sets of
the model: the requests that take part, the earlier rounds' grants it holds, the pools, and the eligibility classes
whose arcs place cube at FCs. `Solution` is what every method (sort, pro rata, the welfare model, the priority rule)
returns for `results.extract_round`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from .. import arguments
from ..errors import InputError, Problem
from ..instance import Instance
from ..schemas import Settings
from ..units import CUBE, MILLI, floor_to_grid, to_cents, to_milli

POOL_INDEX = ["fc_id", "storage_type", "month"]

# Audit vocabulary: every request ends its round with one status and, unless fully granted, a reason.
GRANTED, PARTIAL, REJECTED = "granted", "partially_granted", "rejected"
OUTBID, BELOW_RESERVE, MIN_CUBE, OVER_CAP, NO_POOL, EXHAUSTED = (
    "outbid",
    "below_reserve",
    "min_cube_did_not_fit",
    "over_request_cap",
    "no_eligible_pool",  # no FC in the seller's regions has pool of that type in all its months
    "pool_exhausted",  # there was such pool, but earlier rounds used it up
)
EPS = 1e-6  # cube: grants below this are zero


def initial_pool(instance: Instance) -> pd.Series:
    """Pool cube per (fc_id, storage_type, month) at the start of the period."""
    return instance.fcs.set_index(POOL_INDEX)["pool_cube"].sort_index()


def request_caps(requests: pd.DataFrame, limits: pd.Series, settings: Settings) -> np.ndarray:
    """max(request_cap_share x baseline limit, request_cap_cube), using the smallest baseline limit
    of the months the request names (the cap must hold in every month the grant holds)."""
    if len(requests) == 0:
        return np.zeros(0)
    ex = requests[["seller_id", "storage_type", "months"]].reset_index(drop=True).explode("months")
    keys = pd.MultiIndex.from_arrays([ex["seller_id"], ex["storage_type"], ex["months"]])
    lim = limits.reindex(keys).fillna(0.0).to_numpy()
    base = pd.Series(lim, index=ex.index).groupby(level=0).min().reindex(range(len(requests))).to_numpy()
    return np.maximum(settings.request_cap_share * base, settings.request_cap_cube)


@dataclass
class ClearingData:
    """One round's requests that take part, and the sets of its model.

    Requests are kept in input order. Requests with the same storage type, months and seller regions
    form an eligibility *class*: they may use exactly the same FCs. CLASS_ARCS are (class, FC) pairs;
    each touches one pool row per month of the class (`centry_*`). The Pyomo reference model works on
    per-request arcs (`request_arcs`), the fast path on class arcs; both describe the same LP.
    """

    round: int
    audit: pd.DataFrame  # every request of the round, with pre-filter reasons (input order)
    req: pd.DataFrame  # REQUESTS that take part; column q0 = row in audit
    fee: np.ndarray  # $ per cube, each the float of a whole number of cents
    max_cube: np.ndarray  # cube, each the float of a whole number of milli-cube
    min_cube: np.ndarray
    req_class: np.ndarray  # REQUESTS -> class
    held: pd.DataFrame  # HELD: grants of earlier rounds (request_id, round, granted_cube): fixed cube, placement free
    held_cube: np.ndarray
    held_class: np.ndarray  # HELD -> class
    n_classes: int
    carc_class: np.ndarray  # CLASS_ARCS -> class (sorted)
    carc_fc: np.ndarray  # CLASS_ARCS -> fc_id
    centry_pool: np.ndarray  # (pool row, class arc) incidences: pool row ...
    centry_carc: np.ndarray  # ... and class arc
    pools: pd.DataFrame  # POOLS: fc_id, storage_type, month, pool_cube (the period's pool, every row)
    settings: Settings

    @property
    def n(self) -> int:
        return len(self.req)

    # The rules compare and sum these (models/clearing.md, "Units"): whole cents and milli-cube, exactly.
    @cached_property
    def fee_cents(self) -> np.ndarray:
        return to_cents(self.fee)

    @cached_property
    def max_milli(self) -> np.ndarray:
        return to_milli(self.max_cube)

    @cached_property
    def min_milli(self) -> np.ndarray:
        return to_milli(self.min_cube)

    @cached_property
    def pool_milli(self) -> np.ndarray:
        return to_milli(self.pools["pool_cube"].to_numpy())

    @cached_property
    def held_milli(self) -> np.ndarray:
        return to_milli(self.held_cube)

    @cached_property
    def time_weight(self) -> np.ndarray:
        """Stage-2 weight: 1 for the earliest (submitted_at, request_id), falling by 1/n per rank."""
        rank = np.empty(self.n)
        order = self.req.reset_index(drop=True).sort_values(["submitted_at", "request_id"], kind="stable").index.to_numpy()
        rank[order] = np.arange(self.n)
        return 1.0 - rank / max(self.n, 1)

    @property
    def member_class(self) -> np.ndarray:
        """Class of every member: this round's requests, then the held grants."""
        return np.concatenate([self.req_class, self.held_class])

    @property
    def held_per_class(self) -> np.ndarray:
        return np.bincount(self.held_class, weights=self.held_cube, minlength=self.n_classes)

    @cached_property
    def request_arcs(self) -> tuple[np.ndarray, np.ndarray]:
        """ARCS of the reference model: (member, class arc) for every class arc of the member's class.
        Members 0..n-1 are this round's requests, n.. the held grants."""
        per_class = np.bincount(self.carc_class, minlength=self.n_classes)
        first = np.concatenate([[0], np.cumsum(per_class)[:-1]])
        cls = self.member_class
        k = per_class[cls]
        arc_req = np.repeat(np.arange(len(cls)), k)
        within = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
        return arc_req, first[cls][arc_req] + within

    @cached_property
    def arcs_of_member(self) -> dict[int, list[int]]:
        """For the reference model: the ARCS of each member (request or held grant)."""
        arc_req, _ = self.request_arcs
        return pd.Series(np.arange(len(arc_req))).groupby(arc_req).apply(list).to_dict()

    @property
    def single_pool(self) -> bool:
        """True when every class has one class arc touching one pool row: the LP splits into knapsacks."""
        if self.n_classes == 0:
            return True
        return bool(np.bincount(self.carc_class, minlength=self.n_classes).max() == 1 and len(self.centry_carc) == len(self.carc_class))

    @property
    def divisible(self) -> bool:
        return bool(np.all(self.min_cube <= EPS))

    def price_faced(self, pool_dual: np.ndarray) -> np.ndarray:
        """Per request: the cheapest, over the FCs it may use, of the sum over its months of the pool dual.
        In an LP optimum no request is rejected with a fee above this (complementary slackness)."""
        carc_price = np.bincount(self.centry_carc, weights=pool_dual[self.centry_pool], minlength=len(self.carc_class))
        class_price = pd.Series(carc_price).groupby(self.carc_class).min().reindex(range(self.n_classes)).to_numpy()
        return class_price[self.req_class] if self.n else np.zeros(0)


HELD_COLUMNS = ["request_id", "round", "seller_id", "storage_type", "months", "granted_cube"]


def held_grants(*grants: pd.DataFrame) -> pd.DataFrame:
    """The grants earlier rounds made (granted_cube > 0), as carried into the next round."""
    for i, g in enumerate(grants):
        arguments.frame(g, f"grants[{i}]")
    frames = [g.reset_index() for g in grants if g is not None and len(g)]
    missing = sorted({c for f in frames for c in HELD_COLUMNS if c not in f.columns})
    if missing:
        raise InputError(Problem(f"grants without the columns {missing} (a round's grants: clear_round(...).grants)", None, None, "held"))
    if not frames:
        return pd.DataFrame(columns=HELD_COLUMNS)
    held = pd.concat(frames, ignore_index=True)
    return held.loc[held["granted_cube"] > 0, HELD_COLUMNS].reset_index(drop=True)


def prepare_clearing(instance: Instance, round_: int, limits: pd.Series, held: pd.DataFrame | None = None) -> ClearingData:
    """Audit the round's requests and lay out the model's sets.

    held: grants of earlier rounds of the period. Their cube is fixed, but where it sits is decided again
    with this round's requests, against the period's whole pool: what carries from round to round is
    grants (unique), not placements (many are optimal, and an arbitrary one would decide later rounds).
    """
    settings = instance.settings
    if limits is None:  # no baseline: each request's cap is request_cap_cube
        limits = arguments.limits(None, instance)
    held = held_grants(held) if held is not None else held_grants()
    requests = instance.requests[instance.requests["round"] == round_].reset_index(drop=True)
    audit = requests.copy()
    audit["reason"] = ""
    caps = request_caps(requests, limits, settings)
    audit["request_cap_cube"] = caps
    over = to_milli(requests["max_cube"].to_numpy()) > np.floor(caps * MILLI + 1e-6)
    audit.loc[over, "reason"] = OVER_CAP
    if settings.reserve_price is not None:
        below = (to_cents(requests["max_fee_per_cube"].to_numpy()) < to_cents(settings.reserve_price)) & (audit["reason"] == "").to_numpy()
        audit.loc[below, "reason"] = BELOW_RESERVE
    pools = initial_pool(instance).rename("pool_cube").reset_index()
    # The rule works in whole milli-cube: a derived pool (pool_share x capacity) counts its whole milli-cube only.
    pools["pool_cube"] = floor_to_grid(pools["pool_cube"].to_numpy(float), CUBE)

    live = requests[audit["reason"] == ""].copy()
    live["q0"] = live.index
    regions = instance.sellers.set_index("seller_id")["regions"]
    live["regions"] = regions.reindex(live["seller_id"]).to_numpy()
    held = held.assign(regions=regions.reindex(held["seller_id"]).to_numpy())
    key = ["storage_type", "months", "regions"]
    classes = pd.concat([live[key], held[key]]).drop_duplicates().sort_values(key, kind="stable").reset_index(drop=True)
    classes["cls"] = np.arange(len(classes))

    # Class arcs: FC f may hold a class's cube if f is in one of its regions and has pool of its storage
    # type in every month it names (the same cube sits at the same FC in every month).
    ex = classes.explode("months").rename(columns={"months": "month"}).explode("regions").rename(columns={"regions": "region"})
    fc_region = instance.fcs[["fc_id", "region"]].drop_duplicates()
    prow = pools.assign(prow=np.arange(len(pools))).merge(fc_region, on="fc_id")
    j = ex.merge(prow, on=["region", "storage_type", "month"]).drop_duplicates(["cls", "fc_id", "month"])
    j = j[j["pool_cube"] > EPS]
    n_months = classes["months"].map(len).to_numpy()
    cover = j.groupby(["cls", "fc_id"])["month"].transform("size").to_numpy()
    j = j[cover == n_months[j["cls"].to_numpy()]]
    usable = np.zeros(len(classes), dtype=bool)
    usable[j["cls"].unique()] = True
    cls_of = live[key].merge(classes, on=key, how="left")["cls"].to_numpy()
    held_cls = held[key].merge(classes, on=key, how="left")["cls"].to_numpy() if len(held) else np.zeros(0, np.int64)
    if len(held) and not usable[held_cls].all():
        bad = held.loc[~usable[held_cls], "request_id"].tolist()[:5]
        raise InputError(Problem(f"earlier grants {bad} have no pool left to sit in (did the FC table change?)", "grants"))
    no_pool = ~usable[cls_of] if len(cls_of) else np.zeros(0, dtype=bool)
    audit.loc[live["q0"].to_numpy()[no_pool], "reason"] = NO_POOL
    live, cls_of = live[~no_pool].reset_index(drop=True), cls_of[~no_pool]

    # Renumber the classes in use; class arcs sorted by (class, fc_id).
    used = np.unique(np.concatenate([cls_of, held_cls]).astype(np.int64))
    renum = np.full(len(classes), -1)
    renum[used] = np.arange(len(used))
    j = j[np.isin(j["cls"].to_numpy(), used)].assign(cls=lambda f: renum[f["cls"].to_numpy()])
    carcs = j[["cls", "fc_id"]].drop_duplicates().sort_values(["cls", "fc_id"], kind="stable").reset_index(drop=True)
    carcs["carc"] = np.arange(len(carcs))
    j = j.merge(carcs, on=["cls", "fc_id"]).sort_values(["prow", "carc"], kind="stable")
    return ClearingData(
        round=round_,
        audit=audit,
        req=live.drop(columns=["regions"]),
        fee=live["max_fee_per_cube"].to_numpy(float),
        max_cube=live["max_cube"].to_numpy(float),
        min_cube=live["min_cube"].to_numpy(float),
        req_class=renum[cls_of].astype(np.int64),
        held=held.drop(columns=["regions"]),
        held_cube=held["granted_cube"].to_numpy(float),
        held_class=renum[held_cls].astype(np.int64),
        n_classes=len(used),
        carc_class=carcs["cls"].to_numpy(np.int64),
        carc_fc=carcs["fc_id"].to_numpy(object),
        centry_pool=j["prow"].to_numpy(np.int64),
        centry_carc=j["carc"].to_numpy(np.int64),
        pools=pools,
        settings=settings,
    )

@dataclass
class Solution:
    grant: np.ndarray  # per request
    placements: tuple[np.ndarray, np.ndarray, np.ndarray]  # (member, class arc, cube); members n.. are held grants
    pool_dual: np.ndarray  # per pool row
    method: str
    avail: np.ndarray | None = None  # priority: cube each request could have got at its turn (its reason)
