"""Data nodes over loopback: the pipelined put, gets from every replica, allocation checks,
nodes killed mid-put and mid-get, heartbeats. Faults of clients: test_fs_datanode_faults.py."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from raft_trio.fs.checksum import checksum
from raft_trio.fs.datanode import (
    ChunkCorrupt,
    ChunkNotFound,
    DataNode,
    DataNodeError,
    DataNodeUnavailable,
    HeartbeatStats,
    delete_chunk,
    get_chunk,
    get_chunk_into,
    put_chunk,
)
from raft_trio.fs.datanode import client as client_module
from raft_trio.fs.datanode import protocol as protocol_module
from raft_trio.fs.datanode.protocol import DATA_FRAME_MAX, FrameStream
from raft_trio.fs.datanode.store import HEADER_SIZE

MiB = 1 << 20


class Metadata:
    """Stands in for the metadata service: which chunk is allocated to which node, and the
    leader's side of the heartbeats."""

    def __init__(self) -> None:
        self.allocated: dict[int, set[int]] = {}
        self.asked: list[tuple[int, int]] = []
        self.heartbeats: list[HeartbeatStats] = []
        self.replies: dict[int, Any] = {}
        self.failing: Exception | None = None
        self.delays: dict[int, float] = {}

    def allocate(self, chunk_id: int, node_ids: list[int]) -> None:
        self.allocated[chunk_id] = set(node_ids)

    async def is_allocated(self, chunk_id: int, node_id: int) -> bool:
        await trio.sleep(self.delays.get(node_id, 0.001))
        if self.failing is not None:
            raise self.failing
        self.asked.append((chunk_id, node_id))
        return node_id in self.allocated.get(chunk_id, ())

    async def heartbeat(self, stats: HeartbeatStats) -> Any:
        await trio.lowlevel.checkpoint()
        if self.failing is not None:
            raise self.failing
        self.heartbeats.append(stats)
        return self.replies.pop(stats.node_id, None)

    def last_heartbeat(self, node_id: int) -> HeartbeatStats | None:
        return next((s for s in reversed(self.heartbeats) if s.node_id == node_id), None)


class Cluster:
    """Data nodes in one process, each in its own cancel scope so a test can kill it."""

    def __init__(self, nursery: trio.Nursery, tmp_path: Path, meta: Metadata,
                 **options: Any) -> None:
        self.nursery = nursery
        self.tmp_path = tmp_path
        self.meta = meta
        self.options = {"heartbeat_interval": 3600.0, **options}
        self.nodes: dict[int, DataNode] = {}
        self._scopes: dict[int, trio.CancelScope] = {}
        self._stopped: dict[int, trio.Event] = {}

    async def start(self, node_id: int, **options: Any) -> DataNode:
        node = DataNode(node_id, "127.0.0.1:0", self.tmp_path / f"dn{node_id}",
                        is_allocated=self.meta.is_allocated, heartbeat=self.meta.heartbeat,
                        **{**self.options, **options})
        await self.nursery.start(self._run, node)
        self.nodes[node_id] = node
        return node

    async def _run(self, node: DataNode, task_status: trio.TaskStatus[None]) -> None:
        stopped = self._stopped[node.node_id] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scopes[node.node_id] = scope
                await node.serve(task_status=task_status)
        finally:
            stopped.set()

    async def kill(self, node_id: int) -> None:
        self._scopes[node_id].cancel()
        with trio.fail_after(5):
            await self._stopped[node_id].wait()

    def addresses(self, node_ids: list[int]) -> list[str]:
        return [self.nodes[i].address for i in node_ids]

    async def put(self, node_ids: list[int], chunk_id: int, data: bytes,
                  **options: Any) -> list[int]:
        self.meta.allocate(chunk_id, node_ids)
        return await put_chunk(self.addresses(node_ids), chunk_id, data, checksum(data),
                               **options)


@asynccontextmanager
async def cluster_of(tmp_path: Path, count: int = 3, **options: Any
                     ) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, tmp_path, Metadata(), **options)
        for node_id in range(1, count + 1):
            await cluster.start(node_id)
        yield cluster
        nursery.cancel_scope.cancel()


def chunk_files(node: DataNode) -> list[str]:
    """Every chunk file, finished or not, under the node's data dir."""
    root = node.store.data_dir
    return sorted(str(p.relative_to(root)) for sub in ("chunks", "corrupt")
                  for p in (root / sub).rglob("*") if p.is_file())


async def eventually(condition: Callable[[], bool], seconds: float = 5) -> None:
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.01)


async def no_chunk_files(cluster: Cluster) -> None:
    """Every node's chunk files gone (a node downstream of a failure cleans up once the
    connection from upstream closes, which may be after the client heard)."""
    await eventually(lambda: all(not chunk_files(n) for n in cluster.nodes.values()))


def corrupt_on_disk(node: DataNode, chunk_id: int, at: int = 0) -> None:
    path = node.store.path_of(chunk_id)
    with open(path, "r+b") as file:
        file.seek(HEADER_SIZE + at)
        byte = file.read(1)
        file.seek(HEADER_SIZE + at)
        file.write(bytes([byte[0] ^ 0xFF]))


# ------------------------------------------------------------------- put and get

SIZES = {"empty": 0, "one byte": 1, "small": 1000, "one frame": MiB, "4 MiB": 4 * MiB,
         "odd": 4 * MiB + 12_345}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_a_pipeline_put_lands_on_every_replica_byte_for_byte(tmp_path: Path,
                                                                   size: int) -> None:
    data = os.urandom(size)
    async with cluster_of(tmp_path) as cluster:
        assert await cluster.put([1, 2, 3], 1000 + size, data) == [1, 2, 3]
        for node in cluster.nodes.values():
            assert await get_chunk(node.address, 1000 + size, checksum(data)) == data
            on_disk = node.store.path_of(1000 + size).read_bytes()
            assert on_disk[HEADER_SIZE:] == data
            assert node.store.list() == [1000 + size] and node.store.used == size
            if size > 3:
                part = await get_chunk(node.address, 1000 + size, checksum(data), 1, size - 3)
                assert part == data[1:size - 2]
            into = bytearray(size + 10)
            assert await get_chunk_into(node.address, 1000 + size, checksum(data), into) == size
            assert into[:size] == data
        assert sorted(cluster.meta.asked) == [(1000 + size, i) for i in (1, 2, 3)]


async def test_pipelines_of_one_and_two_and_in_any_order(tmp_path: Path) -> None:
    async with cluster_of(tmp_path) as cluster:
        data = os.urandom(2 * MiB + 1)
        assert await cluster.put([2], 1, data) == [2]
        assert await cluster.put([3, 1], 2, data) == [3, 1]
        assert await cluster.put([3, 2, 1], 3, data) == [3, 2, 1]
        assert [n.store.list() for n in cluster.nodes.values()] == [[2, 3], [1, 3], [2, 3]]


async def test_a_put_from_an_async_iterable_of_odd_pieces(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 777)
    cuts = [0, 1, 100_000, 100_000, MiB + 100_001, 3 * MiB, len(data)]

    async def pieces() -> AsyncIterator[bytes | memoryview]:
        for start, end in itertools.pairwise(cuts):
            await trio.sleep(0)
            yield memoryview(data)[start:end]

    async with cluster_of(tmp_path) as cluster:
        cluster.meta.allocate(9, [1, 2, 3])
        ids = await put_chunk(cluster.addresses([1, 2, 3]), 9, pieces(), checksum(data),
                              length=len(data))
        assert ids == [1, 2, 3]
        for address in cluster.addresses([3, 1, 2]):
            assert await get_chunk(address, 9, checksum(data)) == data
        cluster.meta.allocate(10, [1, 2])
        with pytest.raises(ValueError, match="ended after 3146505 of its 3146506 bytes"):
            await put_chunk(cluster.addresses([1, 2]), 10, pieces(), checksum(data),
                            length=len(data) + 1)
        with pytest.raises(ValueError, match="runs past its length of 100"):
            await put_chunk(cluster.addresses([1, 2]), 10, pieces(), checksum(data),
                            length=100)
        with pytest.raises(ValueError, match="needs the length"):
            await put_chunk(cluster.addresses([1]), 10, pieces(), checksum(data))
        await no_chunk_files_but(cluster, 9)


async def no_chunk_files_but(cluster: Cluster, chunk_id: int) -> None:
    name = f"{chunk_id:016x}.chunk"
    await eventually(lambda: all(
        [f.rsplit("/", 1)[-1] for f in chunk_files(n)] == [name]
        for n in cluster.nodes.values()))


async def test_a_chunk_put_again_is_replaced_and_a_delete_removes_it(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 2) as cluster:
        await cluster.put([1, 2], 5, b"first")
        await cluster.put([1, 2], 5, b"second")
        assert await get_chunk(cluster.nodes[2].address, 5, checksum(b"second")) == b"second"
        assert await delete_chunk(cluster.nodes[2].address, 5)
        assert not await delete_chunk(cluster.nodes[2].address, 5)
        with pytest.raises(ChunkNotFound, match="data node 2 has no chunk 5") as info:
            await get_chunk(cluster.nodes[2].address, 5, checksum(b"second"))
        assert info.value.address == cluster.nodes[2].address
        assert chunk_files(cluster.nodes[2]) == []


async def test_get_checks_the_checksum_it_was_given(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 1) as cluster:
        await cluster.put([1], 5, b"hello")
        with pytest.raises(ChunkCorrupt, match=r"holds chunk 5 with checksum crc32:3610a686, "
                                               r"not crc32:00000000"):
            await get_chunk(cluster.nodes[1].address, 5, "crc32:00000000")


async def test_a_put_with_a_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    data = os.urandom(MiB + 5)
    async with cluster_of(tmp_path) as cluster:
        cluster.meta.allocate(3, [1, 2, 3])
        with pytest.raises(ChunkCorrupt, match=r"the bytes received have checksum "
                                               rf"{checksum(data)}, the put said") as info:
            await put_chunk(cluster.addresses([1, 2, 3]), 3, data, checksum(data[1:]))
        assert info.value.code == "checksum_mismatch"
        await no_chunk_files(cluster)
        # The nodes go on.
        assert await cluster.put([1, 2, 3], 4, data) == [1, 2, 3]


# ------------------------------------------------------------------ allocation


@pytest.mark.parametrize("refuser", [1, 2, 3])
async def test_a_put_not_allocated_to_a_node_is_stored_nowhere(tmp_path: Path,
                                                               refuser: int) -> None:
    data = os.urandom(4 * MiB)
    async with cluster_of(tmp_path) as cluster:
        cluster.meta.allocate(7, [i for i in (1, 2, 3) if i != refuser])
        with pytest.raises(DataNodeError, match=f"chunk 7 is not allocated to data node "
                                                f"{refuser}") as info:
            await put_chunk(cluster.addresses([1, 2, 3]), 7, data, checksum(data))
        assert info.value.code == "not_allocated"
        assert info.value.address == cluster.nodes[refuser].address
        await no_chunk_files(cluster)
        assert all(len(n.store) == 0 and n.store.used == 0 for n in cluster.nodes.values())
        assert await cluster.put([1, 2, 3], 8, data) == [1, 2, 3]


async def test_copies_committed_upstream_are_removed_when_the_last_node_refuses(
        tmp_path: Path) -> None:
    """The last node answers long after the others stored their copies: they delete them."""
    data = os.urandom(2 * MiB)
    async with cluster_of(tmp_path) as cluster:
        cluster.meta.allocate(7, [1, 2])
        cluster.meta.delays[3] = 0.5
        seen_stored = trio.Event()

        async def watch() -> None:
            await eventually(lambda: 7 in cluster.nodes[1].store and 7 in cluster.nodes[2].store)
            seen_stored.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with pytest.raises(DataNodeError, match="chunk 7 is not allocated to data node 3"):
                await put_chunk(cluster.addresses([1, 2, 3]), 7, data, checksum(data))
        assert seen_stored.is_set()
        await no_chunk_files(cluster)
        assert all(len(n.store) == 0 and n.store.used == 0 for n in cluster.nodes.values())


async def test_bytes_damaged_on_the_way_are_refused(tmp_path: Path) -> None:
    """A node (here a fake) whose bytes do not match what it announced."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    async def liar(stream: trio.SocketStream) -> None:
        io = FrameStream(stream, 5)
        await io.read_control()
        await io.read_control()
        await io.send_control(["ok", 5, checksum(b"hello"), checksum(b"hello")])
        await io.send_data(memoryview(b"jello"))
        await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, liar, listeners)
        with pytest.raises(ChunkCorrupt, match=f"chunk 1 from data node at {address}: the "
                                               f"bytes received have checksum "
                                               f"{checksum(b'jello')}, the node sent "
                                               f"{checksum(b'hello')}"):
            await get_chunk(address, 1, checksum(b"hello"))
        with pytest.raises(ChunkCorrupt):
            await get_chunk(address, 1, checksum(b"hello"), 0, 5)
        nursery.cancel_scope.cancel()


async def test_a_put_fails_while_the_allocation_cannot_be_checked(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 2) as cluster:
        cluster.meta.allocate(7, [1, 2])
        cluster.meta.failing = ConnectionError("no leader")
        with pytest.raises(DataNodeError, match="could not check the allocation of chunk 7: "
                                                "no leader") as info:
            await put_chunk(cluster.addresses([1, 2]), 7, b"abc", checksum(b"abc"))
        assert info.value.code == "unavailable"
        await no_chunk_files(cluster)
        cluster.meta.failing = None
        assert await put_chunk(cluster.addresses([1, 2]), 7, b"abc", checksum(b"abc")) == [1, 2]


async def test_positive_allocation_answers_are_cached(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 2) as cluster:
        await cluster.put([1, 2], 7, b"abc")
        await cluster.put([1, 2], 7, b"abc")
        assert sorted(cluster.meta.asked) == [(7, 1), (7, 2)]
        with pytest.raises(DataNodeError):
            await put_chunk(cluster.addresses([1]), 8, b"abc", checksum(b"abc"))
        with pytest.raises(DataNodeError):
            await put_chunk(cluster.addresses([1]), 8, b"abc", checksum(b"abc"))
        assert cluster.meta.asked.count((8, 1)) == 2


# ------------------------------------------------------------------ node failures


class Gate:
    """Data for a put that stops after `first` bytes until `opened`."""

    def __init__(self, data: bytes, first: int) -> None:
        self.data = data
        self.first = first
        self.reached = trio.Event()
        self.opened = trio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[:self.first]
        self.reached.set()
        await self.opened.wait()
        for start in range(self.first, len(self.data), MiB):
            yield self.data[start:start + MiB]


def temp_files(node: DataNode) -> list[str]:
    return [f for f in chunk_files(node) if f.endswith(".tmp")]


@pytest.mark.parametrize("victim", [2, 3])
async def test_a_node_killed_mid_put_fails_the_put_and_leaves_no_partial_file(
        tmp_path: Path, victim: int) -> None:
    data = os.urandom(4 * MiB)
    async with cluster_of(tmp_path) as cluster:
        cluster.meta.allocate(21, [1, 2, 3])
        addresses = cluster.addresses([1, 2, 3])
        victim_address = addresses[victim - 1]
        gate = Gate(data, MiB)

        async def kill_when_it_holds_part_of_the_chunk() -> None:
            await gate.reached.wait()
            await eventually(lambda: bool(temp_files(cluster.nodes[3])))
            await cluster.kill(victim)
            gate.opened.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_when_it_holds_part_of_the_chunk)
            with pytest.raises(DataNodeUnavailable, match=f"data node at {victim_address}") \
                    as info:
                await put_chunk(addresses, 21, gate, checksum(data), length=len(data))
        assert info.value.address == victim_address
        await no_chunk_files(cluster)
        # The victim comes back on its data dir (at another port); the next put works.
        node = await cluster.start(victim)
        assert node.store.list() == [] and temp_files(node) == []
        assert await cluster.put([1, 2, 3], 22, data) == [1, 2, 3]
        for address in cluster.addresses([1, 2, 3]):
            assert await get_chunk(address, 22, checksum(data)) == data


async def test_a_put_to_a_dead_node_names_it(tmp_path: Path) -> None:
    async with cluster_of(tmp_path) as cluster:
        dead = cluster.nodes[3].address
        await cluster.kill(3)
        cluster.meta.allocate(1, [1, 2, 3])
        with pytest.raises(DataNodeUnavailable, match=f"data node at {dead} is unavailable: "
                                                      "connection refused") as info:
            await put_chunk([*cluster.addresses([1, 2]), dead], 1, b"x" * 5000,
                            checksum(b"x" * 5000))
        assert info.value.address == dead
        await no_chunk_files(cluster)
        dead = cluster.nodes[1].address
        await cluster.kill(1)
        with pytest.raises(DataNodeUnavailable, match=f"data node at {dead} is unavailable"):
            await put_chunk([dead], 1, b"x", checksum(b"x"), timeout=5)


class PausingStream(FrameStream):
    """A client's stream that stops after the first data it receives, until told."""

    reached = trio.Event()
    resume = trio.Event()

    async def read_data(self, into: memoryview) -> None:
        await super().read_data(into)
        if not PausingStream.reached.is_set():
            PausingStream.reached.set()
            await PausingStream.resume.wait()


async def test_a_node_killed_mid_get_fails_the_get_and_another_replica_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(32 * MiB)  # far more than the sockets buffer
    real_open = protocol_module.open_frame_stream
    PausingStream.reached, PausingStream.resume = trio.Event(), trio.Event()

    async def open_pausing(address: str, cluster_name: str, timeout: float) -> FrameStream:
        io = await real_open(address, cluster_name, timeout)
        io.__class__ = PausingStream
        return io

    async with cluster_of(tmp_path, 2) as cluster:
        await cluster.put([1, 2], 4, data)
        monkeypatch.setattr(client_module, "open_frame_stream", open_pausing)

        async def kill_mid_get() -> None:
            await PausingStream.reached.wait()
            await cluster.kill(1)
            PausingStream.resume.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_mid_get)
            with pytest.raises(DataNodeUnavailable, match=r"data node at 127.0.0.1:[0-9]+ "
                                                          "failed during the get") as info:
                await get_chunk(cluster.nodes[1].address, 4, checksum(data))
        assert info.value.address == cluster.nodes[1].address
        assert await get_chunk(cluster.nodes[2].address, 4, checksum(data)) == data


async def test_a_corrupt_replica_is_refused_reported_and_another_serves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(DATA_FRAME_MAX + 3)
    async with cluster_of(tmp_path, 2) as cluster:
        await cluster.put([1, 2], 12, data)
        corrupt_on_disk(cluster.nodes[1], 12, at=DATA_FRAME_MAX)
        with pytest.raises(ChunkCorrupt, match=r"data node 1: chunk 12 .* is corrupt") as info:
            await get_chunk(cluster.nodes[1].address, 12, checksum(data))
        assert info.value.code == "corrupt"
        assert "chunk 12" in caplog.text and "reported to the leader" in caplog.text
        assert cluster.nodes[1].unreported == {12}
        # Never served again; the other replica is fine.
        with pytest.raises(ChunkNotFound):
            await get_chunk(cluster.nodes[1].address, 12, checksum(data))
        assert await get_chunk(cluster.nodes[2].address, 12, checksum(data)) == data


# -------------------------------------------------------------------- heartbeats


async def test_heartbeats_report_the_node_and_follow_the_reply(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "raft_trio.fs.datanode")
    async with cluster_of(tmp_path, 2, heartbeat_interval=0.05) as cluster:
        meta = cluster.meta
        node = cluster.nodes[1]
        await eventually(lambda: meta.last_heartbeat(1) is not None)
        first = meta.last_heartbeat(1)
        assert first is not None
        assert (first.node_id, first.address, first.used, first.chunk_count, first.corrupt) \
            == (1, node.address, 0, 0, ())
        stat = os.statvfs(node.store.data_dir)
        assert abs(first.capacity - stat.f_bavail * stat.f_frsize) < 256 * MiB
        assert first.as_args() == [1, node.address, first.capacity, 0, 0, []]

        await cluster.put([1, 2], 1, b"a" * 1000)
        await cluster.put([1, 2], 2, b"b" * (3 * MiB))
        await cluster.put([1], 3, b"c" * 10)

        def reported(node_id: int, used: int, count: int,
                     corrupt: tuple[int, ...] = ()) -> bool:
            last = meta.last_heartbeat(node_id)
            return last is not None and (last.used, last.chunk_count, last.corrupt) == (
                used, count, corrupt)

        await eventually(lambda: reported(1, 3 * MiB + 1010, 3))
        await eventually(lambda: reported(2, 3 * MiB + 1000, 2))

        # A corrupt chunk is reported once the leader hears of it, then no more.
        corrupt_on_disk(node, 1)
        with pytest.raises(ChunkCorrupt):
            await get_chunk(node.address, 1, checksum(b"a" * 1000))
        await eventually(lambda: reported(1, 3 * MiB + 10, 2, (1,)))
        await eventually(lambda: reported(1, 3 * MiB + 10, 2))

        # The reply's delete list is honoured (the corrupt copy too).
        meta.replies[1] = {"delete": [2, 1, 999, "junk"]}
        await eventually(lambda: reported(1, 10, 1))
        assert node.store.list() == [3] and chunk_files(node) == [
            "chunks/03/0000000000000003.chunk"]
        assert "deleted 2 of 4 chunk(s)" in caplog.text
        assert cluster.nodes[2].store.list() == [1, 2]


async def test_failed_heartbeats_are_logged_and_retried_and_lose_no_report(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with cluster_of(tmp_path, 1, heartbeat_interval=0.02) as cluster:
        meta = cluster.meta
        node = cluster.nodes[1]
        await cluster.put([1], 1, b"x" * 100)
        meta.failing = ConnectionError("leader unknown")
        await trio.sleep(0.1)
        corrupt_on_disk(node, 1)
        with pytest.raises(ChunkCorrupt):
            await get_chunk(node.address, 1, checksum(b"x" * 100))
        sent = node.heartbeats_sent
        await trio.sleep(0.1)
        assert node.heartbeats_sent == sent
        assert "heartbeat failed, next try in 0.02 s: leader unknown" in caplog.text
        assert node.unreported == {1}
        meta.failing = None
        await eventually(lambda: node.unreported == set())
        assert any(s.corrupt == (1,) for s in meta.heartbeats)

        # A reply that makes no sense is logged, not fatal.
        meta.replies[1] = {"delete": "everything"}
        await eventually(lambda: "bad delete list" in caplog.text)
        count = len(meta.heartbeats)
        await eventually(lambda: len(meta.heartbeats) > count)


async def test_a_restarted_node_reports_chunks_and_corrupt_ones_again(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 1, heartbeat_interval=0.02) as cluster:
        await cluster.put([1], 1, b"x" * 100)
        await cluster.put([1], 2, b"y" * 100)
        corrupt_on_disk(cluster.nodes[1], 1)
        with pytest.raises(ChunkCorrupt):
            await get_chunk(cluster.nodes[1].address, 1, checksum(b"x" * 100))
        await eventually(lambda: not cluster.nodes[1].unreported)
        await cluster.kill(1)
        cluster.meta.heartbeats.clear()
        await cluster.start(1)
        await eventually(lambda: cluster.meta.last_heartbeat(1) is not None)
        first = cluster.meta.heartbeats[0]
        assert (first.chunk_count, first.used, first.corrupt) == (1, 100, (1,))


async def test_logging_is_quiet_for_a_normal_run(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "raft_trio.fs.datanode")
    async with cluster_of(tmp_path, 2) as cluster:
        await cluster.put([1, 2], 1, b"x" * 100)
        await get_chunk(cluster.nodes[2].address, 1, checksum(b"x" * 100))
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO"]
