"""FSMA 204 sortable spreadsheet: every KDE the rule requires, per CTE, for a lot's genealogy."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable

import openpyxl
import pytest
from fastapi.testclient import TestClient

from connectors.simulator import build_scenario
from genealogy.fsma204 import COLUMNS
from genealogy.store import GenealogyStore
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import create_app

COMMON = ["Traceability Lot Code", "Traceability Lot Code Source", "Event Date", "Product Description",
          "Quantity", "Unit of Measure"]  # fmt: skip
REQUIRED = {  # 21 CFR 1.1345, 1.1350, 1.1340
    "Receiving": [*COMMON, "Immediate Previous Source", "Receiving Location",
                  "Reference Document Type", "Reference Document Number"],
    "Transformation": [*COMMON, "Input Traceability Lot Code", "Input Product Description",
                       "Input Quantity", "Input Unit of Measure", "Transformation Location",
                       "Reference Document Type", "Reference Document Number"],
    "Shipping": [*COMMON, "Shipped From Location", "Immediate Subsequent Recipient",
                 "Reference Document Type", "Reference Document Number"],
}  # fmt: skip


@pytest.fixture
def client(
    store_url: str, store_factory: Callable[[str], GenealogyStore], demo_sites: SitesConfig
) -> TestClient:
    store = store_factory(store_url)
    store.apply(normalized(build_scenario(demo_sites).events, demo_sites))
    return TestClient(create_app(store))


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_lot_export_has_every_required_kde(client: TestClient, demo_sites: SitesConfig) -> None:
    response = client.get("/api/v1/exports/fsma204", params={"lot": "26313-01", "format": "csv"})
    assert response.status_code == 200
    rows = parse(response.text)
    assert list(rows[0]) == COLUMNS
    for row in rows:
        missing = [k for k in REQUIRED[row["Critical Tracking Event"]] if not row[k]]
        assert missing == [], (
            f"{row['Critical Tracking Event']} row {row['Event ID']} lacks {missing}"
        )
    truth = build_scenario(demo_sites).truth
    lot = "BRK:26313-01"
    chain = truth.ancestors(lot) | {lot}
    receipts = [r for r in rows if r["Critical Tracking Event"] == "Receiving"]
    assert {r["Traceability Lot Code"] for r in receipts} >= truth.backward_supplier_lots(lot)
    transformations = Counter(
        r["Enterprise Lot ID"] for r in rows if r["Critical Tracking Event"] == "Transformation"
    )
    assert transformations == Counter({c: sum(1 for _, c2, _ in truth.links if c2 == c)
                                       for _, c, _ in truth.links if c in chain and c.startswith("ALP:")})  # fmt: skip
    inputs = {
        r["Input Traceability Lot Code"]
        for r in rows
        if r["Enterprise Lot ID"] == "ALP:ALP-20261103-010"
    }
    assert inputs == {"AD-5531", "CP-77812", "SR-2026-118"}, (
        "inputs carry the TLC their supplier assigned"
    )
    shipped = {r["Immediate Subsequent Recipient"].split(" (")[0] for r in rows
               if r["Critical Tracking Event"] == "Shipping"}  # fmt: skip
    assert "Midwest Grocers DC Madison" in shipped


def test_xlsx_has_the_same_rows_sortable(client: TestClient) -> None:
    as_csv = parse(client.get("/api/v1/exports/fsma204", params={"lot": "26313-01"}).text)
    response = client.get("/api/v1/exports/fsma204", params={"lot": "26313-01", "format": "xlsx"})
    assert response.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    values = list(sheet.iter_rows(values_only=True))
    assert list(values[0]) == COLUMNS
    assert len(values) - 1 == len(as_csv)
    assert sheet.auto_filter.ref == sheet.dimensions


def test_date_range_export_and_bad_requests(client: TestClient) -> None:
    day = client.get("/api/v1/exports/fsma204",
                     params={"from": "2026-11-02T00:00:00+01:00", "to": "2026-11-02T23:59:59+01:00"})  # fmt: skip
    assert {r["Critical Tracking Event"] for r in parse(day.text)} == {"Receiving"}
    assert len(parse(day.text)) == 4
    assert client.get("/api/v1/exports/fsma204").status_code == 422
    too_long = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    assert client.get("/api/v1/exports/fsma204", params=too_long).status_code == 422
    assert client.get("/api/v1/exports/fsma204", params={"lot": "NOPE"}).status_code == 404
