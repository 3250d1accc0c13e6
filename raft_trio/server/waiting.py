"""Where callers wait for the node loop: proposals until applied, reads until confirmed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from raft_trio.core import Entry
from raft_trio.errors import LeadershipLost, RaftError


class Proposal:
    """Waiting room for one batch of proposed commands (or one configuration change)."""

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


class Pending(dict[int, tuple[int, Proposal, int]]):
    """This member's proposed entries not applied yet: index -> (term, proposal, position).

    The node loop adds to it and settles what a new leader cut or a snapshot
    replaced; the applier resolves what it applies (reading the dict directly
    on its hot path).
    """

    def add(self, first: int, term: int, proposal: Proposal, count: int) -> None:
        for pos in range(count):
            self[first + pos] = (term, proposal, pos)

    def lose_from(self, index: int) -> None:
        """The log was cut at `index`: our proposals from there on will never apply."""
        for lost_index in [i for i in self if i >= index]:
            _, proposal, pos = self.pop(lost_index)
            proposal.lost(pos)

    def fail_all(self, error: RaftError) -> None:
        for _, proposal, _ in self.values():
            proposal.fail(error)
        self.clear()

    def resolve(self, entries: Sequence[Entry], results: list[Any]) -> None:
        """Hand each applied entry's result to its proposal, if we proposed it (in this term)."""
        for entry, result in zip(entries, results, strict=True):
            waiting = self.pop(entry.index, None)
            if waiting is None:
                continue
            term, proposal, pos = waiting
            if term == entry.term:
                proposal.resolved(pos, result)
            else:
                proposal.lost(pos)


class ReadWait:
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
