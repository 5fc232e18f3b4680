"""The enterprise lot model refuses what a plant system must never be allowed to say."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas.errors import EventValidationError
from schemas.model import (
    EVENT_ID_NAMESPACE,
    EVENT_TYPES,
    AdjustmentKind,
    CorrectionAction,
    EventCorrected,
    InventoryAdjusted,
    LotReceived,
    Quantity,
    Transformation,
    check_enterprise,
    event_from_dict,
    stable_event_id,
)
from tests.factories import ITEM, LOC, envelope, lq, one_of_each, qty


def test_factory_covers_every_event_type() -> None:
    assert {type(e) for e in one_of_each()} == set(EVENT_TYPES)


def test_naive_occurred_at_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        envelope("LotReceived", occurred_at=datetime(2026, 11, 2, 8, 0))


def test_occurred_at_keeps_its_offset() -> None:
    env = envelope(
        "LotReceived", occurred_at=datetime(2026, 7, 1, 8, 0, tzinfo=timezone(timedelta(hours=-5)))
    )
    assert env.occurred_at.utcoffset() == timedelta(hours=-5)


def test_event_type_must_match_class() -> None:
    received = one_of_each()[0]
    assert isinstance(received, LotReceived)
    with pytest.raises(ValidationError, match="event_type"):
        LotReceived.model_validate({**received.model_dump(), "envelope": envelope("LotShipped")})


def test_stable_event_id_is_deterministic_per_record() -> None:
    a = stable_event_id("erp-alp", "LotReceived", "PO-1/L1")
    assert a == stable_event_id("erp-alp", "LotReceived", "PO-1/L1")
    assert a != stable_event_id("erp-alp", "LotReceived", "PO-1/L2")
    assert a != stable_event_id("erp-brk", "LotReceived", "PO-1/L1")


@pytest.mark.parametrize(
    "record",
    [("erp-alp", "LotReceived", "PO-1/L1"), ("wms-brk", "lp", "LP-7\x1f26313-01"),
     ("lims-alp", "QcResultRecorded", "Probe-ä\x1fMOIST"), ("", "", ""), ("x" * 300, "k", "🧀")],
)  # fmt: skip
def test_stable_event_id_is_the_rfc_4122_uuid5_of_the_record(record: tuple[str, str, str]) -> None:
    """Stored events carry these ids: the fast spelling must give uuid.uuid5's, always."""
    system, kind, key = record
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{system}\x1f{kind}\x1f{key}")
    assert stable_event_id(system, kind, key) == str(expected)


def test_quantity_is_carried_to_six_places() -> None:
    """Conversions yield long decimals; quantities are rounded to micro-units (half-even)."""
    assert Quantity(value=Decimal("1.1"), unit="KGM").value == Decimal("1.100000")
    assert Quantity(value=Decimal("999.99881074944"), unit="KGM").value == Decimal("999.998811")
    with pytest.raises(ValidationError, match="digits"):
        Quantity(value=Decimal("1e15"), unit="KGM")


def test_transformation_needs_inputs_and_outputs() -> None:
    with pytest.raises(ValidationError, match="inputs"):
        Transformation(
            envelope=envelope("Transformation"),
            kind="BLEND",
            transformation_id="B",
            location=LOC,
            inputs=[],
            outputs=[lq("A:1", 1)],
            reference_document={"doc_type": "WO", "number": "1"},
        )


def test_partial_consumption_is_representable() -> None:
    blend = Transformation(
        envelope=envelope("Transformation"),
        kind="BLEND",
        transformation_id="B",
        location=LOC,
        inputs=[lq("ALP:1", "800"), lq("ALP:2", "0.5")],
        outputs=[lq("ALP:3", "800.5")],
        reference_document={"doc_type": "WO", "number": "1"},
    )
    assert [i.quantity.value for i in blend.inputs] == [Decimal("800"), Decimal("0.5")]
    assert blend.lots() == ["ALP:3", "ALP:1", "ALP:2"]


def test_scrap_must_decrease_stock() -> None:
    with pytest.raises(ValidationError, match="negative"):
        InventoryAdjusted(
            envelope=envelope("InventoryAdjusted"),
            kind=AdjustmentKind.SCRAP,
            lot="ALP:1",
            item=ITEM,
            quantity_change=qty(5),
            location=LOC,
            reason_code="SPILL",
            actor="x",
        )


def test_supersede_requires_a_replacement() -> None:
    with pytest.raises(ValidationError, match="replacement_event_id"):
        EventCorrected(
            envelope=envelope("EventCorrected"),
            action=CorrectionAction.SUPERSEDE,
            corrected_event_ids=["a"],
            reason="typo",
            actor="qa",
        )


def test_unknown_event_type_is_a_validation_error() -> None:
    with pytest.raises(EventValidationError, match="unknown event type"):
        event_from_dict("LotTeleported", {})


def test_check_enterprise_accepts_normalized_events() -> None:
    for event in one_of_each():
        check_enterprise(event)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lot": "L1"}, "enterprise lot id"),
        ({"quantity": Quantity(value=Decimal(1), unit="kg")}, "Rec 20"),
    ],
)
def test_check_enterprise_refuses_site_codes(change: dict[str, object], message: str) -> None:
    received = one_of_each()[0]
    with pytest.raises(EventValidationError, match=message):
        check_enterprise(received.model_copy(update=change))
