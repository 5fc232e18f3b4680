"""EPCIS 2.0: schema validation and the mapping of every GS1 example document to raw lot events.

Expected lots, quantities and units are read from each example's raw JSON by walking its EPC
and quantity lists here, independently of the connector, so an example can change without the
tests being edited. An identifier the mapping does not put into a lot event must be named, with
its quantity, in an unmapped note: nothing may disappear.
"""

from __future__ import annotations

import copy
import hashlib
import json
import socket
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

import connectors.epcis as epcis
from connectors.epcis import (
    LOCATION_UNKNOWN,
    PARTY_UNKNOWN,
    EpcisMapping,
    EpcisMappingError,
    EpcisMappingResult,
    EpcisValidationError,
    event_key,
    hub_event_id,
    map_document,
    map_document_detailed,
    parse_document,
    parse_identifier,
    validate_document,
)
from schemas.errors import DataError, EventValidationError
from schemas.model import (
    CorrectionAction,
    EventCorrected,
    InventoryAdjusted,
    LotAliasLinked,
    LotEventBase,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    QcResultRecorded,
    QcSampleTaken,
    SystemKind,
    TransferReceived,
    TransferShipped,
    Transformation,
    check_enterprise,
    stable_event_id,
)
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from streams.normalize import normalize

DATA = Path(__file__).resolve().parent.parent / "data" / "epcis"
EXAMPLES = sorted((DATA / "JSON").rglob("*.jsonld"))
SCHEMA_COPY = Path(epcis.__file__).with_name("epcis_schema")
INSTANCE = "epcis-test"
MAPPING = EpcisMapping(system_instance=INSTANCE, default_site="EPC")

# Where EPCIS 2.0 puts identifiers and quantities (the standard's field names, not the module's).
EPC_LISTS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")
QUANTITY_LISTS = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")
QUANTITY_EVENTS = (
    LotReceived,
    LotShipped,
    TransferShipped,
    TransferReceived,
    MaterialProduced,
    MaterialConsumed,
)


def example_id(path: Path) -> str:
    return str(path.relative_to(DATA / "JSON"))


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    return doc


def events_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    body = doc["epcisBody"]
    if doc["type"] == "EPCISQueryDocument":
        return list(body["queryResults"]["resultsBody"]["eventList"])
    return list(body["eventList"])


def with_events(doc: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``doc`` holding ``events`` instead of its own."""
    out = copy.deepcopy(doc)
    if out["type"] == "EPCISQueryDocument":
        out["epcisBody"]["queryResults"]["resultsBody"]["eventList"] = events
    else:
        out["epcisBody"]["eventList"] = events
    return out


def lot_of_class(uri: str) -> str:
    """The lot an EPC class names: an LGTIN's lot, else (no lot stated) the class URI itself."""
    prefix = "urn:epc:class:lgtin:"
    if uri.startswith(prefix):
        return unquote(uri[len(prefix) :].split(".", 2)[2])
    return uri


def expected(event: dict[str, Any]) -> tuple[set[str], Counter[tuple[str, Decimal, str]], set[str]]:
    """(every lot, every stated quantity as (lot, amount, unit), instance lots) of one event."""
    lots: set[str] = set()
    quantities: Counter[tuple[str, Decimal, str]] = Counter()
    instances: set[str] = set()
    for name in EPC_LISTS:
        for uri in event.get(name, []):
            lots.add(uri)  # an instance EPC: a serial-level lot named by its URI
            instances.add(uri)
    for name in QUANTITY_LISTS:
        for element in event.get(name, []):
            lot = lot_of_class(element["epcClass"])
            lots.add(lot)
            if "quantity" in element:
                amount = Decimal(str(element["quantity"])).normalize()
                quantities[(lot, amount, element.get("uom", "H87"))] += 1
    return lots, quantities, instances


def carried(events: list[LotEventBase]) -> Counter[tuple[str, Decimal, str]]:
    """(lot, amount, unit) of every quantity the lot events carry."""
    out: Counter[tuple[str, Decimal, str]] = Counter()
    for ev in events:
        if isinstance(ev, QUANTITY_EVENTS):
            out[(ev.lot, ev.quantity.value.normalize(), ev.quantity.unit)] += 1
        elif isinstance(ev, InventoryAdjusted):
            q = ev.quantity_change
            out[(ev.lot, (-q.value).normalize(), q.unit)] += 1
        elif isinstance(ev, Transformation):
            for x in [*ev.inputs, *ev.outputs]:
                out[(x.lot, x.quantity.value.normalize(), x.quantity.unit)] += 1
        elif isinstance(ev, LotAliasLinked) and ev.quantity is not None:
            out[(ev.lot, ev.quantity.value.normalize(), ev.quantity.unit)] += 1
    return out


def assert_nothing_lost(event: dict[str, Any], result: EpcisMappingResult) -> None:
    """Every lot and quantity of ``event`` is in a lot event or named by an unmapped note."""
    lots, quantities, instances = expected(event)
    events, notes = result.events, result.unmapped
    named = {lot for ev in events for lot in ev.lots()}
    noted = {n.lot for n in notes if n.lot is not None}
    assert named | noted == lots  # nothing lost, nothing invented
    in_events = carried(events)
    pieces = Counter({k: v for k, v in in_events.items() if k[0] in instances})
    assert all(amount == 1 and unit == "H87" for _, amount, unit in pieces)
    assert {lot for lot, _, _ in pieces} <= instances
    noted_quantities = Counter(
        (n.lot, n.quantity.value.normalize(), n.quantity.unit)
        for n in notes
        if n.lot is not None and n.quantity is not None
    )
    assert (in_events - pieces) + noted_quantities == quantities


def offset_of(event: dict[str, Any]) -> timedelta:
    text = event["eventTimeZoneOffset"]
    sign = -1 if text[0] == "-" else 1
    return sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6]))


# --------------------------------------------------------------------------- the GS1 examples


def test_every_example_is_copied() -> None:
    # The GS1 folder has 23 example documents (top level and three subfolders).
    assert len(EXAMPLES) == 23
    assert {p.parent.name for p in EXAMPLES} == {
        "JSON",
        "AssociationEvent",
        "WithErrorDeclaration",
        "WithFullCombinationOfFields",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_example_validates_and_maps_without_loss(path: Path) -> None:
    doc = parse_document(path.read_bytes())
    result = map_document_detailed(doc, MAPPING)
    assert result.failed == []
    assert map_document(doc, MAPPING) == result.events
    raw = load(path)
    for outcome, event in zip(result.outcomes, events_of(raw), strict=True):
        single = EpcisMappingResult((outcome,))
        if "errorDeclaration" in event:
            continue  # see test_error_declarations_void_what_the_declared_event_mapped_to
        assert_nothing_lost(event, single)
        for ev in outcome.events:
            assert ev.envelope.occurred_at == datetime.fromisoformat(event["eventTime"])
            assert ev.envelope.occurred_at.utcoffset() == offset_of(event)
            assert ev.envelope.source.system_kind is SystemKind.EPCIS
            assert ev.envelope.source.site == "EPC"
            assert ev.envelope.correlation_id == outcome.key


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_error_declarations_void_what_the_declared_event_mapped_to(path: Path) -> None:
    raw = load(path)
    result = map_document_detailed(raw, MAPPING)
    for outcome, event in zip(result.outcomes, events_of(raw), strict=True):
        if "errorDeclaration" not in event:
            continue
        declaration = event["errorDeclaration"]
        body = {k: v for k, v in event.items() if k != "errorDeclaration"}
        declared = map_document_detailed(with_events(raw, [body]), MAPPING)
        assert declared.failed == []
        assert_nothing_lost(body, declared)  # the declared event's lots, as it was mapped
        ids = [e.envelope.event_id for e in declared.events]
        corrections = [e for e in outcome.events if isinstance(e, EventCorrected)]
        assert len(corrections) == len(outcome.events)  # the declared facts are not restated
        if not ids:
            assert corrections == []
            assert any("errorDeclaration" in n.pointer for n in outcome.unmapped)
            continue
        correctives = declaration.get("correctiveEventIDs", [])
        assert len(corrections) == max(1, len(correctives))
        for correction in corrections:
            assert correction.corrected_event_ids == ids
            assert correction.envelope.occurred_at == datetime.fromisoformat(
                declaration["declarationTime"]
            )
            assert correction.reason == declaration.get("reason", correction.reason)
        if correctives:
            assert all(c.action is CorrectionAction.SUPERSEDE for c in corrections)
            assert [c.replacement_event_id for c in corrections] == [
                hub_event_id(INSTANCE, c) for c in correctives
            ]
        else:
            assert [c.action for c in corrections] == [CorrectionAction.VOID]


def test_a_corrective_event_in_the_same_document_is_the_replacement() -> None:
    path = DATA / "JSON" / "WithErrorDeclaration" / "ErrorDeclarationAndCorrectiveEvent.jsonld"
    declaration, corrective = map_document_detailed(load(path), MAPPING).outcomes
    (correction,) = declaration.events
    assert isinstance(correction, EventCorrected)
    assert correction.replacement_event_id == corrective.events[0].envelope.event_id
    assert isinstance(corrective.events[0], Transformation)


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_event_ids_are_stable_and_follow_the_eventid(path: Path) -> None:
    raw = load(path)
    first = map_document_detailed(raw, MAPPING)
    # A re-send (here parsed with floats instead of decimals) gives the very same events.
    again = map_document_detailed(json.loads(path.read_text(encoding="utf-8")), MAPPING)
    assert again.events == first.events
    for outcome, event in zip(first.outcomes, events_of(raw), strict=True):
        if "errorDeclaration" in event:
            continue
        assert outcome.key == event["eventID"]
        assert [e.envelope.event_id for e in outcome.events] == [
            stable_event_id(INSTANCE, "epcis-event", f"{event['eventID']}#{n}")
            for n in range(len(outcome.events))
        ]
    ids = [e.envelope.event_id for e in first.events]
    assert len(ids) == len(set(ids))


def test_an_event_without_eventid_is_keyed_by_its_content() -> None:
    raw = load(DATA / "JSON" / "Example_9.6.2-ObjectEvent.jsonld")
    (event,) = events_of(raw)
    del event["eventID"]
    doc = with_events(raw, [event])
    key = event_key(event)
    canonical = json.dumps(
        epcis._canonical(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert key == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    ids = [e.envelope.event_id for e in map_document(doc, MAPPING)]
    assert ids == [hub_event_id(INSTANCE, key, 0)]
    # recordTime (stamped by a repository) does not change the key; the content does.
    stamped = dict(event, recordTime="2013-06-08T15:00:00Z")
    assert event_key(stamped) == key
    assert event_key(dict(event, bizStep="shipping")) != key
    # An error declaration of it (without eventID) finds the same lot events.
    declared = dict(event, errorDeclaration={"declarationTime": "2013-06-09T08:00:00Z"})
    (correction,) = map_document(with_events(raw, [declared]), MAPPING)
    assert isinstance(correction, EventCorrected)
    assert correction.corrected_event_ids == ids
    assert correction.action is CorrectionAction.VOID
    assert correction.reason == "not stated in the errorDeclaration"


def test_lgtin_lots_keep_item_unit_and_exact_quantity() -> None:
    path = DATA / "JSON" / "Example_9.6.3-AggregationEvent.jsonld"
    events = map_document(load(path), MAPPING)
    received = {e.lot: e for e in events if isinstance(e, LotReceived)}
    lot = received["998877"]
    assert lot.quantity.value == Decimal("200.5")
    assert lot.quantity.unit == "KGM"
    assert lot.supplier_lot == "998877"
    assert lot.item.item_code == "0" + "4012345" + "12345" + epcis.gtin_check_digit("0401234512345")
    pattern = received["urn:epc:idpat:sgtin:4012345.098765.*"]
    assert (pattern.quantity.value, pattern.quantity.unit) == (Decimal(10), "H87")
    aliases = {(e.lot, e.alias_kind, e.alias) for e in events if isinstance(e, LotAliasLinked)}
    assert ("998877", "SSCC", "urn:epc:id:sscc:0614141.1234567890") in aliases
    assert len(aliases) == 4  # one per child: two SGTINs and two classes


def test_persistent_dispositions_become_site_status_codes() -> None:
    path = DATA / "JSON" / "PersistentDisposition-example.jsonld"
    received, inspected = map_document_detailed(load(path), MAPPING).outcomes
    statuses = [e for e in received.events if isinstance(e, LotStatusChanged)]
    assert {e.status for e in statuses} == {"completeness_inferred"}
    assert len(statuses) == 10
    assert {e.reason_code for e in statuses} == {"receiving"}
    assert {e.actor for e in statuses} == {INSTANCE}
    later = [e for e in inspected.events if isinstance(e, LotStatusChanged)]
    first_lot = [e.status for e in later if e.lot.endswith("10000001001")]
    assert first_lot == ["unset:completeness_inferred", "completeness_verified"]
    samples = [e for e in inspected.events if isinstance(e, QcSampleTaken)]
    assert len(samples) == 10
    assert {s.sample_id for s in samples} == {inspected.key}
    assert not any(isinstance(e, QcResultRecorded) for e in inspected.events)


def test_sgtin_reads_as_the_gs1_example_gtin() -> None:
    # GS1 EPC Tag Data Standard's own example: (01) 10614141073464 (21) 2017
    sgtin = parse_identifier("urn:epc:id:sgtin:0614141.107346.2017")
    assert (sgtin.scheme, sgtin.gtin, sgtin.serial, sgtin.lot) == (
        "sgtin",
        "10614141073464",
        "2017",
        None,
    )
    lgtin = parse_identifier("urn:epc:class:lgtin:0614141.107346.A%2FB.1")
    assert (lgtin.gtin, lgtin.lot) == ("10614141073464", "A/B.1")
    link = parse_identifier("https://id.gs1.org/01/10614141073464/10/ABC%20123?17=261231")
    assert (link.scheme, link.gtin, link.lot) == ("lgtin", "10614141073464", "ABC 123")
    serial = parse_identifier("https://example.com/shop/01/10614141073464/10/L1/21/77")
    assert (serial.scheme, serial.lot, serial.serial) == ("sgtin", "L1", "77")
    assert parse_identifier("https://id.gs1.org/01/10614141073465").scheme == ""  # check digit
    assert parse_identifier("urn:epc:id:sscc:0614141.1234567890").scheme == "sscc"
    assert parse_identifier("urn:example:thing:1").scheme == ""


# --------------------------------------------------------------------------- mapping rules

SGLN_ALP = "urn:epc:id:sgln:7612345.00001.0"
SGLN_BRK = "urn:epc:id:sgln:0012345.11111.0"
LGTIN = "urn:epc:class:lgtin:7612345.012345.L-4711"


def document(*events: dict[str, Any], header: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-02T08:00:00Z",
        "epcisBody": {"eventList": list(events)},
    }
    if header is not None:
        doc["epcisHeader"] = header
    return doc


def object_event(event_id: str, biz_step: str, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventID": event_id,
        "eventTime": "2026-11-02T07:00:00Z",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "bizStep": biz_step,
        "quantityList": [{"epcClass": LGTIN, "quantity": 250.25, "uom": "KGM"}],
    }
    event.update(extra)
    return event


SITES = EpcisMapping(
    system_instance=INSTANCE,
    default_site="EPC",
    location_sites={SGLN_ALP: "ALP", SGLN_BRK: "BRK"},
)


def test_the_site_comes_from_the_business_location() -> None:
    event = object_event("urn:uuid:1", "receiving", bizLocation={"id": SGLN_ALP})
    (received,) = map_document(document(event), SITES)
    assert received.envelope.source.site == "ALP"
    assert isinstance(received, LotReceived)
    assert received.receiving_location.location_id == SGLN_ALP
    assert received.receiving_location.site == "ALP"
    assert received.envelope.occurred_at.isoformat() == "2026-11-02T08:00:00+01:00"
    assert received.envelope.recorded_at == received.envelope.occurred_at


def test_receipts_fill_what_epcis_leaves_out_with_stated_placeholders() -> None:
    event = object_event("urn:uuid:2", "receiving")
    (received,) = map_document(document(event), MAPPING)
    assert isinstance(received, LotReceived)
    assert received.supplier == PARTY_UNKNOWN
    assert received.ship_from == LOCATION_UNKNOWN
    assert received.receiving_location.location_id == "unknown"
    assert received.item.description == "unknown (not in EPCIS event)"
    assert (received.reference_document.doc_type, received.reference_document.number) == (
        "EPCIS_EVENT",
        "urn:uuid:2",
    )


def test_names_come_from_master_data_and_the_mapping() -> None:
    vocabulary = {
        "type": "urn:epcglobal:epcis:vtype:BusinessLocation",
        "vocabularyElementList": [
            {
                "id": SGLN_ALP,
                "attributes": [{"id": "urn:epcglobal:cbv:mda#name", "attribute": "Alpenwerk"}],
            },
            {
                "id": "urn:epc:idpat:sgtin:7612345.012345.*",
                "attributes": [{"id": "cbvmda:descriptionShort", "attribute": "Milk powder"}],
            },
        ],
    }
    header = {"epcisMasterData": {"vocabularyList": [vocabulary]}}
    event = object_event(
        "urn:uuid:3",
        "receiving",
        bizLocation={"id": SGLN_ALP},
        sourceList=[{"type": "owning_party", "source": "urn:epc:id:pgln:4000001.00012"}],
        bizTransactionList=[
            {"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:7612345000005:PO-1"},
            {"type": "desadv", "bizTransaction": "urn:epcglobal:cbv:bt:4000001000005:ASN-9"},
        ],
    )
    mapping = EpcisMapping(
        system_instance=INSTANCE,
        default_site="EPC",
        party_names={"urn:epc:id:pgln:4000001.00012": "Alpine Dairy Co"},
    )
    result = map_document_detailed(document(event, header=header), mapping)
    (received,) = result.events
    assert isinstance(received, LotReceived)
    assert received.receiving_location.name == "Alpenwerk"
    assert received.item.description == "Milk powder"
    assert received.supplier.name == "Alpine Dairy Co"
    assert received.reference_document.doc_type == "desadv"  # ranked before po
    (note,) = [n for n in result.unmapped if "bizTransactionList" in n.pointer]
    assert note.pointer.endswith("/bizTransactionList/0")
    assert "PO-1" in note.what


def test_shipping_to_another_own_site_is_a_transfer_and_both_ends_pair() -> None:
    bol = [{"type": "bol", "bizTransaction": "urn:epcglobal:cbv:bt:7612345000005:BOL-1"}]
    shipped = object_event(
        "urn:uuid:4",
        "shipping",
        readPoint={"id": SGLN_ALP},
        destinationList=[{"type": "location", "destination": SGLN_BRK}],
        bizTransactionList=bol,
    )
    received = object_event(
        "urn:uuid:5",
        "receiving",
        bizLocation={"id": SGLN_BRK},
        sourceList=[{"type": "location", "source": SGLN_ALP}],
        bizTransactionList=bol,
    )
    out, into = map_document(document(shipped, received), SITES)
    assert isinstance(out, TransferShipped)
    assert isinstance(into, TransferReceived)
    assert out.envelope.source.site == "ALP"
    assert into.envelope.source.site == "BRK"
    assert out.transfer_id == into.transfer_id == bol[0]["bizTransaction"]
    assert (into.shipped_lot, into.shipped_lot_site, into.lot) == ("L-4711", "ALP", "L-4711")
    assert out.to_location.site == "BRK"


def test_shipping_to_a_customer() -> None:
    event = object_event(
        "urn:uuid:6",
        "shipping",
        readPoint={"id": SGLN_ALP},
        destinationList=[
            {"type": "possessing_party", "destination": "urn:epc:id:pgln:9520999.99999"},
            {"type": "location", "destination": "urn:epc:id:sgln:9520999.99999.0"},
        ],
    )
    (shipped,) = map_document(document(event), SITES)
    assert isinstance(shipped, LotShipped)
    assert shipped.customer.party_id == "urn:epc:id:pgln:9520999.99999"
    assert shipped.ship_to.location_id == "urn:epc:id:sgln:9520999.99999.0"
    assert shipped.ship_to.site is None
    assert shipped.ship_from.location_id == SGLN_ALP


def test_commissioning_produces_the_lot_of_a_production_order() -> None:
    order = "urn:epcglobal:cbv:bt:7612345000005:PRD-77"
    event = object_event(
        "urn:uuid:7",
        "commissioning",
        action="ADD",
        bizTransactionList=[{"type": "prodorder", "bizTransaction": order}],
    )
    result = map_document_detailed(document(event), MAPPING)
    (made,) = result.events
    assert isinstance(made, MaterialProduced)
    assert (made.batch_id, made.kind.value, made.lot) == (order, "PRODUCTION", "L-4711")
    assert not [n for n in result.unmapped if "bizTransactionList" in n.pointer]


@pytest.mark.parametrize(
    ("disposition", "passed"), [("conformant", True), ("non_conformant", False)]
)
def test_an_inspection_with_a_verdict_records_a_result(disposition: str, passed: bool) -> None:
    event = object_event("urn:uuid:8", "inspecting", disposition=disposition)
    result = map_document_detailed(document(event), MAPPING)
    sample, verdict = result.events
    assert isinstance(sample, QcSampleTaken)
    assert isinstance(verdict, QcResultRecorded)
    assert (verdict.passed, verdict.result, verdict.test_code) == (
        passed,
        disposition,
        "inspecting",
    )
    # A sample carries no quantity: the 250.25 KGM is named in a note instead.
    (note,) = [n for n in result.unmapped if n.quantity is not None]
    assert (note.lot, note.quantity.value, note.quantity.unit) == (
        "L-4711",
        Decimal("250.25"),
        "KGM",
    )


def test_destroying_scraps_the_quantity() -> None:
    event = object_event("urn:uuid:9", "destroying", action="DELETE", disposition="destroyed")
    (scrapped,) = map_document(document(event), MAPPING)
    assert isinstance(scrapped, InventoryAdjusted)
    assert scrapped.quantity_change.value == Decimal("-250.25")
    assert scrapped.reason_code == "destroyed"


def transformation_event(event_id: str, **sides: Any) -> dict[str, Any]:
    return {
        "type": "TransformationEvent",
        "eventID": event_id,
        "eventTime": "2026-11-02T07:00:00Z",
        "eventTimeZoneOffset": "+01:00",
        "transformationID": "urn:epc:id:gdti:7612345.00001.42",
        "bizStep": "commissioning",
        **sides,
    }


def test_a_transformation_split_over_two_events_joins_by_transformation_id() -> None:
    inputs = transformation_event(
        "urn:uuid:10", inputQuantityList=[{"epcClass": LGTIN, "quantity": 5, "uom": "KGM"}]
    )
    outputs = transformation_event(
        "urn:uuid:11",
        outputQuantityList=[
            {"epcClass": "urn:epc:class:lgtin:7612345.054321.B-1", "quantity": 4.5, "uom": "KGM"}
        ],
    )
    consumed, produced = map_document(document(inputs, outputs), MAPPING)
    assert isinstance(consumed, MaterialConsumed)
    assert isinstance(produced, MaterialProduced)
    assert consumed.batch_id == produced.batch_id == "urn:epc:id:gdti:7612345.00001.42"
    assert (consumed.lot, produced.lot) == ("L-4711", "B-1")


def test_repackaging_is_a_repack() -> None:
    event = transformation_event(
        "urn:uuid:12",
        bizStep="repackaging",
        inputQuantityList=[{"epcClass": LGTIN, "quantity": 5, "uom": "KGM"}],
        outputEPCList=["https://id.gs1.org/01/10614141073464/10/L-9/21/1"],
    )
    transformation, alias = map_document(document(event), MAPPING)
    assert isinstance(transformation, Transformation)
    assert transformation.kind.value == "REPACK"
    assert transformation.outputs[0].lot == "L-9"  # a Digital Link with lot and serial
    assert isinstance(alias, LotAliasLinked)
    assert (alias.lot, alias.alias_kind) == ("L-9", "EPC")


def test_a_missing_quantity_is_an_error_for_that_event_only() -> None:
    bad = object_event("urn:uuid:13", "receiving", quantityList=[{"epcClass": LGTIN}])
    good = object_event("urn:uuid:14", "receiving")
    doc = document(bad, good)
    result = map_document_detailed(doc, MAPPING)
    assert isinstance(result.outcomes[0].error, EpcisMappingError)
    assert "/epcisBody/eventList/0/quantityList/0" in str(result.outcomes[0].error)
    assert len(result.outcomes[1].events) == 1
    with pytest.raises(EpcisMappingError, match="states no quantity"):
        map_document(doc, MAPPING)


def test_a_repeated_event_id_is_refused() -> None:
    event = object_event("urn:uuid:15", "receiving")
    result = map_document_detailed(document(event, copy.deepcopy(event)), MAPPING)
    assert result.outcomes[0].error is None
    assert isinstance(result.outcomes[1].error, EpcisMappingError)


def test_values_the_model_refuses_are_event_validation_errors() -> None:
    event = object_event("urn:uuid:16", "receiving", bizLocation={"id": "urn:x:" + "L" * 300})
    with pytest.raises(EventValidationError):
        map_document(document(event), MAPPING)


def test_strict_mapping_refuses_what_it_would_only_note() -> None:
    event = object_event("urn:uuid:17", "packing")
    result = map_document_detailed(document(event), MAPPING)
    assert result.events == []
    (note,) = result.unmapped
    assert (note.lot, note.quantity.value if note.quantity else None) == (
        "L-4711",
        Decimal("250.25"),
    )
    assert "packing" in note.reason
    strict = EpcisMapping(system_instance=INSTANCE, default_site="EPC", strict=True)
    with pytest.raises(EpcisMappingError, match="no lot event carries"):
        map_document(document(event), strict)


def test_mapped_events_normalize_and_survive_the_wire() -> None:
    sites = SitesConfig.model_validate(
        {
            "sites": {
                "EPC": {
                    "name": "EPCIS test site",
                    "timezone": "UTC",
                    "lot_code_pattern": r"^(URN:EPC:.+|[0-9A-Z.\-]{1,20})$",
                    "status_codes": {
                        "completeness_inferred": "QUARANTINE",
                        "unset:completeness_inferred": "RELEASED",
                        "completeness_verified": "RELEASED",
                    },
                }
            }
        }
    )
    serde = make_serde()
    for name in (
        "Example_9.6.2-ObjectEvent.jsonld",
        "Example_9.6.3-AggregationEvent.jsonld",
        "Example_9.6.4-TransformationEvent.jsonld",
        "PersistentDisposition-example.jsonld",
    ):
        for event in map_document(load(DATA / "JSON" / name), MAPPING):
            check_enterprise(normalize(event, sites))
            decoded = serde.decode(serde.encode(event), topic="t", partition=0, offset=0)
            assert decoded == event


# --------------------------------------------------------------------------- validation


def official_validator() -> Draft7Validator:
    """The GS1 root schema from the reference copy in tests/data, independent of the module."""
    resources = []
    for path in sorted((DATA / "JSON-Schema").rglob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], DRAFT7.create_resource(contents)))
    registry: Registry[Any] = Registry().with_resources(resources)
    root = json.loads((DATA / "JSON-Schema" / "EPCIS-JSON-Schema-root.json").read_text())
    return Draft7Validator(root, registry=registry)


def test_runtime_schemas_are_unchanged_copies_of_the_reference() -> None:
    copies = sorted(p.relative_to(SCHEMA_COPY) for p in SCHEMA_COPY.rglob("*.json"))
    assert len(copies) == 17
    for relative in copies:
        assert (SCHEMA_COPY / relative).read_bytes() == (
            DATA / "JSON-Schema" / relative
        ).read_bytes()


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_examples_are_valid_for_the_official_root_schema_too(path: Path) -> None:
    assert list(official_validator().iter_errors(load(path))) == []


def test_validation_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    epcis._validator.cache_clear()
    epcis._registry.cache_clear()
    for path in EXAMPLES:
        parse_document(path.read_bytes())


def issues_of(doc: Any) -> dict[str, str]:
    with pytest.raises(EpcisValidationError) as caught:
        validate_document(doc)
    assert caught.value.reason_code == "invalid-epcis"
    assert isinstance(caught.value, DataError)
    found: dict[str, str] = {}
    for issue in caught.value.issues:
        found[issue.path] = (
            f"{found[issue.path]} | {issue.message}" if issue.path in found else issue.message
        )
    return found


def test_schema_errors_name_their_json_pointers() -> None:
    raw = load(DATA / "JSON" / "Example_9.6.2-ObjectEvent.jsonld")
    (event,) = events_of(raw)
    event["eventTime"] = "yesterday"
    event["quantityList"][0]["uom"] = "kg"
    event["bizstep"] = "receiving"  # misspelt: neither a standard field nor an extension URI
    issues = issues_of(raw)
    assert "date-time" in issues["/epcisBody/eventList/0/eventTime"]
    assert "'kg'" in issues["/epcisBody/eventList/0/quantityList/0/uom"]
    assert "bizstep" in issues["/epcisBody/eventList/0"]


def test_documents_missing_required_parts_are_refused() -> None:
    raw = load(DATA / "JSON" / "Example_9.6.1-ObjectEvent.jsonld")
    del raw["@context"]
    raw["epcisBody"]["eventList"][0]["eventTimeZoneOffset"] = "+25:00"
    issues = issues_of(raw)
    assert "@context" in issues["/"]
    assert "/epcisBody/eventList/0/eventTimeZoneOffset" in issues


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", "line 1, column 2"),
        (b'{"type": "EPCISDocument", "x": NaN}', "NaN"),
        (b"\xff\xfe", "UTF-8"),
        (b"[]", "JSON object"),
        (b'{"type": "ObjectEvent"}', "EPCISDocument or EPCISQueryDocument"),
    ],
)
def test_bytes_that_are_no_epcis_document_are_refused(body: bytes, where: str) -> None:
    with pytest.raises(EpcisValidationError, match=where):
        parse_document(body)


def test_a_mapping_needs_its_identifiers() -> None:
    from schemas.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        EpcisMapping(system_instance=" ", default_site="EPC")


def test_declaration_time_keeps_its_offset() -> None:
    raw = load(DATA / "JSON" / "WithErrorDeclaration" / "ErrorDeclarationAndCorrectiveEvent.jsonld")
    correction = map_document(raw, MAPPING)[0]
    assert correction.envelope.occurred_at.utcoffset() == timedelta(hours=1)
