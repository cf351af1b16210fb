"""The unit of every number optalloc writes, and the one place it is rounded for output.

The rules compare and sum exact cents and milli-cube (`to_cents`, `to_milli`); results are rounded to their unit's
step once, when a step of the engine publishes them (`tables.round_table`), so memory, files and the store hold
the same numbers:

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
- **A row's net is its fee less its credit as shown** (never below 0): `tables.round_table` derives `net` from
  the rounded `reservation_fee` and `credit` wherever a table has all three.

The unit of each column of each table optalloc writes is declared with the table (`optalloc.tables`); a float
column without one is an error (`tables.UnitError`), never written unrounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Unit:
    name: str  # as the unit columns of docs/outputs.md say
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
