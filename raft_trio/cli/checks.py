"""`raft-trio stress`, `raft-trio fs-stress` and `raft-trio chaos`: build a cluster and
check it."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Annotated

import typer

from raft_trio.cli.common import LOG_LEVELS, fail, log_level_option, setup_logging
from raft_trio.errors import describe_os_error
from raft_trio.protocol import READ_MODES


def stress(
    entries: Annotated[int, typer.Option("--entries", "-n", help="Entries to insert.")] = 50_000,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Entries per client request.")] = 100,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent clients.")] = 8,
    servers: Annotated[int, typer.Option("--servers", help="Members configured.")] = 3,
    up: Annotated[
        int | None, typer.Option("--up", help="Members started (default: all); a quorum variant.")
    ] = None,
    processes: Annotated[
        bool, typer.Option("--processes", help="Run each member as its own OS process.")
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where members keep data (default: a temp directory, removed after "
                           "a passing or interrupted run, kept after a failed one); a "
                           "directory given here is never removed.")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the temp data directory even when the run passes or is "
                       "interrupted.")] = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for the choice of member whose data is deleted.")
    ] = 0,
    base_port: Annotated[
        int, typer.Option("--base-port", help="First member port (0: pick free ports).")
    ] = 0,
    snapshot_entries: Annotated[int | None, typer.Option(
        "--snapshot-entries",
        help="Members snapshot every this many entries (default: serve's default); small "
             "values make step 10 rebuild the deleted member from a snapshot.")] = None,
    snapshot_trailing: Annotated[int | None, typer.Option(
        "--snapshot-trailing",
        help="Entries members keep behind a snapshot (default: serve's default).")] = None,
    reconfigure: Annotated[bool, typer.Option(
        "--reconfigure",
        help="While clients write, add a member, hand it leadership and remove the first "
             "leader; the later steps run on the new configuration.")] = False,
    log_level: Annotated[str, typer.Option(
        "--log-level", callback=log_level_option, metavar="LEVEL",
        help=f"Members' log level: {', '.join(LOG_LEVELS)}.")] = "warning",
) -> None:
    """Build a cluster and run the ten-step correctness checklist, printing entries/s.

    Exit status: 0 when every step passed or was skipped (the reason is printed);
    1 when a step failed; 130 on Ctrl-C and 143 on SIGTERM, once every member
    has stopped.

    Examples: members in this process; then each member its own process, keeping
    the data:

    \b
        raft-trio stress --entries 50000 --batch 100 --clients 8
        raft-trio stress --processes --data-dir stress-data --keep
    """
    from stress.interrupt import Interrupted
    from stress.runner import StressOptions, run_stress

    up_count = servers if up is None else up
    if entries < 1 or batch < 1 or clients < 1:
        fail("--entries, --batch and --clients must be at least 1", 2)
    if servers < 1 or not (servers // 2 + 1 <= up_count <= servers):
        fail(f"--up must be between a quorum ({servers // 2 + 1}) and --servers ({servers})", 2)
    if base_port and not 1 <= base_port <= 65536 - servers:
        fail(f"--base-port must leave room for {servers} ports below 65536", 2)
    if min(snapshot_entries or 0, snapshot_trailing or 0) < 0:
        fail("--snapshot-entries and --snapshot-trailing must be >= 0", 2)
    _check_fresh_data_dir(data_dir)
    setup_logging(log_level)
    options = StressOptions(
        entries=entries, batch=batch, clients=clients, servers=servers, up=up_count,
        processes=processes, data_dir=data_dir, keep=keep, seed=seed, base_port=base_port,
        log_level=log_level, snapshot_entries=snapshot_entries,
        snapshot_trailing=snapshot_trailing, reconfigure=reconfigure,
    )
    try:
        ok = run_stress(options)
    except Interrupted as exc:
        fail(exc.message(), exc.exit_code)
    raise typer.Exit(0 if ok else 1)


def _check_fresh_data_dir(data_dir: Path | None) -> None:
    if data_dir is not None and not data_dir.exists():
        try:  # now, rather than fail halfway through the run's set-up
            data_dir.mkdir(parents=True)
        except OSError as exc:
            fail(f"--data-dir {data_dir} cannot be made: "
                 f"{describe_os_error(exc).removeprefix(f'{data_dir}: ')}", 2)
    if data_dir is not None and data_dir.exists():
        if not data_dir.is_dir():
            fail(f"--data-dir {data_dir} is not a directory", 2)
        # Members would start from the old logs and states: the checks could not tell
        # the old entries from the new, and old configurations name old ports.
        if any(data_dir.glob("member-*")):
            fail(f"--data-dir {data_dir} holds members' data already; give an empty or new one",
                 2)
        # Likewise a data node's old chunks.
        if any(data_dir.glob("datanode-*")):
            fail(f"--data-dir {data_dir} holds data nodes' data already; give an empty or new "
                 f"one", 2)


# ---------------------------------------------------------------- fs-stress

MAX_CHUNK_KB = 64 * 1024  # data nodes refuse larger chunks (docs/fs-design.md)
MAX_DATANODES = 32


def fs_stress(
    files: Annotated[int, typer.Option("--files", "-n", help="Files to write.")] = 200,
    clients: Annotated[int, typer.Option(
        "--clients", help="Concurrent clients, each with its own connections.")] = 8,
    chunk_kb: Annotated[int, typer.Option(
        "--chunk-kb", metavar="KIB",
        help=f"Chunk size in KiB (1 to {MAX_CHUNK_KB}); files are empty, small (up to "
             f"64 KiB), one chunk, one chunk + 1 byte, or 3 to 6 chunks.")] = 1024,
    datanodes: Annotated[int, typer.Option(
        "--datanodes", help=f"Data nodes (2 to {MAX_DATANODES}); files get min(3, this) "
                            f"replicas.")] = 3,
    processes: Annotated[bool, typer.Option(
        "--processes", help="Run each member and data node as its own OS process.")] = False,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where members and data nodes keep data (default: a temp "
                           "directory, removed after a passing or interrupted run, kept after "
                           "a failed one); a directory given here is never removed.")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the temp data directory even when the run passes or is "
                       "interrupted.")] = False,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed for the files (names, sizes, contents) and for the choice of "
                       "the data node and member whose data is deleted.")] = 0,
    tick: Annotated[float, typer.Option(
        "--tick", hidden=True, help="Members' seconds per timer tick (tests make elections "
                                    "quicker with a small one).")] = 0.1,
    log_level: Annotated[str, typer.Option(
        "--log-level", callback=log_level_option, metavar="LEVEL",
        help=f"Members' and data nodes' log level: {', '.join(LOG_LEVELS)}.")] = "warning",
) -> None:
    """Build a file system (3 metadata members and data nodes) and run its ten-step
    checklist, printing files/s, metadata ops/s and MB/s.

    Steps: start everything; write files of mixed sizes into a tree of directories
    across concurrent clients; read every file back through the client; read
    every chunk from each of its replicas; restart everything and read again;
    delete one data node's and one member's directory, restart, compare every
    member's namespace with what was written, and read every file again.

    Exit status: 0 when every step passed; 1 when a step failed; 130 on Ctrl-C
    and 143 on SIGTERM, once every member and data node has stopped.

    Examples: everything in this process; then each member and data node its own
    process, with small chunks, keeping the data:

    \b
        raft-trio fs-stress --files 200 --clients 8
        raft-trio fs-stress --processes --chunk-kb 64 --data-dir fs-data --keep
    """
    from stress.fs_runner import FSStressOptions, run_fs_stress
    from stress.interrupt import Interrupted

    for option, value in (("--files", files), ("--clients", clients)):
        if value < 1:
            fail(f"{option} must be at least 1", 2)
    if not 1 <= chunk_kb <= MAX_CHUNK_KB:
        fail(f"--chunk-kb must be from 1 to {MAX_CHUNK_KB}", 2)
    if not 2 <= datanodes <= MAX_DATANODES:
        fail(f"--datanodes must be from 2 to {MAX_DATANODES}: one is deleted in step 7", 2)
    if not (math.isfinite(tick) and 0 < tick <= 10):
        fail("--tick must be a positive number of seconds", 2)
    _check_fresh_data_dir(data_dir)
    setup_logging(log_level)
    options = FSStressOptions(
        files=files, clients=clients, chunk_kb=chunk_kb, datanodes=datanodes,
        processes=processes, data_dir=data_dir, keep=keep, seed=seed, log_level=log_level,
        tick=tick,
    )
    try:
        ok = run_fs_stress(options)
    except Interrupted as exc:
        fail(f"{exc}: every member and data node was stopped"
             + (f"; {exc.detail}" if exc.detail else ""), exc.exit_code)
    raise typer.Exit(0 if ok else 1)


# ------------------------------------------------------------------- chaos

NEMESES = ("kill", "partition", "pause")


def chaos(
    duration: Annotated[float, typer.Option(
        "--duration", help="Seconds of faults and client operations (start-up, healing and "
                           "checking come on top).")] = 60.0,
    clients: Annotated[int, typer.Option(
        "--clients", help="Concurrent clients, each with its own connection.")] = 5,
    nemesis: Annotated[str, typer.Option(
        "--nemesis",
        help="Faults to inject, comma-separated: kill (SIGKILL a member, restart it with its "
             "data), partition (cut every link between two groups of members), pause "
             "(SIGSTOP a member, then SIGCONT); or none.")] = "kill,partition,pause",
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed for every random choice (default: a random one, printed); "
                       "timing still differs from run to run.")] = None,
    servers: Annotated[int, typer.Option("--servers", help="Members in the cluster.")] = 3,
    keys: Annotated[int, typer.Option(
        "--keys", help="Keys the clients share (few keys: more contention).")] = 3,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where members keep data and logs (default: a temp directory, "
                           "removed after a passing or interrupted run, kept after a failed "
                           "one); a directory given here is never removed.")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the temp data directory even when the run passes or is "
                       "interrupted.")] = False,
    history: Annotated[Path | None, typer.Option(
        "--history", help="Write the operation history (JSON lines) here (default: "
                          "history.jsonl in the data directory when it is kept, else "
                          "./chaos-history.jsonl).")] = None,
    tick: Annotated[float, typer.Option(
        "--tick", help="Members' seconds per timer tick; small, so that faults cause many "
                       "elections.")] = 0.05,
    election_ticks: Annotated[int, typer.Option(
        "--election-ticks", help="Members' minimum election timeout, in ticks.")] = 10,
    client_timeout: Annotated[float, typer.Option(
        "--client-timeout", help="Seconds a client operation may take before its outcome "
                                 "counts as unknown.")] = 3.0,
    read: Annotated[str, typer.Option(
        "--read", help="How clients read: linearizable, lease (under the leader's lease) or "
                       "stale (any member, may be behind: expect the checker to object).",
    )] = "linearizable",
    log_level: Annotated[str, typer.Option(
        "--log-level", callback=log_level_option, metavar="LEVEL",
        help=f"Members' log level: {', '.join(LOG_LEVELS)}.")] = "info",
) -> None:
    """Run a cluster of processes under faults while clients read and write, then heal it,
    check the history for linearizability and compare every member's state.

    Exit status: 0 only if the history is linearizable and every member holds
    the same state, else 1; 130 on Ctrl-C and 143 on SIGTERM, once every member
    has stopped.

    Example:

    \b
        raft-trio chaos --duration 30 --clients 5 --nemesis kill,partition --seed 1
    """
    from stress.chaos import ChaosOptions, run_chaos
    from stress.interrupt import Interrupted

    chosen: list[str] = []
    for name in (n.strip().lower() for n in nemesis.split(",") if n.strip()):
        if name == "none":
            continue
        if name not in NEMESES:
            fail(f"--nemesis: unknown fault {name!r}; choose from {', '.join(NEMESES)} or none",
                 2)
        if name not in chosen:
            chosen.append(name)
    for option, value in (("--duration", duration), ("--tick", tick),
                          ("--client-timeout", client_timeout)):
        if not math.isfinite(value) or value <= 0:
            fail(f"{option} must be a positive number of seconds", 2)
    if min(clients, servers, keys) < 1:
        fail("--clients, --servers and --keys must be at least 1", 2)
    if read not in READ_MODES:
        fail(f"--read must be one of {', '.join(READ_MODES)}", 2)
    if election_ticks < 2:
        fail("--election-ticks must be at least 2", 2)
    if "partition" in chosen and servers < 2:
        fail("--nemesis partition needs --servers 2 or more", 2)
    _check_fresh_data_dir(data_dir)
    if history is not None and history.is_dir():
        fail(f"--history {history} is a directory; give a file name", 2)
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    options = ChaosOptions(
        duration=duration, clients=clients, nemesis=tuple(chosen), seed=seed, servers=servers,
        keys=keys, data_dir=data_dir, keep=keep, history=history, tick=tick,
        election_ticks=election_ticks, client_timeout=client_timeout, read=read,
        log_level=log_level,
    )
    try:
        passed = run_chaos(options)
    except Interrupted as exc:
        fail(exc.message(), exc.exit_code)
    raise typer.Exit(0 if passed else 1)
