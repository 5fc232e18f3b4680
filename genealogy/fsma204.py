"""FSMA 204 electronic sortable spreadsheet: one row per KDE record of a CTE.

The Food Traceability Rule (21 CFR 1 subpart S) lets FDA ask for an electronic
sortable spreadsheet within 24 hours. Rows cover the three CTEs a manufacturer
records: Receiving (§1.1345), Transformation (§1.1350) and Shipping (§1.1340). A
transformation with several inputs takes one row per input, sharing the event id,
so the sheet can be sorted and filtered by any lot code.

The traceability lot code (TLC) of a received lot is the one its supplier assigned
(the ``supplier_lot``); a lot made here has its own site lot code as TLC, and this
site is its TLC source. Transfers between the enterprise's sites are shipped and
received like any other, keeping the TLC.

Example::

    rows = fsma204_rows(store, lot="BRK:26313-01")
    csv_text = to_csv(rows)
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from genealogy import tables
from genealogy.store import GenealogyStore
from genealogy.trace import Direction, trace
from schemas.errors import DataError
from schemas.model import (
    Location,
    LotEventBase,
    LotReceived,
    LotShipped,
    MaterialConsumed,
    MaterialProduced,
    TransferReceived,
    TransferShipped,
    Transformation,
    event_from_dict,
)

MAX_RANGE = timedelta(days=366)

COLUMNS = [
    "Traceability Lot Code",
    "Traceability Lot Code Source",
    "Critical Tracking Event",
    "Event ID",
    "Event Date",
    "Product Description",
    "Item Code",
    "Quantity",
    "Unit of Measure",
    "Input Traceability Lot Code",
    "Input Product Description",
    "Input Quantity",
    "Input Unit of Measure",
    "Immediate Previous Source",
    "Receiving Location",
    "Transformation Location",
    "Shipped From Location",
    "Immediate Subsequent Recipient",
    "Reference Document Type",
    "Reference Document Number",
    "Enterprise Lot ID",
    "Site",
    "Source System",
]


class ExportRequestError(DataError):
    """An export request that is empty or unbounded."""

    reason_code = "invalid-export"


def _describe(location: Location | None) -> str:
    """FSMA 'location description': business name, address (when known), and identifier."""
    if location is None:
        return ""
    parts = [location.name, location.address or "", f"({location.location_id})"]
    return " ".join(p for p in parts if p)


class _Tlcs:
    """The traceability lot code of each lot: the supplier's for received lots, else our code."""

    def __init__(self, store: GenealogyStore) -> None:
        self.store = store
        self.cache: dict[str, tuple[str, str]] = {}

    def of(self, lot_id: str) -> tuple[str, str]:
        """``(TLC, TLC source description)`` of an enterprise lot."""
        if lot_id not in self.cache:
            docs = tables.documents
            with self.store.engine.connect() as conn:
                row = conn.execute(
                    select(docs.c.partner_lot, docs.c.location_name, docs.c.location_id).where(
                        docs.c.lot_id == lot_id, docs.c.cte == "RECEIVING"
                    )
                ).first()
            if row is not None and row.partner_lot:
                self.cache[lot_id] = (row.partner_lot, f"{row.location_name} ({row.location_id})")
            else:
                site = lot_id.split(":", 1)[0]
                self.cache[lot_id] = (lot_id.split(":", 1)[1], f"site {site}")
        return self.cache[lot_id]


def _load(store: GenealogyStore, *, lots: set[str] | None, start: datetime | None,
          end: datetime | None) -> list[LotEventBase]:  # fmt: skip
    ev, le = tables.events, tables.lot_events
    types = ["LotReceived", "TransferReceived", "Transformation", "MaterialProduced", "LotShipped",
             "TransferShipped"]  # fmt: skip
    query = select(ev.c.event_type, ev.c.payload).where(
        ev.c.event_type.in_(types), ev.c.voided_by.is_(None)
    )
    if lots is not None:
        query = query.where(
            ev.c.event_id.in_(select(le.c.event_id).where(le.c.lot_id.in_(sorted(lots))))
        )
    if start is not None and end is not None:
        query = query.where(
            ev.c.occurred_at >= start.astimezone(UTC), ev.c.occurred_at <= end.astimezone(UTC)
        )
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(ev.c.occurred_at, ev.c.event_id)).all()
    return [event_from_dict(r.event_type, json.loads(r.payload)) for r in rows]


def _batch_inputs(store: GenealogyStore, batch_id: str) -> list[MaterialConsumed]:
    moves, ev = tables.batch_moves, tables.events
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(ev.c.payload).join(moves, moves.c.event_id == ev.c.event_id)
            .where(moves.c.batch_id == batch_id, moves.c.direction == "IN", ev.c.voided_by.is_(None))
            .order_by(ev.c.event_id)
        ).all()  # fmt: skip
    out = [event_from_dict("MaterialConsumed", json.loads(r.payload)) for r in rows]
    return [e for e in out if isinstance(e, MaterialConsumed)]


def fsma204_rows(store: GenealogyStore, *, lot: str | None = None, start: datetime | None = None,
                 end: datetime | None = None) -> list[dict[str, str]]:  # fmt: skip
    """KDE rows for a lot's whole genealogy, or for every CTE within ``[start, end]``."""
    if (lot is None) == (start is None or end is None):
        raise ExportRequestError("give either lot, or from and to")
    lots: set[str] | None = None
    if lot is not None:
        backward = trace(store, lot, Direction.BACKWARD)
        forward = trace(store, backward.root, Direction.FORWARD)
        lots = {x.lot_id for x in backward.lots} | {x.lot_id for x in forward.lots}
    elif start is not None and end is not None and (end < start or end - start > MAX_RANGE):
        raise ExportRequestError(
            f"the range must run forward and span at most {MAX_RANGE.days} days"
        )
    tlcs = _Tlcs(store)
    rows: list[dict[str, str]] = []
    for event in _load(store, lots=lots, start=start, end=end):
        rows.extend(_rows(store, event, tlcs, lots))
    return rows


def _rows(
    store: GenealogyStore, e: LotEventBase, tlcs: _Tlcs, lots: set[str] | None
) -> Iterable[dict[str, str]]:
    env = e.envelope
    base = {"Event ID": env.event_id, "Event Date": env.occurred_at.isoformat(), "Site": env.source.site,
            "Source System": f"{env.source.system_kind.value}/{env.source.system_instance}"}  # fmt: skip

    def lot_cols(lot_id: str, item: Any, qty: Any) -> dict[str, str]:
        tlc, source = tlcs.of(lot_id)
        return {"Traceability Lot Code": tlc, "Traceability Lot Code Source": source,
                "Enterprise Lot ID": lot_id, "Product Description": item.description,
                "Item Code": item.item_code, "Quantity": str(qty.value.normalize()),
                "Unit of Measure": qty.unit}  # fmt: skip

    def doc(d: Any) -> dict[str, str]:
        return {"Reference Document Type": d.doc_type, "Reference Document Number": d.number}

    if isinstance(e, LotReceived | TransferReceived):
        previous = e.ship_from if isinstance(e, LotReceived) else e.from_location
        yield {**base, "Critical Tracking Event": "Receiving", **lot_cols(e.lot, e.item, e.quantity),
               "Immediate Previous Source": _describe(previous),
               "Receiving Location": _describe(e.receiving_location), **doc(e.reference_document)}  # fmt: skip
    elif isinstance(e, LotShipped | TransferShipped):
        to = e.ship_to if isinstance(e, LotShipped) else e.to_location
        origin = e.ship_from if isinstance(e, LotShipped) else e.from_location
        yield {**base, "Critical Tracking Event": "Shipping", **lot_cols(e.lot, e.item, e.quantity),
               "Shipped From Location": _describe(origin),
               "Immediate Subsequent Recipient": _describe(to), **doc(e.reference_document)}  # fmt: skip
    elif isinstance(e, Transformation):
        for output in e.outputs:
            if lots is not None and output.lot not in lots:
                continue
            for used in e.inputs:
                yield {**base, "Critical Tracking Event": "Transformation",
                       **lot_cols(output.lot, output.item, output.quantity),
                       **_input_cols(tlcs, used.lot, used.item, used.quantity),
                       "Transformation Location": _describe(e.location), **doc(e.reference_document)}  # fmt: skip
    elif isinstance(e, MaterialProduced):
        consumed: list[MaterialConsumed | None] = [*_batch_inputs(store, e.batch_id)] or [None]
        for c in consumed:  # no consumption reported yet: the output row still stands
            inputs = _input_cols(tlcs, c.lot, c.item, c.quantity) if c else {}
            yield {**base, "Critical Tracking Event": "Transformation", **lot_cols(e.lot, e.item, e.quantity),
                   **inputs, "Transformation Location": _describe(e.location),
                   **doc(e.reference_document)}  # fmt: skip


def _input_cols(tlcs: _Tlcs, lot_id: str, item: Any, qty: Any) -> dict[str, str]:
    tlc, _source = tlcs.of(lot_id)
    return {"Input Traceability Lot Code": tlc, "Input Product Description": item.description,
            "Input Quantity": str(qty.value.normalize()), "Input Unit of Measure": qty.unit}  # fmt: skip


def to_csv(rows: list[dict[str, str]]) -> str:
    """The rows as CSV with the full column set (empty cells where a CTE has no such KDE)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_xlsx(rows: list[dict[str, str]]) -> bytes:
    """The rows as an Excel workbook with a sortable, filterable header row."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    assert sheet is not None  # a new workbook always has one sheet
    sheet.title = "FSMA 204"
    sheet.append(COLUMNS)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([row.get(c, "") for c in COLUMNS])
    sheet.auto_filter.ref = sheet.dimensions
    sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
