"""The built-in KV state machine, and decoding committed entries for it."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from raft_trio.core.messages import Entry, EntryKind
from raft_trio.kv import KVStateMachine
from raft_trio.server.entry_codec import decode_commands

keys = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["1", "2", "3"])
commands = st.one_of(
    st.tuples(st.just("set"), keys, values).map(list),
    st.tuples(st.just("get"), keys).map(list),
    st.tuples(st.just("del"), keys).map(list),
    st.tuples(st.just("cas"), keys, st.none() | values, values).map(list),
    # malformed ones: every member must answer them the same way
    st.lists(st.integers() | st.text(max_size=3), max_size=4),
    st.none(),
    st.tuples(st.just("set"), st.lists(st.integers(), max_size=2), values).map(list),
)


def test_set_get_delete_cas() -> None:
    kv = KVStateMachine()
    assert kv.apply(["get", "k"]) is None
    assert kv.apply(["set", "k", "v"]) is None
    assert kv.apply(["get", "k"]) == "v"
    assert kv.apply(["cas", "k", "wrong", "x"]) is False
    assert kv.apply(["cas", "k", "v", "w"]) is True
    assert kv.apply(["get", "k"]) == "w"
    assert kv.apply(["cas", "new", None, "n"]) is True
    assert kv.apply(["cas", "new", None, "again"]) is False
    assert kv.apply(["del", "k"]) is True
    assert kv.apply(["del", "k"]) is False
    assert kv.data == {"new": "n"}


def test_malformed_commands_give_an_error_value_not_an_exception() -> None:
    kv = KVStateMachine()
    for bad in [None, [], ["set", "k"], ["nope", 1], ["set", ["unhashable"], "v"], 7]:
        result = kv.apply(bad)
        assert isinstance(result, list) and result[0] == "error"
    assert kv.data == {}


@given(st.lists(commands, max_size=30))
def test_apply_batch_is_apply_in_order(batch: list[Any]) -> None:
    one, many = KVStateMachine(), KVStateMachine()
    assert many.apply_batch(batch) == [one.apply(c) for c in batch]
    assert many.data == one.data


def _entries(*items: tuple[int, bytes]) -> list[Entry]:
    return [Entry(i + 1, 1, kind, data) for i, (kind, data) in enumerate(items)]


def test_decode_commands_in_one_batch_keeps_noops_in_place() -> None:
    entries = _entries(
        (EntryKind.NOOP, b""),
        (EntryKind.COMMAND, cbor2.dumps(["set", "a", "1"])),
        (EntryKind.COMMAND, cbor2.dumps(["get", "a"])),
    )
    assert decode_commands(entries) == ([None, ["set", "a", "1"], ["get", "a"]], False)
    assert decode_commands(entries[1:]) == ([["set", "a", "1"], ["get", "a"]], True)


def test_an_undecodable_command_fails_alone() -> None:
    entries = _entries(
        (EntryKind.COMMAND, cbor2.dumps(["set", "a", "1"])),
        (EntryKind.COMMAND, b"\xff\x00"),
        (EntryKind.COMMAND, cbor2.dumps(["set", "b", "2"])),
    )
    decoded, only_commands = decode_commands(entries)
    assert not only_commands
    assert decoded[0] == ["set", "a", "1"] and decoded[2] == ["set", "b", "2"]
    assert "undecodable" in decoded[1].error[1]
