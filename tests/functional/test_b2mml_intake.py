"""B2MML intake: the watched drop folder and ``POST /b2mml``, with a list-appending fake sink."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import connectors.b2mml as b2mml
from connectors.b2mml import (
    PROBLEM,
    B2mmlMapping,
    b2mml_handler,
    create_b2mml_app,
    map_message,
    scan_drop_folder,
    watch_drop_folder,
)
from schemas.errors import BrokerUnavailableError, SourceUnavailableError
from schemas.model import LotEventBase
from schemas.sites import SiteConfig, SitesConfig

DATA = Path(__file__).resolve().parent.parent / "data" / "b2mml"
GOOD = DATA / "alp_process_operations_performance.xml"
GOOD_2 = DATA / "alp_sync_work_performance.xml"
GOOD_3 = DATA / "alp_sync_material_information.xml"
BAD = DATA / "invalid_material_use.xml"
MAPPING = B2mmlMapping(system_instance="mes-alp", site_code="ALP")


class Sink:
    """Appends each message's events; ``down`` simulates a broker outage."""

    def __init__(self) -> None:
        self.batches: list[list[LotEventBase]] = []
        self.down = False

    def __call__(self, events: list[LotEventBase]) -> None:
        if self.down:
            raise BrokerUnavailableError("broker did not acknowledge (test)")
        self.batches.append(events)

    def ids(self) -> list[str]:
        return [e.envelope.event_id for batch in self.batches for e in batch]


class DeadLetters:
    """Keeps what was parked; ``down`` simulates an unavailable dead-letter topic."""

    def __init__(self) -> None:
        self.parked: list[tuple[bytes, str]] = []
        self.down = False

    def __call__(self, data: bytes, reason: str) -> None:
        if self.down:
            raise BrokerUnavailableError("dead-letter topic unavailable (test)")
        self.parked.append((data, reason))


@pytest.fixture
def alp(demo_sites: SitesConfig) -> SiteConfig:
    return demo_sites.sites["ALP"]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "mes-drop"
    folder.mkdir()
    return folder


def drop(folder: Path, name: str, sample: Path) -> Path:
    # Like an MES: write under a temporary name, then rename (atomic) to *.xml.
    part = folder / f".{name}.part"
    shutil.copyfile(sample, part)
    target = folder / name
    os.replace(part, target)
    return target


def expected_events(sample: Path, alp: SiteConfig) -> list[LotEventBase]:
    return map_message(sample.read_bytes(), MAPPING, alp)


# --------------------------------------------------------------------------- drop folder


def test_good_files_are_published_and_bad_ones_parked_with_their_reason(
    inbox: Path, alp: SiteConfig
) -> None:
    sink, dlq = Sink(), DeadLetters()
    drop(inbox, "0003-work.xml", GOOD_2)
    drop(inbox, "0001-perf.xml", GOOD)
    drop(inbox, "0002-bad.XML", BAD)
    (inbox / "readme.txt").write_text("not a message")
    (inbox / ".0004-still-writing.xml").write_bytes(b"<Oper")
    (inbox / "archive").mkdir()
    drop(inbox / "archive", "old.xml", GOOD)

    moved = scan_drop_folder(inbox, b2mml_handler(sink, MAPPING, alp), dead_letter=dlq)

    assert moved == [
        inbox / "processed" / "0001-perf.xml",
        inbox / "failed" / "0002-bad.XML",
        inbox / "processed" / "0003-work.xml",
    ]
    assert sink.batches == [expected_events(GOOD, alp), expected_events(GOOD_2, alp)]
    [(parked, reason)] = dlq.parked
    assert parked == BAD.read_bytes()
    assert reason.startswith("invalid-b2mml: ")
    note = (inbox / "failed" / "0002-bad.XML.reason.txt").read_text(encoding="utf-8")
    assert "reason: invalid-b2mml" in note
    assert "MaterialActual/MaterialUse" in note
    assert "'Eaten'" in note
    # Only finished *.xml files directly in the folder are messages.
    left = sorted(p.name for p in inbox.iterdir())
    assert left == [".0004-still-writing.xml", "archive", "failed", "processed", "readme.txt"]
    assert scan_drop_folder(inbox, b2mml_handler(sink, MAPPING, alp)) == []
    assert len(sink.batches) == 2


def test_a_broker_outage_keeps_the_file_and_those_after_it(inbox: Path, alp: SiteConfig) -> None:
    sink = Sink()
    handle = b2mml_handler(sink, MAPPING, alp)
    for n, sample in enumerate([GOOD, GOOD_2, GOOD_3], start=1):
        drop(inbox, f"{n:04d}.xml", sample)
    calls: list[str] = []

    def flaky(path: Path, data: bytes) -> None:
        calls.append(path.name)
        sink.down = path.name == "0002.xml"
        handle(path, data)

    with pytest.raises(BrokerUnavailableError):
        scan_drop_folder(inbox, flaky)
    assert calls == ["0001.xml", "0002.xml"]  # 0003 waits behind 0002: order is kept
    assert sorted(p.name for p in inbox.glob("*.xml")) == ["0002.xml", "0003.xml"]
    assert len(sink.batches) == 1

    sink.down = False
    moved = scan_drop_folder(inbox, handle)
    assert [p.name for p in moved] == ["0002.xml", "0003.xml"]
    assert sink.batches == [expected_events(s, alp) for s in (GOOD, GOOD_2, GOOD_3)]


def test_a_crash_after_publishing_re_sends_the_same_events(
    inbox: Path, alp: SiteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Sink()
    handle = b2mml_handler(sink, MAPPING, alp)
    drop(inbox, "perf.xml", GOOD)
    real_move = b2mml._move

    def power_cut(path: Path, folder: Path) -> Path:
        raise SystemExit("power cut between publishing and moving the file")

    monkeypatch.setattr(b2mml, "_move", power_cut)
    with pytest.raises(SystemExit):
        scan_drop_folder(inbox, handle)
    assert (inbox / "perf.xml").exists()  # never moved before handle() returned

    monkeypatch.setattr(b2mml, "_move", real_move)  # the restarted process
    assert scan_drop_folder(inbox, handle) == [inbox / "processed" / "perf.xml"]
    first, again = sink.batches
    assert again == first  # same ids, same content: the hub stores them once
    assert not list(inbox.glob("*.xml"))


def test_a_crash_while_parking_a_bad_file_parks_it_once(
    inbox: Path, alp: SiteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(inbox, "bad.xml", BAD)
    real_move = b2mml._move

    def power_cut(path: Path, folder: Path) -> Path:
        raise SystemExit("power cut")

    monkeypatch.setattr(b2mml, "_move", power_cut)
    with pytest.raises(SystemExit):
        scan_drop_folder(inbox, b2mml_handler(Sink(), MAPPING, alp))
    monkeypatch.setattr(b2mml, "_move", real_move)
    scan_drop_folder(inbox, b2mml_handler(Sink(), MAPPING, alp))
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["bad.xml", "bad.xml.reason.txt"]


def test_an_unexpected_error_leaves_the_file_for_a_person(inbox: Path) -> None:
    drop(inbox, "perf.xml", GOOD)

    def broken(path: Path, data: bytes) -> None:
        raise ValueError("a bug, not a bad file")

    with pytest.raises(ValueError, match="a bug"):
        scan_drop_folder(inbox, broken)
    assert (inbox / "perf.xml").exists()
    assert not list((inbox / "failed").iterdir())


def test_a_missing_drop_folder_is_an_outage_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "share-not-mounted"
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        scan_drop_folder(missing, lambda path, data: None)
    assert not missing.exists()


def test_a_reused_file_name_never_overwrites_an_earlier_file(inbox: Path, alp: SiteConfig) -> None:
    handle = b2mml_handler(Sink(), MAPPING, alp)
    drop(inbox, "performance.xml", GOOD)
    scan_drop_folder(inbox, handle)
    drop(inbox, "performance.xml", GOOD_2)
    assert scan_drop_folder(inbox, handle) == [inbox / "processed" / "performance.1.xml"]
    assert (inbox / "processed" / "performance.xml").read_bytes() == GOOD.read_bytes()
    assert (inbox / "processed" / "performance.1.xml").read_bytes() == GOOD_2.read_bytes()


def test_files_younger_than_min_age_wait(inbox: Path, alp: SiteConfig) -> None:
    sink = Sink()
    path = drop(inbox, "perf.xml", GOOD)
    assert scan_drop_folder(inbox, b2mml_handler(sink, MAPPING, alp), min_age_s=60) == []
    old = time.time() - 120
    os.utime(path, (old, old))
    assert len(scan_drop_folder(inbox, b2mml_handler(sink, MAPPING, alp), min_age_s=60)) == 1


def test_the_watcher_retries_an_outage_and_stops_when_asked(inbox: Path, alp: SiteConfig) -> None:
    sink = Sink()
    sink.down = True
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_drop_folder,
        args=(inbox, b2mml_handler(sink, MAPPING, alp), stop),
        kwargs={"poll_interval_s": 0.02, "max_backoff_s": 0.05},
        daemon=True,
    )
    watcher.start()
    try:
        drop(inbox, "perf.xml", GOOD)
        time.sleep(0.2)
        assert (inbox / "perf.xml").exists()  # the broker is down: retried, not lost
        sink.down = False
        deadline = time.monotonic() + 10
        while not (inbox / "processed" / "perf.xml").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (inbox / "processed" / "perf.xml").exists()
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert not watcher.is_alive()
    assert sink.batches == [expected_events(GOOD, alp)]


# --------------------------------------------------------------------------- HTTP


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def dlq() -> DeadLetters:
    return DeadLetters()


@pytest.fixture
def client(sink: Sink, dlq: DeadLetters, alp: SiteConfig) -> TestClient:
    return TestClient(create_b2mml_app(sink, MAPPING, alp, dead_letter=dlq, max_bytes=64_000))


def test_a_valid_message_is_accepted_with_its_event_count(
    client: TestClient, sink: Sink, dlq: DeadLetters, alp: SiteConfig
) -> None:
    response = client.post(
        "/b2mml", content=GOOD.read_bytes(), headers={"content-type": "application/xml"}
    )
    assert response.status_code == 202
    expected = expected_events(GOOD, alp)
    assert response.json() == {
        "events": len(expected),
        "event_ids": [e.envelope.event_id for e in expected],
    }
    assert sink.batches == [expected]
    # A re-send (the MES did not see our answer) gives the very same ids.
    again = client.post(
        "/b2mml", content=GOOD.read_bytes(), headers={"content-type": "text/xml; charset=utf-8"}
    )
    assert again.status_code == 202
    assert again.json() == response.json()
    assert dlq.parked == []


def test_an_invalid_message_is_a_422_problem_and_a_dead_letter(
    client: TestClient, sink: Sink, dlq: DeadLetters
) -> None:
    body = (DATA / "invalid_structure.xml").read_bytes()
    response = client.post("/b2mml", content=body, headers={"content-type": "application/xml"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert problem["title"] == "Invalid B2MML message"
    assert problem["instance"] == "/b2mml"
    assert problem["reason_code"] == "invalid-b2mml"
    assert len(problem["errors"]) == 3
    for error in problem["errors"]:
        assert error["line"] > 0
        assert error["path"].startswith("/OperationsPerformance/")
        assert f"line {error['line']}" in problem["detail"]
    [(parked, reason)] = dlq.parked
    assert parked == body
    assert reason.startswith("invalid-b2mml: ")
    assert sink.batches == []


@pytest.mark.parametrize(
    ("sample", "reason_code"),
    [
        ("unmappable_missing_unit.xml", "unmappable-b2mml"),
        ("invalid_dtd_entity.xml", "invalid-b2mml"),
        ("invalid_not_well_formed.xml", "invalid-b2mml"),
    ],
)
def test_other_unusable_messages_are_422_problems_too(
    client: TestClient, dlq: DeadLetters, sample: str, reason_code: str
) -> None:
    body = (DATA / sample).read_bytes()
    response = client.post("/b2mml", content=body, headers={"content-type": "application/xml"})
    assert response.status_code == 422
    assert response.json()["reason_code"] == reason_code
    assert dlq.parked == [(body, f"{reason_code}: {response.json()['detail']}")]


def test_a_broker_outage_is_a_503_and_nothing_is_dead_lettered(
    client: TestClient, sink: Sink, dlq: DeadLetters
) -> None:
    sink.down = True
    response = client.post(
        "/b2mml", content=GOOD.read_bytes(), headers={"content-type": "application/xml"}
    )
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "30"
    assert dlq.parked == []


def test_an_unavailable_dead_letter_topic_is_a_503(client: TestClient, dlq: DeadLetters) -> None:
    dlq.down = True
    response = client.post(
        "/b2mml", content=BAD.read_bytes(), headers={"content-type": "application/xml"}
    )
    assert response.status_code == 503  # the MES keeps the message and sends it again


def test_not_xml_and_too_large_are_refused(client: TestClient, sink: Sink) -> None:
    response = client.post(
        "/b2mml", content=GOOD.read_bytes(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    big = GOOD.read_bytes() + b"<!--" + b"x" * 70_000 + b"-->"
    response = client.post("/b2mml", content=big, headers={"content-type": "application/xml"})
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    # A chunked body states no length: the limit holds while it is read.
    chunks = iter([GOOD.read_bytes(), b"<!--" + b"x" * 70_000 + b"-->"])
    response = client.post("/b2mml", content=chunks, headers={"content-type": "application/xml"})
    assert response.status_code == 413
    assert client.get("/b2mml").status_code == 405
    body = client.get("/openapi.json").json()["paths"]["/b2mml"]["post"]["requestBody"]
    assert "application/xml" in body["content"]
    assert sink.batches == []


def test_without_a_dead_letter_hook_the_caller_still_gets_the_reason(
    sink: Sink, alp: SiteConfig
) -> None:
    client = TestClient(create_b2mml_app(sink, MAPPING, alp))
    response = client.post(
        "/b2mml", content=BAD.read_bytes(), headers={"content-type": "application/xml"}
    )
    assert response.status_code == 422
    assert "'Eaten'" in response.json()["detail"]
