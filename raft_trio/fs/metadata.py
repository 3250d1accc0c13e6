"""Namespace: the file system's metadata as a Raft state machine (pure, deterministic, no trio).

The commands, queries and results are those of docs/fs-design.md. Every
command is validated here, inside `apply`, so that every member reaches the
same verdict; a refused or malformed command returns
``["fs-error", errno_name, message]`` and changes nothing. Nothing here reads
a clock or draws a random number: times, write ids, chunk ids and replica
targets come in the commands.

The layout (raft_trio.fs.inodes) makes a capture for a snapshot free: files
are immutable tuples, directories are copied on their first change after a
capture. Snapshots are written and read by raft_trio.fs.fs_snapshot.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from typing import Any, BinaryIO

from raft_trio.fs import fs_snapshot
from raft_trio.fs.errors import FS_ERROR
from raft_trio.fs.inodes import Chunk, Dir, File, Interner, NodeId, Slot, Write
from raft_trio.fs.paths import BadPath, join, split

ROOT_INODE = 1
ROOT_MODE = 0o755
MAX_MODE = 0o7777
MAX_REPLICATION = 64
MAX_CHUNK_SIZE = 1 << 32
MAX_CHECKSUM = 128
MAX_NODE_ID = 255  # characters of a str data node id
MAX_READDIR = 1000
U64 = (1 << 64) - 1
I63 = (1 << 63) - 1


class Refused(Exception):
    """A command or query refused with an errno name (returned as an fs-error, never raised out)."""

    def __init__(self, errno_name: str, message: str):
        super().__init__(message)
        self.errno_name = errno_name
        self.message = message


def _invalid(message: str) -> Refused:
    return Refused("EINVAL", message)


def _int(value: Any, low: int, high: int, what: str) -> int:
    number: int = value
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _invalid(f"{what} must be an integer, not {value!r:.40}")
        number = int(value)  # an int subclass, as the CBOR decoding on other members gives
    if not low <= number <= high:
        raise _invalid(f"{what} {number} is out of range [{low}, {high}]")
    return number


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(f"{what} must be true or false, not {value!r:.40}")
    return value


def _node_ids(value: Any, most: int) -> tuple[NodeId, ...]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= most:
        raise _invalid(f"targets must be a list of 1 to {most} data node ids, not {value!r:.80}")
    ids: list[NodeId] = []
    for node in value:
        if isinstance(node, str):
            if not 1 <= len(node) <= MAX_NODE_ID:
                raise _invalid(f"bad data node id {node!r:.80}")
            ids.append(str(node))
        else:
            ids.append(_int(node, 0, U64, "a data node id"))
    if len(set(ids)) != len(ids):
        raise _invalid(f"targets must be distinct: {ids!r:.80}")
    return tuple(ids)


def _stat(node: File | Dir) -> dict[str, Any]:
    if type(node) is File:
        return {"type": "file", "mode": node.mode, "size": node.size, "mtime": node.mtime,
                "ctime": node.ctime, "replication": node.replication,
                "chunk_size": node.chunk_size, "chunks": len(node.chunks), "inode": node.inode}
    assert type(node) is Dir
    return {"type": "dir", "mode": node.mode, "size": len(node.children), "mtime": node.mtime,
            "ctime": node.ctime, "replication": 0, "chunk_size": 0, "chunks": 0,
            "inode": node.inode}


def _totals(node: File | Dir) -> tuple[int, int, int]:
    """(files, dirs, bytes) of `node` and everything below it."""
    if type(node) is File:
        return 1, 0, node.size
    assert type(node) is Dir
    return node.files, node.dirs + 1, node.bytes


def _add(chain: list[Dir], files: int, dirs: int, size: int) -> None:
    for d in chain:
        d.files += files
        d.dirs += dirs
        d.bytes += size


def _link(parent: Dir, name: str, node: File | Dir) -> None:
    children = parent.children
    names = parent.names
    if names is not None and name not in children:
        insort(names, name)
    children[name] = node


def _unlink(parent: Dir, name: str) -> File | Dir:
    node = parent.children.pop(name)
    names = parent.names
    if names is not None:
        del names[bisect_left(names, name)]
    return node


class Namespace:
    """The metadata state machine: directories, files and their chunks, pending writes.

    See docs/fs-design.md for the commands (`apply`), the queries (`query`) and
    their results. Also: `apply_batch`, `snapshot`/`restore`/`capture_snapshot`
    (the flat format of raft_trio.fs.fs_snapshot) and `page` (a canonical
    listing, for comparing members).
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.root = Dir(ROOT_INODE, ROOT_MODE, 0, 0, self.epoch)
        self.next_inode = ROOT_INODE + 1
        self.writes: dict[int, Write] = {}
        # chunk id -> (write id, index) of every chunk allocated to a pending write
        self.allocations: dict[int, tuple[int, int]] = {}
        self.interner = Interner()
        self._commands: dict[str, Callable[[Any], Any]] = {
            "mkdir": self._mkdir, "create": self._create, "allocate_chunk": self._allocate_chunk,
            "commit_chunk": self._commit_chunk, "complete_file": self._complete_file,
            "abort_write": self._abort_write, "delete": self._delete, "rename": self._rename,
            "chmod": self._chmod, "truncate": self._truncate,
        }
        self._queries: dict[str, Callable[[Any], Any]] = {
            "stat": self._q_stat, "readdir": self._q_readdir, "chunks": self._q_chunks,
            "allocation": self._q_allocation, "du": self._q_du, "writes": self._q_writes,
        }
        # Bumped by every command, so that page() knows when to start its listing again.
        self._version = 0
        self._pager: tuple[int, int, Iterator[list[Any]]] | None = None

    # ------------------------------------------------------------- commands

    def apply(self, command: Any) -> Any:
        """Apply one command; a refused or malformed one returns an fs-error and changes nothing."""
        self._version += 1
        return self._run(self._commands, command, "command")

    def apply_batch(self, commands: list[Any]) -> list[Any]:
        """The results of apply() on each of `commands` in order."""
        self._version += 1
        run = self._run
        table = self._commands
        return [run(table, command, "command") for command in commands]

    def query(self, query: Any) -> Any:
        """Answer a read-only query (stat, readdir, chunks, allocation, du, writes)."""
        return self._run(self._queries, query, "query")

    @staticmethod
    def _run(table: dict[str, Callable[[Any], Any]], command: Any, what: str) -> Any:
        try:
            if not isinstance(command, list | tuple) or not command:
                raise _invalid(f"a {what} must be a non-empty list, not {command!r:.80}")
            op = command[0]
            handler = table.get(op) if isinstance(op, str) else None
            if handler is None:
                raise _invalid(f"unknown {what} {op!r:.40}")
            return handler(command)
        except Refused as exc:
            return [FS_ERROR, exc.errno_name, exc.message]
        except BadPath as exc:
            return [FS_ERROR, exc.errno_name, exc.message]
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
                RecursionError) as exc:
            # A command the checks above let through by mistake: still the same
            # verdict on every member, and the member goes on.
            return [FS_ERROR, "EINVAL", f"malformed {what} {command!r:.80}: {exc!r:.80}"]

    @staticmethod
    def _arity(command: Any, n: int, shape: str) -> None:
        if len(command) != n:
            raise _invalid(f"{command[0]} takes {shape}")

    def _mkdir(self, c: Any) -> Any:
        self._arity(c, 5, "[path, parents, mode, now]")
        parts = split(c[1])
        parents = _bool(c[2], "parents")
        mode = _int(c[3], 0, MAX_MODE, "mode")
        now = _int(c[4], 0, I63, "now")
        node: File | Dir = self.root
        depth = 0
        for name in parts:
            child = node.children.get(name)  # type: ignore[union-attr]
            if child is None:
                break
            depth += 1
            if type(child) is File and depth < len(parts):
                raise Refused("ENOTDIR", f"{join(parts[:depth])} is not a directory")
            node = child
        if depth == len(parts):
            if parents and type(node) is Dir:
                return _stat(node)
            raise Refused("EEXIST", f"{join(parts)} exists")
        if not parents and depth < len(parts) - 1:
            raise Refused("ENOENT", f"{join(parts[:depth + 1])} does not exist")
        made = len(parts) - depth
        chain = self._own(parts, depth)
        _add(chain, 0, made, 0)
        parent = chain[-1]
        parent.mtime = parent.ctime = now
        mode = self.interner.int(mode)
        epoch = self.epoch
        for name in parts[depth:]:
            made -= 1
            new = Dir(self.next_inode, mode, now, now, epoch)
            self.next_inode += 1
            new.dirs = made
            _link(parent, name, new)
            parent = new
        return _stat(parent)

    def _create(self, c: Any) -> Any:
        self._arity(c, 8, "[path, write_id, exclusive, mode, replication, chunk_size, now]")
        path = c[1]
        parts = split(path)
        write_id = _int(c[2], 0, U64, "write_id")
        exclusive = _bool(c[3], "exclusive")
        mode = _int(c[4], 0, MAX_MODE, "mode")
        replication = _int(c[5], 1, MAX_REPLICATION, "replication")
        chunk_size = _int(c[6], 1, MAX_CHUNK_SIZE, "chunk_size")
        now = _int(c[7], 0, I63, "now")
        if write_id in self.writes:
            raise _invalid(f"write {write_id} already exists")
        self._check_target(parts, exclusive)
        interned = self.interner.int
        self.writes[write_id] = Write(write_id, str(path), exclusive, interned(mode),
                                      interned(replication), interned(chunk_size), now, now, [])
        return None

    def _check_target(self, parts: list[str], exclusive: bool) -> File | None:
        """The file a write to `parts` would replace, or None; refused if it cannot land there."""
        if not parts:
            raise Refused("EISDIR", "/ is a directory")
        existing = self._parent(parts).children.get(parts[-1])
        if isinstance(existing, Dir):
            raise Refused("EISDIR", f"{join(parts)} is a directory")
        if exclusive and existing is not None:
            raise Refused("EEXIST", f"{join(parts)} exists")
        return existing

    def _write(self, write_id: Any) -> Write:
        write = self.writes.get(_int(write_id, 0, U64, "write_id"))
        if write is None:
            raise Refused("EBADF", f"no pending write {write_id}")
        return write

    def _allocate_chunk(self, c: Any) -> Any:
        self._arity(c, 6, "[write_id, index, chunk_id, targets, now]")
        write = self._write(c[1])
        slots = write.slots
        index = _int(c[2], 0, len(slots), "index")
        chunk_id = _int(c[3], 0, U64, "chunk_id")
        targets = _node_ids(c[4], write.replication)
        now = _int(c[5], 0, I63, "now")
        owner = self.allocations.get(chunk_id)
        if owner is not None and owner != (write.write_id, index):
            raise _invalid(f"chunk {chunk_id} is already allocated to write {owner[0]} "
                           f"chunk {owner[1]}")
        slot = Slot(chunk_id, self.interner.replica_ids(targets), None, None)
        if index < len(slots):
            replaced = slots[index].chunk_id
            if replaced != chunk_id:
                del self.allocations[replaced]
            slots[index] = slot
        else:
            slots.append(slot)
        self.allocations[chunk_id] = (write.write_id, index)
        write.touched = now
        return None

    def _commit_chunk(self, c: Any) -> Any:
        self._arity(c, 7, "[write_id, index, chunk_id, length, checksum, now]")
        write = self._write(c[1])
        slots = write.slots
        index = _int(c[2], 0, U64, "index")
        chunk_id = _int(c[3], 0, U64, "chunk_id")
        length = _int(c[4], 1, write.chunk_size, "length")
        checksum = c[5]
        if not isinstance(checksum, str) or not 1 <= len(checksum) <= MAX_CHECKSUM:
            raise _invalid(f"checksum must be a string of 1 to {MAX_CHECKSUM} characters")
        now = _int(c[6], 0, I63, "now")
        if index >= len(slots) or slots[index].chunk_id != chunk_id:
            raise _invalid(f"chunk {index} of write {write.write_id} is not allocated as "
                           f"chunk {chunk_id}")
        slots[index] = Slot(chunk_id, slots[index].replicas, length, str(checksum))
        write.touched = now
        return None

    def _complete_file(self, c: Any) -> Any:
        self._arity(c, 4, "[write_id, size, now]")
        write = self._write(c[1])
        size = _int(c[2], 0, I63, "size")
        now = _int(c[3], 0, I63, "now")
        total = 0
        for index, slot in enumerate(write.slots):
            if slot.length is None:
                raise _invalid(f"chunk {index} of write {write.write_id} is not committed")
            total += slot.length
        if total != size:
            raise _invalid(f"the chunks of write {write.write_id} hold {total} bytes, not {size}")
        parts = split(write.path)
        old = self._check_target(parts, write.exclusive)
        chunks = tuple([Chunk(s.chunk_id, s.length, s.checksum, s.replicas)  # type: ignore[arg-type]
                        for s in write.slots])
        chain = self._own(parts, len(parts) - 1)
        parent = chain[-1]
        if old is None:
            inode, mode = self.next_inode, write.mode
            self.next_inode += 1
            _add(chain, 1, 0, size)
            parent.mtime = parent.ctime = now
        else:
            inode, mode = old.inode, old.mode
            _add(chain, 0, 0, size - old.size)
        new = File(inode, mode, size, now, now, write.replication, write.chunk_size, chunks)
        _link(parent, parts[-1], new)
        self._drop_write(write)
        return _stat(new)

    def _drop_write(self, write: Write) -> None:
        del self.writes[write.write_id]
        allocations = self.allocations
        for slot in write.slots:
            del allocations[slot.chunk_id]

    def _abort_write(self, c: Any) -> Any:
        self._arity(c, 2, "[write_id]")
        self._drop_write(self._write(c[1]))
        return None

    def _delete(self, c: Any) -> Any:
        self._arity(c, 4, "[path, recursive, now]")
        parts = split(c[1])
        recursive = _bool(c[2], "recursive")
        now = _int(c[3], 0, I63, "now")
        if not parts:
            raise Refused("EPERM", "the root cannot be deleted")
        node = self._lookup(parts)
        freed: list[int] = []
        if type(node) is File:
            freed.extend(chunk.chunk_id for chunk in node.chunks)
        else:
            assert type(node) is Dir
            if node.children and not recursive:
                raise Refused("ENOTEMPTY", f"{join(parts)} is not empty")
            stack = [node]
            while stack:
                for child in stack.pop().children.values():
                    if type(child) is File:
                        freed.extend(chunk.chunk_id for chunk in child.chunks)
                    else:
                        stack.append(child)  # type: ignore[arg-type]
        chain = self._own(parts, len(parts) - 1)
        files, dirs, size = _totals(node)
        _add(chain, -files, -dirs, -size)
        parent = chain[-1]
        _unlink(parent, parts[-1])
        parent.mtime = parent.ctime = now
        freed.sort()
        return freed

    def _rename(self, c: Any) -> Any:
        self._arity(c, 4, "[src, dst, now]")
        src = split(c[1])
        dst = split(c[2])
        now = _int(c[3], 0, I63, "now")
        if not src or not dst:
            raise Refused("EBUSY", "the root cannot be renamed or replaced")
        node = self._lookup(src)
        target = self._parent(dst).children.get(dst[-1])
        if src == dst:
            return None
        if type(node) is Dir and dst[:len(src)] == src:
            raise _invalid(f"cannot move {join(src)} into its own subtree ({join(dst)})")
        if target is not None:
            if type(target) is Dir:
                if type(node) is File:
                    raise Refused("EISDIR", f"{join(dst)} is a directory")
                if target.children:
                    raise Refused("ENOTEMPTY", f"{join(dst)} is not empty")
            elif type(node) is Dir:
                raise Refused("ENOTDIR", f"{join(dst)} is not a directory")
        moved = _totals(node)
        chain = self._own(src, len(src) - 1)
        _add(chain, -moved[0], -moved[1], -moved[2])
        parent = chain[-1]
        _unlink(parent, src[-1])
        parent.mtime = parent.ctime = now
        chain = self._own(dst, len(dst) - 1)
        if target is not None:
            files, dirs, size = _totals(target)
            _add(chain, -files, -dirs, -size)
        _add(chain, *moved)
        parent = chain[-1]
        if type(node) is File:
            node = node._replace(ctime=now)
        else:
            assert type(node) is Dir
            if node.epoch != self.epoch:
                node = node.clone(self.epoch)
            node.ctime = now
        _link(parent, dst[-1], node)
        parent.mtime = parent.ctime = now
        return None

    def _chmod(self, c: Any) -> Any:
        self._arity(c, 4, "[path, mode, now]")
        parts = split(c[1])
        mode = self.interner.int(_int(c[2], 0, MAX_MODE, "mode"))
        now = _int(c[3], 0, I63, "now")
        node = self._lookup(parts)
        if type(node) is File:
            node = node._replace(mode=mode, ctime=now)
            self._own(parts, len(parts) - 1)[-1].children[parts[-1]] = node
            return _stat(node)
        d = self._own(parts, len(parts))[-1]
        d.mode = mode
        d.ctime = now
        return _stat(d)

    def _truncate(self, c: Any) -> Any:
        self._arity(c, 4, "[path, size, now]")
        parts = split(c[1])
        size = _int(c[2], 0, I63, "size")
        now = _int(c[3], 0, I63, "now")
        node = self._lookup(parts)
        if type(node) is not File:
            raise Refused("EISDIR", f"{join(parts)} is a directory")
        if size > node.size:
            raise _invalid(f"truncate only shrinks: {join(parts)} holds {node.size} bytes, "
                           f"not {size}")
        kept = 0
        start = 0
        for chunk in node.chunks:
            if start >= size:
                break
            start += chunk.length
            kept += 1
        new = File(node.inode, node.mode, size, now, now, node.replication, node.chunk_size,
                   node.chunks[:kept])
        chain = self._own(parts, len(parts) - 1)
        _add(chain, 0, 0, size - node.size)
        chain[-1].children[parts[-1]] = new
        return _stat(new)

    # ------------------------------------------------------------- walking

    def _lookup(self, parts: list[str]) -> File | Dir:
        """The node at `parts`: ENOENT if a component is missing, ENOTDIR if one is a file."""
        node: File | Dir = self.root
        for depth, name in enumerate(parts):
            if type(node) is not Dir:
                raise Refused("ENOTDIR", f"{join(parts[:depth])} is not a directory")
            child = node.children.get(name)
            if child is None:
                raise Refused("ENOENT", f"{join(parts[:depth + 1])} does not exist")
            node = child
        return node

    def _parent(self, parts: list[str]) -> Dir:
        """The directory holding `parts` (not the root): ENOENT or ENOTDIR if there is none."""
        parent = self._lookup(parts[:-1])
        if type(parent) is not Dir:
            raise Refused("ENOTDIR", f"{join(parts[:-1])} is not a directory")
        return parent

    def _own(self, parts: list[str], depth: int) -> list[Dir]:
        """The directories from the root down to join(parts[:depth]), all of this epoch.

        They must exist. A directory a capture may still hold (of an older
        epoch) is replaced, in its parent, by a copy that is then changed
        instead.
        """
        epoch = self.epoch
        d = self.root
        if d.epoch != epoch:
            d = self.root = d.clone(epoch)
        chain = [d]
        for name in parts[:depth]:
            child = d.children[name]
            assert type(child) is Dir
            if child.epoch != epoch:
                child = d.children[name] = child.clone(epoch)
            chain.append(child)
            d = child
        return chain

    # ------------------------------------------------------------- queries

    def _q_stat(self, q: Any) -> Any:
        self._arity(q, 2, "[path]")
        return _stat(self._lookup(split(q[1])))

    def _q_readdir(self, q: Any) -> Any:
        self._arity(q, 4, "[path, after, limit]")
        parts = split(q[1])
        after = q[2]
        if not isinstance(after, str):
            raise _invalid("after must be a string")
        limit = _int(q[3], 1, MAX_READDIR, "limit")
        node = self._lookup(parts)
        if type(node) is not Dir:
            raise Refused("ENOTDIR", f"{join(parts)} is not a directory")
        names = node.names
        if names is None:
            names = node.names = sorted(node.children)
        start = bisect_right(names, after)
        children = node.children
        return [[name, _stat(children[name])] for name in names[start:start + limit]]

    def _q_chunks(self, q: Any) -> Any:
        self._arity(q, 2, "[path]")
        parts = split(q[1])
        node = self._lookup(parts)
        if type(node) is not File:
            raise Refused("EISDIR", f"{join(parts)} is a directory")
        return {"size": node.size,
                "chunks": [[c.chunk_id, c.length, c.checksum, list(c.replicas)]
                           for c in node.chunks]}

    def _q_allocation(self, q: Any) -> Any:
        self._arity(q, 2, "[chunk_id]")
        owner = self.allocations.get(_int(q[1], 0, U64, "chunk_id"))
        if owner is None:
            return None
        write_id, index = owner
        return [write_id, index, list(self.writes[write_id].slots[index].replicas)]

    def _q_du(self, q: Any) -> Any:
        self._arity(q, 2, "[path]")
        files, dirs, size = _totals(self._lookup(split(q[1])))
        return {"files": files, "dirs": dirs, "bytes": size}

    def _q_writes(self, q: Any) -> Any:
        self._arity(q, 3, "[after, limit]")
        after = _int(q[1], -1, U64, "after")
        limit = _int(q[2], 1, MAX_READDIR, "limit")
        ids = sorted(i for i in self.writes if i > after)[:limit]
        return [[i, w.path, w.started, w.touched, len(w.slots)]
                for i in ids for w in (self.writes[i],)]

    # ------------------------------------------------------------- snapshots

    def snapshot(self, out: BinaryIO) -> None:
        """Write the whole namespace to `out` (format: raft_trio.fs.fs_snapshot)."""
        self.capture_snapshot()(out)

    def capture_snapshot(self) -> Callable[[BinaryIO], None]:
        """The namespace as of now, for a later write while applying goes on.

        Costs a copy of the pending writes only: the directories of this epoch
        become frozen and are copied when they next change.
        """
        root = self.root
        self.epoch += 1
        writes = [w.copy() for w in self.writes.values()]
        return partial(fs_snapshot.write_namespace, root=root, next_inode=self.next_inode,
                       writes=writes)

    def restore(self, src: BinaryIO) -> None:
        """Replace the namespace with one snapshot() wrote; ValueError (state untouched) if bad."""
        state = fs_snapshot.read_namespace(src, self.epoch)
        self.root = state.root
        self.next_inode = state.next_inode
        self.writes = state.writes
        self.allocations = state.allocations
        self.interner = state.interner
        self._version += 1

    # ------------------------------------------------------------- listing

    def page(self, position: int, count: int) -> list[list[Any]]:
        """Up to `count` records from `position` of a canonical listing of the namespace.

        Equal namespaces list the same records: ``["namespace", next_inode]``,
        then every directory and file in depth-first order of sorted names
        (``["dir", path, inode, mode, mtime, ctime]``, ``["file", path, inode,
        mode, size, mtime, ctime, replication, chunk_size, [[chunk_id, length,
        checksum, [replica ids]], ...]]``), then the pending writes by id
        (``["write", write_id, path, exclusive, mode, replication, chunk_size,
        started, touched, [[chunk_id, [replica ids], length, checksum], ...]]``,
        length and checksum None until committed). Reading the pages in order
        while nothing is applied costs one walk in all.
        """
        pager = self._pager
        if pager is not None and pager[0] == self._version and pager[1] == position:
            listing = pager[2]
        else:
            listing = islice(self._listing(), position, None)
        items = list(islice(listing, count))
        self._pager = (self._version, position + len(items), listing)
        return items

    def _listing(self) -> Iterator[list[Any]]:
        yield ["namespace", self.next_inode]
        stack: list[tuple[str, Dir]] = [("/", self.root)]
        while stack:
            path, d = stack.pop()
            yield ["dir", path, d.inode, d.mode, d.mtime, d.ctime]
            prefix = path if path == "/" else path + "/"
            subdirs: list[tuple[str, Dir]] = []
            for name in sorted(d.children):
                node = d.children[name]
                if isinstance(node, File):
                    yield ["file", prefix + name, node.inode, node.mode, node.size, node.mtime,
                           node.ctime, node.replication, node.chunk_size,
                           [[c.chunk_id, c.length, c.checksum, list(c.replicas)]
                            for c in node.chunks]]
                else:
                    subdirs.append((prefix + name, node))
            stack.extend(reversed(subdirs))
        for write_id in sorted(self.writes):
            w = self.writes[write_id]
            yield ["write", write_id, w.path, w.exclusive, w.mode, w.replication, w.chunk_size,
                   w.started, w.touched,
                   [[s.chunk_id, list(s.replicas), s.length, s.checksum] for s in w.slots]]


__all__ = ["Namespace", "Refused"]
