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
  overwritten.

At the end everything heals and restarts, the cluster runs until quiet, and
liveness is asserted: one leader, every node applied the same sequence, which
holds every command that was ever reported committed, and every durable log
replays (with its newest snapshot) to that sequence.
"""

from __future__ import annotations

import os
import random
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from raft_trio.core import (
    AppendEntriesResponse,
    Config,
    Entry,
    EntryKind,
    HardState,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NotLeaderError,
    RaftLog,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotRef,
)

FULL_CHECK_EVERY = 97
NO_HARD_STATE = HardState(0, None, 0)
REPLAY_TEST = "tests/test_simulation.py::test_replay"
# Durable snapshot files kept per member (the newest ones), like remove_older_snapshots.
SNAPSHOT_FILES_KEPT = 2


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
    ):
        self.seed = seed
        self.test_id = test_id
        self.n_nodes = n_nodes
        self.steps = steps
        self.rng = rng = random.Random(seed)
        self.faults = faults if faults is not None else Faults.draw(rng)
        self.config = config if config is not None else draw_config(rng)
        self.ids = tuple(range(1, n_nodes + 1))
        self.disk_speed = {i: rng.choice((0.05, 0.3, 1.0, 1.0)) for i in self.ids}
        self.policy = policy if policy is not None else SnapshotPolicy.draw(rng, self.faults)
        self.members = {i: Member(i) for i in self.ids}
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
        self.proposed = 0
        self.next_command = 0
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
            f"PYTHONPATH=. .venv/bin/pytest {REPLAY_TEST} -x",
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
            (f.partitions + f.crashes + f.heal, self._fault),
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

    def _deliver_or_tick(self) -> None:
        if self.net:
            self._deliver()
        else:
            self._tick()

    def _tick(self) -> None:
        live = self.live()
        if not live:
            self._restart(self.rng.choice(list(self.members.values())))
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
        m = self.members[msg.dst]
        if m.node is None or (msg.src, msg.dst) in self.blocked:
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
        m = self.rng.choice(leaders)
        node = m.node
        assert node is not None
        count = self.rng.randint(1, 3)
        datas = []
        for _ in range(count):
            datas.append(b"c%d" % self.next_command)
            self.next_command += 1
        first, term = node.propose(datas)
        if term != node.term or first + count - 1 != node.log.last_index:
            raise self.fail(f"propose returned ({first}, {term}) for {count} commands")
        self.proposed += count
        self.event("propose", (m.id, first, term, datas))
        if self.rng.random() < self.faults.batch:
            self._feed_more(m)
        self._drive(m)

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
            crashed = [m for m in self.members.values() if m.node is None]
            if crashed and (not self.blocked or rng.random() < 0.5):
                self._restart(rng.choice(crashed))
            elif self.blocked:
                self.event("heal", None)
                self.blocked.clear()

    def _partition(self) -> None:
        rng = self.rng
        ids = list(self.ids)
        self.blocked.clear()
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

    def _crash(self, m: Member) -> None:
        self.event("crash", (m.id, len(m.pending)))
        if any(w.leader is None for w in m.snap_writes):
            self.event("crash-snapshot", m.id)  # our own snapshot file is lost
        if self._installing(m):
            self.event("crash-install", m.id)  # receiving, storing or installing one
        if any(t.src == m.id and t.src_life == m.life for t in self.transfers):
            self.event("crash-stream", m.id)  # a leader dies while streaming
        m.node = None
        m.pending.clear()  # writes not yet durable vanish, with their held messages
        m.snap_writes.clear()  # and so do snapshot files not yet durable
        m.applied = []

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
        m.node = RaftNode(
            m.id,
            self.ids,
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
        else:
            m.applied = []
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
        snap = Snap(index, m.applied[-1].term, tuple(m.applied))
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
            node.step(InstallSnapshot(w.term, w.leader, m.id, snap.index, snap.term))
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
            ready = node.ready()
            if node.has_ready():
                raise self.fail(f"node {m.id}: has_ready() still true right after ready()")
            for msg in ready.messages:
                if isinstance(msg, InstallSnapshot):
                    self._start_transfer(m, msg)
                    continue
                if (
                    isinstance(msg, RequestVote)
                    or (isinstance(msg, RequestVoteResponse) and msg.granted)
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
                if node.role is Role.LEADER and self.rng.random() < self.faults.snipe:
                    # The moment a leader has just counted a majority is when the
                    # accounting behind it (Figure 8, own durability) matters most.
                    self._check_node(m)
                    self._crash(m)
                    return
                self._maybe_snapshot(m)
        self._check_node(m)

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

    def _check_node(self, m: Member) -> None:
        node = m.node
        assert node is not None
        if node.role is Role.LEADER:
            leader = self.leaders.get(node.term)
            if leader is None:
                self.leaders[node.term] = m.id
                self.event("leader", (m.id, node.term, node.log.last_index))
                self._check_leader_complete(m)
            elif leader != m.id:
                raise self.fail(f"election safety: {leader} and {m.id} both lead term {node.term}")
            if not node.log.last_index or node.log.last_term != node.term:
                raise self.fail(f"leader {m.id} has no entry of its term {node.term}")
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
            applied.append(e)
        self._note_commit(m, len(applied))

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
        for i in range(log.offset + 1, log.last_index + 1):
            e = log.entry(i)
            if e.index != i:
                raise self.fail(f"node {m.id}: log position {i} holds {e}")
            self._register(e, prev, m.id, "memory")
            prev = e.term

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
        for m in self.members.values():
            if m.node is None:
                self._restart(m)
        if max_rounds is None:
            max_rounds = 30 * self.config.election_ticks + 50
        for _ in range(max_rounds):
            self.step_no += 1
            for m in self.members.values():
                node = m.node
                assert node is not None
                node.tick()
                self._drive(m)
            self._drain()
            if self._converged():
                self.full_check()
                self._final_check()
                return
        states = [
            (m.id, m.node.role.value, m.node.term, m.node.commit, m.node.log.last_index)
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

    def _converged(self) -> bool:
        nodes = [m.node for m in self.members.values() if m.node is not None]
        leaders = [n for n in nodes if n.role is Role.LEADER]
        if len(leaders) != 1:
            return False
        lead = leaders[0]
        if lead.commit != lead.log.last_index or lead.log.term(lead.commit) != lead.term:
            return False
        return all(
            n.term == lead.term and n.commit == lead.commit and n.applied == lead.commit
            for n in nodes
        ) and all(len(m.applied) == lead.commit for m in self.members.values())

    def _final_check(self) -> None:
        glob = self.global_applied
        for m in self.members.values():
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
