"""Alembic environment: runs the migrations on the connection the store hands over
(`Config.attributes["connection"]`), or on `sqlalchemy.url` when run from the alembic command line."""

from alembic import context
from sqlalchemy import create_engine

from optalloc.store.tables import metadata

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        _run(conn)
