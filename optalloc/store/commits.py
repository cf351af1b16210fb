"""Results written: a period's forecast, baseline, each round and its settlement, each claimed in the transaction that
writes it (`UPDATE ... WHERE ..._run_id IS NULL`), so no result is written twice, whoever tries."""

from __future__ import annotations

import json
import math

import pandas as pd
import sqlalchemy as sa

from ..baseline import BaselineResult
from ..clearing import RoundResult
from ..errors import StoreError
from ..failpoints import failpoint
from ..settlement import protected_prices
from . import tables as T
from .connection import now
from .frames import read_frame, write_frame

ROUND_TABLES = ("grants", "grant_placements", "pools", "round_prices")


class AlreadyDone(StoreError):
    """Another run wrote this result first (the claim in the result's own transaction found it taken)."""


class ResultWriter:
    """Writes results into the store behind `db`."""

    def __init__(self, db):
        self.db = db

    def commit_forecast(self, period_id: str, needs: pd.DataFrame, performance: pd.DataFrame, summary: dict, run_id: int) -> None:
        """Claim the period's forecast and write the needs and performance scores it produced, in one transaction."""
        with self.db.transaction() as conn:
            claimed = conn.execute(
                T.periods.update().where(T.periods.c.period_id == period_id, T.periods.c.forecast_run_id.is_(None),
                                         T.periods.c.baseline_run_id.is_(None))
                .values(forecast_run_id=run_id, forecast=json.dumps(summary, sort_keys=True))
            ).rowcount
            stored = conn.execute(sa.select(sa.func.count()).where(T.needs.c.period_id == period_id)).scalar()
            if claimed != 1 or stored:
                raise AlreadyDone(f"the needs of period {period_id} were already written")
            write_frame(conn, T.needs, needs, period_id=period_id)
            write_frame(conn, T.performance, performance, period_id=period_id, run_id=run_id)
            failpoint("forecast-written")

    def commit_baseline(self, period_id: str, result: BaselineResult, run_id: int) -> None:
        with self.db.transaction() as conn:
            claimed = conn.execute(
                T.periods.update()
                .where(T.periods.c.period_id == period_id, T.periods.c.baseline_run_id.is_(None))
                .values(baseline_run_id=run_id, baseline_objective=result.objective, baseline_status=result.status)
            ).rowcount
            if claimed != 1:
                raise AlreadyDone(f"the baseline of period {period_id} was already written")
            for name, frame in result.tables().items():
                write_frame(conn, T.RESULT_TABLES[name], frame, period_id=period_id, run_id=run_id)
            failpoint("baseline-written")

    def commit_round(self, period_id: str, result: RoundResult, run_id: int) -> None:
        """Claim and write one cleared round, then recompute the period's price protection, in one transaction."""
        r = result.round
        with self.db.transaction() as conn:
            earlier = conn.execute(
                sa.select(sa.func.count()).where(T.rounds.c.period_id == period_id, T.rounds.c.round < r, T.rounds.c.cleared_run_id.is_(None))
            ).scalar()
            if earlier:
                raise StoreError(f"period {period_id}: round {r} cannot be cleared before the rounds before it")
            claimed = conn.execute(
                T.rounds.update()
                .where(T.rounds.c.period_id == period_id, T.rounds.c.round == r, T.rounds.c.cleared_run_id.is_(None))
                .values(cleared_run_id=run_id, cleared_at=now())
            ).rowcount
            if claimed != 1:
                raise AlreadyDone(f"round {r} of period {period_id} was already cleared")
            failpoint(f"round-{r}-claimed")
            for name, frame in zip(ROUND_TABLES, (result.grants, result.placements, result.pools, result.prices)):
                write_frame(conn, T.RESULT_TABLES[name], frame, period_id=period_id, run_id=run_id)
            failpoint(f"round-{r}-written")
            update_price_protection(conn, period_id)

    def commit_settlement(self, period_id: str, settlement: pd.DataFrame, run_id: int) -> None:
        with self.db.transaction() as conn:
            claimed = conn.execute(
                T.periods.update().where(T.periods.c.period_id == period_id, T.periods.c.settled_run_id.is_(None)).values(settled_run_id=run_id)
            ).rowcount
            if claimed != 1:
                raise AlreadyDone(f"period {period_id} was already settled")
            write_frame(conn, T.settlements, settlement, period_id=period_id, run_id=run_id)
            failpoint("settlement-written")


def update_price_protection(conn: sa.Connection, period_id: str) -> None:
    """Each cleared round's protected price so far: the lowest clearing price of it and every later cleared round."""
    prices = read_frame(conn, T.round_prices, period_id).set_index(["round", "storage_type"])
    protected = protected_prices(prices)
    c = T.round_prices.c
    stmt = (
        T.round_prices.update()
        .where(c.period_id == sa.bindparam("p"), c.round == sa.bindparam("r"), c.storage_type == sa.bindparam("k"))
        .values(protected_price=sa.bindparam("price"))
    )
    conn.execute(stmt, [
        {"p": period_id, "r": int(r), "k": k, "price": None if math.isnan(v) else float(v)} for (r, k), v in protected.items()
    ])
