"""The reconciliation jobs: two views of the same facts, compared, mismatches named.

==========================  ===================================================================
job                         compares
==========================  ===================================================================
``on-hand``                 per lot, the ERP's on-hand with the WMS's (lots whose stock the
                            WMS itself took in: a receipt, transfer, production or return)
``consumption``             per production order both the MES and the ERP report, the MES's
                            consumption of each lot with the ERP's goods issue
``disposition``             per lot, the LIMS's latest disposition with the ERP's and the
                            WMS's latest status, once the LIMS decision is older than a grace
``transfers``               per transfer shipped from the site, the quantity received at the
                            destination; nothing received within the SLA is a mismatch
``capture``                 per pull connector of the site, the events its source yields for
                            the period (read again through the connector's read side) with the
                            events the hub holds from it: counts, a checksum, the missing ids
==========================  ===================================================================

Every job but ``capture`` looks at everything the hub knows as of ``until`` (so a run
sees every open mismatch of its site and job, and one that is gone can be withdrawn);
``capture`` re-reads the period ``since``..``until``. A job returns :class:`Mismatch`
records with both sides' figures and the events behind them; :mod:`reconciler.runner`
turns them into integrity alerts and withdraws the alerts whose mismatch is gone.

Example::

    found = on_hand_job(ReconcileContext(store=store, site="ALP", since=t0, until=t1))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from genealogy import tables
from genealogy.store import GenealogyStore, utc
from reconciler.views import (
    Books,
    Figure,
    Status,
    Transfer,
    books,
    consumption,
    latest_statuses,
    load_events,
    orders,
    transfers,
)
from schemas.model import SystemKind

#: event types the consumption and transfer views read whole
BATCH_TYPES = ("MaterialConsumed", "MaterialProduced", "Transformation")
TRANSFER_TYPES = ("TransferShipped", "TransferReceived")


@dataclass(frozen=True, kw_only=True)
class Mismatch:
    """Two views that disagree about one thing, with both sides' figures and evidence."""

    job: str
    site: str
    #: what disagrees, stable across runs (``lot:ALP:ALP-…``, ``order:PA-4711/lot:…``)
    key: str
    lots: list[str]
    #: ``KIND`` or ``KIND/instance`` of the systems compared
    systems: list[str]
    #: both sides' figures and the difference, as exact strings
    figures: dict[str, str]
    evidence_event_ids: list[str]
    summary: str


#: Reads the source of a pull connector again: (event ids, dead-lettered records) for a period.
SourceReader = Callable[[str, datetime, datetime], tuple[set[str], int]]


@dataclass(frozen=True, kw_only=True)
class ReconcileContext:
    """Where and when a job looks, and how strict it is."""

    store: GenealogyStore
    site: str
    since: datetime
    until: datetime
    #: difference tolerated between two quantities: absolute (enterprise units) or relative to
    #: the larger, whichever is more (unit conversions and scales round: 2,204.62 lb != 1,000 kg)
    tolerance: Decimal = Decimal("0.001")
    relative_tolerance: Decimal = Decimal("0.001")
    #: a transfer not received this long after shipping is a mismatch
    transfer_sla: timedelta = timedelta(hours=72)
    #: a LIMS decision younger than this is not compared yet (the ERP may not have caught up)
    status_grace: timedelta = timedelta(hours=1)
    #: pull connectors of the site, by name, and how to read their sources again
    connectors: Sequence[str] = ()
    read_source: SourceReader | None = None
    #: what the jobs load, shared by the jobs of a run (and, for every-site views, its sites)
    cache: dict[str, Any] = field(default_factory=dict)

    def _cached(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = load()
        return self.cache[key]

    def books(self) -> dict[SystemKind, Books]:
        """Each system's book on-hand per lot at the site (loaded once per run)."""
        found: dict[SystemKind, Books] = self._cached(
            f"books:{self.site}", lambda: books(self.store, site=self.site, until=self.until)
        )
        return found

    def statuses(self) -> dict[SystemKind, dict[str, Status]]:
        """Each system's latest status per lot at the site (loaded once per run)."""
        found: dict[SystemKind, dict[str, Status]] = self._cached(
            f"statuses:{self.site}",
            lambda: latest_statuses(self.store, site=self.site, until=self.until),
        )
        return found


def _q(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def _differs(a: Decimal, b: Decimal, ctx: ReconcileContext) -> bool:
    return abs(a - b) > max(ctx.tolerance, ctx.relative_tolerance * max(abs(a), abs(b)))


def on_hand_job(ctx: ReconcileContext) -> list[Mismatch]:
    """ERP vs WMS on-hand per lot (lots the WMS took in itself)."""
    systems = ctx.books()
    erp, wms = systems.get(SystemKind.ERP, Books()), systems.get(SystemKind.WMS, Books())
    found = []
    for lot in sorted(wms.taken_in):
        mine, theirs = erp.lots.get(lot, Figure()), wms.lots.get(lot, Figure())
        if not _differs(mine.quantity, theirs.quantity, ctx):
            continue
        unit = mine.unit or theirs.unit
        found.append(Mismatch(
            job="on-hand", site=ctx.site, key=f"lot:{lot}", lots=[lot], systems=["ERP", "WMS"],
            figures={"erp": _q(mine.quantity), "wms": _q(theirs.quantity),
                     "difference": _q(mine.quantity - theirs.quantity), "unit": unit},
            evidence_event_ids=sorted({*mine.events, *theirs.events}),
            summary=(f"{lot}: the ERP has {_q(mine.quantity)} {unit} on hand, the WMS "
                     f"{_q(theirs.quantity)} {unit}; find the transaction one of them is missing "
                     "(a pick, a count, a receipt) and post it"),
        ))  # fmt: skip
    return found


def consumption_job(ctx: ReconcileContext) -> list[Mismatch]:
    """MES consumption vs ERP goods issue, per order both systems know and lot."""
    systems = load_events(ctx.store, site=ctx.site, until=ctx.until, types=BATCH_TYPES)
    mes_events, erp_events = systems.get(SystemKind.MES, []), systems.get(SystemKind.ERP, [])
    shared = orders(mes_events) & orders(erp_events)
    mes, erp = consumption(mes_events), consumption(erp_events)
    found = []
    for order, lot in sorted({k for k in [*mes, *erp] if k[0] in shared}):
        used, issued = mes.get((order, lot), Figure()), erp.get((order, lot), Figure())
        if not _differs(used.quantity, issued.quantity, ctx):
            continue
        unit = used.unit or issued.unit
        if not issued.events:
            what = "the ERP never issued it to the order"
        elif not used.events:
            what = "the MES never reported consuming it"
        else:
            what = "the quantities differ"
        found.append(Mismatch(
            job="consumption", site=ctx.site, key=f"order:{order}/lot:{lot}", lots=[lot],
            systems=["MES", "ERP"],
            figures={"mes_consumed": _q(used.quantity), "erp_issued": _q(issued.quantity),
                     "difference": _q(used.quantity - issued.quantity), "unit": unit,
                     "order": order},
            evidence_event_ids=sorted({*used.events, *issued.events}),
            summary=(f"order {order}: the MES consumed {_q(used.quantity)} {unit} of {lot}, the "
                     f"ERP issued {_q(issued.quantity)} {unit} ({what}); correct the goods issue "
                     "or the batch record"),
        ))  # fmt: skip
    return found


def disposition_job(ctx: ReconcileContext) -> list[Mismatch]:
    """LIMS disposition vs the ERP's and the WMS's latest status, per lot."""
    systems = ctx.statuses()
    lims = systems.get(SystemKind.LIMS, {})
    others = {kind: systems.get(kind, {}) for kind in (SystemKind.ERP, SystemKind.WMS)}
    cutoff = utc(ctx.until) - ctx.status_grace
    found = []
    for lot, decided in sorted(lims.items()):
        if utc(decided.at) > cutoff:
            continue
        for kind, statuses in others.items():
            other = statuses.get(lot)
            if other is None or other.status == decided.status:
                continue
            found.append(Mismatch(
                job="disposition", site=ctx.site, key=f"lot:{lot}/{kind.value}", lots=[lot],
                systems=["LIMS", kind.value],
                figures={"lims": decided.status, kind.value.lower(): other.status,
                         "lims_at": decided.at.isoformat(), f"{kind.value.lower()}_at": other.at.isoformat()},
                evidence_event_ids=sorted({decided.event_id, other.event_id}),
                summary=(f"{lot}: the LIMS says {decided.status} but the {kind.value} says "
                         f"{other.status}; set the {kind.value} status to the QC decision "
                         "(or correct the decision in the LIMS)"),
            ))  # fmt: skip
    return found


def transfers_job(ctx: ReconcileContext) -> list[Mismatch]:
    """Transfers shipped from the site in the period vs received at their destination."""
    if "transfers" not in ctx.cache:  # every site's events: the receipt is at the destination
        everything = load_events(ctx.store, site=None, until=ctx.until, types=TRANSFER_TYPES)
        ctx.cache["transfers"] = transfers(e for events in everything.values() for e in events)
    found = []
    shipments: dict[str, Transfer] = ctx.cache["transfers"]
    for t in sorted(shipments.values(), key=lambda t: t.transfer_id):
        if t.from_site != ctx.site or t.shipped is None or t.shipped_at is None:
            continue
        lots = [x for x in (t.shipped_lot, t.received_lot) if x]
        if t.received is None:
            overdue = utc(ctx.until) - utc(t.shipped_at)
            if overdue <= ctx.transfer_sla:
                continue
            found.append(Mismatch(
                job="transfers", site=ctx.site, key=f"transfer:{t.transfer_id}", lots=lots,
                systems=[f"shipped@{t.from_site}"],
                figures={"shipped": _q(t.shipped.quantity), "received": "none",
                         "unit": t.shipped.unit, "shipped_at": t.shipped_at.isoformat(),
                         "hours_since": f"{overdue.total_seconds() / 3600:.1f}"},
                evidence_event_ids=sorted(t.shipped.events),
                summary=(f"transfer {t.transfer_id} of {t.shipped_lot} left {t.from_site} "
                         f"{overdue.total_seconds() / 3600:.0f} h ago and no receipt has reached "
                         "the hub; check that the destination posted it"),
            ))  # fmt: skip
            continue
        if t.shipped.unit == t.received.unit and _differs(
            t.shipped.quantity, t.received.quantity, ctx
        ):
            found.append(Mismatch(
                job="transfers", site=ctx.site, key=f"transfer:{t.transfer_id}", lots=lots,
                systems=[f"shipped@{t.from_site}", f"received@{t.to_site}"],
                figures={"shipped": _q(t.shipped.quantity), "received": _q(t.received.quantity),
                         "difference": _q(t.shipped.quantity - t.received.quantity),
                         "unit": t.shipped.unit},
                evidence_event_ids=sorted({*t.shipped.events, *t.received.events}),
                summary=(f"transfer {t.transfer_id}: {_q(t.shipped.quantity)} {t.shipped.unit} "
                         f"shipped from {t.from_site}, {_q(t.received.quantity)} received at "
                         f"{t.to_site}; find the loss or correct the receipt"),
            ))  # fmt: skip
    return found


def _checksum(ids: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def capture_job(ctx: ReconcileContext) -> list[Mismatch]:
    """Each pull connector's source, read again for the period, vs what the hub holds."""
    if ctx.read_source is None:
        return []
    ev = tables.events
    found = []
    for name in ctx.connectors:
        at_source, parked = ctx.read_source(name, ctx.since, ctx.until)
        with ctx.store.engine.connect() as conn:
            held = set(conn.execute(
                select(ev.c.event_id).where(
                    ev.c.system_instance == name, ev.c.occurred_at >= utc(ctx.since),
                    ev.c.occurred_at <= utc(ctx.until))
            ).scalars())  # fmt: skip
        missing = at_source - held
        if not missing:
            continue
        found.append(Mismatch(
            job="capture", site=ctx.site, key=f"connector:{name}", lots=[],
            systems=[name],
            figures={"source_events": str(len(at_source)), "hub_events": str(len(held & at_source)),
                     "missing": str(len(missing)), "dead_lettered_records": str(parked),
                     "source_checksum": _checksum(at_source), "hub_checksum": _checksum(held & at_source),
                     "first_missing": ", ".join(sorted(missing)[:10])},
            evidence_event_ids=[],
            summary=(f"{name}: its source has {len(at_source)} events for the period, the hub "
                     f"holds {len(held & at_source)}; {len(missing)} never arrived. Re-send them "
                     f"with `lothub connectors backfill {name} --since {ctx.since:%Y-%m-%d}`"),
        ))  # fmt: skip
    return found


#: every job by name, in the order a run takes them
JOBS: dict[str, Callable[[ReconcileContext], list[Mismatch]]] = {
    "on-hand": on_hand_job,
    "consumption": consumption_job,
    "disposition": disposition_job,
    "transfers": transfers_job,
    "capture": capture_job,
}
