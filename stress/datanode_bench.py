"""Data node throughput on loopback, beside the local disk in the same run.

Three data nodes run as separate processes on one machine; this process is the
client. It puts a file (256 MiB by default) in 4 MiB chunks through the
3-node pipeline (every replica fsynced before a put returns; the client's
checksums are computed in the timed loop), then gets every chunk back
(checksums verified), cold (page cache dropped, when this runs as root) and
warm, each with 1 and with several chunks in flight. Beside it, the same
bytes through `dd if=/dev/zero of=FILE bs=4M count=N conv=fsync` and a
cold `dd` read of that file, on the same file system.

CPU per MB written adds up the user and system time of the client and the
three nodes during the put (not the kernel's writeback threads).
`--profile` samples the first node (and the client) with py-spy during the
puts, if py-spy is installed, and prints where their time goes.

Usage: python stress/datanode_bench.py [--size-mib 256] [--chunk-mib 4]
       [--in-flight 1,4] [--data-dir DIR] [--rounds 1] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from raft_trio.fs.checksum import checksum
from raft_trio.fs.datanode import DataNode, get_chunk, get_chunk_into, put_chunk

MB = 1_000_000
MiB = 1 << 20
_TICK = os.sysconf("SC_CLK_TCK")


# -------------------------------------------------------------- a node process


def run_node(node_id: int, data_dir: str) -> None:
    async def allocated(chunk_id: int, node: int) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def heartbeat(stats: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def main() -> None:
        node = DataNode(node_id, "127.0.0.1:0", data_dir, is_allocated=allocated,
                        heartbeat=heartbeat, heartbeat_interval=3600)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.serve)
                print(f"ready {node.address}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


class Nodes:
    def __init__(self, root: Path, count: int = 3):
        self.procs: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = []
        for node_id in range(1, count + 1):
            proc = subprocess.Popen(
                [sys.executable, __file__, "--node", str(node_id), str(root / f"dn{node_id}")],
                stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            if not line or line[0] != "ready":
                raise SystemExit("a data node did not start")
            self.addresses.append(line[1])

    def cpus(self) -> list[float]:
        """Seconds of CPU each node process used so far."""
        found = []
        for proc in self.procs:
            with open(f"/proc/{proc.pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            found.append((int(fields[11]) + int(fields[12])) / _TICK)
        return found

    def cpu(self) -> float:
        return sum(self.cpus())

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- the disk


def drop_caches() -> bool:
    """Drop the page cache (root only); whether it worked."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as file:
            file.write("3\n")
        return True
    except OSError:
        return False


def dd_write(path: Path, size_mib: int, chunk_mib: int) -> float:
    """MB/s of dd conv=fsync writing `size_mib` MiB to a new file."""
    path.unlink(missing_ok=True)
    os.sync()
    start = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", f"bs={chunk_mib}M",
                    f"count={size_mib // chunk_mib}", "conv=fsync"],
                   check=True, capture_output=True)
    return size_mib * MiB / MB / (time.perf_counter() - start)


def dd_read(path: Path, chunk_mib: int) -> tuple[float, bool]:
    cold = drop_caches()
    start = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", f"bs={chunk_mib}M"], check=True,
                   capture_output=True)
    return path.stat().st_size / MB / (time.perf_counter() - start), cold


# ------------------------------------------------------------- puts and gets


async def put_all(addresses: Sequence[str], chunks: list[memoryview], first_id: int,
                  in_flight: int) -> list[str]:
    sums = [""] * len(chunks)
    limit = trio.Semaphore(in_flight)

    async def one(index: int) -> None:
        try:
            data = chunks[index]
            sums[index] = checksum(data)
            ids = await put_chunk(addresses, first_id + index, data, sums[index])
            assert len(ids) == len(addresses), ids
        finally:
            limit.release()

    async with trio.open_nursery() as nursery:
        for index in range(len(chunks)):
            await limit.acquire()
            nursery.start_soon(one, index)
    return sums


async def get_all(addresses: Sequence[str], sums: list[str], first_id: int,
                  in_flight: int, chunk: int, copy: bool) -> int:
    """Every chunk, from the replicas in turn, verified; into one buffer for the whole
    file as a reader of whole files would (get_chunk_into), or each as bytes (`copy`)."""
    limit = trio.Semaphore(in_flight)
    total = 0
    whole = memoryview(bytearray(chunk * len(sums)))

    async def one(index: int) -> None:
        nonlocal total
        try:
            address = addresses[index % len(addresses)]
            if copy:
                count = len(await get_chunk(address, first_id + index, sums[index]))
            else:
                count = await get_chunk_into(address, first_id + index, sums[index],
                                             whole[index * chunk:(index + 1) * chunk])
            total += count
        finally:
            limit.release()

    async with trio.open_nursery() as nursery:
        for index in range(len(sums)):
            await limit.acquire()
            nursery.start_soon(one, index)
    return total


class Profiler:
    """py-spy on the first node and on this process, while the puts run."""

    def __init__(self, pids: list[int], out: Path):
        self.procs: list[tuple[subprocess.Popen[bytes], Path, str]] = []
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable)
                                                                        .parent))
        if spy is None:
            print("  (py-spy not found: pip install py-spy to profile)")
            return
        for pid, name in zip(pids, ["node 1", "client"], strict=True):
            path = out / f"spy-{pid}.txt"
            proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw",
                                     "--threads", "--rate", "250", "--output",
                                     str(path), "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append((proc, path, name))
        time.sleep(1.0)

    def report(self) -> None:
        for proc, _, _ in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc, path, name in self.procs:
            proc.wait(30)
            if path.exists():
                summarize(path, name)


def summarize(path: Path, name: str) -> None:
    """The innermost frames that took the most samples (busy threads only)."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        leaf = stack.split(";")[-1]
        # "function (path/to/file.py:line)" -> "function (file.py:line)"
        counts[re.sub(r"\(.*/", "(", leaf)] += count
    if not total:
        return
    print(f"  where {name}'s busy threads were (py-spy, {total} samples):")
    for leaf, count in counts.most_common(15):
        print(f"    {100 * count / total:5.1f}%  {leaf}")


# ------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-mib", type=int, default=4)
    parser.add_argument("--in-flight", default="1,4",
                        help="chunks in flight at once, for each run (default 1,4)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; medians")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the nodes and dd write (default: a temp dir)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--copy", action="store_true",
                        help="get each chunk as bytes (get_chunk, one copy more)")
    parser.add_argument("--node", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node:
        run_node(int(args.node[0]), args.node[1])
        return 0
    in_flights = [int(x) for x in args.in_flight.split(",")]
    root = Path(tempfile.mkdtemp(prefix="dnbench-", dir=args.data_dir))
    size = args.size_mib * MiB
    chunk = args.chunk_mib * MiB
    print(f"data node bench: {args.size_mib} MiB in {args.chunk_mib} MiB chunks, 3 replicas, "
          f"in {root} ({os.cpu_count()} CPUs)", flush=True)
    data = memoryview(os.urandom(size))
    chunks = [data[i:i + chunk] for i in range(0, size, chunk)]
    nodes = Nodes(root)
    results: dict[str, list[float]] = collections.defaultdict(list)
    cold_ok = True
    try:
        next_id = 1
        for round_ in range(args.rounds):
            results["dd conv=fsync write"].append(dd_write(root / "dd.bin", args.size_mib,
                                                           args.chunk_mib))
            rate, cold = dd_read(root / "dd.bin", args.chunk_mib)
            cold_ok &= cold
            results["dd cold read"].append(rate)
            (root / "dd.bin").unlink()
            for in_flight in in_flights:
                profiler = None
                if args.profile and round_ == 0 and in_flight == in_flights[-1]:
                    profiler = Profiler([nodes.procs[0].pid, os.getpid()], root)
                each0, own0, wall0 = nodes.cpus(), own_cpu(), time.perf_counter()
                sums = trio.run(put_all, nodes.addresses, chunks, next_id, in_flight)
                wall = time.perf_counter() - wall0
                each = [b - a for a, b in zip(each0, nodes.cpus(), strict=True)]
                cpu = sum(each) + own_cpu() - own0
                per_mb = 1000 / (size / MB)
                results[f"  client CPU ms/MB put, {in_flight} in flight"].append(
                    (own_cpu() - own0) * per_mb)
                for number, used in enumerate(each, 1):
                    results[f"  node {number} CPU ms/MB put, {in_flight} in flight"].append(
                        used * per_mb)
                if profiler is not None:
                    profiler.report()
                results[f"put, {in_flight} in flight"].append(size / MB / wall)
                results[f"CPU ms/MB put, {in_flight} in flight"].append(
                    1000 * cpu / (size / MB))
                cold = drop_caches()
                cold_ok &= cold
                wall0 = time.perf_counter()
                got = trio.run(get_all, nodes.addresses, sums, next_id, in_flight, chunk,
                               args.copy)
                assert got == size
                results[f"get cold, {in_flight} in flight"].append(
                    size / MB / (time.perf_counter() - wall0))
                cpu0, wall0 = nodes.cpu() + own_cpu(), time.perf_counter()
                trio.run(get_all, nodes.addresses, sums, next_id, in_flight, chunk,
                         args.copy)
                results[f"get warm, {in_flight} in flight"].append(
                    size / MB / (time.perf_counter() - wall0))
                results[f"CPU ms/MB get, {in_flight} in flight"].append(
                    1000 * (nodes.cpu() + own_cpu() - cpu0) / (size / MB))
                next_id += len(chunks)
                for node_dir in root.glob("dn*/chunks/*"):
                    for file in node_dir.iterdir():
                        file.unlink()
    finally:
        nodes.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"page cache dropped before cold reads: {'yes' if cold_ok else 'NO (not root)'}")
    width = max(map(len, results))
    for name, values in results.items():
        unit = "" if "CPU" in name else " MB/s"
        shown = ", ".join(f"{v:,.1f}" for v in values)
        print(f"  {name:<{width}}  {statistics.median(values):8,.1f}{unit}"
              + (f"  ({shown})" if len(values) > 1 else ""))
    dd_w = statistics.median(results["dd conv=fsync write"])
    dd_r = statistics.median(results["dd cold read"])
    for in_flight in in_flights:
        put = statistics.median(results[f"put, {in_flight} in flight"])
        get = statistics.median(results[f"get cold, {in_flight} in flight"])
        cpu = statistics.median(results[f"CPU ms/MB put, {in_flight} in flight"])
        print(f"{in_flight} in flight: put {put / dd_w:.2f} of dd conv=fsync (goal 0.5), "
              f"get {get / dd_r:.2f} of a cold read (goal 0.33), "
              f"{cpu:.1f} ms CPU per MB written (goal 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
