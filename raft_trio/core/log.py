"""The in-memory view of the replicated log that the core reasons about.

Indices start at 1. `offset` is the index just before the first entry
held: the last index covered by a snapshot once the log has been
compacted, 0 before. `offset_term` is that entry's term.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from operator import itemgetter

from raft_trio.core.messages import Entry

_term_of = itemgetter(1)


class RaftLog:
    __slots__ = ("_entries", "offset", "offset_term")

    def __init__(self, entries: Iterable[Entry] = (), offset: int = 0, offset_term: int = 0):
        self.offset = offset
        self.offset_term = offset_term
        self._entries: list[Entry] = list(entries)
        for i, entry in enumerate(self._entries):
            if entry.index != offset + 1 + i:
                raise ValueError(f"log is not contiguous at position {i}: index {entry.index}")

    @property
    def last_index(self) -> int:
        return self.offset + len(self._entries)

    @property
    def last_term(self) -> int:
        if self._entries:
            return self._entries[-1].term
        return self.offset_term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`, or None when it is not held."""
        if index == self.offset:
            return self.offset_term
        pos = index - self.offset - 1
        if 0 <= pos < len(self._entries):
            return self._entries[pos].term
        return None

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.offset - 1]

    def slice(self, start: int, stop: int) -> list[Entry]:
        """Entries with start <= index < stop."""
        lo = max(start - self.offset - 1, 0)
        hi = max(stop - self.offset - 1, 0)
        return self._entries[lo:hi]

    def first_index_of_term(self, index: int) -> int:
        """First index of the run of entries with the same term as `index`."""
        term = self.term(index)
        if term is None or index == self.offset:
            return index
        # Terms never decrease along the log, so a binary search finds the run's start.
        pos = bisect_left(self._entries, term, hi=index - self.offset - 1, key=_term_of)
        return self.offset + 1 + pos

    def last_index_of_term(self, term: int) -> int | None:
        """Last index holding `term`, or None when no entry has it."""
        pos = bisect_right(self._entries, term, key=_term_of)
        if pos > 0 and self._entries[pos - 1].term == term:
            return self.offset + pos
        if pos == 0 and self.offset > 0 and self.offset_term == term:
            return self.offset
        return None

    def append(self, entries: Sequence[Entry]) -> None:
        self._entries.extend(entries)

    def compact_to(self, index: int, term: int) -> bool:
        """Make (index, term) the log's new start, as after a snapshot covering it.

        When the log holds that very entry, the entries after it stay
        (they extend the snapshot's history: the Log Matching property);
        otherwise every entry goes, since none can be trusted to follow
        the snapshot. Returns whether the entries after `index` were kept.
        """
        if index < self.offset:
            raise ValueError(f"cannot move the log's start back from {self.offset} to {index}")
        kept = self.term(index) == term
        if kept:
            del self._entries[: index - self.offset]
        else:
            self._entries.clear()
        self.offset = index
        self.offset_term = term
        return kept

    @classmethod
    def restored(cls, entries: Sequence[Entry], index: int, term: int) -> RaftLog:
        """The log after a restart: a snapshot ending at (index, term) plus what the WAL held.

        The WAL may hold entries the snapshot covers (they are dropped), or
        start right after it (a marker or compaction put its start there).
        A WAL entry at `index` with another term is a history the snapshot
        replaced, so that entry and everything after it are dropped.
        """
        if not entries:
            return cls((), index, term)
        first = entries[0].index
        if first > index + 1:
            raise ValueError(
                f"the log starts at index {first} but the snapshot ends at {index}: "
                f"entries {index + 1}-{first - 1} are missing"
            )
        if first == index + 1:
            return cls(entries, index, term)
        log = cls(entries, first - 1, 0)
        log.compact_to(index, term)
        return log

    def truncate_from(self, index: int) -> None:
        """Drop every entry with index >= `index`."""
        del self._entries[index - self.offset - 1 :]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The election restriction (paper 5.4.1): is (last_term, last_index) at least ours?"""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def __len__(self) -> int:
        return len(self._entries)
