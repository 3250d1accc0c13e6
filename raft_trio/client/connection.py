"""One connection to one member: a hello, then requests answered in order."""

from __future__ import annotations

import itertools
from typing import Any

import cbor2
import trio

from raft_trio.errors import CommandError, describe_os_error
from raft_trio.protocol import HELLO_CLIENT, parse_address
from raft_trio.transport import DEFAULT_MAX_FRAME, FrameError, FrameReader, send_frames

# What a broken or garbled connection raises: the caller tries another member.
CONNECTION_PROBLEMS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, FrameError,
                       cbor2.CBORDecodeError)


class Unsendable(CommandError):
    """A request that cannot be encoded or is too large to send, so it never left
    this client."""


class Connection:
    def __init__(self, address: str, stream: trio.SocketStream):
        self.address = address
        self.stream = stream
        self.reader = FrameReader(stream)
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, address: str) -> Connection:
        host, port = parse_address(address)
        stream = await trio.open_tcp_stream(host, port)
        try:
            await send_frames(stream, [cbor2.dumps([HELLO_CLIENT])])
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(address, stream)

    async def call(self, op: str, *args: Any) -> list[Any]:
        """Send one request and return the answer: [id, "ok", value] or [id, "err", ...]."""
        request_id = next(self.ids)
        try:
            request = cbor2.dumps([request_id, op, *args])
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise Unsendable(f"request cannot be encoded as CBOR: {exc}") from None
        if len(request) > DEFAULT_MAX_FRAME:
            raise Unsendable(
                f"a request of {len(request)} bytes exceeds the limit of {DEFAULT_MAX_FRAME} "
                f"bytes per request (and members refuse commands over 1 MiB unless "
                f"started with a larger --max-command-bytes)"
            )
        await send_frames(self.stream, [request])
        frame = await self.reader.read_frame()
        if frame is None:
            raise trio.BrokenResourceError(f"{self.address} closed the connection")
        reply = cbor2.loads(frame)
        if not isinstance(reply, list) or len(reply) < 3:
            raise FrameError(f"unexpected reply from {self.address}: {reply!r:.100}")
        if reply[0] is None and reply[1] == "err":
            # The member could not read the request at all, and closes the connection.
            raise CommandError(f"{self.address} refused the request: {reply[3]}")
        if reply[0] != request_id:
            raise FrameError(f"unexpected reply from {self.address}: {reply!r:.100}")
        return reply

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def describe(exc: Exception) -> str:
    """A connection problem in words: "connection refused", not "[Errno 111] ..."."""
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return str(exc) or type(exc).__name__
