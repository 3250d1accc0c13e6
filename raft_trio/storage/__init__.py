"""Durable storage for a Raft member."""

from raft_trio.storage.wal import WAL, WALCorruption, WALState

__all__ = ["WAL", "WALCorruption", "WALState"]
