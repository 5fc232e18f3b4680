"""``/api/v1/alerts``: list and filter, acknowledge and resolve, who may do what, site scope.

Alerts come from the real rules over the integrity scenario (and two sink-side alerts
that name another site), stored with the real upsert in a real SQLite store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from genealogy.alerts import upsert_alerts
from genealogy.recall import RecallRequest, run_recall
from genealogy.store import Conflict, GenealogyStore
from schemas.alerts import AlertState, IntegrityAlert
from schemas.errors import UnmappedValueError
from schemas.model import TransferReceived
from schemas.sites import SitesConfig
from streams.integrity import (
    SubjectState,
    Thresholds,
    conflict_alert,
    facts_of,
    step,
    unmapped_alert,
)
from tests import integrity_scenario as sc
from tests.factories import one_of_each
from tests.helpers import normalized
from trace_api.app import PROBLEM, create_app
from trace_api.auth import AccessControl

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
USERS = {"eq": ("ENTERPRISE_QUALITY", None), "sq-alp": ("SITE_QUALITY", "ALP"),
         "sq-brk": ("SITE_QUALITY", "BRK"), "admin": ("INTEGRATION_ADMIN", None),
         "auditor": ("AUDITOR", None)}  # fmt: skip


def rule_alerts(events: list[Any]) -> list[IntegrityAlert]:
    """What the check agent would publish for these enterprise events, in this order."""
    states: dict[str, SubjectState] = {}
    out: list[IntegrityAlert] = []
    for event in events:
        for fact in facts_of(event):
            _, alerts = step(states.setdefault(fact.subject, SubjectState()), [fact], Thresholds(),
                             NOW)  # fmt: skip
            out += alerts
    return out


@pytest.fixture
def store(sqlite_url: str, store_factory: Callable[[str], GenealogyStore],
          demo_sites: SitesConfig) -> GenealogyStore:  # fmt: skip
    store = store_factory(sqlite_url)
    events = normalized(sc.orders(sc.build().events)["in-order"], demo_sites)
    store.apply(events)
    transfer = next(e for e in one_of_each() if isinstance(e, TransferReceived))
    brk_only = transfer.model_copy(update={"quantity": sc.kg(1, "sacks")})
    cross = conflict_alert(transfer, Conflict(transfer.envelope.event_id, "a", "b"),
                           NOW + timedelta(hours=1))  # fmt: skip
    parked = unmapped_alert(brk_only, UnmappedValueError(site="BRK", kind="unit", value="sacks",
                                                         hint="map it"), NOW + timedelta(hours=2))  # fmt: skip
    upsert_alerts(store, [*rule_alerts(events), cross, parked])
    return store


def key(user: str) -> str:
    return f"key-of-{user}-0123456789"


@pytest.fixture
def keyed(tmp_path: Path, store: GenealogyStore) -> Iterator[Callable[..., Any]]:
    lines = []
    for user, (role, site) in USERS.items():
        lines += [f"[users.{user}]", f'role = "{role}"',
                  f'key_sha256 = "{hashlib.sha256(key(user).encode()).hexdigest()}"']  # fmt: skip
        if site:
            lines.append(f'site = "{site}"')
    (tmp_path / "keys.toml").write_text("\n".join(lines) + "\n")
    with TestClient(create_app(store, access=AccessControl.load(tmp_path / "keys.toml"))) as c:

        def call(user: str, method: str, url: str, **kw: Any) -> Any:
            return c.request(method, url, headers={"X-API-Key": key(user)}, **kw)

        yield call


@pytest.fixture
def client(store: GenealogyStore) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as c:
        yield c


def ids(body: dict[str, Any]) -> list[str]:
    return [a["alert_id"] for a in body["items"]]


def test_list_filters_and_pages(client: TestClient) -> None:
    every = client.get("/api/v1/alerts", params={"limit": 500}).json()
    rules = sorted(a["rule"] for a in every["items"] if a["status"] == "open")
    assert rules == sorted([*sc.build().expected, "duplicate-conflict", "unmapped-value"])
    assert every["total"] == len(every["items"])
    withdrawn = client.get("/api/v1/alerts", params={"status": "withdrawn"}).json()
    assert [a["lots"] for a in withdrawn["items"]] == [[sc.eid(112)]]  # receipt after shipment
    by_rule = client.get("/api/v1/alerts", params={"rule": "hold-violation"}).json()
    assert [a["lots"] for a in by_rule["items"]] == [[sc.eid(101)]]
    assert by_rule["items"][0]["severity"] == "CRITICAL"
    critical = client.get("/api/v1/alerts", params={"severity": "CRITICAL"}).json()
    assert ids(critical) == ids(by_rule)
    # a lot by any alias: S-103 is no alias, but S-101 is the supplier lot of 101
    by_alias = client.get("/api/v1/alerts", params={"lot": "S-101"}).json()
    assert sorted(a["rule"] for a in by_alias["items"]) == ["alias-conflict", "hold-violation",
                                                            "mass-balance"]  # fmt: skip
    brk = client.get("/api/v1/alerts", params={"site": "BRK"}).json()
    assert sorted(a["rule"] for a in brk["items"]) == ["duplicate-conflict", "unmapped-value"]
    later = client.get(
        "/api/v1/alerts", params={"since": (NOW + timedelta(minutes=90)).isoformat()}
    )
    assert [a["rule"] for a in later.json()["items"]] == ["unmapped-value"]
    until = client.get("/api/v1/alerts", params={"until": (NOW + timedelta(minutes=1)).isoformat(),
                                                 "limit": 500}).json()  # fmt: skip
    assert until["total"] == every["total"] - 2
    first, second = (client.get("/api/v1/alerts", params={"limit": 2, "offset": o}).json()
                     for o in (0, 2))  # fmt: skip
    assert ids(first) + ids(second) == ids(every)[:4]
    assert first["total"] == every["total"]
    assert ids(every)[0] == client.get("/api/v1/alerts/" + ids(every)[0]).json()["alert_id"]


@pytest.mark.parametrize(
    ("params", "status"),
    [({"rule": "nonsense"}, 422), ({"status": "closed"}, 422), ({"limit": "0"}, 422),
     ({"since": "2026-11-03T00:00:00"}, 422),  # no zone
     ({"since": "2026-11-03T00:00:00Z", "until": "2026-11-02T00:00:00Z"}, 422),
     ({"lot": "NO-SUCH-LOT"}, 404)],
)  # fmt: skip
def test_bad_input_is_a_problem(client: TestClient, params: dict[str, str], status: int) -> None:
    response = client.get("/api/v1/alerts", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"]


def test_acknowledge_then_resolve(client: TestClient, store: GenealogyStore) -> None:
    hold = client.get("/api/v1/alerts", params={"rule": "hold-violation"}).json()["items"][0]
    url = f"/api/v1/alerts/{hold['alert_id']}"
    assert client.post(f"{url}/resolve", json={"comment": " "}).status_code == 422
    assert client.post(f"{url}/ack", json={"comment": "QA on it", "x": 1}).status_code == 422
    acked = client.post(f"{url}/ack", json={"comment": "QA on it"}).json()
    assert acked["status"] == "acknowledged"
    assert acked["acknowledged"]["by"] == "local"
    assert acked["acknowledged"]["comment"] == "QA on it"
    again = client.post(f"{url}/ack", json={})
    assert again.status_code == 409
    assert "acknowledged" in again.json()["detail"]
    recall = run_recall(store, RecallRequest(lots=[sc.eid(101)]), save=False)
    assert any(hold["alert_id"] in g["message"] for g in recall.gaps)
    done = client.post(f"{url}/resolve", json={"comment": "blocked, batch B-1 recalled"}).json()
    assert done["status"] == "resolved"
    assert done["resolved"]["comment"] == "blocked, batch B-1 recalled"
    assert client.post(f"{url}/resolve", json={"comment": "x"}).status_code == 409
    assert client.post("/api/v1/alerts/nope/ack", json={}).status_code == 404
    recall = run_recall(store, RecallRequest(lots=[sc.eid(101)]), save=False)
    assert not any(hold["alert_id"] in g["message"] for g in recall.gaps)
    assert [a["alert_id"] for a in client.get("/api/v1/alerts", params={"status": "resolved"})
            .json()["items"]] == [hold["alert_id"]]  # fmt: skip
    actions = [e["action"] for e in client.get("/api/v1/audit").json()["items"]]
    assert actions[:2] == ["alert.resolve", "alert.ack"]


def test_a_stream_update_keeps_the_triage(store: GenealogyStore, client: TestClient) -> None:
    alert = client.get("/api/v1/alerts", params={"rule": "orphan-lot"}).json()["items"][0]
    client.post(f"/api/v1/alerts/{alert['alert_id']}/ack", json={"comment": "checking ERP"})
    stored = IntegrityAlert.model_validate({k: alert[k] for k in IntegrityAlert.model_fields})
    upsert_alerts(store, [stored.withdrawn(NOW + timedelta(days=1))])
    after = client.get(f"/api/v1/alerts/{alert['alert_id']}").json()
    assert after["status"] == "withdrawn"
    assert after["acknowledged"]["comment"] == "checking ERP"
    assert after["detected_at"] == alert["detected_at"]
    assert after["state"] == AlertState.WITHDRAWN.value


@pytest.mark.parametrize(
    ("user", "read", "triage"),
    [("eq", 200, 200), ("sq-alp", 200, 200), ("admin", 200, 200), ("auditor", 200, 403),
     ("sq-brk", 404, 404)],
)  # fmt: skip
def test_who_may_read_and_triage_an_alp_alert(keyed: Callable[..., Any], user: str, read: int,
                                              triage: int) -> None:  # fmt: skip
    alp = keyed("eq", "GET", "/api/v1/alerts", params={"rule": "orphan-lot"}).json()["items"][0]
    url = f"/api/v1/alerts/{alp['alert_id']}"
    assert keyed(user, "GET", url).status_code == read
    assert keyed(user, "POST", f"{url}/ack", json={"comment": "mine"}).status_code == triage


def test_site_users_see_their_sites_alerts_with_other_sites_lots_redacted(
    keyed: Callable[..., Any],
) -> None:
    everything = keyed("eq", "GET", "/api/v1/alerts", params={"limit": 500}).json()
    cross = next(a for a in everything["items"] if a["rule"] == "duplicate-conflict")
    brk_lots = [lot for lot in cross["lots"] if lot.startswith("BRK:")]
    alp_view = keyed("sq-alp", "GET", "/api/v1/alerts", params={"limit": 500})
    assert alp_view.json()["total"] == everything["total"] - 1  # not the BRK-only alert
    assert "unmapped-value" not in {a["rule"] for a in alp_view.json()["items"]}
    assert brk_lots
    assert not any(lot in alp_view.text for lot in brk_lots)
    brk_view = keyed("sq-brk", "GET", "/api/v1/alerts", params={"limit": 500}).json()
    assert sorted(a["rule"] for a in brk_view["items"]) == ["duplicate-conflict", "unmapped-value"]
    assert all(
        lot.startswith(("BRK:", "redacted-")) for a in brk_view["items"] for lot in a["lots"]
    )
    assert "ALP:" not in str(brk_view)
    assert keyed("sq-brk", "GET", "/api/v1/alerts", params={"rule": "orphan-lot"}).json() == {
        "total": 0, "limit": 50, "offset": 0, "items": []}  # fmt: skip
