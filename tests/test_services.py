"""Application services (leader-only tasks, client ops of their own), the generic read,
and the generic client that carries both."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from test_server import FAST, leader_of

import raft_trio
from raft_trio import CommandError, NotLeader, RaftError, Role, Service
from raft_trio.client.connection import Connection
from raft_trio.server import Member
from stress.cluster import InProcessCluster, free_ports


class Register:
    """A state machine of one value: ["put", v] sets it; the query "value" reads it."""

    def __init__(self) -> None:
        self.value: Any = None

    def apply(self, command: Any) -> Any:
        if isinstance(command, list) and len(command) == 2 and command[0] == "put":
            self.value = command[1]
            return None
        return ["error", "unknown command"]

    def query(self, query: Any) -> Any:
        return self.value if query == "value" else ["no such query", query]


@asynccontextmanager
async def cluster_of(tmp_path: Path, services: list[Service]) -> AsyncIterator[InProcessCluster]:
    members = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    async with trio.open_nursery() as nursery:
        cluster = InProcessCluster(nursery, members, tmp_path, FAST, "warning",
                                   state_machine=Register, services=lambda: services)
        for node_id in members:
            await cluster.start(node_id)
        yield cluster
        nursery.cancel_scope.cancel()


async def test_a_leader_task_follows_leadership(tmp_path: Path) -> None:
    events: list[tuple[str, int]] = []

    async def lead(member: Member) -> None:
        events.append(("start", member.id))
        try:
            await trio.sleep_forever()
        finally:
            events.append(("stop", member.id))

    async with cluster_of(tmp_path, [Service("watch", lead=lead)]) as cluster:
        leader = await leader_of(cluster)
        with trio.fail_after(10):
            while events != [("start", leader.id)]:
                await trio.sleep(0.01)
        successor = next(i for i in cluster.members if i != leader.id)
        async with raft_trio.RaftClient(list(cluster.members.values()), timeout=10) as client:
            assert await client.transfer_leadership(successor) == successor
        with trio.fail_after(10):
            while len(events) < 3:
                await trio.sleep(0.01)
        assert events == [("start", leader.id), ("stop", leader.id), ("start", successor)]
        assert all(s.role is not Role.LEADER for s in cluster.servers.values()
                   if s.id != successor)
    # The member's shutdown cancels it too.
    assert events[-1] == ("stop", successor)


async def test_a_service_op_is_answered_by_the_leader_and_redirected_elsewhere(
    tmp_path: Path,
) -> None:
    async def whoami(member: Member, args: list[Any]) -> Any:
        return [member.id, args]

    async with cluster_of(tmp_path, [Service("who", ops={"whoami": whoami})]) as cluster:
        leader = await leader_of(cluster)
        follower = next(i for i in cluster.members if i != leader.id)
        # The client starts at a follower and is redirected.
        async with raft_trio.RaftClient([cluster.members[follower]], timeout=10) as client:
            assert await client.call("whoami", 1, "two") == [leader.id, [1, "two"]]
        conn = await Connection.open(cluster.members[follower])
        try:
            reply = await conn.call("whoami")
        finally:
            await conn.aclose()
        assert reply[1:3] == ["err", "not_leader"]
        assert reply[4] == [leader.id, leader.address]


async def test_a_failing_service_does_not_take_the_member_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_op(member: Member, args: list[Any]) -> Any:
        raise ZeroDivisionError("the op's bug")

    async def picky_op(member: Member, args: list[Any]) -> Any:
        raise CommandError("this op takes nothing")

    async def broken_lead(member: Member) -> None:
        await member.propose(["put", "from the leader task"])
        raise ZeroDivisionError("the leader task's bug")

    service = Service("broken", ops={"boom": broken_op, "picky": picky_op}, lead=broken_lead)
    with caplog.at_level(logging.ERROR, logger="raft_trio.services"):
        async with cluster_of(tmp_path, [service]) as cluster:
            leader = await leader_of(cluster)
            async with raft_trio.RaftClient(list(cluster.members.values()), timeout=10) as c:
                with pytest.raises(RaftError, match="ZeroDivisionError: the op's bug"):
                    await c.call("boom")
                with pytest.raises(CommandError, match="this op takes nothing"):
                    await c.call("picky")
                with trio.fail_after(10):
                    while "the leader task's bug" not in caplog.text:
                        await trio.sleep(0.01)
                # Everything else goes on: writes, reads, the same leader.
                await c.propose([["put", 7]])
                assert await c.read("value") == 7
                assert leader.role is Role.LEADER and not leader.stopped
    assert "service broken failed as leader" in caplog.text


@pytest.mark.parametrize("mode", ["linearizable", "lease", "stale"])
async def test_a_generic_read_of_a_custom_state_machine(tmp_path: Path, mode: str) -> None:
    async with cluster_of(tmp_path, []) as cluster:
        leader = await leader_of(cluster)
        async with raft_trio.RaftClient(list(cluster.members.values()), timeout=10) as client:
            await client.propose([["put", {"nested": [1, 2]}]])
            if mode == "stale":
                # Any member answers from what it has applied: the leader has it.
                async with raft_trio.RaftClient([leader.address]) as at_leader:
                    value = await at_leader.read("value", mode="stale")
            else:
                value = await client.read("value", mode=mode)  # type: ignore[arg-type]
            assert value == {"nested": [1, 2]}
            assert await client.read(["other"]) == ["no such query", ["other"]]
            with pytest.raises(ValueError, match="mode must be one of"):
                await client.read("value", mode="eventual")  # type: ignore[arg-type]
        assert await leader.read("value", mode=mode) == {"nested": [1, 2]}


async def test_a_follower_redirects_a_linearizable_read(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, []) as cluster:
        leader = await leader_of(cluster)
        follower = next(s for s in cluster.servers.values() if s.id != leader.id)
        with pytest.raises(NotLeader):
            await follower.read("value")
        conn = await Connection.open(follower.address)
        try:
            reply = await conn.call("read", "value")
        finally:
            await conn.aclose()
        assert reply[1:3] == ["err", "not_leader"]


def test_a_service_op_may_not_take_a_protocol_op_name(tmp_path: Path) -> None:
    async def op(member: Member, args: list[Any]) -> Any:
        return None

    with pytest.raises(ValueError, match="op 'propose' is taken"):
        raft_trio.RaftServer(1, {1: "127.0.0.1:1"}, tmp_path, Register(),
                             services=[Service("bad", ops={"propose": op})])
    with pytest.raises(ValueError, match="op 'x' is taken"):
        raft_trio.RaftServer(1, {1: "127.0.0.1:1"}, tmp_path, Register(),
                             services=[Service("a", ops={"x": op}), Service("b", ops={"x": op})])


async def test_set_many_takes_a_mapping_or_pairs(tmp_path: Path) -> None:
    members = {1: f"127.0.0.1:{free_ports(1)[0]}"}
    async with trio.open_nursery() as nursery:
        cluster = InProcessCluster(nursery, members, tmp_path, FAST, "warning")
        await cluster.start(1)
        async with raft_trio.connect(list(members.values()), timeout=10) as kv:
            # A dict of 2-character keys once wrote key "a" = "b".
            await kv.set_many({"ab": "x", "cd": "y"})
            await kv.set_many([("ef", "z")])
            await kv.set_many(pair for pair in [("gh", "w")])
            assert [await kv.get(k) for k in ("ab", "cd", "ef", "gh", "a")] == [
                "x", "y", "z", "w", None]
            for bad in (["ab"], [("a", "b", "c")], 5, [["k", 1]]):
                with pytest.raises(TypeError):
                    await kv.set_many(bad)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


def test_the_services_example_runs() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "services.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    leader = int(lines[0].split()[1])
    successor = int(lines[3].split()[-1])
    assert lines[2] == f"last ticked by member {leader}"
    assert lines[5] == f"last ticked by member {successor}" and successor != leader
    first, second = int(lines[1].split()[-1]), int(lines[4].split()[-1])
    assert 0 < first < second
    assert lines[-1] == "all members stopped"
