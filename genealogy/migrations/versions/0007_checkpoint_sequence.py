"""connector checkpoints keep the next sequence number of densely numbering sources

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connector_checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_sequence", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connector_checkpoints", schema=None) as batch_op:
        batch_op.drop_column("next_sequence")
