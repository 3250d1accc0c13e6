"""The packed entry batch shared by the WAL and the wire."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft_trio.core.messages import Entry
from raft_trio.encoding import (
    PackCache,
    PackError,
    pack_entries,
    packed_span,
    unpack_entries,
)


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


# --- the cache of packed runs ----------------------------------------------------------


def run(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, 0, b"%d/%d" % (i, term)) for i in range(first, last + 1)]


def test_a_run_is_packed_once() -> None:
    cache = PackCache()
    first = cache.pack(run(1, 10))
    assert first == pack_entries(run(1, 10))
    assert cache.pack(run(1, 10)) is first
    assert cache.pack(tuple(run(1, 10))) is first
    assert len(cache) == 1


def test_another_term_at_the_last_index_is_another_run() -> None:
    cache = PackCache()
    old = cache.pack(run(1, 10, term=1))
    new = cache.pack(run(1, 10, term=2))
    assert new is not old and unpack_entries(new) == run(1, 10, term=2)


def test_pieces_reuse_remembered_runs_longest_first() -> None:
    cache = PackCache()
    a, b = pack_entries(run(1, 4)), pack_entries(run(5, 9))
    cache.remember(run(1, 4), a)
    cache.remember(run(1, 2), pack_entries(run(1, 2)))
    cache.remember(run(5, 9), b)
    cache.remember(run(5, 20), pack_entries(run(5, 20)))  # longer than what is asked
    pieces = cache.pieces(run(1, 12))
    assert pieces[0] is a and pieces[1] is b and len(pieces) == 2  # 10..12: the caller's
    assert cache.pieces(run(10, 12)) == []
    assert len(cache) == 4  # pieces() remembers nothing
    assert cache.pieces([]) == []


def test_pieces_skip_a_run_whose_last_term_differs() -> None:
    cache = PackCache()
    cache.remember(run(1, 5, term=1), pack_entries(run(1, 5, term=1)))
    mixed = run(1, 3, term=1) + run(4, 6, term=2)  # a new leader rewrote 4..5
    assert cache.pieces(mixed) == []


@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10), st.integers(1, 3)),
                max_size=20),
       st.integers(1, 30), st.integers(0, 15), st.integers(1, 3))
def test_pieces_always_hold_a_prefix_of_the_entries(
    remembered: list[tuple[int, int, int]], first: int, extra: int, term: int
) -> None:
    # Every entry is a function of its index and term, as in logs that obey
    # Log Matching: same index and term, same entry.
    def log(a: int, b: int, t: int) -> list[Entry]:
        return [Entry(i, t, 0, b"%d/%d" % (i, t)) for i in range(a, b + 1)]

    cache = PackCache(capacity=8, max_bytes=2000)
    for a, length, t in remembered:
        cache.remember(log(a, a + length, t), pack_entries(log(a, a + length, t)))
    wanted = log(first, first + extra, term)
    held = [e for p in cache.pieces(wanted) for e in unpack_entries(p)]
    assert held == wanted[: len(held)]
    assert len(cache) <= 8


def test_the_oldest_runs_are_forgotten() -> None:
    cache = PackCache(capacity=2)
    one = cache.pack(run(1, 1))
    cache.pack(run(2, 2))
    cache.pack(run(3, 3))
    assert len(cache) == 2
    assert cache.pack(run(1, 1)) is not one  # packed again
    assert cache.pieces(run(2, 3)) == []  # 2 was forgotten


def test_the_cache_holds_at_most_max_bytes() -> None:
    def hundred(first: int) -> list[Entry]:
        return [Entry(i, 1, 0, b"x") for i in range(first, first + 100)]

    size = len(pack_entries(hundred(1)))
    cache = PackCache(max_bytes=2 * size + 10)
    for first in (1, 101, 201):
        cache.remember(hundred(first), pack_entries(hundred(first)))
    assert len(cache) == 2 and cache.pieces(hundred(1)) == []
    assert len(cache.pieces(hundred(101) + hundred(201))) == 2
    too_big = [Entry(i, 1, 0, b"x") for i in range(1, 400)]
    cache.remember(too_big, pack_entries(too_big))  # larger than the whole budget
    assert len(cache) == 2 and cache.pieces(too_big) == []


def test_packed_span_reads_the_header() -> None:
    two_terms = run(5, 7, term=2) + run(8, 9, term=4)
    assert packed_span(pack_entries(two_terms)) == (5, 5, 4)
    for bad in (b"", pack_entries([]), pack_entries(run(1, 2))[:20]):
        with pytest.raises(PackError):
            packed_span(bad)
