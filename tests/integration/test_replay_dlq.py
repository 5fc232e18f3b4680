"""An unmapped status code is parked, never guessed; after the mapping is added, replay stores it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from connectors.publisher import KafkaPublisher
from genealogy.alerts import AlertFilter, get_alert, list_alerts
from genealogy.store import GenealogyStore
from genealogy.trace import Direction, trace
from lothub.replay import replay_dead_letters
from lothub.runtime import ensure_topics
from lothub.settings import Settings, demo_sites_path
from schemas.model import LotStatusChanged
from schemas.serde import make_serde
from tests.conftest import wait_for
from tests.factories import envelope


def test_parked_event_is_replayed_once_the_mapping_exists(
    broker: str,
    tmp_path: Path,
    sqlite_url: str,
    settings_factory: Callable[..., Settings],
    store_factory: Callable[[str], GenealogyStore],
    start_worker: Callable[[Settings], subprocess.Popen[bytes]],
) -> None:
    settings = settings_factory(kafka_bootstrap=broker, database_url=sqlite_url)
    ensure_topics(settings)
    store = store_factory(sqlite_url)
    worker = start_worker(settings)
    hold = LotStatusChanged(
        envelope=envelope("LotStatusChanged", site="BRK",
                          occurred_at=datetime.fromisoformat("2026-11-10T08:00:00-06:00")),
        lot="26313-01", status="BLK", reason_code="FOREIGN-BODY", actor="qa.olson",
    )  # fmt: skip
    KafkaPublisher(settings.producer_config(), make_serde(), settings.topics.raw).publish([hold])
    assert replay_dead_letters(settings, dry_run=True).replayed == 0

    def parked() -> bool:
        return sum(replay_dead_letters(settings, dry_run=True).still_parked.values()) == 1

    wait_for(parked, 60, "the event on the dead-letter topic")
    (reason,) = replay_dead_letters(settings, dry_run=True).still_parked
    assert "status code 'BLK' has no mapping" in reason
    assert store.event_count() == 0, "an unmapped status is never guessed"
    unmapped = AlertFilter(rule="unmapped-value", status="open")
    wait_for(lambda: list_alerts(store, unmapped, limit=5, offset=0)[0] == 1, 60,
             "an unmapped-value alert")  # fmt: skip
    (alert,) = list_alerts(store, unmapped, limit=5, offset=0)[1]
    assert alert["evidence_event_ids"] == [hold.envelope.event_id]
    assert "replay-dlq" in alert["summary"]

    fixed = tmp_path / "sites.toml"
    fixed.write_text(
        demo_sites_path().read_text().replace('EXP = "EXPIRED"', 'EXP = "EXPIRED"\nBLK = "ON_HOLD"')
    )
    worker.terminate()
    worker.wait(timeout=30)
    settings = settings.model_copy(update={"site_config": fixed})
    start_worker(settings)
    report = replay_dead_letters(settings)
    assert report.replayed == 1
    assert not report.still_parked
    wait_for(lambda: store.event_count() == 1, 60, "the replayed event in the store")
    (lot,) = trace(store, "BRK:26313-01", Direction.BACKWARD).lots
    assert lot.status == "ON_HOLD"
    assert get_alert(store, alert["alert_id"])["status"] == "withdrawn", "the event is stored now"
