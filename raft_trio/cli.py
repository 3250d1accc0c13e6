"""The `raft-trio` command line: serve, kv, status, stress."""

from __future__ import annotations

import gc
import json
import logging
import math
import signal
import sys
import tomllib
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn

import trio
import typer

from raft_trio.client import cluster_status, connect, snapshot_member
from raft_trio.errors import RaftError, leaves
from raft_trio.kv import KVStateMachine
from raft_trio.server import RaftServer, SnapshotPolicy, Timing, parse_address
from raft_trio.storage import SnapshotCorruption, WALCorruption

app = typer.Typer(
    help="raft-trio: a Raft consensus daemon and library built on Trio.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
kv_app = typer.Typer(help="Read and write keys of a running cluster.", no_args_is_help=True)
app.add_typer(kv_app, name="kv")

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
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
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
    if cluster is None:
        fail("give --cluster (or --config with a [cluster] table)", 2)
    members = parse_cluster(cluster)
    if not isinstance(node_id, int):
        fail("give --id (or id in --config)", 2)
    if node_id not in members:
        fail(f"--id {node_id} is not in the cluster {sorted(members)}", 2)
    if data_dir is None:
        fail("give --data-dir (or data_dir in --config)", 2)
    if not math.isfinite(tick) or tick <= 0 or election_ticks < 2:
        fail("--tick must be positive and --election-ticks at least 2", 2)
    if min(snapshot_entries, snapshot_bytes, snapshot_trailing) < 0:
        fail("--snapshot-entries, --snapshot-bytes and --snapshot-trailing must be >= 0", 2)
    _setup_logging(log_level)
    timing = Timing(tick_interval=tick, election_ticks=election_ticks)
    policy = SnapshotPolicy(entries=snapshot_entries, bytes=snapshot_bytes,
                            trailing=snapshot_trailing)
    server = RaftServer(node_id, members, data_dir, KVStateMachine(), timing=timing,
                        snapshots=policy, listen_host=listen_host)
    try:
        trio.run(_serve_until_signalled, server)
    except Exception as exc:
        # Errors from inside the server's nurseries arrive wrapped in ExceptionGroups.
        errors = leaves(exc)
        error = errors[0] if len(errors) == 1 else exc
        if isinstance(error, WALCorruption | SnapshotCorruption | RaftError):
            fail(f"refusing to start: {error}")
        if isinstance(error, OSError):
            fail(f"member {node_id} cannot start: {error}")
        raise


async def _serve_until_signalled(server: RaftServer) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
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
def kv_get(key: str, cluster: ClusterOpt, timeout: TimeoutOpt = 10.0) -> None:
    """Print the value of KEY; exits 1 when the key is absent."""

    async def run() -> str | None:
        async with connect(_addresses(cluster), timeout=timeout) as client:
            return await client.get(key)

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
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where members keep data (default: temp).")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the data directory.")] = False,
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
    log_level: Annotated[str, typer.Option("--log-level", help="Member log level.")] = "warning",
) -> None:
    """Build a cluster and run the ten-step correctness checklist, printing entries/s."""
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
    _setup_logging(log_level)
    options = StressOptions(
        entries=entries, batch=batch, clients=clients, servers=servers, up=up_count,
        processes=processes, data_dir=data_dir, keep=keep, seed=seed, base_port=base_port,
        log_level=log_level, snapshot_entries=snapshot_entries,
        snapshot_trailing=snapshot_trailing,
    )
    ok = run_stress(options)
    raise typer.Exit(0 if ok else 1)


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
