"""The recall packet as a PDF: it parses, and says what the store says.

Expected lots, customers and residuals are computed here from the store's own tables (the
lot ledger and the shipping documents), not from the packet the PDF was made from.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy import select

from connectors.simulator import build_scenario
from genealogy import tables
from genealogy.store import GenealogyStore
from genealogy.trace import Direction, trace
from schemas.model import LotReceived
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import create_app
from trace_api.auth import AccessControl

SEED = "ALP:ALP-20261102-001"  # the milk powder, whose receipt never reaches the hub here


@pytest.fixture
def store(store_url: str, store_factory: Callable[[str], GenealogyStore],
          demo_sites: SitesConfig) -> GenealogyStore:  # fmt: skip
    events = [e for e in build_scenario(demo_sites).events
              if not (isinstance(e, LotReceived) and e.lot == SEED.split(":")[1])]  # fmt: skip
    s = store_factory(store_url)
    s.apply(normalized(events, demo_sites))
    return s


def residuals(store: GenealogyStore, lots: set[str]) -> dict[str, Decimal]:
    """Per lot: what left it beyond what ever entered it (the signed ledger's deficit)."""
    total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    with store.engine.connect() as conn:
        for r in conn.execute(select(tables.lot_ledger)):
            if r.lot_id in lots:
                total[(r.lot_id, r.unit)] += r.quantity
    return {lot: -q for (lot, _), q in total.items() if q < 0}


def pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_recall_pdf_has_lots_customers_and_residuals(store: GenealogyStore) -> None:
    client = TestClient(create_app(store))
    created = client.post("/api/v1/recalls", json={"lots": [SEED]})
    assert created.status_code == 201
    recall_id = created.json()["recall_id"]
    response = client.get(f"/api/v1/recalls/{recall_id}/export", params={"format": "pdf"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    text = pdf_text(response.content)
    flat = " ".join(text.split())

    affected = {lot.lot_id for lot in trace(store, SEED, Direction.FORWARD).lots}
    assert len(affected) > 3
    missing = {lot for lot in affected if lot not in flat}
    assert missing == set()
    with store.engine.connect() as conn:
        docs = tables.documents
        customers = {r.party_name for r in conn.execute(
            select(docs).where(docs.c.cte == "SHIPPING", docs.c.lot_id.in_(affected)))}  # fmt: skip
    assert customers
    assert {c for c in customers if c not in flat} == set()
    gaps = residuals(store, affected)
    assert set(gaps) == {SEED}, "only the lot whose receipt is missing has a residual"
    assert f"{gaps[SEED].normalize():f}" in flat
    assert recall_id in flat
    assert "local" in flat  # who asked (local mode)
    assert "never entered" in flat  # the gap's message


def test_site_user_pdf_is_redacted(store: GenealogyStore, tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    lines = []
    for user, site in (("sq-brk", "BRK"),):
        digest = hashlib.sha256(f"key-{user}".encode()).hexdigest()
        lines += [f"[users.{user}]", 'role = "SITE_QUALITY"', f'site = "{site}"',
                  f'key_sha256 = "{digest}"']  # fmt: skip
    keys.write_text("\n".join(lines) + "\n")
    client = TestClient(create_app(store, access=AccessControl.load(keys)))
    headers = {"X-API-Key": "key-sq-brk"}
    created = client.post("/api/v1/recalls", json={"lots": ["BRK:26313-01"]}, headers=headers)
    assert created.status_code == 201
    recall_id = created.json()["recall_id"]
    pdf = client.get(f"/api/v1/recalls/{recall_id}/export?format=pdf", headers=headers)
    assert pdf.status_code == 200
    flat = " ".join(pdf_text(pdf.content).split())
    assert "BRK:26313-01" in flat
    assert "sq-brk" in flat
    with store.engine.connect() as conn:
        alp = {
            r.lot_id for r in conn.execute(select(tables.lots).where(tables.lots.c.site == "ALP"))
        }
    assert {lot for lot in alp if lot in flat} == set()
