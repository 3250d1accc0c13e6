"""A small, obviously correct model of the metadata namespace, for the tests to compare with.

The whole tree is one dict from path to node, with no sharing, no copying on
write, no totals kept up to date and no sorted caches: every answer is
computed from scratch by scanning the dict. The commands follow
docs/fs-design.md, including its order of checks, so that the errno of every
refusal can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

ERR = "fs-error"


class Fail(Exception):
    def __init__(self, errno_name: str):
        super().__init__(errno_name)
        self.errno_name = errno_name


@dataclass(frozen=True)
class MDir:
    inode: int
    mode: int
    mtime: int
    ctime: int


@dataclass(frozen=True)
class MFile:
    inode: int
    mode: int
    size: int
    mtime: int
    ctime: int
    replication: int
    chunk_size: int
    chunks: tuple[tuple[int, int, str, tuple[Any, ...]], ...]


@dataclass
class MWrite:
    path: str
    exclusive: bool
    mode: int
    replication: int
    chunk_size: int
    started: int
    touched: int
    # [chunk_id, replicas, length or None, checksum or None]
    slots: list[list[Any]] = field(default_factory=list)


def parts_of(path: str) -> list[str]:
    """The components of a valid path; Fail(EINVAL) for anything else the tests send."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise Fail("EINVAL")
    if path == "/":
        return []
    parts = path[1:].split("/")
    if any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise Fail("EINVAL")
    return parts


def parent_of(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def under(path: str, top: str) -> bool:
    """Whether `path` is `top` or inside it."""
    return path == top or path.startswith(top.rstrip("/") + "/")


class Model:
    def __init__(self) -> None:
        self.nodes: dict[str, MDir | MFile] = {"/": MDir(1, 0o755, 0, 0)}
        self.next_inode = 2
        self.writes: dict[int, MWrite] = {}

    # ------------------------------------------------------------ helpers

    def children(self, path: str) -> list[str]:
        return sorted(p.rsplit("/", 1)[1] for p in self.nodes if p != "/" and parent_of(p) == path)

    def check_lookup(self, path: str) -> MDir | MFile:
        """The node at `path`, or Fail(ENOENT / ENOTDIR) for the first component that fails."""
        parts = parts_of(path)
        for i in range(1, len(parts) + 1):
            prefix = "/" + "/".join(parts[:i])
            if prefix not in self.nodes:
                raise Fail("ENOENT")
            if i < len(parts) and isinstance(self.nodes[prefix], MFile):
                raise Fail("ENOTDIR")
        return self.nodes[path]

    def check_parent(self, path: str) -> None:
        parent = self.check_lookup(parent_of(path))
        if isinstance(parent, MFile):
            raise Fail("ENOTDIR")

    def touch_dir(self, path: str, now: int) -> None:
        node = self.nodes[path]
        assert isinstance(node, MDir)
        self.nodes[path] = replace(node, mtime=now, ctime=now)

    def stat(self, path: str) -> dict[str, Any]:
        node = self.nodes[path]
        if isinstance(node, MDir):
            return {"type": "dir", "mode": node.mode, "size": len(self.children(path)),
                    "mtime": node.mtime, "ctime": node.ctime, "replication": 0,
                    "chunk_size": 0, "chunks": 0, "inode": node.inode}
        return {"type": "file", "mode": node.mode, "size": node.size, "mtime": node.mtime,
                "ctime": node.ctime, "replication": node.replication,
                "chunk_size": node.chunk_size, "chunks": len(node.chunks), "inode": node.inode}

    def write(self, write_id: int) -> MWrite:
        if write_id not in self.writes:
            raise Fail("EBADF")
        return self.writes[write_id]

    def owner(self, chunk_id: int) -> tuple[int, int] | None:
        for write_id, w in self.writes.items():
            for index, slot in enumerate(w.slots):
                if slot[0] == chunk_id:
                    return write_id, index
        return None

    # ------------------------------------------------------------ commands

    def apply(self, command: list[Any]) -> Any:
        try:
            do = getattr(self, "do_" + command[0], None)
            if do is None:
                raise Fail("EINVAL")
            return do(*command[1:])
        except Fail as exc:
            return [ERR, exc.errno_name]

    def do_mkdir(self, path: str, parents: bool, mode: int, now: int) -> Any:
        parts = parts_of(path)
        depth = len(parts)
        for i in range(1, len(parts) + 1):
            prefix = "/" + "/".join(parts[:i])
            if prefix not in self.nodes:
                depth = i - 1
                break
            if i < len(parts) and isinstance(self.nodes[prefix], MFile):
                raise Fail("ENOTDIR")
        if depth == len(parts):
            if parents and isinstance(self.nodes[path], MDir):
                return self.stat(path)
            raise Fail("EEXIST")
        if not parents and depth < len(parts) - 1:
            raise Fail("ENOENT")
        self.touch_dir("/" + "/".join(parts[:depth]), now)
        for i in range(depth + 1, len(parts) + 1):
            self.nodes["/" + "/".join(parts[:i])] = MDir(self.next_inode, mode, now, now)
            self.next_inode += 1
        return self.stat(path)

    def do_create(self, path: str, write_id: int, exclusive: bool, mode: int, replication: int,
                  chunk_size: int, now: int) -> Any:
        parts_of(path)
        if write_id in self.writes:
            raise Fail("EINVAL")
        self.check_target(path, exclusive)
        self.writes[write_id] = MWrite(path, exclusive, mode, replication, chunk_size, now, now)
        return None

    def check_target(self, path: str, exclusive: bool) -> None:
        if path == "/":
            raise Fail("EISDIR")
        self.check_parent(path)
        node = self.nodes.get(path)
        if isinstance(node, MDir):
            raise Fail("EISDIR")
        if exclusive and node is not None:
            raise Fail("EEXIST")

    def do_allocate_chunk(self, write_id: int, index: int, chunk_id: int, targets: list[Any],
                          now: int) -> Any:
        w = self.write(write_id)
        if not 0 <= index <= len(w.slots) or not 1 <= len(targets) <= w.replication:
            raise Fail("EINVAL")
        if len(set(targets)) != len(targets):
            raise Fail("EINVAL")
        owner = self.owner(chunk_id)
        if owner is not None and owner != (write_id, index):
            raise Fail("EINVAL")
        slot = [chunk_id, tuple(targets), None, None]
        if index == len(w.slots):
            w.slots.append(slot)
        else:
            w.slots[index] = slot
        w.touched = now
        return None

    def do_commit_chunk(self, write_id: int, index: int, chunk_id: int, length: int,
                        checksum: str, now: int) -> Any:
        w = self.write(write_id)
        if not 1 <= length <= w.chunk_size:
            raise Fail("EINVAL")
        if index >= len(w.slots) or w.slots[index][0] != chunk_id:
            raise Fail("EINVAL")
        w.slots[index][2:] = [length, checksum]
        w.touched = now
        return None

    def do_complete_file(self, write_id: int, size: int, now: int) -> Any:
        w = self.write(write_id)
        if any(slot[2] is None for slot in w.slots):
            raise Fail("EINVAL")
        if sum(slot[2] for slot in w.slots) != size:
            raise Fail("EINVAL")
        self.check_target(w.path, w.exclusive)
        old = self.nodes.get(w.path)
        chunks = tuple((s[0], s[2], s[3], s[1]) for s in w.slots)
        if old is None:
            inode, mode = self.next_inode, w.mode
            self.next_inode += 1
            self.touch_dir(parent_of(w.path), now)
        else:
            inode, mode = old.inode, old.mode
        self.nodes[w.path] = MFile(inode, mode, size, now, now, w.replication, w.chunk_size,
                                   chunks)
        del self.writes[write_id]
        return self.stat(w.path)

    def do_abort_write(self, write_id: int) -> Any:
        self.write(write_id)
        del self.writes[write_id]
        return None

    def do_delete(self, path: str, recursive: bool, now: int) -> Any:
        parts_of(path)
        if path == "/":
            raise Fail("EPERM")
        node = self.check_lookup(path)
        if isinstance(node, MDir) and self.children(path) and not recursive:
            raise Fail("ENOTEMPTY")
        freed = []
        for p in [p for p in self.nodes if under(p, path)]:
            gone = self.nodes.pop(p)
            if isinstance(gone, MFile):
                freed += [c[0] for c in gone.chunks]
        self.touch_dir(parent_of(path), now)
        return sorted(freed)

    def do_rename(self, src: str, dst: str, now: int) -> Any:
        parts_of(src)
        parts_of(dst)
        if src == "/" or dst == "/":
            raise Fail("EBUSY")
        node = self.check_lookup(src)
        self.check_parent(dst)
        if src == dst:
            return None
        if isinstance(node, MDir) and under(dst, src):
            raise Fail("EINVAL")
        target = self.nodes.get(dst)
        if isinstance(target, MDir):
            if isinstance(node, MFile):
                raise Fail("EISDIR")
            if self.children(dst):
                raise Fail("ENOTEMPTY")
        elif target is not None and isinstance(node, MDir):
            raise Fail("ENOTDIR")
        self.nodes.pop(dst, None)
        moving = {p: self.nodes.pop(p) for p in [p for p in self.nodes if under(p, src)]}
        for p, moved in moving.items():
            self.nodes[dst + p[len(src):]] = moved
        self.nodes[dst] = replace(self.nodes[dst], ctime=now)
        self.touch_dir(parent_of(src), now)
        self.touch_dir(parent_of(dst), now)
        return None

    def do_chmod(self, path: str, mode: int, now: int) -> Any:
        node = self.check_lookup(path)
        self.nodes[path] = replace(node, mode=mode, ctime=now)
        return self.stat(path)

    def do_truncate(self, path: str, size: int, now: int) -> Any:
        node = self.check_lookup(path)
        if isinstance(node, MDir):
            raise Fail("EISDIR")
        if size > node.size:
            raise Fail("EINVAL")
        kept = []
        start = 0
        for chunk in node.chunks:
            if start < size:
                kept.append(chunk)
            start += chunk[1]
        self.nodes[path] = replace(node, size=size, mtime=now, ctime=now, chunks=tuple(kept))
        return self.stat(path)

    # ------------------------------------------------------------ queries

    def query(self, query: list[Any]) -> Any:
        try:
            return getattr(self, "q_" + query[0])(*query[1:])
        except Fail as exc:
            return [ERR, exc.errno_name]

    def q_stat(self, path: str) -> Any:
        self.check_lookup(path)
        return self.stat(path)

    def q_readdir(self, path: str, after: str, limit: int) -> Any:
        if isinstance(self.check_lookup(path), MFile):
            raise Fail("ENOTDIR")
        prefix = path.rstrip("/") + "/"
        names = [n for n in self.children(path) if n > after][:limit]
        return [[n, self.stat(prefix + n)] for n in names]

    def q_chunks(self, path: str) -> Any:
        node = self.check_lookup(path)
        if isinstance(node, MDir):
            raise Fail("EISDIR")
        return {"size": node.size, "chunks": [[c[0], c[1], c[2], list(c[3])] for c in node.chunks]}

    def q_du(self, path: str) -> Any:
        node = self.check_lookup(path)
        if isinstance(node, MFile):
            return {"files": 1, "dirs": 0, "bytes": node.size}
        inside = [n for p, n in self.nodes.items() if under(p, path)]
        files = [n for n in inside if isinstance(n, MFile)]
        return {"files": len(files), "dirs": len(inside) - len(files),
                "bytes": sum(f.size for f in files)}

    def q_allocation(self, chunk_id: int) -> Any:
        owner = self.owner(chunk_id)
        if owner is None:
            return None
        write_id, index = owner
        return [write_id, index, list(self.writes[write_id].slots[index][1])]

    def q_writes(self, after: int, limit: int) -> Any:
        return [[i, w.path, w.started, w.touched, len(w.slots)]
                for i, w in sorted(self.writes.items()) if i > after][:limit]

    # ------------------------------------------------------------ listing

    def listing(self) -> dict[tuple[str, Any], list[Any]]:
        """The records of Namespace.page(), keyed by kind and path or write id."""
        out: dict[tuple[str, Any], list[Any]] = {("namespace", None): ["namespace",
                                                                       self.next_inode]}
        for path, node in self.nodes.items():
            if isinstance(node, MDir):
                out["dir", path] = ["dir", path, node.inode, node.mode, node.mtime, node.ctime]
            else:
                out["file", path] = ["file", path, node.inode, node.mode, node.size, node.mtime,
                                     node.ctime, node.replication, node.chunk_size,
                                     [[c[0], c[1], c[2], list(c[3])] for c in node.chunks]]
        for write_id, w in self.writes.items():
            out["write", write_id] = ["write", write_id, w.path, w.exclusive, w.mode,
                                      w.replication, w.chunk_size, w.started, w.touched,
                                      [[s[0], list(s[1]), s[2], s[3]] for s in w.slots]]
        return out


def keyed(records: list[list[Any]]) -> dict[tuple[str, Any], list[Any]]:
    """Namespace.page() records keyed as Model.listing() keys them."""
    out: dict[tuple[str, Any], list[Any]] = {}
    for record in records:
        key = (record[0], None if record[0] == "namespace" else record[1])
        assert key not in out, f"listed twice: {key}"
        out[key] = record
    return out
