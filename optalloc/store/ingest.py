"""Ingest: an instance, arriving requests and sales reports, and history weeks, added to the store in one transaction
each, recorded as a run. Idempotent (rows stored identically are skipped); a stored row given again with other
values, a request for a cleared round or a sales report for a settled period is refused naming the file's row."""

from __future__ import annotations

import json
from contextlib import suppress
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..errors import InputError, Problem, StoreError, error_text
from ..failpoints import failpoint
from ..instance import Instance
from ..schemas import TABLE_KEYS, Settings
from . import tables as T
from .connection import now
from .frames import BOOKKEEPING_COLUMNS, canonical_records, frame_records, read_frame, write_frame

STATIC_TABLES = ("fcs", "sellers", "needs")  # fixed once a period is ingested
REPORT_TABLES = ("sales", "grant_sales")  # the period's sales report


class Ingest:
    """Adds to the store behind `db`, each ingest recorded in its run log `log`."""

    def __init__(self, db, log):
        self.db, self.log = db, log

    def ingest_history(self, history: pd.DataFrame, source: str, file_row=lambda i: i + 1) -> dict:
        """Append history rows (validated by the caller) in one transaction, recorded as an ingest run: rows already
        stored identically are skipped (re-ingesting a week is harmless), a stored (seller, storage type, week) with
        other values is refused naming the file's row; on any problem nothing is written."""
        def work(conn: sa.Connection, run_id: int) -> dict:
            return {"history": self._add_history(conn, history, source, file_row, run_id)}

        counts, run_id = self._as_a_run(work)
        return {**counts, "run_id": run_id}

    def _as_a_run(self, work: Callable[[sa.Connection, int], dict]) -> tuple[dict, int]:
        """`work(conn, run_id)` in one transaction, as an ingest run recorded before it begins (so a process killed in it
        leaves its run 'running', which the next writer records as killed; it left no trace). Input the store refuses
        leaves nothing, its run record included; any other failure is recorded."""
        with self.db.transaction() as conn:
            run_id = self.log.start_run(conn, "ingest")
        try:
            with self.db.transaction() as conn:
                counts = work(conn, run_id)
                failpoint("ingest-written")
                self.log.finish_run(conn, run_id, "ok", steps=[counts])
        except InputError:
            with self.db.transaction(check_lock=False) as conn:
                conn.execute(T.runs.delete().where(T.runs.c.run_id == run_id))
            raise
        except BaseException as e:
            with suppress(StoreError), self.db.transaction(check_lock=False) as conn:
                self.log.finish_run(conn, run_id, "failed", error=error_text(e))
            raise
        return counts, run_id

    def _add_history(self, conn: sa.Connection, history: pd.DataFrame, source: str, file_row, run_id: int) -> int:
        """Insert the rows of `history` not stored yet; a stored (seller, storage type, week) with other values is a
        problem naming the file's row. One merge of the incoming rows with the stored rows of the same weeks (a
        missing category or size band equals a stored NULL), not a comparison row by row."""
        if not len(history):
            return 0
        h = T.history
        keys = ["seller_id", "storage_type", "week"]
        values = [c.name for c in h.columns if c.name not in (*keys, "ingest_run_id")]
        ours = history.reset_index(drop=True)
        ours = ours.assign(**{n: None for n in values if n not in ours.columns})[keys + values]
        q = sa.select(*(h.c[n] for n in keys + values)).where(h.c.week >= ours["week"].min(), h.c.week <= ours["week"].max())
        stored = pd.DataFrame([tuple(r) for r in conn.execute(q)], columns=keys + values)  # tuples: pandas probes a Row slowly
        both = ours.merge(stored, on=keys, how="left", suffixes=("", "_stored"), indicator=True)
        fresh = (both["_merge"] == "left_only").to_numpy()
        first_change = np.full(len(both), None, dtype=object)  # the first field of a row that differs from the stored row
        for n in values:
            mine, theirs = both[n], both[f"{n}_stored"]
            if n in ("shipped_cube", "sales", "on_hand_cube"):
                mine, theirs = mine.astype(float), theirs.astype(float)
            differs = ~((mine == theirs) | (mine.isna() & theirs.isna())).to_numpy()
            first_change[differs & (first_change == None)] = n  # noqa: E711 -- elementwise
        changed = np.flatnonzero((first_change != None) & ~fresh)  # noqa: E711
        if len(changed):
            raise InputError([Problem(f"already in the store with another {first_change[i]} (seller_id, storage_type, week "
                                      f"{'/'.join(ours.loc[i, keys])}: stored {both.loc[i, f'{first_change[i]}_stored']!r}, here "
                                      f"{both.loc[i, first_change[i]]!r}); stored history is never changed", source, file_row(int(i)),
                                      first_change[i])
                              for i in changed])
        if fresh.any():
            write_frame(conn, h, ours[fresh], ingest_run_id=run_id)
        return int(fresh.sum())

    def ingest(self, instance: Instance, *, tables: Iterable[str] | None = None,
               history: tuple[pd.DataFrame, str, Callable[[int], int]] | None = None) -> dict:
        """Add an instance to the store in one transaction, and record the ingest as a run.

        A new period is registered with its calendar, settings, FCs, sellers and needs; a known one must match
        what is stored. Then the rows of `tables` (default: requests, sales, grant_sales) are added: rows already
        stored identically are skipped (ingesting a file twice is harmless), a stored id with other values is an
        error, and so is a request for a round that was already cleared or a sales report for a settled period.
        `history` (rows, their file, each row's line in it), as `ingest_history` takes it, is appended in the same
        transaction. Problems name the instance's file, row and field; on any problem nothing is written.
        """
        tables = list(tables if tables is not None else ("requests", *REPORT_TABLES))
        pid = instance.period.period_id
        if instance.period.round_close_dates is None:
            raise InputError(Problem("the store needs period.round_close_dates: one close date per round", instance.sources.get("meta"), None,
                                     "period.round_close_dates"))
        counts: dict = {"period_id": pid}

        def work(conn: sa.Connection, run_id: int) -> dict:
            counts["period_registered"] = self._register_period(conn, instance, run_id)
            cleared = dict(conn.execute(
                sa.select(T.rounds.c.round, T.rounds.c.cleared_run_id).where(T.rounds.c.period_id == pid, T.rounds.c.cleared_run_id.is_not(None))
            ).all())
            settled = conn.execute(sa.select(T.periods.c.settled_run_id).where(T.periods.c.period_id == pid)).scalar()
            problems: list[Problem] = []
            new: dict[str, pd.DataFrame] = {}
            for name in tables:
                frame = getattr(instance, name)
                source = instance.sources.get(name, name)
                fresh, found = new_rows(conn, name, frame, pid, source, lambda i, t=name: instance.file_row(t, i))
                problems += found
                if name == "requests" and len(fresh):
                    done = fresh["round"].isin(list(cleared)).to_numpy()
                    problems += [
                        Problem(f"round {r} of period {pid} was already cleared (run {cleared[r]}); requests for it are refused", source,
                                instance.file_row(name, int(i)),
                                "round")
                        for i, r in zip(fresh.index[done], fresh["round"][done])
                    ]
                if name in REPORT_TABLES and len(fresh) and settled is not None:
                    problems.append(Problem(f"period {pid} was settled (run {settled}); its sales report can no longer change", source))
                new[name] = fresh
            if problems:
                raise InputError(sorted(problems, key=lambda p: (p.file or "", p.row or 0)))
            counts["history"] = self._add_history(conn, instance.history, instance.sources.get("history", "history"),
                                                  lambda i: instance.file_row("history", i), run_id)
            if history is not None:
                counts["history"] += self._add_history(conn, *history, run_id)
            for name, fresh in new.items():
                write_frame(conn, T.INPUT_TABLES[name], fresh, period_id=pid, ingest_run_id=run_id)
                counts[name] = len(fresh)
            if any(len(getattr(instance, t)) for t in REPORT_TABLES if t in tables):
                conn.execute(
                    T.periods.update().where(T.periods.c.period_id == pid, T.periods.c.sales_received_at.is_(None)).values(sales_received_at=now())
                )
            return counts

        counts, run_id = self._as_a_run(work)
        counts["run_id"] = run_id
        return counts

    def _register_period(self, conn: sa.Connection, instance: Instance, run_id: int) -> bool:
        p = instance.period
        meta = instance.sources.get("meta", "instance")
        stored = conn.execute(sa.select(T.periods).where(T.periods.c.period_id == p.period_id)).one_or_none()
        settings = json.dumps(instance.settings.model_dump(mode="json"), sort_keys=True)
        if stored is None:
            conn.execute(T.periods.insert().values(period_id=p.period_id, name=instance.name, months=";".join(p.months), settings=settings,
                                                   ingested_at=now()))
            conn.execute(T.rounds.insert(), [{"period_id": p.period_id, "round": r, "close_date": d} for r, d in zip(p.rounds, p.round_close_dates)])
            for name in STATIC_TABLES:
                write_frame(conn, T.INPUT_TABLES[name], getattr(instance, name), period_id=p.period_id)
            return True
        rounds = conn.execute(sa.select(T.rounds.c.round, T.rounds.c.close_date).where(T.rounds.c.period_id == p.period_id).order_by("round")).all()
        differs = []
        if stored.months.split(";") != list(p.months) or [r.round for r in rounds] != list(p.rounds):
            differs.append("months or rounds")
        if [r.close_date for r in rounds] != list(p.round_close_dates):
            differs.append("round_close_dates")
        if stored_settings(stored.settings) != json.loads(settings):
            differs.append("settings")
        for name in STATIC_TABLES:
            if name == "needs" and stored.forecast_run_id is not None and not len(instance.needs):
                continue  # the batch forecast this period's needs from its history
            ours = canonical_records(getattr(instance, name), name)
            stored_rows = read_frame(conn, T.INPUT_TABLES[name], p.period_id).drop(columns=BOOKKEEPING_COLUMNS, errors="ignore")
            if ours == canonical_records(stored_rows, name):
                continue
            if name == "sellers" and stored.forecast_run_id is not None:  # the period as `instance` reads it: the forecast's scores
                from ..forecast.apply import apply_scores

                scored = apply_scores(stored_rows, read_frame(conn, T.performance, p.period_id))
                if ours == canonical_records(scored, name):
                    continue
            differs.append(name)
        if differs:
            raise InputError(Problem(
                f"period {p.period_id} is already in the store with other {', '.join(differs)}; a period's calendar, settings, FCs, sellers and"
                " needs are fixed once ingested (use a new period_id)", meta))
        return False


def stored_settings(text: str) -> dict:
    """A period's stored settings as the Settings model reads them: a field the store's optalloc did not have yet
    (e.g. forecast_method, before migration 0003) is its default, as when the period is read back."""
    doc = json.loads(text)
    try:
        return Settings.model_validate(doc).model_dump(mode="json")
    except ValueError:  # not valid settings today: compared as stored (and so found different)
        return doc


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite keeps beside a database file while it is open


def new_rows(conn: sa.Connection, name: str, frame: pd.DataFrame, period_id: str, source: str,
              file_row=lambda i: i + 1) -> tuple[pd.DataFrame, list[Problem]]:
    """The rows of `frame` not yet stored (index kept), and rows whose id is stored with other values (row i of the
    frame is row `file_row(i)` of its file)."""
    if not len(frame):
        return frame, []
    table = T.INPUT_TABLES[name]
    keys = TABLE_KEYS[name]
    stored = read_frame(conn, table, period_id)
    if not len(stored):
        return frame, []
    stored_records = {tuple(r[k] for k in keys): r for r in frame_records(stored[list(frame.columns)], table)}
    ours = frame_records(frame.reset_index(drop=True), table)
    known = [tuple(r[k] for k in keys) in stored_records for r in ours]
    problems = [
        Problem(f"already in the store with other values ({', '.join(keys)} {'/'.join(map(str, key))}); stored rows are never changed",
                source, file_row(i), keys[0])
        for i, r in enumerate(ours)
        if (key := tuple(r[k] for k in keys)) in stored_records and stored_records[key] != r
    ]
    return frame[[not k for k in known]], problems
