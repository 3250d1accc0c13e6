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
  durable hard state and log only; its state machine re-applies from 1;
* ticks land on random nodes in random interleavings (clock skew for free),
  and clients propose to whichever node believes it is the leader;
* the driver sometimes feeds several inputs to a node before one `ready()`,
  as a real event loop that drains its inbox does.

After every step the safety invariants are checked, incrementally so that
thousands of steps stay cheap:

* election safety: at most one leader per term over the whole run;
* log matching: every (index, term) ever seen in any log, in memory or
  durable, maps to one entry and one predecessor term; by induction two logs
  sharing an (index, term) are then identical up to it (in-memory logs are
  also fully re-checked every `FULL_CHECK_EVERY` steps);
* leader completeness: an entry known committed while some node was in
  term t is in the log of every leader of a term above t;
* state-machine safety: every node's applied sequence (re-applied from 1
  after each restart) is a prefix of one global sequence, with each command
  applied at most once;
* durability claims: a vote grant, a RequestVote and an append success are
  only ever sent after the state they vouch for is durable, and never as
  plain (non-persisted) messages; a durable committed entry is never
  overwritten.

At the end everything heals and restarts, the cluster runs until quiet, and
liveness is asserted: one leader, every node applied the same sequence, which
holds every command that was ever reported committed.
"""

from __future__ import annotations

import os
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from raft_trio.core import (
    AppendEntriesResponse,
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    NotLeaderError,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)

FULL_CHECK_EVERY = 97
NO_HARD_STATE = HardState(0, None, 0)
REPLAY_TEST = "tests/test_simulation.py::test_replay"


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


def draw_config(rng: random.Random) -> Config:
    return Config(
        election_ticks=rng.choice((3, 5, 10)),
        heartbeat_ticks=1,
        max_append_entries=rng.choice((1, 3, 64)),
        max_inflight=rng.choice((1, 2, 8, 32)),
    )


@dataclass(slots=True)
class Write:
    """One Ready's worth of disk work, plus the messages waiting on it."""

    hard_state: HardState | None
    entries: list[Entry]
    messages: list[Message]


@dataclass(slots=True)
class Member:
    id: int
    node: RaftNode | None = None
    # Stable storage: survives crashes.
    hard_state: HardState = NO_HARD_STATE
    log: list[Entry] = field(default_factory=list)
    # Volatile: lost on a crash.
    pending: deque[Write] = field(default_factory=deque)
    applied: list[Entry] = field(default_factory=list)


class Simulation:
    def __init__(
        self,
        seed: int,
        n_nodes: int,
        steps: int,
        *,
        faults: Faults | None = None,
        config: Config | None = None,
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
        self.members = {i: Member(i) for i in self.ids}
        self.net: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
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
        for m in self.members.values():
            self._start(m)

    # ------------------------------------------------------------ reporting

    def fail(self, what: str) -> SimulationFailure:
        lines = [
            what,
            f"  seed={self.seed} nodes={self.n_nodes} steps={self.steps} at step {self.step_no}",
            f"  faults={self.faults}",
            f"  config={self.config}",
            "  replay with:",
            f"    RAFT_SIM_SEED={self.seed} RAFT_SIM_NODES={self.n_nodes} "
            f"RAFT_SIM_STEPS={self.steps} PYTHONPATH=. .venv/bin/pytest {REPLAY_TEST} -x",
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
        rng = self.rng
        f = self.faults
        w_deliver, w_tick, w_disk, w_propose = 50.0, f.ticks, f.disk, 4.0
        w_fault = f.partitions + f.crashes + f.heal
        bounds = []
        acc = 0.0
        for w in (w_deliver, w_tick, w_disk, w_propose, w_fault):
            acc += w
            bounds.append(acc)
        b_deliver, b_tick, b_disk, b_propose, total = bounds
        random_ = rng.random
        for step in range(self.steps):
            self.step_no = step
            r = random_() * total
            if r < b_deliver:
                if self.net:
                    self._deliver()
                else:
                    self._tick()
            elif r < b_tick:
                self._tick()
            elif r < b_disk:
                self._flush_one()
            elif r < b_propose:
                self._propose()
            else:
                self._fault()
            if step % FULL_CHECK_EVERY == 0:
                self.full_check()
        self.step_no = self.steps
        self.settle()

    # ----------------------------------------------------------------- steps

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.node is not None]

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
        m.node.step(msg)
        if self.rng.random() < self.faults.batch:
            self._feed_more(m)
        self._drive(m)

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
                node.step(msg)
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

    def _crash(self, m: Member) -> None:
        self.event("crash", (m.id, len(m.pending)))
        m.node = None
        m.pending.clear()  # writes not yet durable vanish, with their held messages
        m.applied = []

    def _start(self, m: Member) -> None:
        m.node = RaftNode(
            m.id,
            self.ids,
            hard_state=m.hard_state,
            entries=list(m.log),
            config=self.config,
            rng=random.Random(self.rng.getrandbits(64)),
        )
        m.applied = []

    def _restart(self, m: Member) -> None:
        self.event("restart", (m.id, m.hard_state, len(m.log)))
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
                if (
                    isinstance(msg, RequestVote)
                    or (isinstance(msg, RequestVoteResponse) and msg.granted)
                    or (isinstance(msg, AppendEntriesResponse) and msg.success)
                ):
                    raise self.fail(f"node {m.id}: durability claim sent unpersisted: {msg}")
                self._send(msg)
            if ready.entries:
                self._check_ready_entries(m, ready.entries)
            if ready.needs_persist():
                if ready.hard_state is not None and (
                    ready.hard_state.term,
                    ready.hard_state.vote,
                ) != (node.term, node.vote):
                    raise self.fail(f"node {m.id}: Ready hard state {ready.hard_state} is stale")
                m.pending.append(Write(ready.hard_state, ready.entries, ready.persisted_messages))
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
        self.event("durable", (m.id, w.hard_state, w.entries[-1] if w.entries else None))
        if w.hard_state is not None:
            if w.hard_state.term < m.hard_state.term:
                raise self.fail(f"node {m.id}: durable term goes back: {w.hard_state}")
            m.hard_state = w.hard_state
        if w.entries:
            log = m.log
            first = w.entries[0].index
            if first > len(log) + 1:
                raise self.fail(f"node {m.id}: write leaves a hole: {first} after {len(log)}")
            glob = self.global_applied
            for e in w.entries:
                j = e.index
                if j > len(log) or j > len(glob):
                    break
                if log[j - 1] == glob[j - 1] and e != glob[j - 1]:
                    raise self.fail(f"node {m.id}: committed {glob[j - 1]} overwritten by {e}")
            del log[first - 1 :]
            prev_term = log[-1].term if log else 0
            for e in w.entries:
                self._register(e, prev_term, m.id, "durable")
                prev_term = e.term
            log.extend(w.entries)

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
            elif isinstance(msg, AppendEntriesResponse) and msg.success:
                if hs.term == msg.term and len(m.log) < msg.match_index:
                    raise self.fail(
                        f"node {m.id}: {msg} released with only {len(m.log)} durable entries"
                    )
            self._send(msg)

    # ------------------------------------------------------------ invariants

    def _register(self, e: Entry, prev_term: int, node_id: int, where: str) -> None:
        value = (e.kind, e.data, prev_term)
        old = self.entries_seen.setdefault((e.index, e.term), value)
        if old != value:
            raise self.fail(
                f"log matching: node {node_id} {where} log has {e} after term {prev_term}; "
                f"elsewhere (index {e.index}, term {e.term}) is kind/data/prev-term {old}"
            )

    def _check_ready_entries(self, m: Member, entries: list[Entry]) -> None:
        node = m.node
        assert node is not None
        first = entries[0].index
        for pos, e in enumerate(entries):
            if e.index != first + pos:
                raise self.fail(
                    f"node {m.id}: Ready.entries not contiguous: "
                    f"{[(x.index, x.term) for x in entries]}"
                )
        for w in reversed(m.pending):
            if w.entries:
                written = w.entries[-1].index
                break
        else:
            written = len(m.log)
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
        if not m.pending:
            hs = m.hard_state
            if (hs.term, hs.vote) != (node.term, node.vote):
                raise self.fail(
                    f"node {m.id}: all writes durable but durable {hs} != "
                    f"({node.term}, {node.vote}) in memory"
                )
            if node.log.last_index != len(m.log) or (
                m.log and node.log.last_term != m.log[-1].term
            ):
                raise self.fail(f"node {m.id}: all writes durable but log differs from disk")

    def _check_leader_complete(self, m: Member) -> None:
        node = m.node
        assert node is not None
        best = 0
        for term, index in self.commit_by_term.items():
            if term < node.term and index > best:
                best = index
        if best:
            want = self.global_applied[best - 1]
            if node.log.term(best) != want.term or node.log.entry(best) != want:
                raise self.fail(
                    f"leader completeness: leader {m.id} of term {node.term} lacks committed "
                    f"{want} (has term {node.log.term(best)} there)"
                )

    def _apply(self, m: Member, entries: list[Entry]) -> None:
        node = m.node
        assert node is not None
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
        top = len(applied)
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
            prev = 0
            for e in m.log:
                self._register(e, prev, m.id, "durable")
                prev = e.term
            node = m.node
            if node is None:
                continue
            prev = 0
            for i in range(1, node.log.last_index + 1):
                e = node.log.entry(i)
                if e.index != i:
                    raise self.fail(f"node {m.id}: log position {i} holds {e}")
                self._register(e, prev, m.id, "memory")
                prev = e.term
            if not m.pending and node.log.slice(1, node.log.last_index + 1) != m.log:
                raise self.fail(f"node {m.id}: all writes durable but log differs from disk")

    # --------------------------------------------------------------- liveness

    def settle(self, max_rounds: int | None = None) -> None:
        """Heal everything, restart everyone, run until quiet; assert convergence."""
        self.event("settle", None)
        self.blocked.clear()
        self.faults = Faults()
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
                while m.pending:
                    self._flush(m)
            if not net:
                if not any(m.pending for m in members):
                    return
                continue
            self._deliver()
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
            if m.pending or m.log != m.applied:
                raise self.fail(f"node {m.id}: quiet, yet its durable log differs from applied")
        data = [e.data for e in glob if e.kind == EntryKind.COMMAND]
        if len(set(data)) != len(data) or set(data) != self.committed_data:
            raise self.fail("final applied sequence disagrees with what was reported committed")


def run_simulation(seed: int, n_nodes: int, steps: int, test_id: str | None = None) -> Simulation:
    sim = Simulation(seed, n_nodes, steps, test_id=test_id)
    sim.run()
    return sim
