"""`raft-trio members`: list and change the members of a running cluster."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from raft_trio.cli.common import (
    ClusterOpt,
    TimeoutOpt,
    addresses_of,
    check_timeout,
    fail,
    run_client,
)
from raft_trio.client import connect
from raft_trio.server import parse_address


def _membership_call(cluster: str, timeout: float, call: Any) -> Any:
    check_timeout(timeout)
    addresses = addresses_of(cluster)

    async def run() -> Any:
        async with connect(addresses, timeout=timeout, request_timeout=timeout) as client:
            return await call(client)

    return run_client(run)


def _print_members(info: dict[str, Any]) -> None:
    for kind in ("voters", "learners"):
        for node_id, address in sorted(info[kind].items()):
            lead = "  (leader)" if node_id == info.get("leader") else ""
            typer.echo(f"{node_id}\t{address}\t{kind[:-1]}{lead}")


MembersTimeout = Annotated[
    float, typer.Option("--timeout", help="Give up after this many seconds.")
]


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


def members_promote(
    node_id: Annotated[int, typer.Argument(help="Id of the learner.")],
    cluster: ClusterOpt,
    timeout: MembersTimeout = 120.0,
) -> None:
    """Make a learner a voter, once its log has caught up."""
    _print_members(_membership_call(cluster, timeout, lambda c: c.promote_member(node_id)))


def members_remove(
    node_id: Annotated[int, typer.Argument(help="Id of the member to remove.")],
    cluster: ClusterOpt,
    timeout: MembersTimeout = 30.0,
) -> None:
    """Remove a member (it shuts itself down once the change is committed)."""
    _print_members(_membership_call(cluster, timeout, lambda c: c.remove_member(node_id)))


def members_transfer(
    cluster: ClusterOpt,
    to: Annotated[int, typer.Option("--to", help="Id of the voter to hand leadership to.")],
    timeout: MembersTimeout = 30.0,
) -> None:
    """Hand leadership to another voter."""
    leader = _membership_call(cluster, timeout, lambda c: c.transfer_leadership(to))
    typer.echo(f"member {leader} leads")
