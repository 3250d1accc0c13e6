"""Sans-I/O Raft: the algorithm as a plain object, with no trio, sockets, files or clocks."""

from raft_trio.core.log import RaftLog
from raft_trio.core.membership import ConfigChangeError, Membership
from raft_trio.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
)
from raft_trio.core.node import (
    Config,
    NotLeaderError,
    RaftNode,
    Ready,
    SnapshotRef,
    SoftState,
    TransferInProgress,
)

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "Config",
    "ConfigChangeError",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "Membership",
    "Message",
    "NotLeaderError",
    "RaftLog",
    "RaftNode",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "SnapshotRef",
    "SoftState",
    "TimeoutNow",
    "TransferInProgress",
]
