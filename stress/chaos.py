"""`raft-trio chaos`: a cluster of processes under faults, checked for linearizability.

Members run as `raft-trio serve --fault-injection` processes. Concurrent clients
do random set/get/cas/delete on a few keys and record every operation with its
invocation and completion times; a nemesis meanwhile kills (SIGKILL) and
restarts members, cuts the links between two groups of members (through the
members' fault hooks, never the host's network) and pauses members
(SIGSTOP/SIGCONT). Then everything is healed, the cluster must converge (one
leader, every member applied the same index and holds the same state), and the
history goes to the linearizability checker.

The seed fixes every random choice (which fault, which member, how long, which
operation on which key), not the timing, so two runs with one seed differ in
detail.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from raft_trio.client import cluster_status, connect, read_member_state, set_member_faults
from raft_trio.errors import CommandError, RaftError
from raft_trio.server import SnapshotPolicy, Timing
from raft_trio.testing.linearizability import CheckResult, Operation, check, save_history
from stress.cluster import ProcessCluster, free_ports
from stress.interrupt import Interrupted, SignalWatch

NEMESES = ("kill", "partition", "pause")
OP_NAMES = ("get", "set", "cas", "delete")
# Reads are the cheapest way to catch a stale or lost write, so they are the most common.
OP_WEIGHTS = (0.4, 0.25, 0.25, 0.1)
DUMP_PAGE = 1000
# Never more faults at once than this: with three members, two already leave no quorum.
MAX_ACTIVE_FAULTS = 2
# Seconds between the start of one fault and the next (when fewer are active).
FAULT_INTERVAL = (1.0, 3.0)
KILL_DOWN = (1.0, 3.0)
PAUSE_FOR = (1.0, 4.0)
PARTITION_FOR = (2.0, 5.0)
_UNREACHABLE = (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                RaftError)


@dataclass(frozen=True)
class ChaosOptions:
    duration: float = 60.0
    clients: int = 5
    nemesis: tuple[str, ...] = NEMESES
    seed: int = 0
    servers: int = 3
    keys: int = 3
    data_dir: Path | None = None
    keep: bool = False
    history: Path | None = None
    tick: float = 0.05
    election_ticks: int = 10
    # Short, so that an operation caught by a fault ends (as unknown) rather
    # than hanging the client through several faults.
    client_timeout: float = 3.0
    # How the clients' gets read: linearizable, lease or stale (the last read of
    # every key at the end is always linearizable).
    read: str = "linearizable"
    converge_timeout: float = 60.0
    # Small, so that members snapshot during the run and one that was down
    # long enough is rebuilt from a snapshot streamed under faults.
    snapshot_entries: int = 1000
    snapshot_trailing: int = 200
    log_level: str = "info"


@dataclass
class Outcome:
    """The end of a run: what the summary prints and the exit status depends on."""

    history: list[Operation] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    swapped: Counter[bool] = field(default_factory=Counter)
    leaders: set[tuple[int, int]] = field(default_factory=set)
    faults: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    states_equal: bool | None = None
    states_detail: str = ""
    result: CheckResult | None = None
    check_seconds: float = 0.0
    chaos_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (not self.problems and self.states_equal is True and self.result is not None
                and self.result.linearizable)


class Chaos:
    def __init__(self, options: ChaosOptions, cluster: ProcessCluster, console: Console):
        self.o = options
        self.cluster = cluster
        self.console = console
        self.members = dict(cluster.members)
        self.addresses = list(self.members.values())
        self.keys = [f"k{i}" for i in range(options.keys)]
        self.out = Outcome()
        self.started = trio.current_time()
        # Nemesis state. `desired` is the cut set each member should have; the
        # fault pusher keeps telling every reachable member until the run ends.
        self.dead: set[int] = set()
        self.paused: set[int] = set()
        self.busy: set[int] = set()  # killed or paused by a fault still active
        self.partitioned = False
        self.active = 0
        self.desired: dict[int, frozenset[int]] = {i: frozenset() for i in self.members}
        self.faults_changed = trio.Event()
        self.nemesis_stop = trio.Event()
        self.clients_stop = trio.Event()
        self.leader: int | None = None

    # ------------------------------------------------------------- helpers

    def now(self) -> float:
        """Seconds since the start: the timeline and the history share this clock."""
        return trio.current_time() - self.started

    def say(self, message: str) -> None:
        self.console.print(f"{self.now():7.1f}s  {message}")

    def rng(self, what: str) -> random.Random:
        # One stream per task, so one task's choices do not depend on how the
        # others were scheduled.
        return random.Random(f"{self.o.seed}/{what}")

    async def _pause_or_stop(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self.nemesis_stop.wait()

    # ------------------------------------------------------------- the run

    async def run(self) -> Outcome:
        o = self.o
        async with trio.open_nursery() as nursery:
            for node_id in self.members:
                nursery.start_soon(self.cluster.start, node_id)
        leader = await self._wait_for_leader(30.0)
        if leader is None:
            self.out.problems.append("no leader was elected within 30 s of the start")
            return self.out
        self.say(f"member {leader} leads; chaos for {o.duration:g} s")
        async with trio.open_nursery() as background:
            background.start_soon(self._monitor)
            background.start_soon(self._push_faults)
            async with trio.open_nursery() as clients:
                for client_id in range(o.clients):
                    clients.start_soon(self._client, client_id)
                chaos_start = trio.current_time()
                await self._nemesis(chaos_start + o.duration)
                self.out.chaos_seconds = trio.current_time() - chaos_start
                await self._heal()
                self.clients_stop.set()
            self.say("clients stopped; waiting for the members to converge")
            await self._final_reads()
            await self._converge()
            background.cancel_scope.cancel()
        return self.out

    async def _wait_for_leader(self, timeout: float) -> int | None:
        with trio.move_on_after(timeout):
            while True:
                rows = await cluster_status(self.members, timeout=1.0)
                leaders = [r["id"] for r in rows.values() if r.get("role") == "leader"]
                if len(leaders) == 1:
                    return int(leaders[0])
                await trio.sleep(0.1)
        return None

    async def _monitor(self) -> None:
        """Poll every member's role, to count leaders and to aim faults at the leader."""
        while True:
            up = {i: a for i, a in self.members.items()
                  if i not in self.dead and i not in self.paused}
            rows = await cluster_status(up, timeout=0.5)
            newest: tuple[int, int] | None = None
            for row in rows.values():
                if row.get("role") == "leader":
                    seen = (int(row["term"]), int(row["id"]))
                    self.out.leaders.add(seen)
                    newest = max(newest or seen, seen)
            self.leader = newest[1] if newest else None
            for node_id, proc in list(self.cluster.procs.items()):
                if proc.poll() is not None and node_id not in self.dead:
                    # Only the nemesis may stop a member; _heal restarts this one.
                    self.dead.add(node_id)
                    del self.cluster.procs[node_id]
                    log = self.cluster.data_dir / f"member-{node_id}.log"
                    self.out.problems.append(
                        f"member {node_id} exited by itself (status {proc.returncode}); see {log}")
                    self.say(f"[red]member {node_id} exited by itself[/red] "
                             f"(status {proc.returncode})")
            await trio.sleep(0.2)

    # ------------------------------------------------------------- clients

    async def _client(self, client_id: int) -> None:
        rng = self.rng(f"client-{client_id}")
        # What this client last saw in each key: cas expects it, so that many succeed.
        seen: dict[str, str | None] = {}
        written = 0
        request_timeout = self.o.client_timeout / 3
        async with connect(self.addresses, timeout=self.o.client_timeout,
                           request_timeout=request_timeout) as client:
            while not self.clients_stop.is_set():
                key = rng.choice(self.keys)
                op = rng.choices(OP_NAMES, OP_WEIGHTS)[0]
                written += 1
                value = f"{client_id}-{written}"
                arg: Any = None
                call = self.now()
                try:
                    if op == "get":
                        output: Any = await client.get(key, mode=self.o.read)  # type: ignore[arg-type]
                        seen[key] = output
                    elif op == "set":
                        arg = value
                        await client.set(key, value)
                        output = None
                        seen[key] = value
                    elif op == "cas":
                        arg = [seen.get(key), value]
                        output = await client.cas(key, arg[0], value)
                        if output:
                            seen[key] = value
                    else:
                        output = await client.delete(key)
                        seen[key] = None
                except CommandError:
                    # Refused before anything was proposed: known not applied.
                    self.out.counts[op, "failed"] += 1
                    continue
                except RaftError:
                    if op == "get":
                        # A read has no effect: one without an answer constrains nothing.
                        self.out.counts[op, "failed"] += 1
                        continue
                    # A timeout or a lost connection: the write may yet apply, or not.
                    self.out.counts[op, "unknown"] += 1
                    self.out.history.append(Operation(client_id, op, key, arg, None, call, None))
                    continue
                self.out.counts[op, "ok"] += 1
                if op == "cas":
                    self.out.swapped[bool(output)] += 1
                self.out.history.append(
                    Operation(client_id, op, key, arg, output, call, self.now()))

    async def _final_reads(self) -> None:
        """Read every key once more, after the faults: it pins down the unknown writes."""
        reader = self.o.clients
        async with connect(self.addresses, timeout=self.o.converge_timeout / 2) as client:
            for key in self.keys:
                call = self.now()
                try:
                    value = await client.get(key)
                except RaftError as exc:
                    self.out.problems.append(f"the final read of {key!r} failed: {exc}")
                    return
                self.out.history.append(
                    Operation(reader, "get", key, None, value, call, self.now()))

    # ------------------------------------------------------------- nemesis

    async def _nemesis(self, until: float) -> None:
        kinds = self.o.nemesis
        rng = self.rng("nemesis")
        starters: dict[str, Callable[[trio.Nursery, random.Random], None]] = {
            "kill": self._start_kill, "pause": self._start_pause,
            "partition": self._start_partition,
        }
        async with trio.open_nursery() as nursery:
            while kinds:
                gap = rng.uniform(*FAULT_INTERVAL)
                if trio.current_time() + gap >= until:
                    break
                await trio.sleep(gap)
                kind = rng.choice(kinds)
                if self.active >= MAX_ACTIVE_FAULTS:
                    continue
                starters[kind](nursery, rng)
            await trio.sleep_until(until)
            self.nemesis_stop.set()
            if self.active:
                self.say(f"ending the chaos: healing the {self.active} active fault(s)")
        # Every fault task has healed what it did by now.

    def _victim(self, rng: random.Random) -> int | None:
        """A member no fault holds, the leader half of the time."""
        free = [i for i in self.members if i not in self.busy and i not in self.dead]
        if not free:
            return None
        if self.leader in free and rng.random() < 0.5:
            return self.leader
        return rng.choice(free)

    def _describe(self, node_id: int) -> str:
        return f"member {node_id}" + (" (the leader)" if node_id == self.leader else "")

    def _start_kill(self, nursery: trio.Nursery, rng: random.Random) -> None:
        victim = self._victim(rng)
        if victim is not None:
            nursery.start_soon(self._kill, victim, rng.uniform(*KILL_DOWN))

    def _start_pause(self, nursery: trio.Nursery, rng: random.Random) -> None:
        victim = self._victim(rng)
        if victim is not None:
            nursery.start_soon(self._pause, victim, rng.uniform(*PAUSE_FOR))

    def _start_partition(self, nursery: trio.Nursery, rng: random.Random) -> None:
        if self.partitioned or len(self.members) < 2:
            return
        ids = sorted(self.members)
        rng.shuffle(ids)
        size = rng.randint(1, max(1, (len(ids) - 1) // 2))
        if self.leader in ids and rng.random() < 0.5:
            # Put the leader in the minority: the case where a stale leader lingers.
            ids.remove(self.leader)
            ids.insert(0, self.leader)
        minority = frozenset(ids[:size])
        majority = frozenset(ids[size:])
        nursery.start_soon(self._partition, minority, majority,
                                       rng.uniform(*PARTITION_FOR))

    async def _kill(self, victim: int, down_for: float) -> None:
        self.busy.add(victim)
        self.active += 1
        try:
            self.say(f"kill -9 {self._describe(victim)}; restart in {down_for:.1f} s")
            self.out.faults["kill"] += 1
            proc = self.cluster.procs.pop(victim)
            self.dead.add(victim)
            proc.kill()
            await proc.wait()
            await self._pause_or_stop(down_for)
            await self._restart(victim)
        finally:
            self.busy.discard(victim)
            self.active -= 1

    async def _restart(self, node_id: int) -> None:
        try:
            await self.cluster.start(node_id)
        except (RuntimeError, trio.TooSlowError) as exc:
            self.out.problems.append(f"member {node_id} did not restart: {exc or 'timed out'}")
            self.say(f"[red]member {node_id} did not restart[/red]: {exc or 'timed out'}")
            return
        self.dead.discard(node_id)
        self.faults_changed.set()  # its fault set is re-applied
        self.say(f"member {node_id} restarted")

    async def _pause(self, victim: int, paused_for: float) -> None:
        self.busy.add(victim)
        self.active += 1
        try:
            self.say(f"SIGSTOP {self._describe(victim)} for {paused_for:.1f} s")
            self.out.faults["pause"] += 1
            proc = self.cluster.procs[victim]
            self.paused.add(victim)
            proc.send_signal(signal.SIGSTOP)
            try:
                await self._pause_or_stop(paused_for)
            finally:
                proc.send_signal(signal.SIGCONT)
                self.paused.discard(victim)
            self.faults_changed.set()
            self.say(f"SIGCONT member {victim}")
        finally:
            self.busy.discard(victim)
            self.active -= 1

    async def _partition(self, minority: frozenset[int], majority: frozenset[int],
                         lasting: float) -> None:
        self.partitioned = True
        self.active += 1
        try:
            names = [" ".join(map(str, sorted(g))) for g in (minority, majority)]
            lead = f" (member {self.leader} leads)" if self.leader else ""
            self.say(f"partition {{{names[0]}}} | {{{names[1]}}}{lead} for {lasting:.1f} s")
            self.out.faults["partition"] += 1
            for side, other in ((minority, majority), (majority, minority)):
                for node_id in side:
                    self.desired[node_id] = other
            self.faults_changed.set()
            await self._pause_or_stop(lasting)
            for node_id in self.members:
                self.desired[node_id] = frozenset()
            self.faults_changed.set()
            self.say("partition healed")
        finally:
            self.partitioned = False
            self.active -= 1

    async def _push_faults(self) -> None:
        """Tell every reachable member its cut set, again and again.

        Again and again, because a member paused or killed misses the news, and
        a request that timed out against a paused member may still be acted on
        when it resumes, after a newer one: the next round puts that right.
        """
        while True:
            changed = self.faults_changed = trio.Event()
            async with trio.open_nursery() as nursery:
                for node_id, address in self.members.items():
                    if node_id in self.dead or node_id in self.paused:
                        continue
                    nursery.start_soon(self._push_one, address, self.desired[node_id])
            with trio.move_on_after(0.5):
                await changed.wait()

    async def _push_one(self, address: str, cut: frozenset[int]) -> None:
        try:
            await set_member_faults(address, cut, timeout=0.5)
        except _UNREACHABLE:
            pass  # the next round tries again

    async def _heal(self) -> None:
        """Undo whatever a fault left: none should have, but the run's end depends on it."""
        for node_id in sorted(self.paused):
            self.cluster.procs[node_id].send_signal(signal.SIGCONT)
            self.paused.discard(node_id)
        for node_id in self.members:
            self.desired[node_id] = frozenset()
        self.faults_changed.set()
        for node_id in sorted(self.dead):
            await self._restart(node_id)
        if self.o.nemesis:
            self.say("every fault healed")

    # ----------------------------------------------------------- convergence

    async def _converge(self) -> None:
        """One leader, every member applied all of its log, and the same state everywhere."""
        last = "no status yet"
        with trio.move_on_after(self.o.converge_timeout):
            while True:
                rows = await cluster_status(self.members, timeout=1.0)
                last = _why_not_converged(rows)
                if not last:
                    dumps = await self._dump_all()
                    if dumps is not None:
                        applied = {i: a for i, (a, _) in dumps.items()}
                        if len(set(applied.values())) == 1:
                            self._compare(dumps)
                            return
                        last = f"applied indexes differ while reading the states: {applied}"
                    else:
                        last = "a member did not answer a dump request"
                await trio.sleep(0.2)
        self.out.states_equal = False
        self.out.states_detail = (f"not converged after {self.o.converge_timeout:g} s: {last}")
        self.out.problems.append(self.out.states_detail)

    async def _dump_all(self) -> dict[int, tuple[int, list[list[Any]]]] | None:
        dumps: dict[int, tuple[int, list[list[Any]]]] = {}
        try:
            for node_id, address in self.members.items():
                dumps[node_id] = await _dump(address)
        except _UNREACHABLE:
            return None
        return dumps

    def _compare(self, dumps: dict[int, tuple[int, list[list[Any]]]]) -> None:
        (first_id, (applied, items)), *rest = sorted(dumps.items())
        differ = [i for i, (_, other) in rest if other != items]
        self.out.states_equal = not differ
        if differ:
            self.out.states_detail = (
                f"members {', '.join(map(str, differ))} differ from member {first_id} "
                f"at applied index {applied}: "
                + "; ".join(f"member {i}: {({k: v for k, v in d[1]})!r:.200}"
                            for i, d in sorted(dumps.items())))
            self.out.problems.append("the members' states differ")
        else:
            self.out.states_detail = f"{_count(len(items), 'key')} at applied index {applied}"
        self.say(f"converged: every member applied index {applied}")


def _why_not_converged(rows: dict[int, dict[str, Any]]) -> str:
    """Empty when every member follows one leader and applied all of its log."""
    leaders = [r for r in rows.values() if r.get("role") == "leader"]
    if len(leaders) != 1:
        return f"{len(leaders)} leaders"
    leader = leaders[0]
    target = leader["last_index"]
    if leader["commit"] != target:
        return f"the leader has committed {leader['commit']} of {target}"
    for row in rows.values():
        if row.get("role") == "down":
            return f"member {row['id']} is down: {row.get('error')}"
        if row["term"] != leader["term"] or row["leader"] != leader["id"]:
            return f"member {row['id']} is at term {row['term']} with leader {row['leader']}"
        if row["applied"] != target:
            return f"member {row['id']} applied {row['applied']} of {target}"
    return ""


async def _dump(address: str) -> tuple[int, list[list[Any]]]:
    items: list[list[Any]] = []
    applied = -1
    while True:
        at, page = await read_member_state(address, len(items), DUMP_PAGE, timeout=5.0)
        if applied not in (-1, at):
            raise RaftError(f"{address} applied more while it was read")
        applied = at
        items += page
        if len(page) < DUMP_PAGE:
            return applied, items


# ------------------------------------------------------------------ report


def _summary(options: ChaosOptions, out: Outcome, console: Console, history_path: Path,
             total_seconds: float) -> None:
    table = Table("operation", "ok", "failed", "unknown", title="operations")
    for op in (*OP_NAMES, "total"):
        if op == "total":
            cells = [sum(n for (_, kind), n in out.counts.items() if kind == outcome)
                     for outcome in ("ok", "failed", "unknown")]
        else:
            cells = [out.counts[op, outcome] for outcome in ("ok", "failed", "unknown")]
        label = op
        if op == "cas" and out.counts["cas", "ok"]:
            label = f"cas ({out.swapped[True]} swapped)"
        table.add_row(label, *map(str, cells))
    console.print(table)
    terms = max((t for t, _ in out.leaders), default=0)
    faults = ", ".join(f"{k} {out.faults[k]}" for k in NEMESES if k in options.nemesis) or "none"
    console.print(f"chaos phase: {out.chaos_seconds:.1f} s; whole run {total_seconds:.1f} s")
    console.print(f"leader changes: {max(0, len(out.leaders) - 1)} "
                  f"(distinct term and leader pairs seen: {len(out.leaders)}; highest term "
                  f"{terms})")
    console.print(f"faults injected: {faults}")
    equal = {True: "yes", False: "NO", None: "not compared"}[out.states_equal]
    console.print(f"members' states equal: {equal} ({out.states_detail or 'no detail'})")
    result = out.result
    if result is None:
        console.print("checker: not run")
    elif result.linearizable:
        console.print(f"checker: linearizable ({result.operations} operations on "
                      f"{result.keys_checked} keys, checked in {out.check_seconds:.1f} s)")
    else:
        console.print(f"checker: [bold red]NOT linearizable[/bold red] (checked in "
                      f"{out.check_seconds:.1f} s)")
        console.print(result.describe(), markup=False)
    for problem in out.problems:
        console.print(f"problem: {problem}", markup=False)
    console.print(f"history ({len(out.history)} operations; times in seconds since the start, "
                  f"as in the timeline) saved to {history_path}")
    console.print(f"seed {options.seed}: the same faults and operations again with --seed "
                  f"{options.seed} (the timing differs)")
    verdict = "[bold green]PASS[/bold green]" if out.passed else "[bold red]FAIL[/bold red]"
    console.print(f"verdict: {verdict}")


async def _run(options: ChaosOptions, console: Console, data_dir: Path,
               holder: list[ProcessCluster]) -> Outcome:
    members = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(options.servers))}
    timing = Timing(tick_interval=options.tick, election_ticks=options.election_ticks)
    snapshots = SnapshotPolicy(entries=options.snapshot_entries,
                               trailing=options.snapshot_trailing)
    cluster = ProcessCluster(members, data_dir, timing, options.log_level, snapshots,
                             fault_injection=True)
    holder.append(cluster)
    chaos = Chaos(options, cluster, console)
    try:
        out = await chaos.run()
    finally:
        with trio.CancelScope(shield=True):
            await _stop_all(cluster)
    if out.history:
        out.history.sort(key=lambda o: o.call)
        began = time.perf_counter()
        # Abandoned if the run is interrupted: the answer is no longer wanted.
        out.result = await trio.to_thread.run_sync(check, out.history, abandon_on_cancel=True)
        out.check_seconds = time.perf_counter() - began
    return out


async def _stop_all(cluster: ProcessCluster) -> None:
    async def stop(node_id: int, proc: trio.Process) -> None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        # Only now: whatever interrupts this leaves the rest to run_chaos's last resort.
        cluster.procs.pop(node_id, None)

    async with trio.open_nursery() as nursery:
        for node_id, proc in list(cluster.procs.items()):
            nursery.start_soon(stop, node_id, proc)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run_chaos(options: ChaosOptions) -> bool:
    """Run the whole thing and print the summary; True if it passed.

    A temporary data directory is removed after a passing or interrupted run
    (unless `keep`) and kept after a failure. SIGINT or SIGTERM stops the
    members and raises Interrupted (no summary: the history is cut short).
    """
    console = Console(highlight=False, soft_wrap=True)
    with SignalWatch().noting() as signals:
        made_temp = options.data_dir is None
        data_dir = (Path(tempfile.mkdtemp(prefix="raft-trio-chaos-")) if options.data_dir is None
                    else options.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        console.print(
            f"raft-trio chaos: {_count(options.servers, 'member')} (processes), "
            f"{_count(options.clients, 'client')}, {_count(options.keys, 'key')}, "
            f"nemesis {','.join(options.nemesis) or 'none'}, "
            f"seed {options.seed}, {options.duration:g} s")
        console.print(f"member data and logs in {data_dir}")
        holder: list[ProcessCluster] = []
        began = time.monotonic()
        out: Outcome | None = None
        try:
            try:
                out = trio.run(signals.run, _run, options, console, data_dir, holder)
            finally:
                for cluster in holder:
                    cluster.kill_all_now()
        except Interrupted as exc:
            remove = made_temp and not options.keep
            if remove:
                shutil.rmtree(data_dir, ignore_errors=True)
            exc.detail = (f"temporary data in {data_dir} removed" if remove
                          else f"data kept in {data_dir}")
            raise
        except BaseException:
            console.print(f"data kept in {data_dir}")
            raise
        keep = options.keep or not made_temp or not out.passed
        history_path = options.history
        if history_path is None:
            history_path = data_dir / "history.jsonl" if keep else Path("chaos-history.jsonl")
        history_path = history_path.resolve()
        history_path.parent.mkdir(parents=True, exist_ok=True)
        save_history(out.history, history_path)
        _summary(options, out, console, history_path, time.monotonic() - began)
        if keep:
            console.print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
        try:
            signals.check()
        except Interrupted as exc:
            exc.detail = f"data kept in {data_dir}" if keep else f"{data_dir} removed"
            raise
        return out.passed
