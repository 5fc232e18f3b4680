"""EPCIS 2.0 export: schema-valid, and captured again it is the same genealogy.

The round trip is the hub's own capture path without the broker: ``POST /capture`` of the
EPCIS capture app, its lot events normalized with the site configuration and applied to a
second, empty store. What is compared is read from both stores' tables, never from the export.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7
from sqlalchemy import and_, select

from connectors.epcis import EpcisMapping, parse_document
from connectors.epcis_capture import create_capture_app
from connectors.simulator import build_scenario
from genealogy import tables
from genealogy.epcis_export import EpcisScope, dumps, epcis_document
from genealogy.store import GenealogyStore, utc
from genealogy.trace import Direction, trace
from schemas.epcis_vocab import STATUS_DISPOSITIONS
from schemas.model import (
    AdjustmentKind,
    CorrectionAction,
    CustomerReturn,
    EventCorrected,
    InventoryAdjusted,
    Item,
    Location,
    LotEventBase,
    LotQuantity,
    LotShipped,
    Party,
    Transformation,
    TransformationKind,
)
from schemas.sites import SitesConfig
from streams.normalize import normalize
from tests.factories import DOC, envelope, qty
from tests.helpers import normalized
from tests.integration.test_access import as_, hub  # noqa: F401  (the role-keyed hub fixture)

TEST_SCHEMAS = Path(__file__).resolve().parent.parent / "data" / "epcis" / "JSON-Schema"
BRK_DOCK = Location(location_id="BRK-PACK", name="Brookfield packing hall", site="BRK")
CUSTOMER = Party(party_id="C-77", name="Lakeside Foods")
COCOA = Item(item_code="CD-900", description="Cocoa drink base")


def extra_events() -> list[LotEventBase]:
    """A split, a shipment, a return, scrap, and a shipment voided later (enterprise form)."""
    mistaken = LotShipped(
        envelope=envelope("LotShipped", site="BRK", key="mistake",
                          occurred_at=_at("2026-11-12T09:00:00-06:00")),
        lot="BRK:26313-01", item=COCOA, quantity=qty(5), customer=CUSTOMER, ship_to=BRK_DOCK,
        ship_from=BRK_DOCK, reference_document=DOC,
    )  # fmt: skip
    return [
        Transformation(
            envelope=envelope("Transformation", site="BRK", occurred_at=_at("2026-11-10T08:00:00-06:00")),
            kind=TransformationKind.SPLIT, transformation_id="SPL-1", location=BRK_DOCK,
            inputs=[LotQuantity(lot="BRK:26313-01", item=COCOA, quantity=qty("400.25"))],
            outputs=[LotQuantity(lot="BRK:26314-01", item=COCOA, quantity=qty("200.125")),
                     LotQuantity(lot="BRK:26314-02", item=COCOA, quantity=qty("200.125"))],
            reference_document=DOC,
        ),
        LotShipped(
            envelope=envelope("LotShipped", site="BRK", occurred_at=_at("2026-11-11T08:00:00-06:00")),
            lot="BRK:26314-01", item=COCOA, quantity=qty(150), customer=CUSTOMER,
            ship_to=Location(location_id="GLN-0099", name="Lakeside DC"), ship_from=BRK_DOCK,
            reference_document=DOC,
        ),
        CustomerReturn(
            envelope=envelope("CustomerReturn", site="BRK", occurred_at=_at("2026-11-13T08:00:00-06:00")),
            lot="BRK:26314-01", item=COCOA, quantity=qty(10), customer=CUSTOMER,
            receiving_location=BRK_DOCK, reason_code="DAMAGED", reference_document=DOC,
        ),
        InventoryAdjusted(
            envelope=envelope("InventoryAdjusted", site="BRK", occurred_at=_at("2026-11-14T08:00:00-06:00")),
            kind=AdjustmentKind.SCRAP, lot="BRK:26314-02", item=COCOA, quantity_change=qty("-0.5"),
            location=BRK_DOCK, reason_code="SPILL", actor="op.olson",
        ),
        mistaken,
        EventCorrected(
            envelope=envelope("EventCorrected", site="BRK", occurred_at=_at("2026-11-12T10:00:00-06:00")),
            action=CorrectionAction.VOID, corrected_event_ids=[mistaken.envelope.event_id],
            reason="keyed twice", actor="qa.olson",
        ),
    ]  # fmt: skip


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def source(
    store_url: str, store_factory: Callable[[str], GenealogyStore], demo_sites: SitesConfig
) -> GenealogyStore:
    store = store_factory(store_url)
    store.apply([*normalized(build_scenario(demo_sites).events, demo_sites), *extra_events()])
    return store


def reimport_sites(demo_sites: SitesConfig) -> SitesConfig:
    """The demo sites, with the dispositions an export sets mapped back to statuses."""
    codes = {disposition: status for status, disposition in STATUS_DISPOSITIONS.items()}
    return SitesConfig(sites={code: site.model_copy(update={"status_codes": codes})
                              for code, site in demo_sites.sites.items()})  # fmt: skip


def capture_into(body: bytes, target: GenealogyStore, sites: SitesConfig) -> dict[str, Any]:
    """POST the document to the EPCIS capture endpoint; its lot events go to ``target``."""

    def sink(events: list[LotEventBase]) -> None:
        target.apply([normalize(e, sites) for e in events])

    mapping = EpcisMapping(system_instance="epcis-reimport", default_site="NONE", strict=False)
    with TestClient(create_capture_app(sink, mapping)) as client:
        response = client.post("/capture", content=body,
                               headers={"content-type": "application/ld+json"})  # fmt: skip
        assert response.status_code == 202, response.text
        job: dict[str, Any] = client.get(response.headers["location"]).json()
    return job


def genealogy(store: GenealogyStore, event_ids: set[str] | None = None) -> dict[str, set[Any]]:
    """Lots, links, documents, ledger and statuses, without ids a capture renames.

    ``event_ids`` limits it to what those events made (both ends of a link); voided events and
    their rows never count.
    """
    ev, links = tables.events, tables.lot_links
    with store.engine.connect() as conn:
        live = {
            r.event_id for r in conn.execute(select(ev.c.event_id).where(ev.c.voided_by.is_(None)))
        }
        keep = live if event_ids is None else live & event_ids
        lots_named = {
            r.lot_id for r in conn.execute(select(tables.lot_events)) if r.event_id in keep
        }

        def rows(table: Any, *cols: str) -> set[tuple[Any, ...]]:
            return {tuple(utc(getattr(r, c)) if c == "occurred_at" else getattr(r, c) for c in cols)
                    for r in conn.execute(select(table)) if r.event_id in keep}  # fmt: skip

        out = {
            "lots": {(r.lot_id, r.site, r.item_code, r.item_description)
                     for r in conn.execute(select(tables.lots)) if r.lot_id in lots_named},
            "links": {(r.parent_lot, r.child_lot, r.kind, r.quantity_used, r.unit_used,
                       r.quantity_produced, r.unit_produced, utc(r.occurred_at))
                      for r in conn.execute(select(links))
                      if r.parent_event_id in keep and r.child_event_id in keep},
            "documents": rows(tables.documents, "lot_id", "cte", "doc_type", "doc_number", "site",
                              "party_id", "party_name", "partner_lot", "location_id",
                              "location_name", "quantity", "unit", "occurred_at"),
            "ledger": rows(tables.lot_ledger, "lot_id", "category", "quantity", "unit",
                           "location_id", "occurred_at"),
            "statuses": rows(tables.status_history, "lot_id", "status", "occurred_at"),
        }  # fmt: skip
    return out


def exported_ids(doc: dict[str, Any]) -> set[str]:
    return {e["eventID"].removeprefix("urn:uuid:") for e in doc["epcisBody"]["eventList"]}


@pytest.mark.parametrize("scope", list(EpcisScope))
def test_export_reimports_as_the_same_genealogy(
    source: GenealogyStore, scope: EpcisScope, store_factory: Callable[[str], GenealogyStore],
    demo_sites: SitesConfig, tmp_path: Path,
) -> None:  # fmt: skip
    doc = epcis_document(source, "26313-01", scope=scope)
    body = dumps(doc).encode()
    parse_document(body)  # the runtime schema copy
    target = store_factory(f"sqlite:///{tmp_path / 'reimport.db'}")
    job = capture_into(body, target, reimport_sites(demo_sites))
    assert job["success"] is True, job["errors"]

    expected, got = genealogy(source, exported_ids(doc)), genealogy(target)
    for part in expected:
        assert (sorted(got[part] - expected[part], key=str), part) == (
            sorted(expected[part] - got[part], key=str), part)  # fmt: skip
    # not empty by accident: links and movements of every kind the scope reaches
    whole = scope is EpcisScope.TRACE
    assert {link[2] for link in got["links"]} >= {"TRANSFER", "SPLIT", *(["BLEND"] * whole)}
    assert {d[1] for d in got["documents"]} >= {
        "TRANSFER_RECEIVED", *(["RECEIVING", "SHIPPING", "RETURN"] * whole)}  # fmt: skip
    assert any(row[1] == "SCRAPPED" for row in got["ledger"]) is whole
    assert got["statuses"]
    with source.engine.connect() as conn:  # the voided shipment is not exported
        voided = {r.event_id for r in conn.execute(
            select(tables.events.c.event_id).where(tables.events.c.voided_by.is_not(None)))}  # fmt: skip
    assert voided
    assert not voided & exported_ids(doc)


def test_trace_scope_reaches_the_supplier_lots_and_the_customers(source: GenealogyStore) -> None:
    doc = epcis_document(source, "BRK:26313-01", scope=EpcisScope.TRACE)
    back = trace(source, "BRK:26313-01", Direction.BACKWARD)
    receipts = {(d.party_id, d.partner_lot) for d in back.documents if d.cte == "RECEIVING"}
    events = doc["epcisBody"]["eventList"]

    def parties(step: str, disposition: str, key: str) -> set[str]:
        return {end[key] for e in events if (e.get("bizStep"), e.get("disposition")) == (step, disposition)
                for end in e.get(f"{key}List", []) if end["type"] == "owning_party"}  # fmt: skip

    assert parties("receiving", "in_progress", "source") == {
        f"urn:lothub:party:{party}" for party, _ in receipts}  # fmt: skip
    assert parties("shipping", "in_transit", "destination") >= {"urn:lothub:party:C-77"}
    supplier_lots = {a["attribute"] for v in doc["epcisHeader"]["epcisMasterData"]["vocabularyList"]
                     for element in v["vocabularyElementList"] for a in element.get("attributes", [])
                     if a["id"] == "urn:lothub:mda:supplierLot"}  # fmt: skip
    assert supplier_lots == {lot for _, lot in receipts}
    assert len(supplier_lots) == 3
    transformations = [
        e for e in events if e["type"] == "TransformationEvent" and e["bizStep"] != "receiving"
    ]
    assert all(e["transformationID"].startswith("urn:lothub:tf:") for e in transformations)
    split = next(e for e in transformations if e["transformationID"] == "urn:lothub:tf:SPL-1")
    assert split["bizStep"] == "urn:lothub:bizstep:split"
    assert split["inputQuantityList"] == [
        {"epcClass": "urn:lothub:lot:BRK:26313-01", "quantity": Decimal("400.25"), "uom": "KGM"}
    ]
    holds = [e for e in events if "persistentDisposition" in e]
    assert {d for e in holds for d in e["persistentDisposition"]["set"]} >= {
        STATUS_DISPOSITIONS["QUARANTINE"], STATUS_DISPOSITIONS["RELEASED"]}  # fmt: skip


def test_document_validates_against_the_reference_schema_copy(source: GenealogyStore) -> None:
    """The test copy of the GS1 schema, independent of the runtime copy the connector uses."""
    resources = []
    for path in sorted(TEST_SCHEMAS.rglob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], DRAFT7.create_resource(contents)))
    registry: Registry[Any] = Registry().with_resources(resources)
    root = next(c for uri, c in resources if uri.endswith("EPCIS-Document-JSON-Schema.json"))
    validator = Draft7Validator({"$ref": f"{root.id()}#/definitions/epcisDocument"},
                                registry=registry)  # fmt: skip
    doc = json.loads(dumps(epcis_document(source, "26313-01", scope=EpcisScope.TRACE)))
    assert [e.message for e in validator.iter_errors(doc)] == []
    assert len(doc["epcisBody"]["eventList"]) > 10


def test_api_export_and_site_redaction(hub: tuple[TestClient, GenealogyStore]) -> None:  # noqa: F811
    client, store = hub
    url = "/api/v1/exports/epcis?lot=26313-01&scope=trace"
    full = as_(client, "eq", "GET", url)
    assert full.status_code == 200  # type: ignore[attr-defined]
    assert full.headers["content-type"].startswith("application/ld+json")  # type: ignore[attr-defined]
    everything = parse_document(full.content)  # type: ignore[attr-defined]
    sites = {e.get("bizLocation", e.get("readPoint"))["id"].split(":")[3]
             for e in everything["epcisBody"]["eventList"]}  # fmt: skip
    assert sites == {"ALP", "BRK"}

    own = as_(client, "sq-brk", "GET", url)
    assert own.status_code == 200  # type: ignore[attr-defined]
    mine = parse_document(own.content)  # type: ignore[attr-defined]
    events = mine["epcisBody"]["eventList"]
    assert events
    assert all(e.get("bizLocation", e.get("readPoint"))["id"].startswith("urn:lothub:loc:BRK:")
               for e in events)  # fmt: skip
    with store.engine.connect() as conn:
        alp = conn.execute(select(tables.lots.c.lot_id, tables.lot_aliases.c.alias).join(
            tables.lot_aliases, tables.lot_aliases.c.lot_id == tables.lots.c.lot_id).where(
            and_(tables.lots.c.site == "ALP"))).all()  # fmt: skip
        alp_parties = {r.party_name for r in conn.execute(select(tables.documents).where(
            tables.documents.c.site == "ALP")) if r.party_name}  # fmt: skip
    text = own.text  # type: ignore[attr-defined]
    secrets = {s for row in alp for s in row} | alp_parties | {"urn:lothub:lot:ALP"}
    assert {s for s in secrets if s in text} == set()
    # the transfer that brought the lot in is there, its ALP origin redacted
    transfer_in = [e for e in events if e.get("bizStep") == "receiving" and "sourceList" in e]
    assert len(transfer_in) == 1
    assert transfer_in[0]["inputQuantityList"][0]["epcClass"].startswith("urn:lothub:redacted:")

    # another site's lot is answered as if it did not exist; no export right, no export
    other = as_(client, "sq-brk", "GET", "/api/v1/exports/epcis?lot=ALP:ALP-20261102-001")
    assert other.status_code == 404  # type: ignore[attr-defined]
    assert as_(client, "admin", "GET", url).status_code == 403  # type: ignore[attr-defined]
    audit = as_(client, "auditor", "GET", "/api/v1/audit").json()  # type: ignore[attr-defined]
    assert {(a["action"], a["user"]) for a in audit["items"]} >= {
        ("export.epcis", "eq"), ("export.epcis", "sq-brk")}  # fmt: skip


def test_lot_scope_is_the_lots_own_events_oldest_first(source: GenealogyStore) -> None:
    doc = epcis_document(source, "BRK:26314-02")
    with source.engine.connect() as conn:
        le, ev = tables.lot_events, tables.events
        own = {r.event_id for r in conn.execute(select(le.c.event_id).join(
            ev, ev.c.event_id == le.c.event_id).where(le.c.lot_id == "BRK:26314-02"))}  # fmt: skip
    assert exported_ids(doc) == own
    times = [_at(e["eventTime"]) for e in doc["epcisBody"]["eventList"]]
    assert len(times) == 2  # the split that made it, its scrap
    assert times == sorted(times)
