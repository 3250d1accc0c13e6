"""Start and stop the members of a stress cluster, in this process or as OS processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from raft_trio.kv import KVStateMachine
from raft_trio.server import (
    DEFAULT_SESSION_EXPIRY,
    RaftServer,
    Service,
    SnapshotPolicy,
    Timing,
)
from raft_trio.statemachine import StateMachine


def free_ports(count: int) -> list[int]:
    """Ports the OS just handed out; good enough for loopback tests."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """Common shape of the two harnesses: members by id, data under one directory."""

    def __init__(self, members: dict[int, str], data_dir: Path, timing: Timing, log_level: str,
                 snapshots: SnapshotPolicy | None = None, *, fault_injection: bool = False,
                 session_expiry: float = DEFAULT_SESSION_EXPIRY):
        self.members = members
        # Members accept the "faults" op (cut links to chosen peers): for chaos runs.
        self.fault_injection = fault_injection
        self.data_dir = data_dir
        self.timing = timing
        self.log_level = log_level
        self.snapshots = snapshots if snapshots is not None else SnapshotPolicy()
        self.session_expiry = session_expiry
        # The voters in force, as far as the harness knows: the first configuration
        # until the caller reports a change (`reconfigured`).
        self.configuration = dict(members)
        # The configuration each member's data directory was created with. A
        # member that has no snapshot yet counts its log from that configuration,
        # so every restart must give it the same one. A fresh directory (a first
        # start, or after `wipe`) gets the configuration then in force: a member
        # deleted after a reconfiguration must know the members that now ask for
        # its vote, or it cannot answer them. Empty: it started outside the
        # configuration and joins (added by the caller, or, as a process, by itself).
        self.bootstrap: dict[int, dict[int, str]] = {}

    def add_joiner(self, node_id: int, address: str) -> None:
        """A member outside the configuration: it starts empty and joins."""
        self.members[node_id] = address

    def reconfigured(self, voters: dict[int, str]) -> None:
        self.configuration = dict(voters)

    def bootstrap_of(self, node_id: int) -> dict[int, str]:
        """The configuration to start `node_id` with (see `bootstrap`)."""
        if node_id not in self.bootstrap:
            self.bootstrap[node_id] = (dict(self.configuration)
                                       if node_id in self.configuration else {})
        return self.bootstrap[node_id]

    def member_dir(self, node_id: int) -> Path:
        return self.data_dir / f"member-{node_id}"

    def wipe(self, node_id: int) -> None:
        shutil.rmtree(self.member_dir(node_id), ignore_errors=True)
        self.bootstrap.pop(node_id, None)

    def running(self) -> list[int]:
        raise NotImplementedError

    async def start(self, node_id: int) -> None:
        raise NotImplementedError

    async def stop(self, node_id: int) -> None:
        raise NotImplementedError

    async def reap(self, node_id: int) -> None:
        """Wait for a member that stops by itself (removed from the cluster) to be gone."""
        raise NotImplementedError

    def kill_all_now(self) -> None:
        """Last resort, outside trio, when the run ended before it stopped every member:
        no member process may outlive the runner."""

    def peak_rss(self) -> dict[int, int]:
        """Peak resident memory per member in bytes, where it can be measured."""
        return {}

    def cpu_seconds(self) -> dict[int, float] | None:
        """CPU time (user + system) each running member process has used so far;
        empty when the members run in this process, None when it cannot be read."""
        return {}

    def disk_usage(self) -> dict[int, int]:
        """Bytes in each member's data directory (log and snapshots)."""
        usage = {}
        for node_id in self.members:
            root = self.member_dir(node_id)
            usage[node_id] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        return usage


class InProcessCluster(Cluster):
    """Every member is a RaftServer in this process's trio loop, each with a state machine
    made by `state_machine` (the key-value store) and application services made by
    `services` (each member its own: their soft state is per member)."""

    def __init__(self, nursery: trio.Nursery, *args: Any,
                 state_machine: Callable[[], StateMachine] | None = None,
                 services: Callable[[], Sequence[Service]] = tuple, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.nursery = nursery
        # Looked up now, not when this was defined: tests swap the module's KVStateMachine.
        self.state_machine = state_machine if state_machine is not None else KVStateMachine
        self.services = services
        self.scopes: dict[int, trio.CancelScope] = {}
        self.stopped: dict[int, trio.Event] = {}
        self.servers: dict[int, RaftServer] = {}

    def running(self) -> list[int]:
        return sorted(self.scopes)

    async def start(self, node_id: int) -> None:
        await self.nursery.start(self._run, node_id)

    async def _run(self, node_id: int, task_status: trio.TaskStatus[None]) -> None:
        bootstrap = self.bootstrap_of(node_id)
        joining = not bootstrap
        server = RaftServer(node_id, bootstrap, self.member_dir(node_id),
                            self.state_machine(), timing=self.timing, snapshots=self.snapshots,
                            address=self.members[node_id] if joining else None,
                            fault_injection=self.fault_injection,
                            session_expiry=self.session_expiry, services=self.services())
        self.servers[node_id] = server
        done = self.stopped[node_id] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self.scopes[node_id] = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(server.serve)
                    task_status.started()
        finally:
            done.set()

    async def stop(self, node_id: int) -> None:
        self.scopes.pop(node_id).cancel()
        await self.stopped[node_id].wait()

    async def reap(self, node_id: int) -> None:
        await self.stopped[node_id].wait()
        self.scopes.pop(node_id, None)


class ProcessCluster(Cluster):
    """Every member is `python -m raft_trio serve` in its own process (uses every core)."""

    # What its processes are called in errors.
    what = "member"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.procs: dict[int, trio.Process] = {}
        self.rss: dict[int, int] = {}

    def running(self) -> list[int]:
        return sorted(self.procs)

    def _command(self, node_id: int) -> list[str]:
        bootstrap = self.bootstrap_of(node_id)
        spec = ",".join(f"{i}={a}" for i, a in sorted(bootstrap.items()))
        where = (["--cluster", spec] if bootstrap else
                 ["--join", ",".join(self.configuration.values()),
                  "--address", self.members[node_id]])
        return [
            sys.executable, "-m", "raft_trio", "serve",
            "--id", str(node_id), *where,
            "--data-dir", str(self.member_dir(node_id)),
            "--tick", str(self.timing.tick_interval),
            "--election-ticks", str(self.timing.election_ticks),
            "--snapshot-entries", str(self.snapshots.entries),
            "--snapshot-bytes", str(self.snapshots.bytes),
            "--snapshot-trailing", str(self.snapshots.trailing),
            "--session-expiry", str(self.session_expiry),
            "--log-level", self.log_level,
            *(["--fault-injection"] if self.fault_injection else []),
        ]

    def log_path(self, node_id: int) -> Path:
        """Where the process's output goes."""
        return self.data_dir / f"member-{node_id}.log"

    async def start(self, node_id: int) -> None:
        log_path = self.log_path(node_id)
        log_file = open(log_path, "ab")  # handed to the child; our copy is closed just below
        proc = await trio.lowlevel.open_process(
            self._command(node_id), stdout=log_file, stderr=subprocess.STDOUT,
        )
        log_file.close()
        self.procs[node_id] = proc
        host, port = self.members[node_id].rsplit(":", 1)
        with trio.fail_after(30):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.what} {node_id} exited with {proc.returncode}; see {log_path}"
                    )
                try:
                    stream = await trio.open_tcp_stream(host, int(port))
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                return

    async def stop(self, node_id: int) -> None:
        proc = self.procs[node_id]
        self.rss[node_id] = max(self.rss.get(node_id, 0), _peak_rss(proc.pid))
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            await proc.wait()
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
        # Only once it is gone: a stop cut short leaves it to the next (or to kill_all_now).
        self.procs.pop(node_id, None)

    async def reap(self, node_id: int) -> None:
        proc = self.procs[node_id]
        self.rss[node_id] = max(self.rss.get(node_id, 0), _peak_rss(proc.pid))
        await proc.wait()
        self.procs.pop(node_id, None)

    def kill_all_now(self) -> None:
        for proc in self.procs.values():
            proc.kill()  # a no-op for one that has exited

    def peak_rss(self) -> dict[int, int]:
        for node_id, proc in self.procs.items():
            self.rss[node_id] = max(self.rss.get(node_id, 0), _peak_rss(proc.pid))
        return dict(self.rss)

    def cpu_seconds(self) -> dict[int, float] | None:
        used = {}
        for node_id, proc in self.procs.items():
            seconds = _cpu_seconds(proc.pid)
            if seconds is None:
                return None
            used[node_id] = seconds
        return used


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name in parentheses may hold spaces: split after it.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _peak_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
