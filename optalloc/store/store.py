"""`Store`: periods, requests and results in a database, behind SQLAlchemy — a thin front over one module per
responsibility:

- `connection`: where the database is, its engine, transactions and read snapshots, and its schema (migrations);
- `lock`: the writers' lock (`Store.lock`);
- `runs`: the run log; `holds`: holds and period failures;
- `ingest`: instances, arriving tables and history added; `reading`: periods, instances and results read back;
- `commits`: results written, each claimed in its own transaction; `mend`: a step's result discarded by an operator.

Guarantees the nightly job builds on:
- every write is one transaction: an ingest, a period's baseline, one round, one settlement. A process killed
  inside one leaves nothing of it; what committed before stays.
- a result is claimed in the same transaction that writes it (`UPDATE rounds SET cleared_run_id = :run
  WHERE cleared_run_id IS NULL`), so no round, baseline or settlement can be written twice, whoever tries.
- `lock()` serialises the writers (batch runs and ingests): a PostgreSQL advisory lock, or an flock on a file
  beside the SQLite database. Both are released by the operating system when a process dies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .. import __version__
from ..errors import StoreError
from . import tables as T
from .connection import Database, head_revision, json_value, known_revisions
from .holds import Holds
from .lock import StoreLockTimeout, WriterLock
from .runs import RunLog

if TYPE_CHECKING:
    import pandas as pd

    from ..baseline import BaselineResult
    from ..clearing import RoundResult
    from ..instance import Instance


class Store:
    """The store at `url`. `create=False` (the read-only commands, batch, period): the store must already exist, and
    nothing is created when it does not (no file, no folder, no schema). `create=True` (ingest, and the Python API's
    default): a missing SQLite file (and its folder) or an empty database becomes a new store. A store at an older
    schema revision is upgraded on opening (`migrate`), holding the writers' lock: waiting up to `lock_timeout`
    seconds for it (the writers pass their --lock-timeout, the read-only commands a few seconds: long enough for
    another command's upgrade, not for a batch)."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, create: bool = True, lock_timeout: float = 60.0,
                 readonly: bool = False):
        self.db = db = Database(url, create=create, readonly=readonly)
        self.url, self.display_url, self.backend, self.in_memory, self.engine = db.url, db.display_url, db.backend, db.in_memory, db.engine
        self._lock = WriterLock(db)
        self._log = RunLog(db)
        self._holds = Holds(db, self._log)
        revision = self.schema_revision() if migrate or not create else None
        if revision is None and not create:
            if self.sqlite_file:
                raise StoreError(f"no optalloc store at {self.sqlite_file} (an SQLite database without the store's tables)")
            raise StoreError(f"no optalloc store at {self.display_url} (the database has no optalloc schema; 'optalloc ingest INSTANCE' creates one)")
        if revision is None and self.sqlite_file and db.has_tables():
            raise StoreError(f"{self.sqlite_file} is an SQLite database but not an optalloc store (it has other tables); refusing to use it")
        if migrate and revision != head_revision() and db.readonly:
            raise StoreError(f"{self.display_url} is at schema revision {revision}, not this optalloc's {head_revision()}, and it is on a"
                             " read-only file system, so it cannot be upgraded: read it with the optalloc that wrote it")
        if migrate and revision != head_revision():
            if revision is not None and revision not in known_revisions():
                raise StoreError(f"{self.display_url} is at schema revision {revision}, which this optalloc ({__version__}, schema"
                                 f" {head_revision()}) does not know: it was written by a newer optalloc; use that one")
            try:
                with self.lock(timeout=lock_timeout):
                    self.upgrade()
            except StoreLockTimeout:
                if self.schema_revision() == head_revision():  # another command upgraded it meanwhile (readers race after a deploy)
                    return
                raise StoreLockTimeout(
                    f"{self.display_url} is at schema revision {revision or '(none: being created)'}, older than this optalloc's"
                    f" {head_revision()}; upgrading it needs the writers' lock, which another optalloc command held (waited"
                    f" {lock_timeout:g} s): retry when it is done") from None

    # The parts that move tables load pandas and the engine's result types: made when first used, so the commands that
    # only look at the control tables (status, period hold and release) start at once.
    @cached_property
    def _ingest(self):
        from .ingest import Ingest

        return Ingest(self.db, self._log)

    @cached_property
    def _read(self):
        from .reading import PeriodReader

        return PeriodReader(self.db)

    @cached_property
    def _write(self):
        from .commits import ResultWriter

        return ResultWriter(self.db)

    @cached_property
    def _mend(self):
        from .mend import Mend

        return Mend(self.db, self._log)

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite file the store lives in (None for PostgreSQL or an in-memory database): output folders must not
        hold it."""
        return self.db.sqlite_file

    # ------------------------------------------------------------ the connection: transactions, snapshots, schema

    def transaction(self, *, check_lock: bool = True):
        """A write transaction (`connection.Database.transaction`)."""
        return self.db.transaction(check_lock=check_lock)

    def snapshot(self):
        """Reads in this block see the store as of one moment (`connection.Database.snapshot`)."""
        return self.db.snapshot()

    def upgrade(self) -> None:
        self.db.upgrade()

    def schema_revision(self) -> str | None:
        return self.db.schema_revision()

    @contextmanager
    def lock(self, timeout: float = 0.0) -> Iterator[None]:
        """The writers' lock, waiting up to `timeout` seconds for it. Released when the process ends, however."""
        with self._lock.hold(timeout):
            yield

    # ------------------------------------------------------------ the run log

    def start_run(self, conn: sa.Connection, command_: str, *, run_date: date | None = None, options: dict | None = None) -> int:
        return self._log.start_run(conn, command_, run_date=run_date, options=options)

    def finish_run(self, conn: sa.Connection, run_id: int, outcome: str, **values) -> None:
        self._log.finish_run(conn, run_id, outcome, **values)

    def mark_dead_runs(self) -> int:
        """Runs still marked running died without finishing (call this only while holding the lock)."""
        return self._log.mark_dead_runs()

    def runs(self) -> pd.DataFrame:
        return self._log.runs()

    def runs_seen_now(self) -> pd.DataFrame:
        """The runs, with those that died shown as killed: read holding the writers' lock if it is free (no run can
        start or finish meanwhile, and every run holds it, so one still marked running died); as stored if a writer
        holds it (or its file cannot be made: a read-only folder)."""
        try:
            with self.lock(timeout=0):
                runs = self.runs()
            runs.loc[runs["outcome"] == "running", "outcome"] = "killed"
            return runs
        except (StoreLockTimeout, OSError):
            return self.runs()

    def status(self, last_runs: int = 10) -> dict:
        """Periods with their rounds' state, and the latest runs (for `optalloc status`): read from the control tables
        alone, as plain values (no table is loaded for it)."""
        plain = json_value
        p, r = T.periods.c, T.rounds.c
        failures = self.current_failures()
        with self.db.reading() as conn:
            periods = conn.execute(sa.select(T.periods).order_by(p.period_id)).all()
            rounds = conn.execute(sa.select(r.period_id, r["round"], r.close_date, r.cleared_run_id).order_by(r.period_id, r["round"])).all()
        shown = self._runs_seen_now(lambda: self._latest_runs(last_runs))
        return {
            "store": self.display_url,
            "schema_revision": self.schema_revision(),
            "periods": [
                {
                    "period_id": row.period_id,
                    "forecast_run_id": plain(row.forecast_run_id),
                    "baseline_run_id": plain(row.baseline_run_id),
                    "sales_received_at": plain(row.sales_received_at),
                    "settled_run_id": plain(row.settled_run_id),
                    "held": None if row.held_at is None else {"since": plain(row.held_at), "reason": plain(row.hold_reason)},
                    "failure": failures.get(row.period_id),
                    "rounds": [{"round": int(x.round), "close_date": x.close_date, "cleared_run_id": plain(x.cleared_run_id)}
                               for x in rounds if x.period_id == row.period_id],
                }
                for row in periods
            ],
            "runs": shown,
        }

    def _latest_runs(self, last_runs: int) -> list[dict]:
        c = T.runs.c
        keys = ("run_id", "command", "run_date", "started_at", "finished_at", "outcome", "objective", "error")
        with self.db.reading() as conn:
            rows = conn.execute(sa.select(*(c[k] for k in keys)).order_by(c.run_id.desc()).limit(last_runs)).all()
        return [{k: json_value(getattr(row, k)) for k in keys} for row in reversed(rows)]

    def _runs_seen_now(self, read: Callable[[], list[dict]]) -> list[dict]:
        """What `read()` gives of the runs, with those that died shown as killed (see `runs_seen_now`)."""
        try:
            with self.lock(timeout=0):
                runs = read()
            return [{**run, "outcome": "killed" if run["outcome"] == "running" else run["outcome"]} for run in runs]
        except (StoreLockTimeout, OSError):
            return read()

    # ------------------------------------------------------------ holds and failures

    def hold(self, period_id: str, reason: str | None = None) -> dict:
        """Hold a period: `batch` skips it until released. Recorded as a run; holding a held period keeps its
        since-time (and changes the reason when one is given). Call it holding the writer lock."""
        return self._holds.hold(period_id, reason)

    def release(self, period_id: str) -> dict:
        return self._holds.release(period_id)

    def reset(self, period_id: str, step: str, reason: str | None = None) -> dict:
        """Discard a step's stored result so the next batch computes it again (`mend.Mend.reset`). Call it holding the
        writer lock."""
        return self._mend.reset(period_id, step, reason)

    def held_periods(self) -> dict[str, dict]:
        return self._holds.held_periods()

    def record_failure(self, run_id: int, period_id: str, step: str, error: str, exit_code: int) -> None:
        self._holds.record_failure(run_id, period_id, step, error, exit_code)

    def current_failures(self) -> dict[str, dict]:
        return self._holds.current_failures()

    # ------------------------------------------------------------ what it holds, read back

    def period_ids(self) -> list[str]:
        return self._read.period_ids()

    def periods(self) -> pd.DataFrame:
        return self._read.periods()

    def rounds(self, period_id: str | None = None) -> pd.DataFrame:
        return self._read.rounds(period_id)

    def instance(self, period_id: str) -> Instance:
        """The period as stored: the same validated `Instance` its files would give."""
        return self._read.instance(period_id)

    def space_use_from(self, period_id: str) -> tuple[str, pd.DataFrame] | None:
        return self._read.space_use_from(period_id)

    def history_weeks(self) -> tuple[str | None, str | None, int]:
        return self._read.history_weeks()

    def known_sellers_and_types(self) -> tuple[list[str], list[str]]:
        return self._read.known_sellers_and_types()

    def results(self, period_id: str, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """Result tables as the engine names and indexes them (only what has been written)."""
        return self._read.results(period_id, names)

    def baseline(self, period_id: str) -> BaselineResult | None:
        return self._read.baseline(period_id)

    def round_results(self, period_id: str) -> list[RoundResult]:
        return self._read.round_results(period_id)

    def round_prices_with_protection(self, period_id: str) -> pd.DataFrame:
        return self._read.round_prices_with_protection(period_id)

    def forecast_tables(self, period_id: str) -> dict[str, pd.DataFrame]:
        return self._read.forecast_tables(period_id)

    # ------------------------------------------------------------ ingest

    def ingest(self, instance: Instance, *, tables: Iterable[str] | None = None,
               history: tuple[pd.DataFrame, str, Callable[[int], int]] | None = None) -> dict:
        """Add an instance (its period, requests, sales; `history` beside it) in one transaction (`ingest.Ingest`)."""
        return self._ingest.ingest(instance, tables=tables, history=history)

    def ingest_history(self, history: pd.DataFrame, source: str, file_row=lambda i: i + 1) -> dict:
        return self._ingest.ingest_history(history, source, file_row)

    # ------------------------------------------------------------ results written

    def commit_forecast(self, period_id: str, needs: pd.DataFrame, performance: pd.DataFrame, summary: dict, run_id: int) -> None:
        self._write.commit_forecast(period_id, needs, performance, summary, run_id)

    def commit_baseline(self, period_id: str, result: BaselineResult, run_id: int) -> None:
        self._write.commit_baseline(period_id, result, run_id)

    def commit_round(self, period_id: str, result: RoundResult, run_id: int) -> None:
        self._write.commit_round(period_id, result, run_id)

    def commit_settlement(self, period_id: str, settlement: pd.DataFrame, run_id: int) -> None:
        self._write.commit_settlement(period_id, settlement, run_id)
