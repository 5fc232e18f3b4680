"""Helpers shared by the functional and integration tiers."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import select

from genealogy import tables
from genealogy.store import GenealogyStore, utc
from lothub.settings import Settings
from schemas.model import LotEventBase
from schemas.sites import SitesConfig
from streams.normalize import normalize

#: Tables whose content is the genealogy (consumer progress and heartbeats are not).
GENEALOGY_TABLES = [
    tables.events,
    tables.lot_ledger,
    tables.lot_events,
    tables.lots,
    tables.lot_aliases,
    tables.lot_links,
    tables.batch_moves,
    tables.documents,
    tables.status_history,
    tables.event_conflicts,
    tables.event_corrections,
]


def snapshot(store: GenealogyStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every genealogy row, sorted, times in UTC, without ingestion timestamps."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with store.engine.connect() as conn:
        for table in GENEALOGY_TABLES:
            # ingestion bookkeeping: when and in which write a row arrived, not what it says
            cols = [c for c in table.columns if c.name not in {"ingested_at", "seen_at", "seq"}]
            out[table.name] = sorted(
                tuple(utc(v) if isinstance(v, datetime) else v for v in r)
                for r in conn.execute(select(*cols))
            )
    return out


def normalized(events: list[LotEventBase], sites: SitesConfig) -> list[LotEventBase]:
    """The enterprise form of raw events, as the stream worker would produce it."""
    return [normalize(e, sites) for e in events]


def read_topic(settings: Settings, topic: str, timeout_s: float = 15.0) -> list[Any]:
    """Every record on ``topic`` from the beginning, via a throwaway consumer."""
    consumer = Consumer(
        {**settings.consumer_config(f"reader-{time.time_ns()}"), "enable.partition.eof": True}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, done = [], set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                done.add(msg.partition())
            else:
                records.append(msg)
        return records
    finally:
        consumer.close()
