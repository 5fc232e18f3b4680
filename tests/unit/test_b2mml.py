"""B2MML V0700 connector: XSD validation, mapping to raw lot events, stable ids, plant time.

Expected values are read from the sample messages with the standard library's XML parser,
independently of the connector (which uses lxml), so a sample can change without the
tests being edited.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connectors.b2mml import (
    B2mmlMapping,
    B2mmlMappingError,
    B2mmlValidationError,
    map_message,
    validate,
)
from schemas.errors import DataError, EventValidationError, UnmappedValueError
from schemas.model import (
    Location,
    LotAliasLinked,
    LotEventBase,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    SystemKind,
    TransformationKind,
    check_enterprise,
    stable_event_id,
)
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from streams.normalize import normalize

DATA = Path(__file__).resolve().parent.parent / "data" / "b2mml"
B = "http://www.mesa.org/xml/B2MML"
NS = {"b": B}
ALP_PERF = DATA / "alp_process_operations_performance.xml"
BRK_RESPONSE = DATA / "brk_operations_response.xml"
ALP_WORK = DATA / "alp_sync_work_performance.xml"
ALP_LOTS = DATA / "alp_sync_material_information.xml"
ALP_DST = DATA / "alp_dst_boundaries.xml"
ACTUAL_SAMPLES = [ALP_PERF, BRK_RESPONSE, ALP_WORK, ALP_DST]
VALID_SAMPLES = [*ACTUAL_SAMPLES, ALP_LOTS, DATA / "unmappable_missing_unit.xml"]

# ISA-95 MaterialUse values, as the standard defines them (not imported from the connector).
CONSUMING = {"Consumed", "Material Consumed", "Consumable"}
PRODUCING = {
    "Produced",
    "Yield Produced",
    "Material Produced",
    "Co-product Produced",
    "By-product Produced",
}


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def site_of(path: Path) -> str:
    return "BRK" if path.name.startswith("brk") else "ALP"


def mapping(path: Path, **kw: Any) -> B2mmlMapping:
    site = site_of(path)
    # BRK's MES leaves the dust by-product without a description; the mapping supplies it.
    descriptions = {"BY-DUST": "Repack dust (disposal)"} if site == "BRK" else {}
    kw.setdefault("item_descriptions", descriptions)
    return B2mmlMapping(system_instance=f"mes-{site.lower()}", site_code=site, **kw)


def run(path: Path, sites: SitesConfig, xml: bytes | None = None, **kw: Any) -> list[LotEventBase]:
    site = site_of(path)
    return map_message(xml or path.read_bytes(), mapping(path, **kw), sites.sites[site])


def text(element: ET.Element, name: str) -> str | None:
    found = element.findtext(f"b:{name}", namespaces=NS)
    return found.strip() if found is not None and found.strip() else None


def texts(element: ET.Element, name: str) -> list[str]:
    return [(e.text or "").strip() for e in element.findall(f"b:{name}", NS)]


def lines_of(path: Path, needle: str) -> list[int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [number for number, line in enumerate(lines, start=1) if needle in line]


def line_of(path: Path, needle: str) -> int:
    return lines_of(path, needle)[0]


def responses(root: ET.Element) -> list[tuple[str, ET.Element]]:
    """(order, response) for every operations or job response, as the sample states them."""
    out = []
    for response in root.iter(f"{{{B}}}OperationsResponse"):
        requests = texts(response, "OperationsRequestID")
        out.append((requests[0] if len(requests) == 1 else text(response, "ID") or "", response))
    for response in root.iter(f"{{{B}}}JobResponse"):
        out.append((text(response, "JobOrderID") or text(response, "ID") or "", response))
    return out


def expected_flows(path: Path) -> Counter[tuple[str, str, str, Decimal, str, str]]:
    """(event type, batch, lot, quantity, unit, item) of every lot-tracked batch flow."""
    instance = f"mes-{site_of(path).lower()}"
    flows: Counter[tuple[str, str, str, Decimal, str, str]] = Counter()
    for order, response in responses(ET.parse(path).getroot()):
        for actual in response.iter(f"{{{B}}}MaterialActual"):
            lot, use = text(actual, "MaterialLotID"), text(actual, "MaterialUse")
            if lot is None or use not in CONSUMING | PRODUCING:
                continue
            quantity = actual.find("b:Quantity", NS)
            assert quantity is not None
            kind = "MaterialConsumed" if use in CONSUMING else "MaterialProduced"
            flows[(kind, f"{instance}/{order}", lot, Decimal(text(quantity, "QuantityString") or ""),
                   text(quantity, "UnitOfMeasure") or "", text(actual, "MaterialDefinitionID") or "")] += 1  # fmt: skip
    return flows


def flows_of(events: list[LotEventBase]) -> Counter[tuple[str, str, str, Decimal, str, str]]:
    return Counter(
        (type(e).__name__, e.batch_id, e.lot, e.quantity.value, e.quantity.unit, e.item.item_code)
        for e in events
        if isinstance(e, MaterialConsumed | MaterialProduced)
    )


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("path", VALID_SAMPLES, ids=lambda p: p.name)
def test_valid_samples_validate(path: Path) -> None:
    root = validate(path.read_bytes())
    assert root.tag == ET.parse(path).getroot().tag


def test_an_enumeration_error_names_line_path_and_value() -> None:
    path = DATA / "invalid_material_use.xml"
    with pytest.raises(B2mmlValidationError) as caught:
        validate(path.read_bytes())
    error = caught.value
    assert error.reason_code == "invalid-b2mml"
    assert isinstance(error, DataError)
    [issue] = error.issues
    assert issue.line == line_of(path, "<MaterialUse>Eaten")
    assert issue.path.endswith("/SegmentResponse/MaterialActual/MaterialUse")
    assert f"line {issue.line}" in str(error)
    assert "'Eaten' is not an element of the set" in str(error)


def test_every_schema_error_is_reported_with_its_own_line() -> None:
    path = DATA / "invalid_structure.xml"
    with pytest.raises(B2mmlValidationError) as caught:
        validate(path.read_bytes())
    assert sorted(i.line for i in caught.value.issues) == [
        lines_of(path, "<ActualEndTime>04.11.2026")[0],
        lines_of(path, "<MaterialUse>Consumed</MaterialUse>")[0],  # after Quantity
        lines_of(path, "<UnitOfMeasure>kg</UnitOfMeasure>")[1],  # where QuantityString belongs
    ]
    paths = sorted(i.path for i in caught.value.issues)
    assert paths == [
        "/OperationsPerformance/OperationsResponse/SegmentResponse/ActualEndTime",
        "/OperationsPerformance/OperationsResponse/SegmentResponse/MaterialActual[1]/MaterialUse",
        "/OperationsPerformance/OperationsResponse/SegmentResponse/MaterialActual[2]/Quantity/UnitOfMeasure",
    ]
    assert "xs:dateTime" in str(caught.value)


def test_xml_that_is_not_well_formed_is_refused_with_its_line() -> None:
    path = DATA / "invalid_not_well_formed.xml"
    with pytest.raises(B2mmlValidationError, match="not well-formed") as caught:
        validate(path.read_bytes())
    assert caught.value.issues[0].line == line_of(path, "</MaterialLot>")


def test_a_dtd_is_refused_and_no_entity_is_expanded() -> None:
    path = DATA / "invalid_dtd_entity.xml"
    with pytest.raises(B2mmlValidationError, match="DTD") as caught:
        validate(path.read_bytes())
    message = str(caught.value)
    assert "root:" not in message  # /etc/passwd was never read
    assert "lollol" not in message


def test_a_message_of_another_b2mml_version_names_the_namespace() -> None:
    with pytest.raises(B2mmlValidationError) as caught:
        validate((DATA / "invalid_namespace_v0600.xml").read_bytes())
    message = str(caught.value)
    assert "B2MML-V0600" in message
    assert f"B2MML V0700 elements are in '{B}'" in message
    assert "No matching global declaration" in message


def test_an_empty_body_is_invalid() -> None:
    with pytest.raises(B2mmlValidationError):
        validate(b"")


# --------------------------------------------------------------------------- material actuals


@pytest.mark.parametrize("path", ACTUAL_SAMPLES, ids=lambda p: p.name)
def test_every_lot_tracked_actual_becomes_one_event_as_sent(
    path: Path, demo_sites: SitesConfig
) -> None:
    events = run(path, demo_sites)
    assert flows_of(events) == expected_flows(path)
    assert flows_of(events)  # the samples do have flows


@pytest.mark.parametrize("path", ACTUAL_SAMPLES, ids=lambda p: p.name)
def test_sub_lots_become_aliases_of_their_lot(path: Path, demo_sites: SitesConfig) -> None:
    expected = Counter(
        (text(a, "MaterialLotID"), sub)
        for a in ET.parse(path).getroot().iter(f"{{{B}}}MaterialActual")
        if text(a, "MaterialUse") in CONSUMING | PRODUCING
        for sub in texts(a, "MaterialSubLotID")
    )
    events = run(path, demo_sites)
    aliases = [e for e in events if isinstance(e, LotAliasLinked)]
    assert Counter((e.lot, e.alias) for e in aliases) == expected
    assert {e.alias_kind for e in aliases} <= {"MES_SUBLOT"}


def test_one_order_joins_consumption_and_production(demo_sites: SitesConfig) -> None:
    root = ET.parse(ALP_PERF).getroot()
    [(order, _)] = responses(root)
    events = [
        e for e in run(ALP_PERF, demo_sites) if isinstance(e, MaterialConsumed | MaterialProduced)
    ]
    assert {e.batch_id for e in events} == {f"mes-alp/{order}"}
    assert {(e.reference_document.doc_type, e.reference_document.number) for e in events} == {
        ("BATCH_RECORD", order)
    }
    assert {e.kind for e in events} == {TransformationKind.PRODUCTION}
    assert {type(e) for e in events} == {MaterialConsumed, MaterialProduced}


def test_batch_ids_can_stay_as_the_mes_wrote_them(demo_sites: SitesConfig) -> None:
    events = run(ALP_WORK, demo_sites, namespace_batch_ids=False)
    [(order, _)] = responses(ET.parse(ALP_WORK).getroot())
    assert {e.batch_id for e in events if isinstance(e, MaterialConsumed | MaterialProduced)} == {
        order
    }


def test_a_response_without_order_is_joined_by_its_id_and_kind_comes_from_its_definition(
    demo_sites: SitesConfig,
) -> None:
    root = ET.parse(BRK_RESPONSE).getroot()
    definition = text(root, "OperationsDefinitionID")
    assert definition is not None
    events = run(BRK_RESPONSE, demo_sites,
                 kind_by_definition={definition: TransformationKind.REPACK})  # fmt: skip
    flows = [e for e in events if isinstance(e, MaterialConsumed | MaterialProduced)]
    assert {e.batch_id for e in flows} == {f"mes-brk/{text(root, 'ID')}"}
    assert {e.kind for e in flows} == {TransformationKind.REPACK}


def test_envelopes_name_the_mes_and_keep_message_order(demo_sites: SitesConfig) -> None:
    events = run(ALP_PERF, demo_sites)
    for event in events:
        source = event.envelope.source
        assert (source.system_kind, source.system_instance, source.site) == (
            SystemKind.MES, "mes-alp", "ALP")  # fmt: skip
        assert event.envelope.event_type == type(event).__name__
    assert [e.envelope.sequence for e in events] == list(range(1, len(events) + 1))
    root = ET.parse(ALP_PERF).getroot()
    published = text(root, "DataArea/b:OperationsPerformance/b:PublishedDate")
    assert published is not None
    zurich = ZoneInfo("Europe/Zurich")
    assert {e.envelope.recorded_at for e in events} == {
        datetime.fromisoformat(published).replace(tzinfo=zurich)
    }


def test_event_ids_are_stable_across_parses_and_resends(demo_sites: SitesConfig) -> None:
    xml = ALP_PERF.read_bytes()
    first = run(ALP_PERF, demo_sites)
    assert [e.model_dump() for e in run(ALP_PERF, demo_sites, xml)] == [
        e.model_dump() for e in first
    ]
    # The MES re-sends the same performance in a new BOD: new envelope, new id, new layout.
    resent = re.sub(rb"<CreationDateTime>[^<]*", b"<CreationDateTime>2026-11-04T07:00:00", xml)
    resent = re.sub(rb"<BODID>[^<]*", b"<BODID>RESEND-0001", resent).replace(b"\n      ", b"\n")
    assert resent != xml
    assert [e.model_dump() for e in run(ALP_PERF, demo_sites, resent)] == [
        e.model_dump() for e in first
    ]
    ids = [e.envelope.event_id for e in first]
    assert len(set(ids)) == len(ids)


def test_the_record_key_is_order_response_segment_and_position(demo_sites: SitesConfig) -> None:
    root = ET.parse(ALP_PERF).getroot()
    [(order, response)] = responses(root)
    segment = response.find("b:SegmentResponse", NS)
    assert segment is not None
    key = "\x1f".join(
        [f"mes-alp/{order}", text(response, "ID") or "", text(segment, "ID") or "", "0"]
    )
    first = run(ALP_PERF, demo_sites)[0]
    assert first.envelope.event_id == stable_event_id("mes-alp", "MaterialConsumed", key)


def test_naive_times_are_plant_local_consumption_at_start_production_at_end(
    demo_sites: SitesConfig,
) -> None:
    zurich = ZoneInfo("Europe/Zurich")
    root = ET.parse(ALP_PERF).getroot()
    segments = list(root.iter(f"{{{B}}}SegmentResponse"))
    events = run(ALP_PERF, demo_sites)
    for segment in segments:
        start = datetime.fromisoformat(text(segment, "ActualStartTime") or "").replace(
            tzinfo=zurich
        )
        end = datetime.fromisoformat(text(segment, "ActualEndTime") or "").replace(tzinfo=zurich)
        lots = {text(a, "MaterialLotID") for a in segment.findall("b:MaterialActual", NS)}
        for event in events:
            if isinstance(event, MaterialConsumed) and event.lot in lots:
                assert event.envelope.occurred_at == start
                assert event.envelope.occurred_at.utcoffset() == timedelta(hours=1)  # CET
            if isinstance(event, MaterialProduced) and event.lot in lots:
                assert event.envelope.occurred_at == end


def test_times_across_the_daylight_saving_changes(demo_sites: SitesConfig) -> None:
    zurich = ZoneInfo("Europe/Zurich")
    events = run(ALP_DST, demo_sites)
    by_batch: dict[str, dict[str, datetime]] = {}
    for event in events:
        assert isinstance(event, MaterialConsumed | MaterialProduced)
        by_batch.setdefault(event.batch_id, {})[type(event).__name__] = event.envelope.occurred_at
    for order, response in responses(ET.parse(ALP_DST).getroot()):
        segment = response.find("b:SegmentResponse", NS)
        assert segment is not None
        start = datetime.fromisoformat(text(segment, "ActualStartTime") or "")
        end = datetime.fromisoformat(text(segment, "ActualEndTime") or "")
        times = by_batch[f"mes-alp/{order}"]
        assert times["MaterialConsumed"] == start.replace(tzinfo=zurich)
        assert times["MaterialProduced"] == end.replace(tzinfo=zurich)
        # The offset each side of the change is the one the plant's clock was on.
        for at in times.values():
            assert at.utcoffset() == at.astimezone(zurich).utcoffset()
    spring, autumn = by_batch["mes-alp/PA-3001"], by_batch["mes-alp/PA-3702"]
    assert spring["MaterialConsumed"].utcoffset() == timedelta(hours=1)
    assert spring["MaterialProduced"].utcoffset() == timedelta(hours=2)
    # Two hours on the wall clock, one hour of real time in March, three in October
    # (in UTC: Python subtracts two times of one zone on the wall clock).
    assert utc(spring["MaterialProduced"]) - utc(spring["MaterialConsumed"]) == timedelta(hours=1)
    assert utc(autumn["MaterialProduced"]) - utc(autumn["MaterialConsumed"]) == timedelta(hours=3)


def test_an_ambiguous_autumn_time_is_read_as_its_first_occurrence(demo_sites: SitesConfig) -> None:
    xml = ALP_DST.read_bytes().replace(b"2026-10-25T01:30:00", b"2026-10-25T02:30:00")
    consumed = [e for e in run(ALP_DST, demo_sites, xml) if isinstance(e, MaterialConsumed)]
    at = next(e.envelope.occurred_at for e in consumed if e.batch_id == "mes-alp/PA-3702")
    assert at.utcoffset() == timedelta(hours=2)  # still summer time (fold=0)


def test_times_with_an_offset_keep_their_instant_in_the_site_zone(demo_sites: SitesConfig) -> None:
    chicago = ZoneInfo("America/Chicago")
    root = ET.parse(BRK_RESPONSE).getroot()
    opened = next(s for s in root.iter(f"{{{B}}}SegmentResponse") if text(s, "ID") == "OPEN")
    sent = datetime.fromisoformat(text(opened, "ActualStartTime") or "")
    assert sent.utcoffset() == timedelta(0)
    [consumed] = [e for e in run(BRK_RESPONSE, demo_sites) if isinstance(e, MaterialConsumed)]
    assert consumed.envelope.occurred_at == sent
    assert consumed.envelope.occurred_at.utcoffset() == sent.astimezone(chicago).utcoffset()


def test_locations_come_from_the_innermost_equipment(demo_sites: SitesConfig) -> None:
    events = run(ALP_PERF, demo_sites, location_names={"ALP-MIX2": "Mixing hall 2"})
    consumed = {e.location for e in events if isinstance(e, MaterialConsumed)}
    produced = {e.location for e in events if isinstance(e, MaterialProduced)}
    assert consumed == {Location(location_id="ALP-MIX2", name="Mixing hall 2", site="ALP")}
    assert produced == {
        Location(location_id="ALP-FILL3", name="Big-bag filling station 3", site="ALP")
    }


def test_without_equipment_the_configured_location_or_the_site_is_used(
    demo_sites: SitesConfig,
) -> None:
    site = demo_sites.sites["ALP"]
    events = run(ALP_DST, demo_sites)
    assert {e.location for e in events if isinstance(e, MaterialConsumed | MaterialProduced)} == {
        Location(location_id="ALP", name=site.name, site="ALP")
    }
    hall = Location(location_id="ALP-SYRUP", name="Syrup kitchen", site="ALP")
    events = run(ALP_DST, demo_sites, default_location=hall)
    assert {e.location for e in events if isinstance(e, MaterialConsumed)} == {hall}


def test_a_missing_description_is_never_guessed(demo_sites: SitesConfig) -> None:
    with pytest.raises(UnmappedValueError, match="BY-DUST") as caught:
        run(BRK_RESPONSE, demo_sites, item_descriptions={})
    assert "item_descriptions" in str(caught.value)
    [dust] = [e for e in run(BRK_RESPONSE, demo_sites) if isinstance(e, MaterialProduced)
              and e.item.item_code == "BY-DUST"]  # fmt: skip
    assert dust.item.description == "Repack dust (disposal)"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            b"<Description>Cocoa powder 10/12</Description>",
            b"<Description>" + b"x" * 300 + b"</Description>",
        ),
        (b"<QuantityString>150.000", b"<QuantityString>1e20"),
    ],
    ids=["description too long", "too many digits"],
)
def test_values_the_model_refuses_name_the_actual(
    old: bytes, new: bytes, demo_sites: SitesConfig
) -> None:
    with pytest.raises(EventValidationError, match=r"MaterialActual\[2\]"):
        run(ALP_PERF, demo_sites, _change(old, new))


def _change(old: bytes, new: bytes, path: Path = ALP_PERF) -> bytes:
    xml = path.read_bytes()
    assert old in xml
    return xml.replace(old, new, 1)


UNMAPPABLE = {
    "no unit": ((DATA / "unmappable_missing_unit.xml").read_bytes(), "UnitOfMeasure"),
    "two lots in one actual": (
        _change(b"<MaterialLotID>ALP-20261102-002</MaterialLotID>",
                b"<MaterialLotID>ALP-20261102-002</MaterialLotID><MaterialLotID>ALP-20261102-009</MaterialLotID>"),
        "one MaterialActual per lot",
    ),
    "sub-lot without lot": (
        _change(b"<MaterialLotID>ALP-20261102-001</MaterialLotID>", b""), "no MaterialLotID"),
    "lot with use Other": (
        _change(b"<MaterialUse>Consumed</MaterialUse>", b"<MaterialUse>Other</MaterialUse>"),
        "'Other'",
    ),
    "negative quantity": (_change(b"<QuantityString>150.000", b"<QuantityString>-150.000"), "negative"),
    "not a number": (_change(b"<QuantityString>150.000", b"<QuantityString>viel"), "not a decimal"),
    "repeated segment id": (_change(b"<ID>SR-PA-4711-020</ID>", b"<ID>SR-PA-4711-010</ID>"),
                            "cannot be told apart"),
    "no order and no id": (
        _change(b"<ID>OR-PA-4711</ID>", b"").replace(b"<OperationsRequestID>PA-4711</OperationsRequestID>", b""),
        "nothing joins",
    ),
    "cancel verb": (
        _change(b"<Process/>", b"<Cancel/>").replace(b"ProcessOperationsPerformance", b"CancelOperationsPerformance"),
        "Cancel message",
    ),
    "no time anywhere": (
        re.sub(rb"<(Actual)?(Start|End)Time>[^<]*</(Actual)?(Start|End)Time>", b"", ALP_PERF.read_bytes()),
        "cannot be dated",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("xml", "expected"), UNMAPPABLE.values(), ids=list(UNMAPPABLE))
def test_valid_messages_that_cannot_be_mapped_without_guessing(
    xml: bytes, expected: str, demo_sites: SitesConfig
) -> None:
    validate(xml)  # valid B2MML ...
    with pytest.raises(B2mmlMappingError, match=re.escape(expected)) as caught:
        run(ALP_PERF, demo_sites, xml)  # ... but not lot events
    assert caught.value.reason_code == "unmappable-b2mml"


def test_a_message_this_connector_does_not_map_is_refused(demo_sites: SitesConfig) -> None:
    xml = b"""<MaterialDefinition xmlns="http://www.mesa.org/xml/B2MML"><ID>CD-900</ID></MaterialDefinition>"""
    with pytest.raises(B2mmlMappingError, match="not a message this connector maps"):
        run(ALP_PERF, demo_sites, xml)


def test_a_job_response_list_uses_the_schemas_own_element_name(demo_sites: SitesConfig) -> None:
    # V0700 spells the list's entries "JobResponset"; the connector follows the schema.
    root = ET.parse(ALP_WORK).getroot()
    job = root.find(".//b:JobResponse", NS)
    assert job is not None
    body = ET.tostring(job, encoding="unicode").replace("JobResponse", "JobResponset")
    xml = f'<JobResponseList xmlns="{B}"><ID>JRL-1</ID>{body}</JobResponseList>'.encode()
    listed = run(ALP_WORK, demo_sites, xml)
    assert flows_of(listed) == expected_flows(ALP_WORK)


def test_a_performance_without_lot_tracked_actuals_maps_to_nothing(demo_sites: SitesConfig) -> None:
    xml = b"""<OperationsPerformance xmlns="http://www.mesa.org/xml/B2MML"><ID>OP-EMPTY</ID>
      <OperationsResponse><ID>OR-1</ID></OperationsResponse></OperationsPerformance>"""
    assert run(ALP_PERF, demo_sites, xml) == []


# --------------------------------------------------------------------------- lot information


def test_lot_information_gives_status_and_sub_lot_aliases(demo_sites: SitesConfig) -> None:
    root = ET.parse(ALP_LOTS).getroot()
    created = text(root, "ApplicationArea/b:CreationDateTime")
    assert created is not None
    at = datetime.fromisoformat(created).replace(tzinfo=ZoneInfo("Europe/Zurich"))
    expected_aliases: Counter[tuple[str, str]] = Counter()
    expected_status = set()

    def walk(lot: str, element: ET.Element) -> None:
        for sub in element.findall("b:MaterialSubLot", NS):
            expected_aliases[(lot, text(sub, "ID") or "")] += 1
            walk(lot, sub)

    info = root.find("b:DataArea/b:MaterialInformation", NS)
    assert info is not None
    for lot in info.findall("b:MaterialLot", NS):
        lot_id = text(lot, "ID") or ""
        expected_status.add((lot_id, text(lot, "Status")))
        walk(lot_id, lot)
    for sub in info.findall("b:MaterialSubLot", NS):
        lot_id = text(sub, "MaterialLotID") or ""
        expected_aliases[(lot_id, text(sub, "ID") or "")] += 1
        walk(lot_id, sub)

    events = run(ALP_LOTS, demo_sites)
    statuses = [e for e in events if isinstance(e, LotStatusChanged)]
    aliases = [e for e in events if isinstance(e, LotAliasLinked)]
    assert len(statuses) + len(aliases) == len(events)
    assert {(e.lot, e.status) for e in statuses} == expected_status
    assert Counter((e.lot, e.alias) for e in aliases) == expected_aliases
    assert {e.envelope.occurred_at for e in events} == {at}
    assert {(e.reason_code, e.actor) for e in statuses} == {("MES_LOT_STATUS", "mes-alp")}
    assert [e.model_dump() for e in run(ALP_LOTS, demo_sites)] == [e.model_dump() for e in events]

    without_status = run(ALP_LOTS, demo_sites, map_lot_status=False)
    assert not [e for e in without_status if isinstance(e, LotStatusChanged)]


def test_a_loose_sub_lot_must_name_its_lot(demo_sites: SitesConfig) -> None:
    xml = _change(b"<MaterialLotID>ALP-20261102-003</MaterialLotID>", b"", ALP_LOTS)
    with pytest.raises(B2mmlMappingError, match="needs MaterialLotID"):
        run(ALP_LOTS, demo_sites, xml)


# --------------------------------------------------------------------------- the rest of the hub


@pytest.mark.parametrize("path", [*ACTUAL_SAMPLES, ALP_LOTS], ids=lambda p: p.name)
def test_mapped_events_normalize_and_survive_the_wire(path: Path, demo_sites: SitesConfig) -> None:
    serde = make_serde()
    for event in run(path, demo_sites):
        enterprise = normalize(event, demo_sites)
        check_enterprise(enterprise)
        decoded = serde.decode(serde.encode(event), topic="t", partition=0, offset=0)
        assert decoded == event


@pytest.mark.parametrize("path", ACTUAL_SAMPLES, ids=lambda p: p.name)
def test_co_and_by_products_keep_their_role(path: Path, demo_sites: SitesConfig) -> None:
    """The role of every produced lot is the one its MaterialUse states (read with ElementTree)."""
    expected = {}
    for actual in ET.parse(path).getroot().iter(f"{{{B}}}MaterialActual"):
        use, lots = text(actual, "MaterialUse"), texts(actual, "MaterialLotID")
        if use in PRODUCING and lots:
            role = {"Co-product Produced": "CO_PRODUCT", "By-product Produced": "BY_PRODUCT"}
            expected[lots[0]] = role.get(use, "PRODUCT")
    produced = {
        e.lot: e.role.value for e in run(path, demo_sites) if isinstance(e, MaterialProduced)
    }
    assert produced == expected
