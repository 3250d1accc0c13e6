"""The file system's ten-step checklist (`raft-trio fs-stress`, issue 12), in the spirit
of the key-value store's (stress/runner.py): 3 metadata members and data nodes,
files of mixed sizes written by concurrent clients, every byte checked through the
client and on every replica, everything restarted, then one data node's and one
member's directory wiped.

What the steps read comes from the workload (stress/fs_workload.py), never from
the client's or the members' own idea of what was written.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from raft_trio.client import read_member_state
from raft_trio.errors import RaftError
from raft_trio.fs.client import FileSystem
from raft_trio.fs.datanode import ChunkNotFound, DataNodeError, get_chunk
from raft_trio.server import Timing
from stress.cluster import Cluster, free_ports
from stress.fs_workload import FileSpec, Problems, Workload, first_change
from stress.fscluster import (
    DataNodeProcesses,
    DataNodes,
    DataNodeSet,
    MetadataProcesses,
    in_process_metadata,
)
from stress.runner import (
    STATE_PAGE,
    ClusterChecklist,
    Killable,
    StepFailed,
    percentiles,
    plural,
    run_in_data_dir,
)

MEMBERS = 3
MB = 1e6


@dataclass(frozen=True)
class FSStressOptions:
    files: int = 200
    clients: int = 8
    chunk_kb: int = 1024
    datanodes: int = 3
    processes: bool = False
    data_dir: Path | None = None
    keep: bool = False
    seed: int = 0
    log_level: str = "warning"
    step_timeout: float = 60.0
    # Members' seconds per tick (elections take 10-20 ticks).
    tick: float = 0.1
    # Data nodes' seconds between heartbeats; the leader's time before it counts one dead.
    heartbeat: float = 0.2
    dead_after: float = 5.0

    @property
    def chunk_size(self) -> int:
        return self.chunk_kb * 1024

    @property
    def replication(self) -> int:
        return min(3, self.datanodes)


class FSChecklist(ClusterChecklist):
    def __init__(self, options: FSStressOptions, metadata: Cluster, datanodes: DataNodeSet,
                 console: Console):
        super().__init__(metadata, console, sorted(metadata.members), options.step_timeout)
        self.o = options
        self.datanodes = datanodes
        self.datanode_ids = list(range(1, options.datanodes + 1))
        self.workload = Workload.make(options.files, options.chunk_size, options.replication,
                                      options.seed)
        # Chosen now, from the seed, so that the choice does not depend on what ran before.
        rng = random.Random(options.seed)
        self.wiped_member = rng.choice(self.up_ids)
        self.wiped_datanode = rng.choice(self.datanode_ids)
        self.wiped = False
        # Copies the namespace places on each data node (step 4 on).
        self.placed: dict[int, int] = {}
        self.expected_last = 0
        # Every member's namespace listing must equal this one after the restarts.
        self.reference: list[list[Any]] = []
        self.write_rates = ""
        self.read_rates: list[float] = []

    # -------------------------------------------------------------- helpers

    def client(self) -> FileSystem:
        return FileSystem(self.addresses, timeout=self.o.step_timeout,
                          chunk_size=self.o.chunk_size, replication=self.o.replication)

    async def start_everything(self) -> None:
        """The members, then the data nodes (which report to the leader)."""
        await self.start_all()
        async with trio.open_nursery() as nursery:
            for node_id in self.datanode_ids:
                nursery.start_soon(self.datanodes.start, node_id)

    async def stop_everything(self, *, quietly: bool = False) -> None:
        """The data nodes, then the members (so that no heartbeat finds no leader)."""
        async with trio.open_nursery() as nursery:
            for node_id in self.datanodes.running():
                nursery.start_soon(self.datanodes.stop, node_id)
        await (self.stop_all_quietly() if quietly else self.stop_all())

    async def wait_datanodes(self) -> str:
        """Until the leader counts every data node live at its address, with a heartbeat
        sent since this call; then each must report at least the chunk copies the
        namespace places on it (more would be garbage, which is not checked)."""
        nodes: dict[int, dict[str, Any]] = {}
        since = trio.current_time()
        async with self.client() as fs:

            async def check() -> str | None:
                try:
                    nodes.update((n["id"], n) for n in await fs.datanodes())
                except (RaftError, OSError) as exc:
                    return f"the leader's list of data nodes: {exc}"
                for node_id, address in self.datanodes.addresses.items():
                    node = nodes.get(node_id)
                    if node is None:
                        return f"data node {node_id} has not reported to the leader"
                    if node["state"] != "live":
                        return f"data node {node_id} is {node['state']}"
                    if node["address"] != address:
                        return (f"data node {node_id} reports address {node['address']}, "
                                f"not {address}")
                    if node["since_heartbeat"] >= trio.current_time() - since:
                        return f"no heartbeat from data node {node_id} yet"
                return None

            await self.wait_until("data nodes not all reporting", check)
        for node_id in self.datanode_ids:
            reported, placed = nodes[node_id]["chunks"], self.placed.get(node_id, 0)
            if reported < placed:
                raise StepFailed(f"data node {node_id} reports {plural(reported, 'chunk')}; "
                                 f"the namespace places {placed} on it")
        shown = "/".join(str(nodes[i]["chunks"]) for i in self.datanode_ids)
        return f"{plural(len(self.datanode_ids), 'data node')} live ({shown} chunks)"

    async def for_each_file(self, work: Callable[[FileSystem, FileSpec], Awaitable[None]],
                            files: Iterable[FileSpec] | None = None) -> None:
        """`work(fs, spec)` on every file, shared out among the clients as they free up."""
        queue = iter(self.workload.files if files is None else files)

        async def worker() -> None:
            async with self.client() as fs:
                for spec in queue:  # one iterator for all: each takes the next file
                    await work(fs, spec)

        async with trio.open_nursery() as nursery:
            for _ in range(self.o.clients):
                nursery.start_soon(worker)

    async def listing(self, node_id: int) -> list[list[Any]]:
        """Member `node_id`'s whole namespace listing (Namespace.page), through `dump`."""
        address = self.cluster.members[node_id]
        records: list[list[Any]] = []
        applied: int | None = None
        while True:
            at, page = await read_member_state(address, len(records), STATE_PAGE, timeout=30.0)
            if applied is not None and at != applied:
                raise StepFailed(f"member {node_id} applied more entries during the check "
                                 f"({applied} then {at})")
            applied = at
            if not page:
                return records
            records += page

    def cpu_per_mb(self, here: float, before: list[dict[int, float] | None]) -> str:
        """CPU time per MB written, in all and by process (as stress's per entry)."""
        mb = self.workload.total_bytes() / MB
        after = [self.cluster.cpu_seconds(), self.datanodes.cpu_seconds()]
        if not mb:
            return "CPU per MB not measured (nothing but empty files)"
        if any(b is None or a is None or a.keys() != b.keys()
               for a, b in zip(after, before, strict=True)):
            return "CPU per MB not measured (no /proc to read the processes' CPU time from)"
        used = [{i: a[i] - b[i] for i in a} for a, b in zip(after, before, strict=True)
                if a is not None and b is not None]
        if not any(used):
            return f"CPU {here * 1000 / mb:.1f} ms/MB (all in this process)"
        total = here + sum(sum(u.values()) for u in used)
        members, nodes = ("/".join(f"{u[i] * 1000 / mb:.1f}" for i in sorted(u)) for u in used)
        return (f"CPU {total * 1000 / mb:.1f} ms/MB (members {members}, data nodes {nodes}, "
                f"clients {here * 1000 / mb:.1f})")

    # ---------------------------------------------------------------- steps

    async def step1(self) -> str:
        await self.start_everything()
        await self.wait_leader()
        return f"leader elected; {await self.wait_datanodes()}"

    async def step2(self) -> str:
        w = self.workload
        ops = 0
        latencies: list[float] = []
        done_files = 0
        done_bytes = 0
        progress = Progress(
            TextColumn("    writing"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            console=self.console, transient=True, disable=not self.console.is_terminal,
        )
        before = [self.cluster.cpu_seconds(), self.datanodes.cpu_seconds()]
        cpu_here = time.process_time()
        started = time.perf_counter()

        async def make_dirs() -> None:
            leaves = iter(w.leaves)

            async def worker() -> None:
                nonlocal ops
                async with self.client() as fs:
                    for leaf in leaves:
                        await fs.mkdir(leaf, parents=True)
                        ops += 1

            async with trio.open_nursery() as nursery:
                for _ in range(self.o.clients):
                    nursery.start_soon(worker)

        async def write(fs: FileSystem, spec: FileSpec) -> None:
            nonlocal ops, done_files, done_bytes
            data = w.content(spec)
            w.record(spec, data)
            t0 = time.perf_counter()
            await fs.write_file(spec.path, data, exclusive=True)
            latencies.append(time.perf_counter() - t0)
            ops += 2 + 2 * len(w.chunk_lengths(spec.size))  # create, complete; allocate, commit
            done_files += 1
            done_bytes += spec.size
            elapsed = time.perf_counter() - files_started
            progress.update(task, advance=1, rate=f"{done_files / elapsed:,.0f} files/s, "
                                                  f"{done_bytes / MB / elapsed:,.1f} MB/s")

        await make_dirs()
        files_started = time.perf_counter()
        with progress:
            task = progress.add_task("write", total=len(w.files), rate="")
            await self.for_each_file(write)
        ended = time.perf_counter()
        cpu = self.cpu_per_mb(time.process_time() - cpu_here, before)
        files_time, total_time = ended - files_started, ended - started
        mb = w.total_bytes() / MB
        p50, p99 = percentiles(latencies)
        self.write_rates = (f"{len(w.files) / files_time:,.0f} files/s, "
                            f"{ops / total_time:,.0f} metadata ops/s, "
                            f"{mb / files_time:,.1f} MB/s")
        return (f"{plural(len(w.leaves), 'directory path')} made with mkdir -p, then "
                f"{len(w.files)} files ({w.mix()}; {mb:,.1f} MB in "
                f"{plural(w.total_chunks(), 'chunk')} of {self.o.chunk_kb} KiB) in "
                f"{total_time:.2f}s: {self.write_rates} ({ops} ops: mkdir, create, allocate, "
                f"commit, complete); per file p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} "
                f"ms; {cpu}")

    async def read_back(self) -> str:
        """Every file through the client: its stat, then its bytes."""
        problems = Problems()
        started = time.perf_counter()

        async def read(fs: FileSystem, spec: FileSpec) -> None:
            try:
                problems.add(self.workload.check_stat(spec, await fs.stat(spec.path)))
                problems.add(self.workload.check_data(spec, await fs.read_file(spec.path)))
            except (OSError, RaftError) as exc:
                problems.add(f"{spec.path}: {exc}")

        await self.for_each_file(read)
        problems.raise_any("wrong file")
        elapsed = time.perf_counter() - started
        mb = self.workload.total_bytes() / MB
        self.read_rates.append(mb / elapsed)
        return (f"{len(self.workload.files)} files, {mb:,.1f} MB, read back byte for byte with "
                f"the right stat in {elapsed:.2f}s: {len(self.workload.files) / elapsed:,.0f} "
                f"files/s, {mb / elapsed:,.1f} MB/s")

    async def check_replicas(self, gone: int | None = None) -> tuple[int, int, int, float]:
        """Every chunk of every file from each data node the namespace lists for it, byte
        for byte; a data node `gone` (wiped) must have none of them. Returns the chunks,
        the copies read, the copies found gone, and the seconds it took."""
        w = self.workload
        problems = Problems()
        placed: dict[int, int] = dict.fromkeys(self.datanode_ids, 0)
        chunks = copies = missing = 0
        started = time.perf_counter()
        async with self.client() as fs:
            addresses = {n["id"]: n["address"] for n in await fs.datanodes()}

        async def check_file(fs: FileSystem, spec: FileSpec) -> None:
            nonlocal chunks, copies, missing
            path = spec.path
            info = await fs.chunks(path)
            written = w.written[path]
            if len(info["chunks"]) != len(written.chunk_sha256):
                problems.add(f"{path}: {len(info['chunks'])} chunks, not "
                             f"{len(written.chunk_sha256)}")
                return
            for index, (chunk_id, length, digest, replicas) in enumerate(info["chunks"]):
                chunks += 1
                what = f"chunk {index} of {path} (id {chunk_id:x})"
                if digest != written.chunk_checksums[index]:
                    problems.add(f"{what}: checksum {digest}, written "
                                 f"{written.chunk_checksums[index]}")
                for node_id in replicas:
                    placed[node_id] = placed.get(node_id, 0) + 1
                    try:
                        data = await get_chunk(addresses[node_id], chunk_id, digest)
                    except ChunkNotFound as exc:
                        if node_id == gone:
                            missing += 1
                        else:
                            problems.add(f"data node {node_id} has no copy of {what}: {exc}")
                        continue
                    except (DataNodeError, KeyError) as exc:
                        problems.add(f"data node {node_id}, {what}: {exc!r}")
                        continue
                    if node_id == gone:
                        problems.add(f"data node {node_id} was wiped, yet has {what}")
                    elif hashlib.sha256(data).digest() != written.chunk_sha256[index]:
                        problems.add(f"data node {node_id}'s copy of {what} differs from "
                                     f"what was written ({len(data)} bytes of {length})")
                    else:
                        copies += 1

        await self.for_each_file(check_file)
        problems.raise_any("replica problem")
        self.placed = placed if gone is None else {**placed, gone: 0}
        return chunks, copies, missing, time.perf_counter() - started

    async def step4(self) -> str:
        chunks, copies, _, elapsed = await self.check_replicas()
        mb = self.workload.total_bytes() * self.o.replication / MB
        reported = await self.wait_datanodes()
        # What every member must still hold after the restarts and the wipe (step 9),
        # once every member has applied every entry.
        await self.wait_committed()
        st = await self.statuses()
        self.expected_last = max(s["last_index"] for s in st.values())
        self.reference = await self.listing(self.up_ids[0])
        return (f"{copies} copies of {plural(chunks, 'chunk')} ({mb:,.1f} MB) read from their "
                f"data nodes in {elapsed:.2f}s ({mb / elapsed:,.1f} MB/s), every one as "
                f"written; {reported}")

    async def step5(self) -> str:
        await self.stop_everything()
        await self.start_everything()
        await self.wait_leader()
        return f"restarted, leader elected; {await self.wait_datanodes()}"

    async def step7(self) -> str:
        await self.stop_everything()
        self.cluster.wipe(self.wiped_member)
        self.datanodes.wipe(self.wiped_datanode)
        self.wiped = True
        self.placed[self.wiped_datanode] = 0
        return (f"all stopped; the directories of data node {self.wiped_datanode} and "
                f"metadata member {self.wiped_member} deleted")

    async def step8(self) -> str:
        await self.start_everything()
        await self.wait_leader()
        return f"all started, leader elected; {await self.wait_datanodes()}"

    async def step9(self) -> str:
        await self.wait_committed(self.expected_last)
        problems = Problems()
        for node_id in self.up_ids:
            records = await self.listing(node_id)
            for problem in self.workload.check_listing(records):
                problems.add(f"member {node_id}: {problem}")
            if records != self.reference:
                problems.add(f"member {node_id}: {first_change(self.reference, records)}")
        problems.raise_any("namespace problem")
        async with self.client() as fs:
            walked = await self.walk(fs)
        dirs = len(self.workload.directories())
        return (f"{dirs} directories and {len(self.workload.files)} files, every stat, chunk "
                f"and replica list as written and as before the restarts, on all "
                f"{len(self.up_ids)} members (member {self.wiped_member} rebuilt); the "
                f"client's listing of every directory agrees ({walked} entries)")

    async def walk(self, fs: Any) -> int:
        """Every directory through the client (readdir, linearizable), against the tree
        written; returns the entries seen."""
        tree = self.workload.children()
        problems = Problems()
        seen = 0
        for directory in sorted(tree):
            expected = tree[directory]
            try:
                entries = dict(await fs.scandir(directory))
            except OSError as exc:
                problems.add(f"{directory}: {exc}")
                continue
            seen += len(entries)
            if entries.keys() != expected.keys():
                extra, missing = entries.keys() - expected.keys(), expected.keys() - entries.keys()
                problems.add(f"{directory} lists {sorted(extra)[:3]} too many and "
                             f"{sorted(missing)[:3]} too few")
                continue
            for name, stat in entries.items():
                spec = expected[name]
                if spec is None:
                    path = f"{directory.rstrip('/')}/{name}"
                    size = len(tree[path])
                    if (stat["type"], stat["size"]) != ("dir", size):
                        problems.add(f"{path}: a {stat['type']} of size {stat['size']}, not "
                                     f"a directory of {size} entries")
                else:
                    problems.add(self.workload.check_stat(spec, stat))
        problems.raise_any("listing problem")
        return seen

    async def step10(self) -> str:
        read = await self.read_back()
        chunks, copies, missing, _ = await self.check_replicas(gone=self.wiped_datanode)
        fewer = (f"{missing} of {plural(chunks, 'chunk')} now have "
                 f"{self.o.replication - 1} of {self.o.replication} replicas (their copies "
                 f"on data node {self.wiped_datanode} went with its directory; "
                 f"re-replication is issue 14)")
        return f"{read}; {fewer}; the other {copies} copies read back as written"

    async def run(self) -> bool:
        w, o = self.workload, self.o
        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            (f"Start {MEMBERS} metadata members and {plural(o.datanodes, 'data node')}; wait "
             f"for a leader and for every data node to report", self.step1),
            (f"Write {len(w.files)} files of mixed sizes into a tree of directories across "
             f"{plural(o.clients, 'client')}", self.step2),
            ("Every file reads back byte for byte through the client, with the right stat",
             self.read_back),
            ("Every chunk is on each of its replicas, byte for byte", self.step4),
            ("Stop everything and start it again; the leader and the data nodes come back",
             self.step5),
            ("Every file reads back again", self.read_back),
            ("Stop everything; delete one data node's and one metadata member's directory",
             self.step7),
            ("Start everything again", self.step8),
            ("The namespace is intact on every metadata member", self.step9),
            ("Every file still reads back; the wiped data node's replicas are gone",
             self.step10),
        ]
        return await self.run_steps(steps)


async def _run(options: FSStressOptions, console: Console, data_dir: Path,
               holder: list[Killable]) -> bool:
    o = options
    ports = free_ports(MEMBERS + o.datanodes)
    members = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(ports[:MEMBERS])}
    node_ports = {i + 1: port for i, port in enumerate(ports[MEMBERS:])}
    timing = Timing(tick_interval=o.tick, election_ticks=10)
    mode = "processes" if o.processes else "in-process"
    console.print(f"raft-trio fs-stress: {MEMBERS} metadata members and "
                  f"{plural(o.datanodes, 'data node')} ({mode}), {plural(o.files, 'file')}, "
                  f"{plural(o.clients, 'client')}, chunks of {o.chunk_kb} KiB, "
                  f"{o.replication} replicas; data in {data_dir}")
    async with trio.open_nursery() as nursery:
        metadata: Cluster
        datanodes: DataNodeSet
        if o.processes:
            metadata = MetadataProcesses(members, data_dir, timing, o.log_level,
                                         dead_after=o.dead_after)
            datanodes = DataNodeProcesses(
                {i: f"127.0.0.1:{port}" for i, port in node_ports.items()}, data_dir,
                list(members.values()), heartbeat=o.heartbeat, log_level=o.log_level)
        else:
            metadata = in_process_metadata(nursery, members, data_dir, timing, o.log_level,
                                           o.dead_after)
            in_process = DataNodes(nursery, data_dir, list(members.values()), o.heartbeat)
            in_process.ports.update(node_ports)
            datanodes = in_process
        holder += [metadata, datanodes]
        checklist = FSChecklist(o, metadata, datanodes, console)
        try:
            ok = await checklist.run()
        finally:
            with trio.CancelScope(shield=True):
                rss = {**{f"member {i}": b for i, b in sorted(metadata.peak_rss().items())},
                       **{f"data node {i}": b
                          for i, b in sorted(datanodes.peak_rss().items())}}
                await checklist.stop_everything(quietly=True)
            nursery.cancel_scope.cancel()
    rates = f"write {checklist.write_rates}" if checklist.write_rates else "nothing written"
    if checklist.read_rates:
        rates += f"; read {max(checklist.read_rates):,.1f} MB/s at best"
    console.print(f"\n{checklist.tally(10)}; {rates}")
    if rss:
        console.print("peak RSS: " + ", ".join(f"{what} {b / 2**20:.0f} MiB"
                                               for what, b in rss.items()))
    return ok


def run_fs_stress(options: FSStressOptions) -> bool:
    """Run the checklist; True if every step passed. The data directory and signals are
    handled as for `raft-trio stress` (stress.runner.run_in_data_dir)."""
    console = Console(highlight=False, soft_wrap=True)

    async def main(data_dir: Path, holder: list[Killable]) -> bool:
        return await _run(options, console, data_dir, holder)

    return run_in_data_dir(options.data_dir, options.keep, "raft-trio-fs-stress-", console,
                           main)
