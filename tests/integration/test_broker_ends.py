"""The end of a partition, as table recovery and the liveness watch take it.

The embedded broker (Tansu 0.6) answers a ListOffsets request with the first offset of
the partition's last stored batch + 1, however many records that batch holds, while
its fetch responses carry the right high watermark. The worker takes the latter
(:func:`streams.worker.fetched_ends`); on Apache Kafka the two agree and this test
passes the same way.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from faust.types import TP

from streams.worker import fetched_ends

RECORDS = 100


def test_fetched_ends_count_every_record_of_the_last_batch(broker: str) -> None:
    topic = f"ends-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(10)
    # one batch: linger long enough for every record to go out together
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 500})
    for n in range(RECORDS):
        producer.produce(topic, value=str(n).encode(), partition=0)
    assert producer.flush(15) == 0, "every record acknowledged"
    full, empty = TP(topic, 0), TP(topic, 1)

    async def ends() -> tuple[dict[TP, int], dict[TP, int]]:
        probe = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
        await probe.start()
        try:
            listed = await probe.end_offsets([full, empty])
            return listed, await fetched_ends(probe, listed)
        finally:
            await probe.stop()

    listed, fetched = asyncio.run(ends())
    print(f"listed ends {listed[full]}/{listed[empty]}, fetched {fetched[full]}/{fetched[empty]}")
    assert fetched == {full: RECORDS, empty: 0}
