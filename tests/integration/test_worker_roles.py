"""Split workers: a ``process`` and a ``store`` worker do together what one ``all`` worker does.

Over the real broker (Tansu) into SQLite: the same raw load (with its faults) is run by a
worker of each role, side by side, each in its own consumer group. The store must hold
every event once, the same genealogy as applying the load directly, and the open alerts
of one clean pass of the rules; each role must have done only its own part.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from sqlalchemy import select

from connectors.publisher import KafkaPublisher
from connectors.simulator import plant_load
from genealogy import tables
from genealogy.store import GenealogyStore
from lothub.runtime import ensure_topics
from lothub.settings import Settings
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from streams.worker import WorkerRole
from tests.conftest import wait_for
from tests.helpers import (
    clean_pass_alerts,
    integrity_env,
    normalized,
    open_alert_keys,
    snapshot_tables,
)
from tests.integration.test_worker_kill import COMPARED_TABLES, THRESHOLDS

EVENTS = 2_000
#: a short grace, so the gaps of the receipts never sent open soon after the last event
GAP_S = 5
CHECKS = dataclasses.replace(THRESHOLDS, sequence_gap_after=timedelta(seconds=GAP_S))


def role_stats(store: GenealogyStore, role: WorkerRole) -> dict[str, Any]:
    beat = store.last_heartbeat(role.heartbeat_component)
    return {} if beat is None else dict(json.loads(beat[2]))


def test_a_process_and_a_store_worker_together_do_what_one_worker_does(
    broker: str,
    settings_factory: Callable[..., Settings],
    store_factory: Callable[[str], GenealogyStore],
    start_worker: Callable[..., Popen[bytes]],
    demo_sites: SitesConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in integrity_env(CHECKS, tick_s=2).items():
        monkeypatch.setenv(name, value)  # the worker children read them
    settings = settings_factory(kafka_bootstrap=broker, session_timeout_s=2.0,
                                database_url=f"sqlite:///{tmp_path / 'hub.db'}")  # fmt: skip
    ensure_topics(settings)
    store = store_factory(settings.store_url)
    process = start_worker(settings, role="process")
    stores = start_worker(settings, role="store")
    events = plant_load(demo_sites, EVENTS, seed=7, faults=True)
    KafkaPublisher(settings.producer_config(), make_serde(), settings.topics.raw).publish(events)

    wait_for(
        lambda: store.event_count() >= EVENTS,
        120,
        f"all {EVENTS} events stored",
        fail_if=lambda: process.poll() is not None or stores.poll() is not None,
    )
    with store.engine.connect() as conn:
        ids = list(conn.execute(select(tables.events.c.event_id)).scalars())
    assert sorted(ids) == sorted(e.envelope.event_id for e in events), "each event once"
    clean = store_factory(f"sqlite:///{settings.data_dir / 'clean.db'}")
    clean.apply(normalized(events, demo_sites))
    assert snapshot_tables(store, COMPARED_TABLES) == snapshot_tables(clean, COMPARED_TABLES)

    expected = clean_pass_alerts(events, demo_sites, CHECKS, datetime.now(UTC))
    assert {rule for rule, *_ in expected} >= {"hold-violation", "orphan-lot", "mass-balance"}
    wait_for(lambda: open_alert_keys(store) == expected, 60,
             f"the {len(expected)} open alerts of a clean pass",
             explain=lambda: f"found {sorted(open_alert_keys(store) ^ expected)}")  # fmt: skip

    wait_for(lambda: role_stats(store, WorkerRole.STORE).get("stored") == EVENTS
             and role_stats(store, WorkerRole.PROCESS).get("normalized") == EVENTS, 30,
             "both workers' heartbeats counting every event")  # fmt: skip
    processed, stored = role_stats(store, WorkerRole.PROCESS), role_stats(store, WorkerRole.STORE)
    assert processed["stored"] == 0, processed
    assert processed["checked"] > 0, processed
    assert stored["normalized"] == 0, stored
    assert stored["alerts_stored"] > 0, stored
    assert store.last_heartbeat(WorkerRole.ALL.heartbeat_component) is None, "no all-worker ran"
    assert process.poll() is None, "the process worker is still running"
    assert stores.poll() is None, "the store worker is still running"
