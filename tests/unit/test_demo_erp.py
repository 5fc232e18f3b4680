"""The demo's Tryton ERP plan: ALP's ERP stock story, taken out of the simulated stream."""

from __future__ import annotations

import dataclasses
from collections import Counter
from decimal import Decimal

import pytest

from connectors.simulator import Scenario, build_scenario, hand_over
from lothub.demo_erp import ErpPlan, Partner, erp_plan, plan_hash
from schemas.model import LotReceived, LotStatusChanged, TransferReceived
from schemas.sites import SitesConfig


@pytest.fixture
def scenario(demo_sites: SitesConfig) -> Scenario:
    return build_scenario(demo_sites, faults=True, mes_as_b2mml=True)


def test_the_plan_holds_alps_erp_stock_story(scenario: Scenario) -> None:
    plan = erp_plan(scenario.events, "erp-alp")
    assert [(r.lot, r.kg, r.supplier, r.supplier_lot, r.po, r.day) for r in plan.receipts] == [
        ("ALP-20261102-001", "1000", Partner("V-1001", "Alpine Dairy Co"), "AD-5531", "PO-45001",
         "2026-11-02"),
        ("ALP-20261102-002", "400", Partner("V-2040", "Cocoa Partners BV"), "CP-77812",
         "PO-45002", "2026-11-02"),
        ("ALP-20261102-003", "600", Partner("V-3310", "Sucre Romand SA"), "SR-2026-118",
         "PO-45003", "2026-11-02"),
        ("ALP-20261102-004", "500", Partner("V-3310", "Sucre Romand SA"), "SR-2026-131",
         "PO-45004", "2026-11-02"),
    ]  # fmt: skip
    (split,) = plan.work_orders
    assert (split.number, split.inputs, split.outputs) == (
        "WO-8802",
        [("ALP-20261103-010", "CD-900", "1600")],
        [("ALP-20261103-011", "CD-900", "1000"), ("ALP-20261103-012", "CD-900", "600")],
    )
    assert [(t.number, t.lot, t.kg, t.to_site) for t in plan.transfers] == [
        ("TO-9001", "ALP-20261103-011", "1000", "BRK"),
        ("TO-9002", "ALP-20261103-012", "200", "CRV"),
    ]
    assert [(s.lot, s.kg, s.customer.name) for s in plan.sales] == [
        ("ALP-20261103-012", "400", "Baeckerei Huber AG")
    ]
    assert set(plan.products) == {"MP-100", "CO-200", "SU-300", "CD-900"}


def test_the_plan_round_trips_through_json_and_its_hash_follows_it(scenario: Scenario) -> None:
    plan = erp_plan(scenario.events, "erp-alp")
    again = ErpPlan.from_json(plan.to_json())
    assert again == plan
    assert plan_hash(again) == plan_hash(plan)
    again.sales[0] = dataclasses.replace(again.sales[0], kg="399")
    assert plan_hash(again) != plan_hash(plan)


def test_units_other_than_kilograms_are_refused(scenario: Scenario) -> None:
    receipt = next(e for e in scenario.events if isinstance(e, LotReceived))
    pounds = receipt.model_copy(
        update={"quantity": receipt.quantity.model_copy(update={"unit": "LB", "value": Decimal(1)})}
    )
    with pytest.raises(ValueError, match="kilograms"):
        erp_plan([pounds], "erp-alp")


def test_handing_over_leaves_the_status_letters_and_moves_the_resend(scenario: Scenario) -> None:
    plan = erp_plan(scenario.events, "erp-alp")
    left = hand_over(scenario, plan.event_ids)
    ids = [e.envelope.event_id for e in left.events]
    assert not plan.event_ids & set(ids)
    alp_erp = [e for e in left.events if e.envelope.source.system_instance == "erp-alp"]
    assert alp_erp
    assert all(isinstance(e, LotStatusChanged) for e in alp_erp)
    # the receipt re-send went to Tryton with its receipt; BRK's ERP re-sends instead
    (twice,) = [i for i, n in Counter(ids).items() if n > 1]
    resent = next(e for e in left.events if e.envelope.event_id == twice)
    assert isinstance(resent, TransferReceived)
    assert resent.envelope.source.site == "BRK"
    assert Counter(ids)[twice] == 2
    assert left.truth is scenario.truth
    assert left.expected_dead_letters == scenario.expected_dead_letters
