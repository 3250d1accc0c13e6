"""The dedicated thread that runs the WAL's blocking writes."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from raft_trio.syncthread import SyncThread


async def test_runs_in_another_thread_and_returns_or_raises() -> None:
    syncer = SyncThread("test")
    here = threading.get_ident()
    assert await syncer.run(threading.get_ident) != here
    assert await syncer.run(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        await syncer.run(lambda: 1 / 0)
    await syncer.stop()


async def test_a_started_call_finishes_even_when_its_caller_is_cancelled() -> None:
    syncer = SyncThread("test")
    finished: list[bool] = []

    def slow_write() -> None:
        time.sleep(0.3)
        finished.append(True)

    started = trio.current_time()
    with trio.move_on_after(0.05):
        await syncer.run(slow_write)
        await trio.sleep(1)  # the held-back cancellation lands here
    # The write was not abandoned half-way: the caller waited for it.
    assert finished == [True]
    assert 0.25 < trio.current_time() - started < 1
    await syncer.stop()


async def test_calls_run_in_order() -> None:
    syncer = SyncThread("test")
    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(syncer.run, seen.append, i)
            await trio.sleep(0)
    await syncer.stop()
    assert sorted(seen) == list(range(20))
