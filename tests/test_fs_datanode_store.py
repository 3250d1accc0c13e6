"""Checksums and the data node's chunk store: durability shapes, corruption, listing."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
import trio

from raft_trio.fs.checksum import (
    ChecksumMismatch,
    Crc32,
    checksum,
    parse_checksum,
    verify,
)
from raft_trio.fs.datanode.store import (
    HEADER_SIZE,
    ChunkCorruption,
    ChunkStore,
    StoreError,
)

# ---------------------------------------------------------------- checksums


def test_checksum_is_crc32_in_hex() -> None:
    assert checksum(b"hello") == "crc32:3610a686"
    assert checksum(b"") == "crc32:00000000"
    assert checksum(memoryview(b"xhellox")[1:6]) == "crc32:3610a686"


def test_incremental_checksum_matches_one_shot() -> None:
    data = os.urandom(100_000)
    crc = Crc32()
    for start in range(0, len(data), 7_777):
        crc.update(data[start:start + 7_777])
    assert crc.hexdigest() == checksum(data)
    assert crc.length == len(data)


def test_verify_raises_naming_what_failed() -> None:
    verify(b"hello", "crc32:3610a686")
    crc = Crc32()
    crc.update(b"hello")
    verify(crc, "crc32:3610a686")
    with pytest.raises(ChecksumMismatch, match=r"chunk 7: checksum is crc32:3610a686, "
                                               r"expected crc32:00000001"):
        verify(b"hello", "crc32:00000001", "chunk 7")


@pytest.mark.parametrize("bad", ["crc32:3610A686", "crc32:3610a68", "md5:3610a686", "",
                                 "crc32:3610a6866", 5, None, b"crc32:3610a686"])
def test_parse_checksum_refuses_what_is_not_one(bad: object) -> None:
    with pytest.raises(ValueError, match="not a checksum"):
        parse_checksum(bad)


# -------------------------------------------------------------------- store


async def open_store(path: Path, node_id: int | None = 1) -> ChunkStore:
    store = ChunkStore(path, node_id)
    await store.open()
    return store


async def store_chunk(store: ChunkStore, chunk_id: int, data: bytes, piece: int = 65536) -> None:
    writer = await store.begin_write(chunk_id, len(data), checksum(data))
    view = memoryview(data)
    for start in range(0, len(data), piece):
        await writer.write(view[start:start + piece])
    await writer.commit()


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def chunk_files(path: Path) -> list[str]:
    return [f for f in files_under(path) if f.startswith(("chunks", "corrupt"))]


async def test_a_chunk_is_stored_durably_under_its_name_and_read_back(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    data = os.urandom(300_001)
    await store_chunk(store, 0x1234, data)
    assert chunk_files(tmp_path) == ["chunks/34/0000000000001234.chunk"]
    on_disk = (tmp_path / "chunks/34/0000000000001234.chunk").read_bytes()
    assert len(on_disk) == HEADER_SIZE + len(data) and on_disk[HEADER_SIZE:] == data
    read = await store.read(0x1234)
    assert bytes(read.data) == data
    assert read.checksum == read.chunk_checksum == checksum(data)
    assert (store.list(), len(store), store.used) == ([0x1234], 1, len(data))
    store.close()


async def test_a_range_is_read_with_its_own_checksum(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    data = os.urandom(10_000)
    await store_chunk(store, 9, data)
    read = await store.read(9, 1_000, 2_345)
    assert bytes(read.data) == data[1_000:3_345]
    assert read.checksum == checksum(data[1_000:3_345])
    assert read.chunk_checksum == checksum(data) and read.chunk_length == 10_000
    tail = await store.read(9, 9_000, 5_000)
    assert bytes(tail.data) == data[9_000:]
    past = await store.read(9, 20_000)
    assert bytes(past.data) == b"" and past.checksum == checksum(b"")
    store.close()


async def test_empty_chunk(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store_chunk(store, 0, b"")
    read = await store.read(0)
    assert bytes(read.data) == b"" and read.checksum == "crc32:00000000"
    assert store.list() == [0] and store.used == 0
    store.close()


async def test_a_checksum_mismatch_refuses_the_write_and_leaves_nothing(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    data = os.urandom(50_000)
    writer = await store.begin_write(5, len(data), checksum(data + b"x"))
    await writer.write(memoryview(data))
    with pytest.raises(ChecksumMismatch, match="chunk 5"):
        await writer.commit()
    assert chunk_files(tmp_path) == []
    assert store.list() == [] and store.used == 0
    with pytest.raises(FileNotFoundError):
        await store.read(5)
    store.close()


async def test_a_short_or_long_write_is_refused(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    data = os.urandom(1000)
    writer = await store.begin_write(6, 1000, checksum(data))
    await writer.write(memoryview(data)[:999])
    with pytest.raises(ValueError, match="999 bytes arrived of the announced 1000"):
        await writer.commit()
    writer = await store.begin_write(6, 1000, checksum(data))
    await writer.write(memoryview(data))
    with pytest.raises(ValueError, match="more than the announced 1000"):
        await writer.write(memoryview(b"x"))
    await writer.discard()
    assert chunk_files(tmp_path) == [] and store.list() == []
    store.close()


async def test_torn_temp_files_are_swept_on_open(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    data = os.urandom(4096)
    await store_chunk(store, 0x2A, data)
    # A write cut short by a crash: a temp file, with or without its header.
    writer = await store.begin_write(0x2B, 4096, checksum(data))
    await writer.write(memoryview(data)[:100])
    store.close()
    (tmp_path / "chunks/2c/000000000000002c.0badf00d.tmp").write_bytes(b"")
    assert len([f for f in chunk_files(tmp_path) if f.endswith(".tmp")]) == 2
    reopened = await open_store(tmp_path)
    assert chunk_files(tmp_path) == ["chunks/2a/000000000000002a.chunk"]
    assert reopened.list() == [0x2A] and reopened.used == 4096
    assert bytes((await reopened.read(0x2A)).data) == data
    reopened.close()


async def test_a_corrupted_chunk_is_refused_on_read_and_moved_aside(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    data = os.urandom(100_000)
    await store_chunk(store, 77, data)
    await store_chunk(store, 78, data)
    path = store.path_of(77)
    with open(path, "r+b") as file:
        file.seek(HEADER_SIZE + 54_321)
        byte = file.read(1)
        file.seek(HEADER_SIZE + 54_321)
        file.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ChunkCorruption, match=r"chunk 77 .* is corrupt: its bytes have "
                                              r"checksum crc32:") as info:
        await store.read(77)
    assert info.value.chunk_id == 77
    assert store.list() == [78] and store.corrupt == {77} and store.used == 100_000
    assert chunk_files(tmp_path) == ["chunks/4e/000000000000004e.chunk",
                                     "corrupt/000000000000004d.chunk"]
    with pytest.raises(FileNotFoundError):
        await store.read(77)
    store.close()
    # A restart remembers what was found corrupt; a delete removes it for good.
    reopened = await open_store(tmp_path)
    assert reopened.list() == [78] and reopened.corrupt == {77}
    assert await reopened.delete(77)
    assert reopened.corrupt == set()
    assert chunk_files(tmp_path) == ["chunks/4e/000000000000004e.chunk"]
    reopened.close()


@pytest.mark.parametrize("damage", ["header", "truncated", "other_chunk", "too_short"])
async def test_damaged_files_are_refused(tmp_path: Path, damage: str) -> None:
    store = await open_store(tmp_path)
    data = os.urandom(5000)
    await store_chunk(store, 3, data)
    await store_chunk(store, 4, data)
    path = store.path_of(3)
    raw = bytearray(path.read_bytes())
    if damage == "header":
        raw[12] ^= 0x80  # inside the chunk id
        expected = "header is damaged"
    elif damage == "truncated":
        del raw[-10:]
        expected = "the header says 5000 bytes, the file holds 4990"
    elif damage == "other_chunk":
        raw = bytearray(store.path_of(4).read_bytes())
        expected = "the file holds chunk 4"
    else:
        raw = raw[:10]
        expected = "less than a header"
    path.write_bytes(raw)
    with pytest.raises(ChunkCorruption, match=expected):
        await store.read(3)
    assert store.corrupt == {3}
    store.close()


async def test_delete_and_listing(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    for chunk_id in (300, 5, 2**64 - 1, 256):
        await store_chunk(store, chunk_id, chunk_id.to_bytes(8, "big") * 10)
    assert store.list() == [5, 256, 300, 2**64 - 1]
    assert (len(store), store.used) == (4, 320)
    assert await store.delete(300)
    assert not await store.delete(300)
    assert not await store.delete(12345)
    assert store.list() == [5, 256, 2**64 - 1] and store.used == 240
    assert not store.path_of(300).exists()
    capacity, used = await store.space()
    stat = os.statvfs(tmp_path)
    assert used == 240
    # The chunks plus the free space (which other processes change as we look).
    assert abs(capacity - (240 + stat.f_bavail * stat.f_frsize)) < 64 << 20
    store.close()
    reopened = await open_store(tmp_path)
    assert reopened.list() == [5, 256, 2**64 - 1] and reopened.used == 240
    reopened.close()


async def test_a_chunk_written_again_replaces_the_old_copy(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store_chunk(store, 8, b"a" * 100)
    await store_chunk(store, 8, b"b" * 40)
    assert bytes((await store.read(8)).data) == b"b" * 40
    assert store.used == 40 and store.list() == [8]
    assert chunk_files(tmp_path) == ["chunks/08/0000000000000008.chunk"]
    store.close()


async def test_a_committed_chunk_is_discarded_when_its_put_fails_later(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    data = b"z" * 1000
    writer = await store.begin_write(11, len(data), checksum(data))
    await writer.write(memoryview(data))
    await writer.commit()
    assert store.list() == [11]
    await writer.discard()
    assert store.list() == [] and store.used == 0 and chunk_files(tmp_path) == []
    store.close()


async def test_one_directory_one_store_one_node(tmp_path: Path) -> None:
    store = await open_store(tmp_path, node_id=1)
    with pytest.raises(StoreError, match=r"in use by another process \(pid"):
        await open_store(tmp_path, node_id=1)
    store.close()
    with pytest.raises(StoreError, match="belongs to data node 1, not 2"):
        await open_store(tmp_path, node_id=2)
    again = await open_store(tmp_path, node_id=1)
    again.close()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError, match="is not a directory"):
        await open_store(tmp_path / "file")


async def test_file_io_runs_off_trio_s_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    store = await open_store(tmp_path)
    trio_thread = trio.lowlevel.current_trio_token()
    seen: list[bool] = []
    real_write, real_fsync, real_pread = os.write, os.fsync, os.pread

    def on_trio_thread() -> bool:
        try:
            return trio.lowlevel.current_trio_token() is trio_thread
        except RuntimeError:
            return False

    def write(fd: int, data: bytes | memoryview) -> int:
        seen.append(on_trio_thread())
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        seen.append(on_trio_thread())
        real_fsync(fd)

    def pread(fd: int, size: int, offset: int) -> bytes:
        seen.append(on_trio_thread())
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "pread", pread)
    await store_chunk(store, 1, os.urandom(200_000))
    await store.read(1)
    assert len(seen) >= 6 and not any(seen)
    store.close()


def test_the_header_checksum_covers_the_header() -> None:
    from raft_trio.fs.datanode.store import encode_header

    header = encode_header(1, 2, 3)
    assert len(header) == HEADER_SIZE
    assert zlib.crc32(header[:-4]).to_bytes(4, "big") == header[-4:]
