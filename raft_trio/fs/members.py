"""The two kinds of process of a file system, ready to run in a Trio program: a metadata
member (a RaftServer replicating the namespace, with the data-node registry) and a data
node wired to the metadata cluster.

    server = metadata_member(1, {1: "127.0.0.1:7001", ...}, "meta-1")
    await nursery.start(server.serve)
    await nursery.start(serve_datanode, 1, "127.0.0.1:7101", "data-1", ["127.0.0.1:7001"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from raft_trio.client import RaftClient
from raft_trio.fs.datanode.server import DataNode, HeartbeatStats
from raft_trio.fs.metadata import Namespace
from raft_trio.fs.registry import DEFAULT_DEAD_AFTER, Registry, fs_service
from raft_trio.server import RaftServer


def metadata_member(node_id: int, cluster: Mapping[int, str], data_dir: str | Path, *,
                    dead_after: float = DEFAULT_DEAD_AFTER, **options: Any) -> RaftServer:
    """A member of the metadata cluster: `RaftServer` options as for any member."""
    return RaftServer(node_id, cluster, data_dir, Namespace(),
                      services=[fs_service(Registry(dead_after))], **options)


async def serve_datanode(
    node_id: int, listen: str, data_dir: str | Path, metadata: Sequence[str], *,
    heartbeat: float = 1.0, address: str | None = None,
    task_status: trio.TaskStatus[DataNode] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a data node for the metadata members at `metadata` until cancelled;
    `nursery.start` gives the DataNode once it listens."""
    # Two clients: a heartbeat that waits for a leader must not hold up the
    # allocation checks of chunks being written (a client runs one request at a time).
    timeout = max(5.0, heartbeat * 3)
    async with RaftClient(metadata, timeout=timeout) as checks, \
            RaftClient(metadata, timeout=timeout) as reports:

        async def is_allocated(chunk_id: int, to: int) -> bool:
            allocation: Any = await checks.read(["allocation", chunk_id])
            return (isinstance(allocation, list) and len(allocation) == 3
                    and isinstance(allocation[2], list) and to in allocation[2])

        async def send_heartbeat(stats: HeartbeatStats) -> Any:
            return await reports.call("fs.heartbeat", *stats.as_args())

        node = DataNode(node_id, listen, data_dir, is_allocated=is_allocated,
                        heartbeat=send_heartbeat, heartbeat_interval=heartbeat, address=address)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)
            task_status.started(node)
