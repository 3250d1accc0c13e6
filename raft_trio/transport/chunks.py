"""Records that move a snapshot file from a leader to a follower.

They travel on the peer connections like Raft messages but never reach the
core: the leader's replicator sends a file as SnapshotChunks, the follower's
server writes them to disk and answers each with a SnapshotAck, and only
once the whole file is there and verified does the follower's core hear an
InstallSnapshot. A chunk names the snapshot by its last included entry
(`index`, `snapshot_term`) and its size, so a transfer cut off by a broken
connection resumes at the offset the follower last acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    term: int  # the sending leader's term
    src: int
    dst: int
    index: int
    snapshot_term: int
    total: int  # size of the whole file in bytes
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The follower holds the first `received` bytes of the file.

    `accepted` is false when a chunk did not follow what the follower holds
    (it lost a partial file, say): the sender goes back to `received`.
    """

    term: int
    src: int
    dst: int
    index: int
    snapshot_term: int
    received: int
    accepted: bool
