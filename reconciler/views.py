"""What each plant system says, folded from the events the hub holds for it.

The hub keeps every event with the system that sent it (``events.system_kind`` and
``system_instance``), normalized to enterprise lot ids and units. A *view* folds one
system's events into the figures a reconciliation compares: on-hand per lot and
location, consumption per production order and lot, the latest status per lot,
transfers shipped and received. Voided events count for nothing.

Events are read as the JSON the store validated when it took them (:data:`Event`, a
dict), not re-validated into models: a reconciliation reads every event of a site, and
parsing is most of its cost.

Example::

    systems = by_system(load_events(store, site="ALP", until=now))
    erp, wms = on_hand(systems[SystemKind.ERP]), on_hand(systems[SystemKind.WMS])
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select

from genealogy import tables
from genealogy.store import GenealogyStore, utc
from schemas.model import SystemKind

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


#: one stored event: its JSON as a dict (``Event["envelope"]["event_type"]`` names the type)
Event = dict[str, Any]


def event_type(ev: Event) -> str:
    """The event's type name (``LotReceived``...)."""
    return str(ev["envelope"]["event_type"])


def event_id(ev: Event) -> str:
    """The event's id."""
    return str(ev["envelope"]["event_id"])


def occurred(ev: Event) -> datetime:
    """When the event happened (aware)."""
    return datetime.fromisoformat(ev["envelope"]["occurred_at"])


def load_events(
    store: GenealogyStore,
    *,
    site: str | None,
    until: datetime,
    kinds: Iterable[SystemKind] | None = None,
) -> Iterator[Event]:
    """The live (not voided) events of ``site`` (or every site) that happened by ``until``.

    Events of other sites that name a lot of ``site`` (a transfer received elsewhere) are
    not included: each site's systems are reconciled with each other.
    """
    ev = tables.events
    query = select(ev.c.payload).where(ev.c.voided_by.is_(None), ev.c.occurred_at <= utc(until))
    if site is not None:
        query = query.where(ev.c.site == site)
    if kinds is not None:
        query = query.where(or_(*[ev.c.system_kind == k.value for k in kinds]))
    with store.engine.connect() as conn:
        result = conn.execution_options(yield_per=PAGE).execute(query.order_by(ev.c.occurred_at))
        for (payload,) in result:
            yield json.loads(payload)


def by_system(events: Iterable[Event]) -> dict[SystemKind, list[Event]]:
    """Events grouped by the kind of system that sent them."""
    out: dict[SystemKind, list[Event]] = defaultdict(list)
    for ev in events:
        out[SystemKind(ev["envelope"]["source"]["system_kind"])].append(ev)
    return out


def _qty(q: dict[str, Any], sign: int = 1) -> tuple[Decimal, str]:
    value = Decimal(q["value"])
    return (value if sign > 0 else -value), str(q["unit"])


#: events that bring stock into a system's books, and where
INFLOWS = {
    "LotReceived": "receiving_location",
    "TransferReceived": "receiving_location",
    "MaterialProduced": "location",
    "CustomerReturn": "receiving_location",
}
#: events that take stock out, and from where
OUTFLOWS = {
    "MaterialConsumed": "location",
    "LotShipped": "ship_from",
    "TransferShipped": "from_location",
}


def on_hand(events: Iterable[Event]) -> dict[str, dict[str, Figure]]:
    """lot -> location -> what the events say is on hand there (signed sums)."""
    out: dict[str, dict[str, Figure]] = defaultdict(lambda: defaultdict(Figure))
    for ev in events:
        kind, eid = event_type(ev), event_id(ev)
        if kind in INFLOWS:
            out[ev["lot"]][ev[INFLOWS[kind]]["location_id"]].add(*_qty(ev["quantity"]), eid)
        elif kind in OUTFLOWS:
            out[ev["lot"]][ev[OUTFLOWS[kind]]["location_id"]].add(*_qty(ev["quantity"], -1), eid)
        elif kind == "Transformation":
            where = ev["location"]["location_id"]
            for i in ev["inputs"]:
                out[i["lot"]][where].add(*_qty(i["quantity"], -1), eid)
            for o in ev["outputs"]:
                out[o["lot"]][where].add(*_qty(o["quantity"]), eid)
        elif kind == "InventoryAdjusted":
            out[ev["lot"]][ev["location"]["location_id"]].add(*_qty(ev["quantity_change"]), eid)
        elif kind == "LotMoved":
            out[ev["lot"]][ev["from_location"]["location_id"]].add(*_qty(ev["quantity"], -1), eid)
            out[ev["lot"]][ev["to_location"]["location_id"]].add(*_qty(ev["quantity"]), eid)
    return {lot: dict(places) for lot, places in out.items()}


def lot_total(places: dict[str, Figure]) -> Figure:
    """A lot's on-hand over all its locations."""
    total = Figure()
    for figure in places.values():
        for eid in figure.events:
            if eid not in total.events:
                total.events.append(eid)
        total.quantity += figure.quantity
        total.unit = total.unit or figure.unit
    return total


def consumption(events: Iterable[Event]) -> dict[tuple[str, str], Figure]:
    """(production order, lot) -> quantity consumed (orders by their document number)."""
    out: dict[tuple[str, str], Figure] = defaultdict(Figure)
    for ev in events:
        kind = event_type(ev)
        if kind == "MaterialConsumed":
            order = ev["reference_document"]["number"]
            out[(order, ev["lot"])].add(*_qty(ev["quantity"]), event_id(ev))
        elif kind == "Transformation":
            order = ev["reference_document"]["number"]
            for i in ev["inputs"]:
                out[(order, i["lot"])].add(*_qty(i["quantity"]), event_id(ev))
    return dict(out)


def orders(events: Iterable[Event]) -> set[str]:
    """Production orders a system reported anything of (consumption or output)."""
    batch = {"MaterialConsumed", "MaterialProduced", "Transformation"}
    return {ev["reference_document"]["number"] for ev in events if event_type(ev) in batch}


@dataclass(frozen=True)
class Status:
    """The latest status a system gave a lot."""

    status: str
    at: datetime
    event_id: str


def latest_status(events: Iterable[Event]) -> dict[str, Status]:
    """lot -> the status of its latest status change (by event time, then arrival)."""
    out: dict[str, Status] = {}
    for ev in events:
        if event_type(ev) == "LotStatusChanged":
            at = occurred(ev)
            known = out.get(ev["lot"])
            if known is None or at >= known.at:
                out[ev["lot"]] = Status(ev["status"], at, event_id(ev))
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


def transfers(events: Iterable[Event]) -> dict[str, Transfer]:
    """transfer id -> what was shipped and received under it (every site's events)."""
    out: dict[str, Transfer] = {}
    for ev in events:
        kind = event_type(ev)
        if kind == "TransferShipped":
            t = out.setdefault(ev["transfer_id"], Transfer(ev["transfer_id"]))
            t.shipped_lot, t.from_site = ev["lot"], ev["envelope"]["source"]["site"]
            t.shipped = t.shipped or Figure()
            t.shipped.add(*_qty(ev["quantity"]), event_id(ev))
            at = occurred(ev)
            t.shipped_at = at if t.shipped_at is None else min(t.shipped_at, at)
        elif kind == "TransferReceived":
            t = out.setdefault(ev["transfer_id"], Transfer(ev["transfer_id"]))
            t.received_lot, t.to_site = ev["lot"], ev["envelope"]["source"]["site"]
            t.received = t.received or Figure()
            t.received.add(*_qty(ev["quantity"]), event_id(ev))
    return out
