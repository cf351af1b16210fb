"""Which store a command means: --db, else $OPTALLOC_DB, else an SQLite file in the working folder. Plain text work,
light enough for the command line to name the default without loading the database drivers."""

from __future__ import annotations

import os

DEFAULT_URL = "sqlite:///optalloc.db"
URL_ENV = "OPTALLOC_DB"


def resolve_url(url: str | None = None) -> str:
    """--db, else $OPTALLOC_DB, else an SQLite file in the working folder. postgresql:// means psycopg 3."""
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def is_in_memory(url: str) -> bool:
    """sqlite:// and sqlite:///:memory: (a database that ends with its process)."""
    import sqlalchemy as sa

    try:
        u = sa.make_url(resolve_url(url))
    except (sa.exc.ArgumentError, ValueError):
        return False
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")
