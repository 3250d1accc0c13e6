"""`raft-trio fs` and `raft-trio datanode` as a user runs them: processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import (
    ENV,
    RAFT,
    TIMING,
    no_traceback,
    ok,
    raft,
    raft_parallel,
    short_error,
    show,
    wait_for,
)

from stress.cluster import free_ports


class FSProcesses:
    """Three `serve --state-machine fs` members and three `datanode`s."""

    def __init__(self, root: Path):
        self.root = root
        ports = free_ports(6)
        self.members = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
        self.datanodes = {i + 1: f"127.0.0.1:{ports[3 + i]}" for i in range(3)}
        self.spec = ",".join(self.members.values())
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        ids = ",".join(f"{i}={a}" for i, a in self.members.items())
        for node_id in self.members:
            self._launch(f"member-{node_id}", [
                "serve", "--id", str(node_id), "--cluster", ids, "--data-dir",
                str(self.root / f"member-{node_id}"), "--state-machine", "fs",
                "--dead-after", "3", *TIMING])
        for node_id, address in self.datanodes.items():
            self._launch(f"datanode-{node_id}", [
                "datanode", "--id", str(node_id), "--listen", address, "--data-dir",
                str(self.root / f"datanode-{node_id}"), "--cluster", self.spec,
                "--heartbeat", "0.2"])

    def _launch(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs.append(subprocess.Popen([*RAFT, *args], stdout=log,
                                               stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=ENV))

    def fs(self, *args: str) -> subprocess.CompletedProcess[str]:
        return raft("fs", *args, "--cluster", self.spec)

    def shutdown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def fs_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FSProcesses]:
    cluster = FSProcesses(tmp_path_factory.mktemp("fs-cli"))
    try:
        cluster.start()

        def three_live() -> str | None:
            done = cluster.fs("df", "--json")
            if done.returncode != 0:
                return done.stderr.strip()
            live = [n for n in json.loads(done.stdout) if n["state"] == "live"]
            return None if len(live) == 3 else f"{len(live)} live data nodes"

        wait_for("three live data nodes", three_live)
        yield cluster
    finally:
        cluster.shutdown()
        for proc in cluster.procs:
            assert proc.returncode in (0, -signal.SIGTERM), proc.args


def test_files_in_and_out(fs_processes: FSProcesses, tmp_path: Path) -> None:
    fs = fs_processes.fs
    data = os.urandom(5 * 1024 * 1024 + 123)  # two chunks of 4 MiB, the second short
    local = tmp_path / "data.bin"
    local.write_bytes(data)
    assert ok(fs("mkdir", "-p", "/cli/deep/er")) == ""
    assert ok(fs("mkdir", "-p", "/cli/deep")) == ""  # -p: an existing directory is fine
    assert ok(fs("put", str(local), "/cli/deep/data.bin")) == ""
    (got, listing, long_listing, stat, du) = raft_parallel([
        ["fs", "get", "/cli/deep/data.bin", str(tmp_path / "back.bin"), "-c", fs_processes.spec],
        ["fs", "ls", "/cli/deep", "-c", fs_processes.spec],
        ["fs", "ls", "-l", "/cli/deep", "-c", fs_processes.spec],
        ["fs", "stat", "/cli/deep/data.bin", "-c", fs_processes.spec],
        ["fs", "du", "/cli", "-c", fs_processes.spec],
    ])
    ok(got)
    assert (tmp_path / "back.bin").read_bytes() == data
    assert not list(tmp_path.glob(".*.part"))
    assert ok(listing).split() == ["data.bin", "er"]
    lines = ok(long_listing).splitlines()
    assert lines[0].startswith("-rw-r--r--") and f" {len(data)} " in lines[0], lines
    assert lines[1].startswith("drwxr-xr-x") and lines[1].endswith(" er"), lines
    attributes = json.loads(ok(stat))
    assert attributes["size"] == len(data) and attributes["chunks"] == 2
    assert ok(du).split("\t")[:3] == [str(len(data)), "1 files", "3 dirs"]

    # stdin in, stdout out; then rename, chmod, remove.
    small = subprocess.run([*RAFT, "fs", "put", "-", "/cli/small.txt", "-c", fs_processes.spec],
                           input=b"hello\n", capture_output=True, env=ENV, timeout=60)
    assert small.returncode == 0, small.stderr
    assert ok(fs("cat", "/cli/small.txt")) == "hello\n"
    ok(fs("mv", "/cli/small.txt", "/cli/deep/moved.txt"))
    ok(fs("chmod", "600", "/cli/deep/moved.txt"))
    assert json.loads(ok(fs("stat", "/cli/deep/moved.txt")))["mode"] == 0o600
    ok(fs("rm", "-r", "/cli"))
    assert ok(fs("ls", "/")) == ""


def test_errors_are_one_line_with_exit_codes_a_script_can_use(
    fs_processes: FSProcesses, tmp_path: Path,
) -> None:
    fs = fs_processes.fs
    ok(fs("mkdir", "/e"))
    (tmp_path / "x").write_bytes(b"x")
    ok(fs("put", str(tmp_path / "x"), "/e/x"))
    cases = [
        (fs("cat", "/e/nope"), 1, "/e/nope"),
        (fs("mkdir", "/e"), 1, "exists"),
        (fs("rm", "/e"), 1, "not empty"),
        (fs("put", str(tmp_path / "x"), "/e/x", "--exclusive"), 1, "exists"),
        (fs("mkdir", "/e/x/y"), 1, "not a directory"),
        (fs("get", "/e", str(tmp_path / "out")), 1, "directory"),
        (fs("put", str(tmp_path / "missing"), "/e/y"), 1, "no such local file"),
        (fs("ls", "relative/path"), 2, "absolute"),
        (fs("chmod", "rwx", "/e/x"), 2, "octal"),
        (fs("put", str(tmp_path / "x"), "/e/z", "--replication", "0"), 2, "--replication"),
        (raft("fs", "ls", "/"), 2, "--cluster"),
    ]
    for proc, code, words in cases:
        output = short_error(proc, code)
        assert words in output.lower() or words in output, show(proc)
        assert len([line for line in output.splitlines() if line.strip()]) == 1, show(proc)
    ok(fs("rm", "-r", "/e"))


def test_df_lists_the_data_nodes(fs_processes: FSProcesses) -> None:
    table = ok(fs_processes.fs("df")).splitlines()
    assert table[0].startswith("id\taddress\tstate")
    rows = [line.split("\t") for line in table[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (str(i), a, "live") for i, a in fs_processes.datanodes.items()]


def test_a_datanode_refuses_bad_input(tmp_path: Path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("")
    (port,) = free_ports(1)
    cases = [
        (["datanode", "--id", "0", "--listen", f"127.0.0.1:{port}", "--data-dir",
          str(tmp_path / "d"), "-c", "127.0.0.1:1"], "--id"),
        (["datanode", "--id", "1", "--listen", "nowhere", "--data-dir", str(tmp_path / "d"),
          "-c", "127.0.0.1:1"], "--listen"),
        (["datanode", "--id", "1", "--listen", f"127.0.0.1:{port}", "--data-dir", str(a_file),
          "-c", "127.0.0.1:1"], "is a file"),
        (["datanode", "--id", "1", "--listen", f"127.0.0.1:{port}", "--data-dir",
          str(tmp_path / "d"), "--heartbeat", "0", "-c", "127.0.0.1:1"], "--heartbeat"),
    ]
    for args, words in cases:
        proc = raft(*args)
        assert words in short_error(proc, 2), show(proc)
    no_traceback(proc)
