"""What each plant system says, folded from the events the hub holds for it.

The hub keeps every event with the system that sent it (``events.system_kind`` and
``system_instance``), normalized to enterprise lot ids and units. A *view* folds one
system's events into the figures a reconciliation compares: on-hand per lot and
location, consumption per production order and lot, the latest status per lot,
transfers shipped and received. Voided events count for nothing.

Example::

    events = load_events(store, site="ALP", until=now)
    erp = on_hand(events, SystemKind.ERP)
    wms = on_hand(events, SystemKind.WMS)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import or_, select

from genealogy import tables
from genealogy.store import GenealogyStore, utc
from schemas.model import (
    EVENT_TYPE_BY_NAME,
    CustomerReturn,
    InventoryAdjusted,
    LotEventBase,
    LotMoved,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    SystemKind,
    TransferReceived,
    TransferShipped,
    Transformation,
)

#: rows read from the store per round trip
PAGE = 5_000


@dataclass
class Figure:
    """A quantity one system states, with the events behind it."""

    quantity: Decimal = Decimal(0)
    unit: str = ""
    events: list[str] = field(default_factory=list)

    def add(self, quantity: Decimal, unit: str, event_id: str) -> None:
        """Add a signed quantity (units are enterprise units: one per lot)."""
        self.quantity += quantity
        self.unit = self.unit or unit
        self.events.append(event_id)


def load_events(
    store: GenealogyStore,
    *,
    site: str | None,
    until: datetime,
    kinds: Iterable[SystemKind] | None = None,
) -> Iterator[LotEventBase]:
    """The live (not voided) events of ``site`` (or every site) that happened by ``until``.

    Events of other sites that name a lot of ``site`` (a transfer received elsewhere) are
    not included: each site's systems are reconciled with each other.
    """
    ev = tables.events
    query = select(ev.c.event_type, ev.c.payload).where(
        ev.c.voided_by.is_(None), ev.c.occurred_at <= utc(until)
    )
    if site is not None:
        query = query.where(ev.c.site == site)
    if kinds is not None:
        query = query.where(or_(*[ev.c.system_kind == k.value for k in kinds]))
    with store.engine.connect() as conn:
        result = conn.execution_options(yield_per=PAGE).execute(query.order_by(ev.c.occurred_at))
        for event_type, payload in result:
            cls = EVENT_TYPE_BY_NAME.get(event_type)
            if cls is not None:
                yield cls.model_validate_json(payload)


def by_system(events: Iterable[LotEventBase]) -> dict[SystemKind, list[LotEventBase]]:
    """Events grouped by the kind of system that sent them."""
    out: dict[SystemKind, list[LotEventBase]] = defaultdict(list)
    for event in events:
        out[event.envelope.source.system_kind].append(event)
    return out


def on_hand(events: Iterable[LotEventBase]) -> dict[str, dict[str, Figure]]:
    """lot -> location -> what the events say is on hand there (signed sums)."""
    out: dict[str, dict[str, Figure]] = defaultdict(lambda: defaultdict(Figure))

    def add(lot: str, location: str, quantity: Decimal, unit: str, event_id: str) -> None:
        out[lot][location].add(quantity, unit, event_id)

    for ev in events:
        eid = ev.envelope.event_id
        if isinstance(ev, LotReceived | TransferReceived):
            q = ev.quantity
            add(ev.lot, ev.receiving_location.location_id, q.value, q.unit, eid)
        elif isinstance(ev, MaterialProduced):
            add(ev.lot, ev.location.location_id, ev.quantity.value, ev.quantity.unit, eid)
        elif isinstance(ev, MaterialConsumed):
            add(ev.lot, ev.location.location_id, -ev.quantity.value, ev.quantity.unit, eid)
        elif isinstance(ev, Transformation):
            where = ev.location.location_id
            for i in ev.inputs:
                add(i.lot, where, -i.quantity.value, i.quantity.unit, eid)
            for o in ev.outputs:
                add(o.lot, where, o.quantity.value, o.quantity.unit, eid)
        elif isinstance(ev, LotShipped):
            add(ev.lot, ev.ship_from.location_id, -ev.quantity.value, ev.quantity.unit, eid)
        elif isinstance(ev, TransferShipped):
            q = ev.quantity
            add(ev.lot, ev.from_location.location_id, -q.value, q.unit, eid)
        elif isinstance(ev, CustomerReturn):
            q = ev.quantity
            add(ev.lot, ev.receiving_location.location_id, q.value, q.unit, eid)
        elif isinstance(ev, InventoryAdjusted):
            q = ev.quantity_change
            add(ev.lot, ev.location.location_id, q.value, q.unit, eid)
        elif isinstance(ev, LotMoved):
            q = ev.quantity
            add(ev.lot, ev.from_location.location_id, -q.value, q.unit, eid)
            add(ev.lot, ev.to_location.location_id, q.value, q.unit, eid)
    return {lot: dict(places) for lot, places in out.items()}


def lot_total(places: dict[str, Figure]) -> Figure:
    """A lot's on-hand over all its locations."""
    total = Figure()
    for figure in places.values():
        for event_id in figure.events:
            if event_id not in total.events:
                total.events.append(event_id)
        total.quantity += figure.quantity
        total.unit = total.unit or figure.unit
    return total


def consumption(events: Iterable[LotEventBase]) -> dict[tuple[str, str], Figure]:
    """(production order, lot) -> quantity consumed (orders by their document number)."""
    out: dict[tuple[str, str], Figure] = defaultdict(Figure)
    for ev in events:
        if isinstance(ev, MaterialConsumed):
            out[(ev.reference_document.number, ev.lot)].add(
                ev.quantity.value, ev.quantity.unit, ev.envelope.event_id
            )
        elif isinstance(ev, Transformation):
            for i in ev.inputs:
                out[(ev.reference_document.number, i.lot)].add(
                    i.quantity.value, i.quantity.unit, ev.envelope.event_id
                )
    return dict(out)


def orders(events: Iterable[LotEventBase]) -> set[str]:
    """Production orders a system reported anything of (consumption or output)."""
    found: set[str] = set()
    for ev in events:
        if isinstance(ev, MaterialConsumed | MaterialProduced | Transformation):
            found.add(ev.reference_document.number)
    return found


@dataclass(frozen=True)
class Status:
    """The latest status a system gave a lot."""

    status: str
    at: datetime
    event_id: str


def latest_status(events: Iterable[LotEventBase]) -> dict[str, Status]:
    """lot -> the status of its latest status change (by event time, then arrival)."""
    out: dict[str, Status] = {}
    for ev in events:
        if isinstance(ev, LotStatusChanged):
            at = ev.envelope.occurred_at
            known = out.get(ev.lot)
            if known is None or at >= known.at:
                out[ev.lot] = Status(ev.status, at, ev.envelope.event_id)
    return out


@dataclass
class Transfer:
    """One transfer as shipped and, if so, as received."""

    transfer_id: str
    shipped_lot: str | None = None
    shipped: Figure | None = None
    shipped_at: datetime | None = None
    from_site: str | None = None
    received_lot: str | None = None
    received: Figure | None = None
    to_site: str | None = None


def transfers(events: Iterable[LotEventBase]) -> dict[str, Transfer]:
    """transfer id -> what was shipped and received under it (every site's events)."""
    out: dict[str, Transfer] = {}
    for ev in events:
        if isinstance(ev, TransferShipped):
            t = out.setdefault(ev.transfer_id, Transfer(ev.transfer_id))
            t.shipped_lot, t.from_site = ev.lot, ev.envelope.source.site
            t.shipped = t.shipped or Figure()
            t.shipped.add(ev.quantity.value, ev.quantity.unit, ev.envelope.event_id)
            t.shipped_at = min(filter(None, [t.shipped_at, ev.envelope.occurred_at]))
        elif isinstance(ev, TransferReceived):
            t = out.setdefault(ev.transfer_id, Transfer(ev.transfer_id))
            t.received_lot, t.to_site = ev.lot, ev.envelope.source.site
            t.received = t.received or Figure()
            t.received.add(ev.quantity.value, ev.quantity.unit, ev.envelope.event_id)
    return out
