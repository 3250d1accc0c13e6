"""What the commands share: one-line errors, common options, checks of what the user typed."""

from __future__ import annotations

import errno
import logging
import math
import sys
from typing import Annotated, Any, NoReturn

import trio
import typer

from raft_trio.cli.spec import Member, parse_cluster
from raft_trio.errors import RaftError, describe_os_error

CLUSTER_ENV = "RAFT_TRIO_CLUSTER"

ClusterOpt = Annotated[
    str,
    typer.Option(
        "--cluster",
        "-c",
        metavar="MEMBERS",
        help="Members as host:port,host:port,... (any member will do), or with their ids: "
             f"1=host:port,2=host:port,... Default: ${CLUSTER_ENV}.",
        envvar=CLUSTER_ENV,
        show_envvar=False,
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", metavar="SECONDS",
                        help="Give up after this many seconds without a leader.")
]
LOG_LEVELS = ("debug", "info", "warning", "error")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` (one line) and exit with `code`: 2 for what the user typed,
    1 for what went wrong while doing it."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def check_timeout(timeout: float, option: str = "--timeout") -> None:
    if not math.isfinite(timeout) or timeout <= 0:
        fail(f"{option} must be a positive number of seconds", 2)


def check_text(**values: str | None) -> None:
    """Refuse arguments that are not valid UTF-8 (Python hands such bytes over as lone
    surrogates, which no key or value can hold)."""
    for value in values.values():
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fail("keys and values must be valid UTF-8 text", 2)


def log_level_option(value: str) -> str:
    """Callback for --log-level: one of LOG_LEVELS, any case."""
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not a log level; choose one of "
                                 f"{', '.join(LOG_LEVELS)}")
    return value.lower()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cluster_members(spec: str) -> list[Member]:
    """The entries of --cluster (or $RAFT_TRIO_CLUSTER), or a one-line usage error."""
    if not spec.strip():
        fail(f"give --cluster (or set {CLUSTER_ENV})", 2)
    try:
        return parse_cluster(spec)
    except ValueError as exc:
        fail(f"--cluster: {exc}", 2)


def cluster_addresses(spec: str) -> list[str]:
    """The addresses of --cluster, or a one-line usage error."""
    return [m.address for m in cluster_members(spec)]


def run_client(coro_fn: Any, *args: Any) -> Any:
    try:
        return trio.run(coro_fn, *args)
    except RaftError as exc:
        fail(str(exc))


def describe_bind_error(exc: OSError, address: str) -> str:
    """Why a member cannot listen on `address`."""
    if exc.errno == errno.EADDRINUSE:
        return f"address {address} is already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"address {address} does not belong to this machine (--listen-host binds "
                f"another, e.g. 0.0.0.0)")
    if exc.errno == errno.EACCES:
        return f"no permission to listen on {address}"
    return f"cannot listen on {address}: {describe_os_error(exc)}"
