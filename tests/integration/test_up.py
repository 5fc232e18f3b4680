"""`lothub up`: ready only when every part is, and nothing left running after a stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lothub.runtime import free_port
from tests.conftest import wait_for


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_serves_until_stopped_then_leaves_nothing_running(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOTHUB_")}
    env.update({"LOTHUB_DATA_DIR": str(tmp_path / "var"), "LOTHUB_SESSION_TIMEOUT_S": "6"})
    log = tmp_path / "up.log"
    with log.open("w") as out:
        hub = subprocess.Popen(
            [sys.executable, "-m", "lothub", "up", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _listening(port), 60, "the API port", fail_if=lambda: hub.poll() is not None
        )
        assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        wait_for(
            lambda: _ready(url), 90, "/readyz to answer 200", fail_if=lambda: hub.poll() is not None
        )
        checks = httpx.get(f"{url}/readyz", timeout=2).json()["checks"]
        assert checks == {"store": True, "api": True, "broker": True, "worker": True}
        assert (tmp_path / "var" / "logs" / "broker.log").exists(), "the embedded broker ran"
        wait_for(lambda: "lothub is up" in log.read_text(), 30, "the start-up message")
    finally:
        hub.send_signal(stop_signal)
        try:
            hub.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hub.kill()  # never leave a hub behind, even when the test fails
            hub.wait()
            raise
        print(log.read_text()[-3000:])
    assert hub.returncode in (0, 128 + stop_signal)
    assert "Traceback" not in log.read_text()
    assert "LOCAL MODE" in log.read_text(), "an unauthenticated hub says so at start"
    time.sleep(0.5)
    assert not _listening(port), "the API stopped"
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout
    assert leftovers.strip() == "", f"children still running: {leftovers}"
