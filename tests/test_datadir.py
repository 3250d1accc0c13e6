"""A member's claim on its data directory: one process, one member, one first configuration."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_server import FAST

from raft_trio import KVStateMachine, RaftError, RaftServer
from raft_trio.storage import DataDirError, claim_data_dir
from stress.cluster import free_ports

CLUSTER = {1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}


def test_a_second_claim_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = claim_data_dir(tmp_path / "d", 1, CLUSTER)
    with pytest.raises(DataDirError, match=rf"data dir {tmp_path / 'd'} is in use by another "
                                           rf"raft-trio process \(pid {os.getpid()}\)"):
        claim_data_dir(tmp_path / "d", 1, CLUSTER)
    first.release()
    first.release()  # twice is harmless
    claim_data_dir(tmp_path / "d", 1, CLUSTER).release()


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A member killed with SIGKILL leaves no lock behind: its restart is not refused."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from raft_trio.storage import claim_data_dir; "
         f"claim_data_dir(Path({str(tmp_path / 'd')!r}), 1, {{}}); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(DataDirError, match=f"pid {holder.pid}"):
            claim_data_dir(tmp_path / "d", 1, {})
    finally:
        holder.kill()
        holder.wait()
    claim_data_dir(tmp_path / "d", 1, {}).release()


def test_a_directory_stays_its_first_members(tmp_path: Path) -> None:
    claim_data_dir(tmp_path / "d", 2, CLUSTER).release()
    with pytest.raises(DataDirError, match="belongs to member 2, not member 3"):
        claim_data_dir(tmp_path / "d", 3, CLUSTER)
    again = claim_data_dir(tmp_path / "d", 2, CLUSTER)
    again.release()


def test_the_first_configuration_is_kept(tmp_path: Path) -> None:
    claim = claim_data_dir(tmp_path / "d", 1, CLUSTER)
    claim.release()
    assert claim.bootstrap == CLUSTER
    moved = {**CLUSTER, 2: "127.0.0.1:9999"}
    claim = claim_data_dir(tmp_path / "d", 1, moved)
    claim.release()
    assert claim.bootstrap == CLUSTER


@pytest.mark.parametrize("content", ["", "{", "[]", '{"id": "1", "cluster": {}}',
                                     '{"id": 1, "cluster": {"x": "a:1"}}',
                                     '{"id": 1, "cluster": {"1": 5}}'])
def test_a_damaged_member_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "member.json").write_text(content)
    with pytest.raises(DataDirError, match=r"cannot read .*member\.json"):
        claim_data_dir(tmp_path / "d", 1, CLUSTER)


def test_a_file_is_not_a_data_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataDirError, match=f"data dir {tmp_path / 'f'} is not a directory"):
        claim_data_dir(tmp_path / "f", 1, CLUSTER)


def _cluster() -> dict[int, str]:
    return {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}


async def test_two_servers_cannot_share_a_data_dir(tmp_path: Path) -> None:
    cluster = _cluster()
    first = RaftServer(1, cluster, tmp_path / "m1", KVStateMachine(), timing=FAST)
    second = RaftServer(1, cluster, tmp_path / "m1", KVStateMachine(), timing=FAST,
                        listen_host="127.0.0.2")
    async with trio.open_nursery() as nursery:
        await nursery.start(first.serve)
        with pytest.raises(DataDirError, match="in use by another raft-trio process"):
            await second.serve()
        nursery.cancel_scope.cancel()
    # Once the first stopped, the directory is free again.
    async with trio.open_nursery() as nursery:
        await nursery.start(second.serve)
        nursery.cancel_scope.cancel()


async def test_a_restart_at_another_address_is_refused(tmp_path: Path) -> None:
    cluster = _cluster()
    (other_port,) = free_ports(1)
    async with trio.open_nursery() as nursery:
        await nursery.start(RaftServer(1, cluster, tmp_path / "m1", KVStateMachine(),
                                       timing=FAST).serve)
        nursery.cancel_scope.cancel()
    moved = {**cluster, 1: f"127.0.0.1:{other_port}"}
    with pytest.raises(RaftError, match=rf"member 1: its address is {cluster[1]} in the "
                                        rf"cluster's configuration .* not {moved[1]}"):
        await RaftServer(1, moved, tmp_path / "m1", KVStateMachine(), timing=FAST).serve()


async def test_other_members_addresses_come_from_the_first_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = _cluster()
    async with trio.open_nursery() as nursery:
        await nursery.start(RaftServer(1, cluster, tmp_path / "m1", KVStateMachine(),
                                       timing=FAST).serve)
        nursery.cancel_scope.cancel()
    (other_port,) = free_ports(1)
    moved = {**cluster, 2: f"127.0.0.1:{other_port}"}
    server = RaftServer(1, moved, tmp_path / "m1", KVStateMachine(), timing=FAST)
    with caplog.at_level(logging.WARNING, logger="raft_trio"):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            assert server.membership.voters == cluster
            assert server.address_of(2) == cluster[2]
            nursery.cancel_scope.cancel()
    assert any("differs from the configuration in force" in r.getMessage()
               and "members 2" in r.getMessage() for r in caplog.records), caplog.text


def test_member_file_is_json_a_person_can_read(tmp_path: Path) -> None:
    claim_data_dir(tmp_path / "d", 3, CLUSTER).release()
    recorded = json.loads((tmp_path / "d" / "member.json").read_text())
    assert recorded == {"id": 3, "cluster": {str(k): v for k, v in CLUSTER.items()}}
