from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft_trio.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raft_trio.encoding import pack_entries
from raft_trio.transport import codec
from raft_trio.transport.chunks import SnapshotAck, SnapshotChunk
from raft_trio.transport.codec import (
    WIRE_TAGS,
    CodecError,
    PeerMessage,
    decode_message,
    encode_message,
)

# Unbounded ints on purpose: the codec promises exact round trips, including
# values beyond 64 bits that CBOR carries as bignums.
ints = st.integers()
small_ints = st.integers(min_value=0, max_value=2**63 - 1)

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def append_entries_st(draw: st.DrawFn) -> AppendEntries:
    """AppendEntries whose entries follow prev_index, as the core builds them."""
    prev_index = draw(st.integers(min_value=0, max_value=2**63))
    terms = draw(st.lists(u64, max_size=40))
    entries = tuple(
        Entry(prev_index + 1 + i, term, draw(st.integers(0, 255)), draw(st.binary(max_size=300)))
        for i, term in enumerate(terms)
    )
    return AppendEntries(
        term=draw(ints), src=draw(ints), dst=draw(ints), prev_index=prev_index,
        prev_term=draw(ints), entries=entries, commit=draw(ints),
    )


message_st: st.SearchStrategy[PeerMessage] = st.one_of(
    st.builds(
        RequestVote,
        term=ints,
        src=ints,
        dst=ints,
        last_log_index=ints,
        last_log_term=ints,
    ),
    st.builds(RequestVoteResponse, term=ints, src=ints, dst=ints, granted=st.booleans()),
    append_entries_st(),
    st.builds(
        AppendEntriesResponse,
        term=ints,
        src=ints,
        dst=ints,
        success=st.booleans(),
        match_index=ints,
        reject_index=ints,
        conflict_term=ints,
        conflict_index=ints,
    ),
    st.builds(Heartbeat, term=ints, src=ints, dst=ints, commit=ints),
    st.builds(HeartbeatResponse, term=ints, src=ints, dst=ints),
    st.builds(InstallSnapshot, term=ints, src=ints, dst=ints, index=ints, snapshot_term=ints,
              membership=st.binary(max_size=50)),
    st.builds(TimeoutNow, term=ints, src=ints, dst=ints),
    st.builds(SnapshotChunk, term=ints, src=ints, dst=ints, index=ints, snapshot_term=ints,
              total=ints, offset=ints, data=st.binary(max_size=300)),
    st.builds(SnapshotAck, term=ints, src=ints, dst=ints, index=ints, snapshot_term=ints,
              received=ints, accepted=st.booleans()),
)

SAMPLES: list[PeerMessage] = [
    RequestVote(term=3, src=1, dst=2, last_log_index=10, last_log_term=2),
    RequestVoteResponse(term=3, src=2, dst=1, granted=True),
    AppendEntries(
        term=3,
        src=1,
        dst=2,
        prev_index=9,
        prev_term=2,
        entries=(Entry(10, 3, EntryKind.NOOP, b""), Entry(11, 3, EntryKind.COMMAND, b"set x")),
        commit=9,
    ),
    AppendEntriesResponse(
        term=3,
        src=2,
        dst=1,
        success=False,
        match_index=0,
        reject_index=9,
        conflict_term=1,
        conflict_index=4,
    ),
    Heartbeat(term=3, src=1, dst=2, commit=11),
    HeartbeatResponse(term=3, src=2, dst=1),
    InstallSnapshot(term=3, src=1, dst=2, index=5000, snapshot_term=2, membership=b"\x82\x80\x80"),
    TimeoutNow(term=4, src=1, dst=2),
    SnapshotChunk(term=3, src=1, dst=2, index=5000, snapshot_term=2, total=10, offset=4,
                  data=b"\x00\x01"),
    SnapshotAck(term=3, src=2, dst=1, index=5000, snapshot_term=2, received=6, accepted=True),
]


def wire_fields(msg: PeerMessage) -> list[Any]:
    """The message as the array the wire format specifies, built independently of the codec."""
    values: list[Any] = []
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name == "entries":
            value = pack_entries(value)
        values.append(value)
    return [WIRE_TAGS[type(msg)], *values]


def raw(values: list[Any]) -> bytes:
    return cbor2.dumps(values)


def assert_rejected(payload: bytes, *fragments: str) -> None:
    with pytest.raises(CodecError) as info:
        decode_message(payload)
    for fragment in fragments:
        assert fragment in str(info.value)


# --------------------------------------------------------------- round trips


@given(message_st)
def test_round_trip(msg: PeerMessage) -> None:
    decoded = decode_message(encode_message(msg))
    assert decoded == msg
    assert type(decoded) is type(msg)
    if isinstance(decoded, AppendEntries):
        assert type(decoded.entries) is tuple
        assert all(type(e) is Entry for e in decoded.entries)
        assert all(type(e.data) is bytes for e in decoded.entries)


@given(message_st)
def test_wire_layout_is_a_flat_array(msg: PeerMessage) -> None:
    assert cbor2.loads(encode_message(msg)) == wire_fields(msg)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_samples(msg: PeerMessage) -> None:
    assert decode_message(encode_message(msg)) == msg


def test_every_message_type_has_a_distinct_tag() -> None:
    assert {type(m) for m in SAMPLES} == set(WIRE_TAGS)
    assert len(set(WIRE_TAGS.values())) == len(WIRE_TAGS)


def test_wire_tags_are_stable() -> None:
    # Renumbering breaks mixed-version clusters; this pins the format.
    assert cbor2.loads(encode_message(HeartbeatResponse(7, 1, 2))) == [6, 7, 1, 2, 0]
    assert dict(WIRE_TAGS) == {
        RequestVote: 1,
        RequestVoteResponse: 2,
        AppendEntries: 3,
        AppendEntriesResponse: 4,
        Heartbeat: 5,
        HeartbeatResponse: 6,
        InstallSnapshot: 7,
        SnapshotChunk: 8,
        SnapshotAck: 9,
        TimeoutNow: 10,
    }


def test_messages_from_a_member_that_predates_the_newer_fields_decode_with_defaults() -> None:
    assert decode_message(cbor2.dumps([6, 7, 1, 2])) == HeartbeatResponse(7, 1, 2, 0)
    assert decode_message(cbor2.dumps([1, 3, 1, 2, 10, 2])) == RequestVote(3, 1, 2, 10, 2)
    old_vote = decode_message(cbor2.dumps([1, 3, 1, 2, 10, 2, True]))
    assert isinstance(old_vote, RequestVote) and old_vote.pre_vote and not old_vote.transfer
    with pytest.raises(CodecError, match="expected 7 fields, got 3"):
        decode_message(cbor2.dumps([1, 3, 1, 2]))


def test_empty_entries() -> None:
    msg = AppendEntries(1, 1, 2, 0, 0, (), 0)
    decoded = decode_message(encode_message(msg))
    assert decoded == msg
    assert isinstance(decoded, AppendEntries)
    assert decoded.entries == ()


def test_large_entries() -> None:
    entries = tuple(
        Entry(i, 1 + i // 100, i % 2, bytes([i % 256]) * (i % 97)) for i in range(1, 5001)
    )
    msg = AppendEntries(9, 1, 2, 0, 0, entries, 4000)
    assert decode_message(encode_message(msg)) == msg


def test_large_data() -> None:
    msg = AppendEntries(1, 1, 2, 0, 0, (Entry(1, 1, 0, b"\x00\xff" * 1_000_000),), 0)
    assert decode_message(encode_message(msg)) == msg


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode_message(Entry(1, 1, 0, b""))  # type: ignore[arg-type]


def test_codec_does_not_import_trio() -> None:
    # The codec is sans-io; checked on the source because other modules of
    # the package import trio anyway.
    tree = ast.parse(Path(codec.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "trio" not in imported


# ------------------------------------------------------------------ garbage


@given(st.binary(max_size=512))
def test_random_bytes_only_raise_codec_error(payload: bytes) -> None:
    try:
        decode_message(payload)
    except CodecError:
        pass


@given(message_st, st.data())
def test_corrupted_encodings_only_raise_codec_error(msg: PeerMessage, data: st.DataObject) -> None:
    payload = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(payload) - 1))
        payload[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        decode_message(bytes(payload[:cut]))
    except CodecError:
        pass


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


@given(st.sampled_from(sorted(WIRE_TAGS.values())), st.lists(cbor_values, max_size=10))
def test_arbitrary_fields_only_raise_codec_error(tag: int, values: list[Any]) -> None:
    try:
        decode_message(raw([tag, *values]))
    except CodecError:
        pass


@given(st.binary(max_size=200))
def test_arbitrary_packed_entries_only_raise_codec_error(packed: bytes) -> None:
    try:
        decode_message(raw([3, 1, 1, 2, 0, 0, packed, 0]))
    except CodecError:
        pass


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff",  # a break outside any indefinite container
        b"\x1c",  # reserved additional-information value
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # byte string claiming 2**64 bytes
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # array claiming 2**64 items
        b"\x9f" * 1000,  # deep nesting
        b"\xc0\x01",  # datetime tag around an int: cbor2 fails inside a semantic decoder
        b"\xc1\x41\x00",
        b"\x85\x05\x01\x02",  # truncated array
    ],
)
def test_malformed_cbor(payload: bytes) -> None:
    assert_rejected(payload)


def test_trailing_data() -> None:
    assert_rejected(encode_message(SAMPLES[0]) + b"\x00", "trailing")


@pytest.mark.parametrize("value", [{}, 5, b"\x05", "x", None, []])
def test_not_a_non_empty_array(value: Any) -> None:
    assert_rejected(raw(value), "array")


@pytest.mark.parametrize("tag", [0, 11, 99, -1, 2**70])
def test_unknown_tag(tag: int) -> None:
    assert_rejected(raw([tag, 1, 2, 3]), "unknown message tag")


@pytest.mark.parametrize("tag", ["5", True, 5.0, None, b"\x05", [5]])
def test_tag_of_wrong_type(tag: Any) -> None:
    assert_rejected(raw([tag, 1, 2, 3, 4]), "tag")


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_wrong_arity(msg: PeerMessage) -> None:
    fields = wire_fields(msg)
    name = type(msg).__name__
    # Fields with defaults were added later and may be missing (an older sender).
    required = 1 + sum(1 for f in dataclasses.fields(msg) if f.default is dataclasses.MISSING)
    assert_rejected(raw(fields[:required - 1]), name, "fields")
    assert_rejected(raw([*fields, 0]), name, "fields")
    assert_rejected(raw(fields[:1]), name, "fields")


def wrong_values(value: Any) -> list[Any]:
    if type(value) is bool:
        return [0, 1, None, "true"]
    if type(value) is int:
        return [True, 1.0, "1", None, b"\x01", [1]]
    return [[], "x", None, 0, {}]  # the packed entries


@pytest.mark.parametrize(
    ("msg", "position"),
    [(m, i) for m in SAMPLES for i in range(1, len(wire_fields(m)))],
    ids=lambda v: type(v).__name__ if dataclasses.is_dataclass(v) else str(v),
)
def test_wrong_field_type(msg: PeerMessage, position: int) -> None:
    fields = wire_fields(msg)
    name = dataclasses.fields(msg)[position - 1].name
    for bad in wrong_values(fields[position]):
        mutated = list(fields)
        mutated[position] = bad
        assert_rejected(raw(mutated), f"{type(msg).__name__}.{name}")


def test_semantic_tag_in_a_field() -> None:
    mutated = wire_fields(SAMPLES[4])
    mutated[1] = cbor2.CBORTag(1, 0)  # a datetime
    assert_rejected(raw(mutated), "Heartbeat.term")


GOOD_ENTRIES = (Entry(1, 1, 0, b"x"), Entry(2, 1, 0, b"yz"), Entry(3, 2, 1, b""))


def append_entries_with(packed: bytes, prev_index: int = 0) -> bytes:
    return raw([3, 1, 1, 2, prev_index, 0, packed, 0])


def test_packed_entries_must_follow_prev_index() -> None:
    packed = pack_entries(GOOD_ENTRIES)
    decoded = decode_message(append_entries_with(packed))
    assert isinstance(decoded, AppendEntries)
    assert decoded.entries == GOOD_ENTRIES
    assert_rejected(append_entries_with(packed, prev_index=5), "does not follow prev_index 5")


@pytest.mark.parametrize(
    ("cut", "fragment"),
    [(3, "too short"), (-1, "lengths cover"), (20, "")],
)
def test_truncated_packed_entries(cut: int, fragment: str) -> None:
    packed = pack_entries(GOOD_ENTRIES)
    assert_rejected(append_entries_with(packed[:cut]), "AppendEntries.entries", fragment)


def test_packed_entries_with_trailing_bytes() -> None:
    assert_rejected(append_entries_with(pack_entries(GOOD_ENTRIES) + b"!"), "lengths cover")


def test_packed_header_claiming_too_many_entries() -> None:
    packed = bytearray(pack_entries(GOOD_ENTRIES))
    packed[8:12] = (10**9).to_bytes(4, "little")
    assert_rejected(append_entries_with(bytes(packed)), "bad packed entries header")


def test_term_runs_must_add_up() -> None:
    packed = bytearray(pack_entries(GOOD_ENTRIES))
    packed[24:28] = (1).to_bytes(4, "little")  # first run claims 1 entry instead of 2
    assert_rejected(append_entries_with(bytes(packed)), "term runs")


def test_index_zero_is_refused() -> None:
    packed = bytearray(pack_entries(GOOD_ENTRIES))
    packed[0:8] = (0).to_bytes(8, "little")
    assert_rejected(append_entries_with(bytes(packed), prev_index=-1), "bad packed entries header")


def test_an_appends_entries_come_back_packed_as_they_came() -> None:
    entries = tuple(Entry(i, 2, 0, b"x%d" % i) for i in range(5, 9))
    packed = pack_entries(entries)
    frame = codec.encode_message(AppendEntries(2, 1, 3, 4, 2, entries, 4), packed)
    msg, got = codec.decode_message_packed(frame)
    assert isinstance(msg, AppendEntries) and msg.entries == entries
    assert got == packed
    assert codec.decode_message_packed(
        codec.encode_message(AppendEntries(2, 1, 3, 8, 2, (), 4)))[1] is None
    assert codec.decode_message_packed(
        codec.encode_message(RequestVote(2, 1, 3, 8, 2)))[1] is None
