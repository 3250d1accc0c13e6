"""The records the metadata state machine is made of, laid out to be lean at millions of files.

- A file is one immutable `File` tuple holding a tuple of immutable `Chunk`
  tuples: changing a file (chmod, truncate, overwrite, rename's ctime)
  replaces its tuple in the parent directory, so a captured directory keeps
  the old one without copying anything.
- A directory is a mutable `Dir` (a children dict and a few attributes)
  stamped with the epoch it was made in. A capture for a snapshot bumps the
  namespace's epoch and keeps the root: from then on a directory of an older
  epoch is frozen, and a command that would change it changes a copy instead,
  linked in place of the old one in a (copied) parent, up to the root. A
  capture therefore costs nothing, and the copies are paid later, at most once
  per directory per capture and only for the directories that change.
- Every `Dir` keeps the totals of its subtree (files, directories below it,
  bytes), updated along the path of each command, so `du` of any directory is
  immediate.
- Small values repeated across files (replica id tuples, modes, chunk sizes)
  are interned, so a million files on the same three data nodes share one
  replica tuple.
"""

from __future__ import annotations

from typing import NamedTuple

# A data node id: an int or a non-empty str, as the registry chooses.
NodeId = int | str


class Chunk(NamedTuple):
    """One chunk of a file: its bytes live on the data nodes `replicas`."""

    chunk_id: int
    length: int
    checksum: str
    replicas: tuple[NodeId, ...]


class File(NamedTuple):
    """A complete file. Its content is `chunks` in order, read up to `size` bytes."""

    inode: int
    mode: int
    size: int
    mtime: int
    ctime: int
    replication: int
    chunk_size: int
    chunks: tuple[Chunk, ...]


class Dir:
    """A directory: named children, attributes, subtree totals, and the epoch it belongs to.

    `names` is the sorted list of the children's names, built by the first
    readdir and kept up to date from then on (None until then).
    """

    __slots__ = ("bytes", "children", "ctime", "dirs", "epoch", "files", "inode", "mode", "mtime",
                 "names")

    def __init__(self, inode: int, mode: int, mtime: int, ctime: int, epoch: int) -> None:
        self.inode = inode
        self.mode = mode
        self.mtime = mtime
        self.ctime = ctime
        self.epoch = epoch
        self.children: dict[str, File | Dir] = {}
        self.names: list[str] | None = None
        # Totals of everything below this directory (not counting itself).
        self.files = 0
        self.dirs = 0
        self.bytes = 0

    def clone(self, epoch: int) -> Dir:
        """A copy of epoch `epoch` to change instead of this (frozen) one."""
        copy = Dir(self.inode, self.mode, self.mtime, self.ctime, epoch)
        copy.children = self.children.copy()
        copy.names = None if self.names is None else self.names.copy()
        copy.files = self.files
        copy.dirs = self.dirs
        copy.bytes = self.bytes
        return copy


class Slot(NamedTuple):
    """Chunk `index` of a pending write: allocated to `replicas`, committed once `length` is set."""

    chunk_id: int
    replicas: tuple[NodeId, ...]
    length: int | None
    checksum: str | None


class Write:
    """A pending write: created, chunks allocated and committed, not yet complete."""

    __slots__ = ("chunk_size", "exclusive", "mode", "path", "replication", "slots", "started",
                 "touched", "write_id")

    def __init__(self, write_id: int, path: str, exclusive: bool, mode: int, replication: int,
                 chunk_size: int, started: int, touched: int, slots: list[Slot]) -> None:
        self.write_id = write_id
        self.path = path
        self.exclusive = exclusive
        self.mode = mode
        self.replication = replication
        self.chunk_size = chunk_size
        self.started = started
        self.touched = touched
        self.slots = slots

    def copy(self) -> Write:
        return Write(self.write_id, self.path, self.exclusive, self.mode, self.replication,
                     self.chunk_size, self.started, self.touched, self.slots.copy())


class Interner:
    """Shares equal small values between records. Bounded: when full, it starts again."""

    LIMIT = 4096

    def __init__(self) -> None:
        self.ints: dict[int, int] = {}
        self.replicas: dict[tuple[NodeId, ...], tuple[NodeId, ...]] = {}

    def int(self, value: int) -> int:
        ints = self.ints
        shared = ints.get(value)
        if shared is not None:
            return shared
        if len(ints) >= self.LIMIT:
            ints.clear()
        ints[value] = value
        return value

    def replica_ids(self, value: tuple[NodeId, ...]) -> tuple[NodeId, ...]:
        replicas = self.replicas
        shared = replicas.get(value)
        if shared is not None:
            return shared
        if len(replicas) >= self.LIMIT:
            replicas.clear()
        replicas[value] = value
        return value


__all__ = ["Chunk", "Dir", "File", "Interner", "NodeId", "Slot", "Write"]
