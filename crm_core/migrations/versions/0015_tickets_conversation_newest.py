"""tickets: index (conversation_id, id) for a conversation's newest ticket

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 11:05:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_tickets_conversation_newest', 'tickets', ['conversation_id', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_tickets_conversation_newest', table_name='tickets')
