"""initial genealogy store

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_moves",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("batch_id", sa.String(length=200), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("unit", sa.String(length=3), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_batch_moves")),
    )
    with op.batch_alter_table("batch_moves", schema=None) as batch_op:
        batch_op.create_index("ix_batch_moves_batch", ["batch_id"], unique=False)

    op.create_table(
        "consumer_progress",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "consumer", "topic", "partition", name=op.f("pk_consumer_progress")
        ),
    )
    op.create_table(
        "documents",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.Column("cte", sa.String(length=30), nullable=False),
        sa.Column("doc_type", sa.String(length=40), nullable=False),
        sa.Column("doc_number", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("party_id", sa.String(length=200), nullable=True),
        sa.Column("party_name", sa.String(length=200), nullable=True),
        sa.Column("partner_lot", sa.String(length=200), nullable=True),
        sa.Column("location_id", sa.String(length=200), nullable=True),
        sa.Column("location_name", sa.String(length=200), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("unit", sa.String(length=3), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "lot_id", name=op.f("pk_documents")),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index("ix_documents_lot", ["lot_id"], unique=False)

    op.create_table(
        "event_conflicts",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "content_hash", name=op.f("pk_event_conflicts")),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("system_kind", sa.String(length=10), nullable=False),
        sa.Column("system_instance", sa.String(length=200), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("voided_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_events")),
    )
    op.create_table(
        "heartbeats",
        sa.Column("component", sa.String(length=200), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("component", name=op.f("pk_heartbeats")),
    )
    op.create_table(
        "lot_aliases",
        sa.Column("alias", sa.String(length=200), nullable=False),
        sa.Column("alias_kind", sa.String(length=40), nullable=False),
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("alias", "alias_kind", "lot_id", name=op.f("pk_lot_aliases")),
    )
    with op.batch_alter_table("lot_aliases", schema=None) as batch_op:
        batch_op.create_index("ix_lot_aliases_lot", ["lot_id"], unique=False)

    op.create_table(
        "lot_links",
        sa.Column("link_key", sa.String(length=500), nullable=False),
        sa.Column("parent_lot", sa.String(length=200), nullable=False),
        sa.Column("child_lot", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("via", sa.String(length=200), nullable=False),
        sa.Column("quantity_used", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("quantity_produced", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("unit_used", sa.String(length=3), nullable=False),
        sa.Column("unit_produced", sa.String(length=3), nullable=False),
        sa.Column("parent_event_id", sa.String(length=200), nullable=False),
        sa.Column("child_event_id", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("link_key", name=op.f("pk_lot_links")),
    )
    with op.batch_alter_table("lot_links", schema=None) as batch_op:
        batch_op.create_index("ix_lot_links_child", ["child_lot"], unique=False)
        batch_op.create_index("ix_lot_links_parent", ["parent_lot"], unique=False)

    op.create_table(
        "lots",
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("item_code", sa.String(length=200), nullable=True),
        sa.Column("item_description", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_lots")),
    )
    op.create_table(
        "status_history",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason_code", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_status_history")),
    )
    with op.batch_alter_table("status_history", schema=None) as batch_op:
        batch_op.create_index("ix_status_history_lot", ["lot_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("status_history", schema=None) as batch_op:
        batch_op.drop_index("ix_status_history_lot")

    op.drop_table("status_history")
    op.drop_table("lots")
    with op.batch_alter_table("lot_links", schema=None) as batch_op:
        batch_op.drop_index("ix_lot_links_parent")
        batch_op.drop_index("ix_lot_links_child")

    op.drop_table("lot_links")
    with op.batch_alter_table("lot_aliases", schema=None) as batch_op:
        batch_op.drop_index("ix_lot_aliases_lot")

    op.drop_table("lot_aliases")
    op.drop_table("heartbeats")
    op.drop_table("events")
    op.drop_table("event_conflicts")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_lot")

    op.drop_table("documents")
    op.drop_table("consumer_progress")
    with op.batch_alter_table("batch_moves", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_moves_batch")

    op.drop_table("batch_moves")
