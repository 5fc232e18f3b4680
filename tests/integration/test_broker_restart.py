"""The embedded broker restarts mid-run and comes back empty: what the hub does about it.

A WMS connector (real, in a thread) and a stream worker (real process) run against a
Tansu broker; PostgreSQL is the store. The broker is stopped while the worker still
has thousands of acknowledged events to store, and a fresh, empty one is started on
the same port. What must hold:

* the worker survives the outage, rejoins the new broker's (empty) group and stores
  events published after the restart although the progress it stored for the old
  topics is far ahead of the new ones; it counts the rewind in its heartbeat;
* the connector retries until the new broker takes its events (a new producer:
  the idempotent one stays stuck on the old broker's producer id);
* what the old broker acknowledged but never delivered is lost on the way, and the
  per-source counts (``GET /api/v1/sources``) show exactly how much against the
  source; the connector's checkpoint is past it, so only a backfill re-sends it,
  after which the counts agree and every event is stored once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.base import Connector
from connectors.publisher import KafkaPublisher
from connectors.simulator import plant_load, warehouse_moves
from connectors.wms_sql import create_transactions
from genealogy import tables
from genealogy.store import GenealogyStore
from lothub.connectors import backfill, make_connector
from lothub.runtime import EmbeddedBroker, ensure_topics
from lothub.settings import Settings, demo_sites_path
from schemas.model import stable_event_id
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from streams.worker import HEARTBEAT_COMPONENT
from tests.conftest import wait_for
from trace_api.app import create_app

CONNECTOR = "wms-restart"
#: WMS rows: stored before the broker dies, acknowledged by it but not stored, added meanwhile
STORED, UNSTORED, AFTER = 3_000, 3_000, 1_000
TOTAL = STORED + UNSTORED + AFTER


def stored_ids(store: GenealogyStore) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(tables.events.c.event_id)).scalars())


def event_ids(first: int, last: int) -> set[str]:
    return {stable_event_id(CONNECTOR, "txn", str(i)) for i in range(first, last + 1)}


def worker_stats(store: GenealogyStore) -> dict[str, Any]:
    beat = store.last_heartbeat(HEARTBEAT_COMPONENT)
    return {} if beat is None else dict(json.loads(beat[2]))


def source_events(client: TestClient) -> int:
    """What the hub says it holds from the connector's source (the reconciler's view)."""
    items = client.get("/api/v1/sources").json()["items"]
    return sum(i["events"] for i in items if i["system_instance"] == CONNECTOR)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[list[EmbeddedBroker]]:
    """A broker for this test alone (it is restarted); the current one is last."""
    brokers = [EmbeddedBroker(tmp_path / "broker-1.log")]
    brokers[0].start()
    yield brokers
    for b in brokers:
        b.stop()


def test_broker_restart_loses_unstored_events_visibly_and_a_backfill_closes_the_gap(
    own_broker: list[EmbeddedBroker],
    tmp_path: Path,
    postgres_url: str,
    settings_factory: Callable[..., Settings],
    store_factory: Callable[[str], GenealogyStore],
    start_worker: Callable[[Settings], Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wms_url = f"sqlite:///{tmp_path / 'wms.db'}"
    rows = warehouse_moves(STORED + UNSTORED + AFTER)
    create_transactions(wms_url, rows[:STORED])
    monkeypatch.setenv("TEST_RESTART_WMS_URL", wms_url)
    sites_file = tmp_path / "sites.toml"
    sites_file.write_text(demo_sites_path().read_text() + (
        f'\n[connectors.{CONNECTOR}]\nkind = "wms-sql"\nsite = "BRK"\nbatch_size = 500\n'
        f'poll_interval_s = 0.2\n[connectors.{CONNECTOR}.settings]\nurl_env = "TEST_RESTART_WMS_URL"\n'
    ))  # fmt: skip
    broker = own_broker[0]
    settings = settings_factory(kafka_bootstrap=broker.bootstrap, database_url=postgres_url,
                                session_timeout_s=1.0, site_config=sites_file)  # fmt: skip
    ensure_topics(settings)
    store = store_factory(postgres_url)
    connector: Connector[Any] = make_connector(settings, CONNECTOR)
    stop = threading.Event()
    thread = threading.Thread(target=connector.run, args=(stop,), daemon=True)
    thread.start()
    worker = start_worker(settings)
    try:
        wait_for(lambda: store.event_count() == STORED, 120, f"the first {STORED} events stored",
                 fail_if=lambda: worker.poll() is not None)  # fmt: skip
        progress_before = store.progress(settings.worker_group)

        # The worker stalls (SIGSTOP: a long pause, a swapped-out host) while the
        # connector sends more; the broker acknowledges them, then dies with them.
        os.kill(worker.pid, signal.SIGSTOP)
        create_transactions(wms_url, rows[STORED : STORED + UNSTORED])
        wait_for(lambda: connector.status.events_published == STORED + UNSTORED, 60,
                 "the broker to acknowledge the next events")  # fmt: skip
        broker.stop()
        create_transactions(wms_url, rows[STORED + UNSTORED :])
        fresh = EmbeddedBroker(tmp_path / "broker-2.log", port=broker.port)
        own_broker.append(fresh)
        fresh.start()
        ensure_topics(settings)  # what `lothub up` and `lothub worker` do when they start
        os.kill(worker.pid, signal.SIGCONT)

        wait_for(lambda: event_ids(TOTAL - AFTER + 1, TOTAL) <= stored_ids(store), 120,
                 "the rows added during the outage to be stored via the new broker",
                 fail_if=lambda: worker.poll() is not None)  # fmt: skip
        assert connector.status.consecutive_errors == 0, "the connector recovered by itself"
        assert connector.status.events_published == TOTAL, "nothing published twice"
        wait_for(lambda: worker_stats(store).get("topic_resets", 0) >= 1, 15,
                 "the worker to report that its stored progress is ahead of the new topics")  # fmt: skip
        progress_after = store.progress(settings.worker_group)
        assert any(progress_after[tp] < progress_before[tp] for tp in progress_after), (
            "progress follows the new topics down instead of skipping their first records"
        )

        lost = event_ids(1, TOTAL) - stored_ids(store)
        print(f"broker restart: {len(lost)} acknowledged events lost with the old broker")
        # (a few may survive in the worker's socket buffer, fetched just before it stalled)
        assert lost, "the old broker died with acknowledged events nobody had stored"
        assert lost <= event_ids(STORED + 1, STORED + UNSTORED), "only those are lost"
        with TestClient(create_app(store)) as client:
            assert source_events(client) == TOTAL - len(lost), "the gap is visible"
            # The live connector's checkpoint is past the lost events: only a backfill
            # re-sends them, and the store keeps each event once.
            backfill(settings, CONNECTOR, since=datetime(2026, 11, 1))
            wait_for(lambda: store.event_count() == TOTAL, 120,
                     "the backfill to close the gap", fail_if=lambda: worker.poll() is not None)  # fmt: skip
            assert source_events(client) == TOTAL
        assert stored_ids(store) == event_ids(1, TOTAL)
        assert worker.poll() is None, "the worker lived through the broker restart"
    finally:
        stop.set()
        thread.join(timeout=60)
        connector.checkpoints.close()


def test_a_recreated_topic_is_read_from_its_start_not_skipped(
    broker: str,
    sqlite_url: str,
    settings_factory: Callable[..., Settings],
    store_factory: Callable[[str], GenealogyStore],
    start_worker: Callable[[Settings], Popen[bytes]],
    demo_sites: SitesConfig,
) -> None:
    """Topics deleted and created again under a running worker (no rebalance happens):
    the new records sit at offsets the worker has already passed, and must still be
    processed rather than dropped as re-deliveries."""
    settings = settings_factory(kafka_bootstrap=broker, database_url=sqlite_url)
    ensure_topics(settings)
    store = store_factory(sqlite_url)
    events = plant_load(demo_sites, 3_600)
    publisher = KafkaPublisher(settings.producer_config(), make_serde(), settings.topics.raw)
    worker = start_worker(settings)
    publisher.publish(events[:3_000])
    wait_for(lambda: store.event_count() == 3_000, 120, "the first 3,000 events stored",
             fail_if=lambda: worker.poll() is not None)  # fmt: skip

    admin = AdminClient(settings.admin_config())
    gone = [settings.topics.raw, settings.topics.enterprise]
    for future in admin.delete_topics(gone, operation_timeout=30).values():
        future.result(timeout=30)
    wait_for(lambda: not set(gone) & set(admin.list_topics(timeout=10).topics), 30,
             "the topics to be deleted")  # fmt: skip
    ensure_topics(settings)
    publisher.publish(events[3_000:])  # 600 events: offsets far below the old ones

    wait_for(lambda: store.event_count() == 3_600, 60, "the events sent after recreation stored",
             fail_if=lambda: worker.poll() is not None)  # fmt: skip
    wait_for(lambda: worker_stats(store).get("offset_rewinds", 0) >= 1, 15,
             "the worker to report the offsets going back")  # fmt: skip
