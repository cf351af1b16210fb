"""Every table optalloc writes, declared once: its name, keys, columns (kind, unit, meaning) and its table in the
store.

The instance's own tables are declared by their row models (`optalloc.schemas`); these are what optalloc computes
from them. From a declaration come:
- the order of a table's columns in memory and in its files (keys first, then the columns, as listed here);
- the rounding of each number column to its unit, in memory as in the files (`round_table`);
- how a result table written by optalloc is read back (`io.read_result_table`: text, booleans, times, what must be
  there);
- the store's result tables (`store.tables`, the migrations aside: `tests/test_store.py` checks that the migrated
  schema equals what is derived here);
- the tables of docs/outputs.md (`docs_table`; a test keeps the page in step).

Adding a column is one line here (and, for a result the store keeps, a migration).
"""

from __future__ import annotations

from dataclasses import dataclass

from .units import COUNT, CUBE, DUAL, MONEY, PER_CUBE, RATIO, SCORE, SECONDS, SHARE, Unit

# Kinds of column: what a cell holds, and the store's type for it.
ID, TEXT, LIST, INT, NUMBER, BOOL, TIME = "id", "text", "list", "int", "number", "bool", "time"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    meaning: str
    unit: Unit | None = None  # every NUMBER column has one (and an INT count column may)
    nullable: bool = False  # may be missing (NaN / NULL)
    width: int | None = None  # TEXT: the store's VARCHAR width (None: unbounded text)
    needed: bool = True  # read back: a folder without it is not an optalloc result


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]
    columns: tuple[Column, ...]  # keys first, in the written order
    meaning: str
    store: str | None = None  # the store's table of this result (None: not stored)
    stored_only: tuple[Column, ...] = ()  # columns the store keeps beside the result (not written to files)
    row_units: tuple[str, dict[str, Unit]] | None = None  # a table whose unit is its row's: (the row's label column, units)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def values(self) -> list[str]:
        """The columns that are not keys (a result frame's columns; the keys are its index)."""
        return [c.name for c in self.columns if c.name not in self.keys]

    def unit_of(self, name: str) -> Unit | None:
        col = next((c for c in self.columns if c.name == name), None)
        return None if col is None else col.unit


def _c(name: str, kind: str, meaning: str, unit: Unit | None = None, **kw) -> Column:
    return Column(name, kind, meaning, COUNT if unit is None and kind == INT else unit, **kw)


# Columns that mean the same in every table that has them.
SELLER = _c("seller_id", ID, "the seller")
FC = _c("fc_id", ID, "the fulfillment center")
TYPE = _c("storage_type", ID, "the storage type (each its own market)")
MONTH = _c("month", ID, "the month, YYYY-MM")
MONTHS = _c("months", LIST, "the months the request names (';'-separated)")
ROUND = _c("round", INT, "the round")
REQUEST = _c("request_id", ID, "the request")
FEE = _c("max_fee_per_cube", NUMBER, "the most the request offered per cube", PER_CUBE)
GRANTED = _c("granted_cube", NUMBER, "cube granted (held in each month the request names)", CUBE)


LIMITS = Table("limits", ("seller_id", "storage_type", "month"), (
    SELLER, TYPE, MONTH,
    _c("limit_cube", NUMBER, "the seller's baseline limit", CUBE),
    _c("p50_cube", NUMBER, "its projected need (P50)", CUBE),
    _c("upper_cube", NUMBER, "the most its limit may be: (1 + headroom) x max(P50, P90)", CUBE),
    _c("floor_cube", NUMBER, "its guaranteed minimum", CUBE),
), "each seller's limit per storage type and month, from the baseline LP", store="baseline_limits")

PLACEMENTS = Table("placements", ("seller_id", "fc_id", "storage_type", "month"), (
    SELLER, FC, TYPE, MONTH,
    _c("cube", NUMBER, "cube of the seller's limit placed at this FC", CUBE),
), "where each limit sits: cube per seller and FC", store="baseline_placements")

FC_PRICES = Table("fc_prices", ("fc_id", "storage_type", "month"), (
    FC, TYPE, MONTH,
    _c("capacity_cube", NUMBER, "the FC's capacity", CUBE),
    _c("pool_cube", NUMBER, "the part of it set aside for the rounds", CUBE),
    _c("net_cube", NUMBER, "capacity less the pool: what the baseline can place", CUBE),
    _c("baseline_cube", NUMBER, "what the baseline placed there", CUBE),
    _c("shadow_price", NUMBER, "the value of one more cube there (dual of fc_capacity)", DUAL),
), "each FC's capacity, pool, baseline use and shadow price", store="fc_prices")

GRANTS = Table("grants", ("round", "request_id"), (
    ROUND, REQUEST, SELLER, TYPE, MONTHS, FEE,
    _c("max_cube", NUMBER, "the most cube the request asked for", CUBE),
    _c("min_cube", NUMBER, "the least it takes (0: any partial fill)", CUBE),
    _c("submitted_at", TIME, "when it was placed (ISO 8601, UTC)"),
    _c("request_cap_cube", NUMBER, "the most it may ask: max(request_cap_share x limit, request_cap_cube)", CUBE),
    GRANTED,
    _c("status", TEXT, "granted, partially_granted or rejected", width=32),
    _c("reason", TEXT, "why it got less than it asked (empty when granted in full)", width=64),
    _c("price_faced", NUMBER, "the pool price it faced: the cheapest over its FCs of the sum of its months' pool duals", DUAL, nullable=True),
    _c("paradoxically_rejected", BOOL, "rejected or cut although its fee is above the round's clearing price"),
), "every request of every round: what it asked, what it got and why", store="grants")

GRANT_PLACEMENTS = Table("grant_placements", ("round", "request_id", "fc_id"), (
    ROUND, REQUEST, FC,
    _c("granted_round", INT, "the round the grant was made in"),
    _c("cube", NUMBER, "cube of the grant placed at this FC as of this round", CUBE),
), "where every grant sits as of each round (earlier grants may move when a later round clears)", store="grant_placements")

POOLS = Table("pools", ("round", "fc_id", "storage_type", "month"), (
    ROUND, FC, TYPE, MONTH,
    _c("pool_cube", NUMBER, "the period's pool at this FC", CUBE),
    _c("held_cube", NUMBER, "held by earlier rounds' grants", CUBE),
    _c("granted_cube", NUMBER, "granted in this round", CUBE),
    _c("pool_after", NUMBER, "left after the round", CUBE),
    _c("dual_price", NUMBER, "the value of one more cube of pool here (dual of pool_capacity)", DUAL),
), "each round's pool per FC, storage type and month", store="pools")

ROUND_PRICES = Table("round_prices", ("round", "storage_type"), (
    ROUND, TYPE,
    _c("requests", INT, "the round's requests of this type"),
    _c("granted_requests", INT, "how many got any cube"),
    GRANTED,
    _c("clearing_price", NUMBER, "the lowest fee granted (missing if nothing was)", PER_CUBE, nullable=True),
    _c("pool_dual_max", NUMBER, "the largest pool shadow price of the round", DUAL),
    _c("objective", NUMBER, "revenue at offered fees: the sum of max_fee_per_cube x granted cube", MONEY),
    _c("paradoxically_rejected", INT, "requests rejected or cut although their fee is above the clearing price"),
    _c("method", TEXT, "how the round was cleared: sort, priority, lp, mip, pro_rata or empty", width=32),
), "each round's clearing price per storage type", store="round_prices",
    stored_only=(_c("protected_price", NUMBER, "price protection so far: the lowest clearing price of this and the later cleared rounds",
                    PER_CUBE, nullable=True),))

SETTLEMENT = Table("settlement", ("round", "request_id"), (
    ROUND, REQUEST, SELLER, TYPE, MONTHS, GRANTED, FEE,
    _c("round_clearing_price", NUMBER, "its round's clearing price", PER_CUBE),
    _c("protected_price", NUMBER, "the lowest clearing price of its round and every later one", PER_CUBE),
    _c("fee_per_cube", NUMBER, "what it pays per cube: min(max_fee_per_cube, protected_price)", PER_CUBE),
    _c("reservation_fee", NUMBER, "fee_per_cube x granted cube", MONEY),
    _c("attributed_sales", NUMBER, "incremental sales made with the extra space", MONEY),
    _c("sales_source", TEXT, "where they come from: grant_sales, seller_months or none", width=32),
    _c("credit", NUMBER, "performance credit: min(credit_rate x attributed_sales, credit_cap_share x fee)", MONEY),
    _c("net", NUMBER, "fee less credit, never below 0", MONEY),
), "each grant's fee after price protection, credit and net", store="settlements")

RESULTS = {t.name: t for t in (LIMITS, PLACEMENTS, FC_PRICES, GRANTS, GRANT_PLACEMENTS, POOLS, ROUND_PRICES, SETTLEMENT)}

# ---------------------------------------------------------------- the forecast's tables

NEEDS = Table("needs", ("seller_id", "storage_type", "month"), (
    SELLER, TYPE, MONTH,
    _c("p50_cube", NUMBER, "projected need, median", CUBE),
    _c("p90_cube", NUMBER, "projected need, 90th percentile", CUBE),
), "needs forecast from the history (cube to hold per month)")

PERFORMANCE = Table("performance", ("seller_id",), (
    SELLER,
    _c("performance_score", NUMBER, "0-1000: efficient use of space scores high", SCORE),
    _c("productivity", NUMBER, "projected sales $ per cube-month", PER_CUBE),
    _c("sell_through", NUMBER, "shipped over shipped plus on hand", SHARE),
    _c("excess_share", NUMBER, "share of stock beyond what sold in its weeks of cover", SHARE),
    _c("in_stock_rate", NUMBER, "share of weeks with stock on hand", SHARE),
    _c("space_use", NUMBER, "credits over fees in the last settlement (missing without one)", SHARE, nullable=True),
), "performance scores from the history")

BACKTEST = Table("backtest", ("method", "horizon"), (
    _c("method", TEXT, "the forecast method"),
    _c("horizon", INT, "weeks ahead"),
    _c("wql_50", NUMBER, "weighted quantile loss at P50", RATIO),
    _c("wql_90", NUMBER, "weighted quantile loss at P90", RATIO),
    _c("coverage_90", NUMBER, "share of weeks at or below the P90", SHARE),
    _c("series", INT, "series scored"),
), "each forecast method scored on rolling origins")

# ---------------------------------------------------------------- the simulator's tables

BIDS = Table("bids", ("request_id",), (
    REQUEST, SELLER, TYPE, MONTHS,
    _c("want", NUMBER, "the extra cube the seller wants", CUBE),
    _c("value", NUMBER, "what a cube is worth to it over the months it names", PER_CUBE),
    FEE,
    _c("first_round", INT, "the round it first bids in"),
    _c("max_cube", NUMBER, "the cube it asks for", CUBE),
    ROUND,
    _c("submitted_at", TIME, "when it bids"),
    _c("min_cube", NUMBER, "the least it takes", CUBE),
), "the simulated sellers' bids")

BY_ROUND = Table("by_round", ("round", "storage_type"), (
    ROUND, TYPE,
    _c("bids", INT, "bids placed"),
    _c("granted_requests", INT, "bids granted any cube"),
    GRANTED,
    _c("round_clearing_price", NUMBER, "the round's clearing price", PER_CUBE, nullable=True),
    _c("protected_price", NUMBER, "after price protection", PER_CUBE, nullable=True),
    _c("mean_offer_per_cube", NUMBER, "mean offer of the granted cube", PER_CUBE, nullable=True),
    _c("mean_paid_per_cube", NUMBER, "mean fee paid per granted cube", PER_CUBE, nullable=True),
    _c("saved_by_uniform_price", NUMBER, "share of offers saved by paying the clearing price", SHARE, nullable=True),
    _c("saved_by_price_protection", NUMBER, "share saved by later, lower rounds", SHARE, nullable=True),
    _c("net", NUMBER, "fees less credits", MONEY),
), "the simulated market, by round of grant")

TRUTH = Table("truth", ("seller_id", "storage_type", "month"), (
    SELLER, TYPE, MONTH,
    _c("p50_cube", NUMBER, "forecast need", CUBE),
    _c("true_need", NUMBER, "the need that came true", CUBE),
    _c("limit", NUMBER, "the baseline limit", CUBE),
    _c("planner_limit", NUMBER, "the limit of the planner's LP allocating the pool too", CUBE),
    _c("granted", NUMBER, "cube granted in the market", CUBE),
    _c("used_cube", NUMBER, "cube used", CUBE),
    _c("sales", NUMBER, "sales made", MONEY),
), "each simulated seller's forecast, truth, limits and use")

HEADLINE = Table("headline", ("metric",), (
    _c("metric", TEXT, "what is measured (its unit in its name)"),
    _c("market", NUMBER, "the market's figure", None, nullable=True),
    _c("planner_lp", NUMBER, "the planner's LP's figure", None, nullable=True),
), "the pool's space, market against the planner's LP alone", row_units=("metric", {
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
}))

GROUPS = Table("groups", ("period", "group"), (
    _c("period", INT, "the period's number"),
    _c("group", TEXT, "the group of sellers"),
    _c("period_id", ID, "the period"),
    _c("sellers", INT, "sellers in the group"),
    _c("mean_score", NUMBER, "mean performance score", SCORE),
    _c("limit_share", NUMBER, "share of all limits", SHARE),
    _c("need_share", NUMBER, "share of all true need", SHARE),
    _c("granted_share", NUMBER, "share of the granted cube", SHARE, nullable=True),
    _c("limit_per_need", NUMBER, "limits per unit of true need", RATIO, nullable=True),
    _c("reservation_fees", NUMBER, "fees paid", MONEY),
    _c("credits", NUMBER, "credits earned", MONEY),
), "who gets the space, period by period (simulate --periods)")

PERIODS = Table("periods", ("period",), (
    _c("period", INT, "the period's number"),
    _c("period_id", ID, "the period"),
    _c("method", TEXT, "the forecast method used"),
    _c("coverage_90_weekly", NUMBER, "share of weeks at or below the P90", SHARE, nullable=True),
    _c("coverage_90_monthly", NUMBER, "share of months at or below the P90", SHARE, nullable=True),
    _c("limits_cube", NUMBER, "limits in total", CUBE),
    _c("bids", INT, "bids placed"),
    _c("granted_cube", NUMBER, "cube granted", CUBE),
    _c("reservation_fees", NUMBER, "fees paid", MONEY),
    _c("credits", NUMBER, "credits earned", MONEY),
), "forecast calibration and the market, per period (simulate --periods)")

SEGMENTS = Table("segments", ("segment",), (
    _c("segment", TEXT, "sellers in quarters of total baseline limit"),
    _c("sellers", INT, "sellers in the segment"),
    _c("baseline", NUMBER, "their baseline limits, cube-months", CUBE),
    _c("reserved", NUMBER, "their granted cube, cube-months", CUBE),
    _c("reserved_share", NUMBER, "reserved over baseline", SHARE),
), "the report's segments of sellers")

TIMINGS = Table("timings", ("step",), (
    _c("step", TEXT, "a step of a run"),
    _c("seconds", NUMBER, "how long it took", SECONDS),
), "a run's step timings (the report)")

# ---------------------------------------------------------------- the instance's tables, from their row models

_SCHEMA_UNITS = {"cube": CUBE, "$/cube": PER_CUBE, "$/cube-month": PER_CUBE, "$": MONEY, "score": SCORE}


def _input_table(name: str) -> Table:
    """An instance table (`generate` writes them, exactly as held) as its row model in optalloc.schemas declares it."""
    import typing

    from .schemas import TABLE_KEYS, TABLES

    columns = []
    for fname, f in TABLES[name][0].model_fields.items():
        extra = f.json_schema_extra
        if extra is None:  # an optional field: its unit is on the Annotated type inside Optional[...]
            for arg in typing.get_args(f.annotation):
                for meta in typing.get_args(arg)[1:]:
                    extra = getattr(meta, "json_schema_extra", None) or extra
        unit = _SCHEMA_UNITS.get((extra or {}).get("unit"))
        columns.append(_c(fname, NUMBER if unit else TEXT, f.description or fname, unit, nullable=not f.is_required()))
    return Table(name, tuple(TABLE_KEYS[name]), tuple(columns), f"the instance's {name} table (optalloc.schemas)")


INPUTS: dict[str, Table] = {name: _input_table(name) for name in ("fcs", "sellers", "needs", "requests", "sales", "grant_sales", "history")}

WRITTEN: dict[str, Table] = {**INPUTS, **{t.name: t for t in (*RESULTS.values(), NEEDS, PERFORMANCE, BACKTEST, BIDS, BY_ROUND, TRUTH,
                                                             HEADLINE, GROUPS, PERIODS, SEGMENTS, TIMINGS)}}


def docs_table(table: Table) -> str:
    """A declaration as docs/outputs.md shows it: one Markdown row per column."""
    rows = [f"| `{c.name}`{' (key)' if c.name in table.keys else ''} | {c.unit.name if c.unit else ''} | {c.meaning} |" for c in table.columns]
    return "\n".join(["| column | unit | meaning |", "|---|---|---|", *rows])


# ---------------------------------------------------------------- units of a frame, and rounding to them


class UnitError(Exception):
    """A number column with no declared unit: a bug (a new column must be declared above), reported as an internal
    error, never written unrounded."""


def units_of(name: str, frame) -> dict[str, Unit | dict[str, Unit]]:
    """The unit of every number column of `frame` (table `name`, index reset); a dict of units by row where the
    table's unit is the row's. UnitError names a float column the table does not declare."""
    table = WRITTEN.get(name)
    out: dict[str, Unit | dict[str, Unit]] = {}
    row_col, by_row = table.row_units if table is not None and table.row_units else (None, {})
    for col in frame.columns:
        kind = frame[col].dtype.kind
        if kind not in "iuf" or col == row_col:
            continue
        unit = table.unit_of(col) if table is not None else None
        if row_col is not None and row_col in frame.columns and unit is None and col in table.names:
            unknown = sorted(set(frame[row_col].astype(str)) - set(by_row))
            if unknown:
                raise UnitError(f"table {name}: no unit declared for row {unknown[0]!r} (add it to optalloc.tables)")
            out[col] = by_row
        elif unit is not None:
            out[col] = unit
        elif kind == "f" and len(frame):  # a table with no rows (an empty market) has nothing to round
            raise UnitError(f"table {name}: column {col!r} has no declared unit (declare it in optalloc.tables)")
    return out


def round_table(name: str, frame):
    """`frame` (table `name`) with every number column rounded to its unit, and a row's `net` derived from its shown
    `reservation_fee` and `credit`. Works on the columns (reset the index first to round index columns too)."""
    import numpy as np

    from .units import MONEY, rounded, steps

    out = frame.copy()
    table = WRITTEN.get(name)
    row_col = table.row_units[0] if table is not None and table.row_units else None
    for col, unit in units_of(name, frame).items():
        if out[col].dtype.kind != "f":
            continue
        if isinstance(unit, dict):
            out[col] = [float(rounded([v], unit[str(label)])[0]) for v, label in zip(out[col], out[row_col])]
        else:
            out[col] = rounded(out[col].to_numpy(), unit)
    if {"reservation_fee", "credit", "net"} <= set(out.columns) and out["net"].dtype.kind == "f":
        net = np.maximum(steps(out["reservation_fee"], MONEY) - steps(out["credit"], MONEY), 0.0)
        out["net"] = net / MONEY.scale + 0.0
    return out


def _text_dtype():
    import numpy as np
    import pandas as pd

    return pd.StringDtype("pyarrow", na_value=np.nan)


def publish(name: str, frame):
    """`frame` (table `name`, indexed by its keys or not) with its numbers in their units, as its files hold them:
    what every step of the engine returns, so memory, files and the store agree to the cent and the milli-cube."""
    index = [n for n in frame.index.names if n is not None]
    out = round_table(name, frame.reset_index() if index else frame)
    table = WRITTEN.get(name)
    if table is not None:  # text as the store reads it back: the same frames from memory, files and the store
        for col in table.columns:
            if col.kind in (ID, TEXT) and col.name in out and out[col.name].dtype == object:
                out[col.name] = out[col.name].astype(_text_dtype())
    return out.set_index(index) if index else out
