"""`raft-trio serve`: run one member until Ctrl-C or SIGTERM; `--join` asks to be added."""

from __future__ import annotations

import logging
import math
import signal
import tomllib
from pathlib import Path
from typing import Annotated

import trio
import typer

from raft_trio.cli.common import addresses_of, fail, parse_cluster, setup_logging
from raft_trio.client import connect
from raft_trio.errors import CommandError, RaftError, leaves
from raft_trio.kv import KVStateMachine
from raft_trio.server import (
    DEFAULT_SESSION_EXPIRY,
    RaftServer,
    SnapshotPolicy,
    Timing,
    parse_address,
)
from raft_trio.storage import SnapshotCorruption, WALCorruption

_DEFAULT_SNAPSHOTS = SnapshotPolicy()



def serve(
    node_id: Annotated[int | None, typer.Option("--id", help="This member's id.")] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", "-c", help="Members as 1=host:port,2=host:port,...")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Directory for the log and state.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file with id, data_dir and a [cluster] table."),
    ] = None,
    tick: Annotated[float, typer.Option("--tick", help="Seconds per timer tick.")] = 0.1,
    election_ticks: Annotated[
        int, typer.Option("--election-ticks", help="Minimum election timeout, in ticks.")
    ] = 10,
    listen_host: Annotated[
        str | None, typer.Option("--listen-host", help="Bind here instead of the member's host.")
    ] = None,
    join: Annotated[str | None, typer.Option(
        "--join",
        help="Join a running cluster through any of these members (host:port,...) instead "
             "of starting one from --cluster; needs --address.")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="This member's host:port (with --join).")] = None,
    promote_within: Annotated[int, typer.Option(
        "--promote-within",
        help="As leader, promote a new member once its log is within this many entries of "
             "its own.")] = 1000,
    snapshot_entries: Annotated[int, typer.Option(
        "--snapshot-entries",
        help="Snapshot after this many entries applied since the last snapshot (0: only on "
             "request).")] = _DEFAULT_SNAPSHOTS.entries,
    snapshot_bytes: Annotated[int, typer.Option(
        "--snapshot-bytes",
        help="... or once the commands applied since then add up to this many bytes (0: no "
             "limit).")] = _DEFAULT_SNAPSHOTS.bytes,
    snapshot_trailing: Annotated[int, typer.Option(
        "--snapshot-trailing",
        help="Entries kept in the log behind a snapshot for followers that lag a little.",
    )] = _DEFAULT_SNAPSHOTS.trailing,
    pre_vote: Annotated[bool, typer.Option(
        "--pre-vote/--no-pre-vote",
        help="Ask for pre-votes before starting an election, so that a member back from "
             "a partition does not depose a working leader.")] = True,
    check_quorum: Annotated[bool, typer.Option(
        "--check-quorum/--no-check-quorum",
        help="As leader, step down when a majority has not answered for an election "
             "timeout; needed for lease reads.")] = True,
    session_expiry: Annotated[float, typer.Option(
        "--session-expiry",
        help="As leader, expire client sessions idle for this many seconds (0: never); a "
             "client that retries a request after that gets an error.",
    )] = DEFAULT_SESSION_EXPIRY,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
    fault_injection: Annotated[bool, typer.Option(
        "--fault-injection", hidden=True,
        help="Let clients cut this member's links to chosen peers (for `raft-trio chaos`).",
    )] = False,
) -> None:
    """Run one member of a cluster until Ctrl-C or SIGTERM."""
    members: dict[int, str] = {}
    if config is not None:
        try:
            conf = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            fail(f"cannot read {config}: {exc}", 2)
        node_id = node_id if node_id is not None else conf.get("id")
        if data_dir is None and "data_dir" in conf:
            data_dir = Path(conf["data_dir"])
        table = conf.get("cluster", {})
        if not isinstance(table, dict):
            fail(f"{config}: [cluster] must be a table of id = \"host:port\"", 2)
        spec = ",".join(f"{k}={v}" for k, v in table.items())
        if cluster is None and spec:
            cluster = spec
    if join is not None:
        if address is None:
            fail("--join needs --address: this member's own host:port", 2)
        try:
            parse_address(address)
        except ValueError as exc:
            fail(f"--address: {exc}", 2)
        join_addresses = addresses_of(join)
    elif cluster is None:
        fail("give --cluster (or --config with a [cluster] table), or --join", 2)
    members = parse_cluster(cluster) if cluster is not None else {}
    if not isinstance(node_id, int) or node_id < 1:
        fail("give --id (or id in --config), a positive number", 2)
    if join is None and node_id not in members:
        fail(f"--id {node_id} is not in the cluster {sorted(members)}", 2)
    if data_dir is None:
        fail("give --data-dir (or data_dir in --config)", 2)
    if not math.isfinite(tick) or tick <= 0 or election_ticks < 2:
        fail("--tick must be positive and --election-ticks at least 2", 2)
    if min(snapshot_entries, snapshot_bytes, snapshot_trailing, promote_within) < 0:
        fail("--snapshot-entries, --snapshot-bytes, --snapshot-trailing and --promote-within "
             "must be >= 0", 2)
    if not (math.isfinite(session_expiry) and session_expiry >= 0):
        fail("--session-expiry must be a number of seconds >= 0", 2)
    setup_logging(log_level)
    timing = Timing(tick_interval=tick, election_ticks=election_ticks, pre_vote=pre_vote,
                    check_quorum=check_quorum)
    policy = SnapshotPolicy(entries=snapshot_entries, bytes=snapshot_bytes,
                            trailing=snapshot_trailing)
    server = RaftServer(node_id, members if join is None else {}, data_dir, KVStateMachine(),
                        timing=timing, snapshots=policy, listen_host=listen_host,
                        address=address if join is not None else None,
                        promote_within=promote_within, fault_injection=fault_injection,
                        session_expiry=session_expiry)
    try:
        trio.run(_serve_until_signalled, server, join_addresses if join is not None else None)
    except Exception as exc:
        # Errors from inside the server's nurseries arrive wrapped in ExceptionGroups.
        errors = leaves(exc)
        error = errors[0] if len(errors) == 1 else exc
        if isinstance(error, WALCorruption | SnapshotCorruption | RaftError):
            fail(f"refusing to start: {error}")
        if isinstance(error, OSError):
            fail(f"member {node_id} cannot start: {error}")
        raise


async def _serve_until_signalled(server: RaftServer, join: list[str] | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[None]) -> None:
                await server.serve(task_status=task_status)
                # serve returns by itself only when the member was removed.
                nursery.cancel_scope.cancel()

            await nursery.start(run)
            if join is not None:
                nursery.start_soon(_join, server, join)
            async for signum in signals:
                logging.getLogger("raft_trio").info(
                    "member %d: %s received, shutting down", server.id, signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break


async def _join(server: RaftServer, addresses: list[str]) -> None:
    """Ask the cluster to add this member (a learner, promoted once caught up)."""
    logger = logging.getLogger("raft_trio")
    if server.id in server.membership.members:
        logger.info("member %d: already a member; not asking to join", server.id)
        return
    while True:
        try:
            async with connect(addresses, timeout=30, request_timeout=120) as client:
                await client.add_member(server.id, server.address)
            logger.info("member %d: joined the cluster", server.id)
            return
        except CommandError as exc:
            if "already" in str(exc):
                return
            logger.error("member %d: the cluster refused to add it: %s", server.id, exc)
            return
        except RaftError as exc:
            logger.warning("member %d: joining failed (%s); trying again", server.id, exc)
            await trio.sleep(1.0)
