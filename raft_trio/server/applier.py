"""The applier: applies committed entries to the state machine in log order, hands
each proposer its results, and takes snapshots when the policy says so.

Runs of entries are decoded and applied together (raft_trio.server.entry_codec);
on the leader, the entries it proposed itself are applied from the commands
as the client sent them, without decoding their bytes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from raft_trio.core import Entry, EntryKind, SnapshotRef
from raft_trio.server.entry_codec import (
    ONLY_COMMANDS,
    ONLY_SESSIONS,
    Undecodable,
    command_of,
    data_of,
    decode_entries,
    kind_of,
    session_run_end,
    split_sessions,
)
from raft_trio.server.snapshots import Snapshots
from raft_trio.server.state import MemberState
from raft_trio.server.waiting import Proposal

log = logging.getLogger("raft_trio.server")

ApplyBatch = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True, slots=True)
class Restore:
    """Applier work item: replace the state with the installed snapshot."""

    snapshot: SnapshotRef


class Applier:
    def __init__(self, member: MemberState, snapshots: Snapshots):
        self.member = member
        self.snapshots = snapshots

    async def run(self, batches: trio.MemoryReceiveChannel[list[Entry] | Restore]) -> None:
        member = self.member
        sm = member.state_machine
        apply = sm.apply
        apply_batch: ApplyBatch | None = getattr(sm, "apply_batch", None)
        batch = apply_batch if apply_batch is not None else (lambda cs: list(map(apply, cs)))
        pending = member.pending
        snapshots = self.snapshots
        can_snapshot = snapshots.can_take
        async for entries in batches:
            if type(entries) is Restore:
                await snapshots.restore(entries.snapshot)
                continue
            assert type(entries) is list
            runs = self._own_runs(entries) if pending else None
            if runs is not None:
                self._apply_own(entries, runs, batch)
            else:
                results = self.apply_entries(entries, apply, batch)
                if pending:
                    pending.resolve(entries, results)
            last = entries[-1]
            member.applied(last.index, last.term)
            if can_snapshot and snapshots.due(entries):
                await snapshots.start()
            # Let proposers and readers run between large batches.
            await trio.lowlevel.checkpoint()

    def _own_runs(self, entries: list[Entry]) -> list[tuple[Proposal, int, int]] | None:
        """If this member proposed every one of `entries` and still holds their commands
        as decoded from the client, the entries as runs (proposal, first position, count)."""
        pending = self.member.pending
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

    def _apply_own(self, entries: list[Entry], runs: list[tuple[Proposal, int, int]],
                   batch: ApplyBatch) -> None:
        """Apply the runs _own_runs found and hand each proposal its results."""
        pop = self.member.pending.pop
        sessions = self.member.sessions
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

    def apply_entries(
        self, entries: list[Entry], apply: Callable[[Any], Any], batch: ApplyBatch,
    ) -> list[Any]:
        """Apply committed entries of any kinds, decoding them."""
        kinds = set(map(kind_of, entries))
        if kinds == ONLY_SESSIONS:
            split = split_sessions(list(map(data_of, entries)))
            if split is not None:
                runs, commands = split
                results: list[Any] = []
                sessions = self.member.sessions
                ends = [start for start, *_ in runs[1:]]
                ends.append(len(commands))
                for (start, client, seq, pos, stamp), end in zip(runs, ends, strict=True):
                    results += sessions.apply(client, seq, pos, stamp, commands[start:end], batch)
                return results
        items, clean = decode_entries(entries, kinds)
        if clean and kinds == ONLY_COMMANDS:
            return batch(items)
        return self._apply_decoded(entries, items, apply, batch)

    def _apply_decoded(
        self, entries: list[Entry], items: list[Any], apply: Callable[[Any], Any],
        batch: ApplyBatch,
    ) -> list[Any]:
        """Apply entries of any kinds, given what decode_entries made of them."""
        results: list[Any] = []
        sessions = self.member.sessions
        command_kind, session_kind = EntryKind.COMMAND, EntryKind.SESSION
        i, n = 0, len(entries)
        while i < n:
            kind = entries[i].kind
            item = items[i]
            if kind == session_kind:
                end = session_run_end(entries, items, i)
                if end > i:
                    client, seq, pos, stamp, _ = item
                    commands = list(map(command_of, items[i:end]))
                    results += sessions.apply(client, seq, pos, stamp, commands, batch)
                    i = end
                    continue
                results.append(item.error if type(item) is Undecodable
                               else ["error", f"malformed session entry {item!r:.80}"])
            elif kind == command_kind:
                results.append(apply(item) if type(item) is not Undecodable else item.error)
            else:
                if kind == EntryKind.SESSION_EXPIRY:
                    self._apply_expiry(item)
                results.append(None)
            i += 1
        return results

    def _apply_expiry(self, item: Any) -> None:
        member = self.member
        if type(item) is not list or len(item) != 2 or not all(type(v) is int for v in item):
            log.warning("member %d: ignoring a malformed session expiry entry %.80r", member.id,
                        item)
            return
        dropped = member.sessions.expire(item[0], item[1])
        if dropped:
            log.info("member %d: %d client sessions expired (idle over %gs)", member.id, dropped,
                     item[1] / 1000)
