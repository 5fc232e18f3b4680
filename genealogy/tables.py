"""Tables of the genealogy store (SQLAlchemy Core). Alembic migrations create them.

Events are append-only and keyed by ``event_id``; every other table is derived from
events and keyed so that applying the same event twice changes nothing.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

QTY = Numeric(24, 6)
ID = String(200)

events = Table(
    "events",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("event_type", String(40), nullable=False),
    Column("site", ID, nullable=False),
    Column("system_kind", String(10), nullable=False),
    Column("system_instance", ID, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("voided_by", ID, nullable=True),
    # the few voided events, read whole whenever the voids clock moves
    Index(
        "ix_events_voided",
        "event_id",
        sqlite_where=text("voided_by IS NOT NULL"),
        postgresql_where=text("voided_by IS NOT NULL"),
    ),
)

lots = Table(
    "lots",
    metadata,
    Column("lot_id", ID, primary_key=True),
    Column("site", ID, nullable=False),
    Column("item_code", ID, nullable=True),
    Column("item_description", ID, nullable=True),
    Column("status", String(20), nullable=True),
    Column("status_at", DateTime(timezone=True), nullable=True),
    #: the ``writes`` clock value of the last transaction that changed the row
    Column("seq", BigInteger, nullable=False, server_default=text("0")),
    Index("ix_lots_seq", "seq"),
)

lot_aliases = Table(
    "lot_aliases",
    metadata,
    Column("alias", ID, primary_key=True),
    Column("alias_kind", String(40), primary_key=True),
    Column("lot_id", ID, primary_key=True),
    Index("ix_lot_aliases_lot", "lot_id"),
)

# One row per (parent lot -> child lot) link a transformation, batch or transfer made.
lot_links = Table(
    "lot_links",
    metadata,
    Column("link_key", String(500), primary_key=True),
    Column("parent_lot", ID, nullable=False),
    Column("child_lot", ID, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("via", ID, nullable=False),
    Column("quantity_used", QTY, nullable=False),
    Column("quantity_produced", QTY, nullable=False),
    Column("unit_used", String(3), nullable=False),
    Column("unit_produced", String(3), nullable=False),
    Column("parent_event_id", ID, nullable=False),
    Column("child_event_id", ID, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    #: the ``writes`` clock value of the transaction that stored the link (0: before the clock)
    Column("seq", BigInteger, nullable=False, server_default=text("0")),
    Index("ix_lot_links_parent", "parent_lot"),
    Index("ix_lot_links_child", "child_lot"),
    Index("ix_lot_links_seq", "seq"),
)

# Two counters moved by store writes, in the same transaction: ``writes`` by every batch
# (its value stamps the links, lots and documents the batch writes, column ``seq``),
# ``voids`` when events are voided. A process holding the genealogy graph in memory reads them before each
# trace to know whether, and from where, to catch up. Taking the ``writes`` row first
# serializes writers, so their rows become visible in ``seq`` order.
genealogy_clock = Table(
    "genealogy_clock",
    metadata,
    Column("name", String(20), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# MES-style consumption and production, waiting to be joined by batch id.
batch_moves = Table(
    "batch_moves",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("batch_id", ID, nullable=False),
    Column("direction", String(3), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("lot_id", ID, nullable=False),
    Column("quantity", QTY, nullable=False),
    Column("unit", String(3), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ix_batch_moves_batch", "batch_id"),
)

# Receipts, shipments, transfers, returns: the documents a trace shows.
documents = Table(
    "documents",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("lot_id", ID, primary_key=True),
    Column("cte", String(30), nullable=False),
    Column("doc_type", String(40), nullable=False),
    Column("doc_number", ID, nullable=False),
    Column("site", ID, nullable=False),
    Column("party_id", ID, nullable=True),
    Column("party_name", ID, nullable=True),
    Column("partner_lot", ID, nullable=True),
    Column("location_id", ID, nullable=True),
    Column("location_name", ID, nullable=True),
    Column("quantity", QTY, nullable=False),
    Column("unit", String(3), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    #: the ``writes`` clock value of the transaction that stored the document
    Column("seq", BigInteger, nullable=False, server_default=text("0")),
    Index("ix_documents_lot", "lot_id"),
    Index("ix_documents_seq", "seq"),
)

status_history = Table(
    "status_history",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("lot_id", ID, nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason_code", ID, nullable=False),
    Column("actor", ID, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_status_history_lot", "lot_id"),
)

# Which event voided or superseded which; kept so a correction that arrives before
# the event it corrects still applies when that event comes.
event_corrections = Table(
    "event_corrections",
    metadata,
    Column("corrected_event_id", ID, primary_key=True),
    Column("correcting_event_id", ID, primary_key=True),
)

# Same event_id, different content: kept as evidence for the integrity checks.
event_conflicts = Table(
    "event_conflicts",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("content_hash", String(64), primary_key=True),
    Column("payload", Text, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)

# Consumer progress, written in the same transaction as the rows it covers.
consumer_progress = Table(
    "consumer_progress",
    metadata,
    Column("consumer", ID, primary_key=True),
    Column("topic", ID, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("component", ID, primary_key=True),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("healthy", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
)

# Signed quantities per lot: + received/produced/returned, - consumed/shipped/scrapped.
# Their sum is the book on-hand; a negative sum is a mass-balance residual (a gap).
lot_ledger = Table(
    "lot_ledger",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("lot_id", ID, primary_key=True),
    Column("category", String(20), primary_key=True),
    Column("quantity", QTY, nullable=False),
    Column("unit", String(3), nullable=False),
    Column("ref", ID, nullable=True),
    Column("location_id", ID, nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ix_lot_ledger_lot", "lot_id"),
)

# Which events name which lot (any role): the lot's own history.
lot_events = Table(
    "lot_events",
    metadata,
    Column("lot_id", ID, primary_key=True),
    Column("event_id", ID, primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ix_lot_events_lot_time", "lot_id", "occurred_at"),
)

recalls = Table(
    "recalls",
    metadata,
    Column("recall_id", String(36), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("request", Text, nullable=False),
    Column("packet", Text, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("affected_lots", Integer, nullable=False),
    Column("created_by", ID, nullable=False),
    #: the site of the user who asked (None: an enterprise-wide user)
    Column("site", ID, nullable=True),
)

# Append-only, hash-chained record of recalls, exports and status-affecting actions.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user_name", ID, nullable=False),
    Column("role", String(40), nullable=False),
    Column("site", ID, nullable=True),
    Column("action", String(60), nullable=False),
    Column("meaning", Text, nullable=False),
    Column("target", ID, nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# Integrity alerts from the stream checks, upserted by alert_id; people acknowledge and
# resolve them here (the stream only ever sets ``state``: OPEN or WITHDRAWN).
integrity_alerts = Table(
    "integrity_alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("rule", String(40), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("state", String(10), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("sites", Text, nullable=False),
    Column("lots", Text, nullable=False),
    Column("source_systems", Text, nullable=False),
    Column("evidence_event_ids", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("details", Text, nullable=False),
    #: first detection; ``updated_at`` is the detection time of the latest message
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("acked_by", ID, nullable=True),
    Column("acked_at", DateTime(timezone=True), nullable=True),
    Column("ack_comment", Text, nullable=True),
    Column("resolved_by", ID, nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolve_comment", Text, nullable=True),
    Index("ix_integrity_alerts_detected", "detected_at"),
    Index("ix_integrity_alerts_subject", "subject"),
)

# Which lots and sites an alert names, for filtering and site scoping.
integrity_alert_lots = Table(
    "integrity_alert_lots",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("lot_id", ID, primary_key=True),
    Index("ix_integrity_alert_lots_lot", "lot_id"),
)
integrity_alert_sites = Table(
    "integrity_alert_sites",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("site", ID, primary_key=True),
    Index("ix_integrity_alert_sites_site", "site"),
)

# One row per reconciliation run of one job at one site (what it found, how long it took).
reconcile_runs = Table(
    "reconcile_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("job", String(40), nullable=False),
    Column("site", ID, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("until", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("mismatches", Integer, nullable=False),
    Column("opened", Integer, nullable=False),
    Column("withdrawn", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Index("ix_reconcile_runs_started", "started_at"),
)
