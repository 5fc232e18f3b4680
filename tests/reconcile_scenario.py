"""A small two-site world whose systems agree, and the one-fault variants of it.

ALP's ERP, WMS and LIMS see lot ``ALP:R1`` (500 kg of milk powder): it is received,
released by the LIMS, and 200 kg are shipped. ``ALP:R2`` (sugar from a silo the WMS does
not manage) is received in the ERP; the MES and the ERP both report 100 kg of it going
into order ``PO-1``, which makes ``ALP:F1``; 50 kg of that are transferred to BRK as
``BRK:G1``.
Every fault makes exactly one pair of views disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from schemas.model import (
    DocumentRef,
    Envelope,
    Item,
    Location,
    LotEventBase,
    LotMoved,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    MoveKind,
    Party,
    Quantity,
    Source,
    SystemKind,
    TransferReceived,
    TransferShipped,
    TransformationKind,
    stable_event_id,
)

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
#: when the reconciliation looks: four days later (past the 72 h transfer SLA)
UNTIL = T0 + timedelta(days=4)
MILK = Item(item_code="MP-100", description="Skimmed milk powder")
BASE = Item(item_code="CD-900", description="Cocoa drink base")
WH = Location(location_id="ALP-WH1", name="Warehouse", site="ALP")
BIN = Location(location_id="ALP-WH1/A-01", name="Bin A-01", site="ALP")
LINE = Location(location_id="ALP-MIX2", name="Mixing hall 2", site="ALP")
DOCK = Location(location_id="BRK-DOCK", name="Brookfield dock", site="BRK")
SUPPLIER = Party(party_id="V-1001", name="Alpine Dairy Co")
CUSTOMER = Party(party_id="C-0420", name="Baeckerei Huber AG")
FAULTS = ("none", "wms-missed-shipment", "erp-issued-less", "erp-status-stale",
          "transfer-not-received", "transfer-received-short")  # fmt: skip


def _env(kind: SystemKind, site: str, event_type: str, key: str, minutes: int) -> Envelope:
    instance = f"{kind.value.lower()}-{site.lower()}"
    at = T0 + timedelta(minutes=minutes)
    return Envelope(
        event_id=stable_event_id(instance, event_type, key), event_type=event_type,
        source=Source(system_kind=kind, system_instance=instance, site=site),
        occurred_at=at, recorded_at=at + timedelta(minutes=1), sequence=minutes,
    )  # fmt: skip


def _kg(value: str) -> Quantity:
    return Quantity(value=Decimal(value), unit="KGM")


def world(fault: str = "none") -> list[LotEventBase]:
    """The events of the world, with ``fault`` (one of :data:`FAULTS`) seeded."""
    assert fault in FAULTS, fault
    erp, wms, mes, lims = SystemKind.ERP, SystemKind.WMS, SystemKind.MES, SystemKind.LIMS
    po = DocumentRef(doc_type="PO", number="PO-45001")
    order = DocumentRef(doc_type="BATCH_RECORD", number="PO-1")
    bol = DocumentRef(doc_type="BOL", number="BOL-1")
    transfer = DocumentRef(doc_type="TRANSFER_ORDER", number="TO-1")
    events: list[LotEventBase] = []
    for kind in (erp, wms):
        events.append(LotReceived(
            envelope=_env(kind, "ALP", "LotReceived", "R1", 0), lot="ALP:R1", item=MILK,
            quantity=_kg("500"), supplier=SUPPLIER, supplier_lot="AD-5531",
            receiving_location=WH, ship_from=WH, reference_document=po,
        ))  # fmt: skip
    events.append(LotReceived(
        envelope=_env(erp, "ALP", "LotReceived", "R2", 5), lot="ALP:R2", item=MILK,
        quantity=_kg("1000"), supplier=SUPPLIER, supplier_lot="SR-118",
        receiving_location=LINE, ship_from=WH, reference_document=po,
    ))  # fmt: skip
    events.append(LotMoved(
        envelope=_env(wms, "ALP", "LotMoved", "R1/putaway", 10), kind=MoveKind.PUTAWAY,
        lot="ALP:R1", item=MILK, quantity=_kg("500"), from_location=WH, to_location=BIN,
    ))  # fmt: skip
    events.append(LotStatusChanged(
        envelope=_env(lims, "ALP", "LotStatusChanged", "R1/F", 60), lot="ALP:R1",
        status="RELEASED", reason_code="QC-PASS", actor="qa",
    ))  # fmt: skip
    for kind, status in ((erp, "ON_HOLD" if fault == "erp-status-stale" else "RELEASED"),
                         (wms, "RELEASED")):  # fmt: skip
        events.append(LotStatusChanged(
            envelope=_env(kind, "ALP", "LotStatusChanged", "R1/F", 65), lot="ALP:R1",
            status=status, reason_code="QC", actor="sync",
        ))  # fmt: skip
    issued = "90" if fault == "erp-issued-less" else "100"
    for kind, value in ((mes, "100"), (erp, issued)):
        events.append(MaterialConsumed(
            envelope=_env(kind, "ALP", "MaterialConsumed", "PO-1/R2", 120), batch_id=f"{kind.value}/PO-1",
            kind=TransformationKind.BLEND, location=LINE, lot="ALP:R2", item=MILK,
            quantity=_kg(value), reference_document=order,
        ))  # fmt: skip
        events.append(MaterialProduced(
            envelope=_env(kind, "ALP", "MaterialProduced", "PO-1/F1", 180), batch_id=f"{kind.value}/PO-1",
            kind=TransformationKind.BLEND, location=LINE, lot="ALP:F1", item=BASE,
            quantity=_kg("100"), reference_document=order,
        ))  # fmt: skip
    if fault != "wms-missed-shipment":
        events.append(LotMoved(
            envelope=_env(wms, "ALP", "LotMoved", "R1/pick", 200), kind=MoveKind.PICK,
            lot="ALP:R1", item=MILK, quantity=_kg("200"), from_location=BIN, to_location=WH,
        ))  # fmt: skip
    for kind in (erp, wms):
        if kind is wms and fault == "wms-missed-shipment":
            continue
        events.append(LotShipped(
            envelope=_env(kind, "ALP", "LotShipped", "BOL-1", 240), lot="ALP:R1", item=MILK,
            quantity=_kg("200"), customer=CUSTOMER, ship_to=DOCK, ship_from=WH,
            reference_document=bol,
        ))  # fmt: skip
    events.append(TransferShipped(
        envelope=_env(erp, "ALP", "TransferShipped", "TO-1", 300), transfer_id="TO-1",
        lot="ALP:F1", item=BASE, quantity=_kg("50"), from_location=LINE, to_location=DOCK,
        reference_document=transfer,
    ))  # fmt: skip
    if fault != "transfer-not-received":
        received = "45" if fault == "transfer-received-short" else "50"
        events.append(TransferReceived(
            envelope=_env(erp, "BRK", "TransferReceived", "TO-1", 1500), transfer_id="TO-1",
            shipped_lot="ALP:F1", shipped_lot_site="ALP", lot="BRK:G1", item=BASE,
            quantity=_kg(received), from_location=LINE, receiving_location=DOCK,
            reference_document=transfer,
        ))  # fmt: skip
    return events
