"""The walking skeleton over a real broker (Tansu) into SQLite and real PostgreSQL.

Raw site events -> faust worker (normalize, sink) -> genealogy store -> trace API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from subprocess import Popen
from typing import Any

from fastapi.testclient import TestClient

from connectors.publisher import KafkaPublisher
from connectors.simulator import build_scenario
from genealogy.store import GenealogyStore
from lothub.demo import verify_traces
from lothub.runtime import ensure_topics
from lothub.settings import Settings
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from schemas.topics import DLQ_REASON, DLQ_REASON_CODE, DLQ_SOURCE_OFFSET, DLQ_SOURCE_TOPIC
from streams.worker import HEARTBEAT_COMPONENT
from tests.conftest import wait_for
from tests.helpers import read_topic, snapshot
from trace_api.app import create_app

GARBAGE = b"\x00\x01 this is not an Avro record \xff"


def worker_stats(store: GenealogyStore) -> dict[str, Any]:
    beat = store.last_heartbeat(HEARTBEAT_COMPONENT)
    return {} if beat is None else dict(json.loads(beat[2]))


def test_scenario_flows_end_to_end_exactly_once_with_dead_letters(
    broker: str,
    store_url: str,
    settings_factory: Callable[..., Settings],
    store_factory: Callable[[str], GenealogyStore],
    start_worker: Callable[[Settings], Popen[bytes]],
    demo_sites: SitesConfig,
) -> None:
    settings = settings_factory(kafka_bootstrap=broker, database_url=store_url)
    ensure_topics(settings)
    store = store_factory(store_url)
    worker = start_worker(settings)
    scenario = build_scenario(demo_sites, faults=True)
    serde = make_serde()
    publisher = KafkaPublisher(settings.producer_config(), serde, settings.topics.raw)

    half = len(scenario.events) // 2
    publisher.publish(scenario.events[:half])
    publisher.publish_bytes(b"ALP-20261102-001", GARBAGE)  # a broken record amid good ones
    publisher.publish(scenario.events[half:])

    distinct = {e.envelope.event_id for e in scenario.events}
    good = len(distinct - scenario.expected_dead_letters)
    wait_for(
        lambda: worker.poll() is None and store.event_count() == good,
        120,
        f"{good} events in the store",
        fail_if=lambda: worker.poll() is not None,
    )

    with TestClient(create_app(store)) as client:
        verdict = verify_traces(client, scenario.truth)
    assert verdict.failures == []

    dead = read_topic(settings, settings.topics.raw_dlq)
    assert len(dead) == 1 + len(scenario.expected_dead_letters)
    garbage = [m for m in dead if m.value() == GARBAGE]
    assert len(garbage) == 1, "the original bytes are kept as they were"
    headers = {k: v.decode() for k, v in garbage[0].headers()}
    assert headers[DLQ_REASON_CODE] == "undecodable"
    assert headers[DLQ_SOURCE_TOPIC] == settings.topics.raw
    assert int(headers[DLQ_SOURCE_OFFSET]) >= 0
    unmapped = [m for m in dead if m.value() != GARBAGE]
    assert {
        serde.decode(m.value(), topic="dlq", partition=0, offset=0).envelope.event_id
        for m in unmapped
    } == scenario.expected_dead_letters
    assert all("'sacks'" in dict(m.headers())[DLQ_REASON].decode() for m in unmapped)

    # Re-sending every event twice changes nothing in the store.
    before = snapshot(store)
    wait_for(lambda: "duplicates" in worker_stats(store), 30, "the worker's first heartbeat")
    duplicates_before = worker_stats(store)["duplicates"]
    publisher.publish(scenario.events)
    publisher.publish(scenario.events)
    resent = 2 * sum(
        1 for e in scenario.events if e.envelope.event_id not in scenario.expected_dead_letters
    )
    wait_for(
        lambda: worker_stats(store)["duplicates"] >= duplicates_before + resent,
        60,
        f"{resent} re-sent events recognised as duplicates",
    )
    assert snapshot(store) == before
    assert worker.poll() is None, "the worker keeps running through bad input"
