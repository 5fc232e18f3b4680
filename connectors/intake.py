"""Push connectors: plant systems that send to the hub instead of being polled.

A pull connector (:class:`connectors.base.Connector`) reads after a cursor. Some systems
push: an MES drops B2MML files into a folder or POSTs them, an EPCIS repository calls the
capture interface. For those, an :class:`Intake` states the connector's name, site and
system and offers an HTTP app (``lothub up`` serves it under ``/intake/<name>``) and/or a
drop-folder watcher; the :class:`IntakeSink` it is given owns what
:class:`~connectors.base.Connector` owns for pull sources:

* publishing is flush-or-raise: an HTTP ``202`` or a file moved to ``processed/`` means the
  broker acknowledged every event (``acks=all``); a broker outage raises
  :class:`~schemas.errors.BrokerUnavailableError`, so the sender retries (HTTP ``503``) or
  the file stays where it is, and a re-send gives the same event ids (stored once);
* a message that cannot be used goes to the connectors' dead-letter topic with its bytes,
  the reason and where it came from;
* the ``lothub_connector_*`` metrics and the status ``lothub connectors status`` shows.

Kinds (``[connectors.NAME] kind = ...`` in the site configuration, see
:mod:`connectors.registry`): ``b2mml`` (settings ``folder`` and/or ``http``) and
``epcis-capture``.

Example::

    sink = IntakeSink(name="mes-alp", site="ALP", system=SystemKind.MES,
                      publisher=raw, dead_letters=dlq, checkpoints=checkpoints)
    intake = build_intake("mes-alp", sites, sink)
    if intake.watch is not None:
        threading.Thread(target=intake.watch, args=(stop,)).start()
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from fastapi import FastAPI

from connectors.base import (
    DLQ_CONNECTOR,
    DLQ_SOURCE_POSITION,
    EVENTS_PUBLISHED,
    LAST_SUCCESS,
    RECORDS_DEAD_LETTERED,
    RECORDS_READ,
    SOURCE_ERRORS,
    ConnectorStatus,
)
from connectors.checkpoints import CheckpointStore
from connectors.publisher import KafkaPublisher
from schemas.errors import RetriableError
from schemas.model import LotEventBase, SystemKind
from schemas.topics import DLQ_REASON, DLQ_REASON_CODE

log = logging.getLogger("lothub.connectors.intake")


class Watcher(Protocol):
    """Watches a drop folder until ``stop`` is set (``until_idle``: one pass, then return)."""

    def __call__(self, stop: threading.Event, *, until_idle: bool = False) -> None:
        """Process what arrives; with ``until_idle`` raise the first fault instead of retrying."""


class PushSink(Protocol):
    """What an intake hands its messages to (:class:`IntakeSink`; a recorder in tests)."""

    status: ConnectorStatus

    def publish(self, events: Sequence[LotEventBase]) -> None:
        """Deliver ``events``; raise :class:`RetriableError` if the broker did not take them."""

    def dead_letter(self, data: bytes, reason: str, *, position: str = "") -> None:
        """Park an unusable message with its reason; raise if it could not be kept."""

    def report_error(self, exc: Exception) -> None:
        """Record a fault of the source side (a drop folder that is gone) in the status."""

    def close(self) -> None:
        """Release what the sink holds."""


class IntakeSink:
    """Where a push connector hands what it received: the broker, or the dead letters.

    Thread-safe (HTTP requests arrive on a thread pool while a watcher scans its folder).

    Example::

        sink.publish(events)                      # returns once the broker has them all
        sink.dead_letter(raw_bytes, "invalid-b2mml: line 3: ...", position="perf-17.xml")
    """

    def __init__(
        self,
        *,
        name: str,
        site: str,
        system: SystemKind,
        publisher: KafkaPublisher,
        dead_letters: KafkaPublisher,
        checkpoints: CheckpointStore | None = None,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.checkpoints = checkpoints
        self.flush_timeout_s = flush_timeout_s
        self.status = ConnectorStatus(name=name, site=site, system=system.value)
        self._labels = (site, system.value, name)
        self._lock = threading.Lock()

    def publish(self, events: Sequence[LotEventBase]) -> None:
        """Send ``events`` and wait for the broker; raise if any is not acknowledged."""
        RECORDS_READ.labels(*self._labels).inc()
        try:
            self.publisher.publish(events, timeout_s=self.flush_timeout_s)
        except RetriableError as exc:
            self.report_error(exc)
            raise
        now = datetime.now(UTC)
        EVENTS_PUBLISHED.labels(*self._labels).inc(len(events))
        LAST_SUCCESS.labels(*self._labels).set(now.timestamp())
        with self._lock:
            self.status.records_read += 1
            self.status.events_published += len(events)
            self.status.last_success = now
            self.status.consecutive_errors = 0
        self._report()

    def dead_letter(self, data: bytes, reason: str, *, position: str = "") -> None:
        """Park ``data`` with ``reason`` (``"<reason-code>: <message>"``); raise if not kept."""
        code = reason.split(":", 1)[0].strip() if ":" in reason else "rejected"
        headers: list[tuple[str, str | bytes | None]] = [
            (DLQ_REASON, reason.encode()),
            (DLQ_REASON_CODE, code.encode()),
            (DLQ_CONNECTOR, self.name.encode()),
            (DLQ_SOURCE_POSITION, position.encode()),
        ]
        try:
            self.dead_letters.publish_bytes(self.name.encode(), data, headers=headers)
            self.dead_letters.flush(self.flush_timeout_s)
        except RetriableError as exc:
            self.report_error(exc)
            raise
        RECORDS_READ.labels(*self._labels).inc()
        RECORDS_DEAD_LETTERED.labels(*self._labels).inc()
        with self._lock:
            self.status.records_read += 1
            self.status.dead_lettered += 1
        self._report()

    def close(self) -> None:
        """Disconnect from the broker and release the hub database connection."""
        try:
            # publish() and dead_letter() wait for the broker, so nothing should be queued.
            dropped = self.publisher.close() + self.dead_letters.close()
            if dropped:
                log.warning("%s: closed with %d unacknowledged records", self.name, dropped)
        finally:
            if self.checkpoints is not None:
                self.checkpoints.close()

    def report_error(self, exc: Exception) -> None:
        """Count a fault (metrics, status); the caller retries."""
        SOURCE_ERRORS.labels(*self._labels, type(exc).__name__).inc()
        with self._lock:
            self.status.last_error = str(exc)
            self.status.consecutive_errors += 1
        self._report()

    def _report(self) -> None:
        if self.checkpoints is None:
            return
        with self._lock:
            text = json.dumps(self.status.as_dict())
        try:
            self.checkpoints.save_status(self.name, text)
        except RetriableError as exc:  # status is for people; never refuse data for it
            log.warning("%s: status not saved: %s", self.name, exc)


@dataclass(frozen=True, kw_only=True)
class Intake:
    """One configured push connector: what it serves over HTTP and what folder it watches.

    ``app`` is mounted by ``lothub up`` under ``/intake/<name>`` (behind the hub's
    authentication); ``watch`` runs in a thread until its stop event is set. At least one
    of the two is set.

    Example::

        Intake(name="mes-alp", kind="b2mml", site="ALP", system=SystemKind.MES,
               app=create_b2mml_app(sink.publish, mapping, site), watch=None, sink=sink)
    """

    name: str
    kind: str
    site: str
    system: SystemKind
    app: FastAPI | None
    watch: Watcher | None
    sink: PushSink
    #: the paths ``app`` answers, for operators (``/b2mml``, ``/capture``)
    paths: tuple[str, ...] = ()
