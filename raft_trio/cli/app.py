"""The `raft-trio` command line: the typer application and its entry point, main().

Every error is one line on stderr, `error: ...`: usage errors that typer
finds (exit 2) as well as the commands' own (exit 2 for what the user typed,
1 for what failed). Help is click's plain layout, so that examples stay as
written and nothing in square brackets is taken for markup.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated, Any

import typer

from raft_trio.cli import checks, datanode, health, kv, members, serve, status
from raft_trio.cli.common import CLUSTER_ENV
from raft_trio.cli.fs import fs_app

HELP = f"""raft-trio: a Raft consensus daemon and library built on Trio.

Commands that talk to a running cluster take its members as --cluster
host:port,host:port,... (any member will do), or from ${CLUSTER_ENV}; `serve`
starts a new cluster from --cluster with ids (1=host:port,...), from --config,
or from ${CLUSTER_ENV}. Exit status: 0 done, 1 failed, 2 bad command line.

Example: three members on this machine, then a write and a read:

\b
    members=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
    for i in 1 2 3; do raft-trio serve --id $i --data-dir d$i --cluster $members & done
    export {CLUSTER_ENV}=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    raft-trio kv set greeting hello
    raft-trio kv get greeting
"""

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
kv_app = typer.Typer(
    help="Read and write keys of a running cluster.\n\nExample:\n\n\b\n"
         "    raft-trio kv set greeting hello --cluster 127.0.0.1:7001,127.0.0.1:7002",
    no_args_is_help=True, rich_markup_mode=None,
)
app.add_typer(kv_app, name="kv")
members_app = typer.Typer(
    help="List and change the members of a running cluster.\n\nExample:\n\n\b\n"
         "    raft-trio members list --cluster 127.0.0.1:7001,127.0.0.1:7002",
    no_args_is_help=True, rich_markup_mode=None,
)
app.add_typer(members_app, name="members")
app.add_typer(fs_app, name="fs")


def _version() -> str:
    try:
        return metadata.version("raft-trio")
    except metadata.PackageNotFoundError:  # run from a source tree
        import raft_trio

        return raft_trio.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"raft-trio {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    pass


app.command()(serve.serve)
kv_app.command("set")(kv.kv_set)
kv_app.command("get")(kv.kv_get)
kv_app.command("del")(kv.kv_del)
kv_app.command("cas")(kv.kv_cas)
app.command()(status.status)
app.command()(health.health)
members_app.command("list")(members.members_list)
members_app.command("add")(members.members_add)
members_app.command("promote")(members.members_promote)
members_app.command("remove")(members.members_remove)
members_app.command("transfer")(members.members_transfer)
app.command()(status.snapshot)
app.command()(checks.stress)
app.command("fs-stress")(checks.fs_stress)
app.command()(checks.chaos)
app.command()(datanode.datanode)


# A member keeps every log entry in memory as a small tuple. With the default
# thresholds the cyclic GC runs full collections again and again as the log
# grows, which cost more than half of what building an entry costs (measured:
# RaftNode.propose 1.10 us/entry with the defaults, 0.50 with these, 0.46 with
# the GC off). Only the command line sets this: a library leaves its host's GC alone.
GC_THRESHOLDS = (50_000, 20, 100)


def _click_class(name: str) -> type[Exception]:
    """One of click's exception classes. Typer vendors click since 0.2x and used the click
    package before; in both, these are base classes of typer.BadParameter."""
    found: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)
    return found


_ClickException = _click_class("ClickException")


def run(args: Sequence[str] | None = None) -> int:
    """Run the command line on `args` (default: sys.argv[1:]); returns the exit status."""
    try:
        result = app(args=list(args) if args is not None else sys.argv[1:],
                     prog_name="raft-trio", standalone_mode=False)
    except _ClickException as exc:
        return _usage_error(exc)
    except typer.Abort:  # older typers turn Ctrl-C into this
        return 130
    return result if isinstance(result, int) else 0


def _usage_error(exc: Any) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # a group without a command: its help
        return 2
    lines = [line.strip() for line in exc.format_message().splitlines() if line.strip()]
    message = "; ".join(lines).rstrip(".") or "bad command line"
    message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"error: {message}{hint}", err=True)
    code: int = exc.exit_code
    return code


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    sys.exit(run())


if __name__ == "__main__":
    main()
