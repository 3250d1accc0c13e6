"""`raft-trio health`: one line and an exit status saying whether the cluster can commit.

Healthy means: a leader, and a quorum (a majority of the voters in the
leader's configuration, the leader included) answering and following that
leader in its term. For scripts and load balancers: 0 healthy, 1 not.
"""

from __future__ import annotations

from typing import Any

import trio
import typer

from raft_trio.cli.common import ClusterOpt, check_timeout, cluster_members
from raft_trio.cli.spec import Member
from raft_trio.cli.status import MemberTimeout
from raft_trio.cli.survey import ask, survey
from raft_trio.client import connect


def health(cluster: ClusterOpt = "", timeout: MemberTimeout = 2.0) -> None:
    """Exit 0 if a quorum of the voters is up with one leader, else 1; print one line.

    The voters are those of the leader's configuration, wherever they are; --cluster
    only needs to name one member that can point to the leader.

    Example:

    \b
        raft-trio health --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    """
    members = cluster_members(cluster)
    check_timeout(timeout)
    healthy, line = trio.run(_check, members, timeout)
    typer.echo(f"{'healthy' if healthy else 'unhealthy'}: {line}")
    raise typer.Exit(0 if healthy else 1)


async def _check(members: list[Member], timeout: float) -> tuple[bool, str]:
    answers = await survey(members, timeout)
    reachable = [a.given.address for a in answers if a.status is not None]
    if not reachable:
        return False, f"none of the {len(members)} members answered"

    async def configuration() -> dict[str, Any]:
        async with connect(reachable, timeout=timeout, request_timeout=timeout) as client:
            return await client.members()

    config, _error = await ask(configuration, timeout)
    if config is None:
        return False, f"no leader ({len(reachable)} of {len(members)} members answered)"
    voters: dict[int, str] = config["voters"]
    leader: int = config["leader"]
    # By the ids the members give; the voters not among them are asked where the
    # configuration says they are.
    statuses = {a.status["id"]: a.status for a in answers if a.status is not None}
    missing = [v for v in voters if v not in statuses]
    for answer in await survey([Member(v, voters[v]) for v in missing], timeout):
        if answer.status is not None:
            statuses[answer.status["id"]] = answer.status
    return verdict(voters, leader, statuses)


def verdict(voters: dict[int, str], leader: int,
            statuses: dict[int, dict[str, Any]]) -> tuple[bool, str]:
    """Whether a quorum of `voters` follows `leader` in its term, by the members' own
    statuses (absent: did not answer), and a line saying how things stand."""
    lead = statuses.get(leader)
    if lead is None or lead["role"] != "leader":
        return False, f"member {leader} was named leader but does not answer as one"
    following = sorted(
        v for v in voters
        if (s := statuses.get(v)) is not None and s["term"] == lead["term"]
        and (v == leader or s["leader"] == leader)
    )
    quorum = len(voters) // 2 + 1
    others = sorted(set(voters) - set(following))
    line = (f"member {leader} leads in term {lead['term']} with {len(following)} of "
            f"{len(voters)} voters (quorum {quorum})")
    if others:
        line += f"; not with it: {', '.join(map(str, others))}"
    return len(following) >= quorum, line
