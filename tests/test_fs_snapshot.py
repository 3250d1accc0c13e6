"""The Namespace's snapshots: round trips, captures, and refusing what snapshot() never wrote."""

from __future__ import annotations

import gc
import io
import threading
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft_trio.fs import Namespace
from raft_trio.fs.fs_snapshot import RECORDS_PER_ITEM, TAG, VERSION

T = 1_700_000_000_000


def populated(files: int = 40, dirs: int = 6, pending: int = 3) -> Namespace:
    """A namespace with nested directories, files of 0-3 chunks, pending writes."""
    ns = Namespace()
    apply = ns.apply
    ids = iter(range(1000, 10**9))
    for d in range(dirs):
        assert "type" in apply(["mkdir", f"/d{d}/sub{d % 2}", True, 0o700 + d % 64, T + d])
    for i in range(files):
        path = f"/d{i % dirs}/sub{i % dirs % 2}/f{i}" if i % 3 else f"/d{i % dirs}/f{i}"
        write_id = next(ids)
        assert apply(["create", path, write_id, False, 0o640, 3, 16, T + i]) is None
        for index in range(i % 4):
            chunk_id = next(ids)
            nodes = [1 + (i + k) % 5 for k in range(3)] if i % 5 else ["n1", "n2"]
            assert apply(["allocate_chunk", write_id, index, chunk_id, nodes, T + i]) is None
            assert apply(["commit_chunk", write_id, index, chunk_id, 16 - index, f"crc32:{i:08x}",
                          T + i]) is None
        assert "type" in apply(["complete_file", write_id, sum(16 - k for k in range(i % 4)),
                                T + i + 1])
    apply(["truncate", "/d1/sub1/f1", 5, T])
    apply(["chmod", "/", 0o711, T + 99])
    for p in range(pending):
        write_id = next(ids)
        apply(["create", f"/d0/pending{p}", write_id, p % 2 == 0, 0o600, 2, 16, T])
        for index in range(p):
            chunk_id = next(ids)
            apply(["allocate_chunk", write_id, index, chunk_id, [7, "n9"], T + 5])
            if index % 2:
                apply(["commit_chunk", write_id, index, chunk_id, 9, "crc32:0", T + 6])
    return ns


def snapshot_bytes(ns: Namespace) -> bytes:
    out = io.BytesIO()
    ns.snapshot(out)
    return out.getvalue()


def restored(data: bytes) -> Namespace:
    ns = Namespace()
    ns.restore(io.BytesIO(data))
    return ns


def answers(ns: Namespace) -> list[Any]:
    """Every query's answer for every path of the namespace, and its listing."""
    listing = ns.page(0, 10**6)
    out: list[Any] = [listing]
    for record in listing:
        if record[0] in ("dir", "file"):
            path = record[1]
            out += [ns.query([q, path]) for q in ("stat", "du", "chunks")]
            out.append(ns.query(["readdir", path, "", 1000]))
        if record[0] == "write":
            out += [ns.query(["allocation", chunk[0]]) for chunk in record[-1]]
    out.append(ns.query(["writes", -1, 1000]))
    return out


def items(data: bytes) -> list[Any]:
    decoder = cbor2.CBORDecoder(io.BytesIO(data))
    out = []
    while True:
        try:
            out.append(decoder.decode())
        except cbor2.CBORDecodeEOF:
            return out


def encode(parts: list[Any]) -> bytes:
    return b"".join(cbor2.dumps(part) for part in parts)


# ------------------------------------------------------------------ round trips


def test_round_trip_answers_every_query_the_same() -> None:
    ns = populated()
    data = snapshot_bytes(ns)
    copy = restored(data)
    assert answers(copy) == answers(ns)
    assert snapshot_bytes(copy) == data
    # and behaves the same from there on
    for command in (["rename", "/d1", "/d0/sub0/x", T], ["delete", "/d2", True, T],
                    ["mkdir", "/d0/sub0/x/y", True, 0o700, T], ["abort_write", 1001]):
        assert copy.apply(command) == ns.apply(command)
    assert answers(copy) == answers(ns)


def test_an_empty_namespace_and_the_layout() -> None:
    data = snapshot_bytes(Namespace())
    assert items(data) == [[TAG, VERSION, 2, 1, 0, 0], [0, "", 1, 0o755, 0, 0]]
    assert answers(restored(data)) == answers(Namespace())
    ns = populated(files=2, dirs=1, pending=2)
    header, dirs, files, writes = items(snapshot_bytes(ns))
    assert header == [TAG, VERSION, ns.next_inode, 3, 2, 2]
    assert dirs[:6] == [0, "", 1, 0o711, T, T + 99] and len(dirs) == 18
    # file f0 in /d0: no chunks; f1 in /d0/sub0... breadth first: /d0's files come first
    assert files[:10] == [2, "f0", 4, 0o640, 0, T + 1, T + 1, 3, 16, 0]
    assert writes[:9] == [1003, "/d0/pending0", True, 0o600, 2, 16, T, T, 0]


def test_many_records_span_many_items() -> None:
    ns = populated(files=RECORDS_PER_ITEM + 100, dirs=RECORDS_PER_ITEM + 7, pending=2)
    data = snapshot_bytes(ns)
    parts = items(data)
    assert len(parts) == 1 + 3 + 2 + 1  # header, 3 arrays of directories, 2 of files, 1 of writes
    assert answers(restored(data)) == answers(ns)


# ------------------------------------------------------------------ captures


def test_a_capture_keeps_the_state_of_its_moment() -> None:
    ns = populated()
    expected = snapshot_bytes(ns)
    write_state = ns.capture_snapshot()
    # change everything a capture could share: the root, directories, files, pending writes
    for command in (["chmod", "/", 0o700, T], ["rename", "/d1", "/d0/sub0/moved", T],
                    ["delete", "/d2", True, T], ["truncate", "/d3/f3", 0, T],
                    ["mkdir", "/d4/new/deep", True, 0o755, T], ["chmod", "/d5/sub1", 0o700, T],
                    ["abort_write", 1002], ["allocate_chunk", 1003, 1, 77, [1], T],
                    ["commit_chunk", 1003, 0, 1004, 3, "x", T]):
        ns.apply(command)
    second = ns.capture_snapshot()
    after_second = snapshot_bytes(ns)
    ns.apply(["rename", "/d0", "/z", T])
    ns.apply(["delete", "/d4/new", True, T])
    out = io.BytesIO()
    write_state(out)
    assert out.getvalue() == expected
    out = io.BytesIO()
    second(out)
    assert out.getvalue() == after_second
    assert answers(restored(after_second)) != answers(restored(expected))


def test_a_capture_is_written_in_a_thread_while_commands_apply() -> None:
    ns = populated(files=3000, dirs=50)
    expected = snapshot_bytes(ns)
    write_state = ns.capture_snapshot()
    out = io.BytesIO()
    writer = threading.Thread(target=write_state, args=(out,))
    writer.start()
    for i in range(3000):
        ns.apply(["mkdir", f"/d{i % 50}/new{i}", True, 0o755, T])
        ns.apply(["delete", f"/d{(i + 7) % 50}/f{i}", False, T])
        if i % 500 == 0:
            ns.apply(["rename", f"/d{i % 50}", f"/moved{i}", T])
    writer.join()
    assert out.getvalue() == expected


# ------------------------------------------------------------------ refusals


def test_every_truncation_is_refused_and_the_state_kept() -> None:
    data = snapshot_bytes(populated(files=12, dirs=3))
    ns = populated(files=2, dirs=1)
    before = answers(ns)
    for end in range(len(data)):
        with pytest.raises(ValueError):
            ns.restore(io.BytesIO(data[:end]))
    assert answers(ns) == before
    assert gc.isenabled()
    with pytest.raises(ValueError, match="data after"):
        ns.restore(io.BytesIO(data + b"\x00"))
    assert answers(ns) == before


def good() -> list[Any]:
    """The items of a small snapshot to corrupt one way at a time."""
    return [[TAG, VERSION, 10, 3, 2, 1],
            [0, "", 1, 0o755, T, T, 1, "a", 2, 0o755, T, T, 2, "b", 3, 0o700, T, T],
            [2, "f", 4, 0o644, 10, T, T, 3, 8, 2, 50, 8, "crc32:1", 3, 1, 2, 3,
             51, 2, "crc32:2", 1, "n",
             3, "g", 5, 0o644, 0, T, T, 1, 8, 0],
            [9, "/a/p", False, 0o600, 2, 8, T, T, 2, 60, 8, "c", 1, 4, 61, None, None, 2, 4, 5]]


def corrupt(*changes: tuple[int, int, Any]) -> list[Any]:
    """good() with each (item, position, value) change made."""
    parts = good()
    for item, position, value in changes:
        parts[item][position] = value
    return parts


CORRUPTIONS: dict[str, list[Any]] = {
    "another tag": corrupt((0, 0, "raft-trio-kv")),
    "another version": corrupt((0, 1, 2)),
    "next inode too small": corrupt((0, 2, 5)),
    "a bool count": corrupt((0, 3, True)),
    "no root": corrupt((0, 3, 0)),
    "more dirs announced": corrupt((0, 3, 4)),
    "fewer dirs announced": corrupt((0, 3, 2)),
    "more files announced": corrupt((0, 4, 3)),
    "fewer files announced": corrupt((0, 4, 1)),
    "more writes announced": corrupt((0, 5, 2)),
    "a short header": [[TAG, VERSION, 10, 3, 2], *good()[1:]],
    "not a list": ["header", *good()[1:]],
    "root not first": corrupt((1, 0, 1)),
    "root named": corrupt((1, 1, "r")),
    "root inode": corrupt((1, 2, 7)),
    "unknown parent": corrupt((1, 12, 9)),
    "a parent not yet listed": corrupt((1, 6, 3)),
    "duplicate dir name": corrupt((1, 12, 1), (1, 13, "a")),
    "bad dir name": corrupt((1, 7, "a/b")),
    "dot name": corrupt((1, 7, "..")),
    "duplicate inode": corrupt((1, 14, 2)),
    "inode past next": corrupt((2, 24, 10)),
    "inode zero": corrupt((2, 24, 0)),
    "bad mode": corrupt((1, 15, 0o10000)),
    "float time": corrupt((1, 16, 1.5)),
    "negative time": corrupt((1, 17, -1)),
    "dir array not a multiple of 6": [good()[0], good()[1][:-1], *good()[2:]],
    "file in unknown dir": corrupt((2, 0, 7)),
    "file in a file": corrupt((2, 22, 4)),
    "file name clash with dir": corrupt((2, 1, "b")),
    "duplicate file name": corrupt((2, 22, 2), (2, 23, "f")),
    "file inode reused": corrupt((2, 24, 3)),
    "size past chunks": corrupt((2, 4, 11)),
    "chunk wholly past size": corrupt((2, 4, 8)),
    "chunk longer than chunk size": corrupt((2, 11, 9)),
    "zero-length chunk": corrupt((2, 18, 0)),
    "replicas over replication": corrupt((2, 7, 1)),
    "duplicate replica": corrupt((2, 15, 1)),
    "bool replica": corrupt((2, 14, True)),
    "replica count off": corrupt((2, 13, 4)),
    "empty checksum": corrupt((2, 12, "")),
    "bytes checksum": corrupt((2, 12, b"crc")),
    "negative chunk id": corrupt((2, 10, -1)),
    "chunk count off": corrupt((2, 9, 3)),
    "zero replication": corrupt((2, 29, 0)),
    "no files but an empty array": [*good()[:2], [], good()[3]],
    "write path relative": corrupt((3, 1, "a/p")),
    "write bool exclusive as int": corrupt((3, 2, 0)),
    "uncommitted with a length": corrupt((3, 15, 3)),
    "committed without checksum": corrupt((3, 11, None)),
    "duplicate pending chunk": corrupt((3, 14, 60)),
    "write id negative": corrupt((3, 0, -9)),
    "write chunk replicas over replication": corrupt((3, 4, 1)),
    "trailing item": [*good(), [1]],
    "a nested array": corrupt((2, 10, [50])),
    "an unhashable parent": corrupt((2, 0, [2])),
}


def test_the_corrupted_base_is_good() -> None:
    ns = restored(encode(good()))
    assert ns.query(["chunks", "/a/f"])["chunks"] == [[50, 8, "crc32:1", [1, 2, 3]],
                                                      [51, 2, "crc32:2", ["n"]]]
    assert ns.query(["du", "/"]) == {"files": 2, "dirs": 3, "bytes": 10}
    assert ns.query(["allocation", 61]) == [9, 1, [4, 5]]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupted_snapshot_is_refused(name: str) -> None:
    ns = populated(files=3, dirs=2)
    before = answers(ns)
    with pytest.raises(ValueError):
        ns.restore(io.BytesIO(encode(CORRUPTIONS[name])))
    assert answers(ns) == before
    assert gc.isenabled()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_damage_is_refused_or_gives_a_consistent_namespace(data: st.DataObject) -> None:
    original = snapshot_bytes(populated(files=10, dirs=3))
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    try:
        ns = restored(bytes(damaged))
    except ValueError:
        return
    # Accepted: then it must be a namespace snapshot() could have written, consistent in
    # itself: it lists, answers, and snapshots to what restores to the same.
    assert answers(restored(snapshot_bytes(ns))) == answers(ns)
    listing = ns.page(0, 10**6)
    assert ns.query(["du", "/"]) == {
        "files": sum(1 for r in listing if r[0] == "file"),
        "dirs": sum(1 for r in listing if r[0] == "dir"),
        "bytes": sum(r[4] for r in listing if r[0] == "file")}
