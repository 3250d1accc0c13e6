"""Chunk checksums: ``"crc32:xxxxxxxx"`` (zlib's CRC-32, eight lower-case hex digits).

The algorithm's name is part of the text so that a stronger one can be added
later without confusing old checksums for new. zlib.crc32 runs in C at a few
GB/s and releases the GIL on large buffers, so it can run in a worker thread
beside trio's.

    checksum(b"hello")                      # one buffer
    crc = Crc32(); crc.update(a); crc.update(b); crc.hexdigest()   # streaming
    verify(data, expected, "chunk 7")       # raises ChecksumMismatch
"""

from __future__ import annotations

import re
import zlib

__all__ = ["PREFIX", "ChecksumMismatch", "Crc32", "checksum", "parse_checksum", "verify"]

PREFIX = "crc32:"
_FORMAT = re.compile(r"crc32:[0-9a-f]{8}")

BytesLike = bytes | bytearray | memoryview


class ChecksumMismatch(ValueError):
    """Data does not match the checksum it should have."""


def checksum(data: BytesLike) -> str:
    """The checksum of `data`, as ``"crc32:%08x"``."""
    return f"{PREFIX}{zlib.crc32(data):08x}"


def format_crc32(value: int) -> str:
    """``"crc32:%08x"`` of a CRC-32 value."""
    return f"{PREFIX}{value:08x}"


def parse_checksum(text: object) -> int:
    """The CRC-32 value of a checksum string; ValueError saying why if it is not one."""
    if type(text) is not str or not _FORMAT.fullmatch(text):
        raise ValueError(f"not a checksum: {text!r:.60} (expected 'crc32:' and 8 lower-case "
                         f"hex digits)")
    return int(text[len(PREFIX):], 16)


class Crc32:
    """The checksum of data that arrives in pieces."""

    __slots__ = ("length", "value")

    def __init__(self) -> None:
        self.value = 0
        self.length = 0

    def update(self, data: BytesLike) -> None:
        self.value = zlib.crc32(data, self.value)
        self.length += len(data)

    def hexdigest(self) -> str:
        return format_crc32(self.value)


def verify(data: BytesLike | Crc32, expected: str, what: str = "data") -> None:
    """Raise ChecksumMismatch naming `what` unless `data` (bytes, or a Crc32 fed with
    them) has the checksum `expected`; ValueError if `expected` is no checksum."""
    want = parse_checksum(expected)
    got = data.value if isinstance(data, Crc32) else zlib.crc32(data)
    if got != want:
        raise ChecksumMismatch(f"{what}: checksum is {format_crc32(got)}, expected {expected}")
