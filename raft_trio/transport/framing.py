"""Length-prefixed frames over a byte stream: ``u32 big-endian length | payload``."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain

import trio

__all__ = ["DEFAULT_MAX_FRAME", "FrameError", "FrameReader", "frame", "send_frames"]

DEFAULT_MAX_FRAME = 64 * 1024 * 1024

_HEADER = struct.Struct(">I")
_HEADER_SIZE = _HEADER.size
_MAX_LENGTH = 0xFFFFFFFF

_RECV_SIZE = 65536
# When the rest of a large frame is known to be on its way, ask for more than
# _RECV_SIZE per call to save round trips through the scheduler, but not so
# much that every receive allocates a huge buffer only to shrink it.
_MAX_RECV = 1024 * 1024


class FrameError(Exception):
    """The stream does not carry well-formed frames (oversized, or cut mid-frame)."""


def frame(payload: bytes) -> bytes:
    """Return `payload` with its length prefix."""
    return _header(len(payload)) + payload


async def send_frames(stream: trio.abc.SendStream, payloads: Sequence[bytes]) -> None:
    """Send every payload as a frame with a single send_all call."""
    if not payloads:
        await trio.lowlevel.checkpoint()
        return
    headers = map(_header, map(len, payloads))
    await stream.send_all(b"".join(chain.from_iterable(zip(headers, payloads, strict=True))))


def _header(length: int) -> bytes:
    if length > _MAX_LENGTH:
        raise FrameError(f"payload of {length} bytes does not fit a u32 length prefix")
    return _HEADER.pack(length)


class FrameReader:
    """Reads frames from a stream; one task at a time.

    Received bytes accumulate in one bytearray and a read offset moves over
    it, so frames packed into one chunk are sliced out without shifting the
    rest; consumed bytes are dropped only when more data must be received,
    which copies at most one partial frame.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_frame: int = DEFAULT_MAX_FRAME):
        self._stream = stream
        self._max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    async def read_frame(self) -> bytes | None:
        """Return the next payload, or None at a clean end of stream.

        Raises FrameError if the stream ends inside a frame or a length
        prefix exceeds `max_frame`.
        """
        buf = self._buf
        received = False
        while True:
            pos = self._pos
            available = len(buf) - pos
            if available >= _HEADER_SIZE:
                (length,) = _HEADER.unpack_from(buf, pos)
                if length > self._max_frame:
                    raise FrameError(
                        f"frame of {length} bytes exceeds the limit of {self._max_frame}"
                    )
                end = pos + _HEADER_SIZE + length
                if end <= len(buf):
                    # Trio's contract: every async call is a checkpoint, even
                    # when the frame is already buffered, or a peer flooding
                    # small frames could starve other tasks. receive_some was
                    # one already, if this call made it.
                    if not received:
                        await trio.lowlevel.checkpoint()
                    return self._take(pos + _HEADER_SIZE, end)
                missing = end - len(buf)
            else:
                missing = _HEADER_SIZE - available
            if self._eof:
                self._raise_if_mid_frame()
                return None
            if pos:
                del buf[:pos]
                self._pos = 0
            chunk = await self._stream.receive_some(max(_RECV_SIZE, min(missing, _MAX_RECV)))
            if not chunk:
                self._eof = True
                self._raise_if_mid_frame()
                return None
            buf += chunk
            received = True

    def _take(self, start: int, end: int) -> bytes:
        buf = self._buf
        # Slicing a memoryview copies once; slicing the bytearray would copy
        # into a new bytearray and then again into bytes.
        with memoryview(buf) as view:
            payload = bytes(view[start:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return payload

    def _raise_if_mid_frame(self) -> None:
        leftover = len(self._buf) - self._pos
        if leftover:
            raise FrameError(f"stream closed mid-frame with {leftover} bytes unread")

    def __aiter__(self) -> FrameReader:
        return self

    async def __anext__(self) -> bytes:
        payload = await self.read_frame()
        if payload is None:
            raise StopAsyncIteration
        return payload
