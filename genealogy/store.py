"""The genealogy store: enterprise lot events in, lots, links and documents out.

Writes are idempotent by ``event_id``: applying an event that is already stored
changes nothing (a re-send with *different* content is kept as a conflict, as
evidence, and changes nothing either). A batch and the consumer progress that covers
it are written in one transaction, so a crash never leaves one without the other.

Example::

    >>> store = GenealogyStore.connect("sqlite:///lothub.db")   # doctest: +SKIP
    >>> store.migrate()                                          # doctest: +SKIP
    >>> store.apply([event])                                     # doctest: +SKIP
    ApplyResult(stored=1, duplicates=0, conflicts=0)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    String,
    Table,
    and_,
    any_,
    bindparam,
    create_engine,
    event,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from genealogy import migrate, tables
from schemas.alerts import AlertState, Rule
from schemas.errors import ConfigurationError, RetriableError
from schemas.model import (
    AdjustmentKind,
    CustomerReturn,
    EventCorrected,
    InventoryAdjusted,
    LotAliasLinked,
    LotEventBase,
    LotMoved,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    Quantity,
    TransferReceived,
    TransferShipped,
    Transformation,
)


class StoreUnavailableError(RetriableError):
    """The database did not answer; retry after a pause."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """An event id re-sent with other content: which, what was kept, what was refused."""

    event_id: str
    stored_hash: str
    refused_hash: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one :meth:`GenealogyStore.apply` call did."""

    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    #: each conflict of ``conflicts``, for the duplicate-conflict integrity alert
    conflicting: tuple[Conflict, ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    """Consumer position to record with a batch: the next offset to read."""

    consumer: str
    topic: str
    partition: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class SourceCount:
    """Events stored from one source system instance (see :meth:`GenealogyStore.source_counts`)."""

    site: str
    system_kind: str
    system_instance: str
    events: int
    first_sequence: int
    last_sequence: int
    last_ingested_at: datetime

    @property
    def missing_sequences(self) -> int:
        """Sequence numbers within the stored range with no event (gaps, if numbered densely)."""
        return self.last_sequence - self.first_sequence + 1 - self.events


def utc(value: datetime) -> datetime:
    """A datetime read back from the database, as aware UTC (SQLite drops the zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def not_voided(event_id: Any) -> Any:
    """A WHERE clause: the row's ``event_id`` column names no voided event."""
    ev = tables.events
    return ~exists().where(and_(ev.c.event_id == event_id, ev.c.voided_by.is_not(None)))


def site_of(lot_id: str) -> str:
    """The site part of an enterprise lot id ``SITE:CODE``."""
    return lot_id.split(":", 1)[0]


def content_hash(payload: str) -> str:
    """Digest of an event's full content (its ``model_dump_json()``), to tell a re-send
    from a conflicting one."""
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class _Rows:
    """Rows derived from a batch, inserted table by table."""

    by_table: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: Table, **row: Any) -> None:
        self.by_table.setdefault(table.name, []).append(row)


class GenealogyStore:
    """SQLAlchemy-backed store; SQLite by default, PostgreSQL in production.

    Example::

        store = GenealogyStore.connect(os.environ["LOTHUB_DATABASE_URL"])
        store.migrate()
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def connect(cls, url: str) -> GenealogyStore:
        """Open a store on any SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://``)."""
        try:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ValueError) as exc:
            raise ConfigurationError(f"database URL is not usable: {exc}") from exc
        return cls(engine)

    def migrate(self) -> None:
        """Create or upgrade the schema (Alembic ``upgrade head``)."""
        try:
            migrate.upgrade(self.engine)
        except OperationalError as exc:
            raise StoreUnavailableError(f"cannot migrate the genealogy store: {exc}") from exc

    def ping(self) -> bool:
        """True if the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # --- writing ---------------------------------------------------------------

    def apply(
        self, events: Sequence[LotEventBase], progress: Iterable[Progress] = ()
    ) -> ApplyResult:
        """Store a batch of enterprise events and, in the same transaction, progress."""
        try:
            with self.engine.begin() as conn:
                # first, before any other lock: the clock row is what orders writers
                seq = _tick(conn, "writes") if events else 0
                result = self._apply(conn, events, seq)
                now = datetime.now(UTC)
                for p in progress:
                    _upsert(
                        conn,
                        tables.consumer_progress,
                        [
                            {
                                "consumer": p.consumer,
                                "topic": p.topic,
                                "partition": p.partition,
                                "next_offset": p.next_offset,
                                "updated_at": now,
                            }
                        ],
                        keys=("consumer", "topic", "partition"),
                        update_cols=("next_offset", "updated_at"),
                    )
                return result
        except OperationalError as exc:
            raise StoreUnavailableError(f"genealogy store write failed: {exc}") from exc

    def _apply(self, conn: Connection, events: Sequence[LotEventBase], seq: int) -> ApplyResult:
        ids = list({e.envelope.event_id for e in events})
        known: dict[str, str] = {}
        for chunk in _chunks(ids, 500):
            found = conn.execute(
                select(tables.events.c.event_id, tables.events.c.content_hash).where(
                    tables.events.c.event_id.in_(chunk)
                )
            )
            known.update({r.event_id: r.content_hash for r in found})
        now = datetime.now(UTC)
        fresh: list[LotEventBase] = []
        duplicates = 0
        conflicts: list[dict[str, Any]] = []
        refused: list[Conflict] = []
        payloads: dict[str, str] = {}  # event id -> JSON of the fresh event
        for ev in events:
            payload = ev.model_dump_json()
            digest = content_hash(payload)
            seen = known.get(ev.envelope.event_id)
            if seen is None:
                known[ev.envelope.event_id] = digest
                payloads[ev.envelope.event_id] = payload
                fresh.append(ev)
            elif seen == digest:
                duplicates += 1
            else:
                refused.append(Conflict(ev.envelope.event_id, seen, digest))
                conflicts.append(
                    {
                        "event_id": ev.envelope.event_id,
                        "content_hash": digest,
                        "payload": payload,
                        "seen_at": now,
                    }
                )
        if conflicts:
            _insert_ignore(conn, tables.event_conflicts, conflicts)
        rows = _Rows()
        for ev in fresh:
            env = ev.envelope
            rows.add(
                tables.events,
                event_id=env.event_id,
                event_type=env.event_type,
                site=env.source.site,
                system_kind=env.source.system_kind.value,
                system_instance=env.source.system_instance,
                sequence=env.sequence,
                occurred_at=env.occurred_at.astimezone(UTC),
                recorded_at=env.recorded_at.astimezone(UTC),
                ingested_at=now,
                content_hash=known[env.event_id],
                payload=payloads[env.event_id],
                voided_by=None,
            )
            _derive(ev, rows)
            for entry in _ledger(ev):
                rows.add(tables.lot_ledger, **entry)
            for lot_id in set(ev.lots()):
                rows.add(tables.lot_events, lot_id=lot_id, event_id=env.event_id,
                         occurred_at=env.occurred_at.astimezone(UTC))  # fmt: skip
        for stamped in (tables.lot_links, tables.lots, tables.documents):
            for row in rows.by_table.get(stamped.name, []):
                row["seq"] = seq
        self._upsert_lots(conn, rows.by_table.pop(tables.lots.name, []))
        order = [
            tables.events,
            tables.lot_ledger,
            tables.lot_events,
            tables.lot_aliases,
            tables.lot_links,
            tables.batch_moves,
            tables.documents,
            tables.status_history,
        ]
        for table in order:
            if table.name in rows.by_table:
                _insert_ignore(conn, table, rows.by_table[table.name])
        self._join_batches(conn, fresh, seq)
        self._apply_statuses(conn, fresh, seq)
        self._apply_corrections(conn, fresh)
        self._withdraw_parked_alerts(conn, fresh)
        return ApplyResult(stored=len(fresh), duplicates=duplicates, conflicts=len(conflicts),
                           conflicting=tuple(refused))  # fmt: skip

    def _withdraw_parked_alerts(self, conn: Connection, fresh: Sequence[LotEventBase]) -> None:
        """An event stored after all (replayed once its mapping exists) ends its unmapped alert."""
        alerts = tables.integrity_alerts
        subjects = [f"event:{e.envelope.event_id}" for e in fresh]
        for chunk in _chunks(subjects, 500):
            conn.execute(
                update(alerts)
                .where(alerts.c.rule == Rule.UNMAPPED_VALUE.value, alerts.c.subject.in_(chunk),
                       alerts.c.state == AlertState.OPEN.value)
                .values(state=AlertState.WITHDRAWN.value, updated_at=datetime.now(UTC))
            )  # fmt: skip

    def _upsert_lots(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Create lots; fill item details from whichever event carries them, in any order."""
        merged: dict[str, dict[str, Any]] = {}
        for row in rows:
            seen = merged.setdefault(row["lot_id"], dict(row))
            for col in ("item_code", "item_description"):
                seen[col] = seen[col] or row[col]
        if not merged:
            return
        lots = tables.lots
        ins: Any = (
            postgresql.insert(lots) if conn.dialect.name == "postgresql" else sqlite.insert(lots)
        )
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=["lot_id"],
                set_={
                    **{
                        c: func.coalesce(lots.c[c], ins.excluded[c])
                        for c in ("item_code", "item_description")
                    },
                    "seq": ins.excluded.seq,
                },
            ),
            list(merged.values()),
        )

    def _join_batches(self, conn: Connection, fresh: Sequence[LotEventBase], seq: int) -> None:
        """Link every consumed lot of a batch to every produced lot, whichever came first."""
        batches = {e.batch_id for e in fresh if isinstance(e, MaterialConsumed | MaterialProduced)}
        if not batches:
            return
        moves = tables.batch_moves
        links: list[dict[str, Any]] = []
        for chunk in _chunks(sorted(batches), 200):
            rows = conn.execute(select(moves).where(moves.c.batch_id.in_(chunk))).all()
            by_batch: dict[str, list[Any]] = {}
            for r in rows:
                by_batch.setdefault(r.batch_id, []).append(r)
            for batch_rows in by_batch.values():
                ins = [r for r in batch_rows if r.direction == "IN"]
                outs = [r for r in batch_rows if r.direction == "OUT"]
                for i in ins:
                    for o in outs:
                        links.append(_link(
                            f"batch:{i.event_id}:{o.event_id}", i.lot_id, o.lot_id, o.kind,
                            o.batch_id, (i.quantity, i.unit), (o.quantity, o.unit),
                            (i.event_id, o.event_id), max(utc(i.occurred_at), utc(o.occurred_at)),
                        ) | {"seq": seq})  # fmt: skip
        if links:
            _insert_ignore(conn, tables.lot_links, links)

    def _apply_statuses(self, conn: Connection, fresh: Sequence[LotEventBase], seq: int) -> None:
        """Current status = the status of the latest event by event time, in any arrival order.

        Of a lot's status events in the batch the latest wins (at equal times, the later in
        the batch), and only over a stored status no later than it: one read and one
        multi-row update per batch, not two statements per event.
        """
        latest: dict[str, tuple[datetime, str]] = {}
        for ev in fresh:
            if isinstance(ev, LotStatusChanged):
                at = ev.envelope.occurred_at.astimezone(UTC)
                seen = latest.get(ev.lot)
                if seen is None or seen[0] <= at:
                    latest[ev.lot] = (at, ev.status)
        if not latest:
            return
        lots = tables.lots
        current: dict[str, datetime | None] = {}
        for chunk in _chunks(sorted(latest), 500):
            rows = conn.execute(
                select(lots.c.lot_id, lots.c.status_at).where(lots.c.lot_id.in_(chunk))
            )
            current.update({r.lot_id: r.status_at for r in rows})
        changes = []
        for lot, (at, status) in latest.items():
            if lot not in current:  # no row to update (as a one-row UPDATE would find)
                continue
            stored = current[lot]
            if stored is None or utc(stored) <= at:
                changes.append({"b_lot": lot, "b_status": status, "b_at": at})
        if changes:
            conn.execute(
                update(lots)
                .where(lots.c.lot_id == bindparam("b_lot"))
                .values(status=bindparam("b_status"), status_at=bindparam("b_at"), seq=seq),
                changes,
            )

    def _apply_corrections(self, conn: Connection, fresh: Sequence[LotEventBase]) -> None:
        """Void corrected events, including corrections that arrived before their target."""
        ev, corrections = tables.events, tables.event_corrections
        pairs = [{"corrected_event_id": target, "correcting_event_id": e.envelope.event_id}
                 for e in fresh if isinstance(e, EventCorrected) for target in e.corrected_event_ids]  # fmt: skip
        if pairs:
            _insert_ignore(conn, corrections, pairs)
        touched = sorted(
            {p["corrected_event_id"] for p in pairs} | {e.envelope.event_id for e in fresh}
        )
        for chunk in _chunks(touched, 500):
            voider = (
                select(func.min(corrections.c.correcting_event_id))
                .where(corrections.c.corrected_event_id == ev.c.event_id)
                .scalar_subquery()
            )
            voided = conn.execute(
                update(ev)
                .where(ev.c.event_id.in_(chunk), ev.c.voided_by.is_(None), voider.is_not(None))
                .values(voided_by=voider)
            )
            if voided.rowcount:
                _tick(conn, "voids")

    # --- operational state -----------------------------------------------------

    def heartbeat(self, component: str, *, healthy: bool, detail: str = "") -> None:
        """Record that ``component`` is alive (and whether it is making progress)."""
        _upsert_engine(
            self.engine,
            tables.heartbeats,
            {
                "component": component,
                "seen_at": datetime.now(UTC),
                "healthy": healthy,
                "detail": detail,
            },
        )

    def last_heartbeat(self, component: str) -> tuple[datetime, bool, str] | None:
        """When ``component`` last reported, whether healthy, and its detail."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(tables.heartbeats).where(tables.heartbeats.c.component == component)
            ).first()
        return None if row is None else (utc(row.seen_at), bool(row.healthy), str(row.detail))

    def event_count(self) -> int:
        """How many distinct events are stored."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tables.events)).scalar_one())

    def progress(self, consumer: str) -> dict[tuple[str, int], int]:
        """The next offset ``consumer`` stored with its last batch, per (topic, partition)."""
        cp = tables.consumer_progress
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(cp.c.topic, cp.c.partition, cp.c.next_offset).where(
                        cp.c.consumer == consumer
                    )
                )
                return {(r.topic, r.partition): int(r.next_offset) for r in rows}
        except OperationalError as exc:
            raise StoreUnavailableError(f"cannot read consumer progress: {exc}") from exc

    def source_counts(self) -> list[SourceCount]:
        """Distinct events stored per source system instance, with their sequence range.

        What a reconciler compares with what each source (or its connector) says it sent:
        a broker that lost acknowledged events before they were stored shows up here as
        fewer events than sent, and, for sources that number their events densely, as
        ``missing_sequences`` greater than zero.
        """
        ev = tables.events
        query = (
            select(
                ev.c.site, ev.c.system_kind, ev.c.system_instance, func.count().label("events"),
                func.min(ev.c.sequence).label("first"), func.max(ev.c.sequence).label("last"),
                func.max(ev.c.ingested_at).label("ingested"),
            )
            .group_by(ev.c.site, ev.c.system_kind, ev.c.system_instance)
            .order_by(ev.c.site, ev.c.system_kind, ev.c.system_instance)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [
                SourceCount(
                    site=r.site,
                    system_kind=r.system_kind,
                    system_instance=r.system_instance,
                    events=int(r.events),
                    first_sequence=int(r.first),
                    last_sequence=int(r.last),
                    last_ingested_at=utc(r.ingested),
                )
                for r in conn.execute(query)
            ]


def _derive(ev: LotEventBase, rows: _Rows) -> None:
    """The lots, aliases, links, moves, documents and statuses one event implies."""
    env = ev.envelope
    at = env.occurred_at.astimezone(UTC)
    eid = env.event_id

    def lot(lot_id: str, item: Any = None) -> None:
        rows.add(
            tables.lots,
            lot_id=lot_id,
            site=site_of(lot_id),
            item_code=item.item_code if item else None,
            item_description=item.description if item else None,
            status=None,
            status_at=None,
        )
        rows.add(
            tables.lot_aliases, alias=lot_id.split(":", 1)[1], alias_kind="SITE_LOT", lot_id=lot_id
        )

    def document(
        lot_id: str,
        cte: str,
        q: Quantity,
        doc: Any,
        *,
        party: Any = None,
        partner_lot: str | None = None,
        location: Any = None,
    ) -> None:
        rows.add(
            tables.documents,
            event_id=eid,
            lot_id=lot_id,
            cte=cte,
            doc_type=doc.doc_type,
            doc_number=doc.number,
            site=env.source.site,
            party_id=party.party_id if party else None,
            party_name=party.name if party else None,
            partner_lot=partner_lot,
            location_id=location.location_id if location else None,
            location_name=location.name if location else None,
            quantity=q.value,
            unit=q.unit,
            occurred_at=at,
        )

    if isinstance(ev, LotReceived):
        lot(ev.lot, ev.item)
        rows.add(
            tables.lot_aliases, alias=ev.supplier_lot, alias_kind="SUPPLIER_LOT", lot_id=ev.lot
        )
        document(
            ev.lot,
            "RECEIVING",
            ev.quantity,
            ev.reference_document,
            party=ev.supplier,
            partner_lot=ev.supplier_lot,
            location=ev.ship_from,
        )
    elif isinstance(ev, Transformation):
        for x in [*ev.inputs, *ev.outputs]:
            lot(x.lot, x.item)
        for i in ev.inputs:
            for o in ev.outputs:
                rows.add(tables.lot_links, **_link(
                    f"tf:{eid}:{i.lot}:{o.lot}", i.lot, o.lot, ev.kind.value, ev.transformation_id,
                    (i.quantity.value, i.quantity.unit), (o.quantity.value, o.quantity.unit),
                    (eid, eid), at,
                ))  # fmt: skip
        for o in ev.outputs:
            document(
                o.lot, "TRANSFORMATION", o.quantity, ev.reference_document, location=ev.location
            )
    elif isinstance(ev, MaterialConsumed | MaterialProduced):
        lot(ev.lot, ev.item)
        rows.add(
            tables.batch_moves,
            event_id=eid,
            batch_id=ev.batch_id,
            direction="IN" if isinstance(ev, MaterialConsumed) else "OUT",
            kind=ev.kind.value,
            lot_id=ev.lot,
            quantity=ev.quantity.value,
            unit=ev.quantity.unit,
            occurred_at=at,
        )
        if isinstance(ev, MaterialProduced):
            document(
                ev.lot, "TRANSFORMATION", ev.quantity, ev.reference_document, location=ev.location
            )
    elif isinstance(ev, TransferShipped):
        lot(ev.lot, ev.item)
        document(
            ev.lot, "TRANSFER_SHIPPED", ev.quantity, ev.reference_document, location=ev.to_location
        )
    elif isinstance(ev, TransferReceived):
        lot(ev.lot, ev.item)
        lot(ev.shipped_lot, ev.item)
        moved = (ev.quantity.value, ev.quantity.unit)
        rows.add(tables.lot_links, **_link(
            f"transfer:{eid}", ev.shipped_lot, ev.lot, "TRANSFER", ev.transfer_id, moved, moved,
            (eid, eid), at,
        ))  # fmt: skip
        document(
            ev.lot,
            "TRANSFER_RECEIVED",
            ev.quantity,
            ev.reference_document,
            partner_lot=ev.shipped_lot,
            location=ev.from_location,
        )
    elif isinstance(ev, LotShipped):
        lot(ev.lot, ev.item)
        document(
            ev.lot,
            "SHIPPING",
            ev.quantity,
            ev.reference_document,
            party=ev.customer,
            location=ev.ship_to,
        )
    elif isinstance(ev, CustomerReturn):
        lot(ev.lot, ev.item)
        document(
            ev.lot,
            "RETURN",
            ev.quantity,
            ev.reference_document,
            party=ev.customer,
            location=ev.receiving_location,
        )
    elif isinstance(ev, LotStatusChanged):
        lot(ev.lot)
        rows.add(
            tables.status_history,
            event_id=eid,
            lot_id=ev.lot,
            status=ev.status,
            reason_code=ev.reason_code,
            actor=ev.actor,
            occurred_at=at,
            recorded_at=env.recorded_at.astimezone(UTC),
        )
    elif isinstance(ev, LotMoved):
        lot(ev.lot, ev.item)
        if ev.license_plate:
            rows.add(tables.lot_aliases, alias=ev.license_plate, alias_kind="LICENSE_PLATE",
                     lot_id=ev.lot)  # fmt: skip
    elif isinstance(ev, LotAliasLinked):
        lot(ev.lot)
        rows.add(tables.lot_aliases, alias=ev.alias, alias_kind=ev.alias_kind, lot_id=ev.lot)
    else:
        for lot_id in ev.lots():
            lot(lot_id)


def _ledger(ev: LotEventBase) -> list[dict[str, Any]]:
    """Signed lot quantities of one event, by category (see ``tables.lot_ledger``)."""
    at = ev.envelope.occurred_at.astimezone(UTC)
    entries: dict[tuple[str, str], dict[str, Any]] = {}

    def add(lot: str, category: str, q: Quantity, sign: int, *, ref: str | None = None,
            location: Any = None) -> None:  # fmt: skip
        key = (lot, category)
        if key in entries:  # the same lot twice in one transformation: one entry
            entries[key]["quantity"] += sign * q.value
            return
        entries[key] = {"event_id": ev.envelope.event_id, "lot_id": lot, "category": category,
                        "quantity": sign * q.value, "unit": q.unit, "ref": ref,
                        "location_id": location.location_id if location else None,
                        "occurred_at": at}  # fmt: skip

    if isinstance(ev, LotReceived):
        add(ev.lot, "RECEIVED", ev.quantity, 1, ref=ev.supplier_lot, location=ev.receiving_location)
    elif isinstance(ev, Transformation):
        for i in ev.inputs:
            add(i.lot, "CONSUMED", i.quantity, -1, ref=ev.transformation_id, location=ev.location)
        for o in ev.outputs:
            add(o.lot, "PRODUCED", o.quantity, 1, ref=ev.transformation_id, location=ev.location)
    elif isinstance(ev, MaterialConsumed):
        add(ev.lot, "CONSUMED", ev.quantity, -1, ref=ev.batch_id, location=ev.location)
    elif isinstance(ev, MaterialProduced):
        add(ev.lot, "PRODUCED", ev.quantity, 1, ref=ev.batch_id, location=ev.location)
    elif isinstance(ev, TransferShipped):
        add(ev.lot, "TRANSFERRED_OUT", ev.quantity, -1, ref=ev.transfer_id, location=ev.to_location)
    elif isinstance(ev, TransferReceived):
        add(ev.lot, "RECEIVED", ev.quantity, 1, ref=ev.transfer_id, location=ev.receiving_location)
    elif isinstance(ev, LotShipped):
        add(ev.lot, "SHIPPED", ev.quantity, -1, ref=ev.customer.party_id, location=ev.ship_to)
    elif isinstance(ev, CustomerReturn):
        add(
            ev.lot,
            "RETURNED",
            ev.quantity,
            1,
            ref=ev.customer.party_id,
            location=ev.receiving_location,
        )
    elif isinstance(ev, InventoryAdjusted):
        category = "ADJUSTED" if ev.kind is AdjustmentKind.ADJUSTMENT else "SCRAPPED"
        add(ev.lot, category, ev.quantity_change, 1, ref=ev.reason_code, location=ev.location)
    return list(entries.values())


def _link(
    key: str,
    parent: str,
    child: str,
    kind: str,
    via: str,
    used: tuple[Any, str],
    produced: tuple[Any, str],
    events: tuple[str, str],
    at: datetime,
) -> dict[str, Any]:
    """A ``lot_links`` row: parent -> child with the quantity used and the quantity made."""
    return {
        "link_key": key, "parent_lot": parent, "child_lot": child, "kind": kind, "via": via,
        "quantity_used": used[0], "unit_used": used[1],
        "quantity_produced": produced[0], "unit_produced": produced[1],
        "parent_event_id": events[0], "child_event_id": events[1], "occurred_at": at,
    }  # fmt: skip


def _tick(conn: Connection, name: str) -> int:
    """Move a ``genealogy_clock`` counter by one in this transaction; its new value.

    Holding the row until commit orders the writers that tick it (see genealogy.graph).
    """
    clock = tables.genealogy_clock
    conn.execute(update(clock).where(clock.c.name == name).values(value=clock.c.value + 1))
    return int(conn.execute(select(clock.c.value).where(clock.c.name == name)).scalar_one())


def one_of(conn: Connection, column: Any, values: list[str]) -> Any:
    """``column IN values`` with the values as one bound parameter, however many.

    An IN list binds one parameter per value, which SQLAlchemy renders on every call and
    SQLite and PostgreSQL cap; a JSON array (SQLite) or an array (PostgreSQL) does not.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(String)))
    listed = func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping those whose key exists (what makes re-applying harmless)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(table).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        conn.execute(sqlite.insert(table).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - other databases are not supported yet
        raise ConfigurationError(f"database {dialect!r} is not supported; use SQLite or PostgreSQL")


def _upsert(
    conn: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    *,
    keys: Sequence[str],
    update_cols: Sequence[str],
) -> None:
    ins: Any = (
        postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    )
    stmt = ins.on_conflict_do_update(
        index_elements=list(keys), set_={c: ins.excluded[c] for c in update_cols}
    )
    conn.execute(stmt, rows)


def _upsert_engine(engine: Engine, table: Table, row: dict[str, Any]) -> None:
    keys = [c.name for c in table.primary_key.columns]
    with engine.begin() as conn:
        _upsert(conn, table, [row], keys=keys, update_cols=[c for c in row if c not in keys])


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the stream worker writes from another process.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
