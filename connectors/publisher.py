"""Publishing lot events to Kafka: idempotent producer, flush-or-raise.

:meth:`KafkaPublisher.publish` returns only once the broker acknowledged every event
of the batch; otherwise it raises :class:`~schemas.errors.BrokerUnavailableError`
and the caller must not advance its checkpoint. Re-publishing the same events is
harmless: their ``event_id`` s are stable, and the hub stores each once.

Example::

    publisher = KafkaPublisher(settings.producer_config(), serde, settings.topics.raw)
    publisher.publish(events)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from schemas.errors import BrokerUnavailableError
from schemas.model import LotEventBase
from schemas.serde import Serde


class Delivery:
    """Acknowledgements of one batch, filled in by librdkafka's delivery callbacks."""

    __slots__ = ("errors", "on_error", "pending")

    def __init__(self, count: int, on_error: Callable[[], None] | None = None) -> None:
        self.pending = count
        self.errors: list[str] = []
        self.on_error = on_error

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        self.pending -= 1
        if err is not None:
            self.errors.append(str(err))
            if self.on_error is not None:
                self.on_error()

    @property
    def done(self) -> bool:
        """Every record of the batch was acknowledged or refused."""
        return self.pending <= 0


class KafkaPublisher:
    """One long-lived confluent-kafka producer for one connector."""

    def __init__(self, producer_config: dict[str, Any], serde: Serde, topic: str) -> None:
        self._config = producer_config
        self._producer = _connected_producer(producer_config)
        #: a record was refused: start the next send on a new producer
        self._broken = False
        self._serde = serde
        self.topic = topic

    def publish(self, events: Sequence[LotEventBase], *, timeout_s: float = 30.0) -> None:
        """Send ``events`` keyed by their primary lot and wait for every acknowledgement."""
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        self._recover()
        for event in events:
            lots = event.lots()
            key = (lots[0] if lots else event.envelope.event_id).encode()
            self.publish_bytes(key, self._serde.encode(event, topic=self.topic), delivered)
        self._flush(timeout_s, failures)

    def send(self, events: Sequence[LotEventBase]) -> Delivery:
        """Queue ``events`` without waiting; the returned :class:`Delivery` fills in.

        Used by connectors to read the next batch while this one is in flight;
        call :meth:`poll` or :meth:`flush` to serve the delivery callbacks.
        """
        self._recover()
        delivery = Delivery(len(events), self._refused)
        produce, encode, topic = self._producer.produce, self._serde.encode, self.topic
        for event in events:
            lots = event.lots()
            key = (lots[0] if lots else event.envelope.event_id).encode()
            value = encode(event, topic=topic)
            try:
                produce(topic, key=key, value=value, on_delivery=delivery)
            except (BufferError, KafkaException):  # queue full, or worse: the slow path knows
                self.publish_bytes(key, value, delivery)
        self._producer.poll(0)
        return delivery

    def poll(self) -> None:
        """Serve delivery callbacks that are due, without waiting."""
        self._producer.poll(0)

    def wait(self, delivery: Delivery, timeout_s: float = 30.0) -> None:
        """Serve delivery callbacks until ``delivery`` is complete; raise after ``timeout_s``.

        Unlike :meth:`flush`, records queued after ``delivery`` may stay in flight.
        """
        deadline = time.monotonic() + timeout_s
        while not delivery.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnavailableError(
                    f"{delivery.pending} record(s) to {self.topic} still unacknowledged after "
                    f"{timeout_s:.0f}s; is the Kafka cluster reachable?"
                )
            self._producer.poll(min(left, 0.1))

    def publish_bytes(
        self,
        key: bytes | None,
        value: bytes,
        on_delivery: Any = None,
        *,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Queue one pre-encoded record (dead letters keep their bytes as they were).

        Call :meth:`flush` to wait for the acknowledgement.
        """
        while True:
            try:
                self._producer.produce(
                    self.topic, key=key, value=value, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain
            except KafkaException as exc:
                raise BrokerUnavailableError(
                    f"cannot queue record for {self.topic}: {exc}"
                ) from exc

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; raise if any is still unacknowledged.

        Refused records are reported through their delivery callbacks.
        """
        self._flush(timeout_s, [])

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued (up to ``timeout_s``), drop the rest, disconnect.

        Returns how many records were dropped (their senders were told nothing was
        acknowledged, so they will send them again).
        """
        remaining = int(self._producer.flush(timeout_s))
        if remaining:
            self._producer.purge()
        self._producer.close()
        return remaining

    def _flush(self, timeout_s: float, failures: list[str]) -> None:
        remaining = self._producer.flush(timeout_s)
        if failures or remaining:
            self._replace_producer()
        if failures:
            raise BrokerUnavailableError(
                f"{len(failures)} record(s) to {self.topic} were not acknowledged: {failures[0]}"
            )
        if remaining:
            raise BrokerUnavailableError(
                f"{remaining} record(s) to {self.topic} still unacknowledged after {timeout_s:.0f}s; "
                "is the Kafka cluster reachable?"
            )

    def _refused(self) -> None:
        self._broken = True

    def _recover(self) -> None:
        if self._broken:
            self._replace_producer()

    def _replace_producer(self) -> None:
        """Drop what is queued and start over with a new producer (and producer id).

        An idempotent producer whose broker restarted without its data keeps waiting
        for acknowledgements the new broker never sends; only a new producer recovers.
        The caller re-sends from its checkpoint, so nothing purged is lost.
        """
        self._producer.purge()
        self._producer.flush(0)  # serve the purge callbacks: the batches count as failed
        self._producer = _connected_producer(self._config)
        self._broken = False


def _connected_producer(config: dict[str, Any]) -> Producer:
    """A new producer that starts connecting to the cluster now, not at its first record.

    An idempotent producer asks for its producer id on a 500 ms timer, and only over a
    broker connection that is already up. A producer with nothing queued connects no
    broker, so a connector whose first batch takes a few hundred milliseconds to read
    missed the first tick and waited a whole second for its first acknowledgement. A
    metadata request (answered or not within the millisecond) opens the connection.
    """
    producer = Producer(config)
    # Only the connection attempt is wanted; the answer comes too late to matter.
    with contextlib.suppress(KafkaException):
        producer.list_topics(timeout=0.001)
    return producer
