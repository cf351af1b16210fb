"""The connection to a store's database: where it is (an SQLite file, or PostgreSQL by URL), its engine, write
transactions and read snapshots, and its schema (made and upgraded by the Alembic migrations in `migrations/`).

Opening never creates what it should not: a missing SQLite file is made (whole, or not at all) only for a writer that
may create a store, and a file that is not SQLite, or an SQLite database of other tables, is refused. Every
database error, whatever statement raised it, becomes one line (`StoreError`, exit 5).
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime

import sqlalchemy as sa

from ..errors import StoreError
from ..failpoints import failpoint
from ..outputs import process_alive
from .lock import check_lock_session
from .urls import resolve_url

CONNECT_TIMEOUT_ENV = "OPTALLOC_DB_CONNECT_TIMEOUT"  # seconds to wait for PostgreSQL to answer a connection (default 10)
STATEMENT_TIMEOUT_ENV = "OPTALLOC_DB_STATEMENT_TIMEOUT"  # seconds any one PostgreSQL statement may take (default 1800; 0 = none)
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_STATEMENT_TIMEOUT = 1800
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite keeps beside a database file while it is open


# The newest migration and every one before it, as migrations/versions holds them (tests/test_store.py checks these
# against Alembic's own reading of the folder): opening a store compares its revision with them without loading
# Alembic, which a reader's start-up (`optalloc status`) would pay for on every call.
HEAD_REVISION = "0004"
REVISIONS = frozenset({"0001", "0002", "0003", "0004"})


def one_line(e: BaseException) -> str:
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


def statement_error(display_url: str, e: BaseException, *, lost: bool) -> StoreError:
    """A statement's database error as the store reports it: one line, exit 5."""
    return StoreError(f"{'lost the connection to store' if lost else 'store'} {display_url}: {one_line(e)}")


def alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "optalloc.store:migrations")
    return cfg


def migrate(conn: sa.Connection) -> None:
    """Bring the schema of the database behind `conn` (in a write transaction) to the newest migration."""
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def head_revision() -> str:
    """The newest migration in migrations/versions."""
    return HEAD_REVISION


def known_revisions() -> frozenset[str]:
    """Every migration in migrations/versions (a store at another revision was written by a newer optalloc)."""
    return REVISIONS


def json_value(v):
    """A value read from the store as JSON has it: missing (NaN, NA, NaT) as None, times as ISO 8601 in UTC with their
    offset (the same on both databases: SQLite returns the stored UTC without a zone, PostgreSQL in the session's
    time zone), numpy scalars as Python numbers."""
    if v is None or type(v).__name__ in ("NAType", "NaTType") or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, datetime):
        return (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    return v.item() if hasattr(v, "item") else v


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)



class Database:
    """The database of the store at `url` (see the module docstring); `create`: a missing SQLite file becomes an empty
    one (its schema is made by `Store`)."""

    def __init__(self, url: str | None = None, *, create: bool = True, readonly: bool = False):
        self.url = resolve_url(url)
        self.readonly = False  # opened read-only: an SQLite store on a read-only file system, for a reader
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
            check_sqlite_file(self._sqlite_file, create)
            if not writable_folder(self._sqlite_file):
                if not readonly:
                    raise StoreError(f"{self._sqlite_file}: its folder is on a read-only file system (or cannot be written): this command "
                                     "writes to the store; status, export and report can still read it there")
                # SQLite's readers of a WAL store write its -shm file beside it. On a read-only file system nothing can change
                # the store: without a -wal file (a store closed cleanly) it is read immutable (no locks, no side files); with
                # one, read-only, which SQLite can when the -wal and -shm files are there to read.
                wal = os.path.exists(self._sqlite_file + "-wal") and os.path.getsize(self._sqlite_file + "-wal") > 0
                mode = "mode=ro" if wal else "mode=ro&immutable=1"
                u = sa.engine.URL.create("sqlite", database=f"file:{self._sqlite_file}?{mode}", query={"uri": "true"})
                self.readonly = True
        try:
            self.engine = sa.create_engine(u, connect_args=connect_args(self.backend))
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError, TypeError) as e:
            raise StoreError(f"cannot use store {self.display_url}: {e}") from None
        store_errors(self.engine, self.display_url, self._sqlite_file)
        if self.backend == "sqlite":
            sqlite_transactions(self.engine)
        self._writer = self.engine.execution_options(optalloc_write=True)
        self._snapshot = threading.local()  # the connection of this thread's `snapshot()` block, if it is in one
        self.lock_pid: int | None = None  # PostgreSQL: the backend whose session holds the writers' lock for this process

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite file the store lives in (None for PostgreSQL or an in-memory database): output folders must not
        hold it."""
        return self._sqlite_file

    def has_tables(self) -> bool:
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
    def reading(self) -> Iterator[sa.Connection]:
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
            if check_lock and self.lock_pid is not None:
                check_lock_session(conn, self.lock_pid, self.display_url)


    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration (a no-op when it is current)."""
        from alembic import util as alembic_util

        try:
            with self.transaction() as conn:
                migrate(conn)
        except alembic_util.CommandError as e:  # e.g. a store written by a newer optalloc
            raise StoreError(f"cannot upgrade store {self.display_url}: {one_line(e)}") from None

    def schema_revision(self) -> str | None:
        """The migration the database is at (None for a new, empty one)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


# ---------------------------------------------------------------- opening: files, timeouts, errors


def create_sqlite_file(path: str) -> None:
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
    engine = sa.create_engine(f"sqlite:///{tmp}", connect_args=connect_args("sqlite"))
    sqlite_transactions(engine)
    try:
        with engine.execution_options(optalloc_write=True).begin() as conn:
            migrate(conn)
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


def writable_folder(path: str) -> bool:
    """Whether the folder of the SQLite file `path` can be written (false on a read-only file system, for root too)."""
    return os.access(os.path.dirname(path) or ".", os.W_OK)


def check_sqlite_file(path: str, create: bool) -> None:
    """A store file must be an SQLite database. Only a writer that may create a store (ingest) creates a missing one."""
    if not os.path.exists(path):
        if not create:
            raise StoreError(f"no store at {path} (no such file; only 'optalloc ingest INSTANCE' creates a store)")
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            create_sqlite_file(path)
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


def connect_args(backend: str) -> dict:
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


def store_errors(engine: sa.Engine, display_url: str, sqlite_file: str | None = None) -> None:
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


def sqlite_transactions(engine: sa.Engine) -> None:
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
