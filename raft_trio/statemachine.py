"""The contract between the Raft server and the replicated state it drives."""

from __future__ import annotations

from typing import Any, BinaryIO, Protocol


class StateMachine(Protocol):
    """A deterministic state machine: the same commands in the same order give the same state.

    `apply` receives each committed command exactly once, in log order, already
    decoded from CBOR, and returns a CBOR-encodable result that is handed back
    to whoever proposed the command. It must not raise for a bad command:
    return an error value instead, since every member applies the same entry.

    A command retried by a client session is applied once: the server keeps
    the session's latest results beside the state machine (and in its
    snapshots) and answers a retry with them (raft_trio.sessions).
    """

    def apply(self, command: Any) -> Any: ...


# A state machine may also define `apply_batch(commands: list) -> list`, the
# results of applying each command in order; the server calls it for runs of
# commands when present, to save a call per command on the hot path.

# A state machine may also define `query(query) -> result`, answering a
# read-only query from the state as applied so far without changing it: the
# server's reads (linearizable, lease or stale) use it instead of a log entry.

# A state machine may also define the snapshot pair, which log compaction
# needs: without it the log can never be trimmed. Both stream through a file
# object so that a large state is never held twice in memory:
#
# - `snapshot(out)` writes the whole state to `out`. It is called between
#   applies, never during one, and must not close `out`.
# - `restore(src)` replaces the whole state with what `snapshot` wrote,
#   reading `src` to its end. On bad input it raises ValueError and leaves the
#   old state as it was, so a member that is handed a bad snapshot can still
#   serve from what it had.
#
# A restored state must behave exactly like the one that was snapshotted,
# since followers catch up from snapshots while the leader kept applying.
#
# Optionally, `capture_snapshot()` returns a function that writes the state
# as it is at the call, like `snapshot(out)` would have then. The server
# captures between applies and writes in a worker thread while applying
# goes on; without it, applying pauses while `snapshot` runs in the thread.


class SnapshotStateMachine(StateMachine, Protocol):
    """A StateMachine that also supports the optional snapshot pair described above."""

    def snapshot(self, out: BinaryIO) -> None: ...

    def restore(self, src: BinaryIO) -> None: ...
