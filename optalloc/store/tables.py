"""The store's tables as the code sees them (SQLAlchemy Core).

The database itself is created and changed only by the migrations in `optalloc/store/migrations`;
`tests/test_store.py` proves the migrated schema equals this metadata, so the two cannot drift.

Column names are the DataFrame column names of the instance tables (`optalloc.schemas`) and of the
result tables (declared in `optalloc.tables`, from which these are derived), with `period_id` in front: every table but
`runs` is keyed by period. Lists (months, regions) are stored as ';'-joined text, as in CSV instances.
Units: cube = cubic feet for a month; fees $ per cube; sales and fees $.

Foreign keys: the control tables (periods, rounds, period_failures) reference their runs and periods. The bulk
tables (inputs, history and results: millions of rows at marketplace size) have none (migration 0004 dropped
them: PostgreSQL checked two per row, most of a COPY's time). Their rows are written only by `write_frame`, in the
one transaction that registers their period or claims their result (`Store.ingest`, `commit_baseline`,
`commit_round`, `commit_forecast`, `commit_settlement`) and starts or holds their run, so the period and the run
they name exist when they commit; nothing deletes a period or a run.
"""

from __future__ import annotations

import sqlalchemy as sa

_metadata = sa.MetaData()  # `metadata` (below) is this with the result tables in it

ID = sa.String(128)


def _key(name: str) -> sa.Column:
    return sa.Column(name, ID, primary_key=True)


def _num(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Double(), nullable=nullable)


def _text(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _run_ref(name: str = "run_id", nullable: bool = False) -> sa.Column:
    """A control table's reference to a run (a foreign key)."""
    return sa.Column(name, sa.Integer(), sa.ForeignKey("runs.run_id"), nullable=nullable)


def _period_key() -> sa.Column:
    """A control table's period, part of its key (a foreign key)."""
    return sa.Column("period_id", ID, sa.ForeignKey("periods.period_id"), primary_key=True)


def _run_of_row(name: str = "run_id") -> sa.Column:
    """A bulk table's run: the run that wrote the row (no foreign key, see the module docstring)."""
    return sa.Column(name, sa.Integer(), nullable=False)


def _period_of_row() -> sa.Column:
    """A bulk table's period, part of its key (no foreign key, see the module docstring)."""
    return sa.Column("period_id", ID, primary_key=True)


runs = sa.Table(
    "runs",
    _metadata,
    sa.Column("run_id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("command", sa.String(32), nullable=False),  # batch | ingest | hold | release
    sa.Column("run_date", sa.Date(), nullable=True),  # the night a batch run is for
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),  # running | ok | nothing_to_do | failed | killed
    sa.Column("inputs_hash", sa.String(64), nullable=True),  # sha256 of the inputs of the periods it touched
    sa.Column("solver", sa.String(64), nullable=False),
    sa.Column("solver_version", sa.String(64), nullable=False),
    sa.Column("optalloc_version", sa.String(32), nullable=False),
    _text("options"),  # SolverOptions and executor, JSON
    _num("objective", nullable=True),  # $: sum of fee x grant over the rounds it cleared
    _text("timings", nullable=True),  # seconds per step, JSON
    _text("steps", nullable=True),  # what it did, JSON list
    _text("error", nullable=True),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
)

periods = sa.Table(
    "periods",
    _metadata,
    _key("period_id"),
    sa.Column("name", sa.String(256), nullable=False),
    _text("months"),
    _text("settings"),  # Settings, JSON
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sales_received_at", sa.DateTime(timezone=True), nullable=True),
    _run_ref("baseline_run_id", nullable=True),
    _num("baseline_objective", nullable=True),
    sa.Column("baseline_status", sa.String(32), nullable=True),
    _run_ref("settled_run_id", nullable=True),
    sa.Column("held_at", sa.DateTime(timezone=True), nullable=True),  # `optalloc period hold`: the batch skips it until released
    _text("hold_reason", nullable=True),
    _run_ref("forecast_run_id", nullable=True),  # the batch run whose forecast step wrote the period's needs and scores
    _text("forecast", nullable=True),  # that forecast's summary (method, scores, history weeks used), JSON
)

# A period's step that failed in a batch run (the run went on with the other periods).
period_failures = sa.Table(
    "period_failures",
    _metadata,
    sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.run_id"), primary_key=True),
    _period_key(),
    sa.Column("step", sa.String(64), nullable=False),  # load | forecast | baseline | round N | settlement
    _text("error"),  # one line
    sa.Column("exit_code", sa.Integer(), nullable=False),  # 2 input, 3 infeasible, 4 solver, 1 other
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
)

rounds = sa.Table(
    "rounds",
    _metadata,
    _period_key(),
    sa.Column("round", sa.Integer(), primary_key=True),
    sa.Column("close_date", sa.Date(), nullable=False),  # last day it takes requests
    _run_ref("cleared_run_id", nullable=True),
    sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
)

# ---------------------------------------------------------------- inputs (as in optalloc.schemas)

fcs = sa.Table(
    "fcs",
    _metadata,
    _period_of_row(),
    _key("fc_id"),
    _key("storage_type"),
    _key("month"),
    sa.Column("region", ID, nullable=False),
    _num("capacity_cube"),
    _num("pool_cube"),
)

sellers = sa.Table(
    "sellers",
    _metadata,
    _period_of_row(),
    _key("seller_id"),
    _num("performance_score"),
    _num("productivity"),
    _text("regions"),
    _num("floor_cube"),
)

needs = sa.Table(
    "needs",
    _metadata,
    _period_of_row(),
    _key("seller_id"),
    _key("storage_type"),
    _key("month"),
    _num("p50_cube"),
    _num("p90_cube", nullable=True),
    _num("floor_cube", nullable=True),
)

requests = sa.Table(
    "requests",
    _metadata,
    _period_of_row(),
    _key("request_id"),
    sa.Column("seller_id", ID, nullable=False),
    sa.Column("storage_type", ID, nullable=False),
    _text("months"),
    _num("max_fee_per_cube"),
    _num("max_cube"),
    _num("min_cube"),
    sa.Column("round", sa.Integer(), nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    _run_of_row("ingest_run_id"),
)

sales = sa.Table(
    "sales",
    _metadata,
    _period_of_row(),
    _key("seller_id"),
    _key("storage_type"),
    _key("month"),
    _num("sales"),
    _num("used_cube"),
    _run_of_row("ingest_run_id"),
)

grant_sales = sa.Table(
    "grant_sales",
    _metadata,
    _period_of_row(),
    _key("request_id"),
    _num("incremental_sales"),
    _run_of_row("ingest_run_id"),
)

# What sellers did, per seller, storage type and week (optalloc.history): one table for the whole store, not per
# period. A period's forecast reads the weeks before its first day that were ingested before its forecast (or, for a
# period given needs, its baseline) ran: see Store.history.
history = sa.Table(
    "history",
    _metadata,
    _key("seller_id"),
    _key("storage_type"),
    sa.Column("week", sa.String(10), primary_key=True),  # the week's Monday, YYYY-MM-DD (text order is date order)
    _num("shipped_cube"),
    _num("sales"),
    _num("on_hand_cube"),
    sa.Column("category", ID, nullable=True),
    sa.Column("size_band", ID, nullable=True),
    _run_of_row("ingest_run_id"),
)

# ---------------------------------------------------------------- results: derived from optalloc.tables
# Built when first asked for (`T.grants`, `T.RESULT_TABLES`, `T.metadata`): the declarations they come from load the
# engine's numbers, which a reader that needs only the control tables (`optalloc status`) does not pay for.


def _sql_type(column) -> sa.types.TypeEngine:
    from .. import tables as declared

    kinds = {declared.ID: ID, declared.LIST: sa.Text(), declared.INT: sa.Integer(), declared.NUMBER: sa.Double(),
             declared.BOOL: sa.Boolean(), declared.TIME: sa.DateTime(timezone=True)}
    if column.kind == declared.TEXT:
        return sa.String(column.width) if column.width else sa.Text()
    return kinds[column.kind]


def result_table(table, into: sa.MetaData = _metadata) -> sa.Table:
    """A result's store table, as its declaration (an `optalloc.tables.Table`) says: period_id, the result's columns
    (the keys part of the primary key), any column the store keeps beside it, and the run that wrote the row."""
    columns = [sa.Column(c.name, _sql_type(c), primary_key=c.name in table.keys, nullable=c.nullable and c.name not in table.keys)
               for c in (*table.columns, *table.stored_only)]
    return sa.Table(table.store, into, _period_of_row(), *columns, _run_of_row())


_RESULTS: dict[str, sa.Table] = {}
_RESULT_NAMES = {"baseline_limits": "limits", "baseline_placements": "placements", "fc_prices": "fc_prices", "grants": "grants",
                 "grant_placements": "grant_placements", "pools": "pools", "round_prices": "round_prices", "settlements": "settlement"}


def result_tables() -> dict[str, sa.Table]:
    """Result table name (as the engine names it) -> store table, built once."""
    if not _RESULTS:
        from .. import tables as declared

        _RESULTS.update({name: result_table(t) for name, t in declared.RESULTS.items()})
    return _RESULTS


def __getattr__(name: str):
    if name == "RESULT_TABLES":
        return result_tables()
    if name in _RESULT_NAMES:
        return result_tables()[_RESULT_NAMES[name]]
    if name == "metadata":  # every table, the results' included
        result_tables()
        return _metadata
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The scores a period's forecast step computed (optalloc.forecast.performance): they replace its sellers'
# performance_score and productivity (the sellers table keeps what was ingested).
performance = sa.Table(
    "performance",
    _metadata,
    _period_of_row(),
    _key("seller_id"),
    _num("performance_score"),
    _num("productivity"),
    _num("sell_through"),
    _num("excess_share"),
    _num("in_stock_rate"),
    _num("space_use", nullable=True),
    _run_of_row(),
)

INPUT_TABLES = {"fcs": fcs, "sellers": sellers, "needs": needs, "requests": requests, "sales": sales, "grant_sales": grant_sales}
