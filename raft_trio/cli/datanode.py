"""`raft-trio datanode`: one data node of a raft-trio file system, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import math
import signal
from functools import partial
from pathlib import Path
from typing import Annotated

import trio
import typer

from raft_trio.cli.common import (
    LOG_LEVELS,
    ClusterOpt,
    cluster_addresses,
    describe_bind_error,
    fail,
    log_level_option,
    setup_logging,
)
from raft_trio.errors import RaftError, leaves
from raft_trio.fs.members import serve_datanode
from raft_trio.protocol import check_address

log = logging.getLogger("raft_trio.fs")


def datanode(
    node_id: Annotated[int, typer.Option("--id", metavar="ID", help="This data node's id.")],
    listen: Annotated[str, typer.Option(
        "--listen", metavar="HOST:PORT", help="Where to listen for chunks.")],
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", metavar="DIR", help="Directory for the chunks.")],
    cluster: ClusterOpt = "",
    address: Annotated[str | None, typer.Option(
        "--address", metavar="HOST:PORT",
        help="Where clients and other data nodes reach this one, if not --listen (e.g. "
             "with --listen 0.0.0.0:7100).")] = None,
    heartbeat: Annotated[float, typer.Option(
        "--heartbeat", metavar="SECONDS", help="Seconds between heartbeats to the "
                                               "metadata leader.")] = 1.0,
    log_level: Annotated[str, typer.Option(
        "--log-level", callback=log_level_option, metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)}.")] = "info",
) -> None:
    """Run one data node of a file system whose metadata members are --cluster.

    It stores the chunks the metadata leader allocates to it, checks their
    checksums on every write and read, and reports to the leader every
    --heartbeat seconds.

    Example: three data nodes for a metadata cluster on 7001-7003:

    \b
        export RAFT_TRIO_CLUSTER=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
        raft-trio datanode --id 1 --listen 127.0.0.1:7101 --data-dir dn1 &
        raft-trio datanode --id 2 --listen 127.0.0.1:7102 --data-dir dn2 &
        raft-trio datanode --id 3 --listen 127.0.0.1:7103 --data-dir dn3 &
    """
    if node_id < 1:
        fail("--id must be a positive number", 2)
    for option, value in (("--listen", listen), ("--address", address)):
        if value is not None:
            try:
                check_address(value)
            except ValueError as exc:
                fail(f"{option}: {exc}", 2)
    if not (math.isfinite(heartbeat) and heartbeat > 0):
        fail("--heartbeat must be a positive number of seconds", 2)
    if data_dir.exists() and not data_dir.is_dir():
        fail(f"data dir {data_dir} is a file", 2)
    metadata = cluster_addresses(cluster)
    setup_logging(log_level)
    try:
        trio.run(_run, node_id, listen, address, data_dir, metadata, heartbeat)
    except Exception as exc:
        errors = leaves(exc)
        error = errors[0] if len(errors) == 1 else exc
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            fail(f"data node {node_id}: {describe_bind_error(error, listen)}")
        if isinstance(error, OSError | RaftError | ValueError):
            fail(f"data node {node_id} cannot start: {error}")
        raise


async def _run(node_id: int, listen: str, address: str | None, data_dir: Path,
               metadata: list[str], heartbeat: float) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_datanode, node_id, listen, data_dir, metadata,
                                        heartbeat=heartbeat, address=address))
            async for signum in signals:
                log.info("data node %d: %s received, shutting down", node_id,
                         signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
