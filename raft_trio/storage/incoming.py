"""A snapshot file arriving from the leader, chunk by chunk.

The bytes land in ``incoming-<index>-<term>.part`` beside the member's own
snapshots; only when all of them are there is the file synced, checked
(the same check a restart makes) and renamed to its snapshot name. A
partial file never looks like a snapshot, so a crash mid-transfer leaves
nothing a restart could mistake for one; leftovers are deleted on start.

Synchronous, like the rest of storage: the server runs these in a worker
thread and feeds one transfer at a time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from raft_trio.storage.snapshot import (
    SnapshotCorruption,
    SnapshotMeta,
    open_snapshot,
    snapshot_name,
)
from raft_trio.storage.wal import _fsync_dir, _make_durable_dirs

__all__ = ["IncomingSnapshot", "remove_partial_snapshots"]

_PARTIAL_RE = re.compile(r"incoming-\d+-\d+\.part")


class IncomingSnapshot:
    def __init__(self, directory: Path, index: int, term: int, total: int) -> None:
        if total <= 0:
            raise ValueError(f"a snapshot of {total} bytes cannot be right")
        _make_durable_dirs(directory)
        self.directory = directory
        self.index = index
        self.term = term
        self.total = total
        self.path = directory / f"incoming-{index}-{term}.part"
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
        )
        self.received = 0
        # What the file says of itself, once finish() has checked it.
        self.meta: SnapshotMeta | None = None

    def write(self, offset: int, data: bytes) -> None:
        """Store a chunk that starts at or before what has arrived; an overlap is skipped."""
        if offset > self.received:
            raise ValueError(f"chunk at {offset} leaves a hole after {self.received} bytes")
        end = offset + len(data)
        if end > self.total:
            raise ValueError(f"chunk ends at {end}, past the announced size {self.total}")
        if end <= self.received:
            return
        assert self._fd is not None
        view = memoryview(data)[self.received - offset :]
        while view:
            written = os.pwrite(self._fd, view, self.received)
            view = view[written:]
            self.received += written

    @property
    def complete(self) -> bool:
        return self.received == self.total

    def finish(self) -> Path:
        """Make the file durable under its snapshot name, once it passes the full check."""
        if not self.complete:
            raise ValueError(f"only {self.received} of {self.total} bytes have arrived")
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        try:
            meta, reader = open_snapshot(self.path)
            reader.close()
            if (meta.index, meta.term) != (self.index, self.term):
                raise SnapshotCorruption(
                    self.path,
                    f"holds the snapshot at ({meta.index}, {meta.term}), "
                    f"announced as ({self.index}, {self.term})",
                )
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        self.meta = meta
        final = self.directory / snapshot_name(self.index, self.term)
        os.replace(self.path, final)
        _fsync_dir(self.directory)
        return final

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


def remove_partial_snapshots(directory: Path) -> None:
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if _PARTIAL_RE.fullmatch(path.name):
            path.unlink(missing_ok=True)
