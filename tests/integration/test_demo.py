"""`lothub demo --check`, as `make demo ARGS=--check` runs it: the whole embedded stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_check(tmp_path: Path) -> str:
    """Run the demo's check in ``tmp_path`` (its data dir ``var``); its output, once it passed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOTHUB_")}
    env.update({"LOTHUB_DATA_DIR": str(tmp_path / "var"), "LOTHUB_SESSION_TIMEOUT_S": "6"})
    done = subprocess.run(
        [sys.executable, "-m", "lothub", "demo", "--check", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=420,
    )
    print(done.stdout[-3000:], done.stderr[-3000:])
    summary = [line for line in done.stdout.splitlines() if line.startswith("demo check:")]
    assert done.returncode == 0
    assert len(summary) == 1
    assert "PASS" in summary[0]
    assert "16/16 traces right" in summary[0]
    assert "4 MES messages, 1 reconciliation mismatch(es) handled" in summary[0]
    assert re.search(r"web UI on http://127\.0\.0\.1:\d+/ui/", done.stdout)
    return done.stdout


# a fresh clone builds ALP's Tryton database first (about a minute on two busy cores)
@pytest.mark.timeout(900)
def test_demo_check_passes_on_the_embedded_stack(tmp_path: Path) -> None:
    first = run_check(tmp_path)
    assert re.search(
        r"ALP's ERP is a live Tryton at http://127\.0\.0\.1:\d+/ \(database 'alpenwerk', built in",
        first,
    )
    assert (tmp_path / "var" / "lothub.db").exists(), "the embedded default store is a SQLite file"
    # the second demo serves the cached database
    second = run_check(tmp_path)
    assert re.search(r"ALP's ERP is a live Tryton at \S+ \(database 'alpenwerk', cached;", second)
