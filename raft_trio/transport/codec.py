"""CBOR wire format for Raft messages.

A message is one CBOR array: ``[tag, field values...]`` with the fields in
dataclass declaration order, except that AppendEntries carries its entries as
one byte string in the packed form of raft_trio.encoding (columns instead of
one CBOR array per entry: a fraction of the cost each way). Tags are part of the wire format: never
renumber them, only append.

This module is deliberately free of trio (sans-io) so that tools and tests
can encode and decode without an event loop.
"""

from __future__ import annotations

import dataclasses
import io
import typing
from collections.abc import Callable, Mapping
from operator import attrgetter
from types import MappingProxyType
from typing import Any

import cbor2

from raft_trio.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raft_trio.encoding import PackError, pack_entries, unpack_entries
from raft_trio.transport.chunks import SnapshotAck, SnapshotChunk

__all__ = ["WIRE_TAGS", "CodecError", "PeerMessage", "decode_message", "encode_message"]

# Everything that travels between members: the core's messages and the
# records that stream snapshots.
PeerMessage = Message | SnapshotChunk | SnapshotAck


class CodecError(ValueError):
    """A payload is not a well-formed Raft message."""


WIRE_TAGS: Mapping[type[PeerMessage], int] = MappingProxyType(
    {
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
)

# Python field type -> type of the decoded CBOR value. Exact types are
# compared (`type(v) is t`), so a CBOR bool never passes as an int.
_WIRE_TYPES: dict[Any, type] = {int: int, bool: bool, bytes: bytes, tuple[Entry, ...]: bytes}

# Valid messages are one flat array (entries travel packed in a byte
# string); a tight bound stops hostile input from making the decoder recurse.
_MAX_DEPTH = 8


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    cls: Callable[..., PeerMessage]
    name: str
    fields: tuple[str, ...]
    wire_types: tuple[type, ...]
    entries_pos: int  # position of the entries field among the fields, or -1
    # Fields added later have defaults: a message from a member that predates
    # them arrives without them and gets the defaults.
    required: int
    defaults: tuple[Any, ...]


def _build_specs() -> tuple[
    dict[type, tuple[int, Callable[[Any], tuple[Any, ...]]]], dict[int, _Spec]
]:
    encoders: dict[type, tuple[int, Callable[[Any], tuple[Any, ...]]]] = {}
    specs: dict[int, _Spec] = {}
    for cls, tag in WIRE_TAGS.items():
        hints = typing.get_type_hints(cls)
        names = tuple(f.name for f in dataclasses.fields(cls))
        # Failing at import makes a new message field impossible to forget here.
        wire_types = tuple(_WIRE_TYPES[hints[name]] for name in names)
        entries_pos = names.index("entries") if "entries" in names else -1
        defaults = tuple(
            f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
        )
        # attrgetter with several names returns a tuple, all in C.
        encoders[cls] = (tag, attrgetter(*names))
        specs[tag] = _Spec(cls, cls.__name__, names, wire_types, entries_pos,
                           len(names) - len(defaults), defaults)
    return encoders, specs


_ENCODERS, _SPECS = _build_specs()


def encode_message(msg: PeerMessage, packed_entries: bytes | None = None) -> bytes:
    """Encode `msg` as one CBOR array.

    AppendEntries carries its entries packed (raft_trio.encoding) in one byte
    string; a caller sending the same entries to several peers packs them
    once and passes `packed_entries`.
    """
    try:
        tag, getter = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a Raft message: {type(msg).__name__}") from None
    if type(msg) is AppendEntries:
        packed = pack_entries(msg.entries) if packed_entries is None else packed_entries
        return cbor2.dumps(
            (tag, msg.term, msg.src, msg.dst, msg.prev_index, msg.prev_term, packed, msg.commit)
        )
    return cbor2.dumps((tag, *getter(msg)))


def decode_message(payload: bytes) -> PeerMessage:
    """Decode one message; raise CodecError, and nothing else, on bad input."""
    return decode_message_packed(payload)[0]


def decode_message_packed(payload: bytes) -> tuple[PeerMessage, bytes | None]:
    """decode_message, and an AppendEntries' entries as they were packed (None for
    other messages and for no entries), for writing them to the WAL as they came."""
    raw = _load(payload)
    if type(raw) is not list or not raw:
        raise CodecError(f"expected a non-empty CBOR array, got {_describe(raw)}")
    tag = raw[0]
    if type(tag) is not int:
        raise CodecError(f"message tag must be an int, got {_describe(tag)}")
    spec = _SPECS.get(tag)
    if spec is None:
        raise CodecError(f"unknown message tag {tag}")
    values = raw[1:]
    if len(values) != len(spec.fields):
        if not spec.required <= len(values) < len(spec.fields):
            raise CodecError(f"{spec.name}: expected {len(spec.fields)} fields, got {len(values)}")
        values += spec.defaults[len(values) - spec.required:]
    if tuple(map(type, values)) != spec.wire_types:
        raise CodecError(_explain_fields(spec, values))
    packed: bytes | None = None
    if spec.entries_pos >= 0:
        packed = values[spec.entries_pos]
        entries = _decode_entries(packed, values)
        values[spec.entries_pos] = entries
        if not entries:
            packed = None
    return spec.cls(*values), packed


def _load(payload: bytes) -> Any:
    stream = io.BytesIO(payload)
    try:
        # strict_hashable_types: map keys and set members limited to str and
        # bytes, whose hashes are randomised, so a payload cannot be built
        # from colliding keys to make decoding quadratic.
        raw = cbor2.CBORDecoder(stream, max_depth=_MAX_DEPTH, strict_hashable_types=True).decode()
    except Exception as exc:
        # cbor2 reports most problems as CBORDecodeError, but semantic tags
        # (datetime, decimal, regex...) can surface other errors; callers are
        # promised CodecError only.
        raise CodecError(f"malformed CBOR: {exc}") from exc
    # loads() silently ignores bytes after the first item; the decoder leaves
    # the stream just past the item, which exposes them.
    if stream.tell() != len(payload):
        raise CodecError(f"trailing data: {len(payload) - stream.tell()} bytes after the message")
    return raw


def _decode_entries(packed: bytes, values: list[Any]) -> tuple[Entry, ...]:
    try:
        entries = unpack_entries(packed)
    except PackError as exc:
        raise CodecError(f"AppendEntries.entries: {exc}") from None
    prev_index = values[3]
    if entries and entries[0].index != prev_index + 1:
        raise CodecError(
            f"AppendEntries.entries: first index {entries[0].index} does not follow "
            f"prev_index {prev_index}"
        )
    return tuple(entries)


# The explain helpers only run once a payload is known to be bad, so they
# favour a precise message over speed.


def _describe(value: object) -> str:
    return type(value).__name__


def _explain_fields(spec: _Spec, values: list[Any]) -> str:
    for name, expected, value in zip(spec.fields, spec.wire_types, values, strict=True):
        if type(value) is not expected:
            wanted = "array" if expected is list else expected.__name__
            return f"{spec.name}.{name}: expected {wanted}, got {_describe(value)}"
    return f"{spec.name}: invalid field types"  # pragma: no cover
