"""The enterprise lot model: every event in the life of a lot, as typed Python.

Each event class mirrors one Avro schema in ``schemas/avro/`` (same field names;
the Avro record name is the class name in namespace ``io.lothub.events``).

The same classes travel on raw and on enterprise topics. On a raw topic the lot,
status and unit strings are the site's own codes, exactly as the plant system
wrote them; the stream normalizer rewrites them into enterprise lot ids, enterprise
statuses (:class:`LotStatus`) and UN/CEFACT Rec 20 units, and
:func:`check_enterprise` proves that it did.

Example::

    >>> from datetime import datetime, timezone
    >>> env = Envelope(
    ...     event_id=stable_event_id("erp-alp", "receipt", "R-1"),
    ...     event_type="LotReceived",
    ...     source=Source(system_kind=SystemKind.ERP, system_instance="erp-alp", site="ALP"),
    ...     occurred_at=datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc),
    ...     recorded_at=datetime(2026, 11, 2, 8, 1, tzinfo=timezone.utc),
    ...     sequence=1,
    ... )
    >>> env.schema_version
    1
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from schemas.errors import EventValidationError
from schemas.units import is_rec20

NAMESPACE = "io.lothub.events"
#: Decimal places every quantity is carried with (Avro decimal scale).
QUANTITY_SCALE = 6
_QUANTUM = Decimal(1).scaleb(-QUANTITY_SCALE)
#: Namespace of the UUIDv5 event ids: same source record -> same event_id, always.
EVENT_ID_NAMESPACE = uuid.UUID("6f1b1c1e-4f5e-5b8a-9a53-6c6f74687562")
_EVENT_ID_PREFIX = EVENT_ID_NAMESPACE.bytes


def stable_event_id(system_instance: str, record_kind: str, record_key: str) -> str:
    """Return the event id for one source record; re-sends get the same id.

    ``record_key`` is whatever identifies the record in its system (a primary key,
    a message id, a file name and line number).
    """
    # uuid.uuid5 spelled out (RFC 4122 section 4.3): the same ids at a fifth of the cost
    digest = bytearray(
        hashlib.sha1(  # noqa: S324 - name-based UUIDs are SHA-1 by definition
            _EVENT_ID_PREFIX + f"{system_instance}\x1f{record_kind}\x1f{record_key}".encode()
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class SystemKind(StrEnum):
    """The kind of plant system an event came from."""

    ERP = "ERP"
    MES = "MES"
    LIMS = "LIMS"
    WMS = "WMS"
    EPCIS = "EPCIS"


class LotStatus(StrEnum):
    """Enterprise lot statuses every site status code maps onto."""

    QUARANTINE = "QUARANTINE"
    RELEASED = "RELEASED"
    ON_HOLD = "ON_HOLD"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


#: Statuses under which a lot must be neither consumed nor shipped.
BLOCKED_STATUSES = frozenset(
    {LotStatus.QUARANTINE, LotStatus.ON_HOLD, LotStatus.REJECTED, LotStatus.EXPIRED}
)


class TransformationKind(StrEnum):
    """What a transformation did to its inputs."""

    PRODUCTION = "PRODUCTION"
    BLEND = "BLEND"
    SPLIT = "SPLIT"
    REWORK = "REWORK"
    REPACK = "REPACK"
    RELABEL = "RELABEL"


class OutputRole(StrEnum):
    """What a batch output is (ISA-95 material use): the product, a co- or a by-product."""

    PRODUCT = "PRODUCT"
    CO_PRODUCT = "CO_PRODUCT"
    BY_PRODUCT = "BY_PRODUCT"


class AdjustmentKind(StrEnum):
    """Why on-hand inventory of a lot changed outside a transaction."""

    ADJUSTMENT = "ADJUSTMENT"
    SCRAP = "SCRAP"
    DESTRUCTION = "DESTRUCTION"


class MoveKind(StrEnum):
    """Why a lot moved inside a site (a warehouse's own transactions)."""

    PUTAWAY = "PUTAWAY"
    MOVE = "MOVE"
    PICK = "PICK"


class CorrectionAction(StrEnum):
    """What a correction does to the events it names (cf. EPCIS errorDeclaration)."""

    VOID = "VOID"
    SUPERSEDE = "SUPERSEDE"


NonEmpty = Annotated[str, Field(min_length=1, max_length=200)]


class Source(_Model):
    """Which system, at which site, said this."""

    system_kind: SystemKind
    system_instance: NonEmpty
    site: NonEmpty


class Envelope(_Model):
    """Carried by every event: identity, origin, time and ordering.

    ``occurred_at`` keeps the UTC offset the plant was on (FSMA and EPCIS both
    record local time with its offset); on the wire it is UTC plus
    ``occurred_at_utc_offset_minutes``.
    """

    event_id: NonEmpty
    event_type: NonEmpty
    source: Source
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    sequence: int = Field(ge=0)
    schema_version: int = Field(default=1, ge=1)
    correlation_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _restore_offset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "occurred_at_utc_offset_minutes" in data:
            data = dict(data)
            minutes = data.pop("occurred_at_utc_offset_minutes")
            occurred = data["occurred_at"]
            if isinstance(occurred, datetime) and occurred.tzinfo is not None:
                data["occurred_at"] = occurred.astimezone(timezone(timedelta(minutes=minutes)))
        return data

    @property
    def occurred_at_utc_offset_minutes(self) -> int:
        """The plant's UTC offset when the event occurred (its own Avro field)."""
        offset = self.occurred_at.utcoffset() or timedelta(0)
        return int(offset.total_seconds() // 60)

    @model_serializer(mode="wrap")
    def _split_offset(self, handler: Any, info: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if info.context == "avro":
            data["occurred_at"] = self.occurred_at.astimezone(UTC)
            data["occurred_at_utc_offset_minutes"] = self.occurred_at_utc_offset_minutes
            data["recorded_at"] = self.recorded_at.astimezone(UTC)
        return data


class Quantity(_Model):
    """An amount with its unit (UN/CEFACT Rec 20 code once normalized).

    Values are carried to six decimal places (rounded half-even), enough for
    milligrams in a kilogram quantity, and at most 12 digits before the point.
    """

    value: Decimal = Field(max_digits=18, decimal_places=QUANTITY_SCALE)
    unit: NonEmpty

    @field_validator("value", mode="before")
    @classmethod
    def _quantize(cls, value: Any) -> Any:
        if isinstance(value, int | float | str):
            value = Decimal(str(value))
        if isinstance(value, Decimal):
            return value.quantize(_QUANTUM)
        return value


class Item(_Model):
    """The product: code and the description FSMA 204 calls 'product description'."""

    item_code: NonEmpty
    description: NonEmpty


class Location(_Model):
    """A place: a site's storage location, a supplier's plant, a customer's dock."""

    location_id: NonEmpty
    name: NonEmpty
    site: str | None = None
    address: str | None = None


class Party(_Model):
    """A business partner: supplier or customer."""

    party_id: NonEmpty
    name: NonEmpty


class DocumentRef(_Model):
    """FSMA 204 'reference document type and number' (PO, BOL, batch record, ...)."""

    doc_type: NonEmpty
    number: NonEmpty


class LotQuantity(_Model):
    """One lot and how much of it took part (an input used or an output made)."""

    lot: NonEmpty
    item: Item
    quantity: Quantity


class LotEventBase(_Model):
    """Base of every event type; ``lots()`` lists the lots the event touches.

    Subclasses declare their fields; the Avro record has the same name and fields.
    """

    avro_name: ClassVar[str]
    envelope: Envelope

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.avro_name = f"{NAMESPACE}.{cls.__name__}"

    @model_validator(mode="after")
    def _event_type_matches(self) -> LotEventBase:
        if self.envelope.event_type != type(self).__name__:
            raise ValueError(
                f"envelope.event_type is {self.envelope.event_type!r} "
                f"but the event is a {type(self).__name__}"
            )
        return self

    def lots(self) -> list[str]:
        """Every lot this event names, primary lot first."""
        lot = self.__dict__.get("lot")
        return [lot] if isinstance(lot, str) else []

    def quantities(self) -> list[Quantity]:
        """Every quantity this event carries (for unit normalization)."""
        return [v for _, v in self if isinstance(v, Quantity)]


class LotReceived(LotEventBase):
    """Receiving CTE: a supplier's lot arrives and gets an internal lot code."""

    lot: NonEmpty
    item: Item
    quantity: Quantity
    supplier: Party
    supplier_lot: NonEmpty
    receiving_location: Location
    ship_from: Location
    tlc_source: Location | None = None
    reference_document: DocumentRef


class Transformation(LotEventBase):
    """Transformation CTE with explicit inputs (quantity used) and outputs (made)."""

    kind: TransformationKind
    transformation_id: NonEmpty
    location: Location
    inputs: list[LotQuantity] = Field(min_length=1)
    outputs: list[LotQuantity] = Field(min_length=1)
    reference_document: DocumentRef

    def lots(self) -> list[str]:
        return [o.lot for o in self.outputs] + [i.lot for i in self.inputs]

    def quantities(self) -> list[Quantity]:
        return [x.quantity for x in [*self.inputs, *self.outputs]]


class MaterialConsumed(LotEventBase):
    """MES-style: part (or all) of a lot consumed by a batch; joined by ``batch_id``."""

    batch_id: NonEmpty
    kind: TransformationKind
    location: Location
    lot: NonEmpty
    item: Item
    quantity: Quantity
    reference_document: DocumentRef


class MaterialProduced(LotEventBase):
    """MES-style: a batch produced a lot (main, co- or by-product)."""

    batch_id: NonEmpty
    kind: TransformationKind
    location: Location
    lot: NonEmpty
    item: Item
    quantity: Quantity
    reference_document: DocumentRef
    #: the batch's product, or a co-/by-product of it (added in schema version 2)
    role: OutputRole = OutputRole.PRODUCT


class QcSampleTaken(LotEventBase):
    """A QC sample drawn from a lot."""

    sample_id: NonEmpty
    lot: NonEmpty
    location: Location


class QcResultRecorded(LotEventBase):
    """One test result on a sample, with its specification limits."""

    sample_id: NonEmpty
    lot: NonEmpty
    test_code: NonEmpty
    result: NonEmpty
    numeric_result: Decimal | None = Field(default=None, max_digits=18, decimal_places=6)
    result_unit: str | None = None
    spec_min: Decimal | None = Field(default=None, max_digits=18, decimal_places=6)
    spec_max: Decimal | None = Field(default=None, max_digits=18, decimal_places=6)
    passed: bool


class LotStatusChanged(LotEventBase):
    """A lot's status changed (site code on raw topics, :class:`LotStatus` once normalized)."""

    lot: NonEmpty
    status: NonEmpty
    reason_code: NonEmpty
    actor: NonEmpty


class TransferShipped(LotEventBase):
    """A lot leaves one site for another site of the enterprise."""

    transfer_id: NonEmpty
    lot: NonEmpty
    item: Item
    quantity: Quantity
    from_location: Location
    to_location: Location
    reference_document: DocumentRef


class TransferReceived(LotEventBase):
    """A transfer arrives; the receiving site may give the lot its own code.

    ``shipped_lot`` is the lot as the sending site (``shipped_lot_site``) named it.
    """

    transfer_id: NonEmpty
    shipped_lot: NonEmpty
    shipped_lot_site: NonEmpty
    lot: NonEmpty
    item: Item
    quantity: Quantity
    from_location: Location
    receiving_location: Location
    reference_document: DocumentRef

    def lots(self) -> list[str]:
        return [self.lot, self.shipped_lot]


class LotShipped(LotEventBase):
    """Shipping CTE: a lot leaves for a customer."""

    lot: NonEmpty
    item: Item
    quantity: Quantity
    customer: Party
    ship_to: Location
    ship_from: Location
    tlc_source: Location | None = None
    reference_document: DocumentRef


class CustomerReturn(LotEventBase):
    """A customer sends (part of) a lot back."""

    lot: NonEmpty
    item: Item
    quantity: Quantity
    customer: Party
    receiving_location: Location
    reason_code: NonEmpty
    reference_document: DocumentRef


class InventoryAdjusted(LotEventBase):
    """On-hand changed outside a transaction: count adjustment, scrap or destruction.

    ``quantity_change`` is signed; scrap and destruction only ever decrease stock.
    """

    kind: AdjustmentKind
    lot: NonEmpty
    item: Item
    quantity_change: Quantity
    location: Location
    reason_code: NonEmpty
    actor: NonEmpty

    @model_validator(mode="after")
    def _scrap_decreases(self) -> InventoryAdjusted:
        if self.kind is not AdjustmentKind.ADJUSTMENT and self.quantity_change.value >= 0:
            raise ValueError(f"{self.kind} must have a negative quantity_change")
        return self


class LotMoved(LotEventBase):
    """A lot (or part of it) moved between locations of one site: put-away, move, pick."""

    kind: MoveKind
    lot: NonEmpty
    item: Item
    quantity: Quantity
    from_location: Location
    to_location: Location
    license_plate: str | None = None
    reference_document: DocumentRef | None = None


class LotAliasLinked(LotEventBase):
    """Another name for the same physical lot (MES sub-lot, licence plate, ...)."""

    lot: NonEmpty
    alias_kind: NonEmpty
    alias: NonEmpty
    #: how much of the lot goes by the alias (a drum, a pallet), if the source says
    quantity: Quantity | None = None


class EventCorrected(LotEventBase):
    """Voids or supersedes earlier events (like an EPCIS errorDeclaration)."""

    action: CorrectionAction
    corrected_event_ids: list[NonEmpty] = Field(min_length=1)
    replacement_event_id: str | None = None
    reason: NonEmpty
    actor: NonEmpty

    @model_validator(mode="after")
    def _supersede_names_replacement(self) -> EventCorrected:
        if (self.action is CorrectionAction.SUPERSEDE) != (self.replacement_event_id is not None):
            raise ValueError("replacement_event_id is required for SUPERSEDE and only for it")
        return self


EVENT_TYPES: tuple[type[LotEventBase], ...] = (
    LotReceived,
    Transformation,
    MaterialConsumed,
    MaterialProduced,
    QcSampleTaken,
    QcResultRecorded,
    LotStatusChanged,
    TransferShipped,
    TransferReceived,
    LotShipped,
    CustomerReturn,
    InventoryAdjusted,
    LotMoved,
    LotAliasLinked,
    EventCorrected,
)
EVENT_TYPE_BY_NAME: dict[str, type[LotEventBase]] = {t.__name__: t for t in EVENT_TYPES}


def event_from_dict(event_type: str, data: dict[str, Any]) -> LotEventBase:
    """Build and validate an event of ``event_type`` from decoded field values.

    Raises :class:`EventValidationError` naming every broken field.
    """
    cls = EVENT_TYPE_BY_NAME.get(event_type)
    if cls is None:
        raise EventValidationError(f"unknown event type {event_type!r}")
    try:
        return cls.model_validate(data)
    except PydanticValidationError as exc:
        raise EventValidationError(f"{event_type} is invalid: {exc}") from exc


def event_to_avro(event: LotEventBase) -> dict[str, Any]:
    """Field values ready for the Avro writer (UTC timestamps plus offset)."""
    return event.model_dump(mode="python", context="avro")


def check_enterprise(event: LotEventBase) -> None:
    """Raise :class:`EventValidationError` unless the event is fully normalized.

    Enterprise events carry Rec 20 units, enterprise statuses and lot ids of the
    form ``SITE:CODE``.
    """
    for q in event.quantities():
        if not is_rec20(q.unit):
            raise EventValidationError(f"{q.unit!r} is not a UN/CEFACT Rec 20 unit code")
    for lot in event.lots():
        if ":" not in lot:
            raise EventValidationError(f"{lot!r} is not an enterprise lot id (SITE:CODE)")
    if isinstance(event, LotStatusChanged) and event.status not in LotStatus.__members__:
        raise EventValidationError(f"{event.status!r} is not an enterprise lot status")
