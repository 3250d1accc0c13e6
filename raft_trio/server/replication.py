"""One replicator task per peer: it owns the connection to that peer and sends what the
core addressed to it, streaming our snapshot file when the core asks for one.

A dead or slow peer never blocks the others: while its replicator is not
connected, what is routed to it is dropped (Raft retransmits whatever
matters), and a send that stalls drops the connection and makes a new one.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cbor2
import trio

from raft_trio.core import AppendEntries, InstallSnapshot, Message, Role
from raft_trio.protocol import HELLO_PEER, parse_address
from raft_trio.server.inbox import SnapshotFailed
from raft_trio.server.options import MAX_OUTBOX
from raft_trio.server.state import MemberState
from raft_trio.transport import encode_message, send_frames
from raft_trio.transport.chunks import SnapshotAck, SnapshotChunk

log = logging.getLogger("raft_trio.server")


@dataclass(slots=True)
class Outbox:
    """Messages waiting for one peer's replicator."""

    queue: deque[Message | SnapshotAck] = field(default_factory=lambda: deque(maxlen=MAX_OUTBOX))
    wakeup: trio.Event = field(default_factory=trio.Event)
    connected: bool = False


class AckState:
    """What a follower acknowledged of the snapshot being streamed to it."""

    __slots__ = ("accepted", "changed", "index", "received", "term")

    def __init__(self, index: int, term: int, received: int) -> None:
        self.index = index
        self.term = term
        self.received = received
        self.accepted = True
        self.changed = trio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class SendStalled(Exception):
    """A peer stopped taking what we send: drop the connection and make a new one."""


class Replication:
    """The replicators of one member, and the routing of the core's messages to them."""

    def __init__(self, member: MemberState):
        self.member = member
        self.outboxes: dict[int, Outbox] = {}
        self._scopes: dict[int, trio.CancelScope] = {}
        # Per peer, how far the snapshot being streamed to it got.
        self._acks: dict[int, AckState] = {}

    def reset(self) -> None:
        """A new run of the member: the replicators of an earlier one are gone."""
        self.outboxes = {}
        self._scopes = {}
        self._acks = {}

    def sync(self) -> None:
        """One replicator per member of the configuration in force, and no more."""
        node, nursery = self.member.node, self.member.nursery
        assert node is not None and nursery is not None
        peers = set(node.peers)
        if node.leader_id is not None and node.leader_id != self.member.id:
            # A leader this member's configuration does not name yet (it is joining):
            # it must still be answered.
            peers.add(node.leader_id)
        for gone in [p for p in self._scopes if p not in peers]:
            self._scopes.pop(gone).cancel()
            self.outboxes.pop(gone, None)
        for peer in sorted(peers - set(self._scopes)):
            scope = trio.CancelScope()
            self._scopes[peer] = scope
            self.outboxes[peer] = Outbox()
            nursery.start_soon(self._replicator, peer, scope)

    def has_replicator(self, peer: int) -> bool:
        return peer in self._scopes

    def route(self, messages: Sequence[Message | SnapshotAck]) -> None:
        outboxes = self.outboxes
        cut = self.member.cut
        for msg in messages:
            box = outboxes.get(msg.dst)
            if box is None or not box.connected or (cut and msg.dst in cut):
                # Unreachable peer: Raft retries what matters, but a snapshot is
                # only retried once the core hears it was not sent.
                if type(msg) is InstallSnapshot:
                    self.report_snapshot_failed(msg.dst)
                continue
            box.queue.append(msg)
            box.wakeup.set()

    def report_snapshot_failed(self, peer: int) -> None:
        inbox = self.member.inbox
        if inbox is None:
            return
        try:
            inbox.send_nowait(SnapshotFailed(peer))
        except trio.WouldBlock:
            pass  # the core's own timeout retries

    def cut_off(self, peers: frozenset[int]) -> None:
        """Fault injection: drop what is queued for newly cut peers, and wake the
        snapshot transfers waiting for their acknowledgements."""
        for peer in peers - self.member.cut:
            box = self.outboxes.get(peer)
            if box is not None:
                # What was queued before the cut would otherwise still go out.
                if any(type(m) is InstallSnapshot for m in box.queue):
                    self.report_snapshot_failed(peer)
                box.queue.clear()
        self.member.cut = peers
        for peer in peers:
            acks = self._acks.get(peer)
            if acks is not None:
                acks.wake()

    def on_snapshot_ack(self, ack: SnapshotAck) -> None:
        acks = self._acks.get(ack.src)
        if acks is None or (acks.index, acks.term) != (ack.index, ack.snapshot_term):
            return
        if ack.accepted:
            acks.received = max(acks.received, ack.received)
        else:
            acks.received = ack.received
            acks.accepted = False
        acks.wake()

    # ------------------------------------------------------------ the task

    async def _replicator(self, peer: int, scope: trio.CancelScope) -> None:
        with scope:
            await self._replicate_to(peer)

    async def _replicate_to(self, peer: int) -> None:
        member = self.member
        box = self.outboxes[peer]
        hello = cbor2.dumps([HELLO_PEER, member.cluster_name, member.id, member.address])
        backoff = 0.05
        while True:
            address = member.address_of(peer)
            try:
                if not address:
                    raise OSError(f"no address known for member {peer}")
                host, port = parse_address(address)
                stream = await trio.open_tcp_stream(host, port)
            except (OSError, ValueError):
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            try:
                async with stream:
                    await send_frames(stream, [hello])
                    box.connected = True
                    log.debug("member %d: connected to %d", member.id, peer)
                    while True:
                        if not box.queue:
                            await box.wakeup.wait()
                            box.wakeup = trio.Event()
                        snapshot = await self._send_queued(stream, box, peer)
                        if snapshot is not None:
                            await self._stream_snapshot(stream, box, snapshot)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    SendStalled) as exc:
                log.debug("member %d: connection to %d lost: %s", member.id, peer, exc)
            finally:
                box.connected = False
                for msg in box.queue:
                    if type(msg) is InstallSnapshot:
                        self.report_snapshot_failed(peer)
                box.queue.clear()
            await trio.sleep(backoff)

    async def _send_queued(
        self, stream: trio.SocketStream, box: Outbox, peer: int
    ) -> InstallSnapshot | None:
        """Send what is queued for `peer`, up to a snapshot request, which is returned."""
        queue = box.queue
        snapshot: InstallSnapshot | None = None
        payloads = []
        while queue:
            msg = queue.popleft()
            if type(msg) is InstallSnapshot:
                snapshot = msg
                break
            payloads.append(self._encode(msg))
        if payloads:
            # A peer that stopped reading (half-open connection, hung process)
            # would hold this send for minutes: reconnect instead.
            timeout = self.member.timing.send_timeout
            with trio.move_on_after(timeout):
                await send_frames(stream, payloads)
                self.member.counters["messages_sent"] += len(payloads)
                return snapshot
            if snapshot is not None:
                self.report_snapshot_failed(peer)
            raise SendStalled(f"member {peer} took over {timeout}s to take a send; reconnecting")
        return snapshot

    def _encode(self, msg: Message | SnapshotAck) -> bytes:
        """Encode for the wire, packing a run of entries once for all the peers that get it."""
        if type(msg) is not AppendEntries or not msg.entries:
            return encode_message(msg)
        return encode_message(msg, self.member.packs.pack(msg.entries))

    async def _stream_snapshot(
        self, stream: trio.SocketStream, box: Outbox, request: InstallSnapshot
    ) -> None:
        """Stream our newest snapshot file to a follower, chunk by chunk.

        At most `window` chunks go out ahead of the follower's acknowledgements,
        so memory stays bounded on both sides; Raft messages queued for the
        follower meanwhile (heartbeats above all) go out between chunks. A
        broken transfer resumes where the follower's last acknowledgement left
        it, if the same snapshot is still the newest.
        """
        member = self.member
        peer = request.dst
        node = member.node
        meta, path = member.snapshot_meta, member.snapshot_path
        policy = member.snapshots
        delivered = False
        try:
            if meta is None or path is None:
                return
            previous = self._acks.get(peer)
            start = 0
            if previous is not None and (previous.index, previous.term) == (meta.index, meta.term):
                start = previous.received
            acks = self._acks[peer] = AckState(meta.index, meta.term, start)
            with open(path, "rb") as file:
                total = os.fstat(file.fileno()).st_size
                if start >= total:
                    start = acks.received = 0
                sent = start
                log.info("member %d: sending the snapshot at index %d (%d bytes) to %d from "
                         "offset %d", member.id, meta.index, total, peer, start)
                while acks.received < total:
                    if peer in member.cut:
                        return  # fault injection: the link is cut mid-transfer
                    if node is None or node.role is not Role.LEADER or node.term != request.term:
                        log.info("member %d: no longer leader of term %d; snapshot transfer to "
                                 "%d stopped", member.id, request.term, peer)
                        return
                    ahead = policy.window * policy.chunk_bytes
                    while (sent < total and sent - acks.received < ahead
                           and peer not in member.cut):
                        data = await trio.to_thread.run_sync(
                            os.pread, file.fileno(), policy.chunk_bytes, sent
                        )
                        if not data:
                            raise OSError(f"{path} ended at {sent} of {total} bytes")
                        chunk = SnapshotChunk(request.term, member.id, peer, meta.index,
                                              meta.term, total, sent, data)
                        with trio.fail_after(member.timing.send_timeout):
                            await send_frames(stream, [encode_message(chunk)])
                        sent += len(data)
                        member.counters["snapshot_bytes_sent"] += len(data)
                        # Heartbeats keep the follower from starting an election
                        # meanwhile. (A repeated request for this snapshot is dropped.)
                        await self._send_queued(stream, box, peer)
                    seen = acks.changed
                    with trio.move_on_after(policy.ack_timeout) as waited:
                        await seen.wait()
                    if waited.cancelled_caught:
                        log.warning("member %d: member %d acknowledged no snapshot chunk for "
                                    "%gs", member.id, peer, policy.ack_timeout)
                        return
                    if not acks.accepted:
                        sent = acks.received  # the follower holds less than we thought
                        acks.accepted = True
            delivered = True
            member.counters["snapshots_sent"] += 1
        except trio.TooSlowError:
            raise SendStalled(f"member {peer} took over {member.timing.send_timeout}s to take "
                              f"a snapshot chunk") from None
        except OSError as exc:
            log.error("member %d: cannot send the snapshot to %d: %s", member.id, peer, exc)
        finally:
            if not delivered:
                self.report_snapshot_failed(peer)
