"""bulk tables without foreign keys: the inputs', history's and results' period and run references are no longer
checked per row (PostgreSQL spent most of a COPY checking them); their rows are written only in the transaction
that registers their period or claims their result (see optalloc/store/tables.py)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Each bulk table and its references: column -> the table it referred to (by that table's key, PARENT_KEY).
BULK = {
    'fcs': {'period_id': 'periods'},
    'sellers': {'period_id': 'periods'},
    'needs': {'period_id': 'periods'},
    'requests': {'period_id': 'periods', 'ingest_run_id': 'runs'},
    'sales': {'period_id': 'periods', 'ingest_run_id': 'runs'},
    'grant_sales': {'period_id': 'periods', 'ingest_run_id': 'runs'},
    'history': {'ingest_run_id': 'runs'},
    'baseline_limits': {'period_id': 'periods', 'run_id': 'runs'},
    'baseline_placements': {'period_id': 'periods', 'run_id': 'runs'},
    'fc_prices': {'period_id': 'periods', 'run_id': 'runs'},
    'grants': {'period_id': 'periods', 'run_id': 'runs'},
    'grant_placements': {'period_id': 'periods', 'run_id': 'runs'},
    'pools': {'period_id': 'periods', 'run_id': 'runs'},
    'round_prices': {'period_id': 'periods', 'run_id': 'runs'},
    'settlements': {'period_id': 'periods', 'run_id': 'runs'},
    'performance': {'period_id': 'periods', 'run_id': 'runs'},
}
# SQLite's foreign keys have no names: batch mode names them by this convention to drop them (alembic's batch docs).
NAMES = {'fk': 'fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s'}
PARENT_KEY = {'periods': 'period_id', 'runs': 'run_id'}


def _name(table: str, column: str, parent: str) -> str:
    return f'fk_{table}_{column}_{parent}'


def upgrade() -> None:
    bind = op.get_bind()
    for table in BULK:
        if bind.dialect.name == 'sqlite':
            fks = sa.inspect(bind).get_foreign_keys(table)
            with op.batch_alter_table(table, recreate='always', naming_convention=NAMES) as batch:
                for fk in fks:
                    batch.drop_constraint(_name(table, fk['constrained_columns'][0], fk['referred_table']), type_='foreignkey')
        else:
            for fk in sa.inspect(bind).get_foreign_keys(table):
                op.drop_constraint(fk['name'], table, type_='foreignkey')


def downgrade() -> None:
    for table, refs in BULK.items():
        with op.batch_alter_table(table) as batch:
            for column, parent in refs.items():
                batch.create_foreign_key(_name(table, column, parent), parent, [column], [PARENT_KEY[parent]])
