"""Ctrl-C and SIGTERM for the stress and chaos runners.

A signal while the run is in trio cancels it: its own clean-up (stopping
the members, under a shielded scope) runs as at any other end, and then
`Interrupted` is raised for the command to report in one line and exit
with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM). Outside
trio (making or removing the data directory, printing the summary) a
signal is only noted, and acted on at the next `check`, so that nothing is
left half done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

import trio

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run was stopped by a signal. `detail` says what became of its data."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.detail = ""
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        return f"{self}: every member was stopped" + (f"; {self.detail}" if self.detail else "")


class SignalWatch:
    """Notes SIGINT and SIGTERM for the length of a run (main thread only)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.active = threading.current_thread() is threading.main_thread()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    @contextmanager
    def noting(self) -> Iterator[SignalWatch]:
        """Outside trio: note a signal instead of dying of it (or raising KeyboardInterrupt)."""
        if not self.active:
            yield self
            return
        previous = {signum: signal.signal(signum, self._note) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def check(self) -> None:
        """Raise Interrupted if a signal came."""
        if self.received is not None:
            raise Interrupted(self.received)

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await fn(*args)`; a signal cancels it, and Interrupted follows once it has ended."""
        if not self.active:
            return await fn(*args)
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            self.check()  # one that came while trio started
            done: list[T] = []
            try:
                async with trio.open_nursery() as nursery:

                    async def watch() -> None:
                        async for signum in signals:
                            self._note(signum, None)
                            nursery.cancel_scope.cancel()
                            return

                    nursery.start_soon(watch)
                    done.append(await fn(*args))
                    nursery.cancel_scope.cancel()
            except BaseException as exc:
                if self.received is None:
                    raise
                # The interruption is what happened; an error on the way out is its echo.
                raise Interrupted(self.received) from exc
            self.check()
            return done[0]
