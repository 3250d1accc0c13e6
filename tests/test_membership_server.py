"""Membership changes on live servers over loopback: add, promote, transfer, remove."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

import raft_trio
from raft_trio import KVStateMachine, RaftServer, Role, Timing
from raft_trio.errors import CommandError
from stress.cluster import free_ports

FAST = Timing(tick_interval=0.02, election_ticks=10)


class Harness:
    """Members that come and go, each in its own cancel scope."""

    def __init__(self, nursery: trio.Nursery, root: Path):
        self.nursery = nursery
        self.root = root
        self.servers: dict[int, RaftServer] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.done: dict[int, trio.Event] = {}

    async def start(self, server: RaftServer) -> None:
        self.servers[server.id] = server
        self.done[server.id] = trio.Event()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                with trio.CancelScope() as scope:
                    self.scopes[server.id] = scope
                    await server.serve(task_status=task_status)
            finally:
                self.done[server.id].set()

        await self.nursery.start(run)

    def new(self, node_id: int, cluster: dict[int, str], address: str | None = None
            ) -> RaftServer:
        return RaftServer(node_id, cluster, self.root / f"m{node_id}", KVStateMachine(),
                          timing=FAST, address=address)

    def running(self) -> list[RaftServer]:
        return [s for i, s in self.servers.items() if not self.done[i].is_set()]

    async def leader(self, timeout: float = 10.0) -> RaftServer:
        with trio.fail_after(timeout):
            while True:
                running = self.running()
                leaders = [s for s in running if s.role is Role.LEADER]
                members = [s for s in running if s.id in (leaders[0].membership.members
                                                          if leaders else ())]
                if len(leaders) == 1 and all(s.leader_id == leaders[0].id for s in members):
                    return leaders[0]
                await trio.sleep(0.02)


async def test_grow_transfer_and_remove_the_old_leader(tmp_path: Path) -> None:
    ports = free_ports(4)
    cluster = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, tmp_path)
        for node_id in cluster:
            await h.start(h.new(node_id, cluster))
        old = await h.leader()
        new_address = f"127.0.0.1:{ports[3]}"
        joiner = h.new(4, {}, address=new_address)
        await h.start(joiner)
        async with raft_trio.connect(list(cluster.values()), timeout=20) as client:
            await client.set_many([(f"k{i}", "v") for i in range(200)])
            config = await client.add_member(4, new_address)
            assert config["voters"] == {**cluster, 4: new_address}
            assert (await client.members())["learners"] == {}
            # Adding it again is answered as the first time; elsewhere, refused.
            assert await client.add_member(4, new_address) == config
            with pytest.raises(CommandError, match="already"):
                await client.add_member(4, cluster[1])
            assert await client.transfer_leadership(4) == 4
            await client.set("after-transfer", "yes")
            config = await client.remove_member(old.id)
            assert sorted(config["voters"]) == sorted({*cluster, 4} - {old.id})
            with trio.fail_after(10):
                await h.done[old.id].wait()  # a removed member shuts itself down
            assert old.removed
            await client.set("after-removal", "yes")
            assert await client.get("k7") == "v"
        leader = await h.leader()
        assert leader.id == 4
        with trio.fail_after(10):
            while True:
                states = [s.state_machine.data for s in h.running()]  # type: ignore[attr-defined]
                if all(st == states[0] and "after-removal" in st for st in states):
                    break
                await trio.sleep(0.02)
        assert len(h.running()) == 3
        nursery.cancel_scope.cancel()


async def test_replace_every_member_one_by_one_while_a_client_writes(tmp_path: Path) -> None:
    ports = free_ports(6)
    cluster = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    everyone = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(6)}
    written: list[str] = []
    longest = [0.0]
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, tmp_path)
        for node_id in cluster:
            await h.start(h.new(node_id, cluster))
        await h.leader()

        async def writer(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                async with raft_trio.connect(list(everyone.values()), timeout=20) as client:
                    n = 0
                    while True:
                        started = trio.current_time()
                        # Every write succeeds (the client's own timeout is the only
                        # limit); writes_go_on below checks that they keep flowing
                        # through every step. How long the slowest took is printed,
                        # not asserted: that measures the machine as much as the code.
                        await client.set(f"w{n}", str(n))
                        longest[0] = max(longest[0], trio.current_time() - started)
                        written.append(f"w{n}")
                        n += 1

        async def writes_go_on(count: int) -> None:
            # Wait for the writer to complete more writes, so that every step
            # of the replacement happens while writes are flowing, however
            # fast or slow the machine is.
            target = len(written) + count
            with trio.fail_after(10):
                while len(written) < target:
                    await trio.sleep(0.005)

        writes = await nursery.start(writer)
        async with raft_trio.connect(list(everyone.values()), timeout=30) as admin:
            await writes_go_on(5)
            for old_id, new_id in ((1, 4), (2, 5), (3, 6)):
                await h.start(h.new(new_id, {}, address=everyone[new_id]))
                await admin.add_member(new_id, everyone[new_id])
                await writes_go_on(5)
                await admin.remove_member(old_id)
                with trio.fail_after(10):
                    await h.done[old_id].wait()
                await writes_go_on(5)
            writes.cancel()
            assert len(written) >= 35
            for key in written[:: max(1, len(written) // 20)]:
                assert await admin.get(key) == key[1:]
            members = await admin.members()
            assert sorted(members["voters"]) == [4, 5, 6]
            print(f"{len(written)} writes, the longest took {longest[0]:.3f}s")
        nursery.cancel_scope.cancel()


async def test_a_removal_that_would_lose_quorum_is_refused(tmp_path: Path) -> None:
    ports = free_ports(3)
    cluster = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, tmp_path)
        for node_id in cluster:
            await h.start(h.new(node_id, cluster))
        leader = await h.leader()
        down, up = (i for i in cluster if i != leader.id)
        h.scopes[down].cancel()
        await h.done[down].wait()
        await trio.sleep(FAST.tick_interval * FAST.election_ticks * 2.5)
        async with raft_trio.connect([cluster[leader.id]], timeout=10) as client:
            # Left with the leader and a member that is down: no quorum would answer.
            with pytest.raises(CommandError, match="would lose quorum"):
                await client.remove_member(up)
            config = await client.remove_member(down)
            assert sorted(config["voters"]) == sorted([leader.id, up])
            await client.set("still", "writable")
        nursery.cancel_scope.cancel()


async def test_a_member_that_is_not_running_stays_a_learner(tmp_path: Path) -> None:
    """Adding a member that never answered must not make it a voter: with it counted,
    one more member down would leave no quorum (a three-member cluster with a
    fourth voter that is not there needs all three others)."""
    ports = free_ports(4)
    cluster = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    new_address = f"127.0.0.1:{ports[3]}"
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, tmp_path)
        for node_id in cluster:
            await h.start(h.new(node_id, cluster))
        leader = await h.leader()
        async with raft_trio.connect(list(cluster.values()), timeout=20) as client:
            # A short log: "within promote_within entries" holds for any log at all.
            await client.set("before", "x")
            config = await client.add_member(4, new_address, wait=1.0)
            assert config["learners"] == {4: new_address}
            assert 4 not in config["voters"]
            with pytest.raises(CommandError, match="has not answered"):
                await client.promote_member(4, wait=0.5)
            assert (await client.members())["learners"] == {4: new_address}

            # One follower down: the three voters left with two up still commit.
            down = next(i for i in cluster if i != leader.id)
            h.scopes[down].cancel()
            await h.done[down].wait()
            await client.set("one-down", "still writable")

            # Once member 4 runs and catches up, adding it again promotes it.
            await h.start(h.new(4, {}, address=new_address))
            config = await client.add_member(4, new_address)
            assert config["voters"] == {**cluster, 4: new_address}
            assert config["learners"] == {}
            await client.set("four-voters", "three up")
            assert await client.get("one-down") == "still writable"
        nursery.cancel_scope.cancel()


async def test_promotion_waits_for_the_learner_to_catch_up(tmp_path: Path) -> None:
    ports = free_ports(4)
    cluster = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    new_address = f"127.0.0.1:{ports[3]}"
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, tmp_path)
        for node_id in cluster:
            await h.start(h.new(node_id, cluster))
        leader = await h.leader()
        leader.promote_within = 10
        async with raft_trio.connect(list(cluster.values()), timeout=20) as client:
            await client.set_many([(f"k{i}", "v") for i in range(500)])
            config = await client.add_member(4, new_address, voter=False)
            assert config["learners"] == {4: new_address}
            with pytest.raises(CommandError, match="has not answered"):
                await client.promote_member(4, wait=0.3)
            await h.start(h.new(4, {}, address=new_address))
            with trio.fail_after(10):
                while leader._membership.lag(4) is not None:
                    await trio.sleep(0.01)
            # As if it had fallen 11 entries behind the commit index: no promotion.
            # (Called in-process, with no await in between, so no answer from the
            # learner can move its match index first.)
            assert leader.node is not None
            leader.node.progress[4].match = leader.node.commit - 11
            with pytest.raises(CommandError, match="more than 10 entries behind"):
                await leader.promote_member(4, wait=0)
            config = await client.promote_member(4)
            assert config["voters"] == {**cluster, 4: new_address}
            assert await client.get("k499") == "v"
        nursery.cancel_scope.cancel()


async def test_two_adds_of_one_member_at_once_both_end_with_a_voter(tmp_path: Path) -> None:
    """serve --join asks to be added while an operator adds the same member: the
    one that waits for the other's promotion must not fail."""
    ports = free_ports(4)
    cluster = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    new_address = f"127.0.0.1:{ports[3]}"
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, tmp_path)
        for node_id in cluster:
            await h.start(h.new(node_id, cluster))
        await h.leader()
        await h.start(h.new(4, {}, address=new_address))
        configs: list[dict[str, object]] = []

        async def add() -> None:
            async with raft_trio.connect(list(cluster.values()), timeout=20) as client:
                configs.append(await client.add_member(4, new_address))

        async with trio.open_nursery() as adders:
            adders.start_soon(add)
            adders.start_soon(add)
        assert [c["voters"] for c in configs] == [{**cluster, 4: new_address}] * 2
        nursery.cancel_scope.cancel()


async def test_changes_asked_for_at_once_are_made_one_after_the_other(tmp_path: Path) -> None:
    ports = free_ports(5)
    cluster = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, tmp_path)
        for node_id in cluster:
            await h.start(h.new(node_id, cluster))
        leader = await h.leader()
        async with trio.open_nursery() as changes:
            # Both reach the node loop before the first change can commit.
            for node_id in (4, 5):
                changes.start_soon(partial(leader.add_member, node_id,
                                           f"127.0.0.1:{ports[node_id - 1]}", voter=False))
        assert sorted(leader.membership.learners) == [4, 5]
        nursery.cancel_scope.cancel()
