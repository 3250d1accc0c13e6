"""What `raft-trio fs-stress` writes and what it expects to find: a tree of directories,
files of mixed sizes with reproducible contents, and the namespace they make.

Every file's bytes are SHAKE-128 of the run's seed and the file's number, so they
differ from file to file and from chunk to chunk, cost nothing to keep, and can
be made again to show where a read went wrong. Also the checks' helpers: Problems
(what a check found, raised as one StepFailed), first_difference, first_change.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stress.runner import StepFailed, plural

KiB = 1024
SMALL_MAX = 64 * KiB
# The mix of sizes, one kind per file in turn (then shuffled): every kind appears once
# there are five files; most files are small, as in most file systems.
KINDS = ("empty", "small", "one chunk", "one chunk + 1", "many chunks")
PATTERN = ("empty", "small", "one chunk", "one chunk + 1", "many chunks", "small", "small",
           "small")
MANY_CHUNKS = (3, 6)  # a "many chunks" file has this many chunks, at least and at most
FILE_MODE = 0o644


def content(seed: int, number: int, size: int) -> bytes:
    """File `number`'s bytes."""
    if not size:
        return b""
    return hashlib.shake_128(f"raft-trio fs-stress {seed} {number}".encode()).digest(size)


def crc32_checksum(data: bytes | memoryview) -> str:
    """A chunk's checksum as the metadata records it (docs/fs-design.md), computed here
    and not by the client's code, so that a wrong one there shows."""
    return f"crc32:{zlib.crc32(data):08x}"


# Problems shown when a check finds many.
SHOWN = 3


class Problems:
    """What a check found wrong, shown as the count and the first few."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, problem: str | None) -> None:
        if problem is not None:
            self.found.append(problem)

    def raise_any(self, what: str) -> None:
        if self.found:
            shown = "; ".join(self.found[:SHOWN])
            more = f" (and {len(self.found) - SHOWN} more)" if len(self.found) > SHOWN else ""
            raise StepFailed(f"{plural(len(self.found), what)}: {shown}{more}")


@dataclass(frozen=True)
class FileSpec:
    number: int
    path: str
    kind: str
    size: int


@dataclass
class Written:
    """Digests of what was written to one file: the whole, and each chunk."""

    sha256: bytes
    chunk_sha256: list[bytes]
    chunk_checksums: list[str]


@dataclass
class Workload:
    seed: int
    chunk_size: int
    replication: int
    leaves: list[str]  # the directories made with mkdir -p
    files: list[FileSpec]
    written: dict[str, Written] = field(default_factory=dict)

    @classmethod
    def make(cls, files: int, chunk_size: int, replication: int, seed: int) -> Workload:
        rng = random.Random(seed)
        leaves = _tree(rng, max(1, files // 8))
        kinds = [PATTERN[i % len(PATTERN)] for i in range(files)]
        rng.shuffle(kinds)
        specs = []
        for number, kind in enumerate(kinds):
            directory = rng.choice(leaves)
            slug = kind.replace(" + ", "-plus-").replace(" ", "-")
            specs.append(FileSpec(number, f"{directory}/{number:05d}-{slug}", kind,
                                  _size(rng, kind, chunk_size)))
        return cls(seed, chunk_size, replication, leaves, specs)

    # ------------------------------------------------------------- shapes

    def content(self, spec: FileSpec) -> bytes:
        return content(self.seed, spec.number, spec.size)

    def chunk_lengths(self, size: int) -> list[int]:
        whole, rest = divmod(size, self.chunk_size)
        return [self.chunk_size] * whole + ([rest] if rest else [])

    def record(self, spec: FileSpec, data: bytes) -> None:
        """Note the digests of what is being written to `spec`'s file."""
        view = memoryview(data)
        pieces = [view[at:at + self.chunk_size] for at in range(0, len(view), self.chunk_size)]
        self.written[spec.path] = Written(hashlib.sha256(view).digest(),
                                          [hashlib.sha256(p).digest() for p in pieces],
                                          [crc32_checksum(p) for p in pieces])

    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def total_chunks(self) -> int:
        return sum(len(self.chunk_lengths(f.size)) for f in self.files)

    def mix(self) -> str:
        """"25 empty, 100 small, ..." in the order of KINDS."""
        counts = Counter(f.kind for f in self.files)
        return ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k])

    def directories(self) -> set[str]:
        """Every directory the namespace must hold: the root, the leaves, their parents."""
        found = {"/"}
        for leaf in self.leaves:
            parts = leaf.strip("/").split("/")
            found.update("/" + "/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
        return found

    def children(self) -> dict[str, dict[str, FileSpec | None]]:
        """Each directory's entries: name -> the file's spec, or None for a directory."""
        tree: dict[str, dict[str, FileSpec | None]] = {d: {} for d in self.directories()}
        for directory in tree:
            if directory != "/":
                parent, name = directory.rsplit("/", 1)
                tree[parent or "/"][name] = None
        for spec in self.files:
            parent, name = spec.path.rsplit("/", 1)
            tree[parent or "/"][name] = spec
        return tree

    # ------------------------------------------------------------- checks

    def check_data(self, spec: FileSpec, data: bytes) -> str | None:
        """None if `data` is the file's content, byte for byte, else what is wrong."""
        written = self.written[spec.path]
        if len(data) == spec.size and hashlib.sha256(data).digest() == written.sha256:
            return None
        where = first_difference(self.content(spec), data)
        return (f"{spec.path}: {len(data)} bytes read of {spec.size} written, the first "
                f"difference at byte {where}")

    def check_stat(self, spec: FileSpec, stat: dict[str, Any]) -> str | None:
        expected = {"type": "file", "size": spec.size, "mode": FILE_MODE,
                    "chunks": len(self.chunk_lengths(spec.size)),
                    "replication": self.replication, "chunk_size": self.chunk_size}
        wrong = [f"{key} {stat.get(key)!r}, not {value!r}" for key, value in expected.items()
                 if stat.get(key) != value]
        return f"{spec.path}: stat has {', '.join(wrong)}" if wrong else None

    def check_listing(self, records: list[list[Any]]) -> list[str]:
        """What is wrong with a member's namespace listing (Namespace.page's records)
        against what was written: the directories, the files with their size, mode,
        replication, chunk size, chunks' lengths and checksums and distinct replicas,
        and no write left pending."""
        problems: list[str] = []
        dirs = {r[1] for r in records if r[0] == "dir"}
        files = {r[1]: r for r in records if r[0] == "file"}
        pending = [r for r in records if r[0] == "write"]
        expected_dirs = self.directories()
        for what, extra in (("missing", expected_dirs - dirs),
                            ("unexpected", dirs - expected_dirs)):
            if extra:
                problems.append(f"{len(extra)} {what} director{'y' if len(extra) == 1 else 'ies'}"
                                f", e.g. {min(extra)}")
        by_path = {f.path: f for f in self.files}
        for what, extra in (("missing", by_path.keys() - files.keys()),
                            ("unexpected", files.keys() - by_path.keys())):
            if extra:
                problems.append(f"{len(extra)} {what} file{'' if len(extra) == 1 else 's'}, "
                                f"e.g. {min(extra)}")
        if pending:
            problems.append(f"{len(pending)} write(s) still pending, e.g. of {pending[0][2]}")
        for path in sorted(by_path.keys() & files.keys()):
            spec, record = by_path[path], files[path]
            _, _, _inode, mode, size, _mtime, _ctime, replication, chunk_size, chunks = record
            written = self.written.get(path)
            shape = (mode, size, replication, chunk_size,
                     [(length, digest) for _, length, digest, _ in chunks])
            expected = (FILE_MODE, spec.size, self.replication, self.chunk_size,
                        list(zip(self.chunk_lengths(spec.size),
                                 written.chunk_checksums if written else [], strict=False)))
            if shape != expected:
                problems.append(f"{path}: (mode, size, replication, chunk size, [(length, "
                                f"checksum), ...]) is {short(shape)}, not {short(expected)}")
            for index, (_, _, _, replicas) in enumerate(chunks):
                if len(set(replicas)) != self.replication:
                    problems.append(f"{path}: chunk {index} on data nodes {replicas}, not on "
                                    f"{self.replication} distinct ones")
        return problems


def _tree(rng: random.Random, count: int) -> list[str]:
    """`count` directories 1 to 3 deep that share parents."""
    tops = max(2, count // 4)
    leaves: set[str] = set()
    while len(leaves) < count:
        parts = [f"d{rng.randrange(tops)}", f"e{rng.randrange(4)}", f"f{rng.randrange(4)}"]
        leaves.add("/" + "/".join(parts[:rng.randint(1, 3)]))
    return sorted(leaves)


def _size(rng: random.Random, kind: str, chunk_size: int) -> int:
    if kind == "empty":
        return 0
    if kind == "small":
        return rng.randint(1, min(SMALL_MAX, chunk_size))
    if kind == "one chunk":
        return chunk_size
    if kind == "one chunk + 1":
        return chunk_size + 1
    chunks = rng.randint(*MANY_CHUNKS)
    return (chunks - 1) * chunk_size + rng.randint(1, chunk_size)


def first_difference(a: bytes, b: bytes) -> int:
    """The offset of the first byte where `a` and `b` differ (the shorter one's length if
    one is the start of the other)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while high - low > 1:  # a[:low] == b[:low], a[:high] != b[:high]
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def first_change(before: list[list[Any]], after: list[list[Any]]) -> str:
    """The first record where two listings differ, shortened."""
    for at, (old, new) in enumerate(zip(before, after, strict=False)):
        if old != new:
            return f"record {at} is {short(new)}, was {short(old)}"
    return f"{len(after)} records, were {len(before)}"


def short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
