"""Snapshot files for one Raft member: the applied state as of some log index.

Each snapshot is one file ``snapshot-<index:020d>-<term>.snap``, laid out as::

    header   8 bytes  magic b"RTSNAP\\r\\n"
             u32      format version (big-endian), currently 1
             u32      length of the meta that follows (big-endian)
             meta     CBOR [index, term, [voter ids], sessions bytes,
                           membership bytes]
    state             whatever the state machine's snapshot() wrote
    trailer  u32      crc32 of every byte before the trailer (big-endian)
             u64      total file length, trailer included (big-endian)

A file is written under a ``.tmp`` name, fsynced, renamed into place and the
directory fsynced, so a snapshot name on disk always means a complete file;
leftover temp files are from crashes and are deleted by list_snapshots.

The whole file is checked before any of the state is handed out, because a
state machine that restored half a snapshot would silently diverge from its
peers. A damaged snapshot is reported, never skipped: the log before it may
already be gone, so falling back to an older snapshot or an empty state
could lose committed entries.

The API is synchronous and not thread-safe for one directory; the server
serialises calls and runs them in a worker thread.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cbor2

from raft_trio.storage.wal import _fsync_dir, _make_durable_dirs

__all__ = [
    "SnapshotCorruption",
    "SnapshotMeta",
    "list_snapshots",
    "open_snapshot",
    "remove_older_snapshots",
    "write_snapshot",
]

# The CR LF catches a file mangled by text-mode line-ending conversion.
MAGIC = b"RTSNAP\r\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sII")
_TRAILER = struct.Struct(">IQ")
_CHUNK = 1024 * 1024

_SNAPSHOT_RE = re.compile(r"snapshot-(\d{20})-(\d+)\.snap")
_TEMP_RE = re.compile(r"snapshot-\d{20}-\d+\.snap\.tmp")


@dataclass(frozen=True)
class SnapshotMeta:
    """What a snapshot stands for: the log up to `index` (whose term is `term`), applied."""

    index: int
    term: int
    # The configuration in force at `index`, which the compacted log no longer holds.
    voters: tuple[int, ...]
    # The client-session table (raft_trio.sessions.SessionTable.encode()), opaque
    # here; b"" in files written before sessions existed.
    sessions: bytes = b""
    # The whole configuration in force at `index` (raft_trio.core.Membership,
    # encoded): voters and learners with their addresses. b"" in files written
    # before it existed; then `voters` is all there is.
    membership: bytes = b""

    def __post_init__(self) -> None:
        if not all(type(v) is int and v >= 0 for v in (self.index, self.term)):
            raise ValueError(f"index and term must be non-negative ints: {self!r:.200}")
        if type(self.voters) is not tuple or not all(type(v) is int for v in self.voters):
            raise ValueError(f"voters must be a tuple of ints: {self.voters!r:.200}")
        if type(self.sessions) is not bytes or type(self.membership) is not bytes:
            raise ValueError("sessions and membership must be bytes")


class SnapshotCorruption(Exception):
    """A snapshot file on disk is not what write_snapshot left there."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"corrupt snapshot {path}: {reason}")
        self.path = path
        self.reason = reason


def snapshot_name(index: int, term: int) -> str:
    return f"snapshot-{index:020d}-{term}.snap"


class _CrcWriter(io.RawIOBase):
    """Passes writes through to `raw`, keeping a running crc32 and byte count.

    Sits under an io.BufferedWriter, so the many small writes a CBOR encoder
    makes are coalesced in C and only reach this Python code in large runs.
    """

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw
        self.crc = 0
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = self._raw.write(b)
        if n is None:  # only for non-blocking files, which we never open
            raise BlockingIOError("snapshot file would block")
        self.crc = zlib.crc32(memoryview(b)[:n], self.crc)
        self.count += n
        return n


class _BoundedReader(io.RawIOBase):
    """Reads `file` from `start` up to, not including, `end`; closing it closes `file`."""

    def __init__(self, file: io.FileIO, start: int, end: int) -> None:
        file.seek(start)
        self._file = file
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        got = self._file.readinto(memoryview(buffer)[:want]) or 0
        self._left -= got
        return got

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def write_snapshot(
    directory: Path, meta: SnapshotMeta, write_state: Callable[[BinaryIO], None]
) -> Path:
    """Durably write a snapshot whose state is streamed by `write_state(file)`; return its path.

    `write_state` must not close or seek the file. An existing snapshot of the
    same index and term is replaced atomically.
    """
    directory = Path(directory)
    _make_durable_dirs(directory)
    final = directory / snapshot_name(meta.index, meta.term)
    temp = final.with_name(final.name + ".tmp")
    meta_bytes = cbor2.dumps(
        [meta.index, meta.term, list(meta.voters), meta.sessions, meta.membership]
    )
    try:
        with open(temp, "wb", buffering=0) as raw:
            counted = _CrcWriter(raw)
            out = io.BufferedWriter(counted, buffer_size=_CHUNK)
            out.write(_HEADER.pack(MAGIC, FORMAT_VERSION, len(meta_bytes)))
            out.write(meta_bytes)
            write_state(out)
            out.flush()
            trailer = _TRAILER.pack(counted.crc, counted.count + _TRAILER.size)
            # Written below the CRC layer: the trailer is not part of what it covers.
            view = memoryview(trailer)
            while view:
                view = view[raw.write(view) or 0 :]
            os.fsync(raw.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return final


def list_snapshots(directory: Path) -> list[Path]:
    """Snapshot files in `directory`, newest (highest index) first; temp files are deleted.

    Only names are looked at: use open_snapshot to find out whether a file is intact.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found: list[tuple[int, int, Path]] = []
    for path in directory.iterdir():
        if _TEMP_RE.fullmatch(path.name):
            path.unlink(missing_ok=True)
        elif match := _SNAPSHOT_RE.fullmatch(path.name):
            found.append((int(match[1]), int(match[2]), path))
    found.sort(reverse=True)
    return [path for _, _, path in found]


def open_snapshot(path: Path) -> tuple[SnapshotMeta, BinaryIO]:
    """Check the whole file, then return its meta and a reader over just its state.

    The reader ends where the state ends; the caller must close it. Raises
    SnapshotCorruption, naming the file, if anything about the file is off.
    """
    path = Path(path)
    file = open(path, "rb", buffering=0)
    try:
        meta, state_start, state_end = _verify(path, file)
        reader = io.BufferedReader(_BoundedReader(file, state_start, state_end), _CHUNK)
    except BaseException:
        file.close()
        raise
    return meta, reader


def remove_older_snapshots(directory: Path, keep: int = 1) -> list[Path]:
    """Delete all but the `keep` newest snapshots; return what was deleted.

    Goes by name alone, so call it only once the newest has been written by
    write_snapshot (which makes it durable before returning).
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    directory = Path(directory)
    doomed = list_snapshots(directory)[keep:]
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        _fsync_dir(directory)
    return doomed


def _verify(path: Path, file: io.FileIO) -> tuple[SnapshotMeta, int, int]:
    size = os.fstat(file.fileno()).st_size
    head = _read_exactly(file, _HEADER.size)
    if not (head[: len(MAGIC)] == MAGIC or MAGIC.startswith(head)):
        raise SnapshotCorruption(path, "not a snapshot file (bad magic)")
    if len(head) < _HEADER.size:
        raise SnapshotCorruption(path, f"truncated: {size} bytes, shorter than the header")
    _, version, meta_len = _HEADER.unpack(head)
    if version != FORMAT_VERSION:
        raise SnapshotCorruption(path, f"unsupported format version {version}")
    state_start = _HEADER.size + meta_len
    state_end = size - _TRAILER.size
    if state_start > state_end:
        raise SnapshotCorruption(
            path, f"truncated: {size} bytes, too short for a {meta_len}-byte meta and trailer"
        )

    file.seek(state_end)
    crc_on_disk, length_on_disk = _TRAILER.unpack(_read_exactly(file, _TRAILER.size))
    if length_on_disk != size:
        raise SnapshotCorruption(
            path, f"length mismatch: trailer says {length_on_disk} bytes, file has {size}"
        )
    # Streamed in chunks so checking a large snapshot needs little memory.
    file.seek(0)
    crc = 0
    left = state_end
    buffer = bytearray(min(_CHUNK, max(left, 1)))
    view = memoryview(buffer)
    while left:
        got = file.readinto(view[: min(left, len(view))])
        if not got:
            raise SnapshotCorruption(path, "file shrank while being checked")
        crc = zlib.crc32(view[:got], crc)
        left -= got
    if crc != crc_on_disk:
        raise SnapshotCorruption(
            path, f"checksum mismatch: trailer says {crc_on_disk:#010x}, data has {crc:#010x}"
        )

    file.seek(_HEADER.size)
    try:
        index, term, voters, sessions, *rest = cbor2.loads(_read_exactly(file, meta_len))
        if len(rest) > 1:
            raise ValueError(f"{4 + len(rest)} meta fields, expected 4 or 5")
        meta = SnapshotMeta(index, term, tuple(voters), sessions, *rest)
    except Exception as exc:
        # The checksum matched, so this is a writer bug rather than damage, but
        # the file is unusable all the same.
        raise SnapshotCorruption(path, f"bad meta: {exc}") from None
    return meta, state_start, state_end


def _read_exactly(file: io.FileIO, n: int) -> bytes:
    """Up to `n` bytes, fewer only at end of file."""
    parts = []
    while n > 0:
        part = file.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
