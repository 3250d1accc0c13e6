from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from raft_trio.transport.framing import (
    DEFAULT_MAX_FRAME,
    FrameError,
    FrameReader,
    frame,
    send_frames,
)


class ChunkStream(trio.abc.ReceiveStream):
    """Delivers exactly the given chunks, one per receive_some, then EOF."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = [bytes(c) for c in chunks if c]
        self.calls = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        assert max_bytes is not None and max_bytes >= 65536
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if len(chunk) > max_bytes:
            self.chunks.insert(0, chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    async def aclose(self) -> None:
        pass


class RecordingSendStream(trio.abc.SendStream):
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def read_all(reader: FrameReader) -> list[bytes]:
    return [payload async for payload in reader]


def test_frame_layout() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert struct.unpack(">I", frame(b"x" * 70000)[:4]) == (70000,)


class HugeLength(bytes):
    def __len__(self) -> int:
        return 2**32


def test_frame_rejects_payload_beyond_u32() -> None:
    with pytest.raises(FrameError):
        frame(HugeLength())


async def test_split_byte_by_byte() -> None:
    payloads = [b"hello", b"", b"x" * 300, bytes(range(256))]
    wire = b"".join(map(frame, payloads))
    stream = ChunkStream(split_every(wire, 1))
    assert await read_all(FrameReader(stream)) == payloads
    # One receive per byte plus the EOF: nothing was read twice or skipped.
    assert stream.calls == len(wire) + 1


async def test_many_frames_in_one_chunk() -> None:
    payloads = [i.to_bytes(4, "big") * (i % 7) for i in range(3000)]
    wire = b"".join(map(frame, payloads))
    assert len(wire) <= 65536  # so that it is a single chunk
    stream = ChunkStream([wire])
    assert await read_all(FrameReader(stream)) == payloads
    assert stream.calls == 2  # the chunk, then EOF


async def test_frame_spanning_many_chunks() -> None:
    payload = bytes(range(256)) * 40_000  # ~10 MB
    stream = ChunkStream(split_every(frame(payload) + frame(b"tail"), 65536))
    reader = FrameReader(stream)
    assert await reader.read_frame() == payload
    assert await reader.read_frame() == b"tail"
    assert await reader.read_frame() is None


async def test_large_frame_asks_for_bigger_reads() -> None:
    payload = b"\x01" * (8 * 1024 * 1024)
    stream = ChunkStream([frame(payload)])  # hands out up to max_bytes per call
    assert await read_all(FrameReader(stream)) == [payload]
    assert stream.calls < 20


@given(
    st.lists(st.binary(max_size=200), max_size=20),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
)
async def test_arbitrary_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(map(frame, payloads))
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in itertools.pairwise(points)]
    assert await read_all(FrameReader(ChunkStream(chunks))) == payloads


async def test_clean_eof_returns_none() -> None:
    reader = FrameReader(ChunkStream([]))
    assert await reader.read_frame() is None
    assert await reader.read_frame() is None


async def test_clean_eof_after_frames() -> None:
    reader = FrameReader(ChunkStream([frame(b"a") + frame(b"b")]))
    assert await reader.read_frame() == b"a"
    assert await reader.read_frame() == b"b"
    assert await reader.read_frame() is None


async def test_empty_payload_is_not_eof() -> None:
    reader = FrameReader(ChunkStream([frame(b"")]))
    assert await reader.read_frame() == b""
    assert await reader.read_frame() is None


@pytest.mark.parametrize(
    "wire",
    [
        b"\x00",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x05abc",
        frame(b"whole") + b"\x00\x00\x00\x09",
        frame(b"whole") + b"\x00\x00",
    ],
)
async def test_eof_mid_frame(wire: bytes) -> None:
    reader = FrameReader(ChunkStream(split_every(wire, 2)))
    with pytest.raises(FrameError, match="mid-frame"):
        await read_all(reader)


async def test_oversize_frame_rejected_from_its_header() -> None:
    # Only the header arrives: the reader must not wait for 11 bytes of body.
    stream = ChunkStream([struct.pack(">I", 11)])
    with pytest.raises(FrameError, match="exceeds"):
        await FrameReader(stream, max_frame=10).read_frame()
    assert stream.calls == 1


async def test_frame_at_the_limit_is_accepted() -> None:
    reader = FrameReader(ChunkStream([frame(b"x" * 10)]), max_frame=10)
    assert await reader.read_frame() == b"x" * 10


async def test_default_limit() -> None:
    assert DEFAULT_MAX_FRAME == 64 * 1024 * 1024
    stream = ChunkStream([struct.pack(">I", DEFAULT_MAX_FRAME + 1)])
    with pytest.raises(FrameError):
        await FrameReader(stream).read_frame()


async def test_send_frames_uses_one_send_all() -> None:
    stream = RecordingSendStream()
    payloads = [b"a", b"", b"ccc"]
    await send_frames(stream, payloads)
    assert stream.sent == [b"".join(map(frame, payloads))]


async def test_send_no_frames_sends_nothing() -> None:
    stream = RecordingSendStream()
    await send_frames(stream, [])
    assert stream.sent == []


async def test_over_memory_streams() -> None:
    send, receive = trio.testing.memory_stream_pair()
    payloads = [bytes([i]) * (i * 1000) for i in range(50)]

    async def sender() -> None:
        for i in range(0, len(payloads), 7):
            await send_frames(send, payloads[i : i + 7])
        await send.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        assert await read_all(FrameReader(receive)) == payloads


async def test_over_lockstep_streams() -> None:
    # Lockstep streams hand over at most what one send_all carried, so every
    # batch arrives through a separate rendezvous.
    send, receive = trio.testing.lockstep_stream_one_way_pair()
    payloads = [b"one", b"two" * 50_000, b"", b"four"]

    async def sender() -> None:
        async with send:
            await send_frames(send, payloads[:2])
            await send_frames(send, payloads[2:])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        assert await read_all(FrameReader(receive)) == payloads


async def test_cancelled_read_loses_nothing() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = FrameReader(receive)
    wire = frame(b"payload") + frame(b"next")
    await send.send_all(wire[:6])
    with trio.move_on_after(0.01) as scope:
        await reader.read_frame()
    assert scope.cancelled_caught
    await send.send_all(wire[6:])
    await send.aclose()
    assert await read_all(reader) == [b"payload", b"next"]


async def test_buffered_frames_still_checkpoint() -> None:
    reader = FrameReader(ChunkStream([frame(b"a") * 3]))
    assert await reader.read_frame() == b"a"
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await reader.read_frame()
    # The cancelled call consumed nothing.
    assert await read_all(reader) == [b"a", b"a"]
