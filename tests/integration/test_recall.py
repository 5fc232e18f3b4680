"""Mock recall on SQLite and PostgreSQL: affected lots, where they went, and mass balance."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal

import openpyxl
import pytest
from fastapi.testclient import TestClient

from connectors.simulator import build_scenario
from genealogy.store import GenealogyStore
from schemas.model import LotReceived
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import create_app

Q6 = Decimal("0.000001")


def kg(value: Decimal) -> Decimal:
    return value.quantize(Q6)


@pytest.fixture
def client_for(store_url: str, store_factory: Callable[[str], GenealogyStore],
               demo_sites: SitesConfig) -> Callable[[bool], TestClient]:  # fmt: skip
    def make(drop_milk_receipt: bool = False) -> TestClient:
        events = build_scenario(demo_sites).events
        if drop_milk_receipt:  # as if the ERP receipt of the milk powder never reached the hub
            events = [e for e in events
                      if not (isinstance(e, LotReceived) and e.lot == "ALP-20261102-001")]  # fmt: skip
        store = store_factory(store_url)
        store.apply(normalized(events, demo_sites))
        return TestClient(create_app(store))

    return make


def test_recall_of_a_supplier_lot_closes_to_100_percent(
    client_for: Callable[[bool], TestClient], demo_sites: SitesConfig
) -> None:
    truth = build_scenario(demo_sites).truth
    with client_for(False) as client:
        response = client.post(
            "/api/v1/recalls", json={"lots": ["AD-5531"]}
        )  # milk powder, supplier lot
        assert response.status_code == 201
        packet = response.json()
        assert response.headers["location"] == f"/api/v1/recalls/{packet['recall_id']}"
    seed = "ALP:ALP-20261102-001"
    lots = {lot["lot_id"]: lot for lot in packet["lots"]}
    assert set(lots) == truth.descendants(seed) | {seed}
    assert [lot["lot_id"] for lot in packet["lots"] if lot["seed"]] == [seed]
    assert packet["summary"]["mass_balance_closes"] is True
    assert packet["gaps"] == []
    assert {s["customer"] for s in packet["shipments"]} == truth.forward_customers(seed)

    def balance(lot: str) -> dict[str, str]:
        (b,) = lots[lot]["balances"]
        assert b["unit"] == "KGM"
        return b

    used = {(p, c): q for p, c, q in truth.links}
    milk = balance(seed)
    assert Decimal(milk["received"]) == truth.received_kg[seed]
    assert Decimal(milk["consumed"]) == used[(seed, "ALP:ALP-20261103-010")]
    assert (
        Decimal(milk["on_hand"]) == truth.received_kg[seed] - used[(seed, "ALP:ALP-20261103-010")]
    )
    brk = balance("BRK:26313-01")
    received = kg(used[("ALP:ALP-20261103-011", "BRK:26313-01")])
    shipped = kg(sum(q for _, q in truth.shipments["BRK:26313-01"]))
    assert (Decimal(brk["received"]), Decimal(brk["shipped"])) == (received, shipped)
    assert Decimal(brk["on_hand"]) == received - shipped
    assert Decimal(balance("ALP:ALP-20261103-011")["transferred_out"]) == Decimal(1000)
    for lot in lots.values():
        (b,) = lot["balances"]
        accounted = (Decimal(b["consumed"]) + Decimal(b["shipped"]) + Decimal(b["transferred_out"])
                     + Decimal(b["scrapped"]) + Decimal(b["on_hand"]))  # fmt: skip
        assert accounted == Decimal(b["inflow"]), f"{lot['lot_id']} closes to 100%"


def test_a_missing_event_shows_as_a_residual_and_a_gap(
    client_for: Callable[[bool], TestClient],
) -> None:
    with client_for(True) as client:
        packet = client.post("/api/v1/recalls", json={"lots": ["ALP:ALP-20261102-001"]}).json()
    milk = next(lot for lot in packet["lots"] if lot["lot_id"] == "ALP:ALP-20261102-001")
    (b,) = milk["balances"]
    assert Decimal(b["residual"]) == Decimal(800), "the blend consumed 800 kg never received"
    assert b["closes"] is False
    assert packet["summary"]["mass_balance_closes"] is False
    assert any(g["lot_id"] == "ALP:ALP-20261102-001" and g["message"].startswith("800")
               for g in packet["gaps"])  # fmt: skip
    others = [lot for lot in packet["lots"] if lot["lot_id"] != "ALP:ALP-20261102-001"]
    assert all(b["closes"] for lot in others for b in lot["balances"]), "the gap is where it is"


def test_recall_by_supplier_is_stored_listed_and_exported(
    client_for: Callable[[bool], TestClient],
) -> None:
    with client_for(False) as client:
        created = client.post("/api/v1/recalls", json={"supplier": "Sucre Romand SA"}).json()
        seeds = sorted(lot["lot_id"] for lot in created["lots"] if lot["seed"])
        assert seeds == ["ALP:ALP-20261102-003", "ALP:ALP-20261102-004"]
        listing = client.get("/api/v1/recalls", params={"limit": 1}).json()
        assert listing["total"] == 1
        assert listing["items"][0]["recall_id"] == created["recall_id"]
        stored = client.get(f"/api/v1/recalls/{created['recall_id']}").json()
        assert stored == created
        export = client.get(
            f"/api/v1/recalls/{created['recall_id']}/export", params={"format": "csv"}
        )
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("text/csv")
        assert "Midwest Grocers Inc" in export.text
        assert "ALP:ALP-20261102-004" in export.text
        xlsx = client.get(
            f"/api/v1/recalls/{created['recall_id']}/export", params={"format": "xlsx"}
        )
    book = openpyxl.load_workbook(io.BytesIO(xlsx.content))
    assert book.sheetnames == ["lots", "shipments", "gaps"]
    lots_sheet = [row[0] for row in book["lots"].iter_rows(min_row=2, values_only=True)]
    assert sorted(lots_sheet) == sorted(lot["lot_id"] for lot in created["lots"])
    customers = {row[1] for row in book["shipments"].iter_rows(min_row=2, values_only=True)}
    assert customers == {s["customer"] for s in created["shipments"]}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"lots": ["AD-5531"], "supplier": "x"}, 422),
        ({"item": "SU-300"}, 422),
        (
            {
                "item": "SU-300",
                "date_from": "2020-01-01T00:00:00Z",
                "date_to": "2026-12-31T00:00:00Z",
            },
            422,
        ),
        ({"lots": ["NO-SUCH-LOT"]}, 404),
        ({"supplier": "Nobody Ltd"}, 404),
    ],
)
def test_bad_recall_requests_say_why(client_for: Callable[[bool], TestClient], body: dict[str, object],
                                     status: int) -> None:  # fmt: skip
    with client_for(False) as client:
        response = client.post("/api/v1/recalls", json=body)
    assert response.status_code == status
    assert response.json()["detail"]


def test_item_and_date_range_recall(client_for: Callable[[bool], TestClient]) -> None:
    with client_for(False) as client:
        packet = client.post("/api/v1/recalls", json={
            "item": "SU-300", "date_from": "2026-11-02T00:00:00+01:00",
            "date_to": "2026-11-02T12:00:00+01:00"}).json()  # fmt: skip
    assert [lot["lot_id"] for lot in packet["lots"] if lot["seed"]] == ["ALP:ALP-20261102-003"]


def test_quantity_weighted_exposure_follows_the_milk_through_blend_split_and_transfer(
    client_for: Callable[[bool], TestClient], demo_sites: SitesConfig
) -> None:
    truth = build_scenario(demo_sites).truth
    seed, blend = "ALP:ALP-20261102-001", "ALP:ALP-20261103-010"
    used = {(p, c): q for p, c, q in truth.links}
    # A lot's suspect share is the quantity-weighted share of its inputs (800 of the
    # blend's 1600 kg; at Verona 200 kg of that half-suspect base in 480 kg of inputs).
    share = {seed: Decimal(1)}
    for _ in truth.links:  # enough rounds for any chain in the scenario
        for child in truth.descendants(seed):
            inputs = [(p, q) for (p, c), q in used.items() if c == child]
            share[child] = sum(q * share.get(p, Decimal(0)) for p, q in inputs) / sum(
                q for _, q in inputs
            )
    assert share["ALP:ALP-20261103-011"] == Decimal("0.5")
    with client_for(False) as client:
        packet = client.post("/api/v1/recalls", json={"lots": ["AD-5531"]}).json()
    lots = {lot["lot_id"]: lot for lot in packet["lots"]}
    assert Decimal(lots[seed]["suspect_share"]) == 1
    for lot in truth.descendants(seed):
        assert Decimal(lots[lot]["suspect_share"]) == share[lot].quantize(Q6), lot
    assert Decimal(lots[blend]["suspect_kg"]) == used[(seed, blend)]
    by_customer = {s["customer"]: Decimal(s["suspect_kg"]) for s in packet["shipments"]}
    for lot, shipments in truth.shipments.items():
        for customer, kg_shipped in shipments:
            expected = kg_shipped * share[lot]
            assert abs(by_customer[customer] - expected) < Decimal("0.001"), customer
