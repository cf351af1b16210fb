"""The run log: every command that writes records itself as a run (what it did, when, with which versions, its
outcome); a run still marked running when a writer holds the lock died without finishing."""

from __future__ import annotations

import json
import os
import socket
from datetime import date
from importlib import metadata as importlib_metadata

import sqlalchemy as sa

from .. import __version__
from . import tables as T
from .connection import now


def solver_version() -> str:
    return importlib_metadata.version("highspy")



class RunLog:
    """The runs of the store behind `db` (a `connection.Database`)."""

    def __init__(self, db):
        self.db = db

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
        with self.db.transaction() as conn:
            return conn.execute(
                T.runs.update().where(T.runs.c.outcome == "running").values(outcome="killed", error="the process ended before the run finished")
            ).rowcount

    def runs(self):
        """Every run, as a DataFrame indexed by run_id."""
        import pandas as pd

        with self.db.reading() as conn:
            return pd.read_sql(sa.select(T.runs).order_by(T.runs.c.run_id), conn).set_index("run_id")
