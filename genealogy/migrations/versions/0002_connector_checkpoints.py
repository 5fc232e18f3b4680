"""connector checkpoints

The table is the connectors' own (connectors/checkpoints.py); it is created here so
that one migration history covers the hub database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connector_checkpoints",
        sa.Column("connector", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("connector", name=op.f("pk_connector_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("connector_checkpoints")
