from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_trio.core.messages import Entry, EntryKind, HardState
from raft_trio.encoding import unpack_entries
from raft_trio.storage import WAL, WALCorruption, WALState

SEG1 = "wal-0000000000000001.log"


def entries(first: int, last: int, term: int = 1, tag: bytes = b"") -> list[Entry]:
    return [
        Entry(i, term, EntryKind.COMMAND, b"cmd-%d-%d" % (i, term) + tag)
        for i in range(first, last + 1)
    ]


def frame(payload: bytes) -> bytes:
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


def reopen(directory: Path, segment_bytes: int = 64 * 1024 * 1024) -> WALState:
    wal, state = WAL.open(directory, segment_bytes)
    wal.close()
    return state


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def write_records(directory: Path, *appends: tuple[HardState | None, list[Entry]]) -> list[int]:
    """Append each item as its own write; return the offset where each one starts."""
    wal, _ = WAL.open(directory)
    offsets = []
    for hard_state, batch in appends:
        offsets.append(wal.bytes_on_disk)
        wal.append(hard_state, batch)
    wal.sync()
    wal.close()
    return offsets


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_fresh_directory_is_created_and_empty(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    wal, state = WAL.open(directory)
    assert state == WALState(HardState(0, None, 0), [])
    assert wal.bytes_on_disk == 0
    assert [p.name for p in segments(directory)] == [SEG1]
    wal.close()


def test_reopen_sees_entries_and_hard_state(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(HardState(1, 2, 0), entries(1, 3))
    wal.append(None, [Entry(4, 1, EntryKind.NOOP, b"")])
    wal.append(HardState(2, None, 3), [])
    wal.sync()
    size = wal.bytes_on_disk
    wal.close()
    assert size == (tmp_path / SEG1).stat().st_size

    state = reopen(tmp_path)
    assert state.hard_state == HardState(2, None, 3)
    assert state.entries == [*entries(1, 3), Entry(4, 1, EntryKind.NOOP, b"")]
    assert all(type(e) is Entry for e in state.entries)


def test_encode_is_pure_and_entries_precede_hard_state(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    assert wal.encode(None, []) == b""
    data = wal.encode(HardState(3, 1, 2), entries(1, 2))
    assert wal.bytes_on_disk == 0
    length = struct.unpack(">I", data[:4])[0]
    first = cbor2.loads(data[8 : 8 + length])
    second = cbor2.loads(data[16 + length :])
    assert first[0] == 1 and [e.index for e in unpack_entries(first[1])] == [1, 2]
    assert second == [2, 3, 1, 2]
    wal.write(data)
    wal.close()
    assert reopen(tmp_path) == WALState(HardState(3, 1, 2), entries(1, 2))


def test_encode_rejects_non_contiguous_batches(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    with pytest.raises(ValueError):
        wal.encode(None, [entries(1, 1)[0], entries(3, 3)[0]])
    with pytest.raises(ValueError):
        wal.encode(None, entries(0, 1))
    wal.close()


def test_overwrite_truncates_conflicting_suffix(tmp_path: Path) -> None:
    write_records(tmp_path, (None, entries(1, 10, term=1)), (None, entries(6, 8, term=2)))
    state = reopen(tmp_path)
    assert state.entries == entries(1, 5, term=1) + entries(6, 8, term=2)


def test_overwrite_from_index_one_and_then_extend(tmp_path: Path) -> None:
    write_records(
        tmp_path,
        (None, entries(1, 4, term=1)),
        (None, entries(1, 1, term=3)),
        (None, entries(2, 3, term=3)),
    )
    assert reopen(tmp_path).entries == entries(1, 3, term=3)


def test_last_hard_state_wins(tmp_path: Path) -> None:
    write_records(
        tmp_path,
        (HardState(1, 1, 0), []),
        (HardState(2, None, 0), entries(1, 2)),
        (HardState(2, 3, 2), []),
    )
    assert reopen(tmp_path).hard_state == HardState(2, 3, 2)


def _assert_torn_tail_recovered(directory: Path, good_size: int, expected: WALState) -> None:
    path = directory / SEG1
    state = reopen(directory)
    assert state == expected
    assert path.stat().st_size == good_size
    # The truncated log must accept new records and replay them.
    wal, _ = WAL.open(directory)
    wal.append(HardState(9, 9, 1), [Entry(len(expected.entries) + 1, 9, 0, b"after")])
    wal.close()
    again = reopen(directory)
    assert again.hard_state == HardState(9, 9, 1)
    assert again.entries == [*expected.entries, Entry(len(expected.entries) + 1, 9, 0, b"after")]


@pytest.mark.parametrize("keep", [1, 4, 7, 8, 9, 20, -1])
def test_torn_last_record_is_truncated(tmp_path: Path, keep: int) -> None:
    offsets = write_records(
        tmp_path, (HardState(1, 1, 0), entries(1, 3)), (None, entries(4, 6, tag=b"x" * 40))
    )
    path = tmp_path / SEG1
    data = path.read_bytes()
    cut = offsets[1] + keep if keep >= 0 else len(data) - 1
    assert offsets[1] < cut < len(data)
    path.write_bytes(data[:cut])
    _assert_torn_tail_recovered(tmp_path, offsets[1], WALState(HardState(1, 1, 0), entries(1, 3)))


def test_torn_hard_state_after_entries_keeps_entries(tmp_path: Path) -> None:
    write_records(tmp_path, (HardState(1, 1, 0), []), (HardState(2, 2, 3), entries(1, 3)))
    path = tmp_path / SEG1
    data = path.read_bytes()
    path.write_bytes(data[:-2])
    hard_state_record = len(frame(cbor2.dumps([2, 2, 2, 3])))
    _assert_torn_tail_recovered(
        tmp_path, len(data) - hard_state_record, WALState(HardState(1, 1, 0), entries(1, 3))
    )


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00",
        b"\x00" * 8,
        b"\x00" * 5000,
        b"\x7f\xff\xff\xff",  # short header
        b"\x7f\xff\xff\xff\x12\x34\x56\x78",  # garbage length, nothing after
        b"\xff\xff\xff\xff\x12\x34\x56\x78\x01\x02",  # beyond the sanity bound
        b"\x00\x00\x01\x00\x12\x34\x56\x78" + b"\x82\x01\x81",  # plausible length, short payload
    ],
)
def test_garbage_tail_is_truncated(tmp_path: Path, tail: bytes) -> None:
    write_records(tmp_path, (HardState(1, 1, 1), entries(1, 2)))
    path = tmp_path / SEG1
    good_size = path.stat().st_size
    with path.open("ab") as f:
        f.write(tail)
    _assert_torn_tail_recovered(tmp_path, good_size, WALState(HardState(1, 1, 1), entries(1, 2)))


def test_bad_crc_on_last_record_at_eof_is_torn(tmp_path: Path) -> None:
    offsets = write_records(tmp_path, (None, entries(1, 2)), (None, entries(3, 5)))
    path = tmp_path / SEG1
    flip_byte(path, path.stat().st_size - 3)
    _assert_torn_tail_recovered(
        tmp_path, offsets[1], WALState(HardState(0, None, 0), entries(1, 2))
    )


def test_bad_crc_on_last_record_followed_by_zeros_is_torn(tmp_path: Path) -> None:
    offsets = write_records(tmp_path, (None, entries(1, 2)), (None, entries(3, 5)))
    path = tmp_path / SEG1
    flip_byte(path, path.stat().st_size - 3)
    with path.open("ab") as f:
        f.write(b"\x00" * 4096)
    _assert_torn_tail_recovered(
        tmp_path, offsets[1], WALState(HardState(0, None, 0), entries(1, 2))
    )


@pytest.mark.parametrize("where", ["header_crc", "payload", "length"])
def test_damaged_middle_record_is_corruption(tmp_path: Path, where: str) -> None:
    offsets = write_records(
        tmp_path, (None, entries(1, 2)), (None, entries(3, 4)), (HardState(1, 1, 4), [])
    )
    path = tmp_path / SEG1
    before = path.read_bytes()
    position = {"header_crc": 5, "payload": 12, "length": 3}[where]
    flip_byte(path, offsets[1] + position)
    with pytest.raises(WALCorruption) as info:
        WAL.open(tmp_path)
    message = str(info.value)
    assert SEG1 in message
    assert f"offset {offsets[1]}" in message
    assert info.value.offset == offsets[1]
    # Refusing must not have "repaired" anything.
    flip_byte(path, offsets[1] + position)
    assert path.read_bytes() == before


def test_damaged_length_running_past_eof_over_intact_record_is_corruption(tmp_path: Path) -> None:
    # A bit flip that makes a middle record's length point past EOF looks like
    # a torn write at first sight; truncating would drop the records after it.
    offsets = write_records(
        tmp_path, (None, entries(1, 2)), (None, entries(3, 4)), (None, entries(5, 6))
    )
    path = tmp_path / SEG1
    data = bytearray(path.read_bytes())
    data[offsets[1] : offsets[1] + 4] = struct.pack(">I", len(data))
    path.write_bytes(bytes(data))
    with pytest.raises(WALCorruption, match=f"{SEG1} at offset {offsets[1]}"):
        WAL.open(tmp_path)


def test_length_beyond_bound_mid_file_is_corruption(tmp_path: Path) -> None:
    offsets = write_records(tmp_path, (None, entries(1, 2)), (None, entries(3, 4)))
    path = tmp_path / SEG1
    data = bytearray(path.read_bytes())
    data[offsets[1] : offsets[1] + 4] = struct.pack(">I", 300 * 1024 * 1024)
    path.write_bytes(bytes(data) + b"\x01" * 64)
    with pytest.raises(WALCorruption, match=f"offset {offsets[1]}"):
        WAL.open(tmp_path)


def test_crc_valid_but_undecodable_tail_is_corruption(tmp_path: Path) -> None:
    write_records(tmp_path, (None, entries(1, 2)))
    path = tmp_path / SEG1
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(frame(b"\xff\xff"))
    with pytest.raises(WALCorruption, match=f"offset {size}"):
        WAL.open(tmp_path)


def test_unknown_record_kind_is_corruption(tmp_path: Path) -> None:
    write_records(tmp_path, (None, entries(1, 2)))
    path = tmp_path / SEG1
    with path.open("ab") as f:
        f.write(frame(cbor2.dumps([7, "future"])))
    with pytest.raises(WALCorruption, match="unknown record"):
        WAL.open(tmp_path)


def test_gap_is_corruption(tmp_path: Path) -> None:
    offsets = write_records(tmp_path, (None, entries(1, 3)), (None, entries(5, 6)))
    with pytest.raises(WALCorruption, match=f"{SEG1} at offset {offsets[1]}: gap"):
        WAL.open(tmp_path)


def test_first_record_must_start_at_index_one(tmp_path: Path) -> None:
    write_records(tmp_path, (None, entries(2, 3)))
    with pytest.raises(WALCorruption, match="offset 0: gap"):
        WAL.open(tmp_path)


def test_rotation_across_segments(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=200)
    expected: list[Entry] = []
    for i in range(1, 41):
        batch = entries(i, i, term=1 + i // 10, tag=b"y" * 30)
        expected += batch
        wal.append(HardState(1 + i // 10, 1, i - 1), batch)
        wal.sync()
    assert wal.bytes_on_disk == sum(p.stat().st_size for p in segments(tmp_path))
    wal.close()
    files = segments(tmp_path)
    assert len(files) > 5
    assert [p.name for p in files] == [f"wal-{n:016d}.log" for n in range(1, len(files) + 1)]
    # Rotation happens only at record boundaries, and never below the limit.
    for p in files[:-1]:
        assert p.stat().st_size >= 200
    state = reopen(tmp_path, segment_bytes=200)
    assert state.entries == expected
    assert state.hard_state == HardState(5, 1, 39)

    # Reopening continues the sequence and replays across old and new segments.
    wal, _ = WAL.open(tmp_path, segment_bytes=200)
    wal.append(None, entries(30, 45, term=9))
    wal.close()
    assert reopen(tmp_path).entries == expected[:29] + entries(30, 45, term=9)


def test_torn_tail_in_last_segment_after_rotation(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=100)
    for i in range(1, 11):
        wal.append(None, entries(i, i, tag=b"z" * 50))
    wal.close()
    last = segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes()[:-5])
    assert reopen(tmp_path).entries == [
        e for i in range(1, 10) for e in entries(i, i, tag=b"z" * 50)
    ]


@pytest.mark.parametrize("damage", ["flip", "chop", "zeros"])
def test_damage_in_non_last_segment_is_refused(tmp_path: Path, damage: str) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=100)
    for i in range(1, 11):
        wal.append(None, entries(i, i, tag=b"z" * 50))
    wal.close()
    files = segments(tmp_path)
    assert len(files) >= 3
    victim = files[1]
    data = victim.read_bytes()
    if damage == "flip":
        flip_byte(victim, len(data) - 3)
    elif damage == "chop":
        victim.write_bytes(data[:-3])
    else:
        victim.write_bytes(data + b"\x00" * 16)
    with pytest.raises(WALCorruption, match=victim.name):
        WAL.open(tmp_path)


def test_missing_segment_is_refused(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=100)
    for i in range(1, 11):
        wal.append(None, entries(i, i, tag=b"z" * 50))
    wal.close()
    files = segments(tmp_path)
    files[1].unlink()
    with pytest.raises(WALCorruption, match="segment sequence gap"):
        WAL.open(tmp_path)


def test_closed_wal_refuses_io(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(1, 1))
    wal.close()
    wal.close()
    with pytest.raises(ValueError):
        wal.append(None, entries(2, 2))
    with pytest.raises(ValueError):
        wal.sync()


# One append: (hard state or None, first index as an offset back from last+1, count, term)
_appends = st.lists(
    st.tuples(
        st.one_of(
            st.none(),
            st.builds(
                HardState,
                st.integers(0, 50),
                st.one_of(st.none(), st.integers(1, 5)),
                st.integers(0, 100),
            ),
        ),
        st.integers(0, 6),
        st.integers(0, 5),
        st.integers(1, 50),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(appends=_appends, segment_bytes=st.sampled_from([64, 300, 1 << 20]))
def test_replay_matches_model(
    appends: list[tuple[HardState | None, int, int, int, bool]], segment_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        model_log: list[Entry] = []
        model_hs = HardState(0, None, 0)
        wal, _ = WAL.open(directory, segment_bytes)
        try:
            for hard_state, back, count, term, reopen_after in appends:
                first = max(1, len(model_log) + 1 - back)
                batch = [
                    Entry(i, term, i % 2, b"%d.%d" % (term, i) * (i % 3))
                    for i in range(first, first + count)
                ]
                wal.append(hard_state, batch)
                if batch:
                    del model_log[first - 1 :]
                    model_log.extend(batch)
                if hard_state is not None:
                    model_hs = hard_state
                if reopen_after:
                    wal.close()
                    wal, state = WAL.open(directory, segment_bytes)
                    assert state == WALState(model_hs, model_log)
        finally:
            wal.close()
        assert reopen(directory, segment_bytes) == WALState(model_hs, model_log)


def test_rotation_syncs_old_segment_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raft_trio.storage import wal as wal_module

    events: list[str] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        events.append(f"fdatasync:{Path(os.readlink(f'/proc/self/fd/{fd}')).name}")
        real_fdatasync(fd)

    def fsync_dir(path: Path) -> None:
        events.append("fsync-dir")

    wal, _ = WAL.open(tmp_path, segment_bytes=10)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(wal_module, "_fsync_dir", fsync_dir)
    wal.append(None, entries(1, 1))
    assert events == []
    wal.append(None, entries(2, 2))
    assert events == [f"fdatasync:{SEG1}", "fsync-dir"]
    wal.sync()
    assert events[-1] == "fdatasync:wal-0000000000000002.log"
    events.clear()
    wal.sync()  # nothing written since: no syscall needed
    assert events == []
    wal.close()


def test_every_directory_level_created_is_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raft_trio.storage.wal as wal_module

    synced: list[Path] = []
    real = wal_module._fsync_dir
    monkeypatch.setattr(wal_module, "_fsync_dir", lambda p: (synced.append(Path(p)), real(p)))
    WAL.open(tmp_path / "a" / "b" / "wal")[0].close()
    for parent in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"):
        assert parent in synced
