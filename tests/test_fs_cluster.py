"""The file system end to end over loopback: metadata members, data nodes and the client."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from raft_trio.fs.client import FileSystem
from stress.fscluster import FSCluster, fs_cluster

KiB = 1024
CHUNK = 64 * KiB


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK, CHUNK + 1, 5 * CHUNK - 7])
async def test_put_and_get_of_every_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    async with fs_cluster(tmp_path) as cluster, cluster.client(chunk_size=CHUNK) as fs:
        stat = await fs.write_file("/f", data)
        assert stat["size"] == size and stat["type"] == "file"
        assert stat["replicas"] == 3
        assert await fs.read_file("/f") == data
        chunks = await fs.chunks("/f")
        assert len(chunks["chunks"]) == -(-size // CHUNK)
        for *_, replicas in chunks["chunks"]:
            assert len(set(replicas)) == 3  # three distinct data nodes
        # Every replica holds every chunk, byte for byte.
        await _every_replica_reads_back(cluster, fs, "/f", data)


async def _every_replica_reads_back(cluster: FSCluster, fs: FileSystem, path: str,
                                    data: bytes) -> None:
    from raft_trio.fs.datanode.client import get_chunk

    info = await fs.chunks(path)
    nodes = {n["id"]: n["address"] for n in await fs.datanodes()}
    offset = 0
    for chunk_id, length, digest, replicas in info["chunks"]:
        for node_id in replicas:
            assert await get_chunk(nodes[node_id], chunk_id, digest) == \
                data[offset:offset + length]
        offset += length
    assert offset == len(data)


async def test_the_namespace_through_the_client(tmp_path: Path) -> None:
    async with fs_cluster(tmp_path, datanodes=1) as _cluster, \
            _cluster.client(chunk_size=CHUNK) as fs:
        await fs.mkdir("/a/b/c", parents=True)
        await fs.write_file("/a/b/c/x", b"hello", replication=1)
        assert await fs.listdir("/a/b/c") == ["x"]
        with pytest.raises(FileExistsError):
            await fs.mkdir("/a/b")
        with pytest.raises(FileNotFoundError):
            await fs.stat("/nope")
        with pytest.raises(FileExistsError):
            await fs.write_file("/a/b/c/x", b"again", exclusive=True, replication=1)
        with pytest.raises(OSError) as not_empty:
            await fs.delete("/a")
        assert not_empty.value.errno == errno.ENOTEMPTY
        with pytest.raises(IsADirectoryError):
            await fs.read_file("/a")
        with pytest.raises(NotADirectoryError):
            await fs.mkdir("/a/b/c/x/y")
        await fs.rename("/a/b/c/x", "/a/y")
        assert await fs.read_file("/a/y") == b"hello"
        assert (await fs.chmod("/a/y", 0o600))["mode"] == 0o600
        assert (await fs.du("/a"))["files"] == 1
        await fs.delete("/a", recursive=True)
        assert await fs.listdir("/") == []


async def test_an_overwrite_is_all_or_nothing_and_fewer_nodes_mean_fewer_replicas(
    tmp_path: Path,
) -> None:
    async with fs_cluster(tmp_path, datanodes=2) as cluster, \
            cluster.client(chunk_size=CHUNK) as fs:
        old, new = os.urandom(3 * CHUNK), os.urandom(2 * CHUNK + 5)
        stat = await fs.write_file("/f", old)
        assert stat["replicas"] == 2  # three asked, two live
        failing = _FailAfter(new, fail_after=CHUNK + 10)
        with pytest.raises(RuntimeError, match="the writer died"):
            await fs.write_file("/f", failing)
        assert await fs.read_file("/f") == old  # the old content, whole
        await fs.write_file("/f", new)
        assert await fs.read_file("/f") == new
        with pytest.raises(RuntimeError):
            await fs.write_file("/g", _FailAfter(new, fail_after=10))
        assert not await fs.exists("/g")  # nothing partial is ever visible


class _FailAfter:
    """An async iterable of `data` that raises after `fail_after` bytes."""

    def __init__(self, data: bytes, fail_after: int):
        self.data = data
        self.fail_after = fail_after

    def __aiter__(self) -> _FailAfter:
        self.sent = 0
        return self

    async def __anext__(self) -> bytes:
        await trio.sleep(0.01)
        if self.sent >= self.fail_after:
            raise RuntimeError("the writer died")
        piece = self.data[self.sent:self.sent + 1000]
        self.sent += len(piece)
        if not piece:
            raise StopAsyncIteration
        return piece


async def test_a_data_node_killed_during_a_write_and_during_a_read(tmp_path: Path) -> None:
    async with fs_cluster(tmp_path, datanodes=4) as cluster, \
            cluster.client(chunk_size=CHUNK) as fs:
        data = os.urandom(8 * CHUNK)
        async with trio.open_nursery() as nursery:
            async def kill_soon() -> None:
                await trio.sleep(0.05)
                await cluster.datanodes.stop(1)

            nursery.start_soon(kill_soon)
            await fs.write_file("/big", _Trickle(data))
        assert 1 not in cluster.datanodes.scopes
        assert await fs.read_file("/big") == data
        # The chunks written after the kill went to the three nodes left.
        info = await fs.chunks("/big")
        assert 1 not in info["chunks"][-1][3]
        # Kill one holder of the first chunk: reads fall back to another replica.
        info = await fs.chunks("/big")
        holder = info["chunks"][0][3][0]
        if holder in cluster.datanodes.scopes:
            await cluster.datanodes.stop(holder)
        assert await fs.read_file("/big") == data


class _Trickle:
    def __init__(self, data: bytes):
        self.data = data

    def __aiter__(self) -> _Trickle:
        self.at = 0
        return self

    async def __anext__(self) -> bytes:
        if self.at >= len(self.data):
            raise StopAsyncIteration
        await trio.sleep(0.005)
        piece = self.data[self.at:self.at + 8 * KiB]
        self.at += len(piece)
        return piece


async def test_a_corrupted_chunk_is_read_from_another_replica(tmp_path: Path) -> None:
    async with fs_cluster(tmp_path) as cluster, cluster.client(chunk_size=CHUNK) as fs:
        data = os.urandom(2 * CHUNK)
        await fs.write_file("/f", data)
        info = await fs.chunks("/f")
        chunk_id, _, _, replicas = info["chunks"][0]
        victim = cluster.datanodes.nodes[replicas[0]]
        path = next(p for p in victim.store.data_dir.rglob(f"{chunk_id:016x}.chunk"))
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))
        assert await fs.read_file("/f") == data


async def test_a_leader_change_during_a_write(tmp_path: Path) -> None:
    async with fs_cluster(tmp_path) as cluster, cluster.client(chunk_size=CHUNK) as fs:
        old = os.urandom(CHUNK)
        await fs.write_file("/f", old)
        data = os.urandom(6 * CHUNK)
        leader = next(s for s in cluster.metadata.servers.values() if s.role.value == "leader")
        successor = next(i for i in cluster.metadata.members if i != leader.id)

        async def move_leadership() -> None:
            await trio.sleep(0.03)
            await leader.transfer_leadership(successor)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(move_leadership)
            # The client follows the new leader: its session applies each step once.
            await fs.write_file("/f", _Trickle(data))
        assert leader.role.value != "leader"
        assert await fs.read_file("/f") == data


def test_the_filesystem_example_runs() -> None:
    import subprocess
    import sys

    example = Path(__file__).resolve().parent.parent / "examples" / "filesystem.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "wrote 10240000 bytes in 3 chunks, 3 replicas each",
        "read it back from the data nodes",
        "/photos: ['2026', 'cat.raw']",
        "/notes.txt: ['line 0', 'line 1', 'line 2']",
        "delete /photos: /photos is not empty",
        "/: ['notes.txt']",
        "everything stopped",
    ]
