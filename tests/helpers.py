"""Helpers shared by the functional and integration tiers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import func, select

from genealogy import tables
from genealogy.store import GenealogyStore, utc
from lothub.settings import Settings
from schemas.alerts import AlertState, IntegrityAlert, decode_alert
from schemas.model import LotEventBase
from schemas.sites import SitesConfig
from streams.integrity import Fact, SubjectState, Thresholds, facts_of, step, tick
from streams.normalize import normalize

#: Tables whose content is the genealogy (consumer progress and heartbeats are not).
GENEALOGY_TABLES = [
    tables.events,
    tables.lot_ledger,
    tables.lot_events,
    tables.lots,
    tables.lot_aliases,
    tables.lot_links,
    tables.batch_moves,
    tables.documents,
    tables.status_history,
    tables.event_conflicts,
    tables.event_corrections,
]


#: Columns that say when (or in which write, ``seq``) a row was written, not what it says; a
#: re-run differs in them.
WRITE_TIME_COLUMNS = frozenset({"ingested_at", "seen_at", "seq"})


def snapshot(store: GenealogyStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every genealogy row, sorted, times in UTC, without ingestion timestamps."""
    return snapshot_tables(store, [t.name for t in GENEALOGY_TABLES])


def snapshot_tables(
    store: GenealogyStore, names: Iterable[str], *, ignore: Iterable[str] = WRITE_TIME_COLUMNS
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables named (as in :mod:`genealogy.tables`), sorted, times in UTC.

    Columns in ``ignore`` are left out, so two stores fed the same events in different
    runs compare equal.
    """
    skip = set(ignore)
    out: dict[str, list[tuple[Any, ...]]] = {}
    with store.engine.connect() as conn:
        for name in names:
            table = tables.metadata.tables[name]
            cols = [c for c in table.columns if c.name not in skip]
            out[name] = sorted(
                tuple(utc(v) if isinstance(v, datetime) else v for v in r)
                for r in conn.execute(select(*cols))
            )
    return out


def duplicated(
    store: GenealogyStore,
    table_name: str,
    columns: Iterable[str],
    where: Mapping[str, Any] | None = None,
) -> list[tuple[Any, ...]]:
    """Values of ``columns`` that more than one row of the table holds (empty: none twice).

    For tables whose primary key does not make a repeat impossible, e.g. alerts keyed
    by a digest of their evidence: ``duplicated(store, "integrity_alerts", ["rule",
    "subject"], where={"state": "OPEN"})``. ``where`` keeps rows with those column values.
    """
    table = tables.metadata.tables[table_name]
    cols = [table.c[name] for name in columns]
    query = select(*cols).group_by(*cols).having(func.count() > 1)
    for name, value in (where or {}).items():
        query = query.where(table.c[name] == value)
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def normalized(events: list[LotEventBase], sites: SitesConfig) -> list[LotEventBase]:
    """The enterprise form of raw events, as the stream worker would produce it."""
    return [normalize(e, sites) for e in events]


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 15.0, *, besides: Iterable[Any] = ()
) -> list[Any]:
    """Every record on ``topic`` from the beginning, via a throwaway consumer.

    ``besides`` are records of an earlier read to leave out: a topic of several partitions
    comes back interleaved differently on each read, so "what came since" is not a slice.
    """
    seen = {(m.partition(), m.offset()) for m in besides}
    consumer = Consumer(
        {**settings.consumer_config(f"reader-{time.time_ns()}"), "enable.partition.eof": True}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, done = [], set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                done.add(msg.partition())
            elif (msg.partition(), msg.offset()) not in seen:
                records.append(msg)
        return records
    finally:
        consumer.close()


def alert_history(settings: Settings, subjects: Iterable[str]) -> str:
    """What the topics hold of ``subjects``: each alert message and each state written.

    For a failure report: whether an alert left open was never withdrawn, withdrawn and
    raised again, or raised by a state that had lost facts.
    """
    wanted = set(subjects)
    lines: list[str] = []
    for msg in read_topic(settings, settings.topics.integrity_alerts):
        alert = decode_alert(msg.value())
        if alert.subject in wanted:
            lines.append(f"alert  p{msg.partition()}@{msg.offset()} {alert.alert_id[:8]} "
                         f"{alert.state.value} lots={alert.lots} at {alert.detected_at}")  # fmt: skip
    for msg in read_topic(settings, settings.topics.integrity_state):
        key = (msg.key() or b"").decode()
        if key in wanted:
            state = SubjectState.from_json(json.loads(msg.value() or b"null"))
            lines.append(f"state  p{msg.partition()}@{msg.offset()} {key} "
                         f"facts={sorted(f.lot for f in state.facts.values())} "
                         f"open={sorted(a[:8] for a in state.open)} "
                         f"outbox={[(a.alert_id[:8], a.state.value) for a in state.outbox]}")  # fmt: skip
    return "\n".join(lines)


def where_events_are(settings: Settings, event_ids: Iterable[str]) -> str:
    """For a failure report: where each of ``event_ids`` lies on the raw and enterprise topics.

    The ids are searched as bytes (Avro writes strings as they are), so a record that
    does not decode is found too.
    """
    wanted = {e.encode(): e for e in event_ids}
    lines: list[str] = []
    for topic in (settings.topics.raw, settings.topics.enterprise, settings.topics.enterprise_dlq,
                  settings.topics.raw_dlq):  # fmt: skip
        for msg in read_topic(settings, topic):
            for raw, event_id in wanted.items():
                if raw in (msg.value() or b""):
                    lines.append(f"{event_id} on {topic}[{msg.partition()}]@{msg.offset()}")
    return "\n".join(lines) or "on no topic"


#: An alert as a finding: what it says and on which evidence, not when it was detected.
AlertKey = tuple[str, str, str, str, str]


def open_alert_keys(store: GenealogyStore) -> set[AlertKey]:
    """The open alerts of a store as (rule, subject, lots, evidence, details), JSON sorted."""
    a = tables.integrity_alerts
    query = select(a.c.rule, a.c.subject, a.c.lots, a.c.evidence_event_ids, a.c.details).where(
        a.c.state == AlertState.OPEN.value
    )
    with store.engine.connect() as conn:
        return {(r.rule, r.subject, _canonical(r.lots), _canonical(r.evidence_event_ids),
                 _canonical(r.details)) for r in conn.execute(query)}  # fmt: skip


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True)


def alert_key(alert: IntegrityAlert) -> AlertKey:
    """What :func:`open_alert_keys` says of one alert."""
    return (alert.rule.value, alert.subject, _canonical(json.dumps(alert.lots)),
            _canonical(json.dumps(alert.evidence_event_ids)),
            _canonical(json.dumps(alert.details)))  # fmt: skip


def clean_pass_alerts(
    events: list[LotEventBase], sites: SitesConfig, th: Thresholds, now: datetime
) -> set[AlertKey]:
    """The open alerts of one pass of the integrity rules over ``events``, in their order.

    No worker, no broker: every fact goes through :func:`streams.integrity.step` once at
    ``now``, then every source gets one clock tick once the sequence-gap grace has
    passed. What a real worker's store holds, once every event has arrived in whatever
    order and however often, must be the same set.
    """
    states: dict[str, SubjectState] = {}
    opened: dict[str, IntegrityAlert] = {}

    def take(subject: str, facts: list[Fact], at: datetime) -> None:
        state = states.setdefault(subject, SubjectState())
        for alert in step(state, facts, th, at)[1]:
            opened[alert.alert_id] = alert

    for event in events:
        for fact in facts_of(normalize(event, sites)):
            take(fact.subject, [fact], now)
    later = now + th.sequence_gap_after
    for subject in [s for s in states if s.startswith("source:")]:
        take(subject, [tick(subject, later)], later)
    return {alert_key(a) for a in opened.values() if a.state is AlertState.OPEN}


def integrity_env(th: Thresholds, *, tick_s: float) -> dict[str, str]:
    """The environment that gives a ``lothub worker`` child the integrity limits ``th``."""
    return {
        "LOTHUB_INTEGRITY_DENSE_SOURCES": ",".join(sorted(th.dense_sources)),
        "LOTHUB_INTEGRITY_SEQUENCE_GAP_S": str(th.sequence_gap_after.total_seconds()),
        "LOTHUB_INTEGRITY_TICK_S": str(tick_s),
        "LOTHUB_INTEGRITY_LATE_HORIZON_S": str(th.late_horizon.total_seconds()),
        "LOTHUB_INTEGRITY_TRANSFER_SLA_H": str(th.transfer_sla.total_seconds() / 3600),
    }
