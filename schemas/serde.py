"""The one path between lot events and bytes, for connectors and stream workers alike.

Two wire formats, chosen by configuration:

* :class:`SingleObjectSerde` (default): Avro single-object encoding, i.e.
  ``C3 01`` + the writer schema's 8-byte little-endian CRC-64-AVRO fingerprint + the
  Avro body. The fingerprint is resolved against the schemas in ``schemas/avro/`` and
  the earlier versions kept in ``schemas/avro/history/``: an event written by an older
  connector is read with Avro schema resolution into the current model, so a rolling
  upgrade never parks in-flight events (the evolution gate keeps versions compatible).
* :class:`ConfluentSerde`: the Confluent wire format (magic byte + registry id),
  through confluent-kafka's schema-registry client; ``mock://`` URLs work in tests.

Writes are strict: a missing or extra field is an error, never a silent null.
Bodies are written by an encoder compiled from each schema (``schemas/avro_encoder.py``),
which writes fastavro's bytes; whatever it does not take goes to fastavro's strict
writer, the reference, which writes it or refuses it.
A payload that does not decode raises :class:`~schemas.errors.DecodeError` naming
topic, partition, offset and reason.

Example::

    >>> serde = SingleObjectSerde(SchemaCatalog.load())
    >>> data = serde.encode(event)                                  # doctest: +SKIP
    >>> serde.decode(data, topic="t", partition=0, offset=0) == event  # doctest: +SKIP
    True
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import fastavro
import fastavro.schema
from pydantic import BaseModel

from schemas import model as event_model
from schemas.avro_encoder import UnsupportedSchemaError, compile_encoder
from schemas.errors import DecodeError, EventValidationError, UnknownSchemaError
from schemas.model import EVENT_TYPES, NAMESPACE, LotEventBase, event_from_dict, event_to_avro

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_HEADER_LEN = len(SINGLE_OBJECT_MAGIC) + 8


def avro_dir() -> Path:
    """Folder holding the committed ``*.avsc`` files."""
    return Path(__file__).parent / "avro"


def history_dir(folder: Path | None = None) -> Path:
    """Earlier versions of the event schemas, each self-contained: ``<Type>.<fp>.avsc``."""
    return (folder or avro_dir()) / "history"


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One event type's parsed schema, canonical form and fingerprint."""

    name: str
    #: as written: each named type defined at its first use
    parsed: dict[str, Any]
    #: the same, parsed once for fastavro (without it every read and write re-parses)
    compiled: Any
    canonical: str
    fingerprint: bytes
    #: the current schema of the type, when this one is an earlier version (history)
    reader: Any = None
    #: the body writer compiled for this schema and its model; None if it cannot be compiled
    encoder: Callable[[BaseModel], bytes] | None = None

    def body(self, event: LotEventBase) -> bytes:
        """The strict Avro body of ``event``: the compiled encoder, else fastavro's writer."""
        if self.encoder is not None:
            try:
                return self.encoder(event)
            except Exception:  # noqa: S110 - Unencodable or worse: fastavro is the reference
                pass
        return _write_body(self.compiled, event)

    @property
    def expanded_json(self) -> str:
        """The schema with each named type defined at its first use, as a registry wants it."""
        return json.dumps(self.parsed)


class SchemaCatalog:
    """Every event schema, by short event-type name and by fingerprint."""

    def __init__(
        self, schemas: dict[str, EventSchema], earlier: tuple[EventSchema, ...] = ()
    ) -> None:
        self.by_name = schemas
        self.by_fingerprint = {s.fingerprint: s for s in (*earlier, *schemas.values())}

    @classmethod
    def load(cls, folder: Path | None = None) -> SchemaCatalog:
        """Load the schema of every event type from ``folder`` (default: the package's)."""
        return _load_catalog(folder or avro_dir())

    def schema_for(self, event_type: str) -> EventSchema:
        """The schema of one event type; raises for an unknown type."""
        try:
            return self.by_name[event_type]
        except KeyError as exc:
            raise EventValidationError(f"no Avro schema for event type {event_type!r}") from exc


@lru_cache(maxsize=4)
def _load_catalog(folder: Path) -> SchemaCatalog:
    models = {
        name: cls
        for name, cls in vars(event_model).items()
        if isinstance(cls, type) and issubclass(cls, BaseModel)
    }
    schemas: dict[str, EventSchema] = {}
    for event_type in EVENT_TYPES:
        name = event_type.__name__
        parsed = fastavro.schema.load_schema(
            str(folder / f"{NAMESPACE}.{name}.avsc"), _write_hint=False
        )
        if not isinstance(parsed, dict):
            raise EventValidationError(f"{name}.avsc must hold one record schema")
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        fp_hex = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
        schemas[name] = EventSchema(
            name=name,
            parsed=parsed,
            compiled=fastavro.parse_schema(parsed),
            canonical=canonical,
            fingerprint=int(fp_hex, 16).to_bytes(8, "little"),
            encoder=_compile(parsed, event_type, models),
        )
    earlier = []
    for path in sorted(history_dir(folder).glob("*.avsc")):
        old = json.loads(path.read_text(encoding="utf-8"))
        name = str(old.get("name", "")).rsplit(".", 1)[-1] if isinstance(old, dict) else ""
        current = schemas.get(name)
        if current is None:
            raise EventValidationError(f"history schema {path.name} is not of a known event type")
        canonical = fastavro.schema.to_parsing_canonical_form(old)
        fingerprint = int(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"), 16)
        earlier.append(EventSchema(
            name=current.name, parsed=old, compiled=fastavro.parse_schema(old),
            canonical=canonical, fingerprint=fingerprint.to_bytes(8, "little"),
            reader=current.compiled,
        ))  # fmt: skip
    return SchemaCatalog(schemas, tuple(earlier))


def _compile(
    parsed: dict[str, Any], event_type: type[LotEventBase], models: dict[str, type[BaseModel]]
) -> Callable[[BaseModel], bytes] | None:
    try:
        return compile_encoder(parsed, event_type, models)
    except UnsupportedSchemaError:
        return None  # every body of this type goes through fastavro


class Serde(Protocol):
    """Turns lot events into bytes and back. Implemented by both wire formats."""

    def encode(self, event: LotEventBase, *, topic: str = "") -> bytes:
        """Encode strictly; raises :class:`EventValidationError` on a bad event."""
        ...

    def decode(self, data: bytes, *, topic: str, partition: int, offset: int) -> LotEventBase:
        """Decode; raises :class:`DecodeError` (naming the record) on bad bytes."""
        ...


def _write_body(schema: Any, event: LotEventBase) -> bytes:
    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, schema, event_to_avro(event), strict=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EventValidationError(
            f"{type(event).__name__} {event.envelope.event_id} does not fit its Avro schema: {exc}"
        ) from exc
    return out.getvalue()


class SingleObjectSerde:
    """Avro single-object encoding against the committed schemas (the default)."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog

    def encode(self, event: LotEventBase, *, topic: str = "") -> bytes:
        """``C3 01`` + fingerprint + Avro body of ``event``."""
        schema = self.catalog.schema_for(type(event).__name__)
        return SINGLE_OBJECT_MAGIC + schema.fingerprint + schema.body(event)

    def decode(self, data: bytes, *, topic: str, partition: int, offset: int) -> LotEventBase:
        """Resolve the fingerprint, read the body, validate the event."""
        where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        if len(data) < _HEADER_LEN or not data.startswith(SINGLE_OBJECT_MAGIC):
            raise DecodeError("not Avro single-object encoded (no C3 01 header)", **where)
        schema = self.catalog.by_fingerprint.get(data[2:_HEADER_LEN])
        if schema is None:
            raise UnknownSchemaError(
                f"writer schema fingerprint {data[2:_HEADER_LEN].hex()} is not among the "
                "schemas this version of lothub ships; upgrade the reader",
                **where,
            )
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[_HEADER_LEN:]), schema.compiled, schema.reader
            )
        except Exception as exc:  # fastavro raises bare EOFError, ValueError, IndexError...
            raise DecodeError(f"{schema.name} body is corrupt: {exc!r}", **where) from exc
        return _to_event(schema.name, record, where)


def _to_event(name: str, record: Any, where: dict[str, Any]) -> LotEventBase:
    if not isinstance(record, dict):
        raise DecodeError(f"{name} body is not a record", **where)
    try:
        return event_from_dict(name, record)
    except EventValidationError as exc:
        raise DecodeError(str(exc), **where) from exc


class ConfluentSerde:
    """Confluent wire format through a Schema Registry (``mock://`` in tests).

    Several event types share a topic, so subjects follow the record-name strategy
    (``<topic>-<record full name>``).
    """

    def __init__(self, catalog: SchemaCatalog, registry_url: str) -> None:
        from confluent_kafka.schema_registry import (
            SchemaRegistryClient,
            topic_record_subject_name_strategy,
        )
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

        self.catalog = catalog
        self._client = SchemaRegistryClient.new_client({"url": registry_url})
        self._serializers = {
            name: AvroSerializer(
                self._client,
                schema.expanded_json,
                to_dict=lambda obj, _ctx: obj,
                conf={"subject.name.strategy": topic_record_subject_name_strategy},
            )
            for name, schema in catalog.by_name.items()
        }
        self._deserializer = AvroDeserializer(self._client)

    def encode(self, event: LotEventBase, *, topic: str = "") -> bytes:
        """Register (if new) and encode with the Confluent header."""
        from confluent_kafka.serialization import MessageField, SerializationContext

        name = type(event).__name__
        # The Confluent serializer is not strict about extra or missing fields; the
        # strict write runs first so both formats refuse the same events.
        self.catalog.schema_for(name).body(event)
        data = self._serializers[name](
            event_to_avro(event), SerializationContext(topic, MessageField.VALUE)
        )
        return bytes(data)

    def decode(self, data: bytes, *, topic: str, partition: int, offset: int) -> LotEventBase:
        """Fetch the writer schema from the registry and decode."""
        from confluent_kafka.serialization import MessageField, SerializationContext

        where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        if len(data) < 5 or data[0] != 0:
            raise DecodeError("not in Confluent wire format (no magic byte 0)", **where)
        try:
            record = self._deserializer(data, SerializationContext(topic, MessageField.VALUE))
        except Exception as exc:  # registry lookups and body reads fail in many ways
            message = str(exc)
            if "not found" in message.lower() or "40403" in message:
                raise UnknownSchemaError(
                    f"schema id unknown to the registry: {message}", **where
                ) from exc
            raise DecodeError(f"Confluent Avro payload is corrupt: {message}", **where) from exc
        if not isinstance(record, dict):
            raise DecodeError("payload is not an Avro record", **where)
        envelope = record.get("envelope")
        event_type = envelope.get("event_type") if isinstance(envelope, dict) else None
        if not isinstance(event_type, str):
            raise DecodeError("record has no envelope.event_type", **where)
        return _to_event(event_type, record, where)


def make_serde(registry_url: str | None = None) -> Serde:
    """The serde for this deployment: Confluent if a registry URL is set."""
    catalog = SchemaCatalog.load()
    if registry_url:
        return ConfluentSerde(catalog, registry_url)
    return SingleObjectSerde(catalog)
