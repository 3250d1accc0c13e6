"""The built-in key-value state machine: str keys, str values, set/get/delete/cas."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import partial
from itertools import chain, islice
from typing import Any, BinaryIO

import cbor2

# The first item of a snapshot: a tag so that some other state machine's
# snapshot is refused by name, and a version for changes of layout.
_SNAPSHOT_TAG = "raft-trio-kv"
# Version 1 wrote one [key, value] array per key; version 2 writes flat
# [k1, v1, k2, v2, ...] arrays of up to _PAIRS_PER_CHUNK pairs. cbor2 encodes
# a string about ten times faster than a two-item array, so version 2 writes
# 4-6 times faster and reads about twice as fast. Both are restored.
_SNAPSHOT_VERSION = 2
_SNAPSHOT_VERSIONS = (1, 2)
# Enough pairs per chunk that cbor2's per-call cost vanishes, few enough that
# a chunk (and the GIL it holds while encoded in the snapshot thread) is small.
_PAIRS_PER_CHUNK = 4096


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

    def query(self, query: Any) -> Any:
        """Answer a read-only query from the state as applied: ["get", key] -> value or None."""
        if type(query) is list and len(query) == 2 and query[0] == "get":
            try:
                return self.data.get(query[1])
            except TypeError:
                pass  # an unhashable key: no such key
            return None
        return ["error", f"bad query {query!r:.80}"]

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

    def snapshot(self, out: BinaryIO) -> None:
        """Write the whole state to `out` as CBOR items.

        Layout: ``["raft-trio-kv", 2, key count]`` then arrays
        ``[key, value, key, value, ...]`` of up to 4096 pairs each, in
        insertion order, so the state is never copied whole into memory.
        """
        _write_state(self.data, out)

    def capture_snapshot(self) -> Callable[[BinaryIO], None]:
        """The state as of now, for snapshot() to write later while applies go on.

        A shallow copy: the keys and values themselves are shared, not
        duplicated, so it costs a pointer pair per key.
        """
        return partial(_write_state, self.data.copy())

    def page(self, position: int, count: int) -> list[list[Any]]:
        """Up to `count` [key, value] pairs from `position` in insertion order."""
        return [list(item) for item in islice(self.data.items(), position, position + count)]

    def restore(self, src: BinaryIO) -> None:
        """Replace the state with one written by snapshot(), reading `src` a chunk at a time.

        Raises ValueError, with the state untouched, on anything snapshot()
        could not have written. Keys and values are not required to be str:
        apply() stores whatever hashable key and value a command carries, and
        a member's own snapshot must always be restorable.
        """
        decode = cbor2.CBORDecoder(src).decode
        header = _decode_item(decode, "header")
        if (
            type(header) is not list
            or len(header) != 3
            or header[0] != _SNAPSHOT_TAG
            or type(header[2]) is not int
            or header[2] < 0
        ):
            raise ValueError(f"KV snapshot: bad header {header!r:.80}")
        if type(header[1]) is not int or header[1] not in _SNAPSHOT_VERSIONS:
            raise ValueError(f"KV snapshot: unsupported format version {header[1]!r:.20}")
        count: int = header[2]
        if header[1] == 1:
            data = _read_pairs(decode, count)
        else:
            data = _read_chunks(decode, count)
        if src.read(1):
            raise ValueError(f"KV snapshot: data after the {count} entries the header announced")
        self.data = data


def _write_state(data: dict[Any, Any], out: BinaryIO) -> None:
    dumps = cbor2.dumps
    out.write(dumps([_SNAPSHOT_TAG, _SNAPSHOT_VERSION, len(data)]))
    pairs = iter(data.items())
    while chunk := list(chain.from_iterable(islice(pairs, _PAIRS_PER_CHUNK))):
        out.write(dumps(chunk))


def _read_pairs(decode: Callable[[], Any], count: int) -> dict[Any, Any]:
    """Version 1: `count` items, each a [key, value] array."""
    data: dict[Any, Any] = {}
    for i in range(count):
        item = _decode_item(decode, f"entry {i} of {count}")
        if type(item) is not list or len(item) != 2 or not isinstance(item[0], Hashable):
            raise ValueError(f"KV snapshot: entry {i} is not a [key, value] pair: {item!r:.80}")
        key, value = item
        try:
            if key in data:
                raise ValueError(f"KV snapshot: duplicate key {key!r:.80} at entry {i}")
        except TypeError:
            # Hashable by type but not by content, like a tuple holding a list.
            raise ValueError(f"KV snapshot: unhashable key at entry {i}: {key!r:.80}") from None
        data[key] = value
    return data


def _read_chunks(decode: Callable[[], Any], count: int) -> dict[Any, Any]:
    """Version 2: flat [key, value, ...] arrays holding `count` pairs in all."""
    data: dict[Any, Any] = {}
    done = 0
    while done < count:
        chunk = _decode_item(decode, f"chunk from entry {done} of {count}")
        if (type(chunk) is not list or not chunk or len(chunk) % 2
                or len(chunk) > 2 * min(_PAIRS_PER_CHUNK, count - done)):
            raise ValueError(
                f"KV snapshot: the chunk from entry {done} is not a flat array of at most "
                f"{min(_PAIRS_PER_CHUNK, count - done)} [key, value] pairs: {chunk!r:.80}"
            )
        before = len(data)
        try:
            data.update(zip(chunk[::2], chunk[1::2], strict=True))
        except TypeError:
            # Unhashable by type (a list) or by content (a tuple holding one).
            at = next(i for i, key in enumerate(chunk[::2]) if not _hashable(key))
            raise ValueError(
                f"KV snapshot: unhashable key at entry {done + at}: {chunk[2 * at]!r:.80}"
            ) from None
        if len(data) - before != len(chunk) // 2:
            seen = set(islice(data, before)) if before else set()
            for at, key in enumerate(chunk[::2]):
                if key in seen:
                    raise ValueError(f"KV snapshot: duplicate key {key!r:.80} at entry {done + at}")
                seen.add(key)
        done += len(chunk) // 2
    return data


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _decode_item(decode: Callable[[], Any], what: str) -> Any:
    try:
        return decode()
    except cbor2.CBORDecodeEOF:
        raise ValueError(f"KV snapshot: ends before the {what}") from None
    except (cbor2.CBORDecodeError, RecursionError) as exc:
        raise ValueError(f"KV snapshot: undecodable {what}: {exc}") from None
