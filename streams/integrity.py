"""Integration-control integrity checks, evaluated in the stream at event time.

Design: the open alerts are a function of the facts, not of their arrival order
-------------------------------------------------------------------------------

**Facts.** The normalizer turns every enterprise event into *facts* about *subjects*
(:func:`facts_of`) and publishes them on ``lothub.integrity.facts`` keyed by subject,
so every fact about one subject reaches one partition, whichever lot the event
itself was keyed by (a transformation is keyed by its first output, yet consumes
other lots)::

    lot:<lot id>                  status changes, origins (received, produced, transfer
                                  received), returns, uses (consumed), shipments (shipped,
                                  transferred out), scrap and adjustments
    batch:<site>:<batch id>       inputs and outputs of an MES batch or a transformation
    alias:<site>:<kind>:<alias>   the lots an alias (licence plate, MES sub-lot...) names
    source:<system instance>      the event time and sequence number of every event the
                                  system sent

**State.** The ``integrity_check`` agent keeps, per subject, the facts known (by fact
id: a re-delivered event changes nothing) and the alerts it has published as open,
in a faust table whose changelog (``lothub.integrity.state``, created up front) lets a
restarted worker carry on where it stopped.

**Evaluation.** Each rule is a pure function of one subject's facts
(:func:`lot_findings`, :func:`batch_findings`, :func:`alias_findings`), and a
finding's id is a UUIDv5 of rule, subject and sorted evidence event ids
(:func:`schemas.alerts.alert_id`). On every new fact :func:`step` re-evaluates the
subject: a finding not yet open is published ``OPEN``; an open alert the facts no
longer support (the receipt of an "orphan" lot arrived late) is published again,
same id, ``WITHDRAWN``. Times are event times: a lot's status at a use is the
latest status change whose event time is not after the use, whatever order the
two arrived in. So once every event has arrived, the open alerts are the same for
any arrival order (children before parents included); only the path there (an
alert opened and withdrawn while facts were missing) differs.

Four rules are about delivery rather than lots and are the exceptions:

* ``late-event`` compares an event time with the newest event time its source had
  sent *before it* through the same raw-topic partition. Sending order is the point,
  and a partition keeps it, while a worker reading six partitions interleaves them in
  any order (a backlog is read partition by partition): judged across partitions, an
  event the source sent in order was flagged whenever another partition's later events
  happened to be read first. Never withdrawn. An event of a densely
  numbered source whose number was already seen is a re-delivery (a worker restarted
  before committing its offsets) and is not judged again, so a restart adds no alert.
* ``sequence-gap`` is for sources that number their events densely (1, 2, 3...: the
  connectors ``wms-sql``, ``lims-csv`` and ``lims-rest``, and the systems named in
  ``LOTHUB_INTEGRITY_DENSE_SOURCES``): the source subject keeps the lowest and highest
  number seen and the *ranges* missing in between (:class:`Numbering`), and the timer's
  tick raises an alert for each range still missing ``sequence_gap_after`` (wall clock)
  after it was noticed, naming the range and the events either side of it. One source's
  events travel through several partitions, so a little disorder is normal and the
  grace keeps it quiet. The missing events arriving late withdraw it (a part of them:
  the alert is withdrawn and the next tick raises the ranges still missing); a number
  seen again is a duplicate, not a gap; number 0 means "not numbered" (a LIMS sample
  event that every row of the sample repeats). The ranges, and so the alerts once the
  grace has passed, are the same for any arrival order.
* ``duplicate-conflict`` is raised by the store sink when an ``event_id`` comes again
  with other content; the id is the event id's, the same in any order.
* ``unmapped-value`` is raised when the normalizer parks an event on the dead-letter
  topic; the store withdraws it once the event is replayed and stored.

Two rules depend on the clock, so a timer in the worker sends a ``tick`` fact to every
source and open transfer subject on its partitions (the table can only be written from
the stream): ``source-stall`` (a source silent, by wall clock, for longer than its limit;
withdrawn when it speaks again) and ``transfer-overdue`` (a transfer shipped longer than
the SLA ago, by event time, that no site has received; withdrawn by the receipt). The
tick also raises ``sequence-gap`` alerts whose grace has passed (see above).

Not done: a correction (``EventCorrected``) does not retract the facts of the events
it voids.

Example::

    >>> state, alerts = step(None, facts_of(consumption_of_held_lot), Thresholds(), now)  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter

from genealogy.store import Conflict
from schemas.alerts import AlertState, Finding, IntegrityAlert, Rule
from schemas.errors import UnmappedValueError
from schemas.model import (
    BLOCKED_STATUSES,
    AdjustmentKind,
    CustomerReturn,
    InventoryAdjusted,
    LotAliasLinked,
    LotEventBase,
    LotMoved,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    Quantity,
    TransferReceived,
    TransferShipped,
    Transformation,
)
from schemas.topics import INTEGRITY_FACTS

#: Alerts stored for the first time (re-detections and withdrawals are not counted).
ALERTS_RAISED = Counter(
    "lothub_integrity_alerts_total",
    "Integrity alerts raised, by rule, severity and site they name",
    ["rule", "severity", "site"],
)


class FactRole(StrEnum):
    """What an event says about a subject."""

    STATUS = "status"  # lot: status changed
    ORIGIN = "origin"  # lot: received, produced, or received from another site
    RETURN = "return"  # lot: came back from a customer
    USE = "use"  # lot: consumed by a batch or transformation
    SHIP = "ship"  # lot: shipped to a customer or transferred to another site
    SCRAP = "scrap"  # lot: scrapped or destroyed (signed quantity)
    ADJUST = "adjust"  # lot: count adjustment (signed quantity)
    INPUT = "input"  # batch: a lot went in
    OUTPUT = "output"  # batch: a lot came out
    ALIAS = "alias"  # alias: linked to a lot
    SEEN = "seen"  # source: sent an event
    TICK = "tick"  # source or transfer: the clock passed (the worker's timer), nothing happened


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """One thing one event says about one subject (see the module docstring)."""

    subject: str
    role: FactRole
    event_id: str
    event_type: str
    #: event time, UTC
    at: datetime
    #: ``KIND/instance`` of the system that sent the event
    source: str
    #: the site of that system
    site: str
    lot: str = ""
    status: str = ""
    quantity: Decimal | None = None
    unit: str = ""
    location: str = ""
    #: position within the event (a transformation names several lots)
    index: int = 0
    #: a source subject: the event's number in its source (0: not numbered)
    sequence: int = 0
    #: a source subject: the raw-topic partition the event came through (-1: unknown)
    partition: int = -1

    @property
    def fact_id(self) -> str:
        """Stable identity: an event re-delivered yields the same fact ids."""
        return f"{self.event_id}/{self.role.value}/{self.index}"

    def to_json(self) -> dict[str, Any]:
        """Compact JSON for the facts topic and the state table."""
        data = {"s": self.subject, "r": self.role.value, "e": self.event_id,
                "y": self.event_type, "t": self.at.isoformat(), "src": self.source,
                "site": self.site, "lot": self.lot, "st": self.status,
                "q": None if self.quantity is None else str(self.quantity), "u": self.unit,
                "loc": self.location, "i": self.index, "n": self.sequence, "p": self.partition}  # fmt: skip
        return data

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fact:
        """Inverse of :meth:`to_json`."""
        return cls(subject=d["s"], role=FactRole(d["r"]), event_id=d["e"], event_type=d["y"],
                   at=datetime.fromisoformat(d["t"]), source=d["src"], site=d["site"],
                   lot=d["lot"], status=d["st"],
                   quantity=None if d["q"] is None else Decimal(d["q"]), unit=d["u"],
                   location=d["loc"], index=d["i"], sequence=d.get("n", 0),
                   partition=d.get("p", -1))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Configurable limits of the rules (from settings; see ``lothub/settings.py``)."""

    #: outputs may weigh this fraction more than inputs
    mass_gain_tolerance: Decimal = Decimal("0.01")
    #: and this fraction less (1 = losses are never flagged)
    mass_loss_tolerance: Decimal = Decimal("1")
    #: an event this far behind its source's newest event time is late
    late_horizon: timedelta = timedelta(days=1)
    #: a source silent this long (wall clock) is stalled; None: never
    stall_after: timedelta | None = timedelta(hours=1)
    #: per system instance (a connector's name), when its own rhythm differs
    stall_after_by_source: Mapping[str, timedelta] = field(default_factory=dict)
    #: a transfer shipped this long ago (event time) and not received is overdue
    transfer_sla: timedelta = timedelta(hours=72)
    #: system instances that number their events densely: a skipped number is a lost event
    dense_sources: frozenset[str] = frozenset()
    #: a skipped number still missing this long (wall clock) after it was noticed is a gap
    sequence_gap_after: timedelta = timedelta(minutes=5)

    def stall_limit(self, system_instance: str) -> timedelta | None:
        """How long ``system_instance`` may stay silent."""
        return self.stall_after_by_source.get(system_instance, self.stall_after)


def site_of(lot_id: str) -> str:
    """The site part of an enterprise lot id."""
    return lot_id.split(":", 1)[0]


# --------------------------------------------------------------------------- facts


def facts_of(ev: LotEventBase, *, partition: int = -1) -> list[Fact]:
    """Every fact an enterprise event states, about every subject it concerns.

    ``partition`` is the raw-topic partition the event came through: the source sends
    each partition's events in order, which is what ``late-event`` judges by.
    """
    env = ev.envelope
    base: dict[str, Any] = {
        "event_id": env.event_id,
        "event_type": env.event_type,
        "at": env.occurred_at.astimezone(UTC),
        "source": f"{env.source.system_kind.value}/{env.source.system_instance}",
        "site": env.source.site,
    }
    lots = ev.lots()
    out = [Fact(subject=f"source:{env.source.system_instance}", role=FactRole.SEEN,
                lot=lots[0] if lots else "", sequence=env.sequence, partition=partition,
                **base)]  # fmt: skip

    def lot(role: FactRole, lot_id: str, q: Quantity | None = None, location: Any = None,
            index: int = 0, status: str = "") -> None:  # fmt: skip
        out.append(Fact(subject=f"lot:{lot_id}", role=role, lot=lot_id, status=status,
                        quantity=None if q is None else q.value, unit="" if q is None else q.unit,
                        location=location.location_id if location else "", index=index, **base))  # fmt: skip

    def batch(role: FactRole, batch_id: str, lot_id: str, q: Quantity, index: int = 0) -> None:
        out.append(Fact(subject=f"batch:{env.source.site}:{batch_id}", role=role, lot=lot_id,
                        quantity=q.value, unit=q.unit, index=index, **base))  # fmt: skip

    def alias(kind: str, name: str, lot_id: str) -> None:
        out.append(Fact(subject=f"alias:{site_of(lot_id)}:{kind}:{name}", role=FactRole.ALIAS,
                        lot=lot_id, **base))  # fmt: skip

    if isinstance(ev, LotReceived | TransferReceived):
        lot(FactRole.ORIGIN, ev.lot, ev.quantity, ev.receiving_location)
    if isinstance(ev, TransferReceived):
        out.append(Fact(subject=f"transfer:{ev.transfer_id}", role=FactRole.ORIGIN, lot=ev.lot,
                        quantity=ev.quantity.value, unit=ev.quantity.unit,
                        location=ev.receiving_location.location_id, **base))  # fmt: skip
    elif isinstance(ev, MaterialProduced):
        lot(FactRole.ORIGIN, ev.lot, ev.quantity, ev.location)
        batch(FactRole.OUTPUT, ev.batch_id, ev.lot, ev.quantity)
    elif isinstance(ev, MaterialConsumed):
        lot(FactRole.USE, ev.lot, ev.quantity, ev.location)
        batch(FactRole.INPUT, ev.batch_id, ev.lot, ev.quantity)
    elif isinstance(ev, Transformation):
        for i, x in enumerate(ev.inputs):
            lot(FactRole.USE, x.lot, x.quantity, ev.location, index=i)
            batch(FactRole.INPUT, ev.transformation_id, x.lot, x.quantity, index=i)
        for i, x in enumerate(ev.outputs):
            lot(FactRole.ORIGIN, x.lot, x.quantity, ev.location, index=i)
            batch(FactRole.OUTPUT, ev.transformation_id, x.lot, x.quantity, index=i)
    elif isinstance(ev, LotShipped):
        lot(FactRole.SHIP, ev.lot, ev.quantity, ev.ship_from)
    elif isinstance(ev, TransferShipped):
        lot(FactRole.SHIP, ev.lot, ev.quantity, ev.from_location)
        out.append(Fact(subject=f"transfer:{ev.transfer_id}", role=FactRole.SHIP, lot=ev.lot,
                        quantity=ev.quantity.value, unit=ev.quantity.unit,
                        location=ev.to_location.location_id, **base))  # fmt: skip
    elif isinstance(ev, CustomerReturn):
        lot(FactRole.RETURN, ev.lot, ev.quantity, ev.receiving_location)
    elif isinstance(ev, InventoryAdjusted):
        role = FactRole.ADJUST if ev.kind is AdjustmentKind.ADJUSTMENT else FactRole.SCRAP
        lot(role, ev.lot, ev.quantity_change, ev.location)
    elif isinstance(ev, LotStatusChanged):
        lot(FactRole.STATUS, ev.lot, status=ev.status)
    elif isinstance(ev, LotAliasLinked):
        alias(ev.alias_kind, ev.alias, ev.lot)
    elif isinstance(ev, LotMoved) and ev.license_plate:
        alias("LICENSE_PLATE", ev.license_plate, ev.lot)
    return out


def partition_of(subject: str, partitions: int = INTEGRITY_FACTS.partitions) -> int:
    """The facts partition of a subject: Kafka's default partitioner over its key.

    The same as the producer picks for a record keyed by the subject (the clock's ticks
    are sent so), and as the integrity table picks for the subject's state.
    """
    return int(DefaultPartitioner()(subject.encode(), list(range(partitions)), None))


def by_partition(facts: Iterable[Fact]) -> dict[int, list[Fact]]:
    """Facts grouped by the partition of their subject, in the order given.

    The normalizer sends one facts record per partition and batch: a record per subject
    cost more in producing and consuming than the checks it feeds.
    """
    grouped: dict[int, list[Fact]] = defaultdict(list)
    partitions: dict[str, int] = {}  # murmur2 in Python: once per subject, not per fact
    for f in facts:
        partition = partitions.get(f.subject)
        if partition is None:
            partition = partitions[f.subject] = partition_of(f.subject)
        grouped[partition].append(f)
    return dict(grouped)


def encode_facts(facts: Sequence[Fact]) -> bytes:
    """A facts-topic value: facts of subjects of one partition, in the order read."""
    return orjson.dumps([f.to_json() for f in facts])


def decode_facts(data: bytes) -> list[Fact]:
    """Inverse of :func:`encode_facts`."""
    return [Fact.from_json(d) for d in orjson.loads(data)]


# --------------------------------------------------------------------------- rules


def _when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def _order(f: Fact) -> tuple[datetime, str, int]:
    return (f.at, f.event_id, f.index)


def _verb(f: Fact) -> str:
    if f.role is FactRole.USE:
        return "consumed"
    return "transferred to another site" if f.event_type == "TransferShipped" else "shipped"


def _qty(f: Fact) -> str:
    return f"{f.quantity} {f.unit}" if f.quantity is not None else "an unknown quantity"


def lot_findings(lot_id: str, facts: Iterable[Fact], th: Thresholds) -> list[Finding]:
    """Hold violations, orphan uses and a negative book on-hand of one lot."""
    facts = sorted(facts, key=_order)
    return [*hold_violations(lot_id, facts), *orphan_uses(lot_id, facts),
            *negative_on_hand(lot_id, facts)]  # fmt: skip


def hold_violations(lot_id: str, facts: Sequence[Fact]) -> list[Finding]:
    """A use or shipment while the lot's status *at that event time* blocked it."""
    statuses = [f for f in facts if f.role is FactRole.STATUS]
    out: list[Finding] = []
    for use in (f for f in facts if f.role in (FactRole.USE, FactRole.SHIP)):
        current = None
        for s in statuses:  # sorted by event time: the last one not after the use
            if s.at > use.at:
                break
            current = s
        if current is None or current.status not in BLOCKED_STATUSES:
            continue
        out.append(Finding(
            rule=Rule.HOLD_VIOLATION, subject=f"lot:{lot_id}", lots=[lot_id],
            sites=[site_of(lot_id), use.site, current.site],
            source_systems=[use.source, current.source],
            evidence_event_ids=[current.event_id, use.event_id],
            summary=(f"Lot {lot_id} was {_verb(use)} ({_qty(use)}, {use.event_type} at "
                     f"{_when(use.at)}, reported by {use.source}) while it was {current.status} "
                     f"since {_when(current.at)} ({current.source}). Block what is left of it, find "
                     f"where the material went (trace forward) and check why {use.source} "
                     f"let a blocked lot be {_verb(use)}."),
            details={"status": current.status, "status_at": current.at.isoformat(),
                     "used_at": use.at.isoformat(), "event_type": use.event_type,
                     "quantity": str(use.quantity or ""), "unit": use.unit},
        ))  # fmt: skip
    return out


def orphan_uses(lot_id: str, facts: Sequence[Fact]) -> list[Finding]:
    """Uses and shipments of a lot the hub never saw received or produced."""
    if any(f.role is FactRole.ORIGIN for f in facts):
        return []
    return [Finding(
        rule=Rule.ORPHAN_LOT, subject=f"lot:{lot_id}", lots=[lot_id],
        sites=[site_of(lot_id), use.site], source_systems=[use.source],
        evidence_event_ids=[use.event_id],
        summary=(f"Lot {lot_id} was {_verb(use)} ({_qty(use)}, {use.event_type} at "
                 f"{_when(use.at)}, reported by {use.source}) but the hub has no receipt or "
                 f"production of it. Check that the receiving or production record reached "
                 f"the hub (connector dead letters, interface logs) or whether the lot code "
                 f"was mistyped."),
        details={"event_type": use.event_type, "used_at": use.at.isoformat(),
                 "quantity": str(use.quantity or ""), "unit": use.unit},
    ) for use in facts if use.role in (FactRole.USE, FactRole.SHIP)]  # fmt: skip


# Scrap and adjustments carry their own sign.
_SIGN = {FactRole.ORIGIN: 1, FactRole.RETURN: 1, FactRole.USE: -1, FactRole.SHIP: -1,
         FactRole.SCRAP: 1, FactRole.ADJUST: 1}  # fmt: skip


def negative_on_hand(lot_id: str, facts: Sequence[Fact]) -> list[Finding]:
    """More left the lot than ever entered it (per unit), for a lot whose origin is known.

    The book on-hand is summed over every location: plant systems rarely report the
    move from a warehouse to a production line, so a per-location balance would flag
    every consumption. A lot with no origin at all is an orphan instead.
    """
    if not any(f.role is FactRole.ORIGIN for f in facts):
        return []
    inflow: dict[str, Decimal] = defaultdict(Decimal)
    outflow: dict[str, Decimal] = defaultdict(Decimal)
    out_events: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        if f.role not in _SIGN or f.quantity is None:
            continue
        delta = _SIGN[f.role] * f.quantity
        if delta >= 0:
            inflow[f.unit] += delta
        else:
            outflow[f.unit] -= delta
            out_events[f.unit].add(f.event_id)
            sources[f.unit].add(f.source)
    out: list[Finding] = []
    for unit in sorted(outflow):
        on_hand = inflow[unit] - outflow[unit]
        if on_hand >= 0:
            continue
        out.append(Finding(
            rule=Rule.NEGATIVE_ON_HAND, subject=f"lot:{lot_id}", lots=[lot_id],
            sites=[site_of(lot_id)], source_systems=sorted(sources[unit]),
            evidence_event_ids=sorted(out_events[unit]),
            summary=(f"More of lot {lot_id} left than ever entered it: {outflow[unit]} {unit} "
                     f"consumed, shipped or scrapped against {inflow[unit]} {unit} received, "
                     f"produced or returned (on hand {on_hand} {unit}). A receipt or production "
                     f"event is missing, or a quantity was booked twice or in the wrong unit."),
            details={"unit": unit, "inflow": str(inflow[unit]), "outflow": str(outflow[unit]),
                     "on_hand": str(on_hand)},
        ))  # fmt: skip
    return out


def batch_findings(subject: str, facts: Iterable[Fact], th: Thresholds) -> list[Finding]:
    """Mass balance of one batch (or transformation): outputs against inputs, one unit.

    Judged only once the batch has both inputs and outputs, and only when every
    quantity is in the same unit (kilograms of milk powder and pieces of cartons
    cannot be weighed against each other).
    """
    facts = sorted(facts, key=_order)
    ins = [f for f in facts if f.role is FactRole.INPUT]
    outs = [f for f in facts if f.role is FactRole.OUTPUT]
    units = {f.unit for f in [*ins, *outs]}
    if not ins or not outs or len(units) != 1:
        return []
    unit = units.pop()
    total_in = sum((f.quantity or Decimal(0) for f in ins), Decimal(0))
    total_out = sum((f.quantity or Decimal(0) for f in outs), Decimal(0))
    if total_in <= 0:
        return []
    gain = (total_out - total_in) / total_in
    if -th.mass_loss_tolerance <= gain <= th.mass_gain_tolerance:
        return []
    _, site, batch = subject.split(":", 2)
    pct = (gain * 100).quantize(Decimal("0.01"))
    what = "more" if gain > 0 else "less"
    allowed = th.mass_gain_tolerance if gain > 0 else th.mass_loss_tolerance
    lots = sorted({f.lot for f in facts})
    return [Finding(
        rule=Rule.MASS_BALANCE, subject=subject, lots=lots,
        sites=[site, *(site_of(x) for x in lots)], source_systems=sorted({f.source for f in facts}),
        evidence_event_ids=sorted({f.event_id for f in facts}),
        summary=(f"Batch {batch} at {site} put out {total_out} {unit} from {total_in} {unit} of "
                 f"inputs: {abs(pct)} % {what} than went in (tolerance {allowed * 100} %). "
                 f"A consumption or production record is missing, duplicated or in the wrong "
                 f"unit; compare the batch record with what the MES/ERP reported."),
        details={"unit": unit, "inputs": str(total_in), "outputs": str(total_out),
                 "difference_pct": str(pct), "tolerance_pct": str(allowed * 100)},
    )]  # fmt: skip


def alias_findings(subject: str, facts: Iterable[Fact]) -> list[Finding]:
    """One alias (licence plate, sub-lot...) linked to more than one lot."""
    facts = list(facts)
    lots = sorted({f.lot for f in facts})
    if len(lots) < 2:
        return []
    _, site, kind, name = subject.split(":", 3)
    return [Finding(
        rule=Rule.ALIAS_CONFLICT, subject=subject, lots=lots, sites=[site, *(site_of(x) for x in lots)],
        source_systems=sorted({f.source for f in facts}),
        evidence_event_ids=sorted({f.event_id for f in facts}),
        summary=(f"{kind} {name!r} at {site} names {len(lots)} different lots: {', '.join(lots)}. "
                 f"The hub keeps every link, so a lookup by this alias is ambiguous; fix the "
                 f"alias in the source system and void the wrong link with a correction."),
        details={"alias_kind": kind, "alias": name, "lots": ",".join(lots)},
    )]  # fmt: skip


def late_finding(fact: Fact, newest: datetime | None, th: Thresholds) -> Finding | None:
    """An event whose time is more than the horizon behind its source's newest event time."""
    if newest is None or fact.at >= newest - th.late_horizon:
        return None
    behind = newest - fact.at
    system = fact.subject.split(":", 1)[1]
    return Finding(
        rule=Rule.LATE_EVENT, subject=fact.subject, lots=[fact.lot] if fact.lot else [],
        sites=[fact.site], source_systems=[fact.source], evidence_event_ids=[fact.event_id],
        summary=(f"{fact.event_type} {fact.event_id} from {system} happened at {_when(fact.at)}, "
                 f"{behind} before the newest event {system} had already sent ({_when(newest)}; "
                 f"horizon {th.late_horizon}). The hub stored it in its place in the genealogy, "
                 f"but traces and recalls answered in between missed it: check the connector's "
                 f"backlog or the system's outbox."),
        details={"event_type": fact.event_type, "occurred_at": fact.at.isoformat(),
                 "newest_seen": newest.isoformat(), "behind_s": str(int(behind.total_seconds())),
                 "horizon_s": str(int(th.late_horizon.total_seconds()))},
    )  # fmt: skip


def evaluate(subject: str, facts: Iterable[Fact], th: Thresholds) -> list[Finding]:
    """Every finding of the rules for one subject (pure: the same facts, the same findings)."""
    kind, _, rest = subject.partition(":")
    if kind == "lot":
        return lot_findings(rest, facts, th)
    if kind == "batch":
        return batch_findings(subject, facts, th)
    if kind == "alias":
        return alias_findings(subject, facts)
    return []


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class Gap:
    """Numbers ``first..last`` of a densely numbered source that have not arrived."""

    first: int
    last: int
    #: the events numbered ``first - 1`` and ``last + 1`` (the evidence)
    before: str
    after: str
    #: wall clock when the hub noticed the numbers missing
    noticed: datetime
    #: its alert was published OPEN (the alert is rebuilt from the gap to withdraw it)
    raised: bool = False

    def to_json(self) -> list[Any]:
        """Compact JSON for the state table."""
        return [self.first, self.last, self.before, self.after, self.noticed.isoformat(),
                self.raised]  # fmt: skip

    @classmethod
    def from_json(cls, d: list[Any]) -> Gap:
        """Inverse of :meth:`to_json`."""
        return cls(int(d[0]), int(d[1]), str(d[2]), str(d[3]), datetime.fromisoformat(d[4]),
                   bool(d[5]))  # fmt: skip


@dataclass(slots=True)
class Numbering:
    """The sequence numbers a densely numbered source has sent, as ranges: bounded state.

    What arrived is ``low..high`` minus :attr:`gaps` (sorted, disjoint), whatever the
    arrival order: numbers below ``low`` or above ``high`` extend the range and open a
    gap for what they skip; a number inside a gap splits it. Each event costs a binary
    search, whatever the number of gaps.
    """

    low: int
    high: int
    low_event: str
    high_event: str
    #: ``KIND/instance`` and site of the source, for the alert
    source: str
    site: str
    gaps: list[Gap] = field(default_factory=list)

    @classmethod
    def first(cls, fact: Fact) -> Numbering:
        """The numbering of a source whose first numbered event is ``fact``."""
        n, e = fact.sequence, fact.event_id
        return cls(low=n, high=n, low_event=e, high_event=e, source=fact.source, site=fact.site)

    def take(self, fact: Fact, now: datetime) -> tuple[bool, Gap | None]:
        """Record ``fact``'s number.

        Returns False if it had arrived before (a re-delivery or a repeat), and the gap
        it fell into, which its remainders (noticed when it was) now replace.
        """
        n, e = fact.sequence, fact.event_id
        if n < self.low:
            if n < self.low - 1:
                self.gaps.insert(0, Gap(n + 1, self.low - 1, e, self.low_event, now))
            self.low, self.low_event = n, e
            return True, None
        if n > self.high:
            if n > self.high + 1:
                self.gaps.append(Gap(self.high + 1, n - 1, self.high_event, e, now))
            self.high, self.high_event = n, e
            return True, None
        i = bisect.bisect_right(self.gaps, n, key=lambda g: g.first) - 1
        if i < 0 or self.gaps[i].last < n:
            return False, None
        gap = self.gaps[i]
        rest = []
        if gap.first < n:
            rest.append(Gap(gap.first, n - 1, gap.before, e, gap.noticed))
        if n < gap.last:
            rest.append(Gap(n + 1, gap.last, e, gap.after, gap.noticed))
        self.gaps[i : i + 1] = rest
        return True, gap

    def to_json(self) -> dict[str, Any]:
        """Compact JSON for the state table."""
        return {"lo": self.low, "hi": self.high, "le": self.low_event, "he": self.high_event,
                "src": self.source, "site": self.site,
                "gaps": [g.to_json() for g in self.gaps]}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Numbering:
        """Inverse of :meth:`to_json`."""
        return cls(low=int(d["lo"]), high=int(d["hi"]), low_event=str(d["le"]),
                   high_event=str(d["he"]), source=str(d["src"]), site=str(d["site"]),
                   gaps=[Gap.from_json(g) for g in d["gaps"]])  # fmt: skip


@dataclass
class SubjectState:
    """What the check agent keeps per subject (the table value, as JSON)."""

    facts: dict[str, Fact] = field(default_factory=dict)
    open: dict[str, IntegrityAlert] = field(default_factory=dict)
    #: a source subject: its newest event time per raw partition (sources keep no facts)
    newest: dict[int, datetime] = field(default_factory=dict)
    #: a source subject: when (wall clock) and which event it last sent
    last_arrival: datetime | None = None
    last_event: str = ""
    #: a densely numbered source subject: the numbers it sent
    numbering: Numbering | None = None
    #: alerts decided but not yet known to be published, oldest first: the state is
    #: written with them before they are sent, so a worker that dies in between leaves
    #: them to its successor instead of an alert no state remembers (see the worker)
    outbox: list[IntegrityAlert] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The table value."""
        return {"facts": [f.to_json() for f in self.facts.values()],
                "open": [a.model_dump(mode="json") for a in self.open.values()],
                "newest": {str(p): at.isoformat() for p, at in self.newest.items()},
                "arrival": None if self.last_arrival is None else self.last_arrival.isoformat(),
                "last_event": self.last_event,
                "seq": None if self.numbering is None else self.numbering.to_json(),
                "outbox": [a.model_dump(mode="json") for a in self.outbox]}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SubjectState:
        """Inverse of :meth:`to_json`; ``None`` is a subject never seen."""
        if not data:
            return cls()
        facts = [Fact.from_json(f) for f in data["facts"]]
        alerts = [IntegrityAlert.model_validate(a) for a in data["open"]]
        return cls(
            facts={f.fact_id: f for f in facts},
            open={a.alert_id: a for a in alerts},
            newest=_newest_of(data["newest"]),
            last_arrival=None
            if not data.get("arrival")
            else datetime.fromisoformat(data["arrival"]),
            last_event=str(data.get("last_event", "")),
            numbering=Numbering.from_json(data["seq"]) if data.get("seq") else None,
            outbox=[IntegrityAlert.model_validate(a) for a in data.get("outbox", [])],
        )


def _newest_of(data: Any) -> dict[int, datetime]:
    # an earlier version kept one time for all partitions: its sources are judged afresh
    if not isinstance(data, dict):
        return {}
    return {int(p): datetime.fromisoformat(at) for p, at in data.items()}


def step(
    state: SubjectState, incoming: Sequence[Fact], th: Thresholds, now: datetime
) -> tuple[bool, list[IntegrityAlert]]:
    """Take one subject's new facts: update ``state`` and say what to publish.

    Returns whether the state changed and the alerts to publish, withdrawals first.
    Facts already known change nothing and publish nothing.
    """
    if not incoming:
        return False, []
    subject = incoming[0].subject
    if subject.startswith("source:"):
        return _source_step(state, incoming, th, now)
    ticks = [f for f in incoming if f.role is FactRole.TICK]
    fresh = [f for f in incoming if f.role is not FactRole.TICK and f.fact_id not in state.facts]
    if not fresh and not (ticks and subject.startswith("transfer:")):
        return False, []
    for f in fresh:
        state.facts[f.fact_id] = f
    if subject.startswith("transfer:"):
        found = {x.alert_id: x for x in transfer_findings(subject, state.facts.values(), th, now)}
        if not ticks:  # only the timer opens one: a backlog replayed in order must not flap
            found = {aid: x for aid, x in found.items() if aid in state.open}
    else:
        found = {x.alert_id: x for x in evaluate(subject, state.facts.values(), th)}
    changed = bool(fresh)
    out: list[IntegrityAlert] = []
    for aid in sorted(state.open):
        if aid not in found:
            out.append(state.open.pop(aid).withdrawn(now))
    for aid in sorted(found):
        alert = IntegrityAlert.from_finding(found[aid], AlertState.OPEN, now)
        previous = state.open.get(aid)
        if previous is None or not previous.same_finding(alert):
            state.open[aid] = alert
            out.append(alert)
    return changed or bool(out), out


#: a source's last arrival is written to the table at most this often (it is wall clock),
#: or a quarter of its stall limit if that is shorter
ARRIVAL_GRANULARITY = timedelta(seconds=30)


def _granularity(limit: timedelta | None) -> timedelta:
    return ARRIVAL_GRANULARITY if limit is None else min(ARRIVAL_GRANULARITY, limit / 4)


def _source_step(
    state: SubjectState, incoming: Sequence[Fact], th: Thresholds, now: datetime
) -> tuple[bool, list[IntegrityAlert]]:
    out: list[IntegrityAlert] = []
    changed = False
    dense = incoming[0].subject.split(":", 1)[1] in th.dense_sources
    for f in incoming:
        if f.role is FactRole.TICK:
            finding = stall_finding(f.subject, state, th, now)
            if finding is not None and finding.alert_id not in state.open:
                alert = IntegrityAlert.from_finding(finding, AlertState.OPEN, now)
                state.open[alert.alert_id] = alert
                out.append(alert)
                changed = True
            if dense and state.numbering is not None:
                raised = _raise_gaps(f.subject, state.numbering, th, now)
                out.extend(raised)
                changed = changed or bool(raised)
            continue
        fresh = True
        if dense and f.sequence > 0:
            if state.numbering is None:
                state.numbering = Numbering.first(f)
            else:
                fresh, filled = state.numbering.take(f, now)
                if filled is not None and filled.raised:  # its remainders are raised anew
                    finding = gap_finding(f.subject, state.numbering, filled)
                    out.append(IntegrityAlert.from_finding(finding, AlertState.WITHDRAWN, now))
            changed = changed or fresh
        newest = state.newest.get(f.partition)
        finding = late_finding(f, newest, th) if fresh else None
        if finding is not None:
            out.append(IntegrityAlert.from_finding(finding, AlertState.OPEN, now))
        if newest is None or f.at > newest:
            state.newest[f.partition] = f.at
            changed = True
        stalled = [aid for aid, a in state.open.items() if a.rule is Rule.SOURCE_STALL]
        for aid in stalled:  # it speaks again
            out.append(state.open.pop(aid).withdrawn(now))
        every = _granularity(th.stall_limit(f.subject.split(":", 1)[1]))
        if stalled or state.last_arrival is None or now - state.last_arrival >= every:
            state.last_arrival, state.last_event = now, f.event_id
            changed = True
    return changed, out


def _raise_gaps(
    subject: str, numbering: Numbering, th: Thresholds, now: datetime
) -> list[IntegrityAlert]:
    """Open the alerts of the gaps missing longer than the grace (only the timer asks:
    a backlog that arrives out of order must not raise and withdraw alerts per event)."""
    out: list[IntegrityAlert] = []
    for gap in numbering.gaps:
        if not gap.raised and now - gap.noticed >= th.sequence_gap_after:
            gap.raised = True
            finding = gap_finding(subject, numbering, gap)
            out.append(IntegrityAlert.from_finding(finding, AlertState.OPEN, now))
    return out


def gap_finding(subject: str, numbering: Numbering, gap: Gap) -> Finding:
    """The numbers ``gap`` of a densely numbered source that never reached the hub."""
    system = subject.split(":", 1)[1]
    count = gap.last - gap.first + 1
    span = str(gap.first) if count == 1 else f"{gap.first}-{gap.last}"
    return Finding(
        rule=Rule.SEQUENCE_GAP, subject=subject, lots=[], sites=[numbering.site],
        source_systems=[numbering.source], evidence_event_ids=[gap.before, gap.after],
        summary=(f"{system} numbers its events densely but number(s) {span} never reached "
                 f"the hub: {count} event(s) sent between {gap.before} (number "
                 f"{gap.first - 1}) and {gap.after} (number {gap.last + 1}) are missing. "
                 f"Look for them in the connector's dead letters and the system's outbox, "
                 f"then re-send them (`lothub connectors backfill {system} --since ...`); "
                 f"the alert is withdrawn when they arrive."),
        details={"first_missing": str(gap.first), "last_missing": str(gap.last),
                 "missing": str(count)},
    )  # fmt: skip


def stall_finding(
    subject: str, state: SubjectState, th: Thresholds, now: datetime
) -> Finding | None:
    """A source that has sent nothing for longer than its limit (wall clock: a timer asks)."""
    system = subject.split(":", 1)[1]
    limit = th.stall_limit(system)
    if limit is None or state.last_arrival is None:
        return None
    silent = now - state.last_arrival
    if silent <= limit + _granularity(limit):
        return None
    return Finding(
        rule=Rule.SOURCE_STALL, subject=subject, lots=[], sites=[],
        source_systems=[system], evidence_event_ids=[state.last_event] if state.last_event else [],
        summary=(f"{system} has sent nothing for {str(silent).split('.')[0]} (limit {limit}); its "
                 f"last event was {state.last_event or 'unknown'}. Check the connector "
                 f"(`lothub connectors status`) and the system it reads."),
        details={"last_arrival": state.last_arrival.isoformat(),
                 "silent_s": str(int(silent.total_seconds())),
                 "limit_s": str(int(limit.total_seconds()))},
    )  # fmt: skip


def transfer_findings(
    subject: str, facts: Iterable[Fact], th: Thresholds, now: datetime
) -> list[Finding]:
    """A transfer shipped longer than the SLA ago (event time) that no site has received."""
    known = list(facts)
    shipped = sorted((f for f in known if f.role is FactRole.SHIP), key=lambda f: f.at)
    if not shipped or any(f.role is FactRole.ORIGIN for f in known):
        return []
    first = shipped[0]
    late = now - first.at
    if late <= th.transfer_sla:
        return []
    transfer = subject.split(":", 1)[1]
    return [Finding(
        rule=Rule.TRANSFER_OVERDUE, subject=subject, lots=sorted({f.lot for f in shipped}),
        sites=[first.site], source_systems=sorted({f.source for f in shipped}),
        evidence_event_ids=sorted({f.event_id for f in shipped}),
        # nothing in it changes with the clock: a later tick finds the same alert
        summary=(f"transfer {transfer} of {first.lot} left {first.site} at {_when(first.at)} "
                 f"and no receipt has reached the hub within the SLA ({th.transfer_sla}); check "
                 f"that the destination received and posted it."),
        details={"shipped_at": first.at.isoformat(), "quantity": _qty(first),
                 "to_location": first.location, "sla_s": str(int(th.transfer_sla.total_seconds()))},
    )]  # fmt: skip


def tick(subject: str, now: datetime) -> Fact:
    """The fact the worker's timer sends a source or transfer subject: the clock moved on."""
    return Fact(
        subject=subject,
        role=FactRole.TICK,
        event_id="tick",
        event_type="Tick",
        at=now,
        source="",
        site="",
    )


# --------------------------------------------------------------------------- sink-side rules


def unmapped_alert(event: LotEventBase, exc: UnmappedValueError, now: datetime) -> IntegrityAlert:
    """The alert for an event parked on the dead-letter topic for want of a mapping."""
    env = event.envelope
    source = f"{env.source.system_kind.value}/{env.source.system_instance}"
    finding = Finding(
        rule=Rule.UNMAPPED_VALUE, subject=f"event:{env.event_id}", lots=[],
        sites=[env.source.site], source_systems=[source], evidence_event_ids=[env.event_id],
        summary=(f"{exc}. {env.event_type} {env.event_id} from {source} is parked on the "
                 f"dead-letter topic and is not in the genealogy: add the mapping to the site "
                 f"configuration, restart the stream workers and run `lothub replay-dlq`."),
        details={"kind": exc.kind, "value": exc.value, "site": exc.site,
                 "event_type": env.event_type},
    )  # fmt: skip
    return IntegrityAlert.from_finding(finding, AlertState.OPEN, now)


def conflict_alert(event: LotEventBase, conflict: Conflict, now: datetime) -> IntegrityAlert:
    """The alert for an ``event_id`` sent again with different content."""
    env = event.envelope
    source = f"{env.source.system_kind.value}/{env.source.system_instance}"
    lots = event.lots()
    finding = Finding(
        rule=Rule.DUPLICATE_CONFLICT, subject=f"event:{env.event_id}", lots=lots,
        sites=[env.source.site, *(site_of(x) for x in lots)], source_systems=[source],
        evidence_event_ids=[env.event_id],
        summary=(f"{env.event_type} {env.event_id} from {source} was sent again with different "
                 f"content. The hub keeps the version it stored first and refuses the other "
                 f"(both are in the event_conflicts table); a changed record must be sent as a "
                 f"correction (EventCorrected), so check the source system's interface."),
        details={"content_hashes": ",".join(sorted({conflict.stored_hash,
                                                    conflict.refused_hash}))},
    )  # fmt: skip
    return IntegrityAlert.from_finding(finding, AlertState.OPEN, now)


def count_new(alerts: Iterable[IntegrityAlert]) -> None:
    """Count alerts stored for the first time in :data:`ALERTS_RAISED`."""
    for alert in alerts:
        for site in alert.sites or ["-"]:
            ALERTS_RAISED.labels(alert.rule.value, alert.severity.value, site).inc()
