"""The node loop, the only code that touches the core, and the timer that feeds it ticks.

The loop drains its inbox, then acts on the core's Ready: messages to the
replicators at once, entries and hard state to the disk writer, committed
entries to the applier. Draining everything queued before asking for a Ready
is where batching comes from: one fsync and one AppendEntries per peer cover
every proposal that arrived meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import cbor2
import trio

from raft_trio.core import (
    ConfigChangeError,
    Entry,
    EntryKind,
    NotLeaderError,
    Ready,
    Role,
    SnapshotRef,
    SoftState,
    TransferInProgress,
)
from raft_trio.errors import CommandError, RaftError
from raft_trio.server.applier import Restore
from raft_trio.server.disk_writer import DiskJob
from raft_trio.server.inbox import (
    TICK,
    ConfigChange,
    Durable,
    InboxItem,
    Propose,
    ReadRequest,
    SnapshotFailed,
    SnapshotTaken,
    Tick,
    Transfer,
)
from raft_trio.server.options import SESSION_EXPIRY_CHECK
from raft_trio.server.reads import Reads
from raft_trio.server.replication import Replication
from raft_trio.server.state import MemberState

log = logging.getLogger("raft_trio.server")

# Inbox items handled before each Ready, at the most.
DRAIN = 4096


async def run_timer(member: MemberState) -> None:
    inbox = member.running_inbox()
    interval = member.timing.tick_interval
    while True:
        # Ticks enter the inbox at least an interval apart, however late one
        # was: a lease relies on a follower needing election_ticks - 1 whole
        # intervals to count an election timeout after it heard from the leader
        # (the inbox keeps order, so the ticks it counts entered after that).
        # A late tick delays the rest, by the scheduling latency at least.
        await trio.sleep(interval)
        await inbox.send(TICK)


class NodeLoop:
    def __init__(self, member: MemberState, replication: Replication, reads: Reads,
                 on_soft_state: Callable[[SoftState], None], loaded: SnapshotRef | None):
        self.member = member
        self.replication = replication
        self.reads = reads
        self.on_soft_state = on_soft_state
        node = member.node
        assert node is not None
        self.node = node
        # The snapshot loaded at start, which the core reports again as its log's start.
        self._loaded = loaded
        # Index of the last entry handed to the disk writer: a Ready whose entries
        # start at or below it has cut the log there.
        self._last_handed = node.log.last_index
        self._compact_upto = 0
        # Proposals and changes held back while leadership is handed over (or this
        # leader's term is not durable yet), and changes to try again on the next tick.
        self._held: list[Propose | ConfigChange] = []
        self._retry: list[ConfigChange] = []
        # Index of the SESSION_EXPIRY entry this member proposed last, and when
        # it looks for idle sessions next.
        self._expiry_index = 0
        self._expiry_check_at = 0.0

    async def run(self, inbox: trio.MemoryReceiveChannel[InboxItem],
                  disk: trio.MemorySendChannel[DiskJob],
                  applier: trio.MemorySendChannel[list[Entry] | Restore]) -> None:
        node = self.node
        member = self.member
        async for item in inbox:
            self._handle(item)
            for _ in range(DRAIN):
                try:
                    item = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                self._handle(item)
            if member.durable is not None:
                node.persisted(*member.durable)
                member.durable = None
                if node.role is Role.LEADER and node.transferee is None:
                    self._release_held()
            if self._compact_upto:
                await disk.send(DiskJob(None, [], [], compact_upto=self._compact_upto))
                self._compact_upto = 0
            # More than one Ready when a long run of committed entries is handed
            # out in slices; each dispatch awaits, so other tasks run in between.
            while node.has_ready():
                await self._dispatch(node.ready(), disk, applier)

    def _handle(self, item: InboxItem) -> None:
        node = self.node
        match item:
            case Propose(datas, proposal):
                kind = EntryKind.COMMAND if proposal.session is None else EntryKind.SESSION
                try:
                    first, term = node.propose(datas, kind)
                except NotLeaderError as exc:
                    if node.role is Role.LEADER:
                        # Elected by its own vote, its term not yet durable: in a moment.
                        self._held.append(item)
                        return
                    proposal.fail(self.member.not_leader(exc.leader_id))
                    return
                except TransferInProgress:
                    self._held.append(item)
                    return
                self.member.pending.add(first, term, proposal, len(datas))
            case Tick():
                self._tick()
            case Durable():
                pass  # a wake-up only: the loop reads member.durable after draining
            case ReadRequest(wait):
                try:
                    node.read_index(wait)
                except NotLeaderError as exc:
                    wait.fail(self.member.not_leader(exc.leader_id))
            case ConfigChange():
                self._change_config(item)
            case Transfer(target, started):
                try:
                    node.transfer_leadership(target)
                except NotLeaderError as exc:
                    started.fail(self.member.not_leader(exc.leader_id))
                except ConfigChangeError as exc:
                    started.fail(CommandError(str(exc)))
                else:
                    started.done.set()  # under way: the caller watches the leader
            case SnapshotTaken(meta):
                node.snapshot_taken(meta.index, meta.term)
                node.compact_log(meta.index - self.member.snapshots.trailing)
                self._compact_upto = node.log.offset
            case SnapshotFailed(peer):
                node.report_snapshot(peer, delivered=False)
            case _:
                node.step(item)

    def _tick(self) -> None:
        node = self.node
        node.tick()
        if self._retry:
            retry, self._retry = self._retry, []
            for again in retry:
                self._change_config(again)
        if self.member.session_expiry and node.role is Role.LEADER:
            self._expire_sessions()

    def _change_config(self, item: ConfigChange) -> None:
        node = self.node
        proposal = item.proposal
        try:
            index = node.propose_config(item.change(node.membership))
        except NotLeaderError as exc:
            proposal.fail(self.member.not_leader(exc.leader_id))
        except TransferInProgress:
            self._held.append(item)
        except ConfigChangeError as exc:
            # Right after an election, or while another change is on its way
            # (two requests at once): try again on the coming ticks.
            if (exc.transient or node.config_index > node.commit) and item.retries > 0:
                self._retry.append(ConfigChange(item.change, proposal, item.retries - 1))
            else:
                proposal.fail(CommandError(str(exc)))
        else:
            self.member.pending[index] = (node.term, proposal, 0)

    def _expire_sessions(self) -> None:
        """Now and then, propose dropping the sessions idle for too long, if there are any.

        The members drop them when they apply the entry, not now: the log
        decides, so that every member drops the same ones at the same index.
        """
        member = self.member
        now = trio.current_time()
        if now < self._expiry_check_at:
            return
        limit = member.session_expiry
        self._expiry_check_at = now + min(SESSION_EXPIRY_CHECK,
                                          max(limit / 4, member.timing.tick_interval))
        if self._expiry_index > member.last_applied or not member.sessions:
            return  # the last one is still on its way (or was cut, and the log moves on)
        stamp = int(time.time() * 1000)
        limit_ms = int(limit * 1000)
        if not member.sessions.idle(stamp, limit_ms):
            return
        try:
            self._expiry_index, _ = self.node.propose([cbor2.dumps([stamp, limit_ms])],
                                                      EntryKind.SESSION_EXPIRY)
        except (NotLeaderError, TransferInProgress):
            pass  # the next look tries again

    def _release_held(self) -> None:
        """Hand the proposals held back (a handover, a term not yet durable) to the core again."""
        held, self._held = self._held, []
        for item in held:
            self._handle(item)

    async def _dispatch(self, ready: Ready, disk: trio.MemorySendChannel[DiskJob],
                        applier: trio.MemorySendChannel[list[Entry] | Restore]) -> None:
        node = self.node
        member = self.member
        if ready.soft_state is not None:
            self._soft_state_changed(ready.soft_state)
        if ready.reads or ready.dropped_reads:
            self.reads.settle(node, ready)
        self.reads.note_round(node.heartbeat_round)
        if ready.membership is not None:
            log.info("member %d: configuration now %s", member.id, ready.membership)
            self.replication.sync()
        if ready.removed and not member.removed:
            member.removed = True
            log.warning("member %d: removed from the cluster; shutting down", member.id)
            assert member.nursery is not None
            member.nursery.start_soon(self._shut_down_soon)
        if ready.snapshot is not None:
            # Whatever we proposed up to there was settled by the snapshot, result
            # unknown here; whatever after it is gone with the log it replaced.
            member.pending.fail_all(RaftError(
                "a snapshot from the leader replaced this member's log: the outcome of "
                "these entries is not known here"
            ))
            self._last_handed = ready.snapshot.index
            if ready.snapshot != self._loaded or member.last_applied != ready.snapshot.index:
                await applier.send(Restore(ready.snapshot))
            # else: the snapshot loaded at start; only the log's new start is recorded
        if ready.entries:
            first = ready.entries[0].index
            if first <= self._last_handed and member.pending:
                member.pending.lose_from(first)
            self._last_handed = ready.entries[-1].index
        # The leader sends to its peers while its own write is still in flight.
        self.replication.route(ready.messages)
        if ready.needs_persist() or ready.persisted_messages:
            await disk.send(DiskJob(ready.hard_state, ready.entries, ready.persisted_messages,
                                    snapshot=ready.snapshot))
        if ready.committed:
            await applier.send(ready.committed)

    def _soft_state_changed(self, soft: SoftState) -> None:
        member = self.member
        log.info("member %d: %s in term %d (leader %s)", member.id, soft.role.value, soft.term,
                 soft.leader_id)
        if soft.leader_id is not None:
            member.leader_known()
        if (soft.leader_id not in (None, member.id)
                and not self.replication.has_replicator(soft.leader_id)):
            self.replication.sync()
        if soft.transferee is None:
            # The handover is over (done or abandoned): proposals held meanwhile
            # go to the core now, or fail with a redirect to the new leader.
            self._release_held()
        self.on_soft_state(soft)

    async def _shut_down_soon(self) -> None:
        # A moment for the last messages (a removed leader's TimeoutNow) to leave.
        await trio.sleep(self.member.timing.tick_interval * 3)
        if self.member.nursery is not None:
            self.member.nursery.cancel_scope.cancel()

    def fail_queued(self, inbox: trio.MemoryReceiveChannel[InboxItem], error: RaftError) -> None:
        """Shutdown: what is still queued or held never reaches the core."""
        while True:
            try:
                item = inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            match item:
                case Propose(_, proposal) | ConfigChange(_, proposal) | Transfer(_, proposal):
                    proposal.fail(error)
                case ReadRequest(wait):
                    wait.fail(error)
                case _:
                    pass
        for held in (*self._held, *self._retry):
            held.proposal.fail(error)
        self._held, self._retry = [], []
