"""Trace limited to an event-time window: only links and documents of what happened then.

A hand-built chain: lot A received on day 1, made into B on day 2, B made into C on day 5,
C shipped on day 6 (all at ALP, times in the plant's offset).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from genealogy.store import GenealogyStore
from genealogy.trace import MAX_WINDOW, Direction, TraceRequestError, trace
from schemas.model import LotEventBase, LotReceived, LotShipped, Transformation, TransformationKind
from tests.factories import CET, DOC, ITEM, LOC, PARTY, envelope, lq, qty
from trace_api.app import create_app

DAY = datetime(2026, 11, 1, 12, 0, tzinfo=CET)


def day(n: int) -> datetime:
    return DAY + timedelta(days=n)


def chain() -> list[LotEventBase]:
    return [
        LotReceived(envelope=envelope("LotReceived", occurred_at=day(1)), lot="ALP:A", item=ITEM,
                    quantity=qty(100), supplier=PARTY, supplier_lot="S-A", receiving_location=LOC,
                    ship_from=LOC, reference_document=DOC),
        Transformation(envelope=envelope("Transformation", occurred_at=day(2)),
                       kind=TransformationKind.PRODUCTION, transformation_id="T-AB", location=LOC,
                       inputs=[lq("ALP:A", 100)], outputs=[lq("ALP:B", 90)], reference_document=DOC),
        Transformation(envelope=envelope("Transformation", occurred_at=day(5)),
                       kind=TransformationKind.REPACK, transformation_id="T-BC", location=LOC,
                       inputs=[lq("ALP:B", 90)], outputs=[lq("ALP:C", 90)], reference_document=DOC),
        LotShipped(envelope=envelope("LotShipped", occurred_at=day(6)), lot="ALP:C", item=ITEM,
                   quantity=qty(90), customer=PARTY, ship_to=LOC, ship_from=LOC,
                   reference_document=DOC),
    ]  # fmt: skip


@pytest.fixture
def store(store_url: str, store_factory: Callable[[str], GenealogyStore]) -> GenealogyStore:
    s = store_factory(store_url)
    s.apply(chain())
    return s


Pairs = list[tuple[str, str]]


def reached(
    store: GenealogyStore, lot: str, direction: Direction, a: int, b: int
) -> tuple[list[str], Pairs, Pairs]:
    result = trace(store, lot, direction, start=day(a), end=day(b))
    return (
        sorted(x.lot_id for x in result.lots),
        sorted((e.parent_lot, e.child_lot) for e in result.edges),
        sorted((d.lot_id, d.cte) for d in result.documents),
    )


def test_window_keeps_only_what_happened_inside_it(store: GenealogyStore) -> None:
    everything = trace(store, "ALP:A", Direction.FORWARD)
    assert len(everything.edges) == 2
    # days 1-3: the receipt and the first transformation; B -> C (day 5) is outside
    assert reached(store, "ALP:A", Direction.FORWARD, 1, 3) == (
        ["ALP:A", "ALP:B"], [("ALP:A", "ALP:B")],
        [("ALP:A", "RECEIVING"), ("ALP:B", "TRANSFORMATION")],
    )  # fmt: skip
    # days 4-7 from A: its only link is on day 2, so the walk stops at A
    assert reached(store, "ALP:A", Direction.FORWARD, 4, 7) == (["ALP:A"], [], [])
    # days 4-7 from B: the repack and the shipment of C
    assert reached(store, "ALP:B", Direction.FORWARD, 4, 7) == (
        ["ALP:B", "ALP:C"], [("ALP:B", "ALP:C")],
        [("ALP:C", "SHIPPING"), ("ALP:C", "TRANSFORMATION")],
    )  # fmt: skip
    # backward from C over days 2-5: both links (the bounds are inclusive), no receipt
    assert reached(store, "ALP:C", Direction.BACKWARD, 2, 5)[1] == [
        ("ALP:A", "ALP:B"), ("ALP:B", "ALP:C")]  # fmt: skip
    both = trace(store, "ALP:B", Direction.BOTH, start=day(4), end=day(7))
    assert sorted((e.parent_lot, e.child_lot) for e in both.edges) == [("ALP:B", "ALP:C")]
    assert both.window == (day(4), day(7))


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        (day(1), None, "needs both from and to"),
        (None, day(1), "needs both from and to"),
        (day(3), day(1), "is before from"),
        (day(0), day(0) + MAX_WINDOW + timedelta(seconds=1), "at most 366 days"),
        (datetime(2026, 11, 1), datetime(2026, 11, 2), "UTC offset"),
    ],
)
def test_unbounded_or_inverted_windows_are_refused(
    store: GenealogyStore, start: datetime | None, end: datetime | None, says: str
) -> None:
    with pytest.raises(TraceRequestError, match=says):
        trace(store, "ALP:A", Direction.FORWARD, start=start, end=end)


def test_api_window_and_problems(store: GenealogyStore) -> None:
    client = TestClient(create_app(store))
    url = "/api/v1/lots/ALP:A/trace"
    ok = client.get(url, params={"direction": "forward", "from": day(1).isoformat(),
                                 "to": day(3).isoformat()})  # fmt: skip
    assert ok.status_code == 200
    body = ok.json()
    assert [e["child_lot"] for e in body["edges"]] == ["ALP:B"]
    assert datetime.fromisoformat(body["window"]["from"]) == day(1)
    for params, says in [
        ({"from": day(1).isoformat()}, "needs both from and to"),
        ({"from": day(3).isoformat(), "to": day(1).isoformat()}, "is before from"),
        ({"from": day(0).isoformat(), "to": day(400).isoformat()}, "at most 366 days"),
    ]:
        refused = client.get(url, params=params)
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["title"] == "Invalid trace request"
        assert says in problem["detail"]
    naive = client.get(url, params={"from": "2026-11-01T00:00:00", "to": "2026-11-02T00:00:00"})
    assert naive.status_code == 422  # refused by validation: a time without offset is ambiguous
    assert naive.headers["content-type"] == "application/problem+json"
