"""The ten-step stress checklist (DESIGN.md), driven through the real client protocol."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import cbor2
import trio
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from raft_trio.client import Client, cluster_status, connect, read_member_state
from raft_trio.errors import CommandError, RaftError, leaves
from raft_trio.server import SnapshotPolicy, Timing
from stress.cluster import Cluster, InProcessCluster, ProcessCluster, free_ports
from stress.interrupt import Interrupted, SignalWatch

STATE_PAGE = 10_000


@dataclass(frozen=True)
class StressOptions:
    entries: int = 50_000
    batch: int = 100
    clients: int = 8
    servers: int = 3
    up: int = 3
    processes: bool = False
    data_dir: Path | None = None
    keep: bool = False
    seed: int = 0
    base_port: int = 0
    log_level: str = "warning"
    step_timeout: float = 60.0
    # Servers' --snapshot-entries (None: their default).
    snapshot_entries: int | None = None
    snapshot_trailing: int | None = None
    # During step 2: add a member, hand it leadership, remove the first leader.
    reconfigure: bool = False


class StepFailed(Exception):
    pass


class StepsSkipped(Exception):
    """This step and the rest cannot mean anything in this run (the message says why)."""


@dataclass
class StateSummary:
    applied: int
    digest: str
    per_client: dict[int, list[int]]
    keys: int


class ClusterChecklist:
    """Numbered steps against the started members of `cluster`, each printed as it ends:
    PASS or FAIL with its time and a short detail, SKIP with the reason. The KV
    checklist below and the file system's (stress/fs_runner.py) build on it."""

    def __init__(self, cluster: Cluster, console: Console, up_ids: list[int],
                 step_timeout: float):
        self.cluster = cluster
        self.console = console
        self.up_ids = up_ids
        self.addresses = [cluster.members[i] for i in up_ids]
        self.step_timeout = step_timeout
        self.results: list[tuple[int, str, bool, float, str]] = []
        self.skipped = 0

    # -------------------------------------------------------------- helpers

    async def statuses(self) -> dict[int, dict[str, Any]]:
        """Status of every started member that answers."""
        members = {i: self.cluster.members[i] for i in self.up_ids}
        rows = await cluster_status(members, timeout=2.0)
        return {i: row for i, row in rows.items() if row["role"] != "down"}

    async def wait_until(
        self, what: str, check: Callable[[], Awaitable[str | None]], timeout: float | None = None
    ) -> None:
        """Poll `check` (None means satisfied, else the reason) until it holds or time runs out."""
        reason = "not checked"
        with trio.move_on_after(timeout or self.step_timeout):
            while True:
                reason_now = await check()
                if reason_now is None:
                    return
                reason = reason_now
                await trio.sleep(0.1)
        raise StepFailed(f"{what}: {reason}")

    async def wait_leader(self) -> None:
        async def check() -> str | None:
            st = await self.statuses()
            leaders = [s for s in st.values() if s["role"] == "leader"]
            if len(leaders) != 1:
                return f"{len(leaders)} leaders among {len(st)} reachable members"
            lead = leaders[0]
            agree = [s for s in st.values()
                     if s["leader"] == lead["id"] and s["term"] == lead["term"]]
            if len(agree) < len(self.up_ids):
                return f"only {len(agree)} of {len(self.up_ids)} members follow {lead['id']}"
            return None

        await self.wait_until("no leader elected", check)

    async def wait_committed(self, expected_last: int | None = None) -> None:
        async def check() -> str | None:
            st = await self.statuses()
            if len(st) < len(self.up_ids):
                return f"only {len(st)} of {len(self.up_ids)} members answer"
            lasts = {s["last_index"] for s in st.values()}
            for s in st.values():
                if s["commit"] != s["last_index"] or s["applied"] != s["commit"]:
                    return (f"member {s['id']}: commit {s['commit']}, applied {s['applied']}, "
                            f"last index {s['last_index']}")
            if len(lasts) != 1:
                return f"members disagree on the last index: {sorted(lasts)}"
            if expected_last is not None and min(lasts) < expected_last:
                return f"last index {min(lasts)} < expected {expected_last}"
            return None

        await self.wait_until("entries not committed everywhere", check)

    # ---------------------------------------------------------------- steps

    async def step(self, number: int, title: str, body: Callable[[], Awaitable[str]]) -> None:
        self.console.print(f"[bold]{number:2d}.[/bold] {title}")
        started = time.perf_counter()
        try:
            detail = await body()
        except StepsSkipped:
            raise
        except Exception as exc:
            reason = _failure_reason(exc)
            if reason is None:
                raise
            elapsed = time.perf_counter() - started
            self.results.append((number, title, False, elapsed, reason))
            self.console.print(f"    [red]FAIL[/red] ({elapsed:.2f}s) {reason}")
            raise StepFailed(reason) from exc
        elapsed = time.perf_counter() - started
        self.results.append((number, title, True, elapsed, detail))
        self.console.print(f"    [green]PASS[/green] ({elapsed:.2f}s) {detail}")

    async def start_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for node_id in self.up_ids:
                nursery.start_soon(self.cluster.start, node_id)

    async def stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for node_id in self.up_ids:
                nursery.start_soon(self.cluster.stop, node_id)

    async def stop_all_quietly(self) -> None:
        async with trio.open_nursery() as nursery:
            for node_id in self.cluster.running():
                nursery.start_soon(self.cluster.stop, node_id)

    async def run_steps(self, steps: list[tuple[str, Callable[[], Awaitable[str]]]]) -> bool:
        """Run `steps` (titles and bodies, numbered from 1) in order. After a failed step
        the rest are skipped and the result is False; after StepsSkipped the rest are
        skipped too, with its reason, and the result is True."""
        for number, (title, body) in enumerate(steps, start=1):
            try:
                await self.step(number, title, body)
            except StepFailed:
                self.skip_rest(steps, number, f"step {number} failed")
                return False
            except StepsSkipped as exc:
                self.console.print(f"    SKIP ({escape(str(exc))})")
                self.skipped += 1
                self.skip_rest(steps, number, str(exc))
                return True
        return True

    def skip_rest(self, steps: list[tuple[str, Any]], after: int, why: str) -> None:
        for number, (title, _) in enumerate(steps[after:], start=after + 1):
            self.console.print(f"[bold]{number:2d}.[/bold] {title}\n    SKIP ({escape(why)})")
            self.skipped += 1

    def tally(self, steps: int) -> str:
        """"7/10 steps passed, 1 failed, 2 skipped"."""
        passed = sum(1 for r in self.results if r[2])
        failed = len(self.results) - passed
        counts = "".join(f", {n} {what}" for n, what in ((failed, "failed"),
                                                         (self.skipped, "skipped")) if n)
        return f"{passed}/{steps} steps passed{counts}"


class Checklist(ClusterChecklist):
    """The key-value store's ten steps (DESIGN.md)."""

    def __init__(self, options: StressOptions, cluster: Cluster, console: Console):
        super().__init__(cluster, console, sorted(cluster.members)[: options.up],
                         options.step_timeout)
        self.o = options
        self.rng = random.Random(options.seed)
        self.acknowledged = 0
        self.throughput = 0.0
        self.expected_last = 0
        self.reconfigured = ""

    def client(self) -> Client:
        return connect(self.addresses, timeout=self.o.step_timeout, request_timeout=10.0)

    async def read_state(self, node_id: int) -> StateSummary:
        """Page through one member's key-value state, in the order keys were first set.

        The state, not the log, is what is compared: once snapshots compact
        the log, the entries before the snapshot are gone, while the state
        holds what every one of them did. Insertion order survives snapshots
        (they store keys in that order), so each client's keys must appear
        in the order that client wrote them.
        """
        address = self.cluster.members[node_id]
        digest = hashlib.sha256()
        per_client: dict[int, list[int]] = {}
        keys = 0
        applied: int | None = None
        while True:
            at, page = await read_member_state(address, keys, STATE_PAGE, timeout=30.0)
            if applied is None:
                applied = at
            elif at != applied:
                raise StepFailed(f"member {node_id} applied more entries during the check "
                                 f"({applied} then {at})")
            if not page:
                break
            for key, value in page:
                digest.update(cbor2.dumps([key, value]))
                if key.startswith("s"):
                    client_id, seq = key[1:].split("-")
                    per_client.setdefault(int(client_id), []).append(int(seq))
            keys += len(page)
        return StateSummary(applied or 0, digest.hexdigest(), per_client, keys)

    async def check_logs(self) -> str:
        summaries = {i: await self.read_state(i) for i in self.up_ids}
        digests = {s.digest for s in summaries.values()}
        if len(digests) != 1:
            applied = {i: s.applied for i, s in summaries.items()}
            raise StepFailed(f"member states differ (applied indexes {applied})")
        summary = next(iter(summaries.values()))
        quotas = self.quotas()
        for client_id, quota in enumerate(quotas):
            seqs = summary.per_client.get(client_id, [])
            if seqs != list(range(quota)):
                bad = next((p for p, s in enumerate(seqs) if s != p), len(seqs))
                raise StepFailed(
                    f"client {client_id}: {len(seqs)} of {quota} entries, first out of place "
                    f"at position {bad}"
                )
        return f"{summary.keys} entries in order on {plural(len(summaries), 'member')}"

    def quotas(self) -> list[int]:
        base, extra = divmod(self.o.entries, self.o.clients)
        return [base + (1 if c < extra else 0) for c in range(self.o.clients)]

    async def step1(self) -> str:
        await self.start_all()
        await self.wait_leader()
        return f"{len(self.up_ids)} of {self.o.servers} members up, leader elected"

    async def step2(self) -> str:
        quotas = self.quotas()
        latencies: list[float] = []
        progress = Progress(
            TextColumn("    inserting"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            # Piped, a bar cannot be redrawn: it would leave only an empty line.
            console=self.console, transient=True, disable=not self.console.is_terminal,
        )
        # Keys are made before the clock starts: the figure is the cluster's, not
        # the cost of formatting strings in this process.
        batches = [
            [
                [(f"s{client_id}-{seq}", f"value-{client_id}-{seq}")
                 for seq in range(first, min(first + self.o.batch, quota))]
                for first in range(0, quota, self.o.batch)
            ]
            for client_id, quota in enumerate(quotas)
        ]
        cpu_before, members_before = time.process_time(), self.cluster.cpu_seconds()
        started = time.perf_counter()

        async def run_client(client_id: int, quota: int) -> None:
            async with self.client() as client:
                for items in batches[client_id]:
                    t0 = time.perf_counter()
                    await client.set_many(items)
                    latencies.append(time.perf_counter() - t0)
                    self.acknowledged += len(items)
                    elapsed = time.perf_counter() - started
                    progress.update(task, advance=len(items),
                                    rate=f"{self.acknowledged / elapsed:,.0f} entries/s")

        with progress:
            task = progress.add_task("insert", total=self.o.entries, rate="")
            async with trio.open_nursery() as nursery:
                for client_id, quota in enumerate(quotas):
                    nursery.start_soon(run_client, client_id, quota)
                if self.o.reconfigure:
                    nursery.start_soon(self.reconfigure)
        elapsed = time.perf_counter() - started
        cpu = self.cpu_per_entry(time.process_time() - cpu_before, members_before)
        self.throughput = self.o.entries / elapsed
        p50, p99 = percentiles(latencies)
        return (f"{self.o.entries} entries in {elapsed:.2f}s: {self.throughput:,.0f} entries/s; "
                f"batch latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {cpu}"
                + self.reconfigured)

    def cpu_per_entry(self, here: float, members_before: dict[int, float] | None) -> str:
        """CPU time spent per entry inserted, in all and by process: what the
        machine's cores had to give for the throughput."""
        members_after = self.cluster.cpu_seconds()
        us = 1e6 / self.o.entries
        if members_before is None or members_after is None:
            return "CPU per entry not measured (no /proc to read the members' CPU time from)"
        if members_before.keys() != members_after.keys():
            # A member joined or left (--reconfigure), or was restarted under a new pid.
            return "CPU per entry not measured (the member processes changed meanwhile)"
        if not members_after:
            return f"CPU {here * us:.1f} us/entry (members and clients in this process)"
        members = {i: members_after[i] - members_before[i] for i in members_after}
        total = here + sum(members.values())
        each = "/".join(f"{members[i] * us:.1f}" for i in sorted(members))
        return f"CPU {total * us:.1f} us/entry (members {each}, clients {here * us:.1f})"

    async def reconfigure(self) -> None:
        """While the clients write: a new member joins, takes over leadership, and the
        member that led is removed; later steps run on the new configuration."""
        while self.acknowledged < self.o.entries // 4:
            await trio.sleep(0.05)
        new_id = max(self.cluster.members) + 1
        (port,) = free_ports(1)
        self.cluster.add_joiner(new_id, f"127.0.0.1:{port}")
        await self.cluster.start(new_id)
        async with connect(self.addresses, timeout=self.o.step_timeout,
                           request_timeout=self.o.step_timeout) as admin:
            old_leader = (await admin.members())["leader"]
            try:
                await admin.add_member(new_id, self.cluster.members[new_id])
            except CommandError as exc:
                # A member process joins by itself (serve --join).
                if "already" not in str(exc):
                    raise
            # It is a learner until it has caught up: only a voter can take over.
            with trio.fail_after(self.o.step_timeout):
                while new_id not in _ids((await admin.members())["voters"]):
                    await trio.sleep(0.05)
            await admin.transfer_leadership(new_id)
            self.up_ids = sorted({*self.up_ids, new_id} - {old_leader})
            self.addresses = [self.cluster.members[i] for i in self.up_ids]
            voters = (await admin.remove_member(old_leader))["voters"]
            # A member whose data is deleted later starts again in this configuration.
            self.cluster.reconfigured({int(i): a for i, a in voters.items()})
        with trio.fail_after(self.o.step_timeout):
            while old_leader in self.cluster.running():
                await self.cluster.reap(old_leader)
        self.reconfigured = (f"; meanwhile member {new_id} joined, took over leadership, and "
                             f"member {old_leader} was removed")

    async def step3(self) -> str:
        await self.wait_committed()
        st = await self.statuses()
        self.expected_last = max(s["last_index"] for s in st.values())
        return f"commit = last index = {self.expected_last} on every member"

    async def step5(self) -> str:
        await self.stop_all()
        await self.start_all()
        await self.wait_leader()
        return "restarted, leader elected"

    async def step6(self) -> str:
        await self.wait_committed(self.expected_last)
        return await self.check_logs()

    async def step7(self) -> str:
        if len(self.up_ids) < 2:
            raise StepsSkipped(f"member {self.up_ids[0]} is the only member: once its data is "
                               f"deleted, no member could rebuild it")
        await self.stop_all()
        self.victim = self.rng.choice(self.up_ids)
        self.cluster.wipe(self.victim)
        return f"all stopped, member {self.victim}'s data deleted"

    async def step8(self) -> str:
        await self.start_all()
        return "all started"

    async def step9(self) -> str:
        await self.wait_leader()
        return "leader elected"

    async def step10(self) -> str:
        await self.wait_committed(self.expected_last)
        return f"member {self.victim} rebuilt; " + await self.check_logs()

    async def run(self) -> bool:
        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            (f"Start {self.o.up} of {self.o.servers} servers; wait for a leader", self.step1),
            (f"Insert {self.o.entries} entries in batches of {self.o.batch} across "
             f"{self.o.clients} clients", self.step2),
            ("Every server has committed every entry it knows of", self.step3),
            ("Every server's state holds all entries, in insertion order", self.check_logs),
            ("Shut all servers down, start them again; a leader is elected", self.step5),
            ("Everything inserted before the shutdown is committed and in order", self.step6),
            ("Shut all servers down and delete one server's data", self.step7),
            ("Start all servers again", self.step8),
            ("A leader is elected", self.step9),
            ("Every server has every entry: the deleted one is rebuilt", self.step10),
        ]
        return await self.run_steps(steps)


STEP_ERRORS = (StepFailed, RaftError, OSError, trio.TooSlowError, RuntimeError)


class Killable(Protocol):
    def kill_all_now(self) -> None: ...


def _failure_reason(exc: Exception) -> str | None:
    """What made a step fail, or None for an error that is a bug (to be raised as is).

    Errors from inside nurseries (clients, member start/stop) arrive in ExceptionGroups.
    """
    if isinstance(exc, STEP_ERRORS):
        return str(exc) or type(exc).__name__
    if isinstance(exc, ExceptionGroup):
        expected, other = exc.split(STEP_ERRORS)
        if expected is not None and other is None:
            reasons = dict.fromkeys(str(e) or type(e).__name__ for e in leaves(expected))
            return "; ".join(reasons)
    return None


def plural(n: int, noun: str) -> str:
    """"1 member", "3 members"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ids(members: dict[Any, str]) -> set[int]:
    return {int(i) for i in members}


def percentiles(samples: list[float]) -> tuple[float, float]:
    """The 50th and 99th percentiles of `samples` (0.0 for none)."""
    if not samples:
        return 0.0, 0.0
    if len(samples) == 1:
        return samples[0], samples[0]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def _run(options: StressOptions, console: Console, data_dir: Path,
               holder: list[Killable]) -> bool:
    ports = (list(range(options.base_port, options.base_port + options.servers))
             if options.base_port else free_ports(options.servers))
    members = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(ports)}
    timing = Timing(tick_interval=0.1, election_ticks=10)
    snapshots = SnapshotPolicy()
    if options.snapshot_entries is not None:
        snapshots = dataclasses.replace(snapshots, entries=options.snapshot_entries)
    if options.snapshot_trailing is not None:
        snapshots = dataclasses.replace(snapshots, trailing=options.snapshot_trailing)
    mode = "processes" if options.processes else "in-process"
    console.print(f"raft-trio stress: {plural(options.servers, 'member')} ({options.up} up, "
                  f"{mode}), "
                  f"data in {data_dir}")
    async with trio.open_nursery() as nursery:
        cluster: Cluster
        if options.processes:
            cluster = ProcessCluster(members, data_dir, timing, options.log_level, snapshots)
        else:
            cluster = InProcessCluster(nursery, members, data_dir, timing, options.log_level,
                                       snapshots)
        holder.append(cluster)
        checklist = Checklist(options, cluster, console)
        try:
            ok = await checklist.run()
        finally:
            with trio.CancelScope(shield=True):
                rss = cluster.peak_rss()
                disk = cluster.disk_usage()
                await checklist.stop_all_quietly()
            nursery.cancel_scope.cancel()
    console.print(f"\n{checklist.tally(10)}; "
                  f"throughput {checklist.throughput:,.0f} entries/s")
    if rss:
        shown = ", ".join(f"member {i}: {b / 2**20:.0f} MiB" for i, b in sorted(rss.items()))
        console.print(f"peak RSS per server: {shown}")
    shown = ", ".join(f"member {i}: {b / 2**20:.1f} MiB" for i, b in sorted(disk.items()))
    console.print(f"disk used per server at the end: {shown}")
    return ok


def run_stress(options: StressOptions) -> bool:
    """Run the checklist; True if every step passed or was skipped for a stated reason.
    See run_in_data_dir for the data directory and signals."""
    console = Console(highlight=False, soft_wrap=True)
    return run_in_data_dir(options.data_dir, options.keep, "raft-trio-stress-", console,
                           partial(_run, options, console))


def run_in_data_dir(given: Path | None, keep: bool, prefix: str, console: Console,
                    main: Callable[[Path, list[Killable]], Awaitable[bool]]) -> bool:
    """`trio.run` of `main(data_dir, holder)` in the directory `given`, or a new temporary
    one named `prefix...`; `main` puts into `holder` whatever runs processes, and
    whatever is left of them is killed at the end.

    A temporary data directory is removed after a passing or interrupted run
    (unless `keep`), and kept, with a line saying where, after a failure; a
    directory the caller gave is never removed. SIGINT or SIGTERM cancels
    `main` (which stops what it started) and raises Interrupted, whose
    `detail` says what became of the data.
    """
    with SignalWatch().noting() as signals:
        made_temp = given is None
        data_dir = Path(tempfile.mkdtemp(prefix=prefix)) if given is None else given
        holder: list[Killable] = []
        try:
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
                ok = trio.run(signals.run, main, data_dir, holder)
            finally:
                for cluster in holder:
                    cluster.kill_all_now()
        except Interrupted as exc:
            exc.detail = _leave(data_dir, remove=made_temp and not keep)
            raise
        except BaseException:
            console.print(f"data kept in {data_dir}")
            raise
        where = _leave(data_dir, remove=made_temp and not keep and ok)
        if keep or not ok:
            console.print(where)
        try:
            signals.check()
        except Interrupted as exc:
            exc.detail = where
            raise
        return ok


def _leave(data_dir: Path, *, remove: bool) -> str:
    if remove:
        shutil.rmtree(data_dir, ignore_errors=True)
        return f"temporary data in {data_dir} removed"
    return f"data kept in {data_dir}"
