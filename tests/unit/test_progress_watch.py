"""Liveness is progress: the stream worker's stall detector."""

from __future__ import annotations

from streams.worker import ProgressWatch


def test_work_waiting_without_progress_is_a_stall() -> None:
    watch = ProgressWatch(stall_s=60)
    assert not watch.stalled(processed=10, lag=5, now=0)
    assert not watch.stalled(processed=10, lag=5, now=60)
    assert watch.stalled(processed=10, lag=5, now=61)


def test_progress_resets_the_clock() -> None:
    watch = ProgressWatch(stall_s=60)
    watch.stalled(processed=10, lag=5, now=0)
    assert not watch.stalled(processed=11, lag=5, now=50)
    assert not watch.stalled(processed=11, lag=5, now=100)
    assert watch.stalled(processed=11, lag=5, now=111)


def test_an_idle_worker_is_not_stalled() -> None:
    watch = ProgressWatch(stall_s=60)
    for t in range(0, 1000, 30):
        assert not watch.stalled(processed=10, lag=0, now=t)
