"""`Client`: the key-value store's face on the generic client (what `raft_trio.connect`
returns).

    async with raft_trio.connect(["127.0.0.1:7001", "127.0.0.1:7002"]) as kv:
        await kv.set("k", "v")
        assert await kv.get("k") == "v"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raft_trio.client.base import RaftClient
from raft_trio.errors import RaftError
from raft_trio.protocol import ReadMode


class Client(RaftClient):
    async def set(self, key: str, value: str) -> None:
        _check_str(key=key, value=value)
        await self.propose([["set", key, value]])

    async def get(self, key: str, *, mode: ReadMode = "linearizable") -> str | None:
        """The value of `key`, or None when absent (read modes as RaftClient.read says)."""
        _check_str(key=key)
        value = await self.read(["get", key], mode=mode)
        if value is not None and not isinstance(value, str):
            raise RaftError(f"unexpected value for {key!r}: {value!r:.80}")
        return value

    async def delete(self, key: str) -> bool:
        """Delete `key`; returns whether it existed."""
        _check_str(key=key)
        (existed,) = await self.propose([["del", key]])
        return bool(existed)

    async def cas(self, key: str, expected: str | None, new: str) -> bool:
        """Set `key` to `new` if it holds `expected` (None: if absent); returns whether it did."""
        _check_str(key=key, new=new)
        if expected is not None:
            _check_str(expected=expected)
        (swapped,) = await self.propose([["cas", key, expected, new]])
        return bool(swapped)

    async def set_many(self, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """Write a batch of keys in one round trip, as consecutive log entries: a mapping,
        or an iterable of (key, value) pairs, as dict.update takes them."""
        try:
            pairs = list(items.items() if isinstance(items, Mapping) else items)
        except TypeError:
            raise TypeError(f"set_many takes a mapping or an iterable of (key, value) pairs, "
                            f"not {type(items).__name__}") from None
        # One pass over the batch at C speed where it can be: this is the hot path.
        if not all(type(p) is tuple and len(p) == 2 for p in pairs):
            for pair in pairs:
                if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(
                        pair) != 2:
                    raise TypeError(f"set_many takes (key, value) pairs, not {pair!r:.60}")
        commands = [["set", key, value] for key, value in pairs]
        if not all(type(c[1]) is str and type(c[2]) is str for c in commands):
            bad = next(c for c in commands if not (type(c[1]) is str and type(c[2]) is str))
            _check_str(key=bad[1], value=bad[2])
        await self.propose(commands)


def _check_str(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")
