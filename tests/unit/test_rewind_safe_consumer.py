"""The worker's consumer hands faust each partition's records in order, none skipped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.worker import RewindSafeConsumer

FACTS = TP("lothub.integrity.facts", 1)
CHANGELOG = TP("lothub.integrity.state", 1)


class Fetches:
    """What the broker side does: the batches each fetch returns, the seeks asked for."""

    def __init__(self, *batches: list[int], position: int, highwater: int = 10_000) -> None:
        self.batches = list(batches)
        self.position = position
        self.highwater = highwater
        self.seeks: list[tuple[TP, int]] = []


def consumer_fetching(
    monkeypatch: pytest.MonkeyPatch, fetches: Fetches, *, expected: int | None, tp: TP = FACTS
) -> RewindSafeConsumer:
    """A consumer whose fetches return ``fetches``' batches of ``tp``, next expected given."""

    async def fetched(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        for offset in fetches.batches.pop(0):
            yield tp, SimpleNamespace(offset=offset)

    async def at(self: Any, tp: TP) -> int:
        return fetches.position

    async def call_thread(fn: Any, *args: Any) -> Any:
        return await fn(*args)

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)
    monkeypatch.setattr(RewindSafeConsumer, "position", at)
    monkeypatch.setattr(RewindSafeConsumer, "highwater", lambda self, tp: fetches.highwater)
    consumer = RewindSafeConsumer.__new__(RewindSafeConsumer)  # no broker: getmany only
    consumer.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG.topic}))
    consumer._thread = SimpleNamespace(  # type: ignore[assignment]
        call_thread=call_thread, seek=lambda tp, offset: fetches.seeks.append((tp, offset))
    )
    consumer._expected = {} if expected is None else {tp: expected}
    consumer._holes = {}
    consumer._read_offset = {tp: expected}
    for state in ("_committed_offset", "_acked", "_acked_index", "_gap"):
        setattr(consumer, state, {})
    return consumer


def offsets_out(consumer: RewindSafeConsumer) -> list[int]:
    async def drain() -> list[int]:
        return [message.offset async for _, message in consumer.getmany(timeout=0)]

    return asyncio.run(drain())


def test_records_in_order_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_fetching(monkeypatch, Fetches([42, 43, 44], position=45), expected=42)
    assert offsets_out(consumer) == [42, 43, 44]
    assert consumer._expected[FACTS] == 45
    # faust's own drop and gap logic is left nothing to act on: the order is kept here
    assert consumer._read_offset[FACTS] is None


def test_records_fetched_before_a_seek_back_are_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Recovery sought the partition back to its committed offset 42 while the fetch loop
    # held 56-58: faust would take 43-55 as done. They wait for the consumer's re-fetch.
    fetches = Fetches([56, 57, 58], position=42)
    consumer = consumer_fetching(monkeypatch, fetches, expected=42)
    assert offsets_out(consumer) == []
    assert fetches.seeks == []  # the consumer is there already


def test_records_the_consumer_fetched_past_are_fetched_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 42-55 never reached faust and the consumer is past them: it is sent back for them
    fetches = Fetches([56, 57], [42, 43], position=58)
    consumer = consumer_fetching(monkeypatch, fetches, expected=42)
    assert offsets_out(consumer) == []
    assert fetches.seeks == [(FACTS, 42)]
    assert offsets_out(consumer) == [42, 43]


def test_a_hole_that_comes_back_from_the_re_fetch_is_the_partitions_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # offsets 43-55 do not exist (compaction, transaction markers): asked once, then taken
    fetches = Fetches([56, 57], [56, 57], position=58)
    consumer = consumer_fetching(monkeypatch, fetches, expected=43)
    assert offsets_out(consumer) == []
    assert offsets_out(consumer) == [56, 57]
    assert fetches.seeks == [(FACTS, 43)]


def test_records_handed_over_already_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_fetching(monkeypatch, Fetches([40, 41, 42], position=43), expected=42)
    assert offsets_out(consumer) == [42]
    assert consumer.rewinds == 0


def test_a_partition_that_restarted_below_is_read_from_its_new_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the broker lost its data: the partition ends at 2, far below the 42 expected
    fetches = Fetches([0, 1], position=2, highwater=2)
    consumer = consumer_fetching(monkeypatch, fetches, expected=42)
    assert offsets_out(consumer) == [0, 1]
    assert consumer.rewinds == 1
    assert consumer._read_offset[FACTS] is None  # faust's state of it forgotten


def test_changelog_records_pass_for_table_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    fetches = Fetches([7, 3, 9], position=10)
    consumer = consumer_fetching(monkeypatch, fetches, expected=None, tp=CHANGELOG)
    assert offsets_out(consumer) == [7, 3, 9]
    assert fetches.seeks == []
