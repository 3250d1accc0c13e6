"""What the node loop's inbox carries: small typed records, besides the core's messages.

Everything that wants the core to do something sends one of these (or a
message from a peer) to the inbox; the node loop is the only reader, and the
only code that touches the core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raft_trio.core import Membership, Message
from raft_trio.server.options import TRANSIENT_RETRY_TICKS
from raft_trio.server.waiting import Proposal, ReadWait
from raft_trio.storage import SnapshotMeta


class Tick:
    """The timer's tick."""

    __slots__ = ()


class Durable:
    """A wake-up from the disk writer: what is durable is in DurableMark."""

    __slots__ = ()


TICK = Tick()
DURABLE = Durable()


@dataclass(frozen=True, slots=True)
class Propose:
    """Append these entries' data (COMMAND entries, or SESSION ones for a session request)."""

    datas: list[bytes]
    proposal: Proposal


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Confirm leadership for a read (ReadIndex) and hand it the read index."""

    wait: ReadWait


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Propose `change(configuration in force)`; a change refused for now (right after
    an election, or while another is on its way) is tried again on the next `retries`
    ticks."""

    change: Callable[[Membership], Membership]
    proposal: Proposal
    retries: int = TRANSIENT_RETRY_TICKS


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand leadership to voter `target`; `started` is set once the handover is under way."""

    target: int
    started: Proposal


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """A snapshot of this member's own is durable: the log before it may be compacted."""

    meta: SnapshotMeta


@dataclass(frozen=True, slots=True)
class SnapshotFailed:
    """The snapshot the core wanted sent to `peer` did not get there."""

    peer: int


InboxItem = (Tick | Durable | Propose | ReadRequest | ConfigChange | Transfer | SnapshotTaken
             | SnapshotFailed | Message)
