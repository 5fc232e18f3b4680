"""A stream worker SIGKILL-ed again and again mid-run stores every event exactly once.

20,000 raw events of about 7,700 lots go through a real worker on the embedded broker
into the store; the worker is killed with ``kill -9`` at seeded random points and
restarted each time. Afterwards the store holds every event sent exactly once and the
genealogy is the one a clean single pass builds. Set ``LOTHUB_TEST_SEED`` to replay a
failing run (the seed is printed).

Some receipts are left out of the load, so the integrity checks have findings (their lots
are orphans when the MES consumes them). Afterwards no two stored alerts state the same
finding, and the test prints how the open alerts of the rules that judge the facts alone
differ from one clean, in-order evaluation of the same facts. It does not assert that they
are equal yet: kills leave a few extra ones (a known defect, see the README).
``late-event`` is left out of that comparison: it judges arrival order, which kills and
partitions change by design.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from subprocess import Popen
from typing import Any

from sqlalchemy import select

from connectors.publisher import KafkaPublisher
from connectors.simulator import plant_load
from genealogy import tables
from genealogy.alerts import AlertFilter, list_alerts
from genealogy.store import GenealogyStore
from lothub.runtime import ensure_topics
from lothub.settings import Settings
from schemas.model import LotEventBase, LotReceived
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from streams.integrity import SubjectState, Thresholds, facts_of, step
from streams.normalize import normalize
from tests.conftest import wait_for
from tests.helpers import GENEALOGY_TABLES, duplicated, normalized, snapshot_tables

EVENTS = 20_000
KILLS = 5
#: Tables compared with the clean run; add a table here (e.g. "alerts") to cover it too.
COMPARED_TABLES = [t.name for t in GENEALOGY_TABLES]
#: The lowest the settings allow in practice: each restart waits for the dead member's
#: session to expire before the group rebalances onto the new worker.
SESSION_TIMEOUT_S = 1.0


#: receipts left out of the load, every 200th, so the checks find orphan lots
MISSING_RECEIPTS = 20
#: rules that judge arrival order or the clock, not the facts: not compared
ORDER_RULES = {"late-event", "source-stall", "transfer-overdue"}


def without_some_receipts(events: list[LotEventBase]) -> list[LotEventBase]:
    """The load less ``MISSING_RECEIPTS`` of its receipts (each one's lot is used later)."""
    receipts = [i for i, e in enumerate(events) if isinstance(e, LotReceived)]
    dropped = set(receipts[::200][:MISSING_RECEIPTS])
    assert len(dropped) == MISSING_RECEIPTS
    return [e for i, e in enumerate(events) if i not in dropped]


def expected_open_alerts(
    events: list[LotEventBase], sites: SitesConfig
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Open alerts (id -> rule, lots) of one in-order evaluation of the events' facts."""
    states: dict[str, SubjectState] = {}
    now = datetime.now(UTC)
    for event in events:
        for fact in facts_of(normalize(event, sites)):
            step(states.setdefault(fact.subject, SubjectState()), [fact], Thresholds(), now)
    return {aid: (a.rule.value, tuple(sorted(a.lots))) for st in states.values()
            for aid, a in st.open.items() if a.rule.value not in ORDER_RULES}  # fmt: skip


def open_alerts(store: GenealogyStore, rule: str | None = None) -> dict[str, Any]:
    """Stored open alerts (id -> rule, lots), of one rule or of every rule the facts decide."""
    _, items = list_alerts(store, AlertFilter(status="open", rule=rule), limit=10_000, offset=0)
    return {a["alert_id"]: (a["rule"], tuple(sorted(a["lots"]))) for a in items
            if rule is not None or a["rule"] not in ORDER_RULES}  # fmt: skip


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
    events = without_some_receipts(plant_load(demo_sites, EVENTS + MISSING_RECEIPTS, seed=seed))
    sent = {e.envelope.event_id for e in events}
    assert len(sent) == EVENTS
    expected = expected_open_alerts(events, demo_sites)
    assert [rule for rule, _ in expected.values()] == ["orphan-lot"] * MISSING_RECEIPTS
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

    deadline = time.monotonic() + 60
    while open_alerts(store) != expected and time.monotonic() < deadline:
        time.sleep(0.5)  # the checks may still be behind the sink
    found = open_alerts(store)
    assert not duplicated(store, "integrity_alerts", ["rule", "subject", "evidence_event_ids"])
    # Known defect (README, integrity alerts): a kill can lose some facts or state, leaving
    # a few alerts a clean evaluation does not raise. Reported, not yet asserted.
    extra = {a: found[a] for a in found.keys() - expected.keys()}
    missing = {a: expected[a] for a in expected.keys() - found.keys()}
    print(f"kill test: {len(expected)} open alerts expected, {len(extra)} more found "
          f"{sorted(extra.values())}, {len(missing)} missing {sorted(missing.values())}; "
          f"{len(open_alerts(store, 'late-event'))} late-event alerts (arrival order)")  # fmt: skip

    clean = store_factory(f"sqlite:///{settings.data_dir / 'clean.db'}")
    clean.apply(normalized(events, demo_sites))
    assert snapshot_tables(store, COMPARED_TABLES) == snapshot_tables(clean, COMPARED_TABLES)
    assert last.poll() is None, "the last worker is still running"
