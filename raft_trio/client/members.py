"""Questions for one member at a time, with no redirect: its status, log, state,
a snapshot now, fault injection. For operators and checks, not for the state machine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import trio

from raft_trio.client.base import DEFAULT_REQUEST_TIMEOUT
from raft_trio.client.connection import Connection
from raft_trio.errors import RaftError


async def _ask_member(address: str, timeout: float, op: str, *args: Any) -> Any:
    """One request to one member, no redirect: for inspecting members, not for the KV."""
    with trio.fail_after(timeout):
        conn = await Connection.open(address)
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
