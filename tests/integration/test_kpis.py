"""KPIs on the demo scenario, checked against figures worked out by hand from its story."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from connectors.simulator import build_scenario
from genealogy.kpis import compute_kpis
from genealogy.recall import RecallRequest, run_recall
from genealogy.store import GenealogyStore
from schemas.model import LotReceived
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import create_app
from trace_api.auth import AccessControl

pytestmark = pytest.mark.integration

# Three days after the last sugar lot went into quarantine (2 Nov 13:31 Zurich = 12:31 UTC).
NOW = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)
SHIPPED = {"ALP:ALP-20261103-012", "BRK:26313-01", "CRV:L26312B"}


@pytest.fixture
def store_with(
    store_url: str, store_factory: Callable[[str], GenealogyStore], demo_sites: SitesConfig
) -> Callable[[bool], GenealogyStore]:
    def make(drop_milk_receipt: bool) -> GenealogyStore:
        events = build_scenario(demo_sites).events
        if drop_milk_receipt:
            events = [e for e in events
                      if not (isinstance(e, LotReceived) and e.lot == "ALP-20261102-001")]  # fmt: skip
        store = store_factory(store_url)
        store.apply(normalized(events, demo_sites))
        return store

    return make


def test_kpis_of_the_demo_scenario(store_with: Callable[[bool], GenealogyStore]) -> None:
    store = store_with(False)
    run_recall(store, RecallRequest(lots=["AD-5531"]))
    kpis = compute_kpis(store, now=NOW)

    # Every shipped lot (three customers) traces back to supplier receipts on every branch.
    assert (kpis.completeness.shipped, kpis.completeness.complete) == (3, 3)
    assert kpis.completeness.share == 1

    # Receipts at 07:40, 09:15 and 10:05, released together at 16:00 (Zurich); the fourth
    # sugar lot is still in quarantine. Verona: hazelnut paste in on 5 Nov 10:00, free 6 Nov 09:00.
    hours = kpis.release_hours
    assert sorted(hours) == ["ALP", "CRV"]
    assert sorted(round(h, 4) for h in hours["ALP"]) == [5.9167, 6.75, 8.3333]
    assert hours["CRV"] == [23.0]

    # 500 kg of sugar lot 004 in quarantine since 2 Nov 13:31 local: between one and seven days.
    assert kpis.blocked == {"ALP": {"KGM": {"<1d": 0, "1-7d": Decimal(500), "7-30d": 0, ">30d": 0}}}

    # The simulator's plants record every event two minutes after it happened.
    for kind, (from_event, from_record) in kpis.latency.items():
        assert len(from_event) == len(from_record) > 0, kind
        assert {round(e - r, 6) for e, r in zip(from_event, from_record, strict=True)} == {120.0}
    assert len(kpis.recall_ms) == 1

    body = kpis.to_json()
    assert body["genealogy_completeness"]["share"] == "1.0000"
    assert body["blocked_stock"]["ALP"]["KGM"]["1-7d"] == "500.000000"
    assert body["release_cycle_time_hours"]["CRV"]["p50"] == 23.0
    assert body["mock_recall_ms"]["count"] == 1


def test_a_missing_receipt_is_a_genealogy_gap_for_everything_made_of_it(
    store_with: Callable[[bool], GenealogyStore],
) -> None:
    kpis = compute_kpis(store_with(True), now=NOW)
    # The milk went into the blend, so all three shipped lots end at a lot nobody received.
    assert (kpis.completeness.shipped, kpis.completeness.complete) == (3, 0)
    assert kpis.completeness.gaps == {lot: ["ALP:ALP-20261102-001"] for lot in SHIPPED}


def test_kpis_of_one_site(store_with: Callable[[bool], GenealogyStore]) -> None:
    kpis = compute_kpis(store_with(False), now=NOW, site="CRV")
    assert (kpis.completeness.shipped, kpis.completeness.complete) == (1, 1)
    assert list(kpis.release_hours) == ["CRV"]
    assert kpis.blocked == {}


def test_kpis_over_http_and_as_prometheus_metrics(
    store_with: Callable[[bool], GenealogyStore],
) -> None:
    with TestClient(create_app(store_with(True), metrics=CollectorRegistry())) as client:
        body = client.get("/api/v1/kpis").json()
        assert body["genealogy_completeness"]["shipped_lots"] == 3
        assert body["genealogy_completeness"]["share"] == "0.0000"
        assert {g["lot_id"] for g in body["genealogy_completeness"]["gaps"]} == SHIPPED
        one = client.get("/api/v1/kpis", params={"site": "CRV"}).json()
        assert one["genealogy_completeness"]["shipped_lots"] == 1
        metrics = client.get("/metrics").text
    assert "lothub_kpi_genealogy_completeness_ratio 0.0" in metrics
    assert 'lothub_kpi_release_cycle_time_hours{quantile="p50",site="CRV"} 23.0' in metrics
    assert "lothub_kpi_shipped_lots 3.0" in metrics


def test_a_site_user_sees_where_another_sites_genealogy_ends_redacted(
    store_with: Callable[[bool], GenealogyStore], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    digest = hashlib.sha256(b"k-crv").hexdigest()
    keys.write_text(f'[users.q]\nrole = "SITE_QUALITY"\nsite = "CRV"\nkey_sha256 = "{digest}"\n')
    app = create_app(store_with(True), metrics=CollectorRegistry(), access=AccessControl.load(keys))
    with TestClient(app) as client:
        mine = client.get("/api/v1/kpis", headers={"x-api-key": "k-crv"})
        other = client.get("/api/v1/kpis?site=ALP", headers={"x-api-key": "k-crv"})
    assert other.status_code == 403
    (gap,) = mine.json()["genealogy_completeness"]["gaps"]
    assert gap["lot_id"] == "CRV:L26312B"
    (end,) = gap["ends_without_receipt"]
    assert end.startswith("redacted-"), "the ALP lot where it ends is not named"
