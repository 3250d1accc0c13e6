"""The built-in key-value state machine: str keys, str values, set/get/delete/cas."""

from __future__ import annotations

from typing import Any


class KVStateMachine:
    """Commands are CBOR lists: ["set", k, v], ["get", k], ["del", k], ["cas", k, old, new].

    Results: set -> None; get -> value or None; del -> whether the key existed;
    cas -> whether the swap happened (`old` None means "key absent");
    a malformed command -> ["error", reason], the same on every member.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, command: Any) -> Any:
        try:
            op = command[0]
            if op == "set":
                _, key, value = command
                self.data[key] = value
                return None
            if op == "get":
                _, key = command
                return self.data.get(key)
            if op == "del":
                _, key = command
                return self.data.pop(key, None) is not None
            if op == "cas":
                _, key, expected, new = command
                if self.data.get(key) != expected:
                    return False
                self.data[key] = new
                return True
        except (TypeError, ValueError, IndexError, KeyError):
            pass
        return ["error", f"bad command {command!r:.80}"]


    def apply_batch(self, commands: list[Any]) -> list[Any]:
        """apply() over a run of commands, with the common `set` done inline."""
        data = self.data
        apply = self.apply
        results: list[Any] = []
        append = results.append
        for command in commands:
            if (
                type(command) is list
                and len(command) == 3
                and command[0] == "set"
                and type(command[1]) is str
            ):
                data[command[1]] = command[2]
                append(None)
            else:
                append(apply(command))
        return results

