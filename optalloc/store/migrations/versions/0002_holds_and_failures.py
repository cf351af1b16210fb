"""holds and failures: periods.held_at, periods.hold_reason; period_failures

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('periods') as batch:
        batch.add_column(sa.Column('held_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('hold_reason', sa.Text(), nullable=True))
    op.create_table('period_failures',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('period_id', sa.String(length=128), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['period_id'], ['periods.period_id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.PrimaryKeyConstraint('run_id', 'period_id')
    )


def downgrade() -> None:
    op.drop_table('period_failures')
    with op.batch_alter_table('periods') as batch:
        batch.drop_column('hold_reason')
        batch.drop_column('held_at')
