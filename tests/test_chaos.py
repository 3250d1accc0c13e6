"""Fault injection (the "faults" op) and the `raft-trio chaos` command."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from test_server import FAST, kv, leader_of, wait_all_applied

from raft_trio import Role
from raft_trio.client import connect, set_member_faults
from raft_trio.errors import RaftError
from stress.cluster import InProcessCluster, free_ports


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    """Three members that accept the faults op."""
    members = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    async with trio.open_nursery() as nursery:
        harness = InProcessCluster(nursery, members, tmp_path, FAST, "warning",
                                   fault_injection=True)
        for node_id in members:
            await harness.start(node_id)
        yield harness
        nursery.cancel_scope.cancel()


async def test_faults_op_is_refused_without_fault_injection(tmp_path: Path) -> None:
    members = {1: f"127.0.0.1:{free_ports(1)[0]}"}
    async with trio.open_nursery() as nursery:
        harness = InProcessCluster(nursery, members, tmp_path, FAST, "warning")
        await harness.start(1)
        with pytest.raises(RaftError, match="fault injection is off"):
            await set_member_faults(members[1], [2])
        nursery.cancel_scope.cancel()


async def test_faults_op_checks_its_arguments(faulty: InProcessCluster) -> None:
    address = faulty.members[1]
    for bad in (["two"], [0], [-1]):
        with pytest.raises(RaftError, match="list of member ids"):
            await set_member_faults(address, bad)  # type: ignore[arg-type]
    assert await set_member_faults(address, [3, 2]) == [2, 3]
    assert await set_member_faults(address, []) == []


async def test_a_cut_member_gets_nothing_then_catches_up(faulty: InProcessCluster) -> None:
    leader = await leader_of(faulty)
    term = leader.node.term  # type: ignore[union-attr]
    victim = next(i for i in faulty.running() if i != leader.id)
    others = [i for i in faulty.members if i != victim]
    cut_off = faulty.servers[victim]
    async with connect(list(faulty.members.values()), timeout=20) as client:
        await client.set("before", "1")
        await wait_all_applied(faulty, leader.node.commit)  # type: ignore[union-attr]
        applied = cut_off.last_applied
        received = cut_off.counters["messages_received"]

        # Each end alone cuts the link both ways: first only the victim's end...
        await set_member_faults(faulty.members[victim], others)
        await client.set_many([(f"k{i}", str(i)) for i in range(100)])
        await trio.sleep(0.5)  # many heartbeat intervals and election timeouts
        assert cut_off.last_applied == applied
        assert cut_off.counters["messages_received"] == received
        # ... then only the others' ends.
        await set_member_faults(faulty.members[victim], [])
        for other in others:
            await set_member_faults(faulty.members[other], [victim])
        await client.set_many([(f"k{i}", str(i)) for i in range(100, 200)])
        await trio.sleep(0.5)
        assert cut_off.last_applied == applied
        assert cut_off.counters["messages_received"] == received
        assert "k0" not in kv(cut_off)
        # The victim campaigned all along, yet none of its RequestVotes arrived.
        assert cut_off.node.term > term  # type: ignore[union-attr]
        assert leader.node.term == term  # type: ignore[union-attr]
        assert leader.role is Role.LEADER

        for other in others:
            await set_member_faults(faulty.members[other], [])
        await client.set("after", "2")
        # Whoever leads now (the victim's higher term may depose the leader)
        # brings the victim up to date.
        new_leader = await leader_of(faulty)
        await wait_all_applied(faulty, new_leader.node.commit)  # type: ignore[union-attr]
    assert kv(cut_off) == kv(new_leader)
    assert kv(cut_off)["k199"] == "199" and kv(cut_off)["after"] == "2"
