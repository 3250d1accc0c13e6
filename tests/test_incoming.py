"""A snapshot file arriving from the leader in chunks (raft_trio.storage.incoming).

Every test builds a real snapshot with write_snapshot and the KV state
machine, then feeds its bytes to IncomingSnapshot in another directory, as a
follower's server would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raft_trio.kv import KVStateMachine
from raft_trio.storage import (
    IncomingSnapshot,
    SnapshotCorruption,
    SnapshotMeta,
    list_snapshots,
    open_snapshot,
    remove_partial_snapshots,
    snapshot_name,
    write_snapshot,
)

INDEX, TERM = 42, 3
DATA = {f"key-{i}": f"value-{i}" * 3 for i in range(200)}


def leader_snapshot(tmp_path: Path, index: int = INDEX, term: int = TERM) -> bytes:
    """The bytes of a snapshot file as the leader wrote it."""
    kv = KVStateMachine()
    kv.data = dict(DATA)
    path = write_snapshot(tmp_path / "leader", SnapshotMeta(index, term, (1, 2, 3)), kv.snapshot)
    return path.read_bytes()


def chunks(blob: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(offset, blob[offset : offset + size]) for offset in range(0, len(blob), size)]


def restored(path: Path) -> KVStateMachine:
    meta, reader = open_snapshot(path)
    assert (meta.index, meta.term, meta.voters) == (INDEX, TERM, (1, 2, 3))
    kv = KVStateMachine()
    with reader:
        kv.restore(reader)
    return kv


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_chunks_in_order_become_the_snapshot(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    assert len(blob) > 3000
    follower = tmp_path / "follower" / "snapshots"  # created on demand
    incoming = IncomingSnapshot(follower, INDEX, TERM, len(blob))
    assert names(follower) == {f"incoming-{INDEX}-{TERM}.part"}
    for offset, data in chunks(blob, 1000):
        assert not incoming.complete
        incoming.write(offset, data)
    assert incoming.complete and incoming.received == len(blob)
    final = incoming.finish()
    assert final == follower / snapshot_name(INDEX, TERM)
    assert names(follower) == {snapshot_name(INDEX, TERM)}
    assert final.read_bytes() == blob
    assert restored(final).data == DATA
    assert list_snapshots(follower) == [final]


def test_overlapping_and_duplicate_chunks_are_stored_once(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    n = len(blob)
    incoming = IncomingSnapshot(tmp_path / "f", INDEX, TERM, n)
    pieces = [
        (0, blob[:100]),
        (0, blob[:100]),  # a duplicate
        (50, blob[50:300]),  # overlaps the first
        (10, blob[10:20]),  # wholly inside what arrived
        (300, b""),  # empty
        (300, blob[300:1000]),
        (299, blob[299:1000]),  # a resend, one byte earlier
        (900, blob[900 : n - 10]),
        (n - 10, blob[n - 10 :]),
        (n - 10, blob[n - 10 :]),  # the last chunk again
    ]
    for offset, data in pieces:
        incoming.write(offset, data)
    assert incoming.received == n
    final = incoming.finish()
    assert final.read_bytes() == blob
    assert restored(final).data == DATA


def test_a_chunk_leaving_a_hole_is_refused(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    incoming = IncomingSnapshot(tmp_path / "f", INDEX, TERM, len(blob))
    incoming.write(0, blob[:100])
    with pytest.raises(ValueError, match="hole"):
        incoming.write(101, blob[101:200])
    assert incoming.received == 100
    # The transfer goes on from where it really stands.
    incoming.write(100, blob[100:])
    assert restored(incoming.finish()).data == DATA


def test_a_chunk_past_the_announced_size_is_refused(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    incoming = IncomingSnapshot(tmp_path / "f", INDEX, TERM, len(blob))
    incoming.write(0, blob[:-5])
    with pytest.raises(ValueError, match="past"):
        incoming.write(len(blob) - 5, blob[-5:] + b"x")
    assert incoming.received == len(blob) - 5 and not incoming.complete
    with pytest.raises(ValueError):
        incoming.finish()  # not all there yet
    incoming.write(len(blob) - 5, blob[-5:])
    assert restored(incoming.finish()).data == DATA


def test_a_non_positive_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        IncomingSnapshot(tmp_path / "f", INDEX, TERM, 0)


@pytest.mark.parametrize("where", [0, 30, 0.5, -20, -3], ids=str)
def test_a_corrupted_byte_is_caught_and_the_partial_removed(
    tmp_path: Path, where: float
) -> None:
    blob = bytearray(leader_snapshot(tmp_path))
    pos = int(len(blob) * where) if isinstance(where, float) else where
    blob[pos] ^= 0x01
    follower = tmp_path / "f"
    incoming = IncomingSnapshot(follower, INDEX, TERM, len(blob))
    for offset, data in chunks(bytes(blob), 700):
        incoming.write(offset, data)
    with pytest.raises(SnapshotCorruption):
        incoming.finish()
    assert names(follower) == set()
    assert list_snapshots(follower) == []
    incoming.discard()  # harmless afterwards


def test_a_file_announced_under_another_index_or_term_is_refused(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    follower = tmp_path / "f"
    for index, term in [(INDEX + 1, TERM), (INDEX, TERM + 1)]:
        incoming = IncomingSnapshot(follower, index, term, len(blob))
        incoming.write(0, blob)
        with pytest.raises(SnapshotCorruption, match="announced"):
            incoming.finish()
        assert names(follower) == set()
        assert not (follower / snapshot_name(index, term)).exists()


def test_discard_removes_the_partial(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    follower = tmp_path / "f"
    incoming = IncomingSnapshot(follower, INDEX, TERM, len(blob))
    incoming.write(0, blob[:500])
    assert incoming.path.exists()
    incoming.discard()
    assert names(follower) == set()
    incoming.discard()  # twice is fine
    # Discarding a transfer whose bytes are all there removes it just as well.
    incoming = IncomingSnapshot(follower, INDEX, TERM, len(blob))
    incoming.write(0, blob)
    incoming.discard()
    assert names(follower) == set()


def test_remove_partial_snapshots_deletes_only_partial_files(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    follower = tmp_path / "f"
    kv = KVStateMachine()
    own = write_snapshot(follower, SnapshotMeta(7, 1, (1, 2, 3)), kv.snapshot)
    # A transfer cut short by a crash, and one that was complete but never finished.
    IncomingSnapshot(follower, INDEX, TERM, len(blob)).write(0, blob[:100])
    IncomingSnapshot(follower, 50, 4, len(blob)).write(0, blob)
    others = {"wal-0001.log", "incoming-notes.txt", "incoming-1-2.partial", "README"}
    for name in others:
        (follower / name).write_bytes(b"keep me")
    assert {f"incoming-{INDEX}-{TERM}.part", "incoming-50-4.part"} <= names(follower)
    remove_partial_snapshots(follower)
    assert names(follower) == {own.name, *others}
    remove_partial_snapshots(tmp_path / "nowhere")  # a missing directory is not an error


def test_list_snapshots_never_lists_a_partial_file(tmp_path: Path) -> None:
    blob = leader_snapshot(tmp_path)
    follower = tmp_path / "f"
    kv = KVStateMachine()
    own = write_snapshot(follower, SnapshotMeta(7, 1, (1, 2, 3)), kv.snapshot)
    incoming = IncomingSnapshot(follower, INDEX, TERM, len(blob))
    incoming.write(0, blob[:1000])
    assert list_snapshots(follower) == [own]
    incoming.write(1000, blob[1000:])  # every byte there, not yet checked
    assert list_snapshots(follower) == [own]
    # Listing must not sweep away a transfer in progress either.
    assert incoming.path.exists()
    final = incoming.finish()
    assert list_snapshots(follower) == [final, own]
