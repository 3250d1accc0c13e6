"""PreVote, CheckQuorum and ReadIndex in the core, one rule per test.

The rule tests in test_core_rules.py and test_membership.py run with both
PreVote and CheckQuorum off; here they are on (the default), and the small
harness below delivers messages between cores, persisting every write at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

from raft_trio.core import (
    Config,
    HardState,
    HeartbeatResponse,
    Membership,
    Message,
    NotLeaderError,
    RaftNode,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
)

ELECTION_TICKS = 5
CONFIG = Config(election_ticks=ELECTION_TICKS)
M = TypeVar("M")


class Net:
    """Cores wired together; `cut` holds the directed links that lose everything."""

    def __init__(self, size: int = 3, config: Config = CONFIG) -> None:
        ids = range(1, size + 1)
        self.nodes = {i: RaftNode(i, ids, config=config) for i in ids}
        self.cut: set[tuple[int, int]] = set()
        self.sent: list[Message] = []
        self.readies: dict[int, list[Ready]] = {i: [] for i in ids}

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut.clear()

    def pump(self, drop: Callable[[Message], bool] = lambda m: False) -> None:
        for _ in range(500):
            outbox: list[Message] = []
            for n in self.nodes.values():
                while n.has_ready():
                    ready = n.ready()
                    self.readies[n.id].append(ready)
                    if ready.entries:
                        n.persisted(ready.entries[-1].index, ready.entries[-1].term)
                    outbox += ready.messages + ready.persisted_messages
            if not outbox:
                return
            self.sent += outbox
            for msg in outbox:
                if (msg.src, msg.dst) not in self.cut and msg.dst in self.nodes and not drop(msg):
                    self.nodes[msg.dst].step(msg)
        raise AssertionError("never went quiet")

    def tick(self, *ids: int, times: int = 1) -> None:
        for _ in range(times):
            for i in ids or tuple(self.nodes):
                self.nodes[i].tick()
            self.pump()

    def elect(self, node_id: int) -> RaftNode:
        n = self.nodes[node_id]
        n.campaign()
        self.pump()
        assert n.role is Role.LEADER
        self.tick(node_id)  # a heartbeat round tells everyone the commit index
        return n

    def reads(self, node_id: int) -> list[tuple[Any, int]]:
        return [r for ready in self.readies[node_id] for r in ready.reads]

    def dropped(self, node_id: int) -> list[Any]:
        return [c for ready in self.readies[node_id] for c in ready.dropped_reads]


def of_type(messages: Iterable[Message], kind: type[M]) -> list[M]:
    return [m for m in messages if isinstance(m, kind)]


def role(n: RaftNode) -> Role:
    """Read through a call so that type checkers do not narrow it between steps."""
    return n.role


# ------------------------------------------------------------------ PreVote


def test_a_cut_off_member_does_not_raise_its_term_and_rejoins_without_an_election() -> None:
    net = Net()
    leader = net.elect(1)
    term = leader.term
    net.isolate(3)
    net.tick(3, times=10 * ELECTION_TICKS)  # its timer fires again and again
    assert net.nodes[3].term == term
    assert role(net.nodes[3]) is Role.PRE_CANDIDATE
    net.heal()
    net.tick(1)
    assert leader.role is Role.LEADER and leader.term == term
    assert net.nodes[3].role is Role.FOLLOWER and net.nodes[3].leader_id == 1


def test_a_pre_vote_changes_nothing_on_the_voter_and_the_request_is_not_durable() -> None:
    n = RaftNode(2, [1, 2, 3], hard_state=HardState(4, 1, 0), config=CONFIG)
    n.step(RequestVote(5, 1, 2, 0, 0, pre_vote=True))
    ready = n.ready()
    assert (n.term, n.vote) == (4, 1) and ready.hard_state is None
    assert ready.messages == [RequestVoteResponse(5, 2, 1, True, pre_vote=True)]
    candidate = RaftNode(1, [1, 2, 3], hard_state=HardState(4, None, 0), config=CONFIG)
    candidate.campaign()
    ready = candidate.ready()
    assert candidate.term == 4 and ready.hard_state is None and not ready.persisted_messages
    assert {m.dst for m in of_type(ready.messages, RequestVote) if m.pre_vote} == {2, 3}


def test_a_pre_vote_is_refused_while_the_voter_hears_from_a_leader_or_has_a_longer_log() -> None:
    net = Net()
    net.elect(1)
    follower = net.nodes[2]
    follower.step(RequestVote(follower.term + 1, 3, 2, 99, follower.term, pre_vote=True))
    (answer,) = of_type(follower.ready().messages, RequestVoteResponse)
    assert not answer.granted and answer.term == follower.term
    # An election timeout without the leader: granted, to an up-to-date log only.
    net.isolate(2)
    for _ in range(ELECTION_TICKS):
        follower.election_elapsed += 1  # without its own timer firing
    last, last_term = follower.log.last_index, follower.log.last_term
    follower.step(RequestVote(follower.term + 1, 3, 2, last - 1, last_term, pre_vote=True))
    follower.step(RequestVote(follower.term + 1, 3, 2, last, last_term, pre_vote=True))
    answers = of_type(follower.ready().messages, RequestVoteResponse)
    assert [a.granted for a in answers] == [False, True]


def test_a_pre_candidate_that_wins_campaigns_in_the_next_term() -> None:
    net = Net()
    leader = net.elect(1)
    term = leader.term
    net.isolate(1)
    net.tick(2, 3, times=3 * ELECTION_TICKS)
    new = [n for n in net.nodes.values() if n.id != 1 and n.role is Role.LEADER]
    assert len(new) == 1 and new[0].term == term + 1


def test_a_removed_member_cut_off_never_disturbs_the_cluster() -> None:
    # The removed member never hears of its removal and keeps timing out.
    net = Net()
    leader = net.elect(1)
    net.isolate(3)
    leader.propose_config(Membership.of((1, 2)))
    net.pump()
    net.tick(1, 2)
    term = leader.term
    net.tick(3, times=10 * ELECTION_TICKS)
    net.heal()
    net.tick(times=3)
    assert leader.role is Role.LEADER and leader.term == term


# -------------------------------------------------------------- CheckQuorum


def test_a_leader_cut_off_from_a_majority_steps_down_within_an_election_timeout() -> None:
    net = Net()
    leader = net.elect(1)
    net.tick(1, 2, 3, times=3 * ELECTION_TICKS)
    assert leader.role is Role.LEADER  # it hears from a majority
    net.isolate(1)
    net.tick(1, times=ELECTION_TICKS - 1)
    assert leader.role is Role.LEADER
    net.tick(1)  # an election timeout since it last heard from anyone
    assert role(leader) is Role.FOLLOWER and leader.leader_id is None


def test_without_check_quorum_a_cut_off_leader_stays_leader() -> None:
    net = Net(config=Config(election_ticks=ELECTION_TICKS, check_quorum=False))
    leader = net.elect(1)
    net.isolate(1)
    net.tick(1, times=5 * ELECTION_TICKS)
    assert leader.role is Role.LEADER


def test_a_member_that_hears_from_its_leader_ignores_a_vote_request_unless_a_transfer() -> None:
    net = Net()
    net.elect(1)
    follower = net.nodes[2]
    term = follower.term
    follower.step(RequestVote(term + 1, 3, 2, 99, 99))
    assert follower.term == term and not follower.has_ready()
    follower.step(RequestVote(term + 1, 3, 2, 99, 99, transfer=True))
    assert follower.term == term + 1 and follower.vote == 3


def test_a_leadership_transfer_still_works_with_pre_votes() -> None:
    net = Net()
    leader = net.elect(1)
    leader.transfer_leadership(2)
    net.pump()
    assert net.nodes[2].role is Role.LEADER and net.nodes[2].term == leader.term
    assert leader.role is Role.FOLLOWER


# ---------------------------------------------------------------- ReadIndex


def test_a_read_is_answered_after_a_majority_confirms_one_round_for_a_whole_batch() -> None:
    net = Net()
    leader = net.elect(1)
    commit = leader.commit
    held: list[Message] = []
    leader.read_index("a")  # starts a round at once
    round_a = leader._reads.round
    def hold_answers(m: Message) -> bool:
        if isinstance(m, HeartbeatResponse):
            held.append(m)
            return True
        return False

    net.pump(drop=hold_answers)
    assert net.reads(1) == []  # not confirmed: no answers arrived
    for ctx in ("b", "c"):
        leader.read_index(ctx)  # a round is out: these wait for the next one
    net.pump()
    assert leader._reads.round == round_a and net.reads(1) == []
    leader.step(held[0])  # one follower's answer makes a majority with the leader
    assert leader._reads.ready == [("a", commit)]
    # That answer started the next round at once; it answers both waiting reads.
    net.pump()
    assert leader._reads.round == round_a + 1
    assert net.reads(1) == [("a", commit), ("b", commit), ("c", commit)]


def test_read_index_is_the_commit_index_when_asked() -> None:
    net = Net()
    leader = net.elect(1)
    leader.propose([b"x"])
    net.pump()
    leader.read_index("r")
    net.pump()
    assert net.reads(1) == [("r", leader.commit)] and leader.commit == leader.log.last_index


def test_a_new_leader_answers_reads_only_once_it_committed_an_entry_of_its_term() -> None:
    net = Net()
    lead = net.nodes[1]
    lead.campaign()
    # Elected, but its no-op reaches nobody: its commit index may lag the cluster's.
    net.pump(drop=lambda m: type(m).__name__ == "AppendEntries")
    assert lead.role is Role.LEADER and lead.log.term(lead.commit) != lead.term
    lead.read_index("early")
    lead.tick()  # heartbeats get through, answered by a majority
    net.pump(drop=lambda m: type(m).__name__ == "AppendEntries")
    assert net.reads(1) == []
    net.pump()
    net.tick(1)
    assert net.reads(1) == [("early", lead.commit)] and lead.log.term(lead.commit) == lead.term


def test_a_deposed_leader_never_answers_a_read_and_drops_it_on_hearing_the_new_term() -> None:
    net = Net(config=Config(election_ticks=ELECTION_TICKS, check_quorum=False))
    old = net.elect(1)
    net.isolate(1)
    net.tick(2, 3, times=3 * ELECTION_TICKS)
    new = next(n for n in net.nodes.values() if n.id != 1 and n.role is Role.LEADER)
    new.propose([b"written"])
    net.pump()
    assert old.role is Role.LEADER and old.commit < new.commit  # still believes it leads
    old.read_index("stale?")
    net.tick(1, times=3)
    assert net.reads(1) == []
    net.heal()
    net.tick(new.id)
    net.tick(1)
    assert role(old) is Role.FOLLOWER and net.dropped(1) == ["stale?"] and net.reads(1) == []


def test_a_lone_voter_answers_a_read_at_once_and_a_follower_refuses() -> None:
    solo = RaftNode(1, [1], config=CONFIG)
    solo.campaign()
    ready = solo.ready()
    solo.persisted(ready.entries[-1].index, ready.entries[-1].term)
    solo.ready()
    solo.read_index("r")
    assert solo.ready().reads == [("r", 1)]
    net = Net()
    net.elect(1)
    with pytest.raises(NotLeaderError) as info:
        net.nodes[2].read_index("r")
    assert info.value.leader_id == 1


def test_confirmed_reads_survive_a_step_down_and_unconfirmed_ones_are_dropped() -> None:
    net = Net()
    leader = net.elect(1)
    leader.read_index("confirmed")
    leader.step(HeartbeatResponse(leader.term, 2, 1, leader._reads.round))
    leader.read_index("pending")
    leader.step(RequestVoteResponse(leader.term + 1, 3, 1, False))  # a newer term exists
    ready = leader.ready()
    assert ready.reads == [("confirmed", leader.commit)] and ready.dropped_reads == ["pending"]


# -------------------------------------------------------------------- lease


def test_lease_basis_needs_check_quorum_a_confirmed_round_and_no_transfer() -> None:
    net = Net()
    leader = net.elect(1)
    assert leader.lease_basis() == (leader._reads.confirmed, leader.commit)
    assert net.nodes[2].lease_basis() is None
    plain = Net(config=Config(election_ticks=ELECTION_TICKS, check_quorum=False))
    assert plain.elect(1).lease_basis() is None
    leader.transfer_leadership(2)
    sent = leader.ready().messages
    assert of_type(sent, TimeoutNow)
    assert leader.lease_basis() is None
