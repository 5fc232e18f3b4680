"""A stream worker SIGKILL-ed again and again mid-run stores every event exactly once.

20,000 raw events of about 7,700 lots go through a real worker on the embedded broker
into the store; the worker is killed with ``kill -9`` at seeded random points and
restarted each time. Afterwards the store holds every event sent exactly once and the
genealogy is the one a clean single pass builds. Set ``LOTHUB_TEST_SEED`` to replay a
failing run (the seed is printed). ``tests.helpers.duplicated`` checks a table for rows
repeated under a key, for the integrity alerts once their uniqueness rule is settled.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from subprocess import Popen

from sqlalchemy import select

from connectors.publisher import KafkaPublisher
from connectors.simulator import plant_load
from genealogy import tables
from genealogy.store import GenealogyStore
from lothub.runtime import ensure_topics
from lothub.settings import Settings
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from tests.conftest import wait_for
from tests.helpers import GENEALOGY_TABLES, normalized, snapshot_tables

EVENTS = 20_000
KILLS = 5
#: Tables compared with the clean run; add a table here (e.g. "alerts") to cover it too.
COMPARED_TABLES = [t.name for t in GENEALOGY_TABLES]
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
) -> None:
    seed = int(os.environ.get("LOTHUB_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"kill test seed: {seed} (LOTHUB_TEST_SEED={seed} replays it)")
    rnd = random.Random(seed)
    began = time.monotonic()
    settings = settings_factory(
        kafka_bootstrap=broker, database_url=postgres_url, session_timeout_s=SESSION_TIMEOUT_S
    )
    ensure_topics(settings)
    store = store_factory(postgres_url)
    events = plant_load(demo_sites, EVENTS, seed=seed)
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
    wait_for(lambda: store.event_count() >= EVENTS, 180, f"all {EVENTS} events stored",
             fail_if=lambda: last.poll() is not None)  # fmt: skip
    ids = stored_ids(store)
    assert len(ids) == EVENTS, "each event stored once"
    assert set(ids) == sent, "exactly the events sent"
    print(f"kill test: {KILLS} kills, {time.monotonic() - began:.1f}s from publish to done")

    clean = store_factory(f"sqlite:///{settings.data_dir / 'clean.db'}")
    clean.apply(normalized(events, demo_sites))
    assert snapshot_tables(store, COMPARED_TABLES) == snapshot_tables(clean, COMPARED_TABLES)
    assert last.poll() is None, "the last worker is still running"
