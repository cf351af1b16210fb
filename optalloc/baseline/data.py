"""The baseline's data: the instance as arrays aligned with the LP's sets (models/baseline.md, "Sets", "Parameters").

CELLS = needs rows (s, k, t); CAPACITY = FC rows (f, k, t); TIERS = 1..J; eligibility classes (k, t, the seller's
regions) and their arcs to FC rows; ARCS = (cell, f), expanded from the classes only where a model needs them.
Also the split into independent (storage type, month) markets ("One LP per market").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ..errors import InfeasibleError
from ..instance import Instance


LIMIT_INDEX = ["seller_id", "storage_type", "month"]


PLACEMENT_INDEX = ["seller_id", "fc_id", "storage_type", "month"]


FC_INDEX = ["fc_id", "storage_type", "month"]


@dataclass
class ClassLayout:
    """Cells grouped by eligibility class (storage type, month, the seller's regions): sellers in one
    class can use exactly the same FCs, so where each one's cube sits does not change the LP."""

    cell_class: np.ndarray  # CELLS -> class
    arc_class: np.ndarray  # CLASS_ARCS -> class (sorted)
    arc_cap: np.ndarray  # CLASS_ARCS -> capacity row (sorted within a class)
    n_classes: int


@dataclass
class BaselineData:
    """Everything the baseline LP needs, as arrays aligned with its sets."""

    cells: pd.DataFrame  # CELLS: seller_id, storage_type, month, p50_cube, upper_cube, floor_cube, value
    tier_width: np.ndarray  # (n_cells, J) cube
    tier_coef: np.ndarray  # (n_cells, J) $/cube-month
    capacity: pd.DataFrame  # CAPACITY: fc_id, storage_type, month, capacity_cube, pool_cube, net_cube
    layout: ClassLayout  # eligibility classes and their arcs to capacity rows
    cell_index: np.ndarray | None = None  # a market's cells: their positions in the whole instance's cells
    cap_index: np.ndarray | None = None  # a market's capacity rows: their positions in the whole instance's

    @property
    def n_tiers(self) -> int:
        return self.tier_width.shape[1]

    @cached_property
    def _arcs(self) -> tuple[np.ndarray, np.ndarray]:
        """ARCS, (cell, capacity row) in that order: every arc of each cell's class. Built only for the models that
        place cube per seller (the Pyomo reference, the single LP, the infeasibility diagnosis)."""
        lay = self.layout
        per_class = np.bincount(lay.arc_class, minlength=lay.n_classes)
        first = np.concatenate([[0], np.cumsum(per_class)[:-1]])
        count = per_class[lay.cell_class]
        arc_cell = np.repeat(np.arange(len(lay.cell_class)), count)
        within = np.arange(len(arc_cell)) - np.repeat(np.cumsum(count) - count, count)
        return arc_cell, lay.arc_cap[first[lay.cell_class][arc_cell] + within]

    @property
    def arc_cell(self) -> np.ndarray:
        return self._arcs[0]

    @property
    def arc_cap(self) -> np.ndarray:
        return self._arcs[1]

    @property
    def n_arcs(self) -> int:
        return len(self.arc_cell)


def seller_value(sellers: pd.DataFrame) -> pd.Series:
    """Value of a seller's space in $/cube-month: productivity x performance weight (0.5 at score 0, 1.5 at 1000)."""
    return sellers["productivity"] * (0.5 + sellers["performance_score"] / 1000.0)


def prepare_baseline(instance: Instance) -> BaselineData:
    s = instance.settings
    sellers = instance.sellers.set_index("seller_id")
    value = seller_value(sellers)
    top = float(value.max()) if len(value) and value.max() > 0 else 1.0
    # Compressed into [value_floor, 1], strictly increasing in value: with tier weights falling faster
    # than value_floor, every seller's tier j outranks anyone's tier j+1 (see models/baseline.md).
    norm = s.value_floor + (1.0 - s.value_floor) * (value / top)

    cells = instance.needs.copy()
    p50 = cells["p50_cube"].to_numpy()
    p90 = cells["p90_cube"].fillna(0.0).to_numpy()
    seller_floor = sellers["floor_cube"].reindex(cells["seller_id"]).to_numpy()
    floor = np.where(cells["floor_cube"].isna(), seller_floor, cells["floor_cube"].to_numpy())
    upper = np.maximum(np.maximum(p50, p90) * (1.0 + s.headroom), floor)
    cells["upper_cube"] = upper
    cells["floor_cube"] = floor
    cells["value"] = value.reindex(cells["seller_id"]).to_numpy()

    breaks = np.minimum(np.outer(p50, np.asarray(s.need_tiers)), upper[:, None])
    bounds = np.concatenate([np.zeros((len(cells), 1)), breaks, upper[:, None]], axis=1)
    tier_width = np.maximum(np.diff(bounds, axis=1), 0.0)
    tier_coef = top * np.outer(norm.reindex(cells["seller_id"]).to_numpy(), np.asarray(s.tier_weights))

    capacity = instance.fcs.copy()
    capacity["net_cube"] = capacity["capacity_cube"] - capacity["pool_cube"]

    cells = cells.reset_index(drop=True)
    capacity = capacity.reset_index(drop=True)
    return BaselineData(cells, tier_width, tier_coef, capacity, _eligibility_classes(cells, sellers["regions"], capacity))


def _eligibility_classes(cells: pd.DataFrame, regions_of_seller: pd.Series, capacity: pd.DataFrame) -> ClassLayout:
    """Classes = (storage type, month, the seller's set of regions), numbered in that sorted order, and each
    class's arcs: the FC rows of its type and month in one of its regions. Built per class, never per seller."""
    seller_regions, region_sets = pd.factorize(regions_of_seller.map(";".join), sort=True)
    set_of_cell = seller_regions[regions_of_seller.index.get_indexer(cells["seller_id"])]
    k_code, k_names = pd.factorize(cells["storage_type"], sort=True)
    t_code, t_names = pd.factorize(cells["month"], sort=True)
    key = (k_code.astype(np.int64) * len(t_names) + t_code) * len(region_sets) + set_of_cell
    keys, cell_class = np.unique(key, return_inverse=True)
    classes = pd.DataFrame({
        "cls": np.arange(len(keys)),
        "storage_type": np.asarray(k_names)[keys // (len(t_names) * len(region_sets))],
        "month": np.asarray(t_names)[(keys // len(region_sets)) % len(t_names)],
        "region": [region_sets[i].split(";") for i in keys % len(region_sets)],
    }).explode("region")
    caps = capacity[["region", "storage_type", "month"]].assign(cap=np.arange(len(capacity)))
    pairs = classes.merge(caps, on=["region", "storage_type", "month"]).sort_values(["cls", "cap"], kind="stable")
    return ClassLayout(cell_class.astype(np.int64), pairs["cls"].to_numpy(np.int64), pairs["cap"].to_numpy(np.int64), len(keys))


def tier_lower_bounds(d: BaselineData) -> np.ndarray:
    """A floor as lower bounds on the tiers, filled in tier order. Exact: a seller's tier coefficients
    strictly decrease, so every optimum fills its tiers in order, and then sum(tier) >= floor is this."""
    floor = d.cells["floor_cube"].to_numpy()[:, None]
    before = np.cumsum(d.tier_width, axis=1) - d.tier_width
    return np.clip(floor - before, 0.0, d.tier_width)


def markets(d: BaselineData) -> list[tuple[str, str]]:
    """The (storage type, month) markets: every cell, FC row and arc lies in exactly one."""
    keys = pd.concat([d.cells[["storage_type", "month"]], d.capacity[["storage_type", "month"]]]).drop_duplicates()
    return sorted(map(tuple, keys.to_numpy().tolist()))


def market_data(d: BaselineData, storage_type: str, month: str) -> BaselineData:
    """The part of the baseline LP that lies in one (storage type, month) market: its cells, its FC rows and the
    arcs between them (an arc joins a cell to an FC row of the same type and month), renumbered."""
    cells = np.flatnonzero((d.cells["storage_type"].to_numpy() == storage_type) & (d.cells["month"].to_numpy() == month))
    caps = np.flatnonzero((d.capacity["storage_type"].to_numpy() == storage_type) & (d.capacity["month"].to_numpy() == month))
    cap_pos = np.full(len(d.capacity), -1)
    cap_pos[caps] = np.arange(len(caps))
    lay = d.layout
    classes, cell_class = np.unique(lay.cell_class[cells], return_inverse=True)  # a market's classes are its own
    class_pos = np.full(lay.n_classes, -1)
    class_pos[classes] = np.arange(len(classes))
    arcs = np.flatnonzero(class_pos[lay.arc_class] >= 0)
    layout = ClassLayout(cell_class.astype(np.int64), class_pos[lay.arc_class[arcs]], cap_pos[lay.arc_cap[arcs]], len(classes))
    return BaselineData(d.cells.iloc[cells].reset_index(drop=True), d.tier_width[cells], d.tier_coef[cells],
                        d.capacity.iloc[caps].reset_index(drop=True), layout, cell_index=cells, cap_index=caps)


def precheck_baseline(d: BaselineData) -> None:
    """Floors that no FC can hold, found before any solve."""
    floor = d.cells["floor_cube"].to_numpy()
    has_arc = np.bincount(d.layout.arc_class, minlength=d.layout.n_classes)[d.layout.cell_class] > 0
    bad = np.flatnonzero((floor > 0) & ~has_arc)
    if len(bad):
        rows = d.cells.iloc[bad[:10]]
        where = [dict(seller_id=r.seller_id, storage_type=r.storage_type, month=r.month) for r in rows.itertuples()]
        names = "; ".join(f"seller {w['seller_id']} {w['storage_type']} {w['month']}" for w in where)
        raise InfeasibleError(
            f"baseline infeasible: {len(bad)} floor(s) with no FC of that storage type and month in the seller's regions: {names}", where
        )
