"""Snapshots: this member's own (taken, written while applying goes on, loaded at
start) and the leader's (received chunk by chunk, then restored).

Every file in `snapshots/` is created or deleted under one lock, so a
snapshot being received never races one being written or pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import BinaryIO

import cbor2
import trio

from raft_trio.core import Entry, InstallSnapshot, SnapshotRef
from raft_trio.errors import RaftError
from raft_trio.server.entry_codec import data_of
from raft_trio.server.inbox import SnapshotTaken
from raft_trio.server.replication import Replication
from raft_trio.server.state import MemberState
from raft_trio.sessions import SessionTable
from raft_trio.storage import (
    IncomingSnapshot,
    SnapshotCorruption,
    SnapshotMeta,
    list_snapshots,
    open_snapshot,
    remove_older_snapshots,
    remove_partial_snapshots,
    snapshot_name,
    write_snapshot,
)
from raft_trio.transport import CodecError
from raft_trio.transport.chunks import SnapshotAck, SnapshotChunk

log = logging.getLogger("raft_trio.server")


class Snapshots:
    """This member's snapshots of its own state, and restoring the leader's."""

    def __init__(self, member: MemberState):
        self.member = member
        # Serialises everything that creates or deletes snapshot files.
        self.files_lock = trio.Lock()
        self.writing = False
        self.restoring = False
        # Set (and replaced) whenever a write or a restore ends.
        self.changed = trio.Event()
        # Command bytes applied since the last snapshot.
        self._applied_bytes = 0

    def load(self) -> SnapshotRef | None:
        """Restore the state machine from the newest snapshot on disk, if any (in a thread,
        at start).

        A damaged newest snapshot stops the member: the log it replaced may
        be gone, so an older snapshot or an empty state could lose entries.
        """
        member = self.member
        remove_partial_snapshots(member.snapshot_dir)
        paths = list_snapshots(member.snapshot_dir)
        if not paths:
            return None
        restore = getattr(member.state_machine, "restore", None)
        if restore is None:
            raise RaftError(f"member {member.id}: {paths[0]} exists but the state machine "
                            f"cannot restore snapshots")
        meta, reader = open_snapshot(paths[0])
        with reader:
            try:
                sessions = SessionTable.decode(meta.sessions)
            except ValueError as exc:
                raise SnapshotCorruption(paths[0], str(exc)) from None
            try:
                restore(reader)
            except ValueError as exc:
                raise SnapshotCorruption(paths[0], f"the state machine refused it: {exc}") from None
        member.sessions = sessions
        member.note_snapshot(meta, paths[0])
        log.info("member %d: restored the snapshot at index %d from %s", member.id, meta.index,
                 paths[0])
        return SnapshotRef(meta.index, meta.term)

    @property
    def can_take(self) -> bool:
        return callable(getattr(self.member.state_machine, "snapshot", None))

    def due(self, entries: Sequence[Entry]) -> bool:
        """Whether, with `entries` just applied, the policy calls for a snapshot now."""
        # Counted while a snapshot is being written too: they are not in it.
        self._applied_bytes += sum(map(len, map(data_of, entries)))
        if self.writing:
            return False
        policy = self.member.snapshots
        covered = self.member.snapshot_meta.index if self.member.snapshot_meta else 0
        return bool((policy.entries and entries[-1].index - covered >= policy.entries)
                    or (policy.bytes and self._applied_bytes >= policy.bytes))

    async def take(self) -> int:
        """Snapshot the state as applied now, unless the newest snapshot already
        covers it; returns the index the newest snapshot stands for once it is durable."""
        member = self.member
        member.check_running()
        if not self.can_take:
            raise RaftError("this member's state machine cannot take snapshots")
        while True:
            await self._wait_idle()
            covered = member.snapshot_meta.index if member.snapshot_meta else 0
            if member.last_applied <= covered:
                return covered
            target = member.last_applied
            await self.start()
            await self._wait_idle()
            if member.snapshot_meta is not None and member.snapshot_meta.index >= target:
                return member.snapshot_meta.index
            # The write failed (it was logged): say so rather than loop.
            raise RaftError(f"member {member.id}: the snapshot at index {target} failed; see "
                            f"its log")

    async def _wait_idle(self) -> None:
        while self.restoring or self.writing:
            self.member.check_running()
            await self.changed.wait()
        self.member.check_running()

    def _done(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def start(self) -> None:
        """Snapshot the state as applied right now (call between applies).

        With `capture_snapshot` the state is captured here and written by a
        task of its own; without it, applying waits while it is written.
        """
        member = self.member
        sm = member.state_machine
        assert member.node is not None
        membership = member.node.membership_at(member.last_applied)
        try:
            # The sessions are part of the replicated state: captured at the same
            # applied index as the state machine's.
            sessions = member.sessions.encode()
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            # Results must be CBOR (see StateMachine); a session holding one that
            # is not cannot be put in a snapshot, but applying goes on.
            self._applied_bytes = 0
            log.error("member %d: no snapshot at index %d: a client session holds a result "
                      "that cannot be encoded as CBOR: %s", member.id, member.last_applied, exc)
            return
        meta = SnapshotMeta(member.last_applied, member.applied_term, tuple(membership.voters),
                            sessions=sessions, membership=membership.encode())
        capture = getattr(sm, "capture_snapshot", None)
        self.writing = True
        self._applied_bytes = 0
        if capture is not None and member.nursery is not None:
            member.nursery.start_soon(self._write, meta, capture())
        else:
            await self._write(meta, sm.snapshot)  # type: ignore[attr-defined]

    async def _write(self, meta: SnapshotMeta, write_state: Callable[[BinaryIO], None]) -> None:
        member = self.member
        try:
            async with self.files_lock:
                started = trio.current_time()
                path = await trio.to_thread.run_sync(
                    write_snapshot, member.snapshot_dir, meta, write_state
                )
                await trio.to_thread.run_sync(remove_older_snapshots, member.snapshot_dir)
                member.note_snapshot(meta, path)
            log.info("member %d: snapshot at index %d written in %.2fs (%d bytes)", member.id,
                     meta.index, trio.current_time() - started, member.snapshot_size)
            if member.inbox is not None and member.snapshot_meta is not None:
                await member.inbox.send(SnapshotTaken(member.snapshot_meta))
        except OSError as exc:
            log.error("member %d: writing the snapshot at index %d failed: %s", member.id,
                      meta.index, exc)
        finally:
            self.writing = False
            self._done()

    async def restore(self, ref: SnapshotRef) -> None:
        """Replace the state with the snapshot the leader sent, already durable on disk."""
        member = self.member
        path = member.snapshot_dir / snapshot_name(ref.index, ref.term)
        restore = getattr(member.state_machine, "restore", None)
        assert restore is not None, "only a state machine with snapshots gets one installed"
        self.restoring = True
        try:
            def load() -> tuple[SnapshotMeta, SessionTable]:
                meta, reader = open_snapshot(path)
                with reader:
                    sessions = SessionTable.decode(meta.sessions)
                    restore(reader)
                return meta, sessions

            # A failure here leaves the state behind the log: nothing safe is
            # left to do but stop the member, and a restart loads the file again.
            meta, member.sessions = await trio.to_thread.run_sync(load)
        finally:
            self.restoring = False
            self._done()
        self._applied_bytes = 0
        member.counters["snapshots_installed"] += 1
        member.note_snapshot(meta, path)
        log.info("member %d: installed the leader's snapshot at index %d", member.id, ref.index)
        member.applied(ref.index, ref.term)


class SnapshotReceiver:
    """A follower's side of a snapshot the leader streams: chunks into a `.part` file,
    checked and renamed once whole, and only then handed to the core."""

    def __init__(self, member: MemberState, snapshots: Snapshots, replication: Replication):
        self.member = member
        self.snapshots = snapshots
        self.replication = replication
        self._incoming: IncomingSnapshot | None = None
        self._incoming_from = 0

    async def receive(self, chunk: SnapshotChunk) -> None:
        """Store a chunk of the leader's snapshot; step the core in once all has arrived."""
        member = self.member
        node = member.node
        assert node is not None
        if chunk.term < node.term:
            return  # from a deposed leader
        incoming = self._incoming
        key = (chunk.src, chunk.index, chunk.snapshot_term, chunk.total)
        if incoming is None or (self._incoming_from, incoming.index, incoming.term,
                                incoming.total) != key:
            if incoming is not None:
                self._incoming = None
                await trio.to_thread.run_sync(incoming.discard)
            if chunk.offset != 0:
                self.ack(chunk, 0, accepted=False)
                return
            incoming = await trio.to_thread.run_sync(
                IncomingSnapshot, member.snapshot_dir, chunk.index, chunk.snapshot_term,
                chunk.total
            )
            self._incoming, self._incoming_from = incoming, chunk.src
        if chunk.offset > incoming.received:
            self.ack(chunk, incoming.received, accepted=False)
            return
        member.counters["snapshot_bytes_received"] += len(chunk.data)
        try:
            await trio.to_thread.run_sync(incoming.write, chunk.offset, chunk.data)
        except ValueError as exc:
            self._incoming = None
            await trio.to_thread.run_sync(incoming.discard)
            raise CodecError(f"bad snapshot chunk: {exc}") from None
        self.ack(chunk, incoming.received, accepted=True)
        if not incoming.complete:
            return
        self._incoming = None
        try:
            async with self.snapshots.files_lock:
                await trio.to_thread.run_sync(incoming.finish)
                await trio.to_thread.run_sync(remove_older_snapshots, member.snapshot_dir, 2)
        except SnapshotCorruption as exc:
            log.error("member %d: the snapshot from %d is damaged, asking again: %s", member.id,
                      chunk.src, exc)
            self.ack(chunk, 0, accepted=False)
            return
        log.info("member %d: received the snapshot at index %d from %d (%d bytes)", member.id,
                 chunk.index, chunk.src, chunk.total)
        inbox = member.inbox
        assert inbox is not None
        membership = incoming.meta.membership if incoming.meta is not None else b""
        await inbox.send(InstallSnapshot(chunk.term, chunk.src, member.id, chunk.index,
                                         chunk.snapshot_term, membership))

    def ack(self, chunk: SnapshotChunk, received: int, *, accepted: bool) -> None:
        self.replication.route([SnapshotAck(chunk.term, self.member.id, chunk.src, chunk.index,
                                            chunk.snapshot_term, received, accepted)])

    async def discard(self) -> None:
        """Drop a transfer cut short by shutdown (its `.part` file)."""
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            await trio.to_thread.run_sync(incoming.discard)

