"""MES connector for ISA-95 B2MML V0700 messages: validate, map to raw lot events, take them in.

An MES reports what a batch consumed and produced as B2MML (MESA's XML for ISA-95). This
module accepts those messages from a watched drop folder (:func:`scan_drop_folder`,
:func:`watch_drop_folder`) and from ``POST /b2mml`` (:func:`create_b2mml_app`), validates
each against the V0700 XML Schemas in ``connectors/b2mml_schema/`` (lxml / libxml2) and maps
it to raw lot events (:func:`map_message`). A message that does not validate raises
:class:`B2mmlValidationError` naming every XSD error with its line and element path; one
that validates but cannot be mapped without guessing raises :class:`B2mmlMappingError` (or
:class:`~schemas.errors.UnmappedValueError`). Both are :class:`~schemas.errors.DataError`:
the message goes to the dead-letter topic with that reason.

Messages mapped (bare, or inside a ``Process``/``Sync``/``Show``/``Change``/``Respond`` BOD):

==========================================  ==================================================
``OperationsPerformance``,                  every ``MaterialActual`` of every (nested)
``OperationsResponse``                      ``SegmentResponse``
``WorkPerformance``, ``WorkResponse``,      every ``MaterialActual`` of every ``JobResponse``
``JobResponse``, ``JobResponseList``
``MaterialInformation``, ``MaterialLot``,   sub-lots (as lot aliases) and lot status
``MaterialSubLot``
==========================================  ==================================================

How a material actual becomes an event:

* ``MaterialUse`` ``Consumed``, ``Material Consumed``, ``Consumable`` -> :class:`MaterialConsumed`;
  ``Produced``, ``Yield Produced``, ``Material Produced``, ``Co-product Produced``,
  ``By-product Produced`` -> :class:`MaterialProduced`, with ``role`` ``CO_PRODUCT`` /
  ``BY_PRODUCT`` for the last two (else ``PRODUCT``). Samples and ``Inventoried`` are not
  batch flows and are left out; an actual without ``MaterialLotID`` (water, energy) names
  nothing traceable and is left out; a lot with no or an ``Other`` use is an error.
* ``batch_id`` is the order that joins consumption and production: the response's single
  ``OperationsRequestID`` (``JobOrderID`` for a job response), else the response ``ID``,
  prefixed with the system instance (``mes-alp/PA-4711``) because the store joins batches
  across every system. ``reference_document`` is ``BATCH_RECORD`` with the order number.
* ``lot`` is ``MaterialLotID`` exactly as the MES wrote it; every ``MaterialSubLotID``
  adds a :class:`LotAliasLinked` (``alias_kind="MES_SUBLOT"``): a sub-lot is a
  separately handled part (drum, bag, pallet) of its lot, so tracing it means tracing
  the lot, and a recall can look the lot up by the sub-lot id.
* ``item`` is ``MaterialDefinitionID`` with the actual's ``Description`` (or
  :attr:`B2mmlMapping.item_descriptions`); quantity and unit are the first ``Quantity``'s
  ``QuantityString`` and ``UnitOfMeasure`` exactly as sent (site unit codes: the stream
  normalizer converts them).
* ``location`` is the innermost ``HierarchyScope`` (or ``EquipmentActual``) around the
  actual, else :attr:`B2mmlMapping.default_location`, else the site itself.
* ``occurred_at``: consumption at the segment's start, production at its end (falling
  back outwards to the response and the performance). B2MML times without an offset are
  plant local and get the site's zone; times with an offset are shown in the site's zone.

Event ids are stable: ``record_key`` is the order, the response and segment ids (or
positions) and the actual's position in its segment, so a re-sent message, even in a new
BOD envelope, gives identical events: ``recorded_at`` is the message's ``PublishedDate``
(else ``occurred_at``), never the receipt time, and ``sequence`` is the event's position
in the message.

Example::

    mapping = B2mmlMapping(system_instance="mes-alp", site_code="ALP")
    events = map_message(Path("perf.xml").read_bytes(), mapping, sites.sites["ALP"])
    scan_drop_folder(Path("/srv/mes-drop"), b2mml_handler(publish, mapping, alp))
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from lxml import etree
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import (
    ConfigurationError,
    DataError,
    EventValidationError,
    InvalidDocumentError,
    RetriableError,
    SourceUnavailableError,
    UnmappedValueError,
)
from schemas.model import (
    DocumentRef,
    Envelope,
    Item,
    Location,
    LotAliasLinked,
    LotEventBase,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    OutputRole,
    Quantity,
    Source,
    SystemKind,
    TransformationKind,
    stable_event_id,
)
from schemas.sites import SiteConfig

log = logging.getLogger("lothub.connectors.b2mml")

#: The B2MML V0700 namespace every element of a message is in.
B2MML_NS = "http://www.mesa.org/xml/B2MML"
#: The copied upstream schemas (see SOURCE.md there).
SCHEMA_DIR = Path(__file__).with_name("b2mml_schema")
#: The schemas whose global elements a message may start with.
SCHEMA_ROOTS = (
    "B2MML-OperationsPerformance.xsd",
    "B2MML-WorkPerformance.xsd",
    "B2MML-Material.xsd",
)
#: XSD errors quoted in an exception message (all of them stay in ``issues``).
MAX_ISSUES_IN_MESSAGE = 10
#: Largest body ``POST /b2mml`` accepts (a batch with thousands of actuals is ~1 MB).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
PROBLEM = "application/problem+json"

ACTUAL_NOUNS = frozenset(
    {
        "OperationsPerformance",
        "OperationsResponse",
        "WorkPerformance",
        "WorkResponse",
        "JobResponse",
        "JobResponseList",
    }
)
LOT_NOUNS = frozenset({"MaterialInformation", "MaterialLot", "MaterialSubLot"})
#: BOD verbs whose nouns state facts; Get asks, Acknowledge answers, Cancel would need voids.
ACCEPTED_VERBS = frozenset({"Process", "Sync", "Show", "Change", "Respond"})

CONSUMED_USES = frozenset({"Consumed", "Material Consumed", "Consumable"})
PRODUCED_USES = frozenset(
    {
        "Produced",
        "Yield Produced",
        "Material Produced",
        "Co-product Produced",
        "By-product Produced",
    }
)
#: What each production use makes of its lot (the rest: the batch's product).
OUTPUT_ROLES = {
    "Co-product Produced": OutputRole.CO_PRODUCT,
    "By-product Produced": OutputRole.BY_PRODUCT,
}
#: Uses that move no material into or out of a batch (QC samples, stock counts).
NOT_BATCH_FLOWS = frozenset(
    {"Destructive Sample", "Returned Sample", "Retained Sample", "Inventoried"}
)
_START = ("ActualStartTime", "StartTime")
_END = ("ActualEndTime", "EndTime")
_XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"

#: Publishes the events of one message (e.g. a :class:`KafkaPublisher` send + flush).
EventSink = Callable[[list[LotEventBase]], None]
#: Parks a message that cannot be used, with the reason, on the dead-letter topic.
DeadLetter = Callable[[bytes, str], None]
#: Processes one dropped file; raises :class:`DataError` if the file is bad.
FileHandler = Callable[[Path, bytes], None]


@dataclass(frozen=True, slots=True)
class XsdIssue:
    """One schema (or XML syntax) error: where it is and what libxml2 said."""

    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.path}: {self.message}"


class B2mmlValidationError(InvalidDocumentError):
    """Not well-formed XML, a DTD, or XML that breaks the B2MML V0700 schema.

    ``issues`` lists every error (:class:`XsdIssue`: line and element path); the message
    quotes the first :data:`MAX_ISSUES_IN_MESSAGE`.
    """

    reason_code = "invalid-b2mml"
    max_quoted = MAX_ISSUES_IN_MESSAGE
    issues: tuple[XsdIssue, ...]


class B2mmlMappingError(DataError):
    """A valid B2MML message that cannot become lot events without guessing."""

    reason_code = "unmappable-b2mml"


@dataclass(frozen=True, kw_only=True)
class B2mmlMapping:
    """How one MES (a system instance at one site) is mapped.

    Everything but the two identifiers has a default; the mappings fill gaps an MES
    leaves in its messages instead of guessing them.
    """

    #: the MES instance, part of every event id (``mes-alp``)
    system_instance: str
    #: the hub's site code (``ALP``)
    site_code: str
    #: where a batch ran when the message names no equipment (default: the site itself)
    default_location: Location | None = None
    #: transformation kind of every batch ...
    kind: TransformationKind = TransformationKind.PRODUCTION
    #: ... unless its OperationsDefinitionID / WorkMasterID is mapped here (``{"BLEND-01": BLEND}``)
    kind_by_definition: Mapping[str, TransformationKind] = field(default_factory=dict)
    #: MaterialDefinitionID -> product description, for actuals sent without ``Description``
    item_descriptions: Mapping[str, str] = field(default_factory=dict)
    #: EquipmentID -> display name of the location
    location_names: Mapping[str, str] = field(default_factory=dict)
    #: ``doc_type`` of the reference document (FSMA 204 "reference document type")
    document_type: str = "BATCH_RECORD"
    #: ``alias_kind`` of the aliases sub-lots become
    sublot_alias_kind: str = "MES_SUBLOT"
    #: turn a MaterialLot's ``Status`` into a :class:`LotStatusChanged` (site status code)
    map_lot_status: bool = True
    #: ``reason_code`` and ``actor`` of those status events (actor: the system instance)
    status_reason_code: str = "MES_LOT_STATUS"
    status_actor: str | None = None
    #: prefix batch ids with the system instance; the store joins batches hub-wide
    namespace_batch_ids: bool = True


# --------------------------------------------------------------------------- validation

# The connector's own schema document: it includes the three upstream schemas so that one
# compiled schema knows every message it maps, without editing any upstream file.
_WRAPPER = (
    '<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    f'targetNamespace="{B2MML_NS}" xmlns="{B2MML_NS}" elementFormDefault="qualified">'
    + "".join(f'<xsd:include schemaLocation="{name}"/>' for name in SCHEMA_ROOTS)
    + "</xsd:schema>"
)
# An lxml schema keeps the error log of its last validation on itself: one at a time.
_schema_lock = threading.Lock()


def _parser() -> etree.XMLParser:
    # Never expand entities, never load a DTD, never touch the network (XXE, billion
    # laughs); a parser is not shared between threads, so each call gets its own.
    return etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)


@lru_cache(maxsize=1)
def _schema() -> etree.XMLSchema:
    wrapper = etree.fromstring(
        _WRAPPER.encode(), _parser(), base_url=str(SCHEMA_DIR / "lothub-b2mml.xsd")
    )
    try:
        return etree.XMLSchema(wrapper)
    except etree.LxmlError as exc:
        raise ConfigurationError(
            f"the B2MML schemas in {SCHEMA_DIR} do not compile: {exc}"
        ) from exc


def _where(element: etree._Element) -> str:
    """``/OperationsPerformance/OperationsResponse/SegmentResponse[2]/MaterialActual[1]``."""
    parts: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = parent.findall(node.tag)
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


def _issue(tree: etree._ElementTree, entry: Any) -> XsdIssue:
    # libxml2 reports an XPath of wildcards ("/*/*[3]"); name the elements instead.
    path = str(entry.path or "")
    if path:
        found = tree.xpath(path)
        if isinstance(found, list) and found and isinstance(found[0], etree._Element):
            path = _where(found[0])
    message = str(entry.message).replace("{" + B2MML_NS + "}", "")
    return XsdIssue(int(entry.line), int(entry.column), path or "/", message)


def validate(xml: bytes) -> etree._Element:
    """Parse ``xml`` safely and validate it against B2MML V0700; return the root element.

    Raises :class:`B2mmlValidationError` for XML that is not well-formed, declares a DTD
    (refused outright: no entity is ever expanded) or breaks the schema; the message
    names each error's line and element path.
    """
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position
        raise B2mmlValidationError(
            "not well-formed XML", [XsdIssue(line, column, "/", str(exc.msg))]
        ) from exc
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None:  # any <!DOCTYPE>, with or without a subset
        raise B2mmlValidationError(
            "refused: the message declares a DTD (<!DOCTYPE ...>); B2MML needs none, and "
            "DTD entities are how XML bombs and external-entity attacks work"
        )
    schema = _schema()
    with _schema_lock:
        valid = schema.validate(tree)
        entries = list(cast(Iterable[Any], schema.error_log))
    if not valid:
        summary = "does not conform to the B2MML V0700 schema"
        namespace = etree.QName(root).namespace
        if namespace != B2MML_NS:
            summary += (
                f" (its root element is in namespace {namespace or 'none'!r}; "
                f"B2MML V0700 elements are in {B2MML_NS!r})"
            )
        raise B2mmlValidationError(summary, [_issue(tree, e) for e in entries])
    return root


# --------------------------------------------------------------------------- reading helpers


def _q(name: str) -> str:
    return f"{{{B2MML_NS}}}{name}"


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _kids(element: etree._Element, name: str) -> list[etree._Element]:
    return element.findall(_q(name))


def _texts(element: etree._Element, name: str) -> list[str]:
    """Non-empty, whitespace-trimmed texts of the direct children ``name`` (nil ones skipped)."""
    out = []
    for child in _kids(element, name):
        if child.get(_XSI_NIL) in {"true", "1"}:
            continue
        text = (child.text or "").strip()
        if text:
            out.append(text)
    return out


def _text(element: etree._Element, name: str) -> str | None:
    texts = _texts(element, name)
    return texts[0] if texts else None


def _chain(element: etree._Element, stop: etree._Element) -> list[etree._Element]:
    """``element`` and its ancestors up to ``stop`` (included), innermost first."""
    chain = [element]
    for ancestor in element.iterancestors():
        if chain[-1] is stop:
            break
        chain.append(ancestor)
    return chain


def _sublots(element: etree._Element) -> Iterator[etree._Element]:
    # Only MaterialSubLot children, recursively: AssemblyLotID / AssemblySubLotID hold
    # *other* lots (components of an assembly), which are not names of this one.
    for sub in _kids(element, "MaterialSubLot"):
        yield sub
        yield from _sublots(sub)


# --------------------------------------------------------------------------- mapping


@dataclass
class _Batch:
    """The response an actual belongs to: its order, kind and identity."""

    batch_id: str
    order: str
    kind: TransformationKind
    noun: etree._Element
    #: the response's ID (or position), first part of every record key under it
    ref: str


class _Mapper:
    """Builds the events of one message, in document order, with stable ids."""

    def __init__(self, config: B2mmlMapping, site: SiteConfig, created: datetime | None) -> None:
        self.config = config
        self.site = site
        self.created = created
        self.source = Source(
            system_kind=SystemKind.MES,
            system_instance=config.system_instance,
            site=config.site_code,
        )
        self.events: list[LotEventBase] = []
        self._seen: dict[str, str] = {}
        self._scopes: dict[tuple[str, ...], str] = {}

    # ---- values

    def time(self, element: etree._Element, name: str) -> datetime | None:
        text = _text(element, name)
        if text is None:
            return None
        try:
            local = datetime.fromisoformat(text)
        except ValueError:
            # xsd:dateTime also allows 24:00:00, the end of the day; Python does not.
            if "T24:00:00" not in text:
                raise B2mmlMappingError(
                    f"{_where(element)}/{name}: cannot read date-time {text!r}"
                ) from None
            local = datetime.fromisoformat(text.replace("T24:00:00", "T00:00:00"))
            local += timedelta(days=1)
        if local.tzinfo is None:
            return self.site.localize(local)  # plant wall-clock time, as B2MML intends
        return local.astimezone(self.site.zone)

    def occurred(
        self, chain: Sequence[etree._Element], names: Sequence[str], what: str
    ) -> datetime:
        for element in chain:
            for name in names:
                at = self.time(element, name)
                if at is not None:
                    return at
        raise B2mmlMappingError(
            f"{what}: no {', '.join(dict.fromkeys(names))} on it or around it, so it "
            "cannot be dated"
        )

    def location(self, chain: Sequence[etree._Element]) -> Location:
        for element in chain:
            scope = element.find(_q("HierarchyScope"))
            if scope is not None:
                # The innermost nested scope is the most specific (site > area > unit).
                while (inner := scope.find(_q("HierarchyScope"))) is not None:
                    scope = inner
                equipment = _text(scope, "EquipmentID")
                if equipment:
                    return self._equipment(equipment, None)
            for actual in _kids(element, "EquipmentActual"):
                equipment = _text(actual, "EquipmentID")
                if equipment:
                    return self._equipment(equipment, _text(actual, "Description"))
        if self.config.default_location is not None:
            return self.config.default_location
        return Location(
            location_id=self.config.site_code, name=self.site.name, site=self.config.site_code
        )

    def _equipment(self, equipment: str, description: str | None) -> Location:
        name = self.config.location_names.get(equipment) or description or equipment
        return Location(location_id=equipment, name=name, site=self.config.site_code)

    def item(self, actual: etree._Element, where: str) -> Item:
        codes = _texts(actual, "MaterialDefinitionID")
        if len(codes) != 1:
            raise B2mmlMappingError(
                f"{where}: needs exactly one MaterialDefinitionID (the item), has {len(codes)}"
            )
        code = codes[0]
        description = _text(actual, "Description") or self.config.item_descriptions.get(code)
        if not description:
            raise UnmappedValueError(
                site=self.config.site_code,
                kind="material description",
                value=code,
                hint=(
                    f"{where} has no Description; have the MES send one or add "
                    "the material to item_descriptions of the B2MML mapping"
                ),
            )
        return Item(item_code=code, description=description)

    def quantity(self, actual: etree._Element, where: str) -> Quantity:
        quantities = _kids(actual, "Quantity")
        if not quantities:
            raise B2mmlMappingError(f"{where}: names a lot but no Quantity")
        # Several quantities state the same amount in different units (kg and bags);
        # the first is the MES's primary one.
        first = quantities[0]
        text, unit = _text(first, "QuantityString"), _text(first, "UnitOfMeasure")
        if text is None or unit is None:
            raise B2mmlMappingError(
                f"{where}/Quantity: needs a QuantityString and a UnitOfMeasure "
                f"(has {text!r} and {unit!r}); a unit is never assumed"
            )
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite():
            raise B2mmlMappingError(f"{where}/Quantity: {text!r} is not a decimal number")
        if value < 0:
            raise B2mmlMappingError(
                f"{where}/Quantity: {text} is negative; a reversal must be sent as a "
                "correction, not as a negative actual"
            )
        return Quantity(value=value, unit=unit)

    # ---- events

    def envelope(
        self,
        event_type: str,
        key: str,
        occurred: datetime,
        recorded: datetime | None,
        correlation: str | None,
    ) -> Envelope:
        return Envelope(
            event_id=stable_event_id(self.config.system_instance, event_type, key),
            event_type=event_type,
            source=self.source,
            occurred_at=occurred,
            # From the message, never the clock: a re-send must give the very same event.
            recorded_at=recorded or occurred,
            sequence=len(self.events) + 1,
            correlation_id=correlation,
        )

    def add(self, build: Callable[[], LotEventBase], where: str, *, repeatable: bool) -> None:
        try:
            event = build()
        except PydanticValidationError as exc:
            raise EventValidationError(f"{where}: does not make a valid event: {exc}") from exc
        event_id = event.envelope.event_id
        if event_id in self._seen:
            if repeatable:  # the same fact stated twice in one message: keep it once
                return
            raise B2mmlMappingError(
                f"{where} and {self._seen[event_id]} get the same event id: the message "
                "repeats a response or segment ID, so its actuals cannot be told apart"
            )
        self._seen[event_id] = where
        self.events.append(event)

    def claim(self, refs: Sequence[str], element: etree._Element) -> None:
        """Refuse a second response or segment with the same identity in one message.

        Event ids are built from these ids; two segments sharing one would make their
        actuals indistinguishable (and one message's events overwrite the other's).
        """
        scope = tuple(refs)
        where = _where(element)
        if scope in self._scopes:
            raise B2mmlMappingError(
                f"{where} repeats the identity of {self._scopes[scope]} "
                f"({' / '.join(scope)}), so their actuals cannot be told apart"
            )
        self._scopes[scope] = where

    # ---- material actuals

    def actuals(self, noun: etree._Element) -> None:
        published = self.time(noun, "PublishedDate")
        responses = noun.iter(_q("OperationsResponse"), _q("JobResponse"), _q("JobResponset"))
        for position, response in enumerate(responses):
            batch = self.batch(response, noun, position)
            self.claim([batch.batch_id, batch.ref], response)
            if _local(response) == "OperationsResponse":
                self.segments(response, batch, [batch.ref], published)
            else:
                for index, actual in enumerate(_kids(response, "MaterialActual")):
                    self.actual(actual, index, batch, [batch.ref], published)

    def batch(self, response: etree._Element, noun: etree._Element, position: int) -> _Batch:
        response_id = _text(response, "ID")
        if _local(response) == "OperationsResponse":
            requests = _texts(response, "OperationsRequestID")
            # One request is the order; several (a campaign) would make the join ambiguous.
            order = requests[0] if len(requests) == 1 else response_id
            definitions = _texts(response, "OperationsDefinitionID")
        else:
            order = _text(response, "JobOrderID") or response_id
            definitions = _texts(response, "WorkMasterID")
        if not order:
            raise B2mmlMappingError(
                f"{_where(response)}: has neither an order (OperationsRequestID / JobOrderID) "
                "nor an ID, so nothing joins its consumption to its production"
            )
        kind = next(
            (
                self.config.kind_by_definition[d]
                for d in definitions
                if d in self.config.kind_by_definition
            ),
            self.config.kind,
        )
        batch_id = (
            f"{self.config.system_instance}/{order}" if self.config.namespace_batch_ids else order
        )
        return _Batch(batch_id, order, kind, noun, response_id or f"#{position}")

    def segments(
        self,
        parent: etree._Element,
        batch: _Batch,
        refs: list[str],
        published: datetime | None,
    ) -> None:
        for position, segment in enumerate(_kids(parent, "SegmentResponse")):
            seg_refs = [*refs, _text(segment, "ID") or f"#{position}"]
            self.claim([batch.batch_id, *seg_refs], segment)
            for index, actual in enumerate(_kids(segment, "MaterialActual")):
                self.actual(actual, index, batch, seg_refs, published)
            self.segments(segment, batch, seg_refs, published)

    def actual(
        self,
        actual: etree._Element,
        index: int,
        batch: _Batch,
        refs: list[str],
        published: datetime | None,
    ) -> None:
        where = _where(actual)
        lots = _texts(actual, "MaterialLotID")
        sublots = list(dict.fromkeys(_texts(actual, "MaterialSubLotID")))
        use = _text(actual, "MaterialUse")
        if use in NOT_BATCH_FLOWS:
            log.debug("%s is a %s, not a batch flow; left out", where, use)
            return
        if not lots:
            if sublots:
                raise B2mmlMappingError(
                    f"{where}: names sub-lot(s) {', '.join(sublots)} but no MaterialLotID; "
                    "the lot they belong to is not known"
                )
            log.debug("%s names no lot (not lot-tracked material); left out", where)
            return
        if len(lots) > 1:
            raise B2mmlMappingError(
                f"{where}: names {len(lots)} lots ({', '.join(lots)}) with one quantity; "
                "the MES must send one MaterialActual per lot"
            )
        cls: type[MaterialConsumed] | type[MaterialProduced]
        if use in CONSUMED_USES:
            cls, names = MaterialConsumed, (*_START, *_END)
        elif use in PRODUCED_USES:
            cls, names = MaterialProduced, (*_END, *_START)
        else:
            raise B2mmlMappingError(
                f"{where}: lot {lots[0]} has MaterialUse {use!r}; only consumption and "
                "production uses say which way material went"
            )
        lot = lots[0]
        chain = _chain(actual, batch.noun)
        occurred = self.occurred(chain, names, where)
        key = "\x1f".join([batch.batch_id, *refs, str(index)])

        def build() -> LotEventBase:
            # Every model object is made in here, so a value the model refuses (too long,
            # too many digits) becomes an EventValidationError naming the actual.
            common: dict[str, Any] = {
                "envelope": self.envelope(cls.__name__, key, occurred, published, batch.order),
                "batch_id": batch.batch_id,
                "kind": batch.kind,
                "location": self.location(chain),
                "lot": lot,
                "item": self.item(actual, where),
                "quantity": self.quantity(actual, where),
                "reference_document": DocumentRef(
                    doc_type=self.config.document_type, number=batch.order
                ),
            }
            if cls is MaterialProduced:
                return MaterialProduced(**common, role=OUTPUT_ROLES.get(use, OutputRole.PRODUCT))
            return MaterialConsumed(**common)

        self.add(build, where, repeatable=False)
        for sublot in sublots:
            if sublot != lot:
                alias_key = f"{key}\x1f{sublot}"
                self.alias(lot, sublot, alias_key, occurred, published, batch.order, where)

    def alias(
        self,
        lot: str,
        sublot: str,
        key: str,
        occurred: datetime,
        recorded: datetime | None,
        correlation: str | None,
        where: str,
    ) -> None:
        def build() -> LotEventBase:
            return LotAliasLinked(
                envelope=self.envelope("LotAliasLinked", key, occurred, recorded, correlation),
                lot=lot,
                alias_kind=self.config.sublot_alias_kind,
                alias=sublot,
            )

        self.add(build, where, repeatable=True)

    # ---- material lot information

    def lot_information(self, noun: etree._Element) -> None:
        # A lot's sub-lots and status are stated as of the message: its PublishedDate, or
        # the BOD's CreationDateTime.
        at = self.time(noun, "PublishedDate") or self.created
        if at is None:
            raise B2mmlMappingError(
                f"{_where(noun)}: no PublishedDate and no BOD CreationDateTime, so the lot "
                "information cannot be dated"
            )
        info_id = _text(noun, "ID") if _local(noun) == "MaterialInformation" else None
        name = _local(noun)
        lots = [noun] if name == "MaterialLot" else _kids(noun, "MaterialLot")
        loose = [noun] if name == "MaterialSubLot" else _kids(noun, "MaterialSubLot")
        stamp = at.isoformat()
        for lot_element in lots:
            lot = _text(lot_element, "ID")
            if lot is None:
                raise B2mmlMappingError(f"{_where(lot_element)}: has an empty ID")
            status = _text(lot_element, "Status")
            if status is not None and self.config.map_lot_status:
                status_key = f"{lot}\x1f{status}\x1f{stamp}"
                self.status(lot, status, status_key, at, info_id, _where(lot_element))
            for sub in _sublots(lot_element):
                self.sublot(lot, sub, stamp, at, info_id)
        for sub in loose:
            lot = _text(sub, "MaterialLotID")
            if lot is None:
                raise B2mmlMappingError(
                    f"{_where(sub)}: a sub-lot on its own needs MaterialLotID to say whose "
                    "part it is"
                )
            self.sublot(lot, sub, stamp, at, info_id)
            for nested in _sublots(sub):
                self.sublot(lot, nested, stamp, at, info_id)

    def sublot(
        self, lot: str, sub: etree._Element, stamp: str, at: datetime, info_id: str | None
    ) -> None:
        sublot = _text(sub, "ID")
        if sublot is None:
            raise B2mmlMappingError(f"{_where(sub)}: has an empty ID")
        if sublot != lot:
            self.alias(lot, sublot, f"{lot}\x1f{sublot}\x1f{stamp}", at, at, info_id, _where(sub))

    def status(
        self, lot: str, status: str, key: str, at: datetime, info_id: str | None, where: str
    ) -> None:
        def build() -> LotEventBase:
            return LotStatusChanged(
                envelope=self.envelope("LotStatusChanged", key, at, at, info_id),
                lot=lot,
                status=status,  # the site's own code; the stream normalizer maps it
                reason_code=self.config.status_reason_code,
                actor=self.config.status_actor or self.config.system_instance,
            )

        self.add(build, where, repeatable=True)


def _unwrap(root: etree._Element) -> tuple[list[etree._Element], etree._Element | None]:
    """The nouns of a message and its BOD ApplicationArea (None for a bare noun)."""
    area = root.find(_q("ApplicationArea"))
    data = root.find(_q("DataArea"))
    if area is None or data is None:
        return [root], None
    elements = [c for c in data if isinstance(c.tag, str)]
    verb = _local(elements[0])
    if verb not in ACCEPTED_VERBS:
        raise B2mmlMappingError(
            f"{_local(root)}: a {verb} message carries no results to record; the "
            f"connector maps {', '.join(sorted(ACCEPTED_VERBS))} messages"
        )
    return elements[1:], area


def map_document(
    root: etree._Element, config: B2mmlMapping, site: SiteConfig
) -> list[LotEventBase]:
    """Map an already validated message (see :func:`validate`) to raw lot events."""
    nouns, area = _unwrap(root)
    mapper = _Mapper(config, site, None)
    if area is not None:
        mapper.created = mapper.time(area, "CreationDateTime")
    for noun in nouns:
        name = _local(noun)
        if name in ACTUAL_NOUNS:
            mapper.actuals(noun)
        elif name in LOT_NOUNS:
            mapper.lot_information(noun)
        else:
            raise B2mmlMappingError(
                f"{_local(root)}: {name} is valid B2MML but not a message this connector "
                "maps (performance / job responses and material lot information are)"
            )
    return mapper.events


def map_message(xml: bytes, config: B2mmlMapping, site: SiteConfig) -> list[LotEventBase]:
    """Validate a B2MML message and map it to raw lot events (site codes, as sent).

    Raises :class:`B2mmlValidationError` if it does not validate, and
    :class:`B2mmlMappingError`, :class:`~schemas.errors.UnmappedValueError` or
    :class:`~schemas.errors.EventValidationError` if it cannot be mapped; all are
    :class:`~schemas.errors.DataError`. A valid message without lot-tracked actuals maps
    to no events.
    """
    return map_document(validate(xml), config, site)


def dead_letter_reason(exc: DataError) -> str:
    """``"<reason code>: <message>"``, the reason a dead letter is parked with."""
    return f"{exc.reason_code}: {exc}"


def b2mml_handler(sink: EventSink, config: B2mmlMapping, site: SiteConfig) -> FileHandler:
    """A drop-folder handler: map the file's message and hand the events to ``sink``."""

    def handle(path: Path, data: bytes) -> None:
        events = map_message(data, config, site)
        sink(events)
        log.info("%s: %d events from %s", config.system_instance, len(events), path.name)

    return handle


# --------------------------------------------------------------------------- drop folder


def _fsync_dir(folder: Path) -> None:
    # A rename is only durable once the directory is flushed (POSIX); Windows cannot
    # open a directory and has no need to.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_name(folder: Path, name: str) -> Path:
    # MES often reuse file names (one per line and day): never overwrite an earlier file.
    target = folder / name
    stem, suffix = os.path.splitext(name)
    n = 1
    while target.exists():
        target = folder / f"{stem}.{n}{suffix}"
        n += 1
    return target


def _move(path: Path, folder: Path) -> Path:
    target = _free_name(folder, path.name)
    os.replace(path, target)
    _fsync_dir(folder)
    _fsync_dir(path.parent)
    return target


def _pending(folder: Path, min_age_s: float) -> list[Path]:
    now = time.time()
    files = []
    for path in folder.iterdir():
        # Writers drop a temporary (or hidden) name and rename it to *.xml when complete.
        if path.name.startswith(".") or path.suffix.lower() != ".xml" or not path.is_file():
            continue
        if min_age_s > 0 and now - path.stat().st_mtime < min_age_s:
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.name)


def scan_drop_folder(
    folder: Path,
    handle: FileHandler,
    *,
    dead_letter: DeadLetter | None = None,
    min_age_s: float = 0.0,
) -> list[Path]:
    """Process every ``*.xml`` file in ``folder`` once, in name order; return where they went.

    A file moves to ``processed/`` only after ``handle(path, data)`` returned, so a crash
    at any point leaves it in place to be handled again (with the same event ids: stored
    once). A file ``handle`` rejects with a :class:`DataError` goes to ``dead_letter``
    (if given), then to ``failed/`` next to a ``<name>.reason.txt`` saying why. Any other
    error (a broker outage) leaves the file where it is and is raised: the next scan
    retries it, and files after it wait, so the MES's order is kept. ``min_age_s`` skips
    files modified more recently, for writers that cannot write-then-rename.
    """
    if not folder.is_dir():
        # Usually a network share that is not mounted (yet): retry, never create it here.
        raise SourceUnavailableError(f"drop folder {folder} does not exist or is not a folder")
    processed = folder / "processed"
    failed = folder / "failed"
    processed.mkdir(exist_ok=True)
    failed.mkdir(exist_ok=True)
    moved: list[Path] = []
    for path in _pending(folder, min_age_s):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # another scanner took it
        except OSError as exc:
            raise SourceUnavailableError(f"cannot read {path}: {exc}") from exc
        try:
            handle(path, data)
        except DataError as exc:
            reason = dead_letter_reason(exc)
            log.warning("%s rejected: %s", path, reason)
            if dead_letter is not None:
                dead_letter(data, reason)
            target = _free_name(failed, path.name)
            note = target.with_name(target.name + ".reason.txt")
            # Written before the move: after a crash between the two, the file is simply
            # rejected again and the note rewritten.
            tmp = note.with_name(note.name + ".tmp")
            tmp.write_text(
                f"file: {path.name}\nrejected at: {datetime.now(UTC).isoformat()}\n"
                f"reason: {exc.reason_code}\n\n{exc}\n",
                encoding="utf-8",
            )
            os.replace(tmp, note)
            moved.append(_move(path, failed))
            continue
        moved.append(_move(path, processed))
    return moved


def watch_drop_folder(
    folder: Path,
    handle: FileHandler,
    stop: threading.Event,
    *,
    dead_letter: DeadLetter | None = None,
    poll_interval_s: float = 5.0,
    max_backoff_s: float = 300.0,
    min_age_s: float = 0.0,
    on_error: Callable[[RetriableError], None] | None = None,
) -> None:
    """Scan ``folder`` every ``poll_interval_s`` until ``stop`` is set.

    Polling rather than file-system notifications: it works the same on network shares,
    where MES drop folders usually live. Transient faults (:class:`RetriableError`) are
    reported to ``on_error`` and retried with capped exponential back-off; anything else
    ends the loop.
    """
    delay = poll_interval_s
    while not stop.is_set():
        try:
            scan_drop_folder(folder, handle, dead_letter=dead_letter, min_age_s=min_age_s)
            delay = poll_interval_s
        except RetriableError as exc:
            log.warning("drop folder %s: %s; retrying in %.0f s", folder, exc, delay)
            if on_error is not None:
                on_error(exc)
            stop.wait(delay)
            delay = min(delay * 2, max_backoff_s)
            continue
        stop.wait(poll_interval_s)


# --------------------------------------------------------------------------- HTTP intake


def _problem(status: int, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _unavailable(detail: str, instance: str) -> JSONResponse:
    # Nothing was kept: the MES must send again, and a re-send gives the same event ids.
    response = _problem(503, "Temporarily unavailable", detail, instance)
    response.headers["Retry-After"] = "30"
    return response


def _is_xml(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in {"application/xml", "text/xml"} or media.endswith("+xml")


def create_b2mml_app(
    sink: EventSink,
    mapping: B2mmlMapping,
    site: SiteConfig,
    *,
    dead_letter: DeadLetter | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FastAPI:
    """An HTTP intake: ``POST /b2mml`` with an ``application/xml`` B2MML message.

    ``202`` with the number of events once ``sink`` took them; ``422`` problem details
    naming every validation error (line, path, message) for a message that cannot be
    used, after handing it to ``dead_letter`` with its reason; ``503`` if the sink or
    the dead-letter hook is unavailable (the MES should send again later: the events will
    have the same ids); ``413`` / ``415`` for bodies too large or not XML. The app has no
    authentication of its own: serve it behind the hub's or on a plant network only.
    """
    app = FastAPI(title="lothub B2MML intake", version="1")

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), str(exc.detail), request.url.path)

    # The body is read raw (it is validated against the XSD, not parsed by FastAPI);
    # the OpenAPI page still says what to send.
    xml_body = {"required": True, "content": {"application/xml": {"schema": {"type": "string"}}}}

    @app.post("/b2mml", status_code=202, openapi_extra={"requestBody": xml_body})
    async def receive(request: Request) -> JSONResponse:
        instance = request.url.path
        if not _is_xml(request.headers.get("content-type", "")):
            detail = "send the B2MML message as application/xml"
            return _problem(415, "Unsupported media type", detail, instance)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            return _problem(413, "Message too large", f"at most {max_bytes} bytes", instance)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return _problem(413, "Message too large", f"at most {max_bytes} bytes", instance)
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            # Parsing, validating and publishing block: keep them off the event loop.
            events = await run_in_threadpool(map_message, body, mapping, site)
            await run_in_threadpool(sink, events)
        except DataError as exc:
            reason = dead_letter_reason(exc)
            log.warning("POST /b2mml rejected: %s", reason)
            try:
                if dead_letter is not None:
                    await run_in_threadpool(dead_letter, body, reason)
            except RetriableError as dlq_exc:
                return _unavailable(str(dlq_exc), instance)
            issues = exc.issues if isinstance(exc, B2mmlValidationError) else ()
            return _problem(
                422,
                "Invalid B2MML message",
                str(exc),
                instance,
                reason_code=exc.reason_code,
                errors=[
                    {"line": i.line, "column": i.column, "path": i.path, "message": i.message}
                    for i in issues
                ],
            )
        except RetriableError as exc:
            return _unavailable(str(exc), instance)
        return JSONResponse(
            {"events": len(events), "event_ids": [e.envelope.event_id for e in events]},
            status_code=202,
        )

    return app
