"""WMS connector against a real transactions table (SQLite and PostgreSQL) and a real broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    MetaData,
    create_engine,
    text,
)

from connectors.base import DLQ_SOURCE_POSITION, Connector, Cursor
from connectors.checkpoints import CheckpointStore
from connectors.publisher import KafkaPublisher
from connectors.wms_sql import WmsSqlConfig, WmsSqlSource, create_transactions, default_table
from lothub.runtime import free_port
from lothub.settings import Settings
from schemas.errors import BrokerUnavailableError
from schemas.model import LotEventBase, LotMoved, stable_event_id
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from schemas.topics import DLQ_REASON, DLQ_REASON_CODE
from tests.conftest import PG_ADMIN_URL, wait_for
from tests.helpers import read_topic

T0 = datetime(2026, 11, 9, 6, 0)
SAME = datetime(2026, 11, 9, 7, 30)  # three rows share this timestamp


def rows() -> list[dict[str, Any]]:
    base = {"item_code": "CD-900", "item_description": "Cocoa drink base", "uom": "LB",
            "license_plate": None, "document": None, "partner": None, "partner_lot": None,
            "dest_site": None, "from_location": None, "to_location": None}  # fmt: skip
    data = [
        {"id": 1, "updated_at": T0, "txn_type": "RECEIPT", "lot": "26313-01", "quantity": Decimal(2204),
         "to_location": "DOCK", "partner": "Sucre Romand SA", "partner_lot": "SR-1", "document": "PO-1"},
        {"id": 2, "updated_at": T0.replace(hour=7), "txn_type": "PUTAWAY", "lot": "26313-01",
         "quantity": Decimal(2204), "from_location": "DOCK", "to_location": "A-01-02",
         "license_plate": "LP-77120"},
        {"id": 3, "updated_at": SAME, "txn_type": "MOVE", "lot": "26313-01", "quantity": Decimal(1000),
         "from_location": "A-01-02", "to_location": "B-02-01"},
        {"id": 4, "updated_at": SAME, "txn_type": "TELEPORT", "lot": "26313-01", "quantity": Decimal(1)},
        {"id": 5, "updated_at": SAME, "txn_type": "PICK", "lot": "26313-01", "quantity": Decimal(1200),
         "from_location": "B-02-01", "to_location": "STAGE"},
        {"id": 6, "updated_at": T0.replace(hour=9), "txn_type": "SHIP", "lot": "26313-01",
         "quantity": Decimal(1200), "from_location": "STAGE", "partner": "Midwest Grocers Inc",
         "document": "BOL-77120"},
        {"id": 7, "updated_at": T0.replace(hour=10), "txn_type": "COUNT", "lot": "26313-01",
         "quantity": Decimal("-3.5"), "to_location": "A-01-02"},
    ]  # fmt: skip
    return [{**base, **r} for r in data]


def expected_ids(name: str) -> set[str]:
    good = {
        stable_event_id(name, "txn", str(r["id"])) for r in rows() if r["txn_type"] != "TELEPORT"
    }
    plates = {stable_event_id(name, "lp", f"{r['license_plate']}\x1f{r['lot']}")
              for r in rows() if r["license_plate"]}  # fmt: skip
    return good | plates


@pytest.fixture(params=["sqlite", "postgresql"])
def wms_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A WMS database with its transactions table filled."""
    url = (f"sqlite:///{tmp_path / 'wms.db'}" if request.param == "sqlite"
           else str(request.getfixturevalue("postgres_url")))  # fmt: skip
    create_transactions(url, rows())
    return url


def connector_for(settings: Settings, checkpoints: CheckpointStore, url: str, demo_sites: SitesConfig,
                  *, publisher: KafkaPublisher | None = None, batch_size: int = 2,
                  name: str | None = None) -> Connector[Any]:  # fmt: skip
    name = name or f"wms-{uuid.uuid4().hex[:6]}"
    source = WmsSqlSource(
        WmsSqlConfig(name=name, site_code="BRK", site=demo_sites.sites["BRK"], url=url)
    )
    serde = make_serde()
    return Connector(
        source,
        publisher or KafkaPublisher(settings.producer_config(), serde, settings.topics.raw),
        KafkaPublisher(settings.producer_config(), serde, settings.topics.connector_dlq),
        checkpoints, batch_size=batch_size, poll_interval_s=0.2, max_backoff_s=0.5,
    )  # fmt: skip


def decoded(records: list[Any]) -> list[LotEventBase]:
    serde = make_serde()
    return [serde.decode(m.value(), topic="raw", partition=0, offset=0) for m in records]


def published(settings: Settings, besides: Iterable[Any] = ()) -> list[LotEventBase]:
    """The events on the raw topic, leaving out the records of ``besides`` (an earlier read)."""
    return decoded(read_topic(settings, settings.topics.raw, besides=besides))


def published_ids(settings: Settings, besides: Iterable[Any] = ()) -> list[str]:
    """The event ids on the raw topic, leaving out the records of ``besides``."""
    return [e.envelope.event_id for e in published(settings, besides)]


def test_every_row_once_across_batches_with_equal_timestamps(
    connector_wiring: tuple[Settings, CheckpointStore], wms_url: str, demo_sites: SitesConfig
) -> None:
    settings, checkpoints = connector_wiring
    connector = connector_for(settings, checkpoints, wms_url, demo_sites, batch_size=2)
    connector.run(threading.Event(), until_idle=True)
    ids = published_ids(settings)
    assert sorted(ids) == sorted(expected_ids(connector.source.name)), "no row lost, none repeated"
    assert json.loads(checkpoints.load(connector.source.name) or "{}")["pk"] == "7"
    connector.run(threading.Event(), until_idle=True)  # nothing new: nothing re-sent
    assert len(published_ids(settings)) == len(ids)

    moves = [e for e in published(settings) if isinstance(e, LotMoved)]
    putaway = next(m for m in moves if m.kind == "PUTAWAY")
    assert putaway.license_plate == "LP-77120"
    assert putaway.envelope.occurred_at.isoformat() == "2026-11-09T07:00:00-06:00", (
        "America/Chicago"
    )


def test_events_are_numbered_densely_and_a_restart_numbers_a_re_read_alike(
    connector_wiring: tuple[Settings, CheckpointStore], tmp_path: Path, demo_sites: SitesConfig
) -> None:
    settings, checkpoints = connector_wiring
    url = f"sqlite:///{tmp_path / 'wms.db'}"
    create_transactions(url, rows())
    first = connector_for(settings, checkpoints, url, demo_sites)
    name = first.source.name
    first.run(threading.Event(), until_idle=True)
    sent_records = read_topic(settings, settings.topics.raw)
    sent = {e.envelope.event_id: e for e in decoded(sent_records)}
    # 7 rows: TELEPORT is dead-lettered and takes no number, the putaway's licence plate
    # link is an event of its own
    assert sorted(e.envelope.sequence for e in sent.values()) == list(range(1, 8))
    assert checkpoints.load_sequence(name) == 8

    # A crash after the broker acknowledged rows 5-7 but before their checkpoint: the
    # restarted connector (a new source object) reads them again from row 3's checkpoint.
    move = sent[stable_event_id(name, "txn", "3")]
    checkpoints.save(name, Cursor(updated_at=SAME, pk="3").to_json(), move.envelope.sequence + 1)
    extra = {**rows()[2], "id": 8, "updated_at": T0.replace(hour=11)}
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(default_table(MetaData()).insert(), [extra])
    finally:
        engine.dispose()
    restarted = connector_for(settings, checkpoints, url, demo_sites, name=name)
    restarted.run(threading.Event(), until_idle=True)
    again = published(settings, besides=sent_records)
    resent = [e for e in again if e.envelope.event_id in sent]
    assert len(resent) == 3, "rows 5, 6 and 7 read again"
    assert all(e == sent[e.envelope.event_id] for e in resent), (
        "byte-identical, sequence number included: the hub stores them once, no conflict"
    )
    (new,) = [e for e in again if e.envelope.event_id not in sent]
    assert new.envelope.sequence == 8, "numbering carries on from the checkpoint"
    assert checkpoints.load_sequence(name) == 9


def test_a_row_that_cannot_be_mapped_is_dead_lettered_and_the_rest_flows(
    connector_wiring: tuple[Settings, CheckpointStore], wms_url: str, demo_sites: SitesConfig
) -> None:
    settings, checkpoints = connector_wiring
    connector = connector_for(settings, checkpoints, wms_url, demo_sites)
    connector.run(threading.Event(), until_idle=True)
    dead = read_topic(settings, settings.topics.connector_dlq)
    assert len(dead) == 1
    payload = json.loads(dead[0].value())
    assert payload["id"] == 4
    assert payload["txn_type"] == "TELEPORT"
    headers = dict(dead[0].headers())
    assert "TELEPORT" in headers[DLQ_REASON].decode()
    assert json.loads(headers[DLQ_SOURCE_POSITION])["pk"] == "4"
    assert connector.status.dead_lettered == 1
    assert stable_event_id(connector.source.name, "txn", "5") in published_ids(settings)


def test_a_value_the_lot_model_refuses_is_dead_lettered_not_fatal(
    connector_wiring: tuple[Settings, CheckpointStore], wms_url: str, demo_sites: SitesConfig
) -> None:
    """14 integer digits fit the WMS's NUMERIC(18,4) but not a Quantity (12 at most)."""
    settings, checkpoints = connector_wiring
    huge = {**rows()[2], "id": 8, "updated_at": T0.replace(hour=8), "quantity": Decimal(10**13)}
    engine = create_engine(wms_url)
    try:
        with engine.begin() as conn:
            conn.execute(default_table(MetaData()).insert(), [huge])
    finally:
        engine.dispose()
    connector = connector_for(settings, checkpoints, wms_url, demo_sites)
    connector.run(threading.Event(), until_idle=True)
    dead = {json.loads(m.value())["id"]: dict(m.headers())
            for m in read_topic(settings, settings.topics.connector_dlq)}  # fmt: skip
    assert sorted(dead) == [4, 8]
    assert dead[8][DLQ_REASON_CODE] == b"invalid-event"
    assert "12 digits" in dead[8][DLQ_REASON].decode()
    assert json.loads(dead[8][DLQ_SOURCE_POSITION])["pk"] == "8"
    later = {stable_event_id(connector.source.name, "txn", key) for key in ("6", "7")}
    assert later <= set(published_ids(settings)), "the rows after it still flow"


def test_broker_down_advances_nothing_and_loses_nothing(
    connector_wiring: tuple[Settings, CheckpointStore], wms_url: str, demo_sites: SitesConfig
) -> None:
    settings, checkpoints = connector_wiring
    dead_broker = {**settings.producer_config(), "bootstrap.servers": f"127.0.0.1:{free_port()}",
                   "message.timeout.ms": 1500}  # fmt: skip
    down = connector_for(settings, checkpoints, wms_url, demo_sites,
                         publisher=KafkaPublisher(dead_broker, make_serde(), settings.topics.raw))  # fmt: skip
    down.run_once()  # sent, not yet acknowledged: nothing to checkpoint
    with pytest.raises(BrokerUnavailableError):
        down.drain(timeout_s=5)
    down.source.close()
    assert checkpoints.load(down.source.name) is None, "checkpoint not advanced"
    recovered = connector_for(settings, checkpoints, wms_url, demo_sites)
    recovered.source.name = down.source.name  # the same connector, broker back
    recovered.run(threading.Event(), until_idle=True)
    assert sorted(published_ids(settings)) == sorted(expected_ids(down.source.name))


def test_source_down_is_retried_reported_and_resumed(
    connector_wiring: tuple[Settings, CheckpointStore], demo_sites: SitesConfig, postgres_admin: str
) -> None:
    settings, checkpoints = connector_wiring
    name = f"wms_down_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_admin.rsplit('/', 1)[0]}/{name}"  # the WMS database does not exist yet
    connector = connector_for(settings, checkpoints, url, demo_sites)
    stop = threading.Event()
    runner = threading.Thread(target=connector.run, args=(stop,), daemon=True)
    runner.start()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        wait_for(lambda: connector.status.consecutive_errors >= 2, 30, "two failed polls")
        assert "WMS database unreachable" in (connector.status.last_error or "")
        assert runner.is_alive(), "a source outage never ends the loop"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        create_transactions(url, rows())
        expected = expected_ids(connector.source.name)
        wait_for(lambda: set(published_ids(settings)) >= expected, 60, "every row after recovery")
        assert connector.status.consecutive_errors == 0
    finally:
        stop.set()
        runner.join(timeout=30)
        connector.source.close()
        time.sleep(0.2)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_backfill_re_reads_history_with_the_same_event_ids(
    connector_wiring: tuple[Settings, CheckpointStore],
    tmp_path: Path,
    demo_sites: SitesConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lothub.connectors import backfill, make_connector
    from lothub.settings import demo_sites_path

    settings, checkpoints = connector_wiring
    url = f"sqlite:///{tmp_path / 'wms.db'}"
    create_transactions(url, rows())
    sites_file = tmp_path / "sites.toml"
    sites_file.write_text(demo_sites_path().read_text() + (
        '\n[connectors.wms-bf]\nkind = "wms-sql"\nsite = "BRK"\n'
        '[connectors.wms-bf.settings]\nurl_env = "TEST_BF_WMS_URL"\n'))  # fmt: skip
    monkeypatch.setenv("TEST_BF_WMS_URL", url)
    settings = settings.model_copy(update={"site_config": sites_file})

    live = make_connector(settings, "wms-bf")
    live.run(threading.Event(), until_idle=True)
    checkpoint = checkpoints.load("wms-bf")
    first_records = read_topic(settings, settings.topics.raw)
    first = [e.envelope.event_id for e in decoded(first_records)]
    republished = backfill(settings, "wms-bf", SAME)  # rows 3-7 happened from SAME on
    again = published_ids(settings, besides=first_records)
    assert republished == len(again) == 4  # MOVE, PICK, SHIP, COUNT (TELEPORT is dead-lettered)
    assert set(again) <= set(first), (
        "a backfill re-sends the same event ids: the hub stores them once"
    )
    assert checkpoints.load("wms-bf") == checkpoint, "the live connector's position is untouched"
    assert checkpoints.load("wms-bf#backfill") is None
