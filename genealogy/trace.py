"""Backward and forward genealogy over the store's lot links.

Backward walks from a lot to everything it was made from, down to the supplier
receipts; forward walks to everything made from it, out to the customer shipments.
The walk is breadth-first over the links, lots and documents held in memory
(:mod:`genealogy.graph`, which catches up with the store before every trace), bounded in
depth and size, and terminates on rework loops because every lot is visited once. Links
and documents of voided events are left out. An optional event-time window (``start``, ``end``, both inclusive, at most
:data:`MAX_WINDOW`) keeps only the links and documents whose transformation, transfer,
receipt or shipment happened inside it, so the walk goes on only through what happened
then. When the size limit cuts a level short, the lots kept are those first by lot id.

Example::

    >>> result = trace(store, "BRK:26308-01", Direction.BACKWARD)   # doctest: +SKIP
    >>> sorted(d.partner_lot for d in result.documents if d.cte == "RECEIVING")  # doctest: +SKIP
    ['SL-889', ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection, select

from genealogy import tables
from genealogy.graph import TraceDocument, TraceEdge, TraceLot, graph_of
from genealogy.store import GenealogyStore
from schemas.errors import DataError

__all__ = [
    "MAX_DEPTH",
    "MAX_LOTS",
    "MAX_WINDOW",
    "Direction",
    "LotNotFoundError",
    "TraceDocument",
    "TraceEdge",
    "TraceLot",
    "TraceRequestError",
    "TraceResult",
    "check_window",
    "resolve_lot",
    "trace",
]

#: Refuse walks beyond these unless the caller asks for less.
MAX_DEPTH = 100
MAX_LOTS = 50_000
#: The longest event-time window a trace may be limited to.
MAX_WINDOW = timedelta(days=366)


class Direction(StrEnum):
    """Which way to walk the genealogy."""

    BACKWARD = "backward"
    FORWARD = "forward"
    BOTH = "both"


class LotNotFoundError(DataError):
    """No lot, and no alias of a lot, has this id."""

    reason_code = "lot-not-found"


class TraceRequestError(DataError):
    """A trace that cannot be answered as asked (the message says what to change)."""

    reason_code = "invalid-trace"


def check_window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime] | None:
    """The window as UTC bounds, or None for no window.

    Raises :class:`TraceRequestError` for a window open at one end, without a UTC offset,
    running backwards, or longer than :data:`MAX_WINDOW`.
    """
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise TraceRequestError(
            "a time window needs both from and to (an open-ended window is unbounded); "
            "give both, or neither for the whole history"
        )
    if start.tzinfo is None or end.tzinfo is None:
        raise TraceRequestError("from and to need a UTC offset, e.g. 2026-11-02T00:00:00+01:00")
    if end < start:
        raise TraceRequestError(f"to ({end.isoformat()}) is before from ({start.isoformat()})")
    if end - start > MAX_WINDOW:
        raise TraceRequestError(
            f"the time window may span at most {MAX_WINDOW.days} days; narrow from/to"
        )
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TraceResult:
    """Everything one trace reached."""

    root: str
    direction: Direction
    lots: list[TraceLot]
    edges: list[TraceEdge]
    documents: list[TraceDocument]
    truncated: bool
    #: the event-time window the walk was limited to (UTC), if any
    window: tuple[datetime, datetime] | None = None


def resolve_lot(store: GenealogyStore, lot: str) -> str:
    """The enterprise lot id for ``lot`` given as an id or any alias.

    Raises :class:`LotNotFoundError` if nothing matches, and for an alias shared by
    several lots names them all so the caller can pick one.
    """
    if graph_of(store).has_lot(lot):  # lots are never deleted: no query needed
        return lot
    with store.engine.connect() as conn:
        return _resolve(conn, lot)


def _resolve(conn: Connection, lot: str) -> str:
    if conn.execute(select(tables.lots.c.lot_id).where(tables.lots.c.lot_id == lot)).first():
        return lot
    matches = sorted(
        {
            r.lot_id
            for r in conn.execute(
                select(tables.lot_aliases.c.lot_id).where(tables.lot_aliases.c.alias == lot)
            )
        }
    )
    if not matches:
        raise LotNotFoundError(f"no lot has the id or alias {lot!r}")
    if len(matches) > 1:
        raise LotNotFoundError(
            f"alias {lot!r} names several lots: {', '.join(matches)}; use the lot id"
        )
    return str(matches[0])


def trace(
    store: GenealogyStore,
    lot_id: str,
    direction: Direction,
    *,
    max_depth: int = 50,
    max_lots: int = 10_000,
    start: datetime | None = None,
    end: datetime | None = None,
) -> TraceResult:
    """Walk the genealogy from ``lot_id`` (id or alias) in ``direction``.

    ``BOTH`` is the union of the backward and the forward walk (each lot at its
    nearer distance), what a complaint investigation looks at first. ``start`` and
    ``end`` limit it to links and documents of that event-time window
    (:func:`check_window` says which windows are refused).
    """
    window = check_window(start, end)
    if direction is Direction.BOTH:
        return _both(store, lot_id, max_depth=max_depth, max_lots=max_lots, window=window)
    if not 1 <= max_depth <= MAX_DEPTH:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH}")
    if not 1 <= max_lots <= MAX_LOTS:
        raise ValueError(f"max_lots must be between 1 and {MAX_LOTS}")
    graph = graph_of(store)
    graph.refresh(store.engine)
    # a lot id the graph knows needs no query; an alias does
    root = lot_id if graph.has_lot(lot_id) else resolve_lot(store, lot_id)
    walk = graph.walk(
        root, backward=direction is Direction.BACKWARD, max_depth=max_depth,
        max_lots=max_lots, window=window,
    )  # fmt: skip
    return TraceResult(
        root=root,
        direction=direction,
        lots=walk.lots,
        edges=walk.edges,
        documents=walk.documents,
        truncated=walk.truncated,
        window=window,
    )


def _both(
    store: GenealogyStore,
    lot_id: str,
    *,
    max_depth: int,
    max_lots: int,
    window: tuple[datetime, datetime] | None,
) -> TraceResult:
    """The union of the backward and the forward walk, each lot at its nearer distance."""
    start, end = window if window else (None, None)
    back = trace(store, lot_id, Direction.BACKWARD, max_depth=max_depth, max_lots=max_lots,
                 start=start, end=end)  # fmt: skip
    fwd = trace(store, back.root, Direction.FORWARD, max_depth=max_depth, max_lots=max_lots,
                start=start, end=end)  # fmt: skip
    lots = {lot.lot_id: lot for lot in fwd.lots}
    for lot in back.lots:
        if lot.lot_id not in lots or lot.depth < lots[lot.lot_id].depth:
            lots[lot.lot_id] = lot
    edges = {(e.parent_lot, e.child_lot, e.via): e for e in [*back.edges, *fwd.edges]}
    docs = {(d.event_id, d.lot_id): d for d in [*back.documents, *fwd.documents]}
    return TraceResult(
        root=back.root,
        direction=Direction.BOTH,
        lots=sorted(lots.values(), key=lambda x: (x.depth, x.lot_id)),
        edges=sorted(edges.values(), key=lambda e: (e.parent_lot, e.child_lot, e.via)),
        documents=sorted(docs.values(), key=lambda d: (d.occurred_at, d.event_id, d.lot_id)),
        truncated=back.truncated or fwd.truncated,
        window=window,
    )
