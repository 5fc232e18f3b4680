"""Connector throughput end to end to the broker, against a bare producer in the same run.

For each connector (WMS over SQL, LIMS over CSV files) the benchmark
1. lets the connector read N records, map, encode, publish and checkpoint them into
   the embedded broker (``Connector.run(until_idle=True)``), and
2. produces the very same events, encoded beforehand, with a bare confluent-kafka
   ``Producer.produce()`` loop and one flush (the baseline).
It prints events/s of both and their ratio (target: >= 0.5x for SQL and file sources).
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable
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


def _measure(
    settings: Settings, make_source: Callable[[], Source[Any]], store_url: str
) -> tuple[float, float, int]:
    serde = make_serde()
    topics = settings.topics
    checkpoints = CheckpointStore.connect(store_url)
    connector = Connector(make_source(), KafkaPublisher(settings.producer_config(), serde, topics.raw),
                          KafkaPublisher(settings.producer_config(), serde, topics.connector_dlq),
                          checkpoints, batch_size=500)  # fmt: skip
    began = time.perf_counter()
    connector.run(threading.Event(), until_idle=True)
    connector_s = time.perf_counter() - began
    events = connector.status.events_published

    # Baseline: the same events, encoded before the clock starts.
    source = make_source()
    encoded: list[tuple[bytes, bytes]] = []
    after = None
    while batch := source.read(after, 5000):
        for record in batch:
            mapped: list[LotEventBase] = source.to_events(record)
            encoded += [(e.lots()[0].encode(), serde.encode(e)) for e in mapped]
        after = batch[-1].position
    producer = Producer(settings.producer_config())
    began = time.perf_counter()
    for key, value in encoded:
        while True:
            try:
                producer.produce(topics.raw, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    bare_s = time.perf_counter() - began
    checkpoints.close()
    return events / connector_s, len(encoded) / bare_s, events


def main(rows: int = 20_000) -> None:
    """Print events/s of each connector and of the bare producer, and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with EmbeddedBroker(folder / "broker.log") as broker:
            store_url = f"sqlite:///{folder / 'hub.db'}"
            GenealogyStore.connect(store_url).migrate()
            print(f"connector throughput, {rows} records each, embedded broker, 2 cores")
            print(
                f"{'connector':<10} {'events':>8} {'connector ev/s':>15} {'bare ev/s':>10} {'ratio':>6}"
            )
            for name, build in (("wms-sql", _wms), ("lims-csv", _lims)):
                settings = Settings(
                    kafka_bootstrap=broker.bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}."
                )
                ensure_topics(settings)
                ours, bare, events = _measure(settings, build(folder, rows), store_url)
                print(f"{name:<10} {events:>8} {ours:>15,.0f} {bare:>10,.0f} {ours / bare:>6.2f}x")
