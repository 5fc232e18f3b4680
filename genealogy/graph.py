"""The store's lot links held in memory, per process, and kept fresh from the store clock.

A trace walks this graph instead of querying the database level by level: the links
are loaded once, then only the links stored since are read. Lot links are append-only
(a link is never updated or deleted); what changes is whether a link is live, when an
event at either end of it is voided. So the graph follows two counters of the
``genealogy_clock`` table, which every store write moves in its own transaction:

* ``links``: a writer that may add links moves it first and stamps its links with the
  new value (``lot_links.seq``). Taking that row serializes link writers, so a reader
  that sees clock value N sees every link with ``seq <= N`` and reads ``seq > M`` to
  catch up from M.
* ``voids``: moved when events are voided. The voided events are few; the graph re-reads
  them (a partial index) and drops the links they touch. A voided event stays voided.

**Freshness rule**: every walk first reads the clock (one small query) and catches up, so a
trace sees every link and void committed before it started, whichever process wrote them.
Links written around the store (not through :meth:`GenealogyStore.apply`) are seen only if
they were there when the graph first loaded.

Example::

    >>> graph = graph_of(store)                                     # doctest: +SKIP
    >>> with store.engine.connect() as conn:                        # doctest: +SKIP
    ...     reached, edges, truncated = graph.walk(conn, root, backward=True,
    ...                                            max_depth=20, max_lots=10_000)
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from genealogy import tables
from genealogy.store import GenealogyStore, utc


@dataclass(frozen=True, slots=True)
class TraceEdge:
    """One parent -> child link with the quantity used and the quantity produced."""

    parent_lot: str
    child_lot: str
    kind: str
    via: str
    quantity_used: Decimal
    unit_used: str
    quantity_produced: Decimal
    unit_produced: str
    occurred_at: datetime


_LINK_COLUMNS = [
    tables.lot_links.c[name]
    for name in (
        "parent_lot", "child_lot", "kind", "via", "quantity_used", "unit_used",
        "quantity_produced", "unit_produced", "occurred_at", "parent_event_id", "child_event_id",
    )
]  # fmt: skip


class LinkGraph:
    """Live lot links of one store by child (for backward walks) and by parent (forward).

    Thread-safe: the API answers traces from a thread pool, and a walk and a catch-up
    never interleave.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links_at = -1  # the links clock value everything up to is loaded (-1: nothing)
        self._voids_at = -1
        self._voided: set[str] = set()
        self._up: dict[str, list[TraceEdge]] = {}
        self._down: dict[str, list[TraceEdge]] = {}
        #: (parent event, child event, edge) of every live link, to drop those a void kills
        self._events: list[tuple[str, str, TraceEdge]] = []
        # equal values shared across links: a million links repeat a few units, kinds,
        # timestamps and quantities, and every lot id appears in several links
        self._shared: dict[Any, Any] = {}

    def walk(
        self,
        conn: Connection,
        root: str,
        *,
        backward: bool,
        max_depth: int,
        max_lots: int,
        window: tuple[datetime, datetime] | None = None,
    ) -> tuple[dict[str, int], list[TraceEdge], bool]:
        """Breadth-first walk from ``root``: the lots reached with their depth, the links
        followed, and whether the walk stopped short (at ``max_lots`` or ``max_depth``).

        Every lot is visited once, so rework loops terminate. Each level follows every
        live link (inside ``window``, if given) of the lots reached at the level before;
        when the new lots of a level do not all fit under ``max_lots``, those first by
        lot id are kept, and the links to the others are still listed.
        """
        with self._lock:
            self._catch_up(conn)
            adjacency = self._up if backward else self._down
            depth_of = {root: 0}
            edges: list[TraceEdge] = []
            frontier = [root]
            depth = 0
            truncated = False
            while frontier and depth < max_depth:
                depth += 1
                fresh: list[str] = []
                for lot in frontier:
                    out = adjacency.get(lot)
                    if not out:
                        continue
                    if window is not None:
                        out = [e for e in out if window[0] <= e.occurred_at <= window[1]]
                    edges.extend(out)
                    for e in out:
                        other = e.parent_lot if backward else e.child_lot
                        if other not in depth_of:
                            depth_of[other] = depth
                            fresh.append(other)
                if len(depth_of) > max_lots:
                    truncated = True
                    fresh.sort()
                    keep = len(fresh) - (len(depth_of) - max_lots)
                    for lot in fresh[keep:]:
                        del depth_of[lot]
                    fresh = fresh[:keep]
                frontier = fresh
            if frontier and depth >= max_depth and not truncated:
                # stopped at max_depth: say so only if there was more to see
                truncated = any(
                    window is None or window[0] <= e.occurred_at <= window[1]
                    for lot in frontier
                    for e in adjacency.get(lot, ())
                )
            return depth_of, edges, truncated

    def _catch_up(self, conn: Connection) -> None:
        """Read what the clock says changed since the last walk (see the module docs)."""
        clock = tables.genealogy_clock
        now = {r.name: int(r.value) for r in conn.execute(select(clock.c.name, clock.c.value))}
        # voids first: the voided set read is at least as new as the clock, so every link
        # read below with seq <= now["links"] is checked against every void it could have
        if now["voids"] != self._voids_at:
            ev = tables.events
            voided = {
                str(r.event_id)
                for r in conn.execute(select(ev.c.event_id).where(ev.c.voided_by.is_not(None)))
            }
            newly = voided - self._voided
            self._voided = voided
            self._voids_at = now["voids"]
            if newly:
                self._drop(newly)
        if now["links"] != self._links_at:
            links = tables.lot_links
            query = select(*_LINK_COLUMNS).where(links.c.seq <= now["links"])
            if self._links_at >= 0:
                query = query.where(links.c.seq > self._links_at)
            for row in conn.execute(query):
                self._add(row)
            self._links_at = now["links"]

    def _add(self, row: Any) -> None:
        (parent, child, kind, via, used, unit_used, produced, unit_produced, at,
         parent_event, child_event) = row  # fmt: skip
        if parent_event in self._voided or child_event in self._voided:
            return  # a voided event stays voided: the link is dead for good
        share = self._shared.setdefault
        when = self._shared.get(("t", at))
        if when is None:
            when = self._shared[("t", at)] = utc(at)
        edge = TraceEdge(
            parent_lot=share(parent, parent),
            child_lot=share(child, child),
            kind=share(kind, kind),
            via=share(via, via),
            # by text: Decimal("1") and Decimal("1.000") are equal but print differently
            quantity_used=share(("q", str(used)), used),
            unit_used=share(unit_used, unit_used),
            quantity_produced=share(("q", str(produced)), produced),
            unit_produced=share(unit_produced, unit_produced),
            occurred_at=when,
        )
        self._up.setdefault(edge.child_lot, []).append(edge)
        self._down.setdefault(edge.parent_lot, []).append(edge)
        self._events.append((share(parent_event, parent_event), share(child_event, child_event),
                             edge))  # fmt: skip

    def _drop(self, voided: set[str]) -> None:
        """Remove the links an event of ``voided`` is at either end of."""
        dead = {id(e): e for pe, ce, e in self._events if pe in voided or ce in voided}
        if not dead:
            return
        self._events = [t for t in self._events if id(t[2]) not in dead]
        for edge in dead.values():
            for adjacency, lot in ((self._up, edge.child_lot), (self._down, edge.parent_lot)):
                adjacency[lot] = [e for e in adjacency[lot] if id(e) not in dead]


_graphs: weakref.WeakKeyDictionary[GenealogyStore, LinkGraph] = weakref.WeakKeyDictionary()
_graphs_lock = threading.Lock()


def graph_of(store: GenealogyStore) -> LinkGraph:
    """The link graph of ``store`` in this process (made empty, loaded on the first walk)."""
    with _graphs_lock:
        graph = _graphs.get(store)
        if graph is None:
            graph = _graphs[store] = LinkGraph()
        return graph
