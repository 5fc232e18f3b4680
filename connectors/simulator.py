"""A three-site plant simulator: what a real ERP, MES, LIMS and WMS would send.

Site ALP (Switzerland) writes lot codes ``ALP-yyyymmdd-nnn``, kilograms and status
letters; site BRK (Wisconsin) writes julian lot codes ``yyddd-nn``, pounds and
status words; site CRV (Verona, a co-packer) writes ``L<yy><ddd><line>``, ``KG`` and
Italian status codes. Plant clocks are local; the simulator, like every connector,
turns them into aware times with the site's configured zone.

The story: four supplier receipts at ALP -> an MES blend batch (partial consumption)
-> a split -> a transfer of one half to BRK, relabelled there, and of 200 kg of the
other half to CRV, where the line makes a spread of it with a supplier's hazelnut paste
-> shipments to three customers, one from each site. :class:`GroundTruth` says,
independently of the hub, what every trace must find.

The MES batches are events, or (``mes_as_b2mml=True``) B2MML messages for the
``b2mml`` connectors' drop folders (:func:`write_plant_systems` creates them, with
BRK's WMS database and ALP's LIMS export). With ``faults=True`` the plants misbehave as
real ones do: an exact re-send of a receipt, a record with a unit nobody mapped, and
with B2MML an MES that re-sends a message, one that reports late (after the shipment
of what it made) and one message that breaks the schema.

When a live system stands in for a simulated one (``lothub demo`` runs ALP's ERP on
Tryton), :func:`hand_over` takes its events out of the scenario.

Example::

    scenario = build_scenario(sites)
    publisher.publish(scenario.events)
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from schemas.model import (
    DocumentRef,
    Envelope,
    Item,
    Location,
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
from schemas.sites import SitesConfig

#: Exact by definition (international pound, 1959); used for the ground truth only.
KG_PER_LB = Decimal("0.45359237")


@dataclass
class GroundTruth:
    """What the scenario did, in enterprise lot ids and kilograms."""

    supplier_lots: dict[str, str] = field(default_factory=dict)  # lot id -> supplier lot
    received_kg: dict[str, Decimal] = field(default_factory=dict)
    links: list[tuple[str, str, Decimal]] = field(default_factory=list)  # parent, child, kg used
    shipments: dict[str, list[tuple[str, Decimal]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # lot id -> [(customer, kg)]
    #: other names of lots (licence plates, ...) -> lot id
    aliases: dict[str, str] = field(default_factory=dict)
    #: lot id -> enterprise status once everything arrived
    statuses: dict[str, str] = field(default_factory=dict)
    #: (reconciliation job, lot) mismatches the plant systems' data must produce
    mismatches: set[tuple[str, str]] = field(default_factory=set)

    def ancestors(self, lot: str) -> set[str]:
        """Every lot ``lot`` was made from, transitively (not itself)."""
        found: set[str] = set()
        todo = [lot]
        while todo:
            child = todo.pop()
            for parent, c, _ in self.links:
                if c == child and parent not in found:
                    found.add(parent)
                    todo.append(parent)
        return found

    def descendants(self, lot: str) -> set[str]:
        """Every lot made from ``lot``, transitively (not itself)."""
        found: set[str] = set()
        todo = [lot]
        while todo:
            parent = todo.pop()
            for p, child, _ in self.links:
                if p == parent and child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def backward_supplier_lots(self, lot: str) -> set[str]:
        """Supplier lot codes a backward trace of ``lot`` must reach."""
        reach = self.ancestors(lot) | {lot}
        return {self.supplier_lots[x] for x in reach if x in self.supplier_lots}

    def forward_customers(self, lot: str) -> set[str]:
        """Customers a forward trace of ``lot`` must reach."""
        reach = self.descendants(lot) | {lot}
        return {customer for x in reach for customer, _ in self.shipments.get(x, [])}

    def links_within(self, lots: set[str]) -> set[tuple[str, str, Decimal]]:
        """The links among ``lots`` (what a trace over them must show)."""
        return {(p, c, q) for p, c, q in self.links if p in lots and c in lots}

    def shipped_lots(self) -> list[str]:
        """Lots that left for a customer."""
        return sorted(self.shipments)


@dataclass
class Scenario:
    """Raw events in publishing order, and the truth they encode."""

    events: list[LotEventBase]
    truth: GroundTruth
    #: event ids the hub must park on the dead-letter topic
    expected_dead_letters: set[str]
    #: how many events are exact re-sends
    resends: int
    #: MES batches as B2MML messages (``build_scenario(mes_as_b2mml=True)``)
    mes_messages: list[MesMessage] = field(default_factory=list)


@dataclass(frozen=True)
class MesMessage:
    """A B2MML message an MES drops into its ``b2mml`` connector's folder."""

    connector: str
    file_name: str
    xml: bytes
    #: sent after the ERP's events (the hub must cope with children before parents)
    late: bool = False
    #: invalid on purpose: the connector must park it
    rejected: bool = False


def _actual(code: str, item: Item, qty: str, unit: str, use: str) -> str:
    return (
        f"<MaterialActual><MaterialDefinitionID>{escape(item.item_code)}</MaterialDefinitionID>"
        f"<MaterialLotID>{escape(code)}</MaterialLotID>"
        f"<Description>{escape(item.description or item.item_code)}</Description>"
        f"<MaterialUse>{use}</MaterialUse><Quantity><QuantityString>{qty}</QuantityString>"
        f"<DataType>decimal</DataType><UnitOfMeasure>{escape(unit)}</UnitOfMeasure></Quantity>"
        "</MaterialActual>"
    )


def b2mml_performance(
    *,
    order: str,
    site: str,
    equipment: str,
    consumed: list[tuple[str, Item, str, str]],
    produced: list[tuple[str, Item, str, str]],
    start: datetime,
    end: datetime,
) -> bytes:
    """A B2MML V0700 ``OperationsPerformance`` for one process order, as an MES reports it.

    Times are plant local without an offset, quantities and units as the site writes them.
    """
    actuals = "".join(
        [_actual(*c, "Consumed") for c in consumed] + [_actual(*p, "Produced") for p in produced]
    )
    t0, t1 = start.isoformat(), end.isoformat()
    published = (end + timedelta(minutes=20)).isoformat()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<OperationsPerformance xmlns="http://www.mesa.org/xml/B2MML">'
        f"<ID>OPERF-{order}</ID><HierarchyScope><EquipmentID>{site}</EquipmentID>"
        "<EquipmentElementLevel>Site</EquipmentElementLevel></HierarchyScope>"
        f"<OperationsType>Production</OperationsType><StartTime>{t0}</StartTime>"
        f"<EndTime>{t1}</EndTime><PerformanceState>Completed</PerformanceState>"
        f"<PublishedDate>{published}</PublishedDate><OperationsResponse><ID>OR-{order}</ID>"
        f"<OperationsType>Production</OperationsType><OperationsRequestID>{order}</OperationsRequestID>"
        f"<StartTime>{t0}</StartTime><EndTime>{t1}</EndTime><ResponseState>Completed</ResponseState>"
        f"<SegmentResponse><ID>SR-{order}-010</ID><HierarchyScope><EquipmentID>{equipment}</EquipmentID>"
        "<EquipmentElementLevel>ProcessCell</EquipmentElementLevel></HierarchyScope>"
        f"<OperationsType>Production</OperationsType><ActualStartTime>{t0}</ActualStartTime>"
        f"<ActualEndTime>{t1}</ActualEndTime><SegmentState>Completed</SegmentState>{actuals}"
        "</SegmentResponse></OperationsResponse></OperationsPerformance>\n"
    ).encode()


class _Source:
    """One plant system: stamps envelopes with local time made aware and a sequence."""

    def __init__(self, sites: SitesConfig, site: str, kind: SystemKind, instance: str) -> None:
        config = sites.site(site)
        if config is None:
            raise ValueError(f"the simulator needs site {site!r} in the site configuration")
        self.config = config
        self.source = Source(system_kind=kind, system_instance=instance, site=site)
        self.sequence = 0

    def envelope(self, event_type: str, key: str, local_time: datetime) -> Envelope:
        self.sequence += 1
        occurred = self.config.localize(local_time)
        return Envelope(
            event_id=stable_event_id(self.source.system_instance, event_type, key),
            event_type=event_type,
            source=self.source,
            occurred_at=occurred,
            recorded_at=occurred.astimezone(UTC) + timedelta(minutes=2),
            sequence=self.sequence,
            correlation_id=key,
        )


def _q(value: str, unit: str) -> Quantity:
    return Quantity(value=Decimal(value), unit=unit)


def build_scenario(
    sites: SitesConfig, *, faults: bool = False, mes_as_b2mml: bool = False
) -> Scenario:
    """The three-site scenario; dates are November 2026 plant local time.

    With ``mes_as_b2mml`` the MES batches are not events but B2MML messages in
    :attr:`Scenario.mes_messages`, for the drop folders of the ``b2mml`` connectors.
    """
    alp_erp = _Source(sites, "ALP", SystemKind.ERP, "erp-alp")
    alp_mes = _Source(sites, "ALP", SystemKind.MES, "mes-alp")
    alp_lims = _Source(sites, "ALP", SystemKind.LIMS, "lims-alp")
    brk_erp = _Source(sites, "BRK", SystemKind.ERP, "erp-brk")
    crv_erp = _Source(sites, "CRV", SystemKind.ERP, "erp-crv")
    crv_mes = _Source(sites, "CRV", SystemKind.MES, "mes-crv")
    truth = GroundTruth()
    events: list[LotEventBase] = []
    mes_messages: list[MesMessage] = []

    def mes_batch(
        mes: _Source,
        order: str,
        kind: TransformationKind,
        where: Location,
        *,
        consumed: list[tuple[str, Item, str, str]],
        produced: list[tuple[str, Item, str, str]],
        start: datetime,
        end: datetime,
        late: bool = False,
    ) -> None:
        """One MES batch, as events or as the B2MML message the MES would drop."""
        if mes_as_b2mml:
            xml = b2mml_performance(order=order, site=mes.source.site, equipment=where.location_id,
                                    consumed=consumed, produced=produced, start=start, end=end)  # fmt: skip
            mes_messages.append(MesMessage(mes.source.system_instance, f"{order}.xml", xml, late))
            return
        doc = DocumentRef(doc_type="BATCH_RECORD", number=order)
        for code, item, qty, unit in consumed:
            events.append(MaterialConsumed(
                envelope=mes.envelope("MaterialConsumed", f"{order}/{code}", start),
                batch_id=order, kind=kind, location=where, lot=code, item=item,
                quantity=_q(qty, unit), reference_document=doc,
            ))  # fmt: skip
        for code, item, qty, unit in produced:
            events.append(MaterialProduced(
                envelope=mes.envelope("MaterialProduced", f"{order}/{code}", end),
                batch_id=order, kind=kind, location=where, lot=code, item=item,
                quantity=_q(qty, unit), reference_document=doc,
            ))  # fmt: skip

    wh_alp = Location(
        location_id="ALP-WH1",
        name="Alpenwerk raw materials",
        site="ALP",
        address="Industriestrasse 12, 7000 Chur, CH",
    )
    prod_alp = Location(location_id="ALP-MIX2", name="Alpenwerk mixing hall 2", site="ALP")
    fg_alp = Location(location_id="ALP-FG", name="Alpenwerk finished goods", site="ALP")
    dock_brk = Location(
        location_id="BRK-DOCK",
        name="Brookfield receiving dock",
        site="BRK",
        address="N4820 County Rd, Brookfield, WI, US",
    )
    milk = Item(item_code="MP-100", description="Skimmed milk powder 25 kg bag")
    cocoa = Item(item_code="CO-200", description="Cocoa powder 10/12")
    sugar = Item(item_code="SU-300", description="Crystal sugar EU2")
    base = Item(item_code="CD-900", description="Cocoa drink base")

    def receipt(
        code: str,
        item: Item,
        kg: str,
        supplier: Party,
        supplier_lot: str,
        ship_from: Location,
        po: str,
        when: datetime,
    ) -> LotReceived:
        lot_id = f"ALP:{code}"
        truth.supplier_lots[lot_id] = supplier_lot
        truth.received_kg[lot_id] = Decimal(kg)
        return LotReceived(
            envelope=alp_erp.envelope("LotReceived", po + "/" + code, when),
            lot=code,
            item=item,
            quantity=_q(kg, "kg"),
            supplier=supplier,
            supplier_lot=supplier_lot,
            receiving_location=wh_alp,
            ship_from=ship_from,
            tlc_source=ship_from,
            reference_document=DocumentRef(doc_type="PO", number=po),
        )

    dairy = Party(party_id="V-1001", name="Alpine Dairy Co")
    cocoa_co = Party(party_id="V-2040", name="Cocoa Partners BV")
    sucre = Party(party_id="V-3310", name="Sucre Romand SA")
    receipts = [
        receipt(
            "ALP-20261102-001",
            milk,
            "1000",
            dairy,
            "AD-5531",
            Location(location_id="GLN-7612345000015", name="Alpine Dairy Landquart"),
            "PO-45001",
            datetime(2026, 11, 2, 7, 40),
        ),
        receipt(
            "ALP-20261102-002",
            cocoa,
            "400",
            cocoa_co,
            "CP-77812",
            Location(location_id="GLN-8712345000022", name="Cocoa Partners Zaandam"),
            "PO-45002",
            datetime(2026, 11, 2, 9, 15),
        ),
        receipt(
            "ALP-20261102-003",
            sugar,
            "600",
            sucre,
            "SR-2026-118",
            Location(location_id="GLN-7612345000039", name="Sucre Romand Aarberg"),
            "PO-45003",
            datetime(2026, 11, 2, 10, 5),
        ),
        receipt(
            "ALP-20261102-004",
            sugar,
            "500",
            sucre,
            "SR-2026-131",
            Location(location_id="GLN-7612345000039", name="Sucre Romand Aarberg"),
            "PO-45004",
            datetime(2026, 11, 2, 13, 30),
        ),
    ]
    events.extend(receipts)
    for r in receipts:
        events.append(
            LotStatusChanged(
                envelope=alp_erp.envelope(
                    "LotStatusChanged",
                    f"{r.lot}/Q",
                    r.envelope.occurred_at.replace(tzinfo=None) + timedelta(minutes=1),
                ),
                lot=r.lot,
                status="Q",
                reason_code="INCOMING",
                actor="wms.auto",
            )
        )
    events.append(
        QcSampleTaken(
            envelope=alp_lims.envelope("QcSampleTaken", "S-26-0912", datetime(2026, 11, 2, 11, 0)),
            sample_id="S-26-0912",
            lot="ALP-20261102-001",
            location=wh_alp,
        )
    )
    events.append(
        QcResultRecorded(
            envelope=alp_lims.envelope(
                "QcResultRecorded", "S-26-0912/MOIST", datetime(2026, 11, 2, 15, 20)
            ),
            sample_id="S-26-0912",
            lot="ALP-20261102-001",
            test_code="MOIST",
            result="3.4",
            numeric_result=Decimal("3.4"),
            result_unit="%",
            spec_min=None,
            spec_max=Decimal("4.0"),
            passed=True,
        )
    )
    for r in receipts[:3]:
        events.append(
            LotStatusChanged(
                envelope=alp_erp.envelope(
                    "LotStatusChanged", f"{r.lot}/F", datetime(2026, 11, 2, 16, 0)
                ),
                lot=r.lot,
                status="F",
                reason_code="QC-PASS",
                actor="qa.brunner",
            )
        )

    # MES blend batch: partial consumption of the milk powder.
    mes_batch(
        alp_mes, "B-4471", TransformationKind.BLEND, prod_alp,
        consumed=[("ALP-20261102-001", milk, "800", "kg"), ("ALP-20261102-002", cocoa, "300", "kg"),
                  ("ALP-20261102-003", sugar, "500", "kg")],
        produced=[("ALP-20261103-010", base, "1600", "kg")],
        start=datetime(2026, 11, 3, 6, 30), end=datetime(2026, 11, 3, 9, 45),
    )  # fmt: skip
    for code in ("ALP-20261102-001", "ALP-20261102-002", "ALP-20261102-003"):
        used = {"ALP-20261102-001": 800, "ALP-20261102-002": 300, "ALP-20261102-003": 500}[code]
        truth.links.append((f"ALP:{code}", "ALP:ALP-20261103-010", Decimal(used)))

    # Split of the blend into two lots (a repack order in the ERP).
    events.append(
        Transformation(
            envelope=alp_erp.envelope("Transformation", "WO-8802", datetime(2026, 11, 3, 14, 0)),
            kind=TransformationKind.SPLIT,
            transformation_id="WO-8802",
            location=fg_alp,
            inputs=[LotQuantity(lot="ALP-20261103-010", item=base, quantity=_q("1600", "kg"))],
            outputs=[
                LotQuantity(lot="ALP-20261103-011", item=base, quantity=_q("1000", "kg")),
                LotQuantity(lot="ALP-20261103-012", item=base, quantity=_q("600", "kg")),
            ],
            reference_document=DocumentRef(doc_type="WORK_ORDER", number="WO-8802"),
        )
    )
    truth.links += [
        ("ALP:ALP-20261103-010", "ALP:ALP-20261103-011", Decimal(1600)),
        ("ALP:ALP-20261103-010", "ALP:ALP-20261103-012", Decimal(1600)),
    ]

    # Transfer of one half to Brookfield, relabelled there with a julian code in pounds.
    transfer_doc = DocumentRef(doc_type="TRANSFER_ORDER", number="TO-9001")
    events.append(
        TransferShipped(
            envelope=alp_erp.envelope(
                "TransferShipped", "TO-9001/ship", datetime(2026, 11, 4, 8, 0)
            ),
            transfer_id="TO-9001",
            lot="ALP-20261103-011",
            item=base,
            quantity=_q("1000", "kg"),
            from_location=fg_alp,
            to_location=dock_brk,
            reference_document=transfer_doc,
        )
    )
    received_lb = "2204.62"
    events.append(
        TransferReceived(
            envelope=brk_erp.envelope(
                "TransferReceived", "TO-9001/recv", datetime(2026, 11, 9, 13, 10)
            ),
            transfer_id="TO-9001",
            shipped_lot="ALP-20261103-011",
            shipped_lot_site="ALP",
            lot="26313-01",
            item=base,
            quantity=_q(received_lb, "LB"),
            from_location=fg_alp,
            receiving_location=dock_brk,
            reference_document=transfer_doc,
        )
    )
    truth.links.append(("ALP:ALP-20261103-011", "BRK:26313-01", Decimal(received_lb) * KG_PER_LB))
    events.append(
        LotStatusChanged(
            envelope=brk_erp.envelope(
                "LotStatusChanged", "26313-01/AVAIL", datetime(2026, 11, 9, 15, 0)
            ),
            lot="26313-01",
            status="AVAIL",
            reason_code="COA-OK",
            actor="qa.olson",
        )
    )

    def ship(
        source: _Source,
        site: str,
        code: str,
        qty: str,
        unit: str,
        kg: Decimal,
        customer: Party,
        ship_to: Location,
        ship_from: Location,
        bol: str,
        when: datetime,
    ) -> LotShipped:
        truth.shipments[f"{site}:{code}"].append((customer.name, kg))
        return LotShipped(
            envelope=source.envelope("LotShipped", bol, when),
            lot=code,
            item=base,
            quantity=_q(qty, unit),
            customer=customer,
            ship_to=ship_to,
            ship_from=ship_from,
            tlc_source=fg_alp,
            reference_document=DocumentRef(doc_type="BOL", number=bol),
        )

    midwest = Party(party_id="C-5001", name="Midwest Grocers Inc")
    huber = Party(party_id="C-0420", name="Baeckerei Huber AG")
    events.append(
        ship(
            brk_erp,
            "BRK",
            "26313-01",
            "1200",
            "LB",
            Decimal(1200) * KG_PER_LB,
            midwest,
            Location(location_id="GLN-0012345000058", name="Midwest Grocers DC Madison"),
            dock_brk,
            "BOL-77120",
            datetime(2026, 11, 10, 10, 30),
        )
    )
    events.append(
        ship(
            alp_erp,
            "ALP",
            "ALP-20261103-012",
            "400",
            "kg",
            Decimal(400),
            huber,
            Location(location_id="GLN-7612345000060", name="Baeckerei Huber Thusis"),
            fg_alp,
            "LS-20261105-3",
            datetime(2026, 11, 5, 7, 15),
        )
    )

    # Verona: half of lot 012's remainder goes to the co-packer, which makes a spread of it.
    dock_crv = Location(
        location_id="CRV-MAG1", name="Cremeria Verona magazzino", site="CRV",
        address="Via dell'Industria 8, 37135 Verona, IT",
    )  # fmt: skip
    line_crv = Location(location_id="CRV-L3", name="Cremeria Verona linea 3", site="CRV")
    hazelnut = Item(item_code="NC-110", description="Hazelnut paste, roasted")
    spread = Item(item_code="HC-500", description="Hazelnut cocoa spread base")
    crv_transfer = DocumentRef(doc_type="TRANSFER_ORDER", number="TO-9002")
    events.append(TransferShipped(
        envelope=alp_erp.envelope("TransferShipped", "TO-9002/ship", datetime(2026, 11, 5, 6, 0)),
        transfer_id="TO-9002", lot="ALP-20261103-012", item=base, quantity=_q("200", "kg"),
        from_location=fg_alp, to_location=dock_crv, reference_document=crv_transfer,
    ))  # fmt: skip
    events.append(TransferReceived(
        envelope=crv_erp.envelope("TransferReceived", "TO-9002/recv", datetime(2026, 11, 6, 8, 0)),
        transfer_id="TO-9002", shipped_lot="ALP-20261103-012", shipped_lot_site="ALP",
        lot="L26310A", item=base, quantity=_q("200", "KG"), from_location=fg_alp,
        receiving_location=dock_crv, reference_document=crv_transfer,
    ))  # fmt: skip
    truth.links.append(("ALP:ALP-20261103-012", "CRV:L26310A", Decimal(200)))
    nocciole = Party(party_id="F-0733", name="Nocciole Piemonte Srl")
    events.append(LotReceived(
        envelope=crv_erp.envelope("LotReceived", "OA-2026-0733/L26309C", datetime(2026, 11, 5, 10, 0)),
        lot="L26309C", item=hazelnut, quantity=_q("300", "KG"), supplier=nocciole,
        supplier_lot="NP-2611-07", receiving_location=dock_crv,
        ship_from=Location(location_id="GLN-8012345000017", name="Nocciole Piemonte Cortemilia"),
        reference_document=DocumentRef(doc_type="PO", number="OA-2026-0733"),
    ))  # fmt: skip
    truth.supplier_lots["CRV:L26309C"] = "NP-2611-07"
    truth.received_kg["CRV:L26309C"] = Decimal(300)
    for status, when in (
        ("QUAR", datetime(2026, 11, 5, 10, 5)),
        ("LIB", datetime(2026, 11, 6, 9, 0)),
    ):
        events.append(LotStatusChanged(
            envelope=crv_erp.envelope("LotStatusChanged", f"L26309C/{status}", when),
            lot="L26309C", status=status, reason_code="CQ", actor="qa.ferrari",
        ))  # fmt: skip
    # The line's MES reports the batch late: its message arrives after the shipment.
    mes_batch(
        crv_mes, "OP-26-1187", TransformationKind.PRODUCTION, line_crv,
        consumed=[("L26310A", base, "200", "KG"), ("L26309C", hazelnut, "280", "KG")],
        produced=[("L26312B", spread, "470", "KG")],
        start=datetime(2026, 11, 8, 7, 0), end=datetime(2026, 11, 8, 13, 30), late=True,
    )  # fmt: skip
    truth.links += [
        ("CRV:L26310A", "CRV:L26312B", Decimal(200)),
        ("CRV:L26309C", "CRV:L26312B", Decimal(280)),
    ]
    rossi = Party(party_id="C-7310", name="Dolciaria Rossi SpA")
    events.append(LotShipped(
        envelope=crv_erp.envelope("LotShipped", "DDT-2026-4410", datetime(2026, 11, 10, 9, 0)),
        lot="L26312B", item=spread, quantity=_q("300", "KG"), customer=rossi,
        ship_to=Location(location_id="GLN-8012345000093", name="Dolciaria Rossi Bergamo"),
        ship_from=dock_crv, tlc_source=line_crv,
        reference_document=DocumentRef(doc_type="DDT", number="DDT-2026-4410"),
    ))  # fmt: skip
    truth.shipments["CRV:L26312B"].append((rossi.name, Decimal(300)))

    dead_letters: set[str] = set()
    resends = 0
    if faults:
        events.append(receipts[1])  # an exact re-send, as after a connector restart
        resends += 1
        odd = LotReceived(
            envelope=brk_erp.envelope(
                "LotReceived", "PO-88120/26313-02", datetime(2026, 11, 9, 9, 0)
            ),
            lot="26313-02",
            item=sugar,
            quantity=_q("40", "sacks"),
            supplier=sucre,
            supplier_lot="SR-2026-140",
            receiving_location=dock_brk,
            ship_from=dock_brk,
            reference_document=DocumentRef(doc_type="PO", number="PO-88120"),
        )
        events.append(odd)
        dead_letters.add(odd.envelope.event_id)
        if mes_as_b2mml:
            # The MES retried a message it had sent (a new file, the same content) ...
            first = next(m for m in mes_messages if m.connector == "mes-alp")
            mes_messages.append(MesMessage("mes-alp", "B-4471.retry.xml", first.xml))
            # ... and another line sent one the B2MML schema does not allow.
            crv = next(m for m in mes_messages if m.connector == "mes-crv")
            bad = crv.xml.replace(b"OP-26-1187", b"OP-26-1188").replace(
                b"<MaterialUse>Consumed</MaterialUse>", b"<MaterialUse>Eaten</MaterialUse>", 1
            )
            mes_messages.append(MesMessage("mes-crv", "OP-26-1188.xml", bad, rejected=True))
    truth.statuses.update({
        "ALP:ALP-20261102-001": "RELEASED",
        "ALP:ALP-20261102-004": "QUARANTINE",
        "BRK:26313-01": "RELEASED",
    })  # fmt: skip
    truth.statuses["CRV:L26309C"] = "RELEASED"
    return Scenario(events=events, truth=truth, expected_dead_letters=dead_letters,
                    resends=resends, mes_messages=mes_messages)  # fmt: skip


def hand_over(scenario: Scenario, event_ids: set[str]) -> Scenario:
    """``scenario`` without the events ``event_ids``: a live system sends those instead.

    A re-send fault among them stays a fault of the simulated plants: BRK's ERP re-sends
    its receipt of the transfer, as after a connector restart.
    """
    kept = [e for e in scenario.events if e.envelope.event_id not in event_ids]
    seen: set[str] = set()
    lost_resends = 0
    for event in scenario.events:
        if event.envelope.event_id in event_ids and event.envelope.event_id in seen:
            lost_resends += 1
        seen.add(event.envelope.event_id)
    again = next(
        (e for e in kept if isinstance(e, TransferReceived) and e.envelope.source.site == "BRK"),
        None,
    )
    if lost_resends and again is None:
        raise ValueError("the scenario has no BRK transfer receipt left to re-send")
    if again is not None:
        kept += [again] * lost_resends
    return Scenario(events=kept, truth=scenario.truth,
                    expected_dead_letters=scenario.expected_dead_letters,
                    resends=scenario.resends, mes_messages=scenario.mes_messages)  # fmt: skip


#: BRK's warehouse (America/Chicago wall clock, pounds): the relabelled transfer lot.
WMS_BRK_ROWS: list[dict[str, object]] = [
    {"id": 1, "updated_at": datetime(2026, 11, 9, 13, 40), "txn_type": "PUTAWAY", "lot": "26313-01",
     "item_code": "CD-900", "item_description": "Cocoa drink base", "quantity": Decimal("2204.62"),
     "uom": "LB", "from_location": "DOCK", "to_location": "A-01-02", "license_plate": "LP-77120"},
    {"id": 2, "updated_at": datetime(2026, 11, 10, 9, 50), "txn_type": "PICK", "lot": "26313-01",
     "item_code": "CD-900", "item_description": "Cocoa drink base", "quantity": Decimal(1200),
     "uom": "LB", "from_location": "A-01-02", "to_location": "STAGE", "license_plate": "LP-77120",
     "document": "BOL-77120"},
]  # fmt: skip

#: ALP's LIMS export (German headers, semicolons, decimal comma, Europe/Zurich wall clock).
LIMS_ALP_CSV = (
    "Probe;Charge;Prüfung;Ergebnis;Einheit;Max;Bewertung;Geprüft;Entscheid;Freigabe\n"
    "S-26-0913;ALP-20261102-002;SALM;negativ;;;i.O.;02.11.2026 17:00;F;qa.brunner\n"
    "S-26-0915;ALP-20261102-004;MOIST;0,09;%;0,06;n.i.O.;04.11.2026 08:30;S;qa.brunner\n"
)
LIMS_ALP_FIELDS = {"sample_id": "Probe", "lot": "Charge", "test": "Prüfung", "result": "Ergebnis",
                   "unit": "Einheit", "spec_max": "Max", "passed": "Bewertung",
                   "tested_at": "Geprüft", "disposition": "Entscheid", "approver": "Freigabe"}  # fmt: skip


def write_plant_systems(folder: Path, truth: GroundTruth) -> str:
    """Create BRK's WMS database, ALP's LIMS export and the MES drop folders under ``folder``.

    Returns the ``[connectors.*]`` TOML that reads them, and adds what they say to
    ``truth``: the licence plate names the BRK lot, and the LIMS puts sugar lot 004
    on hold.
    """
    from connectors.wms_sql import create_transactions

    folder.mkdir(parents=True, exist_ok=True)
    wms = folder / "wms-brk.db"
    wms.unlink(missing_ok=True)
    create_transactions(f"sqlite:///{wms}", WMS_BRK_ROWS)
    exports = folder / "lims-alp"
    exports.mkdir(exist_ok=True)
    (exports / "results-2026-11.csv").write_bytes(LIMS_ALP_CSV.encode("cp1252"))
    truth.aliases["LP-77120"] = "BRK:26313-01"
    truth.statuses["ALP:ALP-20261102-004"] = "ON_HOLD"
    # ... while the ERP still shows it in quarantine: the LIMS decision never reached it
    truth.mismatches.add(("disposition", "ALP:ALP-20261102-004"))
    fields = ", ".join(f'{k} = "{v}"' for k, v in LIMS_ALP_FIELDS.items())
    mes = ""
    for name, site, kind, names in (
        ("mes-alp", "ALP", "BLEND", '"ALP-MIX2" = "Alpenwerk mixing hall 2"'),
        ("mes-crv", "CRV", "PRODUCTION", '"CRV-L3" = "Cremeria Verona linea 3"'),
    ):
        drop = mes_drop_folder(folder, name)
        drop.mkdir(parents=True, exist_ok=True)
        mes += (
            f'\n[connectors.{name}]\nkind = "b2mml"\nsite = "{site}"\npoll_interval_s = 0.5\n'
            f'[connectors.{name}.settings]\nfolder = "{drop.as_posix()}"\nkind = "{kind}"\n'
            f"location_names = {{ {names} }}\n"
        )
    return mes + (
        '\n[connectors.wms-brk]\nkind = "wms-sql"\nsite = "BRK"\npoll_interval_s = 1\n'
        f'[connectors.wms-brk.settings]\nurl = "sqlite:///{wms.as_posix()}"\n'
        '\n[connectors.lims-alp]\nkind = "lims-csv"\nsite = "ALP"\npoll_interval_s = 1\n'
        f'[connectors.lims-alp.settings]\nfolder = "{exports.as_posix()}"\nencoding = "cp1252"\n'
        'delimiter = ";"\ndecimal_separator = ","\ndate_format = "%d.%m.%Y %H:%M"\n'
        f'pass_values = ["I.O."]\nfields = {{ {fields} }}\n'
    )


def mes_drop_folder(plants: Path, connector: str) -> Path:
    """Where the demo's MES ``connector`` drops its B2MML files."""
    return plants / f"{connector}-drop"


def drop_mes_message(plants: Path, message: MesMessage) -> Path:
    """Drop ``message`` as an MES does: write a hidden temporary file, then rename it."""
    folder = mes_drop_folder(plants, message.connector)
    tmp = folder / f".{message.file_name}.part"
    tmp.write_bytes(message.xml)
    target = folder / message.file_name
    tmp.replace(target)
    return target


def warehouse_moves(
    count: int, start: datetime = datetime(2026, 11, 9, 6, 0)
) -> list[dict[str, object]]:
    """``count`` bin-to-bin moves at BRK, three per second: load for tests and benchmarks."""
    return [
        {"id": i, "updated_at": start + timedelta(seconds=i // 3), "txn_type": "MOVE",
         "lot": f"26313-{i % 100:02d}", "item_code": "CD-900", "quantity": Decimal(i), "uom": "LB",
         "from_location": "A-01", "to_location": "B-02"}
        for i in range(1, count + 1)
    ]  # fmt: skip


#: events one :func:`plant_load` production chain sends
CHAIN_EVENTS = 13
#: with ``faults``, the chains (of every hundred) where the LIMS puts a lot on hold instead of
#: releasing it, the ERP loses a receipt, and the MES reports twice the output
FAULT_HOLD, FAULT_LOST_RECEIPT, FAULT_MASS = 37, 61, 83


def plant_load(
    sites: SitesConfig, count: int, *, seed: int = 0, faults: bool = False
) -> list[LotEventBase]:
    """``count`` raw events from many independent production chains: load for tests and benchmarks.

    Each chain is what the demo scenario does, in small: three supplier receipts at ALP
    (ERP), each released by the LIMS, consumed by an MES blend batch whose output is
    transferred to BRK, relabelled there in pounds and shipped to a customer. Every chain
    has its own lots (about 4,000 lots per 10,000 events); ``seed`` varies the quantities.
    The list is cut after ``count`` events, so the last chain may be incomplete.

    With ``faults``, three chains in every hundred go wrong (see :data:`FAULT_HOLD`): a
    lot consumed while on hold (hold-violation), a receipt the ERP numbered but never
    sent (orphan-lot, and a sequence-gap where ``erp-alp`` is checked for them) and a
    batch that puts out twice what went in (mass-balance).
    """
    rnd = random.Random(seed)  # noqa: S311 - test data, not secrets
    erp = _Source(sites, "ALP", SystemKind.ERP, "erp-alp")
    lims = _Source(sites, "ALP", SystemKind.LIMS, "lims-alp")
    mes = _Source(sites, "ALP", SystemKind.MES, "mes-alp")
    brk = _Source(sites, "BRK", SystemKind.ERP, "erp-brk")
    wh = Location(location_id="ALP-WH1", name="Alpenwerk raw materials", site="ALP")
    mix = Location(location_id="ALP-MIX2", name="Alpenwerk mixing hall 2", site="ALP")
    dock = Location(location_id="BRK-DOCK", name="Brookfield receiving dock", site="BRK")
    supplier = Party(party_id="V-1001", name="Alpine Dairy Co")
    customer = Party(party_id="C-5001", name="Midwest Grocers Inc")
    raw_item = Item(item_code="MP-100", description="Skimmed milk powder 25 kg bag")
    base = Item(item_code="CD-900", description="Cocoa drink base")
    events: list[LotEventBase] = []
    chain = 0
    while len(events) < count:
        day = datetime(2026, 1, 1, 6, 0) + timedelta(days=chain // 100)
        ymd, n = day.strftime("%Y%m%d"), (chain % 100) * 4
        codes = [f"ALP-{ymd}-{n + k:03d}" for k in range(4)]
        brk_code = f"{day.strftime('%y%j')}-{chain % 100:02d}"
        tag = f"{chain:06d}"
        kgs = [Decimal(rnd.randrange(200, 1000)) for _ in range(3)]
        used = [kg - Decimal(rnd.randrange(0, 100)) for kg in kgs]
        made = sum(used, Decimal(0))
        t = day + timedelta(minutes=chain % 60)
        batch_doc = DocumentRef(doc_type="BATCH_RECORD", number=f"B-{tag}")
        fault = chain % 100 if faults else -1
        for k, code in enumerate(codes[:3]):
            receipt = LotReceived(
                envelope=erp.envelope("LotReceived", f"PO-{tag}/{code}", t), lot=code,
                item=raw_item, quantity=_q(str(kgs[k]), "kg"), supplier=supplier,
                supplier_lot=f"AD-{tag}-{k}", receiving_location=wh, ship_from=wh,
                reference_document=DocumentRef(doc_type="PO", number=f"PO-{tag}"))  # fmt: skip
            if not (fault == FAULT_LOST_RECEIPT and k == 2):
                events.append(receipt)
        for k, code in enumerate(codes[:3]):
            status = "S" if fault == FAULT_HOLD and k == 0 else "F"
            events.append(LotStatusChanged(
                envelope=lims.envelope("LotStatusChanged", f"{code}/{status}",
                                       t + timedelta(hours=2)),
                lot=code, status=status, reason_code="QC-PASS" if status == "F" else "QC-HOLD",
                actor="qa.brunner"))  # fmt: skip
        for k, code in enumerate(codes[:3]):
            events.append(MaterialConsumed(
                envelope=mes.envelope("MaterialConsumed", f"B-{tag}/{code}", t + timedelta(hours=3)),
                batch_id=f"B-{tag}", kind=TransformationKind.BLEND, location=mix, lot=code,
                item=raw_item, quantity=_q(str(used[k]), "kg"), reference_document=batch_doc))  # fmt: skip
        reported = made * 2 if fault == FAULT_MASS else made
        events.append(MaterialProduced(
            envelope=mes.envelope("MaterialProduced", f"B-{tag}/out", t + timedelta(hours=4)),
            batch_id=f"B-{tag}", kind=TransformationKind.BLEND, location=mix, lot=codes[3],
            item=base, quantity=_q(str(reported), "kg"), reference_document=batch_doc))  # fmt: skip
        transfer = DocumentRef(doc_type="TRANSFER_ORDER", number=f"TO-{tag}")
        events.append(TransferShipped(
            envelope=erp.envelope("TransferShipped", f"TO-{tag}/ship", t + timedelta(hours=5)),
            transfer_id=f"TO-{tag}", lot=codes[3], item=base, quantity=_q(str(made), "kg"),
            from_location=mix, to_location=dock, reference_document=transfer))  # fmt: skip
        pounds = (made / KG_PER_LB).quantize(Decimal("0.01"))
        events.append(TransferReceived(
            envelope=brk.envelope("TransferReceived", f"TO-{tag}/recv", t + timedelta(days=3)),
            transfer_id=f"TO-{tag}", shipped_lot=codes[3], shipped_lot_site="ALP", lot=brk_code,
            item=base, quantity=_q(str(pounds), "LB"), from_location=mix,
            receiving_location=dock, reference_document=transfer))  # fmt: skip
        events.append(LotShipped(
            envelope=brk.envelope("LotShipped", f"BOL-{tag}", t + timedelta(days=4)),
            lot=brk_code, item=base, quantity=_q(str(pounds), "LB"), customer=customer,
            ship_to=dock, ship_from=dock,
            reference_document=DocumentRef(doc_type="BOL", number=f"BOL-{tag}")))  # fmt: skip
        chain += 1
    return events[:count]
