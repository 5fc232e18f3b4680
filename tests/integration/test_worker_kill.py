"""A stream worker SIGKILL-ed again and again mid-run stores every event exactly once.

20,000 raw events of about 7,700 lots go through a real worker on the embedded broker
into the store; the worker is killed with ``kill -9`` at seeded random points and
restarted each time. Afterwards the store holds every event sent exactly once and the
genealogy is the one a clean single pass builds. Set ``LOTHUB_TEST_SEED`` to replay a
failing run (the seed is printed).

The load has faults (``plant_load(faults=True)``: holds ignored, receipts lost, batches
over-reported), so it raises about 60 alerts. The open alerts, as findings (rule,
subject, lots, evidence and details), must be those of a clean single pass of the rules
over the same events (:func:`tests.helpers.clean_pass_alerts`), each open once. A
restart reads facts again and the facts topic interleaves partitions differently, so
the kill run may also store alerts it opened on partial facts (a batch whose inputs had
not all arrived) and withdrew when the rest came: those are WITHDRAWN, never open.
The late-event rule judges the order within each raw partition, while the clean pass
reads the events as one stream, so its horizon is set beyond the load's span here;
re-delivered events are not judged again (tests/unit/test_integrity_rules.py), so a
restart adds none.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen

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
from streams.integrity import Thresholds
from tests.conftest import wait_for, worker_log_digest
from tests.helpers import (
    GENEALOGY_TABLES,
    alert_history,
    clean_pass_alerts,
    duplicated,
    integrity_env,
    normalized,
    open_alert_keys,
    snapshot_tables,
    where_events_are,
)

EVENTS = 20_000
KILLS = 5
#: Tables compared with the clean run (the alerts are compared as findings, below).
COMPARED_TABLES = [t.name for t in GENEALOGY_TABLES]
#: The systems plant_load numbers densely, checked for sequence gaps.
DENSE_SOURCES = frozenset({"erp-alp", "lims-alp", "mes-alp", "erp-brk"})
#: Short grace and tick, so the gaps of the lost receipts open soon after the last event.
GAP_S, TICK_S = 15, 2
STALL_S = 30
THRESHOLDS = Thresholds(
    late_horizon=timedelta(days=365),
    # the load's transfers shipped months ago by event time: only the order of a receipt
    # and a timer tick would decide whether one is overdue on its way
    transfer_sla=timedelta(days=3650),
    dense_sources=DENSE_SOURCES,
    sequence_gap_after=timedelta(seconds=GAP_S),
)
#: The lowest the settings allow in practice: each restart waits for the dead member's
#: session to expire before the group rebalances onto the new worker.
SESSION_TIMEOUT_S = 1.0


def stored_ids(store: GenealogyStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(tables.events.c.event_id)).scalars())


def test_worker_killed_at_random_points_stores_every_event_once(
    broker: str,
    postgres_url: str,
    settings_factory: Callable[..., Settings],
    store_factory: Callable[[str], GenealogyStore],
    start_worker: Callable[[Settings], Popen[bytes]],
    demo_sites: SitesConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in {
        **integrity_env(THRESHOLDS, tick_s=TICK_S),
        # a worker that stops making progress exits (non-zero) soon instead of hanging
        "LOTHUB_WORKER_STALL_TIMEOUT_S": str(STALL_S),
    }.items():
        monkeypatch.setenv(name, value)  # the worker children read them
    seed = int(os.environ.get("LOTHUB_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"kill test seed: {seed} (LOTHUB_TEST_SEED={seed} replays it)")
    rnd = random.Random(seed)
    began = time.monotonic()
    settings = settings_factory(
        kafka_bootstrap=broker, database_url=postgres_url, session_timeout_s=SESSION_TIMEOUT_S
    )
    ensure_topics(settings)
    store = store_factory(postgres_url)
    events = plant_load(demo_sites, EVENTS, seed=seed, faults=True)
    sent = {e.envelope.event_id for e in events}
    assert len(sent) == EVENTS
    publisher = KafkaPublisher(settings.producer_config(), make_serde(), settings.topics.raw)
    publisher.publish(events)

    # Kill points: a stored count to reach, then a random extra delay, so a kill lands
    # inside a sink transaction, between batches, or while normalize is still ahead.
    thresholds = sorted(rnd.sample(range(EVENTS // 20, EVENTS * 9 // 10), KILLS))
    for n, planned in enumerate(thresholds, 1):
        worker = start_worker(settings)
        threshold = max(planned, store.event_count() + 1)  # each worker gets some work done
        wait_for(lambda t=threshold: store.event_count() >= t, 120,
                 f"{threshold} events stored before kill {n}", poll_s=0.05,
                 fail_if=lambda w=worker: w.poll() is not None)  # fmt: skip
        time.sleep(rnd.uniform(0, 0.5))
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        print(f"kill {n}: at {store.event_count()} stored (threshold {threshold})")

    last = start_worker(settings)

    def last_worker() -> str:
        with store.engine.connect() as conn:
            beats = [dict(b) for b in conn.execute(select(tables.heartbeats)).mappings()]
        log = max(tmp_path.glob("worker-*.log"), key=lambda p: int(p.stem.split("-")[1]))
        lines = log.read_text(errors="replace").splitlines()
        missing = sorted(sent - set(stored_ids(store)))
        return (f"{store.event_count()} stored, missing {len(missing)} {missing[:5]}; "
                f"heartbeats {beats}\n{where_events_are(settings, missing[:5])}\n"
                f"{log.name}: {worker_log_digest(lines, last=30)}")  # fmt: skip

    wait_for(lambda: store.event_count() >= EVENTS, 180, f"all {EVENTS} events stored",
             fail_if=lambda: last.poll() is not None, explain=last_worker)  # fmt: skip
    ids = stored_ids(store)
    assert len(ids) == EVENTS, "each event stored once"
    assert set(ids) == sent, "exactly the events sent"
    print(f"kill test: {KILLS} kills, {time.monotonic() - began:.1f}s from publish to done")

    clean = store_factory(f"sqlite:///{settings.data_dir / 'clean.db'}")
    clean.apply(normalized(events, demo_sites))
    assert snapshot_tables(store, COMPARED_TABLES) == snapshot_tables(clean, COMPARED_TABLES)

    expected = clean_pass_alerts(events, demo_sites, THRESHOLDS, datetime.now(UTC))
    rules = {rule for rule, *_ in expected}
    assert rules >= {"hold-violation", "orphan-lot", "mass-balance", "sequence-gap"}, rules
    deadline = time.monotonic() + 60
    while open_alert_keys(store) != expected and time.monotonic() < deadline:
        time.sleep(0.5)  # the checks may still be behind the sink
    assert duplicated(store, "integrity_alerts", ["rule", "subject", "details"],
                      where={"state": "OPEN"}) == [], "one finding, one open alert"  # fmt: skip
    found = open_alert_keys(store)
    # in the message itself: a CI excerpt may cut the captured output short
    assert found == expected, (
        f"{len(expected)} open alerts in a clean pass; the kill run has "
        f"{len(found - expected)} more {sorted(found - expected)} and misses "
        f"{len(expected - found)} {sorted(expected - found)}\n"
        f"{alert_history(settings, {subject for _, subject, *_ in found ^ expected})}"
    )
    assert last.poll() is None, "the last worker is still running"
