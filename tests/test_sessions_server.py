"""Client sessions on live servers over loopback: a retried write applies once, across
lost replies, a dead leader, a cut log, snapshots, restarts and expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from test_server import FAST, _heal, _isolate, kv, leader_of, running_cluster, wait_all_applied

import raft_trio
from raft_trio import RaftServer, Role, SessionExpired, SnapshotPolicy, StaleRequest
from raft_trio.client.connection import Connection
from raft_trio.core import EntryKind
from stress.cluster import InProcessCluster, free_ports

C = 0x1234_5678_9ABC_DEF0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    async with running_cluster(tmp_path) as harness:
        yield harness


def addresses_from(cluster: InProcessCluster, first: int) -> list[str]:
    """Every member's address, member `first`'s first (so a client starts there)."""
    return [cluster.members[first]] + [a for i, a in cluster.members.items() if i != first]


async def wait_sessions_equal(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    assert leader.node is not None
    await wait_all_applied(cluster, leader.node.log.last_index)
    tables = [cluster.servers[i].sessions for i in cluster.running()]
    assert all(t == tables[0] for t in tables)


async def test_an_identical_session_request_applies_once(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    request = [["cas", "k", None, "1"], ["set", "n", "x"]]
    assert await leader.propose_many(request, session=(C, 1)) == [True, None]
    # Applying again would have answered False: this is the first time's answer.
    assert await leader.propose_many(request, session=(C, 1)) == [True, None]
    assert await leader.propose_many([["cas", "k", "1", "2"]], session=(C, 2)) == [True]
    with pytest.raises(StaleRequest):
        await leader.propose_many(request, session=(C, 1))
    with pytest.raises(SessionExpired):
        await leader.propose_many(request, session=(C + 1, 2))
    with pytest.raises(raft_trio.CommandError):
        await leader.propose_many(request, session=(C, 0))
    await wait_sessions_equal(cluster)
    for node_id in cluster.running():
        server = cluster.servers[node_id]
        assert kv(server) == {"k": "2", "n": "x"}
        session = server.sessions.get(C)
        assert session is not None and (session.seq, session.results) == (2, [True])
    # Requests without a session are plain entries, as before.
    assert await leader.propose(["cas", "k", "2", "3"]) is True
    assert await leader.propose(["cas", "k", "2", "3"]) is False


async def test_a_write_whose_reply_was_lost_applies_once(
    cluster: InProcessCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = await leader_of(cluster)
    real_call = Connection.call
    dropped = []

    async def lose_the_first_reply(self: Connection, op: str, *args: Any) -> list[Any]:
        reply = await real_call(self, op, *args)
        if op == "propose" and reply[1] == "ok" and not dropped:
            dropped.append(reply)
            raise trio.BrokenResourceError("the reply was lost")
        return reply

    monkeypatch.setattr(Connection, "call", lose_the_first_reply)
    async with raft_trio.connect(addresses_from(cluster, leader.id), timeout=10) as client:
        assert await client.cas("k", None, "1") is True
        assert dropped == [[1, "ok", [True]]]
        assert await client.cas("k", "1", "2") is True
    assert kv(leader) == {"k": "2"}


async def test_a_retry_through_another_member_after_the_leader_died_applies_once(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    real_propose = leader.propose_client_commands
    applied = trio.Event()

    async def die_before_answering(commands: Any, **kwargs: Any) -> list[Any]:
        await real_propose(commands, **kwargs)
        applied.set()
        await trio.sleep_forever()  # until the member is stopped
        raise AssertionError("unreachable")

    leader.propose_client_commands = die_before_answering  # type: ignore[method-assign]
    async with raft_trio.connect(addresses_from(cluster, leader.id), timeout=15) as client:
        async with trio.open_nursery() as nursery:

            async def kill_the_leader() -> None:
                await applied.wait()
                await cluster.stop(leader.id)

            nursery.start_soon(kill_the_leader)
            assert await client.propose([["cas", "k", None, "1"], ["set", "a", "1"]]) == [
                True, None]
            assert await client.cas("k", None, "2") is False  # a new request, applied
    new = await leader_of(cluster)
    assert new.id != leader.id
    assert kv(new) == {"k": "1", "a": "1"}
    # The first request is in the log twice, the second time a duplicate.
    first_request = [e for e in new.log_entries(1, 1000)
                     if e.kind == EntryKind.SESSION and cbor2.loads(e.data)[1] == 1]
    assert len(first_request) >= 4


async def test_a_request_cut_by_a_new_leader_is_retried_and_applied_once(
    cluster: InProcessCluster,
) -> None:
    old = await leader_of(cluster)
    await old.propose(["set", "before", "1"])
    async with raft_trio.connect(addresses_from(cluster, old.id), timeout=15) as client:
        await client.set("warm", "up")  # connected to the old leader
        _isolate(cluster, old.id)
        async with trio.open_nursery() as nursery:
            outcome: list[Any] = []

            async def write() -> None:
                outcome.append(await client.set_many([(f"k{i}", "v") for i in range(20)]))
                outcome.append(await client.cas("once", None, "1"))

            nursery.start_soon(write)
            with trio.fail_after(10):
                while not any(cluster.servers[i].role is Role.LEADER
                              for i in cluster.running() if i != old.id):
                    await trio.sleep(0.02)
            _heal(cluster)
    assert outcome == [None, True]
    new = await leader_of(cluster)
    assert new.id != old.id
    await wait_sessions_equal(cluster)
    assert kv(new) == {"before": "1", "warm": "up", "once": "1",
                       **{f"k{i}": "v" for i in range(20)}}


async def test_sessions_survive_a_snapshot_and_a_restart(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    request = [["cas", "k", None, "1"]]
    assert await leader.propose_many(request, session=(C, 1)) == [True]
    await wait_sessions_equal(cluster)
    for node_id in cluster.running():
        await cluster.servers[node_id].take_snapshot()
    for node_id in list(cluster.running()):
        await cluster.stop(node_id)
    for node_id in cluster.members:
        await cluster.start(node_id)
    leader = await leader_of(cluster)
    for node_id in cluster.running():
        server = cluster.servers[node_id]
        # The session entry itself was not applied again: the snapshot covers it.
        assert server.last_applied >= server.status()["snapshot_index"] > 0
        session = server.sessions.get(C)
        assert session is not None and session.results == [True]
    assert await leader.propose_many(request, session=(C, 1)) == [True]
    assert kv(leader) == {"k": "1"}


async def test_a_member_rebuilt_from_a_snapshot_deduplicates_as_leader(tmp_path: Path) -> None:
    policy = SnapshotPolicy(entries=200, trailing=50, chunk_bytes=4096, window=2)
    async with running_cluster(tmp_path, FAST, policy) as cluster:
        leader = await leader_of(cluster)
        victim = next(i for i in cluster.running() if i != leader.id)
        await cluster.stop(victim)
        request = [["cas", "k", None, "1"], ["set", "x", "y"]]
        assert await leader.propose_many(request, session=(C, 1)) == [True, None]
        async with raft_trio.connect(list(cluster.members.values()), timeout=20) as client:
            for first in range(0, 1000, 100):
                await client.set_many([(f"a{i}", "v") for i in range(first, first + 100)])
        assert leader.node is not None and leader.node.log.offset > 10  # the request is gone
        cluster.wipe(victim)
        await cluster.start(victim)
        rebuilt = cluster.servers[victim]
        await wait_sessions_equal(cluster)
        assert rebuilt.counters["snapshots_installed"] == 1
        assert rebuilt.sessions == leader.sessions
        await leader.transfer_leadership(victim)
        assert await leader_of(cluster) is rebuilt
        assert await rebuilt.propose_many(request, session=(C, 1)) == [True, None]
        assert kv(rebuilt)["k"] == "1"


async def wait_expired(cluster: InProcessCluster, client_id: int) -> None:
    with trio.fail_after(10):
        while any(client_id in cluster.servers[i].sessions for i in cluster.running()):
            await trio.sleep(0.02)


async def test_idle_sessions_expire_on_every_member_and_a_client_renews(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, session_expiry=0.5) as cluster:
        leader = await leader_of(cluster)
        async with raft_trio.connect(list(cluster.members.values()), timeout=10) as client:
            await client.set("a", "1")
            first_id = client.client_id
            assert first_id is not None and first_id in leader.sessions
            await wait_expired(cluster, first_id)
            expiries = [e for e in leader.log_entries(1, 1000)
                        if e.kind == EntryKind.SESSION_EXPIRY]
            assert expiries and cbor2.loads(expiries[0].data)[1] == 500
            # Request 2 finds its session gone; it was never sent before, so the
            # client starts a new session with it.
            assert await client.cas("b", None, "1") is True
            assert client.client_id not in (None, first_id)
            await wait_sessions_equal(cluster)
            assert client.client_id in leader.sessions
        assert kv(leader) == {"a": "1", "b": "1"}


async def test_a_retry_after_the_session_expired_raises_session_expired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that the session outlives the pause between the two writes.
    async with running_cluster(tmp_path, session_expiry=1.0) as cluster:
        leader = await leader_of(cluster)
        real_call = Connection.call
        lose = False

        async def lose_reply_until_expired(self: Connection, op: str, *args: Any) -> list[Any]:
            reply = await real_call(self, op, *args)
            if lose and op == "propose" and reply[1] == "ok":
                await wait_expired(cluster, args[1][0])
                raise trio.BrokenResourceError("the reply was lost")
            return reply

        monkeypatch.setattr(Connection, "call", lose_reply_until_expired)
        async with raft_trio.connect(list(cluster.members.values()), timeout=15) as client:
            await client.set("a", "1")
            lose = True
            with pytest.raises(SessionExpired, match="sent before"):
                await client.cas("b", None, "1")
        # It did apply, once.
        assert kv(leader) == {"a": "1", "b": "1"}


async def test_a_leader_proposes_no_expiry_while_sessions_are_active(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, session_expiry=2.0) as cluster:
        leader = await leader_of(cluster)
        async with raft_trio.connect(list(cluster.members.values()), timeout=10) as client:
            await client.set("a", "1")
            first_id = client.client_id
            with trio.move_on_after(3):
                while True:
                    await client.set("a", "1")
                    await trio.sleep(0.05)
            assert client.client_id == first_id and first_id in leader.sessions
        assert not [e for e in leader.log_entries(1, 10_000)
                    if e.kind == EntryKind.SESSION_EXPIRY]


def test_session_expiry_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        RaftServer(1, {1: "127.0.0.1:1"}, tmp_path, raft_trio.KVStateMachine(),
                   session_expiry=-1)


class Opaque:
    """A state machine breaking the contract: its results are not CBOR."""

    def __init__(self) -> None:
        self.count = 0

    def apply(self, command: Any) -> Any:
        self.count += 1
        return object() if command == "opaque" else self.count

    def snapshot(self, out: Any) -> None:
        out.write(cbor2.dumps(self.count))

    def restore(self, src: Any) -> None:
        self.count = cbor2.loads(src.read())


async def test_a_result_that_is_not_cbor_stops_snapshots_not_the_member(tmp_path: Path) -> None:
    members = {1: f"127.0.0.1:{free_ports(1)[0]}"}
    server = RaftServer(1, members, tmp_path, Opaque(), timing=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        await server.wait_for_leader()
        await server.propose_many(["opaque"], session=(C, 1))
        with pytest.raises(raft_trio.RaftError, match="failed"):
            await server.take_snapshot()
        # The next request replaces the recorded results: snapshots work again.
        assert await server.propose_many(["plain"], session=(C, 2)) == [2]
        assert await server.take_snapshot() == server.last_applied
        nursery.cancel_scope.cancel()
