"""The data node: a Trio service that stores chunks and serves them.

    node = DataNode(4, "127.0.0.1:7100", "/var/lib/dn4",
                    is_allocated=ask_metadata, heartbeat=tell_leader)
    await nursery.start(node.serve)

It depends on the rest of the file system only through two callables:
`is_allocated(chunk_id, node_id) -> bool` (backed by the metadata's
linearizable `allocation` query; positive answers are cached) and
`heartbeat(stats) -> reply` (the leader's `fs.heartbeat` op), called every
`heartbeat_interval` seconds with a HeartbeatStats; the reply's "delete"
list names chunks to delete. A failed heartbeat is logged and tried again at
the next interval, never fatal.

Whatever goes wrong on one connection (a bad or oversized frame, a client
that stalls for longer than `timeout`) closes that connection only. Memory
is bounded: a put holds at most a few frames (put.PUT_BUFFERS), and the
buffers of all puts and gets together at most `memory_limit` bytes; beyond
that, requests wait their turn.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from raft_trio.errors import leaves
from raft_trio.fs.datanode.protocol import (
    DATA_FRAME_MAX,
    DEFAULT_MAX_CHUNK,
    HELLO_DATANODE,
    BadRequest,
    DataNodeError,
    FrameStream,
    ProtocolError,
    check_chunk_id,
    parse_delete,
    parse_get,
    parse_put,
    put_length,
)
from raft_trio.fs.datanode.put import AllocationCache, IsAllocated, Progress, Put, frame_buffers
from raft_trio.fs.datanode.store import HEADER_SIZE, ChunkCorruption, ChunkStore
from raft_trio.protocol import check_host, parse_address

__all__ = ["DataNode", "HeartbeatStats", "MemoryBudget"]

log = logging.getLogger("raft_trio.fs.datanode")

DEFAULT_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MEMORY_LIMIT = 256 << 20
_SPARE_BUFFERS = 16

_GONE = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(frozen=True, slots=True)
class HeartbeatStats:
    """What a data node tells the leader in each heartbeat. `capacity`: the bytes this
    node could hold (its chunks plus the free space of its file system); `used`: the
    bytes of its chunks; `corrupt`: chunks found corrupt since the last heartbeat that
    got through."""

    node_id: int
    address: str
    capacity: int
    used: int
    chunk_count: int
    corrupt: tuple[int, ...]

    def as_args(self) -> list[Any]:
        """The arguments of the `fs.heartbeat` op."""
        return [self.node_id, self.address, self.capacity, self.used, self.chunk_count,
                list(self.corrupt)]


Heartbeat = Callable[[HeartbeatStats], Awaitable[Any]]


class MemoryBudget:
    """Bytes of buffers that requests may hold at once; a request larger than the whole
    budget waits until it can have it all to itself."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._freed = trio.Event()

    @asynccontextmanager
    async def hold(self, amount: int) -> AsyncIterator[None]:
        amount = min(amount, self.limit)
        await trio.lowlevel.checkpoint()
        while self.used + amount > self.limit:
            await self._freed.wait()
        self.used += amount
        try:
            yield
        finally:
            self.used -= amount
            self._freed.set()
            self._freed = trio.Event()


class DataNode:
    def __init__(
        self,
        node_id: int,
        listen_address: str,
        data_dir: str | Path,
        *,
        is_allocated: IsAllocated,
        heartbeat: Heartbeat,
        heartbeat_interval: float = 1.0,
        cluster_name: str = "raft-trio",
        address: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ):
        """`listen_address`: host:port to listen on (port 0: any free port); `address`:
        the host:port others reach this node at, if not that one. `timeout`: seconds any
        one step of a request may take (a frame in or out, the metadata's answer, the
        next node's answer) before the request fails; `idle_timeout`: seconds a
        connection may sit between requests."""
        _listen_on(listen_address)
        self.node_id = node_id
        self.listen_address = listen_address
        self.store = ChunkStore(data_dir, node_id)
        self.is_allocated = is_allocated
        self.heartbeat = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.cluster_name = cluster_name
        self._advertised = address
        self.address = address or listen_address
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.max_chunk = max_chunk
        self.memory = MemoryBudget(memory_limit)
        self.allocations = AllocationCache()
        # Corrupt chunks the leader has not been told of yet.
        self.unreported: set[int] = set()
        self._spare: list[bytearray] = []
        self.heartbeats_sent = 0

    # ------------------------------------------------------------------ life

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Run until cancelled; `nursery.start(node.serve)` returns once it listens."""
        await self.store.open()
        try:
            self.unreported = set(self.store.corrupt)
            host, port = _listen_on(self.listen_address)
            listeners = await trio.open_tcp_listeners(port, host=host)
            bound = listeners[0].socket.getsockname()[1]
            if self._advertised is None:
                shown = f"[{host}]" if ":" in host else host
                self.address = f"{shown}:{bound}"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self._handle, listeners)
                nursery.start_soon(self._heartbeats)
                log.info("data node %d: listening on %s, %d chunk(s) in %s", self.node_id,
                         self.address, len(self.store), self.store.data_dir)
                task_status.started()
        finally:
            self.store.close()

    # ------------------------------------------------------------ heartbeats

    async def stats(self) -> HeartbeatStats:
        capacity, used = await self.store.space()
        return HeartbeatStats(self.node_id, self.address, capacity, used, len(self.store),
                              tuple(sorted(self.unreported)))

    async def _heartbeats(self) -> None:
        while True:
            await self.beat()
            await trio.sleep(self.heartbeat_interval)

    async def beat(self) -> None:
        """One heartbeat, and what its reply asks for; failures are logged."""
        try:
            stats = await self.stats()
            with trio.fail_after(max(self.timeout, self.heartbeat_interval)):
                reply = await self.heartbeat(stats)
        except Exception as exc:
            log.warning("data node %d: heartbeat failed, next try in %g s: %s", self.node_id,
                        self.heartbeat_interval, exc or type(exc).__name__)
            return
        self.heartbeats_sent += 1
        self.unreported.difference_update(stats.corrupt)
        await self._follow(reply)

    async def _follow(self, reply: Any) -> None:
        if reply is None:
            return
        deletes = reply.get("delete") if isinstance(reply, Mapping) else None
        if not deletes:
            await trio.lowlevel.checkpoint()
            return
        if not isinstance(deletes, list | tuple):
            log.warning("data node %d: heartbeat reply with a bad delete list: %r",
                        self.node_id, deletes)
            return
        deleted = 0
        for chunk_id in deletes:
            try:
                check_chunk_id(chunk_id)
                deleted += await self.store.delete(chunk_id)
            except BadRequest as exc:
                log.warning("data node %d: heartbeat reply: %s", self.node_id, exc)
            except OSError as exc:
                log.warning("data node %d: cannot delete chunk %s: %s", self.node_id,
                            chunk_id, exc)
            else:
                self.allocations.discard(chunk_id)
        log.info("data node %d: deleted %d of %d chunk(s) as the leader asked", self.node_id,
                 deleted, len(deletes))

    # ----------------------------------------------------------- connections

    async def _handle(self, stream: trio.SocketStream) -> None:
        """One client's connection; whatever goes wrong closes it, never the node."""
        io = FrameStream(stream, self.timeout)
        try:
            await self._converse(io)
        except Exception as exc:
            errors = leaves(exc)
            if all(isinstance(e, _GONE) for e in errors):
                log.debug("data node %d: connection from %s lost: %s", self.node_id,
                          _peer(stream), exc)
            elif all(isinstance(e, (*_GONE, ProtocolError, trio.TooSlowError))
                     for e in errors):
                reason = "; ".join(f"stalled for more than {self.timeout:g} s"
                                   if isinstance(e, trio.TooSlowError) else str(e)
                                   for e in errors if not isinstance(e, _GONE))
                log.warning("data node %d: closing the connection from %s: %s", self.node_id,
                            _peer(stream), reason)
            else:
                log.error("data node %d: unexpected error on the connection from %s",
                          self.node_id, _peer(stream), exc_info=exc)
        finally:
            await io.aclose()

    async def _converse(self, io: FrameStream) -> None:
        hello = await io.read_control()
        if hello is None:
            return
        if (not isinstance(hello, list) or len(hello) != 2 or hello[0] != HELLO_DATANODE
                or hello[1] != self.cluster_name):
            await io.send_control(DataNodeError(
                "bad_hello", f"data node {self.node_id} of cluster {self.cluster_name!r} "
                f"refuses hello {hello!r:.80}", self.address).reply())
            raise ProtocolError(f"bad hello {hello!r:.80}")
        while True:
            try:
                request = await io.read_control(timeout=self.idle_timeout)
            except trio.TooSlowError:
                log.debug("data node %d: closing a connection idle for %g s", self.node_id,
                          self.idle_timeout)
                return
            if request is None:
                return
            if not isinstance(request, list) or not request or type(request[0]) is not str:
                raise ProtocolError(f"a request must be a list starting with the op's name, "
                                    f"not {request!r:.80}")
            op = request[0]
            if op == "put":
                await self._put(io, request)
            elif op == "get":
                await self._get(io, request)
            elif op == "delete":
                await self._delete(io, request)
            else:
                await self._refuse(io, "bad_request", f"unknown op {op!r:.40}")

    async def _refuse(self, io: FrameStream, code: str, message: str) -> None:
        await io.send_control(DataNodeError(code, message, self.address).reply())

    # ------------------------------------------------------------------ ops

    async def _put(self, io: FrameStream, request: list[Any]) -> None:
        try:
            put = parse_put(request)
            if put.length > self.max_chunk:
                raise DataNodeError("too_large", f"a chunk of {put.length} bytes exceeds data "
                                    f"node {self.node_id}'s limit of {self.max_chunk}",
                                    self.address)
        except (BadRequest, DataNodeError) as exc:
            error = exc if isinstance(exc, DataNodeError) else DataNodeError(
                "bad_request", f"bad put: {exc}", self.address)
            await io.send_control(error.reply())
            length = put_length(request)
            if length is None:
                raise ProtocolError("a put whose data cannot be skipped") from None
            await self._skip(io, Progress(length))
            return
        progress = Progress(put.length)
        size, count = frame_buffers(put.length)
        try:
            async with self.memory.hold(size * count):
                buffers = [self._buffer(size) for _ in range(count)]
                try:
                    ids = await Put(self, put, io, progress, buffers).run()
                finally:
                    self._spare.extend(b for b in buffers if len(b) == DATA_FRAME_MAX)
                    del self._spare[_SPARE_BUFFERS:]
        except DataNodeError as error:
            log.warning("data node %d: put of chunk %d failed: %s", self.node_id,
                        put.chunk_id, error)
            await io.send_control(error.reply())
            await self._skip(io, progress)
            return
        await io.send_control(["ok", ids])

    def _buffer(self, size: int) -> bytearray:
        if size == DATA_FRAME_MAX and self._spare:
            return self._spare.pop()
        return bytearray(size)

    async def _skip(self, io: FrameStream, progress: Progress) -> None:
        """Drop what is left of a refused put's data, so the connection can go on."""
        if not progress.remaining and not io.frame_left:
            return
        async with self.memory.hold(DATA_FRAME_MAX):
            scratch = self._buffer(DATA_FRAME_MAX)
            try:
                remaining, progress.remaining = progress.remaining, 0
                await io.skip_data(remaining, memoryview(scratch))
            finally:
                self._spare.append(scratch)
                del self._spare[_SPARE_BUFFERS:]

    async def _get(self, io: FrameStream, request: list[Any]) -> None:
        try:
            get = parse_get(request)
        except BadRequest as exc:
            await self._refuse(io, "bad_request", f"bad get: {exc}")
            return
        chunk_id = get.chunk_id
        length = self.store.length_of(chunk_id)
        if length is None:
            await self._refuse(io, "not_found", f"data node {self.node_id} has no chunk "
                               f"{chunk_id}")
            return
        async with self.memory.hold(length + HEADER_SIZE):
            try:
                read = await self.store.read(chunk_id, get.offset, get.length)
            except FileNotFoundError:
                await self._refuse(io, "not_found", f"data node {self.node_id} has no chunk "
                                   f"{chunk_id}")
                return
            except ChunkCorruption as exc:
                log.error("data node %d: %s; moved aside, reported to the leader",
                          self.node_id, exc)
                self.unreported.add(chunk_id)
                await self._refuse(io, "corrupt", f"data node {self.node_id}: {exc}")
                return
            except OSError as exc:
                await self._refuse(io, "io_error", f"data node {self.node_id} cannot read "
                                   f"chunk {chunk_id}: {exc}")
                return
            try:
                data = read.data
                await io.send_control(["ok", len(data), read.checksum, read.chunk_checksum])
                for start in range(0, len(data), DATA_FRAME_MAX):
                    await io.send_data(data[start:start + DATA_FRAME_MAX])
            finally:
                del data
                read.close()

    async def _delete(self, io: FrameStream, request: list[Any]) -> None:
        try:
            chunk_id = parse_delete(request)
        except BadRequest as exc:
            await self._refuse(io, "bad_request", f"bad delete: {exc}")
            return
        try:
            existed = await self.store.delete(chunk_id)
        except OSError as exc:
            await self._refuse(io, "io_error", f"data node {self.node_id} cannot delete "
                               f"chunk {chunk_id}: {exc}")
            return
        self.allocations.discard(chunk_id)
        await io.send_control(["ok", existed])


def _listen_on(address: str) -> tuple[str, int]:
    """(host, port) to listen on; port 0 (any free port) is allowed here."""
    host, _, port = address.rpartition(":")
    if port == "0":
        check_host(host)
        return host.removeprefix("[").removesuffix("]"), 0
    return parse_address(address)


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
        return f"{host}:{port}"
    except OSError:
        return "?"
