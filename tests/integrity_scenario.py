"""A small plant day in raw site codes (site ALP) where each integrity rule fires once,
next to a near miss of every rule that must not fire.

``build()`` returns the events and, per rule, the lots the rule must name; times are
event times a few minutes apart on one morning, so no event is late in any order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.model import (
    DocumentRef,
    Envelope,
    Item,
    Location,
    LotAliasLinked,
    LotEventBase,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    Party,
    Quantity,
    Source,
    SystemKind,
    TransformationKind,
    stable_event_id,
)

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
ITEM = Item(item_code="MP-100", description="Skimmed milk powder")
WH = Location(location_id="ALP-WH1", name="Alpenwerk warehouse 1", site="ALP")
MIX = Location(location_id="ALP-MIX2", name="Alpenwerk mixing hall 2", site="ALP")
SUPPLIER = Party(party_id="SUP-1", name="Alpine Dairy Co")
CUSTOMER = Party(party_id="CUS-1", name="Baeckerei Huber")
DOC = DocumentRef(doc_type="PO", number="PO-4711")
SYSTEMS = {SystemKind.ERP: "erp-alp", SystemKind.MES: "mes-alp", SystemKind.LIMS: "lims-alp",
           SystemKind.WMS: "wms-alp"}  # fmt: skip
_sequence: dict[SystemKind, int] = {}


def lot(n: int) -> str:
    """Site lot code number ``n`` (raw, as ALP writes it)."""
    return f"ALP-20261102-{n:03d}"


def eid(n: int) -> str:
    """Enterprise id of :func:`lot`."""
    return f"ALP:{lot(n)}"


def env(kind: SystemKind, event_type: str, key: str, minute: int) -> Envelope:
    instance = SYSTEMS[kind]
    _sequence[kind] = _sequence.get(kind, 0) + 1
    at = T0 + timedelta(minutes=minute)
    return Envelope(
        event_id=stable_event_id(instance, event_type, key), event_type=event_type,
        source=Source(system_kind=kind, system_instance=instance, site="ALP"),
        occurred_at=at, recorded_at=at + timedelta(seconds=30), sequence=_sequence[kind],
    )  # fmt: skip


def kg(value: str | int, unit: str = "kg") -> Quantity:
    return Quantity(value=Decimal(str(value)), unit=unit)


def received(n: int, qty: int, minute: int) -> LotReceived:
    return LotReceived(envelope=env(SystemKind.ERP, "LotReceived", f"rcv-{n}", minute), lot=lot(n),
                       item=ITEM, quantity=kg(qty), supplier=SUPPLIER, supplier_lot=f"S-{n}",
                       receiving_location=WH, ship_from=WH, reference_document=DOC)  # fmt: skip


def status(n: int, code: str, minute: int) -> LotStatusChanged:
    return LotStatusChanged(envelope=env(SystemKind.LIMS, "LotStatusChanged", f"st-{n}-{minute}",
                            minute), lot=lot(n), status=code, reason_code="QC", actor="qa.mueller")  # fmt: skip


def consumed(n: int, batch: str, qty: str | int, minute: int) -> MaterialConsumed:
    return MaterialConsumed(envelope=env(SystemKind.MES, "MaterialConsumed", f"c-{batch}-{n}",
                            minute), batch_id=batch, kind=TransformationKind.PRODUCTION,
                            location=MIX, lot=lot(n), item=ITEM, quantity=kg(qty),
                            reference_document=DOC)  # fmt: skip


def produced(n: int, batch: str, qty: str | int, minute: int) -> MaterialProduced:
    return MaterialProduced(envelope=env(SystemKind.MES, "MaterialProduced", f"p-{batch}-{n}",
                            minute), batch_id=batch, kind=TransformationKind.PRODUCTION,
                            location=MIX, lot=lot(n), item=ITEM, quantity=kg(qty),
                            reference_document=DOC)  # fmt: skip


def shipped(n: int, qty: str | int, minute: int, key: str = "") -> LotShipped:
    return LotShipped(envelope=env(SystemKind.ERP, "LotShipped", f"ship-{n}{key}", minute),
                      lot=lot(n), item=ITEM, quantity=kg(qty), customer=CUSTOMER, ship_to=WH,
                      ship_from=WH, reference_document=DOC)  # fmt: skip


def alias(n: int, plate: str, minute: int) -> LotAliasLinked:
    return LotAliasLinked(envelope=env(SystemKind.WMS, "LotAliasLinked", f"lp-{plate}-{n}-{minute}", minute),
                          lot=lot(n), alias_kind="LICENSE_PLATE", alias=plate)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """Raw events, and per rule the lots it must name (near misses name none)."""

    events: list[LotEventBase]
    expected: dict[str, set[str]]
    near_miss_lots: set[str]


def build() -> Scenario:
    """One firing case and one near miss per lot rule (see the module docstring)."""
    events: list[Any] = [
        # hold violation: L101 consumed while on hold (S); near miss: L111 consumed after
        # release (F), although it was on hold before
        received(101, 1000, 0), status(101, "S", 5), consumed(101, "B-1", 300, 20),
        received(111, 1000, 0), status(111, "S", 5), status(111, "F", 15),
        consumed(111, "B-2", 500, 20),
        # mass balance: batch B-1 makes 350 kg from 300 kg; near miss B-2: 503 kg from 500 (0.6 %)
        produced(103, "B-1", 350, 40), produced(113, "B-2", 503, 40),
        # orphan: L102 shipped, never received; near miss: L112 received late in event time
        shipped(102, 50, 60), received(112, 100, 70), shipped(112, 50, 65),
        # negative on-hand: L103 ships 400 kg of its 350; near miss L113 ships all its 503 kg
        shipped(103, 400, 80), shipped(113, 503, 80),
        # alias conflict: LP-1 names L101 and L103; near miss LP-2 names L111 twice
        alias(101, "LP-1", 90), alias(103, "LP-1", 91), alias(111, "LP-2", 90),
        alias(111, "LP-2", 92),
    ]  # fmt: skip
    expected = {
        "hold-violation": {eid(101)},
        "mass-balance": {eid(101), eid(103)},
        "orphan-lot": {eid(102)},
        "negative-on-hand": {eid(103)},
        "alias-conflict": {eid(101), eid(103)},
    }
    return Scenario(events, expected, {eid(n) for n in (111, 112, 113)})


def orders(events: list[LotEventBase], seed: int = 7) -> dict[str, list[LotEventBase]]:
    """The same events in event-time order, reversed (children first) and shuffled."""
    in_order = sorted(events, key=lambda e: e.envelope.occurred_at)
    shuffled = list(in_order)
    random.Random(seed).shuffle(shuffled)
    return {"in-order": in_order, "reversed": in_order[::-1], "shuffled": shuffled}
