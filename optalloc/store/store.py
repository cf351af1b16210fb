"""`Store`: periods, requests and results in a database, behind SQLAlchemy.

Guarantees the nightly job builds on:
- every write is one transaction: an ingest, a period's baseline, one round, one settlement. A process killed
  inside one leaves nothing of it; what committed before stays.
- a result is claimed in the same transaction that writes it (`UPDATE rounds SET cleared_run_id = :run
  WHERE cleared_run_id IS NULL`), so no round, baseline or settlement can be written twice, whoever tries.
- `lock()` serialises the writers (batch runs and ingests): a PostgreSQL advisory lock, or an flock on a file
  beside the SQLite database. Both are released by the operating system when a process dies.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from functools import cache
from importlib import metadata as importlib_metadata

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic import util as alembic_util
from alembic.config import Config
from alembic.script import ScriptDirectory

from .. import __version__
from ..baseline import BaselineResult
from ..clearing import RoundResult
from ..errors import InputError, Problem, StoreError
from ..failpoints import failpoint
from ..instance import Instance
from ..outputs import process_alive
from ..schemas import TABLE_KEYS, Settings
from ..settlement import protected_prices
from . import tables as T
from .urls import DEFAULT_URL, URL_ENV, is_in_memory, resolve_url  # noqa: F401 -- as optalloc.store.store named them
from .frames import (
    BOOKKEEPING_COLUMNS,
    canonical_records,
    frame_records,
    one_line,
    read_frame,
    result_frame,
    statement_error,
    write_frame,
)

CONNECT_TIMEOUT_ENV = "OPTALLOC_DB_CONNECT_TIMEOUT"  # seconds to wait for PostgreSQL to answer a connection (default 10)
STATEMENT_TIMEOUT_ENV = "OPTALLOC_DB_STATEMENT_TIMEOUT"  # seconds any one PostgreSQL statement may take (default 1800; 0 = none)
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_STATEMENT_TIMEOUT = 1800
LOCK_KEY = 0x0BA7C4  # PostgreSQL advisory lock id of the store's writer lock
STATIC_TABLES = ("fcs", "sellers", "needs")  # fixed once a period is ingested
REPORT_TABLES = ("sales", "grant_sales")  # the period's sales report
ROUND_TABLES = ("grants", "grant_placements", "pools", "round_prices")
BASELINE_TABLES = ("limits", "placements", "fc_prices")


class StoreLockTimeout(StoreError):
    pass


class AlreadyDone(StoreError):
    """Another run wrote this result first (the claim in the result's own transaction found it taken)."""


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "optalloc.store:migrations")
    return cfg


def _migrate(conn: sa.Connection) -> None:
    """Bring the schema of the database behind `conn` (in a write transaction) to the newest migration."""
    cfg = _alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


@cache
def head_revision() -> str:
    """The newest migration in migrations/versions."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


@cache
def known_revisions() -> frozenset[str]:
    """Every migration in migrations/versions (a store at another revision was written by a newer optalloc)."""
    return frozenset(s.revision for s in ScriptDirectory.from_config(_alembic_config()).walk_revisions())


def json_value(v):
    """A value read from the store as JSON has it: missing (NaN, NA, NaT) as None, times as ISO 8601 in UTC with their
    offset (the same on both databases: SQLite returns the stored UTC without a zone, PostgreSQL in the session's
    time zone), numpy scalars as Python numbers."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, datetime):
        return (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    return v.item() if hasattr(v, "item") else v


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def solver_version() -> str:
    return importlib_metadata.version("highspy")


class Store:
    """The store at `url`. `create=False` (the read-only commands, batch, period): the store must already exist, and
    nothing is created when it does not (no file, no folder, no schema). `create=True` (ingest, and the Python API's
    default): a missing SQLite file (and its folder) or an empty database becomes a new store. A store at an older
    schema revision is upgraded on opening (`migrate`), holding the writers' lock: waiting up to `lock_timeout`
    seconds for it (the writers pass their --lock-timeout, the read-only commands a few seconds: long enough for
    another command's upgrade, not for a batch)."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, create: bool = True, lock_timeout: float = 60.0):
        self.url = resolve_url(url)
        try:
            u = sa.make_url(self.url)
            u.port  # noqa: B018 -- a bad port (":notaport") is only found when read
        except (sa.exc.ArgumentError, ValueError) as e:
            raise StoreError(f"not a database URL: {self.url!r} ({e})") from None
        self.display_url = u.render_as_string(hide_password=True)
        self.backend = u.get_backend_name()
        if self.backend == "sqlite" and (str(u.query.get("uri", "")).lower() in ("true", "1") or (u.database or "").startswith("file:")):
            raise StoreError(f"{self.display_url}: SQLite URI filenames (file:..., uri=true) are not taken; give sqlite:///PATH")
        if "\x00" in (u.database or ""):
            raise StoreError(f"{self.display_url}: a store's path cannot hold a NUL character")
        self.in_memory = self.backend == "sqlite" and u.database in (None, "", ":memory:")
        self._sqlite_file = None
        if self.backend == "sqlite" and not self.in_memory:
            # One path for SQLite, the lock and a new store's creation: SQLite resolves "link/.." by text, the kernel
            # (and so the lock) through the link, and the two were different files.
            self._sqlite_file = os.path.realpath(u.database)
            u = u.set(database=self._sqlite_file)
            _check_sqlite_file(self._sqlite_file, create)
        try:
            self.engine = sa.create_engine(u, connect_args=_connect_args(self.backend))
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError, TypeError) as e:
            raise StoreError(f"cannot use store {self.display_url}: {e}") from None
        _store_errors(self.engine, self.display_url, self._sqlite_file)
        if self.backend == "sqlite":
            _sqlite_transactions(self.engine)
        self._writer = self.engine.execution_options(optalloc_write=True)
        self._snapshot = threading.local()  # the connection of this thread's `snapshot()` block, if it is in one
        self._lock_pid: int | None = None  # PostgreSQL: the backend whose session holds the writers' lock for this process
        revision = self.schema_revision() if migrate or not create else None
        if revision is None and not create:
            if self._sqlite_file:
                raise StoreError(f"no optalloc store at {self._sqlite_file} (an SQLite database without the store's tables)")
            raise StoreError(f"no optalloc store at {self.display_url} (the database has no optalloc schema; 'optalloc ingest INSTANCE' creates one)")
        if revision is None and self._sqlite_file and self._has_tables():
            raise StoreError(f"{self._sqlite_file} is an SQLite database but not an optalloc store (it has other tables); refusing to use it")
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

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite file the store lives in (None for PostgreSQL or an in-memory database): output folders must not
        hold it."""
        return self._sqlite_file

    def _has_tables(self) -> bool:
        with self.engine.connect() as conn:
            return bool(sa.inspect(conn).get_table_names())

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads made in this block, on this thread, see the store as of one moment: one read transaction (PostgreSQL
        REPEATABLE READ, SQLite's WAL read transaction), so what a batch commits meanwhile is seen whole or not at
        all. Export and report read a period in one: its round prices are never of a round whose grants they miss."""
        if getattr(self._snapshot, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            if self.backend == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                self._snapshot.conn = conn
                try:
                    yield
                finally:
                    self._snapshot.conn = None

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """A connection to read on: the `snapshot()` block's, else one of its own."""
        if (conn := getattr(self._snapshot, "conn", None)) is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self, *, check_lock: bool = True) -> Iterator[sa.Connection]:
        """A write transaction (`with store.transaction() as conn:`): committed at the end of the block, rolled back
        if it raises. On SQLite it takes the write lock at its start; reads (`store.engine.connect()`) never do.

        On PostgreSQL the writers' lock lives on a connection of its own (`lock`), which the server can end while the
        run goes on (an administrator's pg_terminate_backend, idle_session_timeout, a pooler): the lock goes with it,
        and another writer may take it. So while this process holds the lock, each transaction checks, just before
        it commits, that the lock's session still holds it, and rolls back with a StoreError if not (`check_lock=False`:
        a failed run's own record, the one row it may still write)."""
        with self._writer.begin() as conn:
            yield conn
            if check_lock and self._lock_pid is not None:
                self._check_lock(conn, self._lock_pid)

    def _check_lock(self, conn: sa.Connection, pid: int) -> None:
        held = conn.execute(sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = :pid"
            " AND classid = :hi AND objid = :lo AND objsubid = 1"  # a bigint key: its high and low 32 bits
        ), {"pid": pid, "hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}).scalar()
        if not held:
            raise StoreError(f"{self.display_url}: this run lost the store's writer lock (the database ended the session that held it),"
                             " so another writer may be at work; the transaction in progress was rolled back and the run stops here")

    # ------------------------------------------------------------ schema, lock, runs

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration (a no-op when it is current)."""
        try:
            with self.transaction() as conn:
                _migrate(conn)
        except alembic_util.CommandError as e:  # e.g. a store written by a newer optalloc
            raise StoreError(f"cannot upgrade store {self.display_url}: {one_line(e)}") from None

    def schema_revision(self) -> str | None:
        """The migration the database is at (None for a new, empty one)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    @contextmanager
    def lock(self, timeout: float = 0.0) -> Iterator[None]:
        """The writers' lock, waiting up to `timeout` seconds for it. Released when the process ends, however."""
        deadline = time.monotonic() + timeout
        if self.backend == "postgresql":
            with self.engine.connect() as conn:
                while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
                    conn.rollback()
                    self._wait(deadline, timeout)
                self._lock_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
                idle_timeout = conn.dialect.server_version_info >= (14,)  # idle_session_timeout is PostgreSQL 14's
                if idle_timeout:  # this session idles for the whole run: a server's idle_session_timeout would end it, and the lock
                    conn.execute(sa.text("SET idle_session_timeout = 0"))
                conn.commit()
                try:
                    yield
                finally:
                    self._lock_pid = None
                    try:
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                        if idle_timeout:
                            conn.execute(sa.text("RESET idle_session_timeout"))  # back to the pool as it came
                        conn.commit()
                    except StoreError:
                        pass  # the connection was lost, and the server released the lock with it
        elif self._sqlite_file:
            fd = os.open(self._sqlite_file + ".lock", os.O_RDWR | os.O_CREAT, 0o644)  # the real path: a symlink takes the same lock
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        self._wait(deadline, timeout)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        else:  # an in-memory database lives in one process
            yield

    def _wait(self, deadline: float, timeout: float) -> None:
        if time.monotonic() >= deadline:
            raise StoreLockTimeout(
                f"another optalloc run holds the lock of {self.display_url} (waited {timeout:g} s); retry later or raise --lock-timeout"
            )
        time.sleep(0.2)

    def start_run(self, conn: sa.Connection, command_: str, *, run_date: date | None = None, options: dict | None = None) -> int:
        values = dict(
            command=command_, run_date=run_date, started_at=now(), outcome="running", solver="highs", solver_version=solver_version(),
            optalloc_version=__version__, options=json.dumps(options or {}, sort_keys=True), host=socket.gethostname(), pid=os.getpid(),
        )
        return int(conn.execute(T.runs.insert().values(**values)).inserted_primary_key[0])

    def finish_run(self, conn: sa.Connection, run_id: int, outcome: str, **values) -> None:
        for key in ("timings", "steps"):
            if key in values and not isinstance(values[key], str):
                values[key] = json.dumps(values[key], sort_keys=True)
        conn.execute(T.runs.update().where(T.runs.c.run_id == run_id).values(outcome=outcome, finished_at=now(), **values))

    def mark_dead_runs(self) -> int:
        """Runs still marked running died without finishing (call this only while holding the lock)."""
        with self.transaction() as conn:
            return conn.execute(
                T.runs.update().where(T.runs.c.outcome == "running").values(outcome="killed", error="the process ended before the run finished")
            ).rowcount

    def runs(self) -> pd.DataFrame:
        with self._reading() as conn:
            return pd.read_sql(sa.select(T.runs).order_by(T.runs.c.run_id), conn).set_index("run_id")

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
        """Periods with their rounds' state, and the latest runs (for `optalloc status`)."""

        plain = json_value
        periods, rounds = self.periods(), self.rounds().reset_index()
        runs = self.runs_seen_now().tail(last_runs).reset_index()
        failures = self.current_failures()
        return {
            "store": self.display_url,
            "schema_revision": self.schema_revision(),
            "periods": [
                {
                    "period_id": pid,
                    "forecast_run_id": plain(row.forecast_run_id),
                    "baseline_run_id": plain(row.baseline_run_id),
                    "sales_received_at": plain(row.sales_received_at),
                    "settled_run_id": plain(row.settled_run_id),
                    "held": None if pd.isna(row.held_at) else {"since": plain(row.held_at), "reason": plain(row.hold_reason)},
                    "failure": failures.get(pid),
                    "rounds": [
                        {"round": int(r.round), "close_date": r.close_date, "cleared_run_id": plain(r.cleared_run_id)}
                        for r in rounds[rounds["period_id"] == pid].itertuples()
                    ],
                }
                for pid, row in periods.iterrows()
            ],
            "runs": [
                {k: plain(getattr(r, k)) for k in ("run_id", "command", "run_date", "started_at", "finished_at", "outcome", "objective", "error")}
                for r in runs.itertuples()
            ],
        }

    # ------------------------------------------------------------ holds and failures

    def hold(self, period_id: str, reason: str | None = None) -> dict:
        """Hold a period: `batch` skips it until released. Recorded as a run; holding a held period keeps its
        since-time (and changes the reason when one is given). Call it holding the writer lock."""
        return self._set_hold(period_id, hold=True, reason=reason)

    def release(self, period_id: str) -> dict:
        return self._set_hold(period_id, hold=False, reason=None)

    def _set_hold(self, period_id: str, *, hold: bool, reason: str | None) -> dict:
        with self.transaction() as conn:
            row = conn.execute(sa.select(T.periods.c.held_at, T.periods.c.hold_reason).where(T.periods.c.period_id == period_id)).one_or_none()
            if row is None:
                known = sorted(conn.execute(sa.select(T.periods.c.period_id)).scalars())
                raise InputError(Problem(f"no period {period_id!r} in the store (periods: {', '.join(known) or 'none'})", self.display_url,
                                         None, "period"))
            run_id = self.start_run(conn, "hold" if hold else "release")
            was_held = row.held_at is not None
            if hold:
                values = {"hold_reason": reason if reason is not None else row.hold_reason}
                if not was_held:
                    values["held_at"] = now()
            else:
                values = {"held_at": None, "hold_reason": None}
            conn.execute(T.periods.update().where(T.periods.c.period_id == period_id).values(**values))
            result = {"run_id": run_id, "period_id": period_id, "held": hold, "was_held": was_held}
            if hold:
                result["reason"] = values["hold_reason"]
            self.finish_run(conn, run_id, "ok", steps=[{k: v for k, v in result.items() if k != "run_id"}])
        return result

    def held_periods(self) -> dict[str, dict]:
        with self._reading() as conn:
            rows = conn.execute(sa.select(T.periods.c.period_id, T.periods.c.held_at, T.periods.c.hold_reason)
                                .where(T.periods.c.held_at.is_not(None))).all()
        return {r.period_id: {"since": json_value(r.held_at), "reason": r.hold_reason} for r in rows}

    def record_failure(self, run_id: int, period_id: str, step: str, error: str, exit_code: int) -> None:
        with self.transaction() as conn:
            conn.execute(T.period_failures.insert().values(run_id=run_id, period_id=period_id, step=step, error=error, exit_code=exit_code,
                                                           failed_at=now()))

    def current_failures(self) -> dict[str, dict]:
        """Each period whose last attempt failed: its latest failure, unless a later run has written a result of it since."""
        with self._reading() as conn:
            failures = conn.execute(sa.select(T.period_failures).order_by(T.period_failures.c.run_id)).all()
            if not failures:
                return {}
            periods = {r.period_id: r for r in conn.execute(sa.select(T.periods.c.period_id, T.periods.c.baseline_run_id,
                                                                                T.periods.c.settled_run_id)).all()}
            cleared = dict(conn.execute(sa.select(T.rounds.c.period_id, sa.func.max(T.rounds.c.cleared_run_id)).group_by(T.rounds.c.period_id)).all())
        latest = {f.period_id: f for f in failures}
        out = {}
        for pid, f in latest.items():
            p = periods.get(pid)
            later = max([x for x in (p.baseline_run_id, p.settled_run_id, cleared.get(pid)) if x is not None], default=0) if p else 0
            if later <= f.run_id:
                out[pid] = {"run_id": f.run_id, "step": f.step, "error": f.error, "exit_code": f.exit_code, "failed_at": json_value(f.failed_at)}
        return out

    # ------------------------------------------------------------ periods and inputs

    def period_ids(self) -> list[str]:
        with self._reading() as conn:
            return sorted(conn.execute(sa.select(T.periods.c.period_id)).scalars())

    def periods(self) -> pd.DataFrame:
        with self._reading() as conn:
            frame = pd.read_sql(sa.select(T.periods), conn).set_index("period_id").sort_index()
        for c in ("forecast_run_id", "baseline_run_id", "settled_run_id"):  # whole numbers, missing where not done yet
            frame[c] = frame[c].astype("Int64")
        return frame

    def rounds(self, period_id: str | None = None) -> pd.DataFrame:
        q = sa.select(T.rounds)
        if period_id is not None:
            q = q.where(T.rounds.c.period_id == period_id)
        with self._reading() as conn:
            frame = pd.read_sql(q, conn)
        frame["cleared_run_id"] = frame["cleared_run_id"].astype("Int64")
        return frame.set_index(["period_id", "round"]).sort_index()

    def instance(self, period_id: str) -> Instance:
        """The period as stored: the same validated `Instance` its files would give."""
        with self._reading() as conn:
            period = conn.execute(sa.select(T.periods).where(T.periods.c.period_id == period_id)).one_or_none()
            if period is None:
                raise InputError(Problem(f"no period {period_id!r} in the store", self.display_url, None, "period"))
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
            settings=_as_stored(json.loads(period.settings)),
            tables={name: frame.drop(columns=BOOKKEEPING_COLUMNS, errors="ignore") for name, frame in tables.items()},
            sources={"meta": f"{self.display_url}: periods", **{t: f"{self.display_url}: {t}" for t in (*T.INPUT_TABLES, "history")}},
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
        with self._reading() as conn:
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
        with self._reading() as conn:
            first, last, n = conn.execute(sa.select(sa.func.min(h.c.week), sa.func.max(h.c.week), sa.func.count()).select_from(h)).one()
        return first, last, int(n)

    def known_sellers_and_types(self) -> tuple[list[str], list[str]]:
        """Every seller and storage type of any stored period (what a history file may name)."""
        with self._reading() as conn:
            sellers = sorted(set(conn.execute(sa.select(T.sellers.c.seller_id)).scalars()))
            types = sorted(set(conn.execute(sa.select(T.fcs.c.storage_type)).scalars()))
        return sellers, types

    def ingest_history(self, history: pd.DataFrame, source: str, file_row=lambda i: i + 1) -> dict:
        """Append history rows (validated by the caller) in one transaction, recorded as an ingest run: rows already
        stored identically are skipped (re-ingesting a week is harmless), a stored (seller, storage type, week) with
        other values is refused naming the file's row; on any problem nothing is written."""
        with self.transaction() as conn:
            run_id = self.start_run(conn, "ingest")
            added = self._add_history(conn, history, source, file_row, run_id)
            counts = {"history": added}
            self.finish_run(conn, run_id, "ok", steps=[counts])
        return {**counts, "run_id": run_id}

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
        differs = np.zeros(len(both), dtype=bool)
        for n in values:
            mine, theirs = both[n], both[f"{n}_stored"]
            if n in ("shipped_cube", "sales", "on_hand_cube"):
                mine, theirs = mine.astype(float), theirs.astype(float)
            differs |= ~((mine == theirs) | (mine.isna() & theirs.isna())).to_numpy()
        changed = np.flatnonzero(differs & ~fresh)
        if len(changed):
            raise InputError([Problem(f"already in the store with other values (seller_id, storage_type, week "
                                      f"{'/'.join(ours.loc[i, keys])}); stored history is never changed", source, file_row(int(i)), "week")
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
        with self.transaction() as conn:
            run_id = self.start_run(conn, "ingest")
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
                fresh, found = _new_rows(conn, name, frame, pid, source, lambda i, t=name: instance.file_row(t, i))
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
            self.finish_run(conn, run_id, "ok", steps=[counts])
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
        if _stored_settings(stored.settings) != json.loads(settings):
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

    # ------------------------------------------------------------ results

    def results(self, period_id: str, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """Result tables as `PeriodResult.tables()` names and indexes them (only what has been written)."""
        names = list(T.RESULT_TABLES if names is None else names)
        with self._reading() as conn:
            return {name: result_frame(read_frame(conn, T.RESULT_TABLES[name], period_id), T.RESULT_TABLES[name]) for name in names}

    def baseline(self, period_id: str) -> BaselineResult | None:
        with self._reading() as conn:
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
        with self._reading() as conn:
            frame = read_frame(conn, T.round_prices, period_id)
        return frame.drop(columns=BOOKKEEPING_COLUMNS, errors="ignore").set_index(["round", "storage_type"]).sort_index()

    def commit_forecast(self, period_id: str, needs: pd.DataFrame, performance: pd.DataFrame, summary: dict, run_id: int) -> None:
        """Claim the period's forecast and write the needs and performance scores it produced, in one transaction."""
        with self.transaction() as conn:
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

    def forecast_tables(self, period_id: str) -> dict[str, pd.DataFrame]:
        """The needs and performance tables a period's forecast step wrote ({} when its needs were given)."""
        with self._reading() as conn:
            row = conn.execute(sa.select(T.periods.c.forecast_run_id).where(T.periods.c.period_id == period_id)).one()
            if row.forecast_run_id is None:
                return {}
            needs = read_frame(conn, T.needs, period_id).drop(columns=[*BOOKKEEPING_COLUMNS, "floor_cube"], errors="ignore")
            perf = read_frame(conn, T.performance, period_id).drop(columns=BOOKKEEPING_COLUMNS, errors="ignore")
        return {"needs": needs.set_index(["seller_id", "storage_type", "month"]), "performance": perf.set_index("seller_id")}

    def commit_baseline(self, period_id: str, result: BaselineResult, run_id: int) -> None:
        with self.transaction() as conn:
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
        with self.transaction() as conn:
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
            self._update_price_protection(conn, period_id)

    def _update_price_protection(self, conn: sa.Connection, period_id: str) -> None:
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

    def commit_settlement(self, period_id: str, settlement: pd.DataFrame, run_id: int) -> None:
        with self.transaction() as conn:
            claimed = conn.execute(
                T.periods.update().where(T.periods.c.period_id == period_id, T.periods.c.settled_run_id.is_(None)).values(settled_run_id=run_id)
            ).rowcount
            if claimed != 1:
                raise AlreadyDone(f"period {period_id} was already settled")
            write_frame(conn, T.settlements, settlement, period_id=period_id, run_id=run_id)
            failpoint("settlement-written")


# ---------------------------------------------------------------- opening: files, timeouts, errors


def _as_stored(doc: dict) -> Settings | dict:
    """A period's stored settings as its Instance takes them: a Settings object (checked when ingested, and not a
    user's explicit choices: `Instance.from_tables` checks those), or the dict, whose problems it then reports."""
    try:
        return Settings.model_validate(doc)
    except ValueError:
        return doc


def _stored_settings(text: str) -> dict:
    """A period's stored settings as the Settings model reads them: a field the store's optalloc did not have yet
    (e.g. forecast_method, before migration 0003) is its default, as when the period is read back."""
    doc = json.loads(text)
    try:
        return Settings.model_validate(doc).model_dump(mode="json")
    except ValueError:  # not valid settings today: compared as stored (and so found different)
        return doc


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite keeps beside a database file while it is open


def _create_sqlite_file(path: str) -> None:
    """A new SQLite store, whole or not at all: its schema is made in a file beside `path`, which is then linked into
    place (never over a store another ingest made meanwhile). SQLite made the file at `path` itself, empty, before
    the schema: a process killed in between left a zero-length file that every later command refuses. What a killed
    creation leaves beside it (`.NAME.PID.new`) is removed by the next one."""
    folder, name = os.path.split(path)
    ours = re.compile(rf"\.{re.escape(name)}\.(\d+)\.new({'|'.join(SQLITE_SIDE_FILES)})?")
    with suppress(OSError):  # a folder that cannot be listed: nothing is tidied
        for leftover in os.listdir(folder):
            if (m := ours.fullmatch(leftover)) and not process_alive(int(m[1])) and os.path.isfile(os.path.join(folder, leftover)):
                with suppress(OSError):
                    os.unlink(os.path.join(folder, leftover))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.new")
    engine = sa.create_engine(f"sqlite:///{tmp}", connect_args=_connect_args("sqlite"))
    _sqlite_transactions(engine)
    try:
        with engine.execution_options(optalloc_write=True).begin() as conn:
            _migrate(conn)
        engine.dispose()  # the last connection closed: the WAL is checkpointed into the file and removed
        failpoint("store-file-made")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another ingest made the store meanwhile: it is used as it is
    except sa.exc.SQLAlchemyError as e:
        raise StoreError(f"cannot create store {path}: {one_line(e.orig if getattr(e, 'orig', None) else e)}") from None
    finally:
        engine.dispose()
        for suffix in ("", *SQLITE_SIDE_FILES):
            with suppress(FileNotFoundError):
                os.unlink(tmp + suffix)


def _check_sqlite_file(path: str, create: bool) -> None:
    """A store file must be an SQLite database. Only a writer that may create a store (ingest) creates a missing one."""
    if not os.path.exists(path):
        if not create:
            raise StoreError(f"no store at {path} (no such file; only 'optalloc ingest INSTANCE' creates a store)")
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            _create_sqlite_file(path)
        except OSError as e:
            raise StoreError(f"cannot create store {path}: {e.strerror or e}") from None
        return
    if not os.path.isfile(path):
        raise StoreError(f"{path} is not a file, so not an SQLite store")
    # Only stat, never open: closing any descriptor of an SQLite file drops this process's POSIX locks on it, which
    # corrupts the database when another connection of this process is open (SQLite's "How To Corrupt" 2.2).
    # A file that is not SQLite is found by SQLite itself ("file is not a database"; see _store_errors).
    if os.stat(path).st_size == 0:
        raise StoreError(f"{path} is an empty (zero-length) file, not an optalloc store; refusing to use it")


MOST_SECONDS = 2_147_483  # PostgreSQL keeps statement_timeout in milliseconds in a 32-bit integer: 24.8 days


def env_seconds(env: str, default: float, *, zero: bool = True) -> float:
    """Seconds from the environment variable `env` (`default` when unset or empty); anything but a number from 0 to
    MOST_SECONDS is a StoreError naming the variable (exit 5, before any work). `zero=False` refuses 0 too: for a
    connect timeout it would mean waiting for ever (libpq) or giving up at once (Dask), neither of them a timeout."""
    value = os.environ.get(env)
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise StoreError(f"${env} must be a number of seconds, not {value!r}") from None
    if not 0 <= seconds <= MOST_SECONDS:
        raise StoreError(f"${env} must be a number of seconds from 0 to {MOST_SECONDS:,}, not {value!r}")
    if seconds == 0 and not zero:
        raise StoreError(f"${env} must be a number of seconds above 0 (up to {MOST_SECONDS:,}), not {value!r}")
    return seconds


def _connect_args(backend: str) -> dict:
    """SQLite: wait up to 60 s for a locked database. PostgreSQL: a connect timeout (an endpoint that accepts TCP but
    never answers must not hang the job), a statement timeout, and TCP keepalives (a connection lost in silence)."""
    if backend == "sqlite":
        return {"timeout": 60}
    if backend != "postgresql":
        return {}
    connect = env_seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT, zero=False)
    statement = env_seconds(STATEMENT_TIMEOUT_ENV, DEFAULT_STATEMENT_TIMEOUT)
    return {
        "connect_timeout": max(1, math.ceil(connect)),  # libpq: whole seconds, and 0 would be none
        "options": f"-c statement_timeout={math.ceil(statement * 1000)}",  # a positive time is never 0 ms: no timeout at all
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    }


def _store_errors(engine: sa.Engine, display_url: str, sqlite_file: str | None = None) -> None:
    """Every database error, whatever statement or connection raised it, becomes a one-line StoreError (exit 5)."""

    @sa.event.listens_for(engine, "handle_error")
    def _handle(ctx) -> None:
        e = ctx.original_exception
        message = one_line(e)
        if sqlite_file and message in ("file is not a database", "database disk image is malformed"):
            raise StoreError(f"{sqlite_file} is not an SQLite database or is corrupt ({message}); refusing to use it") from None
        if ctx.connection is None:  # no connection yet: opening it failed (a failed COMMIT has one, and no statement)
            raise StoreError(f"cannot open store {display_url}: {message}") from None
        raise statement_error(display_url, e, lost=ctx.is_disconnect) from None


# ---------------------------------------------------------------- SQLite transactions; rows not yet stored


def _sqlite_transactions(engine: sa.Engine) -> None:
    """pysqlite begins transactions lazily, at the first write; a round's transaction must hold the write lock from
    its first read, so a write transaction's BEGIN is sent as BEGIN IMMEDIATE (the SQLAlchemy SQLite dialect docs'
    recipe), a read's as a plain BEGIN."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer, nor it for them

    @sa.event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("optalloc_write") else "BEGIN")


def _new_rows(conn: sa.Connection, name: str, frame: pd.DataFrame, period_id: str, source: str,
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
