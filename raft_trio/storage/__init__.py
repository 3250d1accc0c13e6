"""Durable storage for a Raft member."""

from raft_trio.storage.datadir import DataDirError, DataDirLock, claim_data_dir
from raft_trio.storage.incoming import IncomingSnapshot, remove_partial_snapshots
from raft_trio.storage.snapshot import (
    SnapshotCorruption,
    SnapshotMeta,
    list_snapshots,
    open_snapshot,
    remove_older_snapshots,
    snapshot_name,
    write_snapshot,
)
from raft_trio.storage.wal import WAL, WALCorruption, WALState

__all__ = [
    "WAL",
    "DataDirError",
    "DataDirLock",
    "IncomingSnapshot",
    "SnapshotCorruption",
    "SnapshotMeta",
    "WALCorruption",
    "WALState",
    "claim_data_dir",
    "list_snapshots",
    "open_snapshot",
    "remove_older_snapshots",
    "remove_partial_snapshots",
    "snapshot_name",
    "write_snapshot",
]
