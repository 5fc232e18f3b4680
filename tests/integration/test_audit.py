"""The audit trail is append-only in effect: editing or deleting any record is detected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from genealogy import tables
from genealogy.audit import append, verify
from genealogy.store import GenealogyStore
from lothub.cli import main


@pytest.fixture
def trail(store_url: str, store_factory: Callable[[str], GenealogyStore]) -> GenealogyStore:
    store = store_factory(store_url)
    for n in range(1, 6):
        append(store, user="qa.brunner", role="ENTERPRISE_QUALITY", site=None, action="recall.create",
               meaning=f"mock recall {n}", target=f"recall/{n}", details={"lots": n})  # fmt: skip
    return store


def test_an_untouched_trail_verifies(trail: GenealogyStore) -> None:
    result = verify(trail)
    assert (result.records, result.intact) == (5, True)


@pytest.mark.parametrize(
    "column", ["meaning", "user_name", "at", "details", "target", "action", "role"]
)
def test_editing_any_field_of_any_record_is_detected(trail: GenealogyStore, column: str) -> None:
    log = tables.audit_log
    with trail.engine.begin() as conn:
        row = conn.execute(log.select().where(log.c.seq == 3)).one()
        value = {"at": row.at + timedelta(days=1), "details": '{"lots": 99}'}.get(
            column, "someone else"
        )
        conn.execute(update(log).where(log.c.seq == 3).values({column: value}))
    result = verify(trail)
    assert not result.intact
    assert result.problems == ["record 3 was altered after it was written"]


def test_deleting_a_record_is_detected(trail: GenealogyStore) -> None:
    with trail.engine.begin() as conn:
        conn.execute(delete(tables.audit_log).where(tables.audit_log.c.seq == 2))
    problems = verify(trail).problems
    assert "record 2 to 2 missing (deleted)" in problems


def test_deleting_the_last_record_is_detected_against_the_known_head(trail: GenealogyStore) -> None:
    head = verify(trail).head
    with trail.engine.begin() as conn:
        conn.execute(delete(tables.audit_log).where(tables.audit_log.c.seq == 5))
    assert verify(trail).intact, "a truncated chain is self-consistent..."
    assert not verify(trail, expect_head=head).intact, "...but not against the head seen before"


def test_cli_verify_exits_non_zero_on_tampering(
    trail: GenealogyStore,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOTHUB_DATABASE_URL", store_url)
    assert main(["audit", "verify"]) == 0
    with trail.engine.begin() as conn:
        conn.execute(
            update(tables.audit_log).where(tables.audit_log.c.seq == 1).values(meaning="nothing")
        )
    assert main(["audit", "verify"]) == 1
    assert "TAMPERED: record 1 was altered" in capsys.readouterr().out


def test_recalls_and_exports_are_audited(trail: GenealogyStore) -> None:
    from fastapi.testclient import TestClient

    from trace_api.app import create_app

    with TestClient(create_app(trail)) as client:
        client.get(
            "/api/v1/exports/fsma204",
            params={"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
        )
        entries = client.get("/api/v1/audit").json()
    assert entries["items"][0]["action"] == "export.fsma204"
    assert entries["items"][0]["user"] == "local"
    assert verify(trail).intact
