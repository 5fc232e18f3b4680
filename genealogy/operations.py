"""Operations read-outs: connector health from the hub database, and store counts.

The ``connector_checkpoints`` table belongs to the connectors (``connectors/checkpoints.py``
writes a position and a status JSON per connector); this module only reads it, through a
lightweight table clause, so the genealogy package needs nothing from ``connectors/``.

Example::

    for c in connector_health(store):
        print(c["connector"], c["health"], c["last_success"], c["last_error"])
    print(lot_counts(store, site="BRK"))
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import column, func, select, table

from genealogy import tables
from genealogy.store import GenealogyStore, utc

_checkpoints = table(
    "connector_checkpoints",
    column("connector"),
    column("position"),
    column("updated_at"),
    column("status"),
)

#: what a connector's health says, worst first
HEALTH_ORDER = ("error", "waiting", "ok")


def _health(status: dict[str, Any]) -> str:
    """``error`` while faults repeat, ``waiting`` before any success, ``ok`` otherwise."""
    if int(status.get("consecutive_errors") or 0) > 0:
        return "error"
    if not status.get("last_success"):
        return "waiting"
    return "ok"


def connector_health(store: GenealogyStore, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every connector that stored a checkpoint or a status: where it is and how it fares.

    ``seconds_since_success`` is measured against ``now`` (default: the current time);
    ``lag_s`` is how far behind its source the connector was at its last batch, when the
    connector reports it. Worst health first, then by site and name.
    """
    now = now or datetime.now(UTC)
    with store.engine.connect() as conn:
        rows = conn.execute(select(_checkpoints)).all()
    out = []
    for r in rows:
        try:
            status: dict[str, Any] = json.loads(r.status) if r.status else {}
        except ValueError:
            status = {"last_error": "status unreadable (not JSON)"}
        last = status.get("last_success")
        since = (now - datetime.fromisoformat(last)).total_seconds() if last else None
        updated = utc(r.updated_at) if isinstance(r.updated_at, datetime) else None
        out.append({
            "connector": r.connector, "site": status.get("site"), "system": status.get("system"),
            "health": _health(status), "position": r.position,
            "updated_at": updated.isoformat() if updated else None, "last_success": last,
            "seconds_since_success": None if since is None else round(max(since, 0.0), 1),
            "lag_s": status.get("lag_s"), "records_read": status.get("records_read", 0),
            "events_published": status.get("events_published", 0),
            "dead_lettered": status.get("dead_lettered", 0),
            "consecutive_errors": status.get("consecutive_errors", 0),
            "last_error": status.get("last_error"),
        })  # fmt: skip
    out.sort(key=lambda c: (HEALTH_ORDER.index(c["health"]), c["site"] or "", c["connector"]))
    return out


def lot_counts(store: GenealogyStore, site: str | None = None) -> dict[str, Any]:
    """How many lots the store holds, by site and by status (``site`` limits them)."""
    lots = tables.lots
    where = [lots.c.site == site] if site is not None else []
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(lots.c.site, lots.c.status, func.count()).where(*where)
            .group_by(lots.c.site, lots.c.status)
        ).all()  # fmt: skip
    by_site: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for row_site, status, count in rows:
        by_site[row_site] = by_site.get(row_site, 0) + int(count)
        key = status or "UNKNOWN"
        by_status[key] = by_status.get(key, 0) + int(count)
    return {"lots": sum(by_site.values()), "by_site": by_site, "by_status": by_status}
