"""The connector framework: a source says what it reads; the base does everything else.

A :class:`Source` subclass states its name, system and site, reads records after a
position, and maps one record to lot events. :class:`Connector` owns the loop:

1. read a batch strictly after the last one (after the stored checkpoint on start);
2. map every record; a record that cannot be mapped (any
   :class:`~schemas.errors.DataError`) goes to the connectors' dead-letter topic with
   the raw payload, its source position and the reason, and the batch carries on;
3. publish the events and wait until the broker acknowledged all of them (idempotent
   producer, ``acks=all``);
4. only then store the new checkpoint, in the hub database.

Steps 1-3 of the next batch overlap with the delivery of the previous ones (at most
``max_in_flight`` batches in flight); the checkpoint only ever moves over batches
whose every event was acknowledged, in order. A delivery failure sends the
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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from prometheus_client import Counter, Gauge

from connectors.checkpoints import CheckpointStore
from connectors.publisher import Delivery, KafkaPublisher
from schemas.errors import BrokerUnavailableError, ConfigurationError, DataError, RetriableError
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
    """One record as read from a plant system, before mapping."""

    position: P
    record_kind: str
    record_key: str
    raw: bytes
    #: when the source says the record last changed (for the checkpoint-lag metric)
    changed_at: datetime | None = None


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

    def __init__(self, *, name: str, site: str) -> None:
        self.name = name
        self.site = site

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
        max_in_flight: int = 4,
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
        self.max_in_flight = max_in_flight
        #: where the position is stored: the source's name, or e.g. a backfill's own key
        self.checkpoint_key = checkpoint_key or source.name
        self._in_flight: deque[tuple[SourceRecord[P], int, Delivery]] = deque()
        self._next: P | None = None  # read position of the batches in flight

    def position(self) -> P | None:
        """The stored checkpoint, or None before the first delivered batch."""
        text = self.checkpoints.load(self.checkpoint_key)
        return None if text is None else self.source.position_from_json(text)

    def run_once(self) -> BatchResult:
        """One batch: read, map, send; then checkpoint every batch the broker acknowledged.

        Up to ``max_in_flight`` batches are sent before waiting for their
        acknowledgements, so reading and mapping overlap with delivery.
        """
        after = self._next if self._next is not None else self.position()
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
            try:
                events.extend(self.source.to_events(record))
            except DataError as exc:
                dead += 1
                self._dead_letter(record, exc)
        if dead:
            self.dead_letters.flush()  # a dead letter is a delivery too: never lose one
            RECORDS_DEAD_LETTERED.labels(*self._labels).inc(dead)
            self.status.dead_lettered += dead
        self._in_flight.append((records[-1], len(events), self.publisher.send(events)))
        self._next = records[-1].position
        self._advance(wait=len(self._in_flight) > self.max_in_flight)
        return BatchResult(len(records), len(events), dead)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for every batch in flight and checkpoint it; raise if one is not acknowledged."""
        if self._in_flight:
            self._advance(wait=True, timeout_s=timeout_s)

    def _advance(self, *, wait: bool, timeout_s: float = 30.0) -> None:
        try:
            if wait:
                self.publisher.flush(timeout_s)
            else:
                self.publisher.poll()
        except RetriableError:
            self._forget_in_flight()
            raise
        while self._in_flight and self._in_flight[0][2].done:
            last, count, delivery = self._in_flight.popleft()
            if delivery.errors:
                self._forget_in_flight()
                raise BrokerUnavailableError(
                    f"{len(delivery.errors)} event(s) of {self.source.name} not acknowledged: "
                    f"{delivery.errors[0]}"
                )
            self.checkpoints.save(self.checkpoint_key, last.position.to_json())
            EVENTS_PUBLISHED.labels(*self._labels).inc(count)
            self.status.events_published += count
            self._succeeded(last)

    def _forget_in_flight(self) -> None:
        """After a delivery failure, re-read from the checkpoint (at-least-once)."""
        self._in_flight.clear()
        self._next = None

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
                self.source.close()
