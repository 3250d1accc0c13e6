"""`raft-trio fs`: the distributed file system from a shell.

Exit status: 0 done; 1 when the file system refused (no such file, exists,
not empty...) or could not be reached; 2 for a wrong command line.
"""

from __future__ import annotations

import json
import stat as stat_module
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import trio
import typer

from raft_trio.cli.common import ClusterOpt, check_timeout, cluster_addresses, fail
from raft_trio.errors import RaftError
from raft_trio.fs.client import FileSystem

T = TypeVar("T")

PathArg = Annotated[str, typer.Argument(metavar="PATH", show_default=False)]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", metavar="SECONDS", help="Give up on a metadata request after this long.")]
ProgressOpt = Annotated[bool | None, typer.Option(
    "--progress/--no-progress",
    help="Show a progress bar with MB/s (default: when stderr is a terminal).")]

fs_app = typer.Typer(
    help="Files and directories of a raft-trio file system (members started with "
         "`serve --state-machine fs`, data in `raft-trio datanode`s).\n\nExit status: 0 "
         "done, 1 refused or failed (no such file, exists, not empty, unreachable), 2 bad "
         "command line.\n\nExample:\n\n\b\n"
         "    export RAFT_TRIO_CLUSTER=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003\n"
         "    raft-trio fs mkdir -p /photos\n"
         "    raft-trio fs put cat.jpg /photos/cat.jpg\n"
         "    raft-trio fs ls -l /photos",
    no_args_is_help=True, rich_markup_mode=None,
)


def _run(cluster: str, timeout: float, body: Callable[[FileSystem], Awaitable[T]]) -> T:
    check_timeout(timeout)
    addresses = cluster_addresses(cluster)

    async def run() -> T:
        async with FileSystem(addresses, timeout=timeout) as fs:
            return await body(fs)

    try:
        return trio.run(run)
    except OSError as exc:
        message = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) not in message:
            message = f"{exc.filename}: {message}"
        fail(message)
    except ValueError as exc:
        fail(str(exc), 2)
    except RaftError as exc:
        fail(str(exc))


@fs_app.command("mkdir")
def fs_mkdir(
    path: PathArg,
    parents: Annotated[bool, typer.Option(
        "--parents", "-p", help="Make missing parents; an existing directory is fine.")] = False,
    cluster: ClusterOpt = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Make a directory.

    Example:

    \b
        raft-trio fs mkdir -p /photos/2026
    """
    _run(cluster, timeout, lambda fs: fs.mkdir(path, parents=parents))


@fs_app.command("put")
def fs_put(
    local: Annotated[Path, typer.Argument(metavar="LOCAL", help="A local file, or - for stdin.")],
    remote: PathArg,
    replication: Annotated[int | None, typer.Option(
        "--replication", "-r", metavar="N", help="Replicas of each chunk (default 3; fewer "
                                                 "if fewer data nodes are live).")] = None,
    chunk_mb: Annotated[float | None, typer.Option(
        "--chunk-mb", metavar="MB", help="Chunk size in MiB (default 4).")] = None,
    exclusive: Annotated[bool, typer.Option(
        "--exclusive", "-x", help="Refuse if REMOTE exists (default: replace it).")] = False,
    progress: ProgressOpt = None,
    cluster: ClusterOpt = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Copy a local file into the file system (replacing REMOTE atomically).

    Example:

    \b
        raft-trio fs put cat.jpg /photos/cat.jpg
    """
    if replication is not None and not 1 <= replication <= 16:
        fail("--replication must be from 1 to 16", 2)
    chunk_size = None
    if chunk_mb is not None:
        if not 0 < chunk_mb <= 32:
            fail("--chunk-mb must be more than 0 and at most 32", 2)
        chunk_size = int(chunk_mb * 1024 * 1024)
    if str(local) != "-" and not local.is_file():
        fail(f"{local}: no such local file" if not local.exists() else f"{local}: not a file")
    total = None if str(local) == "-" else local.stat().st_size

    async def body(fs: FileSystem) -> dict[str, Any]:
        with _Meter("put", total, progress) as meter:
            stat = await fs.write_file(remote, _read_local(local), exclusive=exclusive,
                                       replication=replication, chunk_size=chunk_size,
                                       progress=meter.advance)
        asked = replication or fs.replication
        if stat["replicas"] < asked:
            typer.echo(f"warning: {remote}: {stat['replicas']} replicas stored, {asked} asked "
                       f"(fewer data nodes are live)", err=True)
        return stat

    _run(cluster, timeout, body)


async def _read_local(local: Path) -> AsyncIterator[bytes]:
    """The local file in blocks, read in a thread so the event loop never waits on it."""
    source = sys.stdin.buffer if str(local) == "-" else open(local, "rb")
    try:
        while True:
            block = await trio.to_thread.run_sync(source.read, 1024 * 1024)
            if not block:
                return
            yield block
    finally:
        if source is not sys.stdin.buffer:
            source.close()


@fs_app.command("get")
def fs_get(
    remote: PathArg,
    local: Annotated[Path, typer.Argument(metavar="LOCAL", help="Where to write it, or - "
                                                                "for stdout.")],
    progress: ProgressOpt = None,
    cluster: ClusterOpt = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Copy a file out of the file system (to LOCAL, written whole or not at all).

    Example:

    \b
        raft-trio fs get /photos/cat.jpg cat.jpg
    """
    to_stdout = str(local) == "-"
    if not to_stdout and local.is_dir():
        local = local / remote.rstrip("/").rsplit("/", 1)[-1]

    async def body(fs: FileSystem) -> None:
        stat = await fs.stat(remote)
        if stat["type"] != "file":
            raise IsADirectoryError(21, "Is a directory", remote)
        if to_stdout:
            async with fs.open_read(remote) as pieces:
                async for piece in pieces:
                    await trio.to_thread.run_sync(sys.stdout.buffer.write, piece)
            sys.stdout.buffer.flush()
            return
        partial = local.with_name(f".{local.name}.part")
        try:
            with open(partial, "wb") as out, _Meter("get", stat["size"], progress) as meter:
                async with fs.open_read(remote, progress=meter.advance) as pieces:
                    async for piece in pieces:
                        await trio.to_thread.run_sync(out.write, piece)
            partial.replace(local)
        finally:
            partial.unlink(missing_ok=True)

    _run(cluster, timeout, body)


@fs_app.command("cat")
def fs_cat(path: PathArg, cluster: ClusterOpt = "", timeout: TimeoutOpt = 30.0) -> None:
    """Print a file's bytes.

    Example:

    \b
        raft-trio fs cat /notes/todo.txt
    """
    fs_get(path, Path("-"), progress=False, cluster=cluster, timeout=timeout)


@fs_app.command("ls")
def fs_ls(
    path: Annotated[str, typer.Argument(metavar="PATH")] = "/",
    long: Annotated[bool, typer.Option("-l", help="Type, mode, size, time, name.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    cluster: ClusterOpt = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """List a directory (or show one file).

    Example:

    \b
        raft-trio fs ls -l /photos
    """

    async def body(fs: FileSystem) -> list[tuple[str, dict[str, Any]]]:
        stat = await fs.stat(path)
        if stat["type"] != "dir":
            return [(path.rstrip("/").rsplit("/", 1)[-1], stat)]
        return await fs.scandir(path)

    entries = _run(cluster, timeout, body)
    if as_json:
        typer.echo(json.dumps([{"name": n, **s} for n, s in entries], indent=2))
        return
    for name, stat in entries:
        typer.echo(_long_line(name, stat) if long else name)


def _long_line(name: str, stat: dict[str, Any]) -> str:
    kind = stat_module.S_IFDIR if stat["type"] == "dir" else stat_module.S_IFREG
    mode = stat_module.filemode(kind | stat["mode"])
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(stat["mtime"] / 1000))
    return f"{mode} {stat['size']:>12} {when} {name}"


@fs_app.command("stat")
def fs_stat(path: PathArg, cluster: ClusterOpt = "", timeout: TimeoutOpt = 30.0) -> None:
    """Print a file's or directory's attributes as JSON.

    Example:

    \b
        raft-trio fs stat /photos/cat.jpg
    """
    typer.echo(json.dumps(_run(cluster, timeout, lambda fs: fs.stat(path)), indent=2))


@fs_app.command("rm")
def fs_rm(
    path: PathArg,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Remove a directory and everything in it.")] = False,
    cluster: ClusterOpt = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Remove a file, an empty directory, or with -r a whole tree.

    Example:

    \b
        raft-trio fs rm -r /photos/old
    """
    _run(cluster, timeout, lambda fs: fs.delete(path, recursive=recursive))


@fs_app.command("mv")
def fs_mv(src: PathArg, dst: Annotated[str, typer.Argument(metavar="DST")],
          cluster: ClusterOpt = "", timeout: TimeoutOpt = 30.0) -> None:
    """Rename atomically (replacing a file at DST, as rename(2) does).

    Example:

    \b
        raft-trio fs mv /photos/cat.jpg /photos/2026/cat.jpg
    """
    _run(cluster, timeout, lambda fs: fs.rename(src, dst))


@fs_app.command("chmod")
def fs_chmod(mode: Annotated[str, typer.Argument(metavar="MODE", help="Octal, e.g. 644.")],
             path: PathArg, cluster: ClusterOpt = "", timeout: TimeoutOpt = 30.0) -> None:
    """Change a file's or directory's permission bits.

    Example:

    \b
        raft-trio fs chmod 600 /notes/secret.txt
    """
    try:
        bits = int(mode, 8)
    except ValueError:
        fail(f"MODE must be octal, like 644, not {mode!r}", 2)
    if not 0 <= bits <= 0o7777:
        fail(f"MODE {mode} is out of range (0-7777)", 2)
    _run(cluster, timeout, lambda fs: fs.chmod(path, bits))


@fs_app.command("du")
def fs_du(path: Annotated[str, typer.Argument(metavar="PATH")] = "/",
          cluster: ClusterOpt = "", timeout: TimeoutOpt = 30.0) -> None:
    """Bytes, files and directories under a path.

    Example:

    \b
        raft-trio fs du /photos
    """
    usage = _run(cluster, timeout, lambda fs: fs.du(path))
    typer.echo(f"{usage['bytes']}\t{usage['files']} files\t{usage['dirs']} dirs\t{path}")


@fs_app.command("df")
def fs_df(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    cluster: ClusterOpt = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Every data node the leader knows: state, capacity, used, chunks.

    Example:

    \b
        raft-trio fs df
    """
    nodes = _run(cluster, timeout, lambda fs: fs.datanodes())
    if as_json:
        typer.echo(json.dumps(nodes, indent=2))
        return
    typer.echo("id\taddress\tstate\tcapacity\tused\tchunks\tlast heartbeat")
    for n in nodes:
        typer.echo(f"{n['id']}\t{n['address']}\t{n['state']}\t{_mib(n['capacity'])}\t"
                   f"{_mib(n['used'])}\t{n['chunks']}\t{n['since_heartbeat']:.1f}s ago")


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


class _Meter:
    """A progress bar with MB/s on stderr (when it is a terminal, or asked for), and a
    one-line summary after."""

    def __init__(self, verb: str, total: int | None, wanted: bool | None):
        self.verb = verb
        self.total = total
        self.show = sys.stderr.isatty() if wanted is None else wanted
        self.done = 0
        self.started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Meter:
        if self.show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TransferSpeedColumn,
            )

            self._progress = Progress(f"{self.verb}", BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), console=Console(stderr=True),
                                      transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.verb, total=self.total)
        return self

    def advance(self, count: int) -> None:
        self.done += count
        if self._progress is not None:
            self._progress.update(self._task, advance=count)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            seconds = max(time.monotonic() - self.started, 1e-9)
            typer.echo(f"{self.verb} {self.done / 1e6:.1f} MB in {seconds:.2f} s "
                       f"({self.done / 1e6 / seconds:.1f} MB/s)", err=True)

