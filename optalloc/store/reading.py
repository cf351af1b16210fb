"""What a store holds, read back: its periods and rounds, a period as the validated `Instance` its files would give,
its history, and its results as the engine returns them."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa

from ..baseline import BaselineResult
from ..clearing import RoundResult
from ..errors import InputError, Problem
from ..instance import Instance
from ..schemas import Settings
from . import tables as T
from .frames import BOOKKEEPING_COLUMNS, read_frame, result_frame

ROUND_TABLES = ("grants", "grant_placements", "pools", "round_prices")
BASELINE_TABLES = ("limits", "placements", "fc_prices")


def as_stored(doc: dict) -> Settings | dict:
    """A period's stored settings as its Instance takes them: a Settings object (checked when ingested, and not a
    user's explicit choices: `Instance.from_tables` checks those), or the dict, whose problems it then reports."""
    try:
        return Settings.model_validate(doc)
    except ValueError:
        return doc



class PeriodReader:
    """The periods of the store behind `db`, read (on the connection of a `db.snapshot()` block when in one)."""

    def __init__(self, db):
        self.db = db

    def period_ids(self) -> list[str]:
        with self.db.reading() as conn:
            return sorted(conn.execute(sa.select(T.periods.c.period_id)).scalars())

    def periods(self) -> pd.DataFrame:
        with self.db.reading() as conn:
            frame = pd.read_sql(sa.select(T.periods), conn).set_index("period_id").sort_index()
        for c in ("forecast_run_id", "baseline_run_id", "settled_run_id"):  # whole numbers, missing where not done yet
            frame[c] = frame[c].astype("Int64")
        return frame

    def rounds(self, period_id: str | None = None) -> pd.DataFrame:
        q = sa.select(T.rounds)
        if period_id is not None:
            q = q.where(T.rounds.c.period_id == period_id)
        with self.db.reading() as conn:
            frame = pd.read_sql(q, conn)
        frame["cleared_run_id"] = frame["cleared_run_id"].astype("Int64")
        return frame.set_index(["period_id", "round"]).sort_index()

    def instance(self, period_id: str) -> Instance:
        """The period as stored: the same validated `Instance` its files would give."""
        with self.db.reading() as conn:
            period = conn.execute(sa.select(T.periods).where(T.periods.c.period_id == period_id)).one_or_none()
            if period is None:
                raise InputError(Problem(f"no period {period_id!r} in the store", self.db.display_url, None, "period"))
            rounds = conn.execute(
                sa.select(T.rounds.c.round, T.rounds.c.close_date).where(T.rounds.c.period_id == period_id).order_by(T.rounds.c.round)
            ).all()
            tables = {name: read_frame(conn, table, period_id, split_lists=False) for name, table in T.INPUT_TABLES.items()}
            tables["history"] = self._period_history(conn, period, tables["sellers"]["seller_id"], tables["fcs"]["storage_type"])
            performance = read_frame(conn, T.performance, period_id)
        if len(performance):
            from ..forecast.apply import apply_scores

            tables["sellers"] = apply_scores(tables["sellers"], performance)
        return Instance.from_tables(
            name=period.name,
            period={
                "period_id": period_id,
                "months": period.months.split(";"),
                "rounds": [r.round for r in rounds],
                "round_close_dates": [r.close_date for r in rounds],
            },
            settings=as_stored(json.loads(period.settings)),
            tables={name: frame.drop(columns=BOOKKEEPING_COLUMNS, errors="ignore") for name, frame in tables.items()},
            sources={"meta": f"{self.db.display_url}: periods", **{t: f"{self.db.display_url}: {t}" for t in (*T.INPUT_TABLES, "history")}},
        )

    def _period_history(self, conn: sa.Connection, period, sellers: pd.Series, storage_types: pd.Series) -> pd.DataFrame:
        """A period's history: the stored weeks before its first day, of its sellers and storage types, ingested before
        its forecast or baseline was computed (so weeks appended later never change a period already done)."""
        h = T.history
        start = period.months.split(";")[0] + "-01"
        q = sa.select(h).where(h.c.week < start)
        done = [r for r in (period.forecast_run_id, period.baseline_run_id) if r is not None]
        if done:
            q = q.where(h.c.ingest_run_id < min(done))
        rows = conn.execute(q).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in h.columns])
        for c in ("shipped_cube", "sales", "on_hand_cube"):
            frame[c] = frame[c].astype(float)
        frame = frame[frame["seller_id"].isin(set(sellers)) & frame["storage_type"].isin(set(storage_types))]
        frame = frame.drop(columns=["ingest_run_id"]).sort_values(["seller_id", "storage_type", "week"], kind="stable")
        return frame.reset_index(drop=True)

    def space_use_from(self, period_id: str) -> tuple[str, pd.DataFrame] | None:
        """The settlement a period's forecast scores the use of granted space from (the `space_use` part of the
        performance score: credits / fees of a seller's grants in the last settlement): that of the settled period
        that starts last before `period_id` starts (ties: the larger period_id), with its id; None if there is none."""
        p = T.periods.c
        with self.db.reading() as conn:
            start = conn.execute(sa.select(p.months).where(p.period_id == period_id)).scalar_one().split(";")[0]
            settled = conn.execute(sa.select(p.period_id, p.months).where(p.settled_run_id.is_not(None))).all()
            before = sorted((r.months.split(";")[0], r.period_id) for r in settled if r.months.split(";")[0] < start)
            if not before:
                return None
            last = before[-1][1]
            frame = read_frame(conn, T.settlements, last).drop(columns=BOOKKEEPING_COLUMNS, errors="ignore")
        return last, frame

    def history_weeks(self) -> tuple[str | None, str | None, int]:
        """The first and last week of the stored history, and its rows."""
        h = T.history
        with self.db.reading() as conn:
            first, last, n = conn.execute(sa.select(sa.func.min(h.c.week), sa.func.max(h.c.week), sa.func.count()).select_from(h)).one()
        return first, last, int(n)

    def known_sellers_and_types(self) -> tuple[list[str], list[str]]:
        """Every seller and storage type of any stored period (what a history file may name)."""
        with self.db.reading() as conn:
            sellers = sorted(set(conn.execute(sa.select(T.sellers.c.seller_id)).scalars()))
            types = sorted(set(conn.execute(sa.select(T.fcs.c.storage_type)).scalars()))
        return sellers, types

    def results(self, period_id: str, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """Result tables as `PeriodResult.tables()` names and indexes them (only what has been written)."""
        names = list(T.RESULT_TABLES if names is None else names)
        with self.db.reading() as conn:
            return {name: result_frame(read_frame(conn, T.RESULT_TABLES[name], period_id), T.RESULT_TABLES[name]) for name in names}

    def baseline(self, period_id: str) -> BaselineResult | None:
        with self.db.reading() as conn:
            row = conn.execute(sa.select(T.periods).where(T.periods.c.period_id == period_id)).one()
        if row.baseline_run_id is None:
            return None
        t = self.results(period_id, BASELINE_TABLES)
        return BaselineResult(t["limits"], t["placements"], t["fc_prices"], row.baseline_objective, row.baseline_status, "store")

    def round_results(self, period_id: str) -> list[RoundResult]:
        t = self.results(period_id, ROUND_TABLES)
        rounds = sorted(set(t["round_prices"].index.get_level_values("round")))

        def of(frame: pd.DataFrame, r: int) -> pd.DataFrame:
            return frame[frame.index.get_level_values("round") == r]

        return [RoundResult(r, of(t["grants"], r), of(t["grant_placements"], r), of(t["pools"], r), of(t["round_prices"], r)) for r in rounds]

    def round_prices_with_protection(self, period_id: str) -> pd.DataFrame:
        with self.db.reading() as conn:
            frame = read_frame(conn, T.round_prices, period_id)
        return frame.drop(columns=BOOKKEEPING_COLUMNS, errors="ignore").set_index(["round", "storage_type"]).sort_index()

    def forecast_tables(self, period_id: str) -> dict[str, pd.DataFrame]:
        """The needs and performance tables a period's forecast step wrote ({} when its needs were given)."""
        with self.db.reading() as conn:
            row = conn.execute(sa.select(T.periods.c.forecast_run_id).where(T.periods.c.period_id == period_id)).one()
            if row.forecast_run_id is None:
                return {}
            needs = read_frame(conn, T.needs, period_id).drop(columns=[*BOOKKEEPING_COLUMNS, "floor_cube"], errors="ignore")
            perf = read_frame(conn, T.performance, period_id).drop(columns=BOOKKEEPING_COLUMNS, errors="ignore")
        return {"needs": needs.set_index(["seller_id", "storage_type", "month"]), "performance": perf.set_index("seller_id")}
