"""One serde path: every event type round-trips on both wire formats; bad bytes say where."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import fastavro
import fastavro.schema
import pytest

from schemas.errors import DecodeError, EventValidationError, UnknownSchemaError
from schemas.model import EVENT_TYPES, NAMESPACE, LotEventBase, event_to_avro
from schemas.serde import (
    SINGLE_OBJECT_MAGIC,
    ConfluentSerde,
    SchemaCatalog,
    SingleObjectSerde,
    avro_dir,
)
from tests.factories import one_of_each

EVENTS = one_of_each()
IDS = [type(e).__name__ for e in EVENTS]


@pytest.fixture(scope="module")
def single() -> SingleObjectSerde:
    return SingleObjectSerde(SchemaCatalog.load())


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
def test_single_object_round_trip(single: SingleObjectSerde, event: LotEventBase) -> None:
    data = single.encode(event)
    decoded = single.decode(data, topic="t", partition=0, offset=0)
    assert decoded == event
    assert decoded.envelope.occurred_at.utcoffset() == event.envelope.occurred_at.utcoffset()


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
def test_confluent_round_trip_with_mock_registry(event: LotEventBase) -> None:
    serde = ConfluentSerde(SchemaCatalog.load(), "mock://serde-test")
    data = serde.encode(event, topic="raw")
    assert data[0] == 0  # Confluent magic byte, then the 4-byte schema id
    assert serde.decode(data, topic="raw", partition=1, offset=7) == event


def test_single_object_header_is_the_spec_fingerprint(single: SingleObjectSerde) -> None:
    event = EVENTS[0]
    data = single.encode(event)
    assert data[:2] == SINGLE_OBJECT_MAGIC
    schema = fastavro.schema.load_schema(
        avro_dir() / f"{NAMESPACE}.LotReceived.avsc", _write_hint=False
    )
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    expected = int(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")
    assert data[2:10] == expected


def test_unknown_fingerprint_names_topic_partition_offset(single: SingleObjectSerde) -> None:
    data = SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"\x02"
    with pytest.raises(UnknownSchemaError) as err:
        single.decode(data, topic="lothub.raw.lot-events", partition=3, offset=42)
    assert (err.value.topic, err.value.partition, err.value.offset) == (
        "lothub.raw.lot-events",
        3,
        42,
    )
    assert "lothub.raw.lot-events[3]@42" in str(err.value)


@pytest.mark.parametrize(
    "payload", [b"", b'{"lot": 1}', b"\xc3\x01short"], ids=["empty", "json", "short"]
)
def test_foreign_bytes_are_decode_errors(single: SingleObjectSerde, payload: bytes) -> None:
    with pytest.raises(DecodeError, match="single-object"):
        single.decode(payload, topic="t", partition=0, offset=1)


def test_truncated_body_is_a_decode_error(single: SingleObjectSerde) -> None:
    data = single.encode(EVENTS[0])
    with pytest.raises(DecodeError, match="corrupt"):
        single.decode(data[:-20], topic="t", partition=0, offset=5)


def test_confluent_unknown_schema_id() -> None:
    serde = ConfluentSerde(SchemaCatalog.load(), "mock://serde-unknown")
    with pytest.raises(UnknownSchemaError):
        serde.decode(b"\x00\x00\x00\x30\x39" + b"\x02", topic="t", partition=0, offset=9)


def test_writes_are_strict_no_silent_nulls(tmp_path: Path) -> None:
    """A schema field the event does not provide fails the write instead of becoming null."""
    folder = tmp_path / "avro"
    shutil.copytree(avro_dir(), folder)
    path = folder / f"{NAMESPACE}.Envelope.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "plant_shift", "type": ["null", "string"]})
    path.write_text(json.dumps(schema))
    serde = SingleObjectSerde(SchemaCatalog.load(folder))
    with pytest.raises(EventValidationError, match="plant_shift"):
        serde.encode(EVENTS[0])


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_avro_schema_and_model_have_the_same_fields(event_type: type[LotEventBase]) -> None:
    schema = json.loads((avro_dir() / f"{NAMESPACE}.{event_type.__name__}.avsc").read_text())
    assert schema["name"] == event_type.__name__
    assert [f["name"] for f in schema["fields"]] == list(event_type.model_fields)


def test_events_written_with_an_earlier_schema_version_still_decode() -> None:
    catalog = SchemaCatalog.load()
    serde = SingleObjectSerde(catalog)
    earlier = [s for s in catalog.by_fingerprint.values() if s.reader is not None]
    assert earlier, "schemas/avro/history/ holds the versions before the last changes"
    for old in earlier:
        (event,) = [e for e in one_of_each() if type(e).__name__ == old.name]
        body = io.BytesIO()
        # an older connector writes the fields its schema knows (new ones it never heard of)
        fastavro.schemaless_writer(body, old.compiled, event_to_avro(event), strict=False)
        data = SINGLE_OBJECT_MAGIC + old.fingerprint + body.getvalue()
        decoded = serde.decode(data, topic="t", partition=0, offset=0)
        defaults = {
            name: field.default
            for name, field in type(event).model_fields.items()
            if name not in {f["name"] for f in old.parsed["fields"]}
        }
        assert defaults, f"{old.name}: the history version lacks a field of the current model"
        assert decoded == event.model_copy(update=defaults), old.name
