"""Each reconciliation job: a clean world finds nothing, one seeded fault exactly one mismatch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from connectors.registry import build_source
from connectors.simulator import warehouse_moves
from connectors.wms_sql import create_transactions
from genealogy.alerts import AlertFilter, list_alerts
from genealogy.store import GenealogyStore
from lothub.settings import demo_sites_path
from reconciler.jobs import JOBS, Mismatch, ReconcileContext
from reconciler.runner import list_runs, run_reconciliation
from schemas.model import LotEventBase
from schemas.sites import load_sites
from tests.helpers import normalized
from tests.reconcile_scenario import T0, UNTIL, world
from trace_api.app import create_app

pytestmark = pytest.mark.integration

ALL = ["on-hand", "consumption", "disposition", "transfers"]


def run(store: GenealogyStore, job: str, site: str = "ALP") -> list[Mismatch]:
    return JOBS[job](ReconcileContext(store=store, site=site, since=T0, until=UNTIL))


@pytest.fixture
def world_store(
    store_url: str, store_factory: Callable[[str], GenealogyStore]
) -> Callable[[str], GenealogyStore]:
    def make(fault: str) -> GenealogyStore:
        store = store_factory(store_url)
        store.apply(world(fault))
        return store

    return make


def test_a_clean_world_has_no_mismatch(world_store: Callable[[str], GenealogyStore]) -> None:
    store = world_store("none")
    for job in ALL:
        for site in ("ALP", "BRK"):
            assert run(store, job, site) == [], (job, site)


@pytest.mark.parametrize(
    ("fault", "job", "lots", "systems", "figures"),
    [
        ("wms-missed-shipment", "on-hand", ["ALP:R1"], ["ERP", "WMS"],
         {"erp": "300", "wms": "500", "difference": "-200", "unit": "KGM"}),
        ("erp-issued-less", "consumption", ["ALP:R2"], ["MES", "ERP"],
         {"mes_consumed": "100", "erp_issued": "90", "difference": "10", "order": "PO-1"}),
        ("erp-status-stale", "disposition", ["ALP:R1"], ["LIMS", "ERP"],
         {"lims": "RELEASED", "erp": "ON_HOLD"}),
        ("transfer-not-received", "transfers", ["ALP:F1"], ["shipped@ALP"],
         {"shipped": "50", "received": "none"}),
        ("transfer-received-short", "transfers", ["ALP:F1", "BRK:G1"],
         ["shipped@ALP", "received@BRK"], {"shipped": "50", "received": "45", "difference": "5"}),
    ],
)  # fmt: skip
def test_one_seeded_fault_is_exactly_one_mismatch(
    world_store: Callable[[str], GenealogyStore],
    fault: str,
    job: str,
    lots: list[str],
    systems: list[str],
    figures: dict[str, str],
) -> None:
    store = world_store(fault)
    found = {name: run(store, name) for name in ALL}
    (mismatch,) = found.pop(job)
    assert all(not other for other in found.values()), found
    assert (mismatch.site, mismatch.lots, mismatch.systems) == ("ALP", lots, systems)
    assert {k: mismatch.figures[k] for k in figures} == figures
    assert mismatch.evidence_event_ids, "the records behind both figures are named"
    assert run(store, job, "BRK") == [], "the other site's view is clean"


@pytest.mark.parametrize(
    ("fault", "fix", "job"),
    [
        ("wms-missed-shipment", "none", "on-hand"),
        ("erp-status-stale", "none", "disposition"),
        ("transfer-not-received", "none", "transfers"),
        ("erp-issued-less", "none", "consumption"),
    ],
)
def test_a_mismatch_is_an_alert_until_it_is_fixed(
    world_store: Callable[[str], GenealogyStore], fault: str, fix: str, job: str
) -> None:
    store = world_store(fault)
    (first,) = run_reconciliation(store, ["ALP"], since=T0, until=UNTIL, jobs=[job])
    assert (first.error, len(first.mismatches), first.opened) == (None, 1, 1)
    total, alerts = list_alerts(store, AlertFilter(rule=f"reconcile-{job}"), limit=10, offset=0)
    assert total == 1
    (alert,) = alerts
    mismatch = first.mismatches[0]
    assert alert["status"] == "open"
    assert alert["lots"] == mismatch.lots
    assert alert["sites"] == sorted({"ALP", *[lot.split(":")[0] for lot in mismatch.lots]})
    assert alert["details"] == mismatch.figures, "both sides' figures travel with the alert"

    again = run_reconciliation(store, ["ALP"], since=T0, until=UNTIL, jobs=[job])
    assert (again[0].opened, list_alerts(store, AlertFilter(), limit=10, offset=0)[0]) == (0, 1), (
        "found again: the same alert, not a second one"
    )

    # the missing or stale record reaches the hub (the plant fixed it)
    clean = {e.envelope.event_id for e in world(fix)}
    store.apply([e for e in world(fix) if e.envelope.event_id in clean - _ids(world(fault))])
    if fault == "erp-issued-less":  # the ERP posts the missing 10 kg to the order
        (short,) = [e for e in world(fault) if type(e).__name__ == "MaterialConsumed"
                    and e.envelope.source.system_kind.value == "ERP"]  # fmt: skip
        store.apply([short.model_copy(update={
            "quantity": short.quantity.model_copy(update={"value": Decimal(10)}),
            "envelope": short.envelope.model_copy(update={
                "event_id": short.envelope.event_id + "-rest"})})])  # fmt: skip
    if fault == "erp-status-stale":  # a correcting status, later than the stale one
        (stale,) = [e for e in world(fault) if getattr(e, "status", "") == "ON_HOLD"]
        store.apply([stale.model_copy(update={
            "status": "RELEASED",
            "envelope": stale.envelope.model_copy(update={
                "event_id": stale.envelope.event_id + "-fix",
                "occurred_at": stale.envelope.occurred_at + timedelta(hours=1)})})])  # fmt: skip
    (fixed,) = run_reconciliation(store, ["ALP"], since=T0, until=UNTIL, jobs=[job])
    assert (fixed.mismatches, fixed.withdrawn) == ([], 1)
    (after,) = list_alerts(store, AlertFilter(), limit=10, offset=0)[1]
    assert after["status"] == "withdrawn"
    runs = list_runs(store, job=job)
    assert runs[0] == 3
    assert [r["mismatches"] for r in runs[1]] == [0, 1, 1]


def _ids(events: list[LotEventBase]) -> set[str]:
    return {e.envelope.event_id for e in events}


def test_capture_finds_what_never_reached_the_hub_through_the_cli(
    tmp_path: Path, sqlite_url: str, store_factory: Callable[[str], GenealogyStore]
) -> None:
    wms_url = f"sqlite:///{tmp_path / 'wms.db'}"
    create_transactions(wms_url, warehouse_moves(30))
    config = tmp_path / "sites.toml"
    config.write_text(demo_sites_path().read_text() + (
        '\n[connectors.wms-brk]\nkind = "wms-sql"\nsite = "BRK"\n'
        f'[connectors.wms-brk.settings]\nurl = "{wms_url}"\n'
    ))  # fmt: skip
    sites = load_sites(config)
    source = build_source("wms-brk", sites)
    try:
        events = [e for r in source.read(None, 100) for e in source.to_events(r)]
    finally:
        source.close()
    lost = events[6]  # one transaction the pipeline never delivered
    store = store_factory(sqlite_url)
    store.apply(normalized([e for e in events if e is not lost], sites))
    env = {**os.environ, "LOTHUB_DATABASE_URL": sqlite_url, "LOTHUB_SITE_CONFIG": str(config),
           "LOTHUB_DATA_DIR": str(tmp_path / "var")}  # fmt: skip

    def reconcile() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lothub", "reconcile", "--job", "capture", "--site", "BRK",
             "--since", "2026-11-01"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    first = reconcile()
    assert first.returncode == 0, first.stderr
    assert "capture      BRK    1 mismatch(es); 1 alert(s) opened" in first.stdout
    assert "lothub connectors backfill wms-brk" in first.stdout, "the fix is named"
    (alert,) = list_alerts(store, AlertFilter(rule="reconcile-capture"), limit=5, offset=0)[1]
    assert alert["details"]["missing"] == "1"
    assert alert["details"]["first_missing"] == lost.envelope.event_id
    assert alert["details"]["source_events"] == str(len(events))

    store.apply(normalized([lost], sites))  # the backfill re-sent it
    second = reconcile()
    assert "0 mismatch(es); 0 alert(s) opened, 1 withdrawn" in second.stdout, second.stdout
    (after,) = list_alerts(store, AlertFilter(rule="reconcile-capture"), limit=5, offset=0)[1]
    assert after["status"] == "withdrawn"


def test_runs_are_listed_over_http(world_store: Callable[[str], GenealogyStore]) -> None:
    store = world_store("erp-issued-less")
    run_reconciliation(store, ["ALP", "BRK"], since=T0, until=UNTIL)
    with TestClient(create_app(store, metrics=CollectorRegistry())) as client:
        body = client.get("/api/v1/reconcile/runs", params={"site": "ALP", "limit": 2}).json()
        metrics = client.get("/metrics").text
    assert body["total"] == len(JOBS)
    assert len(body["items"]) == 2
    by_job = {r["job"]: r for r in list_runs(store, site="ALP", limit=10)[1]}
    assert by_job["consumption"]["mismatches"] == 1
    assert all(r["error"] is None for r in by_job.values())
    assert all(r["duration_ms"] >= 0 for r in by_job.values())
    assert "lothub_kpi_shipped_lots" in metrics
