"""From an optimum by class to the tables: ties split as documented, limits placed at FCs, tidy DataFrames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..placement import split_by_class
from .data import FC_INDEX, LIMIT_INDEX, PLACEMENT_INDEX, BaselineData, tier_lower_bounds


@dataclass
class BaselineResult:
    """limits: (seller_id, storage_type, month); placements: (seller_id, fc_id, storage_type, month);
    fc_prices: (fc_id, storage_type, month) with the shadow price of space (dual of fc_capacity)."""

    limits: pd.DataFrame
    placements: pd.DataFrame
    fc_prices: pd.DataFrame
    objective: float
    status: str
    backend: str

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"limits": self.limits, "placements": self.placements, "fc_prices": self.fc_prices}


def split_ties(d: BaselineData, tier: np.ndarray) -> np.ndarray:
    """The documented split of ties (models/baseline.md, "Ties"): within an eligibility class, tier pieces of equal
    value are interchangeable (same FCs, same worth per cube), so whatever cube an optimum gives such a group is
    shared in proportion to the pieces' widths above their floors. The class's total, and so its placement and
    every constraint, is unchanged; the limits no longer depend on which optimal vertex the solver returned."""
    J = d.n_tiers
    coef = np.where(d.tier_width > 0, d.tier_coef, 0.0).ravel()
    lb, ub, x = tier_lower_bounds(d).ravel(), d.tier_width.ravel(), tier.ravel()
    cls = np.repeat(d.layout.cell_class, J)
    live = np.flatnonzero(ub > lb)
    if len(live) < 2:
        return tier
    i = live[np.lexsort((coef[live], cls[live]))]
    start = np.concatenate([[True], (cls[i][1:] != cls[i][:-1]) | (coef[i][1:] != coef[i][:-1])])
    group = np.cumsum(start) - 1
    size = np.bincount(group)
    if (size <= 1).all():
        return tier
    room = ub[i] - lb[i]
    fill = np.clip(x[i] - lb[i], 0.0, room)
    share = np.bincount(group, weights=fill) / np.bincount(group, weights=room)
    out = x.copy()
    tied = size[group] > 1
    out[i[tied]] = lb[i[tied]] + room[tied] * np.clip(share[group[tied]], 0.0, 1.0)
    return out.reshape(tier.shape)


def split_class_placement(d: BaselineData, limit: np.ndarray, class_place: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place each seller's limit at its class's FCs (`optalloc.placement.split_by_class`): (cell, capacity row,
    cube) triplets."""
    lay = d.layout
    cell, ca, amount = split_by_class(lay.cell_class, limit, lay.arc_class, class_place, lay.n_classes)
    return cell, lay.arc_cap[ca], amount


def finish_baseline(d: BaselineData, tier: np.ndarray, class_place: np.ndarray, cap_dual: np.ndarray, objective: float, status: str,
                    backend: str) -> BaselineResult:
    """From an optimum by class (any build) to the tables: ties split as documented, each seller's limit placed at
    its class's FCs (north-west corner rule), results extracted."""
    tier = split_ties(d, tier)
    return extract_baseline(d, split_class_placement(d, tier.sum(axis=1), class_place), tier, cap_dual, objective, status, backend)


def _clean(a: np.ndarray, decimals: int = 6) -> np.ndarray:
    """Round away solver noise (1e-10 cube) so output is stable and readable; -0.0 becomes 0.0."""
    return np.round(a, decimals) + 0.0


def extract_baseline(d: BaselineData, placed: tuple[np.ndarray, np.ndarray, np.ndarray], tier: np.ndarray, cap_dual: np.ndarray,
                     objective: float, status: str, backend: str) -> BaselineResult:
    """placed: (cell, capacity row, cube) triplets; tier: (n_cells, J); cap_dual: (len(capacity),) aligned with
    d.capacity."""
    limit = _clean(tier.sum(axis=1))
    limits = d.cells[LIMIT_INDEX].copy()
    limits["limit_cube"] = limit
    limits["p50_cube"] = d.cells["p50_cube"].to_numpy()
    limits["upper_cube"] = d.cells["upper_cube"].to_numpy()
    limits["floor_cube"] = d.cells["floor_cube"].to_numpy()
    limits = limits.set_index(LIMIT_INDEX).sort_index()

    cell, row, cube = placed
    cube = _clean(cube)
    keep = cube > 0
    cell, row, cube = cell[keep], row[keep], cube[keep]
    cap = d.capacity
    placements = pd.DataFrame(
        {
            "seller_id": d.cells["seller_id"].to_numpy()[cell],
            "fc_id": cap["fc_id"].to_numpy()[row],
            "storage_type": cap["storage_type"].to_numpy()[row],
            "month": cap["month"].to_numpy()[row],
            "cube": cube,
        }
    ).set_index(PLACEMENT_INDEX).sort_index()

    used = np.bincount(row, weights=cube, minlength=len(cap))
    fc_prices = cap[FC_INDEX + ["capacity_cube", "pool_cube", "net_cube"]].copy()
    fc_prices["baseline_cube"] = _clean(used)
    fc_prices["shadow_price"] = _clean(np.abs(cap_dual))
    fc_prices = fc_prices.set_index(FC_INDEX).sort_index()
    return BaselineResult(limits, placements, fc_prices, float(objective), status, backend)


def combine_baselines(parts: list[BaselineResult]) -> BaselineResult:
    """One result from the markets' results: tables concatenated in key order, objectives added."""
    statuses = sorted({p.status for p in parts})
    return BaselineResult(
        limits=pd.concat([p.limits for p in parts]).sort_index(),
        placements=pd.concat([p.placements for p in parts]).sort_index(),
        fc_prices=pd.concat([p.fc_prices for p in parts]).sort_index(),
        objective=float(sum(p.objective for p in parts)),
        status=statuses[0] if len(statuses) == 1 else ",".join(statuses),
        backend=parts[0].backend if parts else "none",
    )
