"""The store's lot links, lots and documents held in memory, per process, kept fresh by a clock.

A trace walks this graph instead of querying the database level by level: links, lots and
documents are loaded once, then only the rows written since are read. Links and documents
are append-only (never updated or deleted); what changes is whether one is live, when its
event is voided. Lots change (status, item details). So the graph follows two counters of
the ``genealogy_clock`` table, which every store write moves in its own transaction:

* ``writes``: every :meth:`GenealogyStore.apply` moves it first and stamps the links, lots
  and documents it writes with the new value (``seq``). Taking that row serializes writers, so a
  reader that sees clock value N sees every row with ``seq <= N`` and reads ``seq > M`` to
  catch up from M.
* ``voids``: moved when events are voided. The voided events are few; the graph re-reads
  them (a partial index) and drops the links and documents they touch. A voided event
  stays voided.

A bulk load ends with :func:`gc.freeze`: the process's objects at that point (the graph
among them) are left out of the cyclic garbage collector's scans, whose full passes over
the graph were the slowest traces. So does every 10,000th TraceLot made for reuse. The graph
holds no reference cycles; refcounting still frees what it drops.

**Freshness rule**: every trace first reads the clock (one small query) and catches up, so
a trace sees every link, lot, document and void committed before it started, whichever
process wrote them. Rows written around the store (not through :meth:`GenealogyStore.apply`) are seen only if
they were there when the graph first loaded.

Example::

    >>> graph = graph_of(store)                                     # doctest: +SKIP
    >>> with store.engine.connect() as conn:                        # doctest: +SKIP
    ...     graph.catch_up(conn)
    >>> walk = graph.walk(root, backward=True, max_depth=20, max_lots=10_000)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import attrgetter, not_
from typing import Any, cast

from sqlalchemy import Connection, Engine, event, select

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


# Not frozen: a frozen dataclass sets each field through object.__setattr__, three times
# the cost, and a 50,000-lot trace may make that many. Read-only all the same: traces share
# them (hashed by value, as a frozen one would be).
@dataclass(slots=True, unsafe_hash=True)
class TraceLot:
    """A lot reached by the walk, with its distance from the start; never changed after
    it is made, as traces share it."""

    lot_id: str
    site: str
    item_code: str | None
    item_description: str | None
    status: str | None
    depth: int


@dataclass(frozen=True, slots=True)
class TraceDocument:
    """A receipt, shipment, transfer or return document of a reached lot."""

    event_id: str
    lot_id: str
    cte: str
    doc_type: str
    doc_number: str
    site: str
    party_id: str | None
    party_name: str | None
    partner_lot: str | None
    location_id: str | None
    location_name: str | None
    quantity: Decimal
    unit: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Walk:
    """What one walk reached."""

    #: the reached lots that are stored (a lot named only by a link may not be), by depth
    #: and then lot id
    lots: list[TraceLot]
    #: the links followed, by the lot the walk came from (the child lot backward, the
    #: parent lot forward), then the lot at the other end, then ``via``
    edges: list[TraceEdge]
    #: the documents of the reached lots (inside the window), by time, event and lot
    documents: list[TraceDocument]
    #: the walk stopped short, at the size or the depth limit
    truncated: bool


_LOT_COLUMNS = [tables.lots.c[name] for name in
                ("lot_id", "site", "item_code", "item_description", "status")]  # fmt: skip
_DOC_COLUMNS = [tables.documents.c[name] for name in
                ("event_id", "lot_id", "cte", "doc_type", "doc_number", "site", "party_id",
                 "party_name", "partner_lot", "location_id", "location_name", "quantity", "unit",
                 "occurred_at")]  # fmt: skip
_DOC_ORDER = attrgetter("occurred_at", "event_id", "lot_id")
#: a lot's site, item code, item description and status
_Facts = tuple[str, str | None, str | None, str | None]
#: the order of a lot's links in and out: a walk lists its links by the lot it came from,
#: so with each lot's kept in this order it concatenates them rather than sorting (a sort
#: of every link by three keys was half of a backward trace)
_PARENT_VIA = attrgetter("parent_lot", "via")
_CHILD_VIA = attrgetter("child_lot", "via")
#: rows read in one catch-up (or TraceLots made since the last time) from which the graph
#: is moved out of the collector's way
_FREEZE_AFTER = 10_000
#: lots of a level followed in one go (in C) before the walk checks whether it is full
_CHUNK = 512
#: TraceLot objects kept for reuse at most
_MADE_MAX = 2_000_000


class LinkGraph:
    """Live lot links of one store by child (for backward walks) and by parent (forward),
    and the facts of every lot.

    Thread-safe: the API answers traces from a thread pool, and a walk and a catch-up
    never interleave.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()
        # PostgreSQL: a connection of the graph's own for the clock read alone (see refresh)
        self._clock_conn: Any = None
        self._clock_pid = 0

    def _reset(self) -> None:
        """Forget everything: the next catch-up loads the store afresh."""
        self._links_at = -1  # the writes clock value links are loaded up to (-1: nothing yet)
        self._lots_at = -1
        self._voids_at = -1
        self._facts: dict[str, _Facts] = {}
        self._voided: set[str] = set()
        # by child in _PARENT_VIA order and by parent in _CHILD_VIA order (restored after
        # every catch-up that adds links)
        self._up: dict[str, list[TraceEdge]] = {}
        self._down: dict[str, list[TraceEdge]] = {}
        self._unsorted_up: set[str] = set()
        self._unsorted_down: set[str] = set()
        # the lots at the other ends alone: a level is then a few set operations in C
        self._parents: dict[str, list[str]] = {}
        self._children: dict[str, list[str]] = {}
        # TraceLot objects made, by depth and lot: immutable, so traces share them (a walk
        # picks a level's out of one dict in C); a lot's are dropped when its facts change
        self._made: dict[int, dict[str, TraceLot]] = {}
        self._made_count = 0
        self._made_unfrozen = 0  # made since the last gc.freeze()
        self._docs: dict[str, list[TraceDocument]] = {}
        self._docs_at = -1
        #: (parent event, child event, edge) of every live link, to drop those a void kills
        self._events: list[tuple[str, str, TraceEdge]] = []
        # equal values shared across links: a million links repeat a few units, kinds,
        # timestamps and quantities, and every lot id appears in several links
        self._shared: dict[Any, Any] = {}

    def catch_up(self, conn: Connection) -> None:
        """Read what the store clock says changed since the last catch-up (see the module
        docs); a walk sees the store as of its last catch-up."""
        with self._lock:
            collecting = gc.isenabled()
            if self._links_at < 0:
                gc.disable()  # a first load makes millions of objects and no garbage
            try:
                added = self._catch_up(conn)
            except BaseException:
                # half a catch-up would be read again, doubling links: start over instead
                self._reset()
                raise
            finally:
                if collecting:
                    gc.enable()
            if added >= _FREEZE_AFTER:
                # the graph lives as long as the process: keep the cyclic collector from
                # scanning it again and again (a full collection over a million links takes
                # seconds, and lands inside some unlucky trace); it is freed by refcount
                gc.freeze()

    def incoming(self, lots: list[str]) -> dict[str, list[TraceEdge]]:
        """The live links into each of ``lots`` (as of the last catch-up)."""
        with self._lock:
            up = self._up
            return {lot: list(up[lot]) for lot in lots if lot in up}

    def refresh(self, engine: Engine) -> None:
        """Catch up with the store of ``engine``, as :meth:`catch_up`, for a trace.

        On PostgreSQL the clock is read first on a connection the graph holds in
        autocommit (each read sees everything committed before it started, by any process):
        about 50 us, where checking a connection out of the pool, pinging it and running
        the query through SQLAlchemy took 430 us, half an in-memory walk over 2,400 lots. Only
        when the clock moved does a pooled connection read what changed. A held connection
        that fails is closed and the pooled path answers (and reports what is wrong).
        """
        if engine.dialect.name == "postgresql":
            with self._lock:
                now = self._read_clock(engine)
                if now is not None and self._is_at(now):
                    return
        with engine.connect() as conn:
            self.catch_up(conn)

    def _is_at(self, now: dict[str, int]) -> bool:
        """True if the graph is caught up with clock values ``now``."""
        writes = now["writes"]
        return (
            now["voids"] == self._voids_at
            and writes == self._links_at == self._docs_at == self._lots_at
        )

    def _read_clock(self, engine: Engine) -> dict[str, int] | None:
        """The clock, read on the graph's own connection (None if that failed)."""
        dbapi_error = engine.dialect.loaded_dbapi.Error
        try:
            if (
                self._clock_conn is None
                or self._clock_conn.closed
                or self._clock_pid != os.getpid()  # a forked process must not share it
            ):
                self._clock_conn = _clock_connection(engine)
                self._clock_pid = os.getpid()
                weakref.finalize(self, self._clock_conn.close)  # a graph dropped closes it
            rows = self._clock_conn.execute(_CLOCK_SQL).fetchall()
        except dbapi_error:
            self._drop_clock_connection()
            return None
        return {str(name): int(value) for name, value in rows}

    def _drop_clock_connection(self) -> None:
        conn, self._clock_conn = self._clock_conn, None
        if conn is not None and self._clock_pid == os.getpid():
            with contextlib.suppress(Exception):  # already broken: dropping it is all there is
                conn.close()

    def has_lot(self, lot_id: str) -> bool:
        """True if ``lot_id`` is a stored lot (as of the last catch-up)."""
        return lot_id in self._facts

    def walk(
        self,
        root: str,
        *,
        backward: bool,
        max_depth: int,
        max_lots: int,
        window: tuple[datetime, datetime] | None = None,
    ) -> Walk:
        """Breadth-first walk from ``root``: the lots reached with their depth, the links
        followed, and whether the walk stopped short (at ``max_lots`` or ``max_depth``).

        Every lot is visited once, so rework loops terminate. Each level follows the live
        links (inside ``window``, if given) of the lots reached at the level before, lot
        by lot in lot-id order, until the walk holds ``max_lots`` lots: of the new lots of
        the lot being followed then, those first by lot id are kept (its links to the
        others are still listed), and the walk stops as at ``max_depth``. A 50,000-lot
        trace of a million-lot genealogy thus follows the links of about the lots it
        needs, as an in-memory breadth-first search does, rather than of every lot of its
        levels (three times as many, two thirds of the walk).
        """
        with self._lock:
            adjacency = self._up if backward else self._down
            neighbours = self._parents if backward else self._children
            seen = {root}
            levels = [[root]]
            # the lots whose links were followed, and with a window those links
            expanded: list[str] = []
            inside: dict[str, list[TraceEdge]] = {}
            frontier = [root]
            truncated = False
            rest: list[str] = []  # lots of the last level left unfollowed, the trace full
            while frontier and len(levels) <= max_depth and len(seen) < max_lots:
                level: list[str] = []
                for start in range(0, len(frontier), _CHUNK):
                    chunk = frontier[start : start + _CHUNK]
                    if window is None:
                        # in C: a Python loop over the lots of a level cost more than the walk
                        hit = list(filter(adjacency.__contains__, chunk))
                        reach = set(chain.from_iterable(map(neighbours.__getitem__, hit)))
                    else:
                        hit, reach = self._within(chunk, backward, window, inside)
                    fresh = reach - seen
                    room = max_lots - len(seen)
                    if len(fresh) >= room:
                        # the trace fills up in this chunk: follow its lots one by one
                        for i, lot in enumerate(hit):
                            expanded.append(lot)
                            if window is None:
                                mine = set(neighbours[lot]).difference(seen)
                            else:
                                far = attrgetter("parent_lot" if backward else "child_lot")
                                mine = set(map(far, inside[lot])).difference(seen)
                            if len(mine) > room:
                                truncated = True
                                mine = set(sorted(mine)[:room])
                            seen.update(mine)
                            level += mine
                            room -= len(mine)
                            if not room:
                                rest = hit[i + 1 :] + frontier[start + _CHUNK :]
                                break
                        break
                    expanded += hit
                    seen.update(fresh)
                    level += fresh
                level.sort()
                levels.append(level)
                frontier = level
            if (frontier or rest) and not truncated:
                # stopped at max_depth, or full to the lot: say so only if there was more
                truncated = self._goes_on(rest + frontier, adjacency, window)
            lots = self._lots(levels)
            # each lot's links are in (other end, via) order: by lot, they are all in order
            expanded.sort()
            followed = adjacency if window is None else inside
            edges = list(chain.from_iterable(map(followed.__getitem__, expanded)))
            docs = self._docs
            # in C, from whichever of the two is smaller: most lots have no documents
            with_docs = (
                seen.intersection(docs)
                if len(docs) < len(seen)
                else filter(docs.__contains__, seen)
            )
            documents = list(chain.from_iterable(map(docs.__getitem__, with_docs)))
        if window is not None:
            documents = [d for d in documents if window[0] <= d.occurred_at <= window[1]]
        documents.sort(key=_DOC_ORDER)
        return Walk(lots, edges, documents, truncated)

    @staticmethod
    def _goes_on(
        frontier: list[str],
        adjacency: dict[str, list[TraceEdge]],
        window: tuple[datetime, datetime] | None,
    ) -> bool:
        """True if a lot of ``frontier`` has a link (inside ``window``) to follow.

        Stops at the first: the last level is the largest, and a walk that listed the
        links of all its lots to answer this spent a third of its time here.
        """
        if window is None:
            return any(map(adjacency.get, frontier))  # a void may leave a lot's list empty
        low, high = window
        return any(low <= e.occurred_at <= high for lot in frontier for e in adjacency.get(lot, ()))

    def _within(
        self,
        frontier: Iterable[str],
        backward: bool,
        window: tuple[datetime, datetime] | None,
        inside: dict[str, list[TraceEdge]],
    ) -> tuple[list[str], set[str]]:
        """The lots of ``frontier`` with a link inside ``window`` (any link, without one) and
        the lots at the other ends of those links; each lot's links inside go to ``inside``."""
        adjacency = self._up if backward else self._down
        hit: list[str] = []
        reach: set[str] = set()
        for lot in frontier:
            out = adjacency.get(lot)
            if not out:
                continue
            if window is not None:
                out = [e for e in out if window[0] <= e.occurred_at <= window[1]]
                if not out:
                    continue
            inside[lot] = out
            hit.append(lot)
            if backward:
                reach.update(e.parent_lot for e in out)
            else:
                reach.update(e.child_lot for e in out)
        return hit, reach

    def _lots(self, levels: list[list[str]]) -> list[TraceLot]:
        """The stored lots of ``levels`` as TraceLots, level by level."""
        lots: list[TraceLot] = []
        for depth, level in enumerate(levels):
            made = self._made.get(depth)
            if made is None:
                made = self._made[depth] = {}
            got = list(map(made.get, level))
            if not all(got):  # some not made yet (or not stored: they stay out)
                self._make(list(compress(level, map(not_, got))), depth, made)
                got = list(filter(None, map(made.get, level)))
            lots += cast(list[TraceLot], got)  # no None left
        return lots

    def _make(self, lot_ids: list[str], depth: int, made: dict[str, TraceLot]) -> None:
        """Make the TraceLots of the stored lots of ``lot_ids`` at ``depth`` into ``made``.

        In C, a level at a time: a cold 50,000-lot trace spent three quarters of its time
        making them one by one.
        """
        facts = list(map(self._facts.get, lot_ids))
        if not all(facts):  # a lot named by a link alone is not stored: it stays out
            lot_ids = list(compress(lot_ids, facts))
            facts = list(filter(None, facts))
        if not lot_ids:
            return
        if self._made_count + len(lot_ids) > _MADE_MAX:  # bound the memory: start again
            for by_lot in self._made.values():
                by_lot.clear()
            self._made_count = 0
        sites, items, descriptions, statuses = zip(*facts, strict=True)
        made.update(zip(lot_ids, map(TraceLot, lot_ids, sites, items, descriptions, statuses,
                                     repeat(depth, len(lot_ids))), strict=True))  # fmt: skip
        self._made_count += len(lot_ids)
        self._made_unfrozen += len(lot_ids)
        if self._made_unfrozen >= _FREEZE_AFTER:
            # kept for reuse, they live long: out of the collector's way like the graph,
            # or each full collection (one in a few cold 50,000-lot traces) scans them all
            # again, 60-100 ms inside some trace on the million-lot genealogy
            gc.freeze()
            self._made_unfrozen = 0

    def _catch_up(self, conn: Connection) -> int:
        """Read what the clock says changed since the last walk (see the module docs);
        how many rows that was."""
        added = 0
        clock = tables.genealogy_clock
        now = {r.name: int(r.value) for r in conn.execute(select(clock.c.name, clock.c.value))}
        # voids first: the voided set read is at least as new as the clock, so every link
        # read below with seq <= now["writes"] is checked against every void it could have
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
                self._docs = {
                    lot: live
                    for lot, docs in self._docs.items()
                    if (live := [d for d in docs if d.event_id not in newly])
                }
        if now["writes"] != self._links_at:
            links = tables.lot_links
            # not past the clock: a link read must not be newer than the voids read above
            query = select(*_LINK_COLUMNS).where(links.c.seq <= now["writes"])
            if self._links_at >= 0:
                query = query.where(links.c.seq > self._links_at)
            for row in conn.execute(query):
                self._add(row)
                added += 1
            # stable: links with equal keys stay in read order
            for adjacency, unsorted, key in ((self._up, self._unsorted_up, _PARENT_VIA),
                                             (self._down, self._unsorted_down, _CHILD_VIA)):  # fmt: skip
                for lot in unsorted:
                    adjacency[lot].sort(key=key)
                unsorted.clear()
            self._links_at = now["writes"]
        if now["writes"] != self._docs_at:
            docs = tables.documents
            # not past the clock, as links
            query = select(*_DOC_COLUMNS).where(docs.c.seq <= now["writes"])
            if self._docs_at >= 0:
                query = query.where(docs.c.seq > self._docs_at)
            for (event_id, lot_id, cte, doc_type, doc_number, site, party_id, party_name,
                 partner_lot, location_id, location_name, quantity, unit, at) in conn.execute(query):  # fmt: skip
                added += 1
                if event_id not in self._voided:
                    self._docs.setdefault(lot_id, []).append(TraceDocument(
                        event_id, lot_id, cte, doc_type, doc_number, site, party_id, party_name,
                        partner_lot, location_id, location_name, quantity, unit, utc(at),
                    ))  # fmt: skip
            self._docs_at = now["writes"]
        if now["writes"] != self._lots_at:
            lots = tables.lots
            # past the clock is fine (a newer status); stopping at it is not: a lot written
            # at or before it and changed again since would be read at neither catch-up
            query = select(*_LOT_COLUMNS)
            if self._lots_at >= 0:
                query = query.where(lots.c.seq > self._lots_at)
            share = self._shared.setdefault
            changed: list[str] = []
            for lot, site, code, description, status in conn.execute(query):
                self._facts[share(lot, lot)] = (share(site, site), code, description, status)
                changed.append(lot)
            added += len(changed)
            self._forget_made(changed)
            self._lots_at = now["writes"]
        return added

    def _add(self, row: Any) -> None:
        (parent, child, kind, via, used, unit_used, produced, unit_produced, at,
         parent_event, child_event) = row  # fmt: skip
        if parent_event in self._voided or child_event in self._voided:
            return  # a voided event stays voided: the link is dead for good
        share = self._shared.setdefault
        when = self._shared.get(("t", at))
        if when is None:
            when = self._shared[("t", at)] = utc(at)
        parent, child, via = share(parent, parent), share(child, child), share(via, via)
        edge = TraceEdge(
            parent_lot=parent,
            child_lot=child,
            kind=share(kind, kind),
            via=via,
            # by text: Decimal("1") and Decimal("1.000") are equal but print differently
            quantity_used=share(("q", str(used)), used),
            unit_used=share(unit_used, unit_used),
            quantity_produced=share(("q", str(produced)), produced),
            unit_produced=share(unit_produced, unit_produced),
            occurred_at=when,
        )
        self._up.setdefault(child, []).append(edge)
        self._down.setdefault(parent, []).append(edge)
        self._unsorted_up.add(child)
        self._unsorted_down.add(parent)
        self._parents.setdefault(child, []).append(parent)
        self._children.setdefault(parent, []).append(child)
        self._events.append((share(parent_event, parent_event), share(child_event, child_event),
                             edge))  # fmt: skip

    def _drop(self, voided: set[str]) -> None:
        """Remove the links an event of ``voided`` is at either end of."""
        dead = {id(e): e for pe, ce, e in self._events if pe in voided or ce in voided}
        if not dead:
            return
        self._events = [t for t in self._events if id(t[2]) not in dead]
        for edge in dead.values():
            # new lists, not changed in place: a walk may still hold the old ones
            child, parent = edge.child_lot, edge.parent_lot
            self._up[child] = [e for e in self._up[child] if id(e) not in dead]
            self._parents[child] = [e.parent_lot for e in self._up[child]]
            self._down[parent] = [e for e in self._down[parent] if id(e) not in dead]
            self._children[parent] = [e.child_lot for e in self._down[parent]]

    def _forget_made(self, lots: list[str]) -> None:
        """Drop the TraceLots made of ``lots``, whose facts changed."""
        caches = [made for made in self._made.values() if made]
        if not caches:
            return
        if len(lots) * len(caches) > self._made_count:  # cheaper to start again
            for made in caches:
                made.clear()
            self._made_count = 0
            return
        for lot in lots:
            for made in caches:
                if made.pop(lot, None) is not None:
                    self._made_count -= 1


_CLOCK_SQL = f"SELECT name, value FROM {tables.genealogy_clock.name}"


def _clock_connection(engine: Engine) -> Any:
    """A DBAPI connection to the store of ``engine``, in autocommit, outside its pool (a
    connection held for good would take one of the pool's), closed with the engine."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    conn = engine.dialect.connect(*args, **kwargs)
    conn.autocommit = True
    event.listen(engine, "engine_disposed", lambda _engine: conn.close())
    return conn


_graphs: weakref.WeakKeyDictionary[GenealogyStore, LinkGraph] = weakref.WeakKeyDictionary()
_graphs_lock = threading.Lock()


def graph_of(store: GenealogyStore) -> LinkGraph:
    """The link graph of ``store`` in this process (made empty, loaded on the first walk)."""
    with _graphs_lock:
        graph = _graphs.get(store)
        if graph is None:
            graph = _graphs[store] = LinkGraph()
        return graph
