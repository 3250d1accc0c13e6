"""The file system's client: namespace operations through Raft, bytes to and from data
nodes.

    async with raft_trio.fs.connect(["127.0.0.1:7001", "127.0.0.1:7002"]) as fs:
        await fs.mkdir("/photos", parents=True)
        await fs.write_file("/photos/cat.jpg", data)
        assert await fs.read_file("/photos/cat.jpg") == data

Writing, as JuiceFS and HDFS do it: `create` starts a write through Raft (nothing
visible yet); each chunk is allocated by the leader (which picks its data
nodes), streamed once to the first of them, which passes it down the pipeline
to the others, and committed through Raft once every target stored it;
`complete_file` then makes the new content visible at once. Readers see the
old content or the new, never a mix, and a write that dies halfway leaves
nothing visible. Every metadata command goes through the client's session,
so a retried `create` or `rename` applies once.

Reading: the chunk list through a linearizable read, then each chunk from a
live replica, its checksum verified, falling back to the next replica on a
bad checksum or a dead node.
"""

from __future__ import annotations

import errno
import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Self

import trio

from raft_trio.client import RaftClient
from raft_trio.errors import RaftError, leaves
from raft_trio.fs.checksum import checksum
from raft_trio.fs.datanode.client import get_chunk, put_chunk
from raft_trio.fs.datanode.protocol import DataNodeError
from raft_trio.fs.errors import check
from raft_trio.fs.paths import normalise

log = logging.getLogger("raft_trio.fs")

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
DEFAULT_REPLICATION = 3
# Chunks in flight at once, writing or reading: they overlap one chunk's Raft
# round trips and fsyncs with the next one's transfer.
DEFAULT_WINDOW = 4
# Tries of one chunk on fresh targets after a data node failed it.
CHUNK_TRIES = 3
# How long a write waits for data nodes to report to a new leader.
NO_NODES_GRACE = 5.0

Progress = Callable[[int], None]


def _now() -> int:
    return int(time.time() * 1000)


class FileSystem:
    """A connection to the file system whose metadata members are at `addresses`."""

    def __init__(self, addresses: Sequence[str], *, timeout: float = 30.0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, replication: int = DEFAULT_REPLICATION,
                 window: int = DEFAULT_WINDOW):
        if chunk_size < 1 or not 1 <= replication <= 16 or window < 1:
            raise ValueError("chunk_size and window must be positive and replication 1-16")
        self.raft = RaftClient(addresses, timeout=timeout)
        self.chunk_size = chunk_size
        self.replication = replication
        self.window = window
        self._nodes: dict[int, tuple[str, bool]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.raft.aclose()

    # ------------------------------------------------------------- metadata

    async def _apply(self, command: list[Any], path: str) -> Any:
        (result,) = await self.raft.propose([command])
        check(result, path)
        return result

    async def _query(self, query: list[Any], path: str) -> Any:
        result = await self.raft.read(query)
        check(result, path)
        return result

    async def mkdir(self, path: str, *, parents: bool = False, mode: int = 0o755
                    ) -> dict[str, Any]:
        path = normalise(path)
        result: dict[str, Any] = await self._apply(["mkdir", path, parents, mode, _now()], path)
        return result

    async def stat(self, path: str) -> dict[str, Any]:
        path = normalise(path)
        result: dict[str, Any] = await self._query(["stat", path], path)
        return result

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except FileNotFoundError:
            return False
        return True

    async def scandir(self, path: str) -> list[tuple[str, dict[str, Any]]]:
        """Every entry of a directory, with its stat, sorted by name (read in pages)."""
        path = normalise(path)
        entries: list[tuple[str, dict[str, Any]]] = []
        after = ""
        while True:
            page = await self._query(["readdir", path, after, 1000], path)
            entries += [(name, stat) for name, stat in page]
            if len(page) < 1000:
                return entries
            after = page[-1][0]

    async def listdir(self, path: str) -> list[str]:
        return [name for name, _ in await self.scandir(path)]

    async def delete(self, path: str, *, recursive: bool = False) -> None:
        path = normalise(path)
        await self._apply(["delete", path, recursive, _now()], path)

    async def rename(self, src: str, dst: str) -> None:
        src, dst = normalise(src), normalise(dst)
        await self._apply(["rename", src, dst, _now()], src)

    async def chmod(self, path: str, mode: int) -> dict[str, Any]:
        path = normalise(path)
        result: dict[str, Any] = await self._apply(["chmod", path, mode, _now()], path)
        return result

    async def truncate(self, path: str, size: int) -> dict[str, Any]:
        path = normalise(path)
        result: dict[str, Any] = await self._apply(["truncate", path, size, _now()], path)
        return result

    async def du(self, path: str) -> dict[str, int]:
        path = normalise(path)
        result: dict[str, int] = await self._query(["du", path], path)
        return result

    async def chunks(self, path: str) -> dict[str, Any]:
        """A file's size and chunks: {"size", "chunks": [[chunk id, length, checksum,
        [data node ids]], ...]}."""
        path = normalise(path)
        result: dict[str, Any] = await self._query(["chunks", path], path)
        return result

    async def datanodes(self) -> list[dict[str, Any]]:
        """The data nodes the leader knows: id, address, state, capacity, used, chunks."""
        result: list[dict[str, Any]] = await self.raft.call("fs.datanodes")
        self._nodes = {n["id"]: (n["address"], n["state"] == "live") for n in result}
        return result

    async def wait_for_datanodes(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the leader counts at least `count` live data nodes (after a start,
        or an election: a new leader learns them from their next heartbeats).
        TimeoutError if it does not within `timeout` seconds."""
        live = 0
        with trio.move_on_after(timeout):
            while True:
                try:
                    live = sum(n["state"] == "live" for n in await self.datanodes())
                except RaftError:
                    live = 0
                if live >= count:
                    return
                await trio.sleep(0.05)
        raise TimeoutError(f"{live} live data nodes after {timeout:g}s, not {count}")

    # ---------------------------------------------------------------- write

    async def write_file(
        self, path: str, data: bytes | Iterable[bytes] | AsyncIterable[bytes], *,
        exclusive: bool = False, mode: int = 0o644, replication: int | None = None,
        chunk_size: int | None = None, progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Write a whole file (replacing it unless `exclusive`); returns its stat, with
        "replicas": the fewest replicas any chunk got (fewer than asked when fewer data
        nodes are live)."""
        path = normalise(path)
        replication = replication or self.replication
        chunk_size = chunk_size or self.chunk_size
        write_id = secrets.randbits(63)
        create = ["create", path, write_id, exclusive, mode, replication, chunk_size, _now()]
        if isinstance(data, bytes | bytearray | memoryview) and not data:
            # No chunks: the write begins and ends in one request, one Raft round trip.
            results = await self.raft.propose([create, ["complete_file", write_id, 0, _now()]])
            for result in results:
                check(result, path)
            empty: dict[str, Any] = results[1]
            empty["replicas"] = replication
            return empty
        await self._apply(create, path)
        write = _Write(path, write_id, replication, self.window, progress)
        try:
            size = 0
            with _one_error():
                async with trio.open_nursery() as nursery:
                    async for piece in _pieces(data, chunk_size):
                        await write.limiter.acquire()
                        write.allocated.append(trio.Event())
                        nursery.start_soon(self._write_chunk, write, len(write.allocated) - 1,
                                           piece)
                        size += len(piece)
            stat: dict[str, Any] = await self._apply(["complete_file", write_id, size, _now()],
                                                     path)
        except BaseException:
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                try:
                    await self.raft.propose([["abort_write", write_id]])
                except Exception:
                    log.debug("abandoned write %d of %s not aborted", write_id, path)
            raise
        stat["replicas"] = min(write.stored, default=replication)
        if stat["replicas"] < replication:
            log.warning("%s: %d replicas asked, %d stored (fewer live data nodes)", path,
                        replication, stat["replicas"])
        return stat

    async def _write_chunk(self, write: _Write, index: int, piece: bytes) -> None:
        path = write.path
        try:
            digest = checksum(piece)
            avoid: list[int] = []
            problem = "no try made"
            for _ in range(CHUNK_TRIES):
                chunk_id, targets = await self._allocate(write, index, len(piece), avoid)
                try:
                    await put_chunk([address for _, address in targets], chunk_id, piece,
                                    digest)
                except DataNodeError as exc:
                    problem = str(exc)
                    # Leave the node at fault out of the next pipeline (all of this
                    # one's if the error does not say which).
                    failed = [n for n, address in targets if address == exc.address]
                    avoid += failed or [n for n, _ in targets]
                    continue
                await self._apply(["commit_chunk", write.write_id, index, chunk_id, len(piece),
                                   digest, _now()], path)
                write.stored.append(len(targets))
                if write.progress is not None:
                    write.progress(len(piece))
                return
            raise OSError(errno.EIO, f"chunk {index} could not be stored after {CHUNK_TRIES} "
                                     f"tries: {problem}", path)
        finally:
            write.allocated[index].set()  # never leave the next chunk waiting
            write.limiter.release()

    async def _allocate(self, write: _Write, index: int, size: int, avoid: list[int]
                        ) -> tuple[int, list[tuple[int, str]]]:
        """Where chunk `index` goes. A write's chunks are first allocated in order (the
        namespace takes them so), each waiting for the one before."""
        if index and not write.allocated[index].is_set():
            await write.allocated[index - 1].wait()
        path = write.path
        deadline = trio.current_time() + NO_NODES_GRACE
        while True:
            result = await self.raft.call("fs.allocate", write.write_id, index,
                                          write.replication, size, avoid)
            if (isinstance(result, list) and result[:2] == ["fs-error", "ENOSPC"]
                    and "no data node is live" in str(result[2])
                    and trio.current_time() < deadline):
                await trio.sleep(0.2)  # a new leader hears from the data nodes soon
                continue
            chunk_id, targets = check(result, path)
            write.allocated[index].set()
            return chunk_id, [(node_id, address) for node_id, address in targets]

    # ----------------------------------------------------------------- read

    async def read_file(self, path: str) -> bytes:
        async with self.open_read(path) as chunks:
            return b"".join([piece async for piece in chunks])

    @asynccontextmanager
    async def open_read(self, path: str, *, progress: Progress | None = None
                        ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The file's bytes as an async iterator of pieces (one per chunk), fetched up to
        `window` chunks ahead: `async with fs.open_read(p) as f: async for piece in f`."""
        path = normalise(path)
        info = await self.chunks(path)
        if not self._nodes:
            await self.datanodes()
        send, receive = trio.open_memory_channel[_Slot](self.window - 1)
        with _one_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fetch_all, path, info, send, progress)
                try:
                    yield _drain(receive)
                finally:
                    nursery.cancel_scope.cancel()

    async def _fetch_all(self, path: str, info: dict[str, Any],
                         out: trio.MemorySendChannel[_Slot], progress: Progress | None) -> None:
        """Fetch every chunk, each in a task of its own, handing them on in order."""
        async with out, trio.open_nursery() as nursery:
            remaining = info["size"]
            for chunk_id, length, digest, replicas in info["chunks"]:
                want = min(length, remaining)
                remaining -= want
                slot = _Slot()
                await out.send(slot)  # blocks while `window` chunks are ahead of the reader
                nursery.start_soon(self._fetch_into, slot, path, chunk_id, digest, replicas,
                                   want, progress)

    async def _fetch_into(self, slot: _Slot, path: str, chunk_id: int, digest: str,
                          replicas: list[int], want: int, progress: Progress | None) -> None:
        try:
            data = await self._fetch(path, chunk_id, digest, replicas)
            slot.data = data[:want]
            if progress is not None:
                progress(want)
        except Exception as exc:
            slot.error = exc
        slot.done.set()

    async def _fetch(self, path: str, chunk_id: int, digest: str, replicas: list[int]) -> bytes:
        problems: list[str] = []
        for refreshed in (False, True):
            if refreshed:
                await self.datanodes()  # perhaps a node moved or came back
            order = sorted(replicas, key=lambda n: not self._nodes.get(n, ("", False))[1])
            for node_id in order:
                address = self._nodes.get(node_id, ("", False))[0]
                if not address:
                    problems.append(f"data node {node_id} unknown")
                    continue
                try:
                    return await get_chunk(address, chunk_id, digest)
                except DataNodeError as exc:
                    problems.append(f"data node {node_id}: {exc}")
        raise OSError(errno.EIO, f"no replica of chunk {chunk_id:x} could be read "
                                 f"({'; '.join(problems)})", path)


@contextmanager
def _one_error() -> Iterator[None]:
    """Raise the error a nursery inside failed with as itself, not in a group: a
    caller of write_file expects its FileNotFoundError or its source's error."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
        if errors:
            raise errors[0] from None
        raise


class _Write:
    """One write_file in progress: its chunks in flight and what they got."""

    def __init__(self, path: str, write_id: int, replication: int, window: int,
                 progress: Progress | None):
        self.path = path
        self.write_id = write_id
        self.replication = replication
        self.progress = progress
        self.limiter = trio.Semaphore(window)
        # Per chunk, set once it has been allocated (or has failed).
        self.allocated: list[trio.Event] = []
        # Replicas each committed chunk got.
        self.stored: list[int] = []


class _Slot:
    """One chunk on its way to the reader, in file order."""

    __slots__ = ("data", "done", "error")

    def __init__(self) -> None:
        self.data = b""
        self.error: Exception | None = None
        self.done = trio.Event()


async def _drain(slots: trio.MemoryReceiveChannel[_Slot]) -> AsyncIterator[bytes]:
    async for slot in slots:
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        yield slot.data


async def _pieces(data: bytes | Iterable[bytes] | AsyncIterable[bytes], size: int
                  ) -> AsyncIterator[bytes]:
    """`data` cut into pieces of exactly `size` bytes (the last one shorter)."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = bytes(data)
        for start in range(0, len(view), size):
            yield view[start:start + size]
        return
    buffer = bytearray()
    if isinstance(data, AsyncIterable):
        async for block in data:
            buffer += block
            while len(buffer) >= size:
                yield bytes(buffer[:size])
                del buffer[:size]
    else:
        for block in data:
            buffer += block
            while len(buffer) >= size:
                yield bytes(buffer[:size])
                del buffer[:size]
    if buffer:
        yield bytes(buffer)


def connect(addresses: Sequence[str] | str, **options: Any) -> FileSystem:
    """A file system client for the metadata members at `addresses` (use with `async with`)."""
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    return FileSystem(addresses, **options)
