"""How a batch proposal settles when some of its entries are lost to a new leader."""

from __future__ import annotations

import pytest

from raft_trio.errors import LeadershipLost, RaftError
from raft_trio.server.waiting import Proposal


def test_all_applied_gives_every_result() -> None:
    proposal = Proposal(3)
    for pos in range(3):
        proposal.resolved(pos, f"r{pos}")
    assert proposal.done.is_set() and proposal.error is None
    assert proposal.results == ["r0", "r1", "r2"]


@pytest.mark.parametrize("order", [("lost2", "ok0", "ok1"), ("ok0", "ok1", "lost2")])
def test_a_lost_suffix_reports_the_applied_prefix(order: tuple[str, ...]) -> None:
    proposal = Proposal(3)
    for step in order:
        pos = int(step[-1])
        if step.startswith("ok"):
            proposal.resolved(pos, f"r{pos}")
        else:
            proposal.lost(pos)
    assert proposal.done.is_set()
    assert isinstance(proposal.error, LeadershipLost)
    assert proposal.error.applied == ["r0", "r1"]


def test_nothing_settles_until_every_entry_is_known() -> None:
    proposal = Proposal(2)
    proposal.lost(1)
    assert not proposal.done.is_set()
    proposal.lost(0)
    assert isinstance(proposal.error, LeadershipLost) and proposal.error.applied == []


def test_a_failure_wins_only_if_first() -> None:
    proposal = Proposal(1)
    proposal.fail(RaftError("shut down"))
    proposal.resolved(0, "late")
    assert str(proposal.error) == "shut down"


def test_a_run_resolves_many_positions_at_once() -> None:
    proposal = Proposal(5)
    proposal.resolved_run(0, ["r0", "r1"])
    assert not proposal.done.is_set()
    proposal.resolved_run(2, ["r2", "r3"])
    proposal.lost(4)
    assert isinstance(proposal.error, LeadershipLost)
    assert proposal.error.applied == ["r0", "r1", "r2", "r3"]
