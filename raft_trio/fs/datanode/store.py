"""Chunks on a data node's disk.

Layout of DATA_DIR:

    LOCK              flock held while a node uses the directory (pid inside)
    datanode.json     {"id": N}: the node the directory belongs to
    chunks/00 .. ff/  <16 hex digits of the id>.chunk, spread by the id's low byte
    corrupt/          chunks that failed their checksum, kept aside (not served)

A chunk file is a 32-byte header, then the chunk's bytes:

    magic "RTFSCHK1" | chunk id u64 | length u64 | crc32 u32 | crc32 of the 28 bytes before, u32

A chunk is written to ``<id>.<random>.tmp`` beside its final name, its
checksum computed as the bytes arrive; when all have come, a length or
checksum that does not match refuses the write and removes the temp file,
otherwise the file is fsynced, renamed and the directory fsynced. A crash
leaves at most a temp file, swept when the store opens. Every read checks
the whole chunk against its checksum; a chunk that fails is moved to
corrupt/ and reported (`corrupt`), never served.

The blocking calls run in worker threads (trio.to_thread.run_sync); the
index of chunk ids and lengths is only touched on trio's thread.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import mmap
import os
import queue
import re
import secrets
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from raft_trio.errors import RaftError
from raft_trio.fs.checksum import ChecksumMismatch, Crc32, format_crc32, parse_checksum
from raft_trio.storage.wal import _fsync_dir, _make_durable_dirs

__all__ = ["ChunkCorruption", "ChunkRead", "ChunkStore", "ChunkWriter", "StoreError"]

log = logging.getLogger("raft_trio.fs.datanode")

MAGIC = b"RTFSCHK1"
_HEADER = struct.Struct(">8sQQI")
_HEADER_CRC = struct.Struct(">I")
HEADER_SIZE = _HEADER.size + _HEADER_CRC.size
assert HEADER_SIZE == 32

LOCK_FILE = "LOCK"
ID_FILE = "datanode.json"
CHUNKS = "chunks"
CORRUPT = "corrupt"
_CHUNK_NAME = re.compile(r"([0-9a-f]{16})\.chunk")
_TEMP_NAME = re.compile(r"[0-9a-f]{16}\.[0-9a-f]+\.tmp")


class StoreError(RaftError):
    """The data directory cannot be used (in use, another node's, unreadable)."""


class ChunkCorruption(RaftError):
    """A stored chunk fails its checksum (or its header is damaged)."""

    def __init__(self, chunk_id: int, message: str):
        super().__init__(message)
        self.chunk_id = chunk_id


@dataclass(frozen=True, slots=True)
class ChunkRead:
    """Bytes read from a verified chunk: `data` (a view of them), the checksum of those
    bytes and that of the whole chunk."""

    data: memoryview
    checksum: str
    chunk_checksum: str
    chunk_length: int
    mapping: mmap.mmap | None = None

    def close(self) -> None:
        """Unmap the chunk file (the data is read from a mapping of it, not copied)."""
        self.data.release()
        if self.mapping is not None:
            try:
                self.mapping.close()
            except BufferError:  # a view of it is still alive: it closes when freed
                pass


def chunk_name(chunk_id: int) -> str:
    return f"{chunk_id:016x}"


def encode_header(chunk_id: int, length: int, crc: int) -> bytes:
    head = _HEADER.pack(MAGIC, chunk_id, length, crc)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


class ChunkStore:
    """The chunks under `data_dir`; `await open()` before use, `close()` after.

    `node_id`, when given, is recorded in the directory on first use and checked
    on every later one, so that two nodes never share their chunks.
    """

    def __init__(self, data_dir: str | Path, node_id: int | None = None):
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self.chunks_dir = self.data_dir / CHUNKS
        self.corrupt_dir = self.data_dir / CORRUPT
        # chunk id -> length in bytes, of every chunk stored (and not found corrupt).
        self._index: dict[int, int] = {}
        self.used = 0
        # Ids of the chunks in corrupt/.
        self.corrupt: set[int] = set()
        self._lock_fd: int | None = None

    # ---------------------------------------------------------------- life

    async def open(self) -> None:
        """Lock the directory, sweep temp files left by a crash, index the chunks."""
        index, corrupt, fd = await trio.to_thread.run_sync(self._open)
        self._lock_fd = fd
        self._index = index
        self.used = sum(index.values())
        self.corrupt = corrupt

    def close(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)

    def _open(self) -> tuple[dict[int, int], set[int], int]:
        directory = self.data_dir
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"data dir {directory} is not a directory")
        try:
            _make_durable_dirs(directory)
            fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot use data dir {directory}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise StoreError(f"data dir {directory} is in use by another process "
                                 f"(pid {holder})") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._check_owner()
            self._make_layout()
            index = self._scan()
            corrupt = self._scan_corrupt()
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot use data dir {directory}: {exc}") from None
        except BaseException:
            os.close(fd)
            raise
        return index, corrupt, fd

    def _check_owner(self) -> None:
        if self.node_id is None:
            return
        path = self.data_dir / ID_FILE
        try:
            recorded = json.loads(path.read_text())["id"]
        except FileNotFoundError:
            _write_durably(path, json.dumps({"id": self.node_id}).encode() + b"\n")
            return
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from None
        if recorded != self.node_id:
            raise StoreError(f"data dir {self.data_dir} belongs to data node {recorded}, "
                             f"not {self.node_id}")

    def _make_layout(self) -> None:
        for directory in (self.chunks_dir, self.corrupt_dir):
            if not directory.is_dir():
                directory.mkdir()
                _fsync_dir(directory.parent)
        made = False
        for low in range(256):
            sub = self.chunks_dir / f"{low:02x}"
            if not sub.is_dir():
                sub.mkdir()
                made = True
        if made:
            _fsync_dir(self.chunks_dir)

    def _scan(self) -> dict[int, int]:
        index: dict[int, int] = {}
        swept = 0
        for sub in sorted(self.chunks_dir.iterdir()):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                name = entry.name
                match = _CHUNK_NAME.fullmatch(name)
                if match:
                    index[int(match[1], 16)] = max(0, entry.stat().st_size - HEADER_SIZE)
                elif _TEMP_NAME.fullmatch(name):
                    # A write cut short by a crash: never acknowledged, so never needed.
                    os.unlink(entry.path)
                    swept += 1
                else:
                    log.warning("data dir %s: ignoring %s", self.data_dir, entry.path)
        if swept:
            log.info("data dir %s: removed %d unfinished chunk file(s) left by a crash",
                     self.data_dir, swept)
        return index

    def _scan_corrupt(self) -> set[int]:
        found = set()
        for entry in os.scandir(self.corrupt_dir):
            match = _CHUNK_NAME.fullmatch(entry.name)
            if match:
                found.add(int(match[1], 16))
        return found

    # ---------------------------------------------------------------- paths

    def path_of(self, chunk_id: int) -> Path:
        return self.chunks_dir / f"{chunk_id & 0xFF:02x}" / f"{chunk_name(chunk_id)}.chunk"

    def _corrupt_path(self, chunk_id: int) -> Path:
        return self.corrupt_dir / f"{chunk_name(chunk_id)}.chunk"

    # ------------------------------------------------------------- queries

    def __contains__(self, chunk_id: int) -> bool:
        return chunk_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def length_of(self, chunk_id: int) -> int | None:
        return self._index.get(chunk_id)

    def list(self) -> list[int]:
        """The ids of the chunks stored, sorted."""
        return sorted(self._index)

    async def space(self) -> tuple[int, int]:
        """(capacity, used): capacity is what this node could hold, the bytes of its
        chunks plus the space still free to it on the data dir's file system."""
        stat = await trio.to_thread.run_sync(os.statvfs, self.data_dir)
        return self.used + stat.f_bavail * stat.f_frsize, self.used

    # -------------------------------------------------------------- writes

    async def begin_write(self, chunk_id: int, length: int, checksum: str) -> ChunkWriter:
        """Start storing a chunk; feed its bytes to the writer, then commit or discard it."""
        crc = parse_checksum(checksum)
        writer = ChunkWriter(self, chunk_id, length, checksum, crc)
        try:
            await writer._worker.run(writer._open)
        except BaseException:
            writer._worker.close()
            raise
        return writer

    def _committed(self, chunk_id: int, length: int) -> None:
        self.used += length - self._index.get(chunk_id, 0)
        self._index[chunk_id] = length

    def _forget(self, chunk_id: int) -> None:
        self.used -= self._index.pop(chunk_id, 0)

    async def delete(self, chunk_id: int) -> bool:
        """Remove a chunk (or its corrupt copy); False if there was none."""
        path, corrupt_path = self.path_of(chunk_id), self._corrupt_path(chunk_id)

        def unlink() -> bool:
            found = False
            for candidate in (path, corrupt_path):
                try:
                    os.unlink(candidate)
                    found = True
                except FileNotFoundError:
                    pass
            return found

        # A delete needs no fsync: a chunk that comes back after a crash is
        # garbage, and garbage collection removes it again.
        found = await trio.to_thread.run_sync(unlink)
        self._forget(chunk_id)
        self.corrupt.discard(chunk_id)
        return found

    # --------------------------------------------------------------- reads

    async def read(self, chunk_id: int, offset: int = 0, length: int | None = None) -> ChunkRead:
        """Bytes `offset`.. of a chunk (`length` of them, fewer at its end), after checking
        the whole chunk. FileNotFoundError if there is no such chunk; ChunkCorruption
        (naming the chunk) if it fails its checksum, after moving it to corrupt/."""
        if chunk_id not in self._index:
            raise FileNotFoundError(errno.ENOENT, f"no chunk {chunk_id}", chunk_name(chunk_id))
        try:
            return await trio.to_thread.run_sync(self._read, chunk_id, offset, length)
        except ChunkCorruption:
            await trio.to_thread.run_sync(self._quarantine, chunk_id)
            self._forget(chunk_id)
            self.corrupt.add(chunk_id)
            raise
        except FileNotFoundError:
            self._forget(chunk_id)
            raise

    def _read(self, chunk_id: int, offset: int, length: int | None) -> ChunkRead:
        path = self.path_of(chunk_id)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            # A mapping (read in at once) spares a copy of the whole chunk. Chunk files
            # are never changed in place, only replaced or unlinked, which leaves a
            # mapping of the old one intact.
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                                mmap.PROT_READ) if size else None
        finally:
            os.close(fd)
        view = memoryview(mapping if mapping is not None else b"")
        body: memoryview | None = None
        try:
            crc, chunk_length = _check_header(chunk_id, view, path)
            body = view[HEADER_SIZE:]
            actual = zlib.crc32(body)
            if actual != crc:
                raise ChunkCorruption(chunk_id, f"chunk {chunk_id} ({path}) is corrupt: its "
                                      f"bytes have checksum {format_crc32(actual)}, the chunk "
                                      f"was stored with {format_crc32(crc)}")
        except BaseException:
            if body is not None:
                body.release()
            view.release()
            if mapping is not None:
                mapping.close()
            raise
        start = min(offset, chunk_length)
        end = chunk_length if length is None else min(chunk_length, start + length)
        part = body[start:end]
        whole = format_crc32(crc)
        part_checksum = whole if (start, end) == (0, chunk_length) else format_crc32(
            zlib.crc32(part))
        return ChunkRead(part, part_checksum, whole, chunk_length, mapping)

    def _quarantine(self, chunk_id: int) -> None:
        try:
            os.replace(self.path_of(chunk_id), self._corrupt_path(chunk_id))
        except FileNotFoundError:
            pass


def _check_header(chunk_id: int, view: memoryview, path: Path) -> tuple[int, int]:
    def corrupt(why: str) -> ChunkCorruption:
        return ChunkCorruption(chunk_id, f"chunk {chunk_id} ({path}) is corrupt: {why}")

    if len(view) < HEADER_SIZE:
        raise corrupt(f"the file has {len(view)} bytes, less than a header")
    magic, stored_id, length, crc = _HEADER.unpack_from(view)
    (header_crc,) = _HEADER_CRC.unpack_from(view, _HEADER.size)
    if magic != MAGIC or zlib.crc32(view[:_HEADER.size]) != header_crc:
        raise corrupt("its header is damaged")
    if stored_id != chunk_id:
        raise corrupt(f"the file holds chunk {stored_id}")
    if length != len(view) - HEADER_SIZE:
        raise corrupt(f"the header says {length} bytes, the file holds "
                      f"{len(view) - HEADER_SIZE}")
    return crc, length


T = TypeVar("T")


class _Worker:
    """One thread for one chunk's writes, which come one after another: cheaper per
    call than trio.to_thread.run_sync (no thread-cache hand-off, no renaming, no
    cancellation bookkeeping), which showed in profiles at a call per frame."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self.closed = False
        threading.Thread(target=self._work, name="chunk writer", daemon=True).start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, task = job
            result = outcome.capture(fn, *args)
            self._token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the thread; not cancellable once started (a write must finish)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._jobs.put((fn, args, trio.lowlevel.current_task()))
        result: T = await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def close(self) -> None:
        """The thread ends after what it was given (nothing: every run() was awaited)."""
        if not self.closed:
            self.closed = True
            self._jobs.put(None)


class ChunkWriter:
    """One chunk being stored: `write` its bytes in order, then `commit` (or `discard`)."""

    def __init__(self, store: ChunkStore, chunk_id: int, length: int, checksum: str, crc: int):
        self.store = store
        self.chunk_id = chunk_id
        self.length = length
        self.checksum = checksum
        self._expected_crc = crc
        self.final = store.path_of(chunk_id)
        self.temp = self.final.with_name(f"{chunk_name(chunk_id)}.{secrets.token_hex(4)}.tmp")
        self.crc = Crc32()
        self._fd: int | None = None
        self.committed = False
        self.discarded = False
        self._worker = _Worker()

    def _open(self) -> None:
        self._fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           0o644)
        _write_all(self._fd, encode_header(self.chunk_id, self.length, self._expected_crc))

    async def write(self, data: memoryview) -> None:
        """The next bytes of the chunk; checksummed and written in a worker thread."""
        await self._run(self._write, data)

    async def _run(self, fn: Callable[[], None] | Callable[[memoryview], None],
                   *args: Any) -> None:
        if self._worker.closed:
            await trio.to_thread.run_sync(fn, *args)
        else:
            await self._worker.run(fn, *args)

    def _write(self, data: memoryview) -> None:
        if self.crc.length + len(data) > self.length:
            raise ValueError(f"chunk {self.chunk_id}: more than the announced {self.length} "
                             f"bytes")
        assert self._fd is not None
        self.crc.update(data)
        _write_all(self._fd, data)

    async def commit(self) -> None:
        """Check the length and checksum (ChecksumMismatch or ValueError, leaving nothing
        behind), then make the chunk durable under its name."""
        try:
            await self._run(self._commit)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.discard()
            raise
        self._worker.close()
        self.store._committed(self.chunk_id, self.length)

    def _commit(self) -> None:
        if self.crc.length != self.length:
            raise ValueError(f"chunk {self.chunk_id}: {self.crc.length} bytes arrived of the "
                             f"announced {self.length}")
        if self.crc.value != self._expected_crc:
            raise ChecksumMismatch(f"chunk {self.chunk_id}: the bytes received have checksum "
                                   f"{self.crc.hexdigest()}, the put said {self.checksum}")
        fd = self._fd
        assert fd is not None
        os.fsync(fd)
        self._fd = None
        os.close(fd)
        os.rename(self.temp, self.final)
        self.committed = True
        _fsync_dir(self.final.parent)

    async def discard(self) -> None:
        """Remove what was written: the temp file, or the chunk if it was committed (for a
        put that failed further down its pipeline)."""
        if self.discarded:
            await trio.lowlevel.checkpoint()
            return
        self.discarded = True
        committed = self.committed
        try:
            await self._run(self._discard)
        finally:
            self._worker.close()
        if committed:
            self.store._forget(self.chunk_id)

    def _discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        try:
            os.unlink(self.final if self.committed else self.temp)
        except FileNotFoundError:
            pass


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_durably(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    _fsync_dir(path.parent)
