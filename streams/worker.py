"""The stream worker: faust agents that normalize raw events, write the genealogy, check it.

Two agents, one per hop of the main flow (:mod:`schemas.topics`):

* ``normalize`` reads raw site events, rewrites them into the enterprise model and
  publishes them keyed by enterprise lot id. A record that does not decode, breaks
  the model or uses an unmapped site code goes to the raw dead-letter topic with
  the original bytes and the reason in headers; the agent carries on.
* ``sink`` reads enterprise events in batches and applies them to the genealogy
  store, idempotently by ``event_id``, with its consumer progress in the same
  transaction.

and the integrity checks (:mod:`streams.integrity`): ``normalize`` also publishes
each batch's facts, one record per partition of their subjects, ``integrity_check``
evaluates the rules against each subject's state (a faust table, whose changelog it
writes itself: state first, with the alerts decided, then the alerts), and ``alert_sink``
stores the alerts. The hot agents take batches and send straight to the producer. Dead
letters (unmapped values) and conflicting re-sends (found by ``sink``) raise alerts
directly.

A timer writes a heartbeat to the store, which is how readiness learns the worker
is alive without the API ever touching Kafka.

A worker runs every agent, or (:class:`WorkerRole`) only those that publish
(``normalize``, ``integrity_check``) or only those that write the store (``sink``,
``alert_sink``), so the two halves can run in separate processes, on separate cores.

Example::

    app = create_app(settings.faust_config(), WorkerDeps(...))
    quiet_worker(app, loglevel="INFO").execute_from_commandline()
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import faust
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from genealogy.alerts import upsert_alerts
from genealogy.store import GenealogyStore, Progress
from schemas.alerts import IntegrityAlert, decode_alert, encode_alert
from schemas.errors import DataError, RetriableError, UnmappedValueError
from schemas.model import LotEventBase, check_enterprise
from schemas.serde import Serde
from schemas.sites import SitesConfig
from schemas.topics import (
    DLQ_REASON,
    DLQ_REASON_CODE,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    INTEGRITY_STATE,
    Topics,
)
from streams.integrity import (
    Fact,
    SubjectState,
    Thresholds,
    by_partition,
    conflict_alert,
    count_new,
    decode_facts,
    encode_facts,
    facts_of,
    partition_of,
    step,
    tick,
    unmapped_alert,
)
from streams.normalize import normalize

log = logging.getLogger("lothub.streams")
T = TypeVar("T")

HEARTBEAT_COMPONENT = "stream-worker"
#: exit status of a worker that stopped making progress (EX_SOFTWARE)
EXIT_STALLED = 70
SINK_BATCH = 500
SINK_WITHIN_S = 0.1
#: longest a fetch waits for records (see PromptFetchConsumerThread)
FETCH_MAX_WAIT_MS = 100
#: longest :func:`fetched_ends` waits for the fetches that tell the partitions' ends
PROBE_TIMEOUT_S = 10.0
#: raw records normalized per batch; its facts leave as one message per partition
NORMALIZE_BATCH = 500
NORMALIZE_WITHIN_S = 0.05
#: facts messages checked per batch
CHECK_BATCH = 500
CHECK_WITHIN_S = 0.05
RETRY_MAX_S = 30.0


class WorkerRole(StrEnum):
    """Which agents a worker process runs (``lothub worker --role``).

    ``all`` runs every agent. A worker's agents share one Python interpreter, so one
    worker uses about one core however many it is given; the two other roles split the
    agents over two kinds of process that run side by side, each kind in its own
    consumer group:

    * ``process``: ``normalize`` and ``integrity_check`` (with the state table and its
      clock), which publish the enterprise events, facts and alerts;
    * ``store``: ``sink`` and ``alert_sink``, which write them into the genealogy store.

    Example::

        create_app(settings.faust_config(), deps, role=WorkerRole.STORE)
    """

    ALL = "all"
    PROCESS = "process"
    STORE = "store"

    @property
    def heartbeat_component(self) -> str:
        """The heartbeat row of this role's workers."""
        return HEARTBEAT_COMPONENT if self is WorkerRole.ALL else f"{HEARTBEAT_COMPONENT}-{self}"


@dataclass
class WorkerStats:
    """Counts since start, reported with every heartbeat."""

    normalized: int = 0
    dead_lettered: int = 0
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    #: integrity facts published (by normalize) and evaluated (by the check agent), alerts
    #: published, alert messages stored, new alerts
    facts: int = 0
    checked: int = 0
    alerts: int = 0
    alerts_stored: int = 0
    alerts_new: int = 0
    #: partitions found restarted below the progress stored for them (broker lost data)
    topic_resets: int = 0
    #: partitions found restarted below this worker's position (see RewindSafeConsumer)
    offset_rewinds: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def processed(self) -> int:
        """Records handled by any agent (what the progress watch counts)."""
        return (self.normalized + self.dead_lettered + self.stored + self.duplicates
                + self.checked + self.alerts_stored)  # fmt: skip

    def as_json(self) -> str:
        """Compact JSON for the heartbeat detail."""
        return json.dumps(
            {
                "normalized": self.normalized,
                "dead_lettered": self.dead_lettered,
                "stored": self.stored,
                "duplicates": self.duplicates,
                "conflicts": self.conflicts,
                "facts": self.facts,
                "checked": self.checked,
                "alerts": self.alerts,
                "alerts_stored": self.alerts_stored,
                "alerts_new": self.alerts_new,
                "topic_resets": self.topic_resets,
                "offset_rewinds": self.offset_rewinds,
                "last_error": self.errors[-1] if self.errors else None,
            }
        )


class ProgressWatch:
    """Liveness is progress: a worker with work waiting that stops advancing is stuck.

    Fed the number of records processed so far and the current lag (records behind
    the end of the partitions it owns), it says when the worker has had work for
    ``stall_s`` seconds without processing one record.

    Example::

        watch = ProgressWatch(stall_s=120)
        if watch.stalled(processed=stats.processed, lag=lag, now=time.monotonic()):
            ...  # report, then exit non-zero so the supervisor restarts us
    """

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._last_count = -1
        self._since: float | None = None

    def stalled(self, *, processed: int, lag: int, now: float) -> bool:
        """True once there was lag and no progress for longer than ``stall_s``."""
        if processed != self._last_count or lag <= 0:
            self._last_count = processed
            self._since = now
            return False
        if self._since is None:
            self._since = now
        return now - self._since > self.stall_s


class RewindWatch:
    """Notices a partition that now ends below the progress stored for it.

    Kafka offsets only grow, so a partition whose end offset is lower than the next
    offset the sink already stored was recreated: the broker lost its data (the
    embedded broker keeps it in memory). The sink then carries on from the new
    partition's start, never skipping its records because of the old progress, and
    the reset is logged and counted so an operator re-sends what was lost (the
    per-source counts of the store show how much).

    Example::

        watch = RewindWatch(store.progress(consumer))
        stored_next = watch.rewound(topic, partition, end_offset=highwater)
        watch.advance({(topic, partition): next_offset})
    """

    def __init__(self, stored: dict[tuple[str, int], int]) -> None:
        self._next = dict(stored)

    def rewound(self, topic: str, partition: int, *, end_offset: int) -> int | None:
        """The stored next offset if the partition now ends below it, else None."""
        stored = self._next.get((topic, partition))
        return stored if stored is not None and end_offset < stored else None

    def advance(self, positions: dict[tuple[str, int], int]) -> None:
        """Record the progress just stored (lower than before after a reset)."""
        self._next.update(positions)


async def fetched_ends(
    probe: AIOKafkaConsumer, listed: Mapping[TP, int], *, timeout_s: float = PROBE_TIMEOUT_S
) -> dict[TP, int]:
    """The end offsets of ``listed``'s partitions as a fetch reports them.

    ``listed`` are the ends a ListOffsets request gave. The embedded broker (Tansu
    0.6) answers that with the first offset of the partition's last stored batch + 1,
    whatever the batch holds (a burst of 3,000 records sent as one batch: end 1), while
    the high watermark of its fetch responses is right. So ``probe``, a consumer of no
    group, fetches each partition from ``listed - 1`` and its high watermark is taken;
    on Kafka the two agree. A partition no fetch answers for within ``timeout_s`` (or
    a failed fetch) keeps its listed end, with a warning.
    """
    wanted = {tp: end for tp, end in listed.items() if end}  # ends at 0: nothing stored
    ends = dict(listed)
    if not wanted:
        return ends
    probe.assign(list(wanted))
    for tp, end in wanted.items():
        probe.seek(tp, end - 1)
    deadline = time.monotonic() + timeout_s
    pending = list(wanted)
    try:
        while pending and time.monotonic() < deadline:
            await probe.getmany(*pending, timeout_ms=FETCH_MAX_WAIT_MS, max_records=1)
            pending = [tp for tp in pending if probe.highwater(tp) is None]
    except KafkaError as exc:  # the listed ends are still a start
        log.warning("fetching the partitions' ends failed: %r", exc)
    for tp in wanted:
        fetched = probe.highwater(tp)
        if fetched is None:
            log.warning("%s[%s]: no fetch answered within %.0fs; taking its listed end %d",
                        tp.topic, tp.partition, timeout_s, listed[tp])  # fmt: skip
        else:
            ends[tp] = max(listed[tp], fetched)
    probe.unsubscribe()
    return ends


class PromptFetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with fetches that wait at most ``FETCH_MAX_WAIT_MS``.

    faust fixes the fetch wait at 1.5 s. Kafka answers a waiting fetch as soon as a
    record arrives, but the embedded broker (Tansu) answers only when the wait is up:
    each hop of the flow then added up to 1.5 s to a record's way into the store.

    It also keeps a consumer of no group for :func:`fetched_ends`, started when first
    needed.
    """

    _probe: AIOKafkaConsumer | None = None

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher at start
        return consumer

    async def fetched_ends(self, listed: Mapping[TP, int]) -> dict[TP, int]:
        """:func:`fetched_ends` with this thread's probe (runs on the thread's loop)."""
        if self._probe is None:
            probe = self._create_client_consumer(self.transport)  # type: ignore[arg-type]
            await probe.start()
            self._probe = probe
        return await fetched_ends(self._probe, listed)

    async def on_thread_stop(self) -> None:
        """Stop the probe with the consumer."""
        await super().on_thread_stop()
        if self._probe is not None:
            await self._probe.stop()


class RewindSafeConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer: no record skipped, even when a partition restarts at 0.

    It hands faust each stream partition's records strictly in offset order
    (:meth:`getmany`), so faust never counts a record it was not given as done.

    When the broker loses its data (the embedded one restarts empty) or a topic is
    recreated, the partitions start again at offset 0 while the consumer still holds
    positions far beyond. Two things would then skip the new records silently:

    * the consumer keeps fetching at its old position, beyond the partition's end
      (Tansu answers with no records rather than "offset out of range"), until the
      partition grows past it; :meth:`rewind_beyond_end` seeks such partitions back
      to their start;
    * faust drops every record below the last offset it read from a partition,
      taking it for a re-delivery; :meth:`getmany` forgets faust's read and commit
      state of a partition whose records arrive behind it while it ends before.

    Records after such a restart are processed even where the store already holds
    them, which its idempotent writes make harmless. ``rewinds`` counts both cases for
    the heartbeat. Its fetches wait less than faust's (:class:`PromptFetchConsumerThread`).

    Example (what ``create_app`` does, per app)::

        app.transport.Consumer = RewindSafeConsumer
    """

    rewinds = 0
    _thread: PromptFetchConsumerThread
    #: per stream partition, the offset to hand over next (see :meth:`getmany`)
    _expected: dict[TP, int]
    #: per stream partition, the hole last fetched again: (first missing, next present)
    _holes: dict[TP, tuple[int, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expected = {}
        self._holes = {}

    def _new_consumer_thread(self) -> PromptFetchConsumerThread:
        return PromptFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """End offsets as fetches report them (:func:`fetched_ends`).

        faust's table recovery reads each changelog partition up to these: with the
        embedded broker's listed ends it stopped short of the state a killed worker had
        written last, and the restarted worker checked facts against stale state.
        """
        listed = await self._thread.highwaters(*partitions)
        ends: dict[TP, int] = await self._thread.call_thread(self._thread.fetched_ends, listed)
        return ends

    async def lag(self) -> int:
        """Records waiting on the partitions this worker's agents read (0 if unknown yet).

        Cheap enough for every heartbeat: the listed ends, raised to the high watermark
        of the last fetch of each partition where that is higher (see :func:`fetched_ends`).
        """
        # A changelog partition is read only while recovering: its end moves on with
        # every state write and its position stays, which is no work waiting.
        changelogs = self.app.tables.changelog_topics
        assignment = {tp for tp in self.assignment() if tp.topic not in changelogs}
        if not assignment:
            return 0
        listed = await self._thread.highwaters(*assignment)
        behind = 0
        for tp in assignment:
            position = await self.position(tp)
            end = max(listed.get(tp) or 0, self.highwater(tp) or 0)
            if position is not None:
                behind += max(0, end - position)
        return behind

    async def getmany(self, timeout: float) -> Any:
        """faust's fetch loop, handing each stream partition's records over in order.

        faust counts a record as done once its offset is passed: a record handed over
        ahead of the next expected offset makes it take the offsets in between for a gap
        (as in a compacted topic) and acknowledge them, so a commit could pass records
        never processed, and a worker killed then lost them (the kill test's missing
        events, and the facts missing from a state). Such records come from fetches
        made before a seek moved the partition back: table recovery resumes the stream
        partitions, then seeks them to their committed offsets while the fetch loop still
        holds records read from further on. So per stream partition:

        * the next expected offset passes, and becomes the one after it;
        * a record ahead of it is dropped; if the consumer is already past it, the
          partition is sought back to the expected offset to fetch the rest again. Only
          when the same hole comes back from that fetch is it the partition's own, and
          it is taken;
        * a record behind it was handed over already and is dropped, unless the
          partition now ends before the expected offset: the topic was recreated (a
          broker that lost its data), and faust's read and commit state of the partition
          is forgotten so the new records are processed instead of skipped.

        Changelog partitions, read by table recovery, only get the last rule.
        """
        changelogs = self.app.tables.changelog_topics
        held: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            offset = message.offset
            if tp.topic in changelogs:
                read = self._read_offset.get(tp)
                if read is not None and offset < read and (self.highwater(tp) or 0) < read:
                    self._recreated(tp, read, offset)
                yield tp, message
                continue
            expected = self._expected.get(tp)
            if expected is not None and offset < expected:
                if (self.highwater(tp) or 0) >= expected:
                    continue  # handed over already
                self._recreated(tp, expected, offset)
            elif expected is not None and offset > expected:
                if tp in held:
                    continue
                held.add(tp)
                if not await self._refetch(tp, expected, offset):
                    continue
            self._expected[tp] = offset + 1
            # The order is kept here, so faust's own check against the last offset it read
            # is switched off: a seek while faust still delivers a record from before it
            # leaves that offset above the records fetched again, which faust would then
            # drop unacknowledged while acknowledging their successors, and its commit
            # misses a hole of one record at the head of the acknowledged offsets.
            self._read_offset[tp] = None
            yield tp, message

    async def _refetch(self, tp: TP, expected: int, offset: int) -> bool:
        """Handle a record at ``offset`` ahead of ``expected``; True to take it anyway."""
        position = await self.position(tp)
        if position is not None and position <= offset:
            log.info("%s[%s]: records from offset %d were fetched before a seek back to %d; "
                     "reading them again in order", tp.topic, tp.partition, offset, position)  # fmt: skip
            return False
        if self._holes.get(tp) == (expected, offset):
            del self._holes[tp]
            log.warning("%s[%s]: offsets %d-%d do not exist (a compacted or transactional "
                        "topic?); going on from %d", tp.topic, tp.partition, expected,
                        offset - 1, offset)  # fmt: skip
            return True
        self._holes[tp] = (expected, offset)
        log.info("%s[%s]: offset %d came before %d-%d; fetching them again from %d",
                 tp.topic, tp.partition, offset, expected, offset - 1, expected)  # fmt: skip

        async def seek_back() -> None:  # on the consumer's own thread, between its fetches
            self._thread.seek(tp, expected)

        await self._thread.call_thread(seek_back)
        return False

    def _recreated(self, tp: TP, read: int, offset: int) -> None:
        self.rewinds += 1
        log.error(
            "%s[%s] went back from offset %d to %d: the topic was recreated (a broker that "
            "lost its data?); processing from here instead of skipping",
            tp.topic, tp.partition, read, offset,
        )  # fmt: skip
        self._forget(tp)

    async def perform_seek(self) -> None:
        """faust's seek to the committed offsets, which are then the next expected."""
        await super().perform_seek()
        self._expected = {tp: offset for tp, offset in self._read_offset.items()
                          if offset is not None}  # fmt: skip

    async def seek(self, partition: TP, offset: int) -> None:
        """faust's seek; ``offset`` is then the next expected."""
        await super().seek(partition, offset)
        self._expected[partition] = offset

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Forget what was expected of partitions this worker no longer reads."""
        for tp in revoked:
            self._expected.pop(tp, None)
            self._holes.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def rewind_beyond_end(self) -> None:
        """Seek every partition whose position is beyond its end back to its start."""
        for tp in self.assignment():
            end, position = self.highwater(tp), await self.position(tp)
            if end is None or position is None or position <= end:
                continue
            start = (await self.earliest_offsets(tp)).get(tp) or 0
            self.rewinds += 1
            log.error(
                "%s[%s] ends at offset %d, before this worker's position %d: the topic was "
                "recreated (a broker that lost its data?); reading it again from offset %d",
                tp.topic, tp.partition, end, position, start,
            )  # fmt: skip
            self._forget(tp)
            await self.seek(tp, start)

    def _forget(self, tp: Any) -> None:
        for state in (self._read_offset, self._committed_offset, self._acked,
                      self._acked_index, self._gap, self._expected, self._holes):  # fmt: skip
            state.pop(tp, None)


@dataclass(frozen=True, kw_only=True)
class WorkerDeps:
    """What the worker needs, injected so tests can build it on any broker and store."""

    topics: Topics
    sites: SitesConfig
    serde: Serde
    store: GenealogyStore
    heartbeat_s: float = 2.0
    #: exit non-zero after this long with work waiting and no record processed
    stall_s: float = 120.0
    #: limits of the integrity rules
    thresholds: Thresholds = field(default_factory=Thresholds)
    #: how often the clock-driven rules (stalls, overdue transfers) are checked
    tick_s: float = 60.0


def tune_gc() -> None:
    """Keep Python's cyclic collector from eating the worker's time; call once, at start.

    Every record faust handles allocates a few dozen container objects, so the default
    threshold (a young collection every 700 allocations) ran several collections per
    batch, each one walking the worker's long-lived start-up heap (faust, aiokafka,
    SQLAlchemy, the site tables) again: 2-3.4 s of every 20,000 events went to the
    collector. Freezing that heap moves it out of the collector's view, and a young
    collection every 10,000 allocations still frees the short-lived cycles promptly.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def quiet_worker(app: faust.App, *, loglevel: str) -> faust.Worker:
    """A faust worker for ``app`` that logs at ``loglevel`` and nothing below it.

    At WARNING and above faust keeps a terminal spinner and, to spin it, lowers the
    root logger to DEBUG: every debug call of aiokafka and faust (one per record sent)
    then builds a log record, which cost a fifth of the worker's time.
    """
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None
    return worker


def dead_letter_headers(
    exc: DataError, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Headers telling an operator why a record was parked and where it came from."""
    return [
        (DLQ_REASON, str(exc).encode()),
        (DLQ_REASON_CODE, exc.reason_code.encode()),
        (DLQ_SOURCE_TOPIC, topic.encode()),
        (DLQ_SOURCE_PARTITION, str(partition).encode()),
        (DLQ_SOURCE_OFFSET, str(offset).encode()),
    ]


def create_app(
    faust_config: dict[str, Any], deps: WorkerDeps, *, role: WorkerRole = WorkerRole.ALL
) -> faust.App:
    """Build the faust app with the agents of ``role`` and the heartbeat timer."""
    app = faust.App(**faust_config)
    checks, stores = role is not WorkerRole.STORE, role is not WorkerRole.PROCESS
    if app.transport.Consumer is faust_aiokafka.Consumer:
        app.transport.Consumer = RewindSafeConsumer  # type: ignore[misc]  # per app, not global
    stats = WorkerStats()
    topics = deps.topics

    def declare(name: str) -> Any:
        return app.topic(name, value_serializer="raw", key_serializer="raw")

    raw, enterprise = declare(topics.raw), declare(topics.enterprise)
    raw_dlq, enterprise_dlq = declare(topics.raw_dlq), declare(topics.enterprise_dlq)
    facts_topic, alerts_topic = declare(topics.integrity_facts), declare(topics.integrity_alerts)
    # The changelog is named in the flow map and created up front, like every topic.
    # Only the check agent reads and writes the state; a worker without it neither
    # declares nor recovers it.
    state: Any = None
    if checks:
        state = app.Table(
            "integrity-state",
            default=None,
            partitions=INTEGRITY_STATE.partitions,
            key_type=bytes,  # the facts record's key, as it came
            value_type=dict,  # SubjectState.to_json(), serialized as JSON
            # Written after a batch, outside any one event: the changelog partition comes from
            # the key, as the facts record's did (same partitioner, same partition count).
            use_partitioner=True,
            changelog_topic=app.topic(
                topics.integrity_state,
                partitions=INTEGRITY_STATE.partitions,
                key_serializer="raw",
                value_serializer="json",
                internal=True,
                allow_empty=True,
            ),
        )

    async def write_state(key: bytes, value: dict[str, Any]) -> Awaitable[Any]:
        """Set a subject's state and queue it on the changelog, as faust's recovery reads it.

        The result resolves on the broker's ack.
        """
        state.data[key] = value
        partition = partition_of(key.decode(), INTEGRITY_STATE.partitions)
        return await produce(topics.integrity_state, key, orjson.dumps(value), partition)

    async def queue_alert(alert: IntegrityAlert) -> Awaitable[Any]:
        """Queue an alert, keyed by its id; the result resolves on the broker's ack."""
        return await produce(topics.integrity_alerts, alert.alert_id.encode(), encode_alert(alert))

    async def publish_alert(alert: IntegrityAlert) -> None:
        # Wait for the broker's ack: the record that raised it is not acknowledged before
        # the alert is delivered.
        await (await queue_alert(alert))
        stats.alerts += 1

    async def park(dlq: Any, msg: Any, exc: DataError) -> None:
        """Send a record that cannot be used to a dead-letter topic, saying why and whence."""
        stats.dead_lettered += 1
        log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
        await dlq.send(key=msg.key, value=msg.value,
                       headers=dead_letter_headers(exc, msg.topic, msg.partition, msg.offset))  # fmt: skip

    async def produce(
        topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> Awaitable[Any]:
        """Queue one record on faust's producer; the result resolves on the broker's ack.

        faust's ``Topic.send`` costs several times more per record (channels, futures,
        callbacks); the hot paths need none of it.
        """
        return await app.producer.send(topic, key, value, partition, None, None)

    async def normalize_agent(stream: Any) -> None:
        async for batch in stream.take_events(NORMALIZE_BATCH, within=NORMALIZE_WITHIN_S):
            # One facts message per partition per batch, sent straight to the producer:
            # faust's commit flushes it before the offsets move, so nothing is acknowledged
            # before it is delivered.
            facts: list[Fact] = []
            for ev in batch:
                msg = ev.message
                event: LotEventBase | None = None
                try:
                    event = deps.serde.decode(
                        msg.value or b"", topic=msg.topic, partition=msg.partition,
                        offset=msg.offset,
                    )  # fmt: skip
                    out = normalize(event, deps.sites)
                    check_enterprise(out)
                except DataError as exc:
                    await park(raw_dlq, msg, exc)
                    if isinstance(exc, UnmappedValueError) and event is not None:
                        await publish_alert(unmapped_alert(event, exc, datetime.now(UTC)))
                    continue
                lots = out.lots()
                await produce(
                    topics.enterprise,
                    lots[0].encode() if lots else out.envelope.event_id.encode(),
                    deps.serde.encode(out, topic=topics.enterprise),
                )
                facts.extend(facts_of(out, partition=msg.partition))
                stats.normalized += 1
            for partition, part_facts in by_partition(facts).items():
                await produce(topics.integrity_facts, part_facts[0].subject.encode(),
                              encode_facts(part_facts), partition)  # fmt: skip
            stats.facts += len(facts)

    async def integrity_check(stream: Any) -> None:
        async for batch in stream.take_events(CHECK_BATCH, within=CHECK_WITHIN_S):
            incoming: dict[bytes, list[Fact]] = {}
            count = 0
            for ev in batch:
                msg = ev.message
                try:
                    facts = decode_facts(msg.value or b"")
                    for f in facts:
                        incoming.setdefault(f.subject.encode(), []).append(f)
                    count += len(facts)
                except (ValueError, KeyError, TypeError) as exc:  # not ours: nothing to check
                    log.warning("integrity facts at %s[%s]@%s unreadable: %r", msg.topic,
                                msg.partition, msg.offset, exc)  # fmt: skip
            # A subject's facts of the whole batch are one step, in the order they came:
            # its state is read, evaluated and written once instead of once per message.
            changed: dict[bytes, dict[str, Any]] = {}
            outboxes: dict[bytes, list[IntegrityAlert]] = {}
            for key, subject_facts in incoming.items():
                subject_state = SubjectState.from_json(state.data.get(key))
                # an outbox still full was left by a worker that died before sending it
                unsent = subject_state.outbox
                dirty, alerts = step(subject_state, subject_facts, deps.thresholds,
                                     datetime.now(UTC))  # fmt: skip
                subject_state.outbox = unsent + alerts
                if subject_state.outbox:
                    outboxes[key] = subject_state.outbox
                if dirty or subject_state.outbox:
                    changed[key] = subject_state.to_json()
            # Write-ahead: the state, with the alerts it decided, reaches the changelog before
            # any alert is sent, and the batch's facts are acknowledged after both. Sending
            # first let a worker killed in between leave an alert open (decided on part of a
            # batch's facts) that its successor, deciding on all of them, never withdrew.
            # faust's own table writes are bypassed: they wait in a buffer that its
            # pre-commit flush stops draining after 0.1 s.
            await asyncio.gather(*[await write_state(key, value) for key, value in changed.items()])
            deliveries = [
                await queue_alert(alert) for outbox in outboxes.values() for alert in outbox
            ]
            await asyncio.gather(*deliveries)
            stats.alerts += len(deliveries)
            for key in outboxes:  # sent: a successor need not send them again
                await write_state(key, {**changed[key], "outbox": []})
            stats.checked += count

    async def alert_sink(stream: Any) -> None:
        async for batch in stream.take_events(SINK_BATCH, within=SINK_WITHIN_S):
            alerts: list[IntegrityAlert] = []
            for ev in batch:
                msg = ev.message
                try:
                    alerts.append(decode_alert(msg.value or b"", topic=msg.topic,
                                               partition=msg.partition, offset=msg.offset))  # fmt: skip
                except DataError as exc:
                    log.warning("skipped an unreadable alert: %s", exc)
            new = await _retry(partial(upsert_alerts, deps.store, alerts), stats)
            count_new(new)
            stats.alerts_new += len(new)
            stats.alerts_stored += len(batch)

    async def sink_agent(stream: Any) -> None:
        rewind = RewindWatch(await _retry(partial(deps.store.progress, app.conf.id), stats))
        async for batch in stream.take_events(SINK_BATCH, within=SINK_WITHIN_S):
            good: list[LotEventBase] = []
            positions: dict[tuple[str, int], int] = {}
            for ev in batch:
                msg = ev.message
                if (msg.topic, msg.partition) not in positions:
                    _check_rewind(rewind, app, msg.tp, stats)
                positions[(msg.topic, msg.partition)] = msg.offset + 1
                try:
                    good.append(
                        deps.serde.decode(
                            msg.value or b"",
                            topic=msg.topic,
                            partition=msg.partition,
                            offset=msg.offset,
                        )
                    )
                except DataError as exc:
                    await park(enterprise_dlq, msg, exc)
            progress = [
                Progress(consumer=app.conf.id, topic=t, partition=p, next_offset=o)
                for (t, p), o in positions.items()
            ]
            result = await _retry(partial(deps.store.apply, good, progress), stats)
            rewind.advance(positions)
            stats.stored += result.stored
            stats.duplicates += result.duplicates
            stats.conflicts += result.conflicts
            if result.conflicting:
                by_id = {e.envelope.event_id: e for e in good}
                for conflict in result.conflicting:
                    event = by_id[conflict.event_id]
                    await publish_alert(conflict_alert(event, conflict, datetime.now(UTC)))

    async def clock() -> None:
        # Tables are written from the stream only: the timer sends each source and each
        # unreceived transfer on this worker's partitions a tick, which the check agent takes.
        # A subject recovered with alerts in its outbox gets one too: the check agent sends them.
        now = datetime.now(UTC)
        for key, value in list(state.data.items()):
            if _wants_tick(key, value):
                await facts_topic.send(key=key, value=encode_facts([tick(key.decode(), now)]))

    if checks:
        app.agent(raw)(normalize_agent)
        app.agent(facts_topic)(integrity_check)
        app.timer(deps.tick_s)(clock)
    if stores:
        app.agent(enterprise)(sink_agent)
        app.agent(alerts_topic)(alert_sink)

    watch = ProgressWatch(deps.stall_s)

    @app.timer(deps.heartbeat_s)
    async def heartbeat() -> None:
        lag = 0
        if isinstance(app.consumer, RewindSafeConsumer):
            await app.consumer.rewind_beyond_end()
            stats.offset_rewinds = app.consumer.rewinds
            lag = await _lag(app.consumer)
        stuck = watch.stalled(processed=stats.processed, lag=lag, now=time.monotonic())
        try:
            deps.store.heartbeat(
                role.heartbeat_component, healthy=not stuck, detail=stats.as_json()
            )
        except RetriableError as exc:
            log.warning("heartbeat not written: %s", exc)
        if stuck:
            log.error("no record processed for %.0fs with %d waiting: exiting so the worker is "
                      "restarted instead of hanging", deps.stall_s, lag)  # fmt: skip
            os._exit(EXIT_STALLED)  # faust would wait on the stuck task; nothing left to flush

    return app


def _wants_tick(key: bytes, value: dict[str, Any] | None) -> bool:
    """Whether the clock sends this subject of the state table a tick."""
    if value and value.get("outbox"):
        return True  # recovered with alerts unsent: the check agent sends them
    if key.startswith(b"transfer:"):  # unless received: then nothing can become overdue
        return not any(f.get("r") == "origin" for f in (value or {}).get("facts", []))
    return key.startswith(b"source:")


def _check_rewind(rewind: RewindWatch, app: faust.App, tp: Any, stats: WorkerStats) -> None:
    """Count and report a partition that restarted below the sink's stored progress."""
    stored = rewind.rewound(tp.topic, tp.partition, end_offset=app.consumer.highwater(tp))
    if stored is None:
        return
    stats.topic_resets += 1
    log.error(
        "%s[%s] ends at offset %d but the store already holds progress up to %d: the "
        "broker lost its data. Processing the partition from its new start; records the "
        "old broker acknowledged but the store never got are lost on the way: compare "
        "GET /api/v1/sources with the sources and backfill their connectors",
        tp.topic, tp.partition, app.consumer.highwater(tp), stored,
    )  # fmt: skip


async def _lag(consumer: RewindSafeConsumer) -> int:
    """:meth:`RewindSafeConsumer.lag`, 0 when the broker cannot say."""
    try:
        return await consumer.lag()
    except Exception as exc:  # a metadata hiccup must not kill the heartbeat
        log.warning("lag unknown: %s", exc)
        return 0


async def _retry(write: Callable[[], T], stats: WorkerStats) -> T:
    """Write to the store, backing off while the database is unavailable; never drops it.

    The write runs on the event loop, not in a thread: a rebalance must not revoke the
    partitions of a batch halfway through its transaction.
    """
    delay = 0.5
    while True:
        try:
            return write()
        except RetriableError as exc:
            stats.errors.append(str(exc))
            log.warning("genealogy store unavailable, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
