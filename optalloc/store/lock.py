"""The writers' lock: one writer at a time (batch runs, ingests, holds), waiting up to a timeout for another.

A PostgreSQL advisory lock on a session of its own, or an flock on a file beside the SQLite database's real path (a
symlink to the store takes the same lock). The operating system or the server releases either when a process dies.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from ..errors import StoreError

LOCK_KEY = 0x0BA7C4  # PostgreSQL advisory lock id of the store's writer lock


class StoreLockTimeout(StoreError):
    pass


class WriterLock:
    """The writers' lock of the store behind `db` (a `connection.Database`)."""

    def __init__(self, db):
        self.db = db

    @contextmanager
    def hold(self, timeout: float = 0.0) -> Iterator[None]:
        """The writers' lock, waiting up to `timeout` seconds for it. Released when the process ends, however."""
        deadline = time.monotonic() + timeout
        if self.db.backend == "postgresql":
            with self.db.engine.connect() as conn:
                while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
                    conn.rollback()
                    self._wait(deadline, timeout)
                self.db.lock_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
                idle_timeout = conn.dialect.server_version_info >= (14,)  # idle_session_timeout is PostgreSQL 14's
                if idle_timeout:  # this session idles for the whole run: a server's idle_session_timeout would end it, and the lock
                    conn.execute(sa.text("SET idle_session_timeout = 0"))
                conn.commit()
                try:
                    yield
                finally:
                    self.db.lock_pid = None
                    try:
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                        if idle_timeout:
                            conn.execute(sa.text("RESET idle_session_timeout"))  # back to the pool as it came
                        conn.commit()
                    except StoreError:
                        pass  # the connection was lost, and the server released the lock with it
        elif self.db.sqlite_file:
            fd = os.open(self.db.sqlite_file + ".lock", os.O_RDWR | os.O_CREAT, 0o644)  # the real path: a symlink takes the same lock
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
                f"another optalloc run holds the lock of {self.db.display_url} (waited {timeout:g} s); retry later or raise --lock-timeout"
            )
        time.sleep(0.2)


def check_lock_session(conn: sa.Connection, pid: int, display_url: str) -> None:
    """While this process holds the writers' lock on PostgreSQL: that the lock's session still holds it (the server can end
    that session while the run goes on), else a StoreError, which rolls back the transaction being committed."""
    held = conn.execute(sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = :pid"
        " AND classid = :hi AND objid = :lo AND objsubid = 1"  # a bigint key: its high and low 32 bits
    ), {"pid": pid, "hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}).scalar()
    if not held:
        raise StoreError(f"{display_url}: this run lost the store's writer lock (the database ended the session that held it),"
                         " so another writer may be at work; the transaction in progress was rolled back and the run stops here")
