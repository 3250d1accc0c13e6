"""`make fs-bench`: the file system against the local disk, in the same run.

    python stress/fs_bench.py [--mb 256] [--creates 2000] [--rounds 3]

Three metadata members (`serve --state-machine fs`) and three data nodes
(`datanode`), each its own process, every replica fsynced before a put
returns. Per round:
- put and get of one file of --mb MiB through the client (4 MiB chunks, 3
  replicas), against `dd conv=fsync` of the same bytes and a cold read of
  that file (page cache dropped when this runs as root), with CPU per MB of
  every process (members, data nodes, this client);
- creates of empty files and mkdirs from 8 concurrent clients, one operation
  per request, each durable on a majority before it is acknowledged, against
  the key-value store's `stress --batch 1` (8 clients) and local file
  creation (8 threads: open, close) in the same run.
Medians over the rounds, and every round's figures, are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from raft_trio.fs.client import FileSystem
from raft_trio.server import Timing
from stress.cluster import _cpu_seconds, free_ports
from stress.fscluster import DataNodeProcesses, MetadataProcesses

MiB = 1024 * 1024
CLIENTS = 8


def drop_caches() -> bool:
    """Drop the page cache (as root), so that reads come from the disk; False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def dd_write(source: Path, target: Path) -> float:
    """MB/s of `dd conv=fsync` copying `source` to `target`."""
    started = time.perf_counter()
    subprocess.run(["dd", f"if={source}", f"of={target}", "bs=4M", "conv=fsync"],
                   check=True, capture_output=True)
    return source.stat().st_size / 1e6 / (time.perf_counter() - started)


def cold_read(path: Path) -> float:
    drop_caches()
    started = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M"], check=True,
                   capture_output=True)
    return path.stat().st_size / 1e6 / (time.perf_counter() - started)


def local_creates(directory: Path, count: int) -> float:
    """Empty files made per second by CLIENTS threads (open with O_CREAT|O_EXCL, close)."""
    directory.mkdir()

    def make(worker: int) -> None:
        for n in range(count // CLIENTS):
            os.close(os.open(directory / f"{worker}-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))

    threads = [threading.Thread(target=make, args=(w,)) for w in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (count // CLIENTS) * CLIENTS / (time.perf_counter() - started)


def kv_batch1(entries: int) -> float:
    """Entries/s of the key-value store with one write per request, 8 clients, processes."""
    out = subprocess.run(
        [sys.executable, "-m", "raft_trio", "stress", "--processes", "--clients", str(CLIENTS),
         "--batch", "1", "--entries", str(entries)], capture_output=True, text=True, check=False)
    found = re.search(r"throughput ([\d,]+) entries/s", out.stdout)
    return float(found.group(1).replace(",", "")) if found else float("nan")


class Cpu:
    """CPU seconds of the cluster's processes and this one, between two readings."""

    def __init__(self, pids: Callable[[], list[int]]):
        self.pids = pids

    def now(self) -> float:
        total = sum(_cpu_seconds(pid) or 0.0 for pid in self.pids())
        usage = os.times()
        return total + usage.user + usage.system


async def one_round(root: Path, local: Path, mb: int, creates: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    ports = free_ports(6)
    members = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    nodes = {i + 1: f"127.0.0.1:{ports[3 + i]}" for i in range(3)}
    metadata = MetadataProcesses(members, root, Timing(), "warning", dead_after=10.0)
    datanodes = DataNodeProcesses(nodes, root, list(members.values()), heartbeat=0.5,
                                  log_level="warning")
    for node_id in members:
        await metadata.start(node_id)
    for node_id in nodes:
        await datanodes.start(node_id)

    def pids() -> list[int]:
        return [p.pid for p in (*metadata.procs.values(), *datanodes.procs.values())]

    cpu = Cpu(pids)
    try:
        async with FileSystem(list(members.values()), timeout=60) as fs:
            await fs.wait_for_datanodes(3)
            size = local.stat().st_size

            async def blocks() -> AsyncIterator[bytes]:
                with open(local, "rb") as source:
                    while block := await trio.to_thread.run_sync(source.read, 4 * MiB):
                        yield block

            before, started = cpu.now(), time.perf_counter()
            await fs.write_file("/big", blocks())
            seconds = time.perf_counter() - started
            figures["put MB/s"] = size / 1e6 / seconds
            figures["put CPU ms/MB"] = (cpu.now() - before) * 1000 / (size / 1e6)
            cold = drop_caches()
            started = time.perf_counter()
            got = 0
            async with fs.open_read("/big") as pieces:
                async for piece in pieces:
                    got += len(piece)
            assert got == size
            figures["get MB/s" + ("" if cold else " (warm)")] = (
                size / 1e6 / (time.perf_counter() - started))

            async def timed(work: Callable[[FileSystem, int, int], Awaitable[Any]]) -> float:
                done = 0
                started = time.perf_counter()

                async def client(worker: int) -> None:
                    nonlocal done
                    async with FileSystem(list(members.values()), timeout=60) as own:
                        for n in range(creates // CLIENTS):
                            await work(own, worker, n)
                            done += 1

                async with trio.open_nursery() as nursery:
                    for worker in range(CLIENTS):
                        nursery.start_soon(client, worker)
                return done / (time.perf_counter() - started)

            for worker in range(CLIENTS):
                await fs.mkdir(f"/c{worker}")
            before = cpu.now()
            figures["creates/s"] = await timed(
                lambda own, w, n: own.write_file(f"/c{w}/{n}", b""))
            figures["create CPU us"] = (cpu.now() - before) * 1e6 / creates
            figures["mkdirs/s"] = await timed(lambda own, w, n: own.mkdir(f"/c{w}/d{n}"))
    finally:
        for node_id in list(datanodes.procs):
            await datanodes.stop(node_id)
        for node_id in list(metadata.procs):
            await metadata.stop(node_id)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="raft-trio-fs-bench-", dir=".") as tmp:
        root = Path(tmp)
        local = root / "local.bin"
        with open(local, "wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(MiB))
        for n in range(args.rounds):
            here = root / f"round-{n}"
            here.mkdir()
            figures = trio.run(one_round, here, local, args.mb, args.creates)
            figures["local dd conv=fsync MB/s"] = dd_write(local, here / "dd.bin")
            figures["local cold read MB/s"] = cold_read(here / "dd.bin")
            figures["local creates/s"] = local_creates(here / "creates", args.creates * 5)
            figures["kv stress --batch 1 entries/s"] = kv_batch1(10_000)
            rounds.append(figures)
            print(f"round {n + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()),
                  flush=True)
    print("\nmedians over", len(rounds), "rounds:")
    for key in rounds[0]:
        values = [r[key] for r in rounds if key in r]
        print(f"  {key:32} {statistics.median(values):>10,.1f}")
    first = rounds[0]
    put_key = "put MB/s"
    get_key = next(k for k in first if k.startswith("get MB/s"))
    med = {k: statistics.median([r[k] for r in rounds if k in r]) for k in first}
    print(f"\nput / local dd conv=fsync: {med[put_key] / med['local dd conv=fsync MB/s']:.2f}"
          f"   get / local cold read: {med[get_key] / med['local cold read MB/s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
