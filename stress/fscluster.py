"""A whole file system in this process: metadata members (Raft, `Namespace`, the
registry) and data nodes, each of which a test can stop, restart or wipe."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from raft_trio.fs.client import FileSystem
from raft_trio.fs.datanode.server import DataNode
from raft_trio.fs.members import serve_datanode
from raft_trio.fs.metadata import Namespace
from raft_trio.fs.registry import Registry, fs_service
from raft_trio.server import Service, Timing
from stress.cluster import InProcessCluster, free_ports


class DataNodes:
    """Data nodes over loopback, reporting to the metadata members at `metadata`."""

    def __init__(self, nursery: trio.Nursery, root: Path, metadata: list[str],
                 heartbeat: float = 0.1):
        self.nursery = nursery
        self.root = root
        self.metadata = metadata
        self.heartbeat = heartbeat
        self.nodes: dict[int, DataNode] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.ports: dict[int, int] = {}

    def data_dir(self, node_id: int) -> Path:
        return self.root / f"datanode-{node_id}"

    async def start(self, node_id: int) -> DataNode:
        if node_id not in self.ports:
            (self.ports[node_id],) = free_ports(1)
        node = await self.nursery.start(self._run, node_id)
        assert isinstance(node, DataNode)
        return node

    async def _run(self, node_id: int, task_status: trio.TaskStatus[DataNode]) -> None:
        with trio.CancelScope() as scope:
            self.scopes[node_id] = scope
            # The node runs in this task's own nursery, so that `stop` cancels it.
            async with trio.open_nursery() as nursery:
                node = await nursery.start(partial(
                    serve_datanode, node_id, f"127.0.0.1:{self.ports[node_id]}",
                    self.data_dir(node_id), self.metadata, heartbeat=self.heartbeat))
                self.nodes[node_id] = node
                task_status.started(node)
        self.scopes.pop(node_id, None)

    async def stop(self, node_id: int) -> None:
        """Stop a data node as a crash would, as far as its peers can tell."""
        self.scopes.pop(node_id).cancel()
        await trio.sleep(0)

    def wipe(self, node_id: int) -> None:
        shutil.rmtree(self.data_dir(node_id), ignore_errors=True)


class FSCluster:
    def __init__(self, metadata: InProcessCluster, datanodes: DataNodes):
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


@asynccontextmanager
async def fs_cluster(root: Path, *, members: int = 3, datanodes: int = 3,
                     timing: Timing = FAST,
                     dead_after: float = 1.0, heartbeat: float = 0.1
                     ) -> AsyncIterator[FSCluster]:
    """`members` metadata members and `datanodes` data nodes, all started and reporting."""
    addresses = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(members))}
    async with trio.open_nursery() as nursery:
        metadata = InProcessCluster(nursery, addresses, root, timing, "warning",
                                    state_machine=Namespace,
                                    services=lambda: fs_services(dead_after))
        for node_id in addresses:
            await metadata.start(node_id)
        nodes = DataNodes(nursery, root, list(addresses.values()), heartbeat)
        for node_id in range(1, datanodes + 1):
            await nodes.start(node_id)
        cluster = FSCluster(metadata, nodes)
        await cluster.wait_datanodes(datanodes)
        yield cluster
        nursery.cancel_scope.cancel()
