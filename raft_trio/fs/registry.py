"""The file system's leader-only service: which data nodes are alive, how full they
are, and where a new chunk's replicas go.

Liveness and space are soft state, as in GFS and HDFS: data nodes report them
in heartbeats to the leader, never through the log (one entry per heartbeat
would swamp it). A new leader starts knowing no data node and learns them all
from the next heartbeats, within one heartbeat interval. Placement is decided
here, on the leader, and written into the `allocate_chunk` command, so that
applying it stays deterministic on every member.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from raft_trio.protocol import parse_address
from raft_trio.server.services import Member, Service

log = logging.getLogger("raft_trio.fs")

DEFAULT_DEAD_AFTER = 30.0
# Chunks a heartbeat reply asks a node to delete, at the most (issue 14 fills this).
MAX_DELETES_PER_REPLY = 1000


class RegistryError(Exception):
    """A request the registry cannot serve; `errno_name` says which OSError it is."""

    def __init__(self, errno_name: str, message: str):
        super().__init__(message)
        self.errno_name = errno_name


@dataclass(slots=True)
class DataNodeInfo:
    """What the leader knows of one data node, from its latest heartbeat."""

    id: int
    address: str
    capacity: int
    used: int
    chunks: int
    heard: float
    # Bytes allocated to it since that heartbeat: counted against its free space
    # until the next heartbeat reports them.
    pending: int = 0
    corrupt: set[int] = field(default_factory=set)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.used - self.pending)


class Registry:
    """The data nodes a leader has heard from. `clock` is trio's by default."""

    def __init__(self, dead_after: float = DEFAULT_DEAD_AFTER,
                 clock: Callable[[], float] = trio.current_time,
                 rng: random.Random | None = None):
        if not dead_after > 0:
            raise ValueError("dead_after must be a positive number of seconds")
        self.dead_after = dead_after
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.nodes: dict[int, DataNodeInfo] = {}

    def forget_all(self) -> None:
        """A new term as leader: what a previous term heard may be stale."""
        self.nodes.clear()

    def heartbeat(self, args: list[Any]) -> dict[str, Any]:
        """Record `[node_id, address, capacity, used, chunk_count, [corrupt chunk ids]]`;
        the reply says what the node should do (`delete`: chunk ids)."""
        if (len(args) != 6 or type(args[0]) is not int or args[0] <= 0
                or not isinstance(args[1], str)
                or not all(type(v) is int and v >= 0 for v in args[2:5])
                or not isinstance(args[5], list)
                or not all(type(c) is int for c in args[5])):
            raise RegistryError("EINVAL", "a heartbeat is [node id, address, capacity, used, "
                                          "chunk count, [corrupt chunk ids]]")
        node_id, address, capacity, used, chunks, corrupt = args
        try:
            parse_address(address)
        except ValueError as exc:
            raise RegistryError("EINVAL", f"data node {node_id}: {exc}") from None
        known = self.nodes.get(node_id)
        if known is None:
            log.info("data node %d at %s: first heartbeat (%d chunks, %d of %d bytes used)",
                     node_id, address, chunks, used, capacity)
            known = self.nodes[node_id] = DataNodeInfo(node_id, address, capacity, used, chunks,
                                                       self.clock())
        elif not self.is_live(known):
            log.info("data node %d at %s: heard from again", node_id, address)
        known.address, known.capacity, known.used, known.chunks = address, capacity, used, chunks
        known.heard = self.clock()
        known.pending = 0
        known.corrupt.update(corrupt)
        return {"delete": []}

    def is_live(self, node: DataNodeInfo) -> bool:
        return self.clock() - node.heard <= self.dead_after

    def live(self) -> list[DataNodeInfo]:
        return [n for n in self.nodes.values() if self.is_live(n)]

    def place(self, replication: int, size: int, avoid: set[int] | frozenset[int] = frozenset()
              ) -> list[DataNodeInfo]:
        """Up to `replication` distinct live nodes for a new chunk of `size` bytes, none in
        `avoid`, picked at random in proportion to their free space (so that the
        emptiest fill first without every chunk landing on the same one).
        RegistryError ENOSPC if none has room."""
        candidates = [n for n in self.live() if n.free >= size and n.id not in avoid]
        if not candidates:
            live = len(self.live())
            raise RegistryError("ENOSPC", f"no live data node has room for a chunk of {size} "
                                          f"bytes ({live} live)" if live else
                                          "no data node is live (none has sent a heartbeat "
                                          f"within {self.dead_after:g}s)")
        chosen: list[DataNodeInfo] = []
        while candidates and len(chosen) < replication:
            weights = [n.free + 1 for n in candidates]
            pick = self.rng.choices(range(len(candidates)), weights=weights)[0]
            chosen.append(candidates.pop(pick))
        for node in chosen:
            node.pending += size
        return chosen

    def describe(self) -> list[dict[str, Any]]:
        """Every known node, for `fs df` and reports."""
        now = self.clock()
        return [{"id": n.id, "address": n.address, "state": "live" if self.is_live(n) else "dead",
                 "capacity": n.capacity, "used": n.used, "chunks": n.chunks,
                 "since_heartbeat": round(now - n.heard, 3), "corrupt": sorted(n.corrupt)}
                for n in sorted(self.nodes.values(), key=lambda n: n.id)]


def fs_service(registry: Registry) -> Service:
    """The fs.* ops and the leader task, as an application service for `RaftServer`."""

    async def heartbeat(member: Member, args: list[Any]) -> Any:
        return _answer(lambda: registry.heartbeat(args))

    async def datanodes(member: Member, args: list[Any]) -> Any:
        return registry.describe()

    async def allocate(member: Member, args: list[Any]) -> Any:
        """[write_id, index, replication, size, avoid] -> [chunk_id, [[node id, address],
        ...]]: places the chunk (not on the nodes in `avoid`, which failed the writer),
        records it through the log, answers once applied."""
        if (len(args) != 5 or not all(type(a) is int for a in args[:4])
                or args[1] < 0 or not 1 <= args[2] <= 16 or args[3] < 0
                or not isinstance(args[4], list) or not all(type(a) is int for a in args[4])):
            return ["fs-error", "EINVAL", "fs.allocate takes [write id, chunk index, "
                                          "replication (1-16), chunk size, [node ids to avoid]]"]
        write_id, index, replication, size, avoid = args
        try:
            targets = registry.place(replication, size, avoid=set(avoid))
        except RegistryError as exc:
            return ["fs-error", exc.errno_name, str(exc)]
        chunk_id = secrets.randbits(63)
        now = int(time.time() * 1000)
        result = await member.propose(
            ["allocate_chunk", write_id, index, chunk_id, [n.id for n in targets], now])
        if result is not None:
            return result  # the namespace refused it (an fs-error)
        return [chunk_id, [[n.id, n.address] for n in targets]]

    async def lead(member: Member) -> None:
        try:
            await trio.sleep_forever()
        finally:
            # Whoever leads next (this member again, too) starts from fresh heartbeats.
            registry.forget_all()

    return Service("fs", ops={"fs.heartbeat": heartbeat, "fs.datanodes": datanodes,
                              "fs.allocate": allocate}, lead=lead)


def _answer(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except RegistryError as exc:
        return ["fs-error", exc.errno_name, str(exc)]
