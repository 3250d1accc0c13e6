"""Segmented, append-only write-ahead log for one Raft member.

On-disk layout: a directory of segment files ``wal-<seq:016d>.log`` with
increasing sequence numbers. Each segment is a run of records::

    u32 length (big-endian) | u32 crc32(payload) (big-endian) | payload

where the payload is CBOR, one of ``[1, packed entries]`` (a batch of
consecutive entries in the packed form of raft_trio.encoding, the same bytes
AppendEntries carries), ``[2, term, vote_or_null, commit]`` (hard state) or
``[3, index, term]`` (snapshot marker: the log was replaced by a snapshot
whose last included entry is (index, term)).

Entries are never rewritten in place: a follower that must discard a
conflicting suffix simply appends a batch whose first index is at or below
the current last index, and replay truncates before appending.

Log compaction deletes whole segments from the front (`WAL.compact`), so the
first segment present may have any sequence number and the replayed log may
start at any index. Every segment after the first begins with the hard state
current when it was created, so deleting older segments never loses it.

The API is synchronous and not thread-safe; the server serialises calls and
runs them in a worker thread so that fsync never blocks the event loop.
"""

from __future__ import annotations

import gc
import io
import operator
import os
import re
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from raft_trio.core.messages import Entry, HardState
from raft_trio.encoding import pack_entries, packed_range, packed_span, unpack_entries

__all__ = ["WAL", "WALCorruption", "WALState"]

_HEADER = struct.Struct(">II")
_HEADER_SIZE = _HEADER.size
# Far above any batch we write; a larger value can only be damage, and
# refusing it early avoids trusting a garbage length with a huge allocation.
MAX_RECORD_BYTES = 256 * 1024 * 1024

_KIND_ENTRIES = 1
_KIND_HARD_STATE = 2
_KIND_SNAPSHOT_MARKER = 3

_SEGMENT_RE = re.compile(r"wal-(\d{16})\.log")

_entry_index = operator.attrgetter("index")
_row_index = operator.itemgetter(0)


class WALCorruption(Exception):
    """The log on disk is damaged in a way a crash mid-write cannot explain."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"corrupt WAL record in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass
class WALState:
    """What replay found.

    `entries` is contiguous but may start at any index > 0: after a snapshot
    marker, or when older segments were deleted by compaction.
    `snapshot_marker` is the last marker replayed, as (index, term).
    """

    hard_state: HardState = field(default_factory=lambda: HardState(0, None, 0))
    entries: list[Entry] = field(default_factory=list)
    snapshot_marker: tuple[int, int] | None = None


@dataclass
class _Segment:
    """An older (not current) segment: how big it is and the highest index it mentions."""

    seq: int
    size: int
    max_index: int


def _segment_name(seq: int) -> str:
    return f"wal-{seq:016d}.log"


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _hard_state_record(hard_state: HardState) -> bytes:
    term, vote, commit = hard_state
    return _frame(cbor2.dumps([_KIND_HARD_STATE, term, vote, commit]))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_durable_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing the parent of every level created so none vanishes in a crash."""
    missing = []
    path = directory.absolute()
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync_dir(new.parent)


def _all_zero(data: bytes, start: int) -> bool:
    return data.count(0, start) == len(data) - start


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while any replay runs.

    The switch is process-wide and members of one process may replay at the
    same time in worker threads, so the pauses are counted: only the last
    one to finish restores what the first one found.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


class _Replayer:
    """Applies records to the effective state, segment by segment, in order.

    Replay is the one place where per-record Python overhead adds up to
    seconds (a million single-entry appends is two million records), so the
    loop is a single flat pass with no calls beyond the unavoidable ones.

    The log held is `entries`, preceded by `offset` (the index just before
    the first entry held) whose term is `offset_term` when known. While
    `unanchored` (older segments were deleted and neither an entries record
    nor a marker has yet told us where the log stands), the first entries
    record may start anywhere.
    """

    def __init__(self, first_seq: int = 1) -> None:
        self.hard_state = HardState(0, None, 0)
        self.saw_hard_state = False
        self.entries: list[Entry] = []
        self.offset = 0
        self.offset_term: int | None = 0
        self.snapshot_marker: tuple[int, int] | None = None
        # Segment 1 present means nothing was ever deleted, so the log must
        # start at index 1 (or right after a marker).
        self.unanchored = first_seq != 1

    def replay_segment(self, path: Path, data: bytes, is_last: bool) -> tuple[int, int]:
        """Apply every good record in `data`.

        Return the offset where good data ends and the highest entry or
        marker index any good record carries (0 if none). Only in the last
        segment may the good data end short of the end of the file, and only
        when what follows looks like an interrupted write.
        """
        size = len(data)
        last_header_at = size - _HEADER_SIZE
        unpack = _HEADER.unpack_from
        crc32 = zlib.crc32
        loads = cbor2.loads
        entries = self.entries
        extend = entries.extend
        clear = entries.clear
        offset = self.offset
        offset_term = self.offset_term
        unanchored = self.unanchored
        marker = self.snapshot_marker
        last = offset + len(entries)  # the log is contiguous
        top = 0
        hard_state: Any = None
        off = 0
        problem: str | None = None
        try:
            while off <= last_header_at:
                length, crc = unpack(data, off)
                start = off + _HEADER_SIZE
                end = start + length
                if not 0 < length <= MAX_RECORD_BYTES:
                    problem = f"bad record length {length}"
                    break
                if end > size:
                    problem = f"record runs past end of file ({size - off} bytes left)"
                    break
                payload = data[start:end]
                if crc32(payload) != crc:
                    problem = "crc mismatch"
                    break
                # The record is now exactly what we wrote, so from here on
                # any problem is a bug or tampering, never a torn write.
                record = loads(payload)
                kind = record[0]
                if kind == _KIND_ENTRIES:
                    # unpack_entries guarantees consecutive indexes from >= 1.
                    batch = unpack_entries(record[1])
                    if not batch:
                        raise _BadRecord("empty entries record")
                    first = batch[0].index
                    if first > last + 1:
                        if entries or not unanchored:
                            raise _BadRecord(
                                f"gap: entries record starts at index {first} "
                                f"but log ends at {last}"
                            )
                        # What preceded it was in deleted segments.
                        offset = first - 1
                        offset_term = None
                    elif first <= last:
                        if first <= offset:
                            # Rewrites indexes whose earlier copies were in
                            # deleted segments (or before a marker).
                            clear()
                            offset = first - 1
                            offset_term = None
                        else:
                            del entries[first - offset - 1 :]
                    extend(batch)
                    last = first + len(batch) - 1
                    if last > top:
                        top = last
                elif kind == _KIND_HARD_STATE and len(record) == 4:
                    hard_state = record
                elif kind == _KIND_SNAPSHOT_MARKER and len(record) == 3:
                    index = record[1]
                    term = record[2]
                    if type(index) is not int or type(term) is not int or index < 1 or term < 0:
                        raise _BadRecord(f"bad snapshot marker {record!r:.60}")
                    marker = (index, term)
                    if index > top:
                        top = index
                    if entries:
                        # Entries held so far are known from their first onward.
                        unanchored = False
                    if offset < index <= last:
                        if entries[index - offset - 1].term == term:
                            del entries[: index - offset]
                        else:
                            clear()
                        offset = index
                        offset_term = term
                    elif index > last:
                        clear()
                        offset = index
                        offset_term = term
                    elif index == offset:
                        if offset_term is not None and offset_term != term:
                            clear()
                        offset_term = term
                    # Otherwise the index is below the first one held: that
                    # entry was in a deleted segment or an earlier snapshot,
                    # hence committed, so the snapshot matches it; keep all.
                    last = offset + len(entries)
                else:
                    raise _BadRecord(f"unknown record {record!r:.60}")
                off = end
            else:
                if off < size:
                    problem = "short record header"
        except Exception as exc:
            reason = str(exc) if isinstance(exc, _BadRecord) else f"malformed record: {exc!r}"
            raise WALCorruption(path, off, reason) from None
        self.offset = offset
        self.offset_term = offset_term
        self.unanchored = unanchored
        self.snapshot_marker = marker
        if hard_state is not None:
            self.hard_state = HardState(hard_state[1], hard_state[2], hard_state[3])
            self.saw_hard_state = True

        if problem is not None and not (is_last and _looks_torn(data, off)):
            raise WALCorruption(path, off, problem)
        return off, top


class _BadRecord(Exception):
    pass


def _looks_torn(data: bytes, off: int) -> bool:
    """Whether a framing failure at `off` in the last segment is an interrupted write.

    A crash can leave a prefix of the final write, possibly followed by zeros
    (file size persisted before the data blocks). It cannot leave a bad
    record followed by real data, so that is corruption: truncating there
    would discard records that may already have been acknowledged.
    """
    size = len(data)
    if size - off < _HEADER_SIZE or _all_zero(data, off):
        return True
    length, crc = _HEADER.unpack_from(data, off)
    end = off + _HEADER_SIZE + length
    if 0 < length and end <= size:
        return _all_zero(data, end)
    if length == 0:
        # Nothing was written with length 0, so the header is garbage; only
        # the remaining bytes being zero (checked above) would make this a tail.
        return False
    # The declared record runs past EOF. Usually the write was cut short, but
    # a damaged length field over an intact record looks the same; the
    # payload's own CBOR framing tells the two apart.
    return not _intact_payload_under_bad_length(data, off + _HEADER_SIZE, crc)


def _intact_payload_under_bad_length(data: bytes, start: int, crc: int) -> bool:
    fp = io.BytesIO(memoryview(data)[start:])
    try:
        cbor2.CBORDecoder(fp, read_size=1).decode()
    except Exception:
        return False
    consumed = fp.tell()
    return consumed > 0 and zlib.crc32(memoryview(data)[start : start + consumed]) == crc


class WAL:
    """Handle on an open log; obtain one with `WAL.open`."""

    def __init__(
        self,
        directory: Path,
        segment_bytes: int,
        seq: int,
        fd: int,
        current_size: int,
        older: Sequence[_Segment] = (),
        current_max_index: int = 0,
        hard_state: HardState | None = None,
    ) -> None:
        self._dir = directory
        self._segment_bytes = segment_bytes
        self._seq = seq
        self._fd: int | None = fd
        self._size = current_size
        self._older: deque[_Segment] = deque(older)
        self._older_bytes = sum(segment.size for segment in self._older)
        self._max_index = current_max_index
        # Written first into every new segment, so that compaction can
        # delete any older segment without losing term and vote.
        self._hard_state = hard_state
        self._dirty = False
        # After a failed write or fsync the kernel may have dropped dirty
        # pages while reporting success later, so the only safe reaction is
        # to refuse all further I/O and let the member restart and replay.
        self._failed: BaseException | None = None

    @classmethod
    def open(cls, directory: Path, segment_bytes: int = 64 * 1024 * 1024) -> tuple[WAL, WALState]:
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        directory = Path(directory)
        _make_durable_dirs(directory)

        segments = _list_segments(directory)
        replayer = _Replayer(segments[0][0] if segments else 1)
        older: list[_Segment] = []
        last_size = 0
        last_max_index = 0
        # Replay creates millions of container objects that all survive;
        # the cyclic GC would rescan them over and over for nothing.
        with _gc_paused():
            for i, (seq, path) in enumerate(segments):
                if i > 0 and seq != segments[i - 1][0] + 1:
                    raise WALCorruption(
                        path, 0, f"segment sequence gap: previous segment is {segments[i - 1][1]}"
                    )
                is_last = i == len(segments) - 1
                data = path.read_bytes()
                good_end, max_index = replayer.replay_segment(path, data, is_last)
                if good_end < len(data):
                    _truncate(path, good_end)
                if not is_last:
                    older.append(_Segment(seq, good_end, max_index))
                else:
                    last_size = good_end
                    last_max_index = max_index

        if segments:
            seq, path = segments[-1]
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                # A previous process may have died before syncing its last
                # writes; they are still in the page cache and were just
                # replayed. Make them durable before anyone acts on them.
                os.fdatasync(fd)
            except BaseException:
                os.close(fd)
                raise
        else:
            seq, last_size = 1, 0
            fd = os.open(
                directory / _segment_name(seq),
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o644,
            )
            try:
                _fsync_dir(directory)
            except BaseException:
                os.close(fd)
                raise

        wal = cls(
            directory,
            segment_bytes,
            seq,
            fd,
            last_size,
            older,
            last_max_index,
            replayer.hard_state if replayer.saw_hard_state else None,
        )
        state = WALState(replayer.hard_state, replayer.entries, replayer.snapshot_marker)
        return wal, state

    def encode(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot_marker: tuple[int, int] | None = None,
        packed: Sequence[bytes] | None = None,
    ) -> bytes:
        """Serialise one append into record bytes for `write`.

        The snapshot marker (index, term of the snapshot's last entry) goes
        first, since entries appended with it continue after the snapshot.
        Entries go before the hard state, so a torn write can lose the
        commit index update but never leave commit pointing past the log.
        `packed` may hold a prefix of `entries` already packed, in consecutive
        batches (from PackCache.pieces): each is written as its own record,
        and only the entries after them are packed here.
        """
        parts: list[bytes] = []
        if snapshot_marker is not None:
            index, term = snapshot_marker
            if type(index) is not int or type(term) is not int or index < 1 or term < 0:
                raise ValueError(f"bad snapshot marker {snapshot_marker!r}")
            parts.append(_frame(cbor2.dumps([_KIND_SNAPSHOT_MARKER, index, term])))
        if entries:
            if entries[0].index < 1:
                raise ValueError("entry indices start at 1")
            blobs = list(packed) if packed else []
            covered = _check_pieces(entries, blobs)
            if covered < len(entries):
                # pack_entries refuses a batch that is not consecutive.
                blobs.append(pack_entries(entries[covered:]))
            parts.extend(_frame(cbor2.dumps([_KIND_ENTRIES, blob])) for blob in blobs)
        if hard_state is not None:
            parts.append(_hard_state_record(hard_state))
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        """Append whole records (from `encode`) to the current segment, without fsync."""
        if not data:
            return
        self._check_usable()
        # Before any I/O, so that bytes that are not whole records are refused
        # without damaging the log.
        hard_state, max_index = _scan_records(data)
        try:
            if self._size >= self._segment_bytes:
                self._rotate()
            self._write_all(data)
        except BaseException as exc:
            self._failed = exc
            raise
        if max_index > self._max_index:
            self._max_index = max_index
        if hard_state is not None:
            self._hard_state = hard_state

    def sync(self) -> None:
        self._check_usable()
        if not self._dirty:
            return
        assert self._fd is not None
        try:
            os.fdatasync(self._fd)
        except BaseException as exc:
            self._failed = exc
            raise
        self._dirty = False

    def append(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot_marker: tuple[int, int] | None = None,
        packed: Sequence[bytes] | None = None,
    ) -> None:
        self.write(self.encode(hard_state, entries, snapshot_marker, packed))

    def compact(self, upto: int) -> int:
        """Delete the oldest segments that hold nothing above index `upto`; return bytes freed.

        Only a prefix of the older segments goes: deletion stops at the first
        segment mentioning a higher index, and the current segment always
        stays. Call it once a snapshot covering `upto` is durable. A failed
        delete raises but leaves the log usable, since what remains is still
        a consecutive run of segments.
        """
        self._check_usable()
        freed = 0
        older = self._older
        while older and older[0].max_index <= upto:
            segment = older[0]
            os.unlink(self._dir / _segment_name(segment.seq))
            older.popleft()
            self._older_bytes -= segment.size
            freed += segment.size
            # Make each deletion durable before the next: a crash must leave
            # a prefix deleted, never a hole (open refuses a sequence gap).
            _fsync_dir(self._dir)
        return freed

    def close(self) -> None:
        """Sync anything outstanding (unless the log has failed) and release the file."""
        if self._fd is None:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def bytes_on_disk(self) -> int:
        return self._older_bytes + self._size

    def directory(self) -> Path:
        return self._dir

    def _check_usable(self) -> None:
        if self._fd is None:
            raise ValueError("WAL is closed")
        if self._failed is not None:
            raise OSError(f"WAL in {self._dir} failed earlier and is unusable") from self._failed

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written
            self._dirty = True

    def _rotate(self) -> None:
        assert self._fd is not None
        # The old segment must be durable before any record lands in the new
        # one: replay treats only the last segment's tail as possibly torn.
        if self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False
        next_seq = self._seq + 1
        new_fd = os.open(
            self._dir / _segment_name(next_seq),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o644,
        )
        os.close(self._fd)
        self._fd = new_fd
        self._older.append(_Segment(self._seq, self._size, self._max_index))
        self._seq = next_seq
        self._older_bytes += self._size
        self._size = 0
        self._max_index = 0
        _fsync_dir(self._dir)
        if self._hard_state is not None:
            self._write_all(_hard_state_record(self._hard_state))


def _check_pieces(entries: Sequence[Entry], packed: Sequence[bytes]) -> int:
    """How many of `entries` the packed batches hold, refusing batches that are not
    consecutive from the first entry on or whose last terms differ from those
    entries' (from the batches' headers: what they hold besides is the caller's word)."""
    base = entries[0].index
    covered = 0
    for blob in packed:
        first, count, last_term = packed_span(blob)
        if first != base + covered or covered + count > len(entries):
            raise ValueError(f"packed batch of {count} from index {first} does not continue "
                             f"{len(entries)} entries from index {base} at index "
                             f"{base + covered}")
        covered += count
        if entries[covered - 1].term != last_term:
            raise ValueError(f"packed batch ending at index {base + covered - 1} has term "
                             f"{last_term}, the entry term {entries[covered - 1].term}")
    return covered


def _scan_records(data: bytes) -> tuple[HardState | None, int]:
    """The last hard state in `data` (whole records from `encode`) and the highest index in it.

    Looks only at record headers and the first bytes of each payload, except
    for the last hard state and any marker records, which are small; raises
    ValueError for bytes that are not whole records.
    """
    size = len(data)
    last_hard_state = -1  # offset of the last hard state record's payload
    top = 0
    off = 0
    while off < size:
        if size - off < _HEADER_SIZE:
            raise ValueError(f"not whole WAL records: short header at offset {off}")
        length = _HEADER.unpack_from(data, off)[0]
        start = off + _HEADER_SIZE
        end = start + length
        if length < 2 or end > size:
            raise ValueError(f"not whole WAL records: bad length {length} at offset {off}")
        # Every payload is a short CBOR array whose first item is the kind.
        kind = data[start + 1]
        if kind == _KIND_ENTRIES:
            # [1, bytes]: 0x82 0x01, then the byte string head, then the batch.
            head = data[start + 2]
            extra = head & 0x1F
            skip = 1 + (0 if extra < 24 else 1 << (extra - 24))
            first, count = packed_range(data, start + 2 + skip)
            if first + count - 1 > top:
                top = first + count - 1
        elif kind == _KIND_HARD_STATE:
            last_hard_state = start
        elif kind == _KIND_SNAPSHOT_MARKER:
            index = cbor2.loads(data[start:end])[1]
            if index > top:
                top = index
        else:
            raise ValueError(f"not whole WAL records: unknown record kind at offset {off}")
        off = end
    if last_hard_state < 0:
        return None, top
    length = _HEADER.unpack_from(data, last_hard_state - _HEADER_SIZE)[0]
    record = cbor2.loads(data[last_hard_state : last_hard_state + length])
    return HardState(record[1], record[2], record[3]), top


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    segments = []
    for name in os.listdir(directory):
        m = _SEGMENT_RE.fullmatch(name)
        if m is not None:
            segments.append((int(m.group(1)), directory / name))
    segments.sort()
    return segments


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
