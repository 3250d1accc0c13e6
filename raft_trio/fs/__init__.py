"""raft_trio.fs: a distributed file system on raft-trio (docs/fs-design.md).

Raft holds the metadata, the namespace: directories, files, attributes, each
file's ordered chunks and the data nodes holding their replicas, and the
writes in progress. Data nodes hold the chunks' bytes.

`connect(addresses)` gives a `FileSystem` client (raft_trio.fs.client);
`Namespace` is the metadata state machine (pure and deterministic: it imports
no trio), `fs_error`/`raise_fs_error`/`check` carry its refusals as
``["fs-error", errno_name, message]`` and turn them into Python's OSError
subclasses, and `raft_trio.fs.paths` normalises and checks paths. The data
nodes are in raft_trio.fs.datanode, the leader's registry of them in
raft_trio.fs.registry.
"""

from raft_trio.fs.client import FileSystem, connect
from raft_trio.fs.errors import (
    FS_ERROR,
    check,
    from_os_error,
    fs_error,
    is_fs_error,
    raise_fs_error,
    to_os_error,
)
from raft_trio.fs.metadata import Namespace
from raft_trio.fs.paths import normalise

__all__ = [
    "FS_ERROR",
    "FileSystem",
    "Namespace",
    "check",
    "connect",
    "from_os_error",
    "fs_error",
    "is_fs_error",
    "normalise",
    "raise_fs_error",
    "to_os_error",
]
