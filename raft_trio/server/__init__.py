"""One Raft member as one Trio nursery: `RaftServer` (member.py), with each task of the
nursery in a module of its own (see member.py for the map)."""

from raft_trio.protocol import HELLO_CLIENT, HELLO_PEER, READ_MODES, parse_address
from raft_trio.server.member import RaftServer
from raft_trio.server.options import (
    DEFAULT_MAX_COMMAND_BYTES,
    DEFAULT_SESSION_EXPIRY,
    MAX_COMMAND_BYTES,
    SnapshotPolicy,
    Timing,
)
from raft_trio.server.services import Member, Service

__all__ = [
    "DEFAULT_MAX_COMMAND_BYTES",
    "DEFAULT_SESSION_EXPIRY",
    "HELLO_CLIENT",
    "HELLO_PEER",
    "MAX_COMMAND_BYTES",
    "READ_MODES",
    "Member",
    "RaftServer",
    "Service",
    "SnapshotPolicy",
    "Timing",
    "parse_address",
]
