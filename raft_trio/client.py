"""The async client: finds the leader, follows redirects, retries within a deadline.

    async with raft_trio.connect(["127.0.0.1:7001", "127.0.0.1:7002"]) as kv:
        await kv.set("k", "v")
        assert await kv.get("k") == "v"

Writes are exactly-once: each Client is a session (a random 63-bit id,
made on its first write) and numbers its write requests; a request that
times out, loses its connection or has its entries cut by a new leader is
sent again, identical, until the deadline, and the cluster applies each
command of it once and answers a repeat with the first results
(raft_trio.sessions). If the cluster no longer holds the session (it expired
after the server's --session-expiry idle time) a request not sent before
starts a new session; one that was sent before raises SessionExpired, since
whether it applied is unknown.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import cbor2
import trio

from raft_trio.errors import (
    ClusterUnavailable,
    CommandError,
    LeadershipLost,
    NotLeader,
    RaftError,
    SessionExpired,
    StaleRequest,
    describe_os_error,
)
from raft_trio.server import HELLO_CLIENT, READ_MODES, parse_address
from raft_trio.transport import DEFAULT_MAX_FRAME, FrameError, FrameReader, send_frames

ReadMode = Literal["linearizable", "lease", "stale"]

DEFAULT_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 5.0
# Longest pause between tries while no leader answers. Short next to an election
# (1-2 s at the default timing), so a client notices the new leader soon after
# it is elected rather than up to a whole pause later.
MAX_BACKOFF = 0.1


class _Unencodable(CommandError):
    """A request that cannot be encoded or is too large to send, so it never left
    this client."""


class _Connection:
    def __init__(self, address: str, stream: trio.SocketStream):
        self.address = address
        self.stream = stream
        self.reader = FrameReader(stream)
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, address: str) -> _Connection:
        host, port = parse_address(address)
        stream = await trio.open_tcp_stream(host, port)
        try:
            await send_frames(stream, [cbor2.dumps([HELLO_CLIENT])])
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(address, stream)

    async def call(self, op: str, *args: Any) -> list[Any]:
        request_id = next(self.ids)
        try:
            request = cbor2.dumps([request_id, op, *args])
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise _Unencodable(f"request cannot be encoded as CBOR: {exc}") from None
        if len(request) > DEFAULT_MAX_FRAME:
            raise _Unencodable(
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


class _Sent:
    """Whether the tries of one request so far may have reached a leader."""

    __slots__ = ("any", "before_last")

    def __init__(self) -> None:
        self.any = False
        # As of before the latest try.
        self.before_last = False


class Client:
    def __init__(
        self,
        addresses: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ):
        if not addresses:
            raise ValueError("connect() needs at least one member address")
        for address in addresses:
            parse_address(address)
        self.addresses = list(addresses)
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._target = 0
        self._conn: _Connection | None = None
        self._lock = trio.Lock()
        # The session: made on the first write, and again if the cluster lost it.
        self.client_id: int | None = None
        self._seq = 0

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None

    # ------------------------------------------------------------ KV commands

    async def set(self, key: str, value: str) -> None:
        _check_str(key=key, value=value)
        await self.propose([["set", key, value]])

    async def get(self, key: str, *, mode: ReadMode = "linearizable") -> str | None:
        """The value of `key`, or None when absent.

        mode "linearizable" (default) sees every write acknowledged before
        the call; "lease" too, as long as members' clocks drift apart by no
        more than the servers allow for; "stale" is answered by whichever
        member the client is talking to and may miss recent writes.
        """
        _check_str(key=key)
        if mode not in READ_MODES:
            raise ValueError(f"mode must be one of {', '.join(READ_MODES)}, not {mode!r}")
        value = await (self._request("get", key) if mode == "linearizable"
                       else self._request("get", key, mode))
        if value is not None and not isinstance(value, str):
            raise RaftError(f"unexpected value for {key!r}: {value!r:.80}")
        return value

    async def delete(self, key: str) -> bool:
        """Delete `key`; returns whether it existed."""
        _check_str(key=key)
        (existed,) = await self.propose([["del", key]])
        return bool(existed)

    async def cas(self, key: str, expected: str | None, new: str) -> bool:
        """Set `key` to `new` if it holds `expected` (None: if absent); returns whether it did."""
        _check_str(key=key, new=new)
        if expected is not None:
            _check_str(expected=expected)
        (swapped,) = await self.propose([["cas", key, expected, new]])
        return bool(swapped)

    async def set_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Write a batch of keys in one round trip, as consecutive log entries."""
        commands = [["set", key, value] for key, value in items]
        # One pass over the batch instead of a call per item: this is the hot path.
        if not all(type(c[1]) is str and type(c[2]) is str for c in commands):
            bad = next(c for c in commands if not (type(c[1]) is str and type(c[2]) is str))
            _check_str(key=bad[1], value=bad[2])
        await self.propose(commands)

    async def propose(self, commands: Sequence[Any]) -> list[Any]:
        """Replicate raw state-machine commands, exactly once; returns their results in order."""
        commands = list(commands)
        if not commands:
            return []
        deadline = trio.current_time() + self.timeout
        # The whole request, retries included, holds the connection: a later
        # request of this session overtaking a retry would make the retry stale.
        results: list[Any] | None = None
        with trio.move_on_at(deadline + 0.25):
            async with self._lock:
                results = await self._propose_locked(commands, deadline)
        if results is None:
            raise ClusterUnavailable(
                f"no leader answered within {self.timeout:g}s "
                f"(members {', '.join(self.addresses)}; other requests held the connection)"
            )
        if not all(r is None for r in results):
            for result in results:
                if isinstance(result, list) and len(result) == 2 and result[0] == "error":
                    raise CommandError(str(result[1]))
        return results

    async def _propose_locked(self, commands: list[Any], deadline: float) -> list[Any]:
        if self.client_id is None:
            self._new_session()
        assert self.client_id is not None
        self._seq += 1
        sent = _Sent()
        renewed = False
        while True:
            session = [self.client_id, self._seq]
            try:
                results: list[Any] = await self._request_locked(
                    "propose", deadline, commands, session, sent=sent
                )
                return results
            except _Unencodable:
                # Found before anything was sent: the next request takes this number,
                # so that a new session still starts at 1.
                self._seq -= 1
                raise
            except LeadershipLost as exc:
                # Some of it may have applied: the identical request applies the rest.
                if trio.current_time() >= deadline:
                    raise ClusterUnavailable(
                        f"leadership kept changing for {self.timeout:g}s: {exc}"
                    ) from exc
            except SessionExpired as exc:
                if sent.before_last or renewed:
                    raise SessionExpired(
                        f"{exc}; this request was sent before, so whether it applied is "
                        f"unknown"
                    ) from None
                # Never sent before this refusal: nothing of it applied anywhere, so a
                # new session may send it as its first request.
                self._new_session()
                self._seq = 1
                renewed = True
                sent = _Sent()

    def _new_session(self) -> None:
        self.client_id = secrets.randbits(63)
        self._seq = 0

    # ------------------------------------------------------------ membership

    async def members(self) -> dict[str, Any]:
        """The leader's configuration: {"voters": {id: address}, "learners": ..., "leader": id}."""
        result: dict[str, Any] = await self._request("members")
        return result

    async def add_member(self, node_id: int, address: str, *, voter: bool = True,
                         wait: float | None = None) -> dict[str, Any]:
        """Add a member as a learner; unless `voter` is false, the leader promotes it
        once it has answered and caught up, waiting up to `wait` seconds for that
        (default: most of the request timeout). Returns the new configuration: a
        member that did not catch up in time is still under "learners" (start it,
        then call promote_member)."""
        result: dict[str, Any] = await self._request(
            "add_member", node_id, address, voter, self._membership_wait(wait))
        return result

    async def promote_member(self, node_id: int, *, wait: float | None = None
                             ) -> dict[str, Any]:
        """Make a learner a voter once it has caught up, waiting up to `wait` seconds
        (default: most of the request timeout); CommandError if it has not by then."""
        result: dict[str, Any] = await self._request(
            "promote_member", node_id, self._membership_wait(wait))
        return result

    def _membership_wait(self, wait: float | None) -> float:
        # The leader must answer before this client gives up on the request.
        limit = min(self.timeout, self.request_timeout) * 0.8
        return limit if wait is None else max(0.0, min(wait, limit))

    async def remove_member(self, node_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("remove_member", node_id)
        return result

    async def transfer_leadership(self, node_id: int) -> int:
        """Move leadership to voter `node_id`; returns the new leader's id."""
        result: int = await self._request("transfer", node_id)
        return result

    # ---------------------------------------------------------- leader finding

    async def _request(self, op: str, *args: Any) -> Any:
        # The deadline counts from the call, not from when the connection is free.
        deadline = trio.current_time() + self.timeout
        # A little grace so that the loop inside, which knows what went wrong, reports.
        with trio.move_on_at(deadline + 0.25):
            async with self._lock:
                return await self._request_locked(op, deadline, *args)
        raise ClusterUnavailable(
            f"no leader answered within {self.timeout:g}s "
            f"(members {', '.join(self.addresses)}; other requests held the connection)"
        )

    async def _request_locked(
        self, op: str, deadline: float, *args: Any, sent: _Sent | None = None
    ) -> Any:
        backoff = 0.02
        last_problem = "no member tried"
        while True:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise ClusterUnavailable(
                    f"no leader answered within {self.timeout:g}s "
                    f"(members {', '.join(self.addresses)}; last problem: {last_problem})"
                )
            reply: list[Any] | None = None
            with trio.move_on_after(min(remaining, self.request_timeout)):
                try:
                    conn = await self._connection()
                    if sent is not None:
                        sent.before_last = sent.any
                        sent.any = True
                    reply = await conn.call(op, *args)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                        FrameError, cbor2.CBORDecodeError) as exc:
                    last_problem = f"{self.addresses[self._target]}: {_describe(exc)}"
            if reply is None:
                if last_problem == "no member tried":
                    last_problem = f"{self.addresses[self._target]}: no answer in time"
                await self._next_member()
                await trio.sleep(min(backoff, max(0.0, deadline - trio.current_time())))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if reply[1] == "ok":
                return reply[2]
            code = reply[2]
            message = str(reply[3]) if len(reply) > 3 else "no message"
            extra = reply[4] if len(reply) > 4 else None
            if code == "not_leader":
                if sent is not None:
                    sent.any = sent.before_last  # refused before it was proposed
                last_problem = message
                hint = extra[1] if isinstance(extra, list) and len(extra) == 2 else None
                stale = hint == self.addresses[self._target]
                await self._follow(hint)
                if hint is None or stale:
                    # An election is probably under way: give it a moment.
                    await trio.sleep(min(backoff, max(0.0, deadline - trio.current_time())))
                    backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if code == "lost":
                if op == "propose":
                    # The caller knows how to resume after the applied prefix.
                    raise LeadershipLost(message, extra if isinstance(extra, list) else [])
                last_problem = message
                continue
            if code == "session_expired":
                raise SessionExpired(message)
            if code == "stale":
                raise StaleRequest(message)
            if code == "bad_request":
                raise CommandError(message)
            raise RaftError(message)

    async def _connection(self) -> _Connection:
        if self._conn is None:
            self._conn = await _Connection.open(self.addresses[self._target])
        return self._conn

    async def _next_member(self) -> None:
        await self.aclose()
        self._target = (self._target + 1) % len(self.addresses)

    async def _follow(self, address: str | None) -> None:
        if address is None:
            await self._next_member()
            return
        await self.aclose()
        if address not in self.addresses:
            self.addresses.append(address)
        self._target = self.addresses.index(address)


async def _ask_member(address: str, timeout: float, op: str, *args: Any) -> Any:
    """One request to one member, no redirect: for inspecting members, not for the KV."""
    with trio.fail_after(timeout):
        conn = await _Connection.open(address)
        try:
            reply = await conn.call(op, *args)
        finally:
            await conn.aclose()
    if reply[1] != "ok":
        raise RaftError(f"{address}: {reply[3] if len(reply) > 3 else reply[2]}")
    return reply[2]


async def member_status(
    address: str, *, timeout: float = DEFAULT_REQUEST_TIMEOUT
) -> dict[str, Any]:
    """Status of the member at `address`: role, term, leader, commit, last index, applied..."""
    result: dict[str, Any] = await _ask_member(address, timeout, "status")
    return result


async def cluster_status(
    members: Mapping[int, str], *, timeout: float = DEFAULT_REQUEST_TIMEOUT
) -> dict[int, dict[str, Any]]:
    """Every member's status, asked at once; an unreachable one has role "down" and an error."""
    rows: dict[int, dict[str, Any]] = {}

    async def one(node_id: int, address: str) -> None:
        try:
            rows[node_id] = await member_status(address, timeout=timeout)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, RaftError) as exc:
            rows[node_id] = {"id": node_id, "address": address, "role": "down",
                             "error": str(exc) or type(exc).__name__}

    async with trio.open_nursery() as nursery:
        for node_id, address in members.items():
            nursery.start_soon(one, node_id, address)
    return {i: rows[i] for i in sorted(rows)}


async def read_member_log(
    address: str, start: int, count: int, *, timeout: float = DEFAULT_REQUEST_TIMEOUT
) -> list[list[Any]]:
    """Up to `count` raw entries [index, term, kind, data] of one member's log from `start`."""
    result: list[list[Any]] = await _ask_member(address, timeout, "log", start, count)
    return result


async def snapshot_member(address: str, *, timeout: float = 60.0) -> int:
    """Have the member at `address` snapshot what it has applied; returns the snapshot's index."""
    result: int = await _ask_member(address, timeout, "snapshot")
    return result


async def read_member_state(
    address: str, position: int, count: int, *, timeout: float = DEFAULT_REQUEST_TIMEOUT
) -> tuple[int, list[list[Any]]]:
    """The member's applied index and up to `count` [key, value] pairs of its state."""
    applied, items = await _ask_member(address, timeout, "dump", position, count)
    return applied, items


async def set_member_faults(
    address: str, cut: Iterable[int], *, timeout: float = DEFAULT_REQUEST_TIMEOUT
) -> list[int]:
    """Have the member at `address` act cut off from the members `cut` (replacing the
    set it had); it must run with fault injection on. Returns the set in force."""
    result: list[int] = await _ask_member(address, timeout, "faults", sorted(cut))
    return result


def connect(
    addresses: Sequence[str] | str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> Client:
    """A client for the cluster reachable at `addresses` (use it with `async with`)."""
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    return Client(addresses, timeout=timeout, request_timeout=request_timeout)


def _describe(exc: Exception) -> str:
    """A connection problem in words: "connection refused", not "[Errno 111] ..."."""
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return str(exc) or type(exc).__name__


def _check_str(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")


__all__ = [
    "Client",
    "ClusterUnavailable",
    "NotLeader",
    "SessionExpired",
    "cluster_status",
    "connect",
    "member_status",
    "read_member_log",
    "read_member_state",
    "set_member_faults",
    "snapshot_member",
]
