from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from raft_trio.core.messages import Entry, EntryKind, HardState
from raft_trio.encoding import PackCache, pack_entries, unpack_entries
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


def test_entries_already_packed_are_written_as_they_are(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    pieces = [pack_entries(entries(1, 3)), pack_entries(entries(4, 4))]
    data = wal.encode(HardState(1, None, 9), entries(1, 9), packed=pieces)
    # The pieces as they are, then the rest packed, then the hard state.
    assert data == wal.encode(None, entries(1, 3)) + wal.encode(None, entries(4, 4)) + wal.encode(
        HardState(1, None, 9), entries(5, 9))
    assert wal.encode(None, entries(1, 4), packed=pieces) == wal.encode(
        None, entries(1, 3)) + wal.encode(None, entries(4, 4))
    wal.write(data)
    wal.close()
    assert reopen(tmp_path) == WALState(HardState(1, None, 9), entries(1, 9))


@pytest.mark.parametrize(("pieces", "message"), [
    ([entries(2, 9)], "does not continue 9 entries from index 1 at index 1"),
    ([entries(1, 3), entries(5, 9)], "from index 5 does not continue"),
    ([entries(1, 9), entries(10, 10)], "from index 10 does not continue"),
    ([entries(1, 3, term=2)], "ending at index 3 has term 2, the entry term 1"),
])
def test_packed_batches_must_continue_the_entries(
    tmp_path: Path, pieces: list[list[Entry]], message: str
) -> None:
    wal, _ = WAL.open(tmp_path)
    with pytest.raises(ValueError, match=message):
        wal.encode(None, entries(1, 9), packed=[pack_entries(p) for p in pieces])
    wal.close()


def _append(log: list[Entry], sent: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """A follower's log after appending `sent` (which follows a matching entry), and
    the entries the core hands to the disk writer: from the first new one on."""
    for k, entry in enumerate(sent):
        if entry.index <= len(log):
            if log[entry.index - 1].term == entry.term:
                continue
            log = log[: entry.index - 1]  # a conflict: the tail goes
        return log + sent[k:], sent[k:]
    return log, []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_follower_writes_what_it_appended_through_the_pack_cache(data: st.DataObject) -> None:
    """Leaders of rising terms send runs of their logs; the follower remembers every
    batch as it came (accepted or not), appends what matches, and writes through
    PackCache.pieces what a disk writer would, merging the jobs queued together:
    replaying the WAL always gives the follower's log."""
    cache = PackCache(capacity=data.draw(st.integers(1, 8)))
    follower: list[Entry] = []
    leader: list[Entry] = []
    with tempfile.TemporaryDirectory() as tmp:
        wal, _ = WAL.open(Path(tmp))
        for term in range(1, data.draw(st.integers(2, 7))):
            # A new leader holds a prefix of the old one's log, then its own entries.
            leader = leader[: data.draw(st.integers(0, len(leader)))]
            leader += [Entry(i, term, EntryKind.COMMAND, b"%d@%d" % (i, term))
                       for i in range(len(leader) + 1, len(leader) + data.draw(st.integers(2, 9)))]
            merged: list[Entry] = []
            for _ in range(data.draw(st.integers(1, 5))):
                start = data.draw(st.integers(1, len(leader)))
                sent = leader[start - 1 : data.draw(st.integers(start, len(leader)))]
                cache.remember(sent, pack_entries(sent))
                prev_matches = start == 1 or (
                    start - 1 <= len(follower) and follower[start - 2] == leader[start - 2])
                if not prev_matches:
                    continue  # rejected
                follower, job = _append(follower, sent)
                if job:
                    cut = job[0].index - merged[0].index if merged else 0
                    del merged[max(cut, 0):]
                    merged.extend(job)
                if merged and data.draw(st.booleans()):
                    wal.append(None, merged, packed=cache.pieces(merged))
                    merged = []
            if merged:
                wal.append(None, merged, packed=cache.pieces(merged))
        wal.sync()
        wal.close()
        assert reopen(Path(tmp)).entries == follower


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

    def fsync_dir(path: Path) -> None:
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(wal_module, "_fsync_dir", fsync_dir)
    WAL.open(tmp_path / "a" / "b" / "wal")[0].close()
    for parent in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"):
        assert parent in synced


# --- snapshot markers and compaction -------------------------------------------


def one_segment_per_append(
    directory: Path, *appends: tuple[HardState | None, list[Entry], tuple[int, int] | None]
) -> WAL:
    """Open with a 1-byte segment limit, so every append after the first starts a segment."""
    wal, _ = WAL.open(directory, segment_bytes=1)
    for hard_state, batch, marker in appends:
        wal.append(hard_state, batch, marker)
    wal.sync()
    return wal


def test_encode_puts_marker_first_then_entries_then_hard_state(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    data = wal.encode(HardState(3, 1, 2), entries(6, 7), snapshot_marker=(5, 2))
    records = []
    off = 0
    while off < len(data):
        length = struct.unpack_from(">I", data, off)[0]
        records.append(cbor2.loads(data[off + 8 : off + 8 + length]))
        off += 8 + length
    assert [r[0] for r in records] == [3, 1, 2]
    assert records[0] == [3, 5, 2]
    assert wal.encode(None, [], snapshot_marker=(5, 2)) == frame(cbor2.dumps([3, 5, 2]))
    for bad in [(0, 1), (1, -1)]:
        with pytest.raises(ValueError):
            wal.encode(None, [], snapshot_marker=bad)
    wal.close()


def test_marker_with_matching_entry_keeps_the_tail(tmp_path: Path) -> None:
    log = entries(1, 4, term=1) + entries(5, 10, term=2)
    write_records(tmp_path, (HardState(2, 1, 8), log))
    wal, _ = WAL.open(tmp_path)
    wal.append(None, [], snapshot_marker=(6, 2))
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == log[6:]
    assert state.snapshot_marker == (6, 2)
    assert state.hard_state == HardState(2, 1, 8)

    # The log continues after the kept tail, and a later marker in the kept
    # range compacts further.
    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(11, 12, term=2))
    wal.append(None, [], snapshot_marker=(11, 2))
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == entries(12, 12, term=2)
    assert state.snapshot_marker == (11, 2)


def test_marker_at_last_index_leaves_an_empty_log_positioned_after_it(tmp_path: Path) -> None:
    write_records(tmp_path, (None, entries(1, 5, term=1)))
    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(6, 7, term=1), snapshot_marker=(5, 1))
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == entries(6, 7, term=1)
    assert state.snapshot_marker == (5, 1)


@pytest.mark.parametrize("marker", [(6, 3), (11, 2), (500, 9)], ids=["term", "next", "far"])
def test_marker_with_mismatching_term_or_beyond_the_log_empties_it(
    tmp_path: Path, marker: tuple[int, int]
) -> None:
    write_records(tmp_path, (HardState(2, None, 0), entries(1, 10, term=2)))
    wal, _ = WAL.open(tmp_path)
    wal.append(None, [], snapshot_marker=marker)
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == []
    assert state.snapshot_marker == marker
    assert state.hard_state == HardState(2, None, 0)

    # Positioned just after the marker: index + 1 continues, anything later is a gap.
    index = marker[0]
    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(index + 1, index + 2, term=4))
    wal.close()
    assert reopen(tmp_path).entries == entries(index + 1, index + 2, term=4)
    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(index + 5, index + 5, term=4))
    wal.close()
    with pytest.raises(WALCorruption, match="gap"):
        WAL.open(tmp_path)


def test_marker_repeated_at_the_offset_compares_with_its_term(tmp_path: Path) -> None:
    write_records(tmp_path, (None, entries(1, 5, term=1)))
    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(6, 8, term=2), snapshot_marker=(5, 1))
    wal.append(None, [], snapshot_marker=(5, 1))  # same snapshot again: log unchanged
    wal.close()
    assert reopen(tmp_path).entries == entries(6, 8, term=2)
    wal, _ = WAL.open(tmp_path)
    wal.append(None, [], snapshot_marker=(5, 7))  # conflicting: everything goes
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == []
    assert state.snapshot_marker == (5, 7)


def test_entries_after_a_marker_replay_across_reopens(tmp_path: Path) -> None:
    write_records(tmp_path, (HardState(1, 1, 3), entries(1, 3, term=1)))
    # Installing a snapshot that the log does not hold, with entries after it.
    wal, _ = WAL.open(tmp_path)
    wal.append(HardState(3, 2, 20), entries(21, 22, term=3), snapshot_marker=(20, 3))
    wal.close()
    state = reopen(tmp_path)
    assert state == WALState(HardState(3, 2, 20), entries(21, 22, term=3), (20, 3))

    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(23, 25, term=3))
    wal.append(None, entries(24, 24, term=4))  # conflicting suffix after the marker
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == entries(21, 23, term=3) + entries(24, 24, term=4)
    assert state.snapshot_marker == (20, 3)

    # A batch starting at or below the marker rewrites from there.
    wal, _ = WAL.open(tmp_path)
    wal.append(None, entries(19, 21, term=5))
    wal.close()
    assert reopen(tmp_path).entries == entries(19, 21, term=5)


def test_rotation_repeats_the_hard_state_so_compaction_keeps_it(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=150)
    wal.append(HardState(7, 3, 0), entries(1, 1))
    for i in range(2, 31):
        wal.append(None, entries(i, i, tag=b"p" * 40))
    wal.append(None, [], snapshot_marker=(25, 1))
    files = segments(tmp_path)
    assert len(files) > 5
    first_data = files[0].read_bytes()
    assert cbor2.dumps([2, 7, 3, 0]) in first_data
    freed = wal.compact(25)
    wal.close()
    assert freed > 0
    remaining = segments(tmp_path)
    assert files[0] not in remaining
    state = reopen(tmp_path, segment_bytes=150)
    assert state.hard_state == HardState(7, 3, 0)
    assert state.snapshot_marker == (25, 1)
    assert state.entries == [e for i in range(26, 31) for e in entries(i, i, tag=b"p" * 40)]


def test_rotation_repeats_the_last_hard_state_of_a_multi_record_write(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=1)
    wal.write(
        wal.encode(HardState(1, 1, 0), entries(1, 1))
        + wal.encode(HardState(2, 2, 1), entries(2, 2))
        + wal.encode(None, entries(3, 3))
    )
    wal.append(None, entries(4, 4))
    assert wal.compact(3) > 0
    wal.close()
    assert SEG1 not in [p.name for p in segments(tmp_path)]
    state = reopen(tmp_path)
    assert state.hard_state == HardState(2, 2, 1)
    assert state.entries == entries(4, 4)


def test_replayed_hard_state_is_repeated_after_reopen(tmp_path: Path) -> None:
    write_records(tmp_path, (HardState(4, 2, 1), entries(1, 2)))
    # Reopened with a tiny limit: the next append rotates, and the new segment
    # must begin with the hard state replayed from the old one.
    wal, _ = WAL.open(tmp_path, segment_bytes=1)
    wal.append(None, entries(3, 3))
    wal.append(None, entries(4, 4))
    assert wal.compact(2) > 0
    wal.close()
    assert SEG1 not in [p.name for p in segments(tmp_path)]
    state = reopen(tmp_path)
    assert state.hard_state == HardState(4, 2, 1)
    assert state.entries == entries(3, 4)


def test_compact_deletes_only_a_prefix_of_covered_older_segments(tmp_path: Path) -> None:
    wal = one_segment_per_append(
        tmp_path,
        (HardState(1, 1, 0), entries(1, 10), None),  # seg 1, max 10
        (None, entries(11, 20), None),  # seg 2, max 20
        (None, entries(5, 6, term=2), None),  # seg 3, max 6: covered, but not a prefix
        (None, entries(7, 8, term=2), None),  # seg 4, max 8
    )
    files = segments(tmp_path)
    assert len(files) == 4
    sizes = [p.stat().st_size for p in files]
    assert wal.bytes_on_disk == sum(sizes)

    assert wal.compact(9) == 0  # seg 1 holds index 10
    assert segments(tmp_path) == files
    freed = wal.compact(10)
    assert freed == sizes[0]
    assert segments(tmp_path) == files[1:]
    assert wal.bytes_on_disk == sum(sizes[1:])
    assert wal.compact(19) == 0  # seg 2 blocks segs 3 and 4 behind it
    assert segments(tmp_path) == files[1:]
    freed = wal.compact(20)
    assert freed == sizes[1] + sizes[2]  # seg 3 goes too; seg 4 is current
    assert segments(tmp_path) == files[3:]
    assert wal.bytes_on_disk == sizes[3] == sum(p.stat().st_size for p in segments(tmp_path))
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == entries(7, 8, term=2)
    assert state.hard_state == HardState(1, 1, 0)


def test_current_segment_is_never_deleted_even_if_covered(tmp_path: Path) -> None:
    wal = one_segment_per_append(
        tmp_path, (HardState(2, 2, 0), entries(1, 3), None), (None, entries(4, 5), None)
    )
    files = segments(tmp_path)
    assert len(files) == 2
    first_size = files[0].stat().st_size
    assert wal.compact(10**9) == first_size
    assert wal.compact(10**9) == 0
    assert segments(tmp_path) == files[1:]
    wal.append(None, entries(6, 6))
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == entries(4, 6)
    assert state.hard_state == HardState(2, 2, 0)

    # After reopening, the last segment is the current one and stays too.
    files = segments(tmp_path)
    assert len(files) == 2
    wal, _ = WAL.open(tmp_path)
    assert wal.compact(10**9) > 0
    assert wal.compact(10**9) == 0
    assert segments(tmp_path) == files[1:]
    wal.close()
    assert reopen(tmp_path).entries == entries(6, 6)


def test_compact_then_reopen_gives_contiguous_tail(tmp_path: Path) -> None:
    written = [e for i in range(1, 41) for e in entries(i, i, term=1 + i // 15)]
    wal = one_segment_per_append(
        tmp_path,
        *[
            (HardState(1 + i // 15, 1, i - 1), entries(i, i, term=1 + i // 15), None)
            for i in range(1, 41)
        ],
        (None, [], (20, 2)),
    )
    assert len(segments(tmp_path)) == 41
    before = wal.bytes_on_disk
    freed = wal.compact(20)
    assert freed > 0
    assert wal.bytes_on_disk == before - freed
    assert segments(tmp_path)[0].name == "wal-0000000000000021.log"
    wal.close()

    state = reopen(tmp_path)
    assert state.entries == written[20:]
    assert state.snapshot_marker == (20, 2)
    assert state.hard_state == HardState(3, 1, 39)
    assert [e.index for e in state.entries] == list(range(21, 41))

    # Per-segment maxima are recomputed at open: compacting again works the same.
    wal, _ = WAL.open(tmp_path, segment_bytes=1)
    expected_freed = sum(p.stat().st_size for p in segments(tmp_path)[:10])
    assert wal.compact(30) == expected_freed
    wal.append(None, entries(41, 41, term=3))
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == written[30:] + entries(41, 41, term=3)
    assert state.hard_state == HardState(3, 1, 39)


def test_marker_below_the_entries_kept_after_compaction_keeps_them(tmp_path: Path) -> None:
    # The snapshot lags the log: its marker lands after entries whose
    # predecessors later went with a deleted segment. Replay cannot check the
    # marker's term any more; it must keep the log rather than empty it (the
    # entries after the marker continue the tail, not the marker).
    wal = one_segment_per_append(
        tmp_path,
        (HardState(1, 1, 0), entries(1, 10), None),  # seg 1
        (None, entries(11, 20), (8, 1)),  # seg 2: marker lags behind the tail
        (None, entries(21, 22), None),  # seg 3
        (None, [], (15, 1)),  # seg 4
    )
    first_size = segments(tmp_path)[0].stat().st_size
    assert wal.compact(15) == first_size
    wal.close()
    state = reopen(tmp_path)
    # seg 2: 11..20, then marker 8 is below index 11: kept. Then 21..22, then
    # marker 15 trims up to 15.
    assert state.entries == entries(16, 22)
    assert state.snapshot_marker == (15, 1)


def test_marker_first_in_an_unanchored_segment_keeps_following_entries(tmp_path: Path) -> None:
    wal = one_segment_per_append(
        tmp_path,
        (HardState(1, 1, 0), entries(1, 10), None),  # seg 1
        (None, entries(11, 12), (5, 1)),  # seg 2: the marker lags behind seg 1's tail
        (None, entries(13, 13), None),  # seg 3
    )
    assert wal.compact(10) > 0
    wal.close()
    assert segments(tmp_path)[0].name == "wal-0000000000000002.log"
    state = reopen(tmp_path)
    assert state.entries == entries(11, 13)
    assert state.snapshot_marker == (5, 1)


def test_rewrite_of_indexes_from_deleted_segments_replays(tmp_path: Path) -> None:
    wal = one_segment_per_append(
        tmp_path,
        (HardState(1, 1, 0), entries(1, 10), None),  # seg 1, max 10
        (None, entries(11, 20), None),  # seg 2, max 20
        (None, entries(21, 25), None),  # seg 3, max 25
        (None, entries(15, 22, term=2), None),  # seg 4: earlier 15..20 were in seg 2
        (None, entries(23, 24, term=2), None),  # seg 5
    )
    assert wal.compact(20) > 0
    wal.close()
    assert segments(tmp_path)[0].name == "wal-0000000000000003.log"
    state = reopen(tmp_path)
    assert state.entries == entries(15, 24, term=2)
    assert state.hard_state == HardState(1, 1, 0)


def test_rewrite_reaching_into_deleted_segments_from_the_first_record(tmp_path: Path) -> None:
    wal = one_segment_per_append(
        tmp_path,
        (None, entries(1, 10), None),  # seg 1
        (None, entries(5, 12, term=2), None),  # seg 2 rewrites indexes from seg 1
        (None, entries(13, 14, term=2), None),  # seg 3
    )
    assert wal.compact(10) > 0
    wal.close()
    assert reopen(tmp_path).entries == entries(5, 14, term=2)


def test_gap_is_still_corruption_after_compaction(tmp_path: Path) -> None:
    wal = one_segment_per_append(
        tmp_path,
        (None, entries(1, 5), None),
        (None, entries(6, 10), None),
        (None, entries(11, 12), None),
    )
    assert wal.compact(5) > 0
    wal.append(None, entries(14, 15))
    wal.close()
    name = segments(tmp_path)[-1].name
    assert name == "wal-0000000000000004.log"
    with pytest.raises(WALCorruption, match=f"{name} at offset 0: gap"):
        WAL.open(tmp_path)


def test_missing_middle_segment_is_still_refused_after_compaction(tmp_path: Path) -> None:
    wal = one_segment_per_append(tmp_path, *[(None, entries(i, i), None) for i in range(1, 6)])
    assert wal.compact(2) > 0
    wal.close()
    files = segments(tmp_path)
    assert files[0].name == "wal-0000000000000003.log"
    files[1].unlink()
    with pytest.raises(WALCorruption, match="segment sequence gap"):
        WAL.open(tmp_path)


def test_marker_counts_toward_a_segments_max_index(tmp_path: Path) -> None:
    wal = one_segment_per_append(
        tmp_path,
        (None, entries(1, 3), None),  # seg 1, max 3
        (None, [], (9, 1)),  # seg 2: only a marker, max 9
        (None, entries(10, 10), None),  # seg 3
    )
    first_size = segments(tmp_path)[0].stat().st_size
    assert wal.compact(8) == first_size
    assert len(segments(tmp_path)) == 2
    wal.close()
    wal, _ = WAL.open(tmp_path, segment_bytes=1)
    assert wal.compact(8) == 0
    assert len(segments(tmp_path)) == 2
    wal.close()
    state = reopen(tmp_path)
    assert state.entries == entries(10, 10)
    assert state.snapshot_marker == (9, 1)


def test_failed_delete_raises_but_leaves_the_log_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = one_segment_per_append(tmp_path, *[(None, entries(i, i), None) for i in range(1, 6)])
    files = segments(tmp_path)
    real_unlink = os.unlink
    calls: list[str] = []

    def unlink(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise PermissionError("no")
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(PermissionError):
        wal.compact(3)
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert segments(tmp_path) == files[1:]
    assert wal.bytes_on_disk == sum(p.stat().st_size for p in files[1:])
    expected_freed = files[1].stat().st_size + files[2].stat().st_size
    wal.append(None, entries(6, 6))
    assert wal.compact(3) == expected_freed
    wal.close()
    assert reopen(tmp_path).entries == entries(4, 6)


def test_compact_syncs_the_directory_only_when_it_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raft_trio.storage import wal as wal_module

    wal = one_segment_per_append(tmp_path, *[(None, entries(i, i), None) for i in range(1, 4)])
    synced: list[Path] = []
    monkeypatch.setattr(wal_module, "_fsync_dir", lambda p: synced.append(p))
    assert wal.compact(0) == 0
    assert synced == []
    assert wal.compact(1) > 0
    assert synced == [tmp_path]
    wal.close()


def test_write_refuses_bytes_that_are_not_whole_records(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    good = wal.encode(HardState(1, 1, 1), entries(1, 2))
    for bad in [good[:-1], good + b"\x00", frame(cbor2.dumps([7, 1]))]:
        with pytest.raises(ValueError):
            wal.write(bad)
    wal.write(good)  # still usable
    wal.close()
    assert reopen(tmp_path) == WALState(HardState(1, 1, 1), entries(1, 2))


@pytest.mark.parametrize("size", [1, 300, 70_000])
def test_segment_max_index_is_read_from_entry_batches_of_any_size(
    tmp_path: Path, size: int
) -> None:
    # The byte-string head in front of a packed batch is 2, 3 or 5 bytes long.
    wal = one_segment_per_append(
        tmp_path,
        (None, [Entry(1, 1, 0, b"d" * size)], None),
        (None, [Entry(2, 1, 0, b"d" * size), Entry(3, 1, 0, b"")], None),
        (None, entries(4, 4), None),
    )
    assert wal.compact(1) > 0
    assert wal.compact(2) == 0
    assert wal.compact(3) > 0
    wal.close()


# One step of a Raft-like history: ("append", back, count, term), ("commit", n),
# ("snapshot", back), ("install", ahead, term, count), ("compact", back), ("reopen",)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 4), st.integers(1, 4), st.integers(0, 2)),
        st.tuples(st.just("commit"), st.integers(0, 6)),
        st.tuples(st.just("snapshot"), st.integers(0, 4)),
        st.tuples(st.just("install"), st.integers(0, 6), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(st.just("compact"), st.integers(0, 4)),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=_steps, segment_bytes=st.sampled_from([1, 120, 400, 1 << 20]))
# The snapshot marker lags the log tail, and compaction deletes the entry it
# names: replay cannot check the marker's term, and must not empty the log.
@example(
    steps=[
        ("append", 0, 1, 0),
        ("commit", 1),
        ("append", 0, 1, 0),
        ("snapshot", 0),
        ("compact", 0),
    ],
    segment_bytes=1,
)
@example(
    steps=[
        ("append", 0, 1, 0),
        ("commit", 1),
        ("append", 0, 1, 0),
        ("snapshot", 0),
        ("append", 0, 1, 0),
        ("compact", 0),
    ],
    segment_bytes=1,
)
def test_compaction_matches_raft_model(steps: list[tuple[object, ...]], segment_bytes: int) -> None:
    """Replay after markers and compaction agrees with an in-memory log.

    The history respects Raft: only uncommitted entries are rewritten, local
    snapshots cover committed entries, compaction never passes the latest
    snapshot. What replay must give back is the model's log after its
    snapshot; entries at or below the snapshot may also come back (the
    snapshot supersedes them), as long as the log is contiguous.
    """
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        offset = 0  # the model log: entries after `offset`
        log: list[Entry] = []
        term = 1
        committed = 0
        snapshot = 0
        marker: tuple[int, int] | None = None
        hard_state = HardState(0, None, 0)

        def check(state: WALState) -> None:
            assert state.hard_state == hard_state
            got = state.entries
            if got:
                assert [e.index for e in got] == list(range(got[0].index, got[-1].index + 1))
                assert got[0].index <= offset + 1
            kept = [e for e in got if e.index > offset]
            assert kept == log

        wal, _ = WAL.open(directory, segment_bytes)
        try:
            for step in steps:
                last = offset + len(log)
                if step[0] == "append":
                    _, back, count, bump = step
                    assert isinstance(back, int) and isinstance(count, int)
                    assert isinstance(bump, int)
                    first = max(committed + 1, offset + 1, last + 1 - back)
                    term += bump
                    batch = [
                        Entry(i, term, 0, b"%d@%d" % (i, term)) for i in range(first, first + count)
                    ]
                    hard_state = HardState(term, None, committed)
                    wal.append(hard_state, batch)
                    del log[first - offset - 1 :]
                    log.extend(batch)
                elif step[0] == "commit":
                    assert isinstance(step[1], int)
                    committed = max(committed, min(last, committed + step[1]))
                    hard_state = hard_state._replace(commit=committed)
                    wal.append(hard_state, [])
                elif step[0] == "snapshot":
                    assert isinstance(step[1], int)
                    index = committed - step[1]
                    if index <= max(offset, snapshot):
                        continue
                    marker = (index, log[index - offset - 1].term)
                    wal.append(None, [], marker)
                    del log[: index - offset]
                    offset = snapshot = index
                elif step[0] == "install":
                    _, ahead, mismatch, count = step
                    assert isinstance(ahead, int) and isinstance(mismatch, int)
                    assert isinstance(count, int)
                    index = committed + 1 + ahead
                    held = log[index - offset - 1].term if offset < index <= last else None
                    mterm = max(term, held or 0) + mismatch if held is None or mismatch else held
                    term = max(term, mterm)
                    marker = (index, mterm)
                    batch = [
                        Entry(i, mterm, 0, b"i%d" % i) for i in range(index + 1, index + 1 + count)
                    ]
                    hard_state = HardState(term, None, index)
                    wal.append(hard_state, batch, marker)
                    if held == mterm:
                        del log[: index - offset]
                    else:
                        log.clear()
                    offset = snapshot = committed = index
                    if batch:  # like any append, it replaces whatever follows it
                        log[:] = batch
                elif step[0] == "compact":
                    assert isinstance(step[1], int)
                    wal.compact(snapshot - step[1])
                    assert wal.bytes_on_disk == sum(p.stat().st_size for p in segments(directory))
                else:
                    wal.close()
                    wal, state = WAL.open(directory, segment_bytes)
                    check(state)
        finally:
            wal.close()
        wal, state = WAL.open(directory, segment_bytes)
        wal.close()
        check(state)
