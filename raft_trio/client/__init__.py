"""The client side: `connect()` for the key-value store, `RaftClient` for any state
machine, and questions for one member at a time.

    async with raft_trio.connect(["127.0.0.1:7001", "127.0.0.1:7002"]) as kv:
        await kv.set("k", "v")
        assert await kv.get("k") == "v"
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from raft_trio.client.base import DEFAULT_REQUEST_TIMEOUT, DEFAULT_TIMEOUT, RaftClient
from raft_trio.client.kv import Client
from raft_trio.client.members import (
    cluster_status,
    member_status,
    read_member_log,
    read_member_state,
    set_member_faults,
    snapshot_member,
)
from raft_trio.errors import ClusterUnavailable, NotLeader, SessionExpired
from raft_trio.protocol import ReadMode


def connect(
    addresses: Sequence[str] | str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> Client:
    """A key-value client for the cluster reachable at `addresses` (use it with
    `async with`); `RaftClient(addresses)` is the same for any state machine."""
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    return Client(addresses, timeout=timeout, request_timeout=request_timeout)


__all__ = [
    "Client",
    "ClusterUnavailable",
    "NotLeader",
    "RaftClient",
    "ReadMode",
    "SessionExpired",
    "cluster_status",
    "connect",
    "member_status",
    "read_member_log",
    "read_member_state",
    "set_member_faults",
    "snapshot_member",
]
