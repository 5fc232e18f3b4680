"""LIMS connectors (CSV exports and the JSON endpoint) under faults, as WMS and B2MML are.

Broker down: nothing advanced, nothing lost, delivered once it is back. Killed with
SIGKILL mid-run: after a restart no event is missing and the hub stores each once.
The JSON endpoint is a small HTTP server on loopback with the vendor's paging contract
(a vendor LIMS cannot run here); everything else is real: Tansu, the hub database, the
``lothub connectors run`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from connectors.base import Connector
from connectors.checkpoints import CheckpointStore
from connectors.publisher import KafkaPublisher
from connectors.registry import build_source
from genealogy.store import GenealogyStore
from lothub.runtime import EmbeddedBroker, ensure_topics, free_port
from lothub.settings import Settings, demo_sites_path
from schemas.serde import make_serde
from schemas.sites import load_sites
from tests.conftest import wait_for, worker_env
from tests.helpers import normalized, read_topic

pytestmark = pytest.mark.integration

ROWS = 3_000
T0 = datetime(2026, 11, 2, 6, 0)


def result(i: int) -> dict[str, Any]:
    """LIMS result ``i``: three per minute, so timestamps repeat across pages."""
    at = T0 + timedelta(seconds=20 * (i // 3))
    return {"id": i, "updated_at": at.isoformat(), "sample_id": f"S-{i // 4}",
            "lot": f"ALP-20261102-{i % 900 + 100:03d}", "test": f"T{i % 4}",
            "result": f"{i % 7}.{i % 10}", "passed": "PASS" if i % 11 else "FAIL",
            "tested_at": at.isoformat()}  # plant local time  # fmt: skip


class LimsEndpoint:
    """``GET /api/results?limit&updated_after&after_id``: rows strictly after the cursor."""

    def __init__(self, rows: int) -> None:
        self.rows = [result(i) for i in range(1, rows + 1)]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(inner) -> None:  # noqa: N805 - the handler's self; the endpoint is outer
                query = parse_qs(urlparse(inner.path).query)
                after_at = query.get("updated_after", [None])[0]
                after_id = int(query.get("after_id", ["0"])[0])
                limit = int(query["limit"][0])
                page = [r for r in self.rows if after_at is None
                        or (r["updated_at"], r["id"]) > (after_at, after_id)][:limit]  # fmt: skip
                data = json.dumps(page).encode()
                inner.send_response(200)
                inner.send_header("Content-Type", "application/json")
                inner.send_header("Content-Length", str(len(data)))
                inner.end_headers()
                inner.wfile.write(data)

            def log_message(inner, *args: Any) -> None:  # noqa: N805
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/results"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lims(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A site configuration with a LIMS connector of ``kind`` over ROWS results."""
    endpoint = LimsEndpoint(ROWS)
    exports = tmp_path / "exports"
    exports.mkdir()
    header = "id;updated_at;sample_id;lot;test;result;passed;tested_at\n"
    fields = ["id", "updated_at", "sample_id", "lot", "test", "result", "passed", "tested_at"]
    for day in range(3):  # three daily export files
        chunk = endpoint.rows[day * ROWS // 3 : (day + 1) * ROWS // 3]
        lines = "".join(";".join(str(r[f]) for f in fields) + "\n" for r in chunk)
        (exports / f"results-{day}.csv").write_text(header + lines, encoding="utf-8")

    def config(kind: str) -> Path:
        path = tmp_path / f"sites-{kind}.toml"
        settings = (f'folder = "{exports.as_posix()}"\ndelimiter = ";"' if kind == "lims-csv"
                    else f'url = "{endpoint.url}"')  # fmt: skip
        # a few batches in flight at most, so the first checkpoint comes long before the end
        path.write_text(demo_sites_path().read_text() + (
            f'\n[connectors.lab]\nkind = "{kind}"\nsite = "ALP"\nbatch_size = 100\n'
            'max_in_flight_events = 300\n'
            f'poll_interval_s = 0.2\n[connectors.lab.settings]\n{settings}\n'
            'date_format = "%Y-%m-%dT%H:%M:%S"\n'
            'fields = { sample_id = "sample_id", lot = "lot", test = "test", result = "result", '
            'passed = "passed", tested_at = "tested_at" }\n'
        ))  # fmt: skip
        return path

    yield config
    endpoint.close()


def every_event_id(config: Path) -> set[str]:
    """What the source yields, read through the connector's own mapping."""
    source = build_source("lab", load_sites(config))
    ids: set[str] = set()
    try:
        after = None
        while records := source.read(after, 500):
            for record in records:
                ids |= {e.envelope.event_id for e in source.to_events(record)}
            after = records[-1].position
    finally:
        source.close()
    return ids


@pytest.mark.parametrize("kind", ["lims-csv", "lims-rest"])
def test_killed_mid_run_then_restarted(
    kind: str,
    lims: Callable[[str], Path],
    connector_wiring: tuple[Settings, CheckpointStore],
    tmp_path: Path,
    store_factory: Callable[[str], GenealogyStore],
) -> None:
    settings, checkpoints = connector_wiring
    config = lims(kind)
    env = worker_env(settings.model_copy(update={"site_config": config}))

    def run(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "lothub", "connectors", "run", "lab", *extra],
                                env=env, cwd=tmp_path)  # fmt: skip

    first = run()
    wait_for(lambda: checkpoints.load("lab") is not None, 120, "a first checkpoint", poll_s=0.01,
             fail_if=lambda: first.poll() is not None)  # fmt: skip
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = run("--once")
    assert second.wait(timeout=180) == 0

    serde = make_serde()
    events = [serde.decode(m.value(), topic="raw", partition=m.partition(), offset=m.offset())
              for m in read_topic(settings, settings.topics.raw, timeout_s=30)]  # fmt: skip
    wanted = every_event_id(config)
    assert {e.envelope.event_id for e in events} == wanted, "none missing, none invented"
    sites = load_sites(config)
    store = store_factory(f"sqlite:///{tmp_path / 'hub-copy.db'}")
    store.apply(normalized(events, sites))
    assert store.event_count() == len(wanted), "re-sent events are stored once"


@pytest.mark.parametrize("kind", ["lims-csv", "lims-rest"])
def test_broker_down_advances_nothing_and_loses_nothing(
    kind: str,
    lims: Callable[[str], Path],
    settings_factory: Callable[..., Settings],
    sqlite_url: str,
    store_factory: Callable[[str], GenealogyStore],
    tmp_path: Path,
) -> None:
    port = free_port()
    config = lims(kind)
    settings = settings_factory(kafka_bootstrap=f"127.0.0.1:{port}", database_url=sqlite_url,
                                site_config=config)  # fmt: skip
    store_factory(sqlite_url)
    checkpoints = CheckpointStore.connect(sqlite_url)
    serde = make_serde()
    connector = Connector(
        build_source("lab", settings.sites()),
        KafkaPublisher({**settings.producer_config(), "message.timeout.ms": 2000}, serde,
                       settings.topics.raw),
        KafkaPublisher(settings.producer_config(), serde, settings.topics.connector_dlq),
        checkpoints, batch_size=200, poll_interval_s=0.2, max_backoff_s=1.0,
    )  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=connector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: connector.status.consecutive_errors >= 2, 60, "the outage to be reported")
        assert checkpoints.load("lab") is None, "nothing advanced while the broker is down"
        with EmbeddedBroker(tmp_path / "broker.log", port=port):
            ensure_topics(settings)
            wait_for(lambda: connector.status.events_published >= len(every_event_id(config)),
                     120, "everything delivered after the outage")  # fmt: skip
            events = [serde.decode(m.value(), topic="raw", partition=m.partition(), offset=m.offset())
                      for m in read_topic(settings, settings.topics.raw, timeout_s=15)]  # fmt: skip
            stop.set()
            thread.join(timeout=30)
    finally:
        stop.set()
        checkpoints.close()
    assert {e.envelope.event_id for e in events} == every_event_id(config)
    assert connector.status.consecutive_errors == 0
