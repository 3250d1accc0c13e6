"""encode_command gives exactly cbor2.dumps's bytes, on its fast path and off it."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft_trio.command_encoding import encode_command

texts = st.text(max_size=300)  # crosses the 24- and 256-byte head boundaries
scalars = st.one_of(texts, st.integers(), st.none(), st.booleans(), st.binary(max_size=30))


@given(st.lists(texts, min_size=3, max_size=3))
def test_three_strings_encode_as_cbor2_does(command: list[str]) -> None:
    assert encode_command(command) == cbor2.dumps(command)


@given(st.lists(scalars, max_size=5) | st.tuples(texts, texts, texts) | scalars)
def test_anything_else_encodes_as_cbor2_does(command: Any) -> None:
    assert encode_command(command) == cbor2.dumps(command)


@pytest.mark.parametrize("command", [
    ["set", "k", "v"],
    ["set", "k" * 23, "v" * 24],
    ["set", "é" * 127, "v" * 255],  # 254 and 255 bytes: the last lengths in the table
    ["set", "k" * 256, "v"],  # past the table: cbor2's encoding
    ["set", "ключ", "значение 🙂"],
    ["", "", ""],
])
def test_boundaries_round_trip(command: list[str]) -> None:
    encoded = encode_command(command)
    assert encoded == cbor2.dumps(command)
    assert cbor2.loads(encoded) == command


def test_a_lone_surrogate_is_left_to_cbor2() -> None:
    command = ["set", "k", "\ud800"]
    with pytest.raises(Exception) as ours:
        encode_command(command)
    with pytest.raises(Exception) as theirs:
        cbor2.dumps(command)
    assert type(ours.value) is type(theirs.value)
