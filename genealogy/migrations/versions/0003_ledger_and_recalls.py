"""lot ledger (mass balance, on-hand), lot history index, stored recall packets, audit log, event corrections

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lot_ledger",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("unit", sa.String(length=3), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("location_id", sa.String(length=200), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "lot_id", "category", name=op.f("pk_lot_ledger")),
    )
    op.create_index("ix_lot_ledger_lot", "lot_ledger", ["lot_id"], unique=False)
    op.create_table(
        "lot_events",
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lot_id", "event_id", name=op.f("pk_lot_events")),
    )
    op.create_index("ix_lot_events_lot_time", "lot_events", ["lot_id", "occurred_at"], unique=False)
    op.create_table(
        "recalls",
        sa.Column("recall_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("packet", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("affected_lots", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("recall_id", name=op.f("pk_recalls")),
    )
    op.create_table(
        "event_corrections",
        sa.Column("corrected_event_id", sa.String(length=200), nullable=False),
        sa.Column("correcting_event_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint(
            "corrected_event_id", "correcting_event_id", name=op.f("pk_event_corrections")
        ),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=True),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("meaning", sa.Text(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("event_corrections")
    op.drop_table("recalls")
    op.drop_index("ix_lot_events_lot_time", table_name="lot_events")
    op.drop_table("lot_events")
    op.drop_index("ix_lot_ledger_lot", table_name="lot_ledger")
    op.drop_table("lot_ledger")
