"""The packed entry batch shared by the WAL and the wire."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft_trio.core.messages import Entry
from raft_trio.encoding import PackError, pack_entries, unpack_entries


@st.composite
def batches(draw: st.DrawFn) -> list[Entry]:
    first = draw(st.integers(min_value=1, max_value=2**63))
    terms = sorted(draw(st.lists(st.integers(0, 2**64 - 1), max_size=60)))
    return [
        Entry(first + i, term, draw(st.integers(0, 255)), draw(st.binary(max_size=64)))
        for i, term in enumerate(terms)
    ]


@given(batches())
def test_round_trip(entries: list[Entry]) -> None:
    decoded = unpack_entries(pack_entries(entries))
    assert decoded == entries
    assert all(type(e) is Entry and type(e.data) is bytes for e in decoded)


@given(batches(), st.data())
def test_corruption_only_raises_pack_error(entries: list[Entry], data: st.DataObject) -> None:
    packed = bytearray(pack_entries(entries))
    for _ in range(data.draw(st.integers(1, 3))):
        packed[data.draw(st.integers(0, len(packed) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packed)))
    try:
        unpack_entries(bytes(packed[:cut]))
    except PackError:
        pass


def test_terms_are_stored_as_runs() -> None:
    one_term = [Entry(i, 7, 0, b"") for i in range(1, 1001)]
    two_terms = [Entry(i, 7 if i < 500 else 8, 0, b"") for i in range(1, 1001)]
    # 12 bytes per run, whatever the number of entries in it.
    assert len(pack_entries(two_terms)) - len(pack_entries(one_term)) == 12


def test_pack_refuses_a_gap() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        pack_entries([Entry(1, 1, 0, b""), Entry(3, 1, 0, b"")])


def test_empty_batch() -> None:
    assert unpack_entries(pack_entries([])) == []
    with pytest.raises(PackError):
        unpack_entries(pack_entries([]) + b"x")
