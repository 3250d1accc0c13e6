"""raft-trio: a Raft consensus daemon and library built on Trio's structured concurrency."""

from raft_trio.client import Client, RaftClient, connect
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
from raft_trio.server import RaftServer, Service, SnapshotPolicy, Timing
from raft_trio.statemachine import StateMachine

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClusterUnavailable",
    "CommandError",
    "KVStateMachine",
    "LeadershipLost",
    "NotLeader",
    "RaftClient",
    "RaftError",
    "RaftServer",
    "Role",
    "Service",
    "SessionExpired",
    "SnapshotPolicy",
    "StaleRequest",
    "StateMachine",
    "Timing",
    "connect",
]
