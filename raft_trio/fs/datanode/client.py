"""Put a chunk through a pipeline of data nodes, get one back, delete one.

    ids = await put_chunk(["10.0.0.1:7100", "10.0.0.2:7100"], chunk_id, data,
                          checksum(data))
    data = await get_chunk("10.0.0.2:7100", chunk_id, expected_checksum)

Errors are DataNodeError (raft_trio.fs.datanode.protocol) or a subclass:
DataNodeUnavailable (a node could not be reached, closed the connection or
stalled for `timeout` seconds), ChunkNotFound, ChunkCorrupt (a replica or
the bytes received fail their checksum); `error.address` names the node at
fault, so a caller can try another replica, or leave that node out of the
next pipeline.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any

import trio

from raft_trio.fs.checksum import format_crc32, parse_checksum
from raft_trio.fs.datanode.protocol import (
    DATA_FRAME_MAX,
    ChunkCorrupt,
    DataNodeUnavailable,
    FrameStream,
    ProtocolError,
    check_chunk_id,
    error_from_reply,
    first_error,
    open_frame_stream,
)

__all__ = ["DEFAULT_TIMEOUT", "delete_chunk", "get_chunk", "get_chunk_into", "put_chunk"]

DEFAULT_TIMEOUT = 30.0

BytesLike = bytes | bytearray | memoryview

_GONE = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


async def put_chunk(
    pipeline: Sequence[str],
    chunk_id: int,
    data: BytesLike | AsyncIterable[BytesLike],
    checksum: str,
    *,
    length: int | None = None,
    cluster_name: str = "raft-trio",
    timeout: float = DEFAULT_TIMEOUT,
) -> list[int]:
    """Store a chunk on every node of `pipeline` (addresses, in order: the bytes go to
    the first, which passes them on) and return the ids of the nodes that stored it, in
    pipeline order. `data` is the chunk's bytes, or an async iterable of them (then
    `length` is required). Returns once every copy is durable; if any node fails, none
    keeps the chunk and DataNodeError names the node at fault. `timeout`: seconds any
    one step may take (connecting, a frame sent, the answer after the last frame)."""
    check_chunk_id(chunk_id)
    parse_checksum(checksum)
    if not pipeline:
        raise ValueError("a put needs at least one data node")
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        if length is not None and length != len(view):
            raise ValueError(f"length {length} given for {len(view)} bytes")
        length = len(view)
        source: memoryview | AsyncIterable[BytesLike] = view
    elif length is None:
        raise ValueError("put_chunk needs the length of a chunk given as an async iterable")
    else:
        source = data
    address = pipeline[0]
    io = await open_frame_stream(address, cluster_name, timeout)
    put = _ClientPut(io, address, length)
    try:
        try:
            await io.send_control(["put", chunk_id, length, checksum, list(pipeline[1:])])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(put.read_answer)
                await put.send(source)
                with trio.fail_after(timeout):
                    await put.answered.wait()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
    except _GONE as exc:
        raise _unavailable(address, "closed the connection during the put", exc) from None
    except trio.TooSlowError:
        raise DataNodeUnavailable("timeout", f"data node at {address} stalled for "
                                  f"{timeout:g} s during the put", address) from None
    finally:
        await io.aclose()
    return put.ids


class _ClientPut:
    def __init__(self, io: FrameStream, address: str, length: int):
        self.io = io
        self.address = address
        self.length = length
        self.sent = 0
        self.ids: list[int] = []
        self.answered = trio.Event()

    async def send(self, source: memoryview | AsyncIterable[BytesLike]) -> None:
        if isinstance(source, memoryview):
            await self._send_view(source)
            return
        async for piece in source:
            view = memoryview(piece).cast("B")
            if self.sent + len(view) > self.length:
                raise ValueError(f"the chunk's data runs past its length of {self.length}")
            await self._send_view(view)
        if self.sent != self.length:
            raise ValueError(f"the chunk's data ended after {self.sent} of its {self.length} "
                             f"bytes")

    async def _send_view(self, view: memoryview) -> None:
        io = self.io
        for start in range(0, len(view), DATA_FRAME_MAX):
            part = view[start:start + DATA_FRAME_MAX]
            await io.send_data(part)
            self.sent += len(part)

    async def read_answer(self) -> None:
        address = self.address
        try:
            answer = await self.io.read_control(timeout=float("inf"))
        except (*_GONE, ProtocolError) as exc:
            raise _unavailable(address, "failed during the put", exc) from None
        if answer is None:
            raise _unavailable(address, "closed the connection during the put")
        if isinstance(answer, list) and answer and answer[0] == "err":
            raise error_from_reply(answer, address)
        if (not isinstance(answer, list) or len(answer) != 2 or answer[0] != "ok"
                or not isinstance(answer[1], list) or self.sent != self.length):
            raise _unavailable(address, f"answered the put with {answer!r:.80}")
        self.ids = answer[1]
        self.answered.set()


async def get_chunk(
    address: str,
    chunk_id: int,
    checksum: str,
    offset: int = 0,
    length: int | None = None,
    *,
    cluster_name: str = "raft-trio",
    timeout: float = DEFAULT_TIMEOUT,
) -> bytes:
    """Bytes `offset`.. of a chunk from the data node at `address` (`length` of them, or
    to the end; fewer at the end of the chunk). The node must hold the chunk with
    `checksum`; the bytes received are checked, for a whole chunk against `checksum`,
    for a part against the checksum the node sends with it (the node checked the whole
    chunk). ChunkCorrupt if anything fails its checksum; DataNodeUnavailable,
    ChunkNotFound as for any request."""
    buffers: list[bytearray] = []

    def allocate(count: int) -> memoryview:
        buffers.append(bytearray(count))
        return memoryview(buffers[0])

    await _get(address, chunk_id, checksum, offset, length, allocate, cluster_name, timeout)
    return bytes(buffers[0])


async def get_chunk_into(
    address: str,
    chunk_id: int,
    checksum: str,
    into: bytearray | memoryview,
    offset: int = 0,
    *,
    cluster_name: str = "raft-trio",
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """get_chunk of `len(into)` bytes (or fewer at the end of the chunk), received straight
    into `into` (a slice of a file's buffer, say), without get_chunk's copy into bytes;
    returns how many bytes came."""
    target = memoryview(into).cast("B")

    def place(count: int) -> memoryview:
        return target[:count]

    return await _get(address, chunk_id, checksum, offset, len(target), place, cluster_name,
                      timeout)


async def _get(address: str, chunk_id: int, checksum: str, offset: int, length: int | None,
               allocate: Callable[[int], memoryview], cluster_name: str,
               timeout: float) -> int:
    check_chunk_id(chunk_id)
    parse_checksum(checksum)
    io = await open_frame_stream(address, cluster_name, timeout)
    try:
        try:
            await io.send_control(["get", chunk_id, offset, length])
            answer = await _answer(io, address)
            count, part_checksum, chunk_checksum = _parse_get_answer(answer, address)
            if length is not None and count > length:
                raise ProtocolError(f"{count} bytes sent for a get of {length}")
            if chunk_checksum != checksum:
                raise ChunkCorrupt("corrupt", f"data node at {address} holds chunk {chunk_id} "
                                   f"with checksum {chunk_checksum}, not {checksum}", address)
            view = allocate(count)
            received = 0
            while received < count:
                size = await io.read_data_header(min(count - received, DATA_FRAME_MAX))
                if not size:
                    raise ProtocolError("an empty data frame")
                await io.read_data(view[received:received + size])
                received += size
        except (*_GONE, ProtocolError) as exc:
            raise _unavailable(address, "failed during the get", exc) from None
        except trio.TooSlowError:
            raise DataNodeUnavailable("timeout", f"data node at {address} stalled for "
                                      f"{timeout:g} s during the get", address) from None
    finally:
        await io.aclose()
    actual = format_crc32(zlib.crc32(view))
    if actual != part_checksum:
        raise ChunkCorrupt("corrupt", f"chunk {chunk_id} from data node at {address}: the "
                           f"bytes received have checksum {actual}, the node sent "
                           f"{part_checksum}", address)
    return count


def _parse_get_answer(answer: list[Any], address: str) -> tuple[int, str, str]:
    if len(answer) == 4 and type(answer[1]) is int and answer[1] >= 0:
        _, count, part_checksum, chunk_checksum = answer
        try:
            parse_checksum(part_checksum)
            parse_checksum(chunk_checksum)
        except ValueError:
            pass
        else:
            return count, part_checksum, chunk_checksum
    raise ProtocolError(f"unexpected answer {answer!r:.80}")


async def delete_chunk(address: str, chunk_id: int, *, cluster_name: str = "raft-trio",
                       timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Delete a chunk from the data node at `address`; False if it had none."""
    check_chunk_id(chunk_id)
    io = await open_frame_stream(address, cluster_name, timeout)
    try:
        try:
            await io.send_control(["delete", chunk_id])
            answer = await _answer(io, address)
        except (*_GONE, ProtocolError) as exc:
            raise _unavailable(address, "failed during the delete", exc) from None
        except trio.TooSlowError:
            raise DataNodeUnavailable("timeout", f"data node at {address} stalled for "
                                      f"{timeout:g} s during the delete", address) from None
    finally:
        await io.aclose()
    return bool(answer[1]) if len(answer) > 1 else True


async def _answer(io: FrameStream, address: str) -> list[Any]:
    """The node's answer: ["ok", ...] returned, ["err", ...] raised."""
    answer = await io.read_control()
    if answer is None:
        raise trio.BrokenResourceError("the node closed the connection")
    if not isinstance(answer, list) or not answer or answer[0] not in ("ok", "err"):
        raise ProtocolError(f"unexpected answer {answer!r:.80}")
    if answer[0] == "err":
        raise error_from_reply(answer, address)
    return answer


def _unavailable(address: str, what: str, exc: BaseException | None = None
                 ) -> DataNodeUnavailable:
    detail = ""
    if exc is not None:
        if isinstance(exc, OSError) and exc.strerror:
            detail = f": {exc.strerror.lower()}"
        elif str(exc):
            detail = f": {exc}"
    return DataNodeUnavailable("unavailable", f"data node at {address} {what}{detail}",
                               address)
