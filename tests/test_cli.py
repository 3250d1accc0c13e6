"""The `raft-trio` command line, driven in subprocesses the way a user drives it.

One three-member cluster of `raft-trio serve` processes is shared by the tests of
this module (started once, always torn down by the fixture's finalizer); the
tests that disturb it leave it whole again, except the last, which stops it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from raft_trio.cli.health import verdict
from raft_trio.kv import KVStateMachine
from raft_trio.storage import SnapshotMeta, write_snapshot
from stress.cluster import free_ports
from stress.runner import Checklist

RAFT = [sys.executable, "-m", "raft_trio"]
ROOT = Path(__file__).resolve().parent.parent
# Wide enough that rich never wraps a table row or a PASS line.
ENV = {k: v for k, v in os.environ.items() if k != "RAFT_TRIO_CLUSTER"}
ENV.update(COLUMNS="200", PYTHONUNBUFFERED="1")
# Heartbeats every 50 ms, elections after 1-2 s: quick, yet calm on a loaded machine.
TIMING = ["--tick", "0.05", "--election-ticks", "20"]
CLI_TIMEOUT = 60.0  # a single CLI call; generous, the machine may be busy
SETTLE_TIMEOUT = 60.0  # waiting for elections and catch-up


# ------------------------------------------------------------------ helpers



def raft(*args: str, timeout: float = CLI_TIMEOUT,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `raft-trio ARGS...` to completion (`env`: variables to set on top of ENV)."""
    return subprocess.run(
        [*RAFT, *args], capture_output=True, text=True, env={**ENV, **(env or {})},
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


def raft_parallel(
    commands: Sequence[Sequence[str]], timeout: float = CLI_TIMEOUT
) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent `raft-trio` commands at once (saves interpreter start-ups)."""
    procs = [
        subprocess.Popen([*RAFT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, env=ENV)
        for args in commands
    ]
    results = []
    try:
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def show(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}")


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "Exception Group" not in output, show(proc)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, show(proc)
    no_traceback(proc)
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """Exit `code`, nothing on stdout, and one line on stderr: `error: ...`."""
    assert proc.returncode == code, show(proc)
    assert proc.stdout == "", show(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), show(proc)
    return lines[0]


def short_error(proc: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    """A non-zero exit with a few lines saying what went wrong, and no traceback."""
    if code is None:
        assert proc.returncode != 0, show(proc)
    else:
        assert proc.returncode == code, show(proc)
    no_traceback(proc)
    output = proc.stdout + proc.stderr
    assert "error" in output.lower(), show(proc)
    # Log lines a member wrote before giving up do not count against the message.
    lines = [line for line in output.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) <= 8, show(proc)
    return output


def wait_for(what: str, check: Callable[[], str | None], timeout: float = SETTLE_TIMEOUT) -> None:
    """Poll `check` (None: satisfied, else the reason it is not) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        reason = check()
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {reason} after {timeout:g}s")
        time.sleep(0.3)


def table_rows(output: str) -> dict[int, list[str]]:
    """The body rows of a rich status table, as {id: cells}."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def members_alive_under(root: Path) -> list[str]:
    """Command lines of live `serve` processes that name a path under `root`: members a
    runner left behind, if any."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if " serve " in cmdline and str(root) in cmdline and state != "Z":
            found.append(cmdline)
    return found


class BackgroundRun:
    """`raft-trio ARGS` in its own session and with its own TMPDIR (root/tmp), so that a
    test can see what it leaves behind and a failed test can stop all of it."""

    def __init__(self, root: Path, *args: str, merge_stderr: bool = False):
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.stdout = root / "stdout.txt"
        self.stderr = root / "stderr.txt"
        self.args = list(args)
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(
                [*RAFT, *self.args], stdout=out,
                stderr=subprocess.STDOUT if merge_stderr else err, stdin=subprocess.DEVNULL,
                env={**ENV, "TMPDIR": str(self.tmp)}, text=True, start_new_session=True)

    def out(self) -> str:
        return self.stdout.read_text()

    def temp_dirs(self) -> list[str]:
        """What the run left in its TMPDIR."""
        return sorted(p.name for p in self.tmp.iterdir())

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.kill()
        return subprocess.CompletedProcess(self.args, self.proc.returncode, self.out(),
                                           self.stderr.read_text())

    def kill(self) -> None:
        """The runner and whatever is left of its process group (a failed test's clean-up)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


# ------------------------------------------------------------------ cluster


class Member:
    def __init__(self, node_id: int, address: str, data_dir: Path, log_path: Path,
                 command: list[str], env: dict[str, str] | None = None):
        self.id = node_id
        self.address = address
        self.data_dir = data_dir
        self.log_path = log_path
        self.command = command
        self.env = {**ENV, **(env or {})}  # variables on top of ENV
        self.proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """Three `raft-trio serve` processes on free loopback ports; member 3 uses --config."""

    def __init__(self, root: Path):
        self.root = root
        ports = free_ports(3)
        addresses = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(ports)}
        self.spec = ",".join(f"{i}={a}" for i, a in addresses.items())
        self.config = root / "cluster.toml"
        self.config.write_text(
            f'id = 3\ndata_dir = "{root / "member-3"}"\n\n[cluster]\n'
            + "".join(f'{i} = "{a}"\n' for i, a in addresses.items())
        )
        self.members: dict[int, Member] = {}
        for node_id, address in addresses.items():
            data_dir = root / f"member-{node_id}"
            if node_id == 3:
                command = [*RAFT, "serve", "--config", str(self.config), *TIMING]
            else:
                command = [*RAFT, "serve", "--id", str(node_id), "--cluster", self.spec,
                           "--data-dir", str(data_dir), *TIMING]
            self.members[node_id] = Member(node_id, address, data_dir,
                                           root / f"member-{node_id}.log", command)

    def launch(self, node_id: int) -> None:
        member = self.members[node_id]
        assert member.proc is None or member.proc.poll() is not None
        with open(member.log_path, "ab") as log:
            member.proc = subprocess.Popen(member.command, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=member.env)

    def wait_listening(self, node_id: int) -> None:
        member = self.members[node_id]
        host, port = member.address.rsplit(":", 1)

        def check() -> str | None:
            assert member.proc is not None
            if member.proc.poll() is not None:
                raise AssertionError(f"member {node_id} exited with {member.proc.returncode}:\n"
                                     + member.log_tail())
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError as exc:
                return f"not listening ({exc})"
            return None

        wait_for(f"member {node_id} to listen", check)

    def start(self, *node_ids: int) -> None:
        for node_id in node_ids:
            self.launch(node_id)
        for node_id in node_ids:
            self.wait_listening(node_id)

    def stop(self, node_id: int, sig: signal.Signals = signal.SIGTERM,
             timeout: float = 10.0) -> int:
        """Signal one member to stop; returns its exit code (fails if it does not exit in time)."""
        proc = self.members[node_id].proc
        assert proc is not None and proc.poll() is None, f"member {node_id} is not running"
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"member {node_id} ignored {sig.name} for {timeout:g}s:\n"
                                 + self.members[node_id].log_tail()) from None

    def kill(self, node_id: int) -> None:
        proc = self.members[node_id].proc
        assert proc is not None and proc.poll() is None, f"member {node_id} is not running"
        proc.kill()
        proc.wait()

    def running(self) -> list[int]:
        return [i for i, m in self.members.items() if m.proc is not None and m.proc.poll() is None]

    def shutdown(self) -> None:
        """Finalizer: SIGTERM everything still running, SIGKILL what does not exit."""
        procs = [m.proc for m in self.members.values() if m.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def status(self) -> dict[int, dict[str, Any]]:
        """Every member's status row by id (status exits 1 while there is no leader)."""
        proc = raft("status", "--cluster", self.spec, "--json")
        assert proc.returncode in (0, 1), show(proc)
        no_traceback(proc)
        rows = json.loads(proc.stdout)
        assert isinstance(rows, list)
        assert (proc.returncode == 0) == any(r["role"] == "leader" for r in rows), show(proc)
        return {row["id"]: row for row in rows}

    def wait_stable(self, up: set[int]) -> tuple[int, dict[int, dict[str, Any]]]:
        """Wait until exactly the members `up` answer and all follow one leader in one term."""
        found: dict[int, dict[str, Any]] = {}

        def check() -> str | None:
            rows = self.status()
            answering = {i for i, r in rows.items() if r["role"] != "down"}
            if answering != up:
                return f"members {sorted(answering)} answering, not {sorted(up)}"
            leaders = [i for i in up if rows[i]["role"] == "leader"]
            if len(leaders) != 1:
                return f"{len(leaders)} leaders: {rows}"
            leader = rows[leaders[0]]
            if any(rows[i]["term"] != leader["term"] or rows[i]["leader"] != leader["id"]
                   for i in up):
                return f"members disagree on term or leader: {rows}"
            found.update(rows)
            return None

        wait_for("a stable leader", check)
        leader_id = next(i for i in up if found[i]["role"] == "leader")
        return leader_id, found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cli-cluster"))
    try:
        c.start(1, 2, 3)
        c.wait_stable({1, 2, 3})
        yield c
    finally:
        c.shutdown()


# ------------------------------------------------------- help and bad input


HELP_COMMANDS = [
    [], ["serve"], ["kv"], ["kv", "set"], ["kv", "get"], ["kv", "del"], ["kv", "cas"],
    ["status"], ["health"], ["stress"], ["chaos"], ["snapshot"], ["members"], ["members", "list"],
    ["members", "add"], ["members", "remove"], ["members", "promote"], ["members", "transfer"],
]


def test_help_for_every_command() -> None:
    results = raft_parallel([[*cmd, "--help"] for cmd in HELP_COMMANDS])
    for proc in results:
        out = ok(proc)
        assert "Usage:" in out, show(proc)
        assert "--help" in out, show(proc)
    by_cmd = {" ".join(cmd): proc.stdout for cmd, proc in zip(HELP_COMMANDS, results, strict=True)}
    for name in ("serve", "kv", "status", "stress", "snapshot"):
        assert name in by_cmd[""]
    for name in ("set", "get", "del", "cas"):
        assert name in by_cmd["kv"]
    for option in ("--id", "--cluster", "--data-dir", "--config", "--tick", "--snapshot-entries",
                   "--snapshot-bytes", "--snapshot-trailing", "--session-expiry"):
        assert option in by_cmd["serve"]
    for option in ("--cluster", "--id"):
        assert option in by_cmd["snapshot"]
    for name in ("list", "add", "remove", "promote", "transfer"):
        assert name in by_cmd["members"]
    assert "--to" in by_cmd["members transfer"] and "--learner" in by_cmd["members add"]
    for option in ("--join", "--address"):
        assert option in by_cmd["serve"]
    for option in ("--entries", "--batch", "--clients", "--servers", "--up", "--processes",
                   "--data-dir", "--keep", "--seed", "--snapshot-entries", "--reconfigure"):
        assert option in by_cmd["stress"]
    assert "--json" in by_cmd["status"]
    assert "--absent" in by_cmd["kv cas"]
    for cmd, proc in zip(HELP_COMMANDS, results, strict=True):
        # An example of this very command, as a literal block: indented deeper than the
        # text and not rewrapped (which would pull it in line with the text).
        path = re.escape(" ".join(["raft-trio", *cmd]))
        assert re.search(rf"^ {{6}}{path} ", proc.stdout, re.MULTILINE), show(proc)
        # Flags are named, not typed.
        assert "<bool>" not in proc.stdout, show(proc)
    # Long example lines survive whole and continued ones stay on their own lines; square
    # brackets are text, not markup.
    assert "for i in 1 2 3; do raft-trio serve --id $i --data-dir d$i --cluster $members & done" \
        in by_cmd[""]
    assert re.search(r"^ {6}raft-trio serve --id 1 --data-dir data/1 \\\n {10}--cluster 1=",
                     by_cmd["serve"], re.MULTILINE), by_cmd["serve"]
    assert "[cluster]" in " ".join(by_cmd["serve"].split())
    # Where a cluster can be given by the environment, the help says so.
    for name in ("", "serve", "kv set", "status", "health", "members list", "snapshot"):
        assert "$RAFT_TRIO_CLUSTER" in by_cmd[name], by_cmd[name]
    assert "--version" in by_cmd[""]

    # The installed console script is the same program.
    script = Path(sys.executable).with_name("raft-trio")
    found = str(script) if script.exists() else shutil.which("raft-trio")
    assert found, "the raft-trio console script is not installed"
    proc = subprocess.run([found, "kv", "--help"], capture_output=True, text=True, env=ENV,
                          timeout=CLI_TIMEOUT)
    assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stdout + proc.stderr


def test_version() -> None:
    assert ok(raft("--version")) == f"raft-trio {metadata.version('raft-trio')}\n"


def test_the_license_is_an_spdx_expression() -> None:
    """A license table makes setuptools print a deprecation banner on every install."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    # setuptools reads license expressions from version 77 on.
    (setuptools,) = [r for r in pyproject["build-system"]["requires"]
                     if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert found and int(found.group(1)) >= 77, setuptools


def test_usage_errors_are_one_line() -> None:
    (unused,) = free_ports(1)
    c = ["--cluster", f"127.0.0.1:{unused}"]
    cases: list[tuple[list[str], str]] = [
        # Found by typer.
        (["kv", "get", *c], "error: missing argument 'KEY'"),
        (["kv", "get", "k", "--bogus", *c], "--bogus"),
        (["no-such-command"], "no-such-command"),
        (["kv", "get", "k", "--timeout", "soon", *c], "--timeout"),
        (["serve", "--log-level", "loud"], "'loud' is not a log level"),
        (["stress", "--log-level", "verbose", "--entries", "0"], "'verbose' is not a log level"),
        # Found by the commands.
        (["kv", "get", "k"], "give --cluster (or set RAFT_TRIO_CLUSTER)"),
        (["kv", "set", "\udcff", "v", *c], "keys and values must be valid UTF-8 text"),
        (["kv", "cas", "k", "\udcff", "new", *c], "keys and values must be valid UTF-8 text"),
        (["kv", "cas", "k", "old", "new", "--absent", *c], "with --absent give KEY NEW"),
        (["kv", "cas", "k", "new", *c], "give KEY EXPECTED NEW"),
    ]
    results = raft_parallel([args for args, _ in cases])
    for (_args, mention), proc in zip(cases, results, strict=True):
        assert mention in one_line_error(proc, 2), show(proc)


def test_cluster_strings_are_checked_before_anything_is_made(tmp_path: Path) -> None:
    (p1, p2) = free_ports(2)
    data = tmp_path / "data"
    cases: list[tuple[str, str]] = [
        (f"1=127.0.0.1:{p1};2=127.0.0.1:{p2}", "separate members with commas, not ';'"),
        (f"1=127.0.0.1:{p1},2=127.0.0.1:{p1}",
         f"address 127.0.0.1:{p1} is given twice (members 1 and 2)"),
        (f"1=127.0.0.1:{p1},1=127.0.0.1:{p2}", "member id 1 is given twice"),
        (f"1=127.0.0.1:{p1},2=::1:{p2}", f"an IPv6 address goes in brackets: [::1]:{p2}"),
        (f"1=127.0.0.1:{p1},2=300.1.2.3:{p2}", "bad IPv4 address '300.1.2.3'"),
        (f"1=127.0.0.1:{p1},x=127.0.0.1:{p2}", "bad member id 'x'"),
        (f"1=127.0.0.1:{p1},2=127.0.0.1:7001:{p2}", "one ':' too many"),
        (f"1=127.0.0.1:{p1},2=[::1:{p2}", "unbalanced brackets in '[::1'"),
    ]
    results = raft_parallel([["serve", "--id", "1", "--data-dir", str(data), "--cluster", spec]
                             for spec, _ in cases])
    for (_spec, mention), proc in zip(cases, results, strict=True):
        assert mention in one_line_error(proc, 2), show(proc)
    assert not data.exists()
    # Every command that takes --cluster checks it the same way.
    for command in (["status"], ["health"], ["kv", "get", "k"], ["members", "list"],
                    ["snapshot"]):
        proc = raft(*command, "--cluster", f"127.0.0.1:{p1},127.0.0.1:{p1}")
        assert f"address 127.0.0.1:{p1} is given twice" in one_line_error(proc, 2), show(proc)


def test_bad_arguments_give_a_short_error(tmp_path: Path) -> None:
    (port, unused) = free_ports(2)
    member = f"1=127.0.0.1:{port}"
    data = str(tmp_path / "data")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    cases: list[tuple[list[str], int | None, str]] = [
        (["serve", "--cluster", "nonsense"], 2, "nonsense"),
        (["serve", "--id", "1", "--cluster", "1=127.0.0.1:99999", "--data-dir", data], 2, "port"),
        (["serve", "--id", "1", "--cluster", member, "--data-dir", str(a_file)], 2,
         f"data dir {a_file} is a file"),
        (["serve", "--id", "1", "--cluster", member, "--data-dir", str(a_file / "sub")], 2,
         f"data dir {a_file / 'sub'} cannot be made: {a_file} is a file"),
        (["stress", "--entries", "0"], 2, "--entries"),
        (["serve", "--id", "1", "--cluster", member, "--data-dir", data,
          "--snapshot-entries", "-1"], 2, "--snapshot-entries"),
        (["serve", "--id", "1", "--cluster", member, "--data-dir", data,
          "--session-expiry", "-5"], 2, "--session-expiry"),
        (["snapshot", "--cluster", member, "--id", "5"], 2, "--id 5"),
        (["serve", "--id", "4", "--join", f"127.0.0.1:{port}", "--data-dir", data], 2,
         "--address"),
        (["serve", "--id", "4", "--join", "nowhere", "--address", f"127.0.0.1:{unused}",
          "--data-dir", data], 2, "--join: 'nowhere' is not host:port"),
        (["serve", "--id", "4", "--join", f"127.0.0.1:{port}", "--address", "nowhere",
          "--data-dir", data], 2, "--address: 'nowhere' is not host:port"),
        (["serve", "--id", "1", "--cluster", member, "--data-dir", data,
          "--listen-host", "0.0.0.0:7001"], 2, "--listen-host: '0.0.0.0:7001' has a port"),
        (["members", "add", "4", "nowhere", "--cluster", member], 2, "host:port"),
        (["kv", "get", "k", "--cluster", "1=bad"], 2, "bad"),
        (["kv", "get", "k", "--cluster", member, "--read", "eventual"], 2, "--read"),
        (["kv", "get", "k", "--cluster", member, "--timeout", "0"], 2, "--timeout"),
        (["status", "--cluster", f"127.0.0.1:{port}", "--timeout", "-1"], 2, "--timeout"),
        # Nothing listens there: the client gives up with a message that says why.
        (["kv", "set", "k", "v", "--cluster", f"127.0.0.1:{unused}", "--timeout", "1"], 1,
         f"no leader answered within 1s (members 127.0.0.1:{unused}; last problem: "
         f"127.0.0.1:{unused}: connection refused)"),
    ]
    results = raft_parallel([args for args, _, _ in cases])
    for (_args, code, mention), proc in zip(cases, results, strict=True):
        output = short_error(proc, code)
        assert mention.lower() in output.lower(), show(proc)


def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = raft("serve", "--id", "1", "--cluster", f"1=127.0.0.1:{port}",
                    "--data-dir", str(tmp_path / "data"))
    assert one_line_error(proc, 1) == (f"error: member 1 cannot start: address 127.0.0.1:{port} "
                                       f"is already in use"), show(proc)
    assert not (tmp_path / "data").exists()


def test_serve_config_file_is_checked(tmp_path: Path) -> None:
    """Every key of a --config file is checked, before anything is made. (The files
    below have no data_dir: a wrong one must be found before that is missed.)"""
    (port,) = free_ports(1)
    good = f'id = 1\n\n[cluster]\n1 = "127.0.0.1:{port}"\n'
    cases = [
        ("tick = 0.1\n" + good, "unknown key 'tick'"),
        (good.replace("[cluster]", "[clusters]"), "unknown key 'clusters'"),
        (good.replace("id = 1", 'id = "one"'), "id must be a positive number, not 'one'"),
        (good + f'2 = "127.0.0.1:{port}"\n', f"address 127.0.0.1:{port} is given twice"),
        (good.replace("[cluster]", "[cluster"), "is not valid TOML"),
    ]
    paths = []
    for n, (text, _) in enumerate(cases):
        paths.append(tmp_path / f"config-{n}.toml")
        paths[-1].write_text(text)
    results = raft_parallel([["serve", "--config", str(path)] for path in paths])
    for (_text, mention), path, proc in zip(cases, paths, results, strict=True):
        line = one_line_error(proc, 2)
        assert str(path) in line and mention in line, show(proc)


def test_serve_takes_the_cluster_from_the_environment(tmp_path: Path) -> None:
    (port, busy_port) = free_ports(2)
    address = f"127.0.0.1:{port}"
    env = {"RAFT_TRIO_CLUSTER": f"1={address}"}
    data_dir = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        # --cluster, then a --config file's [cluster], win over the environment: they
        # name the busy port.
        config = tmp_path / "cluster.toml"
        config.write_text(f'[cluster]\n1 = "127.0.0.1:{busy_port}"\n')
        for where in (["--cluster", f"1=127.0.0.1:{busy_port}"], ["--config", str(config)]):
            proc = raft("serve", "--id", "1", "--data-dir", str(data_dir), *where, env=env)
            assert f"127.0.0.1:{busy_port} is already in use" in one_line_error(proc, 1)

    c = Cluster(tmp_path)
    c.members = {1: Member(1, address, data_dir, tmp_path / "member-1.log",
                           [*RAFT, "serve", "--id", "1", "--data-dir", str(data_dir), *TIMING],
                           env=env)}
    try:
        c.start(1)
        # The client waits for the member to elect itself.
        assert ok(raft("kv", "set", "from", "env", "--timeout", "45", env=env)).strip() == "OK"
        assert ok(raft("kv", "get", "from", "--cluster", address)).strip() == "env"
        assert c.stop(1) == 0, c.members[1].log_tail()
    finally:
        c.shutdown()


def test_serve_join_says_at_once_what_it_asks(tmp_path: Path) -> None:
    """The first request to join may take the client's whole timeout (30 s) to fail;
    the member logs what it asks before that, not only once it fails."""
    (nobody, port) = free_ports(2)
    c = Cluster(tmp_path)
    data_dir = tmp_path / "member-4"
    c.members = {4: Member(4, f"127.0.0.1:{port}", data_dir, tmp_path / "member-4.log", [
        *RAFT, "serve", "--id", "4", "--join", f"127.0.0.1:{nobody}",
        "--address", f"127.0.0.1:{port}", "--data-dir", str(data_dir), *TIMING,
    ])}
    log = c.members[4].log_path
    try:
        c.launch(4)
        wait_for("the request to be logged", lambda: None if "asking" in log.read_text()
                 else "not yet")
        before, _, _ = log.read_text().partition("asking")
        assert "joining failed" not in before, log.read_text()
        assert f"asking 127.0.0.1:{nobody} to add member 4 at 127.0.0.1:{port}" in \
            log.read_text()
    finally:
        c.shutdown()


# ------------------------------------------------------------------- stress


PASS_LINE = re.compile(r"^\s*PASS\b", re.MULTILINE)
RATE = re.compile(r"[\d,.]+ entries/s")
STRESS_VARIANTS = {
    "in-process": [],
    # Members snapshot and compact often, so the deleted one is rebuilt from a snapshot.
    "processes": ["--processes", "--seed", "7", "--snapshot-entries", "300",
                  "--snapshot-trailing", "100", "--log-level", "info"],
    "up-2-of-3": ["--up", "2"],
    "reconfigure": ["--reconfigure"],
}


# Step 2's CPU time per entry, as each variant reports it.
_IN_PROCESS = re.compile(r"CPU ([\d.]+) us/entry \(members and clients in this process\)")
CPU_PER_ENTRY = {
    "in-process": _IN_PROCESS,
    "processes": re.compile(r"CPU ([\d.]+) us/entry \(members [\d.]+/[\d.]+/[\d.]+, "
                            r"clients [\d.]+\)"),
    "up-2-of-3": _IN_PROCESS,
    "reconfigure": _IN_PROCESS,
}


class StressRun:
    def __init__(self, root: Path, extra: list[str]):
        self.data_dir = root / "data"
        self.output = root / "output.txt"
        self.args = ["stress", "--entries", "2000", "--batch", "50", "--clients", "4",
                     "--data-dir", str(self.data_dir), "--keep", *extra]
        with open(self.output, "w") as out:
            # Its own process group, so that a finalizer can stop its members too.
            self.proc = subprocess.Popen([*RAFT, *self.args], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=ENV, text=True,
                                         start_new_session=True)

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        self.proc.wait(timeout)
        return subprocess.CompletedProcess(self.args, self.proc.returncode,
                                           self.output.read_text(), "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def stress_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StressRun]]:
    """The stress variants, started together: they mostly wait on elections, not the CPU."""
    runs: dict[str, StressRun] = {}
    try:
        for name, extra in STRESS_VARIANTS.items():
            runs[name] = StressRun(tmp_path_factory.mktemp(f"stress-{name}"), extra)
        yield runs
    finally:
        for run in runs.values():
            run.stop()


@pytest.mark.parametrize("variant", list(STRESS_VARIANTS))
def test_stress_passes_all_ten_steps(variant: str, stress_runs: dict[str, StressRun]) -> None:
    run = stress_runs[variant]
    proc = run.result(timeout=300)
    out = ok(proc)
    assert len(PASS_LINE.findall(out)) == 10, show(proc)
    assert "FAIL" not in out and "SKIP" not in out, show(proc)
    assert "10/10 steps passed" in out, show(proc)
    assert RATE.search(out), show(proc)
    cpu = CPU_PER_ENTRY[variant].search(" ".join(out.split()))  # the line may be wrapped
    assert cpu and float(cpu.group(1)) > 0, show(proc)
    # --keep leaves the members' data where --data-dir said.
    assert "data kept in" in out, show(proc)
    data_dir = run.data_dir
    assert (data_dir / "member-1").is_dir(), sorted(p.name for p in data_dir.iterdir())
    if variant == "processes":
        assert "processes" in out and (data_dir / "member-1.log").exists(), show(proc)
        assert "peak RSS per server" in out, show(proc)
        # Step 7 deleted the seed's victim; only a snapshot from the leader could rebuild it,
        # since every member's log starts well past index 1 by then.
        logs = "".join(p.read_text() for p in data_dir.glob("member-*.log"))
        assert "installed the leader's snapshot" in logs, logs[-3000:]
    if variant == "reconfigure":
        assert "joined, took over leadership, and member" in out, show(proc)
        assert (data_dir / "member-4").is_dir()
    if variant == "up-2-of-3":
        assert "2 of 3 members up" in out, show(proc)
        assert not (data_dir / "member-3").exists()


# ---------------------------------------------------------- a live cluster


def test_kv_commands(cluster: Cluster) -> None:
    c = ["--cluster", cluster.spec]
    # Independent commands of one phase run at once, as concurrent users would.
    (set_color, set_greeting, cas_absent) = raft_parallel([
        ["kv", "set", "color", "blue", *c],
        # Values are passed through untouched, spaces and non-ASCII included.
        ["kv", "set", "greeting", "hello, wörld  ", "-c", cluster.spec],
        ["kv", "cas", "fresh", "first", "--absent", *c],
    ])
    for proc in (set_color, set_greeting, cas_absent):
        assert ok(proc).strip() == "OK"

    (get_greeting, missing, cas_match, cas_absent_again) = raft_parallel([
        ["kv", "get", "greeting", *c],
        ["kv", "get", "no-such-key", *c],
        ["kv", "cas", "color", "blue", "green", *c],
        ["kv", "cas", "fresh", "second", "--absent", *c],
    ])
    assert ok(get_greeting) == "hello, wörld  \n"
    assert "no-such-key" in short_error(missing, 1)
    assert missing.stdout == "", show(missing)
    assert ok(cas_match).strip() == "OK"
    assert "did not match" in short_error(cas_absent_again, 1)

    (cas_mismatch, get_fresh, get_color, lease_color) = raft_parallel([
        ["kv", "cas", "color", "blue", "red", *c],
        ["kv", "get", "fresh", *c],
        ["kv", "get", "color", *c],  # green either way: the swap above cannot match
        ["kv", "get", "color", "--read", "lease", *c],
    ])
    assert "did not match" in short_error(cas_mismatch, 1)
    assert ok(get_fresh).strip() == "first"
    assert ok(get_color).strip() == "green"
    assert ok(lease_color).strip() == "green"
    # A stale read from one member: it may be behind, and then the key is not there yet;
    # once it has applied that far it answers with the value, and never anything else.
    first_member = cluster.members[1].address

    def stale_read() -> str | None:
        proc = raft("kv", "get", "fresh", "--read", "stale", "--cluster", first_member)
        if proc.returncode == 0:
            assert ok(proc) == "first\n", show(proc)
            return None
        assert "error: key 'fresh' not found" in one_line_error(proc, 1), show(proc)
        return "not applied there yet"

    wait_for("member 1 to answer a stale read with the value", stale_read)

    # Delete: the key is gone, and deleting it again says so.
    assert ok(raft("kv", "del", "color", *c)).strip() == "OK"
    (get_deleted, del_again) = raft_parallel([
        ["kv", "get", "color", *c],
        ["kv", "del", "color", *c],
    ])
    assert "not found" in short_error(get_deleted, 1)
    assert "not found" in short_error(del_again, 1)


HEALTHY = re.compile(r"healthy: member \d leads in term \d+ with \d of \d voters \(quorum \d\)"
                     r"(; not with it: [\d, ]+)?\n")


def test_status_table_and_json(cluster: Cluster) -> None:
    leader, rows = cluster.wait_stable({1, 2, 3})
    assert sorted(rows) == [1, 2, 3]
    for node_id, row in rows.items():
        assert row["address"] == cluster.members[node_id].address
        assert row["role"] in ("leader", "follower"), row
        assert row["leader"] == leader
        for field in ("term", "commit", "last_index", "applied"):
            assert isinstance(row[field], int), row
    assert [r["role"] for r in rows.values()].count("leader") == 1
    assert len({r["term"] for r in rows.values()}) == 1, rows
    assert rows[leader]["term"] >= 1

    # Member 3 runs from `serve --config cluster.toml`: it joined, with the data dir named there.
    assert "--config" in cluster.members[3].command
    assert rows[3]["role"] != "down"
    assert (cluster.members[3].data_dir / "wal").is_dir()

    out = ok(raft("status", "--cluster", cluster.spec))
    for column in ("id", "address", "role", "term", "leader", "commit", "last_index", "applied"):
        assert column in out, out
    table = table_rows(out)
    assert sorted(table) == [1, 2, 3], out
    for node_id, cells in table.items():
        assert cells[1] == cluster.members[node_id].address, out
    roles = [cells[2] for cells in table.values()]
    assert roles.count("leader") == 1 and roles.count("follower") == 2, out

    # Without ids in --cluster, each member says which it is: the order of the addresses
    # does not matter.
    addresses = ",".join(cluster.members[i].address for i in (2, 3, 1))
    plain = json.loads(ok(raft("status", "--cluster", addresses, "--json")))
    assert [(r["id"], r["address"]) for r in plain] == [
        (i, cluster.members[i].address) for i in (1, 2, 3)], plain
    # Ids that --cluster gets wrong are reported, and the members' own shown.
    swapped = ",".join(f"{i}={cluster.members[j].address}" for i, j in ((1, 2), (2, 1), (3, 3)))
    proc = raft("status", "--cluster", swapped, "--json")
    by_address = {r["address"]: r for r in json.loads(ok(proc))}
    for given, real in ((1, 2), (2, 1)):
        row = by_address[cluster.members[real].address]
        assert row["id"] == real and row["given_id"] == given, by_address
        assert (f"warning: {row['address']} was given as member {given} but is member {real}"
                in proc.stderr), show(proc)
    assert "given_id" not in by_address[cluster.members[3].address], by_address

    # health: one line, exit 0; any one member is enough to find the others.
    follower = next(i for i in (1, 2, 3) if i != leader)
    for spec in (cluster.spec, cluster.members[follower].address):
        line = ok(raft("health", "--cluster", spec))
        assert HEALTHY.fullmatch(line) and "with 3 of 3 voters (quorum 2)" in line, line


def _member(node_id: int, role: str, term: int, leader: int | None) -> dict[str, Any]:
    return {"id": node_id, "role": role, "term": term, "leader": leader}


@pytest.mark.parametrize(("statuses", "healthy", "line"), [
    ([_member(1, "leader", 5, 1), _member(2, "follower", 5, 1), _member(3, "follower", 5, 1)],
     True, "member 1 leads in term 5 with 3 of 3 voters (quorum 2)"),
    ([_member(1, "leader", 5, 1), _member(3, "follower", 5, 1)],
     True, "member 1 leads in term 5 with 2 of 3 voters (quorum 2); not with it: 2"),
    # A leader that has not noticed yet that it lost its followers.
    ([_member(1, "leader", 5, 1)],
     False, "member 1 leads in term 5 with 1 of 3 voters (quorum 2); not with it: 2, 3"),
    # Followers of another term or leader do not count.
    ([_member(1, "leader", 5, 1), _member(2, "follower", 4, 1), _member(3, "candidate", 6, None)],
     False, "member 1 leads in term 5 with 1 of 3 voters (quorum 2); not with it: 2, 3"),
    ([_member(1, "follower", 6, 2), _member(2, "follower", 6, None)],
     False, "member 1 was named leader but does not answer as one"),
])
def test_health_needs_a_quorum_following_the_leader(
    statuses: list[dict[str, Any]], healthy: bool, line: str
) -> None:
    voters = {i: f"127.0.0.1:{7000 + i}" for i in (1, 2, 3)}
    assert verdict(voters, 1, {s["id"]: s for s in statuses}) == (healthy, line)


def test_snapshot_command_and_status_columns(cluster: Cluster) -> None:
    cluster.wait_stable({1, 2, 3})
    ok(raft("kv", "set", "snap", "shot", "--cluster", cluster.spec))
    out = ok(raft("snapshot", "--cluster", cluster.spec))
    taken = {int(m[1]): int(m[2]) for m in re.finditer(r"member (\d+): snapshot at index (\d+)",
                                                        out)}
    assert sorted(taken) == [1, 2, 3], out
    assert all(index > 0 for index in taken.values()), out
    rows = {r["id"]: r for r in json.loads(ok(raft("status", "--cluster", cluster.spec,
                                                   "--json")))}
    for node_id, index in taken.items():
        assert rows[node_id]["snapshot_index"] >= index, rows[node_id]
        assert rows[node_id]["log_bytes"] > 0, rows[node_id]
        snaps = list((cluster.members[node_id].data_dir / "snapshots").glob("*.snap"))
        assert len(snaps) == 1, snaps
    table = ok(raft("status", "--cluster", cluster.spec))
    assert "snapshot" in table and "log_size" in table, table
    one = ok(raft("snapshot", "--cluster", cluster.spec, "--id", "2"))
    assert one.startswith("member 2: snapshot at index") and "member 1" not in one, one
    assert ok(raft("kv", "get", "snap", "--cluster", cluster.spec)).strip() == "shot"

    # --id with bare addresses snapshots the member with that id, wherever it is listed.
    ok(raft("kv", "set", "snap", "again", "--cluster", cluster.spec))
    commit = max(r["commit"] for r in cluster.status().values())
    wait_for("member 3 to apply the write", lambda: None if cluster.status()[3]["applied"]
             >= commit else "not yet")
    addresses = ",".join(cluster.members[i].address for i in (2, 3, 1))
    out = ok(raft("snapshot", "--id", "3", "--cluster", addresses))
    found = re.fullmatch(r"member 3: snapshot at index (\d+)\n", out)
    assert found and int(found.group(1)) >= commit, out
    rows = cluster.status()
    assert rows[3]["snapshot_index"] == int(found.group(1)), rows[3]
    assert rows[1]["snapshot_index"] < commit and rows[2]["snapshot_index"] < commit, rows


def test_serve_refuses_a_corrupt_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    state = KVStateMachine()
    state.apply(["set", "k", "v"])
    path = write_snapshot(data / "snapshots", SnapshotMeta(5, 1, (1,)), state.snapshot)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    (port,) = free_ports(1)
    proc = raft("serve", "--id", "1", "--cluster", f"1=127.0.0.1:{port}", "--data-dir", str(data))
    output = short_error(proc, 1)
    assert "refusing to start" in output and path.name in output, show(proc)
    path.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated
    proc = raft("serve", "--id", "1", "--cluster", f"1=127.0.0.1:{port}", "--data-dir", str(data))
    output = short_error(proc, 1)
    assert "refusing to start" in output and path.name in output, show(proc)


def test_serve_snapshots_by_bytes_applied(tmp_path: Path) -> None:
    """`serve --snapshot-bytes`: with no entry count, a member snapshots once the commands
    applied since its last snapshot add up to that many bytes, and not before."""
    (port,) = free_ports(1)
    spec = f"1=127.0.0.1:{port}"
    with open(tmp_path / "member.log", "wb") as log:
        proc = subprocess.Popen(
            [*RAFT, "serve", "--id", "1", "--cluster", spec, "--data-dir",
             str(tmp_path / "data"), "--snapshot-entries", "0", "--snapshot-bytes", "3000",
             *TIMING],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV)
    try:
        def status() -> dict[str, Any]:
            (row,) = json.loads(ok(raft("status", "--cluster", spec, "--json")))
            assert isinstance(row, dict)
            return row

        ok(raft("kv", "set", "a", "x" * 2000, "--cluster", spec))
        assert status()["snapshot_index"] == 0  # about 2000 bytes applied: under the limit
        ok(raft("kv", "set", "b", "x" * 2000, "--cluster", spec))
        wait_for("a snapshot", lambda: None if status()["snapshot_index"] > 0 else "none yet")
        assert list((tmp_path / "data" / "snapshots").glob("*.snap"))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_leader_killed_acknowledged_writes_survive(cluster: Cluster) -> None:
    c = cluster.spec
    keys = {f"durable-{n}": f"value-{n}" for n in range(3)}
    for proc in raft_parallel([["kv", "set", k, v, "--cluster", c] for k, v in keys.items()]):
        assert ok(proc).strip() == "OK"

    old_leader, before = cluster.wait_stable({1, 2, 3})
    cluster.kill(old_leader)
    survivors = {1, 2, 3} - {old_leader}

    # The client skips the dead member and finds whoever wins the election.
    assert ok(raft("kv", "set", "after-kill", "yes", "--cluster", c, "--timeout", "45")
              ).strip() == "OK"
    reads = raft_parallel([["kv", "get", key, "--cluster", c, "--timeout", "45"]
                           for key in [*keys, "after-kill"]])
    for value, proc in zip([*keys.values(), "yes"], reads, strict=True):
        assert ok(proc).strip() == value, show(proc)

    new_leader, rows = cluster.wait_stable(survivors)
    assert new_leader != old_leader
    assert rows[old_leader]["role"] == "down"
    assert rows[new_leader]["term"] > before[old_leader]["term"]

    # Restarted on the same data dir, it catches up with the leader.
    cluster.start(old_leader)

    def caught_up() -> str | None:
        st = cluster.status()
        back, lead = st[old_leader], st[new_leader]
        if back["role"] == "down" or lead["role"] != "leader":
            return f"not settled: {st}"
        if back["last_index"] != lead["last_index"] or back["commit"] != lead["commit"]:
            return (f"member {old_leader} at last index {back['last_index']}, commit "
                    f"{back['commit']}; leader at {lead['last_index']}, {lead['commit']}")
        return None

    wait_for(f"member {old_leader} to catch up", caught_up)


def test_stopped_member_shows_down_and_members_exit_cleanly(cluster: Cluster) -> None:
    leader, _ = cluster.wait_stable({1, 2, 3})
    victim = next(i for i in (1, 2, 3) if i != leader)
    assert cluster.stop(victim) == 0, cluster.members[victim].log_tail()
    assert "SIGTERM received" in cluster.members[victim].log_path.read_text()

    out = ok(raft("status", "--cluster", cluster.spec))
    table = table_rows(out)
    assert table[victim][2] == "down", out
    assert all(table[i][2] != "down" for i in (1, 2, 3) if i != victim), out
    rows = cluster.status()
    assert rows[victim]["role"] == "down" and rows[victim]["error"], rows
    # Given without ids, the stopped member's id is unknown, not guessed from its position.
    victim_address = cluster.members[victim].address
    bare = ",".join(m.address for m in cluster.members.values())
    bare_rows = {r["address"]: r for r in json.loads(ok(raft("status", "-c", bare, "--json")))}
    assert bare_rows[victim_address]["id"] is None, bare_rows
    assert bare_rows[victim_address]["role"] == "down", bare_rows
    bare_table = ok(raft("status", "--cluster", bare))
    assert re.search(rf"│ \? +│ {re.escape(victim_address)} +│ down ", bare_table), bare_table
    assert f"{victim_address} (id unknown) is down: connection refused" in bare_table, bare_table

    # Two of three still make a quorum.
    assert ok(raft("kv", "set", "two-of-three", "ok", "--cluster", cluster.spec)).strip() == "OK"
    line = ok(raft("health", "--cluster", cluster.spec))
    assert HEALTHY.fullmatch(line) and f"with 2 of 3 voters (quorum 2); not with it: {victim}\n" \
        in line, line

    # The rest: Ctrl-C (SIGINT) is as clean as SIGTERM.
    first, *others = cluster.running()
    assert cluster.stop(first, signal.SIGINT) == 0, cluster.members[first].log_tail()
    assert "SIGINT received" in cluster.members[first].log_path.read_text()
    # One of three is no quorum, whether or not that one still thinks it leads.
    unhealthy = raft("health", "--cluster", cluster.spec)
    assert unhealthy.returncode == 1 and unhealthy.stdout.startswith("unhealthy: "), \
        show(unhealthy)
    assert len(unhealthy.stdout.splitlines()) == 1, show(unhealthy)
    for node_id in others:
        assert cluster.stop(node_id) == 0, cluster.members[node_id].log_tail()
    # No leader: status still shows every member, and exits 1.
    proc = raft("status", "--cluster", cluster.spec, "--json")
    assert proc.returncode == 1, show(proc)
    assert [r["role"] for r in json.loads(proc.stdout)] == ["down"] * 3
    assert proc.stderr == "error: none of the 3 members answered\n", show(proc)
    proc = raft("health", "--cluster", cluster.spec)
    assert (proc.returncode, proc.stdout) == (1, "unhealthy: none of the 3 members answered\n"), \
        show(proc)

    # A member whose log was damaged refuses to start, with a message. Damage the first
    # record of the leader's log (records: 4-byte length, 4-byte crc, payload); records
    # follow it, so this cannot pass for a write interrupted by a crash.
    damaged_member = cluster.members[leader]
    segment = sorted((damaged_member.data_dir / "wal").glob("wal-*.log"))[0]
    data = bytearray(segment.read_bytes())
    length = int.from_bytes(data[:4], "big")
    assert 8 + length < len(data), f"{segment}: only one record"
    data[8 + length // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    proc = subprocess.run(damaged_member.command, capture_output=True, text=True,
                          env=ENV, timeout=30, stdin=subprocess.DEVNULL)
    assert "refusing to start" in short_error(proc, 1), show(proc)


def test_the_embedding_example_runs() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "embedded.py"
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "greeting = hello" in proc.stdout
    assert "a = 3" in proc.stdout
    assert "a follower refuses" in proc.stdout
    assert proc.stdout.rstrip().endswith("all members stopped")


# ------------------------------------------------------------- membership


def test_join_transfer_and_remove_from_the_command_line(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    c = Cluster(tmp_path_factory.mktemp("members-cluster"))
    try:
        c.start(1, 2, 3)
        old_leader, _ = c.wait_stable({1, 2, 3})
        (port,) = free_ports(1)
        address = f"127.0.0.1:{port}"
        data_dir = c.root / "member-4"
        c.members[4] = Member(4, address, data_dir, c.root / "member-4.log", [
            *RAFT, "serve", "--id", "4", "--join", c.members[1].address,
            "--address", address, "--data-dir", str(data_dir), *TIMING,
        ])
        c.start(4)
        spec = c.spec

        def voters() -> dict[str, Any]:
            info: dict[str, Any] = json.loads(ok(raft("members", "list", "--cluster", spec,
                                                      "--json")))
            return info

        wait_for("member 4 to join as a voter",
                 lambda: None if "4" in voters()["voters"] else f"members: {voters()}")
        listing = ok(raft("members", "list", "--cluster", spec))
        assert f"4\t{address}\tvoter" in listing, listing
        ok(raft("kv", "set", "during", "membership", "--cluster", spec))

        # Clear errors for changes that cannot be made.
        already = raft("members", "add", "4", c.members[1].address, "--cluster", spec)
        assert "already" in short_error(already, 1), show(already)
        unknown = raft("members", "remove", "9", "--cluster", spec)
        assert "not in the cluster" in short_error(unknown, 1), show(unknown)
        not_voter = raft("members", "transfer", "--to", "9", "--cluster", spec)
        assert "not a voter" in short_error(not_voter, 1), show(not_voter)

        out = ok(raft("members", "transfer", "--to", "4", "--cluster", spec))
        assert out.strip() == "member 4 leads", out
        out = ok(raft("members", "remove", str(old_leader), "--cluster", spec))
        assert f"{old_leader}\t" not in out, out
        # The removed member shuts itself down, cleanly.
        proc = c.members[old_leader].proc
        assert proc is not None
        assert proc.wait(20) == 0, c.members[old_leader].log_tail()
        rest = ",".join(f"{i}={m.address}" for i, m in c.members.items() if i != old_leader)
        assert ok(raft("kv", "get", "during", "--cluster", rest)).strip() == "membership"
        ok(raft("kv", "set", "after", "removal", "--cluster", rest))
    finally:
        c.shutdown()


@pytest.mark.parametrize(("before", "after", "expected"), [
    ({1: 1.0, 2: 2.0}, {1: 2.0, 2: 2.5}, "CPU 3.5 us/entry (members 2.0/1.0, clients 0.5)"),
    ({}, {}, "CPU 0.5 us/entry (members and clients in this process)"),
    ({1: 1.0, 2: 2.0}, {1: 2.0, 3: 0.1}, "not measured (the member processes changed"),
    ({1: 1.0}, None, "not measured (no /proc"),
    (None, {1: 1.0}, "not measured (no /proc"),
])
def test_cpu_per_entry_is_reported_only_when_every_member_was_measured(
    before: dict[int, float] | None, after: dict[int, float] | None, expected: str
) -> None:
    checklist = SimpleNamespace(o=SimpleNamespace(entries=500_000),
                                cluster=SimpleNamespace(cpu_seconds=lambda: after))
    assert expected in Checklist.cpu_per_entry(checklist, 0.25, before)  # type: ignore[arg-type]
