"""Benchmark of the file-system metadata state machine alone (raft_trio.fs.Namespace).

In one process, no Raft, no network, no disk but the snapshot file:

- mkdirs/s: `mkdir` commands through `Namespace.apply`;
- creates/s: files written as a client would, through `Namespace.apply` one
  command at a time (create, then per chunk allocate_chunk and commit_chunk,
  then complete_file), and the same commands through `apply_batch`;
- at `--files` files spread over `--dirs` directories: the memory the
  namespace holds (resident set size, and bytes per file), the time of
  `capture_snapshot()`, the cost of the copies made on the first changes
  after a capture, the time to write the snapshot and its size, the time to
  restore it into a fresh namespace and the memory that one holds, and the
  peak resident set size of the process.

Usage: python stress/fsmeta_bench.py [--files 1000000] [--dirs 1000] [--chunks 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
from typing import Any

from raft_trio.fs import Namespace

NOW = 1_700_000_000_000
MODE_FILE = 0o644
MODE_DIR = 0o755
CHUNK = 4 << 20
NODES = 5


def rss() -> int:
    """The resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def check(result: Any) -> Any:
    if type(result) is list and result and result[0] == "fs-error":
        raise SystemExit(f"refused: {result}")
    return result


def file_commands(path: str, write_id: int, chunks: int, now: int) -> list[list[Any]]:
    """The commands a client's write of `path` with `chunks` chunks proposes, in order."""
    commands: list[list[Any]] = [["create", path, write_id, False, MODE_FILE, 3, CHUNK, now]]
    for index in range(chunks):
        chunk_id = write_id * 64 + index
        targets = [(chunk_id + k) % NODES for k in range(3)]
        commands.append(["allocate_chunk", write_id, index, chunk_id, targets, now])
        checksum = f"crc32:{chunk_id & 0xffffffff:08x}"
        commands.append(["commit_chunk", write_id, index, chunk_id, CHUNK, checksum, now])
    commands.append(["complete_file", write_id, chunks * CHUNK, now])
    return commands


def bench_mkdirs(count: int) -> float:
    ns = Namespace()
    apply = ns.apply
    parents = 100
    for p in range(parents):
        check(apply(["mkdir", f"/m{p}", False, MODE_DIR, NOW]))
    started = time.perf_counter()
    for i in range(count):
        apply(["mkdir", f"/m{i % parents}/d{i}", False, MODE_DIR, NOW + i])
    elapsed = time.perf_counter() - started
    check(ns.query(["stat", f"/m0/d{parents}"]))
    return count / elapsed


def fill(ns: Namespace, files: int, dirs: int, chunks: int, first_id: int) -> float:
    """Write `files` files over `dirs` directories /dNNNN with apply; returns files/s."""
    apply = ns.apply
    for d in range(dirs):
        apply(["mkdir", f"/d{d:04}", True, MODE_DIR, NOW])
    started = time.perf_counter()
    for i in range(files):
        for command in file_commands(f"/d{i % dirs:04}/f{i:07}", first_id + i, chunks, NOW + i):
            apply(command)
    elapsed = time.perf_counter() - started
    check(ns.query(["stat", f"/d0000/f{0:07}"]))
    return files / elapsed


def bench_batch(files: int, chunks: int) -> float:
    ns = Namespace()
    ns.apply(["mkdir", "/b", False, MODE_DIR, NOW])
    commands = [c for i in range(files) for c in file_commands(f"/b/f{i}", i, chunks, NOW)]
    started = time.perf_counter()
    for start in range(0, len(commands), 100):
        ns.apply_batch(commands[start:start + 100])
    elapsed = time.perf_counter() - started
    check(ns.query(["stat", f"/b/f{files - 1}"]))
    return files / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--dirs", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=1, help="chunks per file")
    parser.add_argument("--mkdirs", type=int, default=200_000)
    parser.add_argument("--rates", type=int, default=200_000,
                        help="files for the apply_batch and empty-file rates")
    args = parser.parse_args()
    commands_per_file = 2 + 2 * args.chunks

    print(f"mkdir:                   {bench_mkdirs(args.mkdirs):,.0f} mkdirs/s (apply, "
          f"{args.mkdirs:,} directories)")
    gc.collect()
    ns = Namespace()
    rate = fill(ns, args.rates, 100, 0, 1 << 40)
    print(f"create, empty files:     {rate:,.0f} files/s (apply: create, complete_file)")
    del ns
    gc.collect()
    rate = bench_batch(args.rates, args.chunks)
    print(f"create, {args.chunks} chunk(s):       {rate:,.0f} files/s, "
          f"{rate * commands_per_file:,.0f} commands/s (apply_batch of 100)")
    gc.collect()

    base = rss()
    ns = Namespace()
    rate = fill(ns, args.files, args.dirs, args.chunks, 0)
    gc.collect()
    held = rss() - base
    print(f"create, {args.chunks} chunk(s):       {rate:,.0f} files/s, "
          f"{rate * commands_per_file:,.0f} commands/s (apply, {args.files:,} files in "
          f"{args.dirs:,} directories)")
    print(f"memory:                  {mib(held)} resident for {args.files:,} files "
          f"({held / args.files:,.0f} bytes per file)")

    at_capture = ns.query(["du", "/"])
    started = time.perf_counter()
    write_state = ns.capture_snapshot()
    capture = time.perf_counter() - started
    print(f"capture_snapshot():      {capture * 1e3:.3f} ms")

    # The first change to each directory after a capture copies it (and the root).
    started = time.perf_counter()
    for i in range(args.dirs):
        for command in file_commands(f"/d{i:04}/new", (1 << 41) + i, args.chunks, NOW):
            check(ns.apply(command))
    after = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(args.dirs):
        for command in file_commands(f"/d{i:04}/new2", (1 << 42) + i, args.chunks, NOW):
            check(ns.apply(command))
    again = time.perf_counter() - started
    print(f"copy on write:           {after * 1e3:.0f} ms for one file in each of the "
          f"{args.dirs:,} directories after the capture (each copied once), "
          f"{again * 1e3:.0f} ms for one more each")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "snapshot")
        before = rss()
        started = time.perf_counter()
        with open(path, "wb") as out:
            write_state(out)
        written = time.perf_counter() - started
        size = os.path.getsize(path)
        print(f"snapshot write:          {written:.2f} s, {mib(size)} "
              f"({size / args.files:.0f} bytes per file), {mib(rss() - before)} more resident "
              f"while written")
        del write_state
        gc.collect()

        fresh = Namespace()
        before = rss()
        started = time.perf_counter()
        with open(path, "rb") as src:
            fresh.restore(src)
        restored = time.perf_counter() - started
        gc.collect()
        print(f"restore:                 {restored:.2f} s, {mib(rss() - before)} resident for the "
              f"restored namespace")
        assert fresh.query(["du", "/"]) == at_capture, "restored namespace differs"
        last = f"/d{(args.files - 1) % args.dirs:04}/f{args.files - 1:07}"
        assert fresh.query(["chunks", last]) == ns.query(["chunks", last]), "restored differs"
    print(f"peak resident set size:  {mib(peak_rss())}")


if __name__ == "__main__":
    main()
