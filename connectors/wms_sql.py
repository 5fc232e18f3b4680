"""WMS connector: polls the warehouse system's own transactions table over SQLAlchemy.

Any SQLAlchemy URL works (the WMS's PostgreSQL, SQL Server, ...; SQLite in tests).
Rows are read with a composite ``(updated_at, id)`` cursor, strictly after the
checkpoint, so rows sharing a timestamp are neither lost nor read twice. Column
names are configurable: the WMS keeps its schema, the connector adapts.

Transaction types and the events they become:

==============  ==========================================================
``RECEIPT``     :class:`LotReceived` (partner = supplier, partner_lot = supplier lot)
``PUTAWAY``     :class:`LotMoved` (kind PUTAWAY)
``MOVE``        :class:`LotMoved` (kind MOVE)
``PICK``        :class:`LotMoved` (kind PICK)
``SHIP``        :class:`LotShipped` (partner = customer)
``TRANSFER_OUT`` :class:`TransferShipped` (dest_site = receiving site)
``TRANSFER_IN`` :class:`TransferReceived` (partner_lot = lot as shipped, dest_site = sending site)
``COUNT``       :class:`InventoryAdjusted` (kind ADJUSTMENT, quantity = counted variance)
==============  ==========================================================

Every row with a licence plate also links it to the lot (:class:`LotAliasLinked`).
Plant-local timestamps are made aware with the site's configured zone. Events are
numbered densely in read order (``envelope.sequence`` 1, 2, 3..., kept with the
checkpoint; a dead-lettered row takes no number), so the stream can tell a lost one.

Example::

    source = WmsSqlSource(WmsSqlConfig(name="wms-brk", site=brk, url="postgresql+psycopg://..."))
    Connector(source, publisher, dead_letters, checkpoints).run(stop)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    and_,
    create_engine,
    or_,
    select,
)
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from connectors.base import Cursor, Source, SourceRecord
from schemas.errors import ConfigurationError, EventValidationError, SourceUnavailableError
from schemas.model import (
    AdjustmentKind,
    DocumentRef,
    Envelope,
    InventoryAdjusted,
    Item,
    Location,
    LotAliasLinked,
    LotEventBase,
    LotMoved,
    LotReceived,
    LotShipped,
    MoveKind,
    Party,
    Quantity,
    SystemKind,
    TransferReceived,
    TransferShipped,
    stable_event_id,
)
from schemas.model import (
    Source as EventSource,
)
from schemas.sites import SiteConfig

#: Logical column -> default column name in the WMS table.
DEFAULT_COLUMNS: dict[str, str] = {
    "id": "id",
    "updated_at": "updated_at",
    "txn_type": "txn_type",
    "lot": "lot",
    "item_code": "item_code",
    "item_description": "item_description",
    "quantity": "quantity",
    "uom": "uom",
    "from_location": "from_location",
    "to_location": "to_location",
    "license_plate": "license_plate",
    "document": "document",
    "partner": "partner",
    "partner_lot": "partner_lot",
    "dest_site": "dest_site",
}
REQUIRED = ("id", "updated_at", "txn_type", "lot", "item_code", "quantity", "uom")
_MOVE_KINDS = {kind.value: kind for kind in MoveKind}
#: bound on the per-connector caches of validated items (a WMS has a few thousand)
_CACHE_LIMIT = 50_000


@dataclass(frozen=True, kw_only=True)
class WmsSqlConfig:
    """Where the WMS transactions are and what its columns are called."""

    name: str
    site_code: str
    site: SiteConfig
    url: str
    table: str = "wms_transactions"
    schema: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)

    def column(self, logical: str) -> str:
        """The WMS's name for a logical column."""
        return self.columns.get(logical, DEFAULT_COLUMNS[logical])

    def resolved(self) -> dict[str, str]:
        """Every logical column with the WMS's name for it."""
        return {**DEFAULT_COLUMNS, **self.columns}


def default_table(metadata: MetaData, name: str = "wms_transactions") -> Table:
    """The transactions table laid out as the defaults expect (simulators, tests, docs).

    A real WMS keeps its own layout and maps its column names under ``columns``.
    """
    text = {"txn_type": 20, "lot": 40, "item_code": 40, "item_description": 80, "uom": 10,
            "from_location": 40, "to_location": 40, "license_plate": 40, "document": 40,
            "partner": 80, "partner_lot": 40, "dest_site": 10}  # fmt: skip
    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True),
        Column("updated_at", DateTime, nullable=False, index=True),
        Column("quantity", Numeric(18, 4)),
        *(Column(col, String(size)) for col, size in text.items()),
    )  # fmt: skip


def create_transactions(url: str, rows: Sequence[Mapping[str, object]]) -> None:
    """Create the default transactions table at ``url`` holding ``rows`` (simulators, tests)."""
    engine = create_engine(url)
    try:
        metadata = MetaData()
        table = default_table(metadata)
        metadata.create_all(engine)
        with engine.begin() as conn:
            if rows:
                conn.execute(table.insert(), list(rows))
    finally:
        engine.dispose()


class WmsSqlSource(Source[Cursor]):
    """Reads the WMS transactions table; one long-lived engine per connector."""

    system_kind = SystemKind.WMS
    numbers_densely = True

    def __init__(self, config: WmsSqlConfig, engine: Engine | None = None) -> None:
        super().__init__(name=config.name, site=config.site_code)
        unknown = sorted(set(config.columns) - set(DEFAULT_COLUMNS))
        if unknown:
            raise ConfigurationError(
                f"connector {config.name}: unknown column keys {unknown}; known: {sorted(DEFAULT_COLUMNS)}"
            )
        self.config = config
        self._columns = config.resolved()  # looked up per field of every row
        self._locations: dict[str, Location] = {}
        self._items: dict[tuple[str, str], Item] = {}
        self._source = EventSource(system_kind=SystemKind.WMS, system_instance=self.name,
                                   site=self.site)  # fmt: skip
        self.engine = engine or create_engine(config.url, pool_pre_ping=True)
        self._table: Table | None = None

    def _reflect(self) -> Table:
        if self._table is None:
            try:
                self._table = Table(
                    self.config.table,
                    MetaData(),
                    schema=self.config.schema,
                    autoload_with=self.engine,
                )
            except NoSuchTableError as exc:
                raise ConfigurationError(
                    f"connector {self.name}: table {self.config.table!r} not found in the WMS database"
                ) from exc
            except SQLAlchemyError as exc:
                raise SourceUnavailableError(
                    f"connector {self.name}: WMS database unreachable: {exc}"
                ) from exc
            missing = [c for c in REQUIRED if self.config.column(c) not in self._table.c]
            if missing:
                self._table = None
                raise ConfigurationError(
                    f"connector {self.name}: table {self.config.table!r} lacks columns "
                    f"{[self.config.column(c) for c in missing]} (map them under 'columns')"
                )
        return self._table

    def read(self, after: Cursor | None, limit: int) -> Sequence[SourceRecord[Cursor]]:
        """Rows strictly after ``after`` in ``(updated_at, id)`` order."""
        table = self._reflect()
        ts, pk = table.c[self.config.column("updated_at")], table.c[self.config.column("id")]
        query = select(table).order_by(ts, pk).limit(limit)
        if after is not None:
            at = after.updated_at
            if after.pk == "":  # a backfill start: everything from that moment on
                query = query.where(ts >= at)
            else:
                key = _typed_pk(pk.type.python_type, after.pk)
                query = query.where(or_(ts > at, and_(ts == at, pk > key)))
        try:
            with self.engine.connect() as conn:
                result = conn.execute(query)
                names = list(result.keys())
                rows = [dict(zip(names, r, strict=True)) for r in result.all()]
        except SQLAlchemyError as exc:
            raise SourceUnavailableError(f"connector {self.name}: WMS query failed: {exc}") from exc
        updated_col, id_col, txn_col = (self._columns[c] for c in ("updated_at", "id", "txn_type"))
        localize = self.config.site.localize
        out = []
        for row in rows:
            updated, key = row[updated_col], str(row[id_col])
            out.append(SourceRecord(
                position=Cursor(updated_at=updated, pk=key), record_kind=str(row[txn_col]),
                record_key=key, payload=row,
                changed_at=localize(updated) if isinstance(updated, datetime) else None,
            ))  # fmt: skip
        return out

    def position_from_json(self, text: str) -> Cursor:
        """The checkpoint cursor."""
        return Cursor.from_json(text)

    def position_at(self, since: datetime) -> Cursor:
        """Start of a backfill: every row from ``since`` (plant-local wall time) on."""
        return Cursor(updated_at=since.replace(tzinfo=None), pk="")

    def to_events(self, record: SourceRecord[Cursor]) -> list[LotEventBase]:
        """Map one transaction row; a row that cannot be mapped raises a DataError."""
        get = _Row(record.payload, self._columns)
        txn = get.text("txn_type").upper()
        updated = record.payload.get(self._columns["updated_at"])
        if not isinstance(updated, datetime):  # a WMS that keeps its timestamps as text
            updated = datetime.fromisoformat(get.text("updated_at"))
        occurred = self.config.site.localize(updated)
        envelope_base: dict[str, Any] = {
            "source": self._source,
            "occurred_at": occurred,
            "recorded_at": occurred,
            "correlation_id": get.optional("document"),
        }  # fmt: skip

        def envelope(event_type: str, kind: str = "txn", key: str = record.record_key) -> Envelope:
            return Envelope(
                event_id=stable_event_id(self.name, kind, key), event_type=event_type,
                sequence=self.take_sequence(), **envelope_base,
            )  # fmt: skip

        code = get.text("item_code")
        item = self._item(code, get.optional("item_description") or code)
        quantity = Quantity(value=get.decimal("quantity"), unit=get.text("uom"))
        lot = get.text("lot")
        here = self._location(get.optional("to_location") or get.optional("from_location"))
        document = DocumentRef(
            doc_type=f"WMS_{txn}", number=get.optional("document") or record.record_key
        )
        events: list[LotEventBase]
        if txn == "RECEIPT":
            partner = get.text("partner")
            events = [LotReceived(
                envelope=envelope("LotReceived"), lot=lot, item=item, quantity=quantity,
                supplier=Party(party_id=partner, name=partner),
                supplier_lot=get.optional("partner_lot") or lot,
                receiving_location=here, ship_from=Location(location_id=partner, name=partner),
                reference_document=document,
            )]  # fmt: skip
        elif txn in _MOVE_KINDS:
            events = [LotMoved(
                envelope=envelope("LotMoved"), kind=_MOVE_KINDS[txn], lot=lot, item=item,
                quantity=quantity, from_location=self._location(get.text("from_location")),
                to_location=self._location(get.text("to_location")),
                license_plate=get.optional("license_plate"), reference_document=document,
            )]  # fmt: skip
        elif txn == "SHIP":
            customer = get.text("partner")
            events = [LotShipped(
                envelope=envelope("LotShipped"), lot=lot, item=item, quantity=quantity,
                customer=Party(party_id=customer, name=customer),
                ship_to=Location(location_id=customer, name=customer),
                ship_from=self._location(get.text("from_location")), reference_document=document,
            )]  # fmt: skip
        elif txn == "TRANSFER_OUT":
            dest = get.text("dest_site")
            events = [TransferShipped(
                envelope=envelope("TransferShipped"), transfer_id=document.number, lot=lot,
                item=item, quantity=quantity, from_location=self._location(get.text("from_location")),
                to_location=Location(location_id=dest, name=f"site {dest}", site=dest),
                reference_document=document,
            )]  # fmt: skip
        elif txn == "TRANSFER_IN":
            origin = get.text("dest_site")
            events = [TransferReceived(
                envelope=envelope("TransferReceived"), transfer_id=document.number,
                shipped_lot=get.text("partner_lot"), shipped_lot_site=origin, lot=lot, item=item,
                quantity=quantity,
                from_location=Location(location_id=origin, name=f"site {origin}", site=origin),
                receiving_location=here, reference_document=document,
            )]  # fmt: skip
        elif txn == "COUNT":
            events = [InventoryAdjusted(
                envelope=envelope("InventoryAdjusted"), kind=AdjustmentKind.ADJUSTMENT, lot=lot,
                item=item, quantity_change=quantity, location=here, reason_code="CYCLE_COUNT",
                actor=self.name,
            )]  # fmt: skip
        else:
            raise EventValidationError(
                f"WMS transaction type {txn!r} is not one this connector maps "
                f"(RECEIPT, PUTAWAY, MOVE, PICK, SHIP, TRANSFER_OUT, TRANSFER_IN, COUNT)"
            )
        plate = get.optional("license_plate")
        if plate:
            events.append(LotAliasLinked(
                envelope=envelope("LotAliasLinked", kind="lp", key=f"{plate}\x1f{lot}"),
                lot=lot, alias_kind="LICENSE_PLATE", alias=plate,
            ))  # fmt: skip
        return events

    def _item(self, code: str, description: str) -> Item:
        # items are master data, a few thousand at most: validate each (frozen) Item once
        item = self._items.get((code, description))
        if item is None:
            if len(self._items) >= _CACHE_LIMIT:
                self._items.clear()
            item = self._items[code, description] = Item(item_code=code, description=description)
        return item

    def _location(self, code: str | None) -> Location:
        code = code or "UNKNOWN"
        # a warehouse has a few hundred bins: build each (frozen) Location once
        location = self._locations.get(code)
        if location is None:
            location = Location(location_id=f"{self.site}-{code}", name=code, site=self.site)
            self._locations[code] = location
        return location

    def close(self) -> None:
        """Dispose of the WMS connection pool."""
        self.engine.dispose()


class _Row:
    """Typed access to a row by logical column, with data errors that name the column."""

    def __init__(self, row: dict[str, Any], columns: dict[str, str]) -> None:
        self.row = row
        self.columns = columns

    def optional(self, logical: str) -> str | None:
        value = self.row.get(self.columns[logical])
        if value is None:
            return None
        text = (value if type(value) is str else str(value)).strip()
        return text or None

    def text(self, logical: str) -> str:
        value = self.optional(logical)
        if value is None:
            raise EventValidationError(f"column {self.columns[logical]!r} is empty")
        return value

    def decimal(self, logical: str) -> Decimal:
        value = self.row.get(self.columns[logical])
        if type(value) is Decimal and value.is_finite():  # as a NUMERIC column gives it
            return value
        text = self.text(logical)
        try:
            return Decimal(text)
        except InvalidOperation as exc:
            raise EventValidationError(
                f"column {self.columns[logical]!r} is not a number: {text!r}"
            ) from exc


def _typed_pk(python_type: type, value: str) -> Any:
    """The cursor's primary key in the column's own type, so 10 sorts after 9."""
    return python_type(value) if python_type in (int, str) else value
