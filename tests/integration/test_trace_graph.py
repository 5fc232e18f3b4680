"""The in-memory trace walk against a straightforward walk over the database, and freshness.

A random genealogy (seeded) with blends, batches, transfers, rework loops (cycles), voided
events (some voided before they arrive) and documents goes in through ``store.apply``. The
reference walks it level by level with one query per level, as the first engine did, and the
fast path must return exactly the same lots, edges, documents and truncation for many roots,
directions, depth and size limits and time windows. Then: a trace right after ``apply`` sees
the new links and voids, also when another store (another process's connections and graph)
wrote them.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import and_, exists, or_, select, text, update

from genealogy import graph as graph_module
from genealogy import tables
from genealogy.graph import TraceEdge
from genealogy.store import GenealogyStore, utc
from genealogy.trace import Direction, TraceDocument, TraceLot, TraceResult, trace
from schemas.model import (
    CorrectionAction,
    EventCorrected,
    LotEventBase,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    TransferReceived,
    Transformation,
    TransformationKind,
)
from tests.factories import CET, DOC, ITEM, LOC, PARTY, envelope, lq, qty

DAY = datetime(2026, 11, 1, 6, 0, tzinfo=CET)


def random_genealogy(rng: random.Random, lots: int = 40) -> list[LotEventBase]:
    """Receipts, transformations (cycles allowed), batches, transfers, shipments and voids."""
    ids = [f"{'ALP' if i % 3 else 'BRK'}:R{i:03d}" for i in range(lots)]
    at = lambda: DAY + timedelta(hours=rng.randrange(24 * 30))  # noqa: E731
    events: list[LotEventBase] = []
    for lot in rng.sample(ids, lots // 4):
        events.append(LotReceived(envelope=envelope("LotReceived", occurred_at=at()), lot=lot,
                                  item=ITEM, quantity=qty(rng.randrange(1, 900)), supplier=PARTY,
                                  supplier_lot=f"S-{lot}", receiving_location=LOC, ship_from=LOC,
                                  reference_document=DOC))  # fmt: skip
    for n in range(lots * 2):
        ins, outs = rng.sample(ids, rng.randint(1, 3)), rng.sample(ids, rng.randint(1, 2))
        if rng.random() < 0.7:
            events.append(Transformation(
                envelope=envelope("Transformation", occurred_at=at()),
                kind=rng.choice(list(TransformationKind)), transformation_id=f"T-{n}",
                location=LOC, inputs=[lq(i, rng.randrange(1, 500)) for i in ins],
                outputs=[lq(o, rng.randrange(1, 500)) for o in outs], reference_document=DOC,
            ))  # fmt: skip
        elif rng.random() < 0.6:
            kind = rng.choice(list(TransformationKind))
            events.extend(MaterialConsumed(envelope=envelope("MaterialConsumed", occurred_at=at()),
                          batch_id=f"B-{n}", kind=kind, location=LOC, lot=i, item=ITEM,
                          quantity=qty(rng.randrange(1, 50)), reference_document=DOC) for i in ins)  # fmt: skip
            events.extend(MaterialProduced(envelope=envelope("MaterialProduced", occurred_at=at()),
                          batch_id=f"B-{n}", kind=kind, location=LOC, lot=o, item=ITEM,
                          quantity=qty(rng.randrange(1, 50)), reference_document=DOC) for o in outs)  # fmt: skip
        else:
            events.append(TransferReceived(
                envelope=envelope("TransferReceived", site="BRK", occurred_at=at()),
                transfer_id=f"X-{n}", shipped_lot=ins[0], shipped_lot_site=ins[0][:3],
                lot=f"BRK:X{n:03d}", item=ITEM, quantity=qty(rng.randrange(1, 90)),
                from_location=LOC, receiving_location=LOC, reference_document=DOC,
            ))  # fmt: skip
    for lot in rng.sample(ids, lots // 3):
        events.append(LotShipped(envelope=envelope("LotShipped", occurred_at=at()), lot=lot,
                                 item=ITEM, quantity=qty(rng.randrange(1, 90)), customer=PARTY,
                                 ship_to=LOC, ship_from=LOC, reference_document=DOC))  # fmt: skip
    victims = rng.sample(events, len(events) // 8)
    voids = [void(v) for v in victims]
    # half the corrections overtake the event they void
    return [*voids[::2], *events, *voids[1::2]]


def void(target: LotEventBase) -> EventCorrected:
    return EventCorrected(envelope=envelope("EventCorrected"), action=CorrectionAction.VOID,
                          corrected_event_ids=[target.envelope.event_id], reason="test",
                          actor="qa.test")  # fmt: skip


def reference(
    store: GenealogyStore, root: str, direction: Direction, max_depth: int, max_lots: int,
    window: tuple[datetime, datetime] | None,
) -> TraceResult:  # fmt: skip
    """Level by level, one query per level, each level's lots followed one by one in id order
    until ``max_lots`` lots are reached: of the last one's new lots those first by id are
    kept, and the walk stops there as at ``max_depth``."""
    links, ev, docs = tables.lot_links, tables.events, tables.documents
    backward = direction is Direction.BACKWARD
    near = links.c.child_lot if backward else links.c.parent_lot
    live = ~exists().where(and_(
        or_(ev.c.event_id == links.c.parent_event_id, ev.c.event_id == links.c.child_event_id),
        ev.c.voided_by.is_not(None)))  # fmt: skip
    inside: list[Any] = [] if window is None else [links.c.occurred_at.between(*window)]
    depth_of, edges, frontier, truncated = {root: 0}, [], [root], False
    with store.engine.connect() as conn:
        for depth in range(1, max_depth + 1):
            if not frontier:
                break
            if len(depth_of) >= max_lots:  # full: it stops as at the depth limit
                more = select(links).where(near.in_(frontier), live, *inside)
                truncated = truncated or conn.execute(more).first() is not None
                break
            rows = conn.execute(select(links).where(near.in_(frontier), live, *inside)).all()
            by_lot: dict[str, list[Any]] = {}
            for r in rows:
                by_lot.setdefault(r.child_lot if backward else r.parent_lot, []).append(r)
            level: list[str] = []
            for i, lot in enumerate(frontier):  # lot by lot, in id order
                if lot not in by_lot:
                    continue
                edges.extend(by_lot[lot])
                mine = sorted({r.parent_lot if backward else r.child_lot for r in by_lot[lot]}
                              - set(depth_of))  # fmt: skip
                room = max_lots - len(depth_of)
                if len(mine) > room:
                    truncated, mine = True, mine[:room]
                depth_of.update(dict.fromkeys(mine, depth))
                level += mine
                if len(depth_of) >= max_lots:
                    rest = frontier[i + 1 :]  # not followed: is there more to see?
                    more = select(links).where(near.in_(rest + level), live, *inside)
                    truncated = truncated or conn.execute(more).first() is not None
                    break
            frontier = sorted(level)
            if len(depth_of) >= max_lots:
                break
        else:
            more = select(links).where(near.in_(frontier), live, *inside)
            truncated = truncated or (bool(frontier) and conn.execute(more).first() is not None)
        lots = [TraceLot(lot_id=r.lot_id, site=r.site, item_code=r.item_code,
                         item_description=r.item_description, status=r.status,
                         depth=depth_of[r.lot_id])
                for r in conn.execute(select(tables.lots).where(tables.lots.c.lot_id.in_(depth_of)))]  # fmt: skip
        doc_live = ~exists().where(
            and_(ev.c.event_id == docs.c.event_id, ev.c.voided_by.is_not(None))
        )
        doc_inside = [] if window is None else [docs.c.occurred_at.between(*window)]
        shown = [c for c in docs.columns if c.name != "seq"]
        documents = [TraceDocument(**{**r._asdict(), "occurred_at": utc(r.occurred_at)})
                     for r in conn.execute(select(*shown).where(docs.c.lot_id.in_(depth_of), doc_live,
                                                              *doc_inside))]  # fmt: skip
    return TraceResult(root=root, direction=direction, lots=lots,
                       edges=[TraceEdge(*_edge(r)) for r in edges], documents=documents, truncated=truncated,
                       window=window)  # fmt: skip


def _edge(r: Any) -> tuple[Any, ...]:
    return (r.parent_lot, r.child_lot, r.kind, r.via, r.quantity_used, r.unit_used,
            r.quantity_produced, r.unit_produced, utc(r.occurred_at))  # fmt: skip


def same(result: TraceResult) -> tuple[Any, ...]:
    """A result in a comparable, order-free form (edges with equal sort keys may swap)."""
    return (
        result.root,
        result.truncated,
        sorted((x.depth, x.lot_id, x.site, x.item_code, x.status) for x in result.lots),
        sorted(_edge(e) for e in result.edges),
        sorted(result.documents, key=lambda d: (d.event_id, d.lot_id)),
    )


@pytest.fixture
def random_store(
    store_url: str, store_factory: Callable[[str], GenealogyStore]
) -> tuple[GenealogyStore, list[str]]:
    rng = random.Random(20261123)
    events = random_genealogy(rng)
    store = store_factory(store_url)
    for start in range(0, len(events), 37):  # several writes, several clock ticks
        store.apply(events[start : start + 37])
    with store.engine.connect() as conn:
        lots = sorted(conn.execute(select(tables.lots.c.lot_id)).scalars())
    return store, lots


@pytest.mark.parametrize("chunk", [1, 3, graph_module._CHUNK])
def test_fast_walk_equals_the_reference_walk(
    random_store: tuple[GenealogyStore, list[str]], chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the walk follows a level's lots in chunks; small ones make a level span several
    monkeypatch.setattr(graph_module, "_CHUNK", chunk)
    store, lots = random_store
    rng = random.Random(5)
    windows = [
        None,
        (DAY, DAY + timedelta(days=30)),
        (DAY + timedelta(days=3), DAY + timedelta(days=12)),
    ]
    compared = truncated = 0
    for root in rng.sample(lots, 12):
        for direction in (Direction.BACKWARD, Direction.FORWARD):
            for max_depth, max_lots in ((1, 10_000), (2, 5), (3, 10_000), (50, 7), (50, 12),
                                        (50, 10_000)):  # fmt: skip
                for window in windows:
                    start, end = window or (None, None)
                    got = trace(store, root, direction, max_depth=max_depth, max_lots=max_lots,
                                start=start, end=end)  # fmt: skip
                    utc_window = None if window is None else (utc(window[0]), utc(window[1]))
                    want = reference(store, root, direction, max_depth, max_lots, utc_window)
                    assert same(got) == same(want), (root, direction, max_depth, max_lots, window)
                    assert got.lots == sorted(got.lots, key=lambda x: (x.depth, x.lot_id))
                    compared += 1
                    truncated += got.truncated
    # the sample exercises both limits and long walks, not only trivial ones
    assert compared == 12 * 2 * 6 * 3
    assert 0 < truncated < compared


def test_voided_links_are_gone_whether_the_void_came_first_or_last(
    random_store: tuple[GenealogyStore, list[str]],
) -> None:
    store, lots = random_store
    ev, links = tables.events, tables.lot_links
    with store.engine.connect() as conn:
        dead = conn.execute(
            select(links.c.parent_lot, links.c.child_lot, links.c.via)
            .join(ev, ev.c.event_id == links.c.child_event_id)
            .where(ev.c.voided_by.is_not(None))
        ).all()
    assert dead, "the random genealogy voids some link events"
    followed = {
        (e.parent_lot, e.child_lot, e.via)
        for lot in lots
        for e in trace(store, lot, Direction.FORWARD, max_depth=1).edges
    }
    assert followed
    assert not followed & set(dead)


def _blend(parent: str, child: str, at: datetime) -> Transformation:
    return Transformation(envelope=envelope("Transformation", occurred_at=at),
                          kind=TransformationKind.BLEND, transformation_id=f"F-{parent}-{child}",
                          location=LOC, inputs=[lq(parent, 10)], outputs=[lq(child, 10)],
                          reference_document=DOC)  # fmt: skip


def test_a_trace_sees_links_and_voids_written_just_before_by_any_store(
    store_url: str, store_factory: Callable[[str], GenealogyStore]
) -> None:
    api, worker = store_factory(store_url), store_factory(store_url)  # two processes' stores
    first = _blend("ALP:F1", "ALP:F2", DAY)
    api.apply([first])
    assert [x.lot_id for x in trace(api, "ALP:F1", Direction.FORWARD).lots] == ["ALP:F1", "ALP:F2"]
    assert [x.lot_id for x in trace(worker, "ALP:F2", Direction.BACKWARD).lots] == [
        "ALP:F2", "ALP:F1"]  # fmt: skip
    # both graphs are loaded; now each store writes and the other one reads
    second = _blend("ALP:F2", "ALP:F3", DAY + timedelta(hours=1))
    worker.apply([second])
    assert [x.lot_id for x in trace(api, "ALP:F1", Direction.FORWARD).lots] == [
        "ALP:F1", "ALP:F2", "ALP:F3"]  # fmt: skip
    api.apply([_blend("ALP:F3", "ALP:F1", DAY + timedelta(hours=2))])  # a rework loop
    assert [(x.lot_id, x.depth) for x in trace(worker, "ALP:F3", Direction.FORWARD).lots] == [
        ("ALP:F3", 0), ("ALP:F1", 1), ("ALP:F2", 2)]  # fmt: skip
    worker.apply([LotStatusChanged(envelope=envelope("LotStatusChanged"), lot="ALP:F2",
                                   status="BLOCKED", reason_code="QC-FAIL", actor="qa.test")])  # fmt: skip
    assert {x.lot_id: x.status for x in trace(api, "ALP:F1", Direction.FORWARD).lots} == {
        "ALP:F1": None, "ALP:F2": "BLOCKED", "ALP:F3": None}  # fmt: skip
    shipped = LotShipped(envelope=envelope("LotShipped", occurred_at=DAY + timedelta(hours=3)),
                         lot="ALP:F3", item=ITEM, quantity=qty(5), customer=PARTY, ship_to=LOC,
                         ship_from=LOC, reference_document=DOC)  # fmt: skip
    worker.apply([shipped])
    seen = [(d.lot_id, d.cte) for d in trace(api, "ALP:F1", Direction.FORWARD).documents]
    assert seen[-1] == ("ALP:F3", "SHIPPING")  # the latest document comes last
    api.apply([void(shipped)])
    assert "SHIPPING" not in {d.cte for d in trace(worker, "ALP:F1", Direction.FORWARD).documents}
    worker.apply([void(second)])
    for store in (api, worker):
        result = trace(store, "ALP:F1", Direction.FORWARD)
        assert [x.lot_id for x in result.lots] == ["ALP:F1", "ALP:F2"]
        assert [(e.parent_lot, e.child_lot) for e in result.edges] == [("ALP:F1", "ALP:F2")]
    # a batch move joined to a move whose event was voided earlier stays out
    consumed = MaterialConsumed(envelope=envelope("MaterialConsumed", occurred_at=DAY),
                                batch_id="B-F", kind=TransformationKind.PRODUCTION, location=LOC,
                                lot="ALP:F2", item=ITEM, quantity=qty(5), reference_document=DOC)  # fmt: skip
    api.apply([consumed, void(consumed)])
    worker.apply([MaterialProduced(envelope=envelope("MaterialProduced", occurred_at=DAY),
                                   batch_id="B-F", kind=TransformationKind.PRODUCTION,
                                   location=LOC, lot="ALP:F9", item=ITEM, quantity=qty(5),
                                   reference_document=DOC)])  # fmt: skip
    assert [x.lot_id for x in trace(api, "ALP:F9", Direction.BACKWARD).lots] == ["ALP:F9"]
    with api.engine.connect() as conn:
        assert conn.execute(select(tables.lot_links.c.link_key).where(
            tables.lot_links.c.child_lot == "ALP:F9")).first(), "the link is stored, voided"  # fmt: skip


def test_writers_take_turns_so_stamps_become_visible_in_order(
    store_url: str, store_factory: Callable[[str], GenealogyStore]
) -> None:
    store = store_factory(store_url)
    clock, links = tables.genealogy_clock, tables.lot_links
    done = threading.Event()
    second = threading.Thread(
        target=lambda: (store.apply([_blend("ALP:W1", "ALP:W2", DAY)]), done.set())
    )
    with store.engine.begin() as conn:  # a first writer, between its tick and its commit
        conn.execute(update(clock).where(clock.c.name == "writes").values(value=clock.c.value + 1))
        first = conn.execute(select(clock.c.value).where(clock.c.name == "writes")).scalar_one()
        second.start()
        # the second writer cannot take a stamp while the first may still write with its own
        assert not done.wait(1.0)
    second.join(30)
    assert done.is_set()
    with store.engine.connect() as conn:
        stamps = set(conn.execute(select(links.c.seq)).scalars())
    assert stamps == {first + 1}


def test_a_trace_answers_when_the_graphs_clock_connection_was_cut(
    postgres_url: str, store_factory: Callable[[str], GenealogyStore]
) -> None:
    # on PostgreSQL the graph reads the clock on a connection of its own; a server restart
    # or an idle timeout cuts it, and the next trace must still see what was committed
    api, worker = store_factory(postgres_url), store_factory(postgres_url)
    api.apply([_blend("ALP:K1", "ALP:K2", DAY)])
    assert [x.lot_id for x in trace(api, "ALP:K1", Direction.FORWARD).lots] == ["ALP:K1", "ALP:K2"]
    with worker.engine.connect() as conn:
        cut = conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            "current_database() AND query = 'SELECT name, value FROM genealogy_clock'"
        )).scalars().all()  # fmt: skip
    assert cut == [True], "the graph's clock connection was found and cut"
    worker.apply([_blend("ALP:K2", "ALP:K3", DAY + timedelta(hours=1))])
    for _ in range(2):  # the first after the cut, then one on the connection made again
        assert [x.lot_id for x in trace(api, "ALP:K1", Direction.FORWARD).lots] == [
            "ALP:K1", "ALP:K2", "ALP:K3"]  # fmt: skip
