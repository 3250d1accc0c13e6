"""One long-lived thread that runs blocking calls (the WAL's write and fsync) for trio.

trio.to_thread.run_sync pays for a thread-cache hand-off, a thread rename,
context copying and cancellation bookkeeping on every call; under load a
follower makes a hundred or more of these calls a second and that machinery
showed up as a fifth of its CPU. The disk writer makes one call at a time,
so one dedicated thread and a queue are all it needs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

_STOP = object()


class SyncThread:
    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            fn, args, task = job
            result = outcome.capture(fn, *args)
            self._token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) in the thread. Not cancellable: a started write must finish."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._jobs.put((fn, args, trio.lowlevel.current_task()))
        result: T = await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED
        )
        return result

    async def stop(self) -> None:
        """Let queued work finish, then end the thread."""
        self._jobs.put(_STOP)
        await trio.to_thread.run_sync(self._thread.join)
