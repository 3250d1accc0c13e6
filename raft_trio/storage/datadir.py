"""A member's claim on its data directory: one process at a time, one member for ever.

Two processes writing one WAL corrupt it (each appends its own terms and
votes), and a member started on another member's directory would speak for
a log that is not its own. So, as etcd and PostgreSQL do, a member holds an
exclusive `flock` on `LOCK` for as long as it runs (the kernel drops it when
the process dies, even by SIGKILL, so a stale lock never blocks a restart),
with its pid written inside for whoever is refused.

The first time a member uses the directory, `member.json` records its id and
the configuration the cluster started from (the log holds only the changes
made since), so that a later start with other flags cannot silently change
either.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raft_trio.errors import RaftError
from raft_trio.storage.wal import _fsync_dir, _make_durable_dirs

LOCK_FILE = "LOCK"
MEMBER_FILE = "member.json"


class DataDirError(RaftError):
    """The data directory cannot be used by this member (in use, another member's, not a dir)."""


class DataDirLock:
    """The claim on a data directory; `release()` (or process exit) gives it up.

    `bootstrap`: the configuration the cluster started from, as first recorded.
    """

    def __init__(self, directory: Path, fd: int, bootstrap: dict[int, str]):
        self.directory = directory
        self.bootstrap = bootstrap
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Closing the descriptor drops the flock; the file stays, so that a
            # process waiting on it never locks a file about to be unlinked.
            os.close(fd)


def claim_data_dir(directory: Path, node_id: int, bootstrap: Mapping[int, str]) -> DataDirLock:
    """Create `directory` if need be, lock it, and check (or record) that it is
    member `node_id`'s; record `bootstrap` as the configuration the cluster
    started from unless one is recorded already. Raises DataDirError naming the
    directory if it is in use, another member's or unusable."""
    if directory.exists() and not directory.is_dir():
        raise DataDirError(f"data dir {directory} is not a directory")
    try:
        _make_durable_dirs(directory)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirError(f"cannot use data dir {directory}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(f"cannot lock data dir {directory}: {exc.strerror}") from None
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirError(f"data dir {directory} is in use by another raft-trio process "
                               f"(pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        recorded = _check_member(directory, node_id, bootstrap)
    except BaseException:
        os.close(fd)
        raise
    return DataDirLock(directory, fd, recorded)


def _check_member(directory: Path, node_id: int, bootstrap: Mapping[int, str]
                  ) -> dict[int, str]:
    path = directory / MEMBER_FILE
    try:
        recorded = _parse_member_file(json.loads(path.read_text()))
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError) as exc:
        raise DataDirError(f"cannot read {path}: {exc}") from None
    if recorded is None:
        # A new directory, or one from before these were recorded: it is this
        # member's now, and this the cluster's first configuration.
        text = json.dumps({"id": node_id, "cluster": {str(k): v for k, v in bootstrap.items()}})
        temp = path.with_name(MEMBER_FILE + ".tmp")
        with open(temp, "w") as file:
            file.write(text + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        _fsync_dir(directory)
        return dict(bootstrap)
    recorded_id, recorded_bootstrap = recorded
    if recorded_id != node_id:
        raise DataDirError(f"data dir {directory} belongs to member {recorded_id}, not member "
                           f"{node_id}")
    return recorded_bootstrap


def _parse_member_file(raw: Any) -> tuple[int, dict[int, str]]:
    try:
        node_id, cluster = raw["id"], raw["cluster"]
        bootstrap = {int(k): v for k, v in cluster.items()}
    except (TypeError, KeyError, AttributeError, ValueError):
        raise ValueError("expected {\"id\": N, \"cluster\": {\"ID\": \"host:port\"}}") from None
    if type(node_id) is not int or not all(type(v) is str for v in bootstrap.values()):
        raise ValueError("expected an int id and host:port strings")
    return node_id, bootstrap
