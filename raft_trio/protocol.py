"""What the client and the server agree on: the hellos, the ops, the answers, addresses.

Every connection starts with one hello frame: `["hello-peer", cluster name,
member id, its address]` from another member, `["hello-client"]` from a
client. Frames are `u32 length | cbor` (raft_trio.transport.framing).

Client frames after the hello are CBOR lists. Request: `[id, op, *args]`.
Answer: `[id, "ok", value]` or `[id, "err", code, message, extra]`, with code
one of ERROR_CODES: "not_leader" (extra: [leader_id, leader_address]), "lost",
"session_expired", "stale", "bad_request", "internal". A member that cannot
read a request at all (an oversized frame) answers `[null, "err",
"bad_request", message, null]` and closes the connection. Requests on one
connection are answered one at a time, in order.

Ops:
- ["propose", [command, ...], session] -> list of results. The optional
  session [client_id, seq] (unsigned 64-bit ints, seq from 1) makes the batch
  request `seq` of that client, applied at most once however often it is sent
  (raft_trio.sessions): a retry answers with the first time's results.
  "session_expired": the cluster holds no session for the client and seq > 1,
  so the request was not applied (nor will be), but an earlier try of it may
  have been; "stale": the client's session has seen a later seq already.
  "lost" (extra: results of the applied prefix) says the log was cut under the
  batch: without a session the rest was not applied; with one, send the
  identical request again.
- ["read", query, mode] -> what the state machine's `query(query)` returns,
  where mode (optional) is one of READ_MODES: "linearizable" (the default:
  ReadIndex on the leader, others redirect), "lease" (the leader answers under
  its lease) or "stale" (any member answers from what it has applied).
  ["get", key, mode] is the key-value store's read, ["read", ["get", key], mode].
- ["status"] -> dict; ["log", start, count] -> [[index, term, kind, data], ...]
  (only what the log still holds); ["snapshot"] -> index of this member's newest
  snapshot, after taking one of what it has applied; ["dump", position, count]
  -> [applied index, [item, ...]]: a page of the state machine's contents.
- ["faults", [id, ...]] -> the sorted ids: act cut off from these peers from
  now on (chaos testing only; refused unless the member runs with fault
  injection on).
- Membership, answered by the leader (others redirect): ["members"] ->
  {"voters": {id: address}, "learners": {...}, "leader": id}; ["add_member",
  id, address, voter, wait] (a learner, promoted once it has answered and
  caught up unless voter is false; wait, in seconds, bounds how long the
  leader waits for that before it answers with the member still a learner);
  ["promote_member", id, wait] (bad_request if the learner has not caught up
  within wait); ["remove_member", id] -> the new configuration as "members"
  gives it; ["transfer", id] -> the new leader's id.
- Ops that application services add (raft_trio.server.services): answered by
  the leader, redirected by the others like writes.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

HELLO_PEER = "hello-peer"
HELLO_CLIENT = "hello-client"

ReadMode = Literal["linearizable", "lease", "stale"]
READ_MODES: tuple[ReadMode, ...] = ("linearizable", "lease", "stale")

ERROR_CODES = ("not_leader", "lost", "session_expired", "stale", "bad_request", "internal")

_PORT = re.compile(r"[0-9]{1,5}")
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?")
_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_IPV6_LIKE = re.compile(r"[0-9A-Za-z:.%]+")  # with a zone: fe80::1%eth0


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of `host:port` ([v6]:port gives the bare v6 address); ValueError
    saying what is wrong otherwise."""
    check_address(address)
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def check_address(address: str) -> None:
    """Raise ValueError saying what is wrong with `address` as host:port, if anything."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"{address!r} is not host:port")
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad port {port!r} in {address!r}: expected 1-65535")
    if ":" in host and not host.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{address!r} is not host:port (one ':' too many)") from None
        raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port}")
    try:
        check_host(host)
    except ValueError as exc:
        raise ValueError(f"{address!r} is not host:port: {exc}") from None


def check_host(host: str) -> None:
    """Raise ValueError if `host` is neither a host name, an IPv4 address nor an IPv6
    address (in brackets or not)."""
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"unbalanced brackets in {host!r}")
    inner = host.removeprefix("[").removesuffix("]")
    if ":" in inner and _IPV6_LIKE.fullmatch(inner):
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            if inner.count(":") == 1:
                raise ValueError(f"{host!r} has a port; give the host alone") from None
            raise ValueError(f"bad IPv6 address {host!r}") from None
        return
    bad = next((c for c in host if not _HOST_CHARS.fullmatch(c)), None)
    if bad is not None:
        raise ValueError(f"{bad!r} cannot be part of a host name")
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"bad IPv4 address {host!r}") from None
        return
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"bad host name {host!r}")
