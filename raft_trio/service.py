"""The client protocol, server side.

Requests on one connection are answered one at a time, in order: a client
wanting several requests in flight opens several connections (the stress
command runs one per client). A task per request cost the leader about 8% of
its CPU under `make bench` for a pipelining no client of ours does.

Frames after the hello are CBOR lists. Request: `[id, op, *args]`.
Answer: `[id, "ok", value]` or `[id, "err", code, message, extra]`, where
code is one of "not_leader" (extra: [leader_id, leader_address]), "lost",
"session_expired", "stale", "bad_request", "internal".

Ops: ["propose", [command, ...], session] -> list of results. The optional
session [client_id, seq] (unsigned 64-bit ints, seq from 1) makes the batch
request `seq` of that client, applied at most once however often it is
sent (raft_trio.sessions): a retry answers with the first time's results.
"session_expired": the cluster holds no session for the client and seq > 1,
so the request was not applied (nor will be), but an earlier try of it may
have been; "stale": the client's session has seen a later seq already.
"lost" (extra: results of the applied prefix) says the log was cut under
the batch: without a session the rest was not applied; with one, send the
identical request again.
["get", key, mode] -> value or None, where mode (optional) is
"linearizable" (the default: ReadIndex on the leader, others redirect),
"lease" (the leader answers under its lease) or "stale" (any member answers
from what it has applied);
["status"] -> dict; ["log", start, count] -> [[index, term, kind, data], ...]
(only what the log still holds: entries a snapshot covers are gone);
["snapshot"] -> index of this member's newest snapshot, after taking one of
what it has applied; ["dump", position, count] -> [applied index, [[key,
value], ...]]: a page of the state machine's contents, for checks.
["faults", [id, ...]] -> the sorted ids: act cut off from these peers from
now on (replacing the previous set; chaos testing only, refused with
bad_request unless the member runs with fault injection on).

Membership, answered by the leader (others redirect): ["members"] ->
{"voters": {id: address}, "learners": {...}, "leader": id};
["add_member", id, address, voter, wait] (a learner, promoted once it has
answered and caught up, unless voter is false; the optional wait, in
seconds, bounds how long the leader waits for that before it answers with
the member still a learner), ["promote_member", id, wait] (bad_request if
the learner has not caught up within wait), ["remove_member", id] -> the new
configuration as "members" gives it; ["transfer", id] -> the new leader's id.
A wait that is left out or null is MAX_MEMBERSHIP_WAIT.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import cbor2
import trio

from raft_trio.core import Role
from raft_trio.errors import (
    CommandError,
    LeadershipLost,
    NotLeader,
    RaftError,
    SessionExpired,
    StaleRequest,
)
from raft_trio.transport import FrameError, FrameReader, send_frames

if TYPE_CHECKING:
    from raft_trio.server import RaftServer


def parse_address(address: str) -> tuple[str, int]:
    from raft_trio.server import parse_address as parse

    return parse(address)

log = logging.getLogger("raft_trio.service")

MAX_LOG_PAGE = 10_000
MAX_DUMP_PAGE = 10_000
# Longest a membership request waits for a learner to catch up: a client that
# gave up must not hold its connection's task for ever.
MAX_MEMBERSHIP_WAIT = 600.0


class BadRequest(Exception):
    pass


_MEMBERSHIP_OPS = {"members", "add_member", "promote_member", "remove_member", "transfer"}


def _describe(server: RaftServer) -> dict[str, Any]:
    membership = server.membership
    return {"voters": dict(membership.voters), "learners": dict(membership.learners),
            "leader": server.leader_id}


async def _membership(server: RaftServer, op: str, args: list[Any]) -> Any:
    if server.role is not Role.LEADER:
        raise server._not_leader(server.leader_id)
    if op == "members":
        if args:
            raise BadRequest("members takes no arguments")
        return _describe(server)
    if not args or type(args[0]) is not int or args[0] <= 0:
        raise BadRequest(f"{op} takes a member id (a positive int) first")
    node_id = args[0]
    if op == "add_member":
        if (not 3 <= len(args) <= 4 or not isinstance(args[1], str)
                or type(args[2]) is not bool):
            raise BadRequest("add_member takes an id, an address, whether it votes and "
                             "optionally how long to wait for it to catch up")
        try:
            parse_address(args[1])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        await server.add_member(node_id, args[1], voter=args[2], wait=_wait(args[3:]))
        return _describe(server)
    if op == "promote_member":
        if len(args) > 2:
            raise BadRequest("promote_member takes an id and optionally how long to wait")
        await server.promote_member(node_id, wait=_wait(args[1:]))
        return _describe(server)
    if len(args) != 1:
        raise BadRequest(f"{op} takes one member id")
    if op == "remove_member":
        await server.remove_member(node_id)
    else:
        return await server.transfer_leadership(node_id)
    return _describe(server)


def _wait(args: list[Any]) -> float:
    """The optional wait argument of a membership op, in seconds."""
    wait = args[0] if args else None
    if wait is None:
        return MAX_MEMBERSHIP_WAIT
    if type(wait) not in (int, float) or not 0 <= wait <= MAX_MEMBERSHIP_WAIT:
        raise BadRequest(f"wait must be a number of seconds from 0 to {MAX_MEMBERSHIP_WAIT:g}")
    return float(wait)


async def serve_client(server: RaftServer, reader: FrameReader, stream: trio.abc.Stream) -> None:
    try:
        await _serve_requests(server, reader, stream)
    except FrameError as exc:
        # Tell the client why before the connection closes (a request id is not
        # known: the frame was never read).
        with trio.move_on_after(1):
            try:
                await send_frames(stream, [cbor2.dumps([None, "err", "bad_request", str(exc),
                                                        None])])
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the client is gone already
        raise


async def _serve_requests(server: RaftServer, reader: FrameReader, stream: trio.abc.Stream
                          ) -> None:
    async for frame in reader:
        request = cbor2.loads(frame)
        if not isinstance(request, list) or len(request) < 2 or not isinstance(request[1], str):
            raise ValueError(f"bad client request {request!r:.100}")
        reply = await _answer(server, request[0], request[1], request[2:])
        await send_frames(stream, [cbor2.dumps(reply)])


async def _answer(server: RaftServer, request_id: Any, op: str, args: list[Any]) -> list[Any]:
    try:
        value = await _execute(server, op, args)
    except NotLeader as exc:
        return [request_id, "err", "not_leader", str(exc), [exc.leader_id, exc.leader_address]]
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
        log.exception("member %d: request %r failed", server.id, op)
        return [request_id, "err", "internal", f"{type(exc).__name__}: {exc}", None]
    return [request_id, "ok", value]


async def _execute(server: RaftServer, op: str, args: list[Any]) -> Any:
    if op == "propose":
        if len(args) not in (1, 2) or not isinstance(args[0], list):
            raise BadRequest("propose takes a list of commands and optionally a session")
        session = args[1] if len(args) == 2 else None
        if session is not None and not isinstance(session, list):
            raise BadRequest(f"a session is [client id, request number], not {session!r:.60}")
        return await server.propose_client_commands(
            args[0], decoded_from_cbor=True, session=session
        )
    if op == "get":
        if not 1 <= len(args) <= 2 or not all(isinstance(a, str) for a in args):
            raise BadRequest("get takes a string key and optionally a read mode")
        mode = args[1] if len(args) == 2 else "linearizable"
        return await server.read(["get", args[0]], mode=mode)
    if op == "status":
        return server.status()
    if op == "log":
        if len(args) != 2 or not all(isinstance(a, int) for a in args):
            raise BadRequest("log takes a start index and a count")
        start, count = args
        entries = server.log_entries(start, max(0, min(count, MAX_LOG_PAGE)))
        return [list(e) for e in entries]
    if op == "snapshot":
        if args:
            raise BadRequest("snapshot takes no arguments")
        return await server.take_snapshot()
    if op == "faults":
        if len(args) != 1 or not isinstance(args[0], list) or not all(
                type(a) is int and a > 0 for a in args[0]):
            raise BadRequest("faults takes one list of member ids")
        return server.set_faults(args[0])
    if op in _MEMBERSHIP_OPS:
        return await _membership(server, op, args)
    if op == "dump":
        if len(args) != 2 or not all(type(a) is int and a >= 0 for a in args):
            raise BadRequest("dump takes a position and a count")
        applied, items = server.state_page(args[0], min(args[1], MAX_DUMP_PAGE))
        return [applied, items]
    raise BadRequest(f"unknown op {op!r:.40}")
