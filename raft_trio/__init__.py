"""raft-trio: a Raft consensus daemon and library built on Trio's structured concurrency."""

from raft_trio.client import Client, connect
from raft_trio.core import Role
from raft_trio.errors import (
    ClusterUnavailable,
    CommandError,
    LeadershipLost,
    NotLeader,
    RaftError,
    SessionExpired,
    StaleRequest,
)
from raft_trio.kv import KVStateMachine
from raft_trio.server import RaftServer, SnapshotPolicy, Timing
from raft_trio.statemachine import StateMachine

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClusterUnavailable",
    "CommandError",
    "KVStateMachine",
    "LeadershipLost",
    "NotLeader",
    "RaftError",
    "RaftServer",
    "Role",
    "SessionExpired",
    "SnapshotPolicy",
    "StaleRequest",
    "StateMachine",
    "Timing",
    "connect",
]
