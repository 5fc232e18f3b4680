"""Each reconciliation job: a clean world finds nothing, one seeded fault exactly one mismatch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from genealogy.store import GenealogyStore
from reconciler.jobs import JOBS, Mismatch, ReconcileContext
from tests.reconcile_scenario import T0, UNTIL, world

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
