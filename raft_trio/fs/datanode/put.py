"""One put on a data node: store the chunk while forwarding it down the pipeline.

The connection's task reads each data frame straight into one of a few
buffers of this put and hands it to two tasks: the local writer (checksum
and write in a worker thread) and the forwarder (send to the next node). A
buffer is read into again once both are done with it, so a slow disk or a
slow next node stops this node from reading, and TCP carries that back to
whoever sends: a put holds at most PUT_BUFFERS frames of memory however
its neighbours behave. Beside them, the metadata is asked whether the chunk
was allocated to this node, and the next node's answer is awaited.

The chunk is committed (fsync, rename, directory fsync) once every byte
arrived, the checksum matched and the allocation was confirmed, while the
next nodes do the same; the answer goes back when both this copy and the
next node's answer are in. If anything fails, the put fails as a whole: the
temp file is removed, and a copy committed here is deleted again, so that
no node keeps a chunk of a put that failed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from raft_trio.fs.checksum import ChecksumMismatch
from raft_trio.fs.datanode.protocol import (
    DATA_FRAME_MAX,
    DataNodeError,
    DataNodeUnavailable,
    FrameStream,
    ProtocolError,
    PutRequest,
    error_from_reply,
    first_error,
    open_frame_stream,
)
from raft_trio.fs.datanode.store import ChunkStore, ChunkWriter

log = logging.getLogger("raft_trio.fs.datanode")

# Frames of one put in memory at once (4 MiB at most).
PUT_BUFFERS = 4

IsAllocated = Callable[[int, int], Awaitable[bool]]

_GONE = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class Progress:
    """How many bytes of the put's data frames the connection has yet to read."""

    __slots__ = ("remaining",)

    def __init__(self, remaining: int):
        self.remaining = remaining


class _Piece:
    """One frame's bytes in one of the put's buffers, until every user releases it."""

    __slots__ = ("buffer", "free", "users", "view")

    def __init__(self, buffer: bytearray, view: memoryview, users: int,
                 free: trio.MemorySendChannel[bytearray]):
        self.buffer = buffer
        self.view = view
        self.users = users
        self.free = free

    def release(self) -> None:
        self.users -= 1
        if not self.users:
            # The free channel holds every buffer of the put: this never blocks.
            self.free.send_nowait(self.buffer)


class AllocationCache:
    """Chunk ids the metadata confirmed as allocated to this node (the latest `size`)."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._ids: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, chunk_id: int) -> bool:
        if chunk_id in self._ids:
            self._ids.move_to_end(chunk_id)
            return True
        return False

    def add(self, chunk_id: int) -> None:
        self._ids[chunk_id] = None
        self._ids.move_to_end(chunk_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def discard(self, chunk_id: int) -> None:
        self._ids.pop(chunk_id, None)


class Node(Protocol):
    """What a put needs of its data node (a DataNode)."""

    node_id: int
    address: str
    cluster_name: str
    timeout: float
    store: ChunkStore
    is_allocated: IsAllocated
    allocations: AllocationCache


class Put:
    def __init__(self, node: Node, request: PutRequest, upstream: FrameStream,
                 progress: Progress, buffers: list[bytearray]):
        self.node = node
        self.request = request
        self.upstream = upstream
        self.progress = progress
        self.buffers = buffers
        self.allocated = trio.Event()
        self.answered = trio.Event()
        self.downstream_ids: list[int] = []
        self.forwarded = 0
        self.down: FrameStream | None = None

    async def run(self) -> list[int]:
        """Store and forward the chunk; the ids of the nodes that stored it, this one
        first. DataNodeError (naming the node at fault) if any node failed."""
        node = self.node
        request = self.request
        try:
            writer = await node.store.begin_write(request.chunk_id, request.length,
                                                  request.checksum)
        except OSError as exc:
            raise DataNodeError("io_error", f"data node {node.node_id} cannot store chunk "
                                f"{request.chunk_id}: {exc}", node.address) from None
        count = len(self.buffers)
        free_send, free_recv = trio.open_memory_channel[bytearray](count)
        for buffer in self.buffers:
            free_send.send_nowait(buffer)
        disk_send, disk_recv = trio.open_memory_channel[_Piece](count)
        forward_send, forward_recv = trio.open_memory_channel[_Piece](count)
        outlets = [disk_send, forward_send] if request.downstream else [disk_send]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._check_allocation)
                nursery.start_soon(self._store, writer, disk_recv)
                if request.downstream:
                    nursery.start_soon(self._forward, nursery, forward_recv)
                await self._receive(free_send, free_recv, outlets)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await writer.discard()
            if isinstance(exc, BaseExceptionGroup):
                raise first_error(exc) from None
            raise
        finally:
            if self.down is not None:
                await self.down.aclose()
        return [node.node_id, *self.downstream_ids]

    async def _receive(self, free_send: trio.MemorySendChannel[bytearray],
                       free_recv: trio.MemoryReceiveChannel[bytearray],
                       outlets: list[trio.MemorySendChannel[_Piece]]) -> None:
        upstream = self.upstream
        progress = self.progress
        users = len(outlets)
        try:
            while progress.remaining:
                buffer = await free_recv.receive()
                length = await upstream.read_data_header(min(progress.remaining, len(buffer)))
                if not length:
                    raise ProtocolError("an empty data frame")
                progress.remaining -= length
                view = memoryview(buffer)[:length]
                await upstream.read_data(view)
                piece = _Piece(buffer, view, users, free_send)
                for outlet in outlets:
                    outlet.send_nowait(piece)
        finally:
            for outlet in outlets:
                outlet.close()

    async def _store(self, writer: ChunkWriter,
                     pieces: trio.MemoryReceiveChannel[_Piece]) -> None:
        node = self.node
        chunk_id = self.request.chunk_id
        try:
            async for piece in pieces:
                await writer.write(piece.view)
                piece.release()
            await self.allocated.wait()
            await writer.commit()
        except ChecksumMismatch as exc:
            raise DataNodeError("checksum_mismatch", f"data node {node.node_id}: {exc}",
                                node.address) from None
        except OSError as exc:
            raise DataNodeError("io_error", f"data node {node.node_id} cannot store chunk "
                                f"{chunk_id}: {exc}", node.address) from None

    async def _check_allocation(self) -> None:
        node = self.node
        chunk_id = self.request.chunk_id
        if chunk_id not in node.allocations:
            try:
                with trio.fail_after(node.timeout):
                    allocated = await node.is_allocated(chunk_id, node.node_id)
            except trio.TooSlowError:
                raise DataNodeError("unavailable", f"data node {node.node_id} could not check "
                                    f"the allocation of chunk {chunk_id} within "
                                    f"{node.timeout:g} s", node.address) from None
            except Exception as exc:
                raise DataNodeError("unavailable", f"data node {node.node_id} could not check "
                                    f"the allocation of chunk {chunk_id}: {exc}",
                                    node.address) from None
            if allocated is not True:
                raise DataNodeError("not_allocated", f"chunk {chunk_id} is not allocated to "
                                    f"data node {node.node_id}", node.address)
            node.allocations.add(chunk_id)
        else:
            await trio.lowlevel.checkpoint()
        self.allocated.set()

    async def _forward(self, nursery: trio.Nursery,
                       pieces: trio.MemoryReceiveChannel[_Piece]) -> None:
        node = self.node
        request = self.request
        address = request.downstream[0]
        # Closed by run() once every task is done: the answer's reader may still wait on it.
        down = self.down = await open_frame_stream(address, node.cluster_name, node.timeout)
        try:
            await down.send_control(["put", request.chunk_id, request.length,
                                     request.checksum, list(request.downstream[1:])])
            nursery.start_soon(self._read_answer, down, address)
            async for piece in pieces:
                await down.send_data(piece.view)
                self.forwarded += len(piece.view)
                piece.release()
            with trio.fail_after(node.timeout):
                await self.answered.wait()
        except _GONE as exc:
            raise DataNodeUnavailable("unavailable", f"data node at {address} failed "
                                      f"during the put: {describe(exc)}", address) from None
        except trio.TooSlowError:
            raise DataNodeUnavailable("timeout", f"data node at {address} stalled for "
                                      f"{node.timeout:g} s during the put", address) from None

    async def _read_answer(self, down: FrameStream, address: str) -> None:
        try:
            answer = await down.read_control(timeout=float("inf"))
        except (*_GONE, ProtocolError) as exc:
            raise DataNodeUnavailable("unavailable", f"data node at {address} failed during "
                                      f"the put: {describe(exc)}", address) from None
        if answer is None:
            raise DataNodeUnavailable("unavailable", f"data node at {address} closed the "
                                      f"connection during the put", address)
        if isinstance(answer, list) and answer and answer[0] == "err":
            raise error_from_reply(answer, address)
        if (not isinstance(answer, list) or len(answer) != 2 or answer[0] != "ok"
                or not isinstance(answer[1], list)
                or not all(type(i) is int for i in answer[1])
                or self.forwarded != self.request.length):
            raise DataNodeUnavailable("unavailable", f"data node at {address} answered the "
                                      f"put with {answer!r:.80}", address)
        self.downstream_ids = answer[1]
        self.answered.set()


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def frame_buffers(length: int) -> tuple[int, int]:
    """(buffer size, buffer count) for a put of `length` bytes."""
    size = max(1, min(DATA_FRAME_MAX, length))
    return size, max(1, min(PUT_BUFFERS, -(-length // size)))
