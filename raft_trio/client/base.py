"""`RaftClient`: the client of any state machine. It finds the leader, follows
redirects, retries within a deadline, and makes writes exactly-once.

Writes are exactly-once: each client is a session (a random 63-bit id, made
on its first write) and numbers its write requests; a request that times out,
loses its connection or has its entries cut by a new leader is sent again,
identical, until the deadline, and the cluster applies each command of it
once and answers a repeat with the first results (raft_trio.sessions). If the
cluster no longer holds the session (it expired after the server's
--session-expiry idle time) a request not sent before starts a new session;
one that was sent before raises SessionExpired, since whether it applied is
unknown.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import trio

from raft_trio.client.connection import CONNECTION_PROBLEMS, Connection, Unsendable, describe
from raft_trio.errors import (
    ClusterUnavailable,
    CommandError,
    LeadershipLost,
    RaftError,
    SessionExpired,
    StaleRequest,
)
from raft_trio.protocol import READ_MODES, ReadMode, parse_address

DEFAULT_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 5.0
# Longest pause between tries while no leader answers. Short next to an election
# (1-2 s at the default timing), so a client notices the new leader soon after
# it is elected rather than up to a whole pause later.
MAX_BACKOFF = 0.1


class _Sent:
    """Whether the tries of one request so far may have reached a leader."""

    __slots__ = ("any", "before_last")

    def __init__(self) -> None:
        self.any = False
        # As of before the latest try.
        self.before_last = False


class RaftClient:
    """A client of the cluster whose members are at `addresses` (any of them will do).

    `timeout` bounds each call, retries included, counted from the call;
    `request_timeout` bounds one try on one member.
    """

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
        self._conn: Connection | None = None
        self._lock = trio.Lock()
        # The session: made on the first write, and again if the cluster lost it.
        self.client_id: int | None = None
        self._seq = 0

    async def __aenter__(self) -> Self:
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

    # ---------------------------------------------------------- the state

    async def propose(self, commands: Sequence[Any]) -> list[Any]:
        """Replicate raw state-machine commands, exactly once; returns their results in order.

        A result of the form ["error", message] (a state machine's refusal of a
        command) raises CommandError."""
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

    async def read(self, query: Any, *, mode: ReadMode = "linearizable") -> Any:
        """What the state machine's `query(query)` answers, without a log entry.

        mode "linearizable" (default) sees every write acknowledged before the
        call; "lease" too, as long as members' clocks drift apart by no more
        than the servers allow for; "stale" is answered by whichever member
        the client is talking to and may miss recent writes.
        """
        _check_mode(mode)
        if mode == "linearizable":
            return await self._request("read", query)
        return await self._request("read", query, mode)

    async def call(self, op: str, *args: Any) -> Any:
        """A request to the leader: an op an application service added
        (raft_trio.server.services), with its arguments. It is tried again, as a
        read is, when a member redirects it or a connection fails on the way, so
        it may run twice: make an op safe to repeat, or have it propose through
        the log."""
        return await self._request(op, *args)

    # ---------------------------------------------------------- membership

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

    # ------------------------------------------------------------ sessions

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
            except Unsendable:
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

    # ------------------------------------------------------- leader finding

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
                except CONNECTION_PROBLEMS as exc:
                    last_problem = f"{self.addresses[self._target]}: {describe(exc)}"
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

    async def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = await Connection.open(self.addresses[self._target])
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


def _check_mode(mode: str) -> None:
    if mode not in READ_MODES:
        raise ValueError(f"mode must be one of {', '.join(READ_MODES)}, not {mode!r}")
