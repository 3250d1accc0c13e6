"""The disk writer: appends what the core wants durable to the WAL, one fsync per batch.

Everything queued while the previous write and fsync ran goes into the next
one (group commit). Only then are the messages that claimed durability
(vote grants, append acknowledgements) released, and the node loop told how
far the log is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from raft_trio.core import Entry, HardState, Message, SnapshotRef
from raft_trio.server.inbox import DURABLE
from raft_trio.server.replication import Replication
from raft_trio.server.state import MemberState
from raft_trio.storage import WAL
from raft_trio.syncthread import SyncThread

log = logging.getLogger("raft_trio.server")


@dataclass(slots=True)
class DiskJob:
    hard_state: HardState | None
    entries: list[Entry]
    messages: list[Message]
    # The log now starts after this snapshot (installed from the leader).
    snapshot: SnapshotRef | None = None
    # Delete the WAL segments holding nothing after this index.
    compact_upto: int = 0


# What one WAL append holds, and a prefix of its entries already packed.
_Write = tuple[SnapshotRef | None, HardState | None, list[Entry], list[bytes]]


class DiskWriter:
    def __init__(self, member: MemberState, replication: Replication):
        self.member = member
        self.replication = replication

    async def run(self, jobs: trio.MemoryReceiveChannel[DiskJob]) -> None:
        wal = self.member.wal
        assert wal is not None
        syncer = SyncThread(f"raft-trio wal {self.member.id}")
        try:
            await self._write_jobs(wal, syncer, jobs)
        finally:
            with trio.CancelScope(shield=True):
                await syncer.stop()

    async def _write_jobs(
        self, wal: WAL, syncer: SyncThread, jobs: trio.MemoryReceiveChannel[DiskJob]
    ) -> None:
        member = self.member
        async for job in jobs:
            batch = [job]
            while True:
                try:
                    batch.append(jobs.receive_nowait())
                except trio.WouldBlock:
                    break
            writes: list[_Write] = []
            hard_state: HardState | None = None
            entries: list[Entry] = []
            marker: SnapshotRef | None = None
            compact_upto = 0
            for queued in batch:
                if queued.snapshot is not None:
                    # Everything queued before the marker is written before it.
                    if marker is not None or hard_state is not None or entries:
                        writes.append(self._write(marker, hard_state, entries))
                        hard_state, entries = None, []
                    marker = queued.snapshot
                if queued.hard_state is not None:
                    hard_state = queued.hard_state
                if queued.entries:
                    _merge_entries(entries, queued.entries)
                compact_upto = max(compact_upto, queued.compact_upto)
            if marker is not None or hard_state is not None or entries:
                writes.append(self._write(marker, hard_state, entries))
            if writes:
                await syncer.run(_write_and_sync, wal, writes)
                member.counters["fsyncs"] += 1
            if compact_upto:
                freed = await syncer.run(wal.compact, compact_upto)
                if freed:
                    log.debug("member %d: deleted %d bytes of log up to index %d", member.id,
                              freed, compact_upto)
            if entries:
                last = entries[-1]
                member.durable = (last.index, last.term)
                assert member.inbox is not None
                try:
                    # Never block here: the node loop may itself be waiting on us.
                    member.inbox.send_nowait(DURABLE)
                except trio.WouldBlock:
                    pass  # the loop is busy and will see member.durable on its next pass
            for queued in batch:
                self.replication.route(queued.messages)

    def _write(self, marker: SnapshotRef | None, hard_state: HardState | None,
               entries: list[Entry]) -> _Write:
        # The cache is looked up here, in trio's thread (it is not thread-safe);
        # whatever it does not hold is packed by the WAL in the writer's thread.
        return marker, hard_state, entries, self.member.packs.pieces(entries)


def _merge_entries(into: list[Entry], more: Sequence[Entry]) -> None:
    """Append `more` to `into`, letting it overwrite the overlapping tail as the WAL would."""
    if into:
        cut = more[0].index - into[0].index
        if cut < len(into):
            del into[max(cut, 0):]
    into.extend(more)


def _write_and_sync(wal: WAL, writes: list[_Write]) -> None:
    for marker, hard_state, entries, packed in writes:
        snapshot_marker = (marker.index, marker.term) if marker is not None else None
        wal.append(hard_state, entries, snapshot_marker=snapshot_marker, packed=packed)
    wal.sync()
