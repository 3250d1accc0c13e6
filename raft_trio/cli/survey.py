"""Asking the members named by --cluster who they are and how they are.

A member knows its id: every command that reports on members takes the id
from the member's own answer, never from where its address stands in
--cluster. An address that does not answer keeps the id it was given, or
none (shown as "?").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2
import trio

from raft_trio.cli.spec import Member
from raft_trio.client import member_status
from raft_trio.errors import RaftError, describe_os_error
from raft_trio.transport import FrameError

T = TypeVar("T")

# What asking one member can end in, short of an answer.
ASK_ERRORS = (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
              RaftError, FrameError, cbor2.CBORDecodeError)


def describe_failure(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return str(exc) or type(exc).__name__


async def ask(call: Callable[[], Awaitable[T]], timeout: float) -> tuple[T | None, str | None]:
    """(the answer, None), or (None, why there was none)."""
    try:
        return await call(), None
    except ASK_ERRORS as exc:
        return None, describe_failure(exc, timeout)


@dataclass
class Answer:
    """What one --cluster entry said to "status" (None if it did not answer, and why)."""

    given: Member
    status: dict[str, Any] | None
    error: str | None

    @property
    def id(self) -> int | None:
        """The member's own id if it answered, else the one --cluster gave (maybe none)."""
        if self.status is not None:
            node_id: int = self.status["id"]
            return node_id
        return self.given.id

    @property
    def label(self) -> str:
        """How to name this entry in a message."""
        if self.id is None:
            return f"{self.given.address} (id unknown)"
        return f"member {self.id} ({self.given.address})"

    def mismatch(self) -> str | None:
        """A warning if the member answered with another id than --cluster gave it."""
        if self.status is None or self.given.id is None or self.status["id"] == self.given.id:
            return None
        return (f"{self.given.address} was given as member {self.given.id} but is member "
                f"{self.status['id']}")


async def survey(members: list[Member], timeout: float) -> list[Answer]:
    """Ask every member for its status at once; the answers in the order given."""
    answers: list[Answer | None] = [None] * len(members)

    async def one(position: int, member: Member) -> None:
        status, error = await ask(lambda: member_status(member.address, timeout=timeout),
                                  timeout)
        if status is not None and (not isinstance(status, dict)
                                   or type(status.get("id")) is not int):
            status, error = None, f"unexpected answer {status!r:.80}"
        answers[position] = Answer(member, status, error)

    async with trio.open_nursery() as nursery:
        for position, member in enumerate(members):
            nursery.start_soon(one, position, member)
    return [a for a in answers if a is not None]
