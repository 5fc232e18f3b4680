"""Traceability KPIs computed from the store: what leadership asks of a traceability hub.

================================  ==============================================================
KPI                               definition
================================  ==============================================================
genealogy completeness            share of shipped lots (a customer shipment) whose backward
                                  genealogy reaches, on every branch, a lot received from a
                                  supplier: a branch that ends in a lot nobody received is a gap
release cycle time                hours from a supplier receipt to the lot's first release after
                                  it (lots released so far), per site
blocked-stock aging               on-hand quantity of lots whose current status is quarantine,
                                  on hold or rejected, by unit and by how long they have been in
                                  that status (``<1d``, ``1-7d``, ``7-30d``, ``>30d``), per site
reporting latency                 seconds from the event's time at the source to the hub storing
                                  it (``from_event``), and from the source recording it
                                  (``from_record``, the pipeline's own delay), per system kind
mock-recall time                  milliseconds the stored mock recalls took
================================  ==============================================================

Voided events count for nothing. Open gaps (integrity alerts) are counted where alerts are
kept. Every figure is computed from the tables, so :func:`compute_kpis` on a small scenario
can be checked by hand.

Example::

    kpis = compute_kpis(store, now=datetime.now(UTC))
    kpis.completeness.share          # Decimal('1')
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from genealogy import tables
from genealogy.store import GenealogyStore, not_voided, utc

#: statuses whose stock may not be used
BLOCKED = ("QUARANTINE", "ON_HOLD", "REJECTED")
#: age bands of blocked stock: label, upper bound (None: open)
AGE_BANDS: tuple[tuple[str, timedelta | None], ...] = (
    ("<1d", timedelta(days=1)),
    ("1-7d", timedelta(days=7)),
    ("7-30d", timedelta(days=30)),
    (">30d", None),
)
#: lot ids listed per KPI as examples (the counts are complete)
EXAMPLES = 20


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> dict[str, float | int | None]:
    """count, p50, p90, p99 and max of ``values``."""
    return {
        "count": len(values),
        "p50": _percentile(values, 50),
        "p90": _percentile(values, 90),
        "p99": _percentile(values, 99),
        "max": max(values) if values else None,
    }


@dataclass
class Completeness:
    """Genealogy completeness over the shipped lots."""

    shipped: int = 0
    complete: int = 0
    #: shipped lot -> the lots where its backward genealogy ends without a supplier receipt
    gaps: dict[str, list[str]] = field(default_factory=dict)

    @property
    def share(self) -> Decimal | None:
        """complete / shipped, or None when nothing was shipped."""
        return None if self.shipped == 0 else Decimal(self.complete) / Decimal(self.shipped)


@dataclass
class Kpis:
    """Every KPI at one moment (``as_of``)."""

    as_of: datetime
    completeness: Completeness
    #: site -> release cycle times in hours
    release_hours: dict[str, list[float]]
    #: site -> unit -> age band -> quantity on hand
    blocked: dict[str, dict[str, dict[str, Decimal]]]
    #: system kind -> (seconds from event time, seconds from record time)
    latency: dict[str, tuple[list[float], list[float]]]
    recall_ms: list[float]

    def to_json(self) -> dict[str, Any]:
        """The KPIs as ``GET /api/v1/kpis`` serves them (quantities as strings)."""
        c = self.completeness
        return {
            "as_of": self.as_of.isoformat(),
            "genealogy_completeness": {
                "shipped_lots": c.shipped,
                "complete_lots": c.complete,
                "share": None if c.share is None else str(c.share.quantize(Decimal("0.0001"))),
                "gaps": [
                    {"lot_id": lot, "ends_without_receipt": ends}
                    for lot, ends in sorted(c.gaps.items())[:EXAMPLES]
                ],
            },
            "release_cycle_time_hours": {
                site: summary(hours) for site, hours in sorted(self.release_hours.items())
            },
            "blocked_stock": {
                site: {
                    unit: {band: str(q) for band, q in bands.items()}
                    for unit, bands in sorted(units.items())
                }
                for site, units in sorted(self.blocked.items())
            },
            "reporting_latency_seconds": {
                kind: {"from_event": summary(ev), "from_record": summary(rec)}
                for kind, (ev, rec) in sorted(self.latency.items())
            },
            "mock_recall_ms": summary(self.recall_ms),
        }


def compute_kpis(store: GenealogyStore, *, now: datetime, site: str | None = None) -> Kpis:
    """Every KPI as of ``now``; with ``site``, only that site's lots, events and recalls."""
    now = utc(now)
    return Kpis(
        as_of=now,
        completeness=genealogy_completeness(store, site=site),
        release_hours=release_cycle_hours(store, site=site),
        blocked=blocked_stock(store, now=now, site=site),
        latency=reporting_latency(store, site=site),
        recall_ms=recall_times(store, site=site),
    )


def genealogy_completeness(store: GenealogyStore, *, site: str | None = None) -> Completeness:
    """Which shipped lots trace back, on every branch, to a supplier receipt."""
    docs, links = tables.documents, tables.lot_links
    parents: dict[str, set[str]] = defaultdict(set)
    with store.engine.connect() as conn:
        for row in conn.execute(
            select(links.c.parent_lot, links.c.child_lot).where(not_voided(links.c.child_event_id))
        ):
            parents[row.child_lot].add(row.parent_lot)
        received = set(
            conn.execute(
                select(docs.c.lot_id).where(
                    docs.c.cte == "RECEIVING",
                    docs.c.party_id.is_not(None),
                    not_voided(docs.c.event_id),
                )
            ).scalars()
        )
        shipped_q = select(docs.c.lot_id).where(
            docs.c.cte == "SHIPPING", not_voided(docs.c.event_id)
        )
        if site is not None:
            shipped_q = shipped_q.where(docs.c.site == site)
        shipped = sorted(set(conn.execute(shipped_q).scalars()))
    result = Completeness(shipped=len(shipped))
    for lot in shipped:
        # Walk backward; a rework loop is walked once. A lot both received and made from
        # others (a returned lot reworked) is fine if either way reaches a supplier.
        ends: list[str] = []
        seen = {lot}
        todo = [lot]
        while todo:
            current = todo.pop()
            ups = parents.get(current, set())
            if not ups:
                if current not in received:
                    ends.append(current)
                continue
            for up in ups - seen:
                seen.add(up)
                todo.append(up)
        if ends:
            result.gaps[lot] = sorted(ends)
        else:
            result.complete += 1
    return result


def release_cycle_hours(
    store: GenealogyStore, *, site: str | None = None
) -> dict[str, list[float]]:
    """Hours from each supplier receipt to the lot's first release at or after it."""
    docs, history = tables.documents, tables.status_history
    receipts: dict[str, tuple[datetime, str]] = {}
    releases: dict[str, list[datetime]] = defaultdict(list)
    with store.engine.connect() as conn:
        query = select(docs.c.lot_id, docs.c.occurred_at, docs.c.site).where(
            docs.c.cte == "RECEIVING", docs.c.party_id.is_not(None), not_voided(docs.c.event_id)
        )
        if site is not None:
            query = query.where(docs.c.site == site)
        for row in conn.execute(query):
            at = utc(row.occurred_at)
            if row.lot_id not in receipts or at < receipts[row.lot_id][0]:
                receipts[row.lot_id] = (at, row.site)
        for lot_id, released_at in conn.execute(
            select(history.c.lot_id, history.c.occurred_at).where(
                history.c.status == "RELEASED", not_voided(history.c.event_id)
            )
        ):
            releases[lot_id].append(utc(released_at))
    out: dict[str, list[float]] = defaultdict(list)
    for lot, (received_at, lot_site) in sorted(receipts.items()):
        after = [at for at in releases.get(lot, []) if at >= received_at]
        if after:
            out[lot_site].append((min(after) - received_at).total_seconds() / 3600)
    return dict(out)


def _band(age: timedelta) -> str:
    for label, upper in AGE_BANDS:
        if upper is None or age < upper:
            return label
    raise AssertionError("the last band is open")  # pragma: no cover - AGE_BANDS ends open


def blocked_stock(
    store: GenealogyStore, *, now: datetime, site: str | None = None
) -> dict[str, dict[str, dict[str, Decimal]]]:
    """On-hand quantity of blocked lots, by site, unit and age band of the blocking status."""
    lots, ledger = tables.lots, tables.lot_ledger
    out: dict[str, dict[str, dict[str, Decimal]]] = {}
    with store.engine.connect() as conn:
        query = select(lots.c.lot_id, lots.c.site, lots.c.status_at).where(
            lots.c.status.in_(BLOCKED)
        )
        if site is not None:
            query = query.where(lots.c.site == site)
        blocked = {r.lot_id: (r.site, r.status_at) for r in conn.execute(query)}
        on_hand: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        ids = sorted(blocked)
        for start in range(0, len(ids), 500):
            for r in conn.execute(
                select(ledger.c.lot_id, ledger.c.quantity, ledger.c.unit).where(
                    ledger.c.lot_id.in_(ids[start : start + 500]), not_voided(ledger.c.event_id)
                )
            ):
                on_hand[(r.lot_id, r.unit)] += r.quantity
    for (lot, unit), quantity in sorted(on_hand.items()):
        if quantity <= 0:
            continue
        lot_site, since = blocked[lot]
        band = _band(now - utc(since)) if since is not None else AGE_BANDS[-1][0]
        bands = out.setdefault(lot_site, {}).setdefault(
            unit, {label: Decimal(0) for label, _ in AGE_BANDS}
        )
        bands[band] += quantity
    return out


def reporting_latency(
    store: GenealogyStore, *, site: str | None = None
) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds from event time and from record time to the hub storing it, per system kind."""
    ev = tables.events
    out: dict[str, tuple[list[float], list[float]]] = {}
    with store.engine.connect() as conn:
        query = select(ev.c.system_kind, ev.c.occurred_at, ev.c.recorded_at, ev.c.ingested_at)
        if site is not None:
            query = query.where(ev.c.site == site)
        for r in conn.execute(query):
            stored = utc(r.ingested_at)
            from_event, from_record = out.setdefault(r.system_kind, ([], []))
            from_event.append((stored - utc(r.occurred_at)).total_seconds())
            from_record.append((stored - utc(r.recorded_at)).total_seconds())
    return out


def recall_times(store: GenealogyStore, *, site: str | None = None) -> list[float]:
    """Milliseconds each stored mock recall took."""
    recalls = tables.recalls
    with store.engine.connect() as conn:
        query = select(recalls.c.duration_ms)
        if site is not None:
            query = query.where(recalls.c.site == site)
        return [float(ms) for ms in conn.execute(query).scalars()]
