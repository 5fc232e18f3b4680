"""EPCIS 2.0 connector: validate EPCIS JSON / JSON-LD documents, map their events to raw lot events.

GS1 EPCIS is how trading partners and plant systems tell each other *what happened to which
objects, when, where and why*. This module takes an ``EPCISDocument`` or ``EPCISQueryDocument``
(JSON or JSON-LD; the JSON-LD ``@context`` is kept, never expanded), validates it against the
GS1 EPCIS 2.0 JSON Schema (:func:`validate_document`, schemas copied unchanged into
``connectors/epcis_schema/``, resolved from that folder only: no ``$ref`` is ever fetched) and
maps every event to raw lot events (:func:`map_document`). ``connectors/epcis_capture.py``
serves it as the REST binding's ``POST /capture``.

Raw events carry the source's own codes: lot codes exactly as the EPCs carry them, units as
sent (EPCIS ``uom`` already is a UN/CEFACT Rec 20 code), dispositions as CBV short names.
``streams.normalize`` makes them enterprise ids, statuses and units later.

**Lots, quantities and units** (:func:`parse_identifier`):

==========================================  =====================================================
identifier                                  becomes
==========================================  =====================================================
LGTIN class (``urn:epc:class:lgtin:         ``lot`` = the lot (percent-escapes decoded), ``item`` =
CP.IR.LOT``, Digital Link ``/01/…/10/…``)   the GTIN-14, quantity and ``uom`` from the quantity
                                            element (no ``uom``: a count, ``H87``)
product class without a lot (``urn:epc:     ``lot`` = the class URI as written: "this product, lot
idpat:sgtin:CP.IR.*``, Digital Link         not stated" (a recall of it covers all such stock),
``/01/…``)                                  ``item`` = the GTIN-14, quantity as sent
SGTIN instance (``urn:epc:id:sgtin:…``,     one piece (``1 H87``) of a serial-level lot named by
Digital Link ``/01/…/21/…``)                the EPC URI as written: an SGTIN carries no lot; a
                                            Digital Link with ``/10/`` names its lot, which is
                                            used instead (the URI becomes an ``EPC`` alias)
any other EPC (SSCC, GRAI, GIAI, …) or      one piece of a lot named by the URI as written,
unrecognised URI                            ``item`` the placeholder ``unknown``
==========================================  =====================================================

**lothub's own URNs** (:mod:`schemas.epcis_vocab`, what ``GET /api/v1/exports/epcis`` writes
for things without a GS1 identity) are read back to what they name: ``urn:lothub:lot:SITE:CODE``
is lot ``CODE`` (its item code and supplier lot from the lot's master data), and
``urn:lothub:loc:…``, ``urn:lothub:party:…``, ``urn:lothub:doc:TYPE:NUMBER`` and
``urn:lothub:tf:…`` give back the location (and its site, unless ``location_sites`` says
otherwise), party, reference document and transformation ids, so a hub's export re-imports as
the same genealogy.

Sites that receive EPCIS events need a ``lot_code_pattern`` accepting these codes (the
normalizer upper-cases them), e.g. ``'^(URN:EPC:.+|HTTPS?://.+|[!-~]{1,20})$'`` (an AI 10 lot is at most 20 characters).

**Events.** What happened is said by the event type and the ``bizStep`` (CBV short names; the
``urn:epcglobal:cbv:bizstep:`` and ``https://ref.gs1.org/cbv/BizStep-`` forms are read too).
``ObjectEvent``, ``AggregationEvent`` (children), ``TransactionEvent`` and ``AssociationEvent``
(children) map each object by ``bizStep``:

=====================  ==========================================================================
``bizStep``            raw lot event per object
=====================  ==========================================================================
``receiving``          :class:`LotReceived`; :class:`TransferReceived` when a ``sourceList``
                       location is mapped to another site of ours (``shipped_lot`` = same code);
                       :class:`CustomerReturn` with ``disposition`` ``returned`` (the source's
                       owning party is the customer)
``shipping``           :class:`LotShipped`; :class:`TransferShipped` when a ``destinationList``
                       location is mapped to another site of ours
``commissioning``      :class:`MaterialProduced` (``PRODUCTION``): the objects come into being
                       here; ``batch_id`` = the ``prodorder`` business transaction, else the event
``inspecting``         :class:`QcSampleTaken`, plus :class:`QcResultRecorded` when the
                       ``disposition`` is ``conformant`` (passed) or ``non_conformant`` (failed);
                       ``sample_id`` = the EPCIS event id, ``test_code`` = ``inspecting``
``sampling``           :class:`QcSampleTaken`
``destroying``         :class:`InventoryAdjusted` (``DESTRUCTION``, the quantity negated)
anything else          no lot event (aliases and statuses below still apply)
=====================  ==========================================================================

* A ``parentID`` (aggregation, association, transaction) with action ``ADD`` or ``OBSERVE``
  adds a :class:`LotAliasLinked` per object (with the object's quantity, if it has one and
  no receipt, shipment, ... of the same event carries it):
  ``alias`` = the parent as written,
  ``alias_kind`` = its scheme (``SSCC``, ``GRAI``, ``GIAI``, ``SGLN``, else ``EPCIS_PARENT``),
  so a pallet or crate id finds the lots on it. ``DELETE`` cannot remove an alias: noted.
* ``persistentDisposition``: every ``unset`` then every ``set`` value becomes a
  :class:`LotStatusChanged` per object with the site status code ``unset:<disposition>`` /
  ``<disposition>`` (map them under ``[sites.<code>.status_codes]``), ``reason_code`` = the
  ``bizStep`` (else ``persistentDisposition``), ``actor`` = :attr:`EpcisMapping.actor`.
* ``TransformationEvent`` -> :class:`Transformation` (kind by
  :attr:`EpcisMapping.transformation_kinds`, else ``PRODUCTION``; ``transformation_id`` =
  ``transformationID``, else the event id). With ``bizStep`` ``receiving``, a ``sourceList``
  location at another site of ours and as many inputs as outputs, it is a transfer received
  under new lot codes: one :class:`TransferReceived` per input/output pair (the lot as shipped,
  the lot as named here). With only
  inputs or only outputs (EPCIS lets one transformation span several events joined by
  ``transformationID``) -> :class:`MaterialConsumed` / :class:`MaterialProduced` with
  ``batch_id`` = ``transformationID``, which the store joins. A ``persistentDisposition``
  applies to the outputs (the inputs when there are none).
* An event with an ``errorDeclaration`` is the erroneous event restated: it maps to
  :class:`EventCorrected` only, naming the ids of the lot events the declared event maps to
  (computed by mapping it without the declaration: ids are stable). ``VOID`` without
  ``correctiveEventIDs``; otherwise ``SUPERSEDE``, one :class:`EventCorrected` per corrective
  event (the model holds one ``replacement_event_id``), whose replacement is the corrective
  event's first lot event (:func:`hub_event_id` ``n=0``).

**Ids and envelopes.** The record key of an EPCIS event is its ``eventID``, else
``sha256:<hex>`` of its canonical JSON without ``recordTime`` and ``errorDeclaration`` (so a
re-send and a later error declaration find the same key). The ``n``-th lot event mapped from
it gets ``stable_event_id(system_instance, "epcis-event", f"{key}#{n}")``; corrections use
``f"{key}#errorDeclaration@{declarationTime in UTC}#{n}"``. ``occurred_at`` is ``eventTime`` in the
``eventTimeZoneOffset`` (a correction: ``declarationTime`` as written); ``recorded_at`` is
``recordTime``, else ``occurred_at`` (never the clock: a re-send must give identical events);
``sequence`` is ``n``; ``correlation_id`` is the EPCIS event key. The site is
:attr:`EpcisMapping.location_sites` of ``bizLocation``, else of ``readPoint``, else
:attr:`EpcisMapping.default_site`.

**Fields EPCIS does not carry** are filled from the event, never invented:

* ``item.description``: :attr:`EpcisMapping.item_descriptions` (by GTIN-14 or URI), else a
  master-data name (``epcisHeader`` / query ``vocabularyList``), else ``"unknown (not in EPCIS
  event)"``; ``item_code`` is ``"unknown"`` for identifiers without a GTIN.
* parties (``supplier`` from ``sourceList``, ``customer`` from ``destinationList``, owning
  before possessing party): ``Party(party_id=<id>, name=<party_names / master data / the id>)``,
  else :data:`PARTY_UNKNOWN`.
* locations: the event's place is ``bizLocation``, else ``readPoint`` (a shipment leaves from
  the ``sourceList`` location if given); partners' places are the ``location`` entries of
  ``sourceList`` / ``destinationList``; names from ``location_names`` / master data / the id;
  absent -> :data:`LOCATION_UNKNOWN`.
* ``reference_document``: the highest-ranked business transaction
  (:attr:`EpcisMapping.document_types`), ``doc_type`` its type (``"unknown"`` if untyped),
  ``number`` its URI; without one, ``DocumentRef("EPCIS_EVENT", <event key>)``: the EPCIS
  event itself is the record. Transfers use the same transaction as ``transfer_id``, so both
  sides of a transfer must carry it.
* ``actor`` (statuses, corrections, destruction): :attr:`EpcisMapping.actor`, else the system
  instance. Correction ``reason``: the ``errorDeclaration`` reason, else
  ``"not stated in the errorDeclaration"``.

**Nothing is dropped silently.** What the model cannot hold is returned as an
:class:`UnmappedNote` (JSON pointer, what, why, and the lot and quantity if it is one) by
:func:`map_document_detailed`, logged by :func:`map_document`, and refused with
:attr:`EpcisMapping.strict`: objects no lot event carries (unmapped ``bizStep``, ``DELETE``),
quantities that only a quantity-less event (alias, sample, status) carries, other business
transactions, a ``disposition`` that became no status, ``sensorElementList``, ``ilmd``,
``certificationInfo``, extension fields, and events of extension types. A quantity element
without ``quantity`` in an event that needs one raises :class:`EpcisMappingError`.

Example::

    mapping = EpcisMapping(system_instance="epcis-alp", default_site="ALP",
                           location_sites={"urn:epc:id:sgln:7612345.00001.0": "ALP"})
    events = map_document(parse_document(body), mapping)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urlsplit

from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import ValidationError as PydanticValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from schemas import epcis_vocab
from schemas.errors import (
    ConfigurationError,
    DataError,
    EventValidationError,
    InvalidDocumentError,
)
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
    LotQuantity,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
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

log = logging.getLogger("lothub.connectors.epcis")

#: The copied GS1 schemas (see SOURCE.md there).
SCHEMA_DIR: Final = Path(__file__).with_name("epcis_schema")
#: ``$id`` of the document schema; every ``$ref`` resolves against the copies in SCHEMA_DIR.
DOCUMENT_SCHEMA_ID: Final = (
    "https://gs1.github.io/EPCIS/JSON-Schema/EPCIS-Document-JSON-Schema.json"
)
#: Document ``type`` -> its definition in the document schema (both are capture input).
DOCUMENT_DEFINITIONS: Final = {
    "EPCISDocument": "epcisDocument",
    "EPCISQueryDocument": "epcisQueryDocument",
}
#: ``record_kind`` of every lot event this connector makes (see :func:`hub_event_id`).
RECORD_KIND: Final = "epcis-event"
#: UN/CEFACT Rec 20 "piece": an EPCIS quantity without ``uom`` is a count.
COUNT_UNIT: Final = "H87"
UNKNOWN_ID: Final = "unknown"
UNKNOWN_NAME: Final = "unknown (not in EPCIS event)"
#: Placeholders for required model fields an EPCIS event does not state.
PARTY_UNKNOWN: Final = Party(party_id=UNKNOWN_ID, name=UNKNOWN_NAME)
LOCATION_UNKNOWN: Final = Location(location_id=UNKNOWN_ID, name=UNKNOWN_NAME)
#: Schema errors quoted in an exception message (all of them stay in ``issues``).
MAX_ISSUES_IN_MESSAGE: Final = 10

# Where each kind of object sits in each event type (identifier lists, quantity lists).
_OBJECT_FIELDS: Final = {
    "ObjectEvent": ("epcList", "quantityList"),
    "TransactionEvent": ("epcList", "quantityList"),
    "AggregationEvent": ("childEPCs", "childQuantityList"),
    "AssociationEvent": ("childEPCs", "childQuantityList"),
}
_INPUT_FIELDS: Final = ("inputEPCList", "inputQuantityList")
_OUTPUT_FIELDS: Final = ("outputEPCList", "outputQuantityList")
# Fields the mapper reads or deliberately notes; anything else with a colon is an extension.
_NOTED_FIELDS: Final = ("sensorElementList", "ilmd", "certificationInfo")
_ALIAS_KINDS: Final = {"sscc": "SSCC", "grai": "GRAI", "giai": "GIAI", "sgln": "SGLN"}
# GS1 application identifiers that start the path of a Digital Link URI, and their schemes.
_DL_PRIMARY: Final = {"01": "gtin", "00": "sscc", "8003": "grai", "8004": "giai", "414": "sgln"}
# CBV vocabularies: short name in EPCIS 2.0 JSON; the URN and Web URI forms are read too.
_CBV_FORMS: Final = {
    "bizstep": ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
    "disp": ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
    "btt": ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-"),
    "sdt": ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-"),
    "er": ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-"),
}
# Master-data attributes that name a location, a party or a product (most specific first).
_NAME_ATTRIBUTES: Final = (
    "name",
    "descriptionShort",
    "regulatedProductName",
    "tradeItemDescription",
)


# --------------------------------------------------------------------------- results and errors


@dataclass(frozen=True, slots=True)
class SchemaIssue:
    """One reason a document is not valid EPCIS: where (JSON pointer) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class EpcisValidationError(InvalidDocumentError):
    """Not JSON, not an EPCIS document, or a document breaking the GS1 EPCIS 2.0 JSON Schema.

    ``issues`` lists every schema error (:class:`SchemaIssue`: its JSON pointer); the message
    quotes the first :data:`MAX_ISSUES_IN_MESSAGE`.
    """

    reason_code = "invalid-epcis"
    max_quoted = MAX_ISSUES_IN_MESSAGE
    issues: tuple[SchemaIssue, ...]


class EpcisMappingError(DataError):
    """A valid EPCIS event that cannot become lot events without guessing."""

    reason_code = "unmappable-epcis"


@dataclass(frozen=True, slots=True)
class UnmappedNote:
    """Something in an EPCIS event no lot event carries, and why.

    ``lot`` and ``quantity`` are set when the note is about an object (a lot, or the quantity
    of one) so a reader can see exactly what the hub does not know.
    """

    event_key: str
    pointer: str
    what: str
    reason: str
    lot: str | None = None
    quantity: Quantity | None = None

    def __str__(self) -> str:
        return f"{self.pointer}: {self.what}: {self.reason}"


@dataclass(frozen=True, slots=True)
class EpcisEventOutcome:
    """What one EPCIS event of a document became: lot events and notes, or an error."""

    index: int
    pointer: str
    key: str
    events: tuple[LotEventBase, ...]
    unmapped: tuple[UnmappedNote, ...]
    error: DataError | None = None


@dataclass(frozen=True, slots=True)
class EpcisMappingResult:
    """The outcome of every event of one document, in document order."""

    outcomes: tuple[EpcisEventOutcome, ...]

    @property
    def events(self) -> list[LotEventBase]:
        """The lot events of every event that mapped."""
        return [e for o in self.outcomes if o.error is None for e in o.events]

    @property
    def unmapped(self) -> list[UnmappedNote]:
        """Every note of every event that mapped."""
        return [n for o in self.outcomes if o.error is None for n in o.unmapped]

    @property
    def failed(self) -> list[EpcisEventOutcome]:
        """The events that could not be mapped."""
        return [o for o in self.outcomes if o.error is not None]


@dataclass(frozen=True, kw_only=True)
class EpcisMapping:
    """How one EPCIS source (a system instance) is mapped.

    Only the two identifiers are required; the mappings name what EPCIS events leave out
    (site of a location, names) instead of guessing it.

    Example::

        EpcisMapping(system_instance="epcis-alp", default_site="ALP",
                     location_sites={"urn:epc:id:sgln:7612345.00001.0": "ALP",
                                     "urn:epc:id:sgln:0012345.11111.0": "BRK"})
    """

    #: the EPCIS source, part of every event id (``epcis-alp``)
    system_instance: str
    #: the hub site of events at locations ``location_sites`` does not name
    default_site: str
    #: ``bizLocation`` / ``readPoint`` / source-destination location id -> hub site code
    location_sites: Mapping[str, str] = field(default_factory=dict)
    #: location id -> display name (before master data and the id itself)
    location_names: Mapping[str, str] = field(default_factory=dict)
    #: party id (PGLN, SGLN) -> name
    party_names: Mapping[str, str] = field(default_factory=dict)
    #: GTIN-14, or class / instance URI as written -> product description
    item_descriptions: Mapping[str, str] = field(default_factory=dict)
    #: business transaction types (CBV short names), best first: the reference document and
    #: transfer id; types not listed rank after these, in the event's order
    document_types: tuple[str, ...] = ("desadv", "bol", "po", "inv", "prodorder", "rma")
    #: transformation kind by ``bizStep`` (anything else: PRODUCTION); by default
    #: ``repackaging`` and lothub's own bizSteps (:data:`schemas.epcis_vocab.TRANSFORMATION_BIZSTEPS`)
    transformation_kinds: Mapping[str, TransformationKind] = field(
        default_factory=lambda: {
            step: kind
            for kind, step in epcis_vocab.TRANSFORMATION_BIZSTEPS.items()
            if kind is not TransformationKind.PRODUCTION
        }
    )
    #: ``actor`` of statuses, corrections and destructions (default: the system instance)
    actor: str | None = None
    #: raise :class:`EpcisMappingError` instead of returning notes about unmapped data
    strict: bool = False

    def __post_init__(self) -> None:
        if not self.system_instance.strip() or not self.default_site.strip():
            raise ConfigurationError("an EPCIS mapping needs a system_instance and a default_site")


# --------------------------------------------------------------------------- parsing, validation


def _no_constant(name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) and EPCIS do not.
    raise ValueError(f"{name} is not a JSON number")


def parse_document(body: bytes) -> dict[str, Any]:
    """Parse and validate an EPCIS document sent as JSON / JSON-LD (UTF-8).

    Decimals stay exact (``200.5`` is ``Decimal("200.5")``, never a float). Raises
    :class:`EpcisValidationError` for bytes that are not JSON and for a document that
    :func:`validate_document` refuses.
    """
    try:
        text = body.decode("utf-8-sig")
        doc = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise EpcisValidationError(
            "not UTF-8", [SchemaIssue("/", f"byte {exc.start}: {exc.reason}")]
        ) from exc
    except json.JSONDecodeError as exc:
        issue = SchemaIssue("/", f"line {exc.lineno}, column {exc.colno}: {exc.msg}")
        raise EpcisValidationError("not valid JSON", [issue]) from exc
    except ValueError as exc:
        raise EpcisValidationError("not valid JSON", [SchemaIssue("/", str(exc))]) from exc
    except RecursionError as exc:  # "[[[[…" a million deep: refused, not a crash
        raise EpcisValidationError(
            "not valid JSON", [SchemaIssue("/", "nested too deeply")]
        ) from exc
    return validate_document(doc)


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _format_checker() -> FormatChecker:
    # The schemas lean on "uri" (extension field names must be URIs, so a misspelt standard
    # field is an error) and "date-time". jsonschema checks them only if optional packages
    # happen to be installed; these two checks make validation the same everywhere.
    checker = FormatChecker(formats=())

    @checker.checks("uri")
    def is_uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        return bool(_URI.match(value)) and not _BAD_ESCAPE.search(value)

    @checker.checks("date-time", raises=ValueError)
    def is_date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _DATE_TIME.match(value.upper()):
            return False
        datetime.fromisoformat(value.upper())  # ranges: month 13 or hour 25 raise
        return True

    return checker


@lru_cache(maxsize=1)
def _registry() -> Registry[Any]:
    resources: list[tuple[str, Resource[Any]]] = []
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        try:
            contents = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"EPCIS schema {path} cannot be read: {exc}") from exc
        resources.append((contents["$id"], DRAFT7.create_resource(contents)))
    if not resources:
        raise ConfigurationError(f"no EPCIS JSON Schemas in {SCHEMA_DIR}")
    # No retrieve function: a $ref outside the copies is an error, never a download.
    return Registry().with_resources(resources)


@lru_cache(maxsize=len(DOCUMENT_DEFINITIONS))
def _validator(definition: str) -> Draft7Validator:
    schema = {"$ref": f"{DOCUMENT_SCHEMA_ID}#/definitions/{definition}"}
    return Draft7Validator(schema, registry=_registry(), format_checker=_format_checker())


def _pointer(path: Sequence[str | int]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _issue(error: SchemaError) -> SchemaIssue:
    message = error.message
    if error.validator in ("anyOf", "oneOf") and isinstance(error.instance, dict | list):
        # The default message repeats the whole object; name the deepest reason instead (a
        # shallow one, like a missing alternative field, is rarely what went wrong).
        context = error.context or []
        closest = max(context, key=lambda e: len(e.absolute_path)) if context else None
        message = f"matches none of the allowed forms ({error.validator})"
        if closest is not None:
            where = _pointer([*error.absolute_path, *closest.relative_path])
            message += f"; closest: {where}: {closest.message}"
    if len(message) > 300:
        message = message[:297] + "..."
    return SchemaIssue(_pointer(error.absolute_path), message)


def validate_document(doc: Any) -> dict[str, Any]:
    """Validate a parsed EPCIS document against the GS1 EPCIS 2.0 JSON Schema; return it.

    Only ``EPCISDocument`` and ``EPCISQueryDocument`` are accepted (single events belong to
    ``POST /events``, which the hub does not offer). Raises :class:`EpcisValidationError`
    listing every schema error with its JSON pointer.
    """
    if not isinstance(doc, dict):
        raise EpcisValidationError(
            "not an EPCIS document", [SchemaIssue("/", "the document must be a JSON object")]
        )
    definition = DOCUMENT_DEFINITIONS.get(str(doc.get("type")))
    if definition is None:
        allowed = " or ".join(DOCUMENT_DEFINITIONS)
        raise EpcisValidationError(
            "not an EPCIS document",
            [SchemaIssue("/type", f"is {doc.get('type')!r}; must be {allowed}")],
        )
    issues = {_issue(e) for e in _validator(definition).iter_errors(doc)}
    if issues:
        ordered = sorted(issues, key=lambda i: (i.path, i.message))
        raise EpcisValidationError("does not conform to the GS1 EPCIS 2.0 JSON Schema", ordered)
    return doc


# --------------------------------------------------------------------------- identifiers


@dataclass(frozen=True, slots=True)
class EpcisIdentifier:
    """What an EPC, EPC class or GS1 Digital Link URI says, as far as lots are concerned.

    ``scheme`` is the EPC scheme (``sgtin``, ``lgtin``, ``sscc``, ...; ``""`` if the URI is not
    one this module reads); ``gtin`` the GTIN-14 of a trade item; ``lot`` its batch/lot;
    ``serial`` its serial number; ``product_class`` the URN / Digital Link of the GTIN alone;
    ``site`` the hub site a lothub lot URN names (scheme ``lothub``).
    """

    uri: str
    scheme: str
    gtin: str | None = None
    lot: str | None = None
    serial: str | None = None
    product_class: str | None = None
    site: str | None = None


def gtin_check_digit(digits: str) -> str:
    """The GS1 mod-10 check digit of ``digits`` (the 13 leading digits of a GTIN-14)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def _gtin(company_prefix: str, item_reference: str) -> str | None:
    # EPC Tag Data Standard: the indicator digit leads the item reference; GTIN-14 is
    # indicator + company prefix + rest of the item reference + check digit.
    if not (company_prefix.isdigit() and item_reference.isdigit()):
        return None
    if len(company_prefix) + len(item_reference) != 13:
        return None
    body = item_reference[0] + company_prefix + item_reference[1:]
    return body + gtin_check_digit(body)


def _parse_urn(uri: str) -> EpcisIdentifier:
    parts = uri.split(":", 4)
    if len(parts) != 5 or parts[0].lower() != "urn" or parts[1].lower() != "epc":
        return EpcisIdentifier(uri, "")
    kind, scheme, body = parts[2].lower(), parts[3].lower(), parts[4]
    fields = body.split(".", 2)
    if scheme in {"sgtin", "lgtin"} and len(fields) == 3:
        gtin = _gtin(fields[0], fields[1])
        product = f"urn:epc:idpat:sgtin:{fields[0]}.{fields[1]}.*" if gtin else None
        value = unquote(fields[2])  # EPC URIs percent-escape " % & / < > ?
        if kind == "class" and scheme == "lgtin":
            return EpcisIdentifier(uri, scheme, gtin, lot=value, product_class=product)
        if kind == "id" and scheme == "sgtin":
            return EpcisIdentifier(uri, scheme, gtin, serial=value, product_class=product)
        if kind == "idpat" and scheme == "sgtin" and value == "*":
            return EpcisIdentifier(uri, scheme, gtin, product_class=product)
    return EpcisIdentifier(uri, scheme if kind in {"id", "idpat", "class"} else "")


def _parse_digital_link(uri: str) -> EpcisIdentifier:
    segments = [s for s in urlsplit(uri).path.split("/") if s]
    # The primary key may follow a custom path prefix (https://example.com/shop/01/...).
    start = next(
        (i for i, s in enumerate(segments[:-1]) if s in _DL_PRIMARY and segments[i + 1]), None
    )
    if start is None:
        return EpcisIdentifier(uri, "")
    values = [unquote(v) for v in segments[start + 1 :: 2]]
    pairs = dict(zip(segments[start::2], values, strict=False))
    scheme = _DL_PRIMARY[segments[start]]
    if scheme != "gtin":
        return EpcisIdentifier(uri, scheme)
    raw = pairs["01"]
    gtin = raw.zfill(14) if raw.isdigit() and len(raw) in {8, 12, 13, 14} else None
    if gtin is None or gtin_check_digit(gtin[:13]) != gtin[13]:
        return EpcisIdentifier(uri, "")
    base = uri[: uri.index("/01/")] if "/01/" in uri else ""
    product = f"{base}/01/{raw}" if base else None
    serial = pairs.get("21")
    return EpcisIdentifier(
        uri, "sgtin" if serial else "lgtin", gtin, pairs.get("10"), serial, product
    )


def parse_identifier(uri: str) -> EpcisIdentifier:
    """Read an EPC URN (``urn:epc:id:…``, ``urn:epc:class:…``, ``urn:epc:idpat:…``) or Digital Link.

    A lothub lot URN (``urn:lothub:lot:SITE:CODE``, :mod:`schemas.epcis_vocab`) is scheme
    ``lothub`` with its lot code and site. Anything else (a private URI) is returned with
    ``scheme=""``; the mapper then carries it as written.
    """
    if uri[:8].lower() == "urn:epc:":
        return _parse_urn(uri)
    lothub = epcis_vocab.parse_urn(uri)
    if lothub is not None and lothub[0] == "lot":
        return EpcisIdentifier(uri, "lothub", lot=lothub[1][1], site=lothub[1][0])
    if uri[:7].lower() == "http://" or uri[:8].lower() == "https://":
        return _parse_digital_link(uri)
    return EpcisIdentifier(uri, "")


# --------------------------------------------------------------------------- event keys and ids


def _canonical(value: Any) -> Any:
    # Numbers become tagged decimal strings so 200.5 parsed as float or Decimal hash alike.
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return {"$number": format(Decimal(str(value)).normalize(), "f")}
    return str(value)


def event_key(event: Mapping[str, Any]) -> str:
    """The record key of an EPCIS event: its ``eventID``, else a hash of its content.

    The hash leaves out ``recordTime`` (stamped by whichever repository captured it) and
    ``errorDeclaration`` (added when the event is later declared erroneous), so the event
    and its error declaration have the same key.
    """
    event_id = event.get("eventID")
    if isinstance(event_id, str) and event_id.strip():
        return event_id.strip()
    content = {k: v for k, v in event.items() if k not in {"recordTime", "errorDeclaration"}}
    text = json.dumps(
        _canonical(content), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def hub_event_id(system_instance: str, epcis_key: str, n: int = 0) -> str:
    """The id of the ``n``-th lot event mapped from the EPCIS event with key ``epcis_key``."""
    return stable_event_id(system_instance, RECORD_KIND, f"{epcis_key}#{n}")


def document_events(doc: Mapping[str, Any]) -> tuple[list[Any], str]:
    """The event list of an ``EPCISDocument`` or ``EPCISQueryDocument`` and its JSON pointer."""
    body = doc.get("epcisBody") or {}
    if doc.get("type") == "EPCISQueryDocument":
        results = (body.get("queryResults") or {}).get("resultsBody") or {}
        return list(results.get("eventList") or []), "/epcisBody/queryResults/resultsBody/eventList"
    return list(body.get("eventList") or []), "/epcisBody/eventList"


_LOT_FACTS: Final = (epcis_vocab.ITEM_CODE_ATTRIBUTE, epcis_vocab.SUPPLIER_LOT_ATTRIBUTE)


def _fact_key(attribute: str, element_id: str) -> str:
    # "|" never stands unescaped in a URI, so these keys cannot meet an element id
    return f"{attribute}|{element_id}"


def _master_names(doc: Mapping[str, Any]) -> dict[str, str]:
    """Names of locations, parties and products from the document's master data.

    A lothub lot's item code and supplier lot (:data:`_LOT_FACTS`) are kept too, under
    :func:`_fact_key`.
    """
    vocabularies: list[Any] = []
    header = doc.get("epcisHeader")
    if isinstance(header, dict):
        vocabularies += (header.get("epcisMasterData") or {}).get("vocabularyList") or []
    if doc.get("type") == "EPCISQueryDocument":
        results = ((doc.get("epcisBody") or {}).get("queryResults") or {}).get("resultsBody")
        vocabularies += (results or {}).get("vocabularyList") or []
    names: dict[str, str] = {}
    for vocabulary in vocabularies:
        for element in vocabulary.get("vocabularyElementList") or []:
            found: dict[str, str] = {}
            for attribute in element.get("attributes") or []:
                local = re.split(r"[#:/]", str(attribute.get("id", "")))[-1]
                value = attribute.get("attribute")
                fact = attribute.get("id")
                element_id = element.get("id")
                if fact in _LOT_FACTS and isinstance(element_id, str) and isinstance(value, str):
                    names.setdefault(_fact_key(fact, element_id), value.strip())
                if local in _NAME_ATTRIBUTES and isinstance(value, str) and value.strip():
                    found.setdefault(local, value.strip())
            best = next((found[a] for a in _NAME_ATTRIBUTES if a in found), None)
            if best and isinstance(element.get("id"), str):
                names.setdefault(element["id"], best)
    return names


def _plain(uri: str, kind: str) -> str:
    """The value a lothub URN of ``kind`` stands for (a party or batch id); others as written."""
    lothub = epcis_vocab.parse_urn(uri)
    return lothub[1][0] if lothub is not None and lothub[0] == kind else uri


def _cbv(value: Any, vocabulary: str) -> str | None:
    """A CBV value as its short name (other URIs are returned as written)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text: str = value.strip()
    for prefix in _CBV_FORMS[vocabulary]:
        if text.lower().startswith(prefix.lower()):
            return text[len(prefix) :]
    return text


def _offset(text: str, where: str) -> timezone:
    match = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text.strip())
    if match is None:
        raise EpcisMappingError(f"{where}: eventTimeZoneOffset {text!r} is not ±hh:mm")
    sign = -1 if match[1] == "-" else 1
    return timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))


def _time(text: Any, where: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(text).strip().upper())
    except ValueError:
        raise EpcisMappingError(f"{where}: cannot read date-time {text!r}") from None
    if at.tzinfo is None:
        raise EpcisMappingError(f"{where}: date-time {text!r} has no UTC offset")
    return at


# --------------------------------------------------------------------------- mapping


@dataclass(frozen=True, slots=True)
class _Object:
    """One thing an event is about, as the lot model sees it."""

    pointer: str
    uri: str
    lot: str
    item: Item
    #: None: a quantity element that states no quantity
    quantity: Quantity | None
    #: True for a quantity element with an explicit quantity (that amount must be carried)
    counted: bool
    #: a serialised item of a stated lot (Digital Link /10/…/21/…): its URI becomes an alias
    serial_of_lot: bool = False
    #: the hub site a lothub lot URN names
    site: str | None = None


class _EventMapper:
    """Maps one EPCIS event; collects its lot events and notes, raises on what it cannot map."""

    def __init__(
        self,
        mapping: EpcisMapping,
        event: Mapping[str, Any],
        pointer: str,
        names: Mapping[str, str],
    ) -> None:
        self.mapping = mapping
        self.event = event
        self.pointer = pointer
        self.names = names
        self.key = event_key(event)
        self.record_base = self.key
        self.type = str(event.get("type", ""))
        self.bizstep = _cbv(event.get("bizStep"), "bizstep")
        self.action = str(event.get("action", "")).upper()
        self.disposition = _cbv(event.get("disposition"), "disp")
        self.parent = str(event.get("parentID") or "").strip() or None
        self.events: list[LotEventBase] = []
        self.notes: list[UnmappedNote] = []
        self.used: set[str] = set()  # object pointers a lot event names
        self.carried: set[str] = set()  # object pointers a lot event carries the quantity of
        self.used_transactions: set[int] = set()
        self.disposition_used = False
        self.occurred = self._occurred()
        recorded = event.get("recordTime")
        self.recorded = _time(recorded, f"{pointer}/recordTime") if recorded else self.occurred
        business, read_point = self._ref_id("bizLocation"), self._ref_id("readPoint")
        self.site = self._site_of(business) or self._site_of(read_point) or mapping.default_site
        here = business or read_point
        self.here = (
            self._location(here, self.site)
            if here
            else Location(location_id=UNKNOWN_ID, name=UNKNOWN_NAME, site=self.site)
        )
        self.transactions = self._transactions()

    # ---- reading the event

    def _occurred(self) -> datetime:
        at = _time(self.event.get("eventTime"), f"{self.pointer}/eventTime")
        offset = self.event.get("eventTimeZoneOffset")
        if offset is None:
            return at
        # The plant's offset is the event's, not the one eventTime happens to be written in.
        return at.astimezone(_offset(str(offset), f"{self.pointer}/eventTimeZoneOffset"))

    def _ref_id(self, name: str) -> str | None:
        ref = self.event.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("id"), str) and ref["id"].strip():
            return str(ref["id"]).strip()
        return None

    def _site_of(self, location_id: str | None) -> str | None:
        if not location_id:
            return None
        lothub = epcis_vocab.parse_urn(location_id)
        own = lothub[1][0] if lothub and lothub[0] == "loc" and lothub[1][0] else None
        return self.mapping.location_sites.get(location_id) or own

    def _location(self, location_id: str, site: str | None) -> Location:
        name = (
            self.mapping.location_names.get(location_id)
            or self.names.get(location_id)
            or location_id
        )
        lothub = epcis_vocab.parse_urn(location_id)
        plain = lothub[1][1] if lothub and lothub[0] == "loc" else location_id
        return Location(location_id=plain, name=name, site=self._site_of(location_id) or site)

    def _party(self, party_id: str) -> Party:
        name = self.mapping.party_names.get(party_id) or self.names.get(party_id) or party_id
        return Party(party_id=_plain(party_id, "party"), name=name)

    def _partner(self, list_name: str, key: str) -> tuple[Party, Location, str | None]:
        """The party, place and (if it is one of ours) site at one end of a movement."""
        ends: dict[str, str] = {}
        for entry in self.event.get(list_name) or []:
            kind = _cbv(entry.get("type"), "sdt")
            value = entry.get(key)
            if kind and isinstance(value, str) and value.strip():
                ends.setdefault(kind, value.strip())
        party_id = ends.get("owning_party") or ends.get("possessing_party")
        location_id = ends.get("location")
        party = self._party(party_id) if party_id else PARTY_UNKNOWN
        place = self._location(location_id, None) if location_id else LOCATION_UNKNOWN
        return party, place, self._site_of(location_id)

    def _transactions(self) -> list[tuple[int, str, str]]:
        """(index, CBV type or ``unknown``, URI) of every business transaction, best first."""
        found: list[tuple[int, str, str]] = []
        for index, entry in enumerate(self.event.get("bizTransactionList") or []):
            uri = entry.get("bizTransaction")
            if isinstance(uri, str) and uri.strip():
                found.append((index, _cbv(entry.get("type"), "btt") or UNKNOWN_ID, uri.strip()))
        ranks = {kind: rank for rank, kind in enumerate(self.mapping.document_types)}
        return sorted(found, key=lambda t: (ranks.get(t[1], len(ranks)), t[0]))

    def document(self) -> DocumentRef:
        """The reference document: the best business transaction, else the EPCIS event."""
        if not self.transactions:
            return DocumentRef(doc_type="EPCIS_EVENT", number=self.key)
        index, kind, uri = self.transactions[0]
        self.used_transactions.add(index)
        lothub = epcis_vocab.parse_urn(uri)
        if lothub is not None and lothub[0] == "doc":  # type and number as the hub had them
            return DocumentRef(doc_type=lothub[1][0], number=lothub[1][1])
        return DocumentRef(doc_type=kind, number=uri)

    def batch_id(self) -> str:
        """The production order of a commissioning, else the EPCIS event itself."""
        for index, kind, uri in self.transactions:
            if kind == "prodorder":
                self.used_transactions.add(index)
                return uri
        return self.key

    def item(self, ident: EpcisIdentifier) -> Item:
        """The product: GTIN-14 and the best description anyone gave (never made up)."""
        keys = [k for k in (ident.gtin, ident.uri, ident.product_class) if k]
        configured = (self.mapping.item_descriptions.get(k) for k in keys)
        described = (self.names.get(k) for k in keys)
        description = next((d for d in (*configured, *described) if d), UNKNOWN_NAME)
        code = self.names.get(_fact_key(epcis_vocab.ITEM_CODE_ATTRIBUTE, ident.uri))
        return Item(item_code=ident.gtin or code or UNKNOWN_ID, description=description)

    def objects(self, epc_list: str, quantity_list: str) -> list[_Object]:
        """The objects of one EPC list and one quantity list, in document order."""
        objects: list[_Object] = []
        for i, uri in enumerate(self.event.get(epc_list) or []):
            ident = parse_identifier(str(uri).strip())
            piece = Quantity(value=Decimal(1), unit=COUNT_UNIT)  # an instance is one thing
            objects.append(
                _Object(
                    f"{self.pointer}/{epc_list}/{i}", ident.uri, ident.lot or ident.uri,
                    self.item(ident), piece, counted=False,
                    serial_of_lot=ident.lot is not None and ident.scheme != "lothub", site=ident.site,
                )
            )  # fmt: skip
        for i, element in enumerate(self.event.get(quantity_list) or []):
            pointer = f"{self.pointer}/{quantity_list}/{i}"
            ident = parse_identifier(str(element.get("epcClass", "")).strip())
            value = element.get("quantity")
            quantity = None
            if value is not None:
                amount = Decimal(str(value))
                if amount < 0:
                    raise EpcisMappingError(f"{pointer}: quantity {value} is negative")
                # No uom: a count of instances (EPCIS); a uom is already a Rec 20 code.
                quantity = Quantity(value=amount, unit=str(element.get("uom") or COUNT_UNIT))
            objects.append(
                _Object(
                    pointer, ident.uri, ident.lot or ident.uri, self.item(ident), quantity,
                    counted=quantity is not None, site=ident.site,
                )
            )  # fmt: skip
        return objects

    def need_quantity(self, obj: _Object, what: str) -> Quantity:
        """The object's quantity; an event that moves stock cannot do without one."""
        if obj.quantity is None:
            raise EpcisMappingError(
                f"{obj.pointer}: {obj.uri} states no quantity, and a {what} needs one "
                "(the hub never assumes an amount)"
            )
        return obj.quantity

    @property
    def actor(self) -> str:
        """Who to name as actor: EPCIS events name no person."""
        return self.mapping.actor or self.mapping.system_instance

    # ---- building lot events

    def add(
        self,
        cls: type[LotEventBase],
        objects: Sequence[_Object] = (),
        *,
        carries: bool = False,
        occurred_at: datetime | None = None,
        **fields: Any,
    ) -> None:
        """Build the next lot event; it names ``objects`` (and ``carries`` their quantities)."""
        n = len(self.events)
        envelope = Envelope(
            event_id=stable_event_id(
                self.mapping.system_instance, RECORD_KIND, f"{self.record_base}#{n}"
            ),
            event_type=cls.__name__,
            source=Source(
                system_kind=SystemKind.EPCIS,
                system_instance=self.mapping.system_instance,
                site=self.site,
            ),
            occurred_at=occurred_at or self.occurred,
            recorded_at=self.recorded,
            sequence=n,
            correlation_id=self.key,
        )
        self.events.append(cls(envelope=envelope, **fields))
        for obj in objects:
            self.used.add(obj.pointer)
            if carries:
                self.carried.add(obj.pointer)

    def note(self, pointer: str, what: str, reason: str, obj: _Object | None = None) -> None:
        """Record something of the event that no lot event carries."""
        self.notes.append(
            UnmappedNote(
                self.key,
                pointer,
                what,
                reason,
                lot=obj.lot if obj else None,
                quantity=obj.quantity if obj and obj.counted else None,
            )
        )

    # ---- the event

    def run(self) -> None:
        """Map the event: an error declaration, an event about objects, or a transformation."""
        declaration = self.event.get("errorDeclaration")
        if isinstance(declaration, dict):
            self.correction(declaration)
            return
        if self.type in _OBJECT_FIELDS:
            self.object_event(*_OBJECT_FIELDS[self.type])
        elif self.type == "TransformationEvent":
            self.transformation()
        else:
            self.note(
                self.pointer,
                f"event type {self.type!r}",
                "an extension event type; the hub maps the five EPCIS 2.0 event types",
            )
            return
        self.remaining_notes()

    def object_event(self, epc_list: str, quantity_list: str) -> None:
        """Object, aggregation, transaction and association events: by bizStep, then aliases."""
        objects = self.objects(epc_list, quantity_list)
        handlers = {
            "receiving": self.receiving,
            "shipping": self.shipping,
            "commissioning": self.commissioning,
            "inspecting": self.inspecting,
            "sampling": self.sampling,
            "destroying": self.destroying,
        }
        handler = handlers.get(self.bizstep or "")
        if handler is not None:
            for obj in objects:
                handler(obj)
        if self.parent and self.action in {"ADD", "OBSERVE"}:
            kind = _ALIAS_KINDS.get(parse_identifier(self.parent).scheme, "EPCIS_PARENT")
            for obj in objects:
                # the alias says how much of the lot it covers unless a flow already carries it
                quantity = obj.quantity if obj.pointer not in self.carried else None
                self.add(
                    LotAliasLinked, [obj], carries=quantity is not None, lot=obj.lot,
                    alias_kind=kind, alias=self.parent, quantity=quantity,
                )  # fmt: skip
        self.serial_aliases(objects)
        self.statuses(objects)
        self.unused(objects)

    def receiving(self, obj: _Object) -> None:
        """A receipt from a supplier, or the arrival of a transfer from another site of ours."""
        quantity = self.need_quantity(obj, "receipt")
        supplier, ship_from, from_site = self._partner("sourceList", "source")
        document = self.document()
        if self.disposition == "returned":
            # A customer sends it back: the source's owner is the customer.
            self.disposition_used = True
            self.add(
                CustomerReturn, [obj], carries=True,
                lot=obj.lot, item=obj.item, quantity=quantity, customer=supplier,
                receiving_location=self.here, reason_code="returned", reference_document=document,
            )  # fmt: skip
            return
        if from_site is not None and from_site != self.site:
            # From another site of ours: the lot keeps its code, the transfer links the two.
            self.add(
                TransferReceived, [obj], carries=True,
                transfer_id=document.number, shipped_lot=obj.lot, shipped_lot_site=from_site,
                lot=obj.lot, item=obj.item, quantity=quantity,
                from_location=ship_from, receiving_location=self.here, reference_document=document,
            )  # fmt: skip
            return
        self.add(
            LotReceived, [obj], carries=True,
            lot=obj.lot, item=obj.item, quantity=quantity, supplier=supplier,
            # A GS1 lot is the producer's and travels with the goods: ours is the supplier's.
            supplier_lot=self.names.get(_fact_key(epcis_vocab.SUPPLIER_LOT_ATTRIBUTE, obj.uri))
            or obj.lot,
            receiving_location=self.here, ship_from=ship_from, reference_document=document,
        )  # fmt: skip

    def shipping(self, obj: _Object) -> None:
        """A shipment to a customer, or a transfer to another site of ours."""
        quantity = self.need_quantity(obj, "shipment")
        customer, ship_to, to_site = self._partner("destinationList", "destination")
        _, source_place, _ = self._partner("sourceList", "source")
        ship_from = self.here if source_place is LOCATION_UNKNOWN else source_place
        document = self.document()
        if to_site is not None and to_site != self.site:
            self.add(
                TransferShipped, [obj], carries=True,
                transfer_id=document.number, lot=obj.lot, item=obj.item, quantity=quantity,
                from_location=ship_from, to_location=ship_to, reference_document=document,
            )  # fmt: skip
            return
        self.add(
            LotShipped, [obj], carries=True,
            lot=obj.lot, item=obj.item, quantity=quantity, customer=customer,
            ship_to=ship_to, ship_from=ship_from, reference_document=document,
        )  # fmt: skip

    def commissioning(self, obj: _Object) -> None:
        """The object comes into being here: production (its inputs are not in this event)."""
        quantity = self.need_quantity(obj, "production")
        self.add(
            MaterialProduced, [obj], carries=True,
            batch_id=self.batch_id(), kind=TransformationKind.PRODUCTION, location=self.here,
            lot=obj.lot, item=obj.item, quantity=quantity, reference_document=self.document(),
        )  # fmt: skip

    def sampling(self, obj: _Object) -> None:
        """A QC sample of the lot (the EPCIS event is the sample)."""
        self.add(QcSampleTaken, [obj], sample_id=self.key, lot=obj.lot, location=self.here)

    def inspecting(self, obj: _Object) -> None:
        """An inspection: a sample, and a result if the disposition states a verdict."""
        self.sampling(obj)
        if self.disposition in {"conformant", "non_conformant"}:
            self.disposition_used = True
            self.add(
                QcResultRecorded, [obj],
                sample_id=self.key, lot=obj.lot, test_code="inspecting", result=self.disposition,
                passed=self.disposition == "conformant",
            )  # fmt: skip

    def destroying(self, obj: _Object) -> None:
        """The quantity is destroyed (an inventory adjustment that only decreases stock)."""
        quantity = self.need_quantity(obj, "destruction")
        self.disposition_used = self.disposition is not None
        self.add(
            InventoryAdjusted, [obj], carries=True,
            kind=AdjustmentKind.DESTRUCTION, lot=obj.lot, item=obj.item,
            quantity_change=Quantity(value=-quantity.value, unit=quantity.unit),
            location=self.here, reason_code=self.disposition or "destroying", actor=self.actor,
        )  # fmt: skip

    def transformation(self) -> None:
        """Inputs into outputs; one side only joins its other side by transformationID."""
        inputs = self.objects(*_INPUT_FIELDS)
        outputs = self.objects(*_OUTPUT_FIELDS)
        given = _plain(str(self.event.get("transformationID") or "").strip(), "tf")
        kind = self.mapping.transformation_kinds.get(
            self.bizstep or "", TransformationKind.PRODUCTION
        )
        document = self.document() if inputs or outputs else None

        def lots(objects: Sequence[_Object], what: str) -> list[LotQuantity]:
            return [
                LotQuantity(lot=o.lot, item=o.item, quantity=self.need_quantity(o, what))
                for o in objects
            ]

        if inputs and outputs and self.bizstep == "receiving" and self.relabelled(inputs, outputs):
            pass  # each input/output pair became a TransferReceived
        elif inputs and outputs:
            self.add(
                Transformation, [*inputs, *outputs], carries=True,
                kind=kind, transformation_id=given or self.key, location=self.here,
                inputs=lots(inputs, "transformation input"),
                outputs=lots(outputs, "transformation output"), reference_document=document,
            )  # fmt: skip
        else:
            # One side only: the other is in another event with the same transformationID,
            # which joins them as a batch (the store links a batch's inputs to its outputs).
            side, cls = (inputs, MaterialConsumed) if inputs else (outputs, MaterialProduced)
            for obj in side:
                self.add(
                    cls, [obj], carries=True,
                    batch_id=given or self.key, kind=kind, location=self.here, lot=obj.lot,
                    item=obj.item, quantity=self.need_quantity(obj, "transformation"),
                    reference_document=document,
                )  # fmt: skip
        self.serial_aliases([*inputs, *outputs])
        self.statuses(outputs or inputs)
        self.unused([*inputs, *outputs])

    def relabelled(self, inputs: Sequence[_Object], outputs: Sequence[_Object]) -> bool:
        """A transfer received under a new lot code: the lot as shipped in, as named here out.

        True if the source is another site of ours and inputs and outputs pair up one to one
        (then each pair is a :class:`TransferReceived`); False leaves it a transformation.
        """
        _, ship_from, from_site = self._partner("sourceList", "source")
        if from_site is None or from_site == self.site or len(inputs) != len(outputs):
            return False
        document = self.document()
        for shipped, received in zip(inputs, outputs, strict=True):
            self.add(
                TransferReceived, [shipped, received], carries=True,
                transfer_id=document.number, shipped_lot=shipped.lot,
                shipped_lot_site=shipped.site or from_site, lot=received.lot, item=received.item,
                quantity=self.need_quantity(received, "transfer receipt"), from_location=ship_from,
                receiving_location=self.here, reference_document=document,
            )  # fmt: skip
        return True

    def serial_aliases(self, objects: Sequence[_Object]) -> None:
        """A Digital Link naming lot and serial maps to its lot; the serial stays findable."""
        for obj in objects:
            if obj.serial_of_lot:
                self.add(LotAliasLinked, lot=obj.lot, alias_kind="EPC", alias=obj.uri)

    def statuses(self, objects: Sequence[_Object]) -> None:
        """``persistentDisposition``: unset, then set, as site status codes of each lot."""
        disposition = self.event.get("persistentDisposition")
        if not isinstance(disposition, dict):
            return
        changes = [f"unset:{_cbv(d, 'disp')}" for d in disposition.get("unset") or []]
        changes += [str(_cbv(d, "disp")) for d in disposition.get("set") or []]
        reason = self.bizstep or "persistentDisposition"
        for obj in objects:
            for status in changes:
                self.add(
                    LotStatusChanged, [obj],
                    lot=obj.lot, status=status, reason_code=reason, actor=self.actor,
                )  # fmt: skip
        if changes and not objects:
            pointer = f"{self.pointer}/persistentDisposition"
            self.note(pointer, ", ".join(changes), "the event names no lots to give it")

    def unused(self, objects: Sequence[_Object]) -> None:
        """Note every object no lot event names, or whose quantity none carries."""
        for obj in objects:
            if obj.pointer not in self.used:
                if self.parent and self.action == "DELETE":
                    why = "action DELETE: the lot model cannot remove an alias"
                else:
                    why = (
                        f"no lot event for bizStep {self.bizstep or '(none)'} "
                        f"with action {self.action or '(none)'}"
                    )
                self.note(obj.pointer, obj.uri, why, obj)
            elif obj.counted and obj.pointer not in self.carried and obj.quantity is not None:
                self.note(
                    obj.pointer,
                    f"{obj.quantity.value.normalize():f} {obj.quantity.unit} of {obj.lot}",
                    "only lot events without a quantity (alias, sample, status) name it",
                    obj,
                )
        if not objects and not self.events:
            what = f"{self.type} with parentID {self.parent}" if self.parent else self.type
            self.note(self.pointer, what, "names no lots (no EPCs, no quantities)")

    def remaining_notes(self) -> None:
        """Note what the event says that no lot event carries."""
        for index, kind, uri in sorted(self.transactions):
            if index not in self.used_transactions:
                pointer = f"{self.pointer}/bizTransactionList/{index}"
                self.note(pointer, f"{kind} {uri}", "a lot event carries one reference document")
        if self.disposition and not self.disposition_used:
            self.note(
                f"{self.pointer}/disposition",
                self.disposition,
                "a disposition is no lot status (persistentDisposition is)",
            )
        for name in _NOTED_FIELDS:
            if self.event.get(name):
                self.note(f"{self.pointer}/{name}", name, "the lot model has no field for it")
        extensions = sorted(k for k in self.event if ":" in k)
        if extensions:
            self.note(self.pointer, ", ".join(extensions), "extension fields are not carried")

    # ---- error declarations

    def correction(self, declaration: Mapping[str, Any]) -> None:
        """Void (or supersede) the lot events the declared event maps to."""
        where = f"{self.pointer}/errorDeclaration"
        body = {k: v for k, v in self.event.items() if k != "errorDeclaration"}
        try:
            declared = _EventMapper(self.mapping, body, self.pointer, self.names)
            declared.run()
        except (DataError, PydanticValidationError) as exc:
            self.note(
                where,
                f"{self.type} {self.key}",
                f"the declared event does not map ({exc}), so none of its lot events exist",
            )
            return
        corrected = [e.envelope.event_id for e in declared.events]
        if not corrected:
            self.note(where, f"{self.type} {self.key}", "the declared event maps to no lot events")
            return
        at = _time(declaration.get("declarationTime"), f"{where}/declarationTime")
        # Another declaration about the same event (a later time) is another correction.
        self.record_base = f"{self.key}#errorDeclaration@{at.astimezone(UTC).isoformat()}"
        reason = _cbv(declaration.get("reason"), "er") or "not stated in the errorDeclaration"
        correctives = [str(c).strip() for c in declaration.get("correctiveEventIDs") or []]
        common: dict[str, Any] = {
            "occurred_at": at,
            "corrected_event_ids": corrected,
            "reason": reason,
        }
        if not any(correctives):
            self.add(EventCorrected, action=CorrectionAction.VOID, actor=self.actor, **common)
        for corrective in filter(None, correctives):
            self.add(
                EventCorrected, action=CorrectionAction.SUPERSEDE, actor=self.actor,
                replacement_event_id=hub_event_id(self.mapping.system_instance, corrective),
                **common,
            )  # fmt: skip
        extensions = sorted(k for k in declaration if ":" in k)
        if extensions:
            self.note(where, ", ".join(extensions), "extension fields are not carried")


def _map_event(
    mapping: EpcisMapping, event: Any, index: int, pointer: str, names: Mapping[str, str]
) -> EpcisEventOutcome:
    error: DataError
    if not isinstance(event, dict):
        error = EpcisMappingError(f"{pointer}: an event must be a JSON object")
        return EpcisEventOutcome(index, pointer, "", (), (), error)
    key = event_key(event)
    try:
        mapper = _EventMapper(mapping, event, pointer, names)
        mapper.run()
    except DataError as exc:
        return EpcisEventOutcome(index, pointer, key, (), (), exc)
    except PydanticValidationError as exc:
        # A value the model refuses (e.g. an id over 200 characters): this event is bad.
        error = EventValidationError(f"{pointer} ({key}): does not make valid lot events: {exc}")
        return EpcisEventOutcome(index, pointer, key, (), (), error)
    return EpcisEventOutcome(index, pointer, key, tuple(mapper.events), tuple(mapper.notes))


def map_document_detailed(
    doc: Mapping[str, Any], mapping: EpcisMapping, *, validated: bool = False
) -> EpcisMappingResult:
    """Map every event of a document on its own: its lot events and notes, or its error.

    The document is validated first unless ``validated`` says :func:`validate_document`
    already passed it. One event failing does not stop the others (the capture interface's
    ``proceed``); :func:`map_document` is all or nothing.
    """
    if not validated:
        validate_document(doc)
    events, prefix = document_events(doc)
    names = _master_names(doc)
    outcomes: list[EpcisEventOutcome] = []
    seen: dict[str, str] = {}
    for index, event in enumerate(events):
        pointer = f"{prefix}/{index}"
        outcome = _map_event(mapping, event, index, pointer, names)
        declaration = isinstance(event, dict) and isinstance(event.get("errorDeclaration"), dict)
        if outcome.error is None and not declaration:
            # Two events with one eventID would get the same lot event ids.
            if outcome.key in seen:
                error = EpcisMappingError(
                    f"{pointer}: eventID {outcome.key!r} is already used by {seen[outcome.key]}"
                )
                outcome = EpcisEventOutcome(index, pointer, outcome.key, (), (), error)
            else:
                seen[outcome.key] = pointer
        outcomes.append(outcome)
    return EpcisMappingResult(tuple(outcomes))


def map_document(doc: dict[str, Any], mapping: EpcisMapping) -> list[LotEventBase]:
    """Validate an EPCIS document and map it, all or nothing, to raw lot events (site codes).

    Raises :class:`EpcisValidationError` for an invalid document, and the event's error
    (:class:`EpcisMappingError`, :class:`~schemas.errors.EventValidationError`) if one event
    cannot be mapped (an :class:`EpcisMappingError` naming them all if several cannot); all
    are :class:`~schemas.errors.DataError`. What no lot event carries is logged (the notes
    themselves: :func:`map_document_detailed`), or refused with :attr:`EpcisMapping.strict`.
    """
    result = map_document_detailed(doc, mapping)
    errors = [o.error for o in result.failed if o.error is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        quoted = "; ".join(str(e) for e in errors[:MAX_ISSUES_IN_MESSAGE])
        raise EpcisMappingError(f"{len(errors)} events cannot be mapped: {quoted}") from errors[0]
    notes = result.unmapped
    if notes and mapping.strict:
        quoted = "; ".join(str(n) for n in notes[:MAX_ISSUES_IN_MESSAGE])
        raise EpcisMappingError(f"{len(notes)} things no lot event carries: {quoted}")
    for note in notes:
        log.info("%s: not carried: %s", mapping.system_instance, note)
    return result.events
