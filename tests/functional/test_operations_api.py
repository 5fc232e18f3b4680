"""Operations endpoints: connector health read from the connectors' own checkpoint table,
lot counts, and who the caller is (any valid key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors.base import ConnectorStatus
from connectors.checkpoints import CheckpointStore
from connectors.simulator import build_scenario
from genealogy.store import GenealogyStore
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import create_app
from trace_api.auth import AccessControl

USERS = {"admin": ("INTEGRATION_ADMIN", None), "sq-brk": ("SITE_QUALITY", "BRK")}


@pytest.fixture
def hub(tmp_path: Path, sqlite_url: str, store_factory: Callable[[str], GenealogyStore],
        demo_sites: SitesConfig) -> Iterator[tuple[TestClient, CheckpointStore]]:  # fmt: skip
    store = store_factory(sqlite_url)
    store.apply(normalized(build_scenario(demo_sites).events, demo_sites))
    lines = []
    for user, (role, site) in USERS.items():
        digest = hashlib.sha256(f"key-{user}".encode()).hexdigest()
        lines += [f"[users.{user}]", f'role = "{role}"', f'key_sha256 = "{digest}"']
        lines += [f'site = "{site}"'] if site else []
    keys = tmp_path / "keys.toml"
    keys.write_text("\n".join(lines) + "\n")
    checkpoints = CheckpointStore.connect(sqlite_url)
    with TestClient(create_app(store, access=AccessControl.load(keys))) as client:
        yield client, checkpoints
    checkpoints.close()


def as_(user: str) -> dict[str, str]:
    return {"X-API-Key": f"key-{user}"}


def test_connector_health_worst_first_with_lag_and_last_error(
    hub: tuple[TestClient, CheckpointStore],
) -> None:
    client, checkpoints = hub
    assert client.get("/api/v1/connectors", headers=as_("admin")).json() == {
        "total": 0,
        "items": [],
    }
    ok = ConnectorStatus(name="wms-brk", site="BRK", system="WMS", records_read=10,
                         events_published=9, dead_lettered=1,
                         last_success=datetime.now(UTC) - timedelta(seconds=30), lag_s=2.5)  # fmt: skip
    failing = ConnectorStatus(name="lims-alp", site="ALP", system="LIMS", consecutive_errors=3,
                              last_success=datetime.now(UTC) - timedelta(hours=2),
                              last_error="share not mounted")  # fmt: skip
    for status in (ok, failing):
        checkpoints.save_status(status.name, json.dumps(status.as_dict()))
    checkpoints.save("wms-brk", '{"updated_at": "2026-11-02T10:00:00+00:00", "id": "7"}')
    checkpoints.save("mes-crv", '{"file": "b1.xml"}')  # a position, no status yet

    body = client.get("/api/v1/connectors", headers=as_("admin")).json()
    assert [c["connector"] for c in body["items"]] == ["lims-alp", "mes-crv", "wms-brk"]
    assert [c["health"] for c in body["items"]] == ["error", "waiting", "ok"]
    failed, waiting, healthy = body["items"]
    assert failed["last_error"] == "share not mounted"
    assert failed["consecutive_errors"] == 3
    assert 7100 < failed["seconds_since_success"] < 7300
    assert waiting["position"] == '{"file": "b1.xml"}'
    assert waiting["last_success"] is None
    assert healthy["site"] == "BRK"
    assert healthy["lag_s"] == 2.5
    assert healthy["dead_lettered"] == 1
    assert 25 < healthy["seconds_since_success"] < 120
    assert healthy["position"].startswith('{"updated_at"')


def test_stats_count_lots_in_the_callers_scope(hub: tuple[TestClient, CheckpointStore]) -> None:
    client, _ = hub
    everyone = client.get("/api/v1/stats", headers=as_("sq-brk")).json()
    assert set(everyone["by_site"]) == {"BRK"}
    brk = client.get("/api/v1/lots", params={"q": "BRK:"}, headers=as_("sq-brk")).json()["total"]
    assert everyone["lots"] == everyone["by_site"]["BRK"] == brk
    assert sum(everyone["by_status"].values()) == brk
    assert client.get("/api/v1/stats", headers=as_("admin")).status_code == 403


def test_whoami_answers_any_valid_key_with_its_permissions(
    hub: tuple[TestClient, CheckpointStore],
) -> None:
    client, _ = hub
    admin = client.get("/api/v1/whoami", headers=as_("admin")).json()
    assert admin["role"] == "INTEGRATION_ADMIN"
    assert "operate" in admin["permissions"]
    assert "read" not in admin["permissions"]
    site = client.get("/api/v1/whoami", headers=as_("sq-brk")).json()
    assert (site["site"], site["local_mode"]) == ("BRK", False)
    assert client.get("/api/v1/whoami").status_code == 401


def test_ui_is_served_offline_from_the_package(hub: tuple[TestClient, CheckpointStore]) -> None:
    client, _ = hub
    root = client.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (307, "/ui/")
    index = client.get("/ui/")
    assert index.status_code == 200
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assets = ["app.css", "favicon.svg", *(f"js/{p.name}" for p in
              (Path(__file__).parents[2] / "trace_api" / "static" / "js").glob("*.js"))]  # fmt: skip
    for asset in assets:
        response = client.get(f"/ui/{asset}")
        assert response.status_code == 200, asset
        # nothing is fetched from another origin: the UI must work without internet
        assert "http://" not in response.text.replace("http://www.w3.org/", "")
        assert "https://" not in response.text
