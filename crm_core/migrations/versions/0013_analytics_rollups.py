"""analytics roll-ups

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 06:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import crm_core.models.base

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAMP = crm_core.models.base.UTCDateTime(timezone=True)
CHANNEL = sa.Enum('email', 'telegram', 'webchat', 'phone', 'internal',
                  name='channel', native_enum=False, length=20)
DIRECTION = sa.Enum('inbound', 'outbound', 'internal', name='direction', native_enum=False,
                    length=20)


def upgrade() -> None:
    op.create_table('rollup_state',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('zone', sa.String(length=64), nullable=False),
    sa.Column('through', sa.Date(), nullable=False),
    sa.Column('watermark', STAMP, nullable=False),
    sa.Column('refreshed_at', STAMP, nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_rollup_state'))
    )
    op.create_table('rollup_channel_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('channel', CHANNEL, nullable=False),
    sa.Column('direction', DIRECTION, nullable=False),
    sa.Column('interactions', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'channel', 'direction', name=op.f('pk_rollup_channel_days'))
    )
    op.create_table('rollup_agent_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('replies', sa.Integer(), nullable=False),
    sa.Column('csat_responses', sa.Integer(), nullable=False),
    sa.Column('csat_score_sum', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'agent_id', name=op.f('pk_rollup_agent_days'))
    )
    op.create_table('rollup_agent_conversations',
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('first_at', STAMP, nullable=False),
    sa.Column('last_at', STAMP, nullable=False),
    sa.PrimaryKeyConstraint('agent_id', 'conversation_id',
                            name=op.f('pk_rollup_agent_conversations'))
    )
    op.create_index('ix_rollup_agent_conversations_span', 'rollup_agent_conversations',
                    ['first_at', 'last_at', 'agent_id'], unique=False)
    op.create_index('ix_rollup_agent_conversations_conversation_id',
                    'rollup_agent_conversations', ['conversation_id'], unique=False)
    op.create_table('rollup_ticket_durations',
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('ticket_id', 'kind', name=op.f('pk_rollup_ticket_durations'))
    )
    op.create_index('ix_rollup_ticket_durations_sorted', 'rollup_ticket_durations',
                    ['kind', 'agent_id', 'seconds'], unique=False, postgresql_include=['day'])
    op.create_index('ix_interactions_created_at', 'interactions', ['created_at'], unique=False)
    op.create_index('ix_tickets_updated_at', 'tickets', ['updated_at'], unique=False)
    op.create_index('ix_feedback_updated_at', 'feedback', ['updated_at'], unique=False)
    op.create_table('rollup_order_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('revenue', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.PrimaryKeyConstraint('day', 'agent_id', 'currency', name=op.f('pk_rollup_order_days'))
    )
    # Orders had no change time: existing ones take their creation time.
    op.add_column('orders', sa.Column('updated_at', STAMP, nullable=True))
    op.execute("UPDATE orders SET updated_at = created_at")
    with op.batch_alter_table('orders') as batch_op:
        batch_op.alter_column('updated_at', existing_type=STAMP, nullable=False)
    op.create_index('ix_orders_updated_at', 'orders', ['updated_at'], unique=False)
    op.create_index('ix_orders_confirmed_ordered', 'orders', ['status', 'currency', 'ordered_at'],
                    unique=False, postgresql_include=['customer_id', 'agent_id', 'amount'])


def downgrade() -> None:
    op.drop_index('ix_orders_confirmed_ordered', table_name='orders')
    op.drop_index('ix_orders_updated_at', table_name='orders')
    with op.batch_alter_table('orders') as batch_op:
        batch_op.drop_column('updated_at')
    op.drop_table('rollup_order_days')
    op.drop_index('ix_feedback_updated_at', table_name='feedback')
    op.drop_index('ix_tickets_updated_at', table_name='tickets')
    op.drop_index('ix_interactions_created_at', table_name='interactions')
    op.drop_index('ix_rollup_ticket_durations_sorted', table_name='rollup_ticket_durations')
    op.drop_table('rollup_ticket_durations')
    op.drop_index('ix_rollup_agent_conversations_conversation_id',
                  table_name='rollup_agent_conversations')
    op.drop_index('ix_rollup_agent_conversations_span', table_name='rollup_agent_conversations')
    op.drop_table('rollup_agent_conversations')
    op.drop_table('rollup_agent_days')
    op.drop_table('rollup_channel_days')
    op.drop_table('rollup_state')
