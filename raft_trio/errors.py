"""Exceptions a user of raft-trio sees, shared by the server and the client."""

from __future__ import annotations

import os
import socket
from typing import Any


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
    """Entries of a proposal were replaced by another leader's: they were not applied.

    `applied` holds the results of the batch's leading commands that were
    applied before the lost ones (empty when none was): only the rest need
    proposing again.
    """

    def __init__(self, message: str, applied: list[Any] | None = None):
        super().__init__(message)
        self.applied = applied if applied is not None else []


class ClusterUnavailable(RaftError):
    """No member answered as leader within the client's timeout (no quorum reachable)."""


class CommandError(RaftError):
    """The server refused a request as malformed."""


class SessionExpired(RaftError):
    """The cluster no longer holds this client's session, so whether a request that
    was sent before applied is unknown (raft_trio.sessions)."""


class StaleRequest(RaftError):
    """The cluster has seen a later request of this client's session than this one."""


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


def describe_os_error(exc: OSError) -> str:
    """What went wrong, in words ("connection refused"), without an `[Errno N]` prefix;
    with the file name when there is one."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    inner = exc
    # trio.open_tcp_stream raises a plain OSError whose cause groups the real ones.
    if exc.errno is None and isinstance(exc.__cause__, BaseExceptionGroup):
        found = [e for e in leaves(exc.__cause__) if isinstance(e, OSError)]
        if found:
            inner = found[0]
    if inner.errno is None:
        return str(inner)
    text = os.strerror(inner.errno)
    text = text[0].lower() + text[1:]
    if inner.filename is not None:
        return f"{inner.filename}: {text}"
    return text
