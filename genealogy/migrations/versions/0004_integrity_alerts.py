"""integrity alerts with acknowledgement and resolution, and the lots and sites they name

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrity_alerts",
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("sites", sa.Text(), nullable=False),
        sa.Column("lots", sa.Text(), nullable=False),
        sa.Column("source_systems", sa.Text(), nullable=False),
        sa.Column("evidence_event_ids", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_by", sa.String(length=200), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolve_comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_integrity_alerts")),
    )
    op.create_index("ix_integrity_alerts_detected", "integrity_alerts", ["detected_at"])
    op.create_index("ix_integrity_alerts_subject", "integrity_alerts", ["subject"])
    op.create_table(
        "integrity_alert_lots",
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("lot_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "lot_id", name=op.f("pk_integrity_alert_lots")),
    )
    op.create_index("ix_integrity_alert_lots_lot", "integrity_alert_lots", ["lot_id"])
    op.create_table(
        "integrity_alert_sites",
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "site", name=op.f("pk_integrity_alert_sites")),
    )
    op.create_index("ix_integrity_alert_sites_site", "integrity_alert_sites", ["site"])


def downgrade() -> None:
    op.drop_index("ix_integrity_alert_sites_site", table_name="integrity_alert_sites")
    op.drop_table("integrity_alert_sites")
    op.drop_index("ix_integrity_alert_lots_lot", table_name="integrity_alert_lots")
    op.drop_table("integrity_alert_lots")
    op.drop_index("ix_integrity_alerts_subject", table_name="integrity_alerts")
    op.drop_index("ix_integrity_alerts_detected", table_name="integrity_alerts")
    op.drop_table("integrity_alerts")
