"""The client protocol, server side (the wire format is in raft_trio.protocol).

Requests on one connection are answered one at a time, in order: a client
wanting several requests in flight opens several connections (the stress
command runs one per client). A task per request cost the leader about 8% of
its CPU under `make bench` for a pipelining no client of ours does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import cbor2
import trio

from raft_trio.core import Entry, Membership, Role
from raft_trio.errors import (
    CommandError,
    LeadershipLost,
    NotLeader,
    RaftError,
    SessionExpired,
    StaleRequest,
)
from raft_trio.protocol import parse_address
from raft_trio.server.services import Member, Services
from raft_trio.transport import FrameError, FrameReader, send_frames

log = logging.getLogger("raft_trio.service")

MAX_LOG_PAGE = 10_000
MAX_DUMP_PAGE = 10_000
# Longest a membership request waits for a learner to catch up: a client that
# gave up must not hold its connection's task for ever.
MAX_MEMBERSHIP_WAIT = 600.0


class Served(Member, Protocol):
    """What the client service asks of the member (a RaftServer)."""

    def not_leader(self, leader_id: int | None = None) -> NotLeader: ...

    async def propose_client_commands(self, commands: Sequence[Any], *,
                                      decoded_from_cbor: bool,
                                      session: Sequence[int] | None = None) -> list[Any]: ...

    def status(self) -> dict[str, Any]: ...

    def log_entries(self, start: int, count: int) -> list[Entry]: ...

    async def take_snapshot(self) -> int: ...

    def set_faults(self, cut: Iterable[int]) -> list[int]: ...

    def state_page(self, position: int, count: int) -> tuple[int, list[Any]]: ...

    async def add_member(self, node_id: int, address: str, *, voter: bool = True,
                         wait: float | None = None) -> Membership: ...

    async def promote_member(self, node_id: int, *,
                             wait: float | None = None) -> Membership: ...

    async def remove_member(self, node_id: int) -> Membership: ...

    async def transfer_leadership(self, node_id: int) -> int: ...


class BadRequest(Exception):
    pass


Handler = Callable[[list[Any]], Awaitable[Any]]


# The ops of raft_trio.protocol; a service's ops take other names.
BUILTIN_OPS = ("propose", "read", "get", "status", "log", "snapshot", "dump", "faults",
               "members", "add_member", "promote_member", "remove_member", "transfer")


class ClientService:
    def __init__(self, member: Served, services: Services):
        self.member = member
        self.services = services
        self._ops: dict[str, Handler] = {
            "propose": self._propose, "read": self._read, "get": self._get,
            "status": self._status, "log": self._log, "snapshot": self._snapshot,
            "dump": self._dump, "faults": self._faults, "members": self._members,
            "add_member": self._add_member, "promote_member": self._promote_member,
            "remove_member": self._remove_member, "transfer": self._transfer,
        }
        assert tuple(self._ops) == BUILTIN_OPS

    async def serve(self, reader: FrameReader, stream: trio.abc.Stream) -> None:
        try:
            await self._serve_requests(reader, stream)
        except FrameError as exc:
            # Tell the client why before the connection closes (a request id is not
            # known: the frame was never read).
            with trio.move_on_after(1):
                try:
                    await send_frames(stream, [cbor2.dumps([None, "err", "bad_request",
                                                            str(exc), None])])
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass  # the client is gone already
            raise

    async def _serve_requests(self, reader: FrameReader, stream: trio.abc.Stream) -> None:
        async for frame in reader:
            request = cbor2.loads(frame)
            if (not isinstance(request, list) or len(request) < 2
                    or not isinstance(request[1], str)):
                raise ValueError(f"bad client request {request!r:.100}")
            reply = await self._answer(request[0], request[1], request[2:])
            await send_frames(stream, [cbor2.dumps(reply)])

    async def _answer(self, request_id: Any, op: str, args: list[Any]) -> list[Any]:
        try:
            value = await self._execute(op, args)
        except NotLeader as exc:
            return [request_id, "err", "not_leader", str(exc),
                    [exc.leader_id, exc.leader_address]]
        except LeadershipLost as exc:
            return [request_id, "err", "lost", str(exc), exc.applied]
        except SessionExpired as exc:
            return [request_id, "err", "session_expired", str(exc), None]
        except StaleRequest as exc:
            return [request_id, "err", "stale", str(exc), None]
        except (BadRequest, CommandError) as exc:
            return [request_id, "err", "bad_request", str(exc), None]
        except RaftError as exc:
            return [request_id, "err", "internal", str(exc), None]
        except Exception as exc:
            # A request that trips a bug gets an answer; the connection and member go on.
            log.exception("member %d: request %r failed", self.member.id, op)
            return [request_id, "err", "internal", f"{type(exc).__name__}: {exc}", None]
        return [request_id, "ok", value]

    async def _execute(self, op: str, args: list[Any]) -> Any:
        handler = self._ops.get(op)
        if handler is not None:
            return await handler(args)
        service_op = self.services.ops.get(op)
        if service_op is None:
            raise BadRequest(f"unknown op {op!r:.40}")
        self._check_leader()
        return await service_op(self.member, args)

    def _check_leader(self) -> None:
        if self.member.role is not Role.LEADER:
            raise self.member.not_leader()

    # ----------------------------------------------------------------- ops

    async def _propose(self, args: list[Any]) -> Any:
        if len(args) not in (1, 2) or not isinstance(args[0], list):
            raise BadRequest("propose takes a list of commands and optionally a session")
        session = args[1] if len(args) == 2 else None
        if session is not None and not isinstance(session, list):
            raise BadRequest(f"a session is [client id, request number], not {session!r:.60}")
        return await self.member.propose_client_commands(
            args[0], decoded_from_cbor=True, session=session
        )

    async def _read(self, args: list[Any]) -> Any:
        if not 1 <= len(args) <= 2 or (len(args) == 2 and not isinstance(args[1], str)):
            raise BadRequest("read takes a query and optionally a read mode")
        mode = args[1] if len(args) == 2 else "linearizable"
        return await self.member.read(args[0], mode=mode)

    async def _get(self, args: list[Any]) -> Any:
        if not 1 <= len(args) <= 2 or not all(isinstance(a, str) for a in args):
            raise BadRequest("get takes a string key and optionally a read mode")
        mode = args[1] if len(args) == 2 else "linearizable"
        return await self.member.read(["get", args[0]], mode=mode)

    async def _status(self, args: list[Any]) -> Any:
        return self.member.status()

    async def _log(self, args: list[Any]) -> Any:
        if len(args) != 2 or not all(isinstance(a, int) for a in args):
            raise BadRequest("log takes a start index and a count")
        start, count = args
        entries = self.member.log_entries(start, max(0, min(count, MAX_LOG_PAGE)))
        return [list(e) for e in entries]

    async def _snapshot(self, args: list[Any]) -> Any:
        if args:
            raise BadRequest("snapshot takes no arguments")
        return await self.member.take_snapshot()

    async def _dump(self, args: list[Any]) -> Any:
        if len(args) != 2 or not all(type(a) is int and a >= 0 for a in args):
            raise BadRequest("dump takes a position and a count")
        applied, items = self.member.state_page(args[0], min(args[1], MAX_DUMP_PAGE))
        return [applied, items]

    async def _faults(self, args: list[Any]) -> Any:
        if len(args) != 1 or not isinstance(args[0], list) or not all(
                type(a) is int and a > 0 for a in args[0]):
            raise BadRequest("faults takes one list of member ids")
        return self.member.set_faults(args[0])

    # --------------------------------------------------------- membership

    def _describe(self) -> dict[str, Any]:
        membership = self.member.membership
        return {"voters": dict(membership.voters), "learners": dict(membership.learners),
                "leader": self.member.leader_id}

    def _member_id(self, op: str, args: list[Any]) -> int:
        self._check_leader()
        if not args or type(args[0]) is not int or args[0] <= 0:
            raise BadRequest(f"{op} takes a member id (a positive int) first")
        node_id: int = args[0]
        return node_id

    async def _members(self, args: list[Any]) -> Any:
        self._check_leader()
        if args:
            raise BadRequest("members takes no arguments")
        return self._describe()

    async def _add_member(self, args: list[Any]) -> Any:
        node_id = self._member_id("add_member", args)
        if (not 3 <= len(args) <= 4 or not isinstance(args[1], str)
                or type(args[2]) is not bool):
            raise BadRequest("add_member takes an id, an address, whether it votes and "
                             "optionally how long to wait for it to catch up")
        try:
            parse_address(args[1])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        await self.member.add_member(node_id, args[1], voter=args[2], wait=_wait(args[3:]))
        return self._describe()

    async def _promote_member(self, args: list[Any]) -> Any:
        node_id = self._member_id("promote_member", args)
        if len(args) > 2:
            raise BadRequest("promote_member takes an id and optionally how long to wait")
        await self.member.promote_member(node_id, wait=_wait(args[1:]))
        return self._describe()

    async def _remove_member(self, args: list[Any]) -> Any:
        node_id = self._member_id("remove_member", args)
        if len(args) != 1:
            raise BadRequest("remove_member takes one member id")
        await self.member.remove_member(node_id)
        return self._describe()

    async def _transfer(self, args: list[Any]) -> Any:
        node_id = self._member_id("transfer", args)
        if len(args) != 1:
            raise BadRequest("transfer takes one member id")
        return await self.member.transfer_leadership(node_id)


def _wait(args: list[Any]) -> float:
    """The optional wait argument of a membership op, in seconds."""
    wait = args[0] if args else None
    if wait is None:
        return MAX_MEMBERSHIP_WAIT
    if type(wait) not in (int, float) or not 0 <= wait <= MAX_MEMBERSHIP_WAIT:
        raise BadRequest(f"wait must be a number of seconds from 0 to {MAX_MEMBERSHIP_WAIT:g}")
    return float(wait)
