"""Schemas: what an instance is made of, in one place.

Row models (`FcRow`, `SellerRow`, `NeedRow`, `RequestRow`, `MonthSalesRow`, `GrantSalesRow`) are the
single source of truth for every table's columns, types, units and bounds. Small inputs may be
validated object by object; tables of any size are validated column-wise by `optalloc.validate`,
which reads these same field definitions, so the two can never disagree.

Units: cube = cubic feet of storage for one month; fees in $ per cube; sales in $.

Every number has an upper bound (documented on its field, tabulated in docs/inputs.md), so no input
can make a sum, a price or a JSON output overflow to infinity; NaN and infinity are refused everywhere.
Every id (and a list's items, the period_id and the instance name) follows one rule, `ID_RULE`.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from .errors import InputError, Problem

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"  # ASCII digits only (\d would take any script's digits)

# Ids: printable text of 1-128 characters, without ';' (the list separator in tables and in the store) and without
# control or invisible format characters (C0/C1 controls incl. NUL, tab and newlines, line/paragraph separators,
# zero-width and bidi controls, BOM, lone surrogates): they break CSV lists, terminals, PostgreSQL and reports.
ID_MAX_LENGTH = 128
ID_PATTERN = (
    r"^[^;\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]+$"
)
ID_RULE = f"printable text of at most {ID_MAX_LENGTH} characters, without ';' or control characters"
# What a pattern means, in words, for error messages.
PATTERN_RULES = {ID_PATTERN: ID_RULE, MONTH_PATTERN: "a calendar month, YYYY-MM"}
_ID_RE = re.compile(ID_PATTERN)


def id_problem(value: str) -> str | None:
    """Why `value` is not a valid id, or None (the rule of `Id`, for ids checked outside a model)."""
    if not isinstance(value, str) or not value:
        return "must be non-empty text"
    if len(value) > ID_MAX_LENGTH:
        return f"longer than {ID_MAX_LENGTH} characters"
    if not _ID_RE.match(value):
        return f"must be {ID_RULE}"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pydantic_problems(err: ValidationError, source: str, prefix: str = "") -> list[Problem]:
    """A pydantic ValidationError as optalloc's problems, one per error, naming `source` and the field (`prefix` + its
    location), with a pattern's rule in words."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"]
        rule = PATTERN_RULES.get((e.get("ctx") or {}).get("pattern"))
        if e["type"] == "string_pattern_mismatch" and rule:
            msg = f"must be {rule}: {_short(e['input'])}"
        problems.append(Problem(msg, source, None, f"{prefix}{loc}" if loc else prefix.rstrip(".") or None))
    return problems


class _CheckedMeta(type(BaseModel)):
    def __call__(cls, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as e:
            raise InputError(pydantic_problems(e, cls.__name__)) from None


class Checked(BaseModel, metaclass=_CheckedMeta):
    """A model whose construction in Python (`Settings(pool_share=2)`) raises optalloc's InputError naming the field,
    not pydantic's ValidationError; `model_validate` keeps pydantic's, for the loaders that collect every problem of
    a file before they raise."""


# Upper bounds of numbers (see docs/inputs.md, "Units, ids and bounds").
MAX_CUBE = 1e12  # cube: a trillion cubic feet, far above any network
MAX_FEE = 1e6  # $ per cube
MAX_SALES = 1e15  # $
MAX_PRODUCTIVITY = 1e9  # $ sales per cube-month
MAX_ROUND = 1_000_000

Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description=ID_RULE)]
Month = Annotated[str, Field(pattern=MONTH_PATTERN, description="calendar month, YYYY-MM")]
Cube = Annotated[float, Field(ge=0, le=MAX_CUBE, description=f"cubic feet, 0 to {MAX_CUBE:g}", json_schema_extra={"unit": "cube"})]
Fee = Annotated[float, Field(ge=0, le=MAX_FEE, description=f"$ per cube, 0 to {MAX_FEE:g}", json_schema_extra={"unit": "$/cube"})]
Dollars = Annotated[float, Field(ge=0, le=MAX_SALES, description=f"$, 0 to {MAX_SALES:g}", json_schema_extra={"unit": "$"})]
Round = Annotated[int, Field(ge=1, le=MAX_ROUND, description=f"round number, 1 to {MAX_ROUND:,}")]

# Python's re for patterns (the id pattern names surrogates, which the Rust engine cannot); no NaN or infinity.
_STRICT = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re", allow_inf_nan=False)
# Settings and solver options are typed as JSON gives them, as table cells are: pydantic's lax mode read `true` as
# 1.0 (a pool_share of the whole capacity), "1_000" as 1000 and "yes" as True. Numbers may be integers.
_STRICT_TYPES = ConfigDict(**_STRICT, strict=True)


class Row(BaseModel):
    model_config = _STRICT


class FcRow(Row):
    """Capacity of one FC for one storage type and month (table `fcs`)."""

    fc_id: Id
    region: Id
    storage_type: Id
    month: Month
    capacity_cube: Cube
    pool_cube: Cube | None = Field(
        default=None, description="cube set aside for reservations; default pool_share x capacity"
    )


class SellerRow(Row):
    """A seller (table `sellers`)."""

    seller_id: Id
    performance_score: float = Field(ge=0, le=1000, description="0-1000, efficient use of space scores high", json_schema_extra={"unit": "score"})
    productivity: float = Field(
        ge=0, le=MAX_PRODUCTIVITY, description=f"projected sales $ per cube-month, 0 to {MAX_PRODUCTIVITY:g}",
        json_schema_extra={"unit": "$/cube-month"},
    )
    regions: list[Id] = Field(min_length=1, description="eligible regions; ';'-separated in tables")
    floor_cube: Cube = Field(default=0.0, description="guaranteed minimum limit per storage type and month it has need in")


class NeedRow(Row):
    """Projected need of a seller for one storage type and month (table `needs`)."""

    seller_id: Id
    storage_type: Id
    month: Month
    p50_cube: Cube
    p90_cube: Cube | None = None
    floor_cube: Cube | None = Field(default=None, description="overrides the seller's floor_cube")


class RequestRow(Row):
    """A capacity reservation request (table `requests`)."""

    request_id: Id
    seller_id: Id
    storage_type: Id
    months: list[Month] = Field(min_length=1, description="months the grant must hold; ';'-separated in tables")
    max_fee_per_cube: Fee
    max_cube: float = Field(gt=0, le=MAX_CUBE, description=f"cube, above 0, at most {MAX_CUBE:g}", json_schema_extra={"unit": "cube"})
    min_cube: Cube = Field(default=0.0, description="0 = any partial fill")
    round: Round
    submitted_at: datetime

    @model_validator(mode="after")
    def _min_le_max(self) -> "RequestRow":
        if self.min_cube > self.max_cube:
            raise ValueError("min_cube must not exceed max_cube")
        return self


class MonthSalesRow(Row):
    """A seller's sales and average daily cube used in one storage type and month (table `sales`)."""

    seller_id: Id
    storage_type: Id
    month: Month
    sales: Dollars
    used_cube: Cube


class GrantSalesRow(Row):
    """Incremental sales attributed directly to one granted request (table `grant_sales`)."""

    request_id: Id
    incremental_sales: Dollars


class HistoryRow(Row):
    """What a seller did in one storage type and week (table `history`): the source of needs and scores
    (`optalloc.forecast`). Weeks are Mondays (ISO dates) before the period; checked in `optalloc.history`."""

    seller_id: Id
    storage_type: Id
    week: Id = Field(description="the week's Monday, YYYY-MM-DD")
    shipped_cube: Cube = Field(description="cube of the units sold (shipped) that week")
    sales: float = Field(ge=0, le=MAX_SALES, description=f"sales that week, 0 to {MAX_SALES:g}", json_schema_extra={"unit": "$"})
    on_hand_cube: Cube = Field(description="average daily cube stored that week")
    category: Id | None = Field(default=None, description="seller attribute for cold start, e.g. toys")
    size_band: Id | None = Field(default=None, description="seller attribute for cold start, e.g. small/medium/large")


# Tables of an instance: name -> (row model, required?)
TABLES: dict[str, tuple[type[Row], bool]] = {
    "fcs": (FcRow, True),
    "sellers": (SellerRow, True),
    "needs": (NeedRow, True),
    "requests": (RequestRow, False),
    "sales": (MonthSalesRow, False),
    "grant_sales": (GrantSalesRow, False),
    "history": (HistoryRow, False),
}

# Primary keys: duplicates are bad input.
TABLE_KEYS: dict[str, list[str]] = {
    "fcs": ["fc_id", "storage_type", "month"],
    "sellers": ["seller_id"],
    "needs": ["seller_id", "storage_type", "month"],
    "requests": ["request_id"],
    "sales": ["seller_id", "storage_type", "month"],
    "grant_sales": ["request_id"],
    "history": ["seller_id", "storage_type", "week"],
}


class SolverOptions(Checked):
    """How models are solved. One object, shared by the API, the CLI and the batch job.

    `lp_method` picks HiGHS's LP algorithm: on these transport-like shapes dual simplex was
    measured 10-100x slower than interior point or primal simplex (see benchmarks/).
    """

    model_config = _STRICT_TYPES

    time_limit: float | None = Field(default=None, gt=0, le=1e7, description="seconds per solve, above 0, at most 1e7; None = no limit")
    mip_rel_gap: float = Field(default=0.0, ge=0, le=1, description="relative MIP gap at which a solve counts as optimal, 0-1; 0 leaves only the absolute gap 1e-6, below the smallest objective step (1 cent x 0.001 cube = 1e-5)")
    lp_method: Literal["auto", "ipm", "primal_simplex", "dual_simplex"] = "auto"
    presolve: Literal["auto", "on", "off"] = Field(
        default="auto", description="auto = off for LPs (HiGHS presolve measured quadratic on these shapes), on for MIPs"
    )
    feasibility_tolerance: float = Field(default=1e-7, gt=0, le=1e-4, description="primal/dual feasibility tolerance (HiGHS default)")
    threads: int = Field(default=1, ge=1, le=1024, description="1 keeps results byte-identical run to run; at most 1024")
    backend: Literal["auto", "pyomo", "highspy"] = Field(
        default="auto", description="pyomo = reference model; highspy = vectorized arrays; auto picks by size"
    )
    auto_pyomo_max_rows: int = Field(
        default=1_000, ge=0, le=10**12, description="auto uses the Pyomo reference up to this many baseline cells or round requests"
    )
    allow_nonoptimal: bool = Field(default=False, description="publish a result stopped at a limit instead of raising")
    log: bool = False


class Settings(Checked):
    """Policy parameters of the programme (defaults as the real programme publishes them)."""

    model_config = _STRICT_TYPES

    pool_share: float = Field(default=0.10, ge=0, le=1, description="share of FC capacity set aside as the pool")
    headroom: float = Field(default=0.10, ge=0, le=100, description="limit <= (1+headroom) x max(P50, P90); 0-100")
    need_tiers: list[Annotated[float, Field(le=1000)]] = Field(
        default=[0.5, 1.0], max_length=100,
        description="tier breakpoints as fractions of P50 need (each at most 1000, at most 100 tiers); the last tier runs to the cap",
    )
    tier_weights: list[Annotated[float, Field(le=1e6)]] = Field(
        default=[1.0, 0.1, 0.01], max_length=101, description="value weight per tier (each at most 1e6), one more than need_tiers, decreasing"
    )
    value_floor: float = Field(
        default=0.2, gt=0, le=1, description="seller value is compressed into [value_floor, 1]"
    )
    credit_rate: float = Field(default=0.15, ge=0, le=1)
    credit_cap_share: float = Field(default=1.0, ge=0, le=1, description="credits are capped at this share of the fee")
    request_cap_share: float = Field(default=0.20, ge=0, le=1000, description="a request's cap as a share of its baseline limit; 0-1000")
    request_cap_cube: float = Field(default=2000.0, ge=0, le=MAX_CUBE, description=f"a request's cap at least this cube; 0 to {MAX_CUBE:g}")
    reserve_price: float | None = Field(
        default=None, ge=0, le=MAX_FEE, description=f"$ per cube, 0 to {MAX_FEE:g}; requests below it are not granted"
    )
    clearing_rule: str = Field(
        default="priority",
        description="the rule a round is cleared by, one of optalloc.rules' registry: priority = granted starting with the"
        " highest fee (then earliest, then smallest id), each request as much as fits, min_cube or nothing; welfare = max sum"
        " of fee x grant; pro_rata = share the marginal fee level",
    )
    tie_rule: Literal["time_priority", "pro_rata"] = Field(
        default="time_priority", description="older spelling: pro_rata selects clearing_rule pro_rata"
    )
    forecast_method: Literal["lightgbm", "seasonal_naive", "seasonal_yoy", "backtest"] = Field(
        default="lightgbm",
        description="how a period given history but no needs is forecast (solve, the batch's forecast step): a method, or backtest ="
        " the best of the three on rolling origins, as `optalloc forecast` (its default: lightgbm)",
    )
    solver: SolverOptions = SolverOptions()

    @field_validator("clearing_rule")
    @classmethod
    def _registered_rule(cls, v: str) -> str:
        from . import rules

        if v not in rules.names():
            raise ValueError(f"{v!r} is not a clearing rule; the rules are {', '.join(rules.names())}")
        return v

    @model_validator(mode="after")
    def _older_spelling(self) -> "Settings":
        """tie_rule = pro_rata is the older spelling of clearing_rule = pro_rata: it selects that rule (so what the
        settings say is the rule used), and with another clearing_rule given it contradicts it."""
        if self.tie_rule == "pro_rata" and self.clearing_rule != "pro_rata":
            if "clearing_rule" in self.model_fields_set and self.clearing_rule != "priority":
                raise ValueError(f"tie_rule 'pro_rata' selects clearing_rule 'pro_rata', which contradicts clearing_rule {self.clearing_rule!r};"
                                 " give clearing_rule alone")
            object.__setattr__(self, "clearing_rule", "pro_rata")
        return self

    @field_validator("reserve_price")
    @classmethod
    def _whole_cents(cls, v: float | None) -> float | None:
        """A fee: a whole number of cents (within float noise), held as the float of that many cents."""
        if v is None:
            return v
        k = v * 100
        if abs(k - round(k)) > 1e-6 + 1e-12 * abs(k):
            raise ValueError(f"{v!r} is not a whole number of cents ($ per cube with at most 2 decimals)")
        return round(k) / 100 + 0.0

    @model_validator(mode="after")
    def _tiers(self) -> "Settings":
        t, w = self.need_tiers, self.tier_weights
        if any(b <= 0 for b in t) or any(b2 <= b1 for b1, b2 in zip(t, t[1:])):
            raise ValueError("need_tiers must be positive and strictly increasing")
        if len(w) != len(t) + 1:
            raise ValueError("tier_weights needs exactly one weight more than need_tiers")
        if any(x <= 0 for x in w) or any(b >= a for a, b in zip(w, w[1:])):
            raise ValueError("tier_weights must be positive and strictly decreasing (diminishing returns)")
        return self


class Period(Checked):
    """An allocation period: its months and its rounds, in order."""

    model_config = _STRICT

    period_id: Id
    months: list[Month] = Field(min_length=1)
    rounds: list[Annotated[Round, Strict()]] = Field(min_length=1, description=f"round numbers (1 to {MAX_ROUND:,}), cleared in this order")
    round_close_dates: list[date] | None = Field(
        default=None,
        description="the last day each round takes requests, one per round (YYYY-MM-DD); the nightly batch clears a round"
        " on its first run dated after that day. Needed only by the batch job.",
    )

    @field_validator("months", "rounds", "round_close_dates")
    @classmethod
    def _sorted_unique(cls, v: list | None):
        if v is not None and list(v) != sorted(set(v)):
            raise ValueError("must be strictly increasing with no duplicates")
        return v

    @model_validator(mode="after")
    def _one_close_date_per_round(self) -> "Period":
        if self.round_close_dates is not None and len(self.round_close_dates) != len(self.rounds):
            raise ValueError(f"round_close_dates needs one date per round ({len(self.rounds)}), got {len(self.round_close_dates)}")
        return self

    def close_date(self, round_: int) -> date | None:
        return None if self.round_close_dates is None else self.round_close_dates[self.rounds.index(round_)]
