"""Reads without log entries: ReadIndex, the leader's lease, and stale reads.

"linearizable" (ReadIndex, Raft dissertation 6.4): the leader confirms with a
heartbeat round that it still leads, waits until it has applied what was
committed when the read arrived, then answers. "lease": the leader answers
without that round while a majority's answers to a recent one vouch for it
(needs CheckQuorum, and clocks that drift apart by at most
Timing.max_clock_drift); otherwise as "linearizable". "stale": any member
answers from what it has applied, which may miss recent writes.
"""

from __future__ import annotations

from typing import Any

import trio

from raft_trio.core import RaftNode, Ready, Role
from raft_trio.errors import CommandError, RaftError
from raft_trio.protocol import READ_MODES
from raft_trio.server.inbox import ReadRequest
from raft_trio.server.state import MemberState
from raft_trio.server.waiting import ReadWait


class Reads:
    def __init__(self, member: MemberState):
        self.member = member
        self._waiting: set[ReadWait] = set()
        # When each heartbeat round (term, round) was first seen leaving: a lower
        # bound on when followers heard it, which is where a lease starts.
        self._round_sent: dict[tuple[int, int], float] = {}
        self._last_round = (0, 0)

    async def read(self, query: Any, mode: str = "linearizable") -> Any:
        """Answer a read-only `query` from the state machine's `query()` (see the module)."""
        member = self.member
        if mode not in READ_MODES:
            raise CommandError(f"unknown read mode {mode!r}: use one of {', '.join(READ_MODES)}")
        query_state = getattr(member.state_machine, "query", None)
        if query_state is None:
            raise CommandError("this state machine has no query(): read through propose()")
        member.check_running()
        if mode != "stale":
            index = self.lease_index() if mode == "lease" else None
            if index is None:
                index = await self._read_index()
            await self.wait_applied(index)
        return query_state(query)

    async def wait_applied(self, index: int) -> None:
        member = self.member
        while member.last_applied < index:
            member.check_running()
            await member.applied_event.wait()

    def lease_index(self) -> int | None:
        """The read index under a lease still in force, or None."""
        node = self.member.node
        basis = node.lease_basis() if node is not None else None
        if node is None or basis is None:
            return None
        confirmed, index = basis
        term = node.term
        started = max((at for (t, r), at in self._round_sent.items()
                       if t == term and r <= confirmed), default=None)
        if (started is None
                or trio.current_time() >= started + self.member.timing.lease_seconds):
            return None
        return index

    async def _read_index(self) -> int:
        member = self.member
        inbox = member.running_inbox()
        node = member.node
        if node is not None and node.role is not Role.LEADER:
            raise member.not_leader(node.leader_id)  # spare the node loop a round trip
        wait = ReadWait()
        self._waiting.add(wait)
        try:
            try:
                await inbox.send(ReadRequest(wait))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise RaftError("the server shut down before the read was confirmed") from None
            await wait.done.wait()
        finally:
            self._waiting.discard(wait)
        if wait.error is not None:
            raise wait.error
        return wait.index

    # ----------------------------------------------------- from the node loop

    def settle(self, node: RaftNode, ready: Ready) -> None:
        """Hand the reads the core confirmed their index; fail the ones it dropped."""
        for wait, index in ready.reads:
            wait.index = index
            wait.done.set()
        if ready.dropped_reads:
            lost = self.member.not_leader(node.leader_id)
            for wait in ready.dropped_reads:
                wait.fail(lost)

    def note_round(self, heartbeat_round: tuple[int, int]) -> None:
        """Remember when a heartbeat round first left, for leases (called each Ready)."""
        if heartbeat_round == self._last_round:
            return
        self._last_round = heartbeat_round
        sent = self._round_sent
        if len(sent) >= 64:
            # Only the newest confirmed round matters; keep a recent few.
            for old in sorted(sent)[:32]:
                del sent[old]
        sent.setdefault(heartbeat_round, trio.current_time())

    def fail_all(self, error: RaftError) -> None:
        """Shutdown: no read still waiting will be confirmed."""
        for wait in list(self._waiting):
            wait.fail(error)
