"""What each plant system says, folded from the events the hub holds for it.

The hub keeps every event with the system that sent it (``events.system_kind`` and
``system_instance``), normalized to enterprise lot ids and units. A *view* folds one
system's events into the figures a reconciliation compares: on-hand per lot and
location, consumption per production order and lot, the latest status per lot,
transfers shipped and received. Voided events count for nothing.

The views read what the store derived when it took the events (its signed lot ledger, its
status history) joined to the system that sent each event, and the stored JSON
(:data:`Event`, a dict, not re-validated into a model) only of the few event types a
view needs whole: a reconciliation reads every event of a site, and parsing would be most
of its cost.

Example::

    on_hand = books(store, site="ALP", until=now)
    on_hand[SystemKind.ERP].lots["ALP:ALP-20261102-001"].quantity   # Decimal('200')
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select

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


def _live(until: datetime, site: str | None) -> list[Any]:
    ev = tables.events
    where = [ev.c.voided_by.is_(None), ev.c.occurred_at <= utc(until)]
    if site is not None:
        where.append(ev.c.site == site)
    return where


def ledger_query(site: str | None, until: datetime) -> Select[Any]:
    """Signed lot quantities per event, with the system that sent the event."""
    ev, ledger = tables.events, tables.lot_ledger
    return (
        select(ev.c.system_kind, ledger.c.lot_id, ledger.c.category, ledger.c.quantity,
               ledger.c.unit, ledger.c.event_id)
        .join(ev, ev.c.event_id == ledger.c.event_id)
        .where(*_live(until, site))
    )  # fmt: skip


def status_query(site: str | None, until: datetime) -> Select[Any]:
    """Status changes, with the system that sent them."""
    ev, history = tables.events, tables.status_history
    return (
        select(ev.c.system_kind, history.c.lot_id, history.c.status, history.c.occurred_at,
               history.c.event_id)
        .join(ev, ev.c.event_id == history.c.event_id)
        .where(*_live(until, site))
    )  # fmt: skip


def payload_query(site: str | None, until: datetime, types: Iterable[str]) -> Select[Any]:
    """The stored JSON of the events of ``types``, with the system that sent them."""
    ev = tables.events
    return (
        select(ev.c.system_kind, ev.c.payload)
        .where(*_live(until, site), ev.c.event_type.in_(sorted(types)))
        .order_by(ev.c.occurred_at)
    )


def _rows(store: GenealogyStore, query: Select[Any]) -> Iterator[Any]:
    with store.engine.connect() as conn:
        yield from conn.execution_options(yield_per=PAGE).execute(query)


def load_events(
    store: GenealogyStore, *, site: str | None, until: datetime, types: Iterable[str]
) -> dict[SystemKind, list[Event]]:
    """The live events of ``types`` of ``site`` (or every site) by ``until``, by system kind."""
    out: dict[SystemKind, list[Event]] = defaultdict(list)
    for kind, payload in _rows(store, payload_query(site, until, types)):
        out[SystemKind(kind)].append(json.loads(payload))
    return out


#: ledger categories that bring stock into a system's books
INFLOW_CATEGORIES = frozenset({"RECEIVED", "PRODUCED", "RETURNED"})


@dataclass
class Books:
    """One system's book on-hand per lot, and the lots it took in itself."""

    lots: dict[str, Figure] = field(default_factory=lambda: defaultdict(Figure))
    taken_in: set[str] = field(default_factory=set)


def books(store: GenealogyStore, *, site: str, until: datetime) -> dict[SystemKind, Books]:
    """Each system's book on-hand per lot at ``site`` (the store's signed ledger)."""
    out: dict[SystemKind, Books] = defaultdict(Books)
    for kind, lot, category, quantity, unit, eid in _rows(store, ledger_query(site, until)):
        book = out[SystemKind(kind)]
        book.lots[lot].add(quantity, unit, eid)
        if category in INFLOW_CATEGORIES:
            book.taken_in.add(lot)
    return out


def _qty(q: dict[str, Any], sign: int = 1) -> tuple[Decimal, str]:
    value = Decimal(q["value"])
    return (value if sign > 0 else -value), str(q["unit"])


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


def latest_statuses(
    store: GenealogyStore, *, site: str, until: datetime
) -> dict[SystemKind, dict[str, Status]]:
    """Per system kind: lot -> its latest status (by event time; ties: the later row)."""
    out: dict[SystemKind, dict[str, Status]] = defaultdict(dict)
    for kind, lot, status, at, eid in _rows(store, status_query(site, until)):
        when = utc(at)
        statuses = out[SystemKind(kind)]
        known = statuses.get(lot)
        if known is None or when >= known.at:
            statuses[lot] = Status(status, when, eid)
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
