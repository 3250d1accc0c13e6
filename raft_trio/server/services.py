"""Application services: what an embedding program or a state machine adds to a member.

A `Service` brings (a) client-protocol ops of its own, answered by the
leader and redirected by the other members like writes, and (b) a task that
runs only on the leader: started in the member's nursery when it becomes
leader, cancelled when it stops being leader or the member shuts down. Both
get the member (`Member`: propose, read, the configuration in force). Soft
state that only the leader needs, rebuilt after an election, lives here
rather than in the log; the file system's data-node registry is such a
service.

    async def count_ticks(member):            # runs while this member leads
        while True:
            await member.propose(["tick"])
            await trio.sleep(1)

    async def ticks(member, args):            # ["ticks"] from any client
        return await member.read(["ticks"])

    server = RaftServer(..., services=[Service("ticker", {"ticks": ticks}, count_ticks)])

A service whose op raises answers that request with an error; one whose
leader task raises is logged, and runs again only when the member next
becomes leader. Neither takes the member down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from raft_trio.core import Membership, Role, SoftState

log = logging.getLogger("raft_trio.services")


class Member(Protocol):
    """What a service sees of the member it runs in (a RaftServer)."""

    @property
    def id(self) -> int: ...

    @property
    def role(self) -> Role: ...

    @property
    def leader_id(self) -> int | None: ...

    @property
    def membership(self) -> Membership: ...

    async def propose(self, command: Any) -> Any: ...

    async def propose_many(self, commands: Sequence[Any], *,
                           session: tuple[int, int] | None = None) -> list[Any]: ...

    async def read(self, query: Any, *, mode: str = "linearizable") -> Any: ...


Op = Callable[[Member, list[Any]], Awaitable[Any]]
LeaderTask = Callable[[Member], Awaitable[None]]


@dataclass(frozen=True)
class Service:
    """`ops`: op name -> `async def op(member, args) -> result` (the request's arguments,
    as decoded from CBOR: check them); `lead`: `async def lead(member)`, run while the
    member leads."""

    name: str
    ops: Mapping[str, Op] = field(default_factory=dict)
    lead: LeaderTask | None = None


class Services:
    """A member's services: their ops by name, and their leader tasks' lifetimes."""

    def __init__(self, member: Member, services: Sequence[Service], reserved: Sequence[str]):
        self.member = member
        self.services = list(services)
        self.ops: dict[str, Op] = {}
        for service in self.services:
            for name, op in service.ops.items():
                if name in reserved or name in self.ops:
                    raise ValueError(f"service {service.name!r}: op {name!r} is taken")
                self.ops[name] = op
        self._nursery: trio.Nursery | None = None
        self._leading: trio.CancelScope | None = None

    def started(self, nursery: trio.Nursery) -> None:
        """The member runs: leader tasks go into `nursery` from now on."""
        self._nursery = nursery
        self._leading = None

    def soft_state_changed(self, soft: SoftState) -> None:
        """Start the leader tasks on becoming leader; cancel them on stepping down."""
        leading = soft.role is Role.LEADER
        if leading and self._leading is None and self._nursery is not None:
            tasks = [s for s in self.services if s.lead is not None]
            if tasks:
                self._leading = trio.CancelScope()
                self._nursery.start_soon(self._lead, self._leading, tasks, soft.term)
        elif not leading and self._leading is not None:
            self._leading.cancel()
            self._leading = None

    async def _lead(self, scope: trio.CancelScope, tasks: list[Service], term: int) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                for service in tasks:
                    nursery.start_soon(self._run, service, term)

    async def _run(self, service: Service, term: int) -> None:
        assert service.lead is not None
        member_id = self.member.id
        log.info("member %d: service %s leads in term %d", member_id, service.name, term)
        try:
            await service.lead(self.member)
        except Exception:
            log.exception("member %d: service %s failed as leader of term %d; it runs again "
                          "when this member next leads", member_id, service.name, term)
