from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

import raft_trio.storage.snapshot as snapshot_module
from raft_trio.kv import KVStateMachine
from raft_trio.statemachine import SnapshotStateMachine
from raft_trio.storage import (
    SnapshotCorruption,
    SnapshotMeta,
    list_snapshots,
    open_snapshot,
    remove_older_snapshots,
    write_snapshot,
)

META = SnapshotMeta(index=42, term=3, voters=(1, 2, 3), sessions=b"sess")


def kv_with(data: dict[Any, Any]) -> KVStateMachine:
    kv = KVStateMachine()
    kv.data = dict(data)
    return kv


def kv_bytes(data: dict[Any, Any]) -> bytes:
    out = io.BytesIO()
    kv_with(data).snapshot(out)
    return out.getvalue()


def items(*objs: Any) -> bytes:
    return b"".join(cbor2.dumps(o) for o in objs)


def restore_all(src: BinaryIO) -> KVStateMachine:
    kv = KVStateMachine()
    kv.restore(src)
    assert src.read() == b""
    return kv


# --- the KV state machine's snapshot pair ---------------------------------------------


def test_kv_satisfies_the_snapshot_protocol() -> None:
    kv: SnapshotStateMachine = KVStateMachine()
    assert kv.apply(["get", "k"]) is None


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=20))
def test_kv_round_trip(data: dict[str, str]) -> None:
    restored = restore_all(io.BytesIO(kv_bytes(data)))
    assert restored.data == data
    assert list(restored.data) == list(data)  # insertion order too


def test_kv_round_trip_large_through_a_file(tmp_path: Path) -> None:
    data = {f"key-{i}": f"value-{i}" for i in range(100_000)}
    path = write_snapshot(tmp_path, META, kv_with(data).snapshot)
    _, reader = open_snapshot(path)
    with reader:
        assert restore_all(reader).data == data


def test_kv_round_trips_whatever_apply_can_store() -> None:
    # apply() does not check types, so a member's own snapshot may hold these.
    kv = KVStateMachine()
    for command in (["set", 1, 2], ["set", "k", ["a", {"b": None}]], ["set", b"x", 1.5]):
        assert kv.apply(command) is None
    out = io.BytesIO()
    kv.snapshot(out)
    out.seek(0)
    assert restore_all(out).data == kv.data


def test_kv_restore_replaces_rather_than_merges() -> None:
    kv = kv_with({"old": "1", "both": "old"})
    kv.restore(io.BytesIO(kv_bytes({"both": "new"})))
    assert kv.data == {"both": "new"}


HEADER = ["raft-trio-kv", 1, 2]
GOOD = items(HEADER, ["a", "1"], ["b", "2"])
HEADER2 = ["raft-trio-kv", 2, 3]
GOOD2 = kv_bytes({"a": "1", "b": "2", "c": "3"})


def test_kv_snapshot_layout_is_version_2_in_chunks_of_4096_pairs() -> None:
    data = {f"k{i}": i for i in range(4096 + 5)}
    decoder = cbor2.CBORDecoder(io.BytesIO(kv_bytes(data)))
    assert decoder.decode() == ["raft-trio-kv", 2, 4101]
    first, second = decoder.decode(), decoder.decode()
    assert len(first) == 2 * 4096 and first[:4] == ["k0", 0, "k1", 1]
    assert second == [x for i in range(4096, 4101) for x in (f"k{i}", i)]
    assert GOOD2 == items(HEADER2, ["a", "1", "b", "2", "c", "3"])


def test_kv_restores_a_version_1_snapshot() -> None:
    assert restore_all(io.BytesIO(GOOD)).data == {"a": "1", "b": "2"}
    many = {f"k{i}": str(i) for i in range(5000)}
    old = items(["raft-trio-kv", 1, len(many)], *([k, v] for k, v in many.items()))
    restored = restore_all(io.BytesIO(old))
    assert list(restored.data.items()) == list(many.items())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "ends before the header"),
        (b"\xff", "undecodable header"),
        (items(["other-sm", 1, 0]), "bad header"),
        (items(["raft-trio-kv", 3, 0]), "unsupported format version"),
        (items(["raft-trio-kv", 0, 0]), "unsupported format version"),
        (items(["raft-trio-kv", True, 0]), "unsupported format version"),
        (items(["raft-trio-kv", 1, -1]), "bad header"),
        (items(["raft-trio-kv", 1, "2"]), "bad header"),
        (items({"a": "1"}), "bad header"),
        (items(HEADER, ["a", "1"]), "ends before the entry 1 of 2"),
        (items(HEADER, ["a", "1"], ["b"]), "entry 1 is not a [key, value] pair"),
        (items(HEADER, ["a", "1"], ["b", "2", "3"]), "entry 1 is not a [key, value] pair"),
        (items(HEADER, ["a", "1"], {"b": "2"}), "entry 1 is not a [key, value] pair"),
        (items(HEADER, ["a", "1"], [["b"], "2"]), "entry 1 is not a [key, value] pair"),
        (items(HEADER, ["a", "1"], ["a", "2"]), "duplicate key 'a'"),
        (GOOD + b"\x00", "data after the 2 entries"),
        (GOOD[:-1], "ends before the entry 1 of 2"),
        (items(HEADER2), "ends before the chunk from entry 0 of 3"),
        (items(HEADER2, ["a", "1"]), "ends before the chunk from entry 1 of 3"),
        (items(HEADER2, ["a", "1", "b"]), "the chunk from entry 0 is not a flat array"),
        (items(HEADER2, []), "the chunk from entry 0 is not a flat array"),
        (items(HEADER2, {"a": "1"}), "the chunk from entry 0 is not a flat array"),
        (items(HEADER2, ["a", "1", "b", "2", "c", "3", "d", "4"]),
         "not a flat array of at most 3 [key, value] pairs"),
        (items(HEADER2, ["a", "1"], ["b", "2", "c", "3", "d", "4"]),
         "the chunk from entry 1 is not a flat array of at most 2"),
        (items(HEADER2, ["a", "1", ["b"], "2", "c", "3"]), "unhashable key at entry 1: ['b']"),
        (items(HEADER2, ["a", "1"], ["b", "2", ("x", ["y"]), "3"]), "unhashable key at entry 2"),
        (items(HEADER2, ["a", "1", "b", "2", "a", "3"]), "duplicate key 'a' at entry 2"),
        (items(HEADER2, ["a", "1", "b", "2"], ["b", "3"]), "duplicate key 'b' at entry 2"),
        (items(["raft-trio-kv", 2, 0], []), "data after the 0 entries"),
        (GOOD2 + b"\x00", "data after the 3 entries"),
        (GOOD2[:-1], "ends before the chunk from entry 0 of 3"),
    ],
)
def test_kv_restore_refuses_malformed_input_and_keeps_state(data: bytes, message: str) -> None:
    kv = kv_with({"keep": "me"})
    with pytest.raises(ValueError, match="KV snapshot") as info:
        kv.restore(io.BytesIO(data))
    assert message in str(info.value)
    assert kv.data == {"keep": "me"}


# --- snapshot files -------------------------------------------------------------------


def write_kv(directory: Path, meta: SnapshotMeta, data: dict[Any, Any]) -> Path:
    return write_snapshot(directory, meta, kv_with(data).snapshot)


def test_file_round_trip_with_meta(tmp_path: Path) -> None:
    data = {f"k{i}": "v" * i for i in range(500)}
    path = write_kv(tmp_path / "snaps", META, data)
    assert path == tmp_path / "snaps" / "snapshot-00000000000000000042-3.snap"
    meta, reader = open_snapshot(path)
    with reader:
        assert meta == META
        assert restore_all(reader).data == data
    assert reader.closed


def test_state_reader_stops_at_the_end_of_the_state(tmp_path: Path) -> None:
    state = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk

    def write_state(out: BinaryIO) -> None:
        out.write(state)

    path = write_snapshot(tmp_path, META, write_state)
    _, reader = open_snapshot(path)
    with reader:
        assert reader.read(5) == state[:5]
        assert reader.read() == state[5:]
        assert reader.read(1) == b""


def test_empty_state_and_meta(tmp_path: Path) -> None:
    meta = SnapshotMeta(index=0, term=0, voters=())
    path = write_snapshot(tmp_path, meta, lambda out: None)
    got, reader = open_snapshot(path)
    with reader:
        assert got == meta
        assert reader.read() == b""


def test_meta_is_validated() -> None:
    with pytest.raises(ValueError):
        SnapshotMeta(index=-1, term=1, voters=(1,))
    with pytest.raises(ValueError):
        SnapshotMeta(index=1, term=1, voters=[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SnapshotMeta(index=1, term=1, voters=(1,), sessions="x")  # type: ignore[arg-type]


def test_failed_state_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    def boom(out: BinaryIO) -> None:
        out.write(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_snapshot(tmp_path, META, boom)
    assert list(tmp_path.iterdir()) == []


def test_listing_is_newest_first_and_drops_temp_files(tmp_path: Path) -> None:
    assert list_snapshots(tmp_path / "missing") == []
    paths = [
        write_kv(tmp_path, SnapshotMeta(index, term, (1,)), {"i": str(index)})
        for index, term in [(9, 2), (100, 3), (10, 2)]
    ]
    temp = tmp_path / "snapshot-00000000000000000200-4.snap.tmp"
    temp.write_bytes(b"half a snapshot")
    other = tmp_path / "wal-0000000000000001.log"
    other.write_bytes(b"")
    assert list_snapshots(tmp_path) == [paths[1], paths[2], paths[0]]
    assert not temp.exists()
    assert other.exists()


def test_remove_older_snapshots(tmp_path: Path) -> None:
    paths = [write_kv(tmp_path, SnapshotMeta(i, 1, (1,)), {}) for i in (1, 2, 3, 4)]
    assert remove_older_snapshots(tmp_path, keep=2) == [paths[1], paths[0]]
    assert list_snapshots(tmp_path) == [paths[3], paths[2]]
    assert remove_older_snapshots(tmp_path) == [paths[2]]
    assert list_snapshots(tmp_path) == [paths[3]]
    assert remove_older_snapshots(tmp_path) == []
    with pytest.raises(ValueError):
        remove_older_snapshots(tmp_path, keep=0)


def test_write_fsyncs_file_then_renames_then_fsyncs_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "snaps"
    directory.mkdir()  # so the only syncs are the snapshot's own
    final = directory / "snapshot-00000000000000000042-3.snap"
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append(f"fsync:{Path(os.readlink(f'/proc/self/fd/{fd}')).name}")
        real_fsync(fd)

    def fsync_dir(path: Path) -> None:
        events.append(f"fsync-dir:{Path(path).name}:{final.exists()}")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(snapshot_module, "_fsync_dir", fsync_dir)
    write_kv(directory, META, {"k": "v"})
    assert events == [f"fsync:{final.name}.tmp", "fsync-dir:snaps:True"]


# --- damaged files --------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return write_kv(tmp_path, META, {f"k{i}": f"v{i}" for i in range(20)})


def assert_refused(path: Path, reason: str = "") -> None:
    with pytest.raises(SnapshotCorruption) as info:
        open_snapshot(path)
    assert str(path) in str(info.value)
    assert info.value.path == path
    assert reason in info.value.reason


def test_truncation_anywhere_is_refused(good_file: Path) -> None:
    data = good_file.read_bytes()
    meta_len = len(cbor2.dumps([42, 3, [1, 2, 3], b"sess"]))
    state_start = 16 + meta_len
    cuts = {
        0: "truncated",
        5: "truncated",  # in the magic
        12: "truncated",  # in the fixed header
        16 + meta_len // 2: "truncated",  # in the meta
        state_start + 3: "truncated",  # in the state, before where a trailer could be
        state_start + 30: "length mismatch",  # in the state
        len(data) - 12: "length mismatch",  # right before the trailer
        len(data) - 5: "length mismatch",  # in the trailer
        len(data) - 1: "length mismatch",
    }
    for cut, reason in cuts.items():
        good_file.write_bytes(data[:cut])
        assert_refused(good_file, reason)


def test_a_flipped_byte_anywhere_is_refused(good_file: Path) -> None:
    data = good_file.read_bytes()
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x20
        good_file.write_bytes(damaged)
        assert_refused(good_file)


def test_appended_bytes_are_refused(good_file: Path) -> None:
    good_file.write_bytes(good_file.read_bytes() + b"\x00")
    assert_refused(good_file, "length mismatch")


def test_wrong_version_is_refused(good_file: Path) -> None:
    data = bytearray(good_file.read_bytes())
    data[11] = 2
    good_file.write_bytes(data)
    assert_refused(good_file, "unsupported format version 2")


def test_corrupt_newest_is_reported_not_skipped(tmp_path: Path) -> None:
    write_kv(tmp_path, SnapshotMeta(1, 1, (1,)), {"old": "x"})
    newest = write_kv(tmp_path, SnapshotMeta(2, 1, (1,)), {"new": "y"})
    damaged = bytearray(newest.read_bytes())
    damaged[-20] ^= 1
    newest.write_bytes(damaged)
    assert list_snapshots(tmp_path)[0] == newest
    assert_refused(newest, "checksum mismatch")
