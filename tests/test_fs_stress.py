"""`raft-trio fs-stress`: the file system's checklist passes in this process and as
processes, fails (exit 1) at the step that checks what a planted fault breaks, refuses
bad input, and stops everything on Ctrl-C and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_cli import (
    PASS_LINE,
    BackgroundRun,
    no_traceback,
    ok,
    show,
    wait_for,
)
from typer.testing import CliRunner

from raft_trio.cli import app
from raft_trio.cli.app import run
from raft_trio.fs.client import FileSystem
from raft_trio.fs.datanode.store import ChunkStore
from raft_trio.fs.errors import check
from raft_trio.fs.metadata import Namespace
from stress.fs_runner import FSChecklist
from stress.fs_workload import Workload, content, first_difference
from stress.runner import StepFailed

# Quick elections; small chunks, so that 24 files make about 35 chunks.
SMALL = ["--files", "24", "--clients", "4", "--chunk-kb", "4", "--tick", "0.05"]
RATES = re.compile(r"write [\d,]+ files/s, [\d,]+ metadata ops/s, [\d,.]+ MB/s; "
                   r"read [\d,.]+ MB/s")


def fs_processes_alive_under(root: Path) -> list[str]:
    """Command lines of live `serve` and `datanode` processes naming a path under `root`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if ((" serve " in cmdline or " datanode " in cmdline) and str(root) in cmdline
                and state != "Z"):
            found.append(cmdline)
    return found


# --------------------------------------------------------------- a failing step
#
# Each fault is one an implementation could really have; each is caught by the step
# that checks what it breaks, and by no step before it.


class _ListsChunksSwapped(Namespace):
    """A `chunks` query that lists a file's first two chunks the wrong way round."""

    def _q_chunks(self, q: Any) -> Any:
        result = super()._q_chunks(q)
        if isinstance(result, dict) and len(result["chunks"]) >= 2:
            chunks = result["chunks"]
            chunks[0], chunks[1] = chunks[1], chunks[0]
        return result


class _StampsWithItsOwnClock(Namespace):
    """Reads the member's clock inside apply, instead of the time in the command: a
    member that applies the entry again later (replaying its log at a restart, or
    rebuilt) ends up with other times."""

    def _mkdir(self, c: Any) -> Any:
        return super()._mkdir([*c[:4], int(time.time() * 1000)])


def _drops_a_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data node 2 loses the first chunk it stores, right after acknowledging it."""
    committed = ChunkStore._committed
    dropped: list[int] = []

    def drop(self: ChunkStore, chunk_id: int, length: int) -> None:
        committed(self, chunk_id, length)
        if self.node_id == 2 and not dropped:
            dropped.append(chunk_id)
            os.unlink(self.path_of(chunk_id))
            self._forget(chunk_id)

    monkeypatch.setattr(ChunkStore, "_committed", drop)


def _forgets_a_chunk_at_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data node 2's store, when it opens again, does not find one of its chunks."""
    scan = ChunkStore._scan

    def forgetful(self: ChunkStore) -> dict[int, int]:
        index = scan(self)
        if self.node_id == 2 and index:
            index.pop(min(index))
        return index

    monkeypatch.setattr(ChunkStore, "_scan", forgetful)


def _reads_only_the_first_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that never falls back to the next replica."""
    fetch = FileSystem._fetch

    async def first_only(self: FileSystem, path: str, chunk_id: int, digest: str,
                         replicas: list[int]) -> bytes:
        return await fetch(self, path, chunk_id, digest, replicas[:1])

    monkeypatch.setattr(FileSystem, "_fetch", first_only)


FAULTS: dict[str, tuple[int, str]] = {
    # fault: (the step that fails, what it says)
    "chunks listed swapped": (3, r"wrong files?: /\S+: \d+ bytes read of \d+ written, the "
                                 r"first difference at byte 0"),
    "a data node drops a chunk": (4, r"replica problem: data node 2 has no copy of chunk \d+ "
                                     r"of /\S+ \(id [0-9a-f]+\)"),
    "a chunk forgotten at restart": (5, r"data node 2 reports \d+ chunks; the namespace "
                                        r"places \d+ on it"),
    "apply reads the clock": (9, r"namespace problems?: member 1: record \d+ is \['dir'"),
    "no fallback to other replicas": (10, r"no replica of chunk [0-9a-f]+ could be read "
                                          r"\(data node \d: "),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_fails_its_step_and_the_command(
    fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fault == "chunks listed swapped":
        monkeypatch.setattr("stress.fscluster.Namespace", _ListsChunksSwapped)
    elif fault == "apply reads the clock":
        monkeypatch.setattr("stress.fscluster.Namespace", _StampsWithItsOwnClock)
    elif fault == "a data node drops a chunk":
        _drops_a_chunk(monkeypatch)
    elif fault == "a chunk forgotten at restart":
        _forgets_a_chunk_at_restart(monkeypatch)
    else:
        _reads_only_the_first_replica(monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(app, ["fs-stress", *SMALL, "--log-level", "error"])
    out = " ".join(result.output.split())
    failing, reason = FAULTS[fault]
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert re.search(rf"{failing}\. .*? FAIL \([\d.]+s\) [^\n]*?{reason}", out), result.output
    assert len(re.findall(r"\bFAIL\b", out)) == 1, result.output
    assert len(PASS_LINE.findall(result.output)) == failing - 1, result.output
    skipped = 10 - failing
    assert f"{failing - 1}/10 steps passed, 1 failed" + (
        f", {skipped} skipped" if skipped else "") in out, result.output
    (kept,) = tmp_path.glob("raft-trio-fs-stress-*")
    assert f"data kept in {kept}" in out, result.output


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("args", "says"), [
    (["--files", "0"], "--files must be at least 1"),
    (["--clients", "0"], "--clients must be at least 1"),
    (["--chunk-kb", "0"], "--chunk-kb must be from 1 to 65536"),
    (["--chunk-kb", "65537"], "--chunk-kb must be from 1 to 65536"),
    (["--datanodes", "1"], "--datanodes must be from 2 to 32"),
    (["--files", "many"], "invalid value for '--files'"),
    (["--log-level", "loud"], "'loud' is not a log level"),
    (["--tick", "0"], "--tick must be a positive number"),
])
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["fs-stress", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "", captured
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("error: "), captured
    assert says in captured.err, captured


def test_a_data_dir_in_use_or_impossible_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    used = tmp_path / "used"
    (used / "datanode-1").mkdir(parents=True)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for where, says in ((used, "holds data nodes' data already"),
                        (a_file, "is not a directory"),
                        (a_file / "below", "cannot be made: not a directory")):
        assert run(["fs-stress", "--data-dir", str(where)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.splitlines()) == 1, captured
        assert f"error: --data-dir {where} {says}" in captured.err, captured
    assert sorted(p.name for p in used.iterdir()) == ["datanode-1"]


# ------------------------------------------------------------ Ctrl-C and SIGTERM

# Two data nodes: fewer processes to start.
LONG = ["--files", "100000", "--clients", "4", "--chunk-kb", "16", "--tick", "0.05",
        "--datanodes", "2"]
SIGNALS = {
    # Ctrl-C in a terminal: every process of the group gets SIGINT.
    "processes, Ctrl-C": (["--processes"], signal.SIGINT, True),
    # `kill PID`: only the runner hears of it.
    "processes, SIGTERM": (["--processes"], signal.SIGTERM, False),
    "in-process, SIGINT": ([], signal.SIGINT, False),
}


@pytest.fixture(scope="module")
def signalled_runs(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[dict[str, BackgroundRun]]:
    """Started together; each test below signals one once it is writing."""
    runs: dict[str, BackgroundRun] = {}
    try:
        for case, (extra, _, _) in SIGNALS.items():
            runs[case] = BackgroundRun(tmp_path_factory.mktemp("fs-signal"), "fs-stress",
                                       *LONG, *extra, "--log-level", "error")
        yield runs
    finally:
        for background in runs.values():
            background.kill()


@pytest.mark.parametrize("case", list(SIGNALS))
def test_a_signal_stops_everything_and_removes_the_temp_dir(
    case: str, signalled_runs: dict[str, BackgroundRun]
) -> None:
    extra, signum, to_group = SIGNALS[case]
    background = signalled_runs[case]
    wait_for("the writes to start",
             lambda: None if " 2. Write" in background.out() else "not yet")
    time.sleep(0.3)  # into the writes
    (data_dir,) = background.tmp.iterdir()
    if extra:
        assert len(fs_processes_alive_under(data_dir)) == 5, background.out()
    if to_group:
        os.killpg(background.proc.pid, signum)
    else:
        background.proc.send_signal(signum)
    proc = background.result(timeout=60)
    assert fs_processes_alive_under(background.root) == [], show(proc)
    with pytest.raises(ProcessLookupError):
        os.killpg(background.proc.pid, 0)  # nothing left of its process group
    assert proc.returncode == 128 + signum, show(proc)
    no_traceback(proc)
    assert proc.stderr.splitlines() == [
        f"error: interrupted by {signum.name}: every member and data node was stopped; "
        f"temporary data in {data_dir} removed"], show(proc)
    assert "steps passed" not in proc.stdout, show(proc)
    assert background.temp_dirs() == [], show(proc)


# ------------------------------------------------------------------- workload


def test_the_workload_is_reproducible_and_its_checks_say_where() -> None:
    one, again = (Workload.make(40, 4096, 3, seed=5) for _ in range(2))
    assert one.files == again.files and one.leaves == again.leaves
    assert Workload.make(40, 4096, 3, seed=6).files != one.files
    assert one.mix() == "5 empty, 20 small, 5 one chunk, 5 one chunk + 1, 5 many chunks"
    sizes = {f.kind: f.size for f in one.files}
    assert sizes["empty"] == 0 and sizes["one chunk"] == 4096 and sizes["one chunk + 1"] == 4097
    many = [f for f in one.files if f.kind == "many chunks"]
    assert all(3 <= len(one.chunk_lengths(f.size)) <= 6 for f in many)
    # Every directory is listed by its parent, every file by its directory.
    tree = one.children()
    assert sum(len(entries) for entries in tree.values()) == len(tree) - 1 + len(one.files)
    spec = many[0]
    data = one.content(spec)
    one.record(spec, data)
    assert data == content(5, spec.number, spec.size) and data != content(6, spec.number,
                                                                          spec.size)
    assert one.check_data(spec, data) is None
    broken = data[:5000] + bytes([data[5000] ^ 1]) + data[5001:]
    assert one.check_data(spec, broken) == (f"{spec.path}: {spec.size} bytes read of "
                                            f"{spec.size} written, the first difference at "
                                            f"byte 5000")
    assert "the first difference at byte 100" in str(one.check_data(spec, data[:100]))
    assert first_difference(b"abc", b"abc") == 3 and first_difference(b"abc", b"xbc") == 0


def _namespace_of(w: Workload) -> Namespace:
    """A namespace holding what `w` writes, as the commands of the write path make it."""
    ns = Namespace()
    for leaf in w.leaves:
        assert ns.apply(["mkdir", leaf, True, 0o755, 1])["type"] == "dir"
    for spec in w.files:
        w.record(spec, w.content(spec))
        write_id = spec.number + 1
        results = [ns.apply(["create", spec.path, write_id, True, 0o644, 3, w.chunk_size, 1])]
        for index, length in enumerate(w.chunk_lengths(spec.size)):
            chunk_id = write_id * 100 + index
            results += [
                ns.apply(["allocate_chunk", write_id, index, chunk_id, [1, 2, 3], 1]),
                ns.apply(["commit_chunk", write_id, index, chunk_id, length,
                          w.written[spec.path].chunk_checksums[index], 1])]
        assert results == [None] * len(results)
        assert ns.apply(["complete_file", write_id, spec.size, 1])["size"] == spec.size
    return ns


class _NamespaceClient:
    """Just enough of FileSystem for FSChecklist.walk."""

    def __init__(self, ns: Namespace):
        self.ns = ns

    async def scandir(self, path: str) -> list[tuple[str, dict[str, Any]]]:
        page = check(self.ns.query(["readdir", path, "", 1000]), path)  # raises as the client
        return [(name, stat) for name, stat in page]


async def test_the_namespace_checks_find_what_differs() -> None:
    w = Workload.make(24, 4096, 3, seed=2)
    ns = _namespace_of(w)
    checklist: Any = SimpleNamespace(workload=w)
    assert w.check_listing(ns.page(0, 10_000)) == []
    assert await FSChecklist.walk(checklist, _NamespaceClient(ns)) == len(ns.page(0, 10_000)) - 2

    victim = w.files[0].path
    ns.apply(["chmod", victim, 0o600, 2])
    (problem,) = w.check_listing(ns.page(0, 10_000))
    assert problem.startswith(f"{victim}: (mode, size, replication, chunk size, [(length, "
                              f"checksum), ...]) is (384, "), problem
    with pytest.raises(StepFailed, match=rf"1 listing problem: {victim}: stat has mode 384, "
                                         rf"not 420"):
        await FSChecklist.walk(checklist, _NamespaceClient(ns))

    ns = _namespace_of(w)
    ns.apply(["create", "/pending", 999, True, 0o644, 3, 4096, 2])
    ns.apply(["delete", w.leaves[0], True, 2])
    problems = w.check_listing(ns.page(0, 10_000))
    assert any("missing director" in p for p in problems), problems
    assert any("missing file" in p for p in problems), problems
    assert "1 write(s) still pending, e.g. of /pending" in problems, problems
    parent = w.leaves[0].rsplit("/", 1)[0] or "/"
    with pytest.raises(StepFailed, match=rf"listing problems: .*{parent} lists \[\] too many "
                                         rf"and .* too few; {w.leaves[0]}: \[Errno 2\] "):
        await FSChecklist.walk(checklist, _NamespaceClient(ns))


# --------------------------------------------------------------- passing runs


@pytest.fixture(scope="module", autouse=True)
def passing_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BackgroundRun]]:
    """Both modes, started together with this module's first test, running in the
    background while the others run (mostly waiting on elections and fsyncs)."""
    runs: dict[str, BackgroundRun] = {}
    try:
        runs["in-process"] = BackgroundRun(tmp_path_factory.mktemp("fs-in-process"),
                                           "fs-stress", *SMALL, merge_stderr=True)
        root = tmp_path_factory.mktemp("fs-processes")
        runs["processes"] = BackgroundRun(root, "fs-stress", *SMALL, "--processes",
                                          "--seed", "3", "--datanodes", "4", "--data-dir",
                                          str(root / "data"), "--keep", "--log-level", "info",
                                          merge_stderr=True)
        yield runs
    finally:
        for background in runs.values():
            background.kill()


def test_the_checklist_passes_in_this_process(passing_runs: dict[str, BackgroundRun]) -> None:
    background = passing_runs["in-process"]
    proc = background.result(timeout=120)
    out = " ".join(ok(proc).split())  # lines may be wrapped
    assert len(PASS_LINE.findall(proc.stdout)) == 10, show(proc)
    assert "FAIL" not in out and "SKIP" not in out, show(proc)
    assert "10/10 steps passed" in out and RATES.search(out), show(proc)
    assert "(in-process)" in out and "CPU" in out and "(all in this process)" in out, show(proc)
    # Every kind of size was written, and step 10 says how many chunks lost a replica.
    assert "3 empty, 12 small, 3 one chunk, 3 one chunk + 1, 3 many chunks" in out, show(proc)
    assert re.search(r"(\d+) of \1 chunks now have 2 of 3 replicas", out), show(proc)
    assert background.temp_dirs() == [], show(proc)  # removed after a passing run


def test_the_checklist_passes_as_processes(passing_runs: dict[str, BackgroundRun]) -> None:
    background = passing_runs["processes"]
    proc = background.result(timeout=180)
    out = " ".join(ok(proc).split())
    assert len(PASS_LINE.findall(proc.stdout)) == 10 and "10/10 steps passed" in out, show(proc)
    assert RATES.search(out), show(proc)
    assert re.search(r"CPU [\d.]+ ms/MB \(members [\d./]+, data nodes [\d.]+/[\d.]+/[\d.]+/"
                     r"[\d.]+, clients [\d.]+\)", out), show(proc)
    assert "peak RSS: member 1" in out and "data node 4" in out, show(proc)
    # With 4 data nodes and 3 replicas, only some chunks had a copy on the wiped one.
    lost = re.search(r"(\d+) of (\d+) chunks now have 2 of 3 replicas", out)
    assert lost and 0 < int(lost.group(1)) < int(lost.group(2)), show(proc)
    data = background.root / "data"
    assert f"data kept in {data}" in out, show(proc)
    wiped = re.search(r"directories of data node (\d) and metadata member (\d) deleted", out)
    assert wiped, show(proc)
    for node_id in range(1, 5):
        assert (data / f"datanode-{node_id}.log").exists()
        assert (data / f"datanode-{node_id}" / "datanode.json").exists()
    logs = "".join(p.read_text() for p in data.glob("*.log"))
    # The processes were those of the commands a user runs, at the level asked for.
    assert "INFO" in logs and "data node 1: listening on" in logs, logs[-2000:]
    assert fs_processes_alive_under(background.root) == []
