"""Data nodes: the bytes of the file system's chunks (see docs/fs-design.md).

- DataNode: the service (raft_trio.fs.datanode.server);
- put_chunk, get_chunk (get_chunk_into: without a copy), delete_chunk: its client
  (raft_trio.fs.datanode.client);
- ChunkStore: chunks on disk (raft_trio.fs.datanode.store);
- the wire protocol and its errors: raft_trio.fs.datanode.protocol.
"""

from raft_trio.fs.datanode.client import delete_chunk, get_chunk, get_chunk_into, put_chunk
from raft_trio.fs.datanode.protocol import (
    ChunkCorrupt,
    ChunkNotFound,
    DataNodeError,
    DataNodeUnavailable,
)
from raft_trio.fs.datanode.server import DataNode, HeartbeatStats
from raft_trio.fs.datanode.store import ChunkCorruption, ChunkStore, StoreError

__all__ = [
    "ChunkCorrupt",
    "ChunkCorruption",
    "ChunkNotFound",
    "ChunkStore",
    "DataNode",
    "DataNodeError",
    "DataNodeUnavailable",
    "HeartbeatStats",
    "StoreError",
    "delete_chunk",
    "get_chunk",
    "get_chunk_into",
    "put_chunk",
]
