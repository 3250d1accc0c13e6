"""`raft-trio status` and `raft-trio snapshot`: ask members how they are, or to snapshot."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any

import trio
import typer

from raft_trio.cli.common import ClusterOpt, check_timeout, cluster_members, fail
from raft_trio.client import cluster_status, snapshot_member
from raft_trio.errors import RaftError

STATUS_COLUMNS = ["id", "address", "role", "term", "leader", "commit", "last_index", "applied",
                  "snapshot_index", "log_bytes"]
MemberTimeout = Annotated[float, typer.Option(
    "--timeout", metavar="SECONDS", help="Seconds to wait per member.")]


def _numbered(spec: str) -> dict[int, str]:
    """--cluster by id; an address given without one is numbered by its position."""
    return {m.id if m.id is not None else position: m.address
            for position, m in enumerate(cluster_members(spec), start=1)}


def status(
    cluster: ClusterOpt = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    timeout: MemberTimeout = 2.0,
) -> None:
    """Show every member: role, term, leader, commit index, last index, applied,
    snapshot index and log size on disk.

    Example:

    \b
        raft-trio status --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    """
    members = _numbered(cluster)
    check_timeout(timeout)
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




def snapshot(
    cluster: ClusterOpt = "",
    member: Annotated[int | None, typer.Option(
        "--id", metavar="ID", help="Only this member (default: every member).")] = None,
    timeout: MemberTimeout = 60.0,
) -> None:
    """Have members snapshot their applied state now, and compact their logs.

    Examples:

    \b
        raft-trio snapshot --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
        raft-trio snapshot --id 2 --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    """
    members = _numbered(cluster)
    check_timeout(timeout)
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
