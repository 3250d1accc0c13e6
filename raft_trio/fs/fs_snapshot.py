"""The metadata state machine's snapshot format: flat arrays of records, streamed.

A snapshot is a sequence of CBOR items (as the KV store's format 2: many
records per item, each record a run of plain values in one flat array, since
cbor2 encodes and decodes a string or an integer many times faster than a
small nested array):

1. the header ``["raft-trio-fs", 1, next_inode, dirs, files, writes]``;
2. the directories, breadth first (every parent before its children), in
   flat arrays of up to 4096 records of 6 values:
   ``parent_inode, name, inode, mode, mtime, ctime``; the first record is the
   root, with parent 0 and name "";
3. the files, in flat arrays of up to 4096 records of variable length:
   ``parent_inode, name, inode, mode, size, mtime, ctime, replication,
   chunk_size, n`` then n chunks of ``chunk_id, length, checksum, r,
   replica_1 .. replica_r``;
4. the pending writes, in flat arrays of up to 4096 records:
   ``write_id, path, exclusive, mode, replication, chunk_size, started,
   touched, n`` then n allocated chunks of ``chunk_id, length, checksum, r,
   replica_1 .. replica_r`` (length and checksum null until committed).

`read_namespace` refuses with ValueError anything `write_namespace` could not
have written (bad shapes, types or ranges, a missing parent, a duplicate
name or inode, counts that differ from the header, data after the end), and
builds a new state without touching the old one.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, BinaryIO, NamedTuple

import cbor2

from raft_trio.fs.inodes import Chunk, Dir, File, Interner, NodeId, Slot, Write
from raft_trio.fs.paths import BadPath, split, valid_name

TAG = "raft-trio-fs"
VERSION = 1
RECORDS_PER_ITEM = 4096
# The limits apply() enforces, checked again on restore.
ROOT_INODE = 1
MAX_MODE = 0o7777
MAX_REPLICATION = 64
MAX_CHUNK_SIZE = 1 << 32
MAX_CHECKSUM = 128
MAX_NODE_ID = 255
U64 = (1 << 64) - 1
I63 = (1 << 63) - 1


class State(NamedTuple):
    """What restore() hands the namespace."""

    root: Dir
    next_inode: int
    writes: dict[int, Write]
    allocations: dict[int, tuple[int, int]]
    interner: Interner


# ---------------------------------------------------------------- writing


def write_namespace(out: BinaryIO, *, root: Dir, next_inode: int, writes: list[Write]) -> None:
    """Write the namespace under `root` (frozen: nothing may change it meanwhile) to `out`."""
    dumps = cbor2.dumps
    write = out.write
    write(dumps([TAG, VERSION, next_inode, root.dirs + 1, root.files, len(writes)]))

    order = [root]
    flat: list[Any] = [0, "", root.inode, root.mode, root.mtime, root.ctime]
    add = flat.extend
    n = 1
    for d in order:  # grows as directories are found: breadth first
        parent = d.inode
        for name, node in d.children.items():
            if type(node) is Dir:
                add((parent, name, node.inode, node.mode, node.mtime, node.ctime))
                order.append(node)
                n += 1
                if n == RECORDS_PER_ITEM:
                    write(dumps(flat))
                    flat.clear()
                    n = 0
    if flat:
        write(dumps(flat))
    flat.clear()

    n = 0
    for d in order:
        parent = d.inode
        for name, node in d.children.items():
            if type(node) is File:
                inode, mode, size, mtime, ctime, replication, chunk_size, chunks = node
                add((parent, name, inode, mode, size, mtime, ctime, replication, chunk_size,
                     len(chunks)))
                for chunk_id, length, checksum, replicas in chunks:
                    add((chunk_id, length, checksum, len(replicas)))
                    add(replicas)
                n += 1
                if n == RECORDS_PER_ITEM:
                    write(dumps(flat))
                    flat.clear()
                    n = 0
    if flat:
        write(dumps(flat))
    flat.clear()

    n = 0
    for w in writes:
        add((w.write_id, w.path, w.exclusive, w.mode, w.replication, w.chunk_size, w.started,
             w.touched, len(w.slots)))
        for slot in w.slots:
            add((slot.chunk_id, slot.length, slot.checksum, len(slot.replicas)))
            add(slot.replicas)
        n += 1
        if n == RECORDS_PER_ITEM:
            write(dumps(flat))
            flat.clear()
            n = 0
    if flat:
        write(dumps(flat))


# ---------------------------------------------------------------- reading


class _Bad(ValueError):
    pass


def read_namespace(src: BinaryIO, epoch: int) -> State:
    """Read what write_namespace wrote; directories are made with `epoch`.

    Raises ValueError for anything write_namespace could not have written.
    """
    decode = cbor2.CBORDecoder(src).decode
    header = _decode_item(decode, "header")
    if (type(header) is not list or len(header) != 6 or header[0] != TAG
            or not all(type(v) is int and v >= 0 for v in header[1:])):
        raise ValueError(f"fs snapshot: bad header {header!r:.80}")
    version, next_inode, dir_count, file_count, write_count = header[1:]
    if version != VERSION:
        raise ValueError(f"fs snapshot: unsupported format version {version}")
    if not ROOT_INODE < next_inode <= I63 or dir_count < 1:
        raise ValueError(f"fs snapshot: bad header {header!r:.80}")
    reader = _Reader(decode, epoch, next_inode)
    # Building millions of small objects, the cyclic garbage collector would
    # scan them again and again (it doubles the time): none of them can form
    # a cycle, so it is paused meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        reader.read_dirs(dir_count)
        reader.read_files(file_count)
        reader.read_writes(write_count)
    except _Bad:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError,
            RecursionError) as exc:
        raise ValueError(f"fs snapshot: malformed record: {exc!r:.120}") from None
    finally:
        if collecting:
            gc.enable()
    if src.read(1):
        raise ValueError("fs snapshot: data after the records the header announced")
    reader.finish()
    return State(reader.root, next_inode, reader.writes, reader.allocations, reader.interner)


def _decode_item(decode: Callable[[], Any], what: str) -> Any:
    try:
        return decode()
    except cbor2.CBORDecodeEOF:
        raise _Bad(f"fs snapshot: ends before the {what}") from None
    except (cbor2.CBORDecodeError, RecursionError) as exc:
        raise _Bad(f"fs snapshot: undecodable {what}: {exc}") from None


def _node_id(value: Any) -> bool:
    if type(value) is int:
        return 0 <= value <= U64
    return type(value) is str and 1 <= len(value) <= MAX_NODE_ID


class _Reader:
    """Builds a new namespace from the records, checking each as it goes.

    Checks that cost a Python step per value are done inline; the uniqueness
    and range of inode numbers is checked once at the end over all of them.
    A tuple of replica ids is checked only the first time it is seen, then
    interned (as apply() interns them), so most files share one checked tuple.
    """

    def __init__(self, decode: Callable[[], Any], epoch: int, next_inode: int) -> None:
        self.decode = decode
        self.epoch = epoch
        self.next_inode = next_inode
        self.interner = Interner()
        self.dirs: dict[int, Dir] = {}
        self.parents: list[tuple[Dir, Dir]] = []  # (dir, its parent), breadth first
        self.inodes: list[int] = []
        self.root = Dir(ROOT_INODE, 0, 0, 0, epoch)
        self.writes: dict[int, Write] = {}
        self.allocations: dict[int, tuple[int, int]] = {}

    def _items(self, count: int, what: str, stride: int = 0) -> Any:
        """A generator of the flat arrays holding `count` records; send() it each one's count."""
        done = 0
        while done < count:
            item = _decode_item(self.decode, f"{what} from record {done} of {count}")
            if type(item) is not list or not item or (stride and len(item) % stride):
                raise _Bad(f"fs snapshot: the {what} from record {done} are not a flat array "
                           f"of records: {item!r:.80}")
            records = yield item
            if not 1 <= records <= min(RECORDS_PER_ITEM, count - done):
                raise _Bad(f"fs snapshot: {records} {what} in one array from record {done} of "
                           f"{count}")
            done += records

    def _replicas(self, values: tuple[Any, ...], most: int) -> tuple[NodeId, ...] | None:
        """The interned tuple of replica ids, or None if `values` is not one."""
        interner = self.interner
        shared = interner.replicas.get(values)
        if shared is None:
            if not (1 <= len(values) <= most and all(map(_node_id, values))
                    and len(set(values)) == len(values)):
                return None
            shared = interner.replica_ids(values)
        return shared if len(shared) <= most else None

    def read_dirs(self, count: int) -> None:
        items = self._items(count, "directories", 6)
        item = next(items, None)
        interned = self.interner.int
        epoch = self.epoch
        dirs = self.dirs
        parents = self.parents
        add_inode = self.inodes.append
        while item is not None:
            for i in range(0, len(item), 6):
                parent_inode, name, inode, mode, mtime, ctime = record = item[i:i + 6]
                if not (type(inode) is int and type(mode) is int and 0 <= mode <= MAX_MODE
                        and type(mtime) is int and 0 <= mtime <= I63
                        and type(ctime) is int and 0 <= ctime <= I63):
                    raise _Bad(f"fs snapshot: bad directory {record!r:.80}")
                add_inode(inode)
                if not dirs:
                    if parent_inode != 0 or name != "" or inode != ROOT_INODE:
                        raise _Bad(f"fs snapshot: the first directory is not the root: "
                                   f"{record!r:.80}")
                    root = self.root
                    root.mode, root.mtime, root.ctime = interned(mode), mtime, ctime
                    dirs[inode] = root
                    continue
                parent = dirs.get(parent_inode) if type(parent_inode) is int else None
                if parent is None or not valid_name(name) or name in parent.children:
                    raise _Bad(f"fs snapshot: directory {record!r:.80} has an unknown parent, "
                               f"a bad name or a name that appears twice")
                d = Dir(inode, interned(mode), mtime, mtime if ctime == mtime else ctime, epoch)
                parent.children[name] = d
                dirs[inode] = d
                parents.append((d, parent))
            item = _send(items, len(item) // 6)
        if len(dirs) != count:
            raise _Bad(f"fs snapshot: {len(dirs)} distinct directories, not {count}")

    def read_files(self, count: int) -> None:
        items = self._items(count, "files")
        item = next(items, None)
        interned = self.interner.int
        replica_ids = self._replicas
        dirs = self.dirs
        add_inode = self.inodes.append
        new = tuple.__new__
        while item is not None:
            i, end, records = 0, len(item), 0
            while i < end:
                (parent_inode, name, inode, mode, size, mtime, ctime, replication, chunk_size,
                 n) = record = item[i:i + 10]
                i += 10
                parent = dirs.get(parent_inode) if type(parent_inode) is int else None
                if (parent is None or not valid_name(name) or name in parent.children
                        or type(inode) is not int or type(mode) is not int
                        or not 0 <= mode <= MAX_MODE or type(size) is not int
                        or not 0 <= size <= I63 or type(mtime) is not int
                        or not 0 <= mtime <= I63 or type(ctime) is not int
                        or not 0 <= ctime <= I63 or type(replication) is not int
                        or not 1 <= replication <= MAX_REPLICATION or type(chunk_size) is not int
                        or not 1 <= chunk_size <= MAX_CHUNK_SIZE or type(n) is not int or n < 0):
                    raise _Bad(f"fs snapshot: bad file {record!r:.120} (or an unknown parent, "
                               f"or a name that appears twice)")
                chunks = []
                start = 0
                for _ in range(n):
                    chunk_id, length, checksum, r = item[i:i + 4]
                    replicas = tuple(item[i + 4:i + 4 + r]) if type(r) is int and r > 0 else ()
                    i += 4 + r if replicas else 4
                    shared = replica_ids(replicas, replication) if len(replicas) == r else None
                    if (shared is None or type(chunk_id) is not int or not 0 <= chunk_id <= U64
                            or type(length) is not int or not 1 <= length <= chunk_size
                            or type(checksum) is not str
                            or not 1 <= len(checksum) <= MAX_CHECKSUM or start >= size):
                        raise _Bad(f"fs snapshot: file {name!r:.80} has a bad chunk "
                                   f"{[chunk_id, length, checksum, replicas]!r:.80}")
                    start += length
                    chunks.append(new(Chunk, (chunk_id, length, checksum, shared)))
                if size > start:
                    raise _Bad(f"fs snapshot: file {name!r:.80} is longer than its chunks")
                add_inode(inode)
                parent.children[name] = new(File, (
                    inode, interned(mode), size, mtime, mtime if ctime == mtime else ctime,
                    replication, interned(chunk_size), tuple(chunks)))
                parent.files += 1
                parent.bytes += size
                records += 1
            item = _send(items, records)

    def read_writes(self, count: int) -> None:
        items = self._items(count, "writes")
        item = next(items, None)
        interned = self.interner.int
        replica_ids = self._replicas
        allocations = self.allocations
        while item is not None:
            i, end, records = 0, len(item), 0
            while i < end:
                (write_id, path, exclusive, mode, replication, chunk_size, started, touched,
                 n) = record = item[i:i + 9]
                i += 9
                try:
                    split(path)
                except BadPath as exc:
                    raise _Bad(f"fs snapshot: a write has a bad path: {exc}") from None
                if not (type(write_id) is int and 0 <= write_id <= U64
                        and write_id not in self.writes and type(exclusive) is bool
                        and type(mode) is int and 0 <= mode <= MAX_MODE
                        and type(replication) is int and 1 <= replication <= MAX_REPLICATION
                        and type(chunk_size) is int and 1 <= chunk_size <= MAX_CHUNK_SIZE
                        and type(started) is int and 0 <= started <= I63
                        and type(touched) is int and 0 <= touched <= I63
                        and type(n) is int and n >= 0):
                    raise _Bad(f"fs snapshot: bad write {record!r:.120}")
                slots: list[Slot] = []
                for index in range(n):
                    chunk_id, length, checksum, r = item[i:i + 4]
                    replicas = tuple(item[i + 4:i + 4 + r]) if type(r) is int and r > 0 else ()
                    i += 4 + r if replicas else 4
                    shared = replica_ids(replicas, replication) if len(replicas) == r else None
                    committed = (type(length) is int and 1 <= length <= chunk_size
                                 and type(checksum) is str and 1 <= len(checksum) <= MAX_CHECKSUM)
                    if (shared is None or not (committed or length is checksum is None)
                            or type(chunk_id) is not int or not 0 <= chunk_id <= U64
                            or chunk_id in allocations):
                        raise _Bad(f"fs snapshot: write {write_id} has a bad chunk "
                                   f"{[chunk_id, length, checksum, replicas]!r:.80}")
                    allocations[chunk_id] = (write_id, index)
                    slots.append(Slot(chunk_id, shared, length, checksum))
                self.writes[write_id] = Write(write_id, path, exclusive, interned(mode),
                                              interned(replication), interned(chunk_size),
                                              started, touched, slots)
                records += 1
            item = _send(items, records)

    def finish(self) -> None:
        """Check the inode numbers; fill in every directory's subtree totals, deepest first."""
        inodes = self.inodes
        if len(set(inodes)) != len(inodes):
            raise _Bad("fs snapshot: an inode number appears twice")
        if inodes and (min(inodes) < ROOT_INODE or max(inodes) >= self.next_inode):
            raise _Bad(f"fs snapshot: inode numbers out of range [{ROOT_INODE}, "
                       f"{self.next_inode})")
        for d, parent in reversed(self.parents):
            parent.files += d.files
            parent.dirs += d.dirs + 1
            parent.bytes += d.bytes


def _send(items: Any, records: int) -> Any:
    try:
        return items.send(records)
    except StopIteration:
        return None


__all__ = ["RECORDS_PER_ITEM", "TAG", "VERSION", "State", "read_namespace", "write_namespace"]
