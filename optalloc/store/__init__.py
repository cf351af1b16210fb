"""The store: a real database holding periods, rounds, requests, results and runs.

An SQLite file by default (no set-up), PostgreSQL by URL (`OPTALLOC_DB=postgresql://user@host/db`).
The schema is created (only by a writer that may create a store: `Store(url, create=True)`) and upgraded by the
Alembic migrations in `migrations/` when a store is opened.

This is the loading/writing layer of the nightly job: it reads and writes tables, it never solves. `Store` is
imported when first asked for (`optalloc.store.Store`), so naming the default URL costs no database driver.
"""

from .urls import DEFAULT_URL, resolve_url

__all__ = ["DEFAULT_URL", "Store", "StoreLockTimeout", "resolve_url"]


def __getattr__(name: str):
    if name in ("Store", "StoreLockTimeout"):
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
