"""initial schema: periods, rounds, inputs, results, runs

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('runs',
    sa.Column('run_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('command', sa.String(length=32), nullable=False),
    sa.Column('run_date', sa.Date(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('inputs_hash', sa.String(length=64), nullable=True),
    sa.Column('solver', sa.String(length=64), nullable=False),
    sa.Column('solver_version', sa.String(length=64), nullable=False),
    sa.Column('optalloc_version', sa.String(length=32), nullable=False),
    sa.Column('options', sa.Text(), nullable=False),
    sa.Column('objective', sa.Double(), nullable=True),
    sa.Column('timings', sa.Text(), nullable=True),
    sa.Column('steps', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('host', sa.String(length=256), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('run_id')
    )
    op.create_table('periods',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('months', sa.Text(), nullable=False),
    sa.Column('settings', sa.Text(), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sales_received_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('baseline_run_id', sa.Integer(), nullable=True),
    sa.Column('baseline_objective', sa.Double(), nullable=True),
    sa.Column('baseline_status', sa.String(length=32), nullable=True),
    sa.Column('settled_run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['baseline_run_id'], ['runs.run_id'], ),
    sa.ForeignKeyConstraint(['settled_run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id')
    )
    op.create_table('baseline_limits',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=128), nullable=False),
    sa.Column('limit_cube', sa.Double(), nullable=False),
    sa.Column('p50_cube', sa.Double(), nullable=False),
    sa.Column('upper_cube', sa.Double(), nullable=False),
    sa.Column('floor_cube', sa.Double(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'seller_id', 'storage_type', 'month')
    )
    op.create_table('baseline_placements',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('fc_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=128), nullable=False),
    sa.Column('cube', sa.Double(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'seller_id', 'fc_id', 'storage_type', 'month')
    )
    op.create_table('fc_prices',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('fc_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=128), nullable=False),
    sa.Column('capacity_cube', sa.Double(), nullable=False),
    sa.Column('pool_cube', sa.Double(), nullable=False),
    sa.Column('net_cube', sa.Double(), nullable=False),
    sa.Column('baseline_cube', sa.Double(), nullable=False),
    sa.Column('shadow_price', sa.Double(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'fc_id', 'storage_type', 'month')
    )
    op.create_table('fcs',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('fc_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=128), nullable=False),
    sa.Column('region', sa.String(length=128), nullable=False),
    sa.Column('capacity_cube', sa.Double(), nullable=False),
    sa.Column('pool_cube', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'fc_id', 'storage_type', 'month')
    )
    op.create_table('grant_placements',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('fc_id', sa.String(length=128), nullable=False),
    sa.Column('granted_round', sa.Integer(), nullable=False),
    sa.Column('cube', sa.Double(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'round', 'request_id', 'fc_id')
    )
    op.create_table('grant_sales',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('incremental_sales', sa.Double(), nullable=False),
    sa.Column('ingest_run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['ingest_run_id'], ['runs.run_id'], ),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'request_id')
    )
    op.create_table('grants',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('months', sa.Text(), nullable=False),
    sa.Column('max_fee_per_cube', sa.Double(), nullable=False),
    sa.Column('max_cube', sa.Double(), nullable=False),
    sa.Column('min_cube', sa.Double(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_cap_cube', sa.Double(), nullable=False),
    sa.Column('granted_cube', sa.Double(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('price_faced', sa.Double(), nullable=True),
    sa.Column('paradoxically_rejected', sa.Boolean(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'round', 'request_id')
    )
    op.create_table('needs',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=128), nullable=False),
    sa.Column('p50_cube', sa.Double(), nullable=False),
    sa.Column('p90_cube', sa.Double(), nullable=True),
    sa.Column('floor_cube', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'seller_id', 'storage_type', 'month')
    )
    op.create_table('pools',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('fc_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=128), nullable=False),
    sa.Column('pool_cube', sa.Double(), nullable=False),
    sa.Column('held_cube', sa.Double(), nullable=False),
    sa.Column('granted_cube', sa.Double(), nullable=False),
    sa.Column('pool_after', sa.Double(), nullable=False),
    sa.Column('dual_price', sa.Double(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'round', 'fc_id', 'storage_type', 'month')
    )
    op.create_table('requests',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('months', sa.Text(), nullable=False),
    sa.Column('max_fee_per_cube', sa.Double(), nullable=False),
    sa.Column('max_cube', sa.Double(), nullable=False),
    sa.Column('min_cube', sa.Double(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ingest_run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['ingest_run_id'], ['runs.run_id'], ),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'request_id')
    )
    op.create_table('round_prices',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('granted_requests', sa.Integer(), nullable=False),
    sa.Column('granted_cube', sa.Double(), nullable=False),
    sa.Column('clearing_price', sa.Double(), nullable=True),
    sa.Column('pool_dual_max', sa.Double(), nullable=False),
    sa.Column('objective', sa.Double(), nullable=False),
    sa.Column('paradoxically_rejected', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('protected_price', sa.Double(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'round', 'storage_type')
    )
    op.create_table('rounds',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('close_date', sa.Date(), nullable=False),
    sa.Column('cleared_run_id', sa.Integer(), nullable=True),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['cleared_run_id'], ['runs.run_id'], ),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'round')
    )
    op.create_table('sales',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=128), nullable=False),
    sa.Column('sales', sa.Double(), nullable=False),
    sa.Column('used_cube', sa.Double(), nullable=False),
    sa.Column('ingest_run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['ingest_run_id'], ['runs.run_id'], ),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'seller_id', 'storage_type', 'month')
    )
    op.create_table('sellers',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('performance_score', sa.Double(), nullable=False),
    sa.Column('productivity', sa.Double(), nullable=False),
    sa.Column('regions', sa.Text(), nullable=False),
    sa.Column('floor_cube', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'seller_id')
    )
    op.create_table('settlements',
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('seller_id', sa.String(length=128), nullable=False),
    sa.Column('storage_type', sa.String(length=128), nullable=False),
    sa.Column('months', sa.Text(), nullable=False),
    sa.Column('granted_cube', sa.Double(), nullable=False),
    sa.Column('max_fee_per_cube', sa.Double(), nullable=False),
    sa.Column('round_clearing_price', sa.Double(), nullable=False),
    sa.Column('protected_price', sa.Double(), nullable=False),
    sa.Column('fee_per_cube', sa.Double(), nullable=False),
    sa.Column('reservation_fee', sa.Double(), nullable=False),
    sa.Column('attributed_sales', sa.Double(), nullable=False),
    sa.Column('sales_source', sa.String(length=32), nullable=False),
    sa.Column('credit', sa.Double(), nullable=False),
    sa.Column('net', sa.Double(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('period_id', 'round', 'request_id')
    )


def downgrade() -> None:
    op.drop_table('settlements')
    op.drop_table('sellers')
    op.drop_table('sales')
    op.drop_table('rounds')
    op.drop_table('round_prices')
    op.drop_table('requests')
    op.drop_table('pools')
    op.drop_table('needs')
    op.drop_table('grants')
    op.drop_table('grant_sales')
    op.drop_table('grant_placements')
    op.drop_table('fcs')
    op.drop_table('fc_prices')
    op.drop_table('baseline_placements')
    op.drop_table('baseline_limits')
    op.drop_table('periods')
    op.drop_table('runs')
