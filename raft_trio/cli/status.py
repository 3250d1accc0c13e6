"""`raft-trio status` and `raft-trio snapshot`: ask members how they are, or to snapshot."""

from __future__ import annotations

import json
from typing import Annotated, Any

import trio
import typer

from raft_trio.cli.common import ClusterOpt, check_timeout, cluster_members, fail
from raft_trio.cli.survey import Answer, ask, survey
from raft_trio.client import snapshot_member

STATUS_COLUMNS = ["id", "address", "role", "term", "leader", "commit", "last_index", "applied",
                  "snapshot_index", "log_bytes"]
STATUS_HEADERS = [*STATUS_COLUMNS[:-2], "snapshot", "log_size"]
MemberTimeout = Annotated[float, typer.Option(
    "--timeout", metavar="SECONDS", help="Seconds to wait per member.")]


def status(
    cluster: ClusterOpt = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    timeout: MemberTimeout = 2.0,
) -> None:
    """Show every member: id, role, term, leader, commit index, last index, applied,
    snapshot index and log size on disk. Exits 1 when no member answers as leader.

    Ids are the members' own answers; an address that does not answer shows the id
    --cluster gave it, or "?" (null in --json) if it gave none.

    Example:

    \b
        raft-trio status --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    """
    members = cluster_members(cluster)
    check_timeout(timeout)
    answers = trio.run(survey, members, timeout)
    answers.sort(key=lambda a: (a.id is None, a.id or 0))
    rows = [_row(a) for a in answers]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
        for answer in answers:
            if answer.status is None:
                typer.echo(f"{answer.label} is down: {answer.error}")
    for answer in answers:
        warning = answer.mismatch()
        if warning:
            typer.echo(f"warning: {warning}", err=True)
    if not any(row["role"] == "leader" for row in rows):
        up = sum(a.status is not None for a in answers)
        fail(f"no leader among the {up} of {len(answers)} members that answered" if up
             else f"none of the {len(answers)} members answered")


def _row(answer: Answer) -> dict[str, Any]:
    if answer.status is None:
        return {"id": answer.given.id, "address": answer.given.address, "role": "down",
                "error": answer.error}
    row = dict(answer.status)
    if answer.mismatch():
        row["given_id"] = answer.given.id
    return row


def _print_table(rows: list[dict[str, Any]]) -> None:
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


def _status_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return "?" if column == "id" else "-"
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
        "--id", metavar="ID",
        help="Only the member with this id (each member is asked for its id).")] = None,
    timeout: MemberTimeout = 60.0,
) -> None:
    """Have members snapshot their applied state now, and compact their logs.

    Examples:

    \b
        raft-trio snapshot --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
        raft-trio snapshot --id 2 --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    """
    members = cluster_members(cluster)
    check_timeout(timeout)
    given_ids = [m.id for m in members]
    if member is not None and None not in given_ids and member not in given_ids:
        fail(f"--id {member} is not in the cluster {sorted(i for i in given_ids if i)}", 2)
    answers = trio.run(survey, members, timeout)
    for answer in answers:
        warning = answer.mismatch()
        if warning:
            typer.echo(f"warning: {warning}", err=True)
    if member is not None:
        targets = [a for a in answers if a.status is not None and a.id == member]
        if not targets:
            down = [a for a in answers if a.status is None]
            fail(f"no member at the given addresses answers as member {member}"
                 + "".join(f"; {a.label}: {a.error}" for a in down))
        answers = targets[:1]
    results: dict[int, tuple[int | None, str | None]] = {}

    async def one(position: int, answer: Answer) -> None:
        results[position] = await ask(
            lambda: snapshot_member(answer.given.address, timeout=timeout), timeout)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for position, answer in enumerate(answers):
                if answer.status is not None:
                    nursery.start_soon(one, position, answer)

    trio.run(run)
    failed = []
    for position, answer in sorted(enumerate(answers), key=lambda p: (p[1].id is None,
                                                                       p[1].id or 0)):
        index, error = results.get(position, (None, answer.error))
        if index is not None:
            typer.echo(f"member {answer.id}: snapshot at index {index}")
        else:
            failed.append(answer.label)
            typer.echo(f"{answer.label}: {error}", err=True)
    if failed:
        fail(f"no snapshot from {', '.join(failed)}")
