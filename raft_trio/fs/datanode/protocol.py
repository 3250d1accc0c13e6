"""What data nodes and their clients say to each other, and how it travels.

Frames are ``u32 big-endian length | payload`` as everywhere in raft-trio.
A connection starts with the client's hello, ``["hello-datanode",
cluster_name]`` (a node of another cluster answers ``["err", "bad_hello",
...]`` and closes); then requests, answered one at a time, in order. Control
frames (hello, requests, answers) are CBOR lists of at most CONTROL_MAX
bytes; data frames are raw bytes, at most DATA_FRAME_MAX each.

- ``["put", chunk_id, length, checksum, downstream]``, then the chunk's bytes
  as data frames adding up to `length` -> ``["ok", [node ids that stored it,
  this one first]]``. `downstream`: the addresses of the replicas after this
  one, in pipeline order; the node forwards the request (with
  ``downstream[1:]``) and every data frame to ``downstream[0]`` as they
  arrive. An error may be answered before all the data has been sent; the
  node then reads and drops the rest of the put's frames, so the connection
  stays usable, but a client may as well close it.
- ``["get", chunk_id, offset, length]`` (length null: to the end) ->
  ``["ok", n, range_checksum, chunk_checksum]`` then n bytes as data frames.
  The node verifies the whole chunk before answering; `range_checksum` is the
  checksum of the n bytes sent (the chunk's own checksum for a whole-chunk
  read), so a client checks what it received even for a part of a chunk.
- ``["delete", chunk_id]`` -> ``["ok", existed]``.

Errors: ``["err", code, message, address]``, code one of ERROR_CODES and
`address` the node at fault (in a pipeline, the one that failed, so that a
client can leave it out of the next try). Chunk ids are unsigned 64-bit ints.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
import trio

from raft_trio.errors import RaftError, describe_os_error, leaves
from raft_trio.fs.checksum import parse_checksum
from raft_trio.protocol import check_address, parse_address

HELLO_DATANODE = "hello-datanode"

DATA_FRAME_MAX = 1 << 20
CONTROL_MAX = 64 * 1024
# The largest chunk a node accepts unless configured otherwise (fs chunk_size
# must stay at or below it).
DEFAULT_MAX_CHUNK = 64 << 20
MAX_CHUNK_ID = (1 << 64) - 1
MAX_PIPELINE = 16

ERROR_CODES = (
    "bad_hello",          # another cluster's node, or not a data node client
    "bad_request",        # a malformed request
    "too_large",          # a chunk longer than the node accepts
    "not_allocated",      # the metadata did not allocate this chunk to this node
    "not_found",          # no such chunk on this node
    "corrupt",            # the stored chunk fails its checksum (reported to the leader)
    "checksum_mismatch",  # the bytes of a put do not match its checksum
    "unavailable",        # a node could not be reached, closed the connection, or
                          # the allocation could not be checked
    "timeout",            # a node stalled for longer than its timeout
    "io_error",           # the disk refused (full, read-only, ...)
)

_HEADER = struct.Struct(">I")
_STAGING = CONTROL_MAX + _HEADER.size
_MAX_DEPTH = 8


class DataNodeError(RaftError):
    """A data node refused or failed an operation; `code` (ERROR_CODES) says how and
    `address` names the node at fault."""

    def __init__(self, code: str, message: str, address: str | None = None, *,
                 reported: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.address = address
        # True when a node said so in an answer (rather than this side finding out).
        self.reported = reported

    def reply(self) -> list[Any]:
        return ["err", self.code, self.message, self.address]


class DataNodeUnavailable(DataNodeError):
    """A node could not be reached, closed the connection or stalled."""


class ChunkNotFound(DataNodeError):
    """The node has no such chunk."""


class ChunkCorrupt(DataNodeError):
    """The bytes of a chunk do not match its checksum."""


_ERROR_CLASSES: dict[str, type[DataNodeError]] = {
    "unavailable": DataNodeUnavailable,
    "timeout": DataNodeUnavailable,
    "not_found": ChunkNotFound,
    "corrupt": ChunkCorrupt,
    "checksum_mismatch": ChunkCorrupt,
}


def error_from_reply(reply: list[Any], address: str) -> DataNodeError:
    """The error an ``["err", code, message, address]`` answer from `address` stands for."""
    code = reply[1] if len(reply) > 1 and type(reply[1]) is str else "bad_request"
    message = reply[2] if len(reply) > 2 and type(reply[2]) is str else f"{reply!r:.100}"
    at = reply[3] if len(reply) > 3 and type(reply[3]) is str else address
    return _ERROR_CLASSES.get(code, DataNodeError)(code, message, at, reported=True)


class ProtocolError(ValueError):
    """A peer broke the protocol: a bad or oversized frame, or a connection cut mid-frame."""


class BadRequest(ValueError):
    """A well-framed request that makes no sense; answered with "bad_request"."""


# ------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class PutRequest:
    chunk_id: int
    length: int
    checksum: str
    downstream: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GetRequest:
    chunk_id: int
    offset: int
    length: int | None


def check_chunk_id(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_CHUNK_ID:
        raise BadRequest(f"a chunk id is an unsigned 64-bit int, not {value!r:.40}")
    return value


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise BadRequest(f"{what} must be an int >= 0, not {value!r:.40}")
    return value


def put_length(request: list[Any]) -> int | None:
    """The length a put announces, if it announces one that can be skipped."""
    if len(request) >= 3 and type(request[2]) is int and 0 <= request[2] < 1 << 63:
        return request[2]
    return None


def parse_put(request: list[Any]) -> PutRequest:
    if len(request) != 5:
        raise BadRequest("put takes [chunk_id, length, checksum, downstream]")
    _, chunk_id, length, checksum, downstream = request
    chunk_id = check_chunk_id(chunk_id)
    length = _count(length, "length")
    parse_checksum_or_bad(checksum)
    if type(downstream) is not list or len(downstream) >= MAX_PIPELINE:
        raise BadRequest(f"downstream must be a list of at most {MAX_PIPELINE - 1} addresses")
    for address in downstream:
        try:
            check_address(address)
        except (ValueError, AttributeError, TypeError):
            raise BadRequest(f"bad downstream address {address!r:.60}") from None
    if len(set(downstream)) != len(downstream):
        raise BadRequest("an address appears twice in the pipeline")
    return PutRequest(chunk_id, length, checksum, tuple(downstream))


def parse_get(request: list[Any]) -> GetRequest:
    if len(request) != 4:
        raise BadRequest("get takes [chunk_id, offset, length]")
    _, chunk_id, offset, length = request
    return GetRequest(check_chunk_id(chunk_id), _count(offset, "offset"),
                      None if length is None else _count(length, "length"))


def parse_delete(request: list[Any]) -> int:
    if len(request) != 2:
        raise BadRequest("delete takes [chunk_id]")
    return check_chunk_id(request[1])


def parse_checksum_or_bad(value: object) -> None:
    try:
        parse_checksum(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def decode_control(payload: bytes) -> Any:
    """One CBOR item, refusing deep nesting, colliding map keys and trailing bytes."""
    stream = io.BytesIO(payload)
    try:
        value = cbor2.CBORDecoder(stream, max_depth=_MAX_DEPTH,
                                  strict_hashable_types=True).decode()
    except Exception as exc:
        raise ProtocolError(f"malformed CBOR: {exc}") from exc
    if stream.tell() != len(payload):
        raise ProtocolError(f"{len(payload) - stream.tell()} bytes after the CBOR item")
    return value


# ------------------------------------------------------------------- frames


class FrameStream:
    """Frames over one TCP connection, both ways.

    Control frames pass through a small staging buffer; the payload of a data
    frame is received straight into the caller's buffer (socket.recv_into),
    and sent from the caller's buffer without being joined to its header, so
    a chunk's bytes are copied only into and out of the kernel.

    Every receive and send must make progress within `timeout` seconds, or
    it raises trio.TooSlowError. One task may receive while another sends.
    """

    def __init__(self, stream: trio.SocketStream, timeout: float):
        self.stream = stream
        self.timeout = timeout
        self._socket = stream.socket
        self._buf = bytearray(_STAGING)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        # Payload bytes of the current data frame not received yet.
        self.frame_left = 0
        # Control frames to send with the next one (a client's hello).
        self.pending: list[Any] = []

    # -- receiving

    async def _recv_into(self, into: memoryview, timeout: float) -> int:
        with trio.fail_after(timeout):
            return await self._socket.recv_into(into)

    async def _fill(self, need: int, timeout: float) -> bool:
        """Make `need` bytes available in the staging buffer; False on a clean end of
        stream before any of them (when none is buffered)."""
        available = self._end - self._start
        if available >= need:
            await trio.lowlevel.checkpoint()
            return True
        if self._start:
            self._buf[:available] = self._view[self._start:self._end]
            self._start, self._end = 0, available
        while self._end < need:
            received = await self._recv_into(self._view[self._end:], timeout)
            if not received:
                if self._end == 0:
                    return False
                raise ProtocolError(f"connection closed mid-frame ({self._end} bytes of "
                                    f"a frame unread)")
            self._end += received
        return True

    async def read_control(self, timeout: float | None = None) -> Any | None:
        """The next frame, decoded from CBOR; None at a clean end of stream."""
        wait = self.timeout if timeout is None else timeout
        if self.frame_left:
            raise ProtocolError("a control frame was read in the middle of a data frame")
        if not await self._fill(_HEADER.size, wait):
            return None
        (length,) = _HEADER.unpack_from(self._buf, self._start)
        if length > CONTROL_MAX:
            raise ProtocolError(f"frame of {length} bytes where a request or answer of at "
                                f"most {CONTROL_MAX} was due")
        self._start += _HEADER.size
        if not await self._fill(length, wait):
            raise ProtocolError("connection closed mid-frame")
        start = self._start
        self._start = start + length
        return decode_control(bytes(self._view[start:start + length]))

    async def read_data_header(self, limit: int) -> int:
        """The length of the next data frame, at most `limit`; its payload follows."""
        if self.frame_left:
            raise ProtocolError("a frame header was read in the middle of a data frame")
        if not await self._fill(_HEADER.size, self.timeout):
            raise ProtocolError("connection closed where a data frame was due")
        length: int = _HEADER.unpack_from(self._buf, self._start)[0]
        if length > limit:
            raise ProtocolError(f"data frame of {length} bytes where at most {limit} were due")
        self._start += _HEADER.size
        self.frame_left = length
        return length

    async def read_data(self, into: memoryview) -> None:
        """Fill `into` with the next bytes of the current data frame's payload."""
        want = len(into)
        if want > self.frame_left:
            raise ValueError(f"{want} bytes asked of a frame with {self.frame_left} left")
        buffered = min(want, self._end - self._start)
        filled = 0
        if buffered:
            start = self._start
            into[:buffered] = self._view[start:start + buffered]
            self._start = start + buffered
            self.frame_left -= buffered
            filled = buffered
        if filled == want:
            await trio.lowlevel.checkpoint()
            return
        recv_into = self._socket.recv_into
        # One deadline for the frame, not one per receive (a frame takes several).
        with trio.fail_after(self.timeout):
            while filled < want:
                received = await recv_into(into[filled:])
                if not received:
                    raise ProtocolError(f"connection closed mid-frame ({self.frame_left} "
                                        f"bytes of a data frame unread)")
                filled += received
                self.frame_left -= received

    async def skip_data(self, count: int, scratch: memoryview) -> None:
        """Receive and drop `count` bytes of data frames (headers included), finishing the
        current frame first."""
        while count or self.frame_left:
            if not self.frame_left:
                length = await self.read_data_header(min(count, DATA_FRAME_MAX))
                count -= length
                if not length:
                    continue
            step = min(self.frame_left, len(scratch))
            await self.read_data(scratch[:step])

    # -- sending

    async def send_control(self, value: Any) -> None:
        """One control frame (after any pending ones), in one send."""
        values, self.pending = [*self.pending, value], []
        out = bytearray()
        for value in values:
            payload = cbor2.dumps(value)
            out += _HEADER.pack(len(payload))
            out += payload
        with trio.fail_after(self.timeout):
            await self.stream.send_all(out)

    async def send_data(self, data: memoryview) -> None:
        """One data frame (at most DATA_FRAME_MAX bytes)."""
        with trio.fail_after(self.timeout):
            await self.stream.send_all(_HEADER.pack(len(data)))
            await self.stream.send_all(data)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def open_frame_stream(address: str, cluster_name: str, timeout: float) -> FrameStream:
    """Connect to the data node at `address`; its hello goes with the first request.
    DataNodeUnavailable if the node cannot be reached within `timeout` seconds."""
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise ValueError(f"bad data node address: {exc}") from None
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise DataNodeUnavailable("unavailable", f"data node at {address} is unavailable: "
                                  f"{describe_os_error(exc)}", address) from None
    except trio.TooSlowError:
        raise DataNodeUnavailable("timeout", f"data node at {address} did not accept a "
                                  f"connection within {timeout:g} s", address) from None
    io = FrameStream(stream, timeout)
    io.pending = [[HELLO_DATANODE, cluster_name]]
    return io


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for what a nursery raised: an error a node reported beats one
    found locally (a connection cut, often because of what the node reported), and
    both beat the Cancelled of the tasks stopped because of them; the group itself if
    it holds nothing but Cancelled."""
    found = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
    if not found:
        return group
    reported = [e for e in found if isinstance(e, DataNodeError) and e.reported]
    ours = [e for e in found if isinstance(e, DataNodeError)]
    return (reported or ours or found)[0]
