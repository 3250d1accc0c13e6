"""Snapshots on live servers over loopback: compaction, restart from a snapshot,
InstallSnapshot to a member whose data was deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from test_server import kv, leader_of, running_cluster

import raft_trio
from raft_trio import KVStateMachine, RaftServer, Role, SnapshotPolicy, Timing
from raft_trio.core import Entry, EntryKind, HardState
from raft_trio.storage import WAL, SnapshotMeta, write_snapshot
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


async def wait_converged(cluster: InProcessCluster, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while True:
            servers = [cluster.servers[i] for i in cluster.running()]
            commits = {s.node.commit for s in servers if s.node is not None}
            applied = {s.last_applied for s in servers}
            # Everything the leader holds, its own no-op included (right after a
            # restart every member's commit index is just its snapshot's).
            lasts = {s.node.log.last_index for s in servers
                     if s.node is not None and s.role is Role.LEADER}
            if len(commits) == 1 and applied == commits == lasts:
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
        # Older snapshots are deleted once a newer one is durable (another may be
        # being written right now, hence the wait).
        snapshots = cluster.member_dir(node_id) / "snapshots"
        with trio.fail_after(10):
            while len(list(snapshots.glob("snapshot-*.snap"))) != 1:
                await trio.sleep(0.02)


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
        got, want = kv(server), before[node_id]
        assert got == want, (node_id, len(got), len(want), sorted(set(want) - set(got))[:5],
                             server.status())
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


async def test_a_member_snapshots_once_the_commands_applied_add_up_to_bytes(
    tmp_path: Path,
) -> None:
    policy = SnapshotPolicy(entries=0, bytes=10_000, trailing=0)
    async with running_cluster(tmp_path, FAST, policy) as cluster:
        leader = await leader_of(cluster)
        servers = [cluster.servers[i] for i in cluster.running()]

        def snapshot_indexes() -> list[int]:
            return [s.status()["snapshot_index"] for s in servers]

        async def fill_up_to(limit: int, since: int) -> int:
            """Propose 1 KB values until the entries applied after `since` hold `limit`
            bytes; check that nobody snapshots before that; returns the last index."""
            n = 0
            while True:
                await leader.propose(["set", f"k{since}-{n}", "x" * 1000])
                n += 1
                applied = leader.log_entries(since + 1, leader.last_applied - since)
                assert [e.index for e in applied] == list(range(since + 1,
                                                                leader.last_applied + 1))
                if sum(len(e.data) for e in applied) >= limit:
                    return leader.last_applied
                # Below the limit on the leader, and no member applied more than it.
                assert snapshot_indexes() == [since] * len(servers)

        # No snapshot for entries (threshold 0): only bytes bring one about.
        first = await fill_up_to(policy.bytes, 0)
        with trio.fail_after(10):
            while min(snapshot_indexes()) < first:
                await trio.sleep(0.02)
        # Snapshots start when the limit is reached (a member may have applied the
        # entry that reached it together with later ones in one batch).
        assert snapshot_indexes() == [first] * len(servers)
        # The count starts again from the snapshot.
        second = await fill_up_to(policy.bytes, first)
        with trio.fail_after(10):
            while min(snapshot_indexes()) < second:
                await trio.sleep(0.02)
        assert snapshot_indexes() == [second] * len(servers)


async def test_snapshot_on_request(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    await write(cluster, "a", 30)
    await wait_converged(cluster)
    index = await leader.take_snapshot()
    assert index == leader.last_applied
    assert leader.status()["snapshot_index"] == index
    # Nothing new applied: the same snapshot answers.
    assert await leader.take_snapshot() == index


def members_of(count: int) -> dict[int, str]:
    return {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(count))}


async def fill(cluster: InProcessCluster, keys: int, value_size: int) -> None:
    """Distinct keys with large values: a snapshot of a few MiB."""
    async with raft_trio.connect(list(cluster.members.values()), timeout=30) as client:
        for first in range(0, keys, 200):
            await client.set_many([(f"big{i}", f"{i:08d}" + "x" * value_size)
                                   for i in range(first, min(first + 200, keys))])


async def test_a_transfer_that_stalls_resumes_where_the_follower_left_off(
    tmp_path: Path,
) -> None:
    policy = SnapshotPolicy(entries=100, trailing=10, chunk_bytes=16 * 1024, window=2,
                            ack_timeout=0.5)
    async with trio.open_nursery() as nursery:
        cluster = InProcessCluster(nursery, members_of(3), tmp_path, FAST, "warning", policy)
        for node_id in cluster.members:
            await cluster.start(node_id)
        leader = await leader_of(cluster)
        victim = next(i for i in cluster.running() if i != leader.id)
        await cluster.stop(victim)
        await fill(cluster, 2000, 500)  # about 1 MiB of state
        await leader.take_snapshot()
        cluster.wipe(victim)
        await cluster.start(victim)
        follower = cluster.servers[victim]
        # The follower stops acknowledging chunks once two thirds of the file are in:
        # the leader gives up after ack_timeout and starts the transfer again.
        real_ack = follower._receiver.ack
        dropped = 0

        def flaky_ack(chunk: Any, received: int, *, accepted: bool) -> None:
            nonlocal dropped
            if received > chunk.total * 2 // 3 and dropped < 2:
                dropped += 1
                return
            real_ack(chunk, received, accepted=accepted)

        follower._receiver.ack = flaky_ack  # type: ignore[method-assign]
        await wait_converged(cluster, timeout=30)
        assert kv(follower) == kv(leader)
        assert dropped == 2
        size = leader.status()["snapshot_bytes"]
        sent = leader.counters["snapshot_bytes_sent"]
        assert leader.counters["snapshots_sent"] == 1
        # Resumed, not restarted: well under two whole copies crossed the wire.
        assert size < sent < 1.5 * size, (size, sent)
        assert follower.counters["snapshots_installed"] == 1
        nursery.cancel_scope.cancel()


async def test_a_new_leader_replaces_a_transfer_cut_short(tmp_path: Path) -> None:
    policy = SnapshotPolicy(entries=100, trailing=10, chunk_bytes=2048, window=1)
    async with trio.open_nursery() as nursery:
        cluster = InProcessCluster(nursery, members_of(3), tmp_path, FAST, "warning", policy)
        for node_id in cluster.members:
            await cluster.start(node_id)
        leader = await leader_of(cluster)
        victim = next(i for i in cluster.running() if i != leader.id)
        await cluster.stop(victim)
        await fill(cluster, 4000, 500)  # about 2 MiB: a thousand round trips at 2 KiB
        for node_id in cluster.running():
            await cluster.servers[node_id].take_snapshot()
        cluster.wipe(victim)
        await cluster.start(victim)
        follower = cluster.servers[victim]
        with trio.fail_after(20):
            while follower.counters["snapshot_bytes_received"] < 100_000:
                await trio.sleep(0.01)
        assert follower.counters["snapshots_installed"] == 0
        await cluster.stop(leader.id)
        new_leader = await leader_of(cluster)
        assert new_leader.id != leader.id
        await wait_converged(cluster, timeout=30)
        assert kv(follower) == kv(new_leader)
        assert follower.counters["snapshots_installed"] == 1
        snapshots = cluster.member_dir(victim) / "snapshots"
        assert not list(snapshots.glob("*.part"))
        nursery.cancel_scope.cancel()


async def test_restart_from_a_snapshot_ahead_of_the_log_on_disk(tmp_path: Path) -> None:
    """A member applied (and snapshotted) entries before its own disk had them, then
    crashed: its log on disk ends before its newest snapshot. Appending after the
    snapshot must not leave a hole in the log that the next start refuses."""
    data_dir = tmp_path / "member"
    wal, _ = WAL.open(data_dir / "wal")
    wal.append(HardState(1, 1, 2),
               [Entry(i, 1, EntryKind.COMMAND, cbor2.dumps(["set", f"k{i}", "old"]))
                for i in range(1, 5)])
    wal.close()
    state = KVStateMachine()
    for i in range(1, 7):
        state.apply(["set", f"k{i}", "snap"])
    write_snapshot(data_dir / "snapshots", SnapshotMeta(6, 1, (1,)), state.snapshot)
    members = members_of(1)

    async def run_once(command: list[Any] | None) -> dict[str, str]:
        server = RaftServer(1, members, data_dir, KVStateMachine(), timing=FAST)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            await server.wait_for_leader()
            if command is not None:
                await server.propose(command)
            node = server.node
            assert node is not None
            # Everything the log holds, the new term's no-op included.
            await server.wait_applied(node.log.last_index)
            nursery.cancel_scope.cancel()
        return kv(server)

    first = await run_once(["set", "after", "yes"])
    assert first == {**{f"k{i}": "snap" for i in range(1, 7)}, "after": "yes"}
    assert await run_once(None) == first
