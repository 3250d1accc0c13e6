"""Client sessions: the replicated table that makes a retried write apply exactly once.

Each client names itself with an id and numbers its requests 1, 2, 3...; a
request is a batch of commands, and a retry re-sends the identical request.
Every command of a request becomes one SESSION log entry holding
``[client, seq, pos, stamp, command]`` (pos: the command's place in its
request; stamp: the proposing leader's wall clock in milliseconds). Applying
such entries goes through `SessionTable.apply`, which per client remembers
the latest request's number and the results of its commands applied so far:

- an unknown client with seq 1 starts a session; an unknown client with a
  later seq gets SESSION_EXPIRED and nothing is applied (its session expired
  or the cluster lost it, so whether earlier tries applied is unknown);
- a seq below the session's gets STALE, nothing applied;
- a seq above the session's is a new request: the old results are dropped;
- positions already recorded for the current seq are duplicates: their
  recorded results are returned, nothing is applied again; the rest are
  applied and recorded.

An attempt present in the committed log always holds a prefix of its
request's positions (a new leader only ever cuts a suffix of the log), so a
retry after a cut applies exactly the positions that were missing.

Expiry is decided by the leader but replicated: it proposes a
SESSION_EXPIRY entry ``[stamp, idle_limit]`` and every member drops, at
that entry, the sessions idle for longer than idle_limit as of stamp.
Everything here depends on the log alone, never on a member's clock or
configuration, so every member holds the same table at the same index.

A limit that follows from numbering from 1: a client whose *first* request
is retried after its session already expired starts a new session with that
retry, so the retry applies again. Expiry is meant to be far longer than a
client keeps retrying (an hour against seconds), which makes this moot.

Pure Python with no trio: the Raft simulation in the tests reuses it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any

import cbor2

__all__ = ["SESSION_EXPIRED", "STALE", "Refusal", "Session", "SessionTable"]

_TAG = "raft-trio-sessions"
_VERSION = 1


class Refusal(enum.Enum):
    """The result of a session command that was not applied, in place of a state-machine one."""

    SESSION_EXPIRED = "session_expired"
    STALE = "stale"


SESSION_EXPIRED = Refusal.SESSION_EXPIRED
STALE = Refusal.STALE


class Session:
    __slots__ = ("active", "results", "seq")

    def __init__(self, seq: int, active: int, results: list[Any] | None = None) -> None:
        self.seq = seq
        # Results of this request's commands, by position, as far as they were applied.
        self.results: list[Any] = results if results is not None else []
        # Stamp of the newest entry seen from this client.
        self.active = active

    def __repr__(self) -> str:
        return f"Session(seq={self.seq}, active={self.active}, results={len(self.results)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return (self.seq, self.active, self.results) == (other.seq, other.active, other.results)

    __hash__ = None  # type: ignore[assignment]


class SessionTable:
    def __init__(self) -> None:
        self._sessions: dict[int, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, client: object) -> bool:
        return client in self._sessions

    def __iter__(self) -> Iterator[int]:
        return iter(self._sessions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionTable):
            return NotImplemented
        return self._sessions == other._sessions

    __hash__ = None  # type: ignore[assignment]

    def get(self, client: int) -> Session | None:
        return self._sessions.get(client)

    def apply(
        self,
        client: int,
        seq: int,
        pos: int,
        stamp: int,
        commands: list[Any],
        apply_batch: Callable[[list[Any]], list[Any]],
    ) -> list[Any]:
        """Apply the commands at positions pos, pos + 1, ... of request `seq` of `client`,
        as far as they were not applied already; returns a result for each of them.

        `apply_batch` applies a list of commands to the state machine and
        returns their results; it is called at most once, with the commands
        that are new.
        """
        count = len(commands)
        session = self._sessions.get(client)
        if session is None:
            if seq != 1 or pos != 0:
                return [SESSION_EXPIRED] * count
            session = self._sessions[client] = Session(seq, stamp)
            done = 0
        else:
            if stamp > session.active:
                session.active = stamp
            if seq < session.seq:
                return [STALE] * count
            done = len(session.results) if seq == session.seq else 0
            if pos > done:
                # Positions before `pos` never applied: applying these would skip
                # some, and a log written by this server never asks for it.
                return [STALE] * count
            if seq > session.seq:
                session.seq = seq
                session.results = []
        results = session.results
        if pos == done:
            fresh = apply_batch(commands)
            results.extend(fresh)
            return fresh
        if pos + count <= done:
            return results[pos : pos + count]
        repeated = results[pos:done]
        fresh = apply_batch(commands[done - pos :])
        results.extend(fresh)
        return repeated + fresh

    def idle(self, now: int, idle_limit: int) -> bool:
        """Whether any session has been idle for longer than `idle_limit` at `now`."""
        oldest = now - idle_limit
        return any(s.active < oldest for s in self._sessions.values())

    def expire(self, stamp: int, idle_limit: int) -> int:
        """Drop the sessions idle for longer than `idle_limit` at `stamp`; returns how many."""
        oldest = stamp - idle_limit
        doomed = [c for c, s in self._sessions.items() if s.active < oldest]
        for client in doomed:
            del self._sessions[client]
        return len(doomed)

    def encode(self) -> bytes:
        """The table as bytes for a snapshot's meta; `decode` gives it back."""
        return cbor2.dumps([
            _TAG, _VERSION,
            [[c, s.seq, s.active, s.results] for c, s in self._sessions.items()],
        ])

    @classmethod
    def decode(cls, data: bytes) -> SessionTable:
        """The table `encode` wrote; b"" (a snapshot from before sessions) is an empty one.
        Raises ValueError on anything `encode` could not have written."""
        table = cls()
        if not data:
            return table
        try:
            item = cbor2.loads(data)
        except (cbor2.CBORDecodeError, RecursionError) as exc:
            raise ValueError(f"session table: undecodable: {exc}") from None
        if type(item) is not list or len(item) != 3 or item[0] != _TAG:
            raise ValueError(f"session table: bad header {item!r:.80}")
        if item[1] != _VERSION:
            raise ValueError(f"session table: unsupported format version {item[1]!r:.20}")
        if type(item[2]) is not list:
            raise ValueError("session table: the sessions are not a list")
        sessions = table._sessions
        for row in item[2]:
            if (type(row) is not list or len(row) != 4
                    or not all(type(v) is int for v in row[:3]) or type(row[3]) is not list):
                raise ValueError(f"session table: bad session {row!r:.80}")
            client, seq, active, results = row
            if client in sessions:
                raise ValueError(f"session table: client {client} appears twice")
            sessions[client] = Session(seq, active, results)
        return table
