"""Role x site x endpoint: every request is checked, and nothing of another site leaks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.simulator import build_scenario
from genealogy import tables
from genealogy.store import GenealogyStore
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import create_app
from trace_api.auth import AccessControl

USERS = {  # user: (role, site)
    "eq": ("ENTERPRISE_QUALITY", None),
    "sq-alp": ("SITE_QUALITY", "ALP"),
    "sq-brk": ("SITE_QUALITY", "BRK"),
    "admin": ("INTEGRATION_ADMIN", None),
    "auditor": ("AUDITOR", None),
}


def key(user: str) -> str:
    return f"key-of-{user}-0123456789"


@pytest.fixture
def hub(tmp_path: Path, sqlite_url: str, store_factory: Callable[[str], GenealogyStore],
        demo_sites: SitesConfig) -> Iterator[tuple[TestClient, GenealogyStore]]:  # fmt: skip
    store = store_factory(sqlite_url)
    store.apply(normalized(build_scenario(demo_sites).events, demo_sites))
    lines = []
    for user, (role, site) in USERS.items():
        lines += [f"[users.{user}]", f'role = "{role}"',
                  f'key_sha256 = "{hashlib.sha256(key(user).encode()).hexdigest()}"']  # fmt: skip
        if site:
            lines.append(f'site = "{site}"')
    keys = tmp_path / "keys.toml"
    keys.write_text("\n".join(lines) + "\n")
    with TestClient(create_app(store, access=AccessControl.load(keys))) as client:
        yield client, store


def secrets_of(store: GenealogyStore, site: str) -> set[str]:
    """Every lot id, lot code and alias of ``site``: none may reach another site's user."""
    with store.engine.connect() as conn:
        lots = {
            r.lot_id for r in conn.execute(select(tables.lots).where(tables.lots.c.site == site))
        }
        aliases = {r.alias for r in conn.execute(select(tables.lot_aliases)) if r.lot_id in lots}
    return lots | aliases


def as_(client: TestClient, user: str | None, method: str, url: str, **kw: object) -> object:
    headers = {"X-API-Key": key(user)} if user else {}
    return client.request(method, url, headers=headers, **kw)  # type: ignore[arg-type]


ENDPOINTS = [
    ("GET", "/api/v1/lots?q=A", "read"),
    ("GET", "/api/v1/lots/ALP:ALP-20261102-001", "read"),
    ("GET", "/api/v1/lots/ALP:ALP-20261102-001/events", "read"),
    ("GET", "/api/v1/lots/ALP:ALP-20261102-001/trace", "read"),
    ("GET", "/api/v1/exports/fsma204?lot=ALP:ALP-20261102-001", "export"),
    ("GET", "/api/v1/exports/epcis?lot=ALP:ALP-20261102-001&scope=trace", "export"),
    ("POST", "/api/v1/recalls", "recall"),
    ("GET", "/api/v1/recalls", "recall"),
    ("GET", "/api/v1/audit", "audit"),
    ("GET", "/api/v1/kpis", "read"),
    ("GET", "/metrics", "operate"),
    ("GET", "/api/v1/alerts", "alerts"),
    ("GET", "/api/v1/connectors", "operate"),
    ("GET", "/api/v1/stats", "read"),
]
GRANTS = {
    "eq": {"read", "export", "recall", "operate", "alerts"},
    "sq-alp": {"read", "export", "recall", "alerts"},
    "sq-brk": {"read", "export", "recall", "alerts"},
    "admin": {"operate", "alerts"},
    "auditor": {"read", "export", "recall", "audit", "alerts"},
}


@pytest.mark.parametrize("user", [None, *USERS])
@pytest.mark.parametrize(("method", "url", "permission"), ENDPOINTS)
def test_role_endpoint_matrix(hub: tuple[TestClient, GenealogyStore], user: str | None, method: str,
                              url: str, permission: str) -> None:  # fmt: skip
    client, _ = hub
    body = {"json": {"lots": ["ALP:ALP-20261102-001"]}} if method == "POST" else {}
    response = as_(client, user, method, url, **body)
    status = response.status_code  # type: ignore[attr-defined]
    if user is None:
        assert status == 401
        assert response.headers["www-authenticate"] == "Bearer"  # type: ignore[attr-defined]
    elif permission not in GRANTS[user]:
        assert status == 403
    elif user == "sq-brk":
        # another site's lot is answered exactly like a lot that does not exist
        expected = 404 if ("ALP:" in url or method == "POST") else 200
        assert status == expected
    else:
        assert status in (200, 201)


def test_health_stays_open(hub: tuple[TestClient, GenealogyStore]) -> None:
    client, _ = hub
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(("user", "other"), [("sq-brk", "ALP"), ("sq-alp", "BRK")])
def test_site_users_never_see_another_sites_details(
    hub: tuple[TestClient, GenealogyStore], user: str, other: str
) -> None:
    client, store = hub
    hidden = secrets_of(store, other)
    own = "BRK:26313-01" if user == "sq-brk" else "ALP:ALP-20261102-001"
    texts = []
    for direction in ("backward", "forward"):
        response = as_(client, user, "GET", f"/api/v1/lots/{own}/trace?direction={direction}")
        assert response.status_code == 200  # type: ignore[attr-defined]
        texts.append(response.text)  # type: ignore[attr-defined]
    body = as_(client, user, "GET", f"/api/v1/lots/{own}/trace?direction=backward").json()  # type: ignore[attr-defined]
    if user == "sq-brk":  # the genealogy's shape stays visible: its ALP ancestors, redacted
        assert sum(1 for lot in body["lots"] if lot.get("redacted")) == 5
        assert all(e["quantity_used"] is None for e in body["edges"] if e.get("redacted"))
    recall = as_(client, user, "POST", "/api/v1/recalls", json={"lots": [own]})
    assert recall.status_code == 201  # type: ignore[attr-defined]
    texts.append(recall.text)  # type: ignore[attr-defined]
    texts.append(as_(client, user, "GET", f"/api/v1/exports/fsma204?lot={own}").text)  # type: ignore[attr-defined]
    texts.append(as_(client, user, "GET", "/api/v1/lots?q=2").text)  # type: ignore[attr-defined]
    texts.append(as_(client, user, "GET", f"/api/v1/lots/{own}/events").text)  # type: ignore[attr-defined]
    texts.append(as_(client, user, "GET", "/api/v1/kpis").text)  # type: ignore[attr-defined]
    leaks = {secret for secret in hidden for text in texts if secret in text}
    assert leaks == set()


def test_site_users_see_only_their_sites_recalls(hub: tuple[TestClient, GenealogyStore]) -> None:
    client, _ = hub
    mine = as_(client, "sq-alp", "POST", "/api/v1/recalls", json={"lots": ["AD-5531"]}).json()  # type: ignore[attr-defined]
    url = f"/api/v1/recalls/{mine['recall_id']}"
    assert as_(client, "sq-alp", "GET", url).status_code == 200  # type: ignore[attr-defined]
    assert as_(client, "sq-brk", "GET", url).status_code == 404  # type: ignore[attr-defined]
    assert as_(client, "sq-brk", "GET", "/api/v1/recalls").json()["total"] == 0  # type: ignore[attr-defined]
    assert as_(client, "eq", "GET", url).status_code == 200  # type: ignore[attr-defined]


def test_wrong_key_is_refused(hub: tuple[TestClient, GenealogyStore]) -> None:
    client, _ = hub
    response = client.get("/api/v1/lots?q=A", headers={"Authorization": "Bearer guessed"})
    assert response.status_code == 401
