"""`raft-trio kv`: read and write keys of a running cluster."""

from __future__ import annotations

from typing import Annotated

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
from raft_trio.server import READ_MODES


def kv_set(
    key: str, value: str, cluster: ClusterOpt, timeout: TimeoutOpt = 10.0
) -> None:
    """Set KEY to VALUE."""

    async def run() -> None:
        async with connect(addresses_of(cluster), timeout=timeout) as client:
            await client.set(key, value)

    check_timeout(timeout)
    run_client(run)
    typer.echo("OK")


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
        async with connect(addresses_of(cluster), timeout=timeout) as client:
            return await client.get(key, mode=read)  # type: ignore[arg-type]

    if read not in READ_MODES:
        fail(f"--read must be one of {', '.join(READ_MODES)}", 2)
    check_timeout(timeout)
    value = run_client(run)
    if value is None:
        fail(f"key {key!r} not found")
    typer.echo(value)


def kv_del(key: str, cluster: ClusterOpt, timeout: TimeoutOpt = 10.0) -> None:
    """Delete KEY; exits 1 when it did not exist."""

    async def run() -> bool:
        async with connect(addresses_of(cluster), timeout=timeout) as client:
            return await client.delete(key)

    check_timeout(timeout)
    if not run_client(run):
        fail(f"key {key!r} not found")
    typer.echo("OK")


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
        async with connect(addresses_of(cluster), timeout=timeout) as client:
            return await client.cas(key, None if absent else expected, new)

    check_timeout(timeout)
    if not run_client(run):
        fail(f"compare-and-swap on {key!r} did not match")
    typer.echo("OK")

