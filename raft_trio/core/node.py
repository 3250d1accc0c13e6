"""The Raft algorithm as a deterministic object: inputs in, a Ready batch out.

Nothing here awaits, reads a clock, touches a file or uses global
randomness: time arrives as `tick()`, durability as `persisted()`, and the
caller supplies the random generator. The driver loop is

    node.step(msg) / node.tick() / node.propose(...) / node.persisted(...)
    ready = node.ready()
    send ready.messages now;
    if ready.snapshot: restore the state machine from that snapshot and
    record in stable storage that the log now starts after it;
    make ready.hard_state and ready.entries durable, then send
    ready.persisted_messages and call node.persisted(last index, term);
    apply ready.committed in order.

Snapshots are the driver's business, and it tells the core about them:
`snapshot_taken` once a snapshot of its own is durable, then
`compact_log` to drop the entries it no longer wants in memory;
`report_snapshot` when streaming one to a follower failed. A follower's
driver steps in an InstallSnapshot once the leader's file has arrived.

Durability claims (a granted vote, a successful append) travel in
`persisted_messages`, which the driver must hold back until *every* write
handed to it so far is durable, not only this Ready's: an append that
duplicates entries still in flight must not be acknowledged early.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate, repeat
from operator import itemgetter
from typing import Any

from raft_trio.core.log import RaftLog
from raft_trio.core.membership import ConfigChangeError, Membership
from raft_trio.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
)
from raft_trio.core.progress import Progress

_data_of = itemgetter(3)
_kind_of = itemgetter(2)
# tuple.__new__ skips the NamedTuple's Python-level __new__: proposals build
# thousands of entries a second.
_new_entry: Callable[[Iterable[Any]], Entry] = partial(tuple.__new__, Entry)


def _stored_log_holds(entries: Sequence[Entry], snapshot: SnapshotRef) -> bool:
    """Whether stored `entries` go on from `snapshot` as they are (RaftLog.restored keeps them)."""
    if not entries:
        return False
    first = entries[0].index
    if first == snapshot.index + 1:
        return True
    pos = snapshot.index - first
    return 0 <= pos < len(entries) and entries[pos].term == snapshot.term


class NotLeaderError(Exception):
    """A proposal reached a member that is not the leader."""

    def __init__(self, leader_id: int | None):
        super().__init__(f"not the leader (leader is {leader_id})")
        self.leader_id = leader_id


class TransferInProgress(Exception):
    """The leader is handing leadership over: proposals wait until that settles."""

    def __init__(self, transferee: int):
        super().__init__(f"leadership is being transferred to {transferee}")
        self.transferee = transferee


@dataclass(frozen=True, slots=True)
class Config:
    # Election timeout is drawn uniformly from [election_ticks, 2 * election_ticks).
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_append_entries: int = 4096
    # Keeps every AppendEntries far below the transport's maximum frame size.
    max_append_bytes: int = 8 * 1024 * 1024
    max_inflight: int = 32
    # Committed entries handed out per Ready: a restarted member may have a
    # million to apply, and the driver must stay responsive meanwhile.
    max_committed_per_ready: int = 8192
    # Heartbeat rounds to wait for a snapshot's acknowledgement before
    # trying again, in case the driver's failure report itself was lost.
    snapshot_timeout_rounds: int = 600
    # Ticks a leadership transfer may take before the leader gives up on it
    # and takes proposals again (default: one election timeout).
    transfer_ticks: int = 0
    # Ask for pre-votes before raising the term (dissertation 9.6): a member
    # that was cut off cannot depose a leader the others still follow.
    pre_vote: bool = True
    # A leader that has not heard from a majority for an election timeout
    # steps down, and members that heard from their leader within one ignore
    # vote requests; lease reads rely on both.
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must exceed heartbeat_ticks")
        if min(self.heartbeat_ticks, self.max_append_entries, self.max_append_bytes,
               self.max_inflight, self.max_committed_per_ready,
               self.snapshot_timeout_rounds) < 1:
            raise ValueError("heartbeat_ticks, snapshot_timeout_rounds and the "
                             "max_append/max_inflight limits must be >= 1")


DEFAULT_CONFIG = Config()
STALLED_ROUNDS_BEFORE_PROBE = 3
EMPTY_HARD_STATE = HardState(0, None, 0)


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes (role changes are logged)."""

    role: Role
    term: int
    leader_id: int | None
    # Leadership is being handed to this member (proposals wait meanwhile).
    transferee: int | None = None


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """A snapshot named by its last included entry."""

    index: int
    term: int


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    soft_state: SoftState | None = None
    # A snapshot from the leader now stands for the log up to its index:
    # restore it before applying `committed`, and make the log's new start
    # durable before or with `entries`.
    snapshot: SnapshotRef | None = None
    # The configuration in effect changed (a CONFIG entry was appended or cut,
    # or a snapshot brought one): the members to talk to and their addresses.
    membership: Membership | None = None
    # This member is not in the committed configuration: it should stop.
    removed: bool = False
    # Reads asked for with read_index() that are now safe: (context, index),
    # to be answered once the state machine has applied up to index.
    reads: list[tuple[Any, int]] = field(default_factory=list)
    # Contexts of reads this member can no longer confirm (it lost leadership).
    dropped_reads: list[Any] = field(default_factory=list)

    def needs_persist(self) -> bool:
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None


class _ReadState:
    """A leader's ReadIndex bookkeeping for its term (dissertation 6.4)."""

    __slots__ = ("acked", "blocked", "confirmed", "next", "ready", "round", "waiting")

    def __init__(self) -> None:
        # Heartbeat rounds started in this term, and the newest one a majority answered.
        self.round = 0
        self.confirmed = 0
        self.acked: dict[int, int] = {}
        # Waiting for the leader to commit an entry of its term.
        self.blocked: list[Any] = []
        # (context, read index) waiting for the next round to start.
        self.next: list[tuple[Any, int]] = []
        # (round, context, read index), rounds ascending.
        self.waiting: deque[tuple[int, Any, int]] = deque()
        self.ready: list[tuple[Any, int]] = []

    def pending(self) -> list[Any]:
        return [*self.blocked, *(c for c, _ in self.next), *(c for _, c, _ in self.waiting)]


class RaftNode:
    def __init__(
        self,
        node_id: int,
        voters: Iterable[int] | Membership,
        *,
        hard_state: HardState = EMPTY_HARD_STATE,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotRef | None = None,
        config: Config = DEFAULT_CONFIG,
        rng: random.Random | None = None,
    ):
        """`voters` is the configuration as of the start of `entries` (the
        snapshot's, or the bootstrap one); CONFIG entries in `entries` override
        it. A node outside it (joining, or removed) never campaigns and waits
        for a leader. `entries` are the log as loaded from stable storage; with
        `snapshot`, the snapshot the state machine was restored from before start."""
        self.id = node_id
        base = voters if isinstance(voters, Membership) else Membership.of(tuple(voters))
        self.config = config
        self.rng = rng if rng is not None else random.Random(node_id)
        if snapshot is None:
            self.log = RaftLog(entries)
            self.snapshot = SnapshotRef(0, 0)
        else:
            self.log = RaftLog.restored(entries, snapshot.index, snapshot.term)
            self.snapshot = snapshot

        self.term = hard_state.term
        self.vote = hard_state.vote
        if self.log.last_term > self.term:
            # A snapshot from a leader became durable before the term it brought:
            # never run in a term older than an entry held (the first Ready stores it).
            self.term = self.log.last_term
            self.vote = None
        # A stored commit index is only a hint that lets a restarted member
        # apply before it hears from a leader; never trust it beyond the log.
        self.commit = max(min(hard_state.commit, self.log.last_index), self.snapshot.index)
        # Index of the last committed entry handed out in a Ready (or covered
        # by the snapshot the state machine holds).
        self.applied = self.snapshot.index
        # Everything loaded at start-up came from stable storage.
        self.durable_index = self.log.last_index
        self._persisted_term_vote = (hard_state.term, hard_state.vote)

        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._draw_timeout()
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}

        self._entries: list[Entry] = []
        self._messages: list[Message] = []
        self._persisted_messages: list[Message] = []
        self._last_soft = SoftState(self.role, self.term, self.leader_id)
        self._installed: SnapshotRef | None = None
        self.transferee: int | None = None
        self._transfer_elapsed = 0
        self._reads = _ReadState()
        self._dropped_reads: list[Any] = []
        # Leader only: ticks since it was elected, and the tick at which each peer
        # last sent it anything in its term (CheckQuorum).
        self._lead_ticks = 0
        self._heard_at: dict[int, int] = {}
        # Leader only: no TimeoutNow sent in this term, so no voter was told to
        # ignore the lease it granted us (lease reads need this).
        self._lease_intact = True
        # A leader elected by its own vote alone: the index of its no-op until that is
        # durable (and with it the term). Until then it takes no proposals and sends
        # nothing but persisted messages, so that a crash cannot make it lead the same
        # term again with other entries that someone already received.
        self._unsaved_term_noop = 0
        # Leader only: members a change removed, still sent to until they have
        # heard that the change committed (or they would time out and campaign),
        # with the index of that change and the heartbeat rounds since they did.
        self._departing: dict[int, tuple[int, int]] = {}
        # (index, configuration) for the base and every CONFIG entry in the log,
        # oldest first: the last is in effect; a cut log falls back to an earlier one.
        self._configs: list[tuple[int, Membership]] = [(self.log.offset, base)]
        self._record_configs(self.log.slice(self.log.offset + 1, self.log.last_index + 1))
        self._apply_membership()
        self._membership_changed = False
        self._removed_reported = False
        if snapshot is not None and not _stored_log_holds(entries, snapshot):
            # The stored log ends before the snapshot (we applied entries our own
            # disk had not yet made durable, then crashed) or holds another entry
            # at its index (an installed snapshot's marker was lost): the log now
            # starts at the snapshot, and stable storage must be told so before
            # anything is appended after it. Otherwise a WAL replay finds a gap,
            # or the next restart discards what was appended and acknowledged since.
            self._installed = snapshot

    # ------------------------------------------------------------------ inputs

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def membership(self) -> Membership:
        """The configuration in effect: the newest in the log, committed or not."""
        return self._configs[-1][1]

    @property
    def config_index(self) -> int:
        """Index of the entry that set the configuration in effect (or the log's start)."""
        return self._configs[-1][0]

    def membership_at(self, index: int) -> Membership:
        """The configuration in effect once the log up to `index` is applied."""
        for at, membership in reversed(self._configs):
            if at <= index:
                return membership
        return self._configs[0][1]

    @property
    def is_voter(self) -> bool:
        return self.id in self._voter_set

    def _may_campaign(self) -> bool:
        if self.is_voter:
            return True
        configs = self._configs
        return (
            self.config_index > self.commit
            and len(configs) > 1
            and self.id in configs[-2][1].voters
        )

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self.heartbeat_elapsed += 1
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                self._broadcast_heartbeat()
            if self.transferee is not None:
                self._transfer_elapsed += 1
                if self._transfer_elapsed >= (self.config.transfer_ticks
                                              or self.config.election_ticks):
                    self.transferee = None  # gave up: take proposals again
            self._lead_ticks += 1
            if self.config.check_quorum and not self._heard_from_quorum():
                # Cut off from a majority, which may elect another leader once its
                # lease on us runs out: stop taking writes and serving reads.
                self._become_follower(self.term, None)
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            self.campaign()

    def campaign(self, *, transfer: bool = False) -> None:
        """Start an election now (a timeout fired, or a test wants one).

        A voter campaigns, and so does a voter of the configuration that an
        uncommitted newest one replaced: until that entry commits the others
        may need it (dissertation 4.2.2, Figure 4.6). A learner, or a member
        outside the configuration, waits for a leader to find it. With
        pre-votes on, it first asks whether it could win; a campaign that the
        leader asked for (`transfer`) skips that and the voters' lease.
        """
        if not self._may_campaign():
            self.election_elapsed = 0
            # Not heard from a leader in an election timeout: no longer vouch for
            # one, so that pre-votes of the members that may campaign are granted.
            self.leader_id = None
            return
        if self.config.pre_vote and not transfer:
            self._pre_campaign()
        else:
            self._campaign(transfer)

    def _enter_election(self, role: Role) -> None:
        """Become (pre-)candidate: no leader, a fresh timeout, only our own vote so far."""
        self.role = role
        self.leader_id = None
        self.election_elapsed = 0
        self.randomized_timeout = self._draw_timeout()
        self.progress = {}
        # Our own vote counts only where we are a voter (absent, it is no refusal either).
        self.votes = {self.id: True} if self.is_voter else {}

    def _pre_campaign(self) -> None:
        self._enter_election(Role.PRE_CANDIDATE)
        if self._tally() >= self.quorum:
            self._campaign(transfer=False)
            return
        last_index, last_term = self.log.last_index, self.log.last_term
        for peer in self.voters:
            if peer != self.id:
                # Nothing changed here, so nothing needs to be durable first.
                self._messages.append(RequestVote(
                    self.term + 1, self.id, peer, last_index, last_term, pre_vote=True
                ))

    def _campaign(self, transfer: bool) -> None:
        self.term += 1
        self.vote = self.id
        self._enter_election(Role.CANDIDATE)
        if self._tally() >= self.quorum:
            self._become_leader()
            self._unsaved_term_noop = self.log.last_index
            return
        for peer in self.voters:
            if peer == self.id:
                continue
            # The vote for ourselves must be durable before anyone can count on this term.
            self._persisted_messages.append(RequestVote(
                self.term, self.id, peer, self.log.last_index, self.log.last_term,
                transfer=transfer,
            ))

    def read_index(self, context: Any) -> None:
        """Ask for a linearizable read (ReadIndex, dissertation 6.4).

        Once this leader has confirmed, by a heartbeat round that a majority
        answered, that it still led after the request arrived, `Ready.reads`
        hands back (context, index): the read may be served from the state
        machine once it has applied up to index. Reads that arrive while a
        round is out wait for the next one, so one round confirms a whole
        batch. If leadership is lost first, `Ready.dropped_reads` names the
        context. Raises NotLeaderError on a member that is not the leader.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        reads = self._reads
        if self.log.term(self.commit) != self.term:
            # The commit index of a new leader may lag what earlier leaders
            # committed; its first entry of this term settles that.
            reads.blocked.append(context)
            return
        reads.next.append((context, self.commit))
        if reads.confirmed >= reads.round:
            self._start_round()

    @property
    def heartbeat_round(self) -> tuple[int, int]:
        """(term, number) of this leader's newest heartbeat round (number 0 off the lead)."""
        return self.term, self._reads.round

    def lease_basis(self) -> tuple[int, int] | None:
        """(heartbeat round, read index) for a lease read, or None if no lease applies.

        The round is the newest a majority answered: no other leader can be
        elected until an election timeout after its heartbeats arrived, since
        members ignore vote requests that soon after hearing from a leader
        (check_quorum). The driver knows when that round's heartbeats left and
        so whether the lease still holds; that assumes clocks that run at about
        the same rate (see lease_reads in the README). No lease without
        check_quorum, before this leader committed an entry of its term, or
        once it asked anyone to campaign (TimeoutNow) in this term.
        """
        if (
            self.role is not Role.LEADER
            or not self.config.check_quorum
            or not self._lease_intact
            or self.transferee is not None
            or self._reads.confirmed == 0
            or self.log.term(self.commit) != self.term
        ):
            return None
        return self._reads.confirmed, self.commit

    def propose(self, datas: Sequence[bytes], kind: int = EntryKind.COMMAND) -> tuple[int, int]:
        """Append entries of `kind` (commands by default) to the leader's log; returns
        (first index, term)."""
        if self.role is not Role.LEADER or self._unsaved_term_noop:
            raise NotLeaderError(self.leader_id)
        if self.transferee is not None:
            raise TransferInProgress(self.transferee)
        first = self.log.last_index + 1
        term = self.term
        entries = list(map(_new_entry, zip(
            range(first, first + len(datas)), repeat(term), repeat(int(kind)), datas,
            strict=False,
        )))
        self.log.append(entries)
        self._entries.extend(entries)
        return first, term

    def propose_config(self, new: Membership) -> int:
        """Append a configuration change; returns its index.

        One server at a time, one change at a time, and only once this
        leader has committed an entry of its own term (the dissertation's
        erratum: otherwise a change from an earlier term still in flight
        could form a majority that does not overlap this one's).
        """
        if self.role is not Role.LEADER or self._unsaved_term_noop:
            raise NotLeaderError(self.leader_id)
        if self.transferee is not None:
            raise TransferInProgress(self.transferee)
        if self.log.term(self.commit) != self.term:
            # Checked first: until then a change an earlier leader committed may
            # still look uncommitted here.
            raise ConfigChangeError(
                "this leader has not committed an entry of its term yet; try again shortly",
                transient=True,
            )
        if self.config_index > self.commit:
            raise ConfigChangeError(
                f"a configuration change is already in progress (entry {self.config_index} "
                f"is not committed yet)"
            )
        if new == self.membership:
            raise ConfigChangeError("the configuration would not change")
        new.check_single_change_from(self.membership)
        index = self.log.last_index + 1
        entry = Entry(index, self.term, EntryKind.CONFIG.value, new.encode())
        self.log.append([entry])
        self._entries.append(entry)
        self._configs.append((index, new))
        self._apply_membership()
        return index

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to voter `target` once its log is as long as ours.

        Proposals raise TransferInProgress until it is done or, after
        `transfer_ticks`, abandoned.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target == self.id:
            raise ConfigChangeError(f"member {target} is already the leader")
        if target not in self._voter_set:
            raise ConfigChangeError(f"member {target} is not a voter")
        self.transferee = target
        self._transfer_elapsed = 0
        self._maybe_timeout_now()

    def persisted(self, index: int, term: int) -> None:
        """The log is durable up to `index`, whose entry had `term` when written."""
        if index > self.durable_index and self.log.term(index) == term:
            self.durable_index = index
            if self._unsaved_term_noop and index >= self._unsaved_term_noop:
                self._unsaved_term_noop = 0
            if self.role is Role.LEADER:
                self._maybe_commit()

    def snapshot_taken(self, index: int, term: int) -> None:
        """A snapshot of this member's state up to (index, term) is durable.

        From now on a follower that needs an entry the log no longer holds
        is sent this snapshot. Older reports are ignored.
        """
        if index <= self.snapshot.index:
            return
        if index > self.applied or self.log.term(index) not in (term, None):
            raise ValueError(
                f"snapshot ({index}, {term}) is not of applied state (applied {self.applied}, "
                f"log term there {self.log.term(index)})"
            )
        self.snapshot = SnapshotRef(index, term)

    def compact_log(self, upto: int) -> None:
        """Drop the in-memory entries up to `upto`, as far as the snapshot covers them."""
        upto = min(upto, self.snapshot.index)
        if upto <= self.log.offset:
            return
        term = self.log.term(upto)
        assert term is not None
        self.log.compact_to(upto, term)
        base = self.membership_at(upto)
        self._configs = [(upto, base), *(c for c in self._configs if c[0] > upto)]

    def report_snapshot(self, peer: int, delivered: bool) -> None:
        """The driver finished streaming a snapshot to `peer`.

        A delivered one is acknowledged by the follower itself; a failed one
        is tried again once the follower answers a heartbeat.
        """
        pr = self.progress.get(peer)
        if pr is None or not pr.pending_snapshot or delivered:
            return
        pr.become_probe(pr.match + 1)
        pr.probe_sent = True

    def step(self, msg: Message) -> None:
        if msg.dst != self.id or msg.src == self.id:
            return  # misrouted
        # Anyone may lead or campaign (a member this one has not heard of yet may
        # have been added); only answers count by membership, further down.
        if msg.term > self.term:
            if type(msg) is RequestVote and msg.pre_vote:
                pass  # a question about a later term, answered without moving to it
            elif type(msg) is RequestVoteResponse and msg.pre_vote and msg.granted:
                pass  # a yes carries the term we would campaign in
            elif (type(msg) is RequestVote and not msg.transfer
                  and self.config.check_quorum and self._in_lease()):
                # We heard from a leader within an election timeout: a member that
                # wants an election now was cut off, and must not depose it
                # (this is also what makes the leader's lease safe).
                return
            else:
                from_leader = isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot)
                leader = msg.src if from_leader else None
                self._become_follower(msg.term, leader)
        if self.role is Role.LEADER and msg.term == self.term:
            self._heard_at[msg.src] = self._lead_ticks
        if isinstance(msg, AppendEntries):
            self._on_append(msg)
        elif isinstance(msg, AppendEntriesResponse):
            self._on_append_response(msg)
        elif isinstance(msg, Heartbeat):
            self._on_heartbeat(msg)
        elif isinstance(msg, HeartbeatResponse):
            self._on_heartbeat_response(msg)
        elif isinstance(msg, RequestVote):
            self._on_request_vote(msg)
        elif isinstance(msg, RequestVoteResponse):
            self._on_vote_response(msg)
        elif isinstance(msg, InstallSnapshot):
            self._on_install_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            self._on_timeout_now(msg)

    # ----------------------------------------------------------------- outputs

    def has_ready(self) -> bool:
        return bool(
            self._entries
            or self._messages
            or self._persisted_messages
            or self._installed is not None
            or self._membership_changed
            or (self._removed() and not self._removed_reported)
            or self.applied < self.commit
            or bool(self._reads.ready)
            or bool(self._dropped_reads)
            or (self.term, self.vote) != self._persisted_term_vote
            or self._soft_state() != self._last_soft
            or (self.role is Role.LEADER and self._any_append_due())
        )

    def ready(self) -> Ready:
        self._settle_committed_config()
        if self.role is Role.LEADER:
            for peer in self.peers:
                self._send_appends(peer)
        if self._unsaved_term_noop:
            # Nothing leaves before the term is durable.
            self._persisted_messages[:0] = self._messages
            self._messages = []
        ready = Ready(
            entries=self._entries,
            messages=self._messages,
            persisted_messages=self._persisted_messages,
        )
        self._entries = []
        self._messages = []
        self._persisted_messages = []
        ready.snapshot = self._installed
        self._installed = None
        if self._membership_changed:
            ready.membership = self.membership
            self._membership_changed = False
        if self._removed() and not self._removed_reported:
            ready.removed = True
            self._removed_reported = True
        if (self.term, self.vote) != self._persisted_term_vote:
            ready.hard_state = HardState(self.term, self.vote, self.commit)
            self._persisted_term_vote = (self.term, self.vote)
        if self._reads.ready:
            ready.reads = self._reads.ready
            self._reads.ready = []
        if self._dropped_reads:
            ready.dropped_reads = self._dropped_reads
            self._dropped_reads = []
        if self.applied < self.commit:
            upto = min(self.commit, self.applied + self.config.max_committed_per_ready)
            ready.committed = self.log.slice(self.applied + 1, upto + 1)
            self.applied = upto
        soft = self._soft_state()
        if soft != self._last_soft:
            ready.soft_state = soft
            self._last_soft = soft
        return ready

    # ----------------------------------------------------------- role changes

    def _draw_timeout(self) -> int:
        low = self.config.election_ticks
        return self.rng.randrange(low, 2 * low)

    def _soft_state(self) -> SoftState:
        return SoftState(self.role, self.term, self.leader_id, self.transferee)

    # ------------------------------------------------------------- membership

    def _record_configs(self, entries: Sequence[Entry]) -> bool:
        """Note the CONFIG entries among appended `entries`; returns whether there were any."""
        config_kind = EntryKind.CONFIG
        if not entries or config_kind not in set(map(_kind_of, entries)):
            return False
        for entry in entries:
            if entry.kind == config_kind:
                self._configs.append((entry.index, Membership.decode(entry.data)))
        return True

    def _forget_configs_from(self, index: int) -> None:
        """The log was cut at `index`: configurations it held from there on are void."""
        configs = self._configs
        if configs[-1][0] < index:
            return
        while len(configs) > 1 and configs[-1][0] >= index:
            configs.pop()
        self._apply_membership()

    def _apply_membership(self) -> None:
        membership = self.membership
        self.voters = tuple(membership.voters)
        self._voter_set = frozenset(membership.voters)
        self._member_set = membership.members
        self._membership_changed = True
        if self.role is not Role.LEADER:
            self._departing = {}
        else:
            for returning in [p for p in self._departing if p in self._member_set]:
                del self._departing[returning]
            for gone in [p for p in self.progress if p not in self._member_set]:
                if gone not in self._departing:
                    self._departing[gone] = (self.config_index, 0)
            # A member new to this leader most likely has nothing: start it from
            # the log's beginning (or the snapshot). Starting past the end instead
            # would leave an idle leader nothing to send it but heartbeats, which
            # never reveal that its log is empty.
            for peer in membership.members:
                if peer != self.id and peer not in self.progress:
                    self.progress[peer] = Progress(self.log.offset + 1, self.config.max_inflight)
            if self.transferee is not None and self.transferee not in self._voter_set:
                self.transferee = None
        self.peers = tuple(sorted(
            {i for i in membership.members if i != self.id} | set(self._departing)
        ))

    def _removed(self) -> bool:
        """Out of the configuration, and the change that took it out is committed.

        Only a member that a committed configuration named was removed: one
        joining catches up through configurations that predate it.
        """
        if self.id in self._member_set or not self.commit >= self.config_index > 0:
            return False
        return any(self.id in m.members for at, m in self._configs if at <= self.commit)

    def _settle_committed_config(self) -> None:
        """A leader that a committed change made a non-voter steps down (dissertation 4.2.2)."""
        if self.role is not Role.LEADER or self.is_voter or self.commit < self.config_index:
            return
        # Hand over to the most up-to-date voter rather than wait for a timeout.
        best = max(
            (p for p in self.progress if p in self._voter_set),
            key=lambda p: self.progress[p].match,
            default=None,
        )
        if best is not None and self.progress[best].match == self.log.last_index:
            self._messages.append(TimeoutNow(self.term, self.id, best))
        self._become_follower(self.term, None)

    def _become_follower(self, term: int, leader_id: int | None) -> None:
        if term > self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.election_elapsed = 0
        self.randomized_timeout = self._draw_timeout()
        self.progress = {}
        self.votes = {}
        self.transferee = None
        self._unsaved_term_noop = 0
        self._end_reads()
        self._heard_at = {}

    def _end_reads(self) -> None:
        """Leadership is over: reads not yet confirmed never will be; confirmed ones stand."""
        old = self._reads
        self._dropped_reads.extend(old.pending())
        self._reads = _ReadState()
        self._reads.ready = old.ready

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.id
        self.heartbeat_elapsed = 0
        self.votes = {}
        self.transferee = None
        self._end_reads()
        self._heard_at = {}
        self._lead_ticks = 0
        self._lease_intact = True
        next_index = self.log.last_index + 1
        self.progress = {p: Progress(next_index, self.config.max_inflight) for p in self.peers}
        # An entry of the new term lets earlier terms' entries commit (paper 5.4.2).
        noop = Entry(next_index, self.term, EntryKind.NOOP, b"")
        self.log.append([noop])
        self._entries.append(noop)

    def _tally(self) -> int:
        voters = self._voter_set
        return sum(1 for voter, granted in self.votes.items() if granted and voter in voters)

    # -------------------------------------------------------------- follower

    def _on_append(self, msg: AppendEntries) -> None:
        if msg.term < self.term:
            self._messages.append(
                AppendEntriesResponse(self.term, self.id, msg.src, False, 0, msg.prev_index, 0, 0)
            )
            return
        if self.role is not Role.FOLLOWER or self.leader_id != msg.src:
            self._become_follower(msg.term, msg.src)
        self.election_elapsed = 0

        if msg.prev_index < self.commit:
            # Our committed prefix already matches any leader's log (leader completeness);
            # skip the part of the message it covers.
            skip = self.commit - msg.prev_index
            entries: Sequence[Entry] = msg.entries[skip:]
            prev_index = self.commit
        else:
            entries = msg.entries
            prev_index = msg.prev_index
            local_term = self.log.term(prev_index)
            if local_term != msg.prev_term:
                if local_term is None:
                    hint_term, hint_index = 0, self.log.last_index + 1
                else:
                    hint_term, hint_index = local_term, self.log.first_index_of_term(prev_index)
                self._messages.append(
                    AppendEntriesResponse(
                        self.term, self.id, msg.src, False, 0, prev_index, hint_term, hint_index
                    )
                )
                return

        new_from = self._first_new(entries)
        if new_from is not None:
            first_new = entries[new_from].index
            if first_new <= self.log.last_index:
                if first_new <= self.commit:
                    raise AssertionError(
                        f"node {self.id}: leader {msg.src} tried to overwrite committed index "
                        f"{first_new} (commit {self.commit})"
                    )
                self.log.truncate_from(first_new)
                self._forget_configs_from(first_new)
                self.durable_index = min(self.durable_index, first_new - 1)
                # Entries not yet handed to the driver that were just cut must never
                # reach it: Ready.entries has to stay one contiguous run of the log.
                pending = self._entries
                if pending and pending[-1].index >= first_new:
                    del pending[max(first_new - pending[0].index, 0) :]
            fresh = entries[new_from:]
            self.log.append(fresh)
            self._entries.extend(fresh)
            if self._record_configs(fresh):
                self._apply_membership()

        match = max(msg.prev_index + len(msg.entries), prev_index)
        new_commit = min(msg.commit, match)
        if new_commit > self.commit:
            self.commit = new_commit
        self._persisted_messages.append(
            AppendEntriesResponse(self.term, self.id, msg.src, True, match, 0, 0, 0)
        )

    def _first_new(self, entries: Sequence[Entry]) -> int | None:
        """Position of the first entry we lack or hold with another term."""
        log = self.log
        last = log.last_index
        for pos, entry in enumerate(entries):
            if entry.index > last or log.term(entry.index) != entry.term:
                return pos
        return None

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        if msg.term < self.term:
            self._messages.append(HeartbeatResponse(self.term, self.id, msg.src))
            return
        if self.role is not Role.FOLLOWER or self.leader_id != msg.src:
            self._become_follower(msg.term, msg.src)
        self.election_elapsed = 0
        # The leader only sends a commit index it knows our log matches up to.
        last = self.log.last_index
        new_commit = min(msg.commit, last)
        if new_commit > self.commit:
            self.commit = new_commit
        if msg.commit > last:
            # The leader believes we hold entries we do not: our data was lost
            # (a wiped disk). Say so as a rejection, or an idle leader never finds out.
            self._messages.append(AppendEntriesResponse(
                self.term, self.id, msg.src, False, 0, msg.commit, 0, last + 1
            ))
        self._messages.append(HeartbeatResponse(self.term, self.id, msg.src, msg.round))

    def _on_install_snapshot(self, msg: InstallSnapshot) -> None:
        if msg.term < self.term:
            self._messages.append(
                AppendEntriesResponse(self.term, self.id, msg.src, False, 0, msg.index, 0, 0)
            )
            return
        if self.role is not Role.FOLLOWER or self.leader_id != msg.src:
            self._become_follower(msg.term, msg.src)
        self.election_elapsed = 0
        if msg.index <= self.commit:
            # We already hold all of it (a duplicate, or we caught up meanwhile).
            # The commit index may be ahead of our own disk: vouch for it only
            # once everything handed out so far is durable.
            self._persisted_messages.append(
                AppendEntriesResponse(self.term, self.id, msg.src, True, self.commit, 0, 0, 0)
            )
            return
        kept = self.log.compact_to(msg.index, msg.snapshot_term)
        try:
            base = Membership.decode(msg.membership)
        except ValueError:
            base = self.membership_at(msg.index)  # the driver sent none: keep what we know
        later = [c for c in self._configs if c[0] > msg.index] if kept else []
        self._configs = [(msg.index, base), *later]
        self._apply_membership()
        pending = self._entries
        if kept:
            # Entries not yet handed to the driver stay a contiguous run after the snapshot.
            while pending and pending[0].index <= msg.index:
                pending.pop(0)
        else:
            pending.clear()
            # The snapshot file is durable before the driver steps this in.
            self.durable_index = msg.index
        self.snapshot = SnapshotRef(msg.index, msg.snapshot_term)
        self._installed = self.snapshot
        self.commit = msg.index
        self.applied = msg.index
        self._persisted_messages.append(
            AppendEntriesResponse(self.term, self.id, msg.src, True, msg.index, 0, 0, 0)
        )

    def _on_request_vote(self, msg: RequestVote) -> None:
        if msg.pre_vote:
            grant = (
                msg.term > self.term
                and not self._in_lease()
                and self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
            )
            self._messages.append(RequestVoteResponse(
                msg.term if grant else self.term, self.id, msg.src, grant, pre_vote=True
            ))
            return
        if msg.term < self.term:
            self._messages.append(RequestVoteResponse(self.term, self.id, msg.src, False))
            return
        can_vote = self.vote == msg.src or (self.vote is None and self.leader_id is None)
        if can_vote and self.log.is_up_to_date(msg.last_log_index, msg.last_log_term):
            self.vote = msg.src
            self.election_elapsed = 0
            self._persisted_messages.append(RequestVoteResponse(self.term, self.id, msg.src, True))
        else:
            self._messages.append(RequestVoteResponse(self.term, self.id, msg.src, False))

    # ------------------------------------------------------------- candidate

    def _on_vote_response(self, msg: RequestVoteResponse) -> None:
        if msg.pre_vote:
            wanted_term = self.term + 1 if msg.granted else self.term
            if self.role is not Role.PRE_CANDIDATE or msg.term != wanted_term:
                return
        elif self.role is not Role.CANDIDATE or msg.term != self.term:
            return
        if msg.src not in self._voter_set:
            return  # not a voter: its vote does not count
        self.votes[msg.src] = msg.granted
        if self._tally() >= self.quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(transfer=False)
            else:
                self._become_leader()
        elif len(self.votes) - self._tally() > len(self.voters) - self.quorum:
            self._become_follower(self.term, None)

    # ---------------------------------------------------------------- leader

    def _any_append_due(self) -> bool:
        last = self.log.last_index
        return any(pr.next <= last and pr.can_send() for pr in self.progress.values())

    def _send_appends(self, peer: int) -> None:
        pr = self.progress[peer]
        log = self.log
        last = log.last_index
        limit = self.config.max_append_entries
        max_bytes = self.config.max_append_bytes
        while pr.next <= last and pr.can_send():
            prev = pr.next - 1
            prev_term = log.term(prev)
            if prev_term is None:
                # Compacted away: only the snapshot can bring this follower up to date.
                snap = self.snapshot
                self._messages.append(InstallSnapshot(
                    self.term, self.id, peer, snap.index, snap.term,
                    self.membership_at(snap.index).encode(),
                ))
                pr.become_snapshot(snap.index)
                return
            entries = tuple(log.slice(pr.next, min(pr.next + limit, last + 1)))
            sizes = list(accumulate(map(len, map(_data_of, entries))))
            if sizes[-1] > max_bytes:
                # Always at least one entry, however large, or replication stops.
                entries = entries[: max(1, bisect_right(sizes, max_bytes))]
            self._messages.append(
                AppendEntries(self.term, self.id, peer, prev, prev_term, entries, self.commit)
            )
            pr.sent(prev + len(entries))

    def _broadcast_heartbeat(self) -> None:
        self._start_round()

    def _start_round(self) -> None:
        """Send a heartbeat round; the reads waiting for one ride on it."""
        reads = self._reads
        reads.round += 1
        number = reads.round
        term, commit, send = self.term, self.commit, self._messages.append
        for peer, pr in self.progress.items():
            send(Heartbeat(term, self.id, peer, min(pr.match, commit), number))
        if reads.next:
            reads.waiting.extend((number, context, index) for context, index in reads.next)
            reads.next = []
        self._update_confirmed()

    def _update_confirmed(self) -> None:
        """Note the newest round a majority of voters answered; release the reads it covers."""
        reads = self._reads
        voters = self._voter_set
        acked = [reads.acked.get(v, 0) for v in voters if v != self.id]
        if self.id in voters:
            acked.append(reads.round)
        acked.sort(reverse=True)
        confirmed = acked[len(voters) // 2]
        if confirmed <= reads.confirmed:
            return
        reads.confirmed = confirmed
        waiting = reads.waiting
        while waiting and waiting[0][0] <= confirmed:
            _, context, index = waiting.popleft()
            reads.ready.append((context, index))
        if reads.next:
            self._start_round()

    def _heard_from_quorum(self) -> bool:
        """Whether a majority of voters (itself included) was heard within an election timeout.

        A sliding window, so a leader cut off steps down one election timeout
        after it last heard from a majority, not up to two. Voters count as
        heard at the election: their votes were.
        """
        since = self._lead_ticks - self.config.election_ticks
        voters = self._voter_set
        heard = (self.id in voters) + sum(
            1 for v in voters if v != self.id and self._heard_at.get(v, 0) > since
        )
        return heard >= len(voters) // 2 + 1

    def _in_lease(self) -> bool:
        """Whether we heard from a leader within the minimum election timeout."""
        if self.role is Role.LEADER:
            return True
        return self.leader_id is not None and self.election_elapsed < self.config.election_ticks

    def _on_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        if self.role is not Role.LEADER or msg.term != self.term:
            return
        pr = self.progress.get(msg.src)
        if pr is None:
            return  # no longer a member
        if msg.src in self._voter_set and msg.round > self._reads.acked.get(msg.src, 0):
            self._reads.acked[msg.src] = msg.round
            self._update_confirmed()
        if msg.src == self.transferee:
            self._maybe_timeout_now()
        departing = self._departing.get(msg.src)
        if departing is not None:
            removed_at, rounds = departing
            if min(pr.match, self.commit) >= removed_at:
                # It has been told, in a heartbeat, that its removal committed;
                # one more round in case that one was lost, then let it go.
                if rounds >= 2:
                    del self._departing[msg.src]
                    del self.progress[msg.src]
                    self._apply_membership()
                    return
                self._departing[msg.src] = (removed_at, rounds + 1)
        if pr.pending_snapshot:
            pr.snapshot_rounds += 1
            if pr.snapshot_rounds >= self.config.snapshot_timeout_rounds:
                self.report_snapshot(msg.src, delivered=False)
                pr.probe_sent = False  # this answer is the sign of life a retry waits for
            return
        if pr.match < self.log.last_index:
            if pr.probing:
                # The probe or its answer may have been lost: allow another.
                pr.probe_sent = False
            elif pr.match == pr.match_at_heartbeat:
                # Rounds without progress: something was lost, or the follower's disk
                # is slow; resend from what it has only after a few, not at once.
                pr.stalled_rounds += 1
                if pr.stalled_rounds >= STALLED_ROUNDS_BEFORE_PROBE:
                    pr.become_probe(pr.match + 1)
        if pr.match != pr.match_at_heartbeat:
            pr.stalled_rounds = 0
        pr.match_at_heartbeat = pr.match

    def _on_append_response(self, msg: AppendEntriesResponse) -> None:
        if self.role is not Role.LEADER or msg.term != self.term:
            return
        pr = self.progress.get(msg.src)
        if pr is None:
            return  # no longer a member
        if msg.success:
            if pr.acknowledged(msg.match_index):
                self._maybe_commit()
                if msg.src == self.transferee:
                    self._maybe_timeout_now()
            return
        if pr.pending_snapshot:
            return  # older news: the snapshot under way settles where this follower stands
        if msg.reject_index <= pr.match:
            if msg.conflict_term == 0 and msg.conflict_index <= pr.match:
                # The follower's log now ends before what it acknowledged: it lost its
                # data. Start over from what it has. (A reordered stale rejection can
                # land here too; lowering match then only delays the commit index.)
                pr.match = msg.conflict_index - 1
                pr.become_probe(msg.conflict_index)
            return  # otherwise stale: we already know it matches further than that
        if pr.probing and msg.reject_index != pr.next - 1:
            return  # answer to an older probe
        next_index = msg.conflict_index
        if msg.conflict_term > 0:
            last_of_term = self.log.last_index_of_term(msg.conflict_term)
            if last_of_term is not None:
                next_index = last_of_term + 1
        pr.become_probe(max(1, min(next_index, msg.reject_index)))

    def _maybe_timeout_now(self) -> None:
        target = self.transferee
        pr = self.progress.get(target) if target is not None else None
        if target is not None and pr is not None and pr.match == self.log.last_index:
            self._messages.append(TimeoutNow(self.term, self.id, target))
            self._lease_intact = False

    def _on_timeout_now(self, msg: TimeoutNow) -> None:
        if msg.term == self.term and msg.src == self.leader_id and self.role is Role.FOLLOWER:
            self.campaign(transfer=True)

    def _maybe_commit(self) -> None:
        voters = self._voter_set
        matches = [pr.match for peer, pr in self.progress.items() if peer in voters]
        if self.id in voters:
            # The leader counts itself only for what is durable on its own disk.
            matches.append(self.durable_index)
        quorum = len(voters) // 2 + 1
        if len(matches) < quorum:
            return
        matches.sort(reverse=True)
        candidate = matches[quorum - 1]
        # Figure 8: only an entry of the current term is committed by counting replicas.
        if candidate > self.commit and self.log.term(candidate) == self.term:
            self.commit = candidate
            reads = self._reads
            if reads.blocked:
                reads.next.extend((context, candidate) for context in reads.blocked)
                reads.blocked = []
                if reads.confirmed >= reads.round:
                    self._start_round()
            # Idle followers hear the new commit index now rather than at the next heartbeat.
            for peer, pr in self.progress.items():
                if not pr.inflight and not pr.probing and pr.next > self.log.last_index:
                    self._messages.append(Heartbeat(
                        self.term, self.id, peer, min(pr.match, self.commit), self._reads.round
                    ))
