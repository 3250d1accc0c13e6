"""Cluster membership in the sans-I/O core, one rule at a time.

Configurations (raft_trio.core.membership) travel in CONFIG entries, take
effect when appended, fall back when cut, survive compaction and snapshots;
learners replicate but neither vote nor count; a removed leader steps down
and hands over; leadership transfer waits for the target to catch up. Every
message is built or pumped by the test: no network, no disk, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import cbor2
import pytest

# The rule tests' Config: PreVote and CheckQuorum off (see test_core_rules).
from test_core_rules import Config

from raft_trio.core import (
    AppendEntries,
    AppendEntriesResponse,
    ConfigChangeError,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    InstallSnapshot,
    Membership,
    Message,
    NotLeaderError,
    RaftNode,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotRef,
    TimeoutNow,
    TransferInProgress,
)
from raft_trio.core.node import STALLED_ROUNDS_BEFORE_PROBE

M = TypeVar("M")

THREE = Membership.of((1, 2, 3))
# Voters 1, 2, 3 and learner 4.
WITH_LEARNER = THREE.add_learner(4, "n4")
# Voters 1, 2, 3, 4.
FOUR = WITH_LEARNER.promote(4)
ELECTION_TICKS = 10


# ------------------------------------------------------------------ helpers


def config_entry(index: int, term: int, membership: Membership) -> Entry:
    return Entry(index, term, EntryKind.CONFIG, membership.encode())


def command(index: int, term: int) -> Entry:
    return Entry(index, term, EntryKind.COMMAND, b"%d@%d" % (index, term))


def noop(index: int, term: int) -> Entry:
    return Entry(index, term, EntryKind.NOOP, b"")


def make(
    node_id: int,
    membership: Membership = THREE,
    *,
    term: int = 0,
    commit: int = 0,
    entries: Sequence[Entry] = (),
    snapshot: SnapshotRef | None = None,
    config: Config | None = None,
) -> RaftNode:
    return RaftNode(
        node_id,
        membership,
        hard_state=HardState(term, None, commit),
        entries=entries,
        snapshot=snapshot,
        config=config if config is not None else Config(election_ticks=ELECTION_TICKS),
    )


def role(n: RaftNode) -> Role:
    """The node's role, read through a call so that type checkers do not narrow it."""
    return n.role


def persist(n: RaftNode, ready: Ready) -> None:
    if ready.entries:
        last = ready.entries[-1]
        n.persisted(last.index, last.term)


def of_type(messages: Iterable[Message], kind: type[M]) -> list[M]:
    return [m for m in messages if isinstance(m, kind)]


def sent(ready: Ready, kind: type[M], dst: int | None = None) -> list[M]:
    """Messages of `kind` in the Ready (sent at once or after persisting), to `dst` if given."""
    every = ready.messages + ready.persisted_messages
    return of_type([m for m in every if dst is None or m.dst == dst], kind)


def ack(leader: RaftNode, peer: int, index: int | None = None) -> None:
    """`peer` acknowledges the leader's log up to `index` (default: all of it)."""
    match = leader.log.last_index if index is None else index
    leader.step(AppendEntriesResponse(leader.term, peer, leader.id, True, match, 0, 0, 0))


def elected(membership: Membership = THREE, node_id: int = 1, *, term: int = 0) -> RaftNode:
    """`node_id` leads term `term` + 1 with its no-op durable but not yet acknowledged."""
    n = make(node_id, membership, term=term)
    n.campaign()
    n.ready()
    for peer in [v for v in membership.voters if v != node_id][: n.quorum - 1]:
        n.step(RequestVoteResponse(n.term, peer, node_id, True))
    assert n.role is Role.LEADER
    persist(n, n.ready())
    return n


def settled_leader(membership: Membership = THREE) -> RaftNode:
    """Leader 1 of term 1 whose no-op every peer acknowledged: it may change the configuration."""
    n = elected(membership)
    for peer in n.peers:
        ack(n, peer)
    n.ready()
    assert n.commit == n.log.last_index == 1 and n.log.term(1) == n.term
    return n


def commit_change(leader: RaftNode, new: Membership) -> int:
    """Propose `new` and have every peer of the new configuration acknowledge it."""
    index = leader.propose_config(new)
    persist(leader, leader.ready())
    for peer in leader.peers:
        ack(leader, peer)
    leader.ready()
    assert leader.commit == index
    return index


def pump(
    nodes: dict[int, RaftNode],
    *,
    drop: Callable[[Message], bool] = lambda m: False,
    rounds: int = 200,
) -> dict[int, list[Ready]]:
    """Deliver every message among `nodes` (persisting every write) until all is quiet.

    Returns each node's Readies, in order."""
    readies: dict[int, list[Ready]] = {i: [] for i in nodes}
    for _ in range(rounds):
        outbox: list[Message] = []
        for n in nodes.values():
            if n.has_ready():
                ready = n.ready()
                readies[n.id].append(ready)
                persist(n, ready)
                outbox += ready.messages + ready.persisted_messages
        if not outbox and not any(n.has_ready() for n in nodes.values()):
            return readies
        for msg in outbox:
            if msg.dst in nodes and not drop(msg):
                nodes[msg.dst].step(msg)
    raise AssertionError("the cluster never went quiet")


def heartbeat(nodes: dict[int, RaftNode], leader: int) -> dict[int, list[Ready]]:
    """Pump until quiet, then once more after a heartbeat round tells everyone the commit index."""
    readies = pump(nodes)
    nodes[leader].tick()  # heartbeat_ticks is 1
    for node_id, more in pump(nodes).items():
        readies[node_id] += more
    return readies


def cluster(membership: Membership = THREE, leader: int = 1) -> dict[int, RaftNode]:
    """Every member of `membership` started from it, `leader` elected and its no-op committed."""
    nodes = {i: make(i, membership) for i in sorted(membership.members)}
    nodes[leader].campaign()
    heartbeat(nodes, leader)
    assert role(nodes[leader]) is Role.LEADER
    assert all(n.commit == 1 for n in nodes.values())
    return nodes


def memberships(readies: Iterable[Ready]) -> list[Membership]:
    return [r.membership for r in readies if r.membership is not None]


def removed_count(readies: Iterable[Ready]) -> int:
    return sum(1 for r in readies if r.removed)


# --------------------------------------------------------------- Membership


def test_add_learner_promote_and_remove_each_move_one_member() -> None:
    learner = THREE.add_learner(4, "host4:1")
    assert dict(learner.voters) == {1: "", 2: "", 3: ""}
    assert dict(learner.learners) == {4: "host4:1"}
    promoted = learner.promote(4)
    assert dict(promoted.voters) == {1: "", 2: "", 3: "", 4: "host4:1"}
    assert dict(promoted.learners) == {}
    assert promoted.quorum == 3
    without_voter = promoted.remove(2)
    assert set(without_voter.voters) == {1, 3, 4} and not without_voter.learners
    without_learner = learner.remove(4)
    assert without_learner == THREE
    assert learner.address(4) == "host4:1" and learner.address(1) == ""
    assert learner.address(9) is None
    assert learner.members == frozenset({1, 2, 3, 4})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda: THREE.add_learner(2, "x"), "already in the cluster", id="add-voter"),
        pytest.param(lambda: WITH_LEARNER.add_learner(4, "x"), "already in", id="add-learner"),
        pytest.param(lambda: THREE.promote(2), "already a voter", id="promote-voter"),
        pytest.param(lambda: THREE.promote(9), "not in the cluster", id="promote-stranger"),
        pytest.param(lambda: THREE.remove(9), "not in the cluster", id="remove-stranger"),
        pytest.param(lambda: Membership.of((1,)).remove(1), "only voter", id="remove-only-voter"),
    ],
)
def test_membership_change_errors(change: Callable[[], Membership], message: str) -> None:
    with pytest.raises(ConfigChangeError, match=message):
        change()


def test_removing_a_learner_from_a_single_voter_cluster_is_allowed() -> None:
    solo = Membership.of((1,)).add_learner(2, "")
    assert solo.remove(2) == Membership.of((1,))


def test_check_single_change_from_refuses_two_voter_changes() -> None:
    FOUR.check_single_change_from(THREE)  # one voter added
    Membership.of((1, 2)).check_single_change_from(THREE)  # one voter dropped
    WITH_LEARNER.check_single_change_from(THREE)  # learners do not count
    with pytest.raises(ConfigChangeError, match="more than one"):
        Membership.of((1, 2, 3, 4, 5)).check_single_change_from(THREE)
    with pytest.raises(ConfigChangeError, match="more than one"):
        Membership.of((1,)).check_single_change_from(THREE)
    with pytest.raises(ConfigChangeError, match="more than one"):
        Membership.of((1, 2, 4)).check_single_change_from(THREE)  # swap = one out, one in
    with pytest.raises(ConfigChangeError, match="at least one voter"):
        Membership({}).check_single_change_from(Membership.of((1,)))


def test_encode_decode_round_trip() -> None:
    membership = Membership({3: "c:3", 1: "a:1"}, {7: "g:7", 5: ""})
    decoded = Membership.decode(membership.encode())
    assert decoded == membership
    assert dict(decoded.voters) == {1: "a:1", 3: "c:3"}
    assert dict(decoded.learners) == {5: "", 7: "g:7"}
    # Canonical: the same configuration, however built, encodes to the same bytes.
    assert Membership({1: "a:1", 3: "c:3"}, {5: "", 7: "g:7"}).encode() == membership.encode()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\x00garbage", id="not-cbor"),
        pytest.param(cbor2.dumps(5), id="an-int"),
        pytest.param(cbor2.dumps([[[1, "a"]]]), id="one-list"),
        pytest.param(cbor2.dumps([[["x", "a"]], []]), id="non-int-id"),
        pytest.param(cbor2.dumps([[[0, "a"]], []]), id="zero-id"),
        pytest.param(cbor2.dumps([[[1, "a"]], [[1, "b"]]]), id="voter-and-learner"),
    ],
)
def test_decode_of_garbage_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        Membership.decode(data)


def test_equality_and_hash_ignore_order_but_not_addresses_or_roles() -> None:
    a = Membership({1: "a", 2: "b"}, {3: "c"})
    b = Membership({2: "b", 1: "a"}, {3: "c"})
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != Membership({1: "a", 2: "B"}, {3: "c"})  # an address changed
    assert a != Membership({1: "a", 2: "b", 3: "c"})  # 3 a voter rather than a learner
    assert a != Membership({1: "a", 2: "b"})
    assert Membership.of([1, 2]) == Membership({1: "", 2: ""})
    assert a != (1, 2)
    assert a.__eq__(object()) is NotImplemented


def test_membership_is_immutable_even_through_the_mapping_it_was_built_from() -> None:
    voters = {1: "a"}
    m = Membership(voters)
    voters[2] = "b"
    assert set(m.voters) == {1}
    with pytest.raises(TypeError):
        m.voters[3] = "c"  # type: ignore[index]


# ----------------------------------------------------------- propose_config


def test_propose_config_needs_a_leader() -> None:
    follower = make(2)
    follower.step(Heartbeat(1, 1, 2, 0))
    with pytest.raises(NotLeaderError) as info:
        follower.propose_config(WITH_LEARNER)
    assert info.value.leader_id == 1
    assert follower.membership == THREE and follower.log.last_index == 0


def test_propose_config_refused_while_a_change_is_uncommitted() -> None:
    leader = settled_leader()
    index = leader.propose_config(WITH_LEARNER)
    with pytest.raises(ConfigChangeError, match="already in progress"):
        leader.propose_config(WITH_LEARNER.remove(4))
    assert leader.log.last_index == index and leader.membership == WITH_LEARNER
    persist(leader, leader.ready())
    ack(leader, 2)
    leader.ready()
    assert leader.commit == index
    leader.propose_config(FOUR)  # once committed, the next change goes
    assert leader.membership == FOUR


def test_propose_config_refused_before_the_leader_committed_an_entry_of_its_term() -> None:
    # Entries of term 1 are committed, but the new leader's no-op (term 2) is not.
    entries = [noop(1, 1), command(2, 1)]
    leader = make(1, term=1, commit=2, entries=entries)
    leader.campaign()
    leader.ready()
    leader.step(RequestVoteResponse(2, 2, 1, True))
    persist(leader, leader.ready())
    assert leader.role is Role.LEADER and leader.commit == 2
    with pytest.raises(ConfigChangeError, match="not committed an entry of its term"):
        leader.propose_config(WITH_LEARNER)
    ack(leader, 2)
    leader.ready()
    assert leader.commit == 3
    leader.propose_config(WITH_LEARNER)


def test_propose_config_refused_for_no_change() -> None:
    leader = settled_leader()
    with pytest.raises(ConfigChangeError, match="would not change"):
        leader.propose_config(Membership.of((3, 2, 1)))
    assert leader.log.last_index == 1


def test_propose_config_refused_for_a_two_voter_change() -> None:
    leader = settled_leader()
    with pytest.raises(ConfigChangeError, match="more than one"):
        leader.propose_config(Membership.of((1, 2, 3, 4, 5)))
    with pytest.raises(ConfigChangeError, match="more than one"):
        leader.propose_config(Membership.of((1, 2, 4)))
    assert leader.log.last_index == 1 and leader.membership == THREE


def test_config_takes_effect_on_the_leader_when_appended() -> None:
    leader = settled_leader()
    index = leader.propose_config(WITH_LEARNER)
    assert index == 2
    assert leader.log.entry(2) == config_entry(2, 1, WITH_LEARNER)
    assert leader.commit == 1  # not committed, yet in effect
    assert leader.membership == WITH_LEARNER and leader.config_index == 2
    assert 4 in leader.progress and leader.peers == (2, 3, 4)
    ready = leader.ready()
    assert ready.membership == WITH_LEARNER
    assert ready.entries == [config_entry(2, 1, WITH_LEARNER)]
    assert leader.ready().membership is None  # reported once


def test_added_learner_is_sent_the_log_without_waiting_for_another_proposal() -> None:
    nodes = cluster()
    nodes[4] = make(4, THREE)  # started empty, as a joining member is
    nodes[1].propose_config(WITH_LEARNER)
    for _ in range(2 * STALLED_ROUNDS_BEFORE_PROBE):  # an idle cluster: heartbeats only
        heartbeat(nodes, 1)
    assert nodes[4].log.last_index == 2
    assert nodes[4].membership == WITH_LEARNER


def test_new_voters_form_the_quorum_as_soon_as_the_change_is_appended() -> None:
    leader = settled_leader(WITH_LEARNER)
    index = leader.propose_config(FOUR)
    persist(leader, leader.ready())
    ack(leader, 2)
    leader.ready()
    # Leader and 2 made a majority of {1, 2, 3}, but not of {1, 2, 3, 4}.
    assert leader.commit == 1
    ack(leader, 4)  # the promoted learner's ack now counts
    leader.ready()
    assert leader.commit == index


def test_follower_takes_a_config_into_effect_when_it_appends_it_before_commit() -> None:
    follower = make(2)
    entries = (noop(1, 1), config_entry(2, 1, WITH_LEARNER))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 1))
    assert follower.membership == WITH_LEARNER and follower.config_index == 2
    assert follower.commit == 1
    ready = follower.ready()
    assert ready.membership == WITH_LEARNER
    assert follower.ready().membership is None  # once
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 1))  # a duplicate changes nothing
    assert follower.ready().membership is None
    assert follower.membership == WITH_LEARNER and follower.membership_at(1) == THREE
    # Committing it later reports nothing new.
    follower.step(Heartbeat(1, 1, 2, 2))
    ready = follower.ready()
    assert follower.commit == 2 and ready.membership is None and not ready.removed


def test_follower_falls_back_to_the_previous_config_when_its_config_entry_is_cut() -> None:
    follower = make(2)
    entries = (noop(1, 1), command(2, 1), config_entry(3, 1, WITH_LEARNER))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 2))
    assert follower.ready().membership == WITH_LEARNER
    # Leader 3 of term 2 never had entry 3: it overwrites it.
    follower.step(AppendEntries(2, 3, 2, 2, 1, (noop(3, 2),), 2))
    assert follower.log.entry(3) == noop(3, 2)
    assert follower.membership == THREE and follower.config_index == 0
    ready = follower.ready()
    assert ready.membership == THREE
    assert follower.ready().membership is None


def test_cut_falls_back_to_the_newest_config_still_in_the_log() -> None:
    follower = make(2)
    entries = (noop(1, 1), config_entry(2, 1, WITH_LEARNER), config_entry(3, 1, FOUR))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 2))
    assert follower.membership == FOUR
    follower.ready()
    follower.step(AppendEntries(2, 3, 2, 2, 1, (noop(3, 2),), 2))
    assert follower.membership == WITH_LEARNER and follower.config_index == 2
    assert follower.ready().membership == WITH_LEARNER


# ----------------------------------------------------------------- learners


def test_learner_receives_append_entries() -> None:
    nodes = cluster(WITH_LEARNER)
    nodes[1].propose([b"a", b"b"])
    heartbeat(nodes, 1)
    learner = nodes[4]
    assert learner.log.slice(1, 4) == nodes[1].log.slice(1, 4)
    assert learner.commit == 3 and learner.leader_id == 1
    assert nodes[1].progress[4].match == 3


def test_learner_never_campaigns() -> None:
    learner = make(4, WITH_LEARNER)
    for _ in range(5 * ELECTION_TICKS):
        learner.tick()
    assert role(learner) is Role.FOLLOWER and learner.term == 0
    ready = learner.ready()
    assert ready.messages == [] and ready.persisted_messages == [] and ready.hard_state is None
    learner.campaign()  # even when asked directly
    assert role(learner) is Role.FOLLOWER and learner.term == 0


def test_learner_acks_do_not_count_toward_commit() -> None:
    leader = elected(WITH_LEARNER)
    assert leader.commit == 0
    ack(leader, 4)
    leader.ready()
    assert leader.commit == 0  # leader and learner are not a majority of {1, 2, 3}
    ack(leader, 2)
    leader.ready()
    assert leader.commit == 1


def test_learner_votes_do_not_count() -> None:
    candidate = make(1, WITH_LEARNER)
    candidate.campaign()
    ready = candidate.ready()
    assert sorted(m.dst for m in sent(ready, RequestVote)) == [2, 3]  # learners are not asked
    candidate.step(RequestVoteResponse(1, 4, 1, True))
    assert role(candidate) is Role.CANDIDATE
    candidate.step(RequestVoteResponse(1, 2, 1, True))
    assert role(candidate) is Role.LEADER


def test_learner_refusals_do_not_lose_an_election_either() -> None:
    candidate = make(1, Membership.of((1, 2, 3)).add_learner(4, "").add_learner(5, ""))
    candidate.campaign()
    candidate.ready()
    candidate.step(RequestVoteResponse(1, 4, 1, False))
    candidate.step(RequestVoteResponse(1, 5, 1, False))
    candidate.step(RequestVoteResponse(1, 2, 1, False))
    assert role(candidate) is Role.CANDIDATE  # only one voter refused
    candidate.step(RequestVoteResponse(1, 3, 1, True))
    assert role(candidate) is Role.LEADER


# ------------------------------------------------------------------- quorums


def test_after_promotion_to_four_voters_a_commit_needs_three() -> None:
    leader = settled_leader(WITH_LEARNER)
    commit_change(leader, FOUR)
    first, _ = leader.propose([b"x"])
    persist(leader, leader.ready())
    ack(leader, 2)
    leader.ready()
    assert leader.commit == first - 1
    ack(leader, 3)
    leader.ready()
    assert leader.commit == first


def test_after_removing_a_voter_the_two_left_commit_with_each_other() -> None:
    leader = settled_leader()
    two = Membership.of((1, 2))
    index = leader.propose_config(two)
    persist(leader, leader.ready())
    assert leader.quorum == 2
    ack(leader, 2)
    leader.ready()
    assert leader.commit == index
    first, _ = leader.propose([b"x"])
    persist(leader, leader.ready())
    ack(leader, 3)  # no longer a member: ignored
    leader.ready()
    assert leader.commit == index
    ack(leader, 2)
    leader.ready()
    assert leader.commit == first


# ------------------------------------------------------------ removed members


def test_leader_removing_itself_keeps_replicating_and_no_longer_counts_itself() -> None:
    leader = settled_leader()
    without_leader = Membership.of((2, 3))
    index = leader.propose_config(without_leader)
    assert role(leader) is Role.LEADER and not leader.is_voter
    ready = leader.ready()
    persist(leader, ready)
    appended = sent(ready, AppendEntries)
    assert sorted(m.dst for m in appended) == [2, 3]
    assert all(m.entries[-1] == config_entry(index, 1, without_leader) for m in appended)
    ack(leader, 2)
    ready = leader.ready()
    # Leader and 2 would be a majority of {1, 2, 3}; 2 alone is not one of {2, 3}.
    assert leader.commit == 1 and role(leader) is Role.LEADER and not ready.removed
    leader.propose([b"still leading"])  # until the change commits, it goes on serving
    assert sent(leader.ready(), AppendEntries)


def test_removed_leader_steps_down_after_commit_and_hands_over_to_an_up_to_date_voter() -> None:
    leader = settled_leader()
    index = leader.propose_config(Membership.of((2, 3)))
    leader.propose([b"x"])
    persist(leader, leader.ready())
    ack(leader, 2, index)  # 2 holds the change but not the entry after it
    ready = leader.ready()
    assert leader.commit == 1 and role(leader) is Role.LEADER and not ready.removed
    ack(leader, 3)  # 3 holds the whole log
    ready = leader.ready()
    assert leader.commit == index
    assert role(leader) is Role.FOLLOWER and leader.leader_id is None
    assert sent(ready, TimeoutNow) == [TimeoutNow(1, 1, 3)]
    assert ready.removed
    assert ready.soft_state is not None and ready.soft_state.role is Role.FOLLOWER
    assert not leader.ready().removed  # reported once
    for _ in range(5 * ELECTION_TICKS):
        leader.tick()
    assert role(leader) is Role.FOLLOWER  # a non-member never campaigns


def test_removed_leader_sends_timeout_now_only_to_a_voter_that_holds_its_whole_log() -> None:
    leader = settled_leader()
    index = leader.propose_config(Membership.of((2, 3)))
    leader.propose([b"x"])  # 2 and 3 commit the change without this one
    persist(leader, leader.ready())
    ack(leader, 2, index)
    ack(leader, 3, index)
    ready = leader.ready()
    assert leader.commit == index and role(leader) is Role.FOLLOWER
    assert sent(ready, TimeoutNow) == []  # nobody is up to date: they elect on their own


def test_removed_leader_hands_over_and_the_rest_elect_a_leader() -> None:
    nodes = cluster()
    nodes[1].propose_config(Membership.of((2, 3)))
    readies = pump(nodes)
    assert role(nodes[1]) is Role.FOLLOWER and not nodes[1].is_voter
    assert removed_count(readies[1]) == 1
    leaders = [n for n in (nodes[2], nodes[3]) if role(n) is Role.LEADER]
    assert len(leaders) == 1 and leaders[0].term == 2
    assert removed_count(readies[2]) == removed_count(readies[3]) == 0


def test_member_outside_the_committed_config_is_reported_removed_once_and_not_before() -> None:
    follower = make(3)
    entries = (noop(1, 1), config_entry(2, 1, Membership.of((1, 2))))
    follower.step(AppendEntries(1, 1, 3, 0, 0, entries, 1))
    ready = follower.ready()
    assert ready.membership == Membership.of((1, 2))
    assert not ready.removed  # the change is not committed yet
    follower.step(Heartbeat(1, 1, 3, 2))
    assert follower.ready().removed
    assert not follower.ready().removed
    assert not follower.has_ready()


def test_member_of_the_config_is_never_reported_removed() -> None:
    follower = make(2)
    entries = (noop(1, 1), config_entry(2, 1, Membership.of((1, 2))))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 2))
    assert not follower.ready().removed


def test_removed_follower_learns_it_was_removed() -> None:
    nodes = cluster()
    nodes[1].propose_config(Membership.of((1, 2)))
    readies = pump(nodes)
    for _ in range(3):
        for node_id, more in heartbeat(nodes, 1).items():
            readies[node_id] += more
    assert nodes[1].commit == 2
    assert nodes[3].membership == Membership.of((1, 2))
    assert removed_count(readies[3]) == 1
    for _ in range(5 * ELECTION_TICKS):  # it no longer campaigns to disrupt the others
        nodes[3].tick()
    assert role(nodes[3]) is Role.FOLLOWER and sent(nodes[3].ready(), RequestVote) == []


# ------------------------------------------------------ leadership transfer


def test_transfer_leadership_errors() -> None:
    follower = make(2)
    follower.step(Heartbeat(1, 1, 2, 0))
    with pytest.raises(NotLeaderError):
        follower.transfer_leadership(3)
    leader = settled_leader(WITH_LEARNER)
    with pytest.raises(ConfigChangeError, match="already the leader"):
        leader.transfer_leadership(1)
    with pytest.raises(ConfigChangeError, match="not a voter"):
        leader.transfer_leadership(4)  # a learner
    with pytest.raises(ConfigChangeError, match="not a voter"):
        leader.transfer_leadership(9)  # a stranger
    assert leader.transferee is None


def test_proposals_raise_transfer_in_progress() -> None:
    leader = settled_leader()
    leader.transfer_leadership(2)
    with pytest.raises(TransferInProgress) as info:
        leader.propose([b"x"])
    assert info.value.transferee == 2
    with pytest.raises(TransferInProgress):
        leader.propose_config(WITH_LEARNER)
    assert leader.log.last_index == 1


def test_timeout_now_waits_until_the_target_holds_the_whole_log() -> None:
    leader = elected()
    ack(leader, 3)
    leader.ready()
    leader.propose([b"a", b"b"])  # last index 3; 2 matches nothing yet
    persist(leader, leader.ready())
    leader.transfer_leadership(2)
    assert sent(leader.ready(), TimeoutNow) == []
    ack(leader, 2, 2)
    assert sent(leader.ready(), TimeoutNow) == []
    ack(leader, 2, 3)
    assert sent(leader.ready(), TimeoutNow) == [TimeoutNow(1, 1, 2)]


def test_timeout_now_is_sent_at_once_to_a_target_already_caught_up() -> None:
    leader = settled_leader()
    leader.transfer_leadership(3)
    assert sent(leader.ready(), TimeoutNow) == [TimeoutNow(1, 1, 3)]


def test_target_campaigns_at_once_on_timeout_now_from_its_leader_and_wins() -> None:
    nodes = cluster()
    nodes[1].transfer_leadership(2)
    readies = pump(nodes)
    assert sum(len(sent(r, TimeoutNow)) for r in readies[1]) >= 1
    assert role(nodes[2]) is Role.LEADER and nodes[2].term == 2
    assert role(nodes[1]) is Role.FOLLOWER and nodes[1].leader_id == 2
    assert nodes[1].transferee is None


def test_timeout_now_starts_an_election_without_any_tick() -> None:
    follower = make(2)
    follower.step(AppendEntries(1, 1, 2, 0, 0, (noop(1, 1),), 1))
    follower.ready()
    follower.step(TimeoutNow(1, 1, 2))
    assert role(follower) is Role.CANDIDATE and follower.term == 2
    ready = follower.ready()
    assert sorted(m.dst for m in sent(ready, RequestVote)) == [1, 3]


def test_timeout_now_from_a_non_leader_or_an_old_term_is_ignored() -> None:
    follower = make(2)
    follower.step(AppendEntries(2, 1, 2, 0, 0, (noop(1, 2),), 1))
    follower.ready()
    follower.step(TimeoutNow(2, 3, 2))  # 3 is not the leader
    assert role(follower) is Role.FOLLOWER and follower.term == 2
    follower.step(TimeoutNow(1, 1, 2))  # the leader's, but of an older term
    assert role(follower) is Role.FOLLOWER and follower.term == 2
    follower.step(TimeoutNow(3, 1, 2))  # a newer term: not from the leader of that term
    assert role(follower) is Role.FOLLOWER and follower.term == 3
    ready = follower.ready()
    assert sent(ready, RequestVote) == []


def test_timeout_now_to_a_learner_is_ignored() -> None:
    learner = make(4, WITH_LEARNER)
    learner.step(AppendEntries(1, 1, 4, 0, 0, (noop(1, 1),), 1))
    learner.ready()
    learner.step(TimeoutNow(1, 1, 4))
    assert role(learner) is Role.FOLLOWER and learner.term == 1


def test_transfer_is_abandoned_after_an_election_timeout_and_soft_state_reports_it() -> None:
    leader = elected()
    ack(leader, 3)
    leader.ready()
    leader.transfer_leadership(2)  # 2 never answers
    ready = leader.ready()
    assert ready.soft_state is not None and ready.soft_state.transferee == 2
    for _ in range(ELECTION_TICKS - 1):
        leader.tick()
        assert leader.ready().soft_state is None
    with pytest.raises(TransferInProgress):
        leader.propose([b"x"])
    leader.tick()
    ready = leader.ready()
    assert ready.soft_state is not None and ready.soft_state.transferee is None
    assert role(leader) is Role.LEADER
    leader.propose([b"x"])  # accepted again


def test_transfer_ticks_overrides_the_election_timeout() -> None:
    leader = make(1, config=Config(election_ticks=ELECTION_TICKS, transfer_ticks=3))
    leader.campaign()
    leader.ready()
    leader.step(RequestVoteResponse(1, 3, 1, True))
    leader.ready()
    leader.transfer_leadership(2)
    for _ in range(3):
        assert leader.transferee == 2
        leader.tick()
    assert leader.transferee is None


# -------------------------------------------------- compaction and snapshots


def test_compaction_keeps_the_configuration_in_force_at_the_log_start() -> None:
    entries = [
        noop(1, 1),
        config_entry(2, 1, WITH_LEARNER),
        command(3, 1),
        config_entry(4, 1, FOUR),
        command(5, 1),
        command(6, 1),
    ]
    n = make(2, term=1, commit=6, entries=entries)
    n.ready()
    assert [n.membership_at(i) for i in range(7)] == [THREE] * 2 + [WITH_LEARNER] * 2 + [FOUR] * 3
    n.snapshot_taken(3, 1)
    n.compact_log(3)
    assert n.log.offset == 3
    assert n.membership_at(3) == WITH_LEARNER  # the entry that set it is gone
    assert n.membership_at(4) == FOUR and n.membership == FOUR
    n.snapshot_taken(5, 1)
    n.compact_log(5)
    assert n.membership_at(5) == FOUR and n.membership == FOUR and n.config_index == 5
    assert n.ready().membership is None  # compaction changes nothing in effect


def test_leader_sends_the_configuration_at_the_snapshot_with_install_snapshot() -> None:
    leader = settled_leader(WITH_LEARNER)
    index = commit_change(leader, FOUR)
    leader.propose([b"x"])
    persist(leader, leader.ready())
    for peer in (2, 3, 4):
        ack(leader, peer)
    leader.ready()
    leader.snapshot_taken(index - 1, 1)  # before the promotion: 4 was a learner then
    leader.compact_log(index - 1)
    prev = leader.progress[2].next - 1
    leader.step(AppendEntriesResponse(1, 2, 1, False, 0, prev, 0, 1))  # 2 lost its disk
    installs = sent(leader.ready(), InstallSnapshot, 2)
    assert installs == [InstallSnapshot(1, 1, 2, index - 1, 1, WITH_LEARNER.encode())]


def test_install_snapshot_with_a_membership_installs_it() -> None:
    follower = make(2)
    follower.step(InstallSnapshot(3, 1, 2, 10, 3, FOUR.encode()))
    assert follower.membership == FOUR and follower.config_index == 10
    assert follower.membership_at(10) == FOUR
    ready = follower.ready()
    assert ready.snapshot == SnapshotRef(10, 3) and ready.membership == FOUR
    assert not ready.removed


def test_install_snapshot_with_an_empty_membership_keeps_the_one_held_for_that_index() -> None:
    follower = make(2)
    entries = (noop(1, 1), config_entry(2, 1, WITH_LEARNER), command(3, 1))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 1))
    follower.ready()
    # A snapshot at 5 (the log lacks it): the configuration known at 5 stays.
    follower.step(InstallSnapshot(1, 1, 2, 5, 1))
    assert follower.membership == WITH_LEARNER and follower.log.offset == 5
    assert follower.ready().snapshot == SnapshotRef(5, 1)


def test_install_snapshot_with_an_empty_membership_in_the_log_keeps_the_one_at_its_index() -> None:
    follower = make(2)
    entries = (noop(1, 1), config_entry(2, 1, WITH_LEARNER), command(3, 1),
               config_entry(4, 1, FOUR))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 1))
    follower.ready()
    follower.step(InstallSnapshot(1, 1, 2, 3, 1))  # the log holds (3, 1): its tail stays
    assert follower.log.offset == 3 and follower.log.last_index == 4
    assert follower.membership_at(3) == WITH_LEARNER  # not FOUR, the newest
    assert follower.membership == FOUR and follower.config_index == 4


def test_install_snapshot_keeps_later_configs_of_the_tail_it_keeps() -> None:
    follower = make(2)
    entries = (noop(1, 1), command(2, 1), command(3, 1), config_entry(4, 1, WITH_LEARNER))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 1))
    follower.ready()
    follower.step(InstallSnapshot(1, 1, 2, 3, 1, THREE.encode()))
    assert follower.log.offset == 3 and follower.log.last_index == 4
    assert follower.membership_at(3) == THREE
    assert follower.membership == WITH_LEARNER and follower.config_index == 4


def test_install_snapshot_dropping_the_log_drops_its_configs() -> None:
    follower = make(2)
    entries = (noop(1, 1), command(2, 1), config_entry(3, 1, WITH_LEARNER))
    follower.step(AppendEntries(1, 1, 2, 0, 0, entries, 1))
    follower.ready()
    # A snapshot of another history at 2: the tail, config entry included, goes.
    follower.step(InstallSnapshot(2, 3, 2, 2, 2, THREE.encode()))
    assert follower.log.offset == 2 and follower.log.last_index == 2
    assert follower.membership == THREE
    assert follower.ready().membership == THREE


def test_restart_with_config_entries_comes_up_with_the_newest() -> None:
    entries = [noop(1, 1), config_entry(2, 1, WITH_LEARNER), command(3, 1),
               config_entry(4, 1, FOUR), command(5, 1)]
    n = make(4, THREE, term=1, commit=3, entries=entries)
    assert n.membership == FOUR and n.config_index == 4 and n.is_voter
    assert n.membership_at(3) == WITH_LEARNER
    assert n.ready().membership is None  # nothing changed since the stored state


def test_restart_from_a_snapshot_uses_its_membership_then_the_entries_after_it() -> None:
    n = make(4, WITH_LEARNER, term=1, snapshot=SnapshotRef(10, 1),
             entries=[command(11, 1), config_entry(12, 1, FOUR)])
    assert n.membership_at(10) == WITH_LEARNER
    assert n.membership == FOUR and n.config_index == 12


# ---------------------------------------------------------- joining members


def test_joining_member_never_campaigns() -> None:
    joining = make(5, THREE)
    for _ in range(5 * ELECTION_TICKS):
        joining.tick()
    assert role(joining) is Role.FOLLOWER and joining.term == 0
    assert not joining.has_ready()


def test_joining_member_follows_append_entries_and_joins_with_its_config() -> None:
    joining = make(5, THREE)
    with_five = THREE.add_learner(5, "n5")
    joining.step(AppendEntries(1, 1, 5, 0, 0, (noop(1, 1), command(2, 1)), 2))
    ready = joining.ready()
    assert joining.leader_id == 1 and joining.log.last_index == 2
    assert sent(ready, AppendEntriesResponse) == [AppendEntriesResponse(1, 5, 1, True, 2, 0, 0, 0)]
    assert ready.membership is None and not ready.removed
    joining.step(AppendEntries(1, 1, 5, 2, 1, (config_entry(3, 1, with_five),), 2))
    ready = joining.ready()
    assert ready.membership == with_five and joining.membership == with_five
    assert not joining.is_voter and not ready.removed
    # Promoted: now it campaigns when its leader goes quiet.
    joining.step(AppendEntries(1, 1, 5, 3, 1, (config_entry(4, 1, with_five.promote(5)),), 3))
    assert joining.ready().membership == with_five.promote(5) and joining.is_voter
    for _ in range(2 * ELECTION_TICKS):
        joining.tick()
    assert role(joining) is Role.CANDIDATE


def test_joining_member_follows_install_snapshot_naming_it() -> None:
    joining = make(5, THREE)
    with_five = THREE.add_learner(5, "n5")
    joining.step(InstallSnapshot(2, 1, 5, 20, 2, with_five.encode()))
    ready = joining.ready()
    assert ready.snapshot == SnapshotRef(20, 2) and ready.membership == with_five
    assert joining.leader_id == 1 and joining.commit == 20 and not ready.removed
    assert sent(ready, AppendEntriesResponse) == [AppendEntriesResponse(2, 5, 1, True, 20, 0, 0, 0)]


def test_joining_learner_catches_up_in_a_cluster() -> None:
    nodes = cluster()
    nodes[1].propose([b"a", b"b"])
    pump(nodes)
    nodes[5] = make(5, THREE)
    with_five = THREE.add_learner(5, "n5")
    nodes[1].propose_config(with_five)
    nodes[1].propose([b"c"])
    readies = heartbeat(nodes, 1)
    assert nodes[5].log.slice(1, 6) == nodes[1].log.slice(1, 6)
    assert nodes[5].membership == with_five and nodes[5].commit == 5
    assert memberships(readies[5]) == [with_five]
    assert removed_count(readies[5]) == 0


def test_joining_member_installing_a_snapshot_from_before_its_addition_is_not_removed() -> None:
    # These three once failed: any member outside the committed configuration was
    # reported removed, so a joining one was shut down on its way in.
    joining = make(5, THREE)
    # The leader's snapshot at 10 predates entry 12, which adds 5 as a learner.
    joining.step(InstallSnapshot(2, 1, 5, 10, 2, THREE.encode()))
    assert not joining.ready().removed
    with_five = THREE.add_learner(5, "n5")
    entries = (command(11, 2), config_entry(12, 2, with_five))
    joining.step(AppendEntries(2, 1, 5, 10, 2, entries, 12))
    ready = joining.ready()
    assert joining.membership == with_five and not ready.removed


def test_joining_member_catching_up_through_older_configs_is_not_removed() -> None:
    joining = make(5, THREE)
    with_five = FOUR.add_learner(5, "n5")
    # Entry 2 (learner 4) and 3 (4 promoted) are committed; entry 5 adds 5. The leader
    # sends its log in two pieces (max_append_entries), the first ending at entry 3.
    joining.step(AppendEntries(
        1, 1, 5, 0, 0, (noop(1, 1), config_entry(2, 1, WITH_LEARNER), config_entry(3, 1, FOUR)), 5
    ))
    assert not joining.ready().removed
    joining.step(AppendEntries(1, 1, 5, 3, 1, (command(4, 1), config_entry(5, 1, with_five)), 5))
    assert joining.membership == with_five and not joining.ready().removed


def test_joining_member_whose_addition_is_cut_is_not_removed() -> None:
    joining = make(5, THREE)
    with_five = WITH_LEARNER.add_learner(5, "n5")
    entries = (noop(1, 1), config_entry(2, 1, WITH_LEARNER), config_entry(3, 1, with_five))
    joining.step(AppendEntries(1, 1, 5, 0, 0, entries, 2))
    assert joining.membership == with_five
    joining.ready()
    # Leader 2 of term 2 never had entry 3: the addition never happened.
    joining.step(AppendEntries(2, 2, 5, 2, 1, (noop(3, 2),), 3))
    ready = joining.ready()
    assert ready.membership == WITH_LEARNER
    assert not ready.removed  # the new leader may well add it again
