"""A whole file system to test: metadata members (Raft, `Namespace`, the registry) and
data nodes, each of which a test can stop, restart or wipe; in this process
(`fs_cluster()`, `DataNodes`) or as `raft-trio serve --state-machine fs` and
`raft-trio datanode` processes (`MetadataProcesses`, `DataNodeProcesses`)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from raft_trio.fs.client import FileSystem
from raft_trio.fs.datanode.server import DataNode
from raft_trio.fs.members import serve_datanode
from raft_trio.fs.metadata import Namespace
from raft_trio.fs.registry import Registry, fs_service
from raft_trio.server import Service, Timing
from stress.cluster import Cluster, InProcessCluster, ProcessCluster, free_ports


class DataNodeSet(Protocol):
    """What the checklists need of a set of data nodes, in this process or not."""

    @property
    def addresses(self) -> dict[int, str]:
        """Every data node started so far: id -> host:port."""
        ...

    def running(self) -> list[int]: ...

    async def start(self, node_id: int) -> object: ...

    async def stop(self, node_id: int) -> None: ...

    def wipe(self, node_id: int) -> None: ...

    def node_dir(self, node_id: int) -> Path: ...

    def kill_all_now(self) -> None: ...

    def cpu_seconds(self) -> dict[int, float] | None: ...

    def peak_rss(self) -> dict[int, int]: ...


class DataNodes:
    """Data nodes over loopback in this process, reporting to the metadata members at
    `metadata`."""

    def __init__(self, nursery: trio.Nursery, root: Path, metadata: list[str],
                 heartbeat: float = 0.1):
        self.nursery = nursery
        self.root = root
        self.metadata = metadata
        self.heartbeat = heartbeat
        self.nodes: dict[int, DataNode] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.stopped: dict[int, trio.Event] = {}
        self.ports: dict[int, int] = {}

    @property
    def addresses(self) -> dict[int, str]:
        return {i: f"127.0.0.1:{port}" for i, port in sorted(self.ports.items())}

    def data_dir(self, node_id: int) -> Path:
        return self.root / f"datanode-{node_id}"

    node_dir = data_dir

    def running(self) -> list[int]:
        return sorted(self.scopes)

    async def start(self, node_id: int) -> DataNode:
        if node_id not in self.ports:
            (self.ports[node_id],) = free_ports(1)
        node = await self.nursery.start(self._run, node_id)
        assert isinstance(node, DataNode)
        return node

    async def _run(self, node_id: int, task_status: trio.TaskStatus[DataNode]) -> None:
        done = self.stopped[node_id] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self.scopes[node_id] = scope
                # The node's tasks live in this scope: cancelling it stops the node
                # (its listener, connections and heartbeats), not only this task.
                async with trio.open_nursery() as nursery:
                    node = await nursery.start(partial(
                        serve_datanode, node_id, f"127.0.0.1:{self.ports[node_id]}",
                        self.data_dir(node_id), self.metadata, heartbeat=self.heartbeat))
                    self.nodes[node_id] = node
                    task_status.started(node)
        finally:
            self.scopes.pop(node_id, None)
            done.set()

    async def stop(self, node_id: int) -> None:
        """Stop a data node as a crash would, as far as its peers can tell (connections
        cut mid-request); returns once it is gone and its directory is free again."""
        self.scopes[node_id].cancel()
        await self.stopped[node_id].wait()

    def wipe(self, node_id: int) -> None:
        shutil.rmtree(self.data_dir(node_id), ignore_errors=True)

    def kill_all_now(self) -> None:
        """Nothing to do: they live and die with this process's trio run."""

    def cpu_seconds(self) -> dict[int, float] | None:
        return {}  # in this process: counted with the caller's

    def peak_rss(self) -> dict[int, int]:
        return {}


class MetadataProcesses(ProcessCluster):
    """Metadata members as `raft-trio serve --state-machine fs` processes."""

    def __init__(self, *args: Any, dead_after: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dead_after = dead_after

    def _command(self, node_id: int) -> list[str]:
        return [*super()._command(node_id), "--state-machine", "fs",
                "--dead-after", str(self.dead_after)]


class DataNodeProcesses(ProcessCluster):
    """Data nodes as `raft-trio datanode` processes at `addresses` (id -> host:port), each
    with its directory and log under `root`, reporting to the members at `metadata`."""

    what = "data node"

    def __init__(self, addresses: dict[int, str], root: Path, metadata: list[str], *,
                 heartbeat: float, log_level: str):
        super().__init__(dict(addresses), root, Timing(), log_level)
        self.metadata = metadata
        self.heartbeat = heartbeat

    @property
    def addresses(self) -> dict[int, str]:
        return dict(self.members)

    def member_dir(self, node_id: int) -> Path:
        return self.data_dir / f"datanode-{node_id}"

    def node_dir(self, node_id: int) -> Path:
        return self.member_dir(node_id)

    def log_path(self, node_id: int) -> Path:
        return self.data_dir / f"datanode-{node_id}.log"

    def _command(self, node_id: int) -> list[str]:
        return [
            sys.executable, "-m", "raft_trio", "datanode",
            "--id", str(node_id), "--listen", self.members[node_id],
            "--data-dir", str(self.member_dir(node_id)),
            "--cluster", ",".join(self.metadata),
            "--heartbeat", str(self.heartbeat),
            "--log-level", self.log_level,
        ]


class FSCluster:
    """Metadata members and data nodes together."""

    def __init__(self, metadata: Cluster, datanodes: DataNodeSet):
        self.metadata = metadata
        self.datanodes = datanodes

    @property
    def addresses(self) -> list[str]:
        return list(self.metadata.members.values())

    def client(self, **options: Any) -> FileSystem:
        return FileSystem(self.addresses, **options)

    async def wait_datanodes(self, count: int, timeout: float = 10.0) -> None:
        """Until the leader counts `count` live data nodes."""
        async with self.client() as fs:
            await fs.wait_for_datanodes(count, timeout)


FAST = Timing(tick_interval=0.02, election_ticks=10)


def fs_services(dead_after: float) -> list[Service]:
    return [fs_service(Registry(dead_after))]


def in_process_metadata(nursery: trio.Nursery, members: dict[int, str], root: Path,
                        timing: Timing, log_level: str, dead_after: float, **kwargs: Any
                        ) -> InProcessCluster:
    """Metadata members in this process: each a `Namespace` with the registry service."""
    return InProcessCluster(nursery, members, root, timing, log_level,
                            state_machine=Namespace,
                            services=lambda: fs_services(dead_after), **kwargs)


@asynccontextmanager
async def fs_cluster(root: Path, *, members: int = 3, datanodes: int = 3,
                     timing: Timing = FAST,
                     dead_after: float = 1.0, heartbeat: float = 0.1
                     ) -> AsyncIterator[FSCluster]:
    """`members` metadata members and `datanodes` data nodes, all started and reporting."""
    addresses = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(members))}
    async with trio.open_nursery() as nursery:
        metadata = in_process_metadata(nursery, addresses, root, timing, "warning", dead_after)
        for node_id in addresses:
            await metadata.start(node_id)
        nodes = DataNodes(nursery, root, list(addresses.values()), heartbeat)
        for node_id in range(1, datanodes + 1):
            await nodes.start(node_id)
        cluster = FSCluster(metadata, nodes)
        await cluster.wait_datanodes(datanodes)
        yield cluster
        nursery.cancel_scope.cancel()
