"""A connector killed with SIGKILL mid-run loses nothing, and the hub stores nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from connectors.checkpoints import CheckpointStore
from connectors.simulator import warehouse_moves
from connectors.wms_sql import create_transactions
from genealogy.store import GenealogyStore
from lothub.settings import Settings, demo_sites_path
from schemas.model import stable_event_id
from schemas.serde import make_serde
from schemas.sites import load_sites
from tests.conftest import wait_for, worker_env
from tests.helpers import normalized, read_topic

ROWS = 10_000


def test_kill_9_mid_batch_then_restart(
    connector_wiring: tuple[Settings, CheckpointStore],
    tmp_path: Path,
    store_factory: Callable[[str], GenealogyStore],
) -> None:
    settings, checkpoints = connector_wiring
    wms_url = f"sqlite:///{tmp_path / 'wms.db'}"
    create_transactions(wms_url, warehouse_moves(ROWS))
    sites_file = tmp_path / "sites.toml"
    sites_file.write_text(demo_sites_path().read_text() + (
        # ten batches in flight at most, so the first checkpoint comes long before the end
        '\n[connectors.wms-crash]\nkind = "wms-sql"\nsite = "BRK"\nbatch_size = 50\n'
        'max_in_flight_events = 500\npoll_interval_s = 0.2\n'
        '[connectors.wms-crash.settings]\nurl_env = "TEST_CRASH_WMS_URL"\n'
    ))  # fmt: skip
    env = worker_env(settings.model_copy(update={"site_config": sites_file}))
    env["TEST_CRASH_WMS_URL"] = wms_url

    def run(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "lothub", "connectors", "run", "wms-crash", *extra],
                                env=env, cwd=tmp_path)  # fmt: skip

    def checkpoint_pk() -> int:
        text = checkpoints.load("wms-crash")
        return int(json.loads(text)["pk"]) if text else 0

    first = run()
    wait_for(lambda: checkpoint_pk() > 0, 120, "the first checkpoint", poll_s=0.01,
             fail_if=lambda: first.poll() is not None)  # fmt: skip
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = checkpoint_pk()
    assert killed_at < ROWS, "killed mid-run"

    second = run("--once")
    assert second.wait(timeout=180) == 0
    assert checkpoint_pk() == ROWS

    serde = make_serde()
    events = [serde.decode(m.value(), topic="raw", partition=0, offset=0)
              for m in read_topic(settings, settings.topics.raw, timeout_s=60)]  # fmt: skip
    ids = {e.envelope.event_id for e in events}
    assert ids == {stable_event_id("wms-crash", "txn", str(i)) for i in range(1, ROWS + 1)}, (
        "none missing"
    )
    numbers = sorted({(e.envelope.sequence, e.envelope.event_id) for e in events})
    assert [n for n, _ in numbers] == list(range(1, ROWS + 1)), (
        "numbered 1..N across the crash, a re-sent event with the number it had"
    )
    assert checkpoints.load_sequence("wms-crash") == ROWS + 1
    store = store_factory(f"sqlite:///{tmp_path / 'hub-copy.db'}")
    sites = load_sites(sites_file)
    result = store.apply(normalized(events, sites))
    assert store.event_count() == ROWS, f"{len(events) - ROWS} re-sent events stored once each"
    assert result.conflicts == 0, "a re-sent event is byte-identical to the first sending"
