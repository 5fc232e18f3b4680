"""The connector framework: a source says what it reads; the base does everything else.

A :class:`Source` subclass states its name, system and site, reads records after a
position, and maps one record to lot events. :class:`Connector` owns the loop:

1. read a batch strictly after the last one (after the stored checkpoint on start);
2. map every record; a record that cannot be mapped (any
   :class:`~schemas.errors.DataError`) goes to the connectors' dead-letter topic with
   the raw payload, its source position and the reason, and the batch carries on;
3. publish the events and wait until the broker acknowledged all of them (idempotent
   producer, ``acks=all``);
4. only then store the new checkpoint, in the hub database (the newest acknowledged
   position, at most once per ``checkpoint_every_s`` and whenever the connector idles,
   stops or fails).

Steps 1-3 of the next batches overlap with the delivery of the previous ones (up to
``max_in_flight_events`` events unacknowledged); the checkpoint only ever moves over
batches whose every event was acknowledged, in order. A delivery failure sends the
connector back to its checkpoint.

A crash between 3 and 4 re-sends the batch on restart: events have stable ids, and
the hub stores each once (at-least-once delivery, effectively-once storage). Source
and broker outages are retried with capped exponential back-off and reported in the
connector's status; they never end the loop.

Example::

    class WmsTransactions(Source[Cursor]):
        system_kind = SystemKind.WMS

        def read(self, after: Cursor | None, limit: int) -> list[SourceRecord[Cursor]]:
            ...  # SELECT ... WHERE (updated_at, id) > after ORDER BY updated_at, id LIMIT limit

        def to_events(self, record: SourceRecord[Cursor]) -> list[LotEventBase]:
            ...

    Connector(WmsTransactions(...), publisher, dead_letters, checkpoints).run(stop)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from prometheus_client import Counter, Gauge
from pydantic import ValidationError as PydanticValidationError

from connectors.checkpoints import CheckpointStore
from connectors.publisher import Delivery, KafkaPublisher
from schemas.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DataError,
    EventValidationError,
    RetriableError,
)
from schemas.model import LotEventBase, SystemKind
from schemas.topics import (
    DLQ_REASON,
    DLQ_REASON_CODE,
)

log = logging.getLogger("lothub.connectors")

#: Header naming the connector and the source position of a dead-lettered record.
DLQ_CONNECTOR = "lothub-dlq-connector"
DLQ_SOURCE_POSITION = "lothub-dlq-source-position"

_LABELS = ("site", "system", "connector")
RECORDS_READ = Counter("lothub_connector_records_read_total", "Source records read", _LABELS)
EVENTS_PUBLISHED = Counter(
    "lothub_connector_events_published_total", "Events acknowledged by the broker", _LABELS
)
RECORDS_DEAD_LETTERED = Counter(
    "lothub_connector_records_dead_lettered_total", "Records sent to the dead-letter topic", _LABELS
)
SOURCE_ERRORS = Counter(
    "lothub_connector_errors_total", "Source or broker faults (retried)", (*_LABELS, "kind")
)
LAST_SUCCESS = Gauge(
    "lothub_connector_last_success_timestamp_seconds", "When a batch last completed", _LABELS
)
CHECKPOINT_LAG = Gauge(
    "lothub_connector_checkpoint_lag_seconds",
    "Age of the newest source record behind the checkpoint",
    _LABELS,
)
#: alert rules judge the age of the last success against it (push intakes have none)
POLL_INTERVAL = Gauge(
    "lothub_connector_poll_interval_seconds",
    "How often a polling connector reads its source",
    _LABELS,
)


class Position(Protocol):
    """Where a source record sits; ordered, and stored as JSON in the checkpoint."""

    def to_json(self) -> str:
        """Serialize for the checkpoint table and dead-letter headers."""
        ...


P = TypeVar("P", bound=Position)


@dataclass(frozen=True, order=True, slots=True)
class Cursor:
    """Composite ``(updated_at, pk)`` cursor: rows strictly after it are new.

    Two rows with the same ``updated_at`` are told apart by ``pk``, so a batch that
    ends in the middle of equal timestamps neither loses nor repeats a row.
    """

    updated_at: datetime
    pk: str

    def to_json(self) -> str:
        """``{"updated_at": ISO-8601 as the source stores it, "pk": ...}``.

        A source with plant-local (naive) timestamps keeps them naive here, because
        the cursor is compared in the source's own terms.
        """
        return json.dumps({"updated_at": self.updated_at.isoformat(), "pk": self.pk})

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(updated_at=datetime.fromisoformat(data["updated_at"]), pk=str(data["pk"]))


@dataclass(frozen=True, slots=True)
class SourceRecord(Generic[P]):
    """One record as read from a plant system, before mapping.

    ``payload`` is the record as the source read it (a row, a parsed line, a JSON
    object), mapped as it is; :attr:`raw` turns it into the bytes a dead letter
    carries, only when a record needs one.
    """

    position: P
    record_kind: str
    record_key: str
    #: JSON-serializable, or bytes kept as they are; dates and decimals become strings
    payload: Any
    #: when the source says the record last changed (for the checkpoint-lag metric)
    changed_at: datetime | None = None

    @property
    def raw(self) -> bytes:
        """The record for the dead-letter topic: JSON with sorted keys (bytes as read)."""
        if isinstance(self.payload, bytes):
            return self.payload
        return json.dumps(self.payload, default=str, sort_keys=True).encode()


class Source(ABC, Generic[P]):
    """A plant system read incrementally. Subclasses declare and map; the base runs.

    Example::

        class LimsCsv(Source[FilePosition]):
            system_kind = SystemKind.LIMS
            def read(self, after, limit): ...
            def to_events(self, record): ...
            def position_from_json(self, text): return FilePosition.from_json(text)
    """

    system_kind: ClassVar[SystemKind]
    #: True if the events are numbered 1, 2, 3... by :meth:`take_sequence`: the connector
    #: keeps the next number with the checkpoint, so the stream can tell a lost event
    numbers_densely: ClassVar[bool] = False

    def __init__(self, *, name: str, site: str) -> None:
        self.name = name
        self.site = site
        #: the number :meth:`take_sequence` gives next (the connector restores it)
        self.next_sequence = 1

    def take_sequence(self) -> int:
        """The ``envelope.sequence`` of the next event of a densely numbering source.

        Numbers follow the read order from the checkpoint, so a batch read again after
        a crash gets the same numbers and its events stay byte-identical.
        """
        n = self.next_sequence
        self.next_sequence = n + 1
        return n

    @abstractmethod
    def read(self, after: P | None, limit: int) -> Sequence[SourceRecord[P]]:
        """Up to ``limit`` records strictly after ``after``, in position order.

        Raise :class:`~schemas.errors.SourceUnavailableError` when the system does
        not answer.
        """

    @abstractmethod
    def to_events(self, record: SourceRecord[P]) -> list[LotEventBase]:
        """The raw lot events of one record; raise a :class:`DataError` if it is bad."""

    @abstractmethod
    def position_from_json(self, text: str) -> P:
        """Rebuild a position from its checkpoint JSON."""

    def position_at(self, since: datetime) -> P:
        """The position just before ``since``, for a backfill; not every source has one."""
        raise ConfigurationError(f"connector {self.name} cannot backfill from a date")

    def close(self) -> None:
        """Release connections (called when the connector stops)."""


@dataclass
class ConnectorStatus:
    """What ``lothub connectors status`` shows for one connector."""

    name: str
    site: str
    system: str
    records_read: int = 0
    events_published: int = 0
    dead_lettered: int = 0
    last_success: datetime | None = None
    last_error: str | None = None
    consecutive_errors: int = 0
    checkpoint: str | None = None
    #: how far behind its source the last batch was (seconds from record change to delivery)
    lag_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "name": self.name, "site": self.site, "system": self.system,
            "records_read": self.records_read, "events_published": self.events_published,
            "dead_lettered": self.dead_lettered,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error, "consecutive_errors": self.consecutive_errors,
            "checkpoint": self.checkpoint, "lag_s": self.lag_s,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one :meth:`Connector.run_once` did."""

    records: int
    events: int
    dead_lettered: int

    @property
    def empty(self) -> bool:
        """True when the source had nothing new."""
        return self.records == 0


class Connector(Generic[P]):
    """Runs one source: read, map, publish, dead-letter, checkpoint after delivery."""

    def __init__(
        self,
        source: Source[P],
        publisher: KafkaPublisher,
        dead_letters: KafkaPublisher,
        checkpoints: CheckpointStore,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 5.0,
        max_backoff_s: float = 60.0,
        max_in_flight_events: int = 20_000,
        checkpoint_every_s: float = 1.0,
        checkpoint_key: str | None = None,
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.checkpoints = checkpoints
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.status = ConnectorStatus(
            name=source.name, site=source.site, system=source.system_kind.value
        )
        self._labels = (source.site, source.system_kind.value, source.name)
        POLL_INTERVAL.labels(*self._labels).set(poll_interval_s)
        #: About a second of a connector's throughput: enough to go on reading and mapping
        #: while the producer starts (its idempotent id takes ~0.5 s) or the broker is slow,
        #: far below librdkafka's own queue (100,000 messages). A failure re-sends them all.
        self.max_in_flight_events = max_in_flight_events
        #: The newest acknowledged position is stored at most this often (and whenever the
        #: connector idles, stops or fails): each save is a commit in the hub database.
        #: A crash re-sends what was acknowledged since; stable ids make that harmless.
        self.checkpoint_every_s = checkpoint_every_s
        #: where the position is stored: the source's name, or e.g. a backfill's own key
        self.checkpoint_key = checkpoint_key or source.name
        # each batch in flight: last record, events, delivery, next sequence number after it
        self._in_flight: deque[tuple[SourceRecord[P], int, Delivery, int]] = deque()
        self._unacked = 0  # events of the batches in flight
        self._next: P | None = None  # read position of the batches in flight
        self._acked: SourceRecord[P] | None = None  # acknowledged, checkpoint not yet stored
        self._acked_sequence = 1  # the next sequence number after ``_acked``
        self._saved_at = self._reported_at = float("-inf")  # time.monotonic() of the last save

    def position(self) -> P | None:
        """The stored checkpoint, or None before the first delivered batch."""
        text = self.checkpoints.load(self.checkpoint_key)
        return None if text is None else self.source.position_from_json(text)

    def run_once(self) -> BatchResult:
        """One batch: read, map, send; then checkpoint every batch the broker acknowledged.

        Up to ``max_in_flight_events`` events are sent before waiting for the oldest
        batch's acknowledgements, so reading and mapping overlap with delivery.
        """
        after = self._next
        if after is None:  # (re)start from the stored checkpoint, numbering included
            after = self.position()
            stored = self.checkpoints.load_sequence(self.checkpoint_key)
            self.source.next_sequence = 1 if stored is None else stored
        records = self.source.read(after, self.batch_size)
        if not records:
            self.drain()
            self._succeeded(None)
            return BatchResult(0, 0, 0)
        RECORDS_READ.labels(*self._labels).inc(len(records))
        self.status.records_read += len(records)
        events: list[LotEventBase] = []
        dead = 0
        for record in records:
            numbered = self.source.next_sequence
            try:
                events.extend(self.source.to_events(record))
            except DataError as exc:
                dead += 1
                self.source.next_sequence = numbered  # a record not sent takes no number
                self._dead_letter(record, exc)
            except PydanticValidationError as exc:  # a value the lot model refuses
                dead += 1
                self.source.next_sequence = numbered
                reason = (
                    f"{record.record_kind} record {record.record_key} breaks the lot model: {exc}"
                )
                self._dead_letter(record, EventValidationError(reason))
        if dead:
            self.dead_letters.flush()  # a dead letter is a delivery too: never lose one
            RECORDS_DEAD_LETTERED.labels(*self._labels).inc(dead)
            self.status.dead_lettered += dead
        self._in_flight.append(
            (records[-1], len(events), self.publisher.send(events), self.source.next_sequence)
        )
        self._unacked += len(events)
        self._next = records[-1].position
        self._advance(wait=self._unacked > self.max_in_flight_events)
        return BatchResult(len(records), len(events), dead)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for every batch in flight and checkpoint it; raise if one is not acknowledged."""
        if self._in_flight:
            try:
                self.publisher.flush(timeout_s)
            except RetriableError:
                self._forget_in_flight()
                raise
        self._advance(wait=False, store=True)

    def _advance(self, *, wait: bool, timeout_s: float = 30.0, store: bool = False) -> None:
        """Checkpoint the acknowledged batches at the head of the queue.

        With ``wait``, block until the oldest batch is acknowledged (not all of them:
        the newer ones stay in flight while the next batch is read and mapped). The
        checkpoint is stored if ``store`` or ``checkpoint_every_s`` has passed.
        """
        try:
            if wait and self._in_flight:
                self.publisher.wait(self._in_flight[0][2], timeout_s)
            else:
                self.publisher.poll()
        except RetriableError:
            self._forget_in_flight()
            raise
        done: SourceRecord[P] | None = None
        count = 0
        failed: Delivery | None = None
        while self._in_flight and self._in_flight[0][2].done:
            last, events, delivery, numbered = self._in_flight.popleft()
            self._unacked -= events
            if delivery.errors:
                failed = delivery
                break
            done, count, self._acked_sequence = last, count + events, numbered
        if done is not None:
            self._acked = done
            EVENTS_PUBLISHED.labels(*self._labels).inc(count)
            self.status.events_published += count
            self._succeeded(done)
        now = time.monotonic()
        if self._acked is not None and (
            store or failed is not None or now - self._saved_at >= self.checkpoint_every_s
        ):
            # one write for every batch acknowledged since the last: the newest covers all
            self.checkpoints.save(
                self.checkpoint_key,
                self._acked.position.to_json(),
                self._acked_sequence if self.source.numbers_densely else None,
            )
            self._acked, self._saved_at = None, now
        if failed is not None:
            self._forget_in_flight()
            raise BrokerUnavailableError(
                f"{len(failed.errors)} event(s) of {self.source.name} not acknowledged: "
                f"{failed.errors[0]}"
            )

    def _forget_in_flight(self) -> None:
        """After a failure, re-read after the last acknowledged batch (at-least-once)."""
        self._in_flight.clear()
        self._unacked = 0
        self._next = None if self._acked is None else self._acked.position
        self.source.next_sequence = self._acked_sequence  # unused if re-read from the store

    def _succeeded(self, last: SourceRecord[P] | None) -> None:
        now = datetime.now(UTC)
        self.status.last_success = now
        self.status.consecutive_errors = 0
        LAST_SUCCESS.labels(*self._labels).set(now.timestamp())
        if last is not None:
            self.status.checkpoint = last.position.to_json()
            if last.changed_at is not None:
                lag = max((now - last.changed_at).total_seconds(), 0.0)
                CHECKPOINT_LAG.labels(*self._labels).set(lag)
                self.status.lag_s = round(lag, 3)

    def _dead_letter(self, record: SourceRecord[P], exc: DataError) -> None:
        log.warning(
            "%s: dead-lettered %s %s: %s",
            self.source.name,
            record.record_kind,
            record.record_key,
            exc,
        )
        headers: list[tuple[str, str | bytes | None]] = [
            (DLQ_REASON, str(exc).encode()),
            (DLQ_REASON_CODE, exc.reason_code.encode()),
            (DLQ_CONNECTOR, self.source.name.encode()),
            (DLQ_SOURCE_POSITION, record.position.to_json().encode()),
        ]
        self.dead_letters.publish_bytes(record.record_key.encode(), record.raw, headers=headers)

    def _report(self) -> None:
        self._reported_at = time.monotonic()
        try:
            self.checkpoints.save_status(self.checkpoint_key, json.dumps(self.status.as_dict()))
        except RetriableError as exc:  # status is for people; never stop the data for it
            log.warning("%s: status not saved: %s", self.source.name, exc)

    def run(self, stop: threading.Event, *, until_idle: bool = False) -> None:
        """Poll until ``stop`` is set (or, with ``until_idle``, the source has nothing new).

        Retriable faults back off exponentially up to ``max_backoff_s`` and are
        reported in :attr:`status`; the loop never ends on them.
        """
        backoff = self.poll_interval_s
        try:
            while not stop.is_set():
                try:
                    result = self.run_once()
                except RetriableError as exc:
                    self._forget_in_flight()
                    self.status.last_error = str(exc)
                    self.status.consecutive_errors += 1
                    SOURCE_ERRORS.labels(*self._labels, type(exc).__name__).inc()
                    self._report()
                    backoff = min(max(backoff * 2, 0.5), self.max_backoff_s)
                    log.warning("%s: %s; retrying in %.1fs", self.source.name, exc, backoff)
                    stop.wait(backoff)
                    continue
                backoff = self.poll_interval_s
                if result.empty or time.monotonic() - self._reported_at >= self.checkpoint_every_s:
                    self._report()
                if result.empty:
                    if until_idle:
                        return
                    stop.wait(self.poll_interval_s)
        finally:
            try:
                self.drain()  # what was sent before the stop gets its checkpoint
            except RetriableError as exc:
                log.warning("%s: stopped with unacknowledged events: %s", self.source.name, exc)
            finally:
                self._report()
                self.source.close()
