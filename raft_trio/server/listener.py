"""The listener: peers and clients on one port, told apart by their hello.

A peer's connection carries its messages to the node loop (and, from the
leader, the chunks of a snapshot it streams); a client's is handed to the
client service. Whatever goes wrong on one connection closes that
connection, never the member.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import cbor2
import trio

from raft_trio.core import AppendEntries
from raft_trio.errors import leaves
from raft_trio.protocol import HELLO_CLIENT, HELLO_PEER, parse_address
from raft_trio.server.replication import Replication
from raft_trio.server.snapshots import SnapshotReceiver
from raft_trio.server.state import MemberState
from raft_trio.transport import CodecError, FrameError, FrameReader, decode_message_packed
from raft_trio.transport.chunks import SnapshotAck, SnapshotChunk

log = logging.getLogger("raft_trio.server")

ClientHandler = Callable[[FrameReader, trio.abc.Stream], Awaitable[None]]

_BAD_INPUT = (CodecError, FrameError, ValueError, cbor2.CBORDecodeError)
_CONNECTION_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Listener:
    def __init__(self, member: MemberState, replication: Replication,
                 receiver: SnapshotReceiver, serve_client: ClientHandler):
        self.member = member
        self.replication = replication
        self.receiver = receiver
        self.serve_client = serve_client

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """One peer or client connection; whatever goes wrong closes it, never the member."""
        member = self.member
        try:
            await self._converse(stream)
        except Exception as exc:
            # Errors from the client service's nursery arrive in exception groups.
            errors = leaves(exc)
            if all(isinstance(e, _CONNECTION_GONE) for e in errors):
                pass
            elif all(isinstance(e, _BAD_INPUT + _CONNECTION_GONE) for e in errors):
                reason = "; ".join(str(e) for e in errors if isinstance(e, _BAD_INPUT))
                log.warning("member %d: closing connection from %s: %s", member.id,
                            _peer_name(stream), reason)
            else:
                log.error("member %d: unexpected error on the connection from %s", member.id,
                          _peer_name(stream), exc_info=exc)
        finally:
            await trio.aclose_forcefully(stream)

    async def _converse(self, stream: trio.SocketStream) -> None:
        member = self.member
        reader = FrameReader(stream)
        first = await reader.read_frame()
        if first is None:
            return
        hello = cbor2.loads(first)
        if not isinstance(hello, list) or not hello:
            raise CodecError("bad hello frame")
        if hello[0] == HELLO_PEER:
            if len(hello) not in (3, 4) or hello[1] != member.cluster_name:
                raise CodecError(f"peer hello from another cluster: {hello!r:.100}")
            peer = hello[2]
            # Any id: a member this one has not heard of yet may lead a
            # configuration it has not received (the core weighs who says what).
            if type(peer) is not int or peer <= 0 or peer == member.id:
                raise CodecError(f"peer hello from member {peer!r:.20}")
            if len(hello) == 4 and isinstance(hello[3], str):
                try:
                    parse_address(hello[3])
                except ValueError:
                    raise CodecError(f"peer hello with a bad address {hello[3]!r:.60}") from None
                member.learned_addresses[peer] = hello[3]
            await self._serve_peer(reader, peer)
        elif hello[0] == HELLO_CLIENT:
            await self.serve_client(reader, stream)
        else:
            raise CodecError(f"unknown hello {hello[0]!r:.40}")

    async def _serve_peer(self, reader: FrameReader, peer: int) -> None:
        member = self.member
        inbox = member.running_inbox()
        node_id = member.id
        counters = member.counters
        last_heard = member.last_heard
        async for frame in reader:
            if peer in member.cut:
                continue  # fault injection: as if the frame were lost on the way
            msg, packed = decode_message_packed(frame)
            if msg.dst != node_id or msg.src != peer:
                raise CodecError(
                    f"message from {msg.src} to {msg.dst} on member {peer}'s connection "
                    f"to member {node_id}"
                )
            if packed is not None and type(msg) is AppendEntries:
                member.packs.remember(msg.entries, packed)
            counters["messages_received"] += 1
            last_heard[peer] = trio.current_time()
            if isinstance(msg, SnapshotChunk):
                await self.receiver.receive(msg)
            elif isinstance(msg, SnapshotAck):
                self.replication.on_snapshot_ack(msg)
            else:
                await inbox.send(msg)


def _peer_name(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
        return f"{host}:{port}"
    except OSError:
        return "?"
