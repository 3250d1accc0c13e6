"""The dedicated thread that runs the WAL's blocking writes."""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing

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
    slept: list[bool] = []

    def slow_write() -> None:
        time.sleep(0.3)
        finished.append(True)

    started = trio.current_time()
    with trio.move_on_after(0.05) as scope:
        await syncer.run(slow_write)
        await trio.sleep(1)  # the held-back cancellation lands here
        slept.append(True)
    elapsed = trio.current_time() - started
    print(f"cancelled caller came back after {elapsed:.3f} s")
    # The write was not abandoned half-way: the caller waited for it...
    assert finished == [True]
    assert elapsed >= 0.25
    # ...and the cancellation was only held back, not lost: the next checkpoint took it.
    assert scope.cancelled_caught and slept == []
    await syncer.stop()


async def test_calls_run_in_order() -> None:
    syncer = SyncThread("test")
    gate = threading.Event()
    submitted: list[int] = []
    seen: list[int] = []

    async def call(i: int) -> None:
        submitted.append(i)  # run() queues the call before its first checkpoint
        await syncer.run(seen.append, i)

    async with trio.open_nursery() as nursery:
        # Hold the thread so that every call below is queued before any of them runs.
        nursery.start_soon(syncer.run, gate.wait)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(20):
            nursery.start_soon(call, i)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [] and len(submitted) == 20
        gate.set()
    await syncer.stop()
    assert seen == submitted
