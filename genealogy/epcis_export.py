"""EPCIS 2.0 export: a lot's events (or its whole genealogy's) as a JSON-LD ``EPCISDocument``.

One EPCIS event per stored lot event (voided events and corrections left out: the document
states the store as it now stands), oldest first:

=====================  ========================================================================
lot event              EPCIS event
=====================  ========================================================================
LotReceived            ObjectEvent ADD, ``receiving``, ``in_progress``; source: the supplier
                       (owning party) and its place
TransferReceived       the same, source: the sending site's place; if the receiving site gave
                       the lot a new code, a TransformationEvent ``receiving`` from the lot as
                       shipped (input) to the lot as named here (output)
LotShipped             ObjectEvent OBSERVE, ``shipping``, ``in_transit``; destination: the
                       customer (owning party) and its place
TransferShipped        the same, destination: the place at the receiving site
CustomerReturn         ObjectEvent ADD, ``receiving``, ``returned``; source: the customer
Transformation         TransformationEvent: ``transformationID``, input and output quantities,
                       ``bizStep`` by kind (:data:`schemas.epcis_vocab.TRANSFORMATION_BIZSTEPS`)
MaterialConsumed /     TransformationEvent with inputs only / outputs only, ``transformationID``
MaterialProduced       the batch id (EPCIS joins both sides by it, as the store does)
LotStatusChanged       ObjectEvent OBSERVE (``holding`` for a hold or quarantine) with
                       ``persistentDisposition`` set to the status's disposition
                       (:data:`schemas.epcis_vocab.STATUS_DISPOSITIONS`)
QcSampleTaken          ObjectEvent OBSERVE ``sampling``
QcResultRecorded       ObjectEvent OBSERVE ``inspecting``, ``conformant`` / ``non_conformant``
InventoryAdjusted      scrap and destruction: ObjectEvent OBSERVE ``destroying``, ``destroyed``
                       with the quantity destroyed; a count adjustment: ``cycle_counting``
                       naming the lot only (EPCIS has no quantity change)
LotMoved               ObjectEvent OBSERVE ``storing`` (``picking`` for a pick) at the new place
=====================  ========================================================================

``LotAliasLinked`` has no EPCIS event and is not exported. Quantities are exact decimals with
their UN/CEFACT Rec 20 ``uom`` (none for a count, ``H87``). Every event's ``bizLocation`` (or
``readPoint`` for events without a place: the site as a whole) is a lothub location URN naming
the site where the event was recorded, so a reader knows the site without configuration.

**Identifiers.** A lot whose item code is a GTIN-14 and whose code is a valid GS1 batch/lot
(AI 10) is named by its GS1 Digital Link ``https://id.gs1.org/01/<GTIN>/10/<lot>``; every other
lot, place, party, document and transformation by a lothub URN (:mod:`schemas.epcis_vocab`).
The master data in ``epcisHeader`` names them, and gives each lot its item code, description
and supplier lot. ``connectors.epcis`` reads all of it back: capturing the document gives the
same lots, links, quantities, units, parties and statuses (transfer ids come back as the
transfer's reference document number, which EPCIS carries as its business transaction).

**Access.** ``visible`` says which sites' events the reader may see (events of other sites are
left out); a lot of another site named in a visible event becomes ``urn:lothub:redacted:…``
through ``redact``.

Example::

    doc = epcis_document(store, "26313-01", scope=EpcisScope.TRACE)
    body = dumps(doc)        # exact decimals as JSON numbers
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

from sqlalchemy import func, select

from genealogy import tables
from genealogy.store import GenealogyStore, site_of
from genealogy.trace import Direction, resolve_lot, trace
from schemas.epcis_vocab import (
    ITEM_CODE_ATTRIBUTE,
    STATUS_DISPOSITIONS,
    SUPPLIER_LOT_ATTRIBUTE,
    TRANSFORMATION_BIZSTEPS,
    lot_urn,
    urn,
)
from schemas.errors import DataError
from schemas.model import (
    AdjustmentKind,
    CustomerReturn,
    DocumentRef,
    InventoryAdjusted,
    Location,
    LotEventBase,
    LotMoved,
    LotQuantity,
    LotReceived,
    LotShipped,
    LotStatus,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    MoveKind,
    Party,
    QcResultRecorded,
    QcSampleTaken,
    Quantity,
    TransferReceived,
    TransferShipped,
    Transformation,
    event_from_dict,
)

CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
MEDIA_TYPE: Final = "application/ld+json"
#: Refuse a document of more events than this (ask for a lot instead of a whole genealogy).
MAX_EVENTS: Final = 50_000
#: Event types with an EPCIS counterpart (aliases and corrections have none).
EXPORTED_TYPES: Final = (
    "LotReceived", "TransferReceived", "LotShipped", "TransferShipped", "CustomerReturn",
    "Transformation", "MaterialConsumed", "MaterialProduced", "LotStatusChanged",
    "QcSampleTaken", "QcResultRecorded", "InventoryAdjusted", "LotMoved",
)  # fmt: skip
COUNT_UNIT: Final = "H87"
_CBV_BTT: Final = frozenset(
    {"bol", "cert", "desadv", "inv", "pedigree", "po", "poc", "prodorder", "recadv", "rma"}
)
_GS1_LOT = re.compile(r"^[A-Za-z0-9!\"%&'()*+,\-./:;<=>?_]{1,20}$")
_NAME = "urn:epcglobal:cbv:mda#name"
_DESCRIPTION = "urn:epcglobal:cbv:mda#descriptionShort"
_VTYPE = "urn:epcglobal:epcis:vtype:"


class EpcisScope(StrEnum):
    """Which events: the lot's own, or those of every lot of its backward+forward genealogy."""

    LOT = "lot"
    TRACE = "trace"


class EpcisExportError(DataError):
    """An export too large to build (the message says how to narrow it)."""

    reason_code = "invalid-export"


def epcis_document(
    store: GenealogyStore,
    lot: str,
    *,
    scope: EpcisScope = EpcisScope.LOT,
    visible: Callable[[str], bool] = lambda _site: True,
    redact: Callable[[str], str] = lambda lot_id: lot_id,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The EPCIS 2.0 document of ``lot`` (id or any alias): its events, or its genealogy's.

    Raises :class:`~genealogy.trace.LotNotFoundError` for an unknown lot and
    :class:`EpcisExportError` beyond :data:`MAX_EVENTS` events.
    """
    root = resolve_lot(store, lot)
    lots = [root]
    if scope is EpcisScope.TRACE:
        lots = [x.lot_id for x in trace(store, root, Direction.BOTH).lots]
    events = [e for e in _load(store, lots) if visible(e.envelope.source.site)]
    builder = _Builder(store, visible, redact)
    body = [builder.event(e) for e in events]
    return {
        "@context": [CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(created_at or datetime.now(UTC)),
        "epcisHeader": {"epcisMasterData": {"vocabularyList": builder.master_data()}},
        "epcisBody": {"eventList": body},
    }


def dumps(doc: dict[str, Any]) -> str:
    """The document as JSON text, every :class:`~decimal.Decimal` as an exact JSON number."""
    marked = json.dumps(doc, ensure_ascii=False, default=_mark_decimal)
    return _MARKED.sub(lambda m: m.group(1), marked)


# A Decimal is written as a marked string first, then unquoted (json has no raw numbers).
_MARKED = re.compile(r'"\\u0000dec:(-?[0-9]+(?:\.[0-9]+)?)\\u0000"')


def _mark_decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"\x00dec:{value.normalize():f}\x00"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _load(store: GenealogyStore, lots: list[str]) -> list[LotEventBase]:
    ev, le = tables.events, tables.lot_events
    ids: set[str] = set()
    with store.engine.connect() as conn:
        for start in range(0, len(lots), 500):
            chunk = lots[start : start + 500]
            ids.update(
                r.event_id
                for r in conn.execute(select(le.c.event_id).where(le.c.lot_id.in_(chunk)))
            )
            if len(ids) > MAX_EVENTS:
                raise EpcisExportError(
                    f"the genealogy has more than {MAX_EVENTS} events; export a single lot "
                    "(scope=lot) or a lot nearer the edge of the genealogy"
                )
        rows: list[Any] = []
        ordered = sorted(ids)
        for start in range(0, len(ordered), 500):
            query = select(ev.c.event_type, ev.c.payload, ev.c.occurred_at, ev.c.event_id).where(
                ev.c.event_id.in_(ordered[start : start + 500]),
                ev.c.voided_by.is_(None),
                ev.c.event_type.in_(EXPORTED_TYPES),
            )
            rows.extend(conn.execute(query))
    rows.sort(key=lambda r: (_utc_key(r.occurred_at), r.event_id))
    return [event_from_dict(r.event_type, json.loads(r.payload)) for r in rows]


def _utc_key(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _time(at: datetime) -> str:
    return at.isoformat()


def _offset(at: datetime) -> str:
    offset = at.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _event_id(event_id: str) -> str:
    try:
        return uuid.UUID(event_id).urn
    except ValueError:
        return urn("event", event_id)


def _is_gtin14(code: str | None) -> bool:
    if code is None or len(code) != 14 or not code.isdigit():
        return False
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(code[:13])))
    return str((10 - total % 10) % 10) == code[13]


class _Builder:
    """Turns lot events into EPCIS events, collecting the master data they refer to."""

    def __init__(
        self, store: GenealogyStore, visible: Callable[[str], bool], redact: Callable[[str], str]
    ) -> None:
        self.store = store
        self.visible = visible
        self.redact = redact
        self.lot_uris: dict[str, str] = {}  # lot id -> URI (visible lots only)
        self.locations: dict[str, str] = {}  # URI -> name
        self.parties: dict[str, str] = {}
        self._lot_rows: dict[str, Any] = {}
        self._supplier_lots: dict[str, str] = {}
        self._transfer_sites: dict[str, str] = {}

    # ---- identifiers and master data

    def lot(self, lot_id: str) -> str:
        """The URI of a lot: GS1 Digital Link, lothub URN, or a redaction token."""
        if not self.visible(site_of(lot_id)):
            return urn("redacted", self.redact(lot_id))
        if lot_id not in self.lot_uris:
            item = self._lot_row(lot_id)
            code = lot_id.split(":", 1)[1]
            gtin = item.item_code if item is not None else None
            if _is_gtin14(gtin) and _GS1_LOT.match(code):
                self.lot_uris[lot_id] = f"https://id.gs1.org/01/{gtin}/10/{quote(code, safe='')}"
            else:
                self.lot_uris[lot_id] = lot_urn(lot_id)
        return self.lot_uris[lot_id]

    def _lot_row(self, lot_id: str) -> Any:
        if lot_id not in self._lot_rows:
            lots, docs = tables.lots, tables.documents
            with self.store.engine.connect() as conn:
                self._lot_rows[lot_id] = conn.execute(
                    select(lots.c.item_code, lots.c.item_description).where(lots.c.lot_id == lot_id)
                ).first()
                supplier_lot = conn.execute(
                    select(func.min(docs.c.partner_lot)).where(
                        docs.c.lot_id == lot_id, docs.c.cte == "RECEIVING"
                    )
                ).scalar()
            if supplier_lot:
                self._supplier_lots[lot_id] = supplier_lot
        return self._lot_rows[lot_id]

    def location(self, place: Location, site: str) -> str:
        """A place as a lothub location URN at ``site`` ('' for a partner's place)."""
        uri = urn("loc", site, place.location_id)
        self.locations.setdefault(uri, place.name)
        return uri

    def site(self, site: str) -> str:
        """The site as a whole: where an event without a place happened."""
        uri = urn("loc", site, site)
        self.locations.setdefault(uri, f"site {site}")
        return uri

    def party(self, party: Party) -> str:
        """A supplier or customer as a lothub party URN."""
        uri = urn("party", party.party_id)
        self.parties.setdefault(uri, party.name)
        return uri

    def master_data(self) -> list[dict[str, Any]]:
        """The vocabularies naming every lot, place and party the events refer to."""
        lots = []
        for lot_id, uri in sorted(self.lot_uris.items()):
            row = self._lot_row(lot_id)
            attributes = []
            if row is not None and row.item_description:
                attributes.append({"id": _DESCRIPTION, "attribute": row.item_description})
            if row is not None and row.item_code:
                attributes.append({"id": ITEM_CODE_ATTRIBUTE, "attribute": row.item_code})
            if lot_id in self._supplier_lots:
                attributes.append(
                    {"id": SUPPLIER_LOT_ATTRIBUTE, "attribute": self._supplier_lots[lot_id]}
                )
            lots.append({"id": uri, "attributes": attributes})

        def named(names: dict[str, str]) -> list[dict[str, Any]]:
            return [{"id": uri, "attributes": [{"id": _NAME, "attribute": name}]}
                    for uri, name in sorted(names.items())]  # fmt: skip

        vocabularies = [
            (f"{_VTYPE}EPCClass", lots),
            (f"{_VTYPE}BusinessLocation", named(self.locations)),
            (f"{_VTYPE}Party", named(self.parties)),
        ]
        return [{"type": t, "vocabularyElementList": elements}
                for t, elements in vocabularies if elements]  # fmt: skip

    def transfer_site(self, transfer_id: str, fallback: str | None) -> str:
        """Where a transfer went: the site that received it, else its destination's site."""
        if transfer_id not in self._transfer_sites:
            links = tables.lot_links
            with self.store.engine.connect() as conn:
                child = conn.execute(
                    select(links.c.child_lot).where(
                        links.c.kind == "TRANSFER", links.c.via == transfer_id
                    )
                ).first()
            self._transfer_sites[transfer_id] = site_of(child.child_lot) if child else ""
        return self._transfer_sites[transfer_id] or fallback or ""

    # ---- events

    def quantity(self, lot_id: str, q: Quantity | None) -> dict[str, Any]:
        """A quantity element (none stated: the lot only)."""
        element: dict[str, Any] = {"epcClass": self.lot(lot_id)}
        if q is not None:
            element["quantity"] = q.value
            if q.unit != COUNT_UNIT:
                element["uom"] = q.unit
        return element

    def document(self, doc: DocumentRef) -> list[dict[str, Any]]:
        """The reference document as a business transaction (CBV type when there is one)."""
        entry: dict[str, Any] = {"bizTransaction": urn("doc", doc.doc_type, doc.number)}
        if doc.doc_type.lower() in _CBV_BTT:
            entry["type"] = doc.doc_type.lower()
        return [entry]

    def event(self, e: LotEventBase) -> dict[str, Any]:
        """The EPCIS event of one lot event."""
        env = e.envelope
        site = env.source.site
        out: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventID": _event_id(env.event_id),
            "eventTime": _time(env.occurred_at),
            "eventTimeZoneOffset": _offset(env.occurred_at),
            "recordTime": _time(env.recorded_at),
        }
        out.update(self._body(e, site))
        if "bizLocation" not in out:
            out["readPoint"] = {"id": self.site(site)}
        return out

    def _body(self, e: LotEventBase, site: str) -> dict[str, Any]:
        here: Callable[[Location], dict[str, str]] = lambda p: {"id": self.location(p, site)}  # noqa: E731
        if isinstance(e, LotReceived):
            return {"action": "ADD", "bizStep": "receiving", "disposition": "in_progress",
                    "quantityList": [self.quantity(e.lot, e.quantity)],
                    "bizLocation": here(e.receiving_location),
                    "sourceList": [{"type": "owning_party", "source": self.party(e.supplier)},
                                   {"type": "location", "source": self.location(e.ship_from, "")}],
                    "bizTransactionList": self.document(e.reference_document)}  # fmt: skip
        if isinstance(e, TransferReceived):
            source = [{"type": "location",
                       "source": self.location(e.from_location, e.shipped_lot_site)}]  # fmt: skip
            common = {"bizStep": "receiving", "bizLocation": here(e.receiving_location),
                      "sourceList": source, "bizTransactionList": self.document(e.reference_document)}  # fmt: skip
            if e.lot.split(":", 1)[1] == e.shipped_lot.split(":", 1)[1]:
                return {"action": "ADD", "disposition": "in_progress",
                        "quantityList": [self.quantity(e.lot, e.quantity)], **common}  # fmt: skip
            return {"type": "TransformationEvent",
                    "inputQuantityList": [self.quantity(e.shipped_lot, e.quantity)],
                    "outputQuantityList": [self.quantity(e.lot, e.quantity)], **common}  # fmt: skip
        if isinstance(e, LotShipped | TransferShipped):
            if isinstance(e, LotShipped):
                origin = e.ship_from
                destination = [{"type": "owning_party", "destination": self.party(e.customer)},
                               {"type": "location", "destination": self.location(e.ship_to, "")}]  # fmt: skip
            else:
                origin = e.from_location
                to_site = self.transfer_site(e.transfer_id, e.to_location.site)
                destination = [
                    {"type": "location", "destination": self.location(e.to_location, to_site)}
                ]
            return {"action": "OBSERVE", "bizStep": "shipping", "disposition": "in_transit",
                    "quantityList": [self.quantity(e.lot, e.quantity)], "bizLocation": here(origin),
                    "destinationList": destination,
                    "bizTransactionList": self.document(e.reference_document)}  # fmt: skip
        if isinstance(e, CustomerReturn):
            return {"action": "ADD", "bizStep": "receiving", "disposition": "returned",
                    "quantityList": [self.quantity(e.lot, e.quantity)],
                    "bizLocation": here(e.receiving_location),
                    "sourceList": [{"type": "owning_party", "source": self.party(e.customer)}],
                    "bizTransactionList": self.document(e.reference_document)}  # fmt: skip
        if isinstance(e, Transformation | MaterialConsumed | MaterialProduced):
            return self._transformation(e, here)
        if isinstance(e, LotStatusChanged):
            out: dict[str, Any] = {"action": "OBSERVE", "quantityList": [self.quantity(e.lot, None)],
                                   "persistentDisposition": {"set": [_disposition(e.status)]}}  # fmt: skip
            if e.status in (LotStatus.ON_HOLD, LotStatus.QUARANTINE):
                out["bizStep"] = "holding"
            return out
        if isinstance(e, QcSampleTaken):
            return {"action": "OBSERVE", "bizStep": "sampling",
                    "quantityList": [self.quantity(e.lot, None)], "bizLocation": here(e.location)}  # fmt: skip
        if isinstance(e, QcResultRecorded):
            return {"action": "OBSERVE", "bizStep": "inspecting",
                    "disposition": "conformant" if e.passed else "non_conformant",
                    "quantityList": [self.quantity(e.lot, None)]}  # fmt: skip
        if isinstance(e, InventoryAdjusted):
            if e.kind is AdjustmentKind.ADJUSTMENT:
                return {"action": "OBSERVE", "bizStep": "cycle_counting",
                        "quantityList": [self.quantity(e.lot, None)], "bizLocation": here(e.location)}  # fmt: skip
            destroyed = Quantity(value=-e.quantity_change.value, unit=e.quantity_change.unit)
            return {"action": "OBSERVE", "bizStep": "destroying", "disposition": "destroyed",
                    "quantityList": [self.quantity(e.lot, destroyed)], "bizLocation": here(e.location)}  # fmt: skip
        if isinstance(e, LotMoved):
            step = "picking" if e.kind is MoveKind.PICK else "storing"
            return {"action": "OBSERVE", "bizStep": step,
                    "quantityList": [self.quantity(e.lot, e.quantity)],
                    "bizLocation": here(e.to_location)}  # fmt: skip
        raise TypeError(f"{type(e).__name__} has no EPCIS event")  # EXPORTED_TYPES keeps them out

    def _transformation(
        self,
        e: Transformation | MaterialConsumed | MaterialProduced,
        here: Callable[[Location], dict[str, str]],
    ) -> dict[str, Any]:
        def quantities(sides: Iterable[LotQuantity]) -> list[dict[str, Any]]:
            return [self.quantity(x.lot, x.quantity) for x in sides]

        out: dict[str, Any] = {"type": "TransformationEvent"}
        if isinstance(e, Transformation):
            out["transformationID"] = urn("tf", e.transformation_id)
            out["inputQuantityList"] = quantities(e.inputs)
            out["outputQuantityList"] = quantities(e.outputs)
        else:
            out["transformationID"] = urn("tf", e.batch_id)
            side = "inputQuantityList" if isinstance(e, MaterialConsumed) else "outputQuantityList"
            out[side] = [self.quantity(e.lot, e.quantity)]
        out["bizStep"] = TRANSFORMATION_BIZSTEPS[e.kind]
        out["bizLocation"] = here(e.location)
        out["bizTransactionList"] = self.document(e.reference_document)
        return out


def _disposition(status: str) -> str:
    try:
        return STATUS_DISPOSITIONS[LotStatus(status)]
    except ValueError:
        raise EpcisExportError(f"lot status {status!r} is not an enterprise status") from None
