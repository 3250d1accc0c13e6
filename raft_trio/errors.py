"""Exceptions a user of raft-trio sees, shared by the server and the client."""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raft-trio raises on purpose."""


class NotLeader(RaftError):
    """This member is not the leader; `leader_id`/`leader_address` say who might be."""

    def __init__(self, leader_id: int | None, leader_address: str | None = None):
        hint = f"member {leader_id} at {leader_address}" if leader_id is not None else "unknown"
        super().__init__(f"not the leader; leader is {hint}")
        self.leader_id = leader_id
        self.leader_address = leader_address


class LeadershipLost(RaftError):
    """The proposal's entry was replaced by another leader's: it was not applied."""


class ClusterUnavailable(RaftError):
    """No member answered as leader within the client's timeout (no quorum reachable)."""


class CommandError(RaftError):
    """The server refused a request as malformed."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc`, with (nested) exception groups flattened.

    Errors raised inside a trio nursery reach the caller wrapped in groups.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    out: list[BaseException] = []
    for inner in exc.exceptions:
        out.extend(leaves(inner))
    return out
