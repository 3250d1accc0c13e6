"""The `raft-trio` command line: serve, kv, status, members, snapshot, stress, chaos."""

from __future__ import annotations

import gc
import json
import logging
import math
import random
import signal
import sys
import tomllib
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn

import trio
import typer

from raft_trio.client import cluster_status, connect, snapshot_member
from raft_trio.errors import CommandError, RaftError, leaves
from raft_trio.kv import KVStateMachine
from raft_trio.server import (
    DEFAULT_MAX_COMMAND_BYTES,
    DEFAULT_SESSION_EXPIRY,
    MAX_COMMAND_BYTES,
    READ_MODES,
    RaftServer,
    SnapshotPolicy,
    Timing,
    parse_address,
)
from raft_trio.storage import SnapshotCorruption, WALCorruption

app = typer.Typer(
    help="raft-trio: a Raft consensus daemon and library built on Trio.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
kv_app = typer.Typer(help="Read and write keys of a running cluster.", no_args_is_help=True)
app.add_typer(kv_app, name="kv")
members_app = typer.Typer(help="List and change the members of a running cluster.",
                          no_args_is_help=True)
app.add_typer(members_app, name="members")

ClusterOpt = Annotated[
    str,
    typer.Option(
        "--cluster",
        "-c",
        help="Members as 1=host:port,2=host:port,... (ids may be left out for kv/status).",
        envvar="RAFT_TRIO_CLUSTER",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Give up after this many seconds without a leader.")
]


def _check_timeout(timeout: float) -> None:
    if not math.isfinite(timeout) or timeout <= 0:
        raise typer.BadParameter("must be a positive number of seconds", param_hint="--timeout")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def parse_cluster(spec: str, *, ids_required: bool = True) -> dict[int, str]:
    """Parse `1=host:port,2=host:port`; without ids, members are numbered from 1."""
    members: dict[int, str] = {}
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise typer.BadParameter("the cluster is empty", param_hint="--cluster")
    for pos, part in enumerate(parts, start=1):
        if "=" in part:
            raw_id, address = part.split("=", 1)
            try:
                node_id = int(raw_id)
            except ValueError:
                raise typer.BadParameter(
                    f"bad member id {raw_id!r}", param_hint="--cluster"
                ) from None
        elif ids_required:
            raise typer.BadParameter(f"{part!r} needs an id: ID=host:port", param_hint="--cluster")
        else:
            node_id, address = pos, part
        try:
            _host, port = parse_address(address)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--cluster") from None
        if not 1 <= port <= 65535:
            raise typer.BadParameter(f"bad port in {address!r}: expected 1-65535",
                                     param_hint="--cluster")
        if node_id in members:
            raise typer.BadParameter(f"member id {node_id} appears twice", param_hint="--cluster")
        if node_id < 1:
            raise typer.BadParameter("member ids must be positive", param_hint="--cluster")
        members[node_id] = address
    return members


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ------------------------------------------------------------------- serve

_DEFAULT_SNAPSHOTS = SnapshotPolicy()


@app.command()
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
    max_command_bytes: Annotated[int, typer.Option(
        "--max-command-bytes",
        help=f"As leader, refuse commands whose encoding is larger than this (a KV set: "
             f"about the key and value's size), at most {MAX_COMMAND_BYTES}.",
    )] = DEFAULT_MAX_COMMAND_BYTES,
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
        join_addresses = _addresses(join)
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
    if not 1 <= max_command_bytes <= MAX_COMMAND_BYTES:
        fail(f"--max-command-bytes must be from 1 to {MAX_COMMAND_BYTES}", 2)
    _setup_logging(log_level)
    timing = Timing(tick_interval=tick, election_ticks=election_ticks, pre_vote=pre_vote,
                    check_quorum=check_quorum)
    policy = SnapshotPolicy(entries=snapshot_entries, bytes=snapshot_bytes,
                            trailing=snapshot_trailing)
    server = RaftServer(node_id, members if join is None else {}, data_dir, KVStateMachine(),
                        timing=timing, snapshots=policy, listen_host=listen_host,
                        address=address if join is not None else None,
                        promote_within=promote_within, fault_injection=fault_injection,
                        session_expiry=session_expiry, max_command_bytes=max_command_bytes)
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


# ---------------------------------------------------------------------- kv


def _addresses(spec: str) -> list[str]:
    return list(parse_cluster(spec, ids_required=False).values())


def _run_client(coro_fn: Any, *args: Any) -> Any:
    try:
        return trio.run(coro_fn, *args)
    except RaftError as exc:
        fail(str(exc))


@kv_app.command("set")
def kv_set(
    key: str, value: str, cluster: ClusterOpt, timeout: TimeoutOpt = 10.0
) -> None:
    """Set KEY to VALUE."""

    async def run() -> None:
        async with connect(_addresses(cluster), timeout=timeout) as client:
            await client.set(key, value)

    _check_timeout(timeout)
    _run_client(run)
    typer.echo("OK")


@kv_app.command("get")
def kv_get(
    key: str,
    cluster: ClusterOpt,
    read: Annotated[str, typer.Option(
        "--read",
        help="linearizable (the leader confirms it still leads), lease (the leader answers "
             "under its lease; assumes clocks that drift little) or stale (whichever member "
             "answers, possibly behind).")] = "linearizable",
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Print the value of KEY; exits 1 when the key is absent."""

    async def run() -> str | None:
        async with connect(_addresses(cluster), timeout=timeout) as client:
            return await client.get(key, mode=read)  # type: ignore[arg-type]

    if read not in READ_MODES:
        fail(f"--read must be one of {', '.join(READ_MODES)}", 2)
    _check_timeout(timeout)
    value = _run_client(run)
    if value is None:
        fail(f"key {key!r} not found")
    typer.echo(value)


@kv_app.command("del")
def kv_del(key: str, cluster: ClusterOpt, timeout: TimeoutOpt = 10.0) -> None:
    """Delete KEY; exits 1 when it did not exist."""

    async def run() -> bool:
        async with connect(_addresses(cluster), timeout=timeout) as client:
            return await client.delete(key)

    _check_timeout(timeout)
    if not _run_client(run):
        fail(f"key {key!r} not found")
    typer.echo("OK")


@kv_app.command("cas")
def kv_cas(
    key: str,
    expected: Annotated[str, typer.Argument(help="Value KEY must hold now.")],
    new: Annotated[str, typer.Argument(help="Value to store.")],
    cluster: ClusterOpt,
    absent: Annotated[
        bool, typer.Option("--absent", help="Swap only if KEY is absent (EXPECTED is ignored).")
    ] = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Set KEY to NEW only if it holds EXPECTED; exits 1 when it did not."""

    async def run() -> bool:
        async with connect(_addresses(cluster), timeout=timeout) as client:
            return await client.cas(key, None if absent else expected, new)

    _check_timeout(timeout)
    if not _run_client(run):
        fail(f"compare-and-swap on {key!r} did not match")
    typer.echo("OK")


# ------------------------------------------------------------------ status


STATUS_COLUMNS = ["id", "address", "role", "term", "leader", "commit", "last_index", "applied",
                  "snapshot_index", "log_bytes"]


@app.command()
def status(
    cluster: ClusterOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait per member.")] = 2.0,
) -> None:
    """Show every member: role, term, leader, commit index, last index, applied,
    snapshot index and log size on disk."""
    members = parse_cluster(cluster, ids_required=False)
    _check_timeout(timeout)
    rows = list(trio.run(partial(cluster_status, members, timeout=timeout)).values())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*STATUS_HEADERS)
    for row in rows:
        table.add_row(*(_status_cell(row, c) for c in STATUS_COLUMNS))
    console = Console()
    if not console.is_terminal:
        # Piped output would be squeezed to 80 columns, cutting addresses short.
        console = Console(width=160)
    console.print(table)


STATUS_HEADERS = [*STATUS_COLUMNS[:-2], "snapshot", "log_size"]


def _status_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return "-"
    if column == "log_bytes":
        return _human_bytes(int(value))
    return str(value)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


async def _join(server: RaftServer, addresses: list[str]) -> None:
    """Ask the cluster to add this member (a learner, promoted once caught up)."""
    logger = logging.getLogger("raft_trio")
    if server.id in server.membership.voters:
        logger.info("member %d: already a voter; not asking to join", server.id)
        return
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


# ---------------------------------------------------------------- members


def _membership_call(cluster: str, timeout: float, call: Any) -> Any:
    _check_timeout(timeout)
    addresses = _addresses(cluster)

    async def run() -> Any:
        async with connect(addresses, timeout=timeout, request_timeout=timeout) as client:
            return await call(client)

    return _run_client(run)


def _print_members(info: dict[str, Any]) -> None:
    for kind in ("voters", "learners"):
        for node_id, address in sorted(info[kind].items()):
            lead = "  (leader)" if node_id == info.get("leader") else ""
            typer.echo(f"{node_id}\t{address}\t{kind[:-1]}{lead}")


MembersTimeout = Annotated[
    float, typer.Option("--timeout", help="Give up after this many seconds.")
]


@members_app.command("list")
def members_list(
    cluster: ClusterOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """The configuration as the leader has it: voters and learners, with addresses."""
    info = _membership_call(cluster, timeout, lambda c: c.members())
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        _print_members(info)


@members_app.command("add")
def members_add(
    node_id: Annotated[int, typer.Argument(help="Id of the new member.")],
    address: Annotated[str, typer.Argument(help="Its host:port.")],
    cluster: ClusterOpt,
    learner: Annotated[bool, typer.Option(
        "--learner", help="Keep it a non-voting learner (default: promote it once caught up).")
    ] = False,
    timeout: MembersTimeout = 120.0,
) -> None:
    """Add a member: a learner first, a voter once its log has caught up."""
    if node_id < 1:
        fail("the member id must be positive", 2)
    try:
        parse_address(address)
    except ValueError as exc:
        fail(str(exc), 2)
    info = _membership_call(cluster, timeout,
                            lambda c: c.add_member(node_id, address, voter=not learner))
    _print_members(info)
    if not learner and node_id in info["learners"]:
        fail(f"member {node_id} was added as a learner but has not caught up in time to be "
             f"promoted: start it (raft-trio serve --id {node_id} --address {address} --join "
             f"...), then run `raft-trio members promote {node_id}`")


@members_app.command("promote")
def members_promote(
    node_id: Annotated[int, typer.Argument(help="Id of the learner.")],
    cluster: ClusterOpt,
    timeout: MembersTimeout = 120.0,
) -> None:
    """Make a learner a voter, once its log has caught up."""
    _print_members(_membership_call(cluster, timeout, lambda c: c.promote_member(node_id)))


@members_app.command("remove")
def members_remove(
    node_id: Annotated[int, typer.Argument(help="Id of the member to remove.")],
    cluster: ClusterOpt,
    timeout: MembersTimeout = 30.0,
) -> None:
    """Remove a member (it shuts itself down once the change is committed)."""
    _print_members(_membership_call(cluster, timeout, lambda c: c.remove_member(node_id)))


@members_app.command("transfer")
def members_transfer(
    cluster: ClusterOpt,
    to: Annotated[int, typer.Option("--to", help="Id of the voter to hand leadership to.")],
    timeout: MembersTimeout = 30.0,
) -> None:
    """Hand leadership to another voter."""
    leader = _membership_call(cluster, timeout, lambda c: c.transfer_leadership(to))
    typer.echo(f"member {leader} leads")


# ---------------------------------------------------------------- snapshot


@app.command()
def snapshot(
    cluster: ClusterOpt,
    member: Annotated[int | None, typer.Option(
        "--id", help="Only this member (default: every member).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait per member.")] = 60.0,
) -> None:
    """Have members snapshot their applied state now, and compact their logs."""
    members = parse_cluster(cluster, ids_required=False)
    _check_timeout(timeout)
    if member is not None:
        if member not in members:
            fail(f"--id {member} is not in the cluster {sorted(members)}", 2)
        members = {member: members[member]}
    results: dict[int, int | str] = {}

    async def one(node_id: int, address: str) -> None:
        try:
            results[node_id] = await snapshot_member(address, timeout=timeout)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, RaftError) as exc:
            results[node_id] = str(exc) or type(exc).__name__

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for node_id, address in members.items():
                nursery.start_soon(one, node_id, address)

    trio.run(run)
    failed = []
    for node_id in sorted(results):
        result = results[node_id]
        if isinstance(result, int):
            typer.echo(f"member {node_id}: snapshot at index {result}")
        else:
            failed.append(node_id)
            typer.echo(f"member {node_id}: {result}", err=True)
    if failed:
        fail(f"no snapshot from member(s) {', '.join(map(str, failed))}")


# ------------------------------------------------------------------ stress


@app.command()
def stress(
    entries: Annotated[int, typer.Option("--entries", "-n", help="Entries to insert.")] = 50_000,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Entries per client request.")] = 100,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent clients.")] = 8,
    servers: Annotated[int, typer.Option("--servers", help="Members configured.")] = 3,
    up: Annotated[
        int | None, typer.Option("--up", help="Members started (default: all); a quorum variant.")
    ] = None,
    processes: Annotated[
        bool, typer.Option("--processes", help="Run each member as its own OS process.")
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where members keep data (default: a temp directory, removed after "
                           "a passing or interrupted run, kept after a failed one); a "
                           "directory given here is never removed.")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the temp data directory even when the run passes or is "
                       "interrupted.")] = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for the choice of member whose data is deleted.")
    ] = 0,
    base_port: Annotated[
        int, typer.Option("--base-port", help="First member port (0: pick free ports).")
    ] = 0,
    snapshot_entries: Annotated[int | None, typer.Option(
        "--snapshot-entries",
        help="Members snapshot every this many entries (default: serve's default); small "
             "values make step 10 rebuild the deleted member from a snapshot.")] = None,
    snapshot_trailing: Annotated[int | None, typer.Option(
        "--snapshot-trailing",
        help="Entries members keep behind a snapshot (default: serve's default).")] = None,
    reconfigure: Annotated[bool, typer.Option(
        "--reconfigure",
        help="While clients write, add a member, hand it leadership and remove the first "
             "leader; the later steps run on the new configuration.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Member log level.")] = "warning",
) -> None:
    """Build a cluster and run the ten-step correctness checklist, printing entries/s.

    Exit status: 0 when every step passed or was skipped (the reason is printed);
    1 when a step failed; 130 on Ctrl-C and 143 on SIGTERM, once every member
    has stopped.
    """
    from stress.interrupt import Interrupted
    from stress.runner import StressOptions, run_stress

    up_count = servers if up is None else up
    if entries < 1 or batch < 1 or clients < 1:
        fail("--entries, --batch and --clients must be at least 1", 2)
    if servers < 1 or not (servers // 2 + 1 <= up_count <= servers):
        fail(f"--up must be between a quorum ({servers // 2 + 1}) and --servers ({servers})", 2)
    if base_port and not 1 <= base_port <= 65536 - servers:
        fail(f"--base-port must leave room for {servers} ports below 65536", 2)
    if min(snapshot_entries or 0, snapshot_trailing or 0) < 0:
        fail("--snapshot-entries and --snapshot-trailing must be >= 0", 2)
    if data_dir is not None and data_dir.exists():
        if not data_dir.is_dir():
            fail(f"--data-dir {data_dir} is not a directory", 2)
        # Members would start from the old logs and states: the checks could not tell
        # the old entries from the new, and old configurations name old ports.
        if any(data_dir.glob("member-*")):
            fail(f"--data-dir {data_dir} holds members' data already; give an empty or new one",
                 2)
    _setup_logging(log_level)
    options = StressOptions(
        entries=entries, batch=batch, clients=clients, servers=servers, up=up_count,
        processes=processes, data_dir=data_dir, keep=keep, seed=seed, base_port=base_port,
        log_level=log_level, snapshot_entries=snapshot_entries,
        snapshot_trailing=snapshot_trailing, reconfigure=reconfigure,
    )
    try:
        ok = run_stress(options)
    except Interrupted as exc:
        fail(exc.message(), exc.exit_code)
    raise typer.Exit(0 if ok else 1)


# ------------------------------------------------------------------- chaos

NEMESES = ("kill", "partition", "pause")


@app.command()
def chaos(
    duration: Annotated[float, typer.Option(
        "--duration", help="Seconds of faults and client operations (start-up, healing and "
                           "checking come on top).")] = 60.0,
    clients: Annotated[int, typer.Option(
        "--clients", help="Concurrent clients, each with its own connection.")] = 5,
    nemesis: Annotated[str, typer.Option(
        "--nemesis",
        help="Faults to inject, comma-separated: kill (SIGKILL a member, restart it with its "
             "data), partition (cut every link between two groups of members), pause "
             "(SIGSTOP a member, then SIGCONT); or none.")] = "kill,partition,pause",
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed for every random choice (default: a random one, printed); "
                       "timing still differs from run to run.")] = None,
    servers: Annotated[int, typer.Option("--servers", help="Members in the cluster.")] = 3,
    keys: Annotated[int, typer.Option(
        "--keys", help="Keys the clients share (few keys: more contention).")] = 3,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where members keep data and logs (default: a temp directory, "
                           "removed after a passing or interrupted run, kept after a failed "
                           "one); a directory given here is never removed.")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the temp data directory even when the run passes or is "
                       "interrupted.")] = False,
    history: Annotated[Path | None, typer.Option(
        "--history", help="Write the operation history (JSON lines) here (default: "
                          "history.jsonl in the data directory when it is kept, else "
                          "./chaos-history.jsonl).")] = None,
    tick: Annotated[float, typer.Option(
        "--tick", help="Members' seconds per timer tick; small, so that faults cause many "
                       "elections.")] = 0.05,
    election_ticks: Annotated[int, typer.Option(
        "--election-ticks", help="Members' minimum election timeout, in ticks.")] = 10,
    client_timeout: Annotated[float, typer.Option(
        "--client-timeout", help="Seconds a client operation may take before its outcome "
                                 "counts as unknown.")] = 3.0,
    read: Annotated[str, typer.Option(
        "--read", help="How clients read: linearizable, lease (under the leader's lease) or "
                       "stale (any member, may be behind: expect the checker to object).",
    )] = "linearizable",
    log_level: Annotated[str, typer.Option("--log-level", help="Member log level.")] = "info",
) -> None:
    """Run a cluster of processes under faults while clients read and write, then heal it,
    check the history for linearizability and compare every member's state.

    Exit status: 0 only if the history is linearizable and every member holds
    the same state, else 1; 130 on Ctrl-C and 143 on SIGTERM, once every member
    has stopped.
    """
    from stress.chaos import ChaosOptions, run_chaos
    from stress.interrupt import Interrupted

    chosen: list[str] = []
    for name in (n.strip().lower() for n in nemesis.split(",") if n.strip()):
        if name == "none":
            continue
        if name not in NEMESES:
            fail(f"--nemesis: unknown fault {name!r}; choose from {', '.join(NEMESES)} or none",
                 2)
        if name not in chosen:
            chosen.append(name)
    for option, value in (("--duration", duration), ("--tick", tick),
                          ("--client-timeout", client_timeout)):
        if not math.isfinite(value) or value <= 0:
            fail(f"{option} must be a positive number of seconds", 2)
    if min(clients, servers, keys) < 1:
        fail("--clients, --servers and --keys must be at least 1", 2)
    if read not in READ_MODES:
        fail(f"--read must be one of {', '.join(READ_MODES)}", 2)
    if election_ticks < 2:
        fail("--election-ticks must be at least 2", 2)
    if "partition" in chosen and servers < 2:
        fail("--nemesis partition needs --servers 2 or more", 2)
    if data_dir is not None and data_dir.exists():
        if not data_dir.is_dir():
            fail(f"--data-dir {data_dir} is not a directory", 2)
        if any(data_dir.glob("member-*")):
            fail(f"--data-dir {data_dir} holds members' data already; give an empty or new one",
                 2)
    if history is not None and history.is_dir():
        fail(f"--history {history} is a directory; give a file name", 2)
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    options = ChaosOptions(
        duration=duration, clients=clients, nemesis=tuple(chosen), seed=seed, servers=servers,
        keys=keys, data_dir=data_dir, keep=keep, history=history, tick=tick,
        election_ticks=election_ticks, client_timeout=client_timeout, read=read,
        log_level=log_level,
    )
    try:
        passed = run_chaos(options)
    except Interrupted as exc:
        fail(exc.message(), exc.exit_code)
    raise typer.Exit(0 if passed else 1)


# A member keeps every log entry in memory as a small tuple. With the default
# thresholds the cyclic GC runs full collections again and again as the log
# grows, which cost more than half of what building an entry costs (measured:
# RaftNode.propose 1.10 us/entry with the defaults, 0.50 with these, 0.46 with
# the GC off). Only the command line sets this: a library leaves its host's GC alone.
GC_THRESHOLDS = (50_000, 20, 100)


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    app()


if __name__ == "__main__":
    main()
