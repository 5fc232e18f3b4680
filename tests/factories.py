"""Factories for valid lot events; tests override only the fields they care about."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from schemas.model import (
    AdjustmentKind,
    CorrectionAction,
    CustomerReturn,
    DocumentRef,
    Envelope,
    EventCorrected,
    InventoryAdjusted,
    Item,
    Location,
    LotAliasLinked,
    LotEventBase,
    LotMoved,
    LotQuantity,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    MoveKind,
    Party,
    QcResultRecorded,
    QcSampleTaken,
    Quantity,
    Source,
    SystemKind,
    TransferReceived,
    TransferShipped,
    Transformation,
    TransformationKind,
    stable_event_id,
)

_seq = itertools.count(1)
CET = timezone(timedelta(hours=1))
ITEM = Item(item_code="MP-100", description="Skimmed milk powder")
LOC = Location(location_id="ALP-WH1", name="Alpenwerk warehouse 1", site="ALP")
PARTY = Party(party_id="SUP-1", name="Alpine Dairy Co")
DOC = DocumentRef(doc_type="PO", number="PO-4711")


def envelope(event_type: str, *, site: str = "ALP", key: str | None = None, **kw: Any) -> Envelope:
    n = next(_seq)
    data: dict[str, Any] = {
        "event_id": stable_event_id(f"erp-{site.lower()}", event_type, key or str(n)),
        "event_type": event_type,
        "source": Source(
            system_kind=SystemKind.ERP, system_instance=f"erp-{site.lower()}", site=site
        ),
        "occurred_at": datetime(2026, 11, 2, 8, 0, tzinfo=CET) + timedelta(minutes=n),
        "recorded_at": datetime(2026, 11, 2, 7, 5, tzinfo=UTC) + timedelta(minutes=n),
        "sequence": n,
    }
    data.update(kw)
    return Envelope(**data)


def qty(value: str | int, unit: str = "KGM") -> Quantity:
    return Quantity(value=Decimal(str(value)), unit=unit)


def lq(lot: str, value: str | int, unit: str = "KGM") -> LotQuantity:
    return LotQuantity(lot=lot, item=ITEM, quantity=qty(value, unit))


def one_of_each(lot: str = "ALP:L1") -> list[LotEventBase]:
    """A valid instance of every event type, enterprise-normalized."""
    common = {"item": ITEM}
    return [
        LotReceived(
            envelope=envelope("LotReceived"),
            lot=lot,
            quantity=qty(1000),
            supplier=PARTY,
            supplier_lot="S-1",
            receiving_location=LOC,
            ship_from=LOC,
            tlc_source=LOC,
            reference_document=DOC,
            **common,
        ),
        Transformation(
            envelope=envelope("Transformation"),
            kind=TransformationKind.BLEND,
            transformation_id="B-1",
            location=LOC,
            inputs=[lq(lot, "800.5")],
            outputs=[lq("ALP:L2", 800)],
            reference_document=DOC,
        ),
        MaterialConsumed(
            envelope=envelope("MaterialConsumed"),
            batch_id="B-2",
            kind=TransformationKind.PRODUCTION,
            location=LOC,
            lot=lot,
            quantity=qty(100),
            reference_document=DOC,
            **common,
        ),
        MaterialProduced(
            envelope=envelope("MaterialProduced"),
            batch_id="B-2",
            kind=TransformationKind.PRODUCTION,
            location=LOC,
            lot="ALP:L3",
            quantity=qty(100),
            reference_document=DOC,
            **common,
        ),
        QcSampleTaken(envelope=envelope("QcSampleTaken"), sample_id="S-9", lot=lot, location=LOC),
        QcResultRecorded(
            envelope=envelope("QcResultRecorded"),
            sample_id="S-9",
            lot=lot,
            test_code="MOIST",
            result="3.1",
            numeric_result=Decimal("3.1"),
            result_unit="%",
            spec_min=None,
            spec_max=Decimal("4"),
            passed=True,
        ),
        LotStatusChanged(
            envelope=envelope("LotStatusChanged"),
            lot=lot,
            status="RELEASED",
            reason_code="QC-PASS",
            actor="qa.mueller",
        ),
        TransferShipped(
            envelope=envelope("TransferShipped"),
            transfer_id="T-1",
            lot=lot,
            quantity=qty(50),
            from_location=LOC,
            to_location=LOC,
            reference_document=DOC,
            **common,
        ),
        TransferReceived(
            envelope=envelope("TransferReceived", site="BRK"),
            transfer_id="T-1",
            shipped_lot=lot,
            shipped_lot_site="ALP",
            lot="BRK:26308-01",
            quantity=qty(50),
            from_location=LOC,
            receiving_location=LOC,
            reference_document=DOC,
            **common,
        ),
        LotShipped(
            envelope=envelope("LotShipped"),
            lot=lot,
            quantity=qty(10),
            customer=PARTY,
            ship_to=LOC,
            ship_from=LOC,
            reference_document=DOC,
            **common,
        ),
        CustomerReturn(
            envelope=envelope("CustomerReturn"),
            lot=lot,
            quantity=qty(1),
            customer=PARTY,
            receiving_location=LOC,
            reason_code="DAMAGED",
            reference_document=DOC,
            **common,
        ),
        InventoryAdjusted(
            envelope=envelope("InventoryAdjusted"),
            kind=AdjustmentKind.SCRAP,
            lot=lot,
            quantity_change=qty(-2),
            location=LOC,
            reason_code="SPILL",
            actor="op.huber",
            **common,
        ),
        LotMoved(
            envelope=envelope("LotMoved"),
            kind=MoveKind.PUTAWAY,
            lot=lot,
            quantity=qty(1000),
            from_location=LOC,
            to_location=LOC,
            license_plate="LP-000123",
            **common,
        ),
        LotAliasLinked(
            envelope=envelope("LotAliasLinked"),
            lot=lot,
            alias_kind="LICENSE_PLATE",
            alias="LP-000123",
        ),
        EventCorrected(
            envelope=envelope("EventCorrected"),
            action=CorrectionAction.VOID,
            corrected_event_ids=["x"],
            reason="keyed twice",
            actor="qa.mueller",
        ),
    ]
