"""Mock recall: from suspect lots to every affected lot, where it is now, and its mass balance.

A recall starts from lots (by id or any alias), from a supplier (every lot received
from it), or from an item and a date range (every lot of the item received or made
in the range). Everything made from those lots, transitively, is affected. For each
affected lot the packet gives its mass balance from the lot ledger::

    received + produced + returned = consumed + shipped + transferred out + scrapped
                                     (+/- adjustments) + on hand

The book on-hand is what remains; when more left a lot than ever entered it, the
difference is a *residual*: an input event the hub never received, reported as a
data gap, as are the integrity alerts still open (or acknowledged, not resolved) on
an affected lot. Shipments (customer, document, date, quantity) and transfers still in
transit are listed; the packet records how long the answer took and is stored.

Example::

    packet = run_recall(store, RecallRequest(lots=["SR-2026-118"]))
    packet.summary()["affected_lots"]
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select

from genealogy import tables
from genealogy.alerts import unresolved_for_lots
from genealogy.graph import TraceEdge, TraceLot, graph_of
from genealogy.store import GenealogyStore, not_voided, one_of, utc
from genealogy.trace import LotNotFoundError, resolve_lot
from schemas.errors import DataError

#: Refuse requests larger than these (a recall is targeted, not a data dump).
MAX_SEED_LOTS = 1_000
MAX_RANGE = timedelta(days=366)
INFLOW = ("RECEIVED", "PRODUCED", "RETURNED")
OUTFLOW = ("CONSUMED", "SHIPPED", "TRANSFERRED_OUT", "SCRAPPED")


class RecallRequestError(DataError):
    """A recall request that cannot be answered as asked (the message says why)."""

    reason_code = "invalid-recall"


@dataclass(frozen=True, kw_only=True)
class RecallRequest:
    """What to recall: lots, or a supplier, or an item within a date range."""

    lots: list[str] = field(default_factory=list)
    supplier: str | None = None
    item: str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None

    def validate(self) -> None:
        """Raise :class:`RecallRequestError` for an empty, ambiguous or unbounded request."""
        given = [bool(self.lots), self.supplier is not None, self.item is not None]
        if sum(given) != 1:
            raise RecallRequestError(
                "give exactly one of: lots, supplier, or item with date_from/date_to"
            )
        if len(self.lots) > MAX_SEED_LOTS:
            raise RecallRequestError(f"at most {MAX_SEED_LOTS} lots per recall")
        if self.item is not None:
            if self.date_from is None or self.date_to is None:
                raise RecallRequestError("an item recall needs date_from and date_to")
            if self.date_to < self.date_from:
                raise RecallRequestError("date_to is before date_from")
            if self.date_to - self.date_from > MAX_RANGE:
                raise RecallRequestError(f"the date range may span at most {MAX_RANGE.days} days")


@dataclass
class Balance:
    """Mass balance of one lot in one unit."""

    unit: str
    received: Decimal = Decimal(0)
    produced: Decimal = Decimal(0)
    returned: Decimal = Decimal(0)
    consumed: Decimal = Decimal(0)
    shipped: Decimal = Decimal(0)
    transferred_out: Decimal = Decimal(0)
    scrapped: Decimal = Decimal(0)
    adjusted: Decimal = Decimal(0)
    on_hand: Decimal = Decimal(0)
    residual: Decimal = Decimal(0)

    @property
    def inflow(self) -> Decimal:
        """Everything that entered the lot."""
        return self.received + self.produced + self.returned

    @property
    def closes(self) -> bool:
        """True when every unit that entered is accounted for and nothing is unexplained."""
        return self.residual == 0 and self.inflow > 0


@dataclass
class AffectedLot:
    """One lot of the recall with its state and balance."""

    lot_id: str
    site: str
    item_code: str | None
    item_description: str | None
    status: str | None
    seed: bool
    depth: int
    balances: list[Balance]
    last_location: str | None
    #: share of the lot's mass that came from the suspect lots (1 for a suspect lot)
    suspect_share: Decimal | None = None
    #: kilograms of suspect material in the lot (share x kilograms that entered it)
    suspect_kg: Decimal | None = None


@dataclass
class RecallPacket:
    """The answer to a recall, as stored and exported."""

    recall_id: str
    created_at: datetime
    request: dict[str, Any]
    duration_ms: int
    lots: list[AffectedLot]
    shipments: list[dict[str, Any]]
    in_transit: list[dict[str, Any]]
    #: ``{"lot_id": ..., "message": ...}``: what is missing or open, per lot
    gaps: list[dict[str, str]]

    def summary(self) -> dict[str, Any]:
        """Counts a person reads first."""
        return {
            "affected_lots": len(self.lots),
            "seed_lots": sum(1 for lot in self.lots if lot.seed),
            "customers": len({s["customer"] for s in self.shipments}),
            "shipments": len(self.shipments),
            "in_transit": len(self.in_transit),
            "gaps": len(self.gaps),
            "mass_balance_closes": all(b.closes for lot in self.lots for b in lot.balances),
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (decimals as strings, times ISO-8601)."""
        data: dict[str, Any] = _jsonable({
            "recall_id": self.recall_id, "created_at": self.created_at,
            "request": self.request, "duration_ms": self.duration_ms, "summary": self.summary(),
            "lots": [asdict(lot) | {"balances": [_balance_json(b) for b in lot.balances]}
                     for lot in self.lots],
            "shipments": self.shipments, "in_transit": self.in_transit, "gaps": self.gaps,
        })  # fmt: skip
        return data


def _balance_json(b: Balance) -> dict[str, Any]:
    return asdict(b) | {"inflow": b.inflow, "closes": b.closes}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def seed_lots(store: GenealogyStore, request: RecallRequest) -> list[str]:
    """The lots a request starts from; raises if none match."""
    request.validate()
    if request.lots:
        return sorted({resolve_lot(store, lot) for lot in request.lots})
    docs = tables.documents
    with store.engine.connect() as conn:
        if request.supplier is not None:
            query = select(docs.c.lot_id).where(
                docs.c.cte == "RECEIVING",
                or_(docs.c.party_id == request.supplier, docs.c.party_name == request.supplier),
            )
            what = f"supplier {request.supplier!r}"
        else:
            assert request.date_from is not None  # validate() made sure
            assert request.date_to is not None
            lots = tables.lots
            query = (
                select(docs.c.lot_id)
                .join(lots, lots.c.lot_id == docs.c.lot_id)
                .where(
                    lots.c.item_code == request.item,
                    docs.c.cte.in_(["RECEIVING", "TRANSFORMATION"]),
                    docs.c.occurred_at >= request.date_from.astimezone(UTC),
                    docs.c.occurred_at <= request.date_to.astimezone(UTC),
                )
            )
            what = f"item {request.item!r} between {request.date_from:%Y-%m-%d} and {request.date_to:%Y-%m-%d}"
        found = sorted({r.lot_id for r in conn.execute(query)})
    if not found:
        raise LotNotFoundError(f"no lot received or made for {what}")
    if len(found) > MAX_SEED_LOTS:
        raise RecallRequestError(
            f"{what} names {len(found)} lots; narrow it to at most {MAX_SEED_LOTS}"
        )
    return found


def run_recall(
    store: GenealogyStore,
    request: RecallRequest,
    *,
    save: bool = True,
    created_by: str = "local",
    site: str | None = None,
    seeds: list[str] | None = None,
) -> RecallPacket:
    """Answer a mock recall and (by default) store the packet.

    ``seeds`` overrides the lots the request names (a caller that already resolved
    and scoped them); ``created_by`` and ``site`` say who asked.
    """
    began = time.perf_counter()
    seeds = seeds if seeds is not None else seed_lots(store, request)
    depth: dict[str, int] = {}
    reached: dict[str, TraceLot] = {}
    graph = graph_of(store)
    with store.engine.connect() as conn:
        graph.catch_up(conn)
    for seed in seeds:
        # every lot made from a seed, however far and however many: a recall is bounded
        # by its seeds (MAX_SEED_LOTS), not by the trace API's limits
        for lot in graph.walk(seed, backward=False, max_depth=_UNBOUNDED,
                              max_lots=_UNBOUNDED).lots:  # fmt: skip
            depth[lot.lot_id] = min(depth.get(lot.lot_id, lot.depth), lot.depth)
            reached[lot.lot_id] = lot
    affected = sorted(depth)
    balances, locations = _balances(store, affected)
    shipments, in_transit = _facts(store, affected)
    shares = _exposure(graph.incoming(affected), affected, set(seeds))
    for shipment in shipments:
        share = shares.get(shipment["lot_id"])
        shipment["suspect_kg"] = (share * shipment["quantity"]).quantize(_KG) if (
            share is not None and shipment["unit"] == "KGM") else None  # fmt: skip
    gaps: list[dict[str, str]] = []
    lots: list[AffectedLot] = []
    for lot_id in affected:
        info = reached[lot_id]
        lot_balances = balances.get(lot_id, [])
        for b in lot_balances:
            if b.residual > 0:
                gaps.append({"lot_id": lot_id, "message": f"{b.residual} {b.unit} left the lot that never "
                             "entered it (a receipt or production event is missing)"})  # fmt: skip
        if not lot_balances:
            gaps.append(
                {
                    "lot_id": lot_id,
                    "message": "no quantity event at all (only referenced by others)",
                }
            )
        lots.append(AffectedLot(
            lot_id=lot_id, site=info.site, item_code=info.item_code,
            item_description=info.item_description, status=info.status, seed=lot_id in seeds,
            depth=depth[lot_id],
            balances=lot_balances, last_location=locations.get(lot_id),
            suspect_share=shares.get(lot_id), suspect_kg=_suspect_kg(shares.get(lot_id), lot_balances),
        ))  # fmt: skip
    for transfer in in_transit:
        gaps.append({"lot_id": transfer["lot_id"], "message": f"transfer {transfer['transfer_id']} "
                     f"shipped {transfer['shipped_at']:%Y-%m-%d} and not received"})  # fmt: skip
    for alert in unresolved_for_lots(store, affected):
        gaps.append({"lot_id": alert["lot_id"], "message": f"{alert['status']} integrity alert "
                     f"{alert['rule']} ({alert['severity']}): GET /api/v1/alerts/{alert['alert_id']}"})  # fmt: skip
    packet = RecallPacket(
        recall_id=str(uuid.uuid4()), created_at=datetime.now(UTC),
        request=_jsonable(asdict(request)), duration_ms=0, lots=lots, shipments=shipments,
        in_transit=in_transit, gaps=gaps,
    )  # fmt: skip
    packet.duration_ms = int((time.perf_counter() - began) * 1000)
    if save:
        with store.engine.begin() as conn:
            conn.execute(tables.recalls.insert().values(
                recall_id=packet.recall_id, created_at=packet.created_at,
                request=json.dumps(packet.request), packet=json.dumps(packet.to_json()),
                duration_ms=packet.duration_ms, affected_lots=len(lots), created_by=created_by,
                site=site,
            ))  # fmt: skip
    return packet


_KG = Decimal("0.000001")
#: lots per query: one bound parameter each (see one_of), a few round trips per recall
_CHUNK = 20_000
_UNBOUNDED = 1 << 62


def _suspect_kg(share: Decimal | None, balances: list[Balance]) -> Decimal | None:
    kg = next((b for b in balances if b.unit == "KGM"), None)
    return None if share is None or kg is None else (share * kg.inflow).quantize(_KG)


def _exposure(
    incoming: dict[str, list[TraceEdge]], affected: list[str], seeds: set[str]
) -> dict[str, Decimal]:
    """Quantity-weighted exposure: the share of each affected lot that is suspect material.

    A made lot is taken to have the composition of what went into it: its share is
    the suspect kilograms used over all kilograms used by the transformation (or batch)
    that made it. A transfer passes the share on. Lots reached only through inputs in
    other units than kilograms get no share (it cannot be weighed). ``incoming`` holds
    every live link into each affected lot, from affected parents or not: a
    transformation links each of its inputs to each of its outputs, so these are all the
    inputs.
    """
    share: dict[str, Decimal] = {s: Decimal(1) for s in seeds}
    pending = {lot for lot in affected if lot not in share}
    # in dependency order (Kahn): a lot waits for its affected parents still pending, so a
    # rework loop, and what is made from it, is left without share
    waiting: dict[str, int] = {}
    children: dict[str, list[str]] = defaultdict(list)
    for lot in pending:
        parents = {e.parent_lot for e in incoming.get(lot, [])} & pending
        waiting[lot] = len(parents)
        for parent in parents:
            children[parent].append(lot)
    ready = [lot for lot, count in waiting.items() if count == 0]
    while ready:
        lot = ready.pop()
        for child in children.get(lot, []):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
        suspect = total = Decimal(0)
        weighable = True
        for e in incoming.get(lot, []):
            if e.unit_used != "KGM":
                weighable = False
            total += e.quantity_used
            suspect += share.get(e.parent_lot, Decimal(0)) * e.quantity_used
        if weighable and total > 0:
            share[lot] = suspect / total
    return {lot: value.quantize(_KG) for lot, value in share.items()}


def _balances(
    store: GenealogyStore, lots: list[str]
) -> tuple[dict[str, list[Balance]], dict[str, str]]:
    ledger = tables.lot_ledger
    sums: dict[tuple[str, str], Balance] = {}
    latest: dict[str, tuple[datetime, str]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(lots), _CHUNK):
            chunk = lots[start : start + _CHUNK]
            rows = conn.execute(
                select(ledger).where(
                    one_of(conn, ledger.c.lot_id, chunk), not_voided(ledger.c.event_id)
                )
            )
            for r in rows:
                b = sums.setdefault((r.lot_id, r.unit), Balance(unit=r.unit))
                field_name = r.category.lower()
                setattr(b, field_name, getattr(b, field_name) + abs(r.quantity)
                        if r.category != "ADJUSTED" else b.adjusted + r.quantity)  # fmt: skip
                at = utc(r.occurred_at)
                if r.location_id and (r.lot_id not in latest or latest[r.lot_id][0] <= at):
                    latest[r.lot_id] = (at, r.location_id)
    out: dict[str, list[Balance]] = defaultdict(list)
    for (lot_id, _unit), b in sorted(sums.items()):
        remaining = (
            b.inflow - (b.consumed + b.shipped + b.transferred_out + b.scrapped) + b.adjusted
        )
        b.on_hand, b.residual = (
            (remaining, Decimal(0)) if remaining >= 0 else (Decimal(0), -remaining)
        )
        out[lot_id].append(b)
    return dict(out), {lot: loc for lot, (_, loc) in latest.items()}


def _facts(
    store: GenealogyStore, lots: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    docs, ledger, links = tables.documents, tables.lot_ledger, tables.lot_links
    shipments: list[dict[str, Any]] = []
    in_transit: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        for start in range(0, len(lots), _CHUNK):
            chunk = lots[start : start + _CHUNK]
            shipped = select(docs).where(one_of(conn, docs.c.lot_id, chunk), docs.c.cte == "SHIPPING",
                                         not_voided(docs.c.event_id))  # fmt: skip
            for r in conn.execute(shipped):
                shipments.append({"lot_id": r.lot_id, "customer": r.party_name,
                                  "customer_id": r.party_id, "ship_to": r.location_name,
                                  "document": f"{r.doc_type} {r.doc_number}", "site": r.site,
                                  "shipped_at": utc(r.occurred_at), "quantity": r.quantity,
                                  "unit": r.unit})  # fmt: skip
            received = select(links.c.via).where(links.c.kind == "TRANSFER")
            pending = select(ledger).where(
                one_of(conn, ledger.c.lot_id, chunk), ledger.c.category == "TRANSFERRED_OUT",
                ledger.c.ref.not_in(received), not_voided(ledger.c.event_id),
            )  # fmt: skip
            for r in conn.execute(pending):
                in_transit.append({"lot_id": r.lot_id, "transfer_id": r.ref, "to": r.location_id,
                                   "shipped_at": utc(r.occurred_at), "quantity": abs(r.quantity),
                                   "unit": r.unit})  # fmt: skip
    shipments.sort(key=lambda s: (s["shipped_at"], s["lot_id"]))
    return shipments, in_transit


def load_recall(store: GenealogyStore, recall_id: str) -> tuple[dict[str, Any], str | None] | None:
    """A stored packet as JSON with the site of who asked for it, or None."""
    r = tables.recalls
    with store.engine.connect() as conn:
        row = conn.execute(select(r.c.packet, r.c.site).where(r.c.recall_id == recall_id)).first()
    return None if row is None else (dict(json.loads(row.packet)), row.site)


def recall_requester(store: GenealogyStore, recall_id: str) -> str | None:
    """Who asked for a stored recall (None if there is no such recall)."""
    r = tables.recalls
    with store.engine.connect() as conn:
        found = conn.execute(select(r.c.created_by).where(r.c.recall_id == recall_id)).scalar()
    return None if found is None else str(found)


def list_recalls(
    store: GenealogyStore, *, limit: int, offset: int, site: str | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Stored recalls, newest first: total count and one page of summaries.

    With ``site``, only the recalls users of that site asked for.
    """
    r = tables.recalls
    where = [r.c.site == site] if site is not None else []
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(r).where(*where)).scalar_one())
        rows = conn.execute(
            select(r.c.recall_id, r.c.created_at, r.c.request, r.c.duration_ms, r.c.affected_lots,
                   r.c.created_by)
            .where(*where).order_by(r.c.created_at.desc()).limit(limit).offset(offset)
        ).all()  # fmt: skip
    return total, [
        {"recall_id": x.recall_id, "created_at": utc(x.created_at).isoformat(),
         "request": json.loads(x.request), "duration_ms": x.duration_ms,
         "affected_lots": x.affected_lots, "created_by": x.created_by}
        for x in rows
    ]  # fmt: skip
