"""Durable storage for a Raft member."""

from raft_trio.storage.snapshot import (
    SnapshotCorruption,
    SnapshotMeta,
    list_snapshots,
    open_snapshot,
    remove_older_snapshots,
    write_snapshot,
)
from raft_trio.storage.wal import WAL, WALCorruption, WALState

__all__ = [
    "WAL",
    "SnapshotCorruption",
    "SnapshotMeta",
    "WALCorruption",
    "WALState",
    "list_snapshots",
    "open_snapshot",
    "remove_older_snapshots",
    "write_snapshot",
]
