"""What the tasks of one member share, and nothing else.

`RaftServer` is a `MemberState` with the public API on top; each task's module
(node loop, replicators, disk writer, applier, snapshots, reads, membership,
listener) sees the member through this class only, so none of them depends on
the others' code, and what they share is listed here in one place. Trio runs
them all on one thread: reading these fields needs no lock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from raft_trio.core import Membership, RaftNode, Role
from raft_trio.encoding import PackCache
from raft_trio.errors import NotLeader, RaftError
from raft_trio.protocol import parse_address
from raft_trio.server.inbox import InboxItem
from raft_trio.server.options import (
    DEFAULT_MAX_COMMAND_BYTES,
    DEFAULT_SESSION_EXPIRY,
    DEFAULT_SNAPSHOTS,
    DEFAULT_TIMING,
    MAX_COMMAND_BYTES,
    SnapshotPolicy,
    Timing,
)
from raft_trio.server.waiting import Pending
from raft_trio.sessions import SessionTable
from raft_trio.statemachine import StateMachine
from raft_trio.storage import WAL, SnapshotMeta

log = logging.getLogger("raft_trio.server")


class MemberState:
    def __init__(
        self,
        node_id: int,
        cluster: Mapping[int, str],
        data_dir: str | Path,
        state_machine: StateMachine,
        *,
        timing: Timing = DEFAULT_TIMING,
        snapshots: SnapshotPolicy = DEFAULT_SNAPSHOTS,
        cluster_name: str = "raft-trio",
        listen_host: str | None = None,
        address: str | None = None,
        promote_within: int = 1000,
        fault_injection: bool = False,
        session_expiry: float = DEFAULT_SESSION_EXPIRY,
        max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    ):
        if not session_expiry >= 0:
            raise ValueError(f"session_expiry must be >= 0 seconds, not {session_expiry!r}")
        if not 1 <= max_command_bytes <= MAX_COMMAND_BYTES:
            raise ValueError(f"max_command_bytes must be from 1 to {MAX_COMMAND_BYTES}, not "
                             f"{max_command_bytes!r}")
        if address is None:
            if node_id not in cluster:
                raise ValueError(f"node id {node_id} is not in the cluster {sorted(cluster)}; "
                                 f"a joining member needs its own address")
            address = cluster[node_id]
        for each in (*cluster.values(), address):
            parse_address(each)
        self.id = node_id
        # The configuration the cluster started from (as first recorded in the data
        # dir, once serving); `membership` is the one in force.
        self.cluster = dict(cluster)
        self.address = address
        self.promote_within = promote_within
        self.data_dir = Path(data_dir)
        self.snapshot_dir = self.data_dir / "snapshots"
        self.state_machine = state_machine
        self.timing = timing
        self.snapshots = snapshots
        self.cluster_name = cluster_name
        self.listen_host = listen_host
        self.fault_injection = fault_injection
        self.session_expiry = session_expiry
        self.max_command_bytes = max_command_bytes

        # Made by serve().
        self.node: RaftNode | None = None
        self.wal: WAL | None = None
        self.port: int | None = None
        self.inbox: trio.MemorySendChannel[InboxItem] | None = None
        self.nursery: trio.Nursery | None = None
        self.stopped = False
        self.removed = False

        # The replicated state beside the state machine: client sessions
        # (raft_trio.sessions), and how far it has been applied.
        self.sessions = SessionTable()
        self.last_applied = 0
        self.applied_term = 0
        self.applied_event = trio.Event()
        self.leader_event = trio.Event()
        self.pending = Pending()
        # What the disk writer made durable last, for the node loop to tell the core.
        self.durable: tuple[int, int] | None = None
        # The newest snapshot on disk (ours or the leader's), its file and size.
        self.snapshot_meta: SnapshotMeta | None = None
        self.snapshot_path: Path | None = None
        self.snapshot_size = 0
        # Entries packed for one peer, reused for the others; on a follower,
        # entries as they came from the leader, written to the WAL as they are.
        # (A leader's WAL writes and its messages rarely cover the same run:
        # with one message in flight per peer, a message carries the entries
        # of several writes.)
        self.packs = PackCache()
        self.counters = {
            "fsyncs": 0, "messages_sent": 0, "messages_received": 0,
            "snapshots_sent": 0, "snapshot_bytes_sent": 0,
            "snapshots_installed": 0, "snapshot_bytes_received": 0,
        }
        # When each peer last sent us anything (for refusing changes that lose quorum).
        self.last_heard: dict[int, float] = {}
        # Addresses peers gave in their hellos: a joining member learns its
        # leader's this way before any configuration names it.
        self.learned_addresses: dict[int, str] = {}
        # Peers this member acts cut off from (fault injection only): nothing is
        # sent to them and whatever they send is dropped.
        self.cut: frozenset[int] = frozenset()

    # ---------------------------------------------------------------- views

    @property
    def role(self) -> Role:
        return self.node.role if self.node is not None else Role.FOLLOWER

    @property
    def leader_id(self) -> int | None:
        return self.node.leader_id if self.node is not None else None

    @property
    def membership(self) -> Membership:
        """The configuration in force (the bootstrap one before start)."""
        if self.node is not None:
            return self.node.membership
        return Membership(self.cluster)

    def address_of(self, node_id: int) -> str | None:
        address = self.membership.address(node_id)
        return address or self.cluster.get(node_id) or self.learned_addresses.get(node_id)

    def not_leader(self, leader_id: int | None = None) -> NotLeader:
        """The error for a request only the leader answers, with whatever is known of it."""
        if leader_id is None:
            leader_id = self.leader_id
        address = self.address_of(leader_id) if leader_id is not None else None
        return NotLeader(leader_id, address)

    def recently_heard(self, peer: int) -> bool:
        """Whether `peer` sent anything within two election timeouts."""
        heard = self.last_heard.get(peer)
        window = self.timing.election_seconds * 2
        return heard is not None and trio.current_time() - heard <= window

    def check_running(self) -> None:
        if self.stopped:
            raise RaftError(f"member {self.id} has shut down")

    def running_inbox(self) -> trio.MemorySendChannel[InboxItem]:
        """The node loop's inbox, or RaftError if the member is not running."""
        if self.inbox is None:
            raise RaftError("the server is not running: use nursery.start(server.serve) first")
        return self.inbox

    # ------------------------------------------------------------- changes

    def applied(self, index: int, term: int) -> None:
        """Everything up to `index` is applied: wake whoever waits for that."""
        self.last_applied = index
        self.applied_term = term
        self.applied_event.set()
        self.applied_event = trio.Event()

    def leader_known(self) -> None:
        self.leader_event.set()
        self.leader_event = trio.Event()

    def note_snapshot(self, meta: SnapshotMeta, path: Path) -> None:
        """Remember `path` as the newest snapshot on disk, unless a newer one is known."""
        if self.snapshot_meta is None or meta.index > self.snapshot_meta.index:
            self.snapshot_meta = meta
            self.snapshot_path = path
            self.snapshot_size = path.stat().st_size

    def status(self) -> dict[str, Any]:
        """What `raft-trio status` shows of this member."""
        node = self.node
        return {
            "id": self.id,
            "address": self.address,
            "role": self.role.value,
            "term": node.term if node else 0,
            "leader": node.leader_id if node else None,
            "commit": node.commit if node else 0,
            "last_index": node.log.last_index if node else 0,
            "applied": self.last_applied,
            "log_start": node.log.offset + 1 if node else 1,
            "snapshot_index": self.snapshot_meta.index if self.snapshot_meta else 0,
            "snapshot_bytes": self.snapshot_size,
            "log_bytes": self.wal.bytes_on_disk if self.wal else 0,
            # Counters since start: how well writes and messages are being batched.
            "fsyncs": self.counters["fsyncs"],
            "messages_sent": self.counters["messages_sent"],
            "messages_received": self.counters["messages_received"],
            **{k: v for k, v in self.counters.items() if k.startswith("snapshot")},
            # Leader only: how far each member's log matches, for operators and checks.
            "progress": {peer: _describe_progress(node, peer) for peer in node.progress}
            if node else {},
        }


def _describe_progress(node: RaftNode, peer: int) -> dict[str, Any]:
    pr = node.progress[peer]
    state = "snapshot" if pr.pending_snapshot else "probe" if pr.probing else "replicate"
    return {"match": pr.match, "next": pr.next, "state": state,
            "inflight": len(pr.inflight), "probe_sent": pr.probe_sent}
