"""Lot lookups: search by any alias, a lot's card, and its event history.

Example::

    total, page = search_lots(store, "26313", limit=20, offset=0)
    card = lot_card(store, "BRK:26313-01")
    total, events = lot_history(store, "BRK:26313-01", limit=50, offset=0)
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, or_, select

from genealogy import tables
from genealogy.store import GenealogyStore, utc
from genealogy.trace import resolve_lot


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_lots(
    store: GenealogyStore, query: str, *, limit: int, offset: int, site: str | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Lots whose id or any alias starts with ``query`` (case-insensitive); ``site`` limits them."""
    lots, aliases = tables.lots, tables.lot_aliases
    pattern = _escape_like(query.strip().upper()) + "%"
    matched = (
        select(lots.c.lot_id)
        .outerjoin(aliases, aliases.c.lot_id == lots.c.lot_id)
        .where(
            or_(
                func.upper(lots.c.lot_id).like(pattern, escape="\\"),
                func.upper(aliases.c.alias).like(pattern, escape="\\"),
            )
        )
        .where(*([lots.c.site == site] if site is not None else []))
        .distinct()
        .subquery()
    )
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(matched)).scalar_one())
        rows = conn.execute(
            select(lots).where(lots.c.lot_id.in_(select(matched.c.lot_id)))
            .order_by(lots.c.lot_id).limit(limit).offset(offset)
        ).all()  # fmt: skip
        ids = [r.lot_id for r in rows]
        names: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
        for a in conn.execute(
            select(aliases).where(aliases.c.lot_id.in_(ids)).order_by(aliases.c.alias)
        ):
            names[a.lot_id].append({"alias": a.alias, "kind": a.alias_kind})
    return total, [
        {"lot_id": r.lot_id, "site": r.site, "item_code": r.item_code,
         "item_description": r.item_description, "status": r.status, "aliases": names[r.lot_id]}
        for r in rows
    ]  # fmt: skip


def lot_card(store: GenealogyStore, lot: str) -> dict[str, Any]:
    """A lot (by id or alias): its identity, aliases, current status and status history."""
    lot_id = resolve_lot(store, lot)
    with store.engine.connect() as conn:
        row = conn.execute(select(tables.lots).where(tables.lots.c.lot_id == lot_id)).one()
        aliases = conn.execute(
            select(tables.lot_aliases).where(tables.lot_aliases.c.lot_id == lot_id)
        ).all()
        history = conn.execute(
            select(tables.status_history).where(tables.status_history.c.lot_id == lot_id)
            .order_by(tables.status_history.c.occurred_at)
        ).all()  # fmt: skip
    return {
        "lot_id": row.lot_id, "site": row.site, "item_code": row.item_code,
        "item_description": row.item_description, "status": row.status,
        "status_at": utc(row.status_at).isoformat() if row.status_at else None,
        "aliases": [{"alias": a.alias, "kind": a.alias_kind} for a in aliases],
        "status_history": [
            {"status": h.status, "reason_code": h.reason_code, "actor": h.actor,
             "occurred_at": utc(h.occurred_at).isoformat(), "recorded_at": utc(h.recorded_at).isoformat(),
             "event_id": h.event_id}
            for h in history
        ],
    }  # fmt: skip


def lot_history(
    store: GenealogyStore, lot: str, *, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """The events naming a lot, oldest first, as stored (with ``voided_by`` if corrected)."""
    lot_id = resolve_lot(store, lot)
    le, ev = tables.lot_events, tables.events
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).where(le.c.lot_id == lot_id)).scalar_one())
        rows = conn.execute(
            select(ev.c.event_id, ev.c.event_type, ev.c.site, ev.c.system_kind, ev.c.system_instance,
                   ev.c.occurred_at, ev.c.voided_by, ev.c.payload)
            .join(le, le.c.event_id == ev.c.event_id)
            .where(le.c.lot_id == lot_id)
            .order_by(le.c.occurred_at, ev.c.event_id).limit(limit).offset(offset)
        ).all()  # fmt: skip
    return total, [
        {"event_id": r.event_id, "event_type": r.event_type, "site": r.site,
         "system": f"{r.system_kind}/{r.system_instance}", "occurred_at": utc(r.occurred_at).isoformat(),
         "voided_by": r.voided_by, "event": json.loads(r.payload)}
        for r in rows
    ]  # fmt: skip
