"""The worker's consumer never lets faust count unprocessed offsets as done."""

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


def consumer_fetching(
    monkeypatch: pytest.MonkeyPatch, batch: list[int], *, read: int | None, position: int
) -> RewindSafeConsumer:
    """A consumer whose fetch returns ``batch`` (offsets of FACTS), as a seek left it."""

    async def fetched(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        for offset in batch:
            yield FACTS, SimpleNamespace(offset=offset)

    async def at(self: Any, tp: TP) -> int:
        return position

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)
    monkeypatch.setattr(RewindSafeConsumer, "position", at)
    consumer = RewindSafeConsumer.__new__(RewindSafeConsumer)  # no broker: getmany only
    consumer._read_offset = {FACTS: read}
    return consumer


def offsets_out(consumer: RewindSafeConsumer) -> list[int]:
    async def drain() -> list[int]:
        return [message.offset async for _, message in consumer.getmany(timeout=0)]

    return asyncio.run(drain())


def test_records_fetched_before_a_seek_back_are_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Recovery sought the partition back to its committed offset 42 while the fetch loop
    # held 56-58: faust would take 43-55 as done. They are held back for the re-fetch.
    consumer = consumer_fetching(monkeypatch, [56, 57, 58], read=42, position=42)
    assert offsets_out(consumer) == []


def test_records_in_order_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_fetching(monkeypatch, [42, 43, 44], read=42, position=45)
    assert offsets_out(consumer) == [42, 43, 44]


def test_a_gap_the_consumer_fetched_past_is_the_partitions_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # offsets 43-55 do not exist (compaction, transaction markers): nothing to wait for
    consumer = consumer_fetching(monkeypatch, [56, 57], read=42, position=58)
    assert offsets_out(consumer) == [56, 57]
