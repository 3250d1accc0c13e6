"""Membership changes, on the leader: add a learner, promote it once it has caught up,
remove a member, hand leadership over. One change at a time; the core checks
the rules (raft_trio.core.membership), this module decides when to ask.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from raft_trio.core import ConfigChangeError, Membership, Role
from raft_trio.errors import CommandError, RaftError
from raft_trio.protocol import parse_address
from raft_trio.server.inbox import ConfigChange, Transfer
from raft_trio.server.state import MemberState
from raft_trio.server.waiting import Proposal


class MembershipChanges:
    def __init__(self, member: MemberState):
        self.member = member

    async def add(self, node_id: int, address: str, *, voter: bool = True,
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
        member = self.member
        parse_address(address)
        if member.membership.address(node_id) != address:
            try:
                await self._change(lambda m: m.add_learner(node_id, address))
            except CommandError:
                if member.membership.address(node_id) != address:
                    raise
                # Added meanwhile by another request for the same member.
        if not voter:
            if node_id in member.membership.voters:
                raise CommandError(f"member {node_id} is already a voter")
            return member.membership
        if not await self._wait_caught_up(node_id, wait):
            return member.membership
        try:
            return await self._change(self._promotion(node_id))
        except CommandError:
            if node_id in member.membership.voters:
                return member.membership  # promoted meanwhile (a second add of it)
            raise

    async def promote(self, node_id: int, *, wait: float | None = None) -> Membership:
        """Make learner `node_id` a voter once it has caught up (as `add` says); with
        `wait`, refuse with CommandError if it has not after that many seconds."""
        if not await self._wait_caught_up(node_id, wait):
            raise CommandError(f"member {node_id} is still a learner: "
                               f"{self.lag(node_id) or 'it fell behind again'}")
        return await self._change(self._promotion(node_id))

    async def remove(self, node_id: int) -> Membership:
        """Remove a member, unless the voters left would not have a quorum that answers."""
        member = self.member

        def change(current: Membership) -> Membership:
            new = current.remove(node_id)
            live = [v for v in new.voters if v == member.id or member.recently_heard(v)]
            if len(live) < new.quorum:
                raise ConfigChangeError(
                    f"removing member {node_id} would lose quorum: of the voters left "
                    f"{sorted(new.voters)}, only {sorted(live)} answered lately and "
                    f"{new.quorum} are needed"
                )
            return new

        return await self._change(change)

    async def transfer_leadership(self, node_id: int) -> int:
        """Hand leadership to voter `node_id`; returns the new leader's id.

        Proposals made meanwhile wait, then go to the new leader through the
        usual redirect (or to this one again if the handover is abandoned).
        """
        member = self.member
        member.check_running()
        inbox = member.running_inbox()
        started = Proposal(1)
        await inbox.send(Transfer(node_id, started))
        with trio.move_on_after(member.timing.election_seconds * 3):
            while True:
                if started.error is not None:
                    raise started.error
                node = member.node
                assert node is not None
                if node.leader_id is not None and node.leader_id != member.id:
                    return node.leader_id
                if (started.done.is_set() and node.transferee is None
                        and node.role is Role.LEADER):
                    raise RaftError(f"member {node_id} did not take over leadership: "
                                    f"the handover was abandoned")
                with trio.move_on_after(member.timing.tick_interval):
                    await member.leader_event.wait()
        raise RaftError(f"leadership did not move to member {node_id} in time")

    async def _change(self, change: Callable[[Membership], Membership]) -> Membership:
        member = self.member
        member.check_running()
        proposal = Proposal(1)
        await member.running_inbox().send(ConfigChange(change, proposal))
        await proposal.done.wait()
        if proposal.error is not None:
            raise proposal.error
        return member.membership

    async def _wait_caught_up(self, node_id: int, wait: float | None) -> bool:
        """Whether learner `node_id` caught up (see lag), or became a voter, within
        `wait` seconds."""
        member = self.member
        with trio.move_on_after(math.inf if wait is None else wait):
            while True:
                member.check_running()
                node = member.node
                assert node is not None
                if node.role is not Role.LEADER:
                    raise member.not_leader(node.leader_id)
                if node_id in node.membership.voters:
                    return True  # promoted meanwhile
                if node_id not in node.membership.learners:
                    raise CommandError(f"member {node_id} is not in the cluster")
                if self.lag(node_id) is None:
                    return True
                await trio.sleep(member.timing.tick_interval)
        return False

    def lag(self, node_id: int) -> str | None:
        """Why learner `node_id` cannot vote yet without stalling commits, or None if it can.

        It must have acknowledged an append of this leader's (a log that merely
        looks short next to `promote_within` says nothing of a member that never
        answered), been heard from lately, and hold the log to within
        `promote_within` entries of the commit index.
        """
        member = self.member
        node = member.node
        assert node is not None
        pr = node.progress.get(node_id)
        if pr is None or pr.match == 0:
            return "it has not answered the leader yet (is it running?)"
        if not member.recently_heard(node_id):
            return "the leader has not heard from it lately"
        if pr.match < node.commit - member.promote_within:
            return (f"its log reaches index {pr.match}, more than {member.promote_within} "
                    f"entries behind the commit index {node.commit}")
        return None

    def _promotion(self, node_id: int) -> Callable[[Membership], Membership]:
        """The change promoting `node_id`, checked again where it is made (the node loop)."""

        def change(current: Membership) -> Membership:
            lag = self.lag(node_id) if node_id in current.learners else None
            if lag is not None:
                raise ConfigChangeError(f"member {node_id} is still a learner: {lag}")
            return current.promote(node_id)

        return change
