"""``lothub replay-dlq``: send parked raw events back through normalization.

An event parked because a site code had no mapping is not lost: once the mapping
is added to the site configuration (and the stream workers restarted with it),
``replay-dlq`` re-publishes every parked record that now maps, byte for byte, to
the raw topic. Records that still do not map stay parked and are listed with their
reason. Replaying twice is harmless: event ids are stable and the hub stores each
event once.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from connectors.publisher import KafkaPublisher
from lothub.settings import Settings
from schemas.errors import DataError
from schemas.model import check_enterprise
from schemas.serde import make_serde
from streams.normalize import normalize


@dataclass
class ReplayReport:
    """What a replay did."""

    replayed: int = 0
    still_parked: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [f"re-published {self.replayed} record(s) to the raw topic"]
        out += [f"still parked ({n}): {reason}" for reason, n in self.still_parked.most_common()]
        return out


def replay_dead_letters(
    settings: Settings, *, dry_run: bool = False, timeout_s: float = 30.0
) -> ReplayReport:
    """Re-publish every raw dead letter that the current site configuration maps."""
    topics = settings.topics
    sites = settings.sites()
    serde = make_serde(settings.schema_registry_url)
    consumer = Consumer({**settings.consumer_config(f"lothub-replay-{time.time_ns()}"),
                         "enable.partition.eof": True})  # fmt: skip
    publisher = KafkaPublisher(settings.producer_config(), serde, topics.raw)
    report = ReplayReport()
    try:
        partitions = (
            consumer.list_topics(topics.raw_dlq, timeout=timeout_s)
            .topics[topics.raw_dlq]
            .partitions
        )
        consumer.assign([TopicPartition(topics.raw_dlq, p, 0) for p in partitions])
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if msg.error():
                done.add(partition)
                continue
            value = msg.value() or b""
            try:
                event = serde.decode(
                    value, topic=topics.raw_dlq, partition=partition, offset=offset
                )
                check_enterprise(normalize(event, sites))
            except DataError as exc:
                report.still_parked[str(exc)] += 1
                continue
            report.replayed += 1
            if not dry_run:
                publisher.publish_bytes(msg.key(), value)
        if len(done) < len(partitions):
            raise TimeoutError(f"dead-letter topic not read to its end within {timeout_s:.0f}s")
        publisher.flush()
    finally:
        consumer.close()
    return report
