"""What the commands share: one-line errors, --cluster parsing, common options."""

from __future__ import annotations

import logging
import math
import sys
from typing import Annotated, Any, NoReturn

import trio
import typer

from raft_trio.errors import RaftError
from raft_trio.server import parse_address

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


def check_timeout(timeout: float) -> None:
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


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def addresses_of(spec: str) -> list[str]:
    return list(parse_cluster(spec, ids_required=False).values())


def run_client(coro_fn: Any, *args: Any) -> Any:
    try:
        return trio.run(coro_fn, *args)
    except RaftError as exc:
        fail(str(exc))

