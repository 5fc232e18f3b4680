"""Push connectors wired as `lothub up` wires them: drop folder, HTTP intake, EPCIS capture.

Real broker (Tansu) and hub database; the HTTP side runs in-process through the same
``mount_intakes`` the hub uses, behind real API keys.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from connectors.base import DLQ_CONNECTOR, DLQ_SOURCE_POSITION
from connectors.checkpoints import CheckpointStore
from lothub.connectors import ConnectorThreads, status_lines
from lothub.runtime import mount_intakes
from lothub.settings import Settings, demo_sites_path
from schemas.serde import make_serde
from schemas.topics import DLQ_REASON_CODE
from tests.conftest import wait_for
from tests.helpers import read_topic
from trace_api.auth import AccessControl

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data"
B2MML_OK = DATA / "b2mml" / "alp_process_operations_performance.xml"
B2MML_BAD = DATA / "b2mml" / "invalid_material_use.xml"
EPCIS_DOC = DATA / "epcis" / "JSON" / "Example_9.6.4-TransformationEvent.jsonld"
KEYS = {"admin": ("k-admin", "INTEGRATION_ADMIN", None), "quality": ("k-q", "SITE_QUALITY", "ALP")}


def _sites_toml(drop: Path) -> str:
    return demo_sites_path().read_text() + (
        '\n[connectors.mes-alp]\nkind = "b2mml"\nsite = "ALP"\npoll_interval_s = 0.2\n'
        f'[connectors.mes-alp.settings]\nfolder = "{drop.as_posix()}"\n'
        '\n[connectors.epcis-alp]\nkind = "epcis-capture"\nsite = "ALP"\n'
    )


def _keys(path: Path) -> AccessControl:
    lines = []
    for user, (key, role, site) in KEYS.items():
        lines.append(f'[users.{user}]\nrole = "{role}"\n')
        lines.append(f'key_sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n')
        if site:
            lines.append(f'site = "{site}"\n')
    path.write_text("".join(lines))
    return AccessControl.load(path)


@pytest.fixture
def hub_side(
    connector_wiring: tuple[Settings, CheckpointStore], tmp_path: Path
) -> Iterator[tuple[Settings, ConnectorThreads, TestClient, Path]]:
    base, _ = connector_wiring
    drop = tmp_path / "mes-drop"
    drop.mkdir()
    config = tmp_path / "sites.toml"
    config.write_text(_sites_toml(drop))
    settings = base.model_copy(update={"site_config": config})
    threads = ConnectorThreads(settings)
    app = FastAPI()
    assert sorted(threads.start()) == ["epcis-alp", "mes-alp"]
    paths = mount_intakes(app, threads.intakes, _keys(tmp_path / "keys.toml"))
    assert paths == ["/intake/epcis-alp/capture", "/intake/mes-alp/b2mml"]
    with TestClient(app) as client:
        yield settings, threads, client, drop
    threads.stop()


def _raw(settings: Settings) -> list[Any]:
    serde = make_serde()
    return [
        serde.decode(m.value(), topic="raw", partition=m.partition(), offset=m.offset())
        for m in read_topic(settings, settings.topics.raw, timeout_s=5)
    ]


def test_dropped_b2mml_files_are_published_and_a_bad_one_is_parked(
    hub_side: tuple[Settings, ConnectorThreads, TestClient, Path],
) -> None:
    settings, threads, _, drop = hub_side
    shutil.copy(B2MML_BAD, drop / "a-bad.xml")
    shutil.copy(B2MML_OK, drop / "b-good.xml")
    wait_for(
        lambda: (drop / "processed" / "b-good.xml").exists(), 20, "the good file to be processed"
    )
    assert (drop / "failed" / "a-bad.xml").exists()
    assert "reason:" in (drop / "failed" / "a-bad.xml.reason.txt").read_text()

    events = _raw(settings)
    assert events, "the good message's events reached the raw topic"
    assert {e.envelope.source.system_instance for e in events} == {"mes-alp"}
    assert {type(e).__name__ for e in events} >= {"MaterialConsumed", "MaterialProduced"}
    (dead,) = read_topic(settings, settings.topics.connector_dlq, timeout_s=5)
    assert dead.value() == B2MML_BAD.read_bytes(), "the dead letter keeps the file's bytes"
    headers = dict(dead.headers())
    assert headers[DLQ_CONNECTOR] == b"mes-alp"
    assert headers[DLQ_SOURCE_POSITION] == b"drop-folder:mes-drop"
    assert headers[DLQ_REASON_CODE] in (b"invalid-b2mml", b"unmappable-b2mml")

    # the same file again (an MES re-send): same event ids, so the hub stores it once
    shutil.copy(B2MML_OK, drop / "c-resend.xml")
    wait_for(lambda: (drop / "processed" / "c-resend.xml").exists(), 20, "the re-send")
    again = _raw(settings)
    assert len(again) == 2 * len(events)
    assert {e.envelope.event_id for e in again} == {e.envelope.event_id for e in events}

    (line,) = [x for x in status_lines(settings) if x.startswith("mes-alp")]
    assert f"published={2 * len(events)}" in line
    assert "dead_lettered=1" in line
    assert not threads.dead()


def test_b2mml_over_http_needs_an_integration_admin_key(
    hub_side: tuple[Settings, ConnectorThreads, TestClient, Path],
) -> None:
    settings, _, client, _ = hub_side
    body = B2MML_OK.read_bytes()
    xml = {"content-type": "application/xml"}
    anonymous = client.post("/intake/mes-alp/b2mml", content=body, headers=xml)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    quality = client.post(
        "/intake/mes-alp/b2mml", content=body, headers={**xml, "x-api-key": "k-q"}
    )
    assert quality.status_code == 403
    assert "integration admin" in quality.json()["detail"]
    assert _raw(settings) == [], "refused requests publish nothing"

    ok = client.post("/intake/mes-alp/b2mml", content=body, headers={**xml, "x-api-key": "k-admin"})
    assert ok.status_code == 202, ok.text
    published = {e.envelope.event_id for e in _raw(settings)}
    assert published == set(ok.json()["event_ids"]), "202 means the broker has every event"


def test_epcis_capture_is_served_under_the_intake_prefix(
    hub_side: tuple[Settings, ConnectorThreads, TestClient, Path],
) -> None:
    settings, _, client, _ = hub_side
    admin = {"x-api-key": "k-admin", "content-type": "application/ld+json"}
    posted = client.post("/intake/epcis-alp/capture", content=EPCIS_DOC.read_bytes(), headers=admin)
    assert posted.status_code == 202, posted.text
    location = posted.headers["location"]
    assert location.startswith("/intake/epcis-alp/capture/")
    deadline = time.monotonic() + 20
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(location, headers={"x-api-key": "k-admin"}).json()
        if not job["running"]:
            break
        time.sleep(0.2)
    assert job["success"] is True, json.dumps(job)
    events = _raw(settings)
    assert len(events) == job["lotEventCount"] > 0
    assert {e.envelope.source.system_instance for e in events} == {"epcis-alp"}
    assert client.get(location).status_code == 401
