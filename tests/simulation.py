"""A deterministic, seeded simulator for a cluster of `raft_trio.core.RaftNode`s.

Everything random comes from one `random.Random(seed)`, so a seed replays
exactly. The simulator plays the driver of the node contract (see the
docstring of `raft_trio.core.node`) together with a hostile environment:

* network: messages can be dropped, duplicated, reordered (delivered out of
  order) and cut by partitions, symmetric or asymmetric, which later heal;
* disk: one FIFO queue of writes per node; the head write becomes durable
  when the scheduler picks it, so writes take random time; a Ready's
  `persisted_messages` go out only once that Ready's write (hence, FIFO,
  every earlier one) is durable; a crash loses every write not yet durable;
* crash and restart: a restarted node is a new RaftNode built from its
  durable hard state, its durable log and its newest durable snapshot; its
  state machine is the snapshot's content, then re-applies from there;
* ticks land on random nodes in random interleavings (clock skew for free),
  and clients propose to whichever node believes it is the leader;
* the driver sometimes feeds several inputs to a node before one `ready()`,
  as a real event loop that drains its inbox does.

Snapshots and log compaction (drawn per seed in `SnapshotPolicy`):

* a member's state machine is the list of entries it applied; a snapshot is
  (index, term, that list up to index). Members snapshot their own applied
  state at random times and once `threshold` entries were applied since the
  last one. Writing the file takes random time (a second per-member FIFO, the
  "snapshot disk"); a crash before it is durable loses it, the older files
  stay (the newest `SNAPSHOT_FILES_KEPT` are kept). Once durable the driver
  calls `snapshot_taken`, then `compact_log(index - keep)` with keep drawn
  from 0..keep_max (and at random times `compact_log` of anything, which the
  core must bound by its snapshot), and queues a compaction of the durable log
  to the core's new log offset behind the writes already queued, as the real
  disk writer does (whole "segments" of `segment` indexes are deleted);
* the durable log is modelled as the real WAL replays it: entries after an
  `offset`; a write starting at or below the offset restarts it there; a
  snapshot marker (index, term) keeps the entries after (index, term) if the
  log holds that entry and empties it otherwise;
* an InstallSnapshot in a leader's Ready starts a stream of the leader's
  newest durable snapshot (chosen when the stream completes, so possibly
  newer than the message names). A stream takes random time and fails when
  the link drops it or is cut, or either end crashes (or restarts) meanwhile;
  on a failure the leader's driver reports it at once, later (a stale report)
  or never, so the core's timeout runs too. A stream that arrives is written
  to the follower's snapshot disk; once durable the driver steps
  InstallSnapshot into the follower's core. A Ready with `.snapshot` restores
  the state machine from that file and queues the log-start marker in the
  write FIFO;
* a restart uses the newest durable snapshot file, whatever its origin (an
  installed one whose marker was lost, even one the core refused), and the
  durable log as it is; the RaftNode reconciles the two. The driver writes no
  marker of its own: when the durable log does not go on from the snapshot,
  the core's first Ready names it in `.snapshot`, and the driver queues its
  marker like any other (skipping the restore, as the real server does, since
  the state machine already is that snapshot).

Membership changes (weight `Faults.reconfig`; 0 for some seeds):

* the cluster starts with `n_nodes` voters (ids 1..n) plus `SPARES` spare
  nodes outside the configuration, started as RaftNode(id, initial
  membership) like any member (they never campaign and wait for a leader);
  as spares are used up, new ones are minted with fresh ids, up to
  `EXTRA_IDS` beyond the initial pool;
* at random times the driver asks whoever believes it is leader for one
  change: add a spare as a learner, promote a learner (caught up or not),
  remove a learner or a voter (sometimes the leader itself), hand leadership
  to a voter, or something the core must refuse (two voters at once, no
  change, a transfer to a non-voter or to itself). The driver predicts from
  the leader's state whether the core must accept (one change at a time,
  after the leader committed an entry of its term, no transfer under way)
  and fails the run when the core disagrees; ConfigChangeError,
  TransferInProgress and NotLeaderError are counted. The voter count stays
  within 1..`MAX_VOTERS`. An id whose removal was ever proposed is never
  added again (it would rejoin with its old state);
* a node whose Ready has `.removed` set is stopped for good (as the server
  shuts down); messages and snapshot streams to it are lost. Messages are
  routed by id to whichever nodes exist, members or not;
* a snapshot file records the configuration as of its index
  (`membership_at`), a restart passes it (or the initial one) to RaftNode,
  and the InstallSnapshot stepped into a follower carries the membership of
  the file that was streamed.

After every step the safety invariants are checked, incrementally so that
thousands of steps stay cheap:

* election safety: at most one leader per term over the whole run;
* log matching: every (index, term) ever seen in any log, in memory or
  durable, maps to one entry and one predecessor term; by induction two logs
  sharing an (index, term) are then identical up to it (a member's whole
  in-memory log is also re-checked, from its start on committed history,
  after every restart and snapshot install and every `FULL_CHECK_EVERY` steps);
* leader completeness: an entry known committed while some node was in
  term t is in the log (or under the snapshot) of every leader of a term
  above t;
* state-machine safety: every node's applied sequence (its snapshot's
  content, then what it applies itself) is a prefix of one global sequence;
  within one incarnation of a member every index is applied once and in
  order, a snapshot restore only ever moves the state forward, and no
  command appears twice in the global sequence;
* snapshots: every snapshot's content is the global sequence up to its index
  (with the term there), whether taken, streamed, installed or restored
  from; the InstallSnapshot a leader's core asks for names its own durable
  snapshot; a core's log offset and snapshot lie on committed history;
* durability claims: a vote grant, a RequestVote and an append success are
  only ever sent after the state they vouch for is durable (an append's
  match index must survive a restart: durable log reconciled with the newest
  durable snapshot, as a restart would do), and never as plain (non-persisted)
  messages; a durable committed entry is never
  overwritten;
* membership: every CONFIG entry in any log moves at most one voter from
  the configuration before it in that log (and so does the committed
  sequence of configurations); a leader's log never holds more than one
  uncommitted CONFIG entry; a node's configuration is the newest in its log
  (or the committed one at its log's start, which snapshots record too);
  only a voter of its own configuration (or of the one an uncommitted
  change of it replaced, dissertation 4.2.2) becomes candidate or leader;
  a leader whose newest configuration is committed and leaves it out of the
  voters is no longer leader after its next Ready; Ready.removed comes only to a node whose
  removal was proposed and whose committed configuration leaves it out.

At the end everything heals and restarts (except stopped nodes), the cluster
runs until quiet, and liveness is asserted on the final configuration: one
leader, every member applied the same sequence, which holds every command
that was ever reported committed, and every member's durable log replays
(with its newest snapshot) to that sequence. Nodes outside it (spares never
added, removed nodes) are not waited for.
"""

from __future__ import annotations

import os
import random
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import accumulate
from operator import itemgetter
from typing import Any

import cbor2

from raft_trio.core import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    ConfigChangeError,
    Entry,
    EntryKind,
    HardState,
    HeartbeatResponse,
    InstallSnapshot,
    Membership,
    Message,
    NotLeaderError,
    RaftLog,
    RaftNode,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotRef,
    TimeoutNow,
    TransferInProgress,
)
from raft_trio.sessions import STALE, SessionTable

FULL_CHECK_EVERY = 97
NO_HARD_STATE = HardState(0, None, 0)
REPLAY_TEST = "tests/test_simulation.py::test_replay"
# Durable snapshot files kept per member (the newest ones), like remove_older_snapshots.
SNAPSHOT_FILES_KEPT = 2
_kind_of = itemgetter(2)
# Nodes kept ready outside the configuration, to be added as learners.
SPARES = 2
# Ids minted beyond the initial voters and spares, as spares are used up.
EXTRA_IDS = 10
MAX_VOTERS = 7
CONFIG = EntryKind.CONFIG.value
SESSION = EntryKind.SESSION.value

# Bugs of raft_trio/core the simulator can steer around (Simulation(workarounds=...),
# RAFT_SIM_WORKAROUNDS), for as long as a known bug is not fixed. Both are fixed now and
# no workaround is on by default; both can be put back (FIXED_CORE_BUGS below), and
# tests/test_simulation.py::test_pinned_seed_catches_its_bug_put_back checks that each
# workaround still steers around its bug.
KNOWN_CORE_BUGS = {
    # Only a voter of its newest configuration campaigns, so when a change removing one
    # of two voters reaches only the voter it removes (a leader removing itself crashes
    # before the other gets it, or the leader removing the other loses it in a crash),
    # that voter never campaigns and refuses the other its vote (a shorter log): the pair
    # deadlocks (dissertation 4.2.2, Figure 4.6: a member outside its own newest,
    # uncommitted configuration must still campaign). The workaround: no voter is
    # removed from a two-voter configuration.
    "two-voter-removal-deadlock",
    # A voter that is a quorum on its own (a single-voter configuration) becomes leader
    # the moment it campaigns, before its new term is durable, and replicates at once.
    # If it crashes before the term reaches its disk, it restarts in the old term, elects
    # itself for the same term again and writes other entries at the same (index, term):
    # a learner that got the first ones keeps them (they look identical) and applies
    # other commands. The workaround: a node leading a term its disk does not hold yet
    # is not crashed (the crash waits until the write is durable).
    "single-voter-unsaved-term",
}


# Core bugs this simulator found, fixed since, each of which can be put back: a RaftNode
# subclass that behaves as the core did before its fix (Simulation(bugs=...), or
# RAFT_SIM_BUGS for a replay). tests/test_simulation.py runs each bug's pinned seed with
# the bug put back and expects the simulation to fail with its symptom, so a change to the
# simulator that stops a seed from catching its bug is noticed.


class _SupersededEntries(RaftNode):
    """1a939db: entries cut off the log by an append of the same batch, not yet handed
    to the driver, stayed in Ready.entries."""

    def _on_append(self, msg: AppendEntries) -> None:
        before = list(self._entries)
        super()._on_append(msg)
        after = self._entries
        kept = 0
        while kept < min(len(before), len(after)) and after[kept] is before[kept]:
            kept += 1
        if kept < len(before):
            self._entries = before + after[kept:]


class _RestartSnapshotUnmarked(RaftNode):
    """53bd463: a start from a snapshot that the stored log does not go on from (the log
    ends before it, or holds another term at its index) fixed the log in memory only:
    no Ready.snapshot told the driver to record the log's new start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._installed = None


class _UnpersistedInstallAck(RaftNode):
    """53bd463: an InstallSnapshot at or below the commit index was answered at once,
    as a plain message: a success claim for entries the disk may not hold yet."""

    def _on_install_snapshot(self, msg: InstallSnapshot) -> None:
        covered = msg.term >= self.term and msg.index <= self.commit
        held = len(self._persisted_messages)
        super()._on_install_snapshot(msg)
        if covered:
            self._messages += self._persisted_messages[held:]
            del self._persisted_messages[held:]


class _TwoVoterRemovalDeadlock(RaftNode):
    """8e1bdf8: only a voter of its newest configuration campaigned (see KNOWN_CORE_BUGS)."""

    def _may_campaign(self) -> bool:
        return self.is_voter


class _SingleVoterUnsavedTerm(RaftNode):
    """8e1bdf8: a lone voter led at once, before its new term was durable (see
    KNOWN_CORE_BUGS): it took proposals and sent plain messages straight away."""

    def _campaign(self, transfer: bool) -> None:
        super()._campaign(transfer)
        self._unsaved_term_noop = 0


FIXED_CORE_BUGS: dict[str, type[RaftNode]] = {
    "ready-entries-superseded": _SupersededEntries,
    "restart-snapshot-unmarked": _RestartSnapshotUnmarked,
    "unpersisted-install-ack": _UnpersistedInstallAck,
    "two-voter-removal-deadlock": _TwoVoterRemovalDeadlock,
    "single-voter-unsaved-term": _SingleVoterUnsavedTerm,
}


def node_class(bugs: frozenset[str]) -> type[RaftNode]:
    """RaftNode, or a subclass of it with the fixed core bugs `bugs` put back."""
    unknown = bugs - FIXED_CORE_BUGS.keys()
    if unknown:
        raise ValueError(f"no way to put back {sorted(unknown)}")
    if not bugs:
        return RaftNode
    bases = tuple(FIXED_CORE_BUGS[name] for name in sorted(bugs))
    return type("RaftNodeWithOldBugs", bases, {})


class SimulationFailure(AssertionError):
    """A broken invariant (or a crash of the core) at a known seed and step."""


@dataclass(frozen=True, slots=True)
class Faults:
    """How hostile a run is; drawn from the seed."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    partitions: float = 0.0  # weight of "cut the network" among the steps
    crashes: float = 0.0  # weight of "crash a node" among the steps
    disk: float = 20.0  # weight of "a write becomes durable" among the steps
    batch: float = 0.0  # chance an input is fed together with more before ready()
    ticks: float = 12.0  # weight of "a node's clock ticks" among the steps
    heal: float = 1.0  # weight of "heal the network / restart a node" among the steps
    coalesce: float = 0.0  # chance several writes turn durable with one persisted() call
    snipe: float = 0.0  # chance a leader crashes right after its commit index moves
    reconfig: float = 0.0  # weight of "ask the leader for a membership change" among the steps

    @staticmethod
    def draw(rng: random.Random) -> Faults:
        return Faults(
            ticks=rng.choice((5.0, 12.0, 30.0)),
            heal=rng.choice((0.3, 1.0, 2.0)),
            coalesce=rng.choice((0.0, 0.3)),
            snipe=rng.choice((0.0, 0.0, 0.02, 0.1)),
            drop=rng.choice((0.0, 0.01, 0.05, 0.15, 0.3)),
            duplicate=rng.choice((0.0, 0.01, 0.05, 0.15)),
            reorder=rng.choice((0.0, 0.1, 0.3, 0.7)),
            partitions=rng.choice((0.0, 0.2, 0.5, 1.5)),
            crashes=rng.choice((0.0, 0.2, 0.5, 1.5)),
            disk=rng.choice((5.0, 20.0, 60.0)),
            batch=rng.choice((0.0, 0.1, 0.4, 0.9)),
            reconfig=rng.choice((0.0, 1.0, 3.0, 3.0, 8.0)),
        )


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When members snapshot, how much log they keep, how slow snapshots move."""

    every: float = 0.0  # weight of "a member snapshots its state now" among the steps
    threshold: int | None = None  # snapshot once this many entries were applied since
    keep_max: int = 0  # compaction keeps a random 0..keep_max entries behind the snapshot
    segment: int = 1  # the durable log is deleted in runs of this many indexes
    disk: float = 5.0  # weight of "a snapshot file becomes durable" among the steps
    stream: float = 5.0  # weight of "a snapshot stream ends (or fails)" among the steps
    stream_loss: float = 0.0  # chance a stream breaks on its own
    report: float = 0.4  # chance a failed stream is reported at once (else later or never)
    late_report: float = 0.3  # chance it is reported later (else never)
    # Chance a follower crashes right as a snapshot arrives, or right after its core
    # took it in (before the marker is durable): the windows where a crash is trickiest.
    snipe: float = 0.0

    @staticmethod
    def draw(rng: random.Random, faults: Faults) -> SnapshotPolicy:
        return SnapshotPolicy(
            every=rng.choice((0.0, 1.0, 3.0)),
            threshold=rng.choice((None, 5, 10, 20, 50)),
            keep_max=rng.choice((0, 5, 20)),
            segment=rng.choice((1, 4, 16)),
            disk=rng.choice((2.0, 6.0, 20.0)),
            stream=rng.choice((2.0, 6.0, 20.0)),
            stream_loss=min(0.5, 2 * faults.drop),
            report=rng.choice((0.0, 0.4, 0.8)),
            late_report=rng.choice((0.0, 0.3)),
            snipe=rng.choice((0.0, 0.2, 0.4)),
        )


def address(node_id: int) -> str:
    return f"sim-{node_id}"


def draw_config(rng: random.Random) -> Config:
    return Config(
        election_ticks=rng.choice((3, 5, 10)),
        heartbeat_ticks=1,
        max_append_entries=rng.choice((1, 3, 64)),
        max_inflight=rng.choice((1, 2, 8, 32)),
        snapshot_timeout_rounds=rng.choice((2, 5, 20)),
    )


@dataclass(frozen=True, slots=True)
class Snap:
    """A snapshot file: the state machine (the applied entries) up to `index`."""

    index: int
    term: int
    content: tuple[Entry, ...]
    membership: Membership  # the configuration in force at `index`
    sessions: bytes = b""  # the client-session table at `index` (SessionTable.encode)

    def ref(self) -> SnapshotRef:
        return SnapshotRef(self.index, self.term)


@dataclass(slots=True)
class Write:
    """One Ready's worth of disk work (or a compaction), plus the messages waiting on it."""

    hard_state: HardState | None
    entries: list[Entry]
    messages: list[Message]
    # The log-start marker of an installed snapshot, written before the entries.
    snapshot: SnapshotRef | None = None
    # Delete the durable log up to here (whole segments), after the rest.
    compact: int = 0
    # The marker is that of the snapshot the member started from (for the stats only).
    loaded: bool = False


@dataclass(slots=True)
class SnapWrite:
    """A snapshot file on its way to the disk: our own, or one streamed from `leader`."""

    snap: Snap
    leader: int | None = None
    term: int = 0  # the leader's term, for the InstallSnapshot stepped in once durable


@dataclass(slots=True)
class Transfer:
    """A leader's driver streaming its newest snapshot to `dst`."""

    src: int
    dst: int
    term: int
    index: int  # what the core asked for; the file sent may be newer
    src_life: int
    dst_life: int


@dataclass(slots=True)
class Member:
    id: int
    node: RaftNode | None = None
    life: int = 0  # incarnation: bumped at every start
    stopped: bool = False  # told it was removed: shut down for good
    # Stable storage: survives crashes. The durable log holds entries
    # log_offset+1.. (log_offset_term is the term at log_offset, None when
    # that entry went with a deleted segment).
    hard_state: HardState = NO_HARD_STATE
    log: list[Entry] = field(default_factory=list)
    log_offset: int = 0
    log_offset_term: int | None = 0
    snapshots: dict[int, Snap] = field(default_factory=dict)  # durable files by index
    # Volatile: lost on a crash.
    loaded: SnapshotRef | None = None  # the snapshot this incarnation started from
    pending: deque[Write] = field(default_factory=deque)
    snap_writes: deque[SnapWrite] = field(default_factory=deque)
    applied: list[Entry] = field(default_factory=list)
    sessions: SessionTable = field(default_factory=SessionTable)

    def newest_snapshot(self) -> Snap | None:
        if not self.snapshots:
            return None
        return self.snapshots[max(self.snapshots)]

    def durable_last(self) -> int:
        return self.log_offset + len(self.log)


class Simulation:
    def __init__(
        self,
        seed: int,
        n_nodes: int,
        steps: int,
        *,
        faults: Faults | None = None,
        config: Config | None = None,
        policy: SnapshotPolicy | None = None,
        test_id: str | None = None,
        workarounds: frozenset[str] | set[str] | None = None,
        bugs: frozenset[str] | set[str] = frozenset(),
    ):
        self.seed = seed
        # Both bugs are fixed in the core: no workaround by default. They stay
        # switchable (RAFT_SIM_WORKAROUNDS), to steer around them when they are put
        # back (`bugs`, RAFT_SIM_BUGS) or come back.
        self.workarounds = frozenset(() if workarounds is None else workarounds)
        unknown = self.workarounds - KNOWN_CORE_BUGS
        if unknown:
            raise ValueError(f"no workaround for {sorted(unknown)}")
        self.bugs = frozenset(bugs)
        self.node_class = node_class(self.bugs)
        self.test_id = test_id
        self.n_nodes = n_nodes
        self.steps = steps
        self.rng = rng = random.Random(seed)
        self.faults = faults if faults is not None else Faults.draw(rng)
        if config is None:
            config = draw_config(rng)
            # Drawn apart from the main stream, which the pinned seeds depend on.
            pre_vote, check_quorum = random.Random(seed * 7919 + 17).choice(
                ((True, True),) * 5 + ((True, False), (False, True), (False, False))
            )
            config = replace(config, pre_vote=pre_vote, check_quorum=check_quorum)
        self.config = config
        voters = range(1, n_nodes + 1)
        pool = range(1, n_nodes + SPARES + 1)
        self.initial = Membership({i: address(i) for i in voters})
        self.disk_speed = {i: rng.choice((0.05, 0.3, 1.0, 1.0)) for i in pool}
        self.policy = policy if policy is not None else SnapshotPolicy.draw(rng, self.faults)
        self.members = {i: Member(i) for i in pool}
        self.max_id = n_nodes + SPARES + EXTRA_IDS
        # Ids some proposed configuration (or the initial one) named: the rest are spares.
        self.named: set[int] = set(voters)
        # Ids whose removal was proposed: never added again (they would rejoin with old state).
        self.retired: set[int] = set()
        # The committed sequence of configurations: (index of its entry, configuration).
        self.configs: list[tuple[int, Membership]] = [(0, self.initial)]
        self.config_indexes: list[int] = [0]
        self.transfer_asked: dict[int, int] = {}  # term -> member its leader handed over to
        self.net: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        self.transfers: list[Transfer] = []
        self.reports: list[tuple[int, int, int]] = []  # late failure reports: src, life, dst
        self.step_no = 0
        self.events: deque[tuple[int, str, Any]] = deque(maxlen=80)
        self.trace = bool(os.environ.get("RAFT_SIM_TRACE"))
        # Invariant bookkeeping.
        self.leaders: dict[int, int] = {}  # term -> the one node that led it
        self.entries_seen: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.global_applied: list[Entry] = []
        self.committed_data: set[bytes] = set()
        self.commit_by_term: dict[int, int] = {}  # node term when seen -> highest commit
        self.max_commit = 0  # the highest commit index any node ever had
        self.proposed = 0
        self.next_command = 0
        # Linearizable reads asked for and not yet answered: id -> (node id, the
        # highest commit index any node had when it was asked).
        self.reads: dict[int, tuple[int, int]] = {}
        self.next_read = 0
        # Client sessions: each client's current request (seq, command count), and
        # where each (client, seq, position) took effect in the committed log.
        self.session_clients = {client: (1, 1) for client in range(1, 4)}
        self.session_effects: dict[tuple[int, int, int], int] = {}
        self.stats: Counter[str] = Counter()  # what the run actually exercised
        self._base_step: Callable[[], None] = self._deliver_or_tick  # set by _run
        for m in self.members.values():
            self._start(m)

    # ------------------------------------------------------------ reporting

    def fail(self, what: str) -> SimulationFailure:
        lines = [
            what,
            f"  seed={self.seed} nodes={self.n_nodes} steps={self.steps} at step {self.step_no}",
            f"  faults={self.faults}",
            f"  config={self.config}",
            f"  policy={self.policy}",
            "  replay with:",
            f"    RAFT_SIM_SEED={self.seed} RAFT_SIM_NODES={self.n_nodes} "
            f"RAFT_SIM_STEPS={self.steps} "
            + ("" if not self.workarounds else
               f"RAFT_SIM_WORKAROUNDS={','.join(sorted(self.workarounds)) or 'none'} ")
            + ("" if not self.bugs else f"RAFT_SIM_BUGS={','.join(sorted(self.bugs))} ")
            + f"PYTHONPATH=. .venv/bin/pytest {REPLAY_TEST} -x",
            "    (add RAFT_SIM_TRACE=1 to print every event)",
        ]
        if self.test_id is not None:
            lines.append(f"    or: PYTHONPATH=. .venv/bin/pytest '{self.test_id}'")
        lines.append("  last events:")
        lines.extend(f"    {step:6d} {kind:8s} {obj}" for step, kind, obj in self.events)
        return SimulationFailure("\n".join(lines))

    def event(self, kind: str, obj: Any) -> None:
        self.stats[kind] += 1
        self.events.append((self.step_no, kind, obj))
        if self.trace:
            print(f"{self.step_no:6d} {kind:8s} {obj}")

    # ------------------------------------------------------------- main loop

    def run(self) -> None:
        try:
            self._run()
        except SimulationFailure:
            raise
        except Exception as exc:
            raise self.fail(f"{type(exc).__name__}: {exc}") from exc

    def _run(self) -> None:
        f = self.faults
        p = self.policy
        base = (
            (50.0, self._deliver_or_tick),
            (f.ticks, self._tick),
            (f.disk, self._flush_one),
            (4.0, self._propose),
            (2.0, self._read),
            (2.0, self._session_request),
            (f.partitions + f.crashes + f.heal, self._fault),
            (f.reconfig, self._reconfigure),
        )
        snapshots = (
            (p.every, self._snapshot_one),
            (p.disk, self._snap_flush_one),
            (p.stream, self._stream_one),
        )
        self._base_step = self._chooser(base)
        step_once = self._chooser(base + snapshots)
        for step in range(self.steps):
            self.step_no = step
            step_once()
            if step % FULL_CHECK_EVERY == 0:
                self.full_check()
        self.step_no = self.steps
        self.settle()

    def _chooser(self, actions: tuple[tuple[float, Callable[[], None]], ...]) -> Callable[[], None]:
        """A step that runs one of `actions`, picked with probability proportional to weight."""
        bounds = list(accumulate(w for w, _ in actions))
        handlers = [a for _, a in actions]
        total = bounds[-1]
        random_ = self.rng.random

        def step() -> None:
            r = random_() * total
            handlers[min(bisect_right(bounds, r), len(handlers) - 1)]()

        return step

    # ----------------------------------------------------------------- steps

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.node is not None]

    def crashed(self) -> list[Member]:
        return [m for m in self.members.values() if m.node is None and not m.stopped]

    def existing(self) -> list[int]:
        """Ids of the nodes that exist (running or crashed, not stopped for good)."""
        return [i for i, m in self.members.items() if not m.stopped]

    def committed_membership(self, index: int) -> Membership:
        """The configuration in force at `index` of the committed history."""
        return self.configs[bisect_right(self.config_indexes, index) - 1][1]

    def _deliver_or_tick(self) -> None:
        if self.net:
            self._deliver()
        else:
            self._tick()

    def _tick(self) -> None:
        live = self.live()
        if not live:
            crashed = self.crashed()
            if crashed:
                self._restart(self.rng.choice(crashed))
            return
        m = self.rng.choice(live)
        node = m.node
        assert node is not None
        self.event("tick", m.id)
        node.tick()
        if self.rng.random() < self.faults.batch:
            self._feed_more(m)
        self._drive(m)

    def _deliver(self) -> None:
        net = self.net
        i = self.rng.randrange(len(net)) if self.rng.random() < self.faults.reorder else 0
        msg = net.pop(i)
        m = self.members.get(msg.dst)
        if m is None or m.node is None or (msg.src, msg.dst) in self.blocked:
            self.event("lost", msg)
            return
        self.event("deliver", msg)
        self._step(m, msg)
        if self.rng.random() < self.faults.batch:
            self._feed_more(m)
        self._drive(m)

    def _step(self, m: Member, msg: Message) -> None:
        node = m.node
        assert node is not None
        if isinstance(msg, HeartbeatResponse) and msg.term == node.term:
            # Only to count it: the heartbeat round that ends a snapshot's wait.
            pr = node.progress.get(msg.src)
            if (
                pr is not None
                and pr.pending_snapshot
                and pr.snapshot_rounds + 1 >= self.config.snapshot_timeout_rounds
            ):
                self.event("snap-timeout", (m.id, msg.src, pr.pending_snapshot))
        if isinstance(msg, AppendEntries) and node._entries:
            # Entries not yet handed out in a Ready: an append of the same batch may cut
            # them off the log (the path of the "ready-entries-superseded" bug).
            last = node._entries[-1]
            node.step(msg)
            if node.log.term(last.index) != last.term:
                self.event("cut-unhanded", (m.id, last))
            return
        node.step(msg)

    def _feed_more(self, m: Member) -> None:
        """Hand the node several more inputs before it is asked for a Ready."""
        node = m.node
        assert node is not None
        budget = self.rng.randint(1, 6)
        i = 0
        net = self.net
        while budget and i < len(net):
            msg = net[i]
            if msg.dst == m.id and (msg.src, msg.dst) not in self.blocked:
                del net[i]
                self.event("deliver+", msg)
                self._step(m, msg)
                budget -= 1
            else:
                i += 1
        if self.rng.random() < 0.3:
            self.event("tick+", m.id)
            node.tick()

    def _propose(self) -> None:
        live = self.live()
        leaders = [m for m in live if m.node is not None and m.node.role is Role.LEADER]
        if not leaders:
            if live:
                m = self.rng.choice(live)
                assert m.node is not None
                try:
                    m.node.propose([b"nobody"])
                except NotLeaderError:
                    return
                raise self.fail(f"node {m.id} accepted a proposal as {m.node.role}")
            return
        self._propose_to(self.rng.choice(leaders))

    def _propose_to(self, m: Member) -> None:
        """A client proposes a few commands to the leader `m`."""
        node = m.node
        assert node is not None and node.role is Role.LEADER
        count = self.rng.randint(1, 3)
        datas = []
        for _ in range(count):
            datas.append(b"c%d" % self.next_command)
            self.next_command += 1
        try:
            first, term = node.propose(datas)
        except NotLeaderError:
            self._not_yet_leading(m, "propose")
            return
        except TransferInProgress as exc:
            if exc.transferee != node.transferee or node.transferee is None:
                raise self.fail(f"node {m.id}: {exc!r} with transferee {node.transferee}") from None
            self.event("propose-busy", (m.id, exc.transferee))
            return
        if term != node.term or first + count - 1 != node.log.last_index:
            raise self.fail(f"propose returned ({first}, {term}) for {count} commands")
        self.proposed += count
        self.event("propose", (m.id, first, term, datas))
        if self.rng.random() < self.faults.batch:
            self._feed_more(m)
        self._drive(m)

    def _read(self) -> None:
        """A client asks whoever believes it leads for a linearizable read (ReadIndex)."""
        live = self.live()
        if not live:
            return
        leaders = [m for m in live if m.node is not None and m.node.role is Role.LEADER]
        r = self.rng.random()
        if leaders and r < 0.4:
            # A leader a newer term may have deposed is where a stale read would come from.
            m = min(leaders, key=lambda each: each.node.term if each.node else 0)
        else:
            m = self.rng.choice(leaders if leaders and r < 0.9 else live)
        node = m.node
        assert node is not None
        read_id = self.next_read
        self.next_read += 1
        # Every write acknowledged so far is committed at or below this.
        floor = max(self.max_commit, *(n.node.commit for n in live if n.node is not None))
        try:
            node.read_index(read_id)
        except NotLeaderError:
            if node.role is Role.LEADER:
                raise self.fail(f"leader {m.id} refused a read") from None
            return
        if node.role is not Role.LEADER:
            raise self.fail(f"node {m.id} took a read as {node.role}")
        self.reads[read_id] = (m.id, floor)
        self.event("read", (m.id, read_id, floor, node.commit))
        self._drive(m)

    def _session_request(self) -> None:
        """A client with a session sends its request, or sends it again: to whoever leads
        now, after a timeout or a lost reply. Once every command of it took effect, the
        client may hear the answer and go on to its next request."""
        client = self.rng.choice(list(self.session_clients))
        seq, count = self.session_clients[client]
        if all((client, seq, pos) in self.session_effects for pos in range(count)):
            if self.rng.random() < 0.5:
                self.session_clients[client] = (seq + 1, self.rng.randint(1, 3))
                return
        leaders = [m for m in self.live() if m.node is not None and m.node.role is Role.LEADER]
        if not leaders:
            return
        m = self.rng.choice(leaders)
        node = m.node
        assert node is not None
        # The stamp differs between tries; the command and its place in the request do not.
        datas = [cbor2.dumps([client, seq, pos, self.step_no, f"s{client}.{seq}.{pos}"])
                 for pos in range(count)]
        try:
            first, _ = node.propose(datas, SESSION)
        except (NotLeaderError, TransferInProgress):
            return
        self.event("session-send", (m.id, first, client, seq, count))
        self._drive(m)

    def _check_reads(self, m: Member, ready: Ready) -> None:
        """Reads a node says are safe must see every write acknowledged before they were asked."""
        for read_id, index in ready.reads:
            asked = self.reads.pop(read_id, None)
            if asked is None or asked[0] != m.id:
                raise self.fail(f"node {m.id}: answered read {read_id}, asked as {asked}")
            if index < asked[1]:
                raise self.fail(f"node {m.id}: stale read {read_id} at index {index}: index "
                                f"{asked[1]} was committed before it was asked")
            if index > self.max_commit and index > (m.node.commit if m.node else 0):
                raise self.fail(f"node {m.id}: read {read_id} at uncommitted index {index}")
            self.event("read-ok", (m.id, read_id, index))
        for read_id in ready.dropped_reads:
            asked = self.reads.pop(read_id, None)
            if asked is None or asked[0] != m.id:
                raise self.fail(f"node {m.id}: dropped read {read_id}, asked as {asked}")
            self.event("read-dropped", (m.id, read_id))

    def _forget_reads(self, m: Member) -> None:
        """A crashed or stopped node answers none of the reads it was asked."""
        for read_id in [r for r, (node_id, _) in self.reads.items() if node_id == m.id]:
            del self.reads[read_id]
            self.stats["read-lost"] += 1

    # ------------------------------------------------------------ membership

    def _reconfigure(self) -> None:
        """Ask whoever believes it is leader for a membership change or a transfer."""
        rng = self.rng
        live = self.live()
        leaders = [m for m in live if m.node is not None and m.node.role is Role.LEADER]
        if not leaders:
            if not live or rng.random() < 0.7:
                self._base_step()  # mostly: do not skew the rest while nobody leads
                return
            m = rng.choice(live)
            node = m.node
            assert node is not None
            try:
                if rng.random() < 0.5:
                    node.propose_config(node.membership)
                else:
                    node.transfer_leadership(rng.choice(list(node.membership.voters)))
            except NotLeaderError:
                self.event("cfg-not-leader", m.id)
                return
            raise self.fail(f"node {m.id} took a change as {node.role}")
        m = rng.choice(leaders)
        node = m.node
        assert node is not None
        old = node.membership
        # Lean towards growing when few voters are left, so that the configuration wanders.
        few = len(old.voters) <= 2
        weights = (
            (5.0 if few else 3.0) if len(old.learners) < 2 else 0.5,  # add a learner
            (8.0 if few else 4.0) if old.learners and len(old.voters) < MAX_VOTERS else 0.0,
            1.0 if few else 3.0,  # remove a member
            2.0,  # hand leadership over
            1.0,  # something the core must refuse
        )
        kind = rng.choices(("learner", "promote", "remove", "transfer", "bogus"), weights)[0]
        if kind == "learner":
            if len(old.learners) >= 3:
                return
            spares = [i for i in self.existing() if i not in old.members and i not in self.retired]
            if not spares:
                minted = self._mint()
                if minted is None:
                    return
                spares = [minted.id]
            new_id = rng.choice(spares)
            if self._propose_config(m, old.add_learner(new_id, address(new_id)), "cfg-learner"):
                self.named.add(new_id)
                fresh = [i for i in self.existing() if i not in self.named]
                if len(fresh) < SPARES:
                    self._mint()
        elif kind == "promote":
            if not old.learners or len(old.voters) >= MAX_VOTERS:
                return
            caught_up = [i for i in old.learners
                         if i in node.progress and node.progress[i].match >= node.commit]
            early = not caught_up or rng.random() < 0.4
            learner = rng.choice(list(old.learners) if early else caught_up)
            what = "cfg-promote" if learner in caught_up else "cfg-promote-early"
            self._propose_config(m, old.promote(learner), what)
        elif kind == "remove":
            if old.learners and rng.random() < 0.3:
                gone = rng.choice(list(old.learners))
                what = "cfg-remove-learner"
            elif m.id in old.voters and rng.random() < 0.3:
                gone = m.id
                what = "cfg-remove-leader"
            else:
                gone = rng.choice(list(old.voters))
                what = "cfg-remove-leader" if gone == m.id else "cfg-remove-voter"
            if (
                gone in old.voters
                and len(old.voters) == 2
                and "two-voter-removal-deadlock" in self.workarounds
            ):
                self.event("cfg-keep-two", (m.id, gone))
                return
            try:
                new = old.remove(gone)
            except ConfigChangeError:
                self.event("cfg-last-voter", (m.id, gone))
                return
            if self._propose_config(m, new, what):
                self.retired.add(gone)
        elif kind == "transfer":
            self._transfer(m)
        else:
            # Changes the core must refuse: two voters at once, or none at all.
            if rng.random() < 0.3:
                self._propose_config(m, old, "cfg-same")
                return
            a, b = self.max_id + 1, self.max_id + 2  # ids no node has
            twice = Membership({**old.voters, a: address(a), b: address(b)}, old.learners)
            if old.learners and rng.random() < 0.5:
                # Promote a learner and drop a voter in one go.
                learner = rng.choice(list(old.learners))
                dropped = rng.choice(list(old.voters))
                twice = old.promote(learner)
                twice = Membership(
                    {k: v for k, v in twice.voters.items() if k != dropped}, twice.learners
                )
            self._propose_config(m, twice, "cfg-two")

    def _propose_config(self, m: Member, new: Membership, what: str) -> bool:
        """Propose `new` to the leader `m`; fail if the core's answer is not the expected one."""
        node = m.node
        assert node is not None
        old = node.membership
        moved = set(old.voters) ^ set(new.voters)
        valid = new != old and len(moved) <= 1 and bool(new.voters)
        transferring = node.transferee
        config_index = node.config_index
        # One change at a time, and only after an entry of the leader's term committed.
        fresh = node.log.term(node.commit) != node.term
        settled = config_index <= node.commit and not fresh
        try:
            index = node.propose_config(new)
        except NotLeaderError:
            self._not_yet_leading(m, what)
            return False
        except TransferInProgress as exc:
            if transferring is None or exc.transferee != transferring:
                raise self.fail(f"node {m.id}: {what} {new}: {exc!r} (transferee "
                                f"{transferring})") from None
            self.event("cfg-busy", (m.id, what, transferring))
            return False
        except ConfigChangeError as exc:
            if transferring is not None or (valid and settled):
                raise self.fail(
                    f"node {m.id}: refused {what} {old} -> {new} ({exc}); config index "
                    f"{config_index}, commit {node.commit} of term "
                    f"{node.log.term(node.commit)} in term {node.term}, transferee {transferring}"
                ) from None
            # Only "not yet an entry of this term" is worth retrying as it is.
            if getattr(exc, "transient", fresh) != fresh:
                raise self.fail(f"node {m.id}: refused {what} with {exc!r}, transient "
                                f"{getattr(exc, 'transient', None)}, leader fresh {fresh}"
                                ) from None
            self.event("cfg-refused", (m.id, what, str(exc)))
            return False
        if transferring is not None or not (valid and settled):
            raise self.fail(
                f"node {m.id}: accepted {what} {old} -> {new} at {index}; config index was "
                f"{config_index}, commit {node.commit} of term "
                f"{node.log.term(node.commit)} in term {node.term}, transferee {transferring}"
            )
        if (index, node.config_index, node.membership) != (node.log.last_index, index, new):
            raise self.fail(f"node {m.id}: {what} at {index}, yet config index "
                            f"{node.config_index}, last index {node.log.last_index}, "
                            f"membership {node.membership}")
        self.event(what, (m.id, node.term, index, new))
        self._drive(m)
        return True

    def _not_yet_leading(self, m: Member, what: str) -> None:
        """A leader refused `what` as not the leader: only while its term is not durable."""
        node = m.node
        assert node is not None
        if m.hard_state.term >= node.term:
            raise self.fail(f"node {m.id}: leader of term {node.term} (durable) refused {what} "
                            f"with NotLeaderError")
        self.event("leader-unsaved", (m.id, node.term, what))

    def _transfer(self, m: Member) -> None:
        node = m.node
        assert node is not None
        members = node.membership
        voters = [v for v in members.voters if v != m.id]
        if voters and self.rng.random() < 0.85:
            target = self.rng.choice(voters)
        else:
            target = self.rng.choice([m.id, *members.learners, *self.existing()])
        valid = target != m.id and target in members.voters
        try:
            node.transfer_leadership(target)
        except ConfigChangeError as exc:
            if valid:
                raise self.fail(f"node {m.id}: refused to hand over to voter {target}: "
                                f"{exc}") from None
            self.event("transfer-refused", (m.id, target, str(exc)))
            return
        if not valid or node.transferee not in (target, None):
            raise self.fail(f"node {m.id}: hands over to {target} ({members}), transferee "
                            f"{node.transferee}")
        self.transfer_asked[node.term] = target
        self.event("transfer", (m.id, node.term, target))
        self._drive(m)

    def _mint(self) -> Member | None:
        """A new spare node with a fresh id, outside the configuration."""
        new_id = max(self.members) + 1
        if new_id > self.max_id:
            return None
        m = self.members[new_id] = Member(new_id)
        self.disk_speed[new_id] = self.rng.choice((0.05, 0.3, 1.0, 1.0))
        self.event("spare", new_id)
        self._start(m)
        self._drive(m)
        return m

    def _fault(self) -> None:
        f = self.faults
        rng = self.rng
        r = rng.random() * (f.partitions + f.crashes + f.heal)
        if r < f.partitions:
            self._partition()
        elif r < f.partitions + f.crashes:
            live = self.live()
            if live:
                # Members with a snapshot on its way in, or being written, are
                # interesting victims too.
                installing = [m for m in live if self._installing(m)]
                if installing and rng.random() < 0.5:
                    self._crash(rng.choice(installing))
                    return
                writing = [m for m in live if m.snap_writes]
                if writing and rng.random() < 0.3:
                    self._crash(rng.choice(writing))
                    return
                # Leaders are the interesting victims: half the crashes go to one.
                leaders = [m for m in live if m.node is not None and m.node.role is Role.LEADER]
                self._crash(rng.choice(leaders if leaders and rng.random() < 0.5 else live))
        else:
            crashed = self.crashed()
            if crashed and (not self.blocked or rng.random() < 0.5):
                self._restart(rng.choice(crashed))
            elif self.blocked:
                self.event("heal", None)
                self.blocked.clear()

    def _partition(self) -> None:
        rng = self.rng
        ids = self.existing()
        self.blocked.clear()
        if len(ids) < 2:
            return
        kind = rng.randrange(4)
        leaders = [m.id for m in self.live() if m.node is not None and m.node.role is Role.LEADER]
        if kind == 0 or (kind == 3 and not leaders):
            # Symmetric cut into two sides.
            rng.shuffle(ids)
            side = set(ids[: rng.randint(1, len(ids) - 1)])
        elif kind == 3:
            # Strand a leader in a minority, so that it keeps appending alone.
            leader = rng.choice(leaders)
            others = [i for i in ids if i != leader]
            rng.shuffle(others)
            side = {leader, *others[: rng.randint(0, (len(ids) - 1) // 2)]}
        else:
            side = set()
        if side:
            for a in ids:
                for b in ids:
                    if (a in side) != (b in side):
                        self.blocked.add((a, b))
        elif kind == 1:
            # One node hears everyone but nobody hears it (or the reverse).
            victim = rng.choice(ids)
            outgoing = rng.random() < 0.5
            for other in ids:
                if other != victim:
                    self.blocked.add((victim, other) if outgoing else (other, victim))
        else:
            # Random one-way links.
            for a in ids:
                for b in ids:
                    if a != b and rng.random() < 0.3:
                        self.blocked.add((a, b))
        self.event("cut", sorted(self.blocked))

    def _installing(self, m: Member) -> bool:
        """Whether a snapshot from a leader is coming in, being stored or installed."""
        return (
            any(w.leader is not None for w in m.snap_writes)
            or any(w.snapshot is not None and not w.loaded for w in m.pending)
            or any(t.dst == m.id and t.dst_life == m.life for t in self.transfers)
        )

    def _leads_unsaved_term(self, m: Member) -> bool:
        """Whether `m` led a term above the one on its disk (only a lone voter can)."""
        node = m.node
        assert node is not None
        leaders = self.leaders
        return any(leaders.get(t) == m.id for t in range(m.hard_state.term + 1, node.term + 1))

    def _crash(self, m: Member) -> None:
        if self._leads_unsaved_term(m):
            # The path of the "single-voter-unsaved-term" bug.
            if "single-voter-unsaved-term" in self.workarounds:
                self.event("crash-spared", m.id)
                return
            self.event("crash-unsaved-leader", m.id)
        self.event("crash", (m.id, len(m.pending)))
        if any(w.leader is None for w in m.snap_writes):
            self.event("crash-snapshot", m.id)  # our own snapshot file is lost
        if self._installing(m):
            self.event("crash-install", m.id)  # receiving, storing or installing one
        if any(t.src == m.id and t.src_life == m.life for t in self.transfers):
            self.event("crash-stream", m.id)  # a leader dies while streaming
        m.node = None
        self._forget_reads(m)
        m.pending.clear()  # writes not yet durable vanish, with their held messages
        m.snap_writes.clear()  # and so do snapshot files not yet durable
        m.applied = []
        m.sessions = SessionTable()

    def _start(self, m: Member) -> None:
        m.life += 1
        snap = m.newest_snapshot()
        ref = snap.ref() if snap is not None else None
        if snap is not None:
            tail = self._durable_tail(m, None)
            if snap.index <= tail[0] and snap.index > m.log_offset and (
                m.log[snap.index - m.log_offset - 1].term != snap.term
            ):
                self.event("restart-over-conflict", (m.id, snap.ref()))
        m.node = self.node_class(
            m.id,
            # As the server will: the snapshot's configuration, else the initial one.
            snap.membership if snap is not None else self.initial,
            hard_state=m.hard_state,
            entries=list(m.log),
            snapshot=ref,
            config=self.config,
            rng=random.Random(self.rng.getrandbits(64)),
        )
        m.loaded = ref
        if snap is not None:
            self._check_snapshot(m, snap, "restores")
            m.applied = list(snap.content)
            m.sessions = SessionTable.decode(snap.sessions)
        else:
            m.applied = []
            m.sessions = SessionTable()
        node = m.node
        self._check_log(m)
        if node.log.last_term > node.term:
            raise self.fail(f"node {m.id}: restarted in term {node.term}, behind its log's "
                            f"last term {node.log.last_term}")
        if node.applied != len(m.applied) or node.commit < node.applied:
            raise self.fail(f"node {m.id}: restarted with applied {node.applied}, commit "
                            f"{node.commit}, state machine at {len(m.applied)}")

    def _restart(self, m: Member) -> None:
        snap = m.newest_snapshot()
        self.event("restart", (m.id, m.hard_state, m.log_offset, m.durable_last(),
                               snap.ref() if snap else None))
        self._start(m)
        self._drive(m)

    def _flush_one(self) -> None:
        busy = [m for m in self.members.values() if m.pending]
        if busy:
            # Disks differ in speed: a slow one lets its node fall behind its own acks.
            speed = self.disk_speed
            weights = [speed[m.id] for m in busy]
            m = self.rng.choices(busy, weights)[0]
            if self.rng.random() < self.faults.coalesce:
                # Like a disk thread that syncs a batch of queued writes at once and
                # reports only the last entry written.
                self._flush(m, self.rng.randint(1, len(m.pending)))
            else:
                self._flush(m)
        elif self.net:
            self._deliver()

    # ------------------------------------------------------------- snapshots

    def _snapshot_one(self) -> None:
        live = self.live()
        if not live:
            self._base_step()
            return
        m = self.rng.choice(live)
        node = m.node
        assert node is not None
        if self.rng.random() < 0.2:
            # compact_log may be asked for more than the snapshot covers.
            upto = self.rng.randint(0, node.log.last_index + 2)
            before = node.log.offset
            node.compact_log(upto)
            self.event("compact-ask", (m.id, upto, before, node.log.offset))
            if node.log.offset > before:
                self.event("compact", (m.id, before, node.log.offset))
                self._queue_compaction(m, node.log.offset)
            self._drive(m)
        else:
            self._take_snapshot(m)

    def _take_snapshot(self, m: Member) -> None:
        """Start writing a snapshot of what `m` applied so far (one at a time)."""
        index = len(m.applied)
        if not index or any(w.leader is None for w in m.snap_writes):
            return
        if index <= max(m.snapshots, default=0):
            return
        node = m.node
        assert node is not None
        # As the server will: the file records the configuration as of its index.
        snap = Snap(index, m.applied[-1].term, tuple(m.applied), node.membership_at(index),
                    m.sessions.encode())
        m.snap_writes.append(SnapWrite(snap))
        self.event("snapshot", (m.id, index, snap.term))

    def _maybe_snapshot(self, m: Member) -> None:
        threshold = self.policy.threshold
        if threshold is None:
            return
        base = max(m.snapshots, default=0)
        for w in m.snap_writes:
            if w.leader is None:
                return  # one of our own is being written already
        if len(m.applied) - base >= threshold:
            self._take_snapshot(m)

    def _snap_flush_one(self) -> None:
        busy = [m for m in self.members.values() if m.snap_writes]
        if busy:
            speed = self.disk_speed
            m = self.rng.choices(busy, [speed[m.id] for m in busy])[0]
            self._snap_flush(m)
        else:
            # Idle snapshot machinery must not skew the rest (more ticks per disk write
            # would mean fewer elections that succeed): draw an ordinary step instead.
            self._base_step()

    def _snap_flush(self, m: Member) -> None:
        """The oldest snapshot file `m` is writing becomes durable."""
        node = m.node
        assert node is not None  # a crash drops the writes in progress
        w = m.snap_writes.popleft()
        snap = w.snap
        self._check_snapshot(m, snap, "stores")
        old = m.snapshots.get(snap.index)
        if old is not None and old != snap:
            raise self.fail(f"node {m.id}: two snapshots at {snap.index} differ")
        m.snapshots[snap.index] = snap
        if w.leader is None:
            self.event("snap-durable", (m.id, snap.index, snap.term))
            node.snapshot_taken(snap.index, snap.term)
            keep = self.rng.randint(0, self.policy.keep_max)
            before = node.log.offset
            node.compact_log(snap.index - keep)
            if node.log.offset > before:
                self.event("compact", (m.id, before, node.log.offset))
                self._queue_compaction(m, node.log.offset)
            self._drive(m)
        else:
            self.event("snap-stored", (m.id, snap.index, snap.term, w.leader, w.term))
            held = node.log.term(snap.index)
            if held is not None and held != snap.term:
                self.event("snap-over-conflict", (m.id, snap.index, held))
            if self.rng.random() < self.faults.batch:
                self._feed_more(m)
            if w.term >= node.term and snap.index <= node.commit:
                # Already covered: answered at once (the "unpersisted-install-ack" path).
                self.event("snap-covered", (m.id, snap.index, node.commit))
            node.step(InstallSnapshot(
                w.term, w.leader, m.id, snap.index, snap.term, snap.membership.encode()
            ))
            if self.rng.random() < self.faults.batch:
                self._feed_more(m)
            self._drive(m)
            if m.node is not None and self.rng.random() < self.policy.snipe:
                self._crash(m)
        # Only the newest files stay (any Ready naming this one was handled above).
        for index in sorted(m.snapshots)[:-SNAPSHOT_FILES_KEPT]:
            del m.snapshots[index]

    def _queue_compaction(self, m: Member, upto: int) -> None:
        """Compact the durable log behind whatever is queued, as the disk writer does."""
        if m.pending:
            m.pending[-1].compact = max(m.pending[-1].compact, upto)
        else:
            self._compact_disk(m, upto)

    def _compact_disk(self, m: Member, upto: int) -> None:
        """Delete the durable log's whole segments at or below `upto` (under a durable snapshot)."""
        newest = m.newest_snapshot()
        if newest is None or upto > newest.index:
            raise self.fail(f"node {m.id}: compacting to {upto} beyond its durable snapshots")
        seg = self.policy.segment
        cut = min(upto // seg * seg, m.durable_last())
        if cut <= m.log_offset:
            return
        self.event("wal-compact", (m.id, m.log_offset, cut))
        del m.log[: cut - m.log_offset]
        m.log_offset = cut
        m.log_offset_term = None

    def _start_transfer(self, m: Member, msg: InstallSnapshot) -> None:
        node = m.node
        assert node is not None
        if msg.term != node.term or node.role is not Role.LEADER:
            raise self.fail(f"node {m.id}: {msg} from a {node.role.value} of term {node.term}")
        if msg.index < 1 or (msg.index, msg.snapshot_term) != (
            node.snapshot.index, node.snapshot.term
        ):
            raise self.fail(f"node {m.id}: {msg} does not name its snapshot {node.snapshot}")
        newest = m.newest_snapshot()
        if newest is None or newest.index < msg.index:
            raise self.fail(f"node {m.id}: {msg} but its newest durable snapshot is {newest}")
        self._check_ref(m, node.snapshot, "asks to send")
        if Membership.decode(msg.membership) != self.committed_membership(msg.index):
            raise self.fail(f"node {m.id}: {msg} carries another configuration than "
                            f"{self.committed_membership(msg.index)}, the committed one there")
        dst = self.members[msg.dst]
        self.event("snap-send", msg)
        self.transfers.append(
            Transfer(msg.src, msg.dst, msg.term, msg.index, m.life,
                     dst.life if dst.node is not None else -1)
        )

    def _stream_one(self) -> None:
        jobs = len(self.transfers) + len(self.reports)
        if not jobs:
            self._base_step()
            return
        k = self.rng.randrange(jobs)
        if k < len(self.transfers):
            self._finish_transfer(self.transfers.pop(k))
        else:
            self._late_report(self.reports.pop(k - len(self.transfers)))

    def _finish_transfer(self, t: Transfer) -> None:
        src = self.members[t.src]
        dst = self.members[t.dst]
        if src.node is None or src.life != t.src_life:
            self.event("snap-abort", t)  # the sender died: nobody is left to report
            return
        if (
            dst.node is None
            or dst.life != t.dst_life
            or (t.src, t.dst) in self.blocked
            or self.rng.random() < self.policy.stream_loss
        ):
            self.event("snap-fail", t)
            r = self.rng.random()
            if r < self.policy.report:
                self.event("snap-report", (t.src, t.dst))
                src.node.report_snapshot(t.dst, delivered=False)
                self._drive(src)
            elif r < self.policy.report + self.policy.late_report:
                self.reports.append((t.src, t.src_life, t.dst))
            return
        # The stream sends the newest file the leader has when it runs.
        snap = src.newest_snapshot()
        if snap is None or snap.index < t.index:
            raise self.fail(f"node {t.src}: streams {snap} for a request at {t.index}")
        self._check_snapshot(dst, snap, "receives")
        self.event("snap-recv", (t.dst, snap.index, snap.term, t.src, t.term))
        if snap.index > t.index:
            self.event("snap-newer", (t.index, snap.index))
        dst.snap_writes.append(SnapWrite(snap, t.src, t.term))
        src.node.report_snapshot(t.dst, delivered=True)
        self._drive(src)
        if self.rng.random() < self.policy.snipe:
            self._crash(dst)

    def _late_report(self, report: tuple[int, int, int]) -> None:
        src_id, life, dst = report
        src = self.members[src_id]
        if src.node is None or src.life != life:
            return
        self.event("snap-report", (src_id, dst, "late"))
        src.node.report_snapshot(dst, delivered=False)
        self._drive(src)

    def _install(self, m: Member, ref: SnapshotRef) -> None:
        """The driver's part of a Ready's snapshot: restore the state machine from the file."""
        snap = m.snapshots.get(ref.index)
        if snap is None or snap.term != ref.term:
            raise self.fail(f"node {m.id}: Ready names snapshot {ref}, which is not on its disk")
        self._check_snapshot(m, snap, "installs")
        if ref.index < len(m.applied):
            raise self.fail(
                f"node {m.id}: installing {ref} would move its state machine back from "
                f"{len(m.applied)} (and re-apply entries)"
            )
        self.event("install", (m.id, ref.index, ref.term))
        m.applied = list(snap.content)
        m.sessions = SessionTable.decode(snap.sessions)
        self._note_commit(m, ref.index)

    # ---------------------------------------------------------------- driver

    def _send(self, msg: Message) -> None:
        if (msg.src, msg.dst) in self.blocked:
            return
        f = self.faults
        r = self.rng.random()
        if r < f.drop:
            return
        net = self.net
        net.append(msg)
        if r > 1.0 - f.duplicate:
            net.insert(self.rng.randrange(len(net) + 1), msg)

    def _drive(self, m: Member) -> None:
        """Collect the node's Ready and act on it as the driver contract says."""
        node = m.node
        assert node is not None
        if node.has_ready():
            was_leader = node.role is Role.LEADER
            ready = node.ready()
            if node.has_ready():
                raise self.fail(f"node {m.id}: has_ready() still true right after ready()")
            self._check_ready_membership(m, ready, was_leader)
            if ready.reads or ready.dropped_reads:
                self._check_reads(m, ready)
            for msg in ready.messages:
                if isinstance(msg, InstallSnapshot):
                    self._start_transfer(m, msg)
                    continue
                if isinstance(msg, TimeoutNow):
                    self._check_timeout_now(m, msg)
                if (
                    # A pre-vote asks and grants nothing durable.
                    (isinstance(msg, RequestVote) and not msg.pre_vote)
                    or (isinstance(msg, RequestVoteResponse) and msg.granted and not msg.pre_vote)
                    or (isinstance(msg, AppendEntriesResponse) and msg.success)
                ):
                    raise self.fail(f"node {m.id}: durability claim sent unpersisted: {msg}")
                self._send(msg)
            loaded = False
            if ready.snapshot is not None:
                if ready.snapshot == m.loaded and len(m.applied) == ready.snapshot.index:
                    # The snapshot this member started from, which its durable log does
                    # not go on from: the state machine already is that snapshot, only
                    # the log's new start is to be recorded (as the server does).
                    loaded = True
                    self.event("restart-mark", (m.id, ready.snapshot))
                else:
                    self._install(m, ready.snapshot)
                self._check_log(m)
            if ready.entries:
                self._check_ready_entries(m, ready.entries, ready.snapshot)
            if ready.needs_persist():
                if ready.hard_state is not None and (
                    ready.hard_state.term,
                    ready.hard_state.vote,
                ) != (node.term, node.vote):
                    raise self.fail(f"node {m.id}: Ready hard state {ready.hard_state} is stale")
                m.pending.append(Write(
                    ready.hard_state, ready.entries, ready.persisted_messages, ready.snapshot,
                    loaded=loaded,
                ))
            elif ready.persisted_messages:
                if m.pending:
                    m.pending[-1].messages.extend(ready.persisted_messages)
                else:
                    self._release(m, ready.persisted_messages)
            if ready.committed:
                self._apply(m, ready.committed)
            if ready.removed and self._told_removed(m):
                self._stop(m)
                return
            if ready.committed:
                if node.role is Role.LEADER and self.rng.random() < self.faults.snipe:
                    # The moment a leader has just counted a majority is when the
                    # accounting behind it (Figure 8, own durability) matters most.
                    self._check_node(m)
                    self._crash(m)
                    return
                self._maybe_snapshot(m)
        self._check_node(m)

    def _check_ready_membership(self, m: Member, ready: Ready, was_leader: bool) -> None:
        """What a Ready says about the configuration, checked right after ready()."""
        node = m.node
        assert node is not None
        if ready.membership is not None:
            if ready.membership != node.membership:
                raise self.fail(f"node {m.id}: Ready.membership {ready.membership} is not "
                                f"the one in effect, {node.membership}")
            self.event("membership", (m.id, node.config_index, ready.membership))
        committed = node.membership_at(node.commit)
        # (Not a voter of the committed one alone is no reason: a learner whose promotion
        # is appended but not committed may have been elected, as it is a voter already.)
        if (
            node.role is Role.LEADER
            and m.id not in node.membership.voters
            and node.config_index <= node.commit
        ):
            raise self.fail(f"node {m.id}: still leader of term {node.term} after a Ready, "
                            f"though its committed configuration {committed} leaves it out")
        if was_leader and node.role is not Role.LEADER and m.id not in node.membership.voters:
            self.event("step-down", (m.id, node.term, node.config_index, node.commit))

    def _check_timeout_now(self, m: Member, msg: TimeoutNow) -> None:
        """A leader hands over (a transfer, or its removal committed): to an up-to-date voter."""
        node = m.node
        assert node is not None
        self.event("timeout-now", msg)
        if msg.term > node.term:
            raise self.fail(f"node {m.id}: {msg} from term {node.term}")
        if msg.term < node.term:
            return  # queued before a later input of the same batch moved the node on
        if msg.dst not in node.membership.voters:
            raise self.fail(f"node {m.id}: {msg} to a non-voter of {node.membership}")
        dst = self.members.get(msg.dst)
        target = dst.node if dst is not None else None
        if target is None or target.term > msg.term:
            return  # crashed (what it acknowledged is durable), or moved on already
        log = node.log
        if log.last_index > target.log.offset and (
            target.log.term(log.last_index) != log.last_term
        ):
            raise self.fail(f"node {m.id}: {msg}, but {msg.dst} does not hold its log up to "
                            f"{(log.last_index, log.last_term)}")

    def _told_removed(self, m: Member) -> bool:
        """A Ready said `m` is removed (its committed entries applied): whether to stop it.

        Only a node that the committed history, up to its commit index, shows as a member
        dropped by a later configuration may be told so.
        """
        node = m.node
        assert node is not None
        committed = node.membership_at(node.commit)
        if m.id in committed.members or node.role is Role.LEADER:
            raise self.fail(f"node {m.id}: told it was removed as {node.role.value}, with "
                            f"committed configuration {committed}")
        known = min(node.commit, len(self.global_applied))
        if known == node.commit and committed != self.committed_membership(known):
            raise self.fail(f"node {m.id}: committed configuration {committed} at "
                            f"{node.commit} is not the one committed there")
        upto = bisect_right(self.config_indexes, known)
        if not any(m.id in c.members for _, c in self.configs[:upto]):
            # E.g. a learner catching up through configurations older than its addition.
            raise self.fail(
                f"node {m.id}: told it was removed (committed configuration {committed} at "
                f"{node.commit}), yet no committed configuration up to there named it"
            )
        if m.id not in self.retired:
            raise self.fail(f"node {m.id}: removed by a change the driver never asked for")
        return True

    def _stop(self, m: Member) -> None:
        """The node was told it is removed: it shuts down for good, as the server does."""
        node = m.node
        assert node is not None
        self.event("removed", (m.id, node.term, node.commit, len(m.pending)))
        self._check_node(m)
        m.node = None
        self._forget_reads(m)
        m.stopped = True
        m.pending.clear()
        m.snap_writes.clear()

    def _flush(self, m: Member, count: int = 1) -> None:
        """The `count` oldest pending writes of `m` become durable."""
        messages: list[Message] = []
        last: Entry | None = None
        for _ in range(count):
            w = m.pending.popleft()
            self._write(m, w)
            messages.extend(w.messages)
            if w.entries:
                last = w.entries[-1]
        if m.node is not None:
            if last is not None:
                m.node.persisted(last.index, last.term)
            self._release(m, messages)
            self._drive(m)

    def _write(self, m: Member, w: Write) -> None:
        self.event("durable", (m.id, w.hard_state, w.entries[-1] if w.entries else None,
                               w.snapshot, w.compact))
        if w.snapshot is not None:
            self._write_marker(m, w.snapshot)
        if w.hard_state is not None:
            if w.hard_state.term < m.hard_state.term:
                raise self.fail(f"node {m.id}: durable term goes back: {w.hard_state}")
            m.hard_state = w.hard_state
        if w.entries:
            self._write_entries(m, w.entries)
        if w.compact:
            self._compact_disk(m, w.compact)

    def _write_entries(self, m: Member, entries: list[Entry]) -> None:
        log = m.log
        off = m.log_offset
        last = off + len(log)
        first = entries[0].index
        if first > last + 1:
            raise self.fail(f"node {m.id}: write leaves a hole: {first} after {last}")
        glob = self.global_applied
        for e in entries:
            j = e.index
            if j > last or j > len(glob):
                break
            if j > off and log[j - off - 1] == glob[j - 1] and e != glob[j - 1]:
                raise self.fail(f"node {m.id}: committed {glob[j - 1]} overwritten by {e}")
        prev_term: int | None
        if first <= off:
            # As WAL replay does: the log now starts over at `first`.
            self.event("wal-rewind", (m.id, off, first))
            log.clear()
            m.log_offset = first - 1
            m.log_offset_term = prev_term = None
        else:
            del log[first - off - 1 :]
            prev_term = log[-1].term if log else m.log_offset_term
        for e in entries:
            self._register(e, prev_term, m.id, "durable")
            prev_term = e.term
        log.extend(entries)

    def _write_marker(self, m: Member, ref: SnapshotRef) -> None:
        """A snapshot marker as WAL replay applies it."""
        index, term = ref.index, ref.term
        off = m.log_offset
        last = off + len(m.log)
        if index < off:
            raise self.fail(f"node {m.id}: marker {ref} below the durable log's start {off}")
        if index == off:
            if m.log_offset_term is not None and m.log_offset_term != term:
                m.log.clear()
        elif index <= last and m.log[index - off - 1].term == term:
            del m.log[: index - off]
        else:
            m.log.clear()
        m.log_offset = index
        m.log_offset_term = term

    def _release(self, m: Member, messages: list[Message]) -> None:
        hs = m.hard_state
        for msg in messages:
            if isinstance(msg, RequestVoteResponse) and msg.granted:
                ok = hs.term > msg.term or (hs.term == msg.term and hs.vote == msg.dst)
                if not ok:
                    raise self.fail(f"node {m.id}: {msg} released with durable {hs}")
            elif isinstance(msg, RequestVote):
                ok = hs.term > msg.term or (hs.term == msg.term and hs.vote == m.id)
                if not ok:
                    raise self.fail(f"node {m.id}: {msg} released with durable {hs}")
            elif isinstance(msg, AppendEntriesResponse) and msg.success and hs.term == msg.term:
                # What a restart would find: the durable log with the newest snapshot.
                newest = m.newest_snapshot()
                top = self._durable_tail(m, newest.ref() if newest else None)[0]
                if top < msg.match_index and newest is not None and newest.term > msg.term:
                    # A snapshot of a later term (stored before this member's term moved
                    # on durably) replaces entries this claim was about, as that term's
                    # leader would have: what counts is that the claim was true.
                    top = m.durable_last()
                if top < msg.match_index:
                    raise self.fail(
                        f"node {m.id}: {msg} released, but a restart would find the log "
                        f"only up to {top} (durable log {m.log_offset}+{len(m.log)}, "
                        f"snapshot {newest.ref() if newest else None})"
                    )
            self._send(msg)

    # ------------------------------------------------------------ invariants

    def _durable_tail(self, m: Member, ref: SnapshotRef | None) -> tuple[int, int | None]:
        """Last (index, term) of the durable log reconciled with `ref` (RaftLog.restored)."""
        log = m.log
        off = m.log_offset
        if ref is None or ref.index == 0:
            if log:
                return off + len(log), log[-1].term
            return off, m.log_offset_term
        index = ref.index
        if not log:
            return index, ref.term
        if off > index:
            raise self.fail(f"node {m.id}: durable log starts at {off + 1}, after snapshot {ref}")
        last = off + len(log)
        if off < index and (index > last or log[index - off - 1].term != ref.term):
            return index, ref.term
        return last, log[-1].term

    def _register(self, e: Entry, prev_term: int | None, node_id: int, where: str) -> None:
        if prev_term is None:
            # The predecessor went with a deleted segment: check what we can.
            known = self.entries_seen.get((e.index, e.term))
            if known is not None and known[:2] != (e.kind, e.data):
                raise self.fail(
                    f"log matching: node {node_id} {where} log has {e}; elsewhere "
                    f"(index {e.index}, term {e.term}) is kind/data/prev-term {known}"
                )
            return
        value = (e.kind, e.data, prev_term)
        old = self.entries_seen.setdefault((e.index, e.term), value)
        if old != value:
            raise self.fail(
                f"log matching: node {node_id} {where} log has {e} after term {prev_term}; "
                f"elsewhere (index {e.index}, term {e.term}) is kind/data/prev-term {old}"
            )

    def _check_snapshot(self, m: Member, snap: Snap, what: str) -> None:
        """A snapshot is always the global sequence up to its index."""
        glob = self.global_applied
        if (
            not 0 < snap.index <= len(glob)
            or len(snap.content) != snap.index
            or glob[snap.index - 1].term != snap.term
            or snap.content != tuple(glob[: snap.index])
        ):
            raise self.fail(
                f"node {m.id} {what} a snapshot at ({snap.index}, {snap.term}) that is not "
                f"the committed history ({len(glob)} entries applied so far)"
            )
        if snap.membership != self.committed_membership(snap.index):
            raise self.fail(
                f"node {m.id} {what} a snapshot at {snap.index} recording {snap.membership}, "
                f"not {self.committed_membership(snap.index)}, the configuration there"
            )

    def _check_ref(self, m: Member, ref: SnapshotRef, what: str) -> None:
        glob = self.global_applied
        if ref.index and (ref.index > len(glob) or glob[ref.index - 1].term != ref.term):
            raise self.fail(f"node {m.id}: {what} {ref}, off the committed history")

    def _check_ready_entries(
        self, m: Member, entries: list[Entry], snapshot: SnapshotRef | None
    ) -> None:
        node = m.node
        assert node is not None
        first = entries[0].index
        for pos, e in enumerate(entries):
            if e.index != first + pos:
                raise self.fail(
                    f"node {m.id}: Ready.entries not contiguous: "
                    f"{[(x.index, x.term) for x in entries]}"
                )
        # Where the durable log will end once the queued writes are done (at most:
        # a marker may also empty it).
        written = m.durable_last()
        for w in m.pending:
            if w.snapshot is not None:
                written = max(written, w.snapshot.index)
            if w.entries:
                written = w.entries[-1].index
        if snapshot is not None:
            written = max(written, snapshot.index)
        if first > written + 1:
            raise self.fail(f"node {m.id}: Ready.entries start at {first}, written only {written}")
        log = node.log
        prev_term = log.term(first - 1)
        if prev_term is None:
            raise self.fail(f"node {m.id}: Ready.entries start at {first} beyond its log")
        for e in entries:
            if log.term(e.index) != e.term:
                raise self.fail(f"node {m.id}: Ready entry {e} is not in its log")
            self._register(e, prev_term, m.id, "memory")
            prev_term = e.term
            if e.kind == CONFIG:
                self._check_config_entry(m, e)

    def _check_config_entry(self, m: Member, e: Entry) -> None:
        """A CONFIG entry in the log of `m`: in effect from there, one voter from the last."""
        node = m.node
        assert node is not None
        new = Membership.decode(e.data)
        if node.membership_at(e.index) != new:
            raise self.fail(f"node {m.id}: CONFIG entry {e.index} holds {new}, yet "
                            f"{node.membership_at(e.index)} is in effect there")
        self._check_one_change(node.membership_at(e.index - 1), new, f"node {m.id} entry {e}")

    def _check_one_change(self, old: Membership, new: Membership, where: str) -> None:
        moved = set(old.voters) ^ set(new.voters)
        if len(moved) > 1 or not new.voters:
            raise self.fail(f"{where}: configuration {old} -> {new} moves voters {sorted(moved)}")
        for i in new.members:
            if new.address(i) != address(i):
                raise self.fail(f"{where}: {new} gives {i} address {new.address(i)!r}")

    def _check_node(self, m: Member) -> None:
        node = m.node
        assert node is not None
        if node.commit > self.max_commit:
            self.max_commit = node.commit
        if (node.role in (Role.CANDIDATE, Role.PRE_CANDIDATE)
                and not self._may_campaign(node, node.config_index)):
            raise self.fail(f"node {m.id}: candidate in term {node.term}, yet not a voter of "
                            f"its configuration {node.membership}")
        if node.role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and not node.is_voter:
            # A voter of the configuration an uncommitted one replaced: the path of the
            # "two-voter-removal-deadlock" bug (counted at every check while it lasts).
            self.event("campaign-replaced", (m.id, node.term))
        if node.role is Role.LEADER:
            log = node.log
            leader = self.leaders.get(node.term)
            if not log.last_index or log.last_term != node.term:
                raise self.fail(f"leader {m.id} has no entry of its term {node.term}")
            if leader is None:
                self.leaders[node.term] = m.id
                self.event("leader", (m.id, node.term, log.last_index))
                # Its configuration when elected: the one before its term's first entry.
                start = log.first_index_of_term(log.last_index)
                if not self._may_campaign(node, self._config_index_at(node, start - 1)):
                    raise self.fail(f"node {m.id}: leader of term {node.term}, yet not a voter "
                                    f"of its configuration {node.membership_at(start - 1)}")
                if self.transfer_asked.get(node.term - 1) == m.id:
                    self.event("transfer-done", (m.id, node.term))
                self._check_leader_complete(m)
            elif leader != m.id:
                raise self.fail(f"election safety: {leader} and {m.id} both lead term {node.term}")
            # Uncommitted: beyond every commit index seen (a restarted leader's own is a hint).
            committed = self.max_commit
            if committed < log.last_index:
                kinds = list(map(_kind_of, log.slice(committed + 1, log.last_index + 1)))
                if kinds.count(CONFIG) > 1:
                    raise self.fail(f"leader {m.id}: {kinds.count(CONFIG)} CONFIG entries "
                                    f"after {committed}, the highest commit index seen")
        if node.commit > node.log.last_index:
            raise self.fail(f"node {m.id}: commit {node.commit} beyond log {node.log.last_index}")
        if not node.log.offset <= node.snapshot.index <= node.applied <= node.commit:
            raise self.fail(
                f"node {m.id}: log offset {node.log.offset}, snapshot {node.snapshot}, "
                f"applied {node.applied}, commit {node.commit} out of order"
            )
        if not m.pending:
            hs = m.hard_state
            if (hs.term, hs.vote) != (node.term, node.vote):
                raise self.fail(
                    f"node {m.id}: all writes durable but durable {hs} != "
                    f"({node.term}, {node.vote}) in memory"
                )
            tail = self._durable_tail(m, node.snapshot)
            if tail != (node.log.last_index, node.log.last_term):
                raise self.fail(
                    f"node {m.id}: all writes durable but the log ends at "
                    f"{(node.log.last_index, node.log.last_term)}, on disk at {tail}"
                )

    @staticmethod
    def _config_index_at(node: RaftNode, index: int) -> int:
        """Index of the CONFIG entry in force at `index` of the node's log (or its start)."""
        if node.config_index <= index:
            return node.config_index
        log = node.log
        for i in range(index, log.offset, -1):
            if log.entry(i).kind == CONFIG:
                return i
        return log.offset

    @staticmethod
    def _may_campaign(node: RaftNode, config_index: int) -> bool:
        """Whether the configuration set at `config_index` lets `node` campaign.

        A voter of it may; so may a voter of the configuration it replaced while it
        is not committed (dissertation 4.2.2: such a node may still be needed to
        elect a leader). A learner or a stranger to both never does.
        """
        if node.id in node.membership_at(config_index).voters:
            return True
        return (
            config_index > node.commit
            and config_index > node.log.offset
            and node.id in node.membership_at(config_index - 1).voters
        )

    def _check_leader_complete(self, m: Member) -> None:
        node = m.node
        assert node is not None
        best = 0
        for term, index in self.commit_by_term.items():
            if term < node.term and index > best:
                best = index
        if best:
            want = self.global_applied[best - 1]
            log = node.log
            if best <= log.offset:
                # Under the leader's snapshot; that must be committed history.
                self._check_ref(m, node.snapshot, "leads with snapshot")
                return
            if log.term(best) != want.term or log.entry(best) != want:
                raise self.fail(
                    f"leader completeness: leader {m.id} of term {node.term} lacks committed "
                    f"{want} (has term {log.term(best)} there)"
                )

    def _apply(self, m: Member, entries: list[Entry]) -> None:
        applied = m.applied
        glob = self.global_applied
        for e in entries:
            index = len(applied) + 1
            if e.index != index:
                raise self.fail(f"node {m.id}: applied {e} after {index - 1} entries")
            if index <= len(glob):
                if glob[index - 1] != e:
                    raise self.fail(
                        f"state machine safety: node {m.id} applies {e} where "
                        f"{glob[index - 1]} was applied before"
                    )
            else:
                glob.append(e)
                if e.kind == EntryKind.COMMAND:
                    if e.data in self.committed_data:
                        raise self.fail(f"command {e.data!r} committed twice (again at {e})")
                    self.committed_data.add(e.data)
                elif e.kind == SESSION:
                    self.stats["session-committed"] += 1
                elif e.kind == CONFIG:
                    new = Membership.decode(e.data)
                    self._check_one_change(self.configs[-1][1], new, f"committed {e}")
                    self.configs.append((e.index, new))
                    self.config_indexes.append(e.index)
                    self.event("committed-config", (e.index, new))
            if e.kind == SESSION:
                self._apply_session(m, e)
            applied.append(e)
        self._note_commit(m, len(applied))

    def _apply_session(self, m: Member, e: Entry) -> None:
        """A client-session command: its effect happens once, whoever applies it and however
        often its request was sent; a repeat answers with the first time's result."""
        client, seq, pos, stamp, _command = cbor2.loads(e.data)
        key = (client, seq, pos)

        def take_effect(commands: list[Any]) -> list[Any]:
            first = self.session_effects.setdefault(key, e.index)
            if first != e.index:
                raise self.fail(f"node {m.id}: session command {key} takes effect again at "
                                f"{e.index}, first at {first}")
            return [first]

        (result,) = m.sessions.apply(client, seq, pos, stamp, [_command], take_effect)
        if result is STALE:
            self.event("session-stale", (m.id, e.index, key))
        elif result != self.session_effects.get(key):
            raise self.fail(f"node {m.id}: session command {key} at {e.index} answered "
                            f"{result!r}, but it took effect at {self.session_effects.get(key)}")
        elif result != e.index:
            self.event("session-repeat", (m.id, e.index, key, result))

    def _note_commit(self, m: Member, top: int) -> None:
        node = m.node
        assert node is not None
        term = node.term
        if top > self.commit_by_term.get(term, 0):
            self.commit_by_term[term] = top
            for other in self.members.values():
                on = other.node
                if on is not None and on.role is Role.LEADER and on.term > term:
                    self._check_leader_complete(other)

    def full_check(self) -> None:
        """Re-check every in-memory and durable log entry against the log-matching table."""
        for m in self.members.values():
            prev: int | None = m.log_offset_term
            for e in m.log:
                self._register(e, prev, m.id, "durable")
                prev = e.term
            for snap in m.snapshots.values():
                self._check_snapshot(m, snap, "holds")
            node = m.node
            if node is None:
                continue
            self._check_log(m)
            log = node.log
            if not m.pending:
                disk = RaftLog.restored(m.log, node.snapshot.index, node.snapshot.term)
                lo = max(disk.offset, log.offset) + 1
                hi = log.last_index + 1
                if disk.last_index != log.last_index or disk.slice(lo, hi) != log.slice(lo, hi):
                    raise self.fail(f"node {m.id}: all writes durable but log differs from disk")

    def _check_log(self, m: Member) -> None:
        """The whole in-memory log of `m`: its start on committed history, then log matching."""
        node = m.node
        assert node is not None
        log = node.log
        self._check_ref(m, node.snapshot, "has snapshot")
        self._check_ref(m, SnapshotRef(log.offset, log.offset_term), "has a log starting at")
        prev = log.offset_term
        newest = node.membership_at(log.offset)
        if newest != self.committed_membership(log.offset):
            raise self.fail(f"node {m.id}: configuration {newest} at its log's start "
                            f"{log.offset}, not {self.committed_membership(log.offset)}")
        for i in range(log.offset + 1, log.last_index + 1):
            e = log.entry(i)
            if e.index != i:
                raise self.fail(f"node {m.id}: log position {i} holds {e}")
            self._register(e, prev, m.id, "memory")
            prev = e.term
            if e.kind == CONFIG:
                self._check_config_entry(m, e)
                newest = Membership.decode(e.data)
        if node.membership != newest:
            raise self.fail(f"node {m.id}: configuration {node.membership} in effect, yet its "
                            f"log's newest is {newest}")

    # --------------------------------------------------------------- liveness

    def settle(self, max_rounds: int | None = None) -> None:
        """Heal everything, restart everyone, run until quiet; assert convergence."""
        self.event("settle", None)
        self.blocked.clear()
        self.faults = Faults()
        # No more snapshots at random times, no lost streams, no crashes.
        self.policy = SnapshotPolicy(
            threshold=self.policy.threshold,
            keep_max=self.policy.keep_max,
            segment=self.policy.segment,
            report=self.policy.report,
            late_report=self.policy.late_report,
        )
        for m in self.crashed():
            self._restart(m)
        if max_rounds is None:
            max_rounds = 30 * self.config.election_ticks + 50
        for _ in range(max_rounds):
            self.step_no += 1
            for m in self.members.values():
                node = m.node
                if node is None:
                    continue  # stopped for good
                node.tick()
                self._drive(m)
            self._drain()
            lead = self._converged()
            if lead is not None:
                self.full_check()
                self._final_check(lead)
                self._final_read(lead)
                self._final_sessions(lead)
                return
        states = [
            (m.id, m.node.role.value, m.node.term, m.node.commit, m.node.log.last_index,
             sorted(m.node.membership.voters), sorted(m.node.membership.learners))
            for m in self.members.values()
            if m.node is not None
        ]
        raise self.fail(f"liveness: no convergence after {max_rounds} quiet rounds: {states}")

    def _drain(self) -> None:
        net = self.net
        members = self.members.values()
        for _ in range(1_000_000):
            for m in members:
                while m.pending or m.snap_writes:
                    if m.pending:
                        self._flush(m)
                    else:
                        self._snap_flush(m)
            if self.transfers:
                self._finish_transfer(self.transfers.pop(0))
            elif self.reports:
                self._late_report(self.reports.pop(0))
            elif net:
                self._deliver()
            elif not any(m.pending or m.snap_writes for m in members):
                return
        raise self.fail("livelock: messages keep flowing with no ticks")

    def _final_sessions(self, lead: RaftNode) -> None:
        """Members that applied the same log hold the same session table."""
        tables = {
            i: self.members[i].sessions.encode()
            for i in lead.membership.members
            if self.members[i].node is not None and len(self.members[i].applied) == lead.commit
        }
        if len(set(tables.values())) > 1:
            raise self.fail(f"members at index {lead.commit} hold different session tables: "
                            f"{ {i: SessionTable.decode(t) for i, t in tables.items()} }")

    def _final_read(self, lead: RaftNode) -> None:
        """Once healed, a read on the leader is answered within a few heartbeat rounds."""
        read_id = self.next_read
        self.next_read += 1
        self.reads[read_id] = (lead.id, self.max_commit)
        lead.read_index(read_id)
        for _ in range(5 * self.config.election_ticks):
            if read_id not in self.reads:
                return
            for m in self.members.values():
                if m.node is not None:
                    m.node.tick()
                    self._drive(m)
            self._drain()
        raise self.fail(f"liveness: the healed leader {lead.id} never answered read {read_id}")

    def _converged(self) -> RaftNode | None:
        """The one leader, once every member of its (committed) configuration caught up."""
        leaders = [m.node for m in self.live() if m.node is not None and m.node.role is Role.LEADER]
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        if lead.commit != lead.log.last_index or lead.log.term(lead.commit) != lead.term:
            return None
        for i in lead.membership.members:
            m = self.members[i]
            n = m.node
            if n is None or not (
                n.term == lead.term and n.commit == lead.commit and n.applied == lead.commit
                and len(m.applied) == lead.commit
            ):
                return None
        return lead

    def _final_check(self, lead: RaftNode) -> None:
        glob = self.global_applied
        final = lead.membership
        if final != self.configs[-1][1]:
            raise self.fail(f"final configuration {final} is not the last committed one, "
                            f"{self.configs[-1][1]}")
        for i in final.members:
            m = self.members[i]
            if m.applied != glob:
                raise self.fail(f"liveness: node {m.id} applied a different sequence")
            if m.pending or m.snap_writes:
                raise self.fail(f"node {m.id}: quiet, yet writes are pending")
            newest = m.newest_snapshot()
            disk = (
                RaftLog.restored(m.log, newest.index, newest.term)
                if newest is not None
                else RaftLog(m.log)
            )
            if (
                disk.last_index != len(glob)
                or disk.slice(disk.offset + 1, len(glob) + 1) != glob[disk.offset :]
                or (disk.offset and glob[disk.offset - 1].term != disk.offset_term)
            ):
                raise self.fail(
                    f"node {m.id}: quiet, yet a restart would not find the applied sequence"
                )
        data = [e.data for e in glob if e.kind == EntryKind.COMMAND]
        if len(set(data)) != len(data) or set(data) != self.committed_data:
            raise self.fail("final applied sequence disagrees with what was reported committed")


def run_simulation(
    seed: int,
    n_nodes: int,
    steps: int,
    test_id: str | None = None,
) -> Simulation:
    sim = Simulation(seed, n_nodes, steps, test_id=test_id)
    sim.run()
    return sim
