"""`raft-trio members`: list and change the members of a running cluster."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from raft_trio.cli.common import (
    ClusterOpt,
    TimeoutOpt,
    check_timeout,
    cluster_addresses,
    fail,
    run_client,
)
from raft_trio.client import connect
from raft_trio.protocol import check_address


def _membership_call(cluster: str, timeout: float, call: Any) -> Any:
    check_timeout(timeout)
    addresses = cluster_addresses(cluster)

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
    float, typer.Option("--timeout", metavar="SECONDS", help="Give up after this many seconds.")
]


def members_list(
    cluster: ClusterOpt = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """The configuration as the leader has it: voters and learners, with addresses.

    Example:

    \b
        raft-trio members list --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    """
    info = _membership_call(cluster, timeout, lambda c: c.members())
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        _print_members(info)


def members_add(
    node_id: Annotated[int, typer.Argument(help="Id of the new member.")],
    address: Annotated[str, typer.Argument(help="Its host:port.")],
    cluster: ClusterOpt = "",
    learner: Annotated[bool, typer.Option(
        "--learner", help="Keep it a non-voting learner (default: promote it once caught up).")
    ] = False,
    timeout: MembersTimeout = 120.0,
) -> None:
    """Add a member: a learner first, a voter once it has answered and caught up.

    Waits up to --timeout for that. A member that is not running stays a
    learner, which costs the cluster nothing, and the command exits 1: start it
    (`serve --id 4 --address 127.0.0.1:7004 --join ...` promotes it), or run
    `members promote 4` once it runs. Adding a member at the address it has
    already is not an error.

    Example (with member 4 started, or about to be):

    \b
        raft-trio members add 4 127.0.0.1:7004 --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    if node_id < 1:
        fail("the member id must be positive", 2)
    try:
        check_address(address)
    except ValueError as exc:
        fail(f"ADDRESS: {exc}", 2)
    info = _membership_call(cluster, timeout,
                            lambda c: c.add_member(node_id, address, voter=not learner))
    _print_members(info)
    if not learner and node_id in info["learners"]:
        fail(f"member {node_id} was added as a learner but has not caught up in time to be "
             f"promoted: start it (raft-trio serve --id {node_id} --address {address} --join "
             f"...), then run `raft-trio members promote {node_id}`")


def members_promote(
    node_id: Annotated[int, typer.Argument(help="Id of the learner.")],
    cluster: ClusterOpt = "",
    timeout: MembersTimeout = 120.0,
) -> None:
    """Make a learner a voter, once it has answered and caught up (waits up to
    --timeout; exits 1 if it has not by then, saying why).

    Example:

    \b
        raft-trio members promote 4 --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    _print_members(_membership_call(cluster, timeout, lambda c: c.promote_member(node_id)))


def members_remove(
    node_id: Annotated[int, typer.Argument(help="Id of the member to remove.")],
    cluster: ClusterOpt = "",
    timeout: MembersTimeout = 30.0,
) -> None:
    """Remove a member (it shuts itself down once the change is committed).

    Example:

    \b
        raft-trio members remove 1 --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    _print_members(_membership_call(cluster, timeout, lambda c: c.remove_member(node_id)))


def members_transfer(
    to: Annotated[int, typer.Option(
        "--to", metavar="ID", help="Id of the voter to hand leadership to.")],
    cluster: ClusterOpt = "",
    timeout: MembersTimeout = 30.0,
) -> None:
    """Hand leadership to another voter.

    Example:

    \b
        raft-trio members transfer --to 2 --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    leader = _membership_call(cluster, timeout, lambda c: c.transfer_leadership(to))
    typer.echo(f"member {leader} leads")
