"""`raft-trio kv`: read and write keys of a running cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from raft_trio.cli.common import (
    ClusterOpt,
    TimeoutOpt,
    check_text,
    check_timeout,
    cluster_addresses,
    fail,
    run_client,
)
from raft_trio.client import connect
from raft_trio.protocol import READ_MODES

KeyArg = Annotated[str, typer.Argument(metavar="KEY", show_default=False)]


def kv_set(
    key: KeyArg,
    value: Annotated[str, typer.Argument(metavar="VALUE")],
    cluster: ClusterOpt = "",
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Set KEY to VALUE.

    Example:

    \b
        raft-trio kv set greeting hello --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    check_text(key=key, value=value)
    check_timeout(timeout)
    addresses = cluster_addresses(cluster)

    async def run() -> None:
        async with connect(addresses, timeout=timeout) as client:
            await client.set(key, value)

    run_client(run)
    typer.echo("OK")


def kv_get(
    key: KeyArg,
    cluster: ClusterOpt = "",
    read: Annotated[str, typer.Option(
        "--read", metavar="MODE",
        help="linearizable (the leader confirms it still leads), lease (the leader answers "
             "under its lease; assumes clocks that drift little) or stale (whichever member "
             "answers, possibly behind).")] = "linearizable",
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Print the value of KEY; exits 1 when the key is absent.

    Example:

    \b
        raft-trio kv get greeting --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    check_text(key=key)
    if read not in READ_MODES:
        fail(f"--read must be one of {', '.join(READ_MODES)}", 2)
    check_timeout(timeout)
    addresses = cluster_addresses(cluster)

    async def run() -> str | None:
        async with connect(addresses, timeout=timeout) as client:
            return await client.get(key, mode=read)

    value = run_client(run)
    if value is None:
        fail(f"key {key!r} not found")
    typer.echo(value)


def kv_del(key: KeyArg, cluster: ClusterOpt = "", timeout: TimeoutOpt = 10.0) -> None:
    """Delete KEY; exits 1 when it did not exist.

    Example:

    \b
        raft-trio kv del greeting --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    check_text(key=key)
    check_timeout(timeout)
    addresses = cluster_addresses(cluster)

    async def run() -> bool:
        async with connect(addresses, timeout=timeout) as client:
            return await client.delete(key)

    if not run_client(run):
        fail(f"key {key!r} not found")
    typer.echo("OK")


def kv_cas(
    key: KeyArg,
    values: Annotated[list[str], typer.Argument(
        metavar="[EXPECTED] NEW", show_default=False,
        help="EXPECTED and NEW; with --absent, NEW alone.")],
    cluster: ClusterOpt = "",
    absent: Annotated[bool, typer.Option(
        "--absent", help="Swap only if KEY is absent; give NEW alone.")] = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Set KEY to NEW only if it holds EXPECTED (with --absent: only if it is absent);
    exits 1 when it did not.

    Examples:

    \b
        raft-trio kv cas counter 1 2 --cluster 127.0.0.1:7001,127.0.0.1:7002
        raft-trio kv cas lock me --absent --cluster 127.0.0.1:7001,127.0.0.1:7002
    """
    if absent and len(values) != 1:
        fail("with --absent give KEY NEW (there is no EXPECTED value to give)", 2)
    if not absent and len(values) != 2:
        fail("give KEY EXPECTED NEW (or KEY NEW --absent)", 2)
    expected, new = (None, values[0]) if absent else (values[0], values[1])
    check_text(key=key, expected=expected, new=new)
    check_timeout(timeout)
    addresses = cluster_addresses(cluster)

    async def run() -> bool:
        async with connect(addresses, timeout=timeout) as client:
            return await client.cas(key, expected, new)

    if not run_client(run):
        fail(f"compare-and-swap on {key!r} did not match")
    typer.echo("OK")
