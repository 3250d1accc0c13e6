"""The records the Raft core consumes and produces.

Entries are NamedTuples: they are built by the thousand per second on the
hot path (decode, append, apply) and a NamedTuple is the cheapest immutable
record CPython offers. Messages are frozen slotted dataclasses: fewer of
them, and their field names matter more for readability.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class EntryKind(enum.IntEnum):
    COMMAND = 0
    # Appended by every new leader so that entries of earlier terms get
    # committed (Raft paper section 5.4.2 / 8).
    NOOP = 1
    # A new cluster configuration (raft_trio.core.membership), in effect from
    # the moment it is appended.
    CONFIG = 2
    # A command of a client session (raft_trio.sessions), applied at most once
    # per (client, request, position).
    SESSION = 3
    # The leader's decision to drop idle client sessions (raft_trio.sessions).
    SESSION_EXPIRY = 4


class Entry(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose
    term: int
    kind: int
    data: bytes


class HardState(NamedTuple):
    """What must survive a crash before any reply that depends on it."""

    term: int
    vote: int | None
    commit: int


class Role(enum.Enum):
    FOLLOWER = "follower"
    # Asking whether it could win before disturbing anyone (PreVote, dissertation 9.6).
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A vote request, or with `pre_vote` the question "would you vote for me?".

    A pre-vote carries the term the candidate would campaign in, and changes
    nothing on either side: a member cut off for a while learns that it
    cannot win before it raises its term and deposes a healthy leader.
    `transfer` marks a campaign the leader asked for (TimeoutNow): voters
    grant it even while they still hear from that leader.
    """

    term: int
    src: int
    dst: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: int
    dst: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    src: int
    dst: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """Answer to AppendEntries.

    On success `match_index` is the last index known to match the leader.
    On rejection `reject_index` is the `prev_index` that did not match and
    (`conflict_term`, `conflict_index`) is the fast-backtracking hint: the
    term the follower has at `reject_index` (0 when its log is too short)
    and the first index it holds of that term (or its last index + 1).
    """

    term: int
    src: int
    dst: int
    success: bool
    match_index: int
    reject_index: int
    conflict_term: int
    conflict_index: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness plus a commit index the follower is known to hold.

    `round` numbers the leader's heartbeat rounds in its term; the answer
    echoes it, and a majority answering round r proves that this member was
    still their leader after round r began (ReadIndex, leases).
    """

    term: int
    src: int
    dst: int
    commit: int
    round: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    src: int
    dst: int
    round: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The leader's log no longer holds what `dst` needs: catch up from a snapshot.

    The core only names the snapshot by its last included (index, term);
    the drivers move its bytes. A leader's core emits this to ask its
    driver to stream its newest snapshot to `dst`; the follower's driver
    steps it into the follower's core once the whole file has arrived, is
    verified and is durable under its final name.
    """

    term: int
    src: int
    dst: int
    index: int
    snapshot_term: int
    # The configuration as of `index` (Membership.encode()), which the
    # follower's log will no longer hold once it starts after the snapshot
    # (empty: the follower keeps the one it has for that index).
    membership: bytes = b""


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """From the leader to the member it hands leadership to: campaign now."""

    term: int
    src: int
    dst: int


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)
