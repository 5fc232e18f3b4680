"""Push connectors under faults: killed mid-folder, and the broker down then back.

Real Tansu brokers, a real hub database, the real `lothub connectors run` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors.b2mml import B2mmlMapping, map_message
from connectors.checkpoints import CheckpointStore
from connectors.intake import IntakeSink
from connectors.publisher import KafkaPublisher
from connectors.registry import build_intake
from connectors.simulator import b2mml_performance
from genealogy.store import GenealogyStore
from lothub.runtime import EmbeddedBroker, ensure_topics, free_port
from lothub.settings import Settings, demo_sites_path
from schemas.model import Item, SystemKind
from schemas.serde import make_serde
from schemas.sites import SitesConfig, load_sites
from tests.conftest import wait_for, worker_env
from tests.helpers import normalized, read_topic

pytestmark = pytest.mark.integration

FILES = 60
MILK = Item(item_code="MP-100", description="Skimmed milk powder")
BASE = Item(item_code="CD-900", description="Cocoa drink base")


def batch_message(n: int) -> bytes:
    """Process order ``n``: two lots in, one out (ALP codes and units)."""
    start = datetime(2026, 11, 3, 6, 0) + timedelta(minutes=10 * n)
    return b2mml_performance(
        order=f"PX-{n:04d}", site="ALP", equipment="ALP-MIX2",
        consumed=[(f"ALP-20261102-{n % 900 + 100:03d}", MILK, "40", "kg"),
                  ("ALP-20261102-001", MILK, f"{n}.5", "kg")],
        produced=[(f"ALP-20261103-{n % 900 + 100:03d}", BASE, "80", "kg")],
        start=start, end=start + timedelta(minutes=5),
    )  # fmt: skip


def sites_file(tmp_path: Path, drop: Path, name: str) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(demo_sites_path().read_text() + (
        f'\n[connectors.{name}]\nkind = "b2mml"\nsite = "ALP"\npoll_interval_s = 0.1\n'
        f'[connectors.{name}.settings]\nfolder = "{drop.as_posix()}"\nhttp = false\n'
    ))  # fmt: skip
    return path


def expected_ids(messages: list[bytes], name: str, sites: SitesConfig) -> set[str]:
    mapping = B2mmlMapping(system_instance=name, site_code="ALP")
    return {
        e.envelope.event_id
        for xml in messages
        for e in map_message(xml, mapping, sites.sites["ALP"])
    }


def test_kill_9_mid_folder_then_restart(
    connector_wiring: tuple[Settings, CheckpointStore],
    tmp_path: Path,
    store_factory: Callable[[str], GenealogyStore],
) -> None:
    settings, _ = connector_wiring
    drop = tmp_path / "drop"
    drop.mkdir()
    messages = [batch_message(n) for n in range(FILES)]
    for n, xml in enumerate(messages):
        (drop / f"perf-{n:04d}.xml").write_bytes(xml)
    config = sites_file(tmp_path, drop, "mes-crash")
    env = worker_env(settings.model_copy(update={"site_config": config}))

    def run(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "lothub", "connectors", "run", "mes-crash", *extra],
                                env=env, cwd=tmp_path)  # fmt: skip

    def processed() -> int:
        folder = drop / "processed"
        return len(list(folder.glob("*.xml"))) if folder.exists() else 0

    first = run()
    wait_for(lambda: processed() >= 5, 120, "the watcher to process 5 files", poll_s=0.01,
             fail_if=lambda: first.poll() is not None)  # fmt: skip
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert processed() < FILES, "killed mid-folder"

    second = run("--once")
    assert second.wait(timeout=180) == 0
    assert processed() == FILES
    assert not list((drop / "failed").glob("*")), "nothing was rejected"

    serde = make_serde()
    events = [serde.decode(m.value(), topic="raw", partition=m.partition(), offset=m.offset())
              for m in read_topic(settings, settings.topics.raw, timeout_s=30)]  # fmt: skip
    sites = load_sites(config)
    wanted = expected_ids(messages, "mes-crash", sites)
    assert {e.envelope.event_id for e in events} == wanted, "none missing, none invented"
    store = store_factory(f"sqlite:///{tmp_path / 'hub-copy.db'}")
    store.apply(normalized(events, sites))
    assert store.event_count() == len(wanted), (
        f"{len(events) - len(wanted)} re-sent events stored once each"
    )


def test_broker_down_then_back_nothing_lost(
    settings_factory: Callable[..., Settings],
    sqlite_url: str,
    store_factory: Callable[[str], GenealogyStore],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = settings_factory(kafka_bootstrap=f"127.0.0.1:{port}", database_url=sqlite_url)
    store_factory(sqlite_url)  # the checkpoint/status table
    drop = tmp_path / "drop"
    drop.mkdir()
    sites = load_sites(sites_file(tmp_path, drop, "mes-down"))
    serde = make_serde()
    checkpoints = CheckpointStore.connect(sqlite_url)
    sink = IntakeSink(
        name="mes-down", site="ALP", system=SystemKind.MES,
        publisher=KafkaPublisher(settings.producer_config(), serde, settings.topics.raw),
        dead_letters=KafkaPublisher(settings.producer_config(), serde, settings.topics.connector_dlq),
        checkpoints=checkpoints, flush_timeout_s=1.0,
    )  # fmt: skip
    intake = build_intake("mes-down", sites, sink)
    assert intake.watch is not None
    # the same connector's HTTP side, for the sender's view of the outage
    http = build_intake(
        "mes-down", sites.model_copy(update={"connectors": {
            "mes-down": sites.connectors["mes-down"].model_copy(update={"settings": {"http": True}})}}),
        sink,
    )  # fmt: skip
    assert http.app is not None
    stop = threading.Event()
    watcher = threading.Thread(target=intake.watch, args=(stop,), daemon=True)
    dropped, posted = batch_message(1), batch_message(2)
    (drop / "perf-1.xml").write_bytes(dropped)
    watcher.start()
    try:
        wait_for(lambda: sink.status.consecutive_errors >= 2, 30, "the outage to be reported")
        assert "acknowledged" in (sink.status.last_error or ""), "the broker outage is named"
        assert (drop / "perf-1.xml").exists(), "the file waits in the folder"
        with TestClient(http.app) as client:
            down = client.post(
                "/b2mml", content=posted, headers={"content-type": "application/xml"}
            )
            assert down.status_code == 503
            assert down.headers["retry-after"] == "30"

            with EmbeddedBroker(tmp_path / "broker.log", port=port):
                ensure_topics(settings)
                wait_for(lambda: (drop / "processed" / "perf-1.xml").exists(), 60,
                         "the file to go through once the broker is back")  # fmt: skip
                again = client.post(
                    "/b2mml", content=posted, headers={"content-type": "application/xml"}
                )
                assert again.status_code == 202, again.text
                events = [
                    serde.decode(m.value(), topic="raw", partition=m.partition(), offset=m.offset())
                    for m in read_topic(settings, settings.topics.raw, timeout_s=10)
                ]
                stop.set()
                watcher.join(timeout=10)
                sink.close()
    finally:
        stop.set()
    assert {e.envelope.event_id for e in events} == expected_ids(
        [dropped, posted], "mes-down", sites
    )
    assert sink.status.consecutive_errors == 0, "the status recovers"


def test_a_missing_drop_folder_is_reported_then_picked_up(
    connector_wiring: tuple[Settings, CheckpointStore], tmp_path: Path
) -> None:
    settings, checkpoints = connector_wiring
    drop = tmp_path / "share" / "drop"  # a network share that is not mounted yet
    sites = load_sites(sites_file(tmp_path, drop, "mes-share"))
    serde = make_serde()
    sink = IntakeSink(
        name="mes-share", site="ALP", system=SystemKind.MES,
        publisher=KafkaPublisher(settings.producer_config(), serde, settings.topics.raw),
        dead_letters=KafkaPublisher(settings.producer_config(), serde, settings.topics.connector_dlq),
        checkpoints=CheckpointStore.connect(settings.store_url),
    )  # fmt: skip
    intake = build_intake("mes-share", sites, sink)
    assert intake.watch is not None
    stop = threading.Event()
    watcher = threading.Thread(target=intake.watch, args=(stop,), daemon=True)
    watcher.start()
    try:

        def stored_error() -> str | None:
            status = checkpoints.statuses().get("mes-share", (None, None))[1]
            return json.loads(status)["last_error"] if status else None

        # what `lothub connectors status` shows
        wait_for(lambda: stored_error() is not None, 20, "the missing folder to be reported")
        assert "does not exist" in (stored_error() or "")
        assert not drop.exists(), "the connector never creates the share itself"
        drop.mkdir(parents=True)
        message = batch_message(7)
        (drop / "perf-7.xml").write_bytes(message)
        wait_for(
            lambda: (drop / "processed" / "perf-7.xml").exists(), 30, "the file after the outage"
        )
    finally:
        stop.set()
        watcher.join(timeout=10)
        sink.close()
    events = [
        serde.decode(m.value(), topic="raw", partition=m.partition(), offset=m.offset())
        for m in read_topic(settings, settings.topics.raw, timeout_s=10)
    ]
    assert {e.envelope.event_id for e in events} == expected_ids([message], "mes-share", sites)
    assert sink.status.consecutive_errors == 0
