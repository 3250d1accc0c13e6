"""raft_trio.fs: a distributed file system on raft-trio (docs/fs-design.md).

Raft holds the metadata, the namespace: directories, files, attributes, each
file's ordered chunks and the data nodes holding their replicas, and the
writes in progress. Data nodes hold the chunks' bytes.

This package's own import stays light (no trio): `Namespace` is the metadata
state machine (pure and deterministic), `fs_error`/`raise_fs_error`/`check`
carry its refusals as ``["fs-error", errno_name, message]`` and turn them into
Python's OSError subclasses, and `raft_trio.fs.paths` normalises and checks
paths.
"""

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
    "Namespace",
    "check",
    "from_os_error",
    "fs_error",
    "is_fs_error",
    "normalise",
    "raise_fs_error",
    "to_os_error",
]
