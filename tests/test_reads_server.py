"""Reads over loopback: ReadIndex on the leader, lease reads, stale reads, redirects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from test_server import FAST, _heal, _isolate, kv, leader_of, running_cluster

import raft_trio
from raft_trio import NotLeader, RaftServer, Role, Timing
from raft_trio.errors import CommandError
from raft_trio.server.inbox import TICK
from raft_trio.server.node_loop import run_timer
from stress.cluster import InProcessCluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    async with running_cluster(tmp_path) as harness:
        yield harness


@pytest.fixture
async def cluster_without_check_quorum(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    async with running_cluster(tmp_path, replace(FAST, check_quorum=False)) as harness:
        yield harness


def followers(cluster: InProcessCluster, leader: RaftServer) -> list[RaftServer]:
    return [cluster.servers[i] for i in cluster.running() if i != leader.id]


async def test_a_linearizable_read_sees_the_last_write_without_a_log_entry(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    await leader.propose(["set", "k", "v1"])
    last = leader.node.log.last_index  # type: ignore[union-attr]
    assert await leader.read(["get", "k"]) == "v1"
    assert await leader.read(["get", "absent"]) is None
    assert leader.node.log.last_index == last  # type: ignore[union-attr]
    with pytest.raises(NotLeader) as info:
        await followers(cluster, leader)[0].read(["get", "k"])
    assert info.value.leader_id == leader.id
    with pytest.raises(CommandError, match="read mode"):
        await leader.read(["get", "k"], mode="eventually")


async def test_one_heartbeat_round_confirms_many_concurrent_reads(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    await leader.propose(["set", "k", "v"])
    node = leader.node
    assert node is not None
    results: list[object] = []

    async def one() -> None:
        results.append(await leader.read(["get", "k"]))

    # Ticks add a round each (every 20 ms here, however long the reads take on a busy
    # machine): count those apart, so that what is left is the rounds the reads started.
    ticked = [0]
    broadcast = node._broadcast_heartbeat

    def counted_broadcast() -> None:
        ticked[0] += 1
        broadcast()

    node._broadcast_heartbeat = counted_broadcast  # type: ignore[method-assign]
    before = node.heartbeat_round[1]
    started = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one)
    finally:
        del node._broadcast_heartbeat
    assert results == ["v"] * 200
    rounds = node.heartbeat_round[1] - before
    print(f"200 reads in {trio.current_time() - started:.3f} s: {rounds} rounds, "
          f"{ticked[0]} of them from ticks")
    # The reads arrive together: the first starts a round, the rest wait for the next.
    assert rounds - ticked[0] <= 2, (rounds, ticked[0])


async def test_the_client_reads_through_redirects_and_in_every_mode(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    follower = followers(cluster, leader)[0]
    async with raft_trio.connect([follower.address], timeout=10) as client:
        await client.set("k", "v")
        assert await client.get("k") == "v"
        assert await client.get("k", mode="lease") == "v"
    # A stale read is answered by the member asked, leader or not.
    await follower.wait_applied(leader.node.commit)  # type: ignore[union-attr]
    async with raft_trio.connect([follower.address], timeout=10) as client:
        assert await client.get("k", mode="stale") == "v"
        with pytest.raises(ValueError, match="mode"):
            await client.get("k", mode="sometimes")  # type: ignore[arg-type]


async def test_a_stale_read_can_miss_writes_that_a_linearizable_one_sees(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    follower = followers(cluster, leader)[0]
    await leader.propose(["set", "k", "old"])
    await follower.wait_applied(leader.node.commit)  # type: ignore[union-attr]
    _isolate(cluster, follower.id)
    try:
        await leader.propose(["set", "k", "new"])
        assert await leader.read(["get", "k"]) == "new"
        assert await follower.read(["get", "k"], mode="stale") == "old"
    finally:
        _heal(cluster)


async def test_a_lease_read_needs_no_round_and_expires_without_a_majority(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    await leader.propose(["set", "k", "v"])
    node = leader.node
    assert node is not None
    with trio.fail_after(10):
        while leader._reads.lease_index() is None:  # until a round is answered since the write
            await trio.sleep(FAST.tick_interval)
    before = node.heartbeat_round
    assert await leader.read(["get", "k"], mode="lease") == "v"
    assert node.heartbeat_round == before  # answered at once, no round of its own
    for other in followers(cluster, leader):
        _isolate(cluster, other.id)
    try:
        await trio.sleep(FAST.lease_seconds + FAST.tick_interval)
        assert leader._reads.lease_index() is None
    finally:
        _heal(cluster)


async def test_a_stalled_leader_past_its_lease_confirms_a_lease_read_first(
    cluster: InProcessCluster,
) -> None:
    """A leader stalled for longer than its lease (SIGSTOP, a long pause: no ticks,
    nothing sent or received) has not noticed that the others elected a new leader,
    since its CheckQuorum counts ticks. A lease read on it must not answer from its
    state: the lease is measured in wall-clock time, so the read falls back to a
    ReadIndex round, which cannot be confirmed, and fails once it hears of the new term."""
    old = await leader_of(cluster)
    node = old.node
    assert node is not None
    await old.propose(["set", "k", "old"])
    with trio.fail_after(10):
        while old._reads.lease_index() is None:  # a lease in force to begin with
            await trio.sleep(FAST.tick_interval)

    def stalled(item: Any) -> None:
        if item is not TICK:  # its clock does not tick while it is stopped
            handle(item)

    loop = old._node_loop
    assert loop is not None
    handle = loop._handle
    loop._handle = stalled  # type: ignore[method-assign]
    _isolate(cluster, old.id)
    outcome: list[object] = []
    try:
        with trio.fail_after(10):
            while True:
                others = [s for s in followers(cluster, old) if s.role is Role.LEADER]
                if others and others[0].node.term > node.term:  # type: ignore[union-attr]
                    break
                await trio.sleep(FAST.tick_interval)
        await others[0].propose(["set", "k", "new"])
        # The stale answer is there to be given: it still leads as far as it knows...
        assert old.role is Role.LEADER and kv(old) == {"k": "old"}
        # ...but its lease ran out before anyone else could be elected.
        assert old._reads.lease_index() is None
        before = node.heartbeat_round

        async def lease_read() -> None:
            try:
                outcome.append(await old.read(["get", "k"], mode="lease"))
            except NotLeader as exc:
                outcome.append(exc)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lease_read)
                await trio.sleep(FAST.tick_interval * FAST.election_ticks)
                assert outcome == []  # not answered while nothing can confirm it
                # With its ticks stopped, only the read can have started a round.
                assert node.heartbeat_round > before
                # It runs again (SIGCONT): the new leader's term reaches it.
                del loop._handle
                _heal(cluster)
    finally:
        loop.__dict__.pop("_handle", None)
        _heal(cluster)
    assert len(outcome) == 1 and isinstance(outcome[0], NotLeader), outcome
    assert outcome[0].leader_id in (None, others[0].id)


async def test_a_deposed_leader_does_not_answer_a_linearizable_read(
    cluster_without_check_quorum: InProcessCluster,
) -> None:
    # Without CheckQuorum the cut-off leader keeps believing it leads: only the
    # ReadIndex round stands between it and a stale answer.
    cluster = cluster_without_check_quorum
    old = await leader_of(cluster)
    await old.propose(["set", "k", "old"])
    _isolate(cluster, old.id)
    outcome: list[object] = []
    try:
        with trio.fail_after(10):
            while True:
                others = [s for s in followers(cluster, old) if s.role is Role.LEADER]
                if others:
                    break
                await trio.sleep(0.02)
        await others[0].propose(["set", "k", "new"])
        assert old.role is Role.LEADER
        async with trio.open_nursery() as nursery:

            async def read_old() -> None:
                try:
                    outcome.append(await old.read(["get", "k"]))
                except NotLeader as exc:
                    outcome.append(exc)

            nursery.start_soon(read_old)
            await trio.sleep(FAST.tick_interval * FAST.election_ticks * 2)
            assert outcome == []  # never confirmed while cut off
            _heal(cluster)
    finally:
        _heal(cluster)
    assert len(outcome) == 1 and isinstance(outcome[0], NotLeader)


async def test_a_follower_counts_an_election_timeout_no_sooner_than_a_lease_lasts(
    tmp_path: Path, mock_clock: trio.testing.MockClock,
) -> None:
    """The lease rests on this: a follower that heard from its leader at time h ignores
    vote requests until it has counted election_ticks ticks, which must not happen before
    h + lease_seconds (on the follower's clock, before allowing for drift)."""
    timing = Timing(tick_interval=1.0, election_ticks=10)
    server = RaftServer(1, {1: "127.0.0.1:1"}, tmp_path, raft_trio.KVStateMachine(),
                        timing=timing)
    send, receive = trio.open_memory_channel[Any](100)
    server.inbox = send
    ticks: list[float] = []

    async def count_ticks() -> None:
        async for item in receive:
            assert item is TICK
            ticks.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_timer, server)
        nursery.start_soon(count_ticks)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(1.0)  # the first tick, on time
        await trio.testing.wait_all_tasks_blocked()
        # The member's loop is held up for just under an interval past the next
        # deadline (a slow fsync, a GC pause), and a heartbeat arrives meanwhile: it
        # is handled first, then the late tick.
        mock_clock.jump(1.98)
        heard = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.02)  # from here on the loop keeps up: each tick on time
        await trio.testing.wait_all_tasks_blocked()
        while len([t for t in ticks if t >= heard]) < timing.election_ticks:
            mock_clock.jump(1.0)
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    timeout_at = [t for t in ticks if t >= heard][timing.election_ticks - 1]
    print(f"{timing.election_ticks} ticks {timeout_at - heard:.2f} s after hearing from the "
          f"leader; the lease lasts {timing.lease_seconds:.2f} s")
    assert timeout_at - heard >= timing.lease_seconds
