"""CBOR encoding of one client command, with a fast path for three-string arrays.

The leader encodes every command it proposes, one cbor2.dumps call each, and
that call costs about 1.8 microseconds for ["set", key, value]: most of it is
cbor2's fixed cost per call and per array, not the bytes. The KV store's hot
commands are arrays of three strings, which are encoded here in half that
time. Every other value goes to cbor2, and the fast path writes the same
shortest-form heads, so the bytes are always exactly what cbor2.dumps gives.
"""

from __future__ import annotations

from typing import Any

import cbor2

# The shortest CBOR head of a text string of n UTF-8 bytes, for n < 256:
# the length in the initial byte below 24, else in one byte after 0x78.
_TEXT_HEADS = [bytes((0x60 | n,)) if n < 24 else bytes((0x78, n)) for n in range(0x100)]
_ARRAY_OF_3 = b"\x83"


def encode_command(command: Any) -> bytes:
    """cbor2.dumps(command), faster for an array of three strings of < 256 bytes each."""
    if type(command) is list and len(command) == 3:
        a, b, c = command
        if type(a) is str and type(b) is str and type(c) is str:
            try:
                ab, bb, cb = a.encode(), b.encode(), c.encode()
                heads = _TEXT_HEADS
                return b"".join(
                    (_ARRAY_OF_3, heads[len(ab)], ab, heads[len(bb)], bb, heads[len(cb)], cb)
                )
            except (UnicodeEncodeError, IndexError):
                pass  # a lone surrogate (cbor2 decides), or a string too long for the table
    return cbor2.dumps(command)


__all__ = ["encode_command"]
