"""The unit of every number optalloc writes, and the one place it is rounded for output.

The engine computes in full precision (and, where its rules compare, in exact cents and milli-cube); nothing here
is ever fed back into its math. Numbers are rounded only on their way out, here, to their unit's step:

| unit | what | decimals (step) |
|---|---|---|
| `$` | money: fees, credits, net, sales, a round's revenue at offered fees | 2 (a cent) |
| `$ per cube` | a fee or price per cube (or per cube-month): offers, clearing and protected prices, productivity | 2 (a cent per cube, as fees are validated) |
| `$ per cube (shadow price)` | an LP dual: the marginal value of one more cube, not a charge (often a fraction of a cent) | 4 |
| `$ (value-weighted)` | the baseline LP's objective | 2 |
| `cube` | cube, or cube-months when summed over months | 3 (a milli-cube) |
| `share` | a share between 0 and 1 | 4 |
| `ratio` | a dimensionless error measure (weighted quantile loss) | 4 |
| `score` | a performance score, 0-1000 | 1 |
| `count` | a whole number | 0 |
| `seconds` | a duration | 3 |

Rounding is half away from zero on the decimal value (0.005 $ -> 0.01 $), after snapping away the float noise of
the computation (1.0049999999999999 is taken as 1.005).

Rules that keep what is shown consistent:
- **Totals are the sums of the rows shown.** A total of a column that is also written per row (summary.json's
  fees, credits, net, granted and allocated cube; the batch's report) is `total`: the exact sum, in whole steps
  (cents, milli-cube), of the rounded rows. Summing the CSV gives exactly the total.
- **A row's net is its fee less its credit as shown** (never below 0): `round_table` derives `net` from the
  rounded `reservation_fee` and `credit` wherever a table has all three.

`COLUMNS` names the unit of every number column of every table optalloc writes (a column name means the same
everywhere), `ROW_UNITS` the units of tables whose unit changes by row (the simulator's headline). A float
column without a declared unit is an error (`UnitError`), never written unrounded; tests/test_units.py checks
every table of a solved shipped instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Unit:
    name: str  # as the README's unit columns say
    decimals: int

    @property
    def scale(self) -> int:
        return 10**self.decimals


MONEY = Unit("$", 2)
PER_CUBE = Unit("$ per cube", 2)
DUAL = Unit("$ per cube (shadow price)", 4)
VALUE = Unit("$ (value-weighted)", 2)
CUBE = Unit("cube", 3)
SHARE = Unit("share", 4)
RATIO = Unit("ratio", 4)
SCORE = Unit("score", 1)
COUNT = Unit("count", 0)
SECONDS = Unit("seconds", 3)

# Every number column of every table optalloc writes (results, the simulator's, the forecast's, instances), by name.
COLUMNS: dict[str, Unit] = {
    # money
    "reservation_fee": MONEY, "credit": MONEY, "net": MONEY, "attributed_sales": MONEY, "sales": MONEY, "incremental_sales": MONEY,
    "reservation_fees": MONEY, "credits": MONEY,  # simulate --periods: a group's or a period's sums
    "objective": MONEY,  # round_prices: Σ max_fee_per_cube × granted cube, the round's revenue at offered fees
    # per cube
    "max_fee_per_cube": PER_CUBE, "fee_per_cube": PER_CUBE, "clearing_price": PER_CUBE, "round_clearing_price": PER_CUBE,
    "protected_price": PER_CUBE, "productivity": PER_CUBE, "mean_offer_per_cube": PER_CUBE, "mean_paid_per_cube": PER_CUBE,
    "value": PER_CUBE,  # simulator bids: what a cube is worth to the bidder over the months it names
    # LP duals
    "shadow_price": DUAL, "dual_price": DUAL, "pool_dual_max": DUAL, "price_faced": DUAL,
    # cube
    "limit_cube": CUBE, "p50_cube": CUBE, "p90_cube": CUBE, "upper_cube": CUBE, "floor_cube": CUBE, "cube": CUBE,
    "capacity_cube": CUBE, "pool_cube": CUBE, "net_cube": CUBE, "baseline_cube": CUBE, "max_cube": CUBE, "min_cube": CUBE,
    "request_cap_cube": CUBE, "granted_cube": CUBE, "held_cube": CUBE, "pool_after": CUBE, "used_cube": CUBE,
    "shipped_cube": CUBE, "on_hand_cube": CUBE, "want": CUBE, "true_need": CUBE, "limit": CUBE, "planner_limit": CUBE,
    "granted": CUBE, "baseline": CUBE, "reserved": CUBE, "limits_cube": CUBE,
    # shares, ratios, scores
    "sell_through": SHARE, "excess_share": SHARE, "in_stock_rate": SHARE, "space_use": SHARE, "coverage_90": SHARE,
    "saved_by_uniform_price": SHARE, "saved_by_price_protection": SHARE, "reserved_share": SHARE,
    "limit_share": SHARE, "need_share": SHARE, "granted_share": SHARE, "coverage_90_weekly": SHARE, "coverage_90_monthly": SHARE,
    "wql_50": RATIO, "wql_90": RATIO, "limit_per_need": RATIO, "performance_score": SCORE, "mean_score": SCORE,
    # counts
    "round": COUNT, "granted_round": COUNT, "first_round": COUNT, "requests": COUNT, "granted_requests": COUNT,
    "paradoxically_rejected": COUNT, "bids": COUNT, "series": COUNT, "horizon": COUNT, "sellers": COUNT,
    # durations
    "seconds": SECONDS,
}

# Tables whose unit is the row's: table -> (the column naming the row, {row label: unit}).
ROW_UNITS: dict[str, tuple[str, dict[str, Unit]]] = {
    "headline": ("metric", {
        "pool (cube-months)": CUBE,
        "pool space given out (cube-months)": CUBE,
        "of it used by its holder (cube-months)": CUBE,
        "sales made with it ($)": MONEY,
        "sales per cube-month given out ($)": PER_CUBE,
        "sellers given pool space": COUNT,
        "reservation fees ($)": MONEY,
        "performance credits ($)": MONEY,
        "fees net of credits ($)": MONEY,
        "winners whose fee credits fully offset (share)": SHARE,
    }),
}


# ---------------------------------------------------------------- exact units of the rules

# The clearing and settlement rules compare and sum money in whole cents and cube in whole milli-cube
# (models/clearing.md, "Units"). An instance is put on that grid once, where it is built (`Instance.from_tables`):
# after that every fee is the float nearest to its whole number of cents, so converting it back is exact.
CENTS, MILLI = MONEY.scale, CUBE.scale


def to_cents(x) -> np.ndarray:
    """$ (or $ per cube) on the cent grid as whole cents (int64)."""
    return np.rint(np.asarray(x, dtype=float) * CENTS).astype(np.int64)


def to_milli(x) -> np.ndarray:
    """Cube on the milli-cube grid as whole milli-cube (int64)."""
    return np.rint(np.asarray(x, dtype=float) * MILLI).astype(np.int64)


def int_bincount(groups: np.ndarray, amounts: np.ndarray, minlength: int) -> np.ndarray:
    """Whole amounts (cents, milli-cube) summed per group, exactly in int64 (np.bincount sums float64 weights, which
    are exact only up to 2**53: 9e12 cube in milli-cube)."""
    out = np.zeros(max(minlength, int(groups.max()) + 1 if len(groups) else 0), dtype=np.int64)
    np.add.at(out, groups, np.asarray(amounts, dtype=np.int64))
    return out


def on_grid(x, unit: Unit) -> np.ndarray:
    """`x` (already checked to lie within float noise of `unit`'s grid) as the float nearest its grid value:
    0.1 + 0.2 becomes 0.3, so two fees equal in cents are equal floats and sort as their cents do."""
    return np.rint(np.asarray(x, dtype=float) * unit.scale) / unit.scale + 0.0


def floor_to_grid(x, unit: Unit) -> np.ndarray:
    """`x` rounded down to `unit`'s grid (a derived pool counts its whole milli-cube only), noise of 1e-6 step allowed."""
    return np.floor(np.asarray(x, dtype=float) * unit.scale + 1e-6) / unit.scale + 0.0


class UnitError(Exception):
    """A number column with no declared unit: a bug (a new column must say its unit in `COLUMNS`), reported as an
    internal error, never written unrounded."""


def steps(values, unit: Unit) -> np.ndarray:
    """`values` in whole steps of `unit` (cents, milli-cube, ...), as floats holding whole numbers; NaN stays NaN."""
    x = np.round(np.asarray(values, dtype=float) * unit.scale, 6)  # snap the computation's float noise away first
    with np.errstate(invalid="ignore"):
        return np.sign(x) * np.floor(np.abs(x) + 0.5) + 0.0


def rounded(values, unit: Unit) -> np.ndarray:
    """`values` rounded to `unit`'s step: the nearest float to the decimal shown, so it prints without noise."""
    return steps(values, unit) / unit.scale + 0.0


def value(x, unit: Unit) -> float | None:
    """One number for JSON or a message, rounded to `unit` (None for a missing or non-finite one)."""
    if x is None or x is pd.NA:
        return None
    v = float(rounded([float(x)], unit)[0])
    return v if np.isfinite(v) else None


def total(values, unit: Unit) -> float:
    """The sum of `values` as shown: each rounded to `unit`, summed exactly in whole steps (NaN counts 0)."""
    s = steps(values, unit)
    return int(np.nansum(s)) / unit.scale + 0.0


def text(x, unit: Unit) -> str:
    """A number for a terminal message or a page: `unit`'s decimals, thousands separated ('' when missing)."""
    v = value(x, unit)
    return "" if v is None else f"{v:,.{unit.decimals}f}"


def units_of(name: str, frame: pd.DataFrame) -> dict[str, Unit | dict[str, Unit]]:
    """The unit of every number column of `frame` (table `name`, index reset); a dict of units by row where the
    table's unit is the row's. UnitError names a float column with none."""
    out: dict[str, Unit | dict[str, Unit]] = {}
    row_col, by_row = ROW_UNITS.get(name, (None, {}))
    for col in frame.columns:
        kind = frame[col].dtype.kind
        if kind not in "iuf" or col == row_col:
            continue
        if col in COLUMNS:
            out[col] = COLUMNS[col]
        elif row_col is not None and row_col in frame.columns:
            unknown = sorted(set(frame[row_col].astype(str)) - set(by_row))
            if unknown:
                raise UnitError(f"table {name}: no unit declared for row {unknown[0]!r} (add it to optalloc.units.ROW_UNITS)")
            out[col] = by_row
        elif kind == "f" and len(frame):  # a table with no rows (an empty market) has nothing to round
            raise UnitError(f"table {name}: column {col!r} has no declared unit (add it to optalloc.units.COLUMNS)")
    return out


def round_table(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (table `name`) with every number column rounded to its unit, and a row's `net` derived from its shown
    `reservation_fee` and `credit`. Works on the columns (reset the index first to round index columns too)."""
    out = frame.copy()
    row_col = ROW_UNITS.get(name, (None,))[0]
    for col, unit in units_of(name, frame).items():
        if out[col].dtype.kind != "f":
            continue
        if isinstance(unit, dict):
            scale = out[row_col].astype(str).map({k: u for k, u in unit.items()})
            out[col] = [float(rounded([v], u)[0]) for v, u in zip(out[col], scale)]
        else:
            out[col] = rounded(out[col].to_numpy(), unit)
    if {"reservation_fee", "credit", "net"} <= set(out.columns) and out["net"].dtype.kind == "f":
        net = np.maximum(steps(out["reservation_fee"], MONEY) - steps(out["credit"], MONEY), 0.0)
        out["net"] = net / MONEY.scale + 0.0
    return out
