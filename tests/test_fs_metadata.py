"""raft_trio.fs: the Namespace's commands and queries case by case, errors and paths.

The random sequences against a model are in test_fs_metadata_model.py, the
snapshot format in test_fs_snapshot.py; here each documented case of
docs/fs-design.md is spelled out once, readably.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft_trio.fs import Namespace, check, fs_error, is_fs_error, normalise, raise_fs_error
from raft_trio.fs.errors import from_os_error, to_os_error
from raft_trio.fs.paths import NAME_MAX, PATH_MAX, BadPath, join, parent, split, valid_name

T = 1_700_000_000_000  # a time, in ms


def err(result: Any) -> str | None:
    """The errno name of an fs-error result, or None for any other result."""
    if is_fs_error(result):
        assert isinstance(result[2], str) and result[2]
        return str(result[1])
    return None


class Client:
    """Drives a Namespace as the fs client would, one command at a time."""

    def __init__(self, ns: Namespace | None = None) -> None:
        self.ns = ns or Namespace()
        self.ids = 100

    def __call__(self, *command: Any) -> Any:
        return self.ns.apply(list(command))

    def q(self, *query: Any) -> Any:
        return self.ns.query(list(query))

    def next_id(self) -> int:
        self.ids += 1
        return self.ids

    def write(self, path: str, lengths: tuple[int, ...] = (4,), exclusive: bool = False,
              mode: int = 0o644, complete: bool = True) -> tuple[int, Any]:
        """create, allocate and commit each chunk, complete; the write id and the last result."""
        write_id = self.next_id()
        result = self("create", path, write_id, exclusive, mode, 3, 8, T)
        if result is not None:
            return write_id, result
        for index, length in enumerate(lengths):
            chunk_id = self.next_id()
            assert self("allocate_chunk", write_id, index, chunk_id, [1, 2, 3], T) is None
            assert self("commit_chunk", write_id, index, chunk_id, length, "crc32:0", T) is None
        if not complete:
            return write_id, None
        return write_id, self("complete_file", write_id, sum(lengths), T + 1)


# ------------------------------------------------------------------ errors and paths


@pytest.mark.parametrize(("name", "exception"), [
    ("ENOENT", FileNotFoundError), ("EEXIST", FileExistsError),
    ("ENOTDIR", NotADirectoryError), ("EISDIR", IsADirectoryError),
    ("EPERM", PermissionError), ("ENOTEMPTY", OSError), ("EINVAL", OSError),
    ("EBUSY", OSError), ("EBADF", OSError), ("ENAMETOOLONG", OSError),
])
def test_fs_errors_become_pythons_own_exceptions(name: str, exception: type[OSError]) -> None:
    result = fs_error(name, "what went wrong")
    assert is_fs_error(result) and result == ["fs-error", name, "what went wrong"]
    with pytest.raises(exception) as info:
        raise_fs_error(result, "/a/b")
    assert type(info.value) is exception
    assert info.value.errno == getattr(errno, name)
    assert info.value.filename == "/a/b"
    assert info.value.strerror == "what went wrong"
    assert "/a/b" in str(info.value)
    with pytest.raises(exception):
        check(result, "/a/b")
    assert from_os_error(info.value) == result


def test_check_passes_other_results_and_unknown_errnos_become_eio() -> None:
    for ok in (None, [], {"type": "dir"}, ["fs-error", "ENOENT"], ["error", "x", "y"], [1, 2]):
        assert check(ok, "/p") is ok
        assert not is_fs_error(ok)
    for name in ("ENOSUCH", "enoent", "errorcode", "E"):
        exc = to_os_error(fs_error(name, "m"), "/p")
        assert exc.errno == errno.EIO and name in str(exc)
    assert str(to_os_error(fs_error("ENOENT", "gone"))) == "[Errno 2] gone"
    with pytest.raises(TypeError):
        to_os_error(None)


def test_paths_split_join_and_refusals() -> None:
    assert split("/") == []
    assert split("/a") == ["a"]
    assert split("/a/b c/é") == ["a", "b c", "é"]
    for path in ("/a/b", "/", "/x/y/z"):
        assert join(split(path)) == path
    assert parent("/") == "/" and parent("/a") == "/" and parent("/a/b") == "/a"
    for bad in ("", "a", "a/b", "/a/", "//", "/a//b", "/./a", "/a/.", "/..", "/a/../b",
                "/a\0b", 7, None, b"/a", ["/a"], "/\udc80"):
        with pytest.raises(BadPath) as info:
            split(bad)
        assert info.value.errno_name == "EINVAL"
    assert split("/" + "x" * NAME_MAX)
    assert split("/" + "é" * (NAME_MAX // 2))
    for long in ("/" + "x" * (NAME_MAX + 1), "/" + "é" * (NAME_MAX // 2 + 1),
                 "/a" * (PATH_MAX // 2 + 1), "/é" * (PATH_MAX // 3 + 1)):
        with pytest.raises(BadPath) as info:
            split(long)
        assert info.value.errno_name == "ENAMETOOLONG"
    assert valid_name("a") and valid_name("é" * 127)
    for bad in ("", ".", "..", "a/b", "a\0", "é" * 128, 3, None, "\udc80"):
        assert not valid_name(bad)


def test_normalise_what_a_user_types() -> None:
    cases = {"/": "/", "//": "/", "/a/": "/a", "/a//b/": "/a/b", "/./a/.": "/a", "/a/../b": "/b",
             "/..": "/", "/../../a": "/a", "/a/b/../../c/": "/c"}
    for typed, wire in cases.items():
        assert normalise(typed) == wire
        split(wire)
    for bad in ("", "a/b", "./a", "/a\0"):
        with pytest.raises(ValueError):
            normalise(bad)


# ------------------------------------------------------------------ mkdir and stat


def test_mkdir_with_and_without_parents() -> None:
    c = Client()
    root = c.q("stat", "/")
    assert root == {"type": "dir", "mode": 0o755, "size": 0, "mtime": 0, "ctime": 0,
                    "replication": 0, "chunk_size": 0, "chunks": 0, "inode": 1}
    assert err(c("mkdir", "/a/b", False, 0o755, T)) == "ENOENT"
    made = c("mkdir", "/a/b/c", True, 0o700, T)
    assert made == {"type": "dir", "mode": 0o700, "size": 0, "mtime": T, "ctime": T,
                    "replication": 0, "chunk_size": 0, "chunks": 0, "inode": 4}
    assert c.q("stat", "/a")["mode"] == 0o700 and c.q("stat", "/a")["inode"] == 2
    assert c.q("stat", "/")["size"] == 1 and c.q("stat", "/")["mtime"] == T
    # -p on an existing directory: its stat, unchanged
    assert c("mkdir", "/a/b/c", True, 0o755, T + 5) == made
    assert c("mkdir", "/", True, 0o755, T + 5) == c.q("stat", "/")
    assert err(c("mkdir", "/a/b/c", False, 0o755, T)) == "EEXIST"
    assert err(c("mkdir", "/", False, 0o755, T)) == "EEXIST"
    c.write("/f")
    assert err(c("mkdir", "/f", True, 0o755, T)) == "EEXIST"
    assert err(c("mkdir", "/f/x/y", True, 0o755, T)) == "ENOTDIR"
    assert err(c("mkdir", "/f/x", False, 0o755, T)) == "ENOTDIR"
    assert err(c.q("stat", "/f/x")) == "ENOTDIR"
    assert err(c.q("stat", "/nope/x")) == "ENOENT"
    # A refused mkdir -p made nothing.
    assert c.q("du", "/") == {"files": 1, "dirs": 4, "bytes": 4}


# ------------------------------------------------------------------ writes


def test_a_write_is_invisible_until_complete_then_replaces_atomically() -> None:
    c = Client()
    c("mkdir", "/d", False, 0o755, T)
    write_id, _ = c.write("/d/f", (8, 8, 3), complete=False)
    assert err(c.q("stat", "/d/f")) == "ENOENT"
    assert c.q("readdir", "/d", "", 10) == []
    stat = c("complete_file", write_id, 19, T + 9)
    assert stat == {"type": "file", "mode": 0o644, "size": 19, "mtime": T + 9, "ctime": T + 9,
                    "replication": 3, "chunk_size": 8, "chunks": 3, "inode": 3}
    assert c.q("chunks", "/d/f") == {"size": 19, "chunks": [
        [102, 8, "crc32:0", [1, 2, 3]], [103, 8, "crc32:0", [1, 2, 3]],
        [104, 3, "crc32:0", [1, 2, 3]]]}
    assert c.q("stat", "/d")["mtime"] == T + 9
    # An overwrite: the old content stays until the new one completes; the inode and mode stay.
    c("chmod", "/d/f", 0o600, T + 10)
    write_id, _ = c.write("/d/f", (5,), complete=False)
    assert c.q("chunks", "/d/f")["size"] == 19
    stat = c("complete_file", write_id, 5, T + 11)
    assert (stat["inode"], stat["mode"], stat["size"], stat["chunks"]) == (3, 0o600, 5, 1)
    assert c.q("stat", "/d")["mtime"] == T + 9  # overwriting a file does not change its directory
    assert c.q("du", "/") == {"files": 1, "dirs": 2, "bytes": 5}


def test_create_refusals() -> None:
    c = Client()
    c("mkdir", "/d", False, 0o755, T)
    c.write("/f")
    assert err(c("create", "/", 1, False, 0o644, 3, 8, T)) == "EISDIR"
    assert err(c("create", "/d", 1, False, 0o644, 3, 8, T)) == "EISDIR"
    assert err(c("create", "/x/y", 1, False, 0o644, 3, 8, T)) == "ENOENT"
    assert err(c("create", "/f/y", 1, False, 0o644, 3, 8, T)) == "ENOTDIR"
    assert err(c("create", "/f", 1, True, 0o644, 3, 8, T)) == "EEXIST"
    assert c("create", "/f", 1, False, 0o644, 3, 8, T) is None
    assert err(c("create", "/g", 1, False, 0o644, 3, 8, T)) == "EINVAL"  # write id in use
    good = ["create", "/g", 2, False, 0o644, 3, 8, T]
    for at, value in ((2, -1), (2, True), (2, 2**64), (3, 0), (3, None), (4, 0o10000), (5, 0),
                      (5, 65), (6, 0), (6, 8.0), (6, 2**32 + 1), (7, -1), (7, "now")):
        bad = [*good[:at], value, *good[at + 1:]]
        assert err(c.ns.apply(bad)) == "EINVAL", bad
    assert err(c.ns.apply(good[:-1])) == "EINVAL"
    assert err(c.ns.apply([*good, 1])) == "EINVAL"
    assert c.q("writes", -1, 10) == [[1, "/f", T, T, 0]]


def test_complete_checks_the_namespace_again_and_keeps_a_refused_write() -> None:
    c = Client()
    c("mkdir", "/d", False, 0o755, T)
    w1, _ = c.write("/d/f", complete=False)
    w2, _ = c.write("/d/g", exclusive=True, complete=False)
    w3, _ = c.write("/d/h", complete=False)
    w4, _ = c.write("/e", complete=False)
    c("delete", "/d", True, T)
    assert err(c("complete_file", w1, 4, T)) == "ENOENT"
    c("mkdir", "/d", False, 0o755, T)
    c.write("/d/g")
    assert err(c("complete_file", w2, 4, T)) == "EEXIST"  # exclusive, and created meanwhile
    c("mkdir", "/d/h", False, 0o755, T)
    assert err(c("complete_file", w3, 4, T)) == "EISDIR"
    c("delete", "/d", True, T)
    c.write("/d")
    assert err(c("complete_file", w1, 4, T)) == "ENOTDIR"
    # Refused completes leave the writes pending, with their allocations.
    assert [w[0] for w in c.q("writes", -1, 10)] == [w1, w2, w3, w4]
    assert c.q("allocation", 102) == [w1, 0, [1, 2, 3]]
    assert c("abort_write", w1) is None
    assert c.q("allocation", 102) is None
    assert err(c("abort_write", w1)) == "EBADF"
    assert err(c("complete_file", w1, 4, T)) == "EBADF"
    # w4 lands: its path was free all along.
    assert c("complete_file", w4, 4, T)["size"] == 4


def test_chunk_allocation_commit_and_complete_checks() -> None:
    c = Client()
    w = c.next_id()
    assert c("create", "/f", w, False, 0o644, 2, 8, T) is None
    assert err(c("allocate_chunk", w, 1, 500, [1], T)) == "EINVAL"  # index 0 first
    assert err(c("allocate_chunk", w, 0, 500, [1, 2, 3], T)) == "EINVAL"  # > replication
    assert err(c("allocate_chunk", w, 0, 500, [1, 1], T)) == "EINVAL"  # not distinct
    assert err(c("allocate_chunk", w, 0, 500, [], T)) == "EINVAL"
    assert err(c("allocate_chunk", w, 0, 500, [True], T)) == "EINVAL"
    assert err(c("allocate_chunk", w, 0, 500, ["x" * 256], T)) == "EINVAL"
    assert err(c("allocate_chunk", 999, 0, 500, [1], T)) == "EBADF"
    assert c("allocate_chunk", w, 0, 500, [1, "node-b"], T + 1) is None
    assert c.q("allocation", 500) == [w, 0, [1, "node-b"]]
    assert c.q("writes", -1, 10) == [[w, "/f", T, T + 1, 1]]
    # A retry of chunk 0 on other nodes replaces the allocation; the old id is forgotten.
    assert c("allocate_chunk", w, 0, 501, [3, 4], T + 2) is None
    assert c.q("allocation", 500) is None
    assert c.q("allocation", 501) == [w, 0, [3, 4]]
    assert c("allocate_chunk", w, 0, 501, [5], T + 2) is None  # the same id again: new targets
    assert c.q("allocation", 501) == [w, 0, [5]]
    assert c("allocate_chunk", w, 1, 502, [1], T) is None
    w2 = c.next_id()
    c("create", "/g", w2, False, 0o644, 2, 8, T)
    assert err(c("allocate_chunk", w2, 0, 502, [1], T)) == "EINVAL"  # 502 is w's
    assert err(c("allocate_chunk", w, 2, 502, [1], T)) == "EINVAL"  # and w's chunk 1
    assert err(c("commit_chunk", w, 0, 500, 8, "crc32:0", T)) == "EINVAL"  # replaced
    assert err(c("commit_chunk", w, 2, 503, 8, "crc32:0", T)) == "EINVAL"  # not allocated
    assert err(c("commit_chunk", w, 0, 501, 9, "crc32:0", T)) == "EINVAL"  # > chunk size
    assert err(c("commit_chunk", w, 0, 501, 0, "crc32:0", T)) == "EINVAL"
    assert err(c("commit_chunk", w, 0, 501, 8, "", T)) == "EINVAL"
    assert err(c("commit_chunk", w, 0, 501, 8, 7, T)) == "EINVAL"
    assert c("commit_chunk", w, 0, 501, 8, "crc32:aa", T) is None
    assert err(c("complete_file", w, 8, T)) == "EINVAL"  # chunk 1 not committed
    assert c("commit_chunk", w, 1, 502, 2, "crc32:bb", T) is None
    assert err(c("complete_file", w, 11, T)) == "EINVAL"  # not the sum of the chunks
    assert c("complete_file", w, 10, T)["chunks"] == 2
    assert c.q("allocation", 501) is None and c.q("allocation", 502) is None
    assert c.q("chunks", "/f")["chunks"] == [[501, 8, "crc32:aa", [5]], [502, 2, "crc32:bb", [1]]]
    # An empty file: no chunks at all.
    w3 = c.next_id()
    c("create", "/empty", w3, True, 0o644, 1, 8, T)
    assert c("complete_file", w3, 0, T)["size"] == 0
    assert c.q("chunks", "/empty") == {"size": 0, "chunks": []}


# ------------------------------------------------------------------ delete, chmod, truncate


def test_delete() -> None:
    c = Client()
    c("mkdir", "/d/e", True, 0o755, T)
    c.write("/d/e/f", (8, 2))
    c.write("/d/g", (1,))
    assert err(c("delete", "/", True, T)) == "EPERM"
    assert err(c("delete", "/d", False, T)) == "ENOTEMPTY"
    assert err(c("delete", "/x", False, T)) == "ENOENT"
    assert err(c("delete", "/d/g/x", False, T)) == "ENOTDIR"
    assert c("delete", "/d/g", False, T + 3) == [105]
    assert c.q("stat", "/d")["mtime"] == T + 3
    assert c("delete", "/d", True, T + 4) == [102, 103]
    assert c.q("du", "/") == {"files": 0, "dirs": 1, "bytes": 0}
    c("mkdir", "/empty", False, 0o755, T)
    assert c("delete", "/empty", False, T) == []


def test_chmod_and_truncate() -> None:
    c = Client()
    c.write("/f", (8, 8, 8, 3))
    stat = c("chmod", "/f", 0o400, T + 5)
    assert (stat["mode"], stat["ctime"], stat["mtime"]) == (0o400, T + 5, T + 1)
    assert c("chmod", "/", 0o700, T + 5)["mode"] == 0o700
    assert err(c("chmod", "/g", 0o700, T)) == "ENOENT"
    assert err(c("chmod", "/f", 0o17777, T)) == "EINVAL"
    assert err(c("truncate", "/f", 28, T)) == "EINVAL"  # grows
    assert err(c("truncate", "/", 0, T)) == "EISDIR"
    assert err(c("truncate", "/g", 0, T)) == "ENOENT"
    stat = c("truncate", "/f", 17, T + 6)  # chunk 2 starts at 16: kept, chunk 3 freed
    assert (stat["size"], stat["chunks"], stat["mtime"], stat["mode"]) == (17, 3, T + 6, 0o400)
    assert c.q("chunks", "/f")["size"] == 17
    assert c("truncate", "/f", 16, T)["chunks"] == 2
    assert c("truncate", "/f", 16, T)["chunks"] == 2
    assert c("truncate", "/f", 1, T)["chunks"] == 1
    assert c("truncate", "/f", 0, T)["chunks"] == 0
    assert c.q("du", "/") == {"files": 1, "dirs": 1, "bytes": 0}


# ------------------------------------------------------------------ rename


def rename_world() -> Client:
    c = Client()
    c("mkdir", "/d/sub", True, 0o755, T)
    c("mkdir", "/empty", False, 0o755, T)
    c("mkdir", "/full/x", True, 0o755, T)
    c.write("/f", (4,))
    c.write("/g", (5,))
    c.write("/d/sub/h", (6,))
    return c


@pytest.mark.parametrize(("src", "dst", "expected"), [
    ("/f", "/new", None),              # to a new name
    ("/f", "/d/new", None),            # into another directory
    ("/f", "/g", None),                # onto an existing file: replaced
    ("/d", "/empty", None),            # a directory onto an empty directory: replaced
    ("/d", "/e", None),                # a directory to a new name, its subtree with it
    ("/f", "/f", None),                # onto itself: nothing happens
    ("/d", "/d", None),
    ("/f", "/empty", "EISDIR"),        # file onto directory
    ("/d", "/f", "ENOTDIR"),           # directory onto file
    ("/d", "/full", "ENOTEMPTY"),      # directory onto non-empty directory
    ("/d/sub", "/d", "ENOTEMPTY"),     # onto its own parent
    ("/f", "/d", "EISDIR"),
    ("/d", "/d/sub/x", "EINVAL"),      # into its own subtree
    ("/d", "/d/x", "EINVAL"),
    ("/", "/x", "EBUSY"),              # the root
    ("/d", "/", "EBUSY"),
    ("/nope", "/x", "ENOENT"),
    ("/f", "/nope/x", "ENOENT"),
    ("/f/x", "/y", "ENOTDIR"),
    ("/f", "/g/x", "ENOTDIR"),
    ("/f", "/a/", "EINVAL"),
])
def test_rename_cases(src: str, dst: str, expected: str | None) -> None:
    c = rename_world()
    before = c.ns.page(0, 1000)
    moved = c.q("du", src) if not err(c.q("du", src)) else None
    result = c("rename", src, dst, T + 50)
    assert err(result) == expected
    if expected is not None or src == dst:
        assert c.ns.page(0, 1000) == before
        return
    assert result is None
    assert err(c.q("stat", src)) == "ENOENT"
    assert c.q("du", dst) == moved
    assert c.q("stat", dst)["ctime"] == T + 50
    assert c.q("stat", "/")["mtime"] == T + 50
    listing = c.ns.page(0, 1000)
    assert c.q("du", "/") == {"files": sum(1 for r in listing if r[0] == "file"),
                              "dirs": sum(1 for r in listing if r[0] == "dir"),
                              "bytes": sum(r[4] for r in listing if r[0] == "file")}


def test_rename_replacing_a_file_and_moving_a_subtree() -> None:
    c = rename_world()
    g = c.q("stat", "/g")
    c("rename", "/f", "/g", T + 50)
    assert c.q("chunks", "/g")["size"] == 4 and c.q("stat", "/g")["inode"] != g["inode"]
    c("rename", "/d", "/empty", T + 51)
    assert c.q("chunks", "/empty/sub/h")["size"] == 6
    assert [name for name, _ in c.q("readdir", "/", "", 10)] == ["empty", "full", "g"]
    assert c.q("du", "/") == {"files": 2, "dirs": 5, "bytes": 10}


# ------------------------------------------------------------------ queries


def test_readdir_pages_a_big_directory_while_it_changes() -> None:
    c = Client()
    c("mkdir", "/big", False, 0o755, T)
    names = [f"n{i:05}" for i in range(2500)]
    for name in reversed(names):
        c("mkdir", f"/big/{name}", False, 0o755, T)
    seen: list[str] = []
    after = ""
    while page := c.q("readdir", "/big", after, 1000):
        assert len(page) <= 1000
        seen += [name for name, _ in page]
        after = page[-1][0]
        # Change the directory between pages: an entry before the cursor and one after.
        c("delete", f"/big/{names[0]}", False, T)
        c("mkdir", "/big/a-first", True, 0o755, T)
        c("mkdir", "/big/z-last", True, 0o755, T)
    assert seen == [*names, "z-last"]
    full = [name for name, _ in c.q("readdir", "/big", "", 1000)]
    assert full == sorted(["a-first", *names[1:1000]])
    assert c.q("readdir", "/big", "n02498", 5) == [["n02499", c.q("stat", "/big/n02499")],
                                                    ["z-last", c.q("stat", "/big/z-last")]]
    assert err(c.q("readdir", "/big", "", 1001)) == "EINVAL"
    assert err(c.q("readdir", "/big", "", 0)) == "EINVAL"
    assert err(c.q("readdir", "/big", None, 10)) == "EINVAL"
    assert err(c.q("readdir", "/big/n00001/x", "", 10)) == "ENOENT"
    c.write("/file")
    assert err(c.q("readdir", "/file", "", 10)) == "ENOTDIR"
    assert err(c.q("chunks", "/big")) == "EISDIR"


def test_du_and_writes_queries() -> None:
    c = Client()
    c("mkdir", "/a/b", True, 0o755, T)
    c.write("/a/f", (8, 2))
    c.write("/a/b/g", (3,))
    assert c.q("du", "/") == {"files": 2, "dirs": 3, "bytes": 13}
    assert c.q("du", "/a/b") == {"files": 1, "dirs": 1, "bytes": 3}
    assert c.q("du", "/a/f") == {"files": 1, "dirs": 0, "bytes": 10}
    ids = [c.write(f"/p{i}", complete=False)[0] for i in range(5)]
    assert [w[0] for w in c.q("writes", -1, 1000)] == ids
    assert [w[0] for w in c.q("writes", ids[1], 2)] == ids[2:4]
    assert err(c.q("writes", -2, 10)) == "EINVAL"
    assert err(c.q("writes", -1, 1001)) == "EINVAL"
    assert err(c.q("nope")) == "EINVAL"
    assert err(c.q("stat")) == "EINVAL"
    assert err(c.q("allocation", "x")) == "EINVAL"


# ------------------------------------------------------------------ determinism


def test_commands_as_tuples_and_int_subclasses_get_the_same_verdicts() -> None:
    """A leader applies commands as its client gave them, followers as CBOR decoded them."""
    import enum

    class Mode(enum.IntEnum):
        RW = 0o644

    lists, tuples = Client(), Client()
    script: list[list[Any]] = [
        ["mkdir", "/d", True, Mode.RW, T], ["create", "/d/f", 7, False, Mode.RW, 3, 8, T],
        ["allocate_chunk", 7, 0, 70, [1, 2], T], ["commit_chunk", 7, 0, 70, 3, "crc32:1", T],
        ["complete_file", 7, 3, T], ["rename", "/d", "/e", T], ["chmod", "/e/f", 1, T],
    ]
    for command in script:
        as_tuple = tuple(tuple(x) if isinstance(x, list) else x for x in command)
        decoded = [int(x) if isinstance(x, Mode) else x for x in command]
        assert tuples.ns.apply(as_tuple) == lists.ns.apply(decoded)
    assert tuples.ns.page(0, 100) == lists.ns.page(0, 100)


def test_page_lists_the_namespace_canonically() -> None:
    c = Client()
    c("mkdir", "/b/x", True, 0o755, T)
    c("mkdir", "/a", True, 0o755, T)
    c.write("/a/f", (3,))
    c.write("/pending", complete=False)
    listing = c.ns.page(0, 100)
    assert listing == [
        ["namespace", 6],
        ["dir", "/", 1, 0o755, T, T],
        ["dir", "/a", 4, 0o755, T + 1, T + 1],
        ["file", "/a/f", 5, 0o644, 3, T + 1, T + 1, 3, 8, [[102, 3, "crc32:0", [1, 2, 3]]]],
        ["dir", "/b", 2, 0o755, T, T],
        ["dir", "/b/x", 3, 0o755, T, T],
        ["write", 103, "/pending", False, 0o644, 3, 8, T, T, [[104, [1, 2, 3], 4, "crc32:0"]]],
    ]
    for size in (1, 2, 3, 7, 100):
        got: list[Any] = []
        while page := c.ns.page(len(got), size):
            got += page
        assert got == listing
    assert c.ns.page(3, 2) == listing[3:5]  # out of order: starts the walk again
    first = c.ns.page(0, 2)
    c("mkdir", "/0", False, 0o755, T)  # a change between pages: the walk starts again
    assert c.ns.page(2, 2) == c.ns.page(0, 4)[2:]
    assert first == listing[:2]


@given(st.lists(st.tuples(st.sampled_from(["mkdir", "write", "delete", "rename", "chmod"]),
                          st.sampled_from(["/a", "/b", "/a/b", "/b/a"]),
                          st.sampled_from(["/a", "/b", "/a/c"])), max_size=25))
def test_apply_batch_is_apply_in_order(ops: list[tuple[str, str, str]]) -> None:
    commands: list[Any] = []
    for i, (op, path, other) in enumerate(ops):
        if op == "mkdir":
            commands.append(["mkdir", path, True, 0o755, i])
        elif op == "write":
            commands += [["create", path, i, False, 0o644, 1, 8, i],
                         ["allocate_chunk", i, 0, i, [1], i],
                         ["commit_chunk", i, 0, i, 8, "c", i], ["complete_file", i, 8, i]]
        elif op == "delete":
            commands.append(["delete", path, i % 2 == 0, i])
        elif op == "rename":
            commands.append(["rename", path, other, i])
        else:
            commands.append(["chmod", path, i, i])
        commands.append(["bad", i])
    one, many = Namespace(), Namespace()
    assert many.apply_batch(commands) == [one.apply(c) for c in commands]
    assert many.page(0, 1000) == one.page(0, 1000)


def test_a_deep_tree_needs_no_recursion() -> None:
    c = Client()
    deep = "/d" * 2000
    assert c("mkdir", deep, True, 0o755, T)["inode"] == 2001
    c.write(deep + "/f")
    assert c.q("du", "/") == {"files": 1, "dirs": 2001, "bytes": 4}
    assert len(c.ns.page(0, 10_000)) == 2003
    assert c("rename", "/d", "/e", T) is None
    assert c("delete", "/e", True, T) == [102]
