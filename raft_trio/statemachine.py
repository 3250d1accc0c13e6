"""The contract between the Raft server and the replicated state it drives."""

from __future__ import annotations

from typing import Any, Protocol


class StateMachine(Protocol):
    """A deterministic state machine: the same commands in the same order give the same state.

    `apply` receives each committed command exactly once, in log order, already
    decoded from CBOR, and returns a CBOR-encodable result that is handed back
    to whoever proposed the command. It must not raise for a bad command:
    return an error value instead, since every member applies the same entry.
    """

    def apply(self, command: Any) -> Any: ...


# A state machine may also define `apply_batch(commands: list) -> list`, the
# results of applying each command in order; the server calls it for runs of
# commands when present, to save a call per command on the hot path.
