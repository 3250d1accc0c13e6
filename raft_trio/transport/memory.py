"""An in-memory network of Raft nodes for tests, with fault injection.

Sending never blocks and may silently lose messages, like a datagram
network: Raft must cope with loss, delay, reordering and duplication, so
this is all the network promises. Every fault is driven by one seeded RNG
and trio's clock, so a run under trio.testing.MockClock is reproducible.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from raft_trio.transport.codec import PeerMessage as Message
from raft_trio.transport.codec import decode_message, encode_message

__all__ = ["MemoryEndpoint", "MemoryNetwork", "NetworkStats"]


@dataclass
class NetworkStats:
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    delivered: int = 0


class MemoryNetwork:
    """Endpoints named by node id; messages are routed by their `dst`.

    Faults, all adjustable while the network runs:

    - `drop_rate`, `duplicate_rate`: probability per message.
    - `delay`: (min, max) seconds, drawn uniformly per copy; a spread
      reorders messages.
    - `drop_if`: a predicate; matching messages are lost.
    - `disconnect` / `partition` / `isolate`, undone by `connect` / `heal`.

    With `codec=True` every message crosses the wire format, so tests built
    on this network also exercise the encoder and decoder.
    """

    def __init__(self, *, seed: int | None = None, codec: bool = True) -> None:
        self.drop_rate = 0.0
        self.duplicate_rate = 0.0
        self.delay: tuple[float, float] = (0.0, 0.0)
        self.drop_if: Callable[[Message], bool] | None = None
        self.stats = NetworkStats()
        self._codec = codec
        self._rng = random.Random(seed)
        self._endpoints: dict[int, MemoryEndpoint] = {}
        self._cut: set[tuple[int, int]] = set()
        # Breaks delivery-time ties in send order, keeping zero delay FIFO.
        self._seq = itertools.count()

    def endpoint(self, node_id: int) -> MemoryEndpoint:
        """Attach `node_id`; a closed endpoint may be replaced (a restart)."""
        old = self._endpoints.get(node_id)
        if old is not None and not old.closed:
            raise ValueError(f"node {node_id} is already attached")
        ep = MemoryEndpoint(self, node_id)
        self._endpoints[node_id] = ep
        return ep

    def disconnect(self, a: int, b: int, *, one_way: bool = False) -> None:
        """Lose messages from `a` to `b` (and back, unless `one_way`)."""
        self._cut.add((a, b))
        if not one_way:
            self._cut.add((b, a))

    def connect(self, a: int, b: int, *, one_way: bool = False) -> None:
        self._cut.discard((a, b))
        if not one_way:
            self._cut.discard((b, a))

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different groups."""
        sets = [set(g) for g in groups]
        for i, left in enumerate(sets):
            for right in sets[i + 1 :]:
                for a in left:
                    for b in right:
                        self.disconnect(a, b)

    def isolate(self, node_id: int) -> None:
        for other in self._endpoints:
            if other != node_id:
                self.disconnect(node_id, other)

    def heal(self) -> None:
        self._cut.clear()

    def _route(self, src: int, msg: Message) -> None:
        self.stats.sent += 1
        target = self._endpoints.get(msg.dst)
        rng = self._rng
        if (
            target is None
            or target.closed
            or (src, msg.dst) in self._cut
            or (self.drop_rate and rng.random() < self.drop_rate)
            or (self.drop_if is not None and self.drop_if(msg))
        ):
            self.stats.dropped += 1
            return
        item: Message | bytes = encode_message(msg) if self._codec else msg
        copies = 1
        if self.duplicate_rate and rng.random() < self.duplicate_rate:
            copies = 2
            self.stats.duplicated += 1
        now = trio.current_time()
        low, high = self.delay
        for _ in range(copies):
            due = now + (rng.uniform(low, high) if high > 0 else 0.0)
            target._push(due, next(self._seq), item)


class MemoryEndpoint:
    """One node's attachment to a MemoryNetwork; one receiving task at a time."""

    def __init__(self, network: MemoryNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id
        self.closed = False
        self._queue: list[tuple[float, int, Message | bytes]] = []
        self._wakeup = trio.Event()

    def send(self, msg: Message) -> None:
        """Hand `msg` to the network; never blocks, may lose it."""
        if self.closed:
            raise trio.ClosedResourceError(f"endpoint {self.node_id} is closed")
        self.network._route(self.node_id, msg)

    async def receive(self) -> Message:
        """Wait for the next message that is due; ClosedResourceError once closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self.closed:
                raise trio.ClosedResourceError(f"endpoint {self.node_id} is closed")
            queue = self._queue
            if queue and queue[0][0] <= trio.current_time():
                item = heapq.heappop(queue)[2]
                self.network.stats.delivered += 1
                # Matches trio's channels: the message is taken, so this
                # yield must not be cancelled or the message would be lost.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return decode_message(item) if isinstance(item, bytes) else item
            self._wakeup = trio.Event()
            with trio.move_on_at(queue[0][0] if queue else math.inf):
                await self._wakeup.wait()

    def close(self) -> None:
        """Simulate a crash: queued and future messages are lost."""
        self.closed = True
        self._queue.clear()
        self._wakeup.set()

    def _push(self, due: float, seq: int, item: Message | bytes) -> None:
        heapq.heappush(self._queue, (due, seq, item))
        self._wakeup.set()

    def __aiter__(self) -> MemoryEndpoint:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None
