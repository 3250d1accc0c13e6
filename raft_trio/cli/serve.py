"""`raft-trio serve`: run one member until Ctrl-C or SIGTERM; `--join` asks to be added.

Everything the user gave is checked before anything is created: the cluster,
the config file, the data directory and whether this member's address can be
listened on.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any

import trio
import typer

from raft_trio.cli.common import (
    CLUSTER_ENV,
    LOG_LEVELS,
    describe_bind_error,
    fail,
    log_level_option,
    setup_logging,
)
from raft_trio.cli.spec import addresses_of, cluster_with_ids, parse_members
from raft_trio.client import connect
from raft_trio.errors import CommandError, RaftError, describe_os_error, leaves
from raft_trio.fs.registry import DEFAULT_DEAD_AFTER
from raft_trio.kv import KVStateMachine
from raft_trio.protocol import check_address, check_host
from raft_trio.server import (
    DEFAULT_MAX_COMMAND_BYTES,
    DEFAULT_SESSION_EXPIRY,
    MAX_COMMAND_BYTES,
    RaftServer,
    Service,
    SnapshotPolicy,
    Timing,
    parse_address,
)
from raft_trio.statemachine import StateMachine
from raft_trio.storage import SnapshotCorruption, WALCorruption

_DEFAULT_SNAPSHOTS = SnapshotPolicy()
CONFIG_KEYS = ("id", "data_dir", "cluster")


def serve(
    node_id: Annotated[int | None, typer.Option(
        "--id", metavar="ID", help="This member's id.")] = None,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", "-c", metavar="MEMBERS",
        help="The members a new cluster starts with: 1=host:port,2=host:port,... Default: "
             f"the [cluster] table of --config, else ${CLUSTER_ENV}.")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", metavar="DIR", help="Directory for the log and state.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="FILE",
        help="TOML file with id, data_dir and a [cluster] table of id = \"host:port\" "
             "(command-line options win).")] = None,
    tick: Annotated[float, typer.Option(
        "--tick", metavar="SECONDS", help="Seconds per timer tick.")] = 0.1,
    election_ticks: Annotated[int, typer.Option(
        "--election-ticks", metavar="TICKS", help="Minimum election timeout, in ticks.")] = 10,
    listen_host: Annotated[str | None, typer.Option(
        "--listen-host", metavar="HOST",
        help="Bind here instead of the member's host (e.g. 0.0.0.0).")] = None,
    join: Annotated[str | None, typer.Option(
        "--join", metavar="ADDRESSES",
        help="Join a running cluster through any of these members (host:port,...) instead "
             "of starting one from --cluster; needs --address.")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", metavar="HOST:PORT", help="This member's host:port (with --join).")] = None,
    promote_within: Annotated[int, typer.Option(
        "--promote-within", metavar="ENTRIES",
        help="As leader, promote a new member once its log is within this many entries of "
             "its own.")] = 1000,
    snapshot_entries: Annotated[int, typer.Option(
        "--snapshot-entries", metavar="ENTRIES",
        help="Snapshot after this many entries applied since the last snapshot (0: only on "
             "request).")] = _DEFAULT_SNAPSHOTS.entries,
    snapshot_bytes: Annotated[int, typer.Option(
        "--snapshot-bytes", metavar="BYTES",
        help="... or once the commands applied since then add up to this many bytes (0: no "
             "limit).")] = _DEFAULT_SNAPSHOTS.bytes,
    snapshot_trailing: Annotated[int, typer.Option(
        "--snapshot-trailing", metavar="ENTRIES",
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
        "--session-expiry", metavar="SECONDS",
        help="As leader, expire client sessions idle for this many seconds (0: never); a "
             "client that retries a request after that gets an error.",
    )] = DEFAULT_SESSION_EXPIRY,
    max_command_bytes: Annotated[int, typer.Option(
        "--max-command-bytes", metavar="BYTES",
        help=f"As leader, refuse commands whose encoding is larger than this (for a KV set, "
             f"about the key's and value's size together), at most {MAX_COMMAND_BYTES}. A "
             f"member briefly holds about ten copies of a command on its way through.",
    )] = DEFAULT_MAX_COMMAND_BYTES,
    log_level: Annotated[str, typer.Option(
        "--log-level", callback=log_level_option, metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)}.")] = "info",
    state_machine: Annotated[str, typer.Option(
        "--state-machine", metavar="NAME",
        help="What the cluster replicates: kv (a key-value store) or fs (a file system's "
             "metadata; its data lives in `raft-trio datanode`s). Every member of a cluster "
             "must run the same one.")] = "kv",
    dead_after: Annotated[float, typer.Option(
        "--dead-after", metavar="SECONDS",
        help="With --state-machine fs: as leader, count a data node dead after this long "
             "without a heartbeat.")] = DEFAULT_DEAD_AFTER,
    fault_injection: Annotated[bool, typer.Option(
        "--fault-injection", hidden=True,
        help="Let clients cut this member's links to chosen peers (for `raft-trio chaos`).",
    )] = False,
) -> None:
    """Run one member of a cluster until Ctrl-C or SIGTERM.

    A new cluster starts from --cluster (the same on every member); once a
    member's log holds a configuration, that one rules. A member added later
    starts with --join instead.

    Examples: the first of three members (start the other two likewise), and a
    fourth that asks the running cluster to add it:

    \b
        raft-trio serve --id 1 --data-dir data/1 \\
            --cluster 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
        raft-trio serve --id 4 --data-dir data/4 --address 127.0.0.1:7004 \\
            --join 127.0.0.1:7001,127.0.0.1:7002
    """
    from_config: dict[str, Any] = _read_config(config) if config is not None else {}
    if node_id is None:
        node_id = from_config.get("id")
    if data_dir is None:
        data_dir = from_config.get("data_dir")
    members: dict[int, str] = {}
    join_addresses: list[str] | None = None
    if join is not None:
        if cluster is not None:
            fail("--join and --cluster exclude each other: --cluster starts a new cluster, "
                 "--join joins a running one", 2)
        if address is None:
            fail("--join needs --address: this member's own host:port", 2)
        try:
            check_address(address)
        except ValueError as exc:
            fail(f"--address: {exc}", 2)
        try:
            join_addresses = addresses_of(join)
        except ValueError as exc:
            fail(f"--join: {exc}", 2)
    elif cluster is not None:
        members = _parse_cluster_option(cluster, "--cluster")
    elif "cluster" in from_config:
        members = from_config["cluster"]
    elif os.environ.get(CLUSTER_ENV):
        members = _parse_cluster_option(os.environ[CLUSTER_ENV], CLUSTER_ENV)
    else:
        fail(f"give --cluster (or --config with a [cluster] table, or set {CLUSTER_ENV}), "
             f"or --join", 2)
    if node_id is None or node_id < 1:
        fail("give --id (or id in --config), a positive number", 2)
    if join is None and node_id not in members:
        fail(f"--id {node_id} is not in the cluster {sorted(members)}", 2)
    if data_dir is None:
        fail("give --data-dir (or data_dir in --config)", 2)
    _check_data_dir(data_dir)
    if not math.isfinite(tick) or tick <= 0 or election_ticks < 2:
        fail("--tick must be positive and --election-ticks at least 2", 2)
    if min(snapshot_entries, snapshot_bytes, snapshot_trailing, promote_within) < 0:
        fail("--snapshot-entries, --snapshot-bytes, --snapshot-trailing and --promote-within "
             "must be >= 0", 2)
    if not (math.isfinite(session_expiry) and session_expiry >= 0):
        fail("--session-expiry must be a number of seconds >= 0", 2)
    if not 1 <= max_command_bytes <= MAX_COMMAND_BYTES:
        fail(f"--max-command-bytes must be from 1 to {MAX_COMMAND_BYTES}", 2)
    if listen_host is not None:
        try:
            check_host(listen_host)
        except ValueError as exc:
            fail(f"--listen-host: {exc}", 2)
        listen_host = listen_host.removeprefix("[").removesuffix("]")
    own_address = address if join is not None else members[node_id]
    assert own_address is not None
    _check_can_listen(node_id, own_address, listen_host)
    setup_logging(log_level)
    timing = Timing(tick_interval=tick, election_ticks=election_ticks, pre_vote=pre_vote,
                    check_quorum=check_quorum)
    policy = SnapshotPolicy(entries=snapshot_entries, bytes=snapshot_bytes,
                            trailing=snapshot_trailing)
    if state_machine not in STATE_MACHINES:
        fail(f"--state-machine must be one of {', '.join(STATE_MACHINES)}, not "
             f"{state_machine!r}", 2)
    if not (math.isfinite(dead_after) and dead_after > 0):
        fail("--dead-after must be a positive number of seconds", 2)
    replicated, services = _state_machine(state_machine, dead_after)
    server = RaftServer(node_id, members, data_dir, replicated, services=services,
                        timing=timing, snapshots=policy, listen_host=listen_host,
                        address=address if join is not None else None,
                        promote_within=promote_within, fault_injection=fault_injection,
                        session_expiry=session_expiry, max_command_bytes=max_command_bytes)
    try:
        trio.run(_serve_until_signalled, server, join_addresses)
    except Exception as exc:
        # Errors from inside the server's nurseries arrive wrapped in ExceptionGroups.
        errors = leaves(exc)
        error = errors[0] if len(errors) == 1 else exc
        if isinstance(error, WALCorruption | SnapshotCorruption | RaftError):
            fail(f"refusing to start: {error}")
        if isinstance(error, OSError):
            fail(f"member {node_id} cannot start: {_describe_start_error(error, server)}")
        raise


def _parse_cluster_option(spec: str, source: str) -> dict[int, str]:
    try:
        return cluster_with_ids(spec)
    except ValueError as exc:
        fail(f"{source}: {exc}", 2)


STATE_MACHINES = ("kv", "fs")


def _state_machine(name: str, dead_after: float) -> tuple[StateMachine, list[Service]]:
    """The state machine `serve --state-machine NAME` replicates, and its services."""
    if name == "fs":
        from raft_trio.fs.metadata import Namespace
        from raft_trio.fs.registry import Registry, fs_service

        return Namespace(), [fs_service(Registry(dead_after))]
    return KVStateMachine(), []


def _read_config(path: Path) -> dict[str, Any]:
    """The settings of a --config file, checked: {"id": int, "data_dir": Path,
    "cluster": {id: address}}, each only if present."""
    try:
        conf = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read --config {path}: {describe_os_error(exc).removeprefix(f'{path}: ')}", 2)
    except UnicodeDecodeError:
        fail(f"--config {path} is not UTF-8 text", 2)
    except tomllib.TOMLDecodeError as exc:
        fail(f"--config {path} is not valid TOML: {exc}", 2)
    unknown = [key for key in conf if key not in CONFIG_KEYS]
    if unknown:
        fail(f"--config {path}: unknown key {unknown[0]!r} (known: id, data_dir, [cluster])", 2)
    settings: dict[str, Any] = {}
    if "id" in conf:
        if type(conf["id"]) is not int or conf["id"] < 1:
            fail(f"--config {path}: id must be a positive number, not {conf['id']!r}", 2)
        settings["id"] = conf["id"]
    if "data_dir" in conf:
        if not isinstance(conf["data_dir"], str) or not conf["data_dir"]:
            fail(f"--config {path}: data_dir must be a path in quotes", 2)
        settings["data_dir"] = Path(conf["data_dir"])
    if "cluster" in conf:
        table = conf["cluster"]
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            fail(f'--config {path}: [cluster] must be a table of id = "host:port"', 2)
        try:
            members = parse_members(list(table.items()))
        except ValueError as exc:
            fail(f"--config {path}: [cluster]: {exc}", 2)
        settings["cluster"] = {m.id: m.address for m in members}
    return settings


def _check_data_dir(data_dir: Path) -> None:
    """Refuse a data directory that is a file, or lies under one, before creating it."""
    path = data_dir
    while True:
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == data_dir else f"cannot be made: {path} is a file"
                fail(f"data dir {data_dir} {where}", 2)
            return
        if path.parent == path:
            return
        path = path.parent


def _check_can_listen(node_id: int, address: str, listen_host: str | None) -> None:
    """Fail now, before the data directory is touched, if this member cannot listen where
    it must (the port is taken, the host is another machine's or cannot be resolved)."""
    host, port = parse_address(address)
    host = listen_host or host
    shown = address if listen_host is None else f"{listen_host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"member {node_id} cannot start: {shown}: {describe_os_error(exc)}")
    for family, kind, proto, _name, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            # As trio.open_tcp_listeners binds, so that both see the same conflicts.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                fail(f"member {node_id} cannot start: {describe_bind_error(exc, shown)}")


def _describe_start_error(error: OSError, server: RaftServer) -> str:
    if error.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        # Taken since _check_can_listen looked.
        port = parse_address(server.address)[1]
        shown = (server.address if server.listen_host is None
                 else f"{server.listen_host}:{port}")
        return describe_bind_error(error, shown)
    return describe_os_error(error)


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
    if server.id in server.membership.voters:
        logger.info("member %d: already a voter; not asking to join", server.id)
        return
    # The first try may take up to the client's timeout to fail: say at once what is
    # being asked, so that a log reader does not wait 30 s to learn it.
    logger.info("member %d: asking %s to add member %d at %s", server.id, ", ".join(addresses),
                server.id, server.address)
    while True:
        try:
            async with connect(addresses, timeout=30, request_timeout=30) as client:
                info = await client.add_member(server.id, server.address)
            if server.id in info["voters"]:
                logger.info("member %d: joined the cluster", server.id)
                return
            logger.warning("member %d: added as a learner but not caught up yet; asking "
                           "again", server.id)
        except CommandError as exc:
            if "already" in str(exc):
                return
            logger.error("member %d: the cluster refused to add it: %s", server.id, exc)
            return
        except RaftError as exc:
            logger.warning("member %d: joining failed (%s); trying again", server.id, exc)
            await trio.sleep(1.0)
