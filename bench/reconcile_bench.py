"""A reconciliation pass over many lots across three sites: time and peak memory vs the floor.

The store holds, per lot, what four systems said of it: the ERP's and the WMS's receipt,
the WMS's put-away, the LIMS's release and the ERP's status, a shipment booked in both;
every tenth lot goes into a production order reported by the MES, the ERP and the WMS
(its issue to production), every fiftieth is transferred to the next site. One lot in a hundred carries a seeded fault
(a shipment the WMS never booked, a stale ERP status), so the pass has findings to write.
Events are stored as the stream's sink stores them (``GenealogyStore.apply``: the events
and what the store derives, the ledger and status history the jobs read).

Measured, each in a fresh process so peak memory is its own:

* **floor**: running the queries the jobs run (each site's ledger, status history and batch
  events, every site's transfer events) and reading every row, without folding or comparing;
* **reconcile**: ``run_reconciliation`` of every job but ``capture`` (which re-reads plant
  systems, not the store) over the three sites, alerts written.

Target: reconcile <= 3x the floor.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from genealogy.store import GenealogyStore
from reconciler.jobs import BATCH_TYPES, TRANSFER_TYPES
from reconciler.runner import run_reconciliation
from reconciler.views import ledger_query, payload_query, status_query
from schemas.model import (
    DocumentRef,
    Envelope,
    Item,
    Location,
    LotEventBase,
    LotMoved,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MoveKind,
    Party,
    Quantity,
    Source,
    SystemKind,
    TransferReceived,
    TransferShipped,
    TransformationKind,
    stable_event_id,
)

SITES = ("ALP", "BRK", "CRV")
T0 = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = T0 + timedelta(days=60)
JOBS = ["on-hand", "consumption", "disposition", "transfers"]
ITEM = Item(item_code="MP-100", description="Skimmed milk powder")
SUPPLIER = Party(party_id="V-1", name="Supplier")
CUSTOMER = Party(party_id="C-1", name="Customer")


def _kg(value: int) -> Quantity:
    return Quantity(value=Decimal(value), unit="KGM")


def lot_events(n: int) -> list[LotEventBase]:
    """Everything the four systems say of lot ``n``."""
    site = SITES[n % 3]
    lot, at = f"{site}:L{n:07d}", T0 + timedelta(seconds=n * 10)
    wh = Location(location_id=f"{site}-WH", name="Warehouse", site=site)
    bin_ = Location(location_id=f"{site}-WH/B{n % 40:02d}", name="Bin", site=site)
    seq = iter(range(1, 100))

    def env(kind: SystemKind, event_type: str, minutes: int) -> Envelope:
        instance = f"{kind.value.lower()}-{site.lower()}"
        when = at + timedelta(minutes=minutes)
        return Envelope(
            event_id=stable_event_id(instance, event_type, f"{lot}/{minutes}"),
            event_type=event_type, source=Source(system_kind=kind, system_instance=instance, site=site),
            occurred_at=when, recorded_at=when, sequence=next(seq),
        )  # fmt: skip

    erp, wms, mes, lims = SystemKind.ERP, SystemKind.WMS, SystemKind.MES, SystemKind.LIMS
    po = DocumentRef(doc_type="PO", number=f"PO-{n}")
    events: list[LotEventBase] = [
        LotReceived(envelope=env(kind, "LotReceived", 0), lot=lot, item=ITEM, quantity=_kg(1000),
                    supplier=SUPPLIER, supplier_lot=f"S-{n}", receiving_location=wh,
                    ship_from=wh, reference_document=po)
        for kind in (erp, wms)
    ]  # fmt: skip
    events.append(LotMoved(envelope=env(wms, "LotMoved", 5), kind=MoveKind.PUTAWAY, lot=lot,
                           item=ITEM, quantity=_kg(1000), from_location=wh, to_location=bin_))  # fmt: skip
    events.append(LotStatusChanged(envelope=env(lims, "LotStatusChanged", 60), lot=lot,
                                   status="RELEASED", reason_code="QC", actor="qa"))  # fmt: skip
    stale = n % 100 == 42
    events.append(LotStatusChanged(envelope=env(erp, "LotStatusChanged", 61), lot=lot,
                                   status="QUARANTINE" if stale else "RELEASED",
                                   reason_code="QC", actor="sync"))  # fmt: skip
    if n % 10 == 0:
        order = DocumentRef(doc_type="BATCH_RECORD", number=f"OR-{n}")
        for kind in (mes, erp, wms):  # the WMS books the issue to production too
            events.append(MaterialConsumed(
                envelope=env(kind, "MaterialConsumed", 90), batch_id=f"{kind.value}/OR-{n}",
                kind=TransformationKind.BLEND, location=wh, lot=lot, item=ITEM,
                quantity=_kg(300), reference_document=order,
            ))  # fmt: skip
    for kind in (erp, wms):
        if kind is wms and n % 100 == 7:
            continue  # the WMS never booked this shipment
        events.append(LotShipped(
            envelope=env(kind, "LotShipped", 120), lot=lot, item=ITEM, quantity=_kg(200),
            customer=CUSTOMER, ship_to=wh, ship_from=bin_ if kind is wms else wh,
            reference_document=DocumentRef(doc_type="BOL", number=f"BOL-{n}"),
        ))  # fmt: skip
    if n % 50 == 1:
        to = SITES[(n + 1) % 3]
        doc = DocumentRef(doc_type="TRANSFER_ORDER", number=f"TO-{n}")
        there = Location(location_id=f"{to}-WH", name="Warehouse", site=to)
        for kind in (erp, wms):
            events.append(TransferShipped(
                envelope=env(kind, "TransferShipped", 150), transfer_id=f"TO-{n}", lot=lot,
                item=ITEM, quantity=_kg(100), from_location=wh, to_location=there,
                reference_document=doc,
            ))  # fmt: skip
        receipt = env(erp, "TransferReceived", 600)
        receipt = receipt.model_copy(
            update={"source": Source(system_kind=erp, system_instance=f"erp-{to.lower()}", site=to)}
        )
        events.append(TransferReceived(
            envelope=receipt, transfer_id=f"TO-{n}", shipped_lot=lot, shipped_lot_site=site,
            lot=f"{to}:T{n:07d}", item=ITEM, quantity=_kg(100), from_location=wh,
            receiving_location=there, reference_document=doc,
        ))  # fmt: skip
    return events


def load(url: str, lots: int) -> int:
    """Store the events of ``lots`` lots as the stream's sink would; return how many."""
    store = GenealogyStore.connect(url)
    store.migrate()
    count, batch = 0, []
    try:
        for n in range(lots):
            batch.extend(lot_events(n))
            if len(batch) >= 5_000:
                store.apply(batch)
                count, batch = count + len(batch), []
        store.apply(batch)
        return count + len(batch)
    finally:
        store.close()


def _floor(url: str) -> int:
    """Read, without folding or comparing, every row the jobs read."""
    store = GenealogyStore.connect(url)
    queries = [
        q for site in SITES for q in (ledger_query(site, UNTIL), status_query(site, UNTIL),
                                      payload_query(site, UNTIL, BATCH_TYPES))
    ] + [payload_query(None, UNTIL, TRANSFER_TYPES)]  # fmt: skip
    rows = 0
    try:
        with store.engine.connect() as conn:
            for query in queries:
                for _ in conn.execution_options(yield_per=5000).execute(query):
                    rows += 1
    finally:
        store.close()
    return rows


def _reconcile(url: str) -> int:
    store = GenealogyStore.connect(url)
    try:
        results = run_reconciliation(store, list(SITES), since=T0, until=UNTIL, jobs=JOBS)
    finally:
        store.close()
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(errors)
    return sum(len(r.mismatches) for r in results)


def _measure(name: str, url: str, queue: Any) -> None:
    began = time.perf_counter()
    result = _floor(url) if name == "floor" else _reconcile(url)
    seconds = time.perf_counter() - began
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, result))


def measure(name: str, url: str) -> tuple[float, int, int]:
    """(seconds, peak RSS in KiB, rows read or mismatches found) of one run in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(name, url, queue))
    process.start()
    result: tuple[float, int, int] = queue.get()
    process.join()
    return result


def main(*, lots: int = 100_000) -> None:
    """Load, then time the floor and the reconciliation pass; print the table."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'reconcile.db'}"
        began = time.perf_counter()
        events = load(url, lots)
        print(f"reconcile bench: {lots:,} lots, {events:,} events across {len(SITES)} sites "
              f"(SQLite), stored in {time.perf_counter() - began:.0f}s", flush=True)  # fmt: skip
        floor_s, floor_kb, rows = measure("floor", url)
        run_s, run_kb, found = measure("reconcile", url)
    print(f"{'':<24}{'seconds':>10}{'peak RSS MiB':>14}")
    print(f"{'floor (read rows)':<24}{floor_s:>10.2f}{floor_kb / 1024:>14.0f}   {rows:,} rows")
    print(f"{'reconciliation pass':<24}{run_s:>10.2f}{run_kb / 1024:>14.0f}   {found:,} mismatches")
    print(f"ratio to the floor: {run_s / floor_s:.2f}x (target <= 3x)")
