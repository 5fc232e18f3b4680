"""The trace API's contract: JSON shapes, problem details, readiness."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from connectors.simulator import build_scenario, plant_load
from genealogy.store import GenealogyStore
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import PROBLEM, create_app


@pytest.fixture
def client(
    sqlite_url: str, store_factory: Callable[[str], GenealogyStore], demo_sites: SitesConfig
) -> Iterator[TestClient]:
    store = store_factory(sqlite_url)
    store.apply(normalized(build_scenario(demo_sites).events, demo_sites))
    with TestClient(create_app(store, readiness=lambda: {"broker": True, "worker": False})) as c:
        yield c


def test_trace_json_has_lots_edges_and_documents(client: TestClient) -> None:
    body = client.get("/api/v1/lots/BRK:26313-01/trace", params={"direction": "backward"}).json()
    assert body["root"] == "BRK:26313-01"
    assert body["direction"] == "backward"
    edge = next(e for e in body["edges"] if e["kind"] == "TRANSFER")
    assert edge["quantity_used"] == {"value": "999.998811", "unit": "KGM"}
    receipt = next(d for d in body["documents"] if d["partner_lot"] == "AD-5531")
    assert receipt["cte"] == "RECEIVING"
    assert receipt["party_name"] == "Alpine Dairy Co"
    assert receipt["occurred_at"].endswith("+00:00")


def test_forward_is_the_default_only_when_asked(client: TestClient) -> None:
    body = client.get("/api/v1/lots/ALP:ALP-20261102-001/trace").json()
    assert body["direction"] == "backward"
    assert [lot["lot_id"] for lot in body["lots"]] == ["ALP:ALP-20261102-001"]


def test_unknown_lot_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/api/v1/lots/NOPE-1/trace")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "NOPE-1" in response.json()["detail"]


@pytest.mark.parametrize(
    "params", [{"direction": "sideways"}, {"max_depth": "0"}, {"max_depth": "5000"}]
)
def test_bad_parameters_are_422_problems(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/api/v1/lots/BRK:26313-01/trace", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"]


def test_healthz_always_and_readyz_only_when_every_part_is_up(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"store": True, "api": True, "broker": True, "worker": False}


def test_metrics_are_served_in_prometheus_format(client: TestClient) -> None:
    import connectors.base  # noqa: F401 - its metrics register on import

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "lothub_connector_records_read_total" in response.text


def test_lot_search_by_any_alias_start(client: TestClient) -> None:
    body = client.get("/api/v1/lots", params={"q": "sr-2026"}).json()  # supplier lots, any case
    assert body["total"] == 2
    assert {item["lot_id"] for item in body["items"]} == {
        "ALP:ALP-20261102-003",
        "ALP:ALP-20261102-004",
    }
    page = client.get("/api/v1/lots", params={"q": "ALP", "limit": 2, "offset": 2}).json()
    assert page["total"] == 7
    assert len(page["items"]) == 2


def test_lot_search_treats_wildcards_as_text(client: TestClient) -> None:
    assert client.get("/api/v1/lots", params={"q": "%"}).json()["total"] == 0


def test_lot_card_has_aliases_and_status_history(client: TestClient) -> None:
    card = client.get("/api/v1/lots/AD-5531").json()
    assert card["lot_id"] == "ALP:ALP-20261102-001"
    assert {"alias": "AD-5531", "kind": "SUPPLIER_LOT"} in card["aliases"]
    assert [h["status"] for h in card["status_history"]] == ["QUARANTINE", "RELEASED"]
    assert card["status"] == "RELEASED"


def test_lot_events_are_paginated_oldest_first(client: TestClient) -> None:
    first = client.get("/api/v1/lots/ALP:ALP-20261102-001/events", params={"limit": 3}).json()
    rest = client.get("/api/v1/lots/ALP:ALP-20261102-001/events", params={"offset": 3}).json()
    types = [e["event_type"] for e in first["items"] + rest["items"]]
    assert first["total"] == len(types) == 6
    assert types[0] == "LotReceived"
    assert "MaterialConsumed" in types
    times = [e["occurred_at"] for e in first["items"] + rest["items"]]
    assert times == sorted(times)
    assert client.get("/api/v1/lots/NOPE/events").status_code == 404


def test_sources_count_events_per_system_instance_and_sequence_gaps(
    sqlite_url: str,
    store_factory: Callable[[str], GenealogyStore],
    demo_sites: SitesConfig,
) -> None:
    events = normalized(plant_load(demo_sites, 130), demo_sites)
    mes = [e for e in events if e.envelope.source.system_instance == "mes-alp"]
    dropped = mes[3]  # one MES event never arrives
    store = store_factory(sqlite_url)
    store.apply([e for e in events if e is not dropped])
    with TestClient(create_app(store)) as client:
        items = {i["system_instance"]: i for i in client.get("/api/v1/sources").json()["items"]}
    sent: dict[str, int] = {}
    for e in events:
        sent[e.envelope.source.system_instance] = sent.get(e.envelope.source.system_instance, 0) + 1
    assert {k: v["events"] for k, v in items.items()} == {**sent, "mes-alp": sent["mes-alp"] - 1}
    assert {k: v["missing_sequences"] for k, v in items.items()} == {
        "erp-alp": 0,
        "lims-alp": 0,
        "mes-alp": 1,
        "erp-brk": 0,
    }
    assert items["mes-alp"]["site"] == "ALP"
