"""Connector throughput end to end to the broker, against a bare producer in the same run.

For each connector (WMS over SQL, LIMS over CSV files) the benchmark
1. lets the connector read N records, map, encode, publish and checkpoint them into
   the embedded broker (``Connector.run(until_idle=True)``), and
2. produces the very same events, encoded beforehand, with a bare confluent-kafka
   ``Producer.produce()`` loop and one flush (the baseline).
It prints events/s of both and their ratio (target: >= 0.5x for SQL and file sources).

Both start cold, as the issue defines the benchmark, and each clock includes the
creation of its producers: a fresh producer waits ~0.5 s for its idempotent producer
id before the first acknowledgement, which is most of the bare loop's time at 20,000
records. The same run also measures both sides again with
their producers already connected ("warm"), the steady-state cost per event.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from connectors.base import Connector, Source
from connectors.checkpoints import CheckpointStore
from connectors.lims import LimsCsvSource, LimsMapping
from connectors.publisher import KafkaPublisher
from connectors.simulator import warehouse_moves
from connectors.wms_sql import WmsSqlConfig, WmsSqlSource, create_transactions
from genealogy.store import GenealogyStore
from lothub.connectors import freeze_startup_heap
from lothub.runtime import EmbeddedBroker, ensure_topics
from lothub.settings import Settings, demo_sites_path
from schemas.model import LotEventBase
from schemas.serde import make_serde
from schemas.sites import load_sites


def _wms(folder: Path, rows: int) -> Callable[[], Source[Any]]:
    url = f"sqlite:///{folder / 'wms.db'}"
    create_transactions(url, warehouse_moves(rows))
    site = load_sites(demo_sites_path()).sites["BRK"]
    return lambda: WmsSqlSource(WmsSqlConfig(name=f"bench-wms-{uuid.uuid4().hex[:6]}",
                                             site_code="BRK", site=site, url=url))  # fmt: skip


def _lims(folder: Path, rows: int) -> Callable[[], Source[Any]]:
    exports = folder / "lims"
    exports.mkdir()
    lines = ["sample_id,lot,test,result,passed,tested_at"] + [
        f"S-{i},ALP-20261102-{i % 1000:03d},MOIST,3.{i % 10},PASS,2026-11-02T15:{i % 60:02d}:00"
        for i in range(rows)
    ]
    (exports / "results.csv").write_text("\n".join(lines) + "\n")
    site = load_sites(demo_sites_path()).sites["ALP"]
    mapping = LimsMapping(system_instance="bench-lims", site_code="ALP", site=site)
    return lambda: LimsCsvSource(
        name=f"bench-lims-{uuid.uuid4().hex[:6]}", folder=exports, mapping=mapping
    )


@dataclass(frozen=True)
class Rates:
    """Events/s of the connector and of the bare producer, measured the same way."""

    connector: float
    bare: float

    @property
    def ratio(self) -> float:
        """Connector events/s over bare producer events/s."""
        return self.connector / self.bare


Publishers = tuple[KafkaPublisher, KafkaPublisher]


def _run_connector(
    make_source: Callable[[], Source[Any]],
    publishers: Callable[[], Publishers],
    checkpoints: CheckpointStore,
) -> tuple[float, int, Publishers]:
    """Time the connector from the creation of its publishers to its last checkpoint."""
    began = time.perf_counter()
    raw, dead = publishers()
    connector = Connector(make_source(), raw, dead, checkpoints, batch_size=500)
    connector.run(threading.Event(), until_idle=True)
    return time.perf_counter() - began, connector.status.events_published, (raw, dead)


def _produce(make_producer: Callable[[], Producer], topic: str,
             encoded: list[tuple[bytes, bytes]]) -> tuple[float, Producer]:  # fmt: skip
    """Time a bare producer from its creation to the flush of every record."""
    began = time.perf_counter()
    producer = make_producer()
    for key, value in encoded:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return time.perf_counter() - began, producer


def _measure(
    settings: Settings, make_source: Callable[[], Source[Any]], store_url: str
) -> tuple[Rates, Rates, int]:
    """Cold (fresh producers, the issue's definition) and warm rates, and the event count.

    Warm: the same producers once more, with a fresh source over the same records, so
    neither side pays the producer's start (connection, idempotent producer id).
    """
    serde = make_serde()
    topics = settings.topics
    checkpoints = CheckpointStore.connect(store_url)

    def publishers() -> Publishers:
        return (KafkaPublisher(settings.producer_config(), serde, topics.raw),
                KafkaPublisher(settings.producer_config(), serde, topics.connector_dlq))  # fmt: skip

    cold_s, events, (raw, dead) = _run_connector(make_source, publishers, checkpoints)

    # Baseline: the same events, encoded before the clock starts.
    source = make_source()
    encoded: list[tuple[bytes, bytes]] = []
    after = None
    while batch := source.read(after, 5000):
        for record in batch:
            mapped: list[LotEventBase] = source.to_events(record)
            encoded += [(e.lots()[0].encode(), serde.encode(e)) for e in mapped]
        after = batch[-1].position
    source.close()
    bare_cold_s, producer = _produce(
        lambda: Producer(settings.producer_config()), topics.raw, encoded
    )

    warm_s, _, _ = _run_connector(make_source, lambda: (raw, dead), checkpoints)
    bare_warm_s, _ = _produce(lambda: producer, topics.raw, encoded)
    for publisher in (raw, dead):
        publisher.close()
    checkpoints.close()
    return (Rates(events / cold_s, len(encoded) / bare_cold_s),
            Rates(events / warm_s, len(encoded) / bare_warm_s), events)  # fmt: skip


def main(rows: int = 20_000) -> None:
    """Print events/s of each connector and of the bare producer, and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with EmbeddedBroker(folder / "broker.log") as broker:
            store_url = f"sqlite:///{folder / 'hub.db'}"
            GenealogyStore.connect(store_url).migrate()
            freeze_startup_heap()  # as `lothub connectors run` and `lothub up` do once started
            print(f"connector throughput, {rows} records each, embedded broker, 2 cores")
            print(f"{'':<19} {'cold: fresh producers (the target)':^38}   "
                  f"{'warm: producers already connected':^38}")  # fmt: skip
            head = f"{'connector ev/s':>15} {'bare ev/s':>12} {'ratio':>7}"
            print(f"{'connector':<10} {'events':>8} {head}    {head}")
            for name, build in (("wms-sql", _wms), ("lims-csv", _lims)):
                settings = Settings(
                    kafka_bootstrap=broker.bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}."
                )
                ensure_topics(settings)
                cold, warm, events = _measure(settings, build(folder, rows), store_url)
                print(f"{name:<10} {events:>8} " + "    ".join(
                    f"{r.connector:>15,.0f} {r.bare:>12,.0f} {r.ratio:>6.2f}x" for r in (cold, warm)))  # fmt: skip
