"""Snapshot benchmark (issue 3): memory, disk and restart time that do not grow with history.

Starts three `raft-trio serve` processes with the default snapshot settings,
writes `--entries` entries over `--keys` keys in batches of 100 from 8
clients, and reports peak RSS and disk used per member at 10% of the way and
at the end; then the time for one member to restart, for a member whose data
was deleted to be rebuilt, and for a member whose snapshot holds
`--big-keys` distinct keys to restart.

Usage: python stress/snapbench.py [--entries 2000000] [--keys 1000] [--big-keys 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import raft_trio
from raft_trio.client import member_status, snapshot_member
from raft_trio.server import SnapshotPolicy, Timing
from stress.cluster import ProcessCluster, free_ports

CLIENTS = 8
BATCH = 100


def mib(n: int) -> str:
    if n < 2**20:
        return f"{n / 2**10:.0f} KiB"
    return f"{n / 2**20:.1f} MiB"


async def write(cluster: ProcessCluster, first: int, count: int, keys: int) -> float:
    """Write entries first..first+count-1 over `keys` keys; returns entries/s."""
    addresses = list(cluster.members.values())
    per_client = count // CLIENTS
    started = time.perf_counter()

    async def client(c: int) -> None:
        async with raft_trio.connect(addresses, timeout=60) as conn:
            base = first + c * per_client
            for start in range(base, base + per_client, BATCH):
                await conn.set_many([(f"k{i % keys}", f"value-{i}")
                                     for i in range(start, min(start + BATCH, base + per_client))])

    async with trio.open_nursery() as nursery:
        for c in range(CLIENTS):
            nursery.start_soon(client, c)
    return per_client * CLIENTS / (time.perf_counter() - started)


async def statuses(cluster: ProcessCluster) -> dict[int, dict[str, Any]]:
    out = {}
    for node_id in cluster.running():
        try:
            out[node_id] = await member_status(cluster.members[node_id], timeout=5)
        except (OSError, raft_trio.RaftError, trio.TooSlowError):
            pass
    return out


async def wait_caught_up(cluster: ProcessCluster, node_id: int, index: int) -> None:
    while True:
        try:
            st = await member_status(cluster.members[node_id], timeout=5)
            if st["applied"] >= index and st["leader"] is not None:
                return
        except (OSError, raft_trio.RaftError, trio.TooSlowError):
            pass
        await trio.sleep(0.02)


async def leader_commit(cluster: ProcessCluster) -> tuple[int, int]:
    while True:
        for node_id, st in (await statuses(cluster)).items():
            if st["role"] == "leader":
                return node_id, int(st["commit"])
        await trio.sleep(0.05)


def report(cluster: ProcessCluster, label: str, done: int) -> None:
    rss = cluster.peak_rss()
    disk = cluster.disk_usage()
    shown = ", ".join(f"member {i}: RSS {mib(rss.get(i, 0))}, disk {mib(disk[i])}"
                      for i in sorted(disk))
    print(f"{label} ({done:,} entries): peak {shown}", flush=True)


async def restart_timed(
    cluster: ProcessCluster, node_id: int, *, wipe: bool
) -> tuple[float, float]:
    """Stop, maybe wipe, start `node_id`: seconds to listening and to caught up."""
    _, commit = await leader_commit(cluster)
    await cluster.stop(node_id)
    if wipe:
        cluster.wipe(node_id)
    started = time.perf_counter()
    await cluster.start(node_id)
    listening = time.perf_counter() - started
    await wait_caught_up(cluster, node_id, commit)
    return listening, time.perf_counter() - started


async def run(args: argparse.Namespace, data_dir: Path) -> None:
    members = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    cluster = ProcessCluster(members, data_dir, Timing(), "warning", SnapshotPolicy())
    try:
        for node_id in members:
            await cluster.start(node_id)
        await leader_commit(cluster)
        early = args.entries // 10
        rate = await write(cluster, 0, early, args.keys)
        print(f"wrote {early:,} entries over {args.keys:,} keys at {rate:,.0f} entries/s")
        report(cluster, "after 10%", early)
        rate = await write(cluster, early, args.entries - early, args.keys)
        print(f"wrote {args.entries - early:,} more at {rate:,.0f} entries/s")
        report(cluster, "at the end", args.entries)
        for node_id, st in sorted((await statuses(cluster)).items()):
            print(f"member {node_id}: snapshot at {st['snapshot_index']}, log from "
                  f"{st['log_start']} to {st['last_index']}, log {mib(int(st['log_bytes']))}, "
                  f"snapshot {mib(int(st['snapshot_bytes']))}")
        leader, _ = await leader_commit(cluster)
        follower = next(i for i in members if i != leader)
        listening, caught_up = await restart_timed(cluster, follower, wipe=False)
        print(f"restart of member {follower}: listening after {listening:.2f}s, caught up "
              f"after {caught_up:.2f}s")
        listening, caught_up = await restart_timed(cluster, follower, wipe=True)
        print(f"member {follower} with its data deleted: rebuilt after {caught_up:.2f}s")

        await write_distinct(cluster, args.big_keys)
        for node_id in members:
            await snapshot_member(members[node_id], timeout=120)
        await write(cluster, 0, 1000, 100)  # a short log tail after the snapshot
        listening, caught_up = await restart_timed(cluster, follower, wipe=False)
        st = await member_status(members[follower])
        print(f"restart with a snapshot of {args.big_keys + args.keys:,} keys "
              f"({mib(int(st['snapshot_bytes']))}): listening after {listening:.2f}s, "
              f"caught up after {caught_up:.2f}s")
        report(cluster, "at the very end", args.entries + args.big_keys + 1000)
    finally:
        with trio.CancelScope(shield=True):
            for node_id in cluster.running():
                await cluster.stop(node_id)


async def write_distinct(cluster: ProcessCluster, count: int) -> None:
    addresses = list(cluster.members.values())
    async with raft_trio.connect(addresses, timeout=60) as conn:
        for start in range(0, count, 1000):
            await conn.set_many([(f"big{i}", f"value-{i}")
                                 for i in range(start, min(start + 1000, count))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--big-keys", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raft-trio-snapbench-") as tmp:
        trio.run(run, args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
