"""`RaftServer`: one member of a cluster, its public face, and the nursery it runs in.

`serve()` claims the data directory, rebuilds the core from it, and opens one
nursery holding the member's tasks, each in a module of its own:

- node loop (node_loop.py): the only task touching the sans-I/O core;
- timer (node_loop.py): feeds it ticks;
- one replicator per peer (replication.py), with outgoing snapshot streams;
- disk writer (disk_writer.py): the WAL, one fsync per batch;
- applier (applier.py): the state machine, proposers' results, snapshots
  (snapshots.py) taken and restored;
- listener (listener.py): peers and clients on one port, the client protocol
  (client_service.py), incoming snapshot chunks (snapshots.py);
- application services' leader tasks (services.py).

Reads (reads.py) and membership changes (membership.py) run in the callers'
tasks and talk to the node loop through its inbox. Cancelling the nursery
stops everything; callers still waiting are released with an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2
import trio

from raft_trio.command_encoding import encode_command
from raft_trio.core import Entry, Membership, SnapshotRef
from raft_trio.errors import CommandError, LeadershipLost, RaftError
from raft_trio.protocol import parse_address
from raft_trio.server.applier import Applier, Restore
from raft_trio.server.client_service import BUILTIN_OPS, ClientService
from raft_trio.server.disk_writer import DiskJob, DiskWriter
from raft_trio.server.entry_codec import check_session, raise_refusal, session_datas
from raft_trio.server.inbox import InboxItem, Propose
from raft_trio.server.listener import Listener
from raft_trio.server.membership import MembershipChanges
from raft_trio.server.node_loop import NodeLoop, run_timer
from raft_trio.server.options import (
    DEFAULT_MAX_COMMAND_BYTES,
    DEFAULT_SESSION_EXPIRY,
    DEFAULT_SNAPSHOTS,
    DEFAULT_TIMING,
    SnapshotPolicy,
    Timing,
)
from raft_trio.server.reads import Reads
from raft_trio.server.replication import Replication
from raft_trio.server.services import Service, Services
from raft_trio.server.snapshots import SnapshotReceiver, Snapshots
from raft_trio.server.startup import open_member
from raft_trio.server.state import MemberState
from raft_trio.server.waiting import Proposal
from raft_trio.statemachine import StateMachine
from raft_trio.storage import claim_data_dir

log = logging.getLogger("raft_trio.server")

INBOX_SIZE = 4096
DISK_QUEUE = 256
APPLY_QUEUE = 1024


class RaftServer(MemberState):
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
        services: Sequence[Service] = (),
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
        MAX_COMMAND_BYTES, so that one entry always fits a message to a peer).
        `services` add client ops and leader-only tasks (raft_trio.server.services).
        """
        super().__init__(
            node_id, cluster, data_dir, state_machine, timing=timing, snapshots=snapshots,
            cluster_name=cluster_name, listen_host=listen_host, address=address,
            promote_within=promote_within, fault_injection=fault_injection,
            session_expiry=session_expiry, max_command_bytes=max_command_bytes,
        )
        self._replication = Replication(self)
        self._snapshots = Snapshots(self)
        self._reads = Reads(self)
        self._membership = MembershipChanges(self)
        self._receiver = SnapshotReceiver(self, self._snapshots, self._replication)
        self._services = Services(self, services, reserved=BUILTIN_OPS)
        self._client_service = ClientService(self, self._services)
        self._node_loop: NodeLoop | None = None

    # ------------------------------------------------------------ writes

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
        inbox = self.inbox
        if inbox is None:
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
            client, seq = check_session(session)
            stamp = int(time.time() * 1000)
            stamped = (client, seq, stamp)
            datas = session_datas(client, seq, stamp, datas)
        proposal = Proposal(len(datas), commands if decoded_from_cbor else None, stamped)
        try:
            await inbox.send(Propose(datas, proposal))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise RaftError("the server shut down before the entry was proposed") from None
        await proposal.done.wait()
        error = proposal.error
        if stamped is not None:
            if error is None:
                raise_refusal(proposal.results, stamped)
            elif isinstance(error, LeadershipLost):
                raise_refusal(error.applied, stamped)
        if error is not None:
            raise error
        return proposal.results

    # ------------------------------------------------------------- reads

    async def read(self, query: Any, *, mode: str = "linearizable") -> Any:
        """Answer a read-only `query` from the state machine's `query()`, without a log
        entry: "linearizable" (ReadIndex; NotLeader on a follower), "lease" (the
        leader's lease, else as linearizable) or "stale" (any member, from what it
        has applied). See raft_trio.server.reads."""
        return await self._reads.read(query, mode)

    async def wait_applied(self, index: int) -> None:
        await self._reads.wait_applied(index)

    async def wait_for_leader(self) -> int:
        """Wait until this member knows a leader; returns its id."""
        while True:
            if self.node is not None and self.node.leader_id is not None:
                return self.node.leader_id
            self.check_running()
            await self.leader_event.wait()

    def log_entries(self, start: int, count: int) -> list[Entry]:
        """Up to `count` entries of the in-memory log from index `start`."""
        if self.node is None:
            return []
        return self.node.log.slice(start, start + count)

    def state_page(self, position: int, count: int) -> tuple[int, list[Any]]:
        """The applied index and a page of the state machine's contents, for checks."""
        page = getattr(self.state_machine, "page", None)
        if page is None:
            raise RaftError("this member's state machine cannot list its contents")
        return self.last_applied, page(position, count)

    # --------------------------------------------------------- membership

    async def add_member(self, node_id: int, address: str, *, voter: bool = True,
                         wait: float | None = None) -> Membership:
        """Add a member as a learner, and unless `voter` is false promote it once it has
        answered and caught up (within `wait` seconds, else it stays a learner).
        See raft_trio.server.membership."""
        return await self._membership.add(node_id, address, voter=voter, wait=wait)

    async def promote_member(self, node_id: int, *, wait: float | None = None) -> Membership:
        """Make a learner a voter once it has caught up (CommandError after `wait`)."""
        return await self._membership.promote(node_id, wait=wait)

    async def remove_member(self, node_id: int) -> Membership:
        """Remove a member, unless the voters left would not have a quorum that answers."""
        return await self._membership.remove(node_id)

    async def transfer_leadership(self, node_id: int) -> int:
        """Hand leadership to voter `node_id`; returns the new leader's id."""
        return await self._membership.transfer_leadership(node_id)

    # ---------------------------------------------------------- snapshots

    async def take_snapshot(self) -> int:
        """Snapshot the state as applied now, unless the newest snapshot already
        covers it; returns the index the newest snapshot stands for once it is durable."""
        return await self._snapshots.take()

    # ------------------------------------------------------------ testing

    def set_faults(self, cut: Iterable[int]) -> list[int]:
        """Act cut off from these peers (replacing the previous set) until told otherwise.

        Only one direction of each link: cutting a link both ways takes telling
        both ends. Refused unless the server was built with `fault_injection`.
        """
        if not self.fault_injection:
            raise CommandError(f"member {self.id}: fault injection is off (serve "
                               f"--fault-injection turns it on)")
        new = frozenset(cut)
        if new != self.cut:
            log.info("member %d: fault injection: cut off from %s", self.id,
                     ", ".join(map(str, sorted(new))) or "no member")
            self._replication.cut_off(new)
        return sorted(new)

    # -------------------------------------------------------------- serve

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
            loaded = await open_member(self, self._snapshots, given)
            await self._run(loaded, task_status)
        finally:
            claim.release()

    async def _run(self, loaded: SnapshotRef | None, task_status: trio.TaskStatus[None]) -> None:
        wal = self.wal
        assert wal is not None
        inbox_send, inbox_recv = trio.open_memory_channel[InboxItem](INBOX_SIZE)
        disk_send, disk_recv = trio.open_memory_channel[DiskJob](DISK_QUEUE)
        apply_send, apply_recv = trio.open_memory_channel[list[Entry] | Restore](APPLY_QUEUE)
        self.inbox = inbox_send
        self.stopped = False
        self._replication.reset()
        node_loop = self._node_loop = NodeLoop(self, self._replication, self._reads,
                                               self._services.soft_state_changed, loaded)
        listener = Listener(self, self._replication, self._receiver, self._client_service.serve)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._services.started(nursery)
                host, port = parse_address(self.address)
                listeners = await trio.open_tcp_listeners(port, host=self.listen_host or host)
                self.port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(trio.serve_listeners, listener.handle_connection, listeners)
                nursery.start_soon(DiskWriter(self, self._replication).run, disk_recv)
                nursery.start_soon(Applier(self, self._snapshots).run, apply_recv)
                self._replication.sync()
                nursery.start_soon(run_timer, self)
                nursery.start_soon(node_loop.run, inbox_recv, disk_send, apply_send)
                log.info("member %d: listening on %s", self.id, self.address)
                task_status.started()
        finally:
            self.inbox = None
            self.stopped = True
            shut_down = RaftError("the server shut down before the entry was applied")
            # What is still queued never reached the core; callers blocked on a full
            # inbox get BrokenResourceError once it is closed.
            node_loop.fail_queued(inbox_recv, shut_down)
            inbox_recv.close()
            self.pending.fail_all(shut_down)
            self._reads.fail_all(RaftError("the server shut down before the read was "
                                           "confirmed"))
            self.applied_event.set()
            self.leader_event.set()
            self._snapshots.changed.set()
            self.nursery = None
            with trio.CancelScope(shield=True):
                await self._receiver.discard()
                await trio.to_thread.run_sync(wal.close)
