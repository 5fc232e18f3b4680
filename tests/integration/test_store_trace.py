"""Genealogy store and trace on SQLite and real PostgreSQL: exact lots, quantities, idempotency."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from connectors.simulator import build_scenario
from genealogy.store import GenealogyStore
from genealogy.trace import Direction, trace
from lothub.demo import verify_traces
from schemas.model import CorrectionAction, EventCorrected, TransferReceived
from schemas.sites import SitesConfig
from tests.factories import envelope
from tests.helpers import normalized, snapshot
from trace_api.app import create_app


@pytest.fixture
def loaded(
    store_url: str, store_factory: Callable[[str], GenealogyStore], demo_sites: SitesConfig
) -> tuple[GenealogyStore, SitesConfig]:
    store = store_factory(store_url)
    store.apply(normalized(build_scenario(demo_sites).events, demo_sites))
    return store, demo_sites


def test_every_trace_matches_the_ground_truth_over_http(
    loaded: tuple[GenealogyStore, SitesConfig],
) -> None:
    store, sites = loaded
    truth = build_scenario(sites).truth
    with TestClient(create_app(store)) as client:
        verdict = verify_traces(client, truth)
    assert verdict.failures == []
    assert verdict.checked == len(truth.shipped_lots()) * 2 + len(truth.supplier_lots) + len(
        truth.statuses
    )


def test_backward_trace_of_the_transferred_lot_reaches_exactly_three_supplier_lots(
    loaded: tuple[GenealogyStore, SitesConfig],
) -> None:
    store, _ = loaded
    result = trace(store, "BRK:26313-01", Direction.BACKWARD)
    receipts = {d.partner_lot: d.quantity for d in result.documents if d.cte == "RECEIVING"}
    assert receipts == {
        "AD-5531": Decimal(1000),
        "CP-77812": Decimal(400),
        "SR-2026-118": Decimal(600),
    }
    used = {(e.parent_lot, e.child_lot): e.quantity_used for e in result.edges}
    assert used[("ALP:ALP-20261102-001", "ALP:ALP-20261103-010")] == Decimal(800)  # partial use
    assert used[("ALP:ALP-20261103-011", "BRK:26313-01")] == Decimal("999.998811")  # 2204.62 lb
    assert {e.kind for e in result.edges} == {"BLEND", "SPLIT", "TRANSFER"}
    assert not result.truncated


def test_forward_trace_of_the_unused_sugar_lot_reaches_no_customer(
    loaded: tuple[GenealogyStore, SitesConfig],
) -> None:
    store, _ = loaded
    result = trace(store, "SR-2026-131", Direction.FORWARD)  # by supplier lot alias
    assert result.root == "ALP:ALP-20261102-004"
    assert [lot.lot_id for lot in result.lots] == ["ALP:ALP-20261102-004"]
    assert not [d for d in result.documents if d.cte == "SHIPPING"]


def test_status_is_the_latest_by_event_time(loaded: tuple[GenealogyStore, SitesConfig]) -> None:
    store, _ = loaded
    statuses = {
        lot.lot_id: lot.status for lot in trace(store, "BRK:26313-01", Direction.BACKWARD).lots
    }
    assert statuses["ALP:ALP-20261102-001"] == "RELEASED"
    assert statuses["BRK:26313-01"] == "RELEASED"


def test_applying_everything_twice_more_changes_nothing(
    store_url: str,
    store_factory: Callable[[str], GenealogyStore],
    demo_sites: SitesConfig,
) -> None:
    store = store_factory(store_url)
    events = normalized(build_scenario(demo_sites).events, demo_sites)
    first = store.apply(events)
    before = snapshot(store)
    again = [store.apply(events), store.apply(list(reversed(events)))]
    assert first.stored == len(events)
    assert [r.duplicates for r in again] == [len(events), len(events)]
    assert snapshot(store) == before


def test_arrival_order_does_not_change_the_genealogy(
    store_url: str,
    store_factory: Callable[[str], GenealogyStore],
    demo_sites: SitesConfig,
    sqlite_url: str,
) -> None:
    events = normalized(build_scenario(demo_sites).events, demo_sites)
    in_order = store_factory(store_url)
    in_order.apply(events)
    reverse = store_factory(sqlite_url.replace("lothub.db", "reverse.db"))
    for event in reversed(events):  # children before parents, one at a time
        reverse.apply([event])
    assert snapshot(reverse) == snapshot(in_order)


def test_a_voided_transfer_disappears_from_the_trace(
    loaded: tuple[GenealogyStore, SitesConfig],
) -> None:
    store, sites = loaded
    received = next(e for e in build_scenario(sites).events if isinstance(e, TransferReceived))
    store.apply(
        [
            EventCorrected(
                envelope=envelope("EventCorrected", site="BRK"),
                action=CorrectionAction.VOID,
                corrected_event_ids=[received.envelope.event_id],
                reason="received twice",
                actor="qa.olson",
            )
        ]
    )
    result = trace(store, "BRK:26313-01", Direction.BACKWARD)
    assert [lot.lot_id for lot in result.lots] == ["BRK:26313-01"]


def test_a_correction_that_arrives_first_still_voids_its_event(
    store_url: str, store_factory: Callable[[str], GenealogyStore], demo_sites: SitesConfig
) -> None:
    events = normalized(build_scenario(demo_sites).events, demo_sites)
    received = next(e for e in events if isinstance(e, TransferReceived))
    void = EventCorrected(
        envelope=envelope("EventCorrected", site="BRK"), action=CorrectionAction.VOID,
        corrected_event_ids=[received.envelope.event_id], reason="received twice", actor="qa.olson",
    )  # fmt: skip
    store = store_factory(store_url)
    store.apply([void])  # the correction overtakes the event it corrects
    store.apply(events)
    assert [lot.lot_id for lot in trace(store, "BRK:26313-01", Direction.BACKWARD).lots] == [
        "BRK:26313-01"
    ]


def test_both_directions_is_the_union_of_backward_and_forward(
    loaded: tuple[GenealogyStore, SitesConfig],
) -> None:
    store, sites = loaded
    truth = build_scenario(sites).truth
    lot = "ALP:ALP-20261103-011"  # the half that was transferred
    result = trace(store, lot, Direction.BOTH)
    assert {x.lot_id for x in result.lots} == truth.ancestors(lot) | truth.descendants(lot) | {lot}
    assert {
        d.party_name for d in result.documents if d.cte == "SHIPPING"
    } == truth.forward_customers(lot)
    assert {
        d.partner_lot for d in result.documents if d.cte == "RECEIVING"
    } == truth.backward_supplier_lots(lot)
