"""Servers over loopback TCP: election, replication, failover, catch-up, bad input."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio

import raft_trio
from raft_trio import (
    CommandError,
    KVStateMachine,
    NotLeader,
    RaftServer,
    Role,
    SnapshotPolicy,
    Timing,
)
from raft_trio.core import Heartbeat
from raft_trio.transport import encode_message, send_frames
from stress.cluster import InProcessCluster, free_ports

FAST = Timing(tick_interval=0.02, election_ticks=10)


@asynccontextmanager
async def running_cluster(tmp_path: Path, timing: Timing = FAST,
                          snapshots: SnapshotPolicy | None = None,
                          **options: Any) -> AsyncIterator[InProcessCluster]:
    """Three members on loopback, all started; stopped on exit."""
    members = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    async with trio.open_nursery() as nursery:
        harness = InProcessCluster(nursery, members, tmp_path, timing, "warning", snapshots,
                                   **options)
        for node_id in members:
            await harness.start(node_id)
        yield harness
        nursery.cancel_scope.cancel()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    async with running_cluster(tmp_path) as harness:
        yield harness


async def leader_of(cluster: InProcessCluster, timeout: float = 10.0) -> RaftServer:
    """The one member every running member agrees leads."""
    with trio.fail_after(timeout):
        while True:
            running = [cluster.servers[i] for i in cluster.running()]
            leaders = [s for s in running if s.role is Role.LEADER]
            if len(leaders) == 1 and all(s.leader_id == leaders[0].id for s in running):
                return leaders[0]
            await trio.sleep(0.02)


async def wait_all_applied(cluster: InProcessCluster, index: int, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        for node_id in cluster.running():
            await cluster.servers[node_id].wait_applied(index)


def kv(server: RaftServer) -> dict[str, str]:
    assert isinstance(server.state_machine, KVStateMachine)
    return server.state_machine.data


async def test_one_leader_is_elected(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    terms = {cluster.servers[i].node.term for i in cluster.running()}  # type: ignore[union-attr]
    assert len(terms) == 1
    followers = [cluster.servers[i] for i in cluster.running() if i != leader.id]
    assert all(f.role is Role.FOLLOWER for f in followers)


async def test_proposals_replicate_to_every_member(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    results = await leader.propose_many([["set", f"k{i}", str(i)] for i in range(500)])
    assert results == [None] * 500
    assert await leader.propose(["get", "k7"]) == "7"
    await wait_all_applied(cluster, leader.node.commit)  # type: ignore[union-attr]
    states = [kv(cluster.servers[i]) for i in cluster.running()]
    assert states[0] == {f"k{i}": str(i) for i in range(500)}
    assert all(state == states[0] for state in states)
    # 500 entries in one batch, yet a handful of fsyncs each: writes are batched.
    for node_id in cluster.running():
        status = cluster.servers[node_id].status()
        assert 0 < status["fsyncs"] < 50
        assert status["messages_received"] > 0


async def test_follower_refuses_proposals_with_a_hint(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    follower = next(cluster.servers[i] for i in cluster.running() if i != leader.id)
    with pytest.raises(NotLeader) as info:
        await follower.propose(["set", "a", "b"])
    assert info.value.leader_id == leader.id
    assert info.value.leader_address == leader.address


async def test_leader_loss_elects_a_new_leader_and_keeps_data(cluster: InProcessCluster) -> None:
    old = await leader_of(cluster)
    old_term = old.node.term  # type: ignore[union-attr]
    addresses = list(cluster.members.values())
    async with raft_trio.connect(addresses, timeout=15) as client:
        await client.set_many([(f"k{i}", "before") for i in range(100)])
        await cluster.stop(old.id)
        new = await leader_of(cluster)
        assert new.id != old.id
        assert new.node.term > old_term  # type: ignore[union-attr]
        await client.set("after", "yes")
        assert await client.get("k42") == "before"
        assert await client.get("after") == "yes"


async def test_client_commands_of_every_shape_reach_the_state_machine(
    cluster: InProcessCluster,
) -> None:
    await leader_of(cluster)
    async with raft_trio.connect(list(cluster.members.values()), timeout=15) as client:
        results = await client.propose([
            ["set", "plain", "v"],
            ["set", "ключ", "🙂" * 70],  # 280 bytes: past the fast path's table
            ["cas", "plain", "v", "w"],
            ["set", "n", 1],
            ("set", "tuple", "t"),
            ["get", "plain"],
        ])
        assert results == [None, None, True, None, None, "w"]
        assert await client.get("ключ") == "🙂" * 70
        assert await client.get("tuple") == "t"
        with pytest.raises(CommandError, match="cannot be encoded as CBOR"):
            await client.propose([["set", "k", object()]])
        await client.set("after", "fine")
    async with raft_trio.connect(list(cluster.members.values()), timeout=15) as client:
        # As a session's first request: no number is used up, so the next
        # request opens the session with number 1 in one round trip.
        with pytest.raises(CommandError, match="cannot be encoded as CBOR"):
            await client.propose([["set", "k", object()]])
        session = client.client_id
        await client.set("first", "fine")
        assert (client.client_id, client._seq) == (session, 1)  # not renewed after a refusal


async def test_restarted_follower_catches_up(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    follower_id = next(i for i in cluster.running() if i != leader.id)
    await leader.propose_many([["set", f"a{i}", "1"] for i in range(50)])
    await cluster.stop(follower_id)
    await leader.propose_many([["set", f"b{i}", "2"] for i in range(300)])
    await cluster.start(follower_id)
    await wait_all_applied(cluster, leader.node.commit)  # type: ignore[union-attr]
    assert kv(cluster.servers[follower_id]) == kv(leader)
    assert len(kv(leader)) == 350


async def test_wiped_follower_is_rebuilt(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    follower_id = next(i for i in cluster.running() if i != leader.id)
    await leader.propose_many([["set", f"k{i}", "v"] for i in range(2000)])
    await cluster.stop(follower_id)
    cluster.wipe(follower_id)
    await cluster.start(follower_id)
    await wait_all_applied(cluster, leader.node.commit)  # type: ignore[union-attr]
    rebuilt = cluster.servers[follower_id]
    assert kv(rebuilt) == kv(leader)
    assert rebuilt.log_entries(1, 10**6) == leader.log_entries(1, 10**6)


async def test_whole_cluster_restart_keeps_every_acknowledged_entry(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    await leader.propose_many([["set", f"k{i}", str(i)] for i in range(300)])
    for node_id in cluster.running():
        await cluster.stop(node_id)
    for node_id in cluster.members:
        await cluster.start(node_id)
    leader = await leader_of(cluster)
    assert await leader.propose(["get", "k299"]) == "299"
    assert len(kv(leader)) == 300


async def test_garbage_on_the_port_closes_only_that_connection(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    host, port = leader.address.rsplit(":", 1)
    for junk in [b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"\x00\x00\x00\x01\x18"]:
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(junk)
        # The member hangs up on us (or already did) instead of crashing.
        await _wait_closed(stream)
        await stream.aclose()
    assert await leader.propose(["set", "still", "alive"]) is None


async def test_cancelling_the_nursery_stops_a_member_cleanly(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    server = RaftServer(1, {1: f"127.0.0.1:{port}"}, tmp_path, KVStateMachine(), timing=FAST)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            await server.wait_for_leader()
            assert await server.propose(["set", "x", "1"]) is None
            nursery.cancel_scope.cancel()
    # Restarting from the same directory finds the acknowledged entry.
    again = RaftServer(1, {1: f"127.0.0.1:{port}"}, tmp_path, KVStateMachine(), timing=FAST)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(again.serve)
            await again.wait_for_leader()
            assert await again.propose(["get", "x"]) == "1"
            nursery.cancel_scope.cancel()


async def test_client_reports_an_unreachable_cluster() -> None:
    port = free_ports(1)[0]
    async with raft_trio.connect([f"127.0.0.1:{port}"], timeout=0.5) as client:
        with pytest.raises(raft_trio.ClusterUnavailable, match="no leader answered"):
            await client.set("k", "v")


async def _open_client_connection(address: str) -> trio.SocketStream:
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await send_frames(stream, [cbor2.dumps(["hello-client"])])
    return stream


async def _wait_closed(stream: trio.SocketStream) -> None:
    with trio.fail_after(5):
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass


async def test_a_bad_client_request_closes_only_that_connection(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    for bad in [cbor2.dumps("garbage"), b"\xff\xfe", cbor2.dumps([1, 2, 3])]:
        stream = await _open_client_connection(leader.address)
        await send_frames(stream, [bad])
        await _wait_closed(stream)
        await stream.aclose()
    assert await leader.propose(["set", "still", "alive"]) is None


async def test_a_client_that_resets_with_requests_in_flight_harms_no_one(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    stream = await _open_client_connection(leader.address)
    requests = [cbor2.dumps([i, "propose", [["set", f"r{i}", "v"]]]) for i in range(200)]
    await send_frames(stream, requests)
    # Close with a reset (SO_LINGER 0) while answers are still being written.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    await trio.sleep(0.5)
    assert await leader.propose(["get", "r0"]) in ("v", None)
    assert leader.role is Role.LEADER


async def test_a_stranger_cannot_pose_as_a_peer(cluster: InProcessCluster) -> None:
    leader = await leader_of(cluster)
    term = leader.node.term  # type: ignore[union-attr]
    host, port = leader.address.rsplit(":", 1)
    # Any other id may be a member this one has not heard of yet (added by entries it
    # has not received), so only a hello in the member's own name is refused.
    for claimed in (leader.id,):
        stream = await trio.open_tcp_stream(host, int(port))
        await send_frames(stream, [cbor2.dumps(["hello-peer", "raft-trio", claimed])])
        await send_frames(stream, [encode_message(Heartbeat(term + 10, claimed, leader.id, 0))])
        await _wait_closed(stream)
        await stream.aclose()
    # A real member's id, but messages signed as someone else: refused too.
    other = next(i for i in cluster.members if i != leader.id)
    stream = await trio.open_tcp_stream(host, int(port))
    await send_frames(stream, [cbor2.dumps(["hello-peer", "raft-trio", other])])
    await send_frames(stream, [encode_message(Heartbeat(term + 10, 99, leader.id, 0))])
    await _wait_closed(stream)
    await stream.aclose()
    assert leader.role is Role.LEADER and leader.node.term == term  # type: ignore[union-attr]


def _isolate(cluster: InProcessCluster, member: int) -> None:
    """Cut `member` off: it sends nothing and nothing reaches it (until _heal)."""
    for node_id in cluster.running():
        server = cluster.servers[node_id]
        original = server._replication.route

        def route(msgs: Sequence[Any], original: Callable[[Any], None] = original,
                  silent: bool = node_id == member) -> None:
            if not silent:
                original([m for m in msgs if m.dst != member])

        server._replication.route = route  # type: ignore[method-assign,assignment]
        server._original_route = original  # type: ignore[attr-defined]


def _heal(cluster: InProcessCluster) -> None:
    for node_id in cluster.running():
        server = cluster.servers[node_id]
        server._replication.route = server._original_route  # type: ignore[attr-defined,method-assign]


async def test_a_deposed_leaders_cut_proposals_fail_instead_of_hanging(
    cluster: InProcessCluster,
) -> None:
    old = await leader_of(cluster)
    await old.propose(["set", "before", "1"])
    _isolate(cluster, old.id)
    outcome: list[BaseException | list[object]] = []

    async def propose_on_old_leader() -> None:
        try:
            outcome.append(await old.propose_many([["set", f"lost{i}", "x"] for i in range(50)]))
        except raft_trio.RaftError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(propose_on_old_leader)
        # The others elect a new leader, which writes only its no-op: nothing
        # ever refills the indexes of the 50 entries past it on the old leader.
        with trio.fail_after(10):
            while True:
                others = [cluster.servers[i] for i in cluster.running() if i != old.id]
                if any(s.role is Role.LEADER for s in others):
                    break
                await trio.sleep(0.02)
        _heal(cluster)
        with trio.fail_after(10):
            while not outcome:
                await trio.sleep(0.02)
    (result,) = outcome
    assert isinstance(result, raft_trio.LeadershipLost), result
    assert result.applied == []
    new = await leader_of(cluster)
    assert await new.propose(["get", "lost0"]) is None
    assert await new.propose(["get", "before"]) == "1"


async def test_waiting_callers_are_released_when_a_member_stops(tmp_path: Path) -> None:
    ports = free_ports(3)
    members = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    lonely = RaftServer(1, members, tmp_path, KVStateMachine(), timing=FAST)
    errors: list[BaseException] = []

    async def wait_for_a_leader_that_never_comes() -> None:
        try:
            await lonely.wait_for_leader()
        except raft_trio.RaftError as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as nursery:
                await nursery.start(lonely.serve)
                outer.start_soon(wait_for_a_leader_that_never_comes)
                await trio.sleep(0.2)
                nursery.cancel_scope.cancel()
    assert len(errors) == 1 and "shut down" in str(errors[0])
    with pytest.raises(RuntimeError, match="not running"):
        await lonely.propose(["set", "a", "b"])


async def test_a_peer_that_stops_reading_is_reconnected_and_blocks_no_one(
    tmp_path: Path,
) -> None:
    real = free_ports(2)
    connections: list[trio.SocketStream] = []

    async def never_reads(stream: trio.SocketStream) -> None:
        connections.append(stream)
        await trio.sleep_forever()

    timing = Timing(tick_interval=0.02, election_ticks=10, send_timeout=0.5)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        stuck_port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, never_reads, listeners)
        members = {1: f"127.0.0.1:{real[0]}", 2: f"127.0.0.1:{real[1]}",
                   3: f"127.0.0.1:{stuck_port}"}
        harness = InProcessCluster(nursery, members, tmp_path, timing, "warning")
        await harness.start(1)
        await harness.start(2)
        leader = await leader_of(harness)
        with trio.fail_after(30):
            # Far more than the socket buffers hold, so sends to member 3 block.
            for i in range(40):
                await leader.propose(["set", f"big{i}", "x" * 1_000_000])
            while len(connections) < 2:
                await trio.sleep(0.05)
        assert await leader.propose(["get", "big39"]) == "x" * 1_000_000
        nursery.cancel_scope.cancel()


async def test_a_value_too_large_for_a_frame_is_refused_by_the_client_at_once(
    cluster: InProcessCluster,
) -> None:
    addresses = list(cluster.members.values())
    # A short timeout: were the request sent and retried, this would end in
    # ClusterUnavailable instead.
    async with raft_trio.connect(addresses, timeout=3) as client:
        with pytest.raises(CommandError, match=r"exceeds the limit of 67108864 bytes per "
                                               r"request"):
            await client.set("big", "x" * (70 * 1024 * 1024))
        # Nothing was sent, so the session goes on from the same request number.
        await client.set("small", "fine")
        assert client._seq == 1
        assert await client.get("small") == "fine"


async def test_a_command_over_the_members_limit_is_refused_at_once(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    addresses = list(cluster.members.values())
    async with raft_trio.connect(addresses, timeout=3) as client:
        with pytest.raises(CommandError, match=r"a command of \d+ bytes exceeds this "
                                               r"cluster's limit of 1048576 bytes"):
            await client.set("big", "x" * (1024 * 1024))
        await client.set("just-under", "x" * (1024 * 1024 - 100))
    assert await leader.read(["get", "big"]) is None
    with pytest.raises(CommandError, match="exceeds this cluster's limit"):
        await leader.propose_many([["set", "a", "b"], ["set", "big", "x" * 2_000_000]])


def test_the_command_limit_fits_a_peer_frame() -> None:
    with pytest.raises(ValueError, match="max_command_bytes"):
        RaftServer(1, {1: "127.0.0.1:1"}, "unused", KVStateMachine(),
                   max_command_bytes=64 * 1024 * 1024)


async def test_an_oversized_frame_is_answered_with_the_reason_before_closing(
    cluster: InProcessCluster,
) -> None:
    leader = await leader_of(cluster)
    stream = await _open_client_connection(leader.address)
    # A length prefix over the limit, and the start of the payload.
    await stream.send_all(struct.pack(">I", 100 * 1024 * 1024) + b"\x83" * 1000)
    reply = b""
    with trio.fail_after(5):
        while len(reply) < 4 or len(reply) < 4 + struct.unpack(">I", reply[:4])[0]:
            chunk = await stream.receive_some()
            assert chunk, f"closed after {reply!r}"
            reply += chunk
    answer = cbor2.loads(reply[4:])
    assert answer[:3] == [None, "err", "bad_request"]
    assert "frame of 104857600 bytes exceeds the limit of 67108864" in answer[3]
    await _wait_closed(stream)
    await stream.aclose()
    assert await leader.propose(["set", "still", "alive"]) is None
