"""history and forecast: the store-wide history table; a period's forecast (periods.forecast_run_id, .forecast) and
its performance scores

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('periods') as batch:
        batch.add_column(sa.Column('forecast_run_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('forecast', sa.Text(), nullable=True))
        batch.create_foreign_key('fk_periods_forecast_run_id_runs', 'runs', ['forecast_run_id'], ['run_id'])
    op.create_table('history',
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('week', sa.String(length=10), nullable=False),
    sa.Column('shipped_cube', sa.Double(), nullable=False),
    sa.Column('sales', sa.Double(), nullable=False),
    sa.Column('on_hand_cube', sa.Double(), nullable=False),
    sa.Column('category', sa.String(length=128), nullable=True),
    sa.Column('size_band', sa.String(length=128), nullable=True),
    sa.Column('ingest_run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['ingest_run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('seller_id', 'storage_type', 'week')
    )
    op.create_table('performance',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('performance_score', sa.Double(), nullable=False),
    sa.Column('productivity', sa.Double(), nullable=False),
    sa.Column('sell_through', sa.Double(), nullable=False),
    sa.Column('excess_share', sa.Double(), nullable=False),
    sa.Column('in_stock_rate', sa.Double(), nullable=False),
    sa.Column('space_use', sa.Double(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'seller_id')
    )


def downgrade() -> None:
    op.drop_table('performance')
    op.drop_table('history')
    with op.batch_alter_table('periods') as batch:
        batch.drop_constraint('fk_periods_forecast_run_id_runs', type_='foreignkey')
        batch.drop_column('forecast')
        batch.drop_column('forecast_run_id')
