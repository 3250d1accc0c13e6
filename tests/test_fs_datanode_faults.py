"""Data nodes against bad clients: garbage, oversized frames, stalls, refused requests on a
connection that goes on, and a clean shutdown in the middle of everything."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from test_fs_datanode import Cluster, MiB, chunk_files, cluster_of, eventually, temp_files

from raft_trio.fs.checksum import checksum
from raft_trio.fs.datanode import DataNode, DataNodeUnavailable, get_chunk, put_chunk
from raft_trio.fs.datanode.protocol import DATA_FRAME_MAX, FrameStream
from raft_trio.fs.datanode.store import ChunkStore


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def control(value: Any) -> bytes:
    return frame(cbor2.dumps(value))


HELLO = control(["hello-datanode", "raft-trio"])


async def raw(node: DataNode) -> trio.SocketStream:
    host, port = node.address.rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def closed_by_peer(stream: trio.SocketStream, seconds: float = 5) -> bytes:
    """Everything the node still sends, once it closes the connection."""
    received = bytearray()
    with trio.fail_after(seconds):
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:  # reset: the node closed with bytes unread
                break
            if not data:
                break
            received += data
    await stream.aclose()
    return bytes(received)


async def busy_put(cluster: Cluster, chunk_id: int, done: trio.Event) -> None:
    """A slow put through the whole cluster, in pieces, for faults to happen around."""
    data = os.urandom(4 * MiB)
    cluster.meta.allocate(chunk_id, [1, 2, 3])

    async def slowly() -> Any:
        for start in range(0, len(data), 256 * 1024):
            await trio.sleep(0.02)
            yield data[start:start + 256 * 1024]

    assert await put_chunk(cluster.addresses([1, 2, 3]), chunk_id, slowly(), checksum(data),
                           length=len(data)) == [1, 2, 3]
    for address in cluster.addresses([1, 2, 3]):
        assert await get_chunk(address, chunk_id, checksum(data)) == data
    done.set()


GARBAGE = {
    "oversized frame": b"\xff\xff\xff\xff" + b"x" * 100,
    "not CBOR": frame(b"\xff\xfe\xfd"),
    "CBOR with trailing bytes": frame(cbor2.dumps(["hello-datanode", "raft-trio"]) + b"\x00"),
    "deep CBOR": frame(b"\x81" * 100 + b"\x00"),
    "a stranger's hello": control(["hello-peer", "raft-trio", 3]),
    "another cluster": control(["hello-datanode", "other"]),
    "request not a list": HELLO + control({"op": "get"}),
    "oversized data frame": HELLO + control(["put", 1, 4 * MiB, checksum(b""), []])
    + struct.pack(">I", DATA_FRAME_MAX + 1) + b"x" * 1000,
    "data frame past the length": HELLO + control(["put", 1, 10, checksum(b""), []])
    + frame(b"y" * 11),
    "empty data frame": HELLO + control(["put", 1, 10, checksum(b""), []]) + frame(b""),
    "cut mid-frame": HELLO + control(["put", 1, 10, checksum(b""), []]) + b"\x00\x00\x00\x0a"
    + b"abc",
    "put without length": HELLO + control(["put", 1, "ten", checksum(b""), []]),
}

REASONS = {
    "oversized frame": "frame of 4294967295 bytes where a request or answer of at most",
    "not CBOR": "malformed CBOR",
    "CBOR with trailing bytes": "1 bytes after the CBOR item",
    "deep CBOR": "malformed CBOR",
    "a stranger's hello": "bad hello ['hello-peer'",
    "another cluster": "bad hello ['hello-datanode', 'other']",
    "request not a list": "a request must be a list",
    "oversized data frame": "data frame of 1048577 bytes where at most 1048576 were due",
    "data frame past the length": "data frame of 11 bytes where at most 10 were due",
    "empty data frame": "an empty data frame",
    "cut mid-frame": "connection closed mid-frame",
    "put without length": "a put whose data cannot be skipped",
}


async def test_garbage_closes_that_connection_only(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    async with cluster_of(tmp_path) as cluster:
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy_put, cluster, 1, done)
            for name, garbage in GARBAGE.items():
                stream = await raw(cluster.nodes[1])
                await stream.send_all(garbage)
                if name in ("cut mid-frame",):
                    await stream.send_eof()
                reply = await closed_by_peer(stream)
                if name in ("another cluster", "a stranger's hello"):
                    assert b"bad_hello" in reply and b"refuses hello" in reply
                elif name in ("put without length",):
                    assert b"bad_request" in reply
                else:
                    assert reply == b"", name
                await eventually(lambda name=name: REASONS[name] in caplog.text)  # type: ignore[misc]
                assert "closing the connection from 127.0.0.1" in caplog.text
                assert not done.is_set(), "the put should still be going on"
        # The put amid all this went through, and nothing else was stored.
        assert [n.store.list() for n in cluster.nodes.values()] == [[1], [1], [1]]
        assert all(temp_files(n) == [] for n in cluster.nodes.values())
        assert not any(r.levelname == "ERROR" for r in caplog.records)


async def test_refused_requests_keep_the_connection_usable(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 2, max_chunk=2 * MiB) as cluster:
        data = os.urandom(3000)
        await cluster.put([1], 5, data)
        stream = await raw(cluster.nodes[1])
        cluster.meta.allocate(6, [1])
        big = os.urandom(2 * MiB + 1)
        await stream.send_all(
            HELLO
            + control(["frobnicate", 1])
            + control(["put", 6, 3, "crc32:nothex!!", []]) + frame(b"abc")
            + control(["put", 6, len(big), checksum(big), []])
            + frame(big[:MiB]) + frame(big[MiB:2 * MiB]) + frame(big[2 * MiB:])
            + control(["put", 7, 3, checksum(b"abc"), []]) + frame(b"ab") + frame(b"c")
            + control(["put", 6, 3, checksum(b"abc"), ["nohost"]]) + frame(b"abc")
            + control(["get", 5, -1, None])
            + control(["get", 5, 1000, 10])
            + control(["delete", "five"])
            + control(["put", 6, 3, checksum(b"abc"), []]) + frame(b"abc"))
        io = FrameStream(stream, 5)
        got: list[Any] = [await io.read_control() for _ in range(7)]
        assert await io.read_data_header(10) == 10
        part = bytearray(10)
        await io.read_data(memoryview(part))
        got += [await io.read_control() for _ in range(2)]
        await stream.aclose()
        assert [a[:2] for a in got] == [
            ["err", "bad_request"], ["err", "bad_request"], ["err", "too_large"],
            ["err", "not_allocated"], ["err", "bad_request"], ["err", "bad_request"],
            ["ok", 10], ["err", "bad_request"], ["ok", [1]]]
        assert got[0][2] == "unknown op 'frobnicate'"
        assert got[2][2] == (f"a chunk of {2 * MiB + 1} bytes exceeds data node 1's limit "
                             f"of {2 * MiB}")
        assert got[6][2:] == [checksum(data[1000:1010]), checksum(data)]
        assert part == data[1000:1010]
        assert cluster.nodes[1].store.list() == [5, 6]
        assert await get_chunk(cluster.nodes[1].address, 6, checksum(b"abc")) == b"abc"


@pytest.mark.parametrize("where", ["mid-frame", "between frames"])
async def test_a_stalled_writer_holds_bounded_memory_and_harms_no_other(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str) -> None:
    async with cluster_of(tmp_path, 2, timeout=1.0) as cluster:
        first = cluster.nodes[1]
        cluster.meta.allocate(1, [1, 2])
        data = os.urandom(8 * MiB)
        stalled = await raw(first)
        await stalled.send_all(HELLO + control(["put", 1, len(data), checksum(data),
                                                [cluster.nodes[2].address]])
                               + frame(data[:MiB]) + frame(data[MiB:2 * MiB])
                               + (frame(data[2 * MiB:2 * MiB + 1000]) if where == "between frames"
                                  else struct.pack(">I", MiB) + data[2 * MiB:2 * MiB + 1000]))
        await eventually(lambda: bool(temp_files(cluster.nodes[2])))
        # While it stalls, the node holds at most its put's buffers, and serves others.
        assert 0 < first.memory.used <= 4 * MiB
        other = os.urandom(5 * MiB)
        assert await cluster.put([1, 2], 2, other) == [1, 2]
        assert await get_chunk(first.address, 2, checksum(other)) == other
        assert temp_files(first)
        # Then it is cut off, and what it sent is gone everywhere.
        assert await closed_by_peer(stalled) == b""
        assert "stalled for more than 1 s" in caplog.text
        await eventually(lambda: not temp_files(first) and not temp_files(cluster.nodes[2]))
        assert first.memory.used == 0
        assert [n.store.list() for n in cluster.nodes.values()] == [[2], [2]]


async def test_a_stalled_reader_holds_one_chunk_and_is_cut_off(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with cluster_of(tmp_path, 1, timeout=1.0) as cluster:
        node = cluster.nodes[1]
        data = os.urandom(32 * MiB)
        await cluster.put([1], 1, data)
        stalled = await raw(node)
        await stalled.send_all(HELLO + control(["get", 1, 0, None]))
        await eventually(lambda: node.memory.used > 0)
        assert node.memory.used <= 32 * MiB + 32
        small = b"s" * 100
        await cluster.put([1], 2, small)
        assert await get_chunk(node.address, 2, checksum(small)) == small
        with trio.fail_after(5):
            while "stalled for more than 1 s" not in caplog.text:
                await trio.sleep(0.05)
        assert node.memory.used == 0
        await stalled.aclose()
        assert await get_chunk(node.address, 1, checksum(data)) == data


async def test_a_stalled_downstream_fails_the_put_naming_it(tmp_path: Path) -> None:
    """A 'node' that accepts the connection and never reads: the put fails with a timeout
    naming it, and the real node removes its copy."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    silent = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    accepted: list[trio.SocketStream] = []

    async with cluster_of(tmp_path, 1, timeout=1.0) as cluster:
        async with trio.open_nursery() as nursery:

            async def hold(stream: trio.SocketStream) -> None:
                accepted.append(stream)
                await trio.sleep_forever()

            nursery.start_soon(trio.serve_listeners, hold, listeners)
            data = os.urandom(32 * MiB)
            cluster.meta.allocate(1, [1])
            with pytest.raises(DataNodeUnavailable,
                               match=f"data node at {silent} stalled for 1 s") as info:
                await put_chunk([cluster.nodes[1].address, silent], 1, data, checksum(data))
            assert info.value.code == "timeout" and info.value.address == silent
            await eventually(lambda: chunk_files(cluster.nodes[1]) == [])
            nursery.cancel_scope.cancel()
    assert accepted


async def test_a_node_shuts_down_cleanly_mid_put(tmp_path: Path) -> None:
    data = os.urandom(4 * MiB)
    async with cluster_of(tmp_path, 2) as cluster:
        cluster.meta.allocate(1, [1, 2])
        started = trio.Event()

        async def forever() -> Any:
            yield data[:MiB]
            started.set()
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            async def put() -> None:
                with pytest.raises(DataNodeUnavailable):
                    await put_chunk(cluster.addresses([1, 2]), 1, forever(), checksum(data),
                                    length=len(data))

            nursery.start_soon(put)
            await started.wait()
            await eventually(lambda: bool(temp_files(cluster.nodes[2])))
            with trio.fail_after(2):
                await cluster.kill(1)
                await cluster.kill(2)
            nursery.cancel_scope.cancel()
        for node in cluster.nodes.values():
            assert chunk_files(node) == []
            # The directory is free again.
            store = ChunkStore(node.store.data_dir, node.node_id)
            await store.open()
            store.close()
