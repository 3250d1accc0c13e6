"""One Raft member as one Trio nursery.

Tasks, all children of the nursery opened by `RaftServer.serve`:

- node loop: the only task that touches the sans-I/O core; it drains its
  inbox, then acts on one Ready (group-committing everything it drained);
- timer: feeds ticks to the inbox;
- one replicator per peer: owns the outbound connection, sends what the core
  addressed to that peer, reconnects with backoff; a dead peer never blocks
  the others because its queue is dropped while it is unreachable;
- disk writer: appends to the WAL and fsyncs once per batch of queued writes,
  then releases the messages that claimed durability;
- applier: applies committed entries in order and wakes the proposers,
  restores snapshots from the leader and starts snapshots of its own;
  readers wait for it to reach their read index, then query the state;
- snapshot writers: a task per snapshot of its own, writing a captured state
  while the rest goes on;
- listener: peers and clients on one port; a follower's inbound connection
  from the leader also stores the chunks of a snapshot the leader streams.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import cbor2
import trio

from raft_trio.command_encoding import encode_command
from raft_trio.core import (
    AppendEntries,
    Config,
    ConfigChangeError,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Membership,
    Message,
    NotLeaderError,
    RaftNode,
    Ready,
    Role,
    SnapshotRef,
    TransferInProgress,
)
from raft_trio.core.progress import Progress
from raft_trio.encoding import PackCache
from raft_trio.errors import (
    CommandError,
    LeadershipLost,
    NotLeader,
    RaftError,
    SessionExpired,
    StaleRequest,
    leaves,
)
from raft_trio.service import serve_client
from raft_trio.sessions import SESSION_EXPIRED, STALE, SessionTable
from raft_trio.statemachine import StateMachine
from raft_trio.storage import (
    WAL,
    IncomingSnapshot,
    SnapshotCorruption,
    SnapshotMeta,
    claim_data_dir,
    list_snapshots,
    open_snapshot,
    remove_older_snapshots,
    remove_partial_snapshots,
    snapshot_name,
    write_snapshot,
)
from raft_trio.syncthread import SyncThread
from raft_trio.transport import (
    DEFAULT_MAX_FRAME,
    CodecError,
    FrameError,
    FrameReader,
    decode_message_packed,
    encode_message,
    send_frames,
)
from raft_trio.transport.chunks import SnapshotAck, SnapshotChunk

log = logging.getLogger("raft_trio.server")

HELLO_PEER = "hello-peer"
HELLO_CLIENT = "hello-client"


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad address {address!r}: expected host:port")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock knobs; the core itself only counts ticks."""

    tick_interval: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_append_entries: int = 4096
    # One AppendEntries in flight per follower: proposals that arrive meanwhile
    # pile up and leave together in the next one, so batches grow with load.
    # Measured with `raft-trio stress --processes` at 200k entries: ~10% more
    # entries/s than 32 in flight, since per-message costs dominate here.
    max_inflight: int = 1
    # Longest a send to one peer may take before the connection is dropped and
    # made again.
    send_timeout: float = 5.0
    pre_vote: bool = True
    check_quorum: bool = True
    # How far apart members' clocks may run, as a fraction of elapsed time:
    # a lease is that much shorter than the election timeout it relies on.
    max_clock_drift: float = 0.1

    @property
    def lease_seconds(self) -> float:
        """How long after a heartbeat round leaves a majority's answers vouch for the leader.

        A member ignores vote requests for `election_ticks` ticks after it
        hears from its leader; its first tick may come at once, so count one
        tick fewer, and shrink that by the clock drift allowed.
        """
        return (self.election_ticks - 1) * self.tick_interval * (1 - self.max_clock_drift)


READ_MODES = ("linearizable", "lease", "stale")


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When a member snapshots its state and how much log it keeps behind it."""

    # Take a snapshot once this many entries were applied since the last one
    # (0: never on its own, only on request).
    entries: int = 100_000
    # ... or once the commands applied since the last one add up to this.
    bytes: int = 64 * 1024 * 1024
    # Entries kept behind a snapshot, so a follower that lags by fewer still
    # catches up from the log rather than needing the whole snapshot.
    trailing: int = 10_000
    # Streaming to a follower: chunk size, chunks sent ahead of the
    # follower's acknowledgements, and how long to wait for one before
    # giving up (the transfer resumes at the last acknowledged offset).
    chunk_bytes: int = 1024 * 1024
    window: int = 4
    ack_timeout: float = 10.0

    def __post_init__(self) -> None:
        if min(self.entries, self.bytes, self.trailing) < 0:
            raise ValueError("snapshot entries, bytes and trailing must be >= 0")
        if self.chunk_bytes < 1 or self.window < 1 or self.ack_timeout <= 0:
            raise ValueError("snapshot chunk_bytes, window and ack_timeout must be positive")


# Commands larger than this are refused. A member holds several copies of a
# command on its way through the log (the client's frame, the decoded request,
# its encoding in the log, a packed message per peer and the WAL's, the applied
# value): measured, one 50 MiB value took a leader to 657 MB. Like etcd's 1.5
# MiB request limit, the default keeps that small; the most keeps one entry
# and its AppendEntries well inside a peer connection's frame limit.
DEFAULT_MAX_COMMAND_BYTES = 1024 * 1024
MAX_COMMAND_BYTES = DEFAULT_MAX_FRAME // 2

# An hour: far longer than a client retries one request, so that a session
# expires only once its client is gone.
DEFAULT_SESSION_EXPIRY = 3600.0
# Longest pause between a leader's looks for idle sessions.
SESSION_EXPIRY_CHECK = 5.0

# Segments are deleted whole once a snapshot covers them, so smaller ones
# keep the disk use, and what a restart replays, close to what the trailing
# entries need: 4 MiB is about 60,000 entries of the stress command's size.
WAL_SEGMENT_BYTES = 4 * 1024 * 1024


class _Proposal:
    """Waiting room for one batch of proposed commands."""

    __slots__ = ("commands", "done", "error", "lost_from", "remaining", "results", "session")

    def __init__(self, count: int, commands: Sequence[Any] | None = None,
                 session: tuple[int, int, int] | None = None):
        # Commands as decoded from a client's CBOR frame: the leader applies these
        # instead of decoding its own entries again (the same values by construction).
        self.commands = commands
        # (client, seq, stamp) of a session request, whose entries are SESSION ones.
        self.session = session
        self.results: list[Any] = [None] * count
        self.remaining = count
        # Position of the first entry known to be lost: entries are applied in
        # order, so the ones before it are applied (or will be) and the rest never.
        self.lost_from: int | None = None
        self.error: RaftError | None = None
        self.done = trio.Event()

    def resolved(self, pos: int, result: Any) -> None:
        self.results[pos] = result
        self._settle()

    def resolved_run(self, pos: int, results: list[Any]) -> None:
        """resolved() for the entries at positions pos, pos + 1, ..."""
        count = len(results)
        self.results[pos : pos + count] = results
        self._settle(count)

    def lost(self, pos: int) -> None:
        if self.lost_from is None or pos < self.lost_from:
            self.lost_from = pos
        self._settle()

    def fail(self, error: RaftError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    def _settle(self, count: int = 1) -> None:
        self.remaining -= count
        if self.remaining or self.done.is_set():
            return
        if self.lost_from is not None:
            self.error = LeadershipLost(
                f"a new leader replaced entries {self.lost_from + 1}-{len(self.results)} of "
                f"this batch of {len(self.results)}: those were not applied",
                applied=self.results[: self.lost_from],
            )
        self.done.set()


@dataclass(slots=True)
class _DiskJob:
    hard_state: HardState | None
    entries: list[Entry]
    messages: list[Message]
    # The log now starts after this snapshot (installed from the leader).
    snapshot: SnapshotRef | None = None
    # Delete the WAL segments holding nothing after this index.
    compact_upto: int = 0


@dataclass(frozen=True, slots=True)
class _Restore:
    """Applier work item: replace the state with the installed snapshot."""

    snapshot: SnapshotRef


class _AckState:
    """What a follower acknowledged of the snapshot being streamed to it."""

    __slots__ = ("accepted", "changed", "index", "received", "term")

    def __init__(self, index: int, term: int, received: int) -> None:
        self.index = index
        self.term = term
        self.received = received
        self.accepted = True
        self.changed = trio.Event()


# Ticks a configuration change waits for a new leader to commit an entry of
# its term, or for the change before it to commit, before it is refused.
TRANSIENT_RETRY_TICKS = 50

# Raft retransmits whatever matters, so a peer that falls this far behind
# loses its oldest queued messages rather than growing memory without bound.
MAX_OUTBOX = 4096


@dataclass(slots=True)
class _Outbox:
    """Messages waiting for one peer's replicator."""

    queue: deque[Message | SnapshotAck] = field(default_factory=lambda: deque(maxlen=MAX_OUTBOX))
    wakeup: trio.Event = field(default_factory=trio.Event)
    connected: bool = False


_TICK = object()
_DURABLE = object()


class _ReadWait:
    """A read waiting for the leader to confirm it (ReadIndex)."""

    __slots__ = ("done", "error", "index")

    def __init__(self) -> None:
        self.index = 0
        self.error: RaftError | None = None
        self.done = trio.Event()

    def fail(self, error: RaftError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class RaftServer:
    def __init__(
        self,
        node_id: int,
        cluster: Mapping[int, str],
        data_dir: str | Path,
        state_machine: StateMachine,
        *,
        timing: Timing = Timing(),
        snapshots: SnapshotPolicy = SnapshotPolicy(),
        cluster_name: str = "raft-trio",
        listen_host: str | None = None,
        address: str | None = None,
        promote_within: int = 1000,
        fault_injection: bool = False,
        session_expiry: float = DEFAULT_SESSION_EXPIRY,
        max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    ):
        """`cluster` is the configuration a new cluster starts with (voters by id);
        once the log or a snapshot holds one, that one rules. A member joining an
        existing cluster passes an empty `cluster` and its own `address`, then
        asks the leader to add it (`raft-trio members add`, or `serve --join`).

        `fault_injection` lets clients cut this member off from chosen peers
        (`set_faults`), for chaos testing; never turn it on in production.
        While leader, this member expires client sessions idle for longer than
        `session_expiry` seconds (0: never). A command whose encoding exceeds
        `max_command_bytes` is refused with CommandError (at most
        MAX_COMMAND_BYTES, so that one entry always fits a message to a peer)."""
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
        # The bootstrap configuration; `membership` below is the one in force.
        self.cluster = dict(cluster)
        self.address = address
        self.promote_within = promote_within
        self.data_dir = Path(data_dir)
        self.state_machine = state_machine
        self.timing = timing
        self.snapshots = snapshots
        self.snapshot_dir = self.data_dir / "snapshots"
        self.cluster_name = cluster_name
        self.listen_host = listen_host
        self.session_expiry = session_expiry
        self.max_command_bytes = max_command_bytes
        # Client sessions, part of the replicated state (raft_trio.sessions).
        self.sessions = SessionTable()
        # Index of the SESSION_EXPIRY entry this member proposed last, and when
        # it looks for idle sessions next.
        self._expiry_index = 0
        self._expiry_check_at = 0.0
        self.node: RaftNode | None = None
        self.wal: WAL | None = None
        self.port: int | None = None
        self.last_applied = 0
        self._pending: dict[int, tuple[int, _Proposal, int]] = {}
        self.counters = {
            "fsyncs": 0, "messages_sent": 0, "messages_received": 0,
            "snapshots_sent": 0, "snapshot_bytes_sent": 0,
            "snapshots_installed": 0, "snapshot_bytes_received": 0,
        }
        # Entries packed for one peer, reused for the others; on a follower,
        # entries as they came from the leader, written to the WAL as they are.
        # (A leader's WAL writes and its messages rarely cover the same run:
        # with one message in flight per peer, a message carries the entries
        # of several writes.)
        self._packs = PackCache()
        self._outboxes: dict[int, _Outbox] = {}
        self._inbox_send: trio.MemorySendChannel[Any] | None = None
        self._durable: tuple[int, int] | None = None
        self._applied_event = trio.Event()
        self._leader_event = trio.Event()
        self._stopped = False
        # Index of the last entry handed to the disk writer: a Ready whose entries
        # start at or below it has cut the log there.
        self._last_handed = 0
        self._nursery: trio.Nursery | None = None
        # The newest snapshot on disk (ours or the leader's) and its size.
        self.snapshot_meta: SnapshotMeta | None = None
        self._snapshot_path: Path | None = None
        self._snapshot_size = 0
        # Serialises everything that creates or deletes snapshot files.
        self._snapshot_lock = trio.Lock()
        self._snapshot_writing = False
        self._snapshot_event = trio.Event()
        self._applied_term = 0
        self._applied_bytes = 0  # command bytes applied since the last snapshot
        self._restoring = False
        self._incoming: IncomingSnapshot | None = None
        self._incoming_from = 0
        self._acks: dict[int, _AckState] = {}
        self._compact_upto = 0
        self._loaded_snapshot: SnapshotRef | None = None
        self._replicators: dict[int, trio.CancelScope] = {}
        # Proposals that arrived while leadership was being handed over.
        self._held: list[Any] = []
        self._transfers: list[_Proposal] = []
        self._retry: list[Any] = []
        # When each peer last sent us anything (for refusing changes that lose quorum).
        self._last_heard: dict[int, float] = {}
        # Addresses peers gave in their hellos: a joining member learns its
        # leader's this way before any configuration names it.
        self._learned_addresses: dict[int, str] = {}
        self.removed = False
        self._reads: set[_ReadWait] = set()
        # When each heartbeat round (term, round) was first seen leaving: a lower
        # bound on when followers heard it, which is where a lease starts.
        self._round_sent: dict[tuple[int, int], float] = {}
        self._last_round = (0, 0)
        self.fault_injection = fault_injection
        # Peers this member acts cut off from (fault injection only): nothing is
        # sent to them and whatever they send is dropped.
        self._cut: frozenset[int] = frozenset()

    # ------------------------------------------------------------ public API

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
        return address or self.cluster.get(node_id) or self._learned_addresses.get(node_id)

    def status(self) -> dict[str, Any]:
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
            "snapshot_bytes": self._snapshot_size,
            "log_bytes": self.wal.bytes_on_disk if self.wal else 0,
            # Counters since start: how well writes and messages are being batched.
            "fsyncs": self.counters["fsyncs"],
            "messages_sent": self.counters["messages_sent"],
            "messages_received": self.counters["messages_received"],
            **{k: v for k, v in self.counters.items() if k.startswith("snapshot")},
            # Leader only: how far each member's log matches, for operators and checks.
            "progress": {peer: _describe_progress(pr) for peer, pr in node.progress.items()}
            if node else {},
        }

    def set_faults(self, cut: Iterable[int]) -> list[int]:
        """Act cut off from these peers (replacing the previous set) until told otherwise.

        Only one direction of each link: cutting a link both ways takes telling
        both ends. Refused unless the server was built with `fault_injection`.
        """
        if not self.fault_injection:
            raise CommandError(f"member {self.id}: fault injection is off (serve "
                               f"--fault-injection turns it on)")
        new = frozenset(cut)
        if new != self._cut:
            log.info("member %d: fault injection: cut off from %s", self.id,
                     ", ".join(map(str, sorted(new))) or "no member")
            for peer in new - self._cut:
                box = self._outboxes.get(peer)
                if box is not None:
                    # What was queued before the cut would otherwise still go out.
                    if any(type(m) is InstallSnapshot for m in box.queue):
                        self._report_snapshot_failed(peer)
                    box.queue.clear()
            self._cut = new
            for peer in new:
                acks = self._acks.get(peer)
                if acks is not None:
                    # A snapshot transfer waiting for this peer's acknowledgements
                    # notices the cut now rather than after its ack timeout.
                    acks.changed.set()
                    acks.changed = trio.Event()
        return sorted(new)

    def log_entries(self, start: int, count: int) -> list[Entry]:
        """Up to `count` entries of the in-memory log from index `start`."""
        if self.node is None:
            return []
        return self.node.log.slice(start, start + count)

    async def propose(self, command: Any) -> Any:
        """Replicate one command; returns what the state machine's apply returned."""
        (result,) = await self.propose_many([command])
        return result

    async def propose_many(
        self, commands: Sequence[Any], *, session: tuple[int, int] | None = None
    ) -> list[Any]:
        """Replicate a batch of commands as consecutive entries in one go.

        With `session` = (client id, request number), the batch is request
        number `seq` of that client and applies at most once however often it
        is proposed (raft_trio.sessions): proposing the identical request again
        returns the results of the first time.
        """
        return await self.propose_client_commands(
            commands, decoded_from_cbor=False, session=session
        )

    async def propose_client_commands(
        self, commands: Sequence[Any], *, decoded_from_cbor: bool,
        session: Sequence[int] | None = None,
    ) -> list[Any]:
        """propose_many for the client protocol.

        Each command is encoded here, so every entry's bytes are exactly one
        CBOR item: the applier relies on that to decode batches in one call.
        Commands `decoded_from_cbor` are applied as they are on this member
        (they equal what decoding their entry gives), saving that decode.
        """
        if self._inbox_send is None:
            raise RuntimeError("the server is not running: use nursery.start(server.serve) first")
        if not commands:
            return []
        stamped: tuple[int, int, int] | None = None
        try:
            datas = list(map(encode_command, commands))
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise CommandError(f"command cannot be encoded as CBOR: {exc}") from None
        largest = max(map(len, datas))
        if largest > self.max_command_bytes:
            raise CommandError(
                f"a command of {largest} bytes exceeds this cluster's limit of "
                f"{self.max_command_bytes} bytes per command (serve --max-command-bytes)"
            )
        if session is not None:
            client, seq = _check_session(session)
            stamp = int(time.time() * 1000)
            stamped = (client, seq, stamp)
            datas = _session_datas(client, seq, stamp, datas)
        proposal = _Proposal(len(datas), commands if decoded_from_cbor else None, stamped)
        try:
            await self._inbox_send.send(("propose", datas, proposal))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise RaftError("the server shut down before the entry was proposed") from None
        await proposal.done.wait()
        error = proposal.error
        if stamped is not None:
            if error is None:
                _raise_refusal(proposal.results, stamped)
            elif isinstance(error, LeadershipLost):
                _raise_refusal(error.applied, stamped)
        if error is not None:
            raise error
        return proposal.results

    async def read(self, query: Any, *, mode: str = "linearizable") -> Any:
        """Answer a read-only `query` from the state machine, without a log entry.

        "linearizable" (ReadIndex): the leader confirms with a heartbeat round
        that it still leads, waits until it has applied what was committed
        when the read arrived, then answers; raises NotLeader elsewhere.
        "lease": the leader answers without that round while a majority's
        answers to a recent one vouch for it (needs check_quorum, and clocks
        that drift apart by at most Timing.max_clock_drift); otherwise as
        "linearizable". "stale": any member answers from what it has applied,
        which may miss recent writes. A state machine without `query` can
        only be read through the log (propose).
        """
        if mode not in READ_MODES:
            raise CommandError(f"unknown read mode {mode!r}: use one of {', '.join(READ_MODES)}")
        query_state = getattr(self.state_machine, "query", None)
        if query_state is None:
            raise CommandError("this state machine has no query(): read through propose()")
        self._check_running()
        if mode != "stale":
            index = self._lease_index() if mode == "lease" else None
            if index is None:
                index = await self._read_index()
            await self.wait_applied(index)
        return query_state(query)

    def _lease_index(self) -> int | None:
        """The read index under a lease still in force, or None."""
        node = self.node
        basis = node.lease_basis() if node is not None else None
        if node is None or basis is None:
            return None
        confirmed, index = basis
        term = node.term
        started = max((at for (t, r), at in self._round_sent.items()
                       if t == term and r <= confirmed), default=None)
        if started is None or trio.current_time() >= started + self.timing.lease_seconds:
            return None
        return index

    async def _read_index(self) -> int:
        if self._inbox_send is None:
            raise RaftError("the server is not running: use nursery.start(server.serve) first")
        node = self.node
        if node is not None and node.role is not Role.LEADER:
            raise self._not_leader(node.leader_id)  # spare the node loop a round trip
        wait = _ReadWait()
        self._reads.add(wait)
        try:
            try:
                await self._inbox_send.send(("read", wait))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise RaftError("the server shut down before the read was confirmed") from None
            await wait.done.wait()
        finally:
            self._reads.discard(wait)
        if wait.error is not None:
            raise wait.error
        return wait.index

    async def wait_applied(self, index: int) -> None:
        while self.last_applied < index:
            self._check_running()
            await self._applied_event.wait()

    async def wait_for_leader(self) -> int:
        """Wait until this member knows a leader; returns its id."""
        while True:
            if self.node is not None and self.node.leader_id is not None:
                return self.node.leader_id
            self._check_running()
            await self._leader_event.wait()

    # ------------------------------------------------------------- membership

    async def add_member(self, node_id: int, address: str, *, voter: bool = True,
                         wait: float | None = None) -> Membership:
        """Add a member as a learner and, unless `voter` is false, promote it to voter
        once it has answered this leader and its log is within `promote_within`
        entries of the commit index. Leader only.

        With `wait` (seconds), stop waiting for it to catch up after that long and
        return the configuration with the member still a learner: a member that is
        not running yet must never become a voter, since a voter that does not
        answer counts against the quorum. Adding a member again at the address it
        has is not an error (a retried request, or `serve --join` of a member an
        operator added): it waits for the member and promotes it as asked.
        """
        parse_address(address)
        if self.membership.address(node_id) != address:
            try:
                await self._change_config(lambda m: m.add_learner(node_id, address))
            except CommandError:
                if self.membership.address(node_id) != address:
                    raise
                # Added meanwhile by another request for the same member.
        if not voter:
            if node_id in self.membership.voters:
                raise CommandError(f"member {node_id} is already a voter")
            return self.membership
        if not await self._wait_caught_up(node_id, wait):
            return self.membership
        try:
            return await self._change_config(self._promotion(node_id))
        except CommandError:
            if node_id in self.membership.voters:
                return self.membership  # promoted meanwhile (a second add_member of it)
            raise

    async def promote_member(self, node_id: int, *, wait: float | None = None) -> Membership:
        """Make learner `node_id` a voter once it has caught up (as add_member says);
        with `wait`, refuse with CommandError if it has not after that many seconds."""
        if not await self._wait_caught_up(node_id, wait):
            raise CommandError(f"member {node_id} is still a learner: "
                               f"{self._lag(node_id) or 'it fell behind again'}")
        return await self._change_config(self._promotion(node_id))

    async def remove_member(self, node_id: int) -> Membership:
        """Remove a member, unless the voters left would not have a quorum that answers."""

        def change(current: Membership) -> Membership:
            new = current.remove(node_id)
            live = [v for v in new.voters if v == self.id or self._recently_heard(v)]
            if len(live) < new.quorum:
                raise ConfigChangeError(
                    f"removing member {node_id} would lose quorum: of the voters left "
                    f"{sorted(new.voters)}, only {sorted(live)} answered lately and "
                    f"{new.quorum} are needed"
                )
            return new

        return await self._change_config(change)

    def _recently_heard(self, peer: int) -> bool:
        heard = self._last_heard.get(peer)
        window = self.timing.tick_interval * self.timing.election_ticks * 2
        return heard is not None and trio.current_time() - heard <= window

    async def transfer_leadership(self, node_id: int) -> int:
        """Hand leadership to voter `node_id`; returns the new leader's id.

        Proposals made meanwhile wait, then go to the new leader through the
        usual redirect (or to this one again if the handover is abandoned).
        """
        self._check_running()
        assert self._inbox_send is not None and self.node is not None
        started = _Proposal(1)
        self._transfers.append(started)
        try:
            await self._inbox_send.send(("transfer", node_id, started))
            limit = self.timing.tick_interval * self.timing.election_ticks * 3
            with trio.move_on_after(limit):
                while True:
                    if started.error is not None:
                        raise started.error
                    node = self.node
                    if node.leader_id is not None and node.leader_id != self.id:
                        return node.leader_id
                    if (started.done.is_set() and node.transferee is None
                            and node.role is Role.LEADER):
                        raise RaftError(f"member {node_id} did not take over leadership: "
                                        f"the handover was abandoned")
                    with trio.move_on_after(self.timing.tick_interval):
                        await self._leader_event.wait()
            raise RaftError(f"leadership did not move to member {node_id} in time")
        finally:
            self._transfers.remove(started)

    async def _change_config(self, change: Callable[[Membership], Membership]) -> Membership:
        self._check_running()
        assert self._inbox_send is not None
        proposal = _Proposal(1)
        await self._inbox_send.send(("config", change, proposal))
        await proposal.done.wait()
        if proposal.error is not None:
            raise proposal.error
        return self.membership

    async def _wait_caught_up(self, node_id: int, wait: float | None) -> bool:
        """Whether learner `node_id` caught up (see _lag), or became a voter, within
        `wait` seconds."""
        with trio.move_on_after(math.inf if wait is None else wait):
            while True:
                self._check_running()
                node = self.node
                assert node is not None
                if node.role is not Role.LEADER:
                    raise self._not_leader(node.leader_id)
                if node_id in node.membership.voters:
                    return True  # promoted meanwhile
                if node_id not in node.membership.learners:
                    raise CommandError(f"member {node_id} is not in the cluster")
                if self._lag(node_id) is None:
                    return True
                await trio.sleep(self.timing.tick_interval)
        return False

    def _lag(self, node_id: int) -> str | None:
        """Why learner `node_id` cannot vote yet without stalling commits, or None if it can.

        It must have acknowledged an append of this leader's (a log that merely
        looks short next to `promote_within` says nothing of a member that never
        answered), been heard from lately, and hold the log to within
        `promote_within` entries of the commit index.
        """
        node = self.node
        assert node is not None
        pr = node.progress.get(node_id)
        if pr is None or pr.match == 0:
            return "it has not answered the leader yet (is it running?)"
        if not self._recently_heard(node_id):
            return "the leader has not heard from it lately"
        if pr.match < node.commit - self.promote_within:
            return (f"its log reaches index {pr.match}, more than {self.promote_within} "
                    f"entries behind the commit index {node.commit}")
        return None

    def _promotion(self, node_id: int) -> Callable[[Membership], Membership]:
        """The change promoting `node_id`, checked again where it is made (the node loop)."""

        def change(current: Membership) -> Membership:
            lag = self._lag(node_id) if node_id in current.learners else None
            if lag is not None:
                raise ConfigChangeError(f"member {node_id} is still a learner: {lag}")
            return current.promote(node_id)

        return change

    async def _shut_down_soon(self) -> None:
        # A moment for the last messages (a removed leader's TimeoutNow) to leave.
        await trio.sleep(self.timing.tick_interval * 3)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def take_snapshot(self) -> int:
        """Snapshot the state as applied now, unless the newest snapshot already
        covers it; returns the index the newest snapshot stands for once it is durable."""
        self._check_running()
        if not callable(getattr(self.state_machine, "snapshot", None)):
            raise RaftError("this member's state machine cannot take snapshots")
        while True:
            while self._restoring or self._snapshot_writing:
                self._check_running()
                await self._snapshot_event.wait()
            self._check_running()
            covered = self.snapshot_meta.index if self.snapshot_meta else 0
            if self.last_applied <= covered:
                return covered
            target = self.last_applied
            await self._start_snapshot()
            while self._snapshot_writing:
                self._check_running()
                await self._snapshot_event.wait()
            if self.snapshot_meta is not None and self.snapshot_meta.index >= target:
                return self.snapshot_meta.index
            # The write failed (it was logged): say so rather than loop.
            raise RaftError(f"member {self.id}: the snapshot at index {target} failed; see its log")

    def state_page(self, position: int, count: int) -> tuple[int, list[Any]]:
        """The applied index and a page of the state machine's contents, for checks."""
        page = getattr(self.state_machine, "page", None)
        if page is None:
            raise RaftError("this member's state machine cannot list its contents")
        return self.last_applied, page(position, count)

    def _check_running(self) -> None:
        if self._stopped:
            raise RaftError(f"member {self.id} has shut down")

    # ----------------------------------------------------------------- serve

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the member until cancelled; `nursery.start(server.serve)` returns once listening.

        Raises DataDirError at once if another process (or server) uses the data
        directory, or it belongs to another member.
        """
        given = self.cluster
        claim = await trio.to_thread.run_sync(claim_data_dir, self.data_dir, self.id, given)
        try:
            # The configuration the cluster started from is the one first recorded.
            self.cluster = claim.bootstrap
            await self._serve(given, task_status)
        finally:
            claim.release()

    async def _serve(self, given: dict[int, str], task_status: trio.TaskStatus[None]) -> None:
        snapshot = await trio.to_thread.run_sync(self._load_snapshot)
        wal, state = await trio.to_thread.run_sync(
            WAL.open, self.data_dir / "wal", WAL_SEGMENT_BYTES
        )
        marker = state.snapshot_marker
        if marker is not None and (snapshot is None or marker[0] > snapshot.index):
            wal.close()
            raise RaftError(
                f"member {self.id}: the log in {self.data_dir / 'wal'} starts after a snapshot "
                f"at index {marker[0]}, but the newest snapshot in {self.snapshot_dir} is at "
                f"{snapshot.index if snapshot else 'none'}: a snapshot file is missing"
            )
        self.wal = wal
        t = self.timing
        config = Config(
            election_ticks=t.election_ticks,
            heartbeat_ticks=t.heartbeat_ticks,
            max_append_entries=t.max_append_entries,
            max_inflight=t.max_inflight,
            pre_vote=t.pre_vote,
            check_quorum=t.check_quorum,
        )
        try:
            self.node = RaftNode(
                self.id, self._base_membership(), hard_state=state.hard_state,
                entries=state.entries, snapshot=snapshot, config=config,
            )
        except ValueError as exc:
            wal.close()
            raise RaftError(f"member {self.id}: cannot rebuild the log in {self.data_dir}: "
                            f"{exc}") from None
        try:
            self._check_address(self.node.membership, given)
        except RaftError:
            wal.close()
            raise
        self.last_applied = self.node.applied
        self._applied_term = snapshot.term if snapshot else 0
        self._loaded_snapshot = snapshot
        log.info("member %d: loaded term %d, snapshot at %d, %d log entries from %s", self.id,
                 state.hard_state.term, self.node.snapshot.index, len(self.node.log),
                 self.data_dir)
        inbox_send, inbox_recv = trio.open_memory_channel[Any](4096)
        disk_send, disk_recv = trio.open_memory_channel[_DiskJob](256)
        apply_send, apply_recv = trio.open_memory_channel[list[Entry] | _Restore](1024)
        self._inbox_send = inbox_send
        self._outboxes = {}
        self._stopped = False
        self._last_handed = self.node.log.last_index
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                host, port = parse_address(self.address)
                listeners = await trio.open_tcp_listeners(port, host=self.listen_host or host)
                self.port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(trio.serve_listeners, self._handle_connection, listeners)
                nursery.start_soon(self._disk_writer, disk_recv)
                nursery.start_soon(self._applier, apply_recv)
                self._sync_replicators()
                nursery.start_soon(self._timer)
                nursery.start_soon(self._node_loop, inbox_recv, disk_send, apply_send)
                log.info("member %d: listening on %s", self.id, self.address)
                task_status.started()
        finally:
            self._inbox_send = None
            self._stopped = True
            shut_down = RaftError("the server shut down before the entry was applied")
            # Proposals still queued never reached the core; callers blocked on a full
            # inbox get BrokenResourceError once it is closed.
            while True:
                try:
                    item = inbox_recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if isinstance(item, tuple) and item[0] == "propose":
                    item[2].fail(shut_down)
            inbox_recv.close()
            self._fail_pending(shut_down)
            for wait in list(self._reads):
                wait.fail(RaftError("the server shut down before the read was confirmed"))
            self._applied_event.set()
            self._leader_event.set()
            self._snapshot_event.set()
            self._nursery = None
            incoming, self._incoming = self._incoming, None
            with trio.CancelScope(shield=True):
                if incoming is not None:
                    await trio.to_thread.run_sync(incoming.discard)
                await trio.to_thread.run_sync(wal.close)

    def _check_address(self, membership: Membership, given: Mapping[int, str]) -> None:
        """Refuse to listen at an address other than the one the configuration in
        force gives this member (its peers look for it there), and say so when the
        `given` bootstrap configuration differs from it elsewhere: the recorded
        configuration, and the log's changes to it, rule."""
        stored = membership.address(self.id)
        if stored and stored != self.address:
            raise RaftError(
                f"member {self.id}: its address is {stored} in the cluster's configuration "
                f"(kept in {self.data_dir}), not {self.address}: start it with {stored}, or "
                f"remove it from the cluster and add it again at the new address"
            )
        differ = sorted(i for i, a in given.items() if membership.address(i) != a)
        if differ:
            log.warning("member %d: the cluster given at start differs from the configuration "
                        "in force (kept in %s) for members %s; using the configuration: %s",
                        self.id, self.data_dir, ", ".join(map(str, differ)), membership)

    def _base_membership(self) -> Membership:
        """The configuration as of the log's start: the snapshot's, or the bootstrap one."""
        meta = self.snapshot_meta
        if meta is None:
            return Membership(self.cluster)
        if meta.membership:
            return Membership.decode(meta.membership)
        # A file from before snapshots recorded addresses.
        return Membership({v: self.cluster.get(v, "") for v in meta.voters})

    def _sync_replicators(self) -> None:
        """One replicator per member of the configuration in force, and no more."""
        node, nursery = self.node, self._nursery
        assert node is not None and nursery is not None
        peers = set(node.peers)
        if node.leader_id is not None and node.leader_id != self.id:
            # A leader this member's configuration does not name yet (it is joining):
            # it must still be answered.
            peers.add(node.leader_id)
        for gone in [p for p in self._replicators if p not in peers]:
            self._replicators.pop(gone).cancel()
            self._outboxes.pop(gone, None)
        for peer in sorted(peers - set(self._replicators)):
            scope = trio.CancelScope()
            self._replicators[peer] = scope
            self._outboxes[peer] = _Outbox()
            nursery.start_soon(self._replicator, peer, scope)

    def _load_snapshot(self) -> SnapshotRef | None:
        """Restore the state machine from the newest snapshot on disk, if any.

        A damaged newest snapshot stops the member: the log it replaced may
        be gone, so an older snapshot or an empty state could lose entries.
        """
        remove_partial_snapshots(self.snapshot_dir)
        paths = list_snapshots(self.snapshot_dir)
        if not paths:
            return None
        restore = getattr(self.state_machine, "restore", None)
        if restore is None:
            raise RaftError(f"member {self.id}: {paths[0]} exists but the state machine "
                            f"cannot restore snapshots")
        meta, reader = open_snapshot(paths[0])
        with reader:
            try:
                sessions = SessionTable.decode(meta.sessions)
            except ValueError as exc:
                raise SnapshotCorruption(paths[0], str(exc)) from None
            try:
                restore(reader)
            except ValueError as exc:
                raise SnapshotCorruption(paths[0], f"the state machine refused it: {exc}") from None
        self.sessions = sessions
        self._note_snapshot(meta, paths[0])
        log.info("member %d: restored the snapshot at index %d from %s", self.id, meta.index,
                 paths[0])
        return SnapshotRef(meta.index, meta.term)

    # ------------------------------------------------------------- node loop

    async def _timer(self) -> None:
        assert self._inbox_send is not None
        interval = self.timing.tick_interval
        while True:
            # Ticks enter the inbox at least an interval apart, however late one
            # was: a lease relies on a follower needing election_ticks - 1 whole
            # intervals to count an election timeout after it heard from the leader
            # (the inbox keeps order, so the ticks it counts entered after that).
            # A late tick delays the rest, by the scheduling latency at least.
            await trio.sleep(interval)
            await self._inbox_send.send(_TICK)

    async def _node_loop(
        self,
        inbox: trio.MemoryReceiveChannel[Any],
        disk: trio.MemorySendChannel[_DiskJob],
        applier: trio.MemorySendChannel[list[Entry] | _Restore],
    ) -> None:
        node = self.node
        assert node is not None
        async for item in inbox:
            self._handle(node, item)
            # Drain what else is queued so one Ready (one fsync, one message per
            # peer) covers all of it: this is where batching comes from.
            for _ in range(4096):
                try:
                    item = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                self._handle(node, item)
            if self._durable is not None:
                node.persisted(*self._durable)
                self._durable = None
                if node.role is Role.LEADER and node.transferee is None:
                    self._release_held(node)
            if self._compact_upto:
                await disk.send(_DiskJob(None, [], [], compact_upto=self._compact_upto))
                self._compact_upto = 0
            # More than one Ready when a long run of committed entries is handed
            # out in slices; each dispatch awaits, so other tasks run in between.
            while node.has_ready():
                await self._dispatch(node, node.ready(), disk, applier)

    def _handle(self, node: RaftNode, item: Any) -> None:
        if item is _TICK:
            node.tick()
            if self._retry:
                retry, self._retry = self._retry, []
                for again in retry:
                    self._handle(node, again)
            if self.session_expiry and node.role is Role.LEADER:
                self._expire_sessions(node)
        elif item is _DURABLE:
            pass  # a wake-up only: the loop reads self._durable after draining
        elif isinstance(item, tuple):
            kind = item[0]
            if kind == "read":
                try:
                    node.read_index(item[1])
                except NotLeaderError as exc:
                    item[1].fail(self._not_leader(exc.leader_id))
            elif kind == "propose":
                _, datas, proposal = item
                try:
                    first, term = node.propose(
                        datas, EntryKind.COMMAND if proposal.session is None else EntryKind.SESSION
                    )
                except NotLeaderError as exc:
                    if node.role is Role.LEADER:
                        # Elected by its own vote, its term not yet durable: in a moment.
                        self._held.append(item)
                        return
                    proposal.fail(self._not_leader(exc.leader_id))
                    return
                except TransferInProgress:
                    self._held.append(item)
                    return
                pending = self._pending
                for pos in range(len(datas)):
                    pending[first + pos] = (term, proposal, pos)
            elif kind == "snapshot_taken":
                meta: SnapshotMeta = item[1]
                node.snapshot_taken(meta.index, meta.term)
                node.compact_log(meta.index - self.snapshots.trailing)
                self._compact_upto = node.log.offset
            elif kind == "snapshot_failed":
                node.report_snapshot(item[1], delivered=False)
            elif kind == "config":
                change, proposal = item[1], item[2]
                try:
                    index = node.propose_config(change(node.membership))
                except NotLeaderError as exc:
                    proposal.fail(self._not_leader(exc.leader_id))
                except TransferInProgress:
                    self._held.append(item)
                except ConfigChangeError as exc:
                    # Right after an election, or while another change is on its way
                    # (two requests at once): try again on the coming ticks.
                    left = item[3] if len(item) == 4 else TRANSIENT_RETRY_TICKS
                    if (exc.transient or node.config_index > node.commit) and left > 0:
                        self._retry.append((*item[:3], left - 1))
                    else:
                        proposal.fail(CommandError(str(exc)))
                else:
                    self._pending[index] = (node.term, proposal, 0)
            elif kind == "transfer":
                _, target, done = item
                try:
                    node.transfer_leadership(target)
                except NotLeaderError as exc:
                    done.fail(self._not_leader(exc.leader_id))
                except ConfigChangeError as exc:
                    done.fail(CommandError(str(exc)))
                else:
                    done.done.set()  # under way: the caller watches the leader
        else:
            node.step(item)

    def _expire_sessions(self, node: RaftNode) -> None:
        """Now and then, propose dropping the sessions idle for too long, if there are any.

        The members drop them when they apply the entry, not now: the log
        decides, so that every member drops the same ones at the same index.
        """
        now = trio.current_time()
        if now < self._expiry_check_at:
            return
        limit = self.session_expiry
        self._expiry_check_at = now + min(SESSION_EXPIRY_CHECK,
                                          max(limit / 4, self.timing.tick_interval))
        if self._expiry_index > self.last_applied or not self.sessions:
            return  # the last one is still on its way (or was cut, and the log moves on)
        stamp = int(time.time() * 1000)
        limit_ms = int(limit * 1000)
        if not self.sessions.idle(stamp, limit_ms):
            return
        try:
            self._expiry_index, _ = node.propose([cbor2.dumps([stamp, limit_ms])],
                                                 EntryKind.SESSION_EXPIRY)
        except (NotLeaderError, TransferInProgress):
            pass  # the next look tries again

    def _release_held(self, node: RaftNode) -> None:
        """Hand the proposals held back (a handover, a term not yet durable) to the core again."""
        held, self._held = self._held, []
        for item in held:
            self._handle(node, item)

    def _not_leader(self, leader_id: int | None) -> NotLeader:
        address = self.address_of(leader_id) if leader_id is not None else None
        return NotLeader(leader_id, address)

    async def _dispatch(
        self,
        node: RaftNode,
        ready: Ready,
        disk: trio.MemorySendChannel[_DiskJob],
        applier: trio.MemorySendChannel[list[Entry] | _Restore],
    ) -> None:
        if ready.soft_state is not None:
            soft = ready.soft_state
            log.info("member %d: %s in term %d (leader %s)", self.id, soft.role.value,
                     soft.term, soft.leader_id)
            if soft.leader_id is not None:
                self._leader_event.set()
                self._leader_event = trio.Event()
            if soft.leader_id not in self._replicators and soft.leader_id not in (None, self.id):
                self._sync_replicators()
            if soft.transferee is None:
                # The handover is over (done or abandoned): proposals held meanwhile
                # go to the core now, or fail with a redirect to the new leader.
                self._release_held(node)
        if ready.reads or ready.dropped_reads:
            self._settle_reads(node, ready)
        heartbeat_round = node.heartbeat_round
        if heartbeat_round != self._last_round:
            self._note_round(heartbeat_round)
        if ready.membership is not None:
            log.info("member %d: configuration now %s", self.id, ready.membership)
            self._sync_replicators()
        if ready.removed and not self.removed:
            self.removed = True
            log.warning("member %d: removed from the cluster; shutting down", self.id)
            assert self._nursery is not None
            self._nursery.start_soon(self._shut_down_soon)
        if ready.snapshot is not None:
            # Whatever we proposed up to there was settled by the snapshot, result
            # unknown here; whatever after it is gone with the log it replaced.
            self._fail_pending(RaftError(
                "a snapshot from the leader replaced this member's log: the outcome of "
                "these entries is not known here"
            ))
            self._last_handed = ready.snapshot.index
            loaded = self._loaded_snapshot
            if ready.snapshot != loaded or self.last_applied != ready.snapshot.index:
                await applier.send(_Restore(ready.snapshot))
            # else: the snapshot loaded at start; only the log's new start is recorded
        if ready.entries:
            first = ready.entries[0].index
            if first <= self._last_handed and self._pending:
                self._lose_pending_from(first)
            self._last_handed = ready.entries[-1].index
        # The leader sends to its peers while its own write is still in flight.
        self._route(ready.messages)
        if ready.needs_persist() or ready.persisted_messages:
            await disk.send(_DiskJob(ready.hard_state, ready.entries, ready.persisted_messages,
                                     snapshot=ready.snapshot))
        if ready.committed:
            await applier.send(ready.committed)

    def _settle_reads(self, node: RaftNode, ready: Ready) -> None:
        for wait, index in ready.reads:
            wait.index = index
            wait.done.set()
        if ready.dropped_reads:
            lost = self._not_leader(node.leader_id)
            for wait in ready.dropped_reads:
                wait.fail(lost)

    def _note_round(self, heartbeat_round: tuple[int, int]) -> None:
        """A heartbeat round is leaving now: remember when, for leases."""
        self._last_round = heartbeat_round
        sent = self._round_sent
        if len(sent) >= 64:
            # Only the newest confirmed round matters; keep a recent few.
            for old in sorted(sent)[:32]:
                del sent[old]
        sent.setdefault(heartbeat_round, trio.current_time())

    def _route(self, messages: Sequence[Message | SnapshotAck]) -> None:
        outboxes = self._outboxes
        cut = self._cut
        for msg in messages:
            box = outboxes.get(msg.dst)
            if box is None or not box.connected or (cut and msg.dst in cut):
                # Unreachable peer: Raft retries what matters, but a snapshot is
                # only retried once the core hears it was not sent.
                if type(msg) is InstallSnapshot:
                    self._report_snapshot_failed(msg.dst)
                continue
            box.queue.append(msg)
            box.wakeup.set()

    def _report_snapshot_failed(self, peer: int) -> None:
        if self._inbox_send is None:
            return
        try:
            self._inbox_send.send_nowait(("snapshot_failed", peer))
        except trio.WouldBlock:
            pass  # the core's own timeout retries

    def _lose_pending_from(self, index: int) -> None:
        """The log was cut at `index`: our proposals from there on will never apply."""
        pending = self._pending
        for lost_index in [i for i in pending if i >= index]:
            _, proposal, pos = pending.pop(lost_index)
            proposal.lost(pos)

    def _fail_pending(self, error: RaftError) -> None:
        for _, proposal, _ in self._pending.values():
            proposal.fail(error)
        self._pending.clear()

    # ------------------------------------------------------------ disk writer

    async def _disk_writer(self, jobs: trio.MemoryReceiveChannel[_DiskJob]) -> None:
        wal = self.wal
        assert wal is not None
        syncer = SyncThread(f"raft-trio wal {self.id}")
        try:
            await self._write_jobs(wal, syncer, jobs)
        finally:
            with trio.CancelScope(shield=True):
                await syncer.stop()

    async def _write_jobs(
        self, wal: WAL, syncer: SyncThread, jobs: trio.MemoryReceiveChannel[_DiskJob]
    ) -> None:
        async for job in jobs:
            batch = [job]
            while True:
                try:
                    batch.append(jobs.receive_nowait())
                except trio.WouldBlock:
                    break
            writes: list[_Write] = []
            hard_state: HardState | None = None
            entries: list[Entry] = []
            marker: SnapshotRef | None = None
            compact_upto = 0
            for queued in batch:
                if queued.snapshot is not None:
                    # Everything queued before the marker is written before it.
                    if marker is not None or hard_state is not None or entries:
                        writes.append(self._write(marker, hard_state, entries))
                        hard_state, entries = None, []
                    marker = queued.snapshot
                if queued.hard_state is not None:
                    hard_state = queued.hard_state
                if queued.entries:
                    _merge_entries(entries, queued.entries)
                compact_upto = max(compact_upto, queued.compact_upto)
            if marker is not None or hard_state is not None or entries:
                writes.append(self._write(marker, hard_state, entries))
            if writes:
                await syncer.run(_write_and_sync, wal, writes)
                self.counters["fsyncs"] += 1
            if compact_upto:
                freed = await syncer.run(wal.compact, compact_upto)
                if freed:
                    log.debug("member %d: deleted %d bytes of log up to index %d", self.id,
                              freed, compact_upto)
            if entries:
                last = entries[-1]
                self._durable = (last.index, last.term)
                assert self._inbox_send is not None
                try:
                    # Never block here: the node loop may itself be waiting on us.
                    self._inbox_send.send_nowait(_DURABLE)
                except trio.WouldBlock:
                    pass  # the loop is busy and will see self._durable on its next pass
            for queued in batch:
                self._route(queued.messages)

    def _write(self, marker: SnapshotRef | None, hard_state: HardState | None,
               entries: list[Entry]) -> _Write:
        # The cache is looked up here, in trio's thread (it is not thread-safe);
        # whatever it does not hold is packed by the WAL in the writer's thread.
        return marker, hard_state, entries, self._packs.pieces(entries)

    # --------------------------------------------------------------- applier

    async def _applier(self, batches: trio.MemoryReceiveChannel[list[Entry] | _Restore]) -> None:
        sm = self.state_machine
        apply = sm.apply
        apply_batch: Callable[[list[Any]], list[Any]] | None = getattr(sm, "apply_batch", None)
        batch = apply_batch if apply_batch is not None else (lambda cs: list(map(apply, cs)))
        pending = self._pending
        policy = self.snapshots
        can_snapshot = callable(getattr(sm, "snapshot", None))
        async for entries in batches:
            if type(entries) is _Restore:
                await self._restore(entries.snapshot)
                continue
            assert type(entries) is list
            runs = self._own_runs(entries) if pending else None
            if runs is not None:
                self._apply_own(entries, runs, batch)
            else:
                results = self._apply_entries(entries, apply, batch)
                if pending:
                    self._resolve(entries, results)
            last = entries[-1]
            self.last_applied = last.index
            self._applied_term = last.term
            self._applied_event.set()
            self._applied_event = trio.Event()
            if can_snapshot and not self._snapshot_writing:
                self._applied_bytes += sum(map(len, map(_data_of, entries)))
                covered = self.snapshot_meta.index if self.snapshot_meta else 0
                if (policy.entries and last.index - covered >= policy.entries) or (
                    policy.bytes and self._applied_bytes >= policy.bytes
                ):
                    await self._start_snapshot()
            # Let proposers and readers run between large batches.
            await trio.lowlevel.checkpoint()

    async def _restore(self, ref: SnapshotRef) -> None:
        """Replace the state with the snapshot the leader sent, already durable on disk."""
        path = self.snapshot_dir / snapshot_name(ref.index, ref.term)
        restore = getattr(self.state_machine, "restore", None)
        assert restore is not None, "only a state machine with snapshots gets one installed"
        self._restoring = True
        try:
            def load() -> tuple[SnapshotMeta, SessionTable]:
                meta, reader = open_snapshot(path)
                with reader:
                    sessions = SessionTable.decode(meta.sessions)
                    restore(reader)
                return meta, sessions

            # A failure here leaves the state behind the log: nothing safe is
            # left to do but stop the member, and a restart loads the file again.
            meta, self.sessions = await trio.to_thread.run_sync(load)
        finally:
            self._restoring = False
            self._snapshot_event.set()
            self._snapshot_event = trio.Event()
        self.last_applied = ref.index
        self._applied_term = ref.term
        self._applied_bytes = 0
        self.counters["snapshots_installed"] += 1
        self._note_snapshot(meta, path)
        log.info("member %d: installed the leader's snapshot at index %d", self.id, ref.index)
        self._applied_event.set()
        self._applied_event = trio.Event()

    def _note_snapshot(self, meta: SnapshotMeta, path: Path) -> None:
        """Remember `path` as the newest snapshot on disk, unless a newer one is known."""
        if self.snapshot_meta is None or meta.index > self.snapshot_meta.index:
            self.snapshot_meta = meta
            self._snapshot_path = path
            self._snapshot_size = path.stat().st_size

    async def _start_snapshot(self) -> None:
        """Snapshot the state as applied right now (call between applies).

        With `capture_snapshot` the state is captured here and written by a
        task of its own; without it, applying waits while it is written.
        """
        sm = self.state_machine
        assert self.node is not None
        membership = self.node.membership_at(self.last_applied)
        try:
            # The sessions are part of the replicated state: captured at the same
            # applied index as the state machine's.
            sessions = self.sessions.encode()
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            # Results must be CBOR (see StateMachine); a session holding one that
            # is not cannot be put in a snapshot, but applying goes on.
            self._applied_bytes = 0
            log.error("member %d: no snapshot at index %d: a client session holds a result "
                      "that cannot be encoded as CBOR: %s", self.id, self.last_applied, exc)
            return
        meta = SnapshotMeta(self.last_applied, self._applied_term, tuple(membership.voters),
                            sessions=sessions, membership=membership.encode())
        capture = getattr(sm, "capture_snapshot", None)
        self._snapshot_writing = True
        self._applied_bytes = 0
        if capture is not None and self._nursery is not None:
            self._nursery.start_soon(self._write_snapshot, meta, capture())
        else:
            await self._write_snapshot(meta, sm.snapshot)  # type: ignore[attr-defined]

    async def _write_snapshot(self, meta: SnapshotMeta, write_state: Callable[[BinaryIO], None]
                              ) -> None:
        try:
            async with self._snapshot_lock:
                started = trio.current_time()
                path = await trio.to_thread.run_sync(
                    write_snapshot, self.snapshot_dir, meta, write_state
                )
                await trio.to_thread.run_sync(remove_older_snapshots, self.snapshot_dir)
                self._note_snapshot(meta, path)
            log.info("member %d: snapshot at index %d written in %.2fs (%d bytes)", self.id,
                     meta.index, trio.current_time() - started, self._snapshot_size)
            if self._inbox_send is not None:
                await self._inbox_send.send(("snapshot_taken", self.snapshot_meta))
        except OSError as exc:
            log.error("member %d: writing the snapshot at index %d failed: %s", self.id,
                      meta.index, exc)
        finally:
            self._snapshot_writing = False
            self._snapshot_event.set()
            self._snapshot_event = trio.Event()

    def _own_runs(self, entries: list[Entry]) -> list[tuple[_Proposal, int, int]] | None:
        """If this member proposed every one of `entries` and still holds their commands
        as decoded from the client, the entries as runs (proposal, first position, count)."""
        pending = self._pending
        runs = []
        i, n = 0, len(entries)
        while i < n:
            entry = entries[i]
            waiting = pending.get(entry.index)
            if waiting is None:
                return None
            term, proposal, pos = waiting
            commands = proposal.commands
            if term != entry.term or commands is None:
                return None
            count = min(len(commands) - pos, n - i)
            if count > 1:
                # A proposal's entries were appended together, so if the last one
                # here is still ours of that term, so is every one in between
                # (the Log Matching property).
                last = entries[i + count - 1]
                end = pending.get(last.index)
                if end is None or end[1] is not proposal or end[0] != last.term:
                    return None
            runs.append((proposal, pos, count))
            i += count
        return runs

    def _apply_own(self, entries: list[Entry], runs: list[tuple[_Proposal, int, int]],
                   batch: Callable[[list[Any]], list[Any]]) -> None:
        """Apply the runs _own_runs found and hand each proposal its results."""
        pending = self._pending
        pop = pending.pop
        sessions = self.sessions
        index = entries[0].index
        for proposal, pos, count in runs:
            commands = proposal.commands
            assert commands is not None
            if pos or count != len(commands) or type(commands) is not list:
                commands = list(commands[pos : pos + count])
            session = proposal.session
            if session is None:
                results = batch(commands)
            else:
                client, seq, stamp = session
                results = sessions.apply(client, seq, pos, stamp, commands, batch)
            for each in range(index, index + count):
                pop(each, None)
            proposal.resolved_run(pos, results)
            index += count

    def _apply_entries(
        self, entries: list[Entry], apply: Callable[[Any], Any],
        batch: Callable[[list[Any]], list[Any]],
    ) -> list[Any]:
        """Apply committed entries of any kinds, decoding them."""
        kinds = set(map(_kind_of, entries))
        if kinds == _ONLY_SESSIONS:
            split = _split_sessions(list(map(_data_of, entries)))
            if split is not None:
                runs, commands = split
                results: list[Any] = []
                sessions = self.sessions
                ends = [start for start, *_ in runs[1:]]
                ends.append(len(commands))
                for (start, client, seq, pos, stamp), end in zip(runs, ends, strict=True):
                    results += sessions.apply(client, seq, pos, stamp, commands[start:end], batch)
                return results
        items, clean = _decode_entries(entries, kinds)
        if clean and kinds == _ONLY_COMMANDS:
            return batch(items)
        return self._apply_decoded(entries, items, apply, batch)

    def _apply_decoded(
        self, entries: list[Entry], items: list[Any], apply: Callable[[Any], Any],
        batch: Callable[[list[Any]], list[Any]],
    ) -> list[Any]:
        """Apply entries of any kinds, given what _decode_entries made of them."""
        results: list[Any] = []
        sessions = self.sessions
        command_kind, session_kind = EntryKind.COMMAND, EntryKind.SESSION
        i, n = 0, len(entries)
        while i < n:
            kind = entries[i].kind
            item = items[i]
            if kind == session_kind:
                end = _session_run_end(entries, items, i)
                if end > i:
                    client, seq, pos, stamp, _ = item
                    commands = list(map(_command_of, items[i:end]))
                    results += sessions.apply(client, seq, pos, stamp, commands, batch)
                    i = end
                    continue
                results.append(item.error if type(item) is _Undecodable
                               else ["error", f"malformed session entry {item!r:.80}"])
            elif kind == command_kind:
                results.append(apply(item) if type(item) is not _Undecodable else item.error)
            else:
                if kind == EntryKind.SESSION_EXPIRY:
                    self._apply_expiry(item)
                results.append(None)
            i += 1
        return results

    def _apply_expiry(self, item: Any) -> None:
        if type(item) is not list or len(item) != 2 or not all(type(v) is int for v in item):
            log.warning("member %d: ignoring a malformed session expiry entry %.80r", self.id, item)
            return
        dropped = self.sessions.expire(item[0], item[1])
        if dropped:
            log.info("member %d: %d client sessions expired (idle over %gs)", self.id, dropped,
                     item[1] / 1000)

    def _resolve(self, entries: list[Entry], results: list[Any]) -> None:
        pending = self._pending
        for entry, result in zip(entries, results, strict=True):
            waiting = pending.pop(entry.index, None)
            if waiting is None:
                continue
            term, proposal, pos = waiting
            if term == entry.term:
                proposal.resolved(pos, result)
            else:
                proposal.lost(pos)

    # ------------------------------------------------------------ replicator

    async def _replicator(self, peer: int, scope: trio.CancelScope) -> None:
        with scope:
            await self._replicate_to(peer)

    async def _replicate_to(self, peer: int) -> None:
        box = self._outboxes[peer]
        hello = cbor2.dumps([HELLO_PEER, self.cluster_name, self.id, self.address])
        backoff = 0.05
        while True:
            address = self.address_of(peer)
            try:
                if not address:
                    raise OSError(f"no address known for member {peer}")
                host, port = parse_address(address)
                stream = await trio.open_tcp_stream(host, port)
            except (OSError, ValueError):
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            try:
                async with stream:
                    await send_frames(stream, [hello])
                    box.connected = True
                    log.debug("member %d: connected to %d", self.id, peer)
                    while True:
                        if not box.queue:
                            await box.wakeup.wait()
                            box.wakeup = trio.Event()
                        snapshot = await self._send_queued(stream, box, peer)
                        if snapshot is not None:
                            await self._stream_snapshot(stream, box, snapshot)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    _SendStalled) as exc:
                log.debug("member %d: connection to %d lost: %s", self.id, peer, exc)
            finally:
                box.connected = False
                for msg in box.queue:
                    if type(msg) is InstallSnapshot:
                        self._report_snapshot_failed(peer)
                box.queue.clear()
            await trio.sleep(backoff)

    async def _send_queued(
        self, stream: trio.SocketStream, box: _Outbox, peer: int
    ) -> InstallSnapshot | None:
        """Send what is queued for `peer`, up to a snapshot request, which is returned."""
        queue = box.queue
        snapshot: InstallSnapshot | None = None
        payloads = []
        while queue:
            msg = queue.popleft()
            if type(msg) is InstallSnapshot:
                snapshot = msg
                break
            payloads.append(self._encode(msg))
        if payloads:
            # A peer that stopped reading (half-open connection, hung process)
            # would hold this send for minutes: reconnect instead.
            with trio.move_on_after(self.timing.send_timeout):
                await send_frames(stream, payloads)
                self.counters["messages_sent"] += len(payloads)
                return snapshot
            if snapshot is not None:
                self._report_snapshot_failed(peer)
            raise _SendStalled(f"member {peer} took over {self.timing.send_timeout}s to take a "
                               f"send; reconnecting")
        return snapshot

    async def _stream_snapshot(
        self, stream: trio.SocketStream, box: _Outbox, request: InstallSnapshot
    ) -> None:
        """Stream our newest snapshot file to a follower, chunk by chunk.

        At most `window` chunks go out ahead of the follower's acknowledgements,
        so memory stays bounded on both sides; Raft messages queued for the
        follower meanwhile (heartbeats above all) go out between chunks. A
        broken transfer resumes where the follower's last acknowledgement left
        it, if the same snapshot is still the newest.
        """
        peer = request.dst
        node = self.node
        meta, path = self.snapshot_meta, self._snapshot_path
        policy = self.snapshots
        delivered = False
        try:
            if meta is None or path is None:
                return
            previous = self._acks.get(peer)
            start = 0
            if previous is not None and (previous.index, previous.term) == (meta.index, meta.term):
                start = previous.received
            acks = self._acks[peer] = _AckState(meta.index, meta.term, start)
            with open(path, "rb") as file:
                total = os.fstat(file.fileno()).st_size
                if start >= total:
                    start = acks.received = 0
                sent = start
                log.info("member %d: sending the snapshot at index %d (%d bytes) to %d from "
                         "offset %d", self.id, meta.index, total, peer, start)
                while acks.received < total:
                    if peer in self._cut:
                        return  # fault injection: the link is cut mid-transfer
                    if node is None or node.role is not Role.LEADER or node.term != request.term:
                        log.info("member %d: no longer leader of term %d; snapshot transfer to "
                                 "%d stopped", self.id, request.term, peer)
                        return
                    ahead = policy.window * policy.chunk_bytes
                    while (sent < total and sent - acks.received < ahead
                           and peer not in self._cut):
                        data = await trio.to_thread.run_sync(
                            os.pread, file.fileno(), policy.chunk_bytes, sent
                        )
                        if not data:
                            raise OSError(f"{path} ended at {sent} of {total} bytes")
                        chunk = SnapshotChunk(request.term, self.id, peer, meta.index, meta.term,
                                              total, sent, data)
                        with trio.fail_after(self.timing.send_timeout):
                            await send_frames(stream, [encode_message(chunk)])
                        sent += len(data)
                        self.counters["snapshot_bytes_sent"] += len(data)
                        # Heartbeats keep the follower from starting an election
                        # meanwhile. (A repeated request for this snapshot is dropped.)
                        await self._send_queued(stream, box, peer)
                    seen = acks.changed
                    with trio.move_on_after(policy.ack_timeout) as waited:
                        await seen.wait()
                    if waited.cancelled_caught:
                        log.warning("member %d: member %d acknowledged no snapshot chunk for "
                                    "%gs", self.id, peer, policy.ack_timeout)
                        return
                    if not acks.accepted:
                        sent = acks.received  # the follower holds less than we thought
                        acks.accepted = True
            delivered = True
            self.counters["snapshots_sent"] += 1
        except trio.TooSlowError:
            raise _SendStalled(f"member {peer} took over {self.timing.send_timeout}s to take a "
                               f"snapshot chunk") from None
        except OSError as exc:
            log.error("member %d: cannot send the snapshot to %d: %s", self.id, peer, exc)
        finally:
            if not delivered:
                self._report_snapshot_failed(peer)

    def _on_snapshot_ack(self, ack: SnapshotAck) -> None:
        acks = self._acks.get(ack.src)
        if acks is None or (acks.index, acks.term) != (ack.index, ack.snapshot_term):
            return
        if ack.accepted:
            acks.received = max(acks.received, ack.received)
        else:
            acks.received = ack.received
            acks.accepted = False
        acks.changed.set()
        acks.changed = trio.Event()

    def _encode(self, msg: Message | SnapshotAck) -> bytes:
        """Encode for the wire, packing a run of entries once for all the peers that get it."""
        if type(msg) is not AppendEntries or not msg.entries:
            return encode_message(msg)
        return encode_message(msg, self._packs.pack(msg.entries))

    # -------------------------------------------------------------- listener

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        """One peer or client connection; whatever goes wrong closes it, never the member."""
        try:
            await self._converse(stream)
        except Exception as exc:
            # Errors from the client service's nursery arrive in exception groups.
            errors = leaves(exc)
            if all(isinstance(e, _CONNECTION_GONE) for e in errors):
                pass
            elif all(isinstance(e, _BAD_INPUT + _CONNECTION_GONE) for e in errors):
                reason = "; ".join(str(e) for e in errors if isinstance(e, _BAD_INPUT))
                log.warning("member %d: closing connection from %s: %s", self.id,
                            _peer_name(stream), reason)
            else:
                log.error("member %d: unexpected error on the connection from %s", self.id,
                          _peer_name(stream), exc_info=exc)
        finally:
            await trio.aclose_forcefully(stream)

    async def _converse(self, stream: trio.SocketStream) -> None:
        reader = FrameReader(stream)
        first = await reader.read_frame()
        if first is None:
            return
        hello = cbor2.loads(first)
        if not isinstance(hello, list) or not hello:
            raise CodecError("bad hello frame")
        if hello[0] == HELLO_PEER:
            if len(hello) not in (3, 4) or hello[1] != self.cluster_name:
                raise CodecError(f"peer hello from another cluster: {hello!r:.100}")
            peer = hello[2]
            # Any id: a member this one has not heard of yet may lead a
            # configuration it has not received (the core weighs who says what).
            if type(peer) is not int or peer <= 0 or peer == self.id:
                raise CodecError(f"peer hello from member {peer!r:.20}")
            if len(hello) == 4 and isinstance(hello[3], str):
                try:
                    parse_address(hello[3])
                except ValueError:
                    raise CodecError(f"peer hello with a bad address {hello[3]!r:.60}") from None
                self._learned_addresses[peer] = hello[3]
            await self._serve_peer(reader, peer)
        elif hello[0] == HELLO_CLIENT:
            await serve_client(self, reader, stream)
        else:
            raise CodecError(f"unknown hello {hello[0]!r:.40}")

    async def _serve_peer(self, reader: FrameReader, peer: int) -> None:
        inbox = self._inbox_send
        assert inbox is not None
        node_id = self.id
        async for frame in reader:
            if peer in self._cut:
                continue  # fault injection: as if the frame were lost on the way
            msg, packed = decode_message_packed(frame)
            if msg.dst != node_id or msg.src != peer:
                raise CodecError(
                    f"message from {msg.src} to {msg.dst} on member {peer}'s connection "
                    f"to member {node_id}"
                )
            if packed is not None and type(msg) is AppendEntries:
                self._packs.remember(msg.entries, packed)
            self.counters["messages_received"] += 1
            self._last_heard[peer] = trio.current_time()
            if type(msg) is SnapshotChunk:
                await self._receive_chunk(msg)
            elif type(msg) is SnapshotAck:
                self._on_snapshot_ack(msg)
            else:
                await inbox.send(msg)

    async def _receive_chunk(self, chunk: SnapshotChunk) -> None:
        """Store a chunk of the leader's snapshot; step the core in once all has arrived."""
        node = self.node
        assert node is not None
        if chunk.term < node.term:
            return  # from a deposed leader
        incoming = self._incoming
        key = (chunk.src, chunk.index, chunk.snapshot_term, chunk.total)
        if incoming is None or (self._incoming_from, incoming.index, incoming.term,
                                incoming.total) != key:
            if incoming is not None:
                self._incoming = None
                await trio.to_thread.run_sync(incoming.discard)
            if chunk.offset != 0:
                self._ack(chunk, 0, accepted=False)
                return
            incoming = await trio.to_thread.run_sync(
                IncomingSnapshot, self.snapshot_dir, chunk.index, chunk.snapshot_term, chunk.total
            )
            self._incoming, self._incoming_from = incoming, chunk.src
        if chunk.offset > incoming.received:
            self._ack(chunk, incoming.received, accepted=False)
            return
        self.counters["snapshot_bytes_received"] += len(chunk.data)
        try:
            await trio.to_thread.run_sync(incoming.write, chunk.offset, chunk.data)
        except ValueError as exc:
            self._incoming = None
            await trio.to_thread.run_sync(incoming.discard)
            raise CodecError(f"bad snapshot chunk: {exc}") from None
        self._ack(chunk, incoming.received, accepted=True)
        if not incoming.complete:
            return
        self._incoming = None
        try:
            async with self._snapshot_lock:
                await trio.to_thread.run_sync(incoming.finish)
                await trio.to_thread.run_sync(remove_older_snapshots, self.snapshot_dir, 2)
        except SnapshotCorruption as exc:
            log.error("member %d: the snapshot from %d is damaged, asking again: %s", self.id,
                      chunk.src, exc)
            self._ack(chunk, 0, accepted=False)
            return
        log.info("member %d: received the snapshot at index %d from %d (%d bytes)", self.id,
                 chunk.index, chunk.src, chunk.total)
        inbox = self._inbox_send
        assert inbox is not None
        membership = incoming.meta.membership if incoming.meta is not None else b""
        await inbox.send(InstallSnapshot(chunk.term, chunk.src, self.id, chunk.index,
                                         chunk.snapshot_term, membership))

    def _ack(self, chunk: SnapshotChunk, received: int, *, accepted: bool) -> None:
        self._route([SnapshotAck(chunk.term, self.id, chunk.src, chunk.index,
                                 chunk.snapshot_term, received, accepted)])


def _describe_progress(pr: Progress) -> dict[str, Any]:
    state = "snapshot" if pr.pending_snapshot else "probe" if pr.probing else "replicate"
    return {"match": pr.match, "next": pr.next, "state": state,
            "inflight": len(pr.inflight), "probe_sent": pr.probe_sent}


class _SendStalled(Exception):
    """A peer stopped taking what we send: drop the connection and make a new one."""


_BAD_INPUT = (CodecError, FrameError, ValueError, cbor2.CBORDecodeError)
_CONNECTION_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _peer_name(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
        return f"{host}:{port}"
    except OSError:
        return "?"


def _merge_entries(into: list[Entry], more: Sequence[Entry]) -> None:
    """Append `more` to `into`, letting it overwrite the overlapping tail as the WAL would."""
    if into:
        cut = more[0].index - into[0].index
        if cut < len(into):
            del into[max(cut, 0):]
    into.extend(more)


_kind_of = itemgetter(2)
_data_of = itemgetter(3)


class _Undecodable:
    """Stands in for a command whose bytes are not CBOR; applying it yields `error`."""

    __slots__ = ("error",)

    def __init__(self, error: list[str]):
        self.error = error


_CBOR_NULL = b"\xf6"


def _cbor_array_header(length: int) -> bytes:
    if length < 24:
        return bytes([0x80 | length])
    if length < 1 << 8:
        return bytes([0x98, length])
    if length < 1 << 16:
        return b"\x99" + length.to_bytes(2, "big")
    if length < 1 << 32:
        return b"\x9a" + length.to_bytes(4, "big")
    return b"\x9b" + length.to_bytes(8, "big")


# Kinds whose data is one CBOR item (the others' is not CBOR at all).
_DATA_KINDS = frozenset({EntryKind.COMMAND, EntryKind.SESSION, EntryKind.SESSION_EXPIRY})
_ONLY_COMMANDS = {EntryKind.COMMAND}
_ONLY_SESSIONS = {EntryKind.SESSION}
_command_of = itemgetter(4)


def _decode_entries(entries: Sequence[Entry], kinds: set[int]) -> tuple[list[Any], bool]:
    """The data of `entries` decoded from CBOR (None for kinds that carry none), and
    whether every entry that carries data held well-formed CBOR. `kinds` are the
    kinds present.

    One CBOR array is spliced together from the entries' bytes and decoded in
    a single call, which costs less than half of decoding each entry alone;
    if any entry is not valid CBOR, fall back to one at a time so that only
    that entry fails. Splicing relies on every such entry holding exactly one
    CBOR item, which holds because each is made by its own encode_command call
    (a SESSION entry's by joining the encodings of the items of one array).
    """
    if kinds <= _DATA_KINDS:
        parts = list(map(_data_of, entries))
    else:
        parts = [e.data if e.kind in _DATA_KINDS else _CBOR_NULL for e in entries]
    try:
        decoded: list[Any] = cbor2.loads(_cbor_array_header(len(parts)) + b"".join(parts))
        if len(decoded) == len(parts):
            return decoded, True
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        pass
    decoded = []
    clean = True
    for part in parts:
        try:
            decoded.append(cbor2.loads(part))
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
            # Every member sees the same bytes, so every member answers the same.
            decoded.append(_Undecodable(["error", f"undecodable command: {exc}"]))
            clean = False
    return decoded, clean


def decode_commands(entries: Sequence[Entry]) -> tuple[list[Any], bool]:
    """The data of `entries` decoded as _decode_entries does, and whether they
    were all well-formed commands (COMMAND entries)."""
    kinds = set(map(_kind_of, entries))
    decoded, clean = _decode_entries(entries, kinds)
    return decoded, clean and kinds == _ONLY_COMMANDS


# Where the CBOR encoding of an unsigned int grows: positions below each bound
# (and at or above the one before) take the same number of bytes.
_UINT_WIDTH_BOUNDS = (24, 1 << 8, 1 << 16, 1 << 32, 1 << 64)

_SessionRun = tuple[int, int, int, int, int]  # start, client, seq, pos, stamp
_MAX_SPLIT_POSITION = 1 << 16


def _split_sessions(datas: list[bytes]) -> tuple[list[_SessionRun], list[Any]] | None:
    """The runs of SESSION entries' data (entries of one request with consecutive
    positions) and every entry's command, decoding only the commands; None if an
    entry is not byte for byte as _session_datas makes them (then the caller
    decodes them whole).

    The session fields of a run differ only in the position, so their bytes are
    known once the first entry is decoded: the run's end is found by checking
    those bytes at a few entries (as in _session_run_end), and the commands are
    sliced out and decoded together in one call. Decoding every entry's
    five-item array instead costs about twice as much.
    """
    dumps = cbor2.dumps
    loads = cbor2.loads
    n = len(datas)
    runs: list[_SessionRun] = []
    pieces: list[bytes] = []
    i = 0
    try:
        while i < n:
            item = loads(datas[i])
            if (type(item) is not list or len(item) != 5
                    or not all(type(v) is int for v in item[:4]) or item[1] < 1 or item[2] < 0):
                return None
            client, seq, pos, stamp = item[0], item[1], item[2], item[3]
            if pos > _MAX_SPLIT_POSITION:
                return None  # not worth a table of encoded positions this long
            prefix = b"\x85" + dumps(client) + dumps(seq)
            tail = dumps(stamp)
            offset = pos - i
            positions = _positions(pos + n - i)
            same = _header_matcher(datas, prefix, positions, offset, tail)
            if not same(i):
                return None
            end = _prefix_end(same, i, n)
            runs.append((i, client, seq, pos, stamp))
            fixed = len(prefix) + len(tail)
            j = i
            while j < end:
                p = offset + j
                bound = next(b for b in _UINT_WIDTH_BOUNDS if p < b)
                stop = min(end, j + bound - p)
                cut = fixed + len(positions[p])
                # One slice object for them all, not one per entry.
                pieces += map(itemgetter(slice(cut, None)), datas[j:stop])
                j = stop
            i = end
        commands: list[Any] = loads(_cbor_array_header(n) + b"".join(pieces))
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        return None
    if len(commands) != n:
        return None
    return runs, commands


def _session_run_end(entries: Sequence[Entry], items: list[Any], start: int) -> int:
    """The end of the run of SESSION entries from `start` that carry consecutive
    positions of one request, or `start` if that entry is malformed.

    A request's entries in a log written by this server sit together, positions
    ascending from 0, and no two requests of a client hold the same position
    at the same distance from `start`; so the entries that match (client, seq,
    position) form one prefix of what follows, and a binary search finds its
    end. That saves a comparison per entry on the hot path.
    """
    first = items[start]
    if (type(first) is not list or len(first) != 5
            or not all(type(v) is int for v in first[:4]) or first[1] < 1 or first[2] < 0):
        return start
    client, seq, pos = first[0], first[1], first[2]
    session_kind = EntryKind.SESSION

    def same(j: int) -> bool:
        item = items[j]
        return (entries[j].kind == session_kind and type(item) is list and len(item) == 5
                and item[2] == pos + j - start and item[0] == client and item[1] == seq)

    return _prefix_end(same, start, len(items))


def _prefix_end(matches: Callable[[int], bool], start: int, stop: int) -> int:
    """The first index from `start` up to `stop` where `matches` fails (or `stop`),
    given that `matches(start)` holds and the indexes it holds for form a prefix."""
    if matches(stop - 1):
        return stop
    lo, hi = start, stop - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if matches(mid):
            lo = mid
        else:
            hi = mid
    return hi


def _header_matcher(datas: list[bytes], prefix: bytes, positions: list[bytes], offset: int,
                    tail: bytes) -> Callable[[int], bool]:
    """Whether entry j's data starts with the session fields of a run whose
    entry j has position offset + j."""

    def same(j: int) -> bool:
        return datas[j].startswith(prefix + positions[offset + j] + tail)

    return same


_MAX_U64 = (1 << 64) - 1


def _check_session(session: Any) -> tuple[int, int]:
    if (not isinstance(session, tuple | list) or len(session) != 2
            or not all(type(v) is int for v in session)
            or not 0 <= session[0] <= _MAX_U64 or not 1 <= session[1] <= _MAX_U64):
        raise CommandError(f"a session is [client id, request number], both unsigned 64-bit "
                           f"ints, the number from 1: not {session!r:.60}")
    return session[0], session[1]


# CBOR of the positions in a request, encoded once for all requests.
_POSITIONS: list[bytes] = []


def _positions(count: int) -> list[bytes]:
    """The CBOR encodings of 0..count-1 (and perhaps more)."""
    if len(_POSITIONS) < count:
        _POSITIONS.extend(map(cbor2.dumps, range(len(_POSITIONS), count)))
    return _POSITIONS


def _session_datas(client: int, seq: int, stamp: int, commands: list[bytes]) -> list[bytes]:
    """The data of the SESSION entries of a request whose commands are encoded as
    `commands`: each the one CBOR item [client, seq, pos, stamp, command], put
    together from the encoded pieces (one join each, about half of what adding
    them up costs) rather than encoding the command again."""
    dumps = cbor2.dumps
    return list(map(b"".join, zip(repeat(b"\x85" + dumps(client) + dumps(seq)),
                                  _positions(len(commands)), repeat(dumps(stamp)), commands)))


def _raise_refusal(results: list[Any], session: tuple[int, int, int]) -> None:
    """Raise the error for a session request whose results say it was refused."""
    if results.count(None) == len(results):
        return  # the common case, checked at C speed
    client, seq, _ = session
    if SESSION_EXPIRED in results:
        raise SessionExpired(
            f"the cluster holds no session for client {client} (it expired, or was never "
            f"made): request {seq} was not applied now, and whether an earlier try of it "
            f"applied is unknown"
        )
    if STALE in results:
        raise StaleRequest(f"request {seq} of client {client} is older than the latest one the "
                           f"cluster has seen from it: not applied")


# What one WAL append holds, and a prefix of its entries already packed.
_Write = tuple[SnapshotRef | None, HardState | None, list[Entry], list[bytes]]


def _write_and_sync(wal: WAL, writes: list[_Write]) -> None:
    for marker, hard_state, entries, packed in writes:
        snapshot_marker = (marker.index, marker.term) if marker is not None else None
        wal.append(hard_state, entries, snapshot_marker=snapshot_marker, packed=packed)
    wal.sync()


__all__ = ["RaftServer", "Timing", "parse_address"]
