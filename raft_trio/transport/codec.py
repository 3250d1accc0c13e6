"""CBOR wire format for Raft messages.

A message is one CBOR array: ``[tag, field values...]`` with the fields in
dataclass declaration order, and each AppendEntries entry is itself an array
``[index, term, kind, data]``. Tags are part of the wire format: never
renumber them, only append.

This module is deliberately free of trio (sans-io) so that tools and tests
can encode and decode without an event loop.
"""

from __future__ import annotations

import dataclasses
import io
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from itertools import chain
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
    Message,
    RequestVote,
    RequestVoteResponse,
)

__all__ = ["WIRE_TAGS", "CodecError", "decode_message", "encode_message"]


class CodecError(ValueError):
    """A payload is not a well-formed Raft message."""


WIRE_TAGS: Mapping[type[Message], int] = MappingProxyType(
    {
        RequestVote: 1,
        RequestVoteResponse: 2,
        AppendEntries: 3,
        AppendEntriesResponse: 4,
        Heartbeat: 5,
        HeartbeatResponse: 6,
    }
)

# Python field type -> type of the decoded CBOR value. Exact types are
# compared (`type(v) is t`), so a CBOR bool never passes as an int.
_WIRE_TYPES: dict[Any, type] = {int: int, bool: bool, tuple[Entry, ...]: list}

_ENTRY_FIELDS = Entry._fields
_INT_ONLY = {int}
_BYTES_ONLY = {bytes}
_LIST_ONLY = {list}

# tuple.__new__ skips the Python-level length check of Entry._make, which
# costs more than all the validation below; the shape is verified in bulk
# before it is called.
_new_entry: Callable[[Iterable[Any]], Entry] = partial(tuple.__new__, Entry)

# Valid messages nest three deep (message, entries, entry); a tight bound
# stops hostile input from making the decoder recurse.
_MAX_DEPTH = 8


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    cls: Callable[..., Message]
    name: str
    fields: tuple[str, ...]
    wire_types: tuple[type, ...]
    entries_pos: int  # position of the entries field among the fields, or -1


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
        # attrgetter with several names returns a tuple, all in C.
        encoders[cls] = (tag, attrgetter(*names))
        specs[tag] = _Spec(cls, cls.__name__, names, wire_types, entries_pos)
    return encoders, specs


_ENCODERS, _SPECS = _build_specs()


def encode_message(msg: Message) -> bytes:
    """Encode `msg` as one CBOR array.

    Entries are NamedTuples, which cbor2 already encodes as arrays, so the
    entries tuple goes into the single dumps call as is.
    """
    try:
        tag, getter = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a Raft message: {type(msg).__name__}") from None
    return cbor2.dumps((tag, *getter(msg)))


def decode_message(payload: bytes) -> Message:
    """Decode one message; raise CodecError, and nothing else, on bad input."""
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
        raise CodecError(f"{spec.name}: expected {len(spec.fields)} fields, got {len(values)}")
    if tuple(map(type, values)) != spec.wire_types:
        raise CodecError(_explain_fields(spec, values))
    if spec.entries_pos >= 0:
        values[spec.entries_pos] = _decode_entries(values[spec.entries_pos])
    return spec.cls(*values)


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


def _decode_entries(raw: list[Any]) -> tuple[Entry, ...]:
    if not raw:
        return ()
    # Validation is column-wise so that each check is one C-level pass
    # instead of a Python loop over thousands of entries.
    if set(map(type, raw)) != _LIST_ONLY:
        raise CodecError(_explain_entries(raw))
    try:
        columns = list(zip(*raw, strict=True))
    except ValueError:
        raise CodecError(_explain_entries(raw)) from None
    if (
        len(columns) != len(_ENTRY_FIELDS)
        or set(map(type, chain(columns[0], columns[1], columns[2]))) != _INT_ONLY
        or set(map(type, columns[3])) != _BYTES_ONLY
    ):
        raise CodecError(_explain_entries(raw))
    return tuple(map(_new_entry, raw))


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


def _explain_entries(raw: list[Any]) -> str:
    wire_types = (int, int, int, bytes)
    for i, entry in enumerate(raw):
        where = f"AppendEntries.entries[{i}]"
        if type(entry) is not list or len(entry) != len(_ENTRY_FIELDS):
            shape = f"{len(entry)}-element array" if type(entry) is list else _describe(entry)
            return f"{where}: expected a {len(_ENTRY_FIELDS)}-element array, got {shape}"
        for name, expected, value in zip(_ENTRY_FIELDS, wire_types, entry, strict=True):
            if type(value) is not expected:
                return f"{where}.{name}: expected {expected.__name__}, got {_describe(value)}"
    return "AppendEntries.entries: invalid entries"  # pragma: no cover
