"""The Raft paper's rules, one at a time, on RaftNode objects driven by hand.

Every message here is built by the test; nothing goes through a network or a
disk, so each test states exactly which input produces which output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import pytest

from raft_trio.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Membership,
    Message,
    NotLeaderError,
    RaftLog,
    RaftNode,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotRef,
)
from raft_trio.core import Config as CoreConfig


def Config(**settings: Any) -> CoreConfig:
    """The paper's rules one at a time: PreVote and CheckQuorum (on by default)
    change when and how elections start, and have tests of their own in
    tests/test_prevote_reads.py, so the rule tests here run without them."""
    return CoreConfig(**{"pre_vote": False, "check_quorum": False, **settings})

M = TypeVar("M")

VOTERS3 = (1, 2, 3)
VOTERS5 = (1, 2, 3, 4, 5)
THREE = Membership.of(VOTERS3)


# ------------------------------------------------------------------ helpers


def log_of(terms: Iterable[int], start: int = 1) -> list[Entry]:
    """Command entries with consecutive indices from `start` and the given terms."""
    return [
        Entry(start + i, term, EntryKind.COMMAND, b"%d@%d" % (start + i, term))
        for i, term in enumerate(terms)
    ]


def node(
    node_id: int = 1,
    voters: Sequence[int] = VOTERS3,
    *,
    term: int = 0,
    vote: int | None = None,
    commit: int = 0,
    entries: Sequence[Entry] = (),
    config: Config | None = None,
) -> RaftNode:
    return RaftNode(
        node_id,
        voters,
        hard_state=HardState(term, vote, commit),
        entries=entries,
        config=config if config is not None else Config(),
    )


def role(n: RaftNode) -> Role:
    """The node's role, read through a call so that type checkers do not narrow it."""
    return n.role


def entries_of(n: RaftNode) -> list[Entry]:
    return n.log.slice(1, n.log.last_index + 1)


def persist(n: RaftNode, ready: Ready) -> None:
    """Pretend the Ready's write is durable, as the driver would report it."""
    if ready.entries:
        last = ready.entries[-1]
        n.persisted(last.index, last.term)


def elect(n: RaftNode, *, persisted: bool = True) -> Ready:
    """Make `n` leader of the next term with votes from a bare majority of its peers."""
    n.campaign()
    ready = n.ready()
    for peer in n.peers[: n.quorum - 1]:
        n.step(RequestVoteResponse(n.term, peer, n.id, True))
    assert n.role is Role.LEADER
    ready = n.ready()
    if persisted:
        persist(n, ready)
    return ready


def of_type(messages: Iterable[Message], kind: type[M]) -> list[M]:
    return [m for m in messages if isinstance(m, kind)]


def vote_responses(ready: Ready) -> tuple[list[RequestVoteResponse], list[RequestVoteResponse]]:
    """(responses sent at once, responses held until durable)."""
    now = [m for m in ready.messages if isinstance(m, RequestVoteResponse)]
    later = [m for m in ready.persisted_messages if isinstance(m, RequestVoteResponse)]
    return now, later


def ask_vote(n: RaftNode, src: int, term: int, last_index: int = 0, last_term: int = 0) -> bool:
    """Deliver a RequestVote; return whether it was granted (checking where the answer went)."""
    n.step(RequestVote(term, src, n.id, last_index, last_term))
    now, later = vote_responses(n.ready())
    assert len(now) + len(later) == 1
    if later:
        assert later[0].granted and later[0].dst == src
        return True
    assert not now[0].granted and now[0].dst == src
    return False


# ------------------------------------------------------------ vote granting


def test_vote_granted_once_per_term() -> None:
    n = node(term=1)
    assert ask_vote(n, 2, term=2)
    assert (n.term, n.vote) == (2, 2)
    assert not ask_vote(n, 3, term=2)
    assert (n.term, n.vote) == (2, 2)


def test_vote_granted_again_to_same_candidate() -> None:
    n = node(term=1)
    assert ask_vote(n, 2, term=2)
    # A retransmitted request (the first answer may have been lost) gets the same answer.
    assert ask_vote(n, 2, term=2)
    assert (n.term, n.vote) == (2, 2)


def test_vote_survives_restart() -> None:
    n = node(term=1)
    assert ask_vote(n, 2, term=2)
    restarted = node(term=n.term, vote=n.vote)
    assert not ask_vote(restarted, 3, term=2)
    assert ask_vote(restarted, 2, term=2)


def test_vote_rejected_for_lower_term() -> None:
    n = node(term=5, vote=None)
    n.step(RequestVote(4, 2, 1, 100, 4))
    ready = n.ready()
    assert ready.messages == [RequestVoteResponse(5, 1, 2, False)]
    assert ready.persisted_messages == []
    assert (n.term, n.vote) == (5, None)


def test_up_to_date_higher_last_term_wins_over_longer_log() -> None:
    voter = node(term=3, entries=log_of([1, 1, 1, 2]))
    # Candidate log: shorter but with a later last term.
    assert ask_vote(voter, 2, term=4, last_index=1, last_term=3)
    voter = node(term=3, entries=log_of([1, 1, 1, 2]))
    # Candidate log: much longer but with an earlier last term.
    assert not ask_vote(voter, 2, term=4, last_index=50, last_term=1)


def test_up_to_date_same_last_term_longer_or_equal_log_wins() -> None:
    assert not ask_vote(node(term=1, entries=log_of([1, 1, 1])), 2, 2, last_index=2, last_term=1)
    assert ask_vote(node(term=1, entries=log_of([1, 1, 1])), 2, 2, last_index=3, last_term=1)
    assert ask_vote(node(term=1, entries=log_of([1, 1, 1])), 2, 2, last_index=4, last_term=1)


def test_rejected_vote_in_new_term_leaves_vote_free() -> None:
    n = node(term=1, entries=log_of([1, 1]))
    assert not ask_vote(n, 2, term=3, last_index=0, last_term=0)
    assert (n.term, n.vote) == (3, None)
    assert ask_vote(n, 3, term=3, last_index=2, last_term=1)


# ----------------------------------------------------------- role changes


def test_candidate_steps_down_on_append_entries_of_same_term() -> None:
    n = node(term=1)
    n.campaign()
    n.ready()
    assert n.role is Role.CANDIDATE and n.term == 2
    n.step(AppendEntries(2, 3, 1, 0, 0, tuple(log_of([2])), 0))
    assert role(n) is Role.FOLLOWER
    assert n.leader_id == 3
    assert (n.term, n.vote) == (2, 1)  # the vote for itself in term 2 stands
    ready = n.ready()
    assert ready.persisted_messages == [AppendEntriesResponse(2, 1, 3, True, 1, 0, 0, 0)]


def test_candidate_steps_down_on_heartbeat_of_same_term() -> None:
    n = node(term=1)
    n.campaign()
    n.ready()
    n.step(Heartbeat(2, 3, 1, 0))
    assert n.role is Role.FOLLOWER and n.leader_id == 3 and n.term == 2


def _higher_term_messages() -> list[Message]:
    # Node 1 sits in term 5; every message below carries term 7 and is addressed to it.
    return [
        RequestVote(7, 2, 1, 0, 0),  # stale log: refused, yet the term is adopted
        RequestVoteResponse(7, 2, 1, False),
        AppendEntries(7, 2, 1, 100, 6, (), 0),
        AppendEntriesResponse(7, 2, 1, False, 0, 3, 0, 0),
        Heartbeat(7, 2, 1, 0),
        HeartbeatResponse(7, 2, 1),
    ]


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
@pytest.mark.parametrize("msg", _higher_term_messages(), ids=lambda m: type(m).__name__)
def test_higher_term_in_any_message_makes_follower_and_clears_vote(
    role: Role, msg: Message
) -> None:
    n = node(term=4, vote=1, entries=log_of([1, 2, 4]))
    if role is Role.FOLLOWER:
        n = node(term=5, vote=3, entries=log_of([1, 2, 4]))
    elif role is Role.CANDIDATE:
        n.campaign()
    else:
        elect(n)
    n.ready()
    assert n.term == 5 and n.role is role
    n.step(msg)
    assert n.role is Role.FOLLOWER
    assert n.term == 7
    assert n.vote is None
    ready = n.ready()
    assert ready.hard_state is not None
    assert (ready.hard_state.term, ready.hard_state.vote) == (7, None)


def test_stale_term_messages_are_answered_with_the_current_term() -> None:
    n = node(term=5, entries=log_of([1, 5]))
    n.step(AppendEntries(3, 2, 1, 2, 5, (), 2))
    n.step(Heartbeat(3, 2, 1, 2))
    ready = n.ready()
    assert {(type(m).__name__, m.term) for m in ready.messages} == {
        ("AppendEntriesResponse", 5),
        ("HeartbeatResponse", 5),
    }
    assert n.role is Role.FOLLOWER and n.leader_id is None and n.commit == 0
    # And a leader hearing the higher term steps down.
    leader = node(term=2, entries=log_of([1, 1]))
    elect(leader)
    leader.ready()
    leader.step(AppendEntriesResponse(5, 2, 1, False, 0, 3, 0, 0))
    assert leader.role is Role.FOLLOWER and leader.term == 5


# --------------------------------------------------------------- durability


def test_hard_state_is_in_the_ready_that_holds_back_a_vote_grant() -> None:
    n = node(term=1, commit=0)
    n.step(RequestVote(2, 3, 1, 0, 0))
    ready = n.ready()
    assert ready.hard_state == HardState(2, 3, 0)
    assert ready.needs_persist()
    assert ready.messages == []
    assert ready.persisted_messages == [RequestVoteResponse(2, 1, 3, True)]


def test_candidate_requests_votes_only_after_its_own_vote_is_durable() -> None:
    n = node(term=1)
    n.campaign()
    ready = n.ready()
    assert ready.hard_state == HardState(2, 1, 0)
    assert of_type(ready.messages, RequestVote) == []
    assert sorted(m.dst for m in of_type(ready.persisted_messages, RequestVote)) == [2, 3]


def test_follower_success_response_is_a_persisted_message() -> None:
    n = node(term=1)
    n.step(AppendEntries(1, 2, 1, 0, 0, tuple(log_of([1, 1])), 0))
    ready = n.ready()
    assert ready.entries == log_of([1, 1])
    assert ready.messages == []
    assert ready.persisted_messages == [AppendEntriesResponse(1, 1, 2, True, 2, 0, 0, 0)]
    # A duplicate needs no new write, but its answer still waits for the earlier one.
    n.step(AppendEntries(1, 2, 1, 0, 0, tuple(log_of([1, 1])), 0))
    ready = n.ready()
    assert ready.entries == [] and ready.messages == []
    assert ready.persisted_messages == [AppendEntriesResponse(1, 1, 2, True, 2, 0, 0, 0)]


def test_follower_rejection_is_sent_at_once() -> None:
    n = node(term=1)
    n.step(AppendEntries(1, 2, 1, 5, 1, tuple(log_of([1], start=6)), 0))
    ready = n.ready()
    assert ready.persisted_messages == []
    assert ready.messages == [AppendEntriesResponse(1, 1, 2, False, 0, 5, 0, 1)]


def test_ready_entries_stay_contiguous_when_a_batch_overwrites_them() -> None:
    # Found by the simulator (n3 seed 59): a node leads term 1 for an instant, appends its
    # no-op, then in the same batch of inputs a term-2 leader overwrites index 1. The Ready
    # used to list both entries at index 1, which no write-ahead log can store.
    n = node(term=0)
    n.campaign()
    n.ready()
    n.step(RequestVoteResponse(1, 2, 1, True))
    assert n.role is Role.LEADER
    n.step(AppendEntries(2, 3, 1, 0, 0, tuple(log_of([2])), 0))
    ready = n.ready()
    assert ready.entries == log_of([2])
    assert entries_of(n) == log_of([2])


def test_ready_entries_keep_the_unwritten_prefix_when_a_batch_overwrites_a_suffix() -> None:
    n = node(term=1, entries=log_of([1]))
    n.step(AppendEntries(1, 2, 1, 1, 1, tuple(log_of([1, 1, 1], start=2)), 0))
    n.step(AppendEntries(3, 3, 1, 2, 1, tuple(log_of([3], start=3)), 0))
    ready = n.ready()
    assert ready.entries == [*log_of([1], start=2), *log_of([3], start=3)]
    assert entries_of(n) == log_of([1, 1, 3])


# ------------------------------------------------------------------- commit


def test_leader_appends_noop_at_start_of_each_term() -> None:
    n = node(term=1, entries=log_of([1, 1]))
    ready = elect(n)
    assert ready.entries == [Entry(3, 2, EntryKind.NOOP, b"")]
    assert n.log.last_index == 3
    n.step(AppendEntriesResponse(5, 2, 1, False, 0, 0, 0, 0))  # deposed
    assert n.role is Role.FOLLOWER
    ready = elect(n)
    assert ready.entries == [Entry(4, 6, EntryKind.NOOP, b"")]


def test_leader_counts_only_its_durable_index_toward_commit() -> None:
    n = node(term=1)
    elect(n, persisted=False)  # the no-op (1, 2) is written but not yet durable
    first, term = n.propose([b"x"])
    assert (first, term) == (2, 2)
    n.ready()
    n.step(AppendEntriesResponse(2, 2, 1, True, 2, 0, 0, 0))
    n.ready()
    # One durable copy (follower 2) of three voters: nothing is committed yet.
    assert n.commit == 0
    n.persisted(1, 2)
    assert n.commit == 1
    n.persisted(2, 2)
    assert n.commit == 2
    assert [e.index for e in n.ready().committed] == [1, 2]


def test_leader_alone_cannot_commit() -> None:
    n = node(node_id=1, voters=VOTERS5, term=1)
    elect(n)
    n.propose([b"x"])
    persist(n, n.ready())
    assert n.commit == 0
    n.step(AppendEntriesResponse(2, 2, 1, True, 2, 0, 0, 0))
    assert n.commit == 0  # two of five
    n.step(AppendEntriesResponse(2, 3, 1, True, 2, 0, 0, 0))
    assert n.commit == 2  # three of five


def test_single_voter_commits_on_its_own_durability() -> None:
    n = node(node_id=1, voters=(1,), term=0)
    n.campaign()
    assert n.role is Role.LEADER
    ready = n.ready()
    assert n.commit == 0
    persist(n, ready)
    assert n.commit == 1


def test_figure_8_entry_of_earlier_term_is_not_committed_by_counting_replicas() -> None:
    # Paper figure 8 (d)/(e): S1 leads term 4 with an entry (2, term 2) that it
    # replicated to S2 and S3 while leading term 2. A majority now holds (2, 2),
    # but S5 (last term 3) could still be elected by S2, S3, S4 and erase it.
    s1 = node(1, VOTERS5, term=3, entries=log_of([1, 2]))
    elect(s1)
    assert s1.term == 4 and s1.log.last_index == 3  # (3, 4) is the new no-op
    s1.ready()
    s1.step(AppendEntriesResponse(4, 2, 1, True, 2, 0, 0, 0))
    s1.step(AppendEntriesResponse(4, 3, 1, True, 2, 0, 0, 0))
    assert s1.commit == 0  # (2, 2) is on S1, S2, S3, but it is not of term 4
    s1.step(AppendEntriesResponse(4, 2, 1, True, 3, 0, 0, 0))
    assert s1.commit == 0  # (3, 4) on S1 and S2 only
    s1.step(AppendEntriesResponse(4, 3, 1, True, 3, 0, 0, 0))
    assert s1.commit == 3  # (3, 4) on a majority commits (2, 2) with it
    assert [(e.index, e.term) for e in s1.ready().committed] == [(1, 1), (2, 2), (3, 4)]


def test_follower_commit_is_capped_at_the_last_entry_the_message_vouches_for() -> None:
    # The follower holds a stale suffix from term 2 beyond what this message covers.
    n = node(term=3, entries=log_of([1, 2, 2, 2]))
    n.step(AppendEntries(3, 2, 1, 1, 1, tuple(log_of([3], start=2)), 10))
    # Index 2 was overwritten, so the old 3 and 4 are gone; commit stops at 2.
    assert entries_of(n) == log_of([1, 3])
    assert n.commit == 2
    n = node(term=3, entries=log_of([1, 1, 2, 2]))
    n.step(AppendEntries(3, 2, 1, 1, 1, tuple(log_of([1], start=2)), 10))
    # Entries 3 and 4 (term 2) are not vouched for by the term-3 leader: not committed.
    assert n.commit == 2
    assert [e.index for e in n.ready().committed] == [1, 2]


def test_heartbeat_commit_never_exceeds_the_log() -> None:
    n = node(term=2, entries=log_of([1, 2]))
    n.step(Heartbeat(2, 2, 1, 9))
    assert n.commit == 2


def test_committed_entry_is_never_overwritten_by_a_late_message() -> None:
    n = node(term=2)
    n.step(AppendEntries(2, 2, 1, 0, 0, tuple(log_of([1, 2, 2, 2])), 4))
    assert n.commit == 4
    n.ready()
    # A delayed copy of an older, shorter append from the same leader changes nothing.
    n.step(AppendEntries(2, 2, 1, 0, 0, tuple(log_of([1, 2])), 1))
    assert entries_of(n) == log_of([1, 2, 2, 2]) and n.commit == 4
    ready = n.ready()
    assert ready.entries == []
    assert ready.persisted_messages == [AppendEntriesResponse(2, 1, 2, True, 4, 0, 0, 0)]


def test_append_below_commit_only_touches_the_uncommitted_part() -> None:
    # Follower: five term-1 entries, three known committed. A term-3 leader's probe starts
    # inside the committed prefix and carries a different suffix.
    n = node(term=2, commit=3, entries=log_of([1, 1, 1, 1, 1]))
    n.step(AppendEntries(3, 2, 1, 1, 1, tuple(log_of([1, 1, 3], start=2)), 3))
    assert entries_of(n) == log_of([1, 1, 1, 3])
    assert n.commit == 3
    ready = n.ready()
    assert ready.entries == log_of([3], start=4)
    assert ready.persisted_messages == [AppendEntriesResponse(3, 1, 2, True, 4, 0, 0, 0)]


def test_entries_applied_in_order_exactly_once() -> None:
    n = node(term=1)
    elect(n)
    applied: list[int] = []
    for batch in ([b"a"], [b"b", b"c"], [b"d"]):
        n.propose(batch)
        ready = n.ready()
        applied.extend(e.index for e in ready.committed)
        persist(n, ready)
        n.step(AppendEntriesResponse(2, 2, 1, True, n.log.last_index, 0, 0, 0))
        applied.extend(e.index for e in n.ready().committed)
        applied.extend(e.index for e in n.ready().committed)
    assert applied == [1, 2, 3, 4, 5]
    assert n.applied == n.commit == 5
    # A restart re-applies from the start: there are no snapshots.
    again = node(term=n.term, vote=n.vote, commit=n.commit, entries=entries_of(n))
    assert [e.index for e in again.ready().committed] == [1, 2, 3, 4, 5]
    assert again.ready().committed == []


def test_restart_commit_hint_is_capped_at_the_log() -> None:
    n = node(term=2, commit=10, entries=log_of([1, 2]))
    assert n.commit == 2


def test_persisted_ignores_an_entry_that_was_overwritten_since() -> None:
    # A follower's write of (2, term 1) becomes durable after a term-3 leader replaced it.
    n = node(term=1, entries=log_of([1]))
    n.step(AppendEntries(1, 2, 1, 1, 1, tuple(log_of([1], start=2)), 0))
    n.ready()
    n.step(AppendEntries(3, 3, 1, 1, 1, tuple(log_of([3], start=2)), 0))
    n.ready()
    n.persisted(2, 1)
    assert n.durable_index == 1
    n.persisted(2, 3)
    assert n.durable_index == 2


def test_truncation_takes_back_durability_of_the_cut_entries() -> None:
    # Loaded from disk: (4, 1) is durable. A term-3 leader then replaces index 3 onwards.
    n = node(term=2, entries=log_of([1, 1, 1, 1]))
    n.step(AppendEntries(3, 2, 1, 2, 1, tuple(log_of([3], start=3)), 0))
    persist(n, n.ready())
    assert n.durable_index == 3
    # Now leading term 4, its no-op (4, 4) is written but not durable: one follower's
    # copy is not a majority, whatever the old, overwritten (4, 1) once was.
    elect(n, persisted=False)
    assert n.log.last_index == 4
    n.step(AppendEntriesResponse(4, 2, 1, True, 4, 0, 0, 0))
    assert n.commit == 0
    n.persisted(4, 4)
    assert n.commit == 4


def test_heartbeat_carries_commit_only_up_to_what_the_follower_matches() -> None:
    n = node(term=1)
    elect(n)
    n.propose([b"a", b"b", b"c"])
    persist(n, n.ready())
    n.step(AppendEntriesResponse(2, 2, 1, True, 4, 0, 0, 0))
    n.step(AppendEntriesResponse(2, 3, 1, True, 1, 0, 0, 0))
    assert n.commit == 4
    n.ready()
    n.tick()
    beats = {m.dst: m.commit for m in of_type(n.ready().messages, Heartbeat)}
    # Follower 3 may hold a stale entry at 2..4: telling it "commit 4" would apply that.
    assert beats == {2: 4, 3: 1}


def test_propose_needs_a_leader() -> None:
    n = node(term=1)
    n.step(Heartbeat(1, 3, 1, 0))
    with pytest.raises(NotLeaderError) as info:
        n.propose([b"x"])
    assert info.value.leader_id == 3


# --------------------------------------------------------- fast backtracking


def _catch_up(leader: RaftNode, follower: RaftNode, ready: Ready) -> tuple[int, int]:
    """Exchange messages between `leader` and `follower` only, starting with the leader's
    `ready`, until the follower holds the leader's whole log.

    Returns (AppendEntries round trips, AppendEntries sent)."""
    fid = follower.id
    round_trips = appends = 0
    while True:
        to_follower = [m for m in ready.messages if m.dst == fid]
        sent = of_type(to_follower, AppendEntries)
        if not sent:
            break
        round_trips += 1
        appends += len(sent)
        assert round_trips < 50, "no convergence"
        for msg in to_follower:
            follower.step(msg)
        fready = follower.ready()
        persist(follower, fready)
        for msg in fready.messages + fready.persisted_messages:
            leader.step(msg)
        ready = leader.ready()
        persist(leader, ready)
    assert entries_of(follower) == entries_of(leader)
    assert leader.progress[fid].match == leader.log.last_index
    return round_trips, appends


def _leader_with(terms: list[int], term: int) -> tuple[RaftNode, Ready]:
    leader = node(1, VOTERS3, term=term - 1, entries=log_of(terms))
    ready = elect(leader)
    assert leader.term == term
    return leader, ready


@pytest.mark.parametrize(
    ("leader_terms", "follower_terms"),
    [
        pytest.param([1] * 1000, [], id="wiped-follower"),
        pytest.param([1] * 1000, [1] * 10, id="1000-behind"),
        pytest.param([1] * 10 + [2] * 990, [1] * 10, id="1000-behind-other-term"),
        pytest.param(
            [1] * 100 + [3] * 300 + [5] * 600,
            [1] * 100 + [2] * 500 + [4] * 500,
            id="divergent-longer",
        ),
        pytest.param(
            [1] * 100 + [3] * 300 + [5] * 600,
            [1] * 100 + [2] * 200 + [4] * 50,
            id="divergent-shorter",
        ),
        pytest.param(
            [1] * 10 + [2] * 20 + [3] * 970,
            [1] * 10 + [2] * 1000,
            id="follower-has-more-of-a-shared-term",
        ),
        pytest.param(
            [1, 1] + [2, 3, 4, 5, 6] * 200, [1, 1] + [7] * 1000, id="many-terms-vs-one-unknown-term"
        ),
        pytest.param([1] * 10 + [3] * 990, [1] * 5 + [2] * 995, id="divergent-inside-a-term"),
        pytest.param(
            [1] * 100 + [3] * 450 + [5] * 450,
            [1] * 100 + [2] * 300 + [4] * 300 + [6] * 300,
            id="divergent-over-three-terms",
        ),
    ],
)
def test_fast_backtracking_catches_up_in_few_round_trips(
    leader_terms: list[int], follower_terms: list[int]
) -> None:
    top = max(leader_terms + follower_terms)
    leader, ready = _leader_with(leader_terms, top + 1)
    follower = node(2, VOTERS3, term=top, entries=log_of(follower_terms))
    round_trips, appends = _catch_up(leader, follower, ready)
    assert round_trips <= 4, (round_trips, appends)


def test_rejection_hints_name_the_conflicting_term_and_its_first_index() -> None:
    n = node(2, VOTERS3, term=5, entries=log_of([1, 1, 2, 2, 2, 4]))
    n.step(AppendEntries(5, 1, 2, 5, 3, (), 0))
    assert n.ready().messages == [AppendEntriesResponse(5, 2, 1, False, 0, 5, 2, 3)]
    n.step(AppendEntries(5, 1, 2, 9, 3, (), 0))
    assert n.ready().messages == [AppendEntriesResponse(5, 2, 1, False, 0, 9, 0, 7)]


# ------------------------------------------------ lost data, slow disks, big entries


def _replicated_leader(count: int) -> RaftNode:
    """Leader of term 2 whose followers 2 and 3 acknowledged every one of `count` entries."""
    leader = node(term=1)
    elect(leader)
    leader.propose([b"x"] * count)
    persist(leader, leader.ready())
    last = leader.log.last_index
    for peer in (2, 3):
        leader.step(AppendEntriesResponse(leader.term, peer, 1, True, last, 0, 0, 0))
    leader.ready()
    assert leader.commit == last
    return leader


def test_idle_leader_rebuilds_a_follower_whose_data_was_wiped() -> None:
    leader = _replicated_leader(20)
    wiped = node(2, VOTERS3)  # same id, empty disk, nothing new to replicate
    leader.tick()
    for beat in of_type(leader.ready().messages, Heartbeat):
        if beat.dst == 2:
            wiped.step(beat)
    for msg in wiped.ready().messages:
        leader.step(msg)
    assert leader.progress[2].match == 0
    # Nothing new was proposed, yet the leader now streams the whole log to it.
    _catch_up(leader, wiped, leader.ready())
    assert wiped.commit == leader.commit


def test_rejection_from_a_follower_that_lost_acknowledged_entries_resets_its_match() -> None:
    leader = _replicated_leader(20)
    # The follower says its log ends at 5, below the 21 it acknowledged.
    leader.step(AppendEntriesResponse(leader.term, 2, 1, False, 0, 21, 0, 6))
    assert leader.progress[2].match == 5
    sent = of_type(leader.ready().messages, AppendEntries)
    assert [(m.dst, m.prev_index) for m in sent] == [(2, 5)]
    assert leader.commit == 21  # a commit index never goes back


def test_one_slow_heartbeat_round_does_not_restart_replication() -> None:
    leader = _replicated_leader(1)
    leader.progress[2].acknowledged(leader.log.last_index)
    leader.propose([b"y"] * 10)
    ready = leader.ready()
    persist(leader, ready)
    assert [m.dst for m in of_type(ready.messages, AppendEntries)] == [2, 3]
    pr = leader.progress[2]
    assert not pr.probing
    # The follower answers heartbeats while its disk is still busy with the append.
    for _ in range(2):
        leader.step(HeartbeatResponse(leader.term, 2, 1))
    assert not pr.probing
    for _ in range(3):
        leader.step(HeartbeatResponse(leader.term, 2, 1))
    # Several rounds without progress: the append or its answer was lost; resend.
    assert pr.probing and pr.next == pr.match + 1


def test_append_entries_are_capped_in_bytes_but_carry_at_least_one_entry() -> None:
    leader = node(term=1, config=Config(max_append_bytes=1000, max_inflight=100))
    elect(leader)
    for peer in (2, 3):
        leader.step(AppendEntriesResponse(leader.term, peer, 1, True, 1, 0, 0, 0))
    leader.propose([b"a" * 300] * 10 + [b"b" * 5000] + [b"c" * 10] * 3)
    sent = [m for m in of_type(leader.ready().messages, AppendEntries) if m.dst == 2]
    sizes = [[len(e.data) for e in m.entries] for m in sent]
    assert sizes == [[300] * 3, [300] * 3, [300] * 3, [300], [5000], [10] * 3]
    # Together they are the whole log after the no-op, in order.
    assert [e.index for m in sent for e in m.entries] == list(range(2, 16))


def test_messages_from_non_members_are_ignored() -> None:
    candidate = node(term=1)
    candidate.campaign()
    candidate.ready()
    # A vote from a stranger must not make a quorum, nor an answer crash the leader.
    candidate.step(RequestVoteResponse(candidate.term, 99, 1, True))
    assert role(candidate) is Role.CANDIDATE
    leader = node(term=1)
    elect(leader)
    leader.step(AppendEntriesResponse(leader.term, 99, 1, True, 5, 0, 0, 0))
    leader.step(HeartbeatResponse(leader.term, 99, 1))
    assert role(leader) is Role.LEADER and leader.term == 2
    # A leader's own messages are heeded from anyone: a member this one has not
    # heard of may have been added by entries it has not received yet.
    leader.step(AppendEntries(leader.term + 5, 99, 1, 0, 0, (), 0))
    assert role(leader) is Role.FOLLOWER and leader.leader_id == 99


def test_committed_entries_are_handed_out_in_bounded_slices() -> None:
    n = node(term=1, commit=25, entries=log_of([1] * 25),
             config=Config(max_committed_per_ready=10))
    slices = []
    while n.has_ready():
        slices.append([e.index for e in n.ready().committed])
    assert slices == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]


# ---------------------------------------------------------------- snapshots: the log


def test_compact_to_keeps_the_tail_when_the_entry_matches() -> None:
    log = RaftLog(log_of([1, 1, 2, 2, 3]))
    assert log.compact_to(3, 2)
    assert (log.offset, log.offset_term) == (3, 2)
    assert log.slice(1, 6) == log_of([2, 3], start=4)
    assert (log.term(3), log.term(2)) == (2, None)
    assert (log.last_index, log.last_term) == (5, 3)


def test_compact_to_drops_everything_when_the_term_differs() -> None:
    log = RaftLog(log_of([1, 1, 2, 2, 3]))
    assert not log.compact_to(3, 4)
    assert len(log) == 0
    assert (log.offset, log.offset_term) == (3, 4)
    assert (log.last_index, log.last_term, log.term(3), log.term(4)) == (3, 4, 4, None)


def test_compact_to_beyond_the_log_drops_everything() -> None:
    log = RaftLog(log_of([1, 1, 2]))
    assert not log.compact_to(9, 4)
    assert len(log) == 0
    assert (log.offset, log.offset_term, log.last_index, log.last_term) == (9, 4, 9, 4)


def test_compact_to_refuses_to_move_the_start_back() -> None:
    log = RaftLog(log_of([1, 1, 2, 2, 3]))
    log.compact_to(3, 2)
    with pytest.raises(ValueError):
        log.compact_to(2, 1)
    assert (log.offset, log.offset_term, len(log)) == (3, 2, 2)
    assert log.compact_to(3, 2)  # the same start again is no move at all
    assert (log.offset, len(log)) == (3, 2)


def test_restored_drops_wal_entries_the_snapshot_covers() -> None:
    log = RaftLog.restored(log_of([1, 1, 2, 2, 2, 3, 3, 3]), 5, 2)
    assert (log.offset, log.offset_term) == (5, 2)
    assert log.slice(1, 9) == log_of([3, 3, 3], start=6)


def test_restored_with_wal_starting_right_after_the_snapshot() -> None:
    log = RaftLog.restored(log_of([3, 3], start=6), 5, 2)
    assert (log.offset, log.offset_term, log.last_index) == (5, 2, 7)
    assert log.slice(1, 8) == log_of([3, 3], start=6)
    empty = RaftLog.restored([], 5, 2)
    assert (empty.offset, empty.last_index, empty.last_term) == (5, 5, 2)


def test_restored_refuses_a_gap_after_the_snapshot() -> None:
    with pytest.raises(ValueError, match="missing"):
        RaftLog.restored(log_of([3, 3], start=8), 5, 2)


def test_restored_drops_a_history_the_snapshot_replaced() -> None:
    # The WAL holds (5, 1) but the snapshot says index 5 is of term 2: nothing after it
    # can be trusted to follow the snapshot.
    log = RaftLog.restored(log_of([1, 1, 1, 1, 1, 1, 1]), 5, 2)
    assert len(log) == 0
    assert (log.offset, log.offset_term, log.last_index, log.last_term) == (5, 2, 5, 2)
    # A WAL that ends before the snapshot's index is wholly covered.
    short = RaftLog.restored(log_of([1, 1]), 5, 2)
    assert (len(short), short.last_index, short.last_term) == (0, 5, 2)


# ------------------------------------------------------------ snapshots: a member's own

SNAP = SnapshotRef(10, 2)


def node_from_snapshot(
    node_id: int = 1,
    *,
    snapshot: SnapshotRef = SNAP,
    entries: Sequence[Entry] = (),
    term: int | None = None,
    commit: int = 0,
    config: Config | None = None,
) -> RaftNode:
    """A member restarted from `snapshot` plus the WAL `entries`."""
    return RaftNode(
        node_id,
        VOTERS3,
        hard_state=HardState(snapshot.term if term is None else term, None, commit),
        entries=entries,
        snapshot=snapshot,
        config=config if config is not None else Config(),
    )


def test_node_restarted_from_a_snapshot_starts_applied_up_to_it() -> None:
    n = node_from_snapshot(entries=log_of([2] * 5, start=11))
    assert n.applied == n.commit == 10
    assert (n.log.offset, n.log.offset_term, n.log.last_index) == (10, 2, 15)
    assert n.ready().committed == []


def test_node_restarted_from_a_snapshot_hands_out_only_later_entries() -> None:
    # The WAL still holds entries the snapshot covers; the commit hint reaches past it.
    n = node_from_snapshot(snapshot=SnapshotRef(10, 1), entries=log_of([1] * 15), commit=13)
    assert n.applied == 10 and n.commit == 13
    assert n.log.offset == 10
    assert [e.index for e in n.ready().committed] == [11, 12, 13]
    assert n.ready().committed == []
    # A stale hint below the snapshot never lowers the commit index under it.
    low = node_from_snapshot(snapshot=SnapshotRef(10, 1), entries=log_of([1] * 15), commit=4)
    assert low.applied == low.commit == 10
    assert low.ready().committed == []


def test_snapshot_taken_ignores_older_snapshots() -> None:
    n = node_from_snapshot(entries=log_of([2] * 5, start=11), commit=15)
    n.ready()
    n.snapshot_taken(5, 1)  # older: ignored, whatever its term
    n.snapshot_taken(10, 7)  # the same index: ignored too
    assert n.snapshot == SNAP
    n.snapshot_taken(13, 2)
    assert n.snapshot == SnapshotRef(13, 2)
    n.snapshot_taken(12, 2)
    assert n.snapshot == SnapshotRef(13, 2)


def test_snapshot_taken_rejects_a_snapshot_beyond_applied() -> None:
    n = node(term=1, commit=5, entries=log_of([1] * 5))
    assert n.commit == 5 and n.applied == 0
    with pytest.raises(ValueError):
        n.snapshot_taken(3, 1)  # committed, but not yet handed out to apply
    assert [e.index for e in n.ready().committed] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        n.snapshot_taken(3, 2)  # applied, but index 3 is not of term 2
    assert n.snapshot == SnapshotRef(0, 0)
    n.snapshot_taken(3, 1)
    assert n.snapshot == SnapshotRef(3, 1)


def test_compact_log_never_drops_beyond_the_snapshot() -> None:
    n = node(term=1, commit=10, entries=log_of([1] * 10))
    n.ready()
    n.compact_log(8)  # no snapshot yet: nothing may go
    assert n.log.offset == 0 and len(n.log) == 10
    n.snapshot_taken(6, 1)
    n.compact_log(10)
    assert (n.log.offset, n.log.offset_term) == (6, 1)
    assert entries_of(n) == log_of([1] * 4, start=7)
    n.compact_log(3)  # behind the log's start: no change, no error
    assert n.log.offset == 6 and len(n.log) == 4


# -------------------------------------------------------- snapshots: the leader's side


def snapshot_leader(config: Config | None = None) -> RaftNode:
    """Leader of term 3, restarted from snapshot (10, 2) plus entries 11..15 of term 2.

    Its no-op is (16, 3); a probe to each follower is outstanding."""
    leader = node_from_snapshot(entries=log_of([2] * 5, start=11), commit=15, config=config)
    elect(leader)
    assert (leader.term, leader.log.offset, leader.log.last_index) == (3, 10, 16)
    return leader


def follower_lacks(leader: RaftNode, peer: int, last: int) -> Ready:
    """`peer` rejects the leader's probe: its log ends at `last`. Returns the leader's Ready."""
    prev = leader.progress[peer].next - 1
    leader.step(AppendEntriesResponse(leader.term, peer, leader.id, False, 0, prev, 0, last + 1))
    return leader.ready()


def sent_to(ready: Ready, peer: int, kind: type[M]) -> list[M]:
    return of_type([m for m in ready.messages if m.dst == peer], kind)


def test_leader_sends_install_snapshot_to_a_follower_needing_a_compacted_entry() -> None:
    leader = snapshot_leader()
    # Follower 2 needs 11: the entry before it, (10, 2), is the log's start and still known.
    ready = follower_lacks(leader, 2, 10)
    assert sent_to(ready, 2, InstallSnapshot) == []
    assert [(m.prev_index, m.prev_term) for m in sent_to(ready, 2, AppendEntries)] == [(10, 2)]
    # Follower 3 needs 10, which the log no longer holds.
    ready = follower_lacks(leader, 3, 9)
    assert sent_to(ready, 3, AppendEntries) == []
    assert sent_to(ready, 3, InstallSnapshot) == [InstallSnapshot(3, 1, 3, 10, 2, THREE.encode())]
    assert leader.progress[3].pending_snapshot == 10


def test_install_snapshot_names_the_newest_snapshot_not_the_log_start() -> None:
    leader = snapshot_leader()
    leader.snapshot_taken(15, 2)  # taken, but the log is not compacted: it starts at 10
    ready = follower_lacks(leader, 2, 4)
    assert sent_to(ready, 2, InstallSnapshot) == [InstallSnapshot(3, 1, 2, 15, 2, THREE.encode())]
    assert leader.progress[2].pending_snapshot == 15


def test_no_append_entries_while_a_snapshot_is_pending_then_replication_resumes() -> None:
    leader = snapshot_leader()
    follower = node(2, VOTERS3, term=3)  # an empty disk
    ready = follower_lacks(leader, 2, 0)
    [install] = sent_to(ready, 2, InstallSnapshot)
    # While the file is streamed, new proposals and heartbeat rounds send it nothing else.
    leader.propose([b"x", b"y"])
    ready = leader.ready()
    persist(leader, ready)
    assert sent_to(ready, 2, AppendEntries) == [] and sent_to(ready, 2, InstallSnapshot) == []
    for _ in range(3):
        leader.tick()
        beats = sent_to(leader.ready(), 2, Heartbeat)
        assert [b.commit for b in beats] == [0]
        leader.step(HeartbeatResponse(3, 2, 1))
        ready = leader.ready()
        assert sent_to(ready, 2, AppendEntries) == [] and sent_to(ready, 2, InstallSnapshot) == []
    # The file arrived; the follower's core takes it and acknowledges.
    follower.step(install)
    fready = follower.ready()
    assert fready.snapshot == SNAP
    [ack] = fready.persisted_messages
    assert ack == AppendEntriesResponse(3, 2, 1, True, 10, 0, 0, 0)
    leader.step(ack)
    assert leader.progress[2].pending_snapshot == 0
    ready = leader.ready()
    appends = sent_to(ready, 2, AppendEntries)
    assert appends and (appends[0].prev_index, appends[0].prev_term) == (10, 2)
    assert appends[0].entries[0].index == 11
    _catch_up(leader, follower, ready)
    assert follower.log.last_index == leader.log.last_index == 18


def test_failed_snapshot_is_resent_only_after_the_follower_answers_a_heartbeat() -> None:
    leader = snapshot_leader()
    follower_lacks(leader, 2, 0)
    leader.report_snapshot(2, delivered=False)
    assert sent_to(leader.ready(), 2, InstallSnapshot) == []
    assert not leader.has_ready()
    leader.tick()
    assert sent_to(leader.ready(), 2, InstallSnapshot) == []  # a heartbeat, not the snapshot
    leader.step(HeartbeatResponse(3, 2, 1))
    snapshot_10 = InstallSnapshot(3, 1, 2, 10, 2, THREE.encode())
    assert sent_to(leader.ready(), 2, InstallSnapshot) == [snapshot_10]
    assert leader.progress[2].pending_snapshot == 10


def test_delivered_snapshot_waits_for_the_follower_acknowledgement() -> None:
    leader = snapshot_leader()
    follower_lacks(leader, 2, 0)
    leader.report_snapshot(2, delivered=True)
    for _ in range(5):
        leader.step(HeartbeatResponse(3, 2, 1))
        ready = leader.ready()
        assert sent_to(ready, 2, InstallSnapshot) == [] and sent_to(ready, 2, AppendEntries) == []
    assert leader.progress[2].pending_snapshot == 10


def test_unacknowledged_snapshot_is_resent_after_the_timeout_rounds() -> None:
    rounds = 4
    leader = snapshot_leader(Config(snapshot_timeout_rounds=rounds))
    follower_lacks(leader, 2, 0)
    resent_at = []
    for answer in range(1, rounds + 2):
        leader.step(HeartbeatResponse(3, 2, 1))
        ready = leader.ready()
        assert sent_to(ready, 2, AppendEntries) == []
        if sent_to(ready, 2, InstallSnapshot):
            snapshot_10 = InstallSnapshot(3, 1, 2, 10, 2, THREE.encode())
            assert sent_to(ready, 2, InstallSnapshot) == [snapshot_10]
            resent_at.append(answer)
    # Not before `rounds` answers have gone by unacknowledged; then at once, and once.
    assert resent_at == [rounds]
    assert leader.progress[2].pending_snapshot == 10


def test_snapshot_timeout_rounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="snapshot_timeout_rounds"):
        Config(snapshot_timeout_rounds=0)


def test_stale_answers_while_a_snapshot_is_pending_are_ignored() -> None:
    leader = snapshot_leader()
    follower_lacks(leader, 2, 0)
    pr = leader.progress[2]
    # A late success for an old append, below the snapshot's index: it settles nothing.
    leader.step(AppendEntriesResponse(3, 2, 1, True, 5, 0, 0, 0))
    assert (pr.match, pr.pending_snapshot) == (5, 10)
    ready = leader.ready()
    assert sent_to(ready, 2, AppendEntries) == [] and sent_to(ready, 2, InstallSnapshot) == []
    # A late rejection that, taken at face value, says the follower lost entries 3..5.
    leader.step(AppendEntriesResponse(3, 2, 1, False, 0, 5, 0, 3))
    # And a reordered rejection of the first probe.
    leader.step(AppendEntriesResponse(3, 2, 1, False, 0, 15, 0, 1))
    assert (pr.match, pr.pending_snapshot) == (5, 10)
    ready = leader.ready()
    assert sent_to(ready, 2, AppendEntries) == [] and sent_to(ready, 2, InstallSnapshot) == []


# ------------------------------------------------------ snapshots: the follower's side


def test_install_snapshot_with_a_stale_term_is_rejected() -> None:
    n = node(term=5, entries=log_of([1, 1, 5]))
    n.step(InstallSnapshot(3, 2, 1, 10, 3))
    ready = n.ready()
    assert ready.messages == [AppendEntriesResponse(5, 1, 2, False, 0, 10, 0, 0)]
    assert ready.persisted_messages == [] and ready.snapshot is None
    assert n.commit == 0 and n.log.offset == 0 and entries_of(n) == log_of([1, 1, 5])
    assert n.leader_id is None


def test_install_snapshot_already_covered_by_the_commit_index_changes_nothing() -> None:
    n = node(term=2, commit=8, entries=log_of([1] * 4 + [2] * 4))
    assert [e.index for e in n.ready().committed] == list(range(1, 9))
    n.step(InstallSnapshot(2, 2, 1, 5, 1))
    ready = n.ready()
    assert ready.snapshot is None
    # The answer vouches for the commit index, which may be ahead of this member's
    # own disk: it waits, like every durability claim, for what was handed out.
    assert ready.messages == []
    assert ready.persisted_messages == [AppendEntriesResponse(2, 1, 2, True, 8, 0, 0, 0)]
    assert n.log.offset == 0 and entries_of(n) == log_of([1] * 4 + [2] * 4)
    assert n.snapshot == SnapshotRef(0, 0) and n.commit == n.applied == 8
    # Equal to the commit index: the same.
    n.step(InstallSnapshot(2, 2, 1, 8, 2))
    ready = n.ready()
    assert ready.snapshot is None
    assert ready.persisted_messages == [AppendEntriesResponse(2, 1, 2, True, 8, 0, 0, 0)]


def test_restart_from_a_snapshot_the_stored_log_does_not_reach_records_the_new_start() -> None:
    # Applied (and snapshotted) entries 1-6 before they were durable here, then crashed:
    # the stored log ends at 4. Appending 7 after it would leave a gap on disk.
    n = RaftNode(1, [1, 2, 3], hard_state=HardState(1, None, 4), entries=log_of([1] * 4),
                 snapshot=SnapshotRef(6, 1))
    assert n.log.offset == 6 and len(n.log) == 0
    assert n.ready().snapshot == SnapshotRef(6, 1)
    # Another entry at the snapshot's index (an installed snapshot's marker was lost).
    n = RaftNode(1, [1, 2, 3], hard_state=HardState(1, None, 0), entries=log_of([1] * 8),
                 snapshot=SnapshotRef(6, 2))
    ready = n.ready()
    assert ready.snapshot == SnapshotRef(6, 2) and len(n.log) == 0
    # The stored log holds the snapshot's entry: nothing to record.
    n = RaftNode(1, [1, 2, 3], hard_state=HardState(1, None, 0), entries=log_of([1] * 8),
                 snapshot=SnapshotRef(6, 1))
    assert n.ready().snapshot is None and len(n.log) == 2


def test_restart_never_runs_in_a_term_older_than_its_log() -> None:
    # The leader's snapshot (term 3) became durable before the term it brought did.
    n = RaftNode(1, [1, 2, 3], hard_state=HardState(1, 2, 0), entries=(),
                 snapshot=SnapshotRef(6, 3))
    assert n.term == 3 and n.vote is None
    assert n.ready().hard_state == HardState(3, None, 6)


def test_newer_install_snapshot_keeps_the_tail_when_the_entry_matches() -> None:
    n = node(term=2, commit=2, entries=log_of([1, 1, 2, 2, 2, 2]))
    assert [e.index for e in n.ready().committed] == [1, 2]
    n.step(InstallSnapshot(2, 2, 1, 4, 2))
    assert n.commit == n.applied == 4  # before any Ready: nothing left to hand out
    ready = n.ready()
    assert ready.snapshot == SnapshotRef(4, 2)
    assert n.snapshot == SnapshotRef(4, 2)
    assert ready.committed == []  # 3 and 4 come from the snapshot, not from the log
    assert (n.log.offset, n.log.offset_term) == (4, 2)
    assert entries_of(n) == log_of([2, 2], start=5)
    assert ready.persisted_messages == [AppendEntriesResponse(2, 1, 2, True, 4, 0, 0, 0)]
    assert of_type(ready.messages, AppendEntriesResponse) == []
    assert ready.needs_persist()


def test_newer_install_snapshot_drops_the_log_when_the_entry_differs() -> None:
    # Entries 3..5 are from a term-2 leader whose history the term-3 snapshot replaced.
    n = node(term=3, commit=2, entries=log_of([1, 1, 2, 2, 2]))
    n.ready()
    n.step(InstallSnapshot(3, 2, 1, 4, 3))
    assert n.commit == n.applied == 4
    ready = n.ready()
    assert ready.snapshot == SnapshotRef(4, 3)
    assert ready.committed == []
    assert len(n.log) == 0
    assert (n.log.offset, n.log.last_index, n.log.last_term) == (4, 4, 3)
    assert ready.persisted_messages == [AppendEntriesResponse(3, 1, 2, True, 4, 0, 0, 0)]
    assert ready.messages == []
    # A snapshot beyond the whole log also leaves an empty log starting after it.
    n.step(InstallSnapshot(3, 2, 1, 20, 3))
    assert n.ready().snapshot == SnapshotRef(20, 3)
    assert (len(n.log), n.log.last_index, n.commit, n.applied) == (0, 20, 20, 20)


def test_entries_covered_by_an_installed_snapshot_never_reach_the_driver() -> None:
    # Entries 3..6 arrive but are not yet handed out when the snapshot at 4 is stepped in.
    n = node(term=2, entries=log_of([1, 1]))
    n.step(AppendEntries(2, 2, 1, 2, 1, tuple(log_of([2, 2, 2, 2], start=3)), 0))
    n.step(InstallSnapshot(2, 2, 1, 4, 2))
    ready = n.ready()
    assert ready.snapshot == SnapshotRef(4, 2)
    assert ready.entries == log_of([2, 2], start=5)
    assert ready.committed == []
    # Same, but a term-3 leader's snapshot has another term at 4: none may be written.
    n = node(term=2, entries=log_of([1, 1]))
    n.step(AppendEntries(2, 2, 1, 2, 1, tuple(log_of([2, 2, 2, 2], start=3)), 0))
    assert n.log.last_index == 6
    n.step(InstallSnapshot(3, 3, 1, 4, 3))
    ready = n.ready()
    assert ready.snapshot == SnapshotRef(4, 3)
    assert ready.entries == []
    assert n.log.last_index == 4


@pytest.mark.parametrize("role", [Role.CANDIDATE, Role.LEADER])
def test_higher_term_install_snapshot_makes_a_follower_of_the_sender(role: Role) -> None:
    n = node(term=4, entries=log_of([1, 2, 4]))
    if role is Role.CANDIDATE:
        n.campaign()
    else:
        elect(n)
    n.ready()
    assert n.role is role and n.term == 5
    n.step(InstallSnapshot(7, 3, 1, 2, 2))
    assert n.role is Role.FOLLOWER
    assert (n.term, n.vote, n.leader_id) == (7, None, 3)
    assert n.progress == {}
    ready = n.ready()
    assert ready.snapshot == SnapshotRef(2, 2)
    assert ready.persisted_messages == [AppendEntriesResponse(7, 1, 3, True, 2, 0, 0, 0)]
    assert ready.hard_state is not None and ready.hard_state.term == 7


def test_same_term_install_snapshot_makes_a_candidate_follow_the_sender() -> None:
    n = node(term=4, entries=log_of([1, 2, 4]))
    n.campaign()
    n.ready()
    n.step(InstallSnapshot(5, 3, 1, 3, 4))
    assert role(n) is Role.FOLLOWER
    assert (n.term, n.vote, n.leader_id) == (5, 1, 3)
    assert n.ready().snapshot == SnapshotRef(3, 4)


def test_an_idle_leader_sends_its_log_to_a_member_it_just_added() -> None:
    # Found with `raft-trio stress --reconfigure --processes`: the clients were done by the
    # time the member joined, and a leader that started the new member past its log's end
    # sent it only heartbeats, which never revealed that its log was empty.
    leader = node(term=1, entries=log_of([1] * 5))
    elect(leader)
    for peer in (2, 3):
        leader.step(AppendEntriesResponse(leader.term, peer, 1, True, 6, 0, 0, 0))
    leader.ready()
    leader.propose_config(leader.membership.add_learner(4, "127.0.0.1:7004"))
    sent = [m for m in of_type(leader.ready().messages, AppendEntries) if m.dst == 4]
    assert sent and sent[0].prev_index == 0 and sent[0].entries[0].index == 1


def test_a_lone_voter_leads_only_once_its_term_is_durable() -> None:
    # Found by the membership simulation: elected by its own vote at once, it replicated
    # before its term was on disk, crashed, and led the same term again with other entries.
    n = RaftNode(1, Membership({1: "a"}, {2: "b"}), config=Config())
    n.campaign()
    assert n.role is Role.LEADER
    with pytest.raises(NotLeaderError):
        n.propose([b"x"])
    ready = n.ready()
    assert ready.messages == []  # a learner hears nothing before the term is durable
    assert any(isinstance(m, AppendEntries) for m in ready.persisted_messages)
    noop = ready.entries[-1]
    n.persisted(noop.index, noop.term)
    n.propose([b"x"])


def test_a_voter_the_newest_uncommitted_change_removes_still_campaigns() -> None:
    # Dissertation 4.2.2, Figure 4.6: {2, 3} -> {2} reached only 3; if 3 did not campaign,
    # 2 (shorter log) could never win its vote, and no leader would ever be elected.
    two = Membership({2: "b", 3: "c"})
    entries = [Entry(1, 1, EntryKind.CONFIG, two.encode()),
               Entry(2, 1, EntryKind.CONFIG, Membership({2: "b"}).encode())]
    n = RaftNode(3, two, hard_state=HardState(1, None, 1), entries=entries, config=Config())
    assert not n.is_voter
    n.campaign()
    assert n.role is Role.CANDIDATE
    assert [m.dst for m in n.ready().persisted_messages if isinstance(m, RequestVote)] == [2]
    n.step(RequestVoteResponse(n.term, 2, 3, True))
    assert role(n) is Role.LEADER  # the vote of 2, the only voter, suffices; its own does not count
