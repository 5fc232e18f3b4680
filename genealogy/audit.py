"""Audit trail in the spirit of 21 CFR Part 11: append-only, attributable, hash-chained.

Every recall, export and status-affecting action is recorded with who did it, when,
and what it meant. Each record carries the SHA-256 of its own content and of the
record before it, so editing or deleting any record breaks the chain, and
:func:`verify` (``lothub audit verify``) names the first record where it breaks.
Deleting records from the end cannot be seen from the chain alone: keep the head
hash ``verify`` prints and pass it back with ``--expect-head`` next time.

Example::

    append(store, user="qa.brunner", role="ENTERPRISE_QUALITY", site=None,
           action="recall.create", meaning="mock recall of supplier lot AD-5531",
           target="recall/1b2c...")
    result = verify(store)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text

from genealogy import tables
from genealogy.store import GenealogyStore, utc

GENESIS = "0" * 64


def _digest(prev_hash: str, row: dict[str, Any]) -> str:
    body = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _content(r: Any) -> dict[str, Any]:
    return {"seq": r.seq, "at": utc(r.at).isoformat(), "user": r.user_name, "role": r.role,
            "site": r.site, "action": r.action, "meaning": r.meaning, "target": r.target,
            "details": r.details}  # fmt: skip


def append(store: GenealogyStore, *, user: str, role: str, site: str | None, action: str,
           meaning: str, target: str, details: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Record one action; returns the new record's hash."""
    log = tables.audit_log
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # one writer at a time keeps the chain linear
            conn.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
        last = conn.execute(
            select(log.c.seq, log.c.hash).order_by(log.c.seq.desc()).limit(1)
        ).first()
        seq = 1 if last is None else last.seq + 1
        prev = GENESIS if last is None else last.hash
        row = {"seq": seq, "at": datetime.now(UTC).replace(microsecond=0), "user_name": user,
               "role": role, "site": site, "action": action, "meaning": meaning, "target": target,
               "details": json.dumps(details or {}, sort_keys=True)}  # fmt: skip
        digest = _digest(prev, _content(_Row(row)))
        conn.execute(log.insert().values(**row, prev_hash=prev, hash=digest))
    return digest


class _Row:
    """Attribute access over a dict, so new and stored records hash the same way."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify`."""

    records: int
    head: str
    problems: list[str]

    @property
    def intact(self) -> bool:
        """True when no record was edited, deleted or re-ordered."""
        return not self.problems


def verify(store: GenealogyStore, *, expect_head: str | None = None) -> Verification:
    """Recompute the chain from the first record; report every break."""
    log = tables.audit_log
    problems: list[str] = []
    prev, expected_seq, count = GENESIS, 1, 0
    with store.engine.connect() as conn:
        for r in conn.execute(select(log).order_by(log.c.seq)):
            count += 1
            if r.seq != expected_seq:
                problems.append(f"record {expected_seq} to {r.seq - 1} missing (deleted)")
            if r.prev_hash != prev:
                problems.append(f"record {r.seq} does not follow the record before it")
            if _digest(r.prev_hash, _content(r)) != r.hash:
                problems.append(f"record {r.seq} was altered after it was written")
            prev, expected_seq = r.hash, r.seq + 1
    if expect_head is not None and prev != expect_head:
        problems.append(
            f"the chain ends at {prev[:12]}…, expected {expect_head[:12]}… (records removed from the end?)"
        )
    return Verification(records=count, head=prev, problems=problems)


def entries(store: GenealogyStore, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """Audit records, newest first."""
    log = tables.audit_log
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(log)).scalar_one())
        rows = conn.execute(
            select(log).order_by(log.c.seq.desc()).limit(limit).offset(offset)
        ).all()
    return total, [_content(r) | {"details": json.loads(r.details), "hash": r.hash} for r in rows]
