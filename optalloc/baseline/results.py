"""From an optimum by class to the tables: ties split as documented, limits placed at FCs, tidy DataFrames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..placement import split_by_class
from ..tables import publish
from .data import FC_INDEX, LIMIT_INDEX, PLACEMENT_INDEX, BaselineData, tier_lower_bounds


@dataclass
class BaselineResult:
    """limits: (seller_id, storage_type, month); placements: (seller_id, fc_id, storage_type, month);
    fc_prices: (fc_id, storage_type, month) with the shadow price of space (dual of fc_capacity). A baseline read back
    from an output folder has its limits only (placements and fc_prices None)."""

    limits: pd.DataFrame
    placements: pd.DataFrame | None
    fc_prices: pd.DataFrame | None
    objective: float
    status: str
    backend: str

    @property
    def complete(self) -> bool:
        """Computed here or read whole (not just its limits)."""
        return self.placements is not None and self.fc_prices is not None

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: frame for name, frame in (("limits", self.limits), ("placements", self.placements), ("fc_prices", self.fc_prices))
                if frame is not None}


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


@dataclass
class BaselineSolution:
    """A solved market (or the whole LP) as arrays aligned with its `BaselineData`: the limit of each cell, where it
    sits ((cell, capacity row, cube) triplets) and the shadow price of each capacity row."""

    limit: np.ndarray
    placed: tuple[np.ndarray, np.ndarray, np.ndarray]
    cap_dual: np.ndarray
    objective: float
    status: str
    backend: str

    @classmethod
    def empty(cls, d: BaselineData, backend: str) -> "BaselineSolution":
        """FC rows nobody needs: nothing placed, and more space there is worth nothing."""
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros(len(d.cells)), (none, none, np.zeros(0)), np.zeros(len(d.capacity)), 0.0, "optimal", backend)


def finish_baseline(d: BaselineData, tier: np.ndarray, class_place: np.ndarray, cap_dual: np.ndarray, objective: float, status: str,
                    backend: str) -> BaselineSolution:
    """From an optimum by class (any build) to a solution: ties split as documented, each seller's limit placed at
    its class's FCs (north-west corner rule)."""
    tier = split_ties(d, tier)
    limit = tier.sum(axis=1)
    return BaselineSolution(limit, split_class_placement(d, limit, class_place), cap_dual, float(objective), status, backend)


def combine_solutions(d: BaselineData, parts: list[tuple[np.ndarray, np.ndarray, BaselineSolution]]) -> BaselineSolution:
    """The markets' solutions as one solution of the whole `d`: each market's cells and capacity rows (positions
    `cell_index`, `cap_index` in `d`) mapped back, objectives added."""
    limit, cap_dual = np.zeros(len(d.cells)), np.zeros(len(d.capacity))
    cells, rows, cubes = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for cell_index, cap_index, sol in parts:
        limit[cell_index] = sol.limit
        cap_dual[cap_index] = sol.cap_dual
        c, r, x = sol.placed
        cells.append(cell_index[c]), rows.append(cap_index[r]), cubes.append(x)
    statuses = sorted({sol.status for *_, sol in parts}) or ["optimal"]
    return BaselineSolution(limit, (np.concatenate(cells), np.concatenate(rows), np.concatenate(cubes)), cap_dual,
                            float(sum(sol.objective for *_, sol in parts)), statuses[0] if len(statuses) == 1 else ",".join(statuses),
                            parts[0][2].backend if parts else "none")


def _clean(a: np.ndarray, decimals: int = 6) -> np.ndarray:
    """Round away solver noise (1e-10 cube) so output is stable and readable; -0.0 becomes 0.0."""
    return np.round(a, decimals) + 0.0


def _in_key_order(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    frame = frame.set_index(index)
    return frame if frame.index.is_monotonic_increasing else frame.sort_index()


def _ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank in sorted order (equal values, equal rank); cheap when the values are already sorted."""
    if len(values) and (values[1:] >= values[:-1]).all():
        return np.concatenate([[0], np.cumsum(values[1:] != values[:-1])])
    return pd.factorize(values, sort=True)[0]


def extract_baseline(d: BaselineData, sol: BaselineSolution) -> BaselineResult:
    """The tables, in key order. Instance tables are kept in key order, so the cells and capacity rows already are:
    the sorts below are checks that cost a comparison per row, and placements are ordered by integer ranks."""
    limits = d.cells[LIMIT_INDEX].copy()
    limits["limit_cube"] = _clean(sol.limit)
    limits["p50_cube"] = d.cells["p50_cube"].to_numpy()
    limits["upper_cube"] = d.cells["upper_cube"].to_numpy()
    limits["floor_cube"] = d.cells["floor_cube"].to_numpy()
    limits = _in_key_order(limits, LIMIT_INDEX)

    cell, row, cube = sol.placed
    cube = _clean(cube)
    keep = cube > 0
    cell, row, cube = cell[keep], row[keep], cube[keep]
    cap = d.capacity
    seller = _ranks(d.cells["seller_id"].to_numpy())
    order = np.lexsort((_cap_order(cap)[row], seller[cell]))
    cell, row, cube = cell[order], row[order], cube[order]
    placements = _in_key_order(pd.DataFrame({
        "seller_id": d.cells["seller_id"].to_numpy()[cell],
        "fc_id": cap["fc_id"].to_numpy()[row],
        "storage_type": cap["storage_type"].to_numpy()[row],
        "month": cap["month"].to_numpy()[row],
        "cube": cube,
    }), PLACEMENT_INDEX)

    used = np.bincount(row, weights=cube, minlength=len(cap))
    fc_prices = cap[FC_INDEX + ["capacity_cube", "pool_cube", "net_cube"]].copy()
    fc_prices["baseline_cube"] = _clean(used)
    fc_prices["shadow_price"] = _clean(np.abs(sol.cap_dual))
    return BaselineResult(publish("limits", limits), publish("placements", placements), publish("fc_prices", _in_key_order(fc_prices, FC_INDEX)),
                          float(sol.objective), sol.status, sol.backend)


def _cap_order(cap: pd.DataFrame) -> np.ndarray:
    """Each capacity row's rank in (fc_id, storage_type, month) order (FC rows are few: a plain factorize)."""
    fc, k, t = (pd.factorize(cap[c].to_numpy(), sort=True)[0] for c in FC_INDEX)
    rank = np.empty(len(cap), dtype=np.int64)
    rank[np.lexsort((t, k, fc))] = np.arange(len(cap))
    return rank
