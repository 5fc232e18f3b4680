"""trace clock: write stamps on links, lots and documents, and the clock an in-memory graph catches up by

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    clock = op.create_table(
        "genealogy_clock",
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_genealogy_clock")),
    )
    op.bulk_insert(clock, [{"name": "writes", "value": 0}, {"name": "voids", "value": 0}])
    with op.batch_alter_table("lot_links", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("seq", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.create_index("ix_lot_links_seq", ["seq"], unique=False)
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("seq", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.create_index("ix_lots_seq", ["seq"], unique=False)
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("seq", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.create_index("ix_documents_seq", ["seq"], unique=False)
    op.create_index(
        "ix_events_voided",
        "events",
        ["event_id"],
        unique=False,
        sqlite_where=sa.text("voided_by IS NOT NULL"),
        postgresql_where=sa.text("voided_by IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_voided", table_name="events")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_seq")
        batch_op.drop_column("seq")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index("ix_lots_seq")
        batch_op.drop_column("seq")
    with op.batch_alter_table("lot_links", schema=None) as batch_op:
        batch_op.drop_index("ix_lot_links_seq")
        batch_op.drop_column("seq")
    op.drop_table("genealogy_clock")
