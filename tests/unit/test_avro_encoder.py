"""The compiled Avro encoders write fastavro's bytes, and leave to fastavro what they do not take."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import fastavro
import pytest
from pydantic import BaseModel, ConfigDict, field_serializer

from schemas.avro_encoder import UnencodableError, UnsupportedSchemaError, compile_encoder
from schemas.errors import EventValidationError
from schemas.model import (
    EVENT_TYPES,
    Location,
    LotAliasLinked,
    LotEventBase,
    LotMoved,
    LotStatus,
    LotStatusChanged,
    MaterialProduced,
    OutputRole,
    QcResultRecorded,
    Quantity,
    Transformation,
    event_to_avro,
)
from schemas.serde import SchemaCatalog, SingleObjectSerde
from tests.factories import DOC, LOC, envelope, lq, one_of_each

CATALOG = SchemaCatalog.load()
EVENTS = one_of_each()


def reference(event: LotEventBase) -> bytes:
    """What fastavro's strict writer makes of the event, the way the serde always did."""
    out = io.BytesIO()
    schema = CATALOG.schema_for(type(event).__name__).compiled
    fastavro.schemaless_writer(out, schema, event_to_avro(event), strict=True)
    return out.getvalue()


def compiled(event: LotEventBase) -> bytes:
    encoder = CATALOG.schema_for(type(event).__name__).encoder
    assert encoder is not None
    return encoder(event)


def moved(**change: Any) -> LotMoved:
    """The factory's LotMoved with fields replaced, unvalidated (as a stream worker's copy)."""
    event = next(e for e in EVENTS if isinstance(e, LotMoved))
    return event.model_copy(update=change)


def test_every_event_type_has_a_compiled_encoder() -> None:
    assert {n for n, s in CATALOG.by_name.items() if s.encoder is not None} == {
        t.__name__ for t in EVENT_TYPES
    }


@pytest.mark.parametrize("event", EVENTS, ids=[type(e).__name__ for e in EVENTS])
def test_every_event_type_encodes_to_fastavros_bytes(event: LotEventBase) -> None:
    assert compiled(event) == reference(event)


DECIMALS = ["0", "-0", "0.000001", "-0.000001", "1", "-1", "127E-6", "128E-6", "-128E-6",
            "-129E-6", "255E-6", "256E-6", "32767.5", "-32768", "999999999999.999999",
            "-999999999999.999999", "1E+3", "12.5", "8388608", "-8388609"]  # fmt: skip


@pytest.mark.parametrize("text", DECIMALS)
def test_decimals_of_every_sign_size_and_exponent(text: str) -> None:
    quantity = Quantity.model_construct(value=Decimal(text), unit="KGM")
    event = moved(quantity=quantity)
    assert compiled(event) == reference(event)


@pytest.mark.parametrize(
    "at",
    [
        datetime(1960, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=14))),
        datetime(2026, 11, 2, 8, 0, 0, 1, tzinfo=timezone(timedelta(hours=-12))),
        datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Zurich")),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ],
    ids=str,
)
def test_timestamps_and_offsets(at: datetime) -> None:
    event = moved(envelope=envelope("LotMoved", occurred_at=at, recorded_at=at))
    assert compiled(event) == reference(event)


@pytest.mark.parametrize("sequence", [0, 63, 64, 8191, 8192, 2**31, 2**63 - 1])
def test_long_varints(sequence: int) -> None:
    event = moved(envelope=envelope("LotMoved", sequence=sequence))
    assert compiled(event) == reference(event)


def test_text_nulls_arrays_and_enum_members_in_text_fields() -> None:
    long_text = "Käse 🧀 " * 1500  # a length past the 2-byte varints
    events: list[LotEventBase] = [
        moved(lot=long_text, license_plate=None, reference_document=None),
        moved(lot="", license_plate=""),
        Transformation(
            envelope=envelope("Transformation"), kind="SPLIT", transformation_id="S-1",
            location=LOC, inputs=[lq("ALP:L1", 9)],
            outputs=[lq(f"ALP:L{i}", i) for i in range(2, 200)], reference_document=DOC,
        ),
        next(e for e in EVENTS if isinstance(e, LotStatusChanged)).model_copy(
            update={"status": LotStatus.ON_HOLD}
        ),
        next(e for e in EVENTS if isinstance(e, QcResultRecorded)).model_copy(
            update={"numeric_result": None, "result_unit": None, "spec_min": Decimal("-0.5")}
        ),
        next(e for e in EVENTS if isinstance(e, MaterialProduced)).model_copy(
            update={"role": OutputRole.BY_PRODUCT}
        ),
        next(e for e in EVENTS if isinstance(e, LotAliasLinked)).model_copy(
            update={"quantity": Quantity(value=Decimal("12.5"), unit="KGM")}
        ),
    ]  # fmt: skip
    for event in events:
        assert compiled(event) == reference(event)


def test_random_values_match_fastavro() -> None:
    rng = random.Random(20261102)
    for _ in range(500):
        digits = rng.randint(1, 18)
        exponent = rng.randint(-6, 18 - digits) if digits < 18 else -6
        value = Decimal(rng.randint(-(10**digits) + 1, 10**digits - 1)).scaleb(exponent)
        offset = timezone(timedelta(minutes=rng.randint(-12 * 60, 14 * 60)))
        at = datetime(1900, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randint(0, 2**57))
        event = moved(
            quantity=Quantity.model_construct(value=value, unit="KGM"),
            envelope=envelope("LotMoved", occurred_at=at.astimezone(offset),
                              sequence=rng.randint(0, 2**63 - 1)),
        )  # fmt: skip
        assert compiled(event) == reference(event), (value, at)


def test_shared_records_are_not_mixed_up() -> None:
    """Bytes kept per location instance: a different (or copied) location is written anew."""
    here = Location(location_id="BRK-A-01", name="A-01", site="BRK")
    there = here.model_copy(update={"name": "B-02"})
    for event in (moved(from_location=here), moved(from_location=there), moved(from_location=here)):
        assert compiled(event) == reference(event)


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        ({"envelope": envelope("LotMoved").model_copy(update={"occurred_at": datetime(2026, 1, 1)})}, True),
        ({"lot": 42}, False),
        ({"quantity": Quantity.model_construct(value=Decimal("1.0000001"), unit="KGM")}, False),
        ({"quantity": Quantity.model_construct(value=1.5, unit="KGM")}, False),
        ({"kind": "TELEPORT"}, False),
        ({"envelope": envelope("LotMoved").model_copy(update={"sequence": 2**63})}, False),
    ],
    ids=["naive-time", "int-lot", "7-places", "float", "unknown-symbol", "long-overflow"],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # model_dump of a bad value
def test_what_the_encoder_refuses_goes_to_fastavro(change: dict[str, Any], accepted: bool) -> None:
    """The serde then writes fastavro's bytes, or refuses the event as fastavro does."""
    event = moved(**change)
    with pytest.raises(UnencodableError):
        compiled(event)
    serde = SingleObjectSerde(CATALOG)
    if accepted:
        assert serde.encode(event).endswith(reference(event))
    else:
        with pytest.raises((ValueError, TypeError, OverflowError)):
            reference(event)
        with pytest.raises(EventValidationError, match="does not fit its Avro schema"):
            serde.encode(event)


class _Shift(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str

    @field_serializer("name")
    def _upper(self, name: str) -> str:
        return name.upper()


_SHIFT_SCHEMA = {"type": "record", "name": "io.test.Shift", "fields": [{"name": "name", "type": "string"}]}  # fmt: skip


def test_a_model_that_serializes_its_own_way_is_not_compiled() -> None:
    with pytest.raises(UnsupportedSchemaError, match="serializers"):
        compile_encoder(_SHIFT_SCHEMA, _Shift, {})


def test_a_model_with_a_field_the_schema_lacks_is_not_compiled() -> None:
    schema = {**_SHIFT_SCHEMA, "fields": []}
    with pytest.raises(UnsupportedSchemaError, match="not in Avro"):
        compile_encoder(schema, _Shift, {})
