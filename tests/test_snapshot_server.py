"""Snapshots on live servers over loopback: compaction, restart from a snapshot,
InstallSnapshot to a member whose data was deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import raft_trio
from raft_trio import KVStateMachine, RaftServer, Role, SnapshotPolicy, Timing
from stress.cluster import InProcessCluster, free_ports

FAST = Timing(tick_interval=0.02, election_ticks=10)
SMALL = SnapshotPolicy(entries=200, trailing=50, chunk_bytes=4096, window=2)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    members = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    async with trio.open_nursery() as nursery:
        harness = InProcessCluster(nursery, members, tmp_path, FAST, "warning", SMALL)
        for node_id in members:
            await harness.start(node_id)
        yield harness
        nursery.cancel_scope.cancel()


async def leader_of(cluster: InProcessCluster, timeout: float = 10.0) -> RaftServer:
    with trio.fail_after(timeout):
        while True:
            running = [cluster.servers[i] for i in cluster.running()]
            leaders = [s for s in running if s.role is Role.LEADER]
            if len(leaders) == 1 and all(s.leader_id == leaders[0].id for s in running):
                return leaders[0]
            await trio.sleep(0.02)


def kv(server: RaftServer) -> dict[str, str]:
    assert isinstance(server.state_machine, KVStateMachine)
    return server.state_machine.data


async def wait_converged(cluster: InProcessCluster, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while True:
            servers = [cluster.servers[i] for i in cluster.running()]
            commits = {s.node.commit for s in servers if s.node is not None}
            applied = {s.last_applied for s in servers}
            if len(commits) == 1 and applied == commits:
                return
            await trio.sleep(0.02)


async def write(cluster: InProcessCluster, prefix: str, count: int, batch: int = 50) -> None:
    async with raft_trio.connect(list(cluster.members.values()), timeout=20) as client:
        for first in range(0, count, batch):
            await client.set_many(
                [(f"{prefix}{i}", f"v{i}") for i in range(first, min(first + batch, count))]
            )


async def test_snapshots_compact_the_log_in_memory_and_on_disk(
    cluster: InProcessCluster,
) -> None:
    await leader_of(cluster)
    await write(cluster, "a", 1000)
    await wait_converged(cluster)
    with trio.fail_after(10):
        while not all(cluster.servers[i].status()["snapshot_index"] >= 800
                      for i in cluster.running()):
            await trio.sleep(0.02)
    for node_id in cluster.running():
        server = cluster.servers[node_id]
        status = server.status()
        assert status["log_start"] > 1
        assert status["snapshot_bytes"] > 0
        assert server.node is not None
        assert len(server.node.log) <= SMALL.entries + SMALL.trailing + 100
        snaps = list((cluster.member_dir(node_id) / "snapshots").glob("snapshot-*.snap"))
        assert len(snaps) == 1


async def test_restart_loads_the_snapshot_and_replays_the_tail(
    cluster: InProcessCluster,
) -> None:
    await leader_of(cluster)
    await write(cluster, "a", 700)
    await wait_converged(cluster)
    before = {i: dict(kv(cluster.servers[i])) for i in cluster.running()}
    for node_id in list(cluster.running()):
        await cluster.stop(node_id)
    for node_id in cluster.members:
        await cluster.start(node_id)
    await leader_of(cluster)
    await wait_converged(cluster)
    for node_id in cluster.running():
        server = cluster.servers[node_id]
        assert server.status()["snapshot_index"] > 0
        assert kv(server) == before[node_id]
    await write(cluster, "b", 10)
    await wait_converged(cluster)
    assert all(kv(cluster.servers[i])["b9"] == "v9" for i in cluster.running())


async def test_wiped_member_is_rebuilt_from_a_snapshot(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    victim = next(i for i in cluster.running() if i != leader.id)
    await cluster.stop(victim)
    await write(cluster, "a", 1500)
    cluster.wipe(victim)
    await cluster.start(victim)
    await wait_converged(cluster)
    rebuilt = cluster.servers[victim]
    assert rebuilt.status()["snapshot_index"] > 0
    assert kv(rebuilt) == kv(leader)
    assert len(kv(rebuilt)) == 1500
    # It goes on replicating from the log after the snapshot.
    await write(cluster, "b", 100)
    await wait_converged(cluster)
    assert kv(rebuilt) == kv(leader)


async def test_snapshot_on_request(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    await write(cluster, "a", 30)
    await wait_converged(cluster)
    index = await leader.take_snapshot()
    assert index == leader.last_applied
    assert leader.status()["snapshot_index"] == index
    # Nothing new applied: the same snapshot answers.
    assert await leader.take_snapshot() == index
